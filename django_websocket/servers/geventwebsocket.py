"""gevent-websocket's ``WebSocketHandler``, for deployments that already use it.

That handler performs the upgrade itself, *before* Django runs: it sends the ``101`` and puts
its own WebSocket object in ``environ["wsgi.websocket"]``. :class:`GeventWebSocketAdapter` wraps
the project's WSGI application and takes the connection over from it, so that ``request.websocket``
is the same object as on every other server and our core, not gevent-websocket's framing, talks
on the connection. Two differences follow from the early ``101``, both documented:

* A handshake the view, a decorator or a middleware refuses (with 400, 403, a redirect...) can no
  longer get that HTTP answer: the connection is closed with 1008 (policy violation), or 1011
  when the answer was a server error, with the HTTP status line as the close reason.
* Subprotocol and extension negotiation happened without Django: the connection speaks no
  subprotocol unless gevent-websocket's own ``app_protocol`` hook chose one, and no
  permessage-deflate. ``request.websocket`` reports what the ``101`` actually said.

In ``wsgi.py``::

    from django_websocket.servers.geventwebsocket import get_wsgi_application

    application = get_wsgi_application()

then, e.g., ``gunicorn -k django_websocket.servers.gunicorn.GeventWebSocketWorker mysite.wsgi``
(gevent-websocket's worker with a deadline for each request head, and 1001 on restarts), or
without gunicorn ``python -m django_websocket.servers.geventwebsocket 127.0.0.1:8000``.
"""

if __name__ == "__main__":
    # Run as a program: patch before anything imports threading, socket or select.
    from gevent import monkey

    monkey.patch_all()

import logging
from collections.abc import Callable, Iterable, MutableMapping
from typing import Any

from geventwebsocket import handler as _handler
from geventwebsocket.server import WebSocketServer

from ..frames import CloseCode
from ..handshake import Request
from ..websocket import ENVIRON_KEY, Handover, WebSocket
from . import gevent as _gevent

__all__ = ["GeventWebSocketAdapter", "GeventWebSocketHandler", "get_wsgi_application", "main"]

logger = logging.getLogger("django_websocket")

#: Where gevent-websocket puts its WebSocket object.
GEVENTWEBSOCKET_KEY = "wsgi.websocket"


class GeventWebSocketAdapter:
    """WSGI middleware: turns gevent-websocket's already upgraded connection into a
    :class:`~django_websocket.websocket.Handover` for ``request.websocket``.

    Any other request passes through untouched, so wrapping is harmless on other servers.
    """

    def __init__(self, application: Callable[..., Iterable[bytes]]) -> None:
        self.application = application

    def __call__(self, environ: MutableMapping[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        theirs = environ.get(GEVENTWEBSOCKET_KEY)
        if theirs is None or ENVIRON_KEY in environ:
            return self.application(environ, start_response)
        handover = Handover(
            lambda: _take_over(theirs),
            accepted=True,
            wait_readable=_gevent.ReadableWaiter().wait,
            writable_now=_gevent.writable_now,
            send_now=_gevent.send_now,
            lock=_gevent.WriteLock,
            # Only our handler leaves a detached connection alone once its view returned.
            detachable=isinstance(theirs.handler, GeventWebSocketHandler),
        )
        environ[ENVIRON_KEY] = handover
        _state_agreed_subprotocol(environ, theirs.handler)
        status: list[str] = []

        def capture(status_line: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            status[:] = [status_line]
            # gevent-websocket's start_response here writes nothing: its 101 is already sent.
            return start_response(status_line, headers, exc_info)

        try:
            result = self.application(environ, capture)
        except BaseException:
            if not handover.taken:
                _refuse(environ, handover, "500 Internal Server Error")
            raise
        try:
            # gevent-websocket only lists the result and never closes it; closing it is what
            # fires Django's request_finished (database connections are released then).
            for _ in result:
                pass
        finally:
            try:
                if not handover.taken:
                    _refuse(environ, handover, status[0] if status else "500 Internal Server Error")
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
        return []


# (gevent-websocket has no type information: its handler is Any to type checkers.)
class GeventWebSocketHandler(_gevent.RequestHeadDeadlineMixin, _handler.WebSocketHandler):  # type: ignore[misc]
    """gevent-websocket's handler, with a deadline for each request head
    (:setting:`WEBSOCKET_HANDSHAKE_TIMEOUT`), which it has none of, and able to let a detached
    WebSocket outlive its view (``WebSocket.detach()``)."""

    def run_application(self) -> None:
        super().run_application()
        _gevent.keep_if_detached(self)


class KeepsDetachedWebSocketServer(_gevent.KeepsDetachedMixin, WebSocketServer):  # type: ignore[misc]
    """gevent-websocket's ``WebSocketServer``, leaving the sockets of detached WebSockets open."""


def _take_over(theirs: Any) -> tuple[Any, bytes]:
    handler = theirs.handler
    # gevent-websocket must write nothing more on this connection, in particular not the close
    # frame its handler sends when the application returns.
    theirs.closed = True
    return handler.socket, _gevent.take_buffered(handler.socket, handler.rfile)


def _state_agreed_subprotocol(environ: MutableMapping[str, Any], handler: Any) -> None:
    # The 101 is gone: the subprotocol is the one it named, if any, whatever the client offered.
    # Django then sees only that one, and request.websocket.protocol says what the client got.
    agreed = None
    for name, value in handler.response_headers or ():
        if name.lower() == b"sec-websocket-protocol":
            agreed = value.decode("latin-1")
    if agreed:
        environ["HTTP_SEC_WEBSOCKET_PROTOCOL"] = agreed
    else:
        environ.pop("HTTP_SEC_WEBSOCKET_PROTOCOL", None)


def _refuse(environ: MutableMapping[str, Any], handover: Handover, status_line: str) -> None:
    """The application answered with HTTP instead of using the WebSocket: close it with 1008
    (or 1011 for a server error), the status line as the reason."""
    from ..conf import settings

    code = CloseCode.INTERNAL_ERROR if status_line.startswith("5") else CloseCode.POLICY_VIOLATION
    path = environ.get("PATH_INFO", "")
    logger.info(
        "WebSocket to %s answered %r after gevent-websocket had accepted it: closing with %d",
        path,
        status_line,
        code,
    )
    # Only the handover matters here: the 101 was sent, nothing is negotiated any more.
    handshake = Request("", [], [], environ.get("HTTP_ORIGIN"), environ.get("HTTP_HOST", ""), path)
    websocket = WebSocket(handshake, handover, compression=False, close_timeout=settings.WEBSOCKET_CLOSE_TIMEOUT)
    websocket.close(code, status_line)


def get_wsgi_application() -> GeventWebSocketAdapter:
    """Django's WSGI application, wrapped for gevent-websocket's handler."""
    from django.core.wsgi import get_wsgi_application as django_application

    return GeventWebSocketAdapter(django_application())


def main(argv: list[str] | None = None, prog: str = "python -m django_websocket.servers.geventwebsocket") -> None:
    options = _gevent.build_parser(
        prog, "Serve a Django project with gevent-websocket's WebSocketHandler."
    ).parse_args(argv)
    _gevent.check_patched()
    application = GeventWebSocketAdapter(_gevent.load_django(options))
    host, port = options.addrport
    _gevent.serve(
        application,
        host,
        port,
        handler_class=GeventWebSocketHandler,
        server_class=KeepsDetachedWebSocketServer,
        backlog=options.backlog,
        log=None if options.no_access_log else "default",
    )


if __name__ == "__main__":
    from django_websocket.servers.geventwebsocket import main as _main

    _main()
