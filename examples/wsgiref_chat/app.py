"""The chat room on the standard library alone: a plain WSGI function and wsgiref.

    python examples/wsgiref_chat/app.py          # then open http://127.0.0.1:8000

The handler lives in ``examples/chat/`` (shared by every chat example); this file
serves the page and wraps the app with ``WebSocketMiddleware``.
"""

from __future__ import annotations

import contextlib
import mimetypes
import sys
from pathlib import Path
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIServer, make_server

from wsgiws import WebSocketMiddleware

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import chat  # the shared handler: importing it registers /chat/<room>


def app(environ, start_response):
    """Serve the page and its static files; everything else is a 404."""
    path = environ["PATH_INFO"]
    name = path.removeprefix("/static/")
    if path == "/":
        body, content_type = chat.page().encode(), "text/html; charset=utf-8"
    elif name != path and "/" not in name and (chat.STATIC_DIR / name).is_file():
        body = (chat.STATIC_DIR / name).read_bytes()
        content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    else:
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found"]
    start_response("200 OK", [("Content-Type", content_type)])
    return [body]


# WebSockets are served on the WSGI server's own port: ws://host:port/chat/<room>.
application = WebSocketMiddleware(app)


class ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    """wsgiref's server, one thread per request (browsers open several at once)."""

    daemon_threads = True


if __name__ == "__main__":
    args = chat.parse_args("The wsgiws chat on wsgiref.")
    with make_server(args.host, args.port, application, ThreadingWSGIServer) as httpd:
        print(f"Chat running on http://{args.host}:{args.port} (Ctrl-C to stop)", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            httpd.serve_forever()
