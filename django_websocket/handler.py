"""How a Django request becomes a WebSocket and how its view is run (shared by the decorators
and the middleware, so that each request is set up once and finished once)."""

import logging
import threading

from django.db import close_old_connections, connections
from django.db.backends.signals import connection_created
from django.http import HttpResponse

from .conf import settings
from .exceptions import ConnectionClosed, ForbiddenHandshake, HandshakeError, ServiceUnavailable
from .frames import CloseCode
from .groups import GroupsMixin
from .handshake import is_websocket_request, read_request
from .origin import check_origin
from .websocket import ENVIRON_KEY, WebSocket, is_shutting_down, open_connections

logger = logging.getLogger("django_websocket")

_STATE = "_websocket_state"

#: Options a decorator may override per view, and the setting each defaults to.
VIEW_OPTIONS = {
    "max_message_size": "WEBSOCKET_MAX_MESSAGE_SIZE",
    "max_frame_size": "WEBSOCKET_MAX_FRAME_SIZE",
    "subprotocols": "WEBSOCKET_SUBPROTOCOLS",
    "compression": "WEBSOCKET_COMPRESSION",
    "allowed_origins": "WEBSOCKET_ALLOWED_ORIGINS",
}


# The WebSocket whose view runs in each thread (greenlet, under gevent), by thread id: for the
# connection_created signal, which fires in the thread that opens a database connection.
_websocket_of_thread = {}


def _note_connection_opened(sender, connection, **kwargs):
    websocket = _websocket_of_thread.get(threading.get_ident())
    if websocket is not None:
        websocket._database_opened = True


connection_created.connect(_note_connection_opened, dispatch_uid="django_websocket.handler.connection_opened")


class DjangoWebSocket(GroupsMixin, WebSocket):
    """``request.websocket``: the connection, with what a long-lived Django view needs
    (``join`` and ``leave`` of groups come from :class:`~django_websocket.groups.GroupsMixin`)."""

    __slots__ = ("id", "_group_backend", "allowed_origins", "_database_opened")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.allowed_origins = None
        # Whether the view's thread has a database connection open, or opened one since the
        # view started. Database connections belong to the thread that opened them, and
        # close_old_connections() only ever acts on an open one: a view that never used the
        # database skips it. (Checking that each alias is not initialised costs a fifth of an
        # echo's round trip on gevent: two exceptions per alias in asgiref's thread-local storage.)
        self._database_opened = False

    def wait(self, timeout=None):
        message = super().wait(timeout)
        # A view may live for hours: give each message the fresh database connection a new
        # request would get (CONN_MAX_AGE, connections the server dropped).
        if self._database_opened:
            close_old_connections()
        return message

    def read(self, fallback=None):
        message = super().read(fallback)
        if self._database_opened:
            close_old_connections()
        return message


class _State:
    __slots__ = ("error",)

    def __init__(self, error=None):
        self.error = error  # the HTTP response refusing a bad handshake, if any


def error_response(status, message, headers=()):
    response = HttpResponse(message + "\n", status=status, content_type="text/plain; charset=utf-8")
    for name, value in headers:
        response[name] = value
    return response


