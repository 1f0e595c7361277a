"""``request.websocket`` over ASGI events: the same connection API where an ASGI server frames.

On an ASGI server (uvicorn, daphne, hypercorn, Granian, gunicorn's asgi worker) the server reads
and writes the WebSocket frames, and the application exchanges events with it:
``websocket.connect``, ``websocket.accept``, ``websocket.receive``, ``websocket.send``,
``websocket.close``, ``websocket.disconnect``. This module turns those events into the API of
:class:`~django_websocket.websocket.WebSocket`:

* :class:`ASGIWebSocket`, for a regular (``def``) view running in a thread of its own: blocking
  ``wait()``, ``send()``, ``close()``, iteration, exactly as on a WSGI server;
* :class:`AsyncWebSocket`, for an ``async def`` view running on the server's event loop:
  ``await ws.wait()``, ``await ws.send()``, ``await ws.close()``, ``async for``; ``read()``,
  ``has_messages()`` and ``count_messages()`` stay plain calls, since they never wait.

Both keep the life of the connection in the same :class:`~django_websocket.websocket.ConnectionState`
machine and end through one final step, :meth:`_EventWebSocket._end`, run once.

The event loop owns two tasks per connection, started on accept: the *reader* awaits
``receive()`` and queues messages (bounded: past ``max_queue`` messages or ``max_queue_bytes``
it stops calling ``receive()``, so the server's own buffers fill and TCP holds the client back),
and the *writer* sends what any thread queued, in order, each burst taken under one lock. A
thread that sends only appends to the outgoing queue and wakes the writer if it sleeps: one
wake-up per burst, not per message, and the wake-ups of all the loop's writers that threads
asked for go in one ``call_soon_threadsafe()`` callback (:class:`_Wakeups`); no thread or
``sync_to_async`` per message. An async view's ``send()`` hands its event to the server itself
when nothing is queued and the writer sleeps (no task switch); the writer takes over if the
server's ``send()`` waits. Keepalive pings and the close handshake are the server's: the ASGI
interface has no ping.

Some servers (Granian) read the client's frames only while the application awaits
``receive()``, and fail the connection as soon as that read meets a bad frame: from then on they
refuse every ``send()``. On such a server the reader, having just handed a message to a regular
view's thread that waited for one, calls ``receive()`` again only once the view has answered (the
writer sent what it queued), has gone back to waiting, or ``_HANDLING_BOUND`` has passed: the
answer to a valid message then goes out before the server reads what followed it, as when an
application answers from the coroutine that received the message. ``async def`` views are not
waited for (it cost a third of their throughput there; docs/topics/conformance.rst), nor are
servers that read on their own.

This module never imports Django.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Generator, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, NoReturn, TypeAlias, TypeVar, overload

from .exceptions import ConnectionClosed, InvalidState
from .frames import CloseCode
from .protocol import DEFAULT_MAX_MESSAGE_SIZE, Message
from .reactor import OnMessage, Reactor, get_reactor
from .websocket import (
    CLOSED,
    CLOSING,
    CONNECTING,
    DEFAULT_MAX_QUEUE,
    DEFAULT_MAX_QUEUE_BYTES,
    OPEN,
    ConnectionState,
    _open,
    _open_lock,
)

if TYPE_CHECKING:
    from typing_extensions import Self

    from .handshake import Request

_T = TypeVar("_T")

#: An ASGI event: a dict with a ``"type"`` (ASGI leaves the rest to each type).
Event: TypeAlias = "dict[str, Any]"
#: The ``receive`` and ``send`` callables of an ASGI scope.
Receive: TypeAlias = "Callable[[], Awaitable[Event]]"
Send: TypeAlias = "Callable[[Mapping[str, Any]], Awaitable[None]]"
#: What ``send()`` takes (``str`` as text, the others as binary; anything else as ``str()``).
_Sendable: TypeAlias = "str | bytes | bytearray | memoryview"

__all__ = ["ASGIWebSocket", "AsyncWebSocket", "EventHandover"]

logger = logging.getLogger("django_websocket")

#: Bytes (characters of text) queued for the writer above which a sending thread waits.
_SEND_HIGH_WATER = 2**16

# Seconds at most that the reader of a server that reads only inside receive() defers its next
# receive() while a view's thread handles the message just handed to it: long enough for a
# thread to wake and answer on a busy machine (10 ms was not, under the test suite's load: the
# thread was not scheduled in time once in 20 tries), short enough that a view busy with a
# message sees the next ones, and the client's close, 50 ms late at most.
_HANDLING_BOUND = 0.05


class EventHandover:
    """What an ASGI adapter lends a connection: the event loop, the ``receive`` and ``send``
    callables of the scope, and the validated handshake (the server checked the handshake
    itself; ``handshake`` is a :class:`~django_websocket.handshake.Request` built from the
    scope). ``taken`` becomes true when the application accepts the connection; until then,
    the adapter answers a refusal (an HTTP response) itself."""

    transport = "events"

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        receive: Receive,
        send: Send,
        handshake: Request,
        *,
        http_response: bool = False,
        reads_on_receive: bool = False,
    ) -> None:
        self.loop = loop
        self.receive = receive
        self.send = send
        self.handshake = handshake
        #: Whether the server offers the ``websocket.http.response`` extension.
        self.http_response = http_response
        #: Whether the server reads the client's frames only while ``receive()`` is awaited
        #: (Granian): the reader then lets a view answer a message before reading on.
        self.reads_on_receive = reads_on_receive
        self.accepted = False
        self.taken = False
        #: Whether the view is an ``async def`` one (the adapter decides before it runs).
        self.asynchronous = False
        # A connection may outlive its view (detach()): the application's call lasts until
        # the connection ends, with no thread of its own (WebSocketASGIHandler.websocket).
        self.detachable = True
        self.detached = False


class _EventWebSocket:
    """What :class:`ASGIWebSocket` and :class:`AsyncWebSocket` share: the state, the queues, the
    event loop's reader and writer, and the final step."""

    __slots__ = (
        "handshake", "_handover", "_loop", "max_message_size", "server_subprotocols", "close_timeout",
        "send_timeout", "ping_interval", "ping_timeout", "max_queue", "max_queue_bytes", "compression",
        "max_frame_size", "_subprotocol", "_state", "close_code", "close_reason", "end_reason", "_lock",
        "_messages", "_queued_bytes", "_readable", "_reading_threads", "_outgoing", "_outgoing_bytes", "_sent",
        "_writable", "_room_waiters", "_writer_awake", "_kick", "_wakeups", "_resume", "_reader_paused", "_tasks",
        "_read_waiter", "_drain_waiter", "_close_callbacks", "_closed_event", "idle_timeout", "_on_idle",
        "last_received", "_send_inline", "_unfinished", "_detached", "_detached_busy", "_reactor",
        "_end_waiter", "_handed", "_defer_reader", "__dict__", "__weakref__",
    )  # fmt: skip

    def __init__(
        self,
        request: Request,
        handover: EventHandover,
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
        self.handshake = request
        self._handover = handover
        self._loop = handover.loop
        self.max_message_size = max_message_size
        # Framing, compression and keepalive are the server's: kept for the same attributes.
        self.max_frame_size = max_frame_size
        self.compression = compression
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.server_subprotocols = tuple(subprotocols)
        self.close_timeout = close_timeout
        self.send_timeout = send_timeout
        self.max_queue = max_queue
        self.max_queue_bytes = max_queue_bytes
        self._subprotocol: str | None = None
        self._state = CONNECTING
        #: The close code once known: the peer's, ours, or 1006 when the connection was lost.
        self.close_code: int | None = None
        self.close_reason = ""
        self.end_reason: str | None = None
        self._lock = threading.Lock()
        self._messages: collections.deque[Message] = collections.deque()
        self._queued_bytes = 0
        self._readable = threading.Condition(self._lock)  # a message arrived, or the end
        self._reading_threads = 0  # threads blocked on _readable: only they need a notify()
        # ASGI events for the writer, in order (and, after a thread's answer, the future the
        # deferred reader awaits: see _send_threadsafe).
        self._outgoing: collections.deque[Event | asyncio.Future[None]] = collections.deque()
        self._outgoing_bytes = 0
        self._sent = 0  # events the writer sent: "progress" for a waiting sender
        self._writable = threading.Condition(self._lock)
        self._room_waiters = 0  # senders (threads or coroutines) waiting for the queue to drain
        # False only while the writer sleeps on _kick (a future, made on the loop): whoever queues
        # an event then wakes it, once. It starts awake: the accept is queued before it runs.
        self._writer_awake = True
        self._kick: asyncio.Future[None] | None = None
        self._wakeups = _wakeups_of(self._loop)  # for threads that wake the writer
        self._send_inline = True  # AsyncWebSocket.send() may hand events to the server itself
        # (The rest of a send() the server made wait, its event): for the writer.
        self._unfinished: tuple[_Rest, Event] | None = None
        # What the paused reader waits on (bound to the loop when first awaited, Python >= 3.10).
        self._resume = asyncio.Event()
        self._reader_paused = False
        self._tasks: tuple[asyncio.Task[None], ...] = ()
        self._read_waiter: asyncio.Future[None] | None = None  # what an async wait() awaits
        self._drain_waiter: asyncio.Future[None] | None = None
        self._close_callbacks: list[Callable[[Any], object]] = []
        self._closed_event: threading.Event | None = None
        self.idle_timeout: float | None = 1.0
        self._on_idle: Callable[[], object] | None = None
        #: ``time.monotonic()`` of the last message received; None until accepted.
        self.last_received: float | None = None
        self._detached: OnMessage | None = None  # the policy, once detached
        self._detached_busy = False  # its on_message callback runs
        self._reactor: Reactor | None = None  # the reactor whose policies apply, once detached
        self._end_waiter: asyncio.Future[None] | None = None  # what _until_ended() awaits
        # What the reader awaits before its next receive() while a view handles the message just
        # handed to it, on a server that reads only inside receive() (see _reader).
        self._handed: asyncio.Future[None] | None = None
        self._defer_reader = handover.reads_on_receive and self._THREADED

    # --- state --------------------------------------------------------------------------------

    @property
    def state(self) -> ConnectionState:
        """The :class:`~django_websocket.websocket.ConnectionState` of the connection."""
        return self._state

    @property
    def accepted(self) -> bool:
        return self._state is not CONNECTING and self._handover.taken

    @property
    def closed(self) -> bool:
        """True once a close was sent or received, or the connection was lost."""
        return self._state is CLOSING or self._state is CLOSED

    def is_closed(self) -> bool:
        return self.closed

    @property
    def subprotocols(self) -> list[str]:
        """The subprotocols the client offered, in its order of preference."""
        return list(self.handshake.subprotocols)

    @property
    def protocol(self) -> str | None:
        """The subprotocol of the connection, or None (before accept: the one to be chosen)."""
        return self._subprotocol if self.accepted else self.choose_subprotocol()

    def choose_subprotocol(self) -> str | None:
        """The first of the server's subprotocols (in the server's order) that the client offered."""
        offered = self.handshake.subprotocols
        for candidate in self.server_subprotocols:
            if candidate in offered:
                return candidate
        return None

    @property
    def reading_paused(self) -> bool:
        """Whether the reader stopped taking events because the queue of unread messages is full."""
        return self._reader_paused

    def _closed_error(self) -> InvalidState | ConnectionClosed:
        if not self._handover.taken:
            return InvalidState("the WebSocket was refused before it opened")
        return ConnectionClosed(self.close_code, self.close_reason)

    def add_close_callback(self, callback: Callable[[Self], object]) -> None:
        """Call ``callback(websocket)`` once the connection has ended, from whichever thread
        ended it; at once, in this thread, if it already has."""
        with self._lock:
            if self._state is not CLOSED:
                self._close_callbacks.append(callback)
                return
        self._run_callbacks([callback])

    def fail(self, code: int, reason: str = "") -> None:
        """Close with ``code`` at once, from any thread, never waiting (the close goes after
        what is queued)."""
        if self._state is OPEN:
            logger.info("WebSocket %s failed with %s: %s", self.handshake.path, code, reason)
            self._close_soon(code, reason, from_loop=_running_loop() is self._loop)

    def ping(self, payload: str | bytes | None = None) -> NoReturn:
        """Not available: the ASGI interface has no ping. The server's keepalive pings (see
        its deployment guide for its setting)."""
        raise InvalidState("an ASGI application cannot send pings: the ASGI server's keepalive pings")

    # --- reading (any thread) -------------------------------------------------------------------

    def _pop_locked(self) -> Message:
        message = self._messages.popleft()
        self._queued_bytes -= len(message)
        if self._reader_paused and len(self._messages) <= self.max_queue // 2:
            self._reader_paused = False
            self._loop.call_soon_threadsafe(self._resume.set)
        return message

    @overload
    def read(self) -> Message | None: ...

    @overload
    def read(self, fallback: _T) -> Message | _T: ...

    def read(self, fallback: object = None) -> object:
        """Return the next message if one is already there, else ``fallback``; never blocks."""
        self._require_accepted()
        with self._lock:
            if self._messages:
                return self._pop_locked()
        return fallback

    def has_messages(self) -> bool:
        """Whether a message is ready to be read; never blocks."""
        self._require_accepted()
        return bool(self._messages)

    def count_messages(self) -> int:
        """How many messages are ready to be read; never blocks."""
        self._require_accepted()
        return len(self._messages)

    def _require_accepted(self) -> None:
        pass  # accepting needs the loop: the subclasses' entry points do it

    # --- detaching ------------------------------------------------------------------------------

    @property
    def detached(self) -> bool:
        """Whether ``detach()`` let the connection outlive its view."""
        return self._detached is not None

    def _detach(self, policy: OnMessage) -> Reactor:
        # Shared by both detach()es, once accepted. The reader task applies the policy from
        # now on (see _deliver), without waiting for a view; the caller has it applied to what
        # is queued already.
        with self._lock:
            if self._state is CLOSED:
                raise self._closed_error()
            if self._detached is not None:
                raise InvalidState("the WebSocket was already detached")
            self._detached = policy
            self._reactor = reactor = get_reactor()
            self._let_reader_on_locked(_running_loop() is self._loop)
        self._handover.detached = True
        self._on_idle = None
        reactor._count(self)
        return reactor

    def _drop_messages(self) -> None:
        # On the loop: the "ignore" and "close" policies forget the unread messages.
        with self._lock:
            self._messages.clear()
            self._queued_bytes = 0
            if self._reader_paused:
                self._reader_paused = False
                self._resume.set()

    def _caught_up(self, reactor: Reactor) -> None:
        # From the on_message callback's worker (or task): the loop applies the policy again.
        try:
            self._loop.call_soon_threadsafe(reactor._dispatch, self)
        except RuntimeError:
            pass  # the loop is closed: the server has stopped, and the connection with it

    async def _until_ended(self) -> None:
        # On the loop: until the connection ended, however it ends (one future for every
        # waiter: the application's call of a detached connection, close()).
        with self._lock:
            if self._state is CLOSED:
                return
            waiter = self._end_waiter
            if waiter is None:
                self._end_waiter = waiter = self._loop.create_future()
        await asyncio.shield(waiter)

    # --- group delivery (django_websocket.groups.base.Outbox), from any thread ------------------

    # What a group's delivery reads of a socket connection's: an ASGI connection has no frames
    # of its own waiting to be written, and no socket (its sender thread lingers, as for TLS).
    _out = None
    _sock = None

    # Whether the view runs in a thread of its own (ASGIWebSocket), whose answer the reader of a
    # server that reads only inside receive() waits for (see _reader).
    _THREADED = False

    def _send_now(self, message: Message) -> bool:
        """Queue ``message`` for the writer only if the connection is not behind, never blocking:
        a group's direct delivery. False when the connection is not open, or more than
        ``_SEND_HIGH_WATER`` waits for the server (the group then queues the message in the
        member's outbox, whose sender thread waits in :meth:`_send_threadsafe`, and the group's
        slow-consumer policy applies when that outbox is full)."""
        with self._lock:
            if self._state is not OPEN or self._outgoing_bytes > _SEND_HIGH_WATER:
                return False
            self._queue_send_locked(message)
            self._wake_writer_locked(False)  # (from the loop's thread too: one more callback)
        return True

    def _send_threadsafe(self, message: _Sendable) -> None:
        # From any thread but the loop's: queue, wake the writer, and wait while more than
        # _SEND_HIGH_WATER is queued (bounded by send_timeout without progress).
        with self._lock:
            if self._state is not OPEN:
                raise self._closed_error()
            self._queue_send_locked(message)
            if self._handed is not None:
                # The answer to the message just handed to this thread (or the first message
                # since): the reader reads on once the writer sent it (see _reader).
                self._outgoing.append(self._handed)
                self._handed = None
            self._wake_writer_locked(False)
            if self._outgoing_bytes > _SEND_HIGH_WATER:
                self._wait_drained_locked()

    def _wait_drained_locked(self) -> None:
        # The lock is held: wait for the writer, as long as it makes progress.
        timeout = self.send_timeout
        while self._outgoing_bytes > _SEND_HIGH_WATER and self._state is OPEN:
            sent = self._sent
            self._room_waiters += 1
            try:
                self._writable.wait(timeout)
            finally:
                self._room_waiters -= 1
            if self._sent == sent and self._state is OPEN and self._outgoing_bytes > _SEND_HIGH_WATER:
                self._lock.release()
                try:
                    self._end(
                        f"the client took nothing for {timeout}s (WEBSOCKET_SEND_TIMEOUT)",
                        CloseCode.ABNORMAL_CLOSURE,
                        "",
                    )
                finally:
                    self._lock.acquire()
        if self._state is CLOSED and self.end_reason != "closed":
            raise self._closed_error()

    # --- the event loop's side ------------------------------------------------------------------

    def _accept_event(self, subprotocol: str | None) -> None:
        # Shared by both accept()s; the lock is held. The accept goes first in the outgoing
        # queue, before any message, whichever thread sends next.
        if self._state is not CONNECTING:
            raise InvalidState("the WebSocket was already accepted")
        if subprotocol is None:
            subprotocol = self.choose_subprotocol()
        elif subprotocol not in self.handshake.subprotocols:
            raise ValueError(f"the client did not offer the subprotocol {subprotocol!r}")
        self._subprotocol = subprotocol
        self._handover.taken = True
        self._state = OPEN
        self.last_received = time.monotonic()
        event: Event = {"type": "websocket.accept"}
        if subprotocol is not None:
            event["subprotocol"] = subprotocol
        self._outgoing.append(event)
        with _open_lock:
            _open.add(self)

    def _start(self) -> None:
        # On the loop, once accepted: the reader and the writer.
        self._tasks = (self._loop.create_task(self._reader()), self._loop.create_task(self._writer()))

    def _wake_writer_locked(self, from_loop: bool) -> None:
        # The lock is held. One wake-up per burst: the writer drains everything queued. From
        # another thread, the wake-ups of every connection of the loop go in one callback.
        if not self._writer_awake:
            self._writer_awake = True
            if from_loop:
                _set_done(self._kick)  # (cancelled with the writer when the connection ended)
            else:
                self._wakeups.add(self._kick)

    async def _reader(self) -> None:
        receive = self._handover.receive
        limit = self.max_message_size
        try:
            while self._state is not CLOSED:
                if self._reader_paused:
                    self._resume.clear()
                    if self._reader_paused:
                        await self._resume.wait()
                    continue
                event = await receive()
                kind = event["type"]
                if kind == "websocket.receive":
                    message = event.get("text")
                    if message is None:
                        message = event.get("bytes") or b""
                    self.last_received = time.monotonic()
                    if limit is not None and len(message) > limit:
                        # Whatever the server's own limit, ours holds (RFC 6455 §7.4.1: 1009).
                        logger.info("WebSocket %s failed with 1009: message over %d bytes", self.handshake.path, limit)
                        self._close_soon(CloseCode.MESSAGE_TOO_BIG, f"message over {limit} bytes", from_loop=True)
                        continue
                    handed = self._deliver(message)
                    if handed is not None:
                        # The server reads only inside receive() and refuses every send() once
                        # that read met a bad frame (RFC 6455 §7.1.7): read on once the view
                        # answered this message, went back to waiting, or the bound passed.
                        timer = self._loop.call_later(_HANDLING_BOUND, _set_done, handed)
                        await handed
                        timer.cancel()
                        with self._lock:
                            if self._handed is handed:
                                self._handed = None
                elif kind == "websocket.disconnect":
                    code = event.get("code", CloseCode.ABNORMAL_CLOSURE)
                    clean = code != CloseCode.ABNORMAL_CLOSURE
                    self._end("closed" if clean else "the client went away", code, event.get("reason") or "")
                    return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the server's receive() failed: the connection is gone
            self._end(f"receive() failed: {exc!r}", CloseCode.ABNORMAL_CLOSURE, "")

    def _deliver(self, message: Message) -> asyncio.Future[None] | None:
        # On the loop: queue a received message and wake whoever waits for one. Returns what the
        # reader awaits before its next receive() when this message is the only one queued for a
        # view's thread on a server that reads only inside receive(); else None (an async view's
        # task is not waited for: one more future and task step per message).
        handed = None
        with self._lock:
            if self._state is not OPEN:
                return None  # after our close: dropped, as on the other servers
            self._messages.append(message)
            self._queued_bytes += len(message)
            if len(self._messages) >= self.max_queue or self._queued_bytes >= self.max_queue_bytes:
                self._reader_paused = True
            waiter = self._read_waiter
            if waiter is not None and waiter.done():
                waiter = None
            if self._reading_threads:
                self._readable.notify()
            if self._defer_reader and len(self._messages) == 1 and self._detached is None:
                # The view's thread takes it, now or once it calls wait() (it may not wait yet:
                # right after the accept, or busy with the previous message).
                self._handed = handed = self._loop.create_future()
        if waiter is not None:
            waiter.set_result(None)
        if self._detached is not None:
            self._reactor._dispatch(self)  # type: ignore[union-attr]  # set with _detached; the view returned: the policy takes the message
        return handed

    def _let_reader_on_locked(self, from_loop: bool) -> None:
        # The lock is held: the view answered, went back to waiting, or the connection is over:
        # the deferred reader may call receive() again.
        handed = self._handed
        if handed is not None:
            self._handed = None
            if from_loop:
                _set_done(handed)
            else:
                self._wakeups.add(handed)

    async def _writer(self) -> None:
        send = self._handover.send
        lock = self._lock
        outgoing = self._outgoing
        try:
            while True:
                with lock:
                    burst: list[Event | asyncio.Future[None] | tuple[_Rest, Event]] | None
                    if self._unfinished is not None:
                        # An async view's send() that the server made wait: finished here first.
                        burst = [self._unfinished, *outgoing]
                        self._unfinished = None
                        outgoing.clear()
                    elif outgoing:
                        # Everything queued meanwhile, taken at once: one lock for the burst.
                        burst = list(outgoing)
                        outgoing.clear()
                    else:
                        burst = None
                        self._writer_awake = False
                        kick = self._kick = self._loop.create_future()
                if burst is None:
                    await kick
                    continue
                sent_bytes = sent = 0  # sent, not yet taken off the queue's count
                for item in burst:
                    if self._state is CLOSED:
                        break  # ended meanwhile: the rest is dropped, as _end() drops the queue
                    try:
                        if isinstance(item, tuple):
                            rest, event = item
                            await rest
                        elif isinstance(item, dict):
                            event = item
                            await send(event)
                        else:  # a thread's answer went out: the deferred reader reads on
                            _set_done(item)
                            continue
                    except Exception as exc:
                        if not self._close_refused(event, exc):
                            raise
                        # The connection is still open: end it with the one code such a
                        # server sends, rather than leave it open with no application.
                        event = {"type": "websocket.close", "code": int(CloseCode.NORMAL_CLOSURE)}
                        await send(event)
                    sent += 1
                    sent_bytes += len(event.get("text") or event.get("bytes") or b"")
                    if event["type"] == "websocket.close":
                        self._progress(sent_bytes, sent)
                        # The server completes the closing handshake: the connection is over.
                        self._end("closed", event.get("code", CloseCode.NORMAL_CLOSURE), event.get("reason", ""))
                        return
                    if self._room_waiters:  # someone waits for room: tell them at once
                        self._progress(sent_bytes, sent)
                        sent_bytes = sent = 0
                if sent:
                    self._progress(sent_bytes, sent)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the client is gone (each server raises its own error)
            self._end(f"send() failed: {exc!r}", CloseCode.ABNORMAL_CLOSURE, "")

    def _progress(self, sent_bytes: int, sent: int) -> None:
        # On the loop: ``sent`` events of ``sent_bytes`` went out; wake the senders waiting for room.
        with self._lock:
            if self._state is not CLOSED:  # _end() set the count to 0
                self._outgoing_bytes -= sent_bytes
            self._sent += sent
            if not self._room_waiters:
                return
            self._writable.notify_all()
            waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _close_refused(self, event: Event, exc: Exception) -> bool:
        # daphne sends only the close codes 1000 and 3000-4999 (its WebSocket library refuses
        # the others, 1001, 1008, 1009 and 1011 among them, with an exception from send()), and
        # the connection stays open when the application returns. The client is not gone: the
        # reader saw no websocket.disconnect (the state would be CLOSED).
        code = event.get("code", CloseCode.NORMAL_CLOSURE)
        if event["type"] != "websocket.close" or code == CloseCode.NORMAL_CLOSURE or self._state is not CLOSING:
            return False
        logger.info(
            "WebSocket %s: the server refused the close code %s (%s); closed with 1000 instead",
            self.handshake.path,
            code,
            exc,
        )
        return True

    def _queue_send_locked(self, message: _Sendable) -> Event:
        # The lock is held. Returns the event queued.
        event: Event
        if isinstance(message, str):
            event = {"type": "websocket.send", "text": message}
        else:
            event = {"type": "websocket.send", "bytes": bytes(message)}
            message = event["bytes"]
        self._outgoing.append(event)
        self._outgoing_bytes += len(message)  # what the writer takes off once it is sent
        return event

    def _close_soon(self, code: int, reason: str, *, from_loop: bool) -> bool:
        """Queue our close (once): the writer sends it after what is queued, then the
        connection ends. False if the connection had ended or was closing."""
        with self._lock:
            if self._state is not OPEN:
                return False
            self._state = CLOSING
            if self.close_code is None:
                self.close_code, self.close_reason = code, reason
            # The view asked to close: messages not yet read are dropped.
            self._messages.clear()
            self._queued_bytes = 0
            reason_bytes = reason.encode("utf-8")
            if len(reason_bytes) > 123:  # RFC 6455 §5.5: a control frame carries 125 bytes
                reason = reason_bytes[:123].decode("utf-8", "ignore")
            self._outgoing.append({"type": "websocket.close", "code": int(code), "reason": reason})
            self._wake_writer_locked(from_loop)
        return True

    def _end(
        self,
        reason: str,
        code: int = CloseCode.ABNORMAL_CLOSURE,
        close_reason: str = "",
        *,
        clean: bool | None = None,
    ) -> None:
        """The final step, once, in whichever thread saw the end first. (``clean`` is accepted
        for :func:`~django_websocket.websocket.close_all`: the server owns the TCP side.)"""
        with self._lock:
            if self._state is CLOSED:
                return
            self._state = CLOSED
            self.end_reason = reason
            if self.close_code is None or code == CloseCode.ABNORMAL_CLOSURE:
                self.close_code, self.close_reason = code, close_reason
            # Messages received before the end stay readable, as on the other servers.
            answered = [item for item in self._outgoing if isinstance(item, asyncio.Future)]
            self._outgoing.clear()
            self._outgoing_bytes = 0
            callbacks, self._close_callbacks = self._close_callbacks, []
            self._readable.notify_all()
            self._writable.notify_all()
            read_waiter, drain_waiter, closed_event = self._read_waiter, self._drain_waiter, self._closed_event
            end_waiter, handed, self._handed = self._end_waiter, self._handed, None
        with _open_lock:
            _open.discard(self)
        if self._reactor is not None:
            self._reactor._uncount(self)
        for waiter in (read_waiter, drain_waiter, end_waiter, handed, *answered):
            if waiter is not None:
                self._loop.call_soon_threadsafe(_set_done, waiter)
        if closed_event is not None:
            closed_event.set()
        if reason != "closed":
            logger.info("WebSocket %s ended: %s", self.handshake.path, reason)
        self._run_callbacks(callbacks)

    # What close_all() (django_websocket.websocket) calls on every open connection.
    def _start_close(self, code: int, reason: str, blocking: bool) -> None:
        self._close_soon(code, reason, from_loop=_running_loop() is self._loop)

    def _pull(self, blocking: bool, accept: bool = False) -> None:
        pass  # the reader task reads all the time

    def _run_callbacks(self, callbacks: Iterable[Callable[[Any], object]]) -> None:
        for callback in callbacks:
            try:
                callback(self)
            except Exception:
                logger.exception("Error in a close callback of %r", self)

    def _wait_closed(self, timeout: float) -> bool:
        with self._lock:
            if self._state is CLOSED:
                return True
            if self._closed_event is None:
                self._closed_event = threading.Event()
            event = self._closed_event
        return event.wait(timeout)

    async def _finish(self) -> None:
        """On the loop, once the view is over: end the connection and stop the tasks. Bounded:
        a server whose ``send()`` is stuck on a dead client does not hold the scope forever.
        A detached connection is first awaited until it ends, however that happens: the
        server closes the socket once the application returns."""
        if self._state is CONNECTING:
            self._state = CLOSED
            self._run_callbacks(self._close_callbacks)
            self._close_callbacks = []
            return
        if self._detached is not None:
            await self._until_ended()
        self._close_soon(CloseCode.NORMAL_CLOSURE, "", from_loop=True)
        # Over already (the client's close, a lost connection): no close of ours to wait for.
        # Servers that answer the client's close or close the TCP connection only once the
        # application returns (Granian, gunicorn's asgi worker) would otherwise hold the client
        # for close_timeout seconds.
        if self._tasks and self._state is not CLOSED:
            writer = self._tasks[1]
            try:
                await asyncio.wait_for(asyncio.shield(writer), self.close_timeout)
            except (asyncio.TimeoutError, Exception):
                pass
        if self._state is not CLOSED:
            self._end(f"the close did not go out within {self.close_timeout}s", CloseCode.ABNORMAL_CLOSURE, "")
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass

    def _cancelled(self) -> None:
        """On the loop, when the server cancelled the connection's task: the connection is over
        (the server will send nothing more of ours); wake the view and stop the tasks."""
        if self._state is not CONNECTING:
            self._end("the server cancelled the connection", CloseCode.ABNORMAL_CLOSURE, "")
        for task in self._tasks:
            task.cancel()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.handshake.path!r} {self._state.value}>"


