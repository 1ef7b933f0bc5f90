"""Sphinx configuration for the wsgiws documentation (``nox -s docs``)."""

from __future__ import annotations

import importlib.metadata

project = "wsgiws"
author = "The wsgiws developers"
copyright = "the wsgiws developers"
try:
    release = importlib.metadata.version("wsgiws")
except importlib.metadata.PackageNotFoundError:  # pragma: no cover - docs from a bare checkout
    release = "unknown"
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
]

# Google-style docstrings; types come from the annotations.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
autodoc_typehints = "description"
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True}
# Optional dependencies need not be installed to build the docs.
autodoc_mock_imports = ["django", "redis"]

exclude_patterns = ["_build"]
templates_path: list[str] = []
html_theme = "alabaster"
html_title = f"wsgiws {release}"
html_theme_options = {
    "description": "Real-time WebSockets for any WSGI app, no asyncio",
    "fixed_sidebar": True,
    "page_width": "1180px",
    "sidebar_width": "240px",
    "font_family": "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif",
    "head_font_family": "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif",
    "code_font_size": "0.85em",
}
