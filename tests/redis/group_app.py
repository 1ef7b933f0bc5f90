"""The application the Redis group tests run in subprocesses.

``python -m tests.redis.group_app MODE --redis URL`` with MODE:

* ``serve``: a :class:`wsgiws.Server` on 127.0.0.1, port 0, with the Redis backend.
  Prints ``PORT <ws port>`` once subscribed, then serves until terminated.
* ``wsgi``: a plain WSGI application under ``wsgiref`` with the Redis backend and
  no WebSocket server at all; its views send to groups. Prints ``PORT <http port>``.
* ``send``: sends one text message to a group and exits (the backend publishes it
  before the process ends).
* ``fork``: forks; the child, then the parent, send one message each and exit.

WebSocket endpoints: ``/room/<name>`` joins group ``<name>`` in ``on_connect`` and
first sends ``{"hello": <pid>, "id": <connection id>}``; ``/ctl`` takes JSON commands
(``send``, ``broadcast``, ``send_to``, ``status``, ``flood``, ``members``) and
answers each with one JSON message. HTTP views (also for gunicorn, see
``gunicorn_app``): ``/send?group=G&text=T``, ``/broadcast?text=T`` (add ``&flush=1`` to answer
once the message is in Redis), ``/status``.

Logging goes to stderr at INFO, so tests can read what the backend reported.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import wsgiws
from wsgiws.redis_groups import RedisBackend
from wsgiws.session import Session

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

registry = wsgiws.Registry()
#: Close codes seen by on_close, by connection id (for the ``members`` command).
closed_codes: dict[str, int | None] = {}
_lock = threading.Lock()


def backend_status() -> dict[str, Any]:
    """What this process's backend says about itself."""
    backend = wsgiws.get_group_backend()
    assert isinstance(backend, RedisBackend)
    return {
        "pid": os.getpid(),
        "connected": backend.connected,
        "lost": backend.lost_messages,
        "origin": backend.origin,
        "stats": backend.stats.as_dict(),
    }


@wsgiws.Namespace(r"/room/(?P<name>[\w-]+)", registry=registry)
class Room(wsgiws.BaseWSClass):
    """A member of one group: what it sends goes to the whole group, itself included."""

    @classmethod
    def on_connect(cls, websocket: wsgiws.WebSocket, path: str) -> None:
        websocket.join(websocket.match["name"])
        websocket.send_json({"hello": os.getpid(), "id": websocket.id})

    @classmethod
    def on_message(cls, websocket: wsgiws.WebSocket, message: str | bytes) -> None:
        wsgiws.group(websocket.match["name"]).send(message)

    @classmethod
    def on_close(cls, websocket: wsgiws.WebSocket) -> None:
        with _lock:
            closed_codes[websocket.id] = websocket.close_code


@wsgiws.Namespace(r"/ctl", registry=registry)
class Control(wsgiws.BaseWSClass):
    """Commands from the test, answered with one JSON message each."""

    @classmethod
    def on_message(cls, websocket: wsgiws.WebSocket, message: str | bytes) -> None:
        command = json.loads(message)
        op = command["op"]
        if op == "send":
            wsgiws.group(command["group"]).send(command["text"])
            websocket.send_json({"ok": op})
        elif op == "broadcast":
            wsgiws.broadcast(command["text"])
            websocket.send_json({"ok": op})
        elif op == "send_to":
            local = wsgiws.send_to(command["id"], command["text"])
            websocket.send_json({"ok": op, "local": local})
        elif op == "flood":
            group = wsgiws.group(command["group"])
            payload = "x" * command["size"]
            for i in range(command["count"]):
                group.send(f"{i:08d}{payload}")
            websocket.send_json({"ok": op})
        elif op == "members":
            websocket.send_json(members(command["group"]))
        elif op == "status":
            websocket.send_json(backend_status())
        else:
            websocket.send_json({"error": op})


def members(name: str) -> dict[str, Any]:
    """The group's local members with their outgoing buffer sizes, and past closes."""
    sizes = {}
    for member in wsgiws.group(name).members:
        session = member._connection
        assert isinstance(session, Session)
        sizes[member.id] = session.transport.queued_bytes()
    with _lock:
        closes = dict(closed_codes)
    return {"buffers": sizes, "closed": closes}


def application(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    """Plain WSGI views that send to groups, with no connection at hand."""
    path = environ.get("PATH_INFO", "")
    query = {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    body: dict[str, Any]
    if path == "/send":
        wsgiws.group(query["group"]).send(query["text"])
        body = {"ok": "send", "pid": os.getpid()}
    elif path == "/broadcast":
        wsgiws.broadcast(query["text"])
        body = {"ok": "broadcast", "pid": os.getpid()}
    elif path == "/status":
        body = backend_status()
    else:
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found"]
    if "flush" in query:  # answer once the message is in Redis: orders it for the test
        backend = wsgiws.get_group_backend()
        assert isinstance(backend, RedisBackend)
        body["flushed"] = backend.flush(30)
    data = json.dumps(body).encode()
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
    )
    return [data]


def setup_logging() -> None:
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format=f"%(asctime)s {os.getpid()} %(levelname)s %(name)s: %(message)s",
    )


def use_redis(url: str) -> RedisBackend:
    """Select the Redis backend (fast reconnects for the tests) and wait until subscribed."""
    backend = RedisBackend(url, reconnect_delay=0.05, reconnect_max_delay=0.5)
    wsgiws.set_group_backend(backend)
    if not backend.wait_ready(30):
        raise SystemExit("not subscribed to redis in time")
    return backend


def fork_and_send(backend: RedisBackend, group: str, text: str) -> None:
    """Fork; the child and then the parent send ``text`` (tagged) through the backend."""
    parent_origin = backend.origin
    pid = os.fork()
    if pid == 0:
        ok = backend.wait_ready(30) and backend.origin != parent_origin
        wsgiws.group(group).send(f"{text} from the child")
        backend.close()
        os._exit(0 if ok and not backend.lost_messages else 1)
    _, status = os.waitpid(pid, 0)
    wsgiws.group(group).send(f"{text} from the parent")
    backend.close()
    print(f"CHILD {os.waitstatus_to_exitcode(status)}", flush=True)


def wait_for_signal() -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    while not stop.wait(0.5):
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mode", choices=("serve", "wsgi", "send", "fork"))
    parser.add_argument("--redis", required=True)
    parser.add_argument("--write-limit", type=int, default=None)
    parser.add_argument("--group", default="")
    parser.add_argument("--text", default="")
    args = parser.parse_args()
    setup_logging()
    backend = use_redis(args.redis)
    if args.mode == "send":
        wsgiws.group(args.group).send(args.text)
        backend.close()
        sys.exit(1 if backend.lost_messages else 0)
    if args.mode == "fork":
        fork_and_send(backend, args.group, args.text)
        return
    if args.mode == "wsgi":
        from wsgiref.simple_server import WSGIRequestHandler, make_server

        class QuietHandler(WSGIRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

        httpd = make_server("127.0.0.1", 0, application, handler_class=QuietHandler)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        print(f"PORT {httpd.server_port}", flush=True)
        wait_for_signal()
        httpd.shutdown()
        return
    options: dict[str, Any] = {"close_timeout": 2.0}
    if args.write_limit is not None:
        options["write_limit"] = args.write_limit
    with wsgiws.Server(host="127.0.0.1", port=0, registry=registry, **options) as server:
        print(f"PORT {server.port}", flush=True)
        wait_for_signal()


if __name__ == "__main__":
    main()
