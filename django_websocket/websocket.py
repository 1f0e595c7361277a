"""The blocking ``WebSocket`` object (``request.websocket``), over a socket, threads or gevent.

This layer is a thin I/O loop around :class:`~django_websocket.protocol.ServerProtocol`: it reads
from the socket into the protocol, writes what the protocol produces, and keeps received messages
in a queue for :meth:`WebSocket.wait`, :meth:`WebSocket.read` and iteration. It never imports
Django.

A server adapter gives the application the connection's socket through a :class:`Handover` placed
in the WSGI environ under :data:`ENVIRON_KEY`.
"""

import collections
import logging
import os
import select
import socket
import threading
import time

from . import deflate
from .exceptions import ConnectionClosed, InvalidState, ProtocolError
from .frames import CloseCode
from .handshake import accept_response
from .protocol import DEFAULT_MAX_MESSAGE_SIZE, Close, Pong, ServerProtocol, State

__all__ = ["ENVIRON_KEY", "Handover", "WebSocket", "open_connections", "close_all", "is_shutting_down"]

logger = logging.getLogger("django_websocket")

#: The WSGI environ key under which a server adapter puts its :class:`Handover`.
ENVIRON_KEY = "django_websocket.handover"

_READ_SIZE = 65536

# Every accepted, not yet closed connection of this process: for graceful shutdown (close_all),
# the connection cap and keepalive.
_open = set()
_open_lock = threading.Lock()
_shutting_down = threading.Event()


def open_connections():
    """The number of WebSocket connections open in this process."""
    return len(_open)


def is_shutting_down():
    """Whether :func:`close_all` was called: new handshakes should then be refused (503)."""
    return _shutting_down.is_set()


def close_all(code=CloseCode.GOING_AWAY, reason="server shutting down", timeout=5.0):
    """Close every open connection of this process with ``code`` (1001 by default).

    Sends each a close frame, then waits up to ``timeout`` seconds for the connections to end
    (their views see the close and return), and aborts those still open. Marks the process as
    shutting down, so that new handshakes are refused. Returns the number of connections closed.
    """
    _shutting_down.set()
    with _open_lock:
        connections = list(_open)
    for websocket in connections:
        websocket.start_close(code, reason)
    deadline = time.monotonic() + timeout
    for websocket in connections:
        while not websocket._transport_closed and time.monotonic() < deadline:
            # Drive the closing handshake ourselves where the view is not reading.
            websocket._pull(accept=False)
            if not websocket._transport_closed:
                time.sleep(0.02)
        if not websocket._transport_closed:
            websocket._abort()
    return len(connections)
_POLL_IN = select.POLLIN | select.POLLPRI | select.POLLERR | select.POLLHUP


