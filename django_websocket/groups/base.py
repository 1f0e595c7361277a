"""What every group backend shares: the sockets of this process that joined groups, their
outgoing queues, and what happens to the sockets that cannot keep up.

A backend carries a group message to every process that holds members (the in-memory backend:
only this one; Redis: those subscribed to the group), and each process then hands it to its own members with
:meth:`BaseGroupBackend.deliver`. Delivery never blocks the sender: it writes each member's frame
at once when the socket takes it without waiting and nothing is queued before it (the usual
case: no thread switch, no thread per member). A member that is behind (its socket's buffers are
full, or another thread is writing to it) gets a bounded :class:`Outbox` queue and, while it has
messages waiting, a sender thread of its own (a greenlet under gevent's monkey-patching) that
writes them through the socket's thread-safe ``send`` and ends once it caught up. What happens
when that queue is full is the group's *slow-consumer policy*: close the socket with 1008 (the
default), drop the oldest queued message, or drop the new one.
"""

from __future__ import annotations

import collections
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Container
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, TypeAlias, cast

from ..exceptions import ConnectionClosed, WebSocketError
from ..frames import CloseCode
from ..websocket import CLOSED as _CLOSED_STATE

if TYPE_CHECKING:
    from typing_extensions import Self

    from ..websocket import WebSocket

__all__ = [
    "BaseGroupBackend",
    "BackendUnavailable",
    "GroupMessage",
    "GroupSocket",
    "Member",
    "Outbox",
    "Policy",
    "SLOW_CONSUMER_POLICIES",
    "configure",
    "validate_group",
]

logger = logging.getLogger("django_websocket.groups")

#: Longest group name accepted, in characters (names travel with every message on Redis).
MAX_GROUP_NAME = 200

#: The slow-consumer policies: what a member's full queue does with one more message of a group.
CLOSE, DROP_OLDEST, DROP_NEW = "close", "drop_oldest", "drop_new"
SLOW_CONSUMER_POLICIES = (CLOSE, DROP_OLDEST, DROP_NEW)

# What Outbox.put did with a message (indexes of the tally in BaseGroupBackend.deliver).
SENT, QUEUED, DROPPED_OLDEST, DROPPED_NEW, CLOSED, REFUSED = range(6)

# How an Outbox hands messages to its connection.
# A connection of this app (a WebSocket, or either ASGI connection of django_websocket.events):
# _send_now() at once when nothing waits, a sender thread when behind.
_DIRECT = 0
_THREAD = 1  # anything else: always through a sender thread


class GroupSocket(Protocol):
    """What a backend needs of a connection in groups: :class:`~django_websocket.websocket.WebSocket`
    with :class:`~django_websocket.groups.GroupsMixin` on the WSGI servers, the connections of
    :mod:`django_websocket.events` on an ASGI server.

    ``send`` is the connection's own: a blocking call, or a coroutine function (an ``async def``
    view's connection, whose ``_send_threadsafe`` the backend calls instead, see ``_mode_of``).
    """

    @property
    def id(self) -> str: ...

    @property
    def closed(self) -> bool: ...

    @property
    def close_code(self) -> int | None: ...

    @property
    def close_reason(self) -> str: ...

    def send(self, message: str | bytes, /) -> object: ...

    def fail(self, code: int, reason: str = "") -> None: ...

    def add_close_callback(self, callback: Callable[[Self], object]) -> None: ...


#: What a group message is once it reaches a backend (groups.send copies other buffers to bytes).
GroupMessage: TypeAlias = str | bytes


class BackendUnavailable(WebSocketError):
    """The group backend cannot carry a message now (for example, Redis is down).

    Raised by :func:`django_websocket.groups.send`; nothing was sent to anyone.
    """


