"""The chat room on Flask.

    pip install flask
    python examples/flask_chat/app.py            # then open http://127.0.0.1:8000

The handler lives in ``examples/chat/`` (shared by every chat example). Flask serves
the page; ``WebSocketMiddleware`` wraps ``app.wsgi_app``, the usual place for WSGI
middleware in Flask. Under gunicorn, from this directory:
``gunicorn -k gthread --threads 8 app:app`` (one worker: the rooms live in its
memory; several workers need the Redis group backend).
"""

from __future__ import annotations

import sys
from pathlib import Path

from flask import Flask
from wsgiws import WebSocketMiddleware

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import chat  # the shared handler: importing it registers /chat/<room>

app = Flask(__name__, static_folder=chat.STATIC_DIR, static_url_path="/static")


@app.get("/")
def index() -> str:
    return chat.page()


# WebSockets are served on the app's own port: ws://host:port/chat/<room>.
app.wsgi_app = WebSocketMiddleware(app.wsgi_app)  # type: ignore[method-assign]

if __name__ == "__main__":
    args = chat.parse_args("The wsgiws chat on Flask.")
    print(f"Chat running on http://{args.host}:{args.port} (Ctrl-C to stop)", flush=True)
    app.run(host=args.host, port=args.port, threaded=True)
