"""gevent's WSGI server (``gevent.pywsgi``), able to hand a connection to a WebSocket view.

Django answers every request, WebSocket handshakes included, so decorators, middleware,
``request.user`` and origin checks can still refuse with 400 or 403; only when the view uses
``request.websocket`` does the ``101`` go out and the socket pass to the WebSocket, and the
handler then stops treating the connection as HTTP. One greenlet serves each connection: no
thread, no polling.

Run a project on it (the standard library is monkey-patched before anything else is imported)::

    python -m django_websocket.servers.gevent 127.0.0.1:8000 --settings mysite.settings

or ``python manage.py rungevent 127.0.0.1:8000``.
"""

if __name__ == "__main__":
    # Run as a program: patch before Django, or anything else, imports threading, socket or
    # select, so that thread-locals (database connections), locks and sockets are cooperative.
    from gevent import monkey

    monkey.patch_all()

import argparse
import logging
import os
import signal
import socket as _socket_module
import sys
import time
import types
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import gevent
from gevent import monkey, pywsgi
from gevent.event import Event
from gevent.hub import get_hub, getcurrent
from gevent.lock import BoundedSemaphore

from ..websocket import ENVIRON_KEY, Handover, close_all

__all__ = [
    "RequestHeadDeadlineMixin",
    "WebSocketHandlerMixin",
    "WebSocketHandler",
    "WebSocketWSGIServer",
    "check_patched",
    "wait_readable",
    "writable_now",
    "send_now",
    "ReadableWaiter",
    "take_buffered",
    "keep_if_detached",
    "KeepsDetachedMixin",
    "untrack_greenlet_tree",
    "serve",
    "main",
]

logger = logging.getLogger("django_websocket")

if TYPE_CHECKING:
    from io import BufferedReader

    from gevent._types import _IoWatcher
    from gevent.socket import socket

    from ..websocket import Socket

    # For type checkers, the mixins extend the handler they are combined with.
    _HandlerBase = pywsgi.WSGIHandler
else:
    _HandlerBase = object

_now_poll = monkey.get_original("select", "poll")
_POLL_IN = 0x001 | 0x002 | 0x008 | 0x010  # POLLIN | POLLPRI | POLLERR | POLLHUP
_POLL_OUT = 0x004 | 0x008 | 0x010  # POLLOUT | POLLERR | POLLHUP
_DONTWAIT = getattr(_socket_module, "MSG_DONTWAIT", 0)


def check_patched() -> None:
    """Raise ``RuntimeError`` unless gevent's monkey-patching is in place.

    Without it, a WebSocket's locks would be real thread locks shared by every greenlet of the
    process, and Django's database connections would be shared across requests too.
    """
    missing = [name for name in ("socket", "select", "threading") if not monkey.is_module_patched(name)]
    if missing:
        raise RuntimeError(
            f"gevent has not monkey-patched {', '.join(missing)}: call gevent.monkey.patch_all() "
            "before importing Django (python -m django_websocket.servers.gevent and "
            "manage.py rungevent do it for you)."
        )


def wait_readable(sock: "Socket", timeout: float | None) -> bool:
    """Wait cooperatively until ``sock`` is readable; False when ``timeout`` expired first.

    An idle connection's greenlet sits here, and its whole C stack is saved while it does: so
    this switches to the hub directly, from a watcher of its own, rather than through
    ``gevent.socket.wait_read``'s four more levels of calls (about 1 KiB per idle connection).
    Nothing is kept between waits (:class:`ReadableWaiter` keeps the watcher: two system calls
    fewer per message). A wait that must not block at all asks the kernel directly.
    """
    if timeout is not None and timeout <= 0:
        return _readable_now(sock)
    hub = get_hub()
    switch = getcurrent().switch
    readable = hub.loop.io(sock.fileno(), 1)
    readable.start(switch, True)
    timer = None
    if timeout is not None:
        timer = hub.loop.timer(timeout)
        timer.start(switch, False)
    try:
        # Resumed by whichever watcher fires first, with its argument; or by an exception
        # thrown into this greenlet (a kill), which propagates after the watchers are stopped.
        return hub.switch()  # type: ignore[no-any-return]  # the watcher's argument, a bool
    finally:
        readable.stop()
        readable.close()
        if timer is not None:
            timer.stop()
            timer.close()


