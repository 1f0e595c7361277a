"""Django's development server (``runserver``), able to hand a connection to a WebSocket view."""


from django.core.servers.basehttp import ThreadedWSGIServer, WSGIRequestHandler, WSGIServer

from ..conf import settings
from ..websocket import ENVIRON_KEY, Handover

__all__ = [
    "WebSocketRequestHandlerMixin",
    "WebSocketRequestHandler",
    "WebSocketServerMixin",
    "WebSocketWSGIServer",
    "ThreadedWebSocketWSGIServer",
]


class _UpgradableWriter:
    """The handler's ``wfile``, which discards writes once the connection became a WebSocket.

    wsgiref writes the application's response after it returns; on an upgraded connection that
    would put HTTP bytes after WebSocket frames.
    """

    def __init__(self, wfile):
        self._wfile = wfile
        self.upgraded = False

    def write(self, data):
        if self.upgraded:
            return len(data)
        return self._wfile.write(data)

    def flush(self):
        if not self.upgraded:
            self._wfile.flush()

    def close(self):
        self._wfile.close()

    def __getattr__(self, name):
        return getattr(self._wfile, name)


class WebSocketRequestHandlerMixin:
    """Adds a :class:`~django_websocket.websocket.Handover` to each request's environ."""

    def setup(self):
        # Bounds each read of the request, so that a client sending its headers byte by byte
        # (slowloris) is dropped; the WebSocket sets its own timeouts once it takes over.
        self.timeout = settings.WEBSOCKET_HANDSHAKE_TIMEOUT
        super().setup()
        self.wfile = _UpgradableWriter(self.wfile)

    def get_environ(self):
        environ = super().get_environ()
        environ[ENVIRON_KEY] = Handover(self._hand_over)
        return environ

    def _hand_over(self):
        # No more HTTP on this connection: no keep-alive, no response bytes.
        self.close_connection = True
        self.wfile.upgraded = True
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


class WebSocketServerMixin:
    """Makes a Django ``WSGIServer`` use a request handler that can hand connections over."""

    def __init__(self, server_address, RequestHandlerClass=WSGIRequestHandler, *args, **kwargs):
        # django.core.servers.basehttp.run() always passes WSGIRequestHandler (and the live
        # server its quiet subclass): add the handover to whichever it is.
        if not issubclass(RequestHandlerClass, WebSocketRequestHandlerMixin):
            RequestHandlerClass = type(
                "WebSocket" + RequestHandlerClass.__name__,
                (WebSocketRequestHandlerMixin, RequestHandlerClass),
                {},
            )
        super().__init__(server_address, RequestHandlerClass, *args, **kwargs)


class WebSocketWSGIServer(WebSocketServerMixin, WSGIServer):
    """Django's development ``WSGIServer`` (runserver adds threading) for WebSocket views."""


class ThreadedWebSocketWSGIServer(WebSocketServerMixin, ThreadedWSGIServer):
    """Django's threaded server of ``LiveServerTestCase``, for WebSocket views."""
