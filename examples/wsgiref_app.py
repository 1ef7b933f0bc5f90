"""A plain WSGI application with a WebSocket endpoint on the same port.

    python examples/wsgiref_app.py          # then open http://127.0.0.1:8000

The page sends what you type to ``/shout`` and shows the server's answers; the
server also pushes the time every second to every open page, from a plain thread.
"""

from __future__ import annotations

import argparse
import contextlib
import threading
import time
from wsgiref.simple_server import make_server

import wsgiws

PAGE = b"""<!doctype html>
<meta charset="utf-8"><title>wsgiws + wsgiref</title>
<style>body{font:16px system-ui;margin:40px auto;max-width:560px}
input{font:inherit;padding:6px;width:70%}#log{padding:0;list-style:none}</style>
<h1>wsgiws + wsgiref</h1>
<p>Server time: <b id="clock">&hellip;</b> &middot; <span id="state">connecting</span></p>
<form id="form"><input id="text" placeholder="say something" autofocus>
<button>Send</button></form>
<ul id="log"></ul>
<script>
const scheme = location.protocol === "https:" ? "wss:" : "ws:";
const ws = new WebSocket(`${scheme}//${location.host}/shout`);
const $ = (id) => document.getElementById(id);
ws.onopen = () => { $("state").textContent = "connected"; };
ws.onclose = () => { $("state").textContent = "disconnected (reload to retry)"; };
ws.onmessage = (event) => {
  const msg = JSON.parse(event.data);
  if (msg.time) { $("clock").textContent = msg.time; return; }
  const li = document.createElement("li");
  li.textContent = msg.reply;
  $("log").prepend(li);
};
$("form").onsubmit = (event) => {
  event.preventDefault();
  ws.send($("text").value);
  $("text").value = "";
};
</script>
"""


def app(environ, start_response):
    """Any WSGI application: here, one page."""
    if environ["PATH_INFO"] != "/":
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found"]
    start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
    return [PAGE]


@wsgiws.Namespace(r"/shout")
class Shout(wsgiws.BaseWSClass):
    """Answer each message in capitals; every client is in the group "clock"."""

    @classmethod
    def on_connect(cls, websocket: wsgiws.WebSocket, path: str) -> None:
        websocket.join("clock")

    @classmethod
    def on_message(cls, websocket: wsgiws.WebSocket, message: str | bytes) -> None:
        if isinstance(message, str):
            websocket.send_json({"reply": message.upper() + "!"})


def tick() -> None:
    """Push the time to every page, from a thread that has no connection at hand."""
    while True:
        wsgiws.group("clock").send_json({"time": time.strftime("%H:%M:%S")})
        time.sleep(1)


# WebSockets on the WSGI server's own port: ws://127.0.0.1:8000/shout
application = wsgiws.WebSocketMiddleware(app)

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="A WSGI app with a WebSocket endpoint.")
    parser.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    args = parser.parse_args()
    threading.Thread(target=tick, daemon=True).start()
    with make_server("127.0.0.1", args.port, application) as httpd:
        print(f"Serving on http://127.0.0.1:{args.port} (Ctrl-C to stop)", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            httpd.serve_forever()
