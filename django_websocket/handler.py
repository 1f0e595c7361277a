"""How a Django request becomes a WebSocket and how its view is run (shared by the decorators
and the middleware, so that each request is set up once and finished once)."""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias, cast

from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.signals import connection_created
from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase

from .conf import settings
from .events import ASGIWebSocket, AsyncWebSocket, EventHandover
from .exceptions import ConnectionClosed, ForbiddenHandshake, HandshakeError, ServiceUnavailable
from .frames import CloseCode
from .groups import AsyncGroupsMixin, GroupsMixin
from .handshake import Request, is_websocket_request, read_request
from .origin import check_origin
from .protocol import Message
from .websocket import ENVIRON_KEY, Handover, WebSocket, is_shutting_down, open_connections

if TYPE_CHECKING:
    from .types import AsyncWebSocketConnection, WebSocketConnection

    # For type checkers, the rules below extend the blocking connection they are combined with
    # (WebSocket, or ASGIWebSocket, whose blocking API is the same).
    _RulesBase = WebSocket
    _AnyDjangoWebSocket: TypeAlias = "DjangoWebSocket | DjangoASGIWebSocket | DjangoAsyncWebSocket"

    class _Request(HttpRequest):
        # A request as prepare() leaves it.
        websocket: _AnyDjangoWebSocket | None
        is_websocket: Callable[[], bool]

else:
    _RulesBase = object

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
_websocket_of_thread: dict[int, DjangoWebSocket | DjangoASGIWebSocket] = {}


def _note_connection_opened(sender: object, connection: BaseDatabaseWrapper, **kwargs: object) -> None:
    websocket = _websocket_of_thread.get(threading.get_ident())
    if websocket is not None:
        websocket._database_opened = True


connection_created.connect(_note_connection_opened, dispatch_uid="django_websocket.handler.connection_opened")


def _open_connections() -> list[BaseDatabaseWrapper]:
    """This thread's open database connections that no transaction holds. An in-memory SQLite
    database is left out: Django never closes its connection (that would destroy the database),
    so there is nothing to refresh or release."""
    return [
        c
        for c in connections.all(initialized_only=True)
        if c.connection is not None
        and not c.in_atomic_block
        and not (c.vendor == "sqlite" and c.is_in_memory_db())  # type: ignore[attr-defined]
    ]


def refresh_connections() -> None:
    """Between two messages of a long-lived view: what Django does between two requests
    (``close_if_unusable_or_obsolete``: broken connections, changed autocommit, ``CONN_MAX_AGE``
    elapsed, ``CONN_HEALTH_CHECKS`` re-armed), except that ``CONN_MAX_AGE = 0`` ("one request")
    keeps the connection while the view is busy: it is closed once the view goes idle (see
    :func:`release_connections`) or ends. A connection inside a transaction (``atomic()``) is
    never touched: closing it would break the transaction."""
    for conn in _open_connections():
        if conn.settings_dict["CONN_MAX_AGE"] == 0:
            close_at, conn.close_at = conn.close_at, None
            try:
                conn.close_if_unusable_or_obsolete()
            finally:
                if conn.connection is not None:
                    conn.close_at = close_at
        else:
            conn.close_if_unusable_or_obsolete()


def release_connections() -> None:
    """Close this thread's database connections (outside transactions): its view is blocked
    waiting for its client, which may take hours; the next query opens a fresh one."""
    for conn in _open_connections():
        conn.close()


class _DjangoRules(_RulesBase):
    """What a long-lived Django view needs of its blocking connection: the database rules
    between messages and while idle (see :func:`refresh_connections`), the Origin option."""

    __slots__ = ()

    allowed_origins: Sequence[str] | None
    _database_opened: bool

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.allowed_origins = None
        # Whether the view's thread has a database connection open, or opened one since the
        # view started. Database connections belong to the thread that opened them, and the
        # per-message refresh only acts on open ones: a view that never used the database
        # skips it. (Looking at each alias costs a fifth of an echo's round trip on gevent:
        # two exceptions per alias in asgiref's thread-local storage.)
        self._database_opened = False

    def _idle(self) -> None:
        # wait() has been blocked for idle_timeout seconds, in the view's thread.
        release_connections()
        self._database_opened = any(c.connection is not None for c in connections.all(initialized_only=True))

    def wait(self, timeout: float | None = None) -> Message | None:
        if self._database_opened and self.idle_timeout is not None:
            self._on_idle = self._idle
        message = super().wait(timeout)
        if self._database_opened:
            self._on_idle = None
            refresh_connections()
        return message

    def read(self, fallback: Any = None) -> Any:
        message = super().read(fallback)
        if self._database_opened:
            refresh_connections()
        return message