def _set_done(future: asyncio.Future[None] | None) -> None:
    if future is not None and not future.done():
        future.set_result(None)


class _Wakeups:
    """The writers that threads woke on one event loop, woken there in one callback: one
    ``call_soon_threadsafe()`` (and one write to the loop's self-pipe) per batch, however many
    connections' views sent meanwhile."""

    __slots__ = ("_loop", "_lock", "_futures", "_scheduled", "__weakref__")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._futures: list[asyncio.Future[None] | None] = []
        self._scheduled = False

    def add(self, future: asyncio.Future[None] | None) -> None:
        with self._lock:
            self._futures.append(future)
            if self._scheduled:
                return  # the callback is on its way: it takes this one too
            self._scheduled = True
        try:
            self._loop.call_soon_threadsafe(self._run)
        except BaseException:
            with self._lock:
                self._scheduled = False
            raise

    def _run(self) -> None:
        with self._lock:
            futures, self._futures = self._futures, []
            self._scheduled = False
        for future in futures:
            _set_done(future)


_wakeups: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Wakeups] = weakref.WeakKeyDictionary()
_wakeups_lock = threading.Lock()


def _wakeups_of(loop: asyncio.AbstractEventLoop) -> _Wakeups:
    wakeups = _wakeups.get(loop)
    if wakeups is None:
        with _wakeups_lock:
            wakeups = _wakeups.setdefault(loop, _Wakeups(loop))
    return wakeups