#: The lock of each connection's writes (see Handover): gevent's semaphore itself. Under
#: monkey-patching threading.Lock is a subclass of it whose acquire() is Python code adapting
#: the arguments: taken twice per round trip, it cost about 3 % of an echo.
WriteLock = BoundedSemaphore


class ReadableWaiter:
    """:func:`wait_readable` for one connection (``ReadableWaiter().wait``), which makes its I/O
    watcher once and reuses it.

    A new watcher for each wait makes libev take the descriptor for a possibly new one: every
    message then costs a failing ``epoll_ctl`` and an ``fcntl`` besides its ``recv`` and ``send``.
    A parked connection holds its watcher either way, so between waits keeping it costs only this
    object. Hand over the bound method, not the instance: calling an instance re-enters the
    interpreter in C, and the greenlet of every parked connection would save that much more stack.
    """

    __slots__ = ("_watcher",)

    def __init__(self) -> None:
        self._watcher: _IoWatcher | None = None

    def wait(self, sock: "Socket", timeout: float | None) -> bool:
        if timeout is not None and timeout <= 0:
            return _readable_now(sock)
        hub = get_hub()
        readable = self._watcher
        if readable is None or readable.loop is not hub.loop:  # type: ignore[attr-defined]
            # The first wait, or one from another thread's hub (a watcher belongs to its loop).
            readable = self._watcher = hub.loop.io(sock.fileno(), 1)
        # As in wait_readable, inline: a parked greenlet keeps every frame of its stack.
        switch = getcurrent().switch
        readable.start(switch, True)
        timer = None
        if timeout is not None:
            timer = hub.loop.timer(timeout)
            timer.start(switch, False)
        try:
            return hub.switch()  # type: ignore[no-any-return]
        finally:
            readable.stop()
            if timer is not None:
                timer.stop()
                timer.close()


def _readable_now(sock: "Socket") -> bool:
    # A wait that must not block asks the kernel directly: a zero-second gevent timer would race
    # the I/O watcher.
    poller = _now_poll()
    poller.register(sock.fileno(), _POLL_IN)
    return bool(poller.poll(0))


def writable_now(sock: "Socket") -> bool:
    """Whether ``sock`` takes bytes at once, asking the kernel directly (the ``writable_now`` of
    the :class:`~django_websocket.websocket.Handover`). gevent's patched ``poll(0)`` switches to
    the hub and back, about 17 µs a call where this takes 1.5: a group message to 1,000 sockets
    asks each one."""
    poller = _now_poll()
    poller.register(sock.fileno(), _POLL_OUT)
    return bool(poller.poll(0))


def send_now(sock: "Socket", data: bytes) -> int:
    """Send what ``sock`` takes at once, never waiting (the ``send_now`` of the
    :class:`~django_websocket.websocket.Handover`): 0 when it takes nothing. One non-blocking
    send on the socket gevent's wraps (gevent's own send would wait when the socket is full), and
    no readiness check before it: a group message to 1,000 sockets is one system call for each,
    not two (1.3 µs against 2.6 each)."""
    raw: Any = getattr(sock, "_sock", None)
    if raw is None:  # not a gevent socket: ask first, as the default does
        if not writable_now(sock):
            return 0
        raw = sock
    try:
        return int(raw.send(data, _DONTWAIT))
    except (BlockingIOError, InterruptedError):
        return 0


def take_buffered(sock: "socket", rfile: "BufferedReader") -> bytes:
    """Return the bytes ``rfile`` (a buffered reader on ``sock``) holds past the request, then
    close it.

    Those bytes (frames the client sent early) belong to the WebSocket. Closing the reader frees
    its buffer for the connection's lifetime and drops its reference to the socket, so that the
    WebSocket closing the socket really closes it.
    """
    timeout = sock.gettimeout()
    # read1 returns what is buffered, or makes one read, which must not wait.
    sock.setblocking(False)
    try:
        leftover = rfile.read1(65536) or b""
    except (BlockingIOError, TimeoutError, ValueError):
        leftover = b""
    finally:
        sock.settimeout(timeout)
    try:
        rfile.close()
    except OSError:
        pass
    return leftover