class DjangoWebSocket(_DjangoRules, GroupsMixin, WebSocket):
    """``request.websocket`` on the WSGI servers: the connection, with what a long-lived Django
    view needs (``join`` and ``leave`` of groups come from
    :class:`~django_websocket.groups.GroupsMixin`)."""

    __slots__ = ("id", "_group_backend", "_user_id_of", "allowed_origins", "_database_opened")


# (The ignore: for type checkers _DjangoRules extends WebSocket, whose private _end differs, and
# whose close_code and close_reason are read-only properties.)
class DjangoASGIWebSocket(_DjangoRules, GroupsMixin, ASGIWebSocket):  # type: ignore[misc, override]
    """``request.websocket`` of a regular view on an ASGI server: the same API as
    :class:`DjangoWebSocket`, over the server's events."""

    __slots__ = ("id", "_group_backend", "_user_id_of", "allowed_origins", "_database_opened")


class DjangoAsyncWebSocket(AsyncGroupsMixin, AsyncWebSocket):
    """``request.websocket`` of an ``async def`` view on an ASGI server (``await ws.join()``
    and ``await ws.leave()`` for groups). Its database queries go through Django's async
    interfaces, which manage their connections themselves."""

    __slots__ = ("id", "_group_backend", "_user_id_of", "allowed_origins")

    allowed_origins: Sequence[str] | None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.allowed_origins = None


class _State:
    __slots__ = ("error",)

    def __init__(self, error: HttpResponseBase | None = None) -> None:
        self.error = error  # the HTTP response refusing a bad handshake, if any


def error_response(status: int, message: str, headers: Iterable[tuple[str, str]] = ()) -> HttpResponse:
    response = HttpResponse(message + "\n", status=status, content_type="text/plain; charset=utf-8")
    for name, value in headers:
        response[name] = value
    return response


def handshake_error_response(exc: HandshakeError) -> HttpResponse:
    """The HTTP answer of a :class:`~django_websocket.exceptions.HandshakeError`: its status and headers."""
    return error_response(exc.status, str(exc), exc.headers)


def prepare(request: _Request, options: Mapping[str, Any] | None = None) -> HttpResponseBase | None:
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


def _open(request: _Request, environ: Mapping[str, Any]) -> HttpResponseBase | None:
    # A Handover, an events.EventHandover (an ASGI server's), or None.
    handover: Any = environ.get(ENVIRON_KEY)
    if getattr(handover, "transport", None) == "events":
        # An ASGI server validated the handshake and frames the connection itself.
        cls = DjangoAsyncWebSocket if handover.asynchronous else DjangoASGIWebSocket
        return _create(request, cls, handover.handshake, handover)
    try:
        handshake = read_request(
            environ, max_header_size=settings.WEBSOCKET_MAX_HEADER_SIZE, max_headers=settings.WEBSOCKET_MAX_HEADERS
        )
    except HandshakeError as exc:
        logger.warning("Bad WebSocket handshake for %s: %s", request.path, exc)
        return handshake_error_response(exc)
    if handover is None:
        fix, short = _upgrade_fix(environ)
        logger.error(
            "WebSocket request to %s refused with 501: this server cannot upgrade connections; %s", request.path, fix
        )
        return error_response(501, f"This server cannot upgrade connections to WebSocket: {short}.")
    return _create(request, DjangoWebSocket, handshake, handover)


#: Every way of serving WebSocket views, for a server that is none of them.
SUPPORTED_SERVERS = (
    "django_websocket's runserver (development), python -m django_websocket.servers.gevent "
    "(or manage.py rungevent), gunicorn -k django_websocket.servers.gunicorn.GeventWorker, "
    "-k django_websocket.servers.gunicorn.ThreadWorker --threads N or "
    "-k django_websocket.servers.gunicorn.GeventWebSocketWorker, "
    "or an ASGI server with django_websocket.asgi.get_asgi_application()"
)


