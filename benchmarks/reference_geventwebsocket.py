"""The reference the memory figures are compared with: a plain Django view on gevent-websocket.

No django_websocket in the path: gevent-websocket's ``WebSocketServer`` serves the unwrapped
Django application, and the view ``/raw-echo`` (benchmarks/urls.py) echoes with gevent-websocket's
own ``environ["wsgi.websocket"]``. Started by ``idle_connections.py --server reference``::

    python benchmarks/reference_geventwebsocket.py 127.0.0.1:8000 --settings benchmarks.settings
"""

from gevent import monkey

monkey.patch_all()

import sys  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from geventwebsocket.handler import WebSocketHandler  # noqa: E402
from geventwebsocket.server import WebSocketServer  # noqa: E402

from django_websocket.servers import gevent as _gevent  # noqa: E402


def main():
    options = _gevent.build_parser("reference_geventwebsocket", __doc__.split("\n\n")[0]).parse_args()
    application = _gevent.load_django(options)
    host, port = options.addrport
    _gevent.serve(
        application,
        host,
        port,
        handler_class=WebSocketHandler,
        server_class=WebSocketServer,
        backlog=options.backlog,
        log=None if options.no_access_log else "default",
    )


if __name__ == "__main__":
    main()