class RequestHeadDeadlineMixin(_HandlerBase):
    """For a ``pywsgi.WSGIHandler`` subclass: a client has :setting:`WEBSOCKET_HANDSHAKE_TIMEOUT`
    seconds for each request head, from when the handler waits for its first line (an idle
    keep-alive connection waits there) to the end of its headers; then the connection is
    dropped, quietly.

    One deadline for the whole head, not a timeout on each read (which a client sending a byte
    now and then would never reach), and none on the socket: the request body and the response
    take as long as they take, as with pywsgi's own handler.
    """

    _head_deadline: gevent.Timeout | None = None

    def handle_one_request(self) -> Any:
        from ..conf import settings

        seconds = settings.WEBSOCKET_HANDSHAKE_TIMEOUT
        if seconds is None:
            return super().handle_one_request()
        deadline = self._head_deadline = gevent.Timeout.start_new(seconds)
        try:
            return super().handle_one_request()
        except gevent.Timeout as exc:
            if exc is not deadline:
                raise
            logger.debug("Request head from %s not received in %ss: connection dropped", self.client_address, seconds)
            return None  # handle() closes the connection
        finally:
            self._end_head()

    def get_environ(self) -> dict[str, Any]:
        # Called once the headers are parsed, before the application runs.
        self._end_head()
        return super().get_environ()

    def _end_head(self) -> None:
        deadline = self._head_deadline
        if deadline is not None:
            self._head_deadline = None
            deadline.close()


class WebSocketHandlerMixin(RequestHeadDeadlineMixin):
    """For a ``pywsgi.WSGIHandler`` subclass: a :class:`~django_websocket.websocket.Handover` in
    each request's environ, no HTTP once the connection was handed over, and the request-head
    deadline of :class:`RequestHeadDeadlineMixin`."""

    #: True once the connection belongs to a WebSocket.
    upgraded = False
    #: Whether the parsed request headers (``self.headers``) stay in memory for the WebSocket's
    #: whole life; only an access log that prints request headers needs them (gunicorn's may).
    keep_request_headers = False

    def get_environ(self) -> dict[str, Any]:
        environ = super().get_environ()
        environ[ENVIRON_KEY] = Handover(
            self._hand_over,
            wait_readable=ReadableWaiter().wait,
            writable_now=writable_now,
            send_now=send_now,
            lock=WriteLock,
            detachable=True,
        )
        return environ

    def run_application(self) -> None:
        # Call the application's __call__ as a bound method rather than the instance: CPython
        # then runs it without re-entering the interpreter in C, and the greenlet of every idle
        # WebSocket saves that much less C stack (about 0.7 KiB).
        call = getattr(type(self.application), "__call__", None)  # noqa: B004 (a function, or not)
        if isinstance(call, types.FunctionType):
            self.application = self.application.__call__  # type: ignore[operator]
        super().run_application()
        keep_if_detached(self)

    def _hand_over(self) -> "tuple[Socket, bytes]":
        self.upgraded = True
        # No keep-alive: the handler's loop ends when the view returns.
        self.close_connection = True
        if not self.keep_request_headers:
            # A parsed email.message object per connection (about 1 KiB): the environ has them.
            self.__dict__.pop("headers", None)
        return self.socket, take_buffered(self.socket, self.rfile)

    def write(self, data: bytes) -> None:
        # Every HTTP write goes through here (the response Django returns after the view, and
        # an error page): none may follow WebSocket frames.
        if self.upgraded:
            return
        super().write(data)


# The sockets of detached WebSockets whose handler is returning: their server must not close
# them (KeepsDetachedMixin.do_close), the reactor has them (WebSocket.detach).
_detached_sockets: set[Any] = set()


def keep_if_detached(handler: Any) -> None:
    """After a pywsgi handler ran the application: if the WebSocket was detached, let go of the
    socket, so that neither the handler (which reads what is left and closes the socket when it
    is done) nor its server (``do_close``) touch it again."""
    handover = getattr(handler, "environ", {}).get(ENVIRON_KEY)
    if handover is not None and handover.detached and handler.socket is not None:
        _detached_sockets.add(handler.socket)
        handler.socket = None


class KeepsDetachedMixin:
    """For a gevent ``StreamServer`` (``pywsgi.WSGIServer`` and its subclasses): leaves the
    sockets of detached WebSockets open when their handler is done."""

    def do_close(self, sock: Any, *args: Any) -> None:
        if sock in _detached_sockets:
            _detached_sockets.discard(sock)
            return
        super().do_close(sock, *args)  # type: ignore[misc]


class WebSocketHandler(WebSocketHandlerMixin, pywsgi.WSGIHandler):
    """gevent's WSGI handler, able to hand a connection to a WebSocket view."""