async def _await(send: Send, event: Event) -> None:
    await send(event)


class _Rest:
    """The rest of a coroutine whose first step already ran and yielded ``pending``: awaiting
    it waits for ``pending`` (as the task that ran the first step would have), then goes on."""

    __slots__ = ("_coroutine", "_pending")

    def __init__(self, coroutine: Coroutine[Any, Any, None], pending: Any) -> None:
        self._coroutine = coroutine
        self._pending = pending

    def __await__(self) -> Generator[Any, Any, Any]:
        coroutine, value = self._coroutine, self._pending
        while True:
            try:
                sent = yield value
            except GeneratorExit:
                coroutine.close()
                raise
            except BaseException as exc:  # cancelled, most likely: the server's send() sees it
                try:
                    value = coroutine.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    value = coroutine.send(sent)
                except StopIteration as stop:
                    return stop.value


class ASGIWebSocket(_EventWebSocket):
    """``request.websocket`` of a regular (``def``) view on an ASGI server: the blocking API of
    :class:`~django_websocket.websocket.WebSocket`, called from the view's own thread (or any
    other thread), never from the event loop."""

    __slots__ = ()
    _THREADED = True

    def accept(self, subprotocol: str | None = None) -> None:
        """Send the ``websocket.accept`` event (the server answers ``101``); see
        :meth:`django_websocket.websocket.WebSocket.accept`."""
        with self._lock:
            self._accept_event(subprotocol)
        self._loop.call_soon_threadsafe(self._start)

    def _ensure_accepted(self) -> None:
        if self._state is CONNECTING:
            with self._lock:
                if self._state is not CONNECTING:
                    return
                self._accept_event(None)
            self._loop.call_soon_threadsafe(self._start)

    _require_accepted = _ensure_accepted

    def send(self, message: _Sendable) -> None:
        """Send a message: ``str`` as text, bytes-like as binary, anything else as ``str()``.

        Returns once the message is queued for the server; waits while more than 64 KiB are
        queued, at most :setting:`WEBSOCKET_SEND_TIMEOUT` without progress. Raises
        :exc:`~django_websocket.exceptions.ConnectionClosed` once the connection closed.
        """
        if self._state is CONNECTING:
            self._ensure_accepted()
        if not isinstance(message, (str, bytes, bytearray, memoryview)):
            message = str(message)
        self._send_threadsafe(message)

    def wait(self, timeout: float | None = None) -> Message | None:
        """Return the next message, blocking until one arrives; None once the connection is
        closed, or when ``timeout`` (seconds) expires first (check :attr:`closed`)."""
        if self._state is CONNECTING:
            self._ensure_accepted()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            if self._handed is not None:
                # Back to waiting without an answer (an answer takes _handed): read on.
                self._let_reader_on_locked(False)
            while True:
                if self._messages:
                    return self._pop_locked()
                if self._state is not OPEN:
                    return None
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                on_idle, idle = self._on_idle, self.idle_timeout
                if on_idle is not None and idle is not None and (remaining is None or remaining > idle):
                    self._reading_threads += 1
                    try:
                        woken = self._readable.wait(idle)
                    finally:
                        self._reading_threads -= 1
                    if not woken and not self._messages and self._state is OPEN:
                        # Nothing for idle_timeout seconds: the view is idle, tell its owner.
                        self._on_idle = None
                        self._lock.release()
                        try:
                            on_idle()
                        finally:
                            self._lock.acquire()
                    continue
                self._reading_threads += 1
                try:
                    self._readable.wait(remaining)
                finally:
                    self._reading_threads -= 1

    def __iter__(self) -> Iterator[Message]:
        """Yield messages until the connection closes."""
        while True:
            message = self.wait()
            if message is None:
                return
            yield message

    def close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Close the connection (once) with ``code`` and ``reason``, and wait (at most
        ``close_timeout``) until the server has it."""
        self._ensure_accepted()
        self._close_soon(code, reason, from_loop=False)
        if not self._wait_closed(self.close_timeout):
            self._end(f"the close did not go out within {self.close_timeout}s", CloseCode.ABNORMAL_CLOSURE, "")

    def start_close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> bool:
        """Queue the close without waiting; False if the connection was over or closing."""
        self._ensure_accepted()
        return self._close_soon(code, reason, from_loop=False)

    def detach(self, on_message: Any = "ignore") -> None:
        """Let the connection outlive the view: once the view returns, its thread is released
        (and counts no more against :setting:`WEBSOCKET_ASGI_THREADS`), the request is
        finished, and the connection stays open, read by the event loop. ``on_message`` is the
        policy for the client's data messages, as in
        :meth:`django_websocket.websocket.WebSocket.detach` (a callback runs on the reactor's
        pool of workers); group messages, ``send()``, ``close()`` and ``fail()`` from any
        thread, the server's keepalive and shutdown are as for any connection.

        Raises :exc:`~django_websocket.exceptions.ConnectionClosed` if the connection is over.
        """
        policy = OnMessage(on_message)
        if policy.asynchronous:
            raise ValueError("an async def on_message callback needs an async def view")
        self._ensure_accepted()
        reactor = self._detach(policy)
        # What the view left unread meets the policy, on the loop like what comes next.
        self._loop.call_soon_threadsafe(reactor._dispatch, self)

    def _reject(self) -> None:
        with self._lock:
            if self._state is not CONNECTING:
                return
            self._state = CLOSED
            self.end_reason = "refused before the opening handshake"
            callbacks, self._close_callbacks = self._close_callbacks, []
        self._run_callbacks(callbacks)

    def _release(self) -> None:
        # The view returned; the adapter's _finish() ends the connection on the loop.
        if self._state is OPEN:
            self.close()


class AsyncWebSocket(_EventWebSocket):
    """``request.websocket`` of an ``async def`` view on an ASGI server: the methods that wait
    are coroutines (``await ws.wait()``, ``await ws.send(m)``, ``await ws.close()``,
    ``await ws.accept()``, ``async for message in ws``); ``read()``, ``has_messages()`` and
    ``count_messages()`` are plain calls, since they never wait. Called on the event loop."""

    __slots__ = ()

    async def accept(self, subprotocol: str | None = None) -> None:
        """Send the ``websocket.accept`` event (the server answers ``101``)."""
        self._accept_now(subprotocol)

    def _accept_now(self, subprotocol: str | None) -> None:
        with self._lock:
            self._accept_event(subprotocol)
        self._start()

    async def _ensure_accepted(self) -> None:
        if self._state is CONNECTING:
            await self.accept()

    def _require_accepted(self) -> None:
        if self._state is CONNECTING:
            raise InvalidState("await ws.accept() (or wait, send) first: accepting sends an event")

    async def send(self, message: _Sendable) -> None:
        """Send a message: ``str`` as text, bytes-like as binary, anything else as ``str()``;
        waits while more than 64 KiB are queued for the server."""
        if self._state is CONNECTING:
            await self.accept()
        if not isinstance(message, (str, bytes, bytearray, memoryview)):
            message = str(message)
        with self._lock:
            if self._state is not OPEN:
                raise self._closed_error()
            if self._writer_awake or not self._send_inline:
                self._queue_send_locked(message)
                self._wake_writer_locked(True)
                full = self._outgoing_bytes > _SEND_HIGH_WATER
                inline = False
            else:
                # Nothing is queued and the writer sleeps: hand the event to the server from
                # here, without waking the writer (a task switch per message). Marked awake
                # meanwhile, so that whatever is sent meanwhile queues behind this event.
                self._writer_awake = inline = True
        if inline:
            await self._hand_to_server(message)
        elif full:
            await self._drained()

    async def _hand_to_server(self, message: _Sendable) -> None:
        # The writer's work for one event, in the view's task; the writer is marked awake.
        event: Event
        if isinstance(message, str):
            event = {"type": "websocket.send", "text": message}
        else:
            event = {"type": "websocket.send", "bytes": bytes(message)}
        steps = pending = None
        try:
            steps = _await(self._handover.send, event)
            pending = steps.send(None)  # the server's send() up to where it waits, if it does
        except StopIteration:
            pass  # sent without waiting: what every server here does unless its buffers are full
        except Exception as exc:
            self._end(f"send() failed: {exc!r}", CloseCode.ABNORMAL_CLOSURE, "")
            return
        else:
            # The server's send() waits (its buffers are full): the writer finishes it, then
            # sends what follows, and this send() waits for room as a queued one does.
            # Inline sends stop for this connection: they would only add a step now.
            size = len(event.get("text") or event.get("bytes") or b"")
            with self._lock:
                self._send_inline = False
                self._unfinished = (_Rest(steps, pending), event)
                self._outgoing_bytes += size
                full = self._outgoing_bytes > _SEND_HIGH_WATER
                _set_done(self._kick)  # it sleeps (marked awake by us): wake it, in our place
            if full:
                await self._drained()
            return
        with self._lock:
            self._sent += 1
            if self._outgoing:
                _set_done(self._kick)  # queued meanwhile: the writer (still marked awake) sends it
            else:
                self._writer_awake = False

    async def _drained(self) -> None:
        timeout = self.send_timeout
        while self._outgoing_bytes > _SEND_HIGH_WATER and self._state is OPEN:
            with self._lock:
                sent = self._sent
                self._drain_waiter = waiter = self._loop.create_future()
                self._room_waiters += 1
            try:
                await asyncio.wait_for(waiter, timeout)
            except asyncio.TimeoutError:
                if self._sent == sent:
                    reason = f"the client took nothing for {timeout}s (WEBSOCKET_SEND_TIMEOUT)"
                    self._end(reason, CloseCode.ABNORMAL_CLOSURE, "")
            finally:
                with self._lock:
                    self._drain_waiter = None
                    self._room_waiters -= 1
        if self._state is CLOSED and self.end_reason != "closed":
            raise self._closed_error()

    async def wait(self, timeout: float | None = None) -> Message | None:
        """Return the next message; None once the connection is closed, or when ``timeout``
        (seconds) expires first (check :attr:`closed`)."""
        if self._state is CONNECTING:
            await self.accept()
        deadline = None if timeout is None else self._loop.time() + timeout
        while True:
            with self._lock:
                if self._messages:
                    return self._pop_locked()
                if self._state is not OPEN:
                    return None
                remaining = None if deadline is None else deadline - self._loop.time()
                if remaining is not None and remaining <= 0:
                    return None
                # Made under the lock: _end() in another thread sees it, or the state it set is seen above.
                self._read_waiter = waiter = self._loop.create_future()
            try:
                if remaining is None:
                    await waiter  # no timeout: no wait_for() (a coroutine and a check per message)
                else:
                    await asyncio.wait_for(waiter, remaining)
            except asyncio.TimeoutError:
                return None
            finally:
                self._read_waiter = None

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Message:
        message = await self.wait()
        if message is None:
            raise StopAsyncIteration
        return message

    async def close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Close the connection (once) with ``code`` and ``reason``; returns once the server has
        the close (at most ``close_timeout``)."""
        await self._ensure_accepted()
        self._close_soon(code, reason, from_loop=True)
        # Until the end, not the writer's: once detached, the end may come from the client's
        # answer first, and the application's call then stops the writer.
        try:
            await asyncio.wait_for(self._until_ended(), self.close_timeout)
        except asyncio.TimeoutError:
            pass
        if self._state is not CLOSED:
            self._end(f"the close did not go out within {self.close_timeout}s", CloseCode.ABNORMAL_CLOSURE, "")

    def detach(self, on_message: Any = "ignore") -> None:
        """Let the connection outlive the view (a plain call: it never waits, and accepts the
        connection if the view did not): the view may return, and the connection stays open,
        read by the event loop. ``on_message`` is the policy for the client's data messages, as
        in :meth:`django_websocket.websocket.WebSocket.detach`: ``"ignore"``, ``("close", code[,
        reason])``, or a callback ``callback(websocket, message)``; an ``async def`` callback is
        awaited on the event loop (``await websocket.send(...)``), a plain one runs on the
        reactor's pool of workers, both one message at a time per connection, in order. Group
        messages, ``fail()``, the server's keepalive and shutdown are as for any connection.

        Raises :exc:`~django_websocket.exceptions.ConnectionClosed` if the connection is over.
        """
        policy = OnMessage(on_message)
        if self._state is CONNECTING:
            self._accept_now(None)
        self._detach(policy)._dispatch(self)  # what the view left unread meets the policy

    def _reject(self) -> None:
        if self._state is CONNECTING:
            self._state = CLOSED
            self.end_reason = "refused before the opening handshake"
            callbacks, self._close_callbacks = self._close_callbacks, []
            self._run_callbacks(callbacks)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