class Handover:
    """How a server lends a connection's socket to the application.

    ``take`` is called once, when the application accepts the WebSocket: it returns
    ``(socket, leftover)``, where ``leftover`` holds bytes the server had already read past the
    request headers (they belong to the WebSocket). From then on the server must write nothing
    more on that connection and must not reuse it for HTTP. ``accepted`` is true when the server
    itself already sent the ``101`` response (gevent-websocket does), in which case a refusal can
    only be a close frame. ``wait_readable(sock, timeout)`` may replace the default readiness check
    (``select.poll``, which gevent's monkey-patching makes cooperative). ``lock``, a callable
    returning a new lock, may replace ``threading.Lock`` for the lock that guards each
    connection's writes (it is only ever acquired blocking, in ``with`` statements).
    """

    def __init__(self, take, *, accepted=False, wait_readable=None, lock=None):
        self._take = take
        self.accepted = accepted
        self.wait_readable = wait_readable
        self.lock = lock
        self.taken = False

    def take(self):
        if self.taken:
            raise InvalidState("the connection was already handed over")
        self.taken = True
        return self._take()


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
        "close_timeout", "send_timeout", "ping_interval", "ping_timeout", "_response_headers", "_subprotocol",
        "accepted", "_sock", "_proto", "_messages", "_lock", "_recv_lock", "_accept_lock", "_last_pull",
        "_poller", "_transport_closed", "_close_deadline", "_closing_locally", "last_received", "_pong_waiters",
        "_close_callbacks", "ping_sent", "__dict__", "__weakref__",
    )  # fmt: skip

    def __init__(
        self,
        request,
        handover,
        *,
        max_message_size=DEFAULT_MAX_MESSAGE_SIZE,
        max_frame_size=None,
        subprotocols=(),
        compression=True,
        close_timeout=5.0,
        send_timeout=None,
        ping_interval=None,
        ping_timeout=None,
        headers=(),
    ):
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
        self._response_headers = tuple(headers)
        self._subprotocol = None
        self.accepted = False
        self._sock = None
        self._proto = None
        # Received messages not yet read: a deque made when one arrives, dropped when the view
        # waits on an empty one (an idle connection does not keep its 64-slot block).
        self._messages = None
        # Guards the protocol state and writes to the socket: taken twice per round trip, so a
        # server may give a cheaper lock of its own (only ever acquired blocking).
        self._lock = (handover.lock or threading.Lock)()
        self._recv_lock = threading.Lock()  # one reader at a time
        self._accept_lock = threading.Lock()
        self._last_pull = 0.0
        self._poller = None
        self._transport_closed = False
        self._close_deadline = None
        self._closing_locally = False
        #: ``time.monotonic()`` of the last bytes received (keepalive reads it).
        self.last_received = None
        self._pong_waiters = {}
        self._close_callbacks = []
        #: ``time.monotonic()`` when the keepalive ping now unanswered was sent, else None.
        self.ping_sent = None

    # --- the opening handshake ----------------------------------------------------------------

    @property
    def subprotocols(self):
        """The subprotocols the client offered, in its order of preference."""
        return list(self.handshake.subprotocols)

    @property
    def protocol(self):
        """The subprotocol of the connection, or None: the one accepted, or before :meth:`accept`,
        the one that will be chosen by default."""
        return self._subprotocol if self.accepted else self.choose_subprotocol()

    def choose_subprotocol(self):
        """The first of the server's subprotocols (in the server's order) that the client offered."""
        offered = self.handshake.subprotocols
        for candidate in self.server_subprotocols:
            if candidate in offered:
                return candidate
        return None

    def accept(self, subprotocol=None):
        """Send the ``101 Switching Protocols`` answer and take over the connection.

        ``subprotocol`` must be one the client offered; by default the first of the server's
        subprotocols that the client offered is chosen, and none if there is no match. Called
        implicitly by every other method; calling it twice raises :class:`InvalidState`.
        """
        if self.accepted:
            raise InvalidState("the WebSocket was already accepted")
        if subprotocol is None:
            subprotocol = self.choose_subprotocol()
        elif subprotocol not in self.handshake.subprotocols:
            raise ValueError(f"the client did not offer the subprotocol {subprotocol!r}")
        extension_header, extension = None, None
        if self.compression and not self._handover.accepted:
            extension_header, extension = deflate.negotiate(self.handshake.extensions)
        self.accepted = True
        self._subprotocol = subprotocol
        self._proto = ServerProtocol(
            max_message_size=self.max_message_size, max_frame_size=self.max_frame_size, extension=extension
        )
        sock, leftover = self._handover.take()
        self._sock = sock
        self.last_received = self._last_pull = time.monotonic()
        # Reads only happen once the socket is readable, so this timeout bounds sends: a client
        # that stops reading cannot hold a thread or greenlet forever (the socket is then closed).
        sock.settimeout(self.send_timeout)
        with _open_lock:
            _open.add(self)
        if self.ping_interval:
            from . import keepalive

            keepalive.watch(self)
        if not self._handover.accepted:
            response = accept_response(self.handshake.key, subprotocol, extension_header, self._response_headers)
            try:
                sock.sendall(response)
            except OSError:
                self._lost()
                return
        if leftover:
            self._feed(leftover)

    def add_close_callback(self, callback):
        """Call ``callback(websocket)`` once the connection has ended (from whichever thread ended it)."""
        self._close_callbacks.append(callback)

    def _ensure_accepted(self):
        if not self.accepted:
            # Two threads may use a fresh connection at once: only one of them accepts.
            with self._accept_lock:
                if not self.accepted:
                    self.accept()

    # --- state --------------------------------------------------------------------------------

    @property
    def closed(self):
        """True once a close frame was sent or received, or the connection was lost."""
        proto = self._proto
        return proto is not None and (proto.state is not State.OPEN or self._transport_closed)

    def is_closed(self):
        return self.closed

    @property
    def close_code(self):
        """The close code once known: the peer's, ours, 1005 (none given) or 1006 (lost)."""
        return self._proto.close_code if self._proto is not None else None

    @property
    def close_reason(self):
        return self._proto.close_reason if self._proto is not None else ""

    # --- sending ------------------------------------------------------------------------------

    def send(self, message):
        """Send a message: ``str`` as a text frame; bytes, bytearray or memoryview as binary.

        Anything else is sent as ``str(message)``. Safe to call from several threads at once.
        Raises :class:`~django_websocket.exceptions.ConnectionClosed` once the connection closed.
        """
        # The checks of accept and of the close callbacks are inlined on this path and in wait():
        # a method call each, per message, for what is nearly always nothing to do.
        if not self.accepted:
            self._ensure_accepted()
        if not isinstance(message, (str, bytes, bytearray, memoryview)):
            message = str(message)
        try:
            with self._lock:
                if self._transport_closed:
                    raise ConnectionClosed(self._proto.close_code, self._proto.close_reason)
                self._write(self._proto.send(message))
        finally:
            if self._transport_closed:
                self._run_close_callbacks()
        now = time.monotonic()
        if now - self._last_pull > 1.0 and len(self._messages or ()) < 64:
            # A view that only sends must still see the peer's close (and answer its pings):
            # after sending, read one chunk of what arrived, at most once a second, without
            # blocking. Unread messages stay bounded: past 64 queued, the kernel's buffers push
            # back on the peer.
            self._last_pull = now
            if self._recv_lock.acquire(blocking=False):
                try:
                    if not self._transport_closed:
                        self._receive(0)
                finally:
                    self._recv_lock.release()

    def ping(self, payload=None):
        """Send a ping; returns a :class:`threading.Event` set when the matching pong arrives.

        Without ``payload``, a random one tells this ping's pong from others'. The event is also
        set when the connection ends: check :attr:`closed` after it is set.
        """
        self._ensure_accepted()
        if payload is None:
            payload = os.urandom(4)
        if isinstance(payload, str):
            payload = payload.encode("utf-8")
        waiter = threading.Event()
        try:
            with self._lock:
                if self._transport_closed:
                    raise ConnectionClosed(self._proto.close_code, self._proto.close_reason)
                self._write(self._proto.send_ping(payload))
                self._pong_waiters[bytes(payload)] = waiter
        finally:
            self._run_close_callbacks()
        return waiter

    def _write(self, data):
        # Called with self._lock held: the whole frame is written before another thread may
        # write, which keeps frames whole. One send() nearly always takes all of it; sendall()
        # only for what a full buffer left over. (gevent's sendall costs a getsockopt and its
        # chunking on every call: about 3 µs per message.)
        try:
            sent = self._sock.send(data)
            if sent < len(data):
                self._sock.sendall(memoryview(data)[sent:])
        except OSError:
            self._lost_locked()
            raise ConnectionClosed(self._proto.close_code, self._proto.close_reason) from None

    # --- receiving ----------------------------------------------------------------------------

    def wait(self, timeout=None):
        """Return the next message, blocking until one arrives.

        Text frames give ``str``, binary frames ``bytes``. Returns None once the connection is
        closed, and None when ``timeout`` (seconds) expires first: check :attr:`closed` to tell
        the two apart.
        """
        if not self.accepted:
            self._ensure_accepted()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._recv_lock:
            while True:
                messages = self._messages
                if messages:
                    return messages.popleft()
                if messages is not None:
                    self._messages = messages = None  # the local too: it lives while we wait
                if self._transport_closed:
                    return None
                if self._proto.failure_close_pending:
                    self._send_held_close()
                    return None
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    # Out of time, but what the socket already holds still counts (wait(0)).
                    if not self._receive(0):
                        return None
                    continue
                self._receive(remaining)

    def read(self, fallback=None):
        """Return the next message if one is already there, else ``fallback``; never blocks."""
        self._pull()
        try:
            return self._messages.popleft()
        except (IndexError, AttributeError):  # empty, or None: no message
            return fallback

    def has_messages(self):
        """Whether a message is ready to be read; never blocks."""
        self._pull()
        return bool(self._messages)

    def count_messages(self):
        """How many messages are ready to be read; never blocks."""
        self._pull()
        return len(self._messages or ())

    def __iter__(self):
        """Yield messages until the connection closes."""
        while True:
            message = self.wait()
            if message is None:
                return
            yield message

    def _pull(self, accept=True):
        # Read whatever the socket already holds, without blocking. If another thread is reading,
        # it will queue what arrives: report what is queued now.
        if accept:
            self._ensure_accepted()
        elif not self.accepted:
            return
        if not self._recv_lock.acquire(blocking=False):
            return
        try:
            while not self._transport_closed and self._receive(0):
                pass
            if not self._messages and self._proto.failure_close_pending:
                self._send_held_close()
        finally:
            self._recv_lock.release()

    def _wait_readable(self, timeout):
        custom = self._handover.wait_readable
        if custom is not None:
            return custom(self._sock, timeout)
        if self._poller is None:
            # select.poll (not select.select, which fails above fd 1024), looked up now so that
            # gevent's monkey-patched version is used when patching happened.
            self._poller = select.poll()
            self._poller.register(self._sock, _POLL_IN)
        return bool(self._poller.poll(None if timeout is None else max(0, int(timeout * 1000 + 0.999))))

    def _receive(self, timeout):
        """Read once from the socket (waiting at most ``timeout``); False if nothing came."""
        if self._close_deadline is not None:
            # A close handshake we started is bounded by close_timeout (RFC 6455 §7.1.1).
            left = self._close_deadline - time.monotonic()
            if left <= 0:
                self._abort()
                return False
            timeout = left if timeout is None else min(timeout, left)
        try:
            # When nothing bounds this wait and the socket has no timeout (it bounds sends when
            # set), a blocking recv() waits by itself, without a readiness check first (a system
            # call per message with threads, a watcher's start and stop with gevent). Closing the
            # socket from another thread wakes it.
            bounded = timeout is not None or self.send_timeout is not None
            if bounded and not self._wait_readable(timeout):
                return False
            data = self._sock.recv(_READ_SIZE)
        except OSError:
            data = b""
        if not data:
            self._lost()
            return False
        self._feed(data)
        return True

    def _feed(self, data):
        self.last_received = time.monotonic()
        proto = self._proto
        with self._lock:
            proto.receive_data(data)
            events = proto.events_received()
            # Messages that arrived before a bad frame are still delivered, and the view may
            # answer them: the failure's close frame waits until the view has read them.
            hold = proto.failure is not None and not self._closing_locally and (
                bool(self._messages) or any(isinstance(e, (str, bytes)) for e in events)
            )
            reply = proto.data_to_send(hold_failure_close=hold)
            if reply:
                try:
                    self._sock.sendall(reply)
                except OSError:
                    self._lost_locked()
                    return
        for event in events:
            if isinstance(event, (str, bytes)):
                if not self._closing_locally:
                    if self._messages is None:
                        self._messages = collections.deque()
                    self._messages.append(event)
            elif isinstance(event, Pong):
                self.ping_sent = None
                waiter = self._pong_waiters.pop(event.payload, None)
                if waiter is not None:
                    waiter.set()
            elif isinstance(event, Close):
                if proto.failure is not None:
                    logger.info("WebSocket failed with %s: %s", proto.failure.code, proto.failure)
        if proto.state is State.CLOSED and not proto.failure_close_pending:
            self._finish_transport()
        if self._transport_closed:
            self._run_close_callbacks()

    def _send_held_close(self):
        # The view has read every message received before the failure: now fail for real.
        with self._lock:
            data = self._proto.data_to_send()
            try:
                self._sock.sendall(data)
            except OSError:
                self._lost_locked()
        self._finish_transport()

    # --- closing ------------------------------------------------------------------------------

    def close(self, code=CloseCode.NORMAL_CLOSURE, reason=""):
        """Start the closing handshake (once; later calls do nothing) and end the connection.

        Waits up to ``close_timeout`` seconds for the peer's close frame, then closes the TCP
        connection. The reason is cut to 123 bytes of UTF-8 (RFC 6455 §5.5).
        """
        self._ensure_accepted()
        if not self.start_close(code, reason):
            return
        if self._proto.state is State.CLOSED:
            self._finish_transport()
            return
        # Read until the peer's close arrives; if another thread is reading, it will see it.
        if self._recv_lock.acquire(timeout=self.close_timeout):
            try:
                while not self._transport_closed:
                    self._receive(None)
            finally:
                self._recv_lock.release()

    def start_close(self, code=CloseCode.NORMAL_CLOSURE, reason=""):
        """Send the close frame (once) without waiting for the answer; False if already ended.

        Whoever reads the connection next (the view's ``wait``, or :meth:`close`) completes the
        closing handshake, bounded by ``close_timeout``.
        """
        with self._lock:
            if self._transport_closed or not self.accepted:
                return False
            frame = self._proto.send_close(code, reason)
            self._closing_locally = True
            lost = False
            if frame:
                self._close_deadline = time.monotonic() + self.close_timeout
                try:
                    self._sock.sendall(frame)
                except OSError:
                    self._lost_locked()
                    lost = True
        if lost:
            self._run_close_callbacks()
            return False
        self._messages = None
        return True

    def fail(self, code, reason=""):
        """Fail the connection (RFC 6455 §7.1.7): send a close frame with ``code`` and end the TCP
        connection at once, without waiting for the peer's answer. A view blocked in ``wait()``
        wakes up and gets None."""
        with self._lock:
            if self._transport_closed or not self.accepted:
                return
            logger.info("WebSocket %s failed with %s: %s", self.handshake.path, code, reason)
            self._proto.fail(ProtocolError(reason, code=code))
            data = self._proto.data_to_send()
            try:
                self._sock.sendall(data)
            except OSError:
                pass
            self._close_socket()
        self._run_close_callbacks()

    def _lost(self):
        with self._lock:
            self._lost_locked()
        self._run_close_callbacks()

    def _lost_locked(self):
        # The peer went away without a close handshake (RFC 6455 §7.1.5: code 1006).
        self._proto.receive_eof()
        self._close_socket()

    def _abort(self):
        with self._lock:
            logger.info("WebSocket peer did not answer the close frame within %ss", self.close_timeout)
            self._proto.receive_eof()
            self._close_socket()
        self._run_close_callbacks()

    def _finish_transport(self):
        # The close handshake is over, or the connection failed: the server closes the TCP
        # connection first (RFC 6455 §7.1.1). Half-close, then read until the peer's FIN so that
        # unread input does not turn our close into a reset that could lose the close frame.
        with self._lock:
            if self._transport_closed:
                return
            sock = self._sock
            try:
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                self._close_socket()
                return
        deadline = time.monotonic() + self.close_timeout
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or not self._wait_readable(left):
                    break
                if not sock.recv(_READ_SIZE):
                    break
        except OSError:
            pass
        with self._lock:
            self._close_socket()
        self._run_close_callbacks()

    def _close_socket(self):
        if self._transport_closed:
            return
        self._transport_closed = True
        for waiter in self._pong_waiters.values():
            waiter.set()
        self._pong_waiters.clear()
        if self._poller is not None:
            try:
                self._poller.unregister(self._sock)
            except (KeyError, ValueError, OSError):
                pass
        try:
            # Shut down as well as close: a server may hold other references to the socket
            # (buffered reader and writer files), which would keep the connection open.
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self._sock.close()
        except OSError:
            pass
        with _open_lock:
            _open.discard(self)

    def _run_close_callbacks(self):
        # Run after the connection's lock is released, so that a callback may take other locks.
        if not self._transport_closed or not self._close_callbacks:
            return
        with _open_lock:
            callbacks, self._close_callbacks = self._close_callbacks, []
        for callback in callbacks:
            try:
                callback(self)
            except Exception:
                logger.exception("Error in a close callback of %r", self)

    def __repr__(self):
        state = "pending" if self._proto is None else self._proto.state.name.lower()
        return f"<WebSocket {self.handshake.path!r} {state}>"
