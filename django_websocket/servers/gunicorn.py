"""gunicorn worker classes able to hand a connection to a WebSocket view.

``-k django_websocket.servers.gunicorn.GeventWorker``
    gevent's pywsgi with our handler (see :mod:`django_websocket.servers.gevent`): one greenlet
    per connection, thousands of WebSockets per worker.
``-k django_websocket.servers.gunicorn.ThreadWorker --threads N``
    gunicorn's gthread worker: each open WebSocket holds one of the worker's ``N`` threads for
    its whole life, so a worker serves at most ``N`` WebSockets and plain requests together;
    the next connection waits for a thread.

``-k django_websocket.servers.gunicorn.GeventWebSocketWorker``
    gevent-websocket's worker, for deployments that use its handler (see
    :mod:`django_websocket.servers.geventwebsocket`), with the request-head deadline and the
    closing on restarts of the two above. gevent-websocket's own worker class
    (``geventwebsocket.gunicorn.workers.GeventWebSocketWorker``) works too, without either.

gunicorn's default *sync* worker cannot serve WebSockets: it puts no handover in the
environ (the handshake gets 501), and it kills any request running longer than ``--timeout``.

The gevent workers need gevent (and gevent-websocket); they are defined on first use, so that
the thread worker works without them.
"""

from __future__ import annotations

import logging
import select
import ssl
import sys
import threading
from collections.abc import Callable, Iterable, MutableMapping
from typing import TYPE_CHECKING, Any

from gunicorn.workers.gthread import ThreadWorker as _GunicornThreadWorker

from ..websocket import ENVIRON_KEY, Handover, close_all
from .deadline import HeadWatchdog
from .tls import SerializedTLSSocket

__all__ = ["GeventWorker", "GeventWebSocketWorker", "ThreadWorker"]  # noqa: F822 (gevent ones: see __getattr__)

logger = logging.getLogger("django_websocket")

if TYPE_CHECKING:
    from gunicorn.config import Config
    from gunicorn.glogging import Logger
    from gunicorn.workers.base import Worker
    from gunicorn.workers.gthread import TConn

    from ..websocket import Socket

    # For type checkers, the mixins extend the worker they are combined with.
    _WorkerBase = Worker
    _WSGIApplication = Callable[[MutableMapping[str, Any], Callable[..., Any]], Iterable[bytes]]
else:
    _WorkerBase = object


class _ClosesWebSocketsOnExit(_WorkerBase):
    """When the worker starts to stop, every open WebSocket gets a close frame 1001 (going
    away), so that the views return and the worker exits well within ``--graceful-timeout``.

    Every cause of a stop ends in gunicorn setting the worker's ``alive`` to False: SIGTERM
    (the arbiter stopping, or replacing its workers after a HUP), ``--max-requests``, and
    ``--reload`` seeing a change. So it is that change of ``alive`` that starts the closing.
    """

    _alive = False

    @property
    def alive(self) -> bool:
        return self._alive

    @alive.setter
    def alive(self, value: bool) -> None:
        stopping = self._alive and not value
        self._alive = value
        if stopping:
            # Not here: this may run in a signal handler, and closing takes a few round trips.
            self.close_websockets_later()

    def close_websockets_later(self) -> None:
        threading.Thread(target=_close_websockets, name="websocket-close-all", daemon=True).start()


def _close_websockets() -> None:
    from django.conf import settings as django_settings

    if not django_settings.configured:
        return  # the application was never loaded: no WebSocket either
    from ..conf import settings

    close_all(timeout=settings.WEBSOCKET_CLOSE_TIMEOUT)


def _warn_if_groups_stay_in_one_worker(worker: Worker) -> None:
    """At the first worker's boot (once per arbiter: the first worker it spawns has age 1), warn
    that the in-memory group backend cannot reach the sockets of the other workers. Only a
    worker knows: the settings are read once its application is loaded (the arbiter does not
    load it, unless --preload), and a group message that silently reaches 1 of N workers'
    sockets looks like a bug of the view."""
    if worker.cfg.workers < 2 or worker.age != 1:
        return
    from django.conf import settings as django_settings

    from ..groups import uses_memory_backend

    try:
        if not django_settings.configured or not uses_memory_backend():
            return
    except Exception:  # a wrong WEBSOCKET_GROUPS: its own error comes with the first join
        return
    worker.log.warning(
        "django_websocket: WEBSOCKET_GROUPS uses the in-memory backend, which reaches the sockets "
        "of one worker only, and gunicorn runs %d workers: a group message sent in one worker "
        "reaches none of the others' sockets. Set WEBSOCKET_GROUPS = {\"BACKEND\": "
        "\"django_websocket.groups.redis.RedisGroupBackend\", \"LOCATION\": \"redis://...\"} "
        "(or run --workers 1).",
        worker.cfg.workers,
    )


# --- gthread ---------------------------------------------------------------------------------