class Member(NamedTuple):
    """A socket in a group, as :func:`~django_websocket.groups.members` tells it.

    ``id`` is the socket's :attr:`~django_websocket.groups.GroupsMixin.id`; ``user_id`` the
    primary key of its request's user (``request.user.pk``, a ``str`` unless it is an ``int``)
    when the user was authenticated at join time, else ``None``; ``info`` what the view gave
    ``join(group, info=...)`` (JSON data: as JSON gives it back); ``joined_at`` when it joined
    (``time.time()`` of the joining process).
    """

    id: str
    user_id: Any
    info: Any
    joined_at: float


def validate_group(group: object) -> str:
    """``group`` if it is a valid group name; else TypeError or ValueError, saying why."""
    if not isinstance(group, str):
        raise TypeError(f"a group name must be a str, not {type(group).__name__}")
    if not 0 < len(group) <= MAX_GROUP_NAME:
        raise ValueError(f"a group name must have 1 to {MAX_GROUP_NAME} characters, not {len(group)}")
    return group


class Policy:
    """How one group treats a member that cannot keep up: ``slow_consumer`` (one of
    :data:`SLOW_CONSUMER_POLICIES`) once ``queue_size`` of the group's messages wait for it."""

    __slots__ = ("slow_consumer", "queue_size")

    def __init__(self, slow_consumer: str = CLOSE, queue_size: int = 1000) -> None:
        if slow_consumer not in SLOW_CONSUMER_POLICIES:
            raise ValueError(
                f"the slow-consumer policy is one of {', '.join(map(repr, SLOW_CONSUMER_POLICIES))}, "
                f"not {slow_consumer!r}"
            )
        if not isinstance(queue_size, int) or isinstance(queue_size, bool) or queue_size < 1:
            raise ValueError(f"a group's queue size is an int of at least 1, not {queue_size!r}")
        self.slow_consumer = slow_consumer
        self.queue_size = queue_size

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Policy) and (self.slow_consumer, self.queue_size) == (
            other.slow_consumer,
            other.queue_size,
        )

    def __hash__(self) -> int:
        return hash((self.slow_consumer, self.queue_size))

    def __repr__(self) -> str:
        return f"Policy({self.slow_consumer!r}, queue_size={self.queue_size})"


# --- per-group configuration (groups.configure) ---------------------------------------------------

# Process-wide, so that it outlives the backend (rebuilt when WEBSOCKET_GROUPS changes): a group
# name, or a prefix ending in "*", -> (slow_consumer or None, queue_size or None), None meaning
# the WEBSOCKET_GROUPS default. Replaced whole on each change: readers never take a lock.
_configured: dict[str, tuple[str | None, int | None]] = {}
_prefixes: tuple[tuple[str, tuple[str | None, int | None]], ...] = ()  # longest prefix first
_configure_lock = threading.Lock()


def configure(group: str, *, slow_consumer: str | None = None, queue_size: int | None = None) -> None:
    """See :func:`django_websocket.groups.configure`."""
    global _configured, _prefixes
    if not isinstance(group, str):
        raise TypeError(f"a group name must be a str, not {type(group).__name__}")
    prefix = group.endswith("*")
    if prefix:
        if len(group) - 1 > MAX_GROUP_NAME:
            raise ValueError(f"a group prefix has at most {MAX_GROUP_NAME} characters")
    else:
        validate_group(group)
    # Checked now, against placeholder defaults: a mistake fails here, not at the first delivery.
    Policy(slow_consumer or CLOSE, 1 if queue_size is None else queue_size)
    with _configure_lock:
        configured = dict(_configured)
        if slow_consumer is None and queue_size is None:
            configured.pop(group, None)
        else:
            configured[group] = (slow_consumer, queue_size)
        prefixes = [(name[:-1], options) for name, options in configured.items() if name.endswith("*")]
        prefixes.sort(key=lambda item: len(item[0]), reverse=True)
        _configured, _prefixes = configured, tuple(prefixes)


def _options_of(group: str) -> tuple[str | None, int | None] | None:
    # The configured (slow_consumer, queue_size) of a group, or None.
    configured = _configured
    if not configured:
        return None
    options = configured.get(group)
    if options is None:
        for prefix, candidate in _prefixes:
            if group.startswith(prefix):
                return candidate
    return options


