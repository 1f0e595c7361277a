"""What every group backend shares: the sockets of this process that joined groups, and their
outgoing queues.

A backend carries a group message to every process that may hold members (the in-memory backend:
only this one; Redis: all of them), and each process then hands it to its own members with
:meth:`BaseGroupBackend.deliver`. Delivery never blocks the sender: each member socket has a
bounded :class:`Outbox` emptied by a sender thread of its own (a greenlet under gevent's
monkey-patching), which writes through the socket's thread-safe ``send``. A socket whose outbox
overflows cannot keep up; it is closed with 1008 instead of letting memory grow.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from ..exceptions import ConnectionClosed, WebSocketError
from ..frames import CloseCode

__all__ = ["BaseGroupBackend", "BackendUnavailable", "Outbox", "validate_group", "Member"]

logger = logging.getLogger("django_websocket.groups")

#: Longest group name accepted, in characters (names travel with every message on Redis).
MAX_GROUP_NAME = 200


class BackendUnavailable(WebSocketError):
    """The group backend cannot carry a message now (for example, Redis is down).

    Raised by :func:`django_websocket.groups.send`; nothing was sent to anyone.
    """


class Member(Protocol):
    """What a backend needs of a socket that joins a group (the connections of
    :mod:`django_websocket.groups`: any of them has these). Its thread-safe ``_send_threadsafe``
    (an async connection's) or ``send`` carries the messages."""

    @property
    def id(self) -> str: ...

    @property
    def closed(self) -> bool: ...

    @property
    def close_code(self) -> int | None: ...

    @property
    def close_reason(self) -> str: ...

    def add_close_callback(self, callback: Callable[[Any], object]) -> None: ...

    def fail(self, code: int, reason: str = "") -> None: ...


def validate_group(group: object) -> str:
    if not isinstance(group, str):
        raise TypeError(f"a group name must be a str, not {type(group).__name__}")
    if not 0 < len(group) <= MAX_GROUP_NAME:
        raise ValueError(f"a group name must have 1 to {MAX_GROUP_NAME} characters, not {len(group)}")
    return group


class Outbox:
    """The group messages waiting to go out on one socket, and the thread that sends them.

    ``put`` never blocks: past ``limit`` queued messages the socket is deemed too slow, the
    queue is dropped and the connection failed with 1008 (``fail`` never waits for the socket).
    """

    def __init__(self, websocket: Member, limit: int, on_done: Callable[[Member], object]) -> None:
        self.websocket = websocket
        self.limit = limit
        self.groups: set[str] = set()  # guarded by the backend's lock
        self._on_done = on_done  # called once the outbox is finished, to drop the membership
        self._queue: collections.deque[str | bytes] = collections.deque()
        self._ready = threading.Condition(threading.Lock())
        self._finished = False
        self._thread = threading.Thread(
            target=self._run, name=f"websocket-group-sender-{websocket.id[:8]}", daemon=True
        )
        self._thread.start()

    def put(self, message: str | bytes) -> bool:
        """Queue ``message``; False if the outbox is finished or just overflowed."""
        with self._ready:
            if self._finished:
                return False
            if len(self._queue) < self.limit:
                self._queue.append(message)
                self._ready.notify()
                return True
            self._finished = True
            self._queue.clear()
            self._ready.notify()
        logger.warning(
            "WebSocket %s is too slow for its group messages (%d queued): closing it with 1008",
            self.websocket.id,
            self.limit,
        )
        self._on_done(self.websocket)
        self._fail("too slow for group messages")
        return False

    def finish(self) -> None:
        """Stop sending (the socket closed or was discarded); queued messages are dropped."""
        with self._ready:
            self._finished = True
            self._queue.clear()
            self._ready.notify()
        # Let the woken sender end now. When one thread finishes many outboxes in a row (a
        # shutdown closing every socket from one thread), the senders it woke would otherwise
        # all wait for the GIL at once and slow that thread down several times over.
        time.sleep(0)

    def __len__(self) -> int:
        return len(self._queue)

    def _fail(self, reason: str) -> None:
        try:
            self.websocket.fail(CloseCode.POLICY_VIOLATION, reason)
        except Exception:  # the connection may already be gone in any way: nothing left to do
            logger.debug("Failing slow WebSocket %s", self.websocket.id, exc_info=True)

    def _run(self) -> None:
        websocket = self.websocket
        # The thread-safe send of an async connection (whose send() is a coroutine).
        send: Callable[[str | bytes], object] = (
            getattr(websocket, "_send_threadsafe", None) or websocket.send  # type: ignore[attr-defined]
        )
        while True:
            with self._ready:
                while not self._queue and not self._finished:
                    self._ready.wait()
                if self._finished:
                    return
                message = self._queue.popleft()
            try:
                send(message)
            except ConnectionClosed:
                break
            except Exception:
                logger.exception("Sending a group message to WebSocket %s failed", websocket.id)
                break
        self.finish()
        self._on_done(websocket)


class _Members:
    """The outboxes of one group's members in this process.

    ``outboxes`` is a dict used as an ordered set, so that a join or a leave costs O(1) however
    large the group; it is only ever changed under the backend's lock. Delivery iterates
    ``snapshot``, a tuple of the members taken after the latest change, which no thread mutates:
    a leave only forgets the snapshot (``None``), and the next delivery takes a new one. Taking
    it is O(members), as the delivery it serves is anyway.
    """

    __slots__ = ("outboxes", "snapshot")

    def __init__(self) -> None:
        self.outboxes: dict[Outbox, None] = {}
        self.snapshot: tuple[Outbox, ...] | None = ()


class BaseGroupBackend:
    """Membership of this process's sockets and local delivery; subclasses implement :meth:`send`.

    ``config`` is the ``WEBSOCKET_GROUPS`` setting merged with the defaults.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.pid = os.getpid()
        self._lock = threading.Lock()
        self._groups: dict[str, _Members] = {}  # group -> _Members, while the group has members here
        self._outboxes: dict[Member, Outbox] = {}  # websocket -> Outbox

    # --- membership (called through request.websocket.join / leave) -------------------------

    def join(self, group: str, websocket: Member) -> None:
        validate_group(group)
        with self._lock:
            outbox = self._outboxes.get(websocket)
            first = outbox is None
            if outbox is None:
                # Read at call time, like every setting.
                outbox = Outbox(websocket, self.config["QUEUE_SIZE"], self.discard)
                self._outboxes[websocket] = outbox
            if group not in outbox.groups:
                outbox.groups.add(group)
                members = self._groups.get(group)
                if members is None:
                    members = self._groups[group] = _Members()
                members.outboxes[outbox] = None
                members.snapshot = None
        if first:
            websocket.add_close_callback(self.discard)
        if websocket.closed:
            # It closed meanwhile: its close callbacks may already have run.
            self.discard(websocket)
            raise ConnectionClosed(websocket.close_code, websocket.close_reason)
        self.joined(group)

    def leave(self, group: str, websocket: Member) -> None:
        with self._lock:
            outbox = self._outboxes.get(websocket)
            if outbox is None or group not in outbox.groups:
                return
            outbox.groups.discard(group)
            self._remove(group, outbox)

    def discard(self, websocket: Member) -> None:
        """End every membership of ``websocket`` and stop its sender (it closed)."""
        with self._lock:
            outbox = self._outboxes.pop(websocket, None)
            if outbox is None:
                return
            for group in outbox.groups:
                self._remove(group, outbox)
            outbox.groups = set()
        outbox.finish()

    def _remove(self, group: str, outbox: Outbox) -> None:
        members = self._groups.get(group)
        if members is None:
            return
        members.outboxes.pop(outbox, None)
        members.snapshot = None
        if not members.outboxes:
            del self._groups[group]

    def groups_of(self, websocket: Member) -> frozenset[str]:
        with self._lock:
            outbox = self._outboxes.get(websocket)
            return frozenset(outbox.groups) if outbox is not None else frozenset()

    def local_members(self, group: str) -> int:
        """How many sockets of this process are in ``group``."""
        members = self._groups.get(group)
        return len(members.outboxes) if members is not None else 0

    # --- sending ------------------------------------------------------------------------------

    def send(self, group: str, message: str | bytes, exclude: frozenset[str] = frozenset()) -> None:
        """Send ``message`` (str or bytes) to every member of ``group``, in any process the
        backend reaches, except the sockets whose ids are in ``exclude``. Never blocks on a
        client; raises :class:`BackendUnavailable` when the message cannot be carried."""
        raise NotImplementedError

    def deliver(self, group: str, message: str | bytes, exclude: frozenset[str] = frozenset()) -> int:
        """Queue ``message`` for this process's members of ``group``; returns how many."""
        members = self._groups.get(group)
        if members is None:
            return 0
        snapshot = members.snapshot
        if snapshot is None:
            with self._lock:
                snapshot = members.snapshot
                if snapshot is None:
                    snapshot = members.snapshot = tuple(members.outboxes)
        count = 0
        for outbox in snapshot:
            if exclude and outbox.websocket.id in exclude:
                continue
            if outbox.put(message):
                count += 1
        return count

    # --- life cycle ---------------------------------------------------------------------------

    def joined(self, group: str) -> None:
        """Called after a socket of this process joined ``group`` (the Redis backend starts its
        listener on the first join)."""

    def close(self) -> None:
        """Drop every membership and stop the backend's threads (settings changed, tests)."""
        with self._lock:
            outboxes = list(self._outboxes.values())
            self._outboxes.clear()
            self._groups.clear()
        for outbox in outboxes:
            outbox.finish()
