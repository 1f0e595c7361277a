"""How a Django request becomes a WebSocket and how its view is run (shared by the decorators
and the middleware, so that each request is set up once and finished once)."""

import logging

from django.http import HttpResponse

from .conf import settings
from .exceptions import ConnectionClosed, HandshakeError
from .frames import CloseCode
from .handshake import is_websocket_request, read_request
from .websocket import ENVIRON_KEY, WebSocket

logger = logging.getLogger("django_websocket")

_STATE = "_websocket_state"

#: Options a decorator may override per view, and the setting each defaults to.
VIEW_OPTIONS = {
    "max_message_size": "WEBSOCKET_MAX_MESSAGE_SIZE",
    "max_frame_size": "WEBSOCKET_MAX_FRAME_SIZE",
    "subprotocols": "WEBSOCKET_SUBPROTOCOLS",
    "compression": "WEBSOCKET_COMPRESSION",
}


class _State:
    __slots__ = ("error", "served")

    def __init__(self, error=None):
        self.error = error  # the HTTP response refusing a bad handshake, if any
        self.served = False  # a view ran on this WebSocket and it was finished


def error_response(status, message, headers=()):
    response = HttpResponse(message + "\n", status=status, content_type="text/plain; charset=utf-8")
    for name, value in headers:
        response[name] = value
    return response


def prepare(request, options=None):
    """Give ``request`` its ``websocket`` and ``is_websocket()`` (once) and apply view options.

    Returns the HTTP response refusing a malformed handshake, or None.
    """
    state = getattr(request, _STATE, None)
    if state is None:
        state = _State()
        setattr(request, _STATE, state)
        environ = request.META
        is_websocket = is_websocket_request(environ)
        request.is_websocket = is_websocket.__bool__
        request.websocket = None
        if is_websocket:
            state.error = _open(request, environ)
    if options and request.websocket is not None and not request.websocket.accepted:
        for name, value in options.items():
            setattr(request.websocket, "server_subprotocols" if name == "subprotocols" else name, value)
    return state.error


def _open(request, environ):
    try:
        handshake = read_request(environ)
    except HandshakeError as exc:
        logger.warning("Bad WebSocket handshake for %s: %s", request.path, exc)
        return error_response(exc.status, str(exc), exc.headers)
    handover = environ.get(ENVIRON_KEY)
    if handover is None:
        logger.error(
            "WebSocket request to %s on a server that cannot upgrade connections: run "
            "django_websocket's runserver, gevent handler or gunicorn worker.",
            request.path,
        )
        return error_response(501, "This server cannot upgrade connections to WebSocket.")
    request.websocket = WebSocket(
        handshake,
        handover,
        max_message_size=settings.WEBSOCKET_MAX_MESSAGE_SIZE,
        max_frame_size=settings.WEBSOCKET_MAX_FRAME_SIZE,
        subprotocols=settings.WEBSOCKET_SUBPROTOCOLS,
        compression=settings.WEBSOCKET_COMPRESSION,
        close_timeout=settings.WEBSOCKET_CLOSE_TIMEOUT,
    )
    return None


class UpgradeResponse(HttpResponse):
    """What a WebSocket view's request answers once upgraded: the server writes none of it."""

    status_code = 101


def serve(request, view, args, kwargs):
    """Run ``view`` on a WebSocket request and finish the connection after it.

    Before the ``101`` is sent, the view's HTTP response (a refusal) goes out as usual. Once the
    connection is upgraded, whatever the view returns is ignored: the socket is closed with 1000,
    or 1011 if the view raised (the exception then reaches Django's normal error handling).
    """
    state = getattr(request, _STATE)
    websocket = request.websocket
    try:
        response = view(request, *args, **kwargs)
    except ConnectionClosed:
        if not websocket.accepted:
            raise
        # The client went away while the view was sending: not an error of the view.
        logger.debug("WebSocket client of %s went away", request.path)
        response = None
    except BaseException:
        state.served = True
        if websocket.accepted:
            websocket.close(CloseCode.INTERNAL_ERROR)
        raise
    state.served = True
    if not websocket.accepted:
        if response is not None:
            return response
        websocket.accept()
    websocket.close()
    return UpgradeResponse()
