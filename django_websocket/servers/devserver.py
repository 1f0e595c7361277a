"""Django's development server (``runserver``), able to hand a connection to a WebSocket view."""

from __future__ import annotations

import io
import logging
import socket
from typing import TYPE_CHECKING, Any, BinaryIO

from django.core.servers.basehttp import ThreadedWSGIServer, WSGIRequestHandler, WSGIServer

from ..conf import settings
from ..websocket import ENVIRON_KEY, Handover
from .deadline import HeadDeadlineReader, HeadTimeout

__all__ = [
    "WebSocketRequestHandlerMixin",
    "WebSocketRequestHandler",
    "WebSocketServerMixin",
    "WebSocketWSGIServer",
    "ThreadedWebSocketWSGIServer",
]

logger = logging.getLogger("django_websocket")

if TYPE_CHECKING:
    # For type checkers, the mixins extend what they are combined with.
    _HandlerBase = WSGIRequestHandler
    _ServerBase = WSGIServer
else:
    _HandlerBase = _ServerBase = object


class _UpgradableWriter:
    """The handler's ``wfile``, which discards writes once the connection became a WebSocket.

    wsgiref writes the application's response after it returns; on an upgraded connection that
    would put HTTP bytes after WebSocket frames.
    """

    def __init__(self, wfile: BinaryIO) -> None:
        self._wfile = wfile
        self.upgraded = False

    def write(self, data: bytes) -> int:
        if self.upgraded:
            return len(data)
        return self._wfile.write(data)

    def flush(self) -> None:
        if not self.upgraded:
            self._wfile.flush()

    def close(self) -> None:
        self._wfile.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._wfile, name)


class _DetachedConnection:
    """What a handler's ``connection`` becomes once its socket belongs to a detached WebSocket:
    shutting it down does nothing."""

    def shutdown(self, how: int) -> None:
        pass


class WebSocketRequestHandlerMixin(_HandlerBase):
    """Adds a :class:`~django_websocket.websocket.Handover` to each request's environ, and gives
    a client :setting:`WEBSOCKET_HANDSHAKE_TIMEOUT` seconds for each request head."""

    # What socketserver gives a handler (django-stubs types these otherwise).
    connection: socket.socket  # type: ignore[assignment]
    rfile: io.BufferedReader  # type: ignore[assignment]

    def setup(self) -> None:
        super().setup()
        self.wfile = _UpgradableWriter(self.wfile)  # type: ignore[assignment]  # a file, to wsgiref
        # The same buffered reader, over a raw reader that can hold a deadline for the head.
        self.rfile.close()
        self._head_reader = HeadDeadlineReader(self.connection)
        self.rfile = io.BufferedReader(self._head_reader)

    def handle_one_request(self) -> None:
        # From waiting for the request line (an idle keep-alive connection waits here) to the
        # end of the headers; the body and the response take what they take, as in Django's.
        seconds = settings.WEBSOCKET_HANDSHAKE_TIMEOUT
        if seconds is not None:
            self._head_reader.start(seconds)
        try:
            super().handle_one_request()
        except HeadTimeout:
            logger.debug("Request head from %s not received in %ss: connection dropped", self.client_address, seconds)
            self.close_connection = True
        finally:
            self._head_reader.end()
        handover = getattr(self, "_handover", None)
        if handover is not None and handover.detached:
            # Django's handle() shuts the connection down once its requests are done: not this
            # one's, which the reactor keeps (WebSocket.detach).
            self.connection = _DetachedConnection()  # type: ignore[assignment]

    def get_environ(self) -> dict[str, Any]:
        # The head is read.
        self._head_reader.end()
        environ: dict[str, Any] = super().get_environ()
        self._handover = environ[ENVIRON_KEY] = Handover(self._hand_over, detachable=True)
        return environ

    def finish(self) -> None:
        super().finish()
        handover = getattr(self, "_handover", None)
        if handover is not None and handover.detached:
            # The connection outlives its view (WebSocket.detach): the server must not shut
            # down or close its socket when this handler is done (see WebSocketServerMixin).
            self.server._detached_requests.add(self.request)  # type: ignore[attr-defined]

    def _hand_over(self) -> tuple[socket.socket, bytes]:
        # No more HTTP on this connection: no keep-alive, no response bytes.
        self.close_connection = True
        self.wfile.upgraded = True  # type: ignore[attr-defined]  # the _UpgradableWriter of setup()
        sock = self.connection
        timeout = sock.gettimeout()
        # Bytes the buffered reader already holds past the request belong to the WebSocket:
        # take them without blocking (read1 returns the buffer, or one non-blocking read).
        sock.setblocking(False)
        try:
            leftover = self.rfile.read1(65536) or b""
        except (TimeoutError, BlockingIOError):
            leftover = b""
        finally:
            sock.settimeout(timeout)
        return sock, leftover


class WebSocketRequestHandler(WebSocketRequestHandlerMixin, WSGIRequestHandler):
    pass


class WebSocketServerMixin(_ServerBase):
    """Makes a Django ``WSGIServer`` use a request handler that can hand connections over."""

    def __init__(
        self, server_address: Any, RequestHandlerClass: type[Any] = WSGIRequestHandler, *args: Any, **kwargs: Any
    ) -> None:
        # django.core.servers.basehttp.run() always passes WSGIRequestHandler (and the live
        # server its quiet subclass): add the handover to whichever it is.
        if not issubclass(RequestHandlerClass, WebSocketRequestHandlerMixin):
            RequestHandlerClass = type(
                "WebSocket" + RequestHandlerClass.__name__,
                (WebSocketRequestHandlerMixin, RequestHandlerClass),
                {},
            )
        super().__init__(server_address, RequestHandlerClass, *args, **kwargs)
        # Sockets of detached WebSockets (their handler is done, the reactor has them).
        self._detached_requests: set[Any] = set()

    def shutdown_request(self, request: Any) -> None:
        if request in self._detached_requests:
            self._detached_requests.discard(request)
            return
        super().shutdown_request(request)


class WebSocketWSGIServer(WebSocketServerMixin, WSGIServer):
    """Django's development ``WSGIServer`` (runserver adds threading) for WebSocket views."""


class ThreadedWebSocketWSGIServer(WebSocketServerMixin, ThreadedWSGIServer):
    """Django's threaded server of ``LiveServerTestCase``, for WebSocket views."""