def handshake_error_response(exc):
    """The HTTP answer of a :class:`~django_websocket.exceptions.HandshakeError`: its status and headers."""
    return error_response(exc.status, str(exc), exc.headers)


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
        handshake = read_request(
            environ, max_header_size=settings.WEBSOCKET_MAX_HEADER_SIZE, max_headers=settings.WEBSOCKET_MAX_HEADERS
        )
    except HandshakeError as exc:
        logger.warning("Bad WebSocket handshake for %s: %s", request.path, exc)
        return handshake_error_response(exc)
    handover = environ.get(ENVIRON_KEY)
    if handover is None:
        logger.error(
            "WebSocket request to %s on a server that cannot upgrade connections: run "
            "django_websocket's runserver, gevent handler or gunicorn worker.",
            request.path,
        )
        return error_response(501, "This server cannot upgrade connections to WebSocket.")
    request.websocket = DjangoWebSocket(
        handshake,
        handover,
        max_message_size=settings.WEBSOCKET_MAX_MESSAGE_SIZE,
        max_frame_size=settings.WEBSOCKET_MAX_FRAME_SIZE,
        subprotocols=settings.WEBSOCKET_SUBPROTOCOLS,
        compression=settings.WEBSOCKET_COMPRESSION,
        close_timeout=settings.WEBSOCKET_CLOSE_TIMEOUT,
        send_timeout=settings.WEBSOCKET_SEND_TIMEOUT,
        ping_interval=settings.WEBSOCKET_PING_INTERVAL,
        ping_timeout=settings.WEBSOCKET_PING_TIMEOUT,
    )
    request.websocket.allowed_origins = settings.WEBSOCKET_ALLOWED_ORIGINS
    return None


def check_policy(request):
    """Refuse the handshake by policy (origin, capacity, shutdown): raise a :class:`HandshakeError`.

    Checked just before the view runs, once the view's own options are known. Each refusal is
    logged with its reason: a silent 403 costs users days.
    """
    websocket = request.websocket
    if is_shutting_down():
        raise ServiceUnavailable("The server is shutting down.")
    reason = check_origin(
        websocket.handshake.origin,
        secure=request.is_secure(),
        allowed_origins=websocket.allowed_origins,
        require_origin=settings.WEBSOCKET_REQUIRE_ORIGIN,
    )
    if reason is not None:
        logger.warning(
            "Refused WebSocket handshake to %s from origin %r: %s", request.path, websocket.handshake.origin, reason
        )
        raise ForbiddenHandshake(f"Origin refused: {reason}.")
    cap = settings.WEBSOCKET_MAX_CONNECTIONS
    # Connections count once accepted, so concurrent handshakes may overshoot the cap slightly.
    open_now = open_connections()
    if cap is not None and open_now >= cap:
        logger.warning("Refused WebSocket handshake to %s: %d connections open (cap %d)", request.path, open_now, cap)
        raise ServiceUnavailable("Too many WebSocket connections; try again later.")


class UpgradeResponse(HttpResponse):
    """What a WebSocket view's request answers once upgraded: the server writes none of it."""

    status_code = 101


def serve(request, view, args, kwargs):
    """Run ``view`` on a WebSocket request and finish the connection after it.

    Before the ``101`` is sent, the view's HTTP response (a refusal) goes out as usual. Once the
    connection is upgraded, whatever the view returns is ignored: the socket is closed with 1000,
    or 1011 if the view raised (the exception then reaches Django's normal error handling).
    """
    websocket = request.websocket
    thread = threading.get_ident()
    _websocket_of_thread[thread] = websocket
    # Connections this thread opened before (a middleware's, say) sent their signal earlier.
    if any(conn.connection is not None for conn in connections.all(initialized_only=True)):
        websocket._database_opened = True
    try:
        return _serve(request, websocket, view, args, kwargs)
    finally:
        del _websocket_of_thread[thread]


def _serve(request, websocket, view, args, kwargs):
    try:
        check_policy(request)
        response = view(request, *args, **kwargs)
    except HandshakeError as exc:
        # A policy refusal, or the view's own (it may raise e.g. ForbiddenHandshake): before the
        # upgrade it is an HTTP answer with the error's status.
        if websocket.accepted:
            websocket.close(CloseCode.POLICY_VIOLATION, str(exc))
            return UpgradeResponse()
        return handshake_error_response(exc)
    except ConnectionClosed:
        if not websocket.accepted:
            raise
        # The client went away while the view was sending: not an error of the view.
        logger.debug("WebSocket client of %s went away", request.path)
        response = None
    except BaseException:
        if websocket.accepted:
            websocket.close(CloseCode.INTERNAL_ERROR)
        raise
    if not websocket.accepted:
        if response is not None:
            return response
        websocket.accept()
    websocket.close()
    return UpgradeResponse()
