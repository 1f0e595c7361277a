"""The blocking ``WebSocket`` object (``request.websocket``), over a socket, threads or gevent.

This layer is a thin I/O loop around :class:`~django_websocket.protocol.ServerProtocol`: it reads
from the socket into the protocol, writes what the protocol produces, and keeps received messages
in a bounded queue for :meth:`WebSocket.wait`, :meth:`WebSocket.read` and iteration. It never
imports Django.

A server adapter gives the application the connection's socket through a :class:`Handover` placed
in the WSGI environ under :data:`ENVIRON_KEY`.

The life of a connection is one state machine (:class:`ConnectionState`)::

    CONNECTING --accept()--> OPEN --close frame sent or received, or a failure--> CLOSING
        |                     |                                                      |
        | _reject()           | _end(): peer gone, timeout, shutdown                 | _end()
        v                     v                                                      v
      CLOSED <-------------- CLOSED <--------------------------------------------- CLOSED

Each transition has one owner: ``accept()`` (under the write lock) opens; ``_feed`` (received a
close or a bad frame), ``_start_close`` (we close) and ``fail`` move to CLOSING; ``_end`` alone
moves to CLOSED, exactly once, whichever way the connection ends: the closing handshake done
(:rfc:`6455#section-7.1.1`), a protocol failure once its close frame is out (§7.1.7), the peer
gone (§7.1.5), a timeout (close, send, keepalive) or a shutdown. ``_end`` shuts the socket down,
which wakes every thread blocked on it, forgets the connection, and runs the close callbacks. The
socket's descriptor itself is closed later by :meth:`WebSocket._release`, called by the
connection's owner once nothing else can be using it (the view has returned).

Three locks, none ever held while waiting for another connection or the peer, except the write
lock during one write:

* the write lock: one frame at a time goes to the socket, whole; the frames waiting in
  ``_out`` (pongs, pings, close frames, produced by any thread) are written by whoever holds it;
* the read lock: one reader at a time;
* the state lock: the protocol's state, the message queue and ``_out``, for a few instructions.

A thread that must not block (keepalive, shutdown, a group's delivery) only ever tries the write
lock, and writes only what the socket takes at once: if a view is blocked writing to a client
that stopped reading, the frame waits in ``_out`` and that view writes it after its own.
"""

from __future__ import annotations

import collections
import enum
import logging
import os
import select
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast, overload

from . import deflate
from .exceptions import ConnectionClosed, InvalidState, ProtocolError, WebSocketError
from .frames import CloseCode, Opcode, serialize_frame
from .handshake import Request, accept_response
from .protocol import DEFAULT_MAX_MESSAGE_SIZE, Close, Message, Pong, ServerProtocol, State

if TYPE_CHECKING:
    from types import TracebackType

    from typing_extensions import Self

    from .reactor import OnMessage, Reactor

_T = TypeVar("_T")

__all__ = [
    "ENVIRON_KEY",
    "ConnectionState",
    "Handover",
    "WebSocket",
    "open_connections",
    "close_all",
    "is_shutting_down",
]

logger = logging.getLogger("django_websocket")

#: The WSGI environ key under which a server adapter puts its :class:`Handover`.
ENVIRON_KEY = "django_websocket.handover"

_READ_SIZE = 65536

#: Unread messages a connection queues at most, and their total size (characters of text,
#: bytes of binary): past either, it stops reading from its socket until the view reads, so a
#: client sending faster than the view reads is held back by TCP (its own buffers fill).
DEFAULT_MAX_QUEUE = 32
DEFAULT_MAX_QUEUE_BYTES = 2**20


class ConnectionState(enum.Enum):
    """Where a connection is in its life (see the module's docstring)."""

    CONNECTING = "connecting"  # the handshake is not answered yet; an HTTP refusal is possible
    OPEN = "open"
    CLOSING = "closing"  # a close frame was sent or received, or the connection failed
    CLOSED = "closed"  # the end: nothing more is read or written


_PROTO_OPEN = State.OPEN
_PROTO_CLOSED = State.CLOSED

CONNECTING = ConnectionState.CONNECTING
OPEN = ConnectionState.OPEN
CLOSING = ConnectionState.CLOSING
CLOSED = ConnectionState.CLOSED

# Every accepted, not yet ended connection of this process: for graceful shutdown (close_all),
# the connection cap and keepalive.
_open: set[_OpenConnection] = set()
_open_lock = threading.Lock()
_shutting_down = threading.Event()


def open_connections() -> int:
    """The number of WebSocket connections open in this process."""
    return len(_open)


def is_shutting_down() -> bool:
    """Whether :func:`close_all` was called: new handshakes should then be refused (503)."""
    return _shutting_down.is_set()


def close_all(
    code: int = CloseCode.GOING_AWAY, reason: str = "server shutting down", timeout: float | None = None
) -> int:
    """Close every open connection of this process with ``code`` (1001 by default).

    Sends every connection its close frame at once (never waiting for one slow client), then
    waits for their closing handshakes together, reading the answers of connections whose view
    is not reading; those still open after ``timeout`` seconds (by default the longest close
    timeout of the connections, ``WEBSOCKET_CLOSE_TIMEOUT``) are cut. Marks the process as
    shutting down, so that new handshakes are refused. Returns the number of connections closed.
    """
    _shutting_down.set()
    with _open_lock:  # see WebSocket._accept_locked: nothing accepted after this is missed
        connections = list(_open)
    if timeout is None:
        timeout = max((ws.close_timeout for ws in connections), default=0.0)
    deadline = time.monotonic() + timeout
    for websocket in connections:
        websocket._start_close(code, reason, blocking=False)
    pending = connections
    while pending:
        for websocket in pending:
            websocket._pull(blocking=False)
        pending = [ws for ws in pending if ws._state is not CLOSED]
        if not pending or time.monotonic() >= deadline:
            break
        time.sleep(0.02)
    for websocket in pending:
        websocket._end("shutdown: the close handshake did not finish in time", clean=False)
    return len(connections)