class WebSocketWSGIServer(KeepsDetachedMixin, pywsgi.WSGIServer):
    """``gevent.pywsgi.WSGIServer`` with :class:`WebSocketHandler`; needs monkey-patching."""

    handler_class = WebSocketHandler

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        check_patched()
        super().__init__(*args, **kwargs)


def untrack_greenlet_tree() -> None:
    """Stop gevent from recording each greenlet's spawning stack, unless asked for by
    ``GEVENT_TRACK_GREENLET_TREE``: a debugging aid that costs about 0.7 KiB per connection."""
    if "GEVENT_TRACK_GREENLET_TREE" not in os.environ:
        gevent.config.track_greenlet_tree = False


def _parse_addrport(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", value
    host = host.strip("[]") or "127.0.0.1"
    try:
        return host, int(port)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port or an address:port") from None


def build_parser(prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument(
        "addrport",
        nargs="?",
        default="127.0.0.1:8000",
        type=_parse_addrport,
        help="Address and port to listen on (default 127.0.0.1:8000).",
    )
    parser.add_argument("--settings", help="Django settings module (else DJANGO_SETTINGS_MODULE).")
    parser.add_argument("--pythonpath", help="A directory to add to the Python path, e.g. your project's.")
    parser.add_argument("--backlog", type=int, default=2048, help="Listen backlog (default 2048).")
    parser.add_argument("--no-access-log", action="store_true", help="Do not log each request.")
    return parser


def load_django(options: argparse.Namespace) -> Callable[..., Any]:
    """Configure Django from the command-line options and return its WSGI application."""
    if options.pythonpath:
        sys.path.insert(0, options.pythonpath)
    elif os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    if options.settings:
        os.environ["DJANGO_SETTINGS_MODULE"] = options.settings
    from django.core.wsgi import get_wsgi_application

    return get_wsgi_application()


#: Seconds a stopping server gives its requests beyond WEBSOCKET_CLOSE_TIMEOUT, after which
#: their greenlets are killed.
STOP_SLACK = 1.0


def serve(
    application: Callable[..., Any],
    host: str,
    port: int,
    *,
    handler_class: type[pywsgi.WSGIHandler] = WebSocketHandler,
    server_class: type[pywsgi.WSGIServer] | None = None,
    backlog: int = 2048,
    log: str | None = "default",
) -> None:
    """Serve ``application`` on ``host:port`` until SIGTERM or SIGINT, then close the open
    WebSockets with 1001 (going away) and return, within :setting:`WEBSOCKET_CLOSE_TIMEOUT`
    seconds and :data:`STOP_SLACK` more."""
    server_class = server_class or WebSocketWSGIServer
    untrack_greenlet_tree()
    server = server_class((host, port), application, handler_class=handler_class, backlog=backlog, log=log)
    server.start()
    done = Event()
    stopping: list[int] = []

    def stop(signum: int) -> None:
        from ..conf import settings

        if stopping:
            return  # a second signal: the first one's stop is bounded already
        stopping.append(signum)
        logger.info("Received signal %s: closing WebSocket connections and stopping.", signum)
        close_timeout = settings.WEBSOCKET_CLOSE_TIMEOUT
        deadline = time.monotonic() + close_timeout
        server.close()  # stop accepting; the open connections' greenlets go on
        close_all(timeout=close_timeout)
        # The views return once their connection is closed; what still runs (a plain request
        # in progress) has what is left of the close timeout, and a moment more, to finish.
        server.stop(timeout=max(0.0, deadline - time.monotonic()) + STOP_SLACK)
        done.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(signum, stop, signum)  # runs stop in a new greenlet
    print(f"Serving on http://{host}:{port}/ with {server_class.__name__} (gevent {gevent.__version__})", flush=True)
    done.wait()


def main(argv: list[str] | None = None, prog: str = "python -m django_websocket.servers.gevent") -> None:
    options = build_parser(prog, "Serve a Django project, WebSocket views included, with gevent.").parse_args(argv)
    check_patched()
    application = load_django(options)
    host, port = options.addrport
    serve(application, host, port, backlog=options.backlog, log=None if options.no_access_log else "default")


if __name__ == "__main__":
    # Run the functions of the module proper, not of this __main__ copy of it.
    from django_websocket.servers.gevent import main as _main

    _main()