class _UpgradableSocket:
    """A connection's socket as gunicorn sees it (``conn.sock``), while a WebSocket may take it.

    Once handed over, the WebSocket owns the real socket: gunicorn's writes (the response Django
    returns after the view), its keep-alive handling and its closing all become no-ops.
    """

    def __init__(self, sock: Any, conn: TConn) -> None:
        self._sock = sock
        self.conn = conn
        self.upgraded = False

    def _unless_upgraded(name: str) -> Callable[..., Any]:  # type: ignore[misc]  # called in the class body
        def method(self: _UpgradableSocket, *args: Any) -> Any:
            if self.upgraded:
                return None
            return getattr(self._sock, name)(*args)

        method.__name__ = name
        return method

    sendall = _unless_upgraded("sendall")
    send = _unless_upgraded("send")
    setblocking = _unless_upgraded("setblocking")
    settimeout = _unless_upgraded("settimeout")
    shutdown = _unless_upgraded("shutdown")
    close = _unless_upgraded("close")
    del _unless_upgraded

    def recv(self, *args: Any) -> bytes:
        return b"" if self.upgraded else self._sock.recv(*args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)

    def take(self) -> tuple[Socket, bytes]:
        self.upgraded = True
        # Bytes the request parser read past the headers belong to the WebSocket.
        unreader = self.conn.parser.unreader  # type: ignore[union-attr]  # an HTTP/1 request's parser
        if hasattr(unreader, "take_buffered"):
            leftover = unreader.take_buffered()
        else:  # gunicorn < 25
            leftover = unreader.buf.getvalue()
            unreader.buf.seek(0)
            unreader.buf.truncate()
        sock = self._sock
        if isinstance(sock, ssl.SSLSocket):
            # The view's thread reads while others send: one SSL object must not see two
            # threads at once.
            sock = SerializedTLSSocket(sock)
        return sock, leftover


def _wait_readable_tls(sock: Any, timeout: float | None) -> bool:  # an ssl.SSLSocket
    # Bytes TLS already decrypted wait in the SSL object, where poll() cannot see them.
    if sock.pending():
        return True
    poller = select.poll()
    poller.register(sock, select.POLLIN | select.POLLPRI | select.POLLERR | select.POLLHUP)
    return bool(poller.poll(None if timeout is None else max(0, int(timeout * 1000 + 0.999))))