# A send that takes only what fits at once, whatever the socket's blocking mode (where the
# platform has it; elsewhere writable_now() alone keeps _send_now from waiting long).
_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0)
_POLL_IN = select.POLLIN | select.POLLPRI | select.POLLERR | select.POLLHUP
_POLL_OUT = select.POLLOUT | select.POLLERR | select.POLLHUP
# Captured now, before any monkey-patching by a server that patches later (it passes its own).
_poll = select.poll


def _writable_now(sock: Socket) -> bool:
    poller = _poll()
    poller.register(sock, _POLL_OUT)
    return bool(poller.poll(0))


class Lock(Protocol):
    """What a connection needs of a lock (``threading.Lock``, or the one a :class:`Handover` gives)."""

    def acquire(self, blocking: bool = ..., timeout: float = ...) -> bool: ...

    def release(self) -> object: ...

    def __enter__(self) -> object: ...

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None, /
    ) -> object: ...


class Socket(Protocol):
    """What a connection needs of the socket a :class:`Handover` gives: a ``socket.socket``
    (gevent's too), or a wrapper such as :class:`~django_websocket.servers.tls.SerializedTLSSocket`."""

    def recv(self, bufsize: int, /) -> bytes: ...

    def send(self, data: bytes | bytearray | memoryview, /) -> int: ...

    def sendall(self, data: bytes | bytearray | memoryview, /) -> None: ...

    def settimeout(self, timeout: float | None, /) -> None: ...

    def shutdown(self, how: int, /) -> None: ...

    def close(self) -> None: ...

    def fileno(self) -> int: ...


class _OpenConnection(Protocol):
    # What close_all() needs of every connection open in the process (WebSocket, and those of
    # django_websocket.events).
    @property
    def close_timeout(self) -> float: ...

    @property
    def _state(self) -> ConnectionState: ...

    def _start_close(self, code: int, reason: str, blocking: bool) -> object: ...

    def _pull(self, blocking: bool) -> None: ...

    def _end(self, reason: str, *, clean: bool) -> None: ...


def _taken() -> tuple[Socket, bytes]:
    raise InvalidState("the connection was already handed over")


class Handover:
    """How a server lends a connection's socket to the application.

    ``take`` is called once, when the application accepts the WebSocket: it returns
    ``(socket, leftover)``, where ``leftover`` holds bytes the server had already read past the
    request headers (they belong to the WebSocket). From then on the server must write nothing
    more on that connection and must not reuse it for HTTP. ``accepted`` is true when the server
    itself already sent the ``101`` response (gevent-websocket does), in which case a refusal can
    only be a close frame. ``wait_readable(sock, timeout)`` may replace the default readiness check
    (``select.poll``, which gevent's monkey-patching makes cooperative); ``writable_now(sock)``
    the check, which must never block, that a socket takes bytes at once; ``send_now(sock,
    data)``, which must never block either, the check and the send of a write that must not wait
    (a group's delivery): it sends what the socket takes at once and returns how many bytes, 0
    when none (by default, ``writable_now`` then a send of what fits). ``lock``, a callable
    returning a new lock, may replace ``threading.Lock`` for each connection's locks (acquired
    blocking in ``with`` statements, and with ``acquire(blocking=False)``).
    """

    # Slots: a detached connection keeps its handover for as long as it lives. "__dict__" keeps
    # attributes a server adapter sets of its own working (the dict is made only for those).
    __slots__ = (
        "_take", "accepted", "wait_readable", "writable_now", "send_now", "lock", "taken", "detachable",
        "detached", "__dict__",
    )  # fmt: skip

    def __init__(
        self,
        take: Callable[[], tuple[Socket, bytes]],
        *,
        accepted: bool = False,
        wait_readable: Callable[[Socket, float | None], bool] | None = None,
        writable_now: Callable[[Socket], bool] | None = None,
        send_now: Callable[[Socket, bytes], int] | None = None,
        lock: Callable[[], Lock] | None = None,
        detachable: bool = False,
    ) -> None:
        self._take = take
        self.accepted = accepted
        self.wait_readable = wait_readable
        self.writable_now = writable_now or _writable_now
        self.send_now = send_now
        self.lock = lock
        self.taken = False
        #: Whether the server lets the connection outlive its view (``WebSocket.detach()``):
        #: once ``detached`` is set, it must neither read, shut down nor close the socket.
        self.detachable = detachable
        self.detached = False

    def take(self) -> tuple[Socket, bytes]:
        if self.taken:
            raise InvalidState("the connection was already handed over")
        self.taken = True
        return self._take()

    def release_references(self) -> None:
        """Forget what taking the connection needed (the server's handler, its request): a
        detached connection keeps its handover for as long as it lives."""
        self._take = _taken