def _upgrade_fix(environ: Mapping[str, Any]) -> tuple[str, str]:
    """What to do about a server that put no handover in the environ: the log line's words and
    the 501 body's. The server is told by ``SERVER_SOFTWARE`` and by what runs this process:
    each wrong server has its own one-line fix, which a generic "use a supported server" hides."""
    software = environ.get("SERVER_SOFTWARE", "")
    if "gunicorn" in software:
        # gunicorn's own gevent workers (-k gevent, -k gevent_pywsgi) patch before loading the
        # application; its sync and gthread workers leave the modules alone.
        monkey = sys.modules.get("gevent.monkey")
        if monkey is not None and monkey.is_module_patched("socket"):
            worker = "-k django_websocket.servers.gunicorn.GeventWorker"
            return (
                f"gunicorn's own gevent worker cannot hand a connection over: run gunicorn with {worker} "
                "(the same gevent worker, able to)",
                f"run gunicorn with {worker}",
            )
        workers = (
            "-k django_websocket.servers.gunicorn.ThreadWorker --threads N "
            "or -k django_websocket.servers.gunicorn.GeventWorker"
        )
        return (
            f"gunicorn's sync (and gthread) worker cannot hand a connection over: run gunicorn with {workers} "
            "(each open WebSocket holds one of a ThreadWorker's N threads; a GeventWorker holds thousands)",
            f"run gunicorn with {workers}",
        )
    if software.startswith("WSGIServer/") and sys.argv[1:2] == ["runserver"]:
        # Django's runserver (wsgiref's server), not ours: ours puts a handover in every environ.
        from django.apps import apps

        from .checks import INSTALLED_APPS_LINE, runserver_owner, shadowing_fix

        if not apps.is_installed("django_websocket"):
            return (
                "this is Django's runserver, and django_websocket's replaces it only when the app is "
                f"installed, first: {INSTALLED_APPS_LINE}",
                "add 'django_websocket' first in INSTALLED_APPS",
            )
        owner = runserver_owner()
        if owner not in (None, "django_websocket"):
            return (
                f"this is the runserver of {owner!r}, which shadows django_websocket's: {shadowing_fix(owner)}",
                f"list 'django_websocket' above {owner!r} in INSTALLED_APPS",
            )
    return (f"serve the project with one of {SUPPORTED_SERVERS}", "see the server's log for the servers that can")


def _user_id_of(request: _Request) -> Callable[[], int | str | None]:
    """A function giving the primary key of ``request.user`` when authenticated, else None: what
    a socket joining a group records (django_websocket.groups.members tells it). It is read at
    join time, not now: ``request.user`` is lazy, and most sockets never join a group."""
    # A weak reference: the request holds its websocket, which need not keep the request alive.
    ref = weakref.ref(request)

    def user_id() -> int | str | None:
        user = getattr(ref(), "user", None)  # no AuthenticationMiddleware: no user
        if user is None or not user.is_authenticated:
            return None
        pk = user.pk
        # JSON carries it to other processes: what is neither int nor str (a UUID) goes as str.
        return pk if isinstance(pk, (int, str)) else str(pk)

    return user_id


def _create(
    request: _Request,
    cls: type[DjangoWebSocket | DjangoASGIWebSocket | DjangoAsyncWebSocket],
    handshake: Request,
    handover: Handover | EventHandover,
) -> HttpResponseBase | None:
    request.websocket = cls(
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
        max_queue=settings.WEBSOCKET_MAX_QUEUE,
        max_queue_bytes=settings.WEBSOCKET_MAX_QUEUE_BYTES,
    )
    request.websocket.allowed_origins = settings.WEBSOCKET_ALLOWED_ORIGINS
    request.websocket.idle_timeout = settings.WEBSOCKET_DATABASE_IDLE_TIMEOUT
    request.websocket._user_id_of = _user_id_of(request)
    return None


def check_policy(request: _Request) -> None:
    """Refuse the handshake by policy (origin, capacity, shutdown): raise a :class:`HandshakeError`.

    Checked just before the view runs, once the view's own options are known. Each refusal is
    logged with its reason: a silent 403 costs users days.
    """
    websocket = cast("_AnyDjangoWebSocket", request.websocket)  # set: this is a WebSocket request
    if is_shutting_down():
        raise ServiceUnavailable("The server is shutting down.")
    # The view's allowed_origins option is a list of its own, not the setting's object: the log
    # line then names the option that would allow a refused origin.
    from_view = websocket.allowed_origins is not settings.WEBSOCKET_ALLOWED_ORIGINS
    refusal = check_origin(
        request,
        websocket.handshake.origin,
        allowed_origins=websocket.allowed_origins,
        allowed_by="the view's allowed_origins" if from_view else "WEBSOCKET_ALLOWED_ORIGINS",
        require_origin=settings.WEBSOCKET_REQUIRE_ORIGIN,
    )
    if refusal is not None:
        logger.warning(
            "Refused WebSocket handshake to %s from origin %r: %s", request.path, websocket.handshake.origin, refusal
        )
        raise ForbiddenHandshake(f"Origin refused: {refusal.reason}.")
    cap = settings.WEBSOCKET_MAX_CONNECTIONS
    # Connections count once accepted, so concurrent handshakes may overshoot the cap slightly.
    open_now = open_connections()
    if cap is not None and open_now >= cap:
        logger.warning("Refused WebSocket handshake to %s: %d connections open (cap %d)", request.path, open_now, cap)
        raise ServiceUnavailable("Too many WebSocket connections; try again later.")