class _HandoverApplication:
    """Wraps the worker's WSGI application to put the handover in each request's environ."""

    def __init__(self, application: _WSGIApplication) -> None:
        self.application = application

    def __call__(self, environ: MutableMapping[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        sock = environ.get("gunicorn.socket")
        if isinstance(sock, _UpgradableSocket):
            wait = _wait_readable_tls if isinstance(sock._sock, ssl.SSLSocket) else None
            # Detachable: once upgraded, gunicorn's own closing of the connection does nothing.
            environ[ENVIRON_KEY] = Handover(sock.take, wait_readable=wait, detachable=True)
        return self.application(environ, start_response)


class ThreadWorker(_ClosesWebSocketsOnExit, _GunicornThreadWorker):
    """gunicorn's ``gthread`` worker, able to hand a connection to a WebSocket view.

    A WebSocket holds its thread until the view returns: ``--threads`` bounds the WebSockets (and
    requests) a worker serves at once.
    """

    @classmethod
    def check_config(cls, cfg: Config, log: Logger) -> None:
        super().check_config(cfg, log)
        log.warning(
            "django_websocket ThreadWorker: each open WebSocket holds one of the %d thread(s) of a "
            "worker, so at most %d WebSockets and requests run at once (--workers x --threads); "
            "further connections wait for a thread. For many sockets use "
            "django_websocket.servers.gunicorn.GeventWorker.",
            cfg.threads,
            cfg.threads * cfg.workers,
        )

    def load_wsgi(self) -> None:
        super().load_wsgi()
        _warn_if_groups_stay_in_one_worker(self)
        self.wsgi = _HandoverApplication(self.wsgi)

    # The request head's deadline (WEBSOCKET_HANDSHAKE_TIMEOUT). gunicorn's parser reads the
    # socket with no timeout at all, in a thread of the pool: a client trickling its headers
    # would hold that thread forever. The deadline runs from when a thread takes the connection
    # (gunicorn itself bounds the wait before: its first wait for data, then --keepalive) to
    # the parsed request; past it the watchdog shuts the socket down, which the parser sees as
    # the client leaving (logged at debug level only).

    def init_process(self) -> None:
        self._head_watchdog = HeadWatchdog()
        self._head_watches = threading.local()
        super().init_process()  # runs the worker

    def handle(self, conn: TConn) -> bool:
        from ..conf import settings

        seconds = settings.WEBSOCKET_HANDSHAKE_TIMEOUT
        if seconds is None:
            return super().handle(conn)
        watch = self._head_watches.current = self._head_watchdog.watch(conn.sock, seconds)
        try:
            return super().handle(conn)
        finally:
            self._head_watches.current = None
            self._head_watchdog.end(watch)

    def _end_head(self) -> bool:
        # False when the deadline passed just as the head came in: the socket is shut already.
        watch = getattr(self._head_watches, "current", None)
        return watch is None or self._head_watchdog.end(watch)

    def handle_h2c_upgrade(self, conn: TConn, req: Any, settings: Any) -> Any:
        return super().handle_h2c_upgrade(conn, req, settings) if self._end_head() else False

    def handle_http2(self, conn: TConn) -> Any:
        return super().handle_http2(conn) if self._end_head() else False

    def handle_request(self, req: Any, conn: TConn) -> bool:
        if not self._end_head():
            return False
        if not isinstance(conn.sock, _UpgradableSocket):
            conn.sock = _UpgradableSocket(conn.sock, conn)  # type: ignore[assignment]  # a socket, to gunicorn
        keepalive = super().handle_request(req, conn)
        # A connection that became a WebSocket is over when its view returns.
        return keepalive and not conn.sock.upgraded  # type: ignore[attr-defined]


# --- gevent ----------------------------------------------------------------------------------


def _gevent_worker_base() -> type[_ClosesWebSocketsOnExit]:
    import gevent

    from .gevent import KeepsDetachedMixin, untrack_greenlet_tree

    class GeventWorkerMixin(_ClosesWebSocketsOnExit):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            # The server leaves the sockets of detached WebSockets open (WebSocket.detach).
            base = getattr(self, "server_class", None)
            if base is not None and not issubclass(base, KeepsDetachedMixin):
                self.server_class = type(base.__name__, (KeepsDetachedMixin, base), {})

        def init_process(self) -> None:
            untrack_greenlet_tree()
            super().init_process()

        def close_websockets_later(self) -> None:
            # The signal handler runs in the event loop, where starting a thread (which waits
            # for it to start) may not block: a greenlet does it.
            gevent.spawn(_close_websockets)

        def load_wsgi(self) -> None:
            super().load_wsgi()
            _warn_if_groups_stay_in_one_worker(self)
            self.wsgi = self.wrap_application(self.wsgi)
            if self.max_requests < sys.maxsize:
                self.wsgi = _counting_requests(self, self.wsgi)

        def wrap_application(self, application: _WSGIApplication) -> _WSGIApplication:
            return application

        @classmethod
        def check_config(cls, cfg: Config, log: Logger) -> None:
            log.info(
                "django_websocket %s: at most %d connections (WebSockets included) per "
                "worker (--worker-connections); mind the open-file limit (ulimit -n).",
                cls.__name__,
                cfg.worker_connections,
            )

    return GeventWorkerMixin


def _counting_requests(worker: Worker, application: _WSGIApplication) -> _WSGIApplication:
    # gunicorn's pywsgi-based gevent workers hand requests to pywsgi, which does not count
    # them: without this, --max-requests would never restart the worker.
    def counted(environ: MutableMapping[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        worker.nr += 1
        if worker.nr >= worker.max_requests and worker.alive:
            worker.log.info("Autorestarting worker after current request.")
            worker.alive = False
        return application(environ, start_response)

    return counted


def _gevent_worker() -> type[Worker]:
    from gunicorn.workers.ggevent import GeventPyWSGIWorker, PyWSGIHandler

    from .gevent import WebSocketHandlerMixin

    class WebSocketPyWSGIHandler(WebSocketHandlerMixin, PyWSGIHandler):
        """gunicorn's pywsgi handler (its access log), able to hand a connection over."""

        # gunicorn's access log format may print request headers.
        keep_request_headers = True

    class GeventWorker(_gevent_worker_base(), GeventPyWSGIWorker):  # type: ignore[misc]  # a dynamic base
        """gunicorn's gevent (pywsgi) worker, able to hand a connection to a WebSocket view.

        One greenlet per connection; ``--worker-connections`` (default 1000) caps the
        connections, WebSockets included, of each worker: raise it.
        """

        wsgi_handler = WebSocketPyWSGIHandler

    return GeventWorker


def _geventwebsocket_worker() -> type[Worker]:
    from geventwebsocket.gunicorn.workers import GeventWebSocketWorker as _Theirs

    from .geventwebsocket import GeventWebSocketAdapter, GeventWebSocketHandler

    class GeventWebSocketWorker(_gevent_worker_base(), _Theirs):  # type: ignore[misc]  # a dynamic base
        """gevent-websocket's gunicorn worker, with a deadline for each request head and its
        WebSockets closed with 1001 when it stops; the application is wrapped for it (a
        ``wsgi.py`` that already wraps it works too)."""

        wsgi_handler = GeventWebSocketHandler

        def wrap_application(self, application: _WSGIApplication) -> _WSGIApplication:
            if isinstance(application, GeventWebSocketAdapter):
                return application
            return GeventWebSocketAdapter(application)

    return GeventWebSocketWorker


_BUILDERS = {"GeventWorker": _gevent_worker, "GeventWebSocketWorker": _geventwebsocket_worker}


def __getattr__(name: str) -> type[Worker]:
    # gunicorn loads "-k module.Class" with getattr: build a gevent worker when asked for.
    if name in _BUILDERS:
        worker = _BUILDERS[name]()
        worker.__module__ = __name__
        worker.__qualname__ = name
        globals()[name] = worker
        return worker
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
