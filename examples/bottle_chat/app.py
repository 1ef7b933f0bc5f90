"""The chat room on Bottle.

    pip install bottle
    python examples/bottle_chat/app.py           # then open http://127.0.0.1:8000

The handler lives in ``examples/chat/`` (shared by every chat example). Bottle
serves the page; ``WebSocketMiddleware`` wraps the Bottle application.
"""

from __future__ import annotations

import sys
from pathlib import Path

import bottle

from wsgiws import WebSocketMiddleware

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import chat  # the shared handler: importing it registers /chat/<room>

app = bottle.Bottle()


@app.get("/")
def index() -> str:
    return chat.page()


@app.get("/static/<name>")
def static(name: str) -> bottle.HTTPResponse:
    return bottle.static_file(name, root=chat.STATIC_DIR)


# WebSockets are served on the app's own port: ws://host:port/chat/<room>.
application = WebSocketMiddleware(app)

if __name__ == "__main__":
    args = chat.parse_args("The wsgiws chat on Bottle.")
    print(f"Chat running on http://{args.host}:{args.port} (Ctrl-C to stop)", flush=True)
    bottle.run(application, host=args.host, port=args.port, quiet=True)