# --- counters --------------------------------------------------------------------------------------


class _Counters:
    """What happened to one group's messages in this process (or, for the totals, to all)."""

    __slots__ = (
        "delivered", "dropped_oldest", "dropped_new", "closed_slow", "totals", "lock", "logged_at", "unlogged",
        "empty_since",
    )  # fmt: skip

    def __init__(self, lock: threading.Lock, totals: _Counters | None = None) -> None:
        self.delivered = self.dropped_oldest = self.dropped_new = self.closed_slow = 0
        self.totals = totals  # None: these are the totals
        self.lock = lock  # the backend's: counters of several groups change together
        # time.monotonic() of the last log line about this group's drops
        self.logged_at: float | None = None
        self.unlogged: list[int] | None = None  # [dropped_oldest, dropped_new, closed_slow] since that line
        # time.monotonic() the group was first seen without members here
        self.empty_since: float | None = None

    def count_delivered(self) -> None:
        # A sender thread wrote one queued message (of a group: its counters have totals).
        with self.lock:
            self.delivered += 1
            cast(_Counters, self.totals).delivered += 1

    def as_dict(self) -> dict[str, int]:
        return {
            "delivered": self.delivered,
            "dropped_oldest": self.dropped_oldest,
            "dropped_new": self.dropped_new,
            "closed_slow": self.closed_slow,
        }


# --- one member's queue ---------------------------------------------------------------------------


class _Pending:
    # One group's messages waiting in one outbox, as (sequence number, message).
    __slots__ = ("messages", "counters")

    def __init__(self, counters: _Counters | None) -> None:
        self.messages: collections.deque[tuple[int, GroupMessage]] = collections.deque()
        self.counters = counters


def _head_seq(item: tuple[str | None, _Pending]) -> int:
    return item[1].messages[0][0]


def _mode_of(websocket: GroupSocket) -> int:
    return _DIRECT if hasattr(websocket, "_send_now") else _THREAD


