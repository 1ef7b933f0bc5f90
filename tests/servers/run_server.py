"""Run ``matrix_app`` under one in-process WSGI server on 127.0.0.1, port 0.

Usage: ``python -m tests.servers.run_server KIND`` with KIND one of ``wsgiref``,
``werkzeug`` (a Flask application under werkzeug's threaded dev server, as
``flask run`` serves it), ``gevent`` (gevent's pywsgi) or ``waitress``. Prints
``SERVING <port>`` once listening, then serves until terminated.
"""

from __future__ import annotations

import os
import signal
import sys


def _print_port(port: int) -> None:
    print(f"SERVING {port}", flush=True)


def _serve_wsgiref() -> None:
    from wsgiref.simple_server import make_server

    from tests.servers.matrix_app import application

    server = make_server("127.0.0.1", 0, application)
    _print_port(server.server_port)
    server.serve_forever()


def _serve_werkzeug() -> None:
    from werkzeug.serving import make_server

    os.environ["WSGIWS_TEST_APP"] = "flask"
    from tests.servers.matrix_app import application

    server = make_server("127.0.0.1", 0, application, threaded=True)
    _print_port(server.port)
    server.serve_forever()


def _serve_gevent() -> None:
    from gevent.pywsgi import WSGIServer

    from tests.servers.matrix_app import application

    server = WSGIServer(("127.0.0.1", 0), application)
    server.start()
    _print_port(server.server_port)
    server.serve_forever()


def _serve_waitress() -> None:
    from waitress.server import create_server

    from tests.servers.matrix_app import application

    server = create_server(application, host="127.0.0.1", port=0)
    _print_port(server.effective_port)
    server.run()


SERVERS = {
    "wsgiref": _serve_wsgiref,
    "werkzeug": _serve_werkzeug,
    "gevent": _serve_gevent,
    "waitress": _serve_waitress,
}


def main() -> None:
    """Serve until SIGTERM, which exits normally (running atexit hooks)."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    SERVERS[sys.argv[1]]()


if __name__ == "__main__":
    main()
