"""Design rules the import-linter contract cannot see.

``nox -s lint`` checks the layers (``lint-imports``); these tests check that no
module of ``src/wsgiws`` reads or writes a private attribute it does not define
itself, and that the package imports no module that no longer exists.
"""

from __future__ import annotations

import ast
from pathlib import Path

import wsgiws

SRC = Path(wsgiws.__file__).parent

#: Private attributes of other libraries that wsgiws touches on purpose, with why.
#: wsproto's are all in wsgiws/deflate.py (see tests/test_deflate.py).
ALLOWED = {
    # Django's SimpleLazyObject (request.user): forcing it to find out whether a
    # user is set without a database query is only possible through its internals.
    ("django/mixins.py", "_wrapped"),
    ("django/mixins.py", "_setup"),
    # redis-py's Connection: it connects (URL options, TLS, AUTH, client name) but has
    # no public accessor for the socket, which the Redis backend then reads raw, in
    # large reads parsed at once (see wsgiws.redis_groups.Wire).
    ("redis_groups.py", "_sock"),
    # werkzeug's LocalProxy (Flask-Login's current_user): its documented way to get the
    # proxied object, to keep the user itself as websocket.user.
    ("flask/mixins.py", "_get_current_object"),
    # The socket module's raw accept (what socket.accept() calls): it gives the file
    # descriptor, so that the server builds the socket object from the listener's
    # family and type read once, not converted to enums for every connection.
    ("server.py", "_accept"),
    # wsproto's parser state: whether it is between frames (the protocol's fast path).
    ("deflate.py", "_proto"),
    ("deflate.py", "_frame_decoder"),
    ("deflate.py", "_message_decoder"),
}


def private_names_defined(tree: ast.AST) -> set[str]:
    """Private names a module defines: functions, classes, attributes it assigns."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names.add(node.value)  # __slots__ entries
    return {name for name in names if name.startswith("_")}


def foreign_private_accesses(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    own = private_names_defined(tree)
    relative = path.relative_to(SRC).as_posix()
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        name = node.attr
        if not name.startswith("_") or name.startswith("__"):
            continue
        if name in own or (relative, name) in ALLOWED:
            continue
        found.append(f"{relative}:{node.lineno}: .{name}")
    return found


def test_no_module_touches_another_modules_private_attributes() -> None:
    """Every ``x._name`` in src/wsgiws names something its own module defines."""
    found = [hit for path in sorted(SRC.rglob("*.py")) for hit in foreign_private_accesses(path)]
    assert not found, "private attributes of other modules used:\n" + "\n".join(found)
