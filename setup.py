"""Build wsgiws's optional C accelerator; everything else is in ``pyproject.toml``.

``wsgiws._speedups`` (payload masking) is compiled when a C compiler is present and
skipped without failing the install when it is not (``optional=True``): wsgiws then
runs its pure-Python fallback (``wsgiws.mask``).
"""

from __future__ import annotations

from setuptools import Extension, setup

setup(
    ext_modules=[Extension("wsgiws._speedups", sources=["src/wsgiws/_speedups.c"], optional=True)]
)
