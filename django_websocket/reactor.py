"""The reactor: where detached connections live once their view has returned.

:meth:`WebSocket.detach() <django_websocket.websocket.WebSocket.detach>` hands a connection to the
one reactor of the process: a thread (a greenlet under gevent's monkey-patching) waiting on every
detached socket at once with a selector. When one is readable, the reactor reads what it holds
without blocking (:meth:`~django_websocket.websocket.WebSocket._pull`): pings are answered, a close
frame completes the closing handshake, and data messages meet the policy chosen at ``detach()``
(:class:`OnMessage`): dropped, the connection closed with a code, or handed to a callback that a
small bounded pool of workers runs, one message at a time per connection, in order. Keepalive
pings, group messages (written directly to the socket, :mod:`django_websocket.groups`) and
shutdown (:func:`~django_websocket.websocket.close_all`) need nothing of the reactor.

The policies are the same for a detached connection of an ASGI server
(:mod:`django_websocket.events`), whose event loop reads it: its reader task applies them to each
message it receives, callbacks run on the same pool, and the reactor's
thread is not involved. An ``async def`` callback of an ``async def`` view is awaited on the
event loop instead, one message at a time, in order.

Once a connection has ended, the reactor closes its socket: after a clean end, once the peer's FIN
came (or ``close_timeout`` passed), so that the close frame is not lost to a reset (RFC 6455
§7.1.1), as :meth:`~django_websocket.websocket.WebSocket._release` does for an attached one.

A detached connection costs what it keeps: its connection object, its socket and a selector
entry; no thread, no greenlet, no Django request.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import inspect
import logging
import selectors
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Collection
from typing import TYPE_CHECKING, Any, Protocol

from .frames import is_valid_close_code
from .websocket import CLOSED

if TYPE_CHECKING:
    from .protocol import Message
    from .websocket import WebSocket

__all__ = ["OnMessage", "get_reactor", "Reactor"]

logger = logging.getLogger("django_websocket")

#: Workers running ``on_message`` callbacks of detached connections, at most, per process.
DEFAULT_WORKERS = 4


class OnMessage:
    """What a detached connection does with the data messages its client sends.

    ``"ignore"`` (the default): they are read and dropped. ``("close", code)`` or
    ``("close", code, reason)``: the first one closes the connection with that code (one that an
    endpoint may send, else :exc:`ValueError`, as for ``close()``). A callable
    ``callback(websocket, message)``: it runs on the reactor's pool of workers, one message at a
    time per connection and in order; while it runs, the connection's unread messages wait in its
    bounded queue, and past that bound the reactor stops reading that socket (TCP then holds the
    client back). An exception in the callback is logged and closes the connection with 1011.
    An ``async def`` callback (``asynchronous``) is for an ``async def`` view on an ASGI server:
    it is awaited on the event loop, with the same order and bounds.
    """

    __slots__ = ("kind", "code", "reason", "callback", "asynchronous")

    def __init__(self, on_message: Any) -> None:
        self.code = 1003
        self.reason = ""
        self.callback: Callable[[Any, str | bytes], Any] | None = None
        self.asynchronous = False
        if on_message == "ignore" or on_message is None:
            self.kind = "ignore"
        elif callable(on_message):
            self.kind = "callback"
            self.callback = on_message
            # An async def function, or an object whose __call__ is one.
            self.asynchronous = inspect.iscoroutinefunction(on_message) or inspect.iscoroutinefunction(
                type(on_message).__call__
            )
        elif isinstance(on_message, tuple) and on_message and on_message[0] == "close" and 2 <= len(on_message) <= 3:
            self.kind = "close"
            self.code = int(on_message[1])
            self.reason = str(on_message[2]) if len(on_message) == 3 else ""
            # Checked now, as close() checks it: in the reactor's thread, at the first message,
            # a code no endpoint may send (RFC 6455 §7.4.1: 1005, 1006, 1015...) could only fail.
            if not is_valid_close_code(self.code, sending=True):
                raise ValueError(f"{self.code} is not a close code that may be sent (RFC 6455 §7.4)")
        else:
            raise ValueError(
                f'on_message must be "ignore", ("close", code[, reason]) or a callable, not {on_message!r}'
            )

    def __repr__(self) -> str:
        return f"<OnMessage {self.kind}>"


class _Detachable(Protocol):
    """What the policies need of a detached connection: a
    :class:`~django_websocket.websocket.WebSocket`, read by the reactor's thread, or an ASGI
    connection (:mod:`django_websocket.events`), read by its event loop. The policy is applied in
    that one reading thread, never in two at once."""

    _detached: OnMessage | None
    _detached_busy: bool  # a callback runs (a worker's, or a task on the loop)

    @property
    def _messages(self) -> Collection[Message] | None: ...

    def read(self) -> Message | None: ...

    def fail(self, code: int, reason: str = "") -> None: ...

    def _drop_messages(self) -> None: ...

    def _start_close(self, code: int, reason: str, blocking: bool) -> object: ...

    def _caught_up(self, reactor: Reactor) -> None:
        """From the callback's thread, once it read every message: the reading thread applies
        the policy again (messages may have come since)."""


class Reactor:
    """The detached connections of this process (see the module's docstring)."""

    def __init__(self, workers: int = DEFAULT_WORKERS) -> None:
        self.workers = workers
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        # Commands from any thread, and the connections of event loops: each append, popleft,
        # add or discard is one atomic operation on the deque or set (under the GIL, or their own
        # lock in a free-threaded build), so none takes a lock. A lock taken by every detach()
        # around Thread.is_alive() (which under gevent switches to the hub) made the handshakes
        # of a burst queue behind one another, each view alive with its request until it ended.
        self._commands: collections.deque[tuple[str, WebSocket]] = collections.deque()
        self._lock = threading.Lock()  # only to start the reactor's thread once
        # Whether the reactor's thread runs. Not Thread.is_alive(): under gevent each call on a
        # live thread switches to the hub and back. (A forked child gets a reactor of its own:
        # see get_reactor.)
        self._running = False
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        # Connections that ended cleanly, whose socket closes once the peer's FIN came: deadline.
        self._draining: dict[WebSocket, float] = {}
        self._watched: set[WebSocket] = set()
        # Detached connections that their event loop reads (ASGI), counted only.
        self._looped: set[_Detachable] = set()
        self._tasks: set[asyncio.Task[None]] = set()  # async callbacks running (held: see create_task)

    def __len__(self) -> int:
        """The detached connections of this process (read by the reactor or by an event loop)."""
        return len(self._watched) + len(self._looped)

    # --- from any thread ----------------------------------------------------------------------

    def add(self, websocket: WebSocket) -> None:
        """Watch ``websocket`` (a connection whose view is returning)."""
        self._command("add", websocket)

    def resume(self, websocket: WebSocket) -> None:
        """Read ``websocket`` again (its callback caught up, or its queue was full)."""
        self._command("resume", websocket)

    def _count(self, websocket: _Detachable) -> None:
        """Count ``websocket``, a detached connection that its event loop reads, until it ends."""
        self._looped.add(websocket)

    def _uncount(self, websocket: _Detachable) -> None:
        self._looped.discard(websocket)

    def _command(self, kind: str, websocket: WebSocket) -> None:
        self._commands.append((kind, websocket))
        if not self._running:
            self._start()
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, InterruptedError):
            pass  # the pipe is full: the reactor is awake already

    def _start(self) -> None:
        with self._lock:
            if self._running:
                return  # started by another caller
            self._running = True
            thread = threading.Thread(target=self._run, name="websocket-reactor", daemon=True)
        # Started outside the lock: start() waits for the new thread to run (under gevent, a switch).
        try:
            thread.start()
        except BaseException:
            self._running = False  # the next command tries again
            raise

    # --- the reactor's thread -----------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                try:
                    self._step()
                except Exception:  # one connection's surprise must not stop the others'
                    logger.exception("WebSocket reactor error")
        finally:
            self._running = False

    def _step(self) -> None:
        timeout = 1.0 if self._draining else None
        for key, _ in self._selector.select(timeout):
            websocket = key.data
            if websocket is None:
                self._take_commands()
            elif websocket in self._draining:
                self._drain(websocket)
            else:
                self._readable(websocket)
        if self._draining:
            now = time.monotonic()
            for websocket, deadline in list(self._draining.items()):
                if now >= deadline:
                    self._close(websocket)

    def _take_commands(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        while True:
            try:
                kind, websocket = self._commands.popleft()
            except IndexError:
                return
            if kind == "add":
                self._watched.add(websocket)
                self._watch(websocket)
                # What arrived while the view was returning.
                self._readable(websocket)
            elif kind == "resume" and websocket in self._watched and websocket not in self._draining:
                self._watch(websocket)
                self._readable(websocket)

    def _watch(self, websocket: WebSocket) -> None:
        try:
            self._selector.register(websocket._sock, selectors.EVENT_READ, websocket)
        except KeyError:
            pass  # watched already
        except (ValueError, OSError):
            self._finished(websocket)  # its socket is closed already

    def _unwatch(self, websocket: WebSocket) -> None:
        try:
            self._selector.unregister(websocket._sock)
        except (KeyError, ValueError, OSError):
            pass

    def _readable(self, websocket: WebSocket) -> None:
        websocket._pull(blocking=False)
        self._dispatch(websocket)
        if websocket._state is CLOSED:
            self._finished(websocket)
        elif websocket.reading_paused:
            # The queue is full (a callback is behind): stop watching, or the readable socket
            # would wake the reactor for nothing; the callback's worker resumes it.
            self._unwatch(websocket)

    def _dispatch(self, websocket: _Detachable) -> None:
        """Apply the policy of a detached connection to its unread messages; called by the one
        thread that reads it (this reactor's thread, or an ASGI connection's event loop)."""
        policy = websocket._detached
        if policy is None or not websocket._messages:
            return
        if policy.kind == "ignore":
            websocket._drop_messages()
        elif policy.kind == "close":
            websocket._drop_messages()
            websocket._start_close(policy.code, policy.reason, blocking=False)
        elif not websocket._detached_busy:
            websocket._detached_busy = True
            if policy.asynchronous:
                # On the connection's event loop (where this runs for such a connection).
                task = asyncio.ensure_future(self._await_callback(websocket, policy))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            else:
                self._workers().submit(self._run_callback, websocket, policy)

    def _workers(self) -> concurrent.futures.ThreadPoolExecutor:
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(self.workers, thread_name_prefix="websocket-detached")
        return self._pool

    def _run_callback(self, websocket: _Detachable, policy: OnMessage) -> None:
        # A worker: the connection's messages one by one, then hand it back to its reader.
        assert policy.callback is not None
        try:
            while True:
                message = websocket.read()
                if message is None:
                    break
                try:
                    policy.callback(websocket, message)
                except Exception:
                    _callback_failed(websocket)
                    break
        finally:
            websocket._detached_busy = False
            websocket._caught_up(self)

    async def _await_callback(self, websocket: _Detachable, policy: OnMessage) -> None:
        # _run_callback for an async def callback, on the connection's event loop.
        callback: Callable[[_Detachable, Message], Awaitable[object]] = policy.callback  # type: ignore[assignment]
        try:
            while True:
                message = websocket.read()
                if message is None:
                    break
                try:
                    await callback(websocket, message)
                except Exception:
                    _callback_failed(websocket)
                    break
        finally:
            websocket._detached_busy = False
            websocket._caught_up(self)

    def _finished(self, websocket: WebSocket) -> None:
        # The connection ended: close its socket now, or once its peer's FIN came.
        if websocket._clean_end and websocket not in self._draining:
            self._draining[websocket] = time.monotonic() + websocket.close_timeout
            self._watch(websocket)
            self._drain(websocket)
        elif websocket not in self._draining:
            self._close(websocket)

    def _drain(self, websocket: WebSocket) -> None:
        # Read (and forget) what the peer still sends, until its FIN; never blocking.
        sock = websocket._sock
        try:
            while websocket._wait_readable(0):
                if not sock.recv(65536):
                    break
            else:
                return  # more to come: wait for it
        except OSError:
            pass
        self._close(websocket)

    def _close(self, websocket: WebSocket) -> None:
        self._draining.pop(websocket, None)
        self._unwatch(websocket)
        self._watched.discard(websocket)
        websocket._close_descriptor()


def _callback_failed(websocket: _Detachable) -> None:
    logger.exception("Error in the on_message callback of detached %r", websocket)
    websocket.fail(1011, "on_message callback failed")


_reactor: Reactor | None = None
_reactor_lock = threading.Lock()


def get_reactor() -> Reactor:
    """The reactor of this process (made on first use, in the process that uses it)."""
    global _reactor
    import os

    with _reactor_lock:
        if _reactor is None or _reactor_pid != os.getpid():
            _set(Reactor(), os.getpid())
        assert _reactor is not None
        return _reactor


_reactor_pid = 0


def _set(reactor: Reactor, pid: int) -> None:
    global _reactor, _reactor_pid
    _reactor, _reactor_pid = reactor, pid