class UpgradeResponse(HttpResponse):
    """What a WebSocket view's request answers once upgraded: the server writes none of it."""

    status_code = 101


def serve(
    request: _Request, view: Callable[..., HttpResponseBase | None], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> HttpResponseBase:
    """Run ``view`` on a WebSocket request and finish the connection after it.

    Before the ``101`` is sent, the view's HTTP response (a refusal) goes out as usual. Once the
    connection is upgraded, whatever the view returns is ignored: the socket is closed with 1000,
    or 1011 if the view raised (the exception then reaches Django's normal error handling).
    The view runs outside ``ATOMIC_REQUESTS``' transaction (the decorators mark it as
    ``non_atomic_requests`` does): a view living for hours must not hold one transaction open.
    """
    websocket = cast("DjangoWebSocket | DjangoASGIWebSocket", request.websocket)  # set, and blocking
    thread = threading.get_ident()
    _websocket_of_thread[thread] = websocket
    # Connections this thread opened before (a middleware's, say) sent their signal earlier.
    if any(conn.connection is not None for conn in connections.all(initialized_only=True)):
        websocket._database_opened = True
    try:
        return _serve(request, websocket, view, args, kwargs)
    finally:
        del _websocket_of_thread[thread]
        if getattr(websocket, "detached", False):
            pass  # the reactor has it (WebSocket.detach): the request ends, the connection lives
        elif websocket.accepted:
            # The view returned: nothing else uses the socket now (see WebSocket._release).
            websocket._release()
        else:
            websocket._reject()


def _serve(
    request: _Request,
    websocket: DjangoWebSocket | DjangoASGIWebSocket,
    view: Callable[..., HttpResponseBase | None],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> HttpResponseBase:
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
    if not getattr(websocket, "detached", False):
        websocket.close()
    return UpgradeResponse()


async def serve_async(
    request: _Request,
    view: Callable[..., Awaitable[HttpResponseBase | None]],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> HttpResponseBase:
    """:func:`serve` for an ``async def`` view: on an ASGI server (``django_websocket.asgi``),
    where ``request.websocket`` is an :class:`~django_websocket.events.AsyncWebSocket`. On a
    WSGI server the handshake is refused (501) with a log line that names the fix."""
    websocket = cast("_AnyDjangoWebSocket", request.websocket)  # set: this is a WebSocket request
    if not isinstance(websocket, AsyncWebSocket):
        logger.error(
            "WebSocket request to %s refused: %s is an async view, which needs an ASGI server. Serve the "
            "project with django_websocket.asgi.get_asgi_application() (uvicorn, daphne, hypercorn, Granian, "
            "gunicorn -k asgi), or make the view a regular def view.",
            request.path,
            getattr(view, "__qualname__", view),
        )
        websocket._reject()
        return error_response(501, "This WebSocket view needs an ASGI server.")
    try:
        return await _serve_async(request, websocket, view, args, kwargs)
    finally:
        if not websocket.accepted:
            websocket._reject()


async def _serve_async(
    request: _Request,
    websocket: AsyncWebSocketConnection,
    view: Callable[..., Awaitable[HttpResponseBase | None]],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> HttpResponseBase:
    try:
        check_policy(request)
        response = await view(request, *args, **kwargs)
    except HandshakeError as exc:
        if websocket.accepted:
            await websocket.close(CloseCode.POLICY_VIOLATION, str(exc))
            return UpgradeResponse()
        return handshake_error_response(exc)
    except ConnectionClosed:
        if not websocket.accepted:
            raise
        logger.debug("WebSocket client of %s went away", request.path)
        response = None
    except asyncio.CancelledError:
        # The server is stopping this connection's task.
        if websocket.accepted:
            websocket.fail(CloseCode.GOING_AWAY, "server shutting down")
        raise
    except BaseException:
        if websocket.accepted:
            await websocket.close(CloseCode.INTERNAL_ERROR)
        raise
    if not websocket.accepted:
        if response is not None:
            return response
        await websocket.accept()
    if not websocket.detached:
        await websocket.close()
    return UpgradeResponse()


if TYPE_CHECKING:

    def _conforms(
        wsgi: DjangoWebSocket, asgi: DjangoASGIWebSocket, asynchronous: DjangoAsyncWebSocket
    ) -> tuple[WebSocketConnection, WebSocketConnection, AsyncWebSocketConnection]:
        # The documented types of request.websocket (django_websocket.types) describe these classes.
        return wsgi, asgi, asynchronous