class Outbox:
    """The group messages waiting to go out on one socket.

    :meth:`put` never blocks. When nothing waits and the socket takes the frame at once, the
    message is written there and then; else it is queued, and a sender thread (started then, and
    ending once the queue is empty) writes the queue in order. Each group's messages wait in a
    queue of their own, bounded by the group's :class:`Policy`, so that a socket in several groups
    keeps each group's policy; one sequence number across them keeps the order they came in.
    """

    __slots__ = (
        "websocket", "limit", "groups", "_on_done", "_lock", "_queues", "_queued", "_seq", "_sender",
        "_finished", "_mode", "_ready",
    )  # fmt: skip

    #: Seconds a sender thread of a connection without direct writes (an ASGI connection of a
    #: ``def`` view, a TLS socket) waits for more before it ends: such a connection gets every
    #: message through its thread.
    linger = 5.0

    def __init__(self, websocket: GroupSocket, limit: int, on_done: Callable[[GroupSocket], object]) -> None:
        self.websocket = websocket
        self.limit = limit  # the queue size of put() calls that name no policy
        self.groups: set[str] = set()  # guarded by the backend's lock
        self._on_done = on_done  # called once the outbox is finished, to drop the membership
        self._lock = threading.Lock()
        # group -> _Pending, while messages wait (None: nothing waits)
        self._queues: dict[str | None, _Pending] | None = None
        self._queued = 0
        self._seq = 0
        # Whether a sender thread runs (the socket is behind): a message then waits its turn
        # in the queue, so that none overtakes another.
        self._sender = False
        self._finished = False
        self._mode = _mode_of(websocket)
        # the lingering sender's Condition (_THREAD mode), made with it
        self._ready: threading.Condition | None = None

    def put(
        self,
        message: GroupMessage,
        group: str | None = None,
        policy: Policy | None = None,
        counters: _Counters | None = None,
    ) -> int:
        """Hand ``message`` (of ``group``) to the socket, or queue it; never blocks. Returns what
        was done: ``SENT``, ``QUEUED``, ``DROPPED_OLDEST`` (queued, the group's oldest queued
        message dropped), ``DROPPED_NEW``, ``CLOSED`` (the socket was too slow: it is failed
        with 1008), or ``REFUSED`` (the outbox is finished)."""
        websocket = self.websocket
        if self._mode == _DIRECT and not self._sender and not self._finished:
            # Without the outbox's lock: it is the socket's write lock, taken or not by
            # _send_now, that keeps the order. A message of this thread queued earlier keeps
            # the sender running until it is written, so this one cannot overtake it; two
            # deliveries from two threads at once have no order between them anyway, and
            # whichever _send_now finds the lock taken, or _out not empty, queues below.
            direct = cast("WebSocket", websocket)  # _DIRECT: a WebSocket (see _mode_of)
            if direct._send_now(message):
                if direct._out:
                    self._follow_up()  # the socket took part of the frame: the rest is ours
                return SENT
        if policy is None:
            policy = Policy(CLOSE, self.limit)
        with self._lock:
            if self._finished:
                return REFUSED
            result = self._queue_locked(message, group, policy, counters)
            start = False
            if result != CLOSED and result != DROPPED_NEW:
                if not self._sender:
                    self._sender = start = True
                elif self._ready is not None:
                    self._ready.notify()
        if result == CLOSED:
            self._too_slow()
        elif start:
            self._start_sender()
        return result

    def _follow_up(self) -> None:
        # The rest of a frame _send_now wrote in part waits in _out: a sender gets it written
        # (a view that only reads never writes), and whatever comes meanwhile queues behind it.
        with self._lock:
            if self._finished or self._sender:
                return
            self._sender = True
        self._start_sender()

    def _queue_locked(
        self, message: GroupMessage, group: str | None, policy: Policy, counters: _Counters | None
    ) -> int:
        queues = self._queues
        if queues is None:
            queues = self._queues = {}
        pending = queues.get(group)
        if pending is None:
            pending = queues[group] = _Pending(counters)
        messages = pending.messages
        result = QUEUED
        if len(messages) >= policy.queue_size:
            kind = policy.slow_consumer
            if kind == DROP_NEW:
                return DROPPED_NEW
            if kind == DROP_OLDEST:
                messages.popleft()
                self._queued -= 1
                result = DROPPED_OLDEST
            else:
                self._finish_locked()
                return CLOSED
        messages.append((self._seq, message))
        self._seq += 1
        self._queued += 1
        return result

    def _too_slow(self) -> None:
        websocket = self.websocket
        logger.debug("WebSocket %s is too slow for its group messages: closing it with 1008", websocket.id)
        self._on_done(websocket)
        self._fail("too slow for group messages")

    def _start_sender(self) -> None:
        # Called by whoever set self._sender, under the lock.
        try:
            threading.Thread(
                target=self._run, name=f"websocket-group-sender-{self.websocket.id[:8]}", daemon=True
            ).start()
        except RuntimeError:  # no thread to be had (a process limit): this socket cannot be served
            logger.exception("No sender thread for WebSocket %s: closing it", self.websocket.id)
            with self._lock:
                self._finish_locked()
            self._too_slow()

    def finish(self) -> None:
        """Stop sending (the socket closed or was discarded); queued messages are dropped."""
        with self._lock:
            woke = self._finish_locked()
        if woke:
            # Let the woken sender end now. When one thread finishes many outboxes in a row (a
            # shutdown closing every socket from one thread), the senders it woke would
            # otherwise all wait for the GIL at once and slow that thread down several times.
            time.sleep(0)

    def _finish_locked(self) -> bool:
        sender, self._sender = self._sender, False
        self._finished = True
        self._queues = None
        self._queued = 0
        if self._ready is not None and sender:
            self._ready.notify()
            return True
        return False

    def __len__(self) -> int:
        return self._queued

    def _fail(self, reason: str) -> None:
        try:
            self.websocket.fail(CloseCode.POLICY_VIOLATION, reason)
        except Exception:  # the connection may already be gone in any way: nothing left to do
            logger.debug("Failing slow WebSocket %s", self.websocket.id, exc_info=True)

    def _pop_locked(self) -> tuple[GroupMessage, _Counters | None]:
        # Called while messages wait: _queues is a dict then.
        queues = cast("dict[str | None, _Pending]", self._queues)
        if len(queues) == 1:
            group, pending = next(iter(queues.items()))
        else:
            group, pending = min(queues.items(), key=_head_seq)
        _, message = pending.messages.popleft()
        self._queued -= 1
        if not pending.messages:
            del queues[group]
            if not queues:
                self._queues = None
        return message, pending.counters

    def _run(self) -> None:
        websocket = self.websocket
        # Used only when direct, as a WebSocket (see _mode_of).
        connection = cast("WebSocket", websocket)
        direct = self._mode == _DIRECT
        # A connection that takes no direct write (TLS: _send_now declines) gets every message
        # through this thread: it lingers, as for an ASGI connection, rather than start anew
        # for each message.
        linger = not direct or type(connection._sock) is not socket.socket
        # The thread-safe send of an async connection (whose send() is a coroutine).
        send: Callable[[GroupMessage], object] = getattr(websocket, "_send_threadsafe", None) or websocket.send
        while True:
            if direct and connection._out:
                # The rest of a frame the socket took in part (and what queued behind it).
                connection._flush(blocking=True)
            with self._lock:
                if self._finished:
                    return
                if self._queues is None and linger:
                    # Linger: a connection without direct writes gets every message from here.
                    if self._ready is None:
                        self._ready = threading.Condition(self._lock)
                    self._ready.wait(self.linger)
                    if self._finished:
                        return
                if self._queues is None:
                    if direct and connection._out and connection._state is not _CLOSED_STATE:
                        continue  # queued while we looked: write it before ending
                    # Caught up: the next message goes directly again.
                    self._sender = False
                    return
                message, counters = self._pop_locked()
            try:
                send(message)
            except ConnectionClosed:
                break
            except Exception:
                logger.exception("Sending a group message to WebSocket %s failed", websocket.id)
                break
            if counters is not None:
                counters.count_delivered()
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
        self._outboxes: dict[GroupSocket, Outbox] = {}  # websocket -> Outbox
        # group -> {socket id: Member}, beside _groups: who is in each group (presence).
        self._present: dict[str, dict[str, Member]] = {}
        self._init_delivery(config)

    # --- membership (called through request.websocket.join / leave) -------------------------

    def join(self, group: str, websocket: GroupSocket, info: Any = None, user_id: Any = None) -> None:
        """Put ``websocket`` in ``group``; again, it only replaces the member's ``info``.

        ``info`` is JSON data (as JSON gives it back: the caller copies it so), ``user_id``
        the primary key of the socket's user, or None. Returns once the backend carries the
        group's messages to this process, within the backend's bounds (see :meth:`_settle`).
        """
        validate_group(group)
        ticket = None
        with self._lock:
            outbox = self._outboxes.get(websocket)
            first = outbox is None
            if outbox is None:
                # Read at call time, like every setting.
                outbox = Outbox(websocket, self.config["QUEUE_SIZE"], self.discard)
                self._outboxes[websocket] = outbox
            present = self._present.get(group)
            previous = present.get(websocket.id) if present is not None else None
            if group not in outbox.groups:
                outbox.groups.add(group)
                members = self._groups.get(group)
                if members is None:
                    members = self._groups[group] = _Members()
                members.outboxes[outbox] = None
                members.snapshot = None
            if previous is None or previous.info != info or previous.user_id != user_id:
                if present is None:
                    present = self._present[group] = {}
                joined_at = previous.joined_at if previous is not None else time.time()
                member = present[websocket.id] = Member(websocket.id, user_id, info, joined_at)
                ticket = self._member_joined(group, member, len(present) == 1 and previous is None)
        if first:
            websocket.add_close_callback(self.discard)
        if websocket.closed:
            # It closed meanwhile: its close callbacks may already have run.
            self.discard(websocket)
            raise ConnectionClosed(websocket.close_code, websocket.close_reason)
        self._settle(group, ticket)

    def leave(self, group: str, websocket: GroupSocket) -> None:
        """Take ``websocket`` out of ``group``; returns once the backend took note (bounded)."""
        with self._lock:
            outbox = self._outboxes.get(websocket)
            if outbox is None or group not in outbox.groups:
                return
            outbox.groups.discard(group)
            ticket = self._remove(group, outbox)
        self._settle(None, ticket)

    def discard(self, websocket: GroupSocket) -> None:
        """End every membership of ``websocket`` and stop its sender (it closed). Never waits
        for the backend: it runs in whatever thread saw the connection end."""
        with self._lock:
            outbox = self._outboxes.pop(websocket, None)
            if outbox is None:
                return
            for group in outbox.groups:
                self._remove(group, outbox)
            outbox.groups = set()
        outbox.finish()

    def _remove(self, group: str, outbox: Outbox) -> int | None:
        members = self._groups.get(group)
        if members is None:
            return None
        members.outboxes.pop(outbox, None)
        members.snapshot = None
        if not members.outboxes:
            del self._groups[group]
        present = self._present.get(group)
        if present is None or present.pop(outbox.websocket.id, None) is None:
            return None
        if not present:
            del self._present[group]
        return self._member_left(group, outbox.websocket.id, not present)

    # Hooks of the backends that tell others about this process's members (Redis). Both run
    # under the backend's lock, in the order of the changes, so they must only take note (no
    # I/O); what they return is handed to _settle once the lock is released.

    def _member_joined(self, group: str, member: Member, first: bool) -> int | None:
        """``member`` joined ``group`` (or changed its info); ``first``: the group's first
        member in this process."""
        return None

    def _member_left(self, group: str, member_id: str, last: bool) -> int | None:
        """The socket ``member_id`` left ``group``; ``last``: no member of it is left here."""
        return None

    def _settle(self, group: str | None, ticket: int | None) -> None:
        """After a join (``group``) or a leave (``None``) of the calling thread: wait until the
        backend has acted on ``ticket``, within its bounds. In memory: nothing to wait for."""

    def groups_of(self, websocket: GroupSocket) -> frozenset[str]:
        with self._lock:
            outbox = self._outboxes.get(websocket)
            return frozenset(outbox.groups) if outbox is not None else frozenset()

    def local_members(self, group: str) -> int:
        """How many sockets of this process are in ``group``."""
        members = self._groups.get(group)
        return len(members.outboxes) if members is not None else 0

    def count(self, group: str) -> int:
        """How many sockets are in ``group``, in every process the backend reaches (in memory:
        this one)."""
        present = self._present.get(group)
        return len(present) if present is not None else 0

    def members(self, group: str) -> list[Member]:
        """The :class:`Member` of each socket in ``group``, in every process the backend
        reaches (in memory: this one), in the order they joined."""
        with self._lock:
            present = self._present.get(group)
            return list(present.values()) if present is not None else []

    def local_presence(self) -> dict[str, list[Member]]:
        """``{group: [Member, ...]}`` of this process: a copy, taken at once."""
        with self._lock:
            return {group: list(present.values()) for group, present in self._present.items()}

    # --- sending ------------------------------------------------------------------------------

    def send(self, group: str, message: GroupMessage, exclude: frozenset[str] = frozenset()) -> None:
        """Send ``message`` (str or bytes) to every member of ``group``, in any process the
        backend reaches, except the sockets whose ids are in ``exclude``. Never blocks on a
        client; raises :class:`BackendUnavailable` when the message cannot be carried."""
        raise NotImplementedError

    def deliver(self, group: str, message: GroupMessage, exclude: frozenset[str] = frozenset()) -> int:
        """Hand ``message`` to this process's members of ``group``, or queue it for those that
        are behind; returns how many got it or have it queued."""
        members = self._groups.get(group)
        if members is None:
            return 0
        snapshot = members.snapshot
        if snapshot is None:
            with self._lock:
                snapshot = members.snapshot
                if snapshot is None:
                    snapshot = members.snapshot = tuple(members.outboxes)
        policy = self.policy(group)
        counters = self._group_counters_of(group)
        tally = [0, 0, 0, 0, 0, 0]  # by what Outbox.put did: SENT, QUEUED, DROPPED_OLDEST, ...
        if exclude:
            for outbox in snapshot:
                if outbox.websocket.id not in exclude:
                    tally[outbox.put(message, group, policy, counters)] += 1
        else:
            for outbox in snapshot:
                tally[outbox.put(message, group, policy, counters)] += 1
        self._tally(group, counters, policy, tally)
        return tally[SENT] + tally[QUEUED] + tally[DROPPED_OLDEST]

    # --- slow consumers and counters ----------------------------------------------------------

    #: Seconds between two log lines about one group's slow consumers; the events between are
    #: summed up in the next line, and every one is counted in :meth:`stats`.
    slow_log_interval = 10.0

    def _init_delivery(self, config: dict[str, Any]) -> None:
        # Read once per backend: a change of WEBSOCKET_GROUPS builds a new backend.
        try:
            self._default_policy = Policy(config.get("SLOW_CONSUMER", CLOSE), config["QUEUE_SIZE"])
        except ValueError as exc:
            from django.core.exceptions import ImproperlyConfigured

            raise ImproperlyConfigured(f"WEBSOCKET_GROUPS: {exc}") from exc
        # configured options -> Policy, with this backend's defaults
        self._policies: dict[tuple[str | None, int | None], Policy] = {}
        self._delivery_lock = threading.Lock()
        self._delivery_totals = _Counters(self._delivery_lock)
        # group -> _Counters; see stats() for when an entry is forgotten
        self._group_counters: dict[str, _Counters] = {}
        self._group_counters_bound = 1024

    def policy(self, group: str) -> Policy:
        """The :class:`Policy` of ``group``: its :func:`~django_websocket.groups.configure`
        options, else those of ``WEBSOCKET_GROUPS``."""
        options = _options_of(group)
        if options is None:
            return self._default_policy
        policy = self._policies.get(options)
        if policy is None:
            slow_consumer, queue_size = options
            default = self._default_policy
            policy = Policy(slow_consumer or default.slow_consumer, queue_size or default.queue_size)
            if len(self._policies) > 1000:  # configure() called in a loop: keep the cache small
                self._policies.clear()
            self._policies[options] = policy
        return policy

    def _group_counters_of(self, group: str) -> _Counters:
        counters = self._group_counters.get(group)
        if counters is None:
            with self._delivery_lock:
                counters = self._group_counters.get(group)
                if counters is None:
                    if len(self._group_counters) >= self._group_counters_bound:
                        self._forget_counters_locked()
                    counters = self._group_counters[group] = _Counters(self._delivery_lock, self._delivery_totals)
        return counters

    #: Seconds the counters of a group are kept after it was first seen without members here.
    counters_kept_for = 60.0

    def _forget_counters_locked(self, members: Container[str] | None = None) -> None:
        # Forget the counters of the groups that have had no members here for a while (their
        # counts stay in the totals); the bound doubles past what is left, so that this costs
        # O(1) per group over time.
        members = self._groups if members is None else members
        now = time.monotonic()
        kept = {}
        for group, counters in self._group_counters.items():
            if group in members:
                counters.empty_since = None
            elif counters.empty_since is None:
                counters.empty_since = now
            elif now - counters.empty_since > self.counters_kept_for:
                continue
            kept[group] = counters
        self._group_counters = kept
        self._group_counters_bound = max(1024, 2 * len(kept))

    def _tally(self, group: str, counters: _Counters, policy: Policy, tally: list[int]) -> None:
        sent, _, dropped_oldest, dropped_new, closed, _ = tally  # in the order of SENT, QUEUED, ...
        slow = dropped_oldest or dropped_new or closed
        if not sent and not slow:
            return
        report = None
        with self._delivery_lock:
            totals = self._delivery_totals
            counters.delivered += sent
            totals.delivered += sent
            if not slow:
                return
            counters.dropped_oldest += dropped_oldest
            counters.dropped_new += dropped_new
            counters.closed_slow += closed
            totals.dropped_oldest += dropped_oldest
            totals.dropped_new += dropped_new
            totals.closed_slow += closed
            unlogged = counters.unlogged
            if unlogged is None:
                unlogged = counters.unlogged = [0, 0, 0]
            unlogged[0] += dropped_oldest
            unlogged[1] += dropped_new
            unlogged[2] += closed
            now = time.monotonic()
            if counters.logged_at is None or now - counters.logged_at >= self.slow_log_interval:
                report, counters.unlogged = unlogged, None
                since, counters.logged_at = counters.logged_at, now
        if report is not None:
            self._log_slow(group, policy, report, None if since is None else now - since)

    def _log_slow(self, group: str, policy: Policy, report: list[int], since: float | None) -> None:
        dropped_oldest, dropped_new, closed = report
        what = []
        if closed:
            what.append(f"closed {closed} socket{'s' * (closed != 1)} with 1008")
        if dropped_oldest:
            what.append(f"dropped the oldest queued message {dropped_oldest} time{'s' * (dropped_oldest != 1)}")
        if dropped_new:
            what.append(f"dropped {dropped_new} new message{'s' * (dropped_new != 1)}")
        logger.warning(
            "Group %r: sockets too slow for its messages (more than %d queued, policy %r): %s%s; "
            "counted in groups.stats()",
            group,
            policy.queue_size,
            policy.slow_consumer,
            ", ".join(what),
            "" if since is None else f" in the last {since:.0f}s",
        )

    def stats(self) -> dict[str, Any]:
        """Counters of this process's deliveries: see :func:`django_websocket.groups.stats`."""
        with self._lock:
            outboxes = list(self._outboxes.values())
            memberships = {group: tuple(m.outboxes) for group, m in self._groups.items()}
        queued: dict[str | None, int] = {}  # group -> messages waiting
        behind: set[Outbox] = set()
        for outbox in outboxes:
            with outbox._lock:
                queues = outbox._queues
                if queues is not None:
                    for group, pending in queues.items():
                        queued[group] = queued.get(group, 0) + len(pending.messages)
            if outbox._sender or queues is not None:
                behind.add(outbox)
        with self._delivery_lock:
            self._forget_counters_locked(memberships)
            groups: dict[str, dict[str, int]] = {
                group: counters.as_dict() for group, counters in self._group_counters.items()
            }
            total = self._delivery_totals.as_dict()
        for group in memberships:
            groups.setdefault(group, {"delivered": 0, "dropped_oldest": 0, "dropped_new": 0, "closed_slow": 0})
        for group, entry in groups.items():
            members = memberships.get(group, ())
            entry["members"] = len(members)
            entry["queued"] = queued.get(group, 0)
            entry["behind"] = sum(outbox in behind for outbox in members)
        total.update(members=len(outboxes), queued=sum(queued.values()), behind=len(behind))
        return {"total": total, "groups": groups}

    # --- life cycle ---------------------------------------------------------------------------

    def close(self) -> None:
        """Drop every membership and stop the backend's threads (settings changed, tests)."""
        with self._lock:
            outboxes = list(self._outboxes.values())
            self._outboxes.clear()
            self._groups.clear()
            self._present.clear()
        for outbox in outboxes:
            outbox.finish()