class WebSocket:
    """One WebSocket connection, as a view sees it in ``request.websocket``.

    The opening handshake is answered lazily: the ``101`` goes out when the view first uses the
    connection (or calls :meth:`accept`), so a view can still refuse with an HTTP response before.
    """

    # Slots rather than an instance dict: thousands of connections may be open, each of these
    # attributes costs 8 bytes instead of a dict entry. "__dict__" keeps attributes a project
    # sets on request.websocket working (that dict is only made for those that do).
    __slots__ = (
        "handshake", "_handover", "max_message_size", "max_frame_size", "server_subprotocols", "compression",
        "close_timeout", "send_timeout", "ping_interval", "ping_timeout", "max_queue", "max_queue_bytes",
        "_response_headers", "_subprotocol", "_state", "_sock", "_proto", "_messages", "_queued_bytes", "_out",
        "_write_lock", "_recv_lock", "_state_lock", "_last_pull", "_poller", "_close_deadline",
        "_closing_locally", "_clean_end", "_ended", "last_received", "_pong_waiters", "_close_callbacks",
        "ping_sent", "idle_timeout", "_on_idle", "end_reason", "_released", "_detached", "_detached_busy",
        "__dict__", "__weakref__",
    )  # fmt: skip

    # Set by accept(), None before: every use is after accept() or checks for None first, so
    # they are typed as set.
    _sock: Socket
    _proto: ServerProtocol
    #: ``time.monotonic()`` of the last bytes received (keepalive reads it); None until accept().
    last_received: float

    def __init__(
        self,
        request: Request,
        handover: Handover,
        *,
        max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
        max_frame_size: int | None = None,
        subprotocols: Iterable[str] = (),
        compression: bool = True,
        close_timeout: float = 5.0,
        send_timeout: float | None = None,
        ping_interval: float | None = None,
        ping_timeout: float | None = None,
        max_queue: int = DEFAULT_MAX_QUEUE,
        max_queue_bytes: int = DEFAULT_MAX_QUEUE_BYTES,
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        #: The validated handshake (:class:`~django_websocket.handshake.Request`).
        self.handshake = request
        self._handover = handover
        self.max_message_size = max_message_size
        self.max_frame_size = max_frame_size
        self.server_subprotocols = tuple(subprotocols)
        self.compression = compression
        self.close_timeout = close_timeout
        self.send_timeout = send_timeout
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.max_queue = max_queue
        self.max_queue_bytes = max_queue_bytes
        self._response_headers = tuple(headers)
        self._subprotocol: str | None = None
        self._state = CONNECTING
        self._sock = None  # type: ignore[assignment]
        self._proto = None  # type: ignore[assignment]
        # Received messages not yet read: a deque made when one arrives, dropped when the view
        # waits on an empty one (an idle connection does not keep its 64-slot block).
        self._messages: collections.deque[Message] | None = None
        self._queued_bytes = 0
        # Frames any thread produced (pongs, pings, close frames), written by the next holder of
        # the write lock, in order, between whole data frames: a list made when one is queued.
        self._out: list[bytes] | None = None
        make_lock: Callable[[], Lock] = handover.lock or threading.Lock
        self._write_lock = make_lock()  # also serialises accept()
        self._recv_lock = make_lock()
        self._state_lock = make_lock()
        self._last_pull = 0.0
        self._poller: select.poll | None = None
        self._close_deadline: float | None = None
        self._closing_locally = False
        self._clean_end = False
        self._ended: threading.Event | None = None  # made only when a thread waits for the end
        self.last_received = None  # type: ignore[assignment]
        # Pings sent by ping() and not answered yet: a dict made by the first one (most
        # connections never call ping(); keepalive pings need no waiter).
        self._pong_waiters: dict[bytes, threading.Event] | None = None
        self._close_callbacks: list[Callable[[Any], object]] = []
        #: ``time.monotonic()`` when the keepalive ping now unanswered was sent, else None.
        self.ping_sent: float | None = None
        #: Seconds :meth:`wait` blocks before it calls the idle callback (see ``_on_idle``).
        self.idle_timeout: float | None = 1.0
        # Called once, in the waiting thread, when wait() has been blocked for idle_timeout
        # seconds (the Django layer releases the thread's database connections then).
        self._on_idle: Callable[[], object] | None = None
        #: Why the connection ended, once it did (for logs and tests), else None.
        self.end_reason: str | None = None
        self._released = False
        # The OnMessage policy, once detach() handed the connection to the reactor.
        self._detached: OnMessage | None = None
        self._detached_busy = False  # a worker runs its on_message callback

    # --- the opening handshake ----------------------------------------------------------------

    @property
    def subprotocols(self) -> list[str]:
        """The subprotocols the client offered, in its order of preference."""
        return list(self.handshake.subprotocols)

    @property
    def protocol(self) -> str | None:
        """The subprotocol of the connection, or None: the one accepted, or before :meth:`accept`,
        the one that will be chosen by default."""
        return self._subprotocol if self.accepted else self.choose_subprotocol()

    def choose_subprotocol(self) -> str | None:
        """The first of the server's subprotocols (in the server's order) that the client offered."""
        offered = self.handshake.subprotocols
        for candidate in self.server_subprotocols:
            if candidate in offered:
                return candidate
        return None

    @property
    def state(self) -> ConnectionState:
        """The :class:`ConnectionState` of the connection."""
        return self._state

    @property
    def accepted(self) -> bool:
        """Whether the ``101`` was sent (or the connection ended after it was)."""
        return self._proto is not None and self._state is not CONNECTING

    def accept(self, subprotocol: str | None = None) -> None:
        """Send the ``101 Switching Protocols`` answer and take over the connection.

        ``subprotocol`` must be one the client offered; by default the first of the server's
        subprotocols that the client offered is chosen, and none if there is no match. Called
        implicitly by every other method; calling it twice raises :class:`InvalidState`.
        """
        with self._write_lock:
            if self._state is not CONNECTING:
                raise InvalidState(f"the WebSocket was already {'accepted' if self.accepted else 'refused'}")
            self._accept_locked(subprotocol)

    def _ensure_accepted(self) -> None:
        if self._state is CONNECTING:
            # Two threads may use a fresh connection at once: only one accepts, and the other
            # waits until the 101 is written and the connection is usable.
            with self._write_lock:
                if self._state is CONNECTING:
                    self._accept_locked(None)

    def _accept_locked(self, subprotocol: str | None) -> None:
        # The write lock is held: no other thread can write (or read: readers accept first).
        if subprotocol is None:
            subprotocol = self.choose_subprotocol()
        elif subprotocol not in self.handshake.subprotocols:
            raise ValueError(f"the client did not offer the subprotocol {subprotocol!r}")
        extension_header, extension = None, None
        if self.compression and not self._handover.accepted:
            extension_header, extension = deflate.negotiate(self.handshake.extensions)
        self._subprotocol = subprotocol
        proto = ServerProtocol(
            max_message_size=self.max_message_size, max_frame_size=self.max_frame_size, extension=extension
        )
        sock, leftover = self._handover.take()
        self._sock = sock
        self.last_received = self._last_pull = time.monotonic()
        # Reads only happen once the socket is readable, so this timeout bounds sends: each
        # send() call may wait this long for the client to take *some* bytes (see _write).
        sock.settimeout(self.send_timeout)
        self._proto = proto
        if not self._handover.accepted:
            response = accept_response(self.handshake.key, subprotocol, extension_header, self._response_headers)
            try:
                sock.sendall(response)
            except OSError:
                self._state = OPEN
                self._end("the client went away during the opening handshake", clean=False)
                return
        if leftover:
            # Frames the client sent right behind its handshake come before anything read later.
            self._feed(leftover)
        # Only now may other threads use the connection: the 101 is on the wire before any frame.
        self._state = OPEN if proto.state is State.OPEN else CLOSING
        with _open_lock:
            _open.add(self)
            # close_all() sets the flag before it takes its list: a connection accepted after
            # that closes itself (its close frame goes out just below, behind the 101).
            late = _shutting_down.is_set()
        if late:
            self._start_close(CloseCode.GOING_AWAY, "server shutting down", blocking=False)
        elif self.ping_interval:
            from . import keepalive

            keepalive.watch(self)
        if self._out:
            self._write_out()
        self._check_done()

    def _reject(self) -> None:
        """The view refused the handshake with an HTTP response: the connection never opened.
        The final step still runs (close callbacks, if any were added)."""
        with self._write_lock:
            if self._state is not CONNECTING:
                return
            self._state = OPEN  # CONNECTING -> CLOSED goes through the same final step
        self._end("refused before the opening handshake", clean=False)

    def add_close_callback(self, callback: Callable[[Self], object]) -> None:
        """Call ``callback(websocket)`` once the connection has ended, from whichever thread
        ended it; at once, in this thread, if it already has."""
        with self._state_lock:
            if self._state is not CLOSED:
                self._close_callbacks.append(callback)
                return
        self._run_callbacks([callback])

    # --- state --------------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once a close frame was sent or received, or the connection was lost."""
        return self._state is CLOSING or self._state is CLOSED

    def is_closed(self) -> bool:
        return self.closed

    @property
    def close_code(self) -> int | None:
        """The close code once known: the peer's, ours, 1005 (none given) or 1006 (lost)."""
        return self._proto.close_code if self._proto is not None else None

    @property
    def close_reason(self) -> str:
        return self._proto.close_reason if self._proto is not None else ""

    def _closed_error(self) -> WebSocketError:
        proto = self._proto
        if proto is None:
            return InvalidState("the WebSocket was refused before it opened")
        return ConnectionClosed(proto.close_code, proto.close_reason)

    # --- sending ------------------------------------------------------------------------------

    def send(self, message: str | bytes | bytearray | memoryview) -> None:
        """Send a message: ``str`` as a text frame; bytes, bytearray or memoryview as binary.

        Anything else is sent as ``str(message)``. Safe to call from several threads at once.
        Raises :class:`~django_websocket.exceptions.ConnectionClosed` once the connection closed.
        """
        state = self._state
        if state is not OPEN:
            if state is CONNECTING:
                self._ensure_accepted()
            if self._state is CLOSED:
                raise self._closed_error()
        if not isinstance(message, (str, bytes, bytearray, memoryview)):
            message = str(message)
        with self._write_lock:
            if self._out:
                self._write_out()
            if self._state is CLOSED:
                raise self._closed_error()
            # After a close frame was sent the protocol refuses (ConnectionClosed); after a bad
            # frame whose close is held back, messages received before it may still be answered.
            # Framing happens under the write lock: with permessage-deflate, frames must go out
            # in the order the compressor saw them (RFC 7692 §7.2.3, context takeover).
            self._write(self._proto.send(message))
            if self._out:
                self._write_out()
            if self._state is not OPEN:  # the protocol may be closed: the end may be due
                self._check_done()
        if self._out:
            self._flush(blocking=False)  # queued while we held the lock (see _flush)
        now = time.monotonic()
        if now - self._last_pull > 1.0:
            # A view that only sends must still see the peer's close (and answer its pings):
            # after sending, read what arrived, at most once a second, without blocking.
            self._last_pull = now
            self._pull(blocking=True)

    def ping(self, payload: str | bytes | None = None) -> threading.Event:
        """Send a ping; returns a :class:`threading.Event` set when the matching pong arrives.

        Without ``payload``, a random one tells this ping's pong from others'. A pong also
        answers the pings sent before it (RFC 6455 §5.5.3 lets a peer answer only the latest).
        The event is also set when the connection ends: check :attr:`closed` after it is set.
        """
        self._ensure_accepted()
        if self._state is CLOSED:
            raise self._closed_error()
        if payload is None:
            payload = os.urandom(4)
        if isinstance(payload, str):
            payload = payload.encode("utf-8")
        payload = bytes(payload)
        if len(payload) > 125:
            raise ValueError("a ping payload is at most 125 bytes (RFC 6455 §5.5)")
        waiter = threading.Event()
        with self._state_lock:
            if self._state is CLOSED or self._proto.close_sent:
                raise self._closed_error()
            # Re-inserted at the end: the dict keeps the order pings were sent in.
            waiters = self._pong_waiters
            if waiters is None:
                waiters = self._pong_waiters = {}
            waiters.pop(payload, None)
            waiters[payload] = waiter
            self._queue_out(serialize_frame(Opcode.PING, payload))
        self._flush(blocking=True)
        return waiter

    def _send_keepalive_ping(self) -> bool:
        """Queue a keepalive ping and write it if the socket takes it at once; never blocks."""
        with self._state_lock:
            if self._state is not OPEN:
                return False
            self._queue_out(serialize_frame(Opcode.PING, b"keepalive"))
        self._flush(blocking=False)
        return True

    def _send_now(self, message: str | bytes) -> bool:
        """Send a data frame of ``message`` only if it goes out at once, never blocking: for a
        group's delivery, which must not wait for one client.

        False, with nothing framed, unless the connection is open, the write lock is free, no
        frame waits in ``_out`` (it would be overtaken) and the socket takes bytes now; False
        too when the write shows the client gone (the connection ends). True once the frame went
        to the socket: whole, or in part with the rest left at the front of ``_out`` (with the
        handover's ``send_now``, which checks nothing first, that part may be none). That rest
        is then for the caller to get written, with ``_flush(blocking=True)`` from a thread that
        may wait (a view's own ``send`` would write it first, but a view that only reads never
        writes). Only on a plain socket: a TLS one may need to read, or to wait, to write at all.
        """
        if self._state is not OPEN or self._out or type(self._sock) is not socket.socket:
            return False
        if not self._write_lock.acquire(blocking=False):
            return False
        taken = False
        send_now = self._handover.send_now
        try:
            # Under the lock: another writer may have left frames in _out, or ended the connection.
            if self._state is OPEN and not self._out:
                if send_now is not None or self._handover.writable_now(self._sock):
                    taken = self._send_framed_now(message, send_now)
        finally:
            self._write_lock.release()
        if self._out and self._state is not CLOSED:
            self._flush(blocking=False)  # frames queued while we held the lock, or our rest
        return taken

    def _send_framed_now(self, message: str | bytes, send_now: Callable[[Socket, bytes], int] | None) -> bool:
        # The write lock is held, the socket is a plain one, and writable unless send_now is
        # the handover's.
        try:
            data = self._proto.send(message)
        except ConnectionClosed:
            return False
        # Framed (with permessage-deflate, the compressor moved on): from here the frame must go
        # out whole, now or later. MSG_DONTWAIT: even a socket in blocking mode (no send timeout)
        # takes only what fits at once, and writable_now() said something does.
        sock = cast(socket.socket, self._sock)
        try:
            sent = sock.send(data, _DONTWAIT) if send_now is None else send_now(sock, data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self._end("the client went away", clean=False)
            return False
        if sent < len(data):
            with self._state_lock:
                self._out = [data[sent:], *(self._out or ())]
        return True

    def _write(self, data: bytes) -> None:
        # Called with the write lock held: the whole frame is written before another thread may
        # write, which keeps frames whole. Each send() may wait send_timeout for the client to
        # take some bytes, so the timeout means "no progress for this long": a client reading a
        # large message slowly but steadily gets all of it. (One send() nearly always takes
        # everything: no loop, no memoryview for a small frame.)
        sock = self._sock
        try:
            sent = sock.send(data)
            if sent < len(data):
                view = memoryview(data)
                while sent < len(view):
                    sent += sock.send(view[sent:])
        except TimeoutError:
            self._end(f"the client took nothing for {self.send_timeout}s (WEBSOCKET_SEND_TIMEOUT)", clean=False)
            raise self._closed_error() from None
        except OSError:
            self._end("the client went away", clean=False)
            raise self._closed_error() from None

    def _queue_out(self, frame: bytes) -> None:
        # The state lock is held.
        if self._out is None:
            self._out = [frame]
        else:
            self._out.append(frame)

    def _take_out(self) -> bytes:
        with self._state_lock:
            out, self._out = self._out, None
        if not out:
            return b""
        return out[0] if len(out) == 1 else b"".join(out)

    def _write_out(self) -> None:
        # The write lock is held: write every queued frame, blocking as _write does.
        data = self._take_out()
        if data and self._state is not CLOSED:
            try:
                self._write(data)
            except ConnectionClosed:
                pass

    def _flush(self, blocking: bool) -> bool:
        """Write the queued frames. Blocking: wait for the write lock and for the client (the
        thread is the connection's own). Else: only if the lock is free, and only what the
        socket takes at once; a holder of the lock writes the rest after its own frame.
        Returns False when the lock was busy (its holder writes the frames)."""
        while True:
            if blocking:
                self._write_lock.acquire()
            elif not self._write_lock.acquire(blocking=False):
                return False
            taken = True
            try:
                if blocking:
                    self._write_out()
                elif self._out and self._state is not CLOSED:
                    taken = self._write_now()
                self._check_done()
            finally:
                self._write_lock.release()
            # A frame queued by another thread between our last look and the release, which
            # that thread could not write because we held the lock. Unless the socket just took
            # less than it was given: trying again at once would spin until the client reads.
            if not self._out or self._state is CLOSED or not taken:
                return True
            blocking = False

    def _write_now(self) -> bool:
        # Write lock held; write what the socket takes without waiting, keep the rest queued.
        # Returns whether the socket took everything.
        if not self._handover.writable_now(self._sock):
            return False
        data = self._take_out()
        sock = self._sock
        try:
            # MSG_DONTWAIT: a plain socket in blocking mode (no send timeout) would otherwise
            # wait until it took all (a TLS socket takes no flags).
            sent = sock.send(data, _DONTWAIT) if type(sock) is socket.socket else sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self._end("the client went away", clean=False)
            return True
        if sent < len(data):
            with self._state_lock:
                self._out = [bytes(memoryview(data)[sent:]), *(self._out or ())]
            return False
        return True

    # --- receiving ----------------------------------------------------------------------------

    def wait(self, timeout: float | None = None) -> Message | None:
        """Return the next message, blocking until one arrives.

        Text frames give ``str``, binary frames ``bytes``. Returns None once the connection is
        closed, and None when ``timeout`` (seconds) expires first: check :attr:`closed` to tell
        the two apart.
        """
        if self._state is not OPEN:
            self._ensure_accepted()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._recv_lock:
            while True:
                if self._messages:
                    return self._pop()
                if self._messages is not None:
                    self._messages = None
                    self._queued_bytes = 0
                if self._state is CLOSED:
                    return None
                if self._proto.failure_close_pending:
                    self._send_held_close()
                    continue
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    # Out of time, but what the socket already holds still counts (wait(0)).
                    if not self._receive(0, True):
                        return None
                    continue
                on_idle = self._on_idle
                # (_on_idle is only set when idle_timeout is not None.)
                if on_idle is not None and (remaining is None or remaining > self.idle_timeout):  # type: ignore[operator]
                    if not self._receive(self.idle_timeout, True) and self._state is not CLOSED:
                        # Nothing for idle_timeout seconds: the view is idle, tell its owner.
                        self._on_idle = None
                        on_idle()
                    continue
                self._receive(remaining, True)

    def _pop(self) -> Message:
        # IndexError when another thread took the last message first. No lock: only the reader
        # appends, and should read() and wait() in two threads both pop, a lost update of the
        # size is forgotten when the queue next runs empty (wait() resets it).
        messages = self._messages
        if not messages:
            raise IndexError("no message")
        message = messages.popleft()
        self._queued_bytes -= len(message)
        if not messages and self._detached is not None:
            # A detached connection keeps no empty queue (its reader never waits to drop it);
            # under the lock, since the reactor may be queueing a message into it right now.
            with self._state_lock:
                if not messages and self._messages is messages:
                    self._messages = None
        return message

    @overload
    def read(self) -> Message | None: ...

    @overload
    def read(self, fallback: _T) -> Message | _T: ...

    def read(self, fallback: object = None) -> object:
        """Return the next message if one is already there, else ``fallback``; never blocks."""
        self._pull(blocking=False, accept=True)
        if self._messages:
            try:
                return self._pop()
            except IndexError:  # another thread took it
                pass
        return fallback

    def has_messages(self) -> bool:
        """Whether a message is ready to be read; never blocks."""
        self._pull(blocking=False, accept=True)
        return bool(self._messages)

    def count_messages(self) -> int:
        """How many messages are ready to be read; never blocks."""
        self._pull(blocking=False, accept=True)
        return len(self._messages or ())

    def __iter__(self) -> Iterator[Message]:
        """Yield messages until the connection closes."""
        while True:
            message = self.wait()
            if message is None:
                return
            yield message

    def _queue_full(self) -> bool:
        messages = self._messages
        return messages is not None and (len(messages) >= self.max_queue or self._queued_bytes >= self.max_queue_bytes)

    @property
    def reading_paused(self) -> bool:
        """Whether the connection stopped reading its socket because its queue of unread
        messages is full (:data:`DEFAULT_MAX_QUEUE`); it reads again as the view reads."""
        return self._queue_full()

    def _pull(self, blocking: bool, accept: bool = False) -> None:
        """Read what the socket already holds, up to the queue's bound, without waiting for the
        peer. ``blocking`` says whether this thread may wait to write replies (pongs, a close).
        If another thread is reading, it will queue what arrives: report what is queued now."""
        if accept:
            self._ensure_accepted()
        if self._state is CONNECTING or self._state is CLOSED:
            return
        if not self._recv_lock.acquire(blocking=False):
            return
        try:
            while self._state is not CLOSED and not self._queue_full() and self._receive(0, blocking):
                pass
            if not self._messages and self._proto.failure_close_pending:
                self._send_held_close(blocking)
        finally:
            self._recv_lock.release()
        if self._out and not blocking:
            self._flush(blocking=False)

    def _wait_readable(self, timeout: float | None) -> bool:
        custom = self._handover.wait_readable
        if custom is not None:
            return custom(self._sock, timeout)
        if self._poller is None:
            # select.poll (not select.select, which fails above fd 1024), looked up now so that
            # gevent's monkey-patched version is used when patching happened.
            self._poller = select.poll()
            self._poller.register(self._sock, _POLL_IN)
        return bool(self._poller.poll(None if timeout is None else max(0, int(timeout * 1000 + 0.999))))

    def _receive(self, timeout: float | None, blocking: bool) -> bool:
        """Read once from the socket (the read lock is held), waiting at most ``timeout``
        (None: no bound); False if nothing came. ``blocking``: as for :meth:`_pull`."""
        deadline = self._close_deadline
        if deadline is not None:
            # A close handshake we started is bounded by close_timeout (RFC 6455 §7.1.1).
            left = deadline - time.monotonic()
            if left <= 0:
                self._end(f"the client did not answer the close frame within {self.close_timeout}s", clean=False)
                return False
            timeout = left if timeout is None else min(timeout, left)
        try:
            # When nothing bounds this wait and the socket has no timeout (it bounds sends when
            # set), a blocking recv() waits by itself, without a readiness check first (a system
            # call per message with threads, a watcher's start and stop with gevent). Shutting
            # the socket down from another thread wakes it.
            if (timeout is not None or self.send_timeout is not None) and not self._wait_readable(timeout):
                return False
            data = self._sock.recv(_READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            data = b""
        if not data:
            if self._state is not CLOSED:
                self._end("the client went away", clean=False)
            return False
        if self._feed(data):
            self._flush(blocking)
        return True

    def _feed(self, data: bytes) -> bool:
        """Give received bytes to the protocol and queue what they mean; no I/O. Returns whether
        frames are waiting to be written or the closing handshake may be over."""
        self.last_received = time.monotonic()
        proto = self._proto
        with self._state_lock:
            if self._state is CLOSED:
                return False
            proto.receive_data(data)
            events = proto.events_received()
            # Messages that arrived before a bad frame are still delivered, and the view may
            # answer them: the failure's close frame waits until the view has read them.
            hold = (
                proto.failure is not None
                and not self._closing_locally
                and (bool(self._messages) or any(isinstance(e, (str, bytes)) for e in events))
            )
            reply = proto.data_to_send(hold_failure_close=hold)
            if reply:
                self._queue_out(reply)
            for event in events:
                if type(event) is str or type(event) is bytes:
                    if not self._closing_locally:
                        if self._messages is None:
                            self._messages = collections.deque()
                        self._messages.append(event)
                        self._queued_bytes += len(event)
                elif isinstance(event, Pong):
                    self.ping_sent = None
                    self._answer_pings(event.payload)
                elif isinstance(event, Close) and proto.failure is not None:
                    failure = proto.failure
                    logger.info("WebSocket %s failed with %s: %s", self.handshake.path, failure.code, failure)
            state = proto.state
            if state is not _PROTO_OPEN and self._state is OPEN:
                self._state = CLOSING
            return self._out is not None or state is _PROTO_CLOSED

    def _answer_pings(self, payload: bytes) -> None:
        # State lock held. A pong answers its ping and every ping sent before it.
        waiters = self._pong_waiters
        if not waiters or payload not in waiters:
            return
        for key in list(waiters):
            waiters.pop(key).set()
            if key == payload:
                break

    def _send_held_close(self, blocking: bool = True) -> None:
        # The view has read every message received before the failure: now fail for real.
        with self._state_lock:
            data = self._proto.data_to_send()
            if data:
                self._queue_out(data)
        self._flush(blocking)

    def _check_done(self) -> None:
        # Called with the write lock held, once the queued frames were written: the closing
        # handshake is over when both close frames were exchanged (or ours, after a failure,
        # went out), and nothing of ours is still waiting to be written.
        proto = self._proto
        if proto.state is State.CLOSED and proto.close_sent and not self._out and self._state is not CLOSED:
            self._end("closed", clean=True)

    # --- closing ------------------------------------------------------------------------------

    def close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Start the closing handshake (once; later calls only wait for it) and end the connection.

        Waits up to ``close_timeout`` seconds for the peer's close frame, then ends the
        connection. The reason is cut to 123 bytes of UTF-8 (RFC 6455 §5.5).
        """
        self._ensure_accepted()
        if self._state is CLOSED:
            return
        self._start_close(code, reason, blocking=True)
        deadline = time.monotonic() + self.close_timeout
        if self._close_deadline is None:
            self._close_deadline = deadline  # our close went out earlier, or is a reply
        # Read until the peer's close arrives; if another thread is reading, it will see it.
        if self._recv_lock.acquire(timeout=self.close_timeout):
            try:
                while self._state is not CLOSED:
                    if self._proto.failure_close_pending:
                        self._send_held_close()
                    elif not self._receive(None, True) and time.monotonic() >= deadline:
                        break
            finally:
                self._recv_lock.release()
        else:
            self._wait_ended(deadline - time.monotonic())
        if self._state is not CLOSED:
            self._end(f"the client did not answer the close frame within {self.close_timeout}s", clean=False)

    def start_close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> bool:
        """Send the close frame (once) without waiting for the answer; False if already ended.

        Whoever reads the connection next (the view's ``wait``, or :meth:`close`) completes the
        closing handshake, bounded by ``close_timeout``.
        """
        self._ensure_accepted()
        if self._state is CLOSED:
            return False
        self._start_close(code, reason, blocking=True)
        return True

    def _start_close(self, code: int, reason: str, blocking: bool) -> None:
        """Queue our close frame (once) and write it, or leave it to the writer if not
        ``blocking``; the closing handshake then completes when the peer answers."""
        with self._state_lock:
            if self._state is CLOSED or self._state is CONNECTING:
                return
            self._closing_locally = True
            frame = self._proto.send_close(code, reason)
            if frame:
                self._queue_out(frame)
                self._close_deadline = time.monotonic() + self.close_timeout
            if self._state is OPEN:
                self._state = CLOSING
            # The view asked to close: messages not yet read are dropped.
            self._messages = None
            self._queued_bytes = 0
        self._flush(blocking)

    def fail(self, code: int, reason: str = "") -> None:
        """Fail the connection (RFC 6455 §7.1.7): send a close frame with ``code`` and end the
        connection without waiting for the peer's answer. Never blocks: when another thread is
        writing, it writes the close frame after its own and ends the connection (its own
        send timeout bounds that); when the socket takes nothing at once, the connection ends
        without the frame. A view blocked in ``wait()`` or ``send()`` wakes up (``None``, or
        :exc:`~django_websocket.exceptions.ConnectionClosed`)."""
        with self._state_lock:
            if self._state is not OPEN and self._state is not CLOSING:
                return
            logger.info("WebSocket %s failed with %s: %s", self.handshake.path, code, reason)
            proto = self._proto
            if not proto.close_sent:
                proto.fail(ProtocolError(reason, code=code))
                frame = proto.data_to_send()
                if frame:
                    self._queue_out(frame)
            self._state = CLOSING
            self.end_reason = f"failed with {code}: {reason}"
        if self._flush(blocking=False):
            # The close frame is out (and the connection ended), or the socket took nothing.
            self._end(self.end_reason, clean=False)

    def _wait_ended(self, timeout: float) -> bool:
        with self._state_lock:
            if self._state is CLOSED:
                return True
            if self._ended is None:
                self._ended = threading.Event()
            ended = self._ended
        return ended.wait(max(0.0, timeout))

    def _end(self, reason: str, *, clean: bool) -> None:
        """The single final step of every connection (see the module's docstring): run once,
        from whichever thread saw the end first. ``clean``: the closing handshake completed, so
        only our side of TCP is shut (the server closes first, RFC 6455 §7.1.1) and the peer's
        FIN is awaited when the socket is released; else both sides are shut at once."""
        with self._state_lock:
            if self._state is CLOSED or self._state is CONNECTING:
                return
            self._state = CLOSED
            self.end_reason = self.end_reason or reason
            self._clean_end = clean
            proto = self._proto
            if proto is not None and (proto.close_code is None or not clean):
                # Without the closing handshake, the code is 1006 unless a close frame came or
                # we failed with one (RFC 6455 §7.1.5, §7.4.1); the parser forgets its input.
                proto.receive_eof()
            callbacks, self._close_callbacks = self._close_callbacks, []
            waiters, self._pong_waiters = self._pong_waiters, None
            ended = self._ended
            self._out = None
        sock = self._sock
        if sock is not None:
            try:
                # Wakes every thread blocked reading or writing this socket (closing the
                # descriptor would not, and a reused descriptor would be read by mistake).
                sock.shutdown(socket.SHUT_WR if clean else socket.SHUT_RDWR)
            except OSError:
                pass
        with _open_lock:
            _open.discard(self)
        for waiter in (waiters or {}).values():
            waiter.set()
        if ended is not None:
            ended.set()
        if clean:
            logger.debug("WebSocket %s closed with %s", self.handshake.path, proto.close_code)
        elif proto is not None:
            logger.info("WebSocket %s ended: %s", self.handshake.path, reason)
        self._run_callbacks(callbacks)

    def _run_callbacks(self, callbacks: Iterable[Callable[[Any], object]]) -> None:
        # No lock is held: a callback may take other locks, or use the connection's attributes.
        for callback in callbacks:
            try:
                callback(self)
            except Exception:
                logger.exception("Error in a close callback of %r", self)

    def _release(self) -> None:
        """Close the socket's descriptor, once the connection ended: the owner's last step, once
        nothing else uses the socket (the view returned). After a clean end, first read until
        the peer's FIN (bounded by ``close_timeout``), so that unread input does not turn our
        close into a reset that could destroy the close frame on its way (RFC 6455 §7.1.1)."""
        if self._state is not CLOSED:
            self._end("released while open", clean=False)
        if self._sock is None or self._released:
            return
        self._released = True
        # No reader or writer can be left inside a call on the socket: both were woken by the
        # shutdown, and the locks wait for them to leave (bounded: they are awake).
        got_recv = self._recv_lock.acquire(timeout=self.close_timeout)
        got_write = self._write_lock.acquire(timeout=self.close_timeout)
        sock = self._sock
        try:
            if self._clean_end:
                deadline = time.monotonic() + self.close_timeout
                try:
                    while True:
                        left = deadline - time.monotonic()
                        if left <= 0 or not self._wait_readable(left) or not sock.recv(_READ_SIZE):
                            break
                except OSError:
                    pass
            if self._poller is not None:
                try:
                    self._poller.unregister(sock)
                except (KeyError, ValueError, OSError):
                    pass
                self._poller = None
            try:
                sock.close()
            except OSError:
                pass
        finally:
            if got_write:
                self._write_lock.release()
            if got_recv:
                self._recv_lock.release()

    # --- detaching ------------------------------------------------------------------------------

    @property
    def detached(self) -> bool:
        """Whether :meth:`detach` handed the connection to the reactor."""
        return self._detached is not None

    def detach(self, on_message: Any = "ignore") -> None:
        """Hand the connection to this process's reactor (:mod:`django_websocket.reactor`): the
        view may return, and everything it held (the request, its thread or greenlet, its
        database connections) is released, while the connection stays open.

        The reactor answers pings and closes, keepalive goes on, and group messages reach the
        socket as before; ``send()``, ``close()`` and ``fail()`` keep working from any thread.
        ``on_message`` says what becomes of the data messages the client sends from then on:
        ``"ignore"`` (dropped), ``("close", code[, reason])`` (the first one closes the
        connection with that code), or a callable ``callback(websocket, message)`` run on the
        reactor's small pool of workers, one message at a time, in order (see
        :class:`~django_websocket.reactor.OnMessage`). Messages received before ``detach()``
        and not yet read meet the same policy.

        Raises :exc:`~django_websocket.exceptions.ConnectionClosed` if the connection is over,
        and :exc:`~django_websocket.exceptions.InvalidState` when the server cannot keep a
        connection its view returned from (see the deployment guides).
        """
        from .reactor import OnMessage, get_reactor

        policy = OnMessage(on_message)
        if policy.asynchronous:
            raise ValueError("an async def on_message callback needs an async def view on an ASGI server")
        self._ensure_accepted()
        if not getattr(self._handover, "detachable", False):
            raise InvalidState(
                "this server cannot keep a WebSocket open after its view returns: detach() needs "
                "runserver, the gevent server, gunicorn's workers of django_websocket, or an ASGI server"
            )
        with self._state_lock:
            if self._state is CLOSED:
                raise self._closed_error()
            if self._detached is not None:
                raise InvalidState("the WebSocket was already detached")
            self._detached = policy
        # The server keeps its hands off the socket from now on (see the adapters), and what
        # the handover refers to (the server's request handler) need not stay in memory.
        self._handover.detached = True
        self._handover.release_references()
        self._on_idle = None
        get_reactor().add(self)

    def _drop_messages(self) -> None:
        # The reactor's "ignore" policy: unread messages are forgotten.
        self._messages = None
        self._queued_bytes = 0

    def _caught_up(self, reactor: Reactor) -> None:
        # The on_message callback's worker read every message: the reactor reads the socket again.
        reactor.resume(self)

    def _close_descriptor(self) -> None:
        """The reactor's last step of a detached connection: close its socket (it ended, and
        the peer's FIN came or its time is up). Never blocks."""
        if self._state is not CLOSED:
            self._end("released while open", clean=False)
        if self._released:
            return
        self._released = True
        if self._poller is not None:
            try:
                self._poller.unregister(self._sock)
            except (KeyError, ValueError, OSError):
                pass
            self._poller = None
        try:
            self._sock.close()
        except OSError:
            pass

    def __repr__(self) -> str:
        return f"<WebSocket {self.handshake.path!r} {self._state.value}>"
