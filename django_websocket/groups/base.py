"""What every group backend shares: the sockets of this process that joined groups, and their
outgoing queues.

A backend carries a group message to every process that holds members (the in-memory backend:
only this one; Redis: those subscribed to the group), and each process then hands it to its own members with
:meth:`BaseGroupBackend.deliver`. Delivery never blocks the sender: each member socket has a
bounded :class:`Outbox` emptied by a sender thread of its own (a greenlet under gevent's
monkey-patching), which writes through the socket's thread-safe ``send``. A socket whose outbox
overflows cannot keep up; it is closed with 1008 instead of letting memory grow.
"""

import collections
import logging
import os
import threading
import time
from typing import Any, NamedTuple

from ..exceptions import ConnectionClosed, WebSocketError
from ..frames import CloseCode

__all__ = ["BaseGroupBackend", "BackendUnavailable", "Member", "Outbox", "validate_group"]

logger = logging.getLogger("django_websocket.groups")

#: Longest group name accepted, in characters (names travel with every message on Redis).
MAX_GROUP_NAME = 200


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


def validate_group(group):
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

    def __init__(self, websocket, limit, on_done):
        self.websocket = websocket
        self.limit = limit
        self.groups = set()  # guarded by the backend's lock
        self._on_done = on_done  # called once the outbox is finished, to drop the membership
        self._queue = collections.deque()
        self._ready = threading.Condition(threading.Lock())
        self._finished = False
        self._thread = threading.Thread(
            target=self._run, name=f"websocket-group-sender-{websocket.id[:8]}", daemon=True
        )
        self._thread.start()

    def put(self, message):
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

    def finish(self):
        """Stop sending (the socket closed or was discarded); queued messages are dropped."""
        with self._ready:
            self._finished = True
            self._queue.clear()
            self._ready.notify()
        # Let the woken sender end now. When one thread finishes many outboxes in a row (a
        # shutdown closing every socket from one thread), the senders it woke would otherwise
        # all wait for the GIL at once and slow that thread down several times over.
        time.sleep(0)

    def __len__(self):
        return len(self._queue)

    def _fail(self, reason):
        try:
            self.websocket.fail(CloseCode.POLICY_VIOLATION, reason)
        except Exception:  # the connection may already be gone in any way: nothing left to do
            logger.debug("Failing slow WebSocket %s", self.websocket.id, exc_info=True)

    def _run(self):
        websocket = self.websocket
        # The thread-safe send of an async connection (whose send() is a coroutine).
        send = getattr(websocket, "_send_threadsafe", None) or websocket.send
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

    def __init__(self):
        self.outboxes = {}
        self.snapshot = ()


class BaseGroupBackend:
    """Membership of this process's sockets and local delivery; subclasses implement :meth:`send`.

    ``config`` is the ``WEBSOCKET_GROUPS`` setting merged with the defaults.
    """

    def __init__(self, config):
        self.config = config
        self.pid = os.getpid()
        self._lock = threading.Lock()
        self._groups = {}  # group -> _Members, while the group has members here
        self._outboxes = {}  # websocket -> Outbox
        # group -> {socket id: Member}, beside _groups: who is in each group (presence).
        self._present = {}

    # --- membership (called through request.websocket.join / leave) -------------------------

    def join(self, group, websocket, info=None, user_id=None):
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
            if first:
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

    def leave(self, group, websocket):
        """Take ``websocket`` out of ``group``; returns once the backend took note (bounded)."""
        with self._lock:
            outbox = self._outboxes.get(websocket)
            if outbox is None or group not in outbox.groups:
                return
            outbox.groups.discard(group)
            ticket = self._remove(group, outbox)
        self._settle(None, ticket)

    def discard(self, websocket):
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

    def _remove(self, group, outbox):
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

    def _member_joined(self, group, member, first):
        """``member`` joined ``group`` (or changed its info); ``first``: the group's first
        member in this process."""
        return None

    def _member_left(self, group, member_id, last):
        """The socket ``member_id`` left ``group``; ``last``: no member of it is left here."""
        return None

    def _settle(self, group, ticket):
        """After a join (``group``) or a leave (``None``) of the calling thread: wait until the
        backend has acted on ``ticket``, within its bounds. In memory: nothing to wait for."""

    def groups_of(self, websocket):
        with self._lock:
            outbox = self._outboxes.get(websocket)
            return frozenset(outbox.groups) if outbox is not None else frozenset()

    def local_members(self, group):
        """How many sockets of this process are in ``group``."""
        members = self._groups.get(group)
        return len(members.outboxes) if members is not None else 0

    def count(self, group):
        """How many sockets are in ``group``, in every process the backend reaches (in memory:
        this one)."""
        present = self._present.get(group)
        return len(present) if present is not None else 0

    def members(self, group):
        """The :class:`Member` of each socket in ``group``, in every process the backend
        reaches (in memory: this one), in the order they joined."""
        with self._lock:
            present = self._present.get(group)
            return list(present.values()) if present is not None else []

    def local_presence(self):
        """``{group: [Member, ...]}`` of this process: a copy, taken at once."""
        with self._lock:
            return {group: list(present.values()) for group, present in self._present.items()}

    # --- sending ------------------------------------------------------------------------------

    def send(self, group, message, exclude=frozenset()):
        """Send ``message`` (str or bytes) to every member of ``group``, in any process the
        backend reaches, except the sockets whose ids are in ``exclude``. Never blocks on a
        client; raises :class:`BackendUnavailable` when the message cannot be carried."""
        raise NotImplementedError

    def deliver(self, group, message, exclude=frozenset()):
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

    def close(self):
        """Drop every membership and stop the backend's threads (settings changed, tests)."""
        with self._lock:
            outboxes = list(self._outboxes.values())
            self._outboxes.clear()
            self._groups.clear()
            self._present.clear()
        for outbox in outboxes:
            outbox.finish()
