"""The Redis group backends: group messages between processes and hosts through Redis pub/sub,
on one Redis server (:class:`RedisGroupBackend`) or a Redis Cluster (:class:`RedisClusterGroupBackend`),
and who is in each group (presence).

Publishing: ``groups.send`` publishes on the channel ``PREFIX + group`` (``PUBLISH``; on a cluster
``SPUBLISH``, which Redis routes to the one shard that owns the channel's hash slot).

Subscribing: a process subscribes to the channel of each group it holds members of, and to no
other. Its first socket to join a group makes it subscribe, its last one to leave makes it
unsubscribe: a process receives the messages of its own groups only, and ``PUBSUB NUMSUB
PREFIX+group`` (``PUBSUB SHARDNUMSUB`` on a cluster) counts the processes holding members of the
group. A process keeps one subscriber connection per Redis server (on a cluster: per master that
owns the slot of one of its groups), served by one listener thread that alone reads and writes
it: it hands each message to the process's members, and sends the ``(S)SUBSCRIBE`` and
``(S)UNSUBSCRIBE`` commands that joins and leaves call for, those that came while it was busy
together, in one write. ``join()`` returns once the subscription is in place (bounded).

Presence: each process writes its members of each group in a hash of its own, listed in a set of
the group (both in the group's hash slot, by a hash tag), and keeps a heartbeat key that expires
``PRESENCE_TTL`` seconds after its last refresh. Readers (``groups.count``, ``groups.members``)
skip the processes whose heartbeat expired, and remove what such a process left behind. Joins and
leaves are written by one thread per process, batched and pipelined; messages write nothing.

Pub/sub semantics: a message reaches the processes subscribed at the moment it is published and is
never stored. While a process is disconnected from Redis, the messages meant for its sockets are
lost; the listener reconnects by itself, with backoff, and subscribes again to every group of
the process. A ``send`` while Redis is down raises
:class:`~django_websocket.groups.BackendUnavailable` within the socket timeouts (``OPTIONS``); it
never waits for Redis to come back.
"""

from __future__ import annotations

import atexit
import collections
import json
import logging
import os
import random
import select
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, cast
from urllib.parse import urlsplit, urlunsplit

from django.core.exceptions import ImproperlyConfigured

from .base import BackendUnavailable, BaseGroupBackend, GroupMessage, Member

if TYPE_CHECKING:
    from types import ModuleType

    from redis import Redis
    from redis.backoff import NoBackoff
    from redis.cluster import ClusterNode, RedisCluster
    from redis.connection import ConnectionPool
    from redis.retry import Retry
    from redis.typing import EncodableT, FieldT

    class _Connection(Protocol):
        # What a subscriber uses of a redis-py connection (redis.connection.Connection), whose
        # methods redis-py leaves unannotated. Its replies are RESP2, parsed by redis-py.
        _sock: socket.socket

        def connect(self) -> None: ...

        def disconnect(self) -> None: ...

        def pack_commands(self, commands: Iterable[Sequence[str | bytes]]) -> list[bytes]: ...

        def send_packed_command(self, command: list[bytes]) -> None: ...

        def send_command(self, *args: str | bytes) -> None: ...

        def can_read(self, timeout: float = 0) -> bool: ...

        def read_response(self) -> Any: ...

    #: The client for commands: of one server, or of a cluster.
    _Client = Redis | RedisCluster

    #: A subscribe or unsubscribe command to write: (subscribing, its groups, its arguments).
    _Command = tuple[bool, list[str], tuple[str | bytes, ...]]

__all__ = ["RedisGroupBackend", "RedisClusterGroupBackend"]

logger = logging.getLogger("django_websocket.groups")

_TEXT, _BINARY = b"t", b"b"


def _import_redis() -> tuple[ModuleType, type[Retry], type[NoBackoff]]:
    try:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry
    except ImportError as exc:
        raise ImproperlyConfigured(
            "The Redis group backend needs the redis package: pip install 'django-websocket[redis]'"
        ) from exc
    return redis, Retry, NoBackoff


def encode(message: GroupMessage, exclude: Iterable[str]) -> bytes:
    """A group message as one Redis payload: kind, the excluded socket ids, then the message."""
    if isinstance(message, str):
        kind, payload = _TEXT, message.encode("utf-8")
    else:
        kind, payload = _BINARY, bytes(message)
    # Socket ids are hex strings: neither ',' nor '\n' can occur in them.
    return b"".join((kind, ",".join(sorted(exclude)).encode("ascii"), b"\n", payload))


def decode(data: bytes) -> tuple[GroupMessage, frozenset[str]]:
    """The inverse of :func:`encode`: ``(message, exclude)``."""
    end = data.index(b"\n")
    kind, exclude, payload = data[:1], data[1:end], data[end + 1 :]
    message: GroupMessage
    if kind == _TEXT:
        message = payload.decode("utf-8")
    elif kind == _BINARY:
        message = payload
    else:
        raise ValueError(f"unknown group message kind {kind!r}")
    return message, frozenset(exclude.decode("ascii").split(",")) if exclude else frozenset()


def _redact(url: str) -> str:
    # For log lines and errors: never print a password.
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + netloc))


# --- hash slots ---------------------------------------------------------------------------------


def key_slot(key: bytes) -> int:
    """The cluster hash slot of ``key`` (bytes): CRC16 of its hash tag, or of all of it."""
    from redis.crc import key_slot as crc_key_slot

    return crc_key_slot(key)


def _hashed_part(key: bytes) -> bytes:
    # What Redis hashes: the text between the first "{" and the first "}" after it, when that is
    # not empty; else the whole key.
    start = key.find(b"{")
    if start >= 0:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            return key[start + 1 : end]
    return key


_slot_tags: list[str] | None = None
_slot_tags_lock = threading.Lock()


def slot_tag(channel: bytes) -> str:
    """A text ``T`` such that a key holding ``{T}`` as its first braces lands in the hash slot of
    ``channel`` (bytes): the presence keys of a group live in the slot of its channel."""
    part = _hashed_part(channel)
    if b"}" not in part and b"{" not in part:
        try:
            return part.decode("utf-8")
        except UnicodeDecodeError:
            pass
    # A channel with braces that make no hash tag (or that JSON could not name): a short tag of
    # its own slot, from a table made once (16,384 slots; about 0.1 s, only if ever needed).
    global _slot_tags
    with _slot_tags_lock:
        if _slot_tags is None:
            tags: list[str | None] = [None] * 16384
            missing, n = 16384, 0
            while missing:
                text = format(n, "x")
                slot = key_slot(text.encode())
                if tags[slot] is None:
                    tags[slot] = text
                    missing -= 1
                n += 1
            _slot_tags = cast("list[str]", tags)  # every slot has its tag now
    return _slot_tags[key_slot(channel)]


def _smembers(client: _Client, key: str) -> set[bytes]:
    # SMEMBERS: bytes, since every client is made with decode_responses=False.
    return cast("set[bytes]", client.smembers(key))


# --- one subscriber connection ------------------------------------------------------------------


class _PingTimeout(Exception):
    """The listener's own verdict on a silent connection (not the server's doing)."""


class _Subscriber:
    """One subscriber connection (to the Redis server, or to one master of a cluster) and the
    listener thread that alone reads and writes it.

    The state of the subscriptions is guarded by the backend's condition ``_cond``:

    * ``wanted``: the groups routed here that have members in this process;
    * ``on_server``: those for which the last command written was a subscribe;
    * ``pending``: how many commands written for a group are not answered yet;
    * ``inflight``: the commands written and not fully answered, in order, each as
      ``(subscribing, groups not yet answered)``: Redis answers them in order, one reply per
      channel, or one error for the whole command.

    A group's subscription is in place once it is ``on_server`` with nothing ``pending``.
    """

    def __init__(self, backend: RedisGroupBackend, name: str, make_connection: Callable[[], _Connection]) -> None:
        self.backend = backend
        self.name = name  # host:port, for the log
        self._make_connection = make_connection
        self.wanted: set[str] = set()
        self.dirty: set[str] = set()  # groups whose subscription may need a command
        self.on_server: set[str] = set()
        self.pending: dict[str, int] = {}
        self.inflight: collections.deque[tuple[bool, set[str]]] = collections.deque()
        # groups whose subscribe the server refused, retried at retry_at
        self.failed: set[str] = set()
        self.retry_at = 0.0
        self.retry_delay = backend.backoff_initial
        self.up = False
        self.attempted = False  # the first connection attempt has ended, one way or the other
        self.retired = False
        self.warned_down = False
        self.messages = 0  # messages read, for stats()
        # of the server last connected to: tells a restart from a disconnect
        self._run_id: bytes | None = None
        self._down_since: float | None = None
        self._lost_by_server = False
        self._woken = False
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self.thread = threading.Thread(target=self._run, name=f"websocket-groups-redis-{name}", daemon=True)
        self.thread.start()

    # --- called under the backend's condition ---------------------------------------------------

    def want(self, group: str) -> None:
        self.wanted.add(group)
        self.failed.discard(group)
        self.dirty.add(group)
        self.wake()

    def unwant(self, group: str) -> None:
        self.wanted.discard(group)
        self.failed.discard(group)
        self.dirty.add(group)
        self.wake()

    def in_place(self, group: str) -> bool:
        return self.up and group in self.on_server and group not in self.pending

    def wake(self) -> None:
        if not self._woken:
            self._woken = True
            try:
                os.write(self._wake_w, b"\0")
            except OSError:  # full (it is awake anyway) or closed (it stopped)
                pass

    def retire(self) -> None:
        self.retired = True
        self.wake()

    # --- the listener thread --------------------------------------------------------------------

    def _run(self) -> None:
        backend = self.backend
        delay = backend.backoff_initial
        try:
            while not backend._stopping.is_set() and not self.retired:
                connection: _Connection | None = None
                try:
                    connection = self._make_connection()
                    connection.connect()
                    run_id = self._identify(connection)
                    self._serve(connection, run_id)
                except Exception as exc:  # connection lost or refused, or any surprise: reconnect
                    if self._lost(exc):
                        delay = backend.backoff_initial
                finally:
                    self._reset()
                    if connection is not None:
                        try:
                            connection.disconnect()
                        except Exception:
                            pass
                if backend._stopping.is_set() or self.retired:
                    break
                backend._subscriber_down(self)
                # Full jitter: processes that lost Redis together do not all come back at once.
                backend._stopping.wait(random.uniform(delay / 2, delay))
                delay = min(delay * 2, backend.backoff_max)
        finally:
            with backend._cond:
                # No wake() writes to the pipe any more: its descriptors may be reused once closed.
                self._woken = True
            for fd in (self._wake_r, self._wake_w):
                try:
                    os.close(fd)
                except OSError:
                    pass

    def _identify(self, connection: _Connection) -> bytes | None:
        # Name the connection for CLIENT LIST, and note the server's run_id: the same one after a
        # reconnection means the server kept running and closed the connection itself.
        name = f"django_websocket.groups.{socket.gethostname()}.{os.getpid()}".replace(" ", "_")
        connection.send_packed_command(connection.pack_commands([("CLIENT", "SETNAME", name), ("INFO", "server")]))
        run_id = None
        for reply in (self._read(connection), self._read(connection)):
            if isinstance(reply, bytes) and b"run_id:" in reply:
                run_id = reply.split(b"run_id:", 1)[1].split(b"\r\n", 1)[0].strip()
        return run_id

    def _read(self, connection: _Connection) -> Any:
        try:
            return connection.read_response()
        except self.backend._redis.ResponseError as exc:  # an error reply, in its place among replies
            return exc

    def _serve(self, connection: _Connection, run_id: bytes | None) -> None:
        backend = self.backend
        with backend._cond:
            self.up = True
            self.attempted = True
            self.warned_down = False
            self.dirty = set(self.wanted)  # (re)subscribe to everything
            self.failed.clear()
            self.retry_at = 0.0
            groups = len(self.wanted)
            backend._cond.notify_all()
        self._on_connected(run_id, groups)
        poller = select.poll()
        poller.register(connection._sock.fileno(), select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        self._flush(connection)
        last_heard, ping_sent = time.monotonic(), None
        while not backend._stopping.is_set() and not self.retired:
            # Everything already readable first (a burst is handled without a poll per message).
            handled = 0
            while handled < 1000 and connection.can_read(timeout=0):
                self._handle(self._read(connection))
                handled += 1
            now = time.monotonic()
            if handled:
                last_heard, ping_sent = now, None
                with backend._cond:
                    backend._cond.notify_all()
            # Like Nagle's algorithm: while commands are unanswered, the changes that come pile
            # up, and go together in one command once the answers are in.
            if (self._woken and not self.inflight) or (self.failed and now >= self.retry_at):
                self._flush(connection)
            if handled:
                continue
            timeout = backend._poll
            if self.failed:
                timeout = max(0.0, min(timeout, self.retry_at - now))
            for fd, _ in poller.poll(timeout * 1000):
                if fd == self._wake_r:
                    try:
                        os.read(self._wake_r, 4096)
                    except OSError:
                        pass
            now = time.monotonic()
            if ping_sent is not None:
                if now - ping_sent > backend.ping_timeout:
                    raise _PingTimeout(f"no answer to PING within {backend.ping_timeout}s")
            elif now - last_heard > backend.idle_ping:
                connection.send_command("PING")
                ping_sent = now

    def _flush(self, connection: _Connection) -> None:
        """Write the commands that bring the server's subscriptions to what is wanted."""
        backend = self.backend
        with backend._cond:
            self._woken = False
            now = time.monotonic()
            if self.failed and now >= self.retry_at:
                self.dirty |= self.failed
                self.failed.clear()
            dirty, self.dirty = self.dirty, set()
            subscribe: list[str] = []
            unsubscribe: list[str] = []
            for group in dirty:
                if group in self.wanted:
                    if group not in self.on_server and group not in self.failed:
                        subscribe.append(group)
                elif group in self.on_server:
                    unsubscribe.append(group)
            if not subscribe and not unsubscribe:
                return
            for group in subscribe:
                self.on_server.add(group)
                self.pending[group] = self.pending.get(group, 0) + 1
            for group in unsubscribe:
                self.on_server.discard(group)
                self.pending[group] = self.pending.get(group, 0) + 1
            commands = backend._subscription_commands(subscribe, unsubscribe)
            for subscribing, groups, _ in commands:
                self.inflight.append((subscribing, set(groups)))
        connection.send_packed_command(connection.pack_commands([args for _, _, args in commands]))

    def _handle(self, reply: Any) -> None:
        backend = self.backend
        if isinstance(reply, list) and len(reply) >= 2:
            kind = reply[0]
            if kind in (b"message", b"smessage") and len(reply) == 3:
                self.messages += 1
                backend._on_message(reply[1], reply[2])
            elif kind in (b"subscribe", b"ssubscribe"):
                self._answered(True, reply[1])
            elif kind in (b"unsubscribe", b"sunsubscribe"):
                self._answered(False, reply[1])
            # else a pong
        elif isinstance(reply, Exception):
            self._refused(reply)
        # else b"PONG": a PING answered outside of subscribed mode

    def _answered(self, subscribing: bool, channel: bytes) -> None:
        backend = self.backend
        group = backend._group_of(channel)
        if group is None:
            return
        moved = False
        with backend._cond:
            head = self.inflight[0] if self.inflight else None
            if head is not None and head[0] == subscribing and group in head[1]:
                head[1].discard(group)
                if not head[1]:
                    self.inflight.popleft()
                self._settled(group)
                if subscribing:
                    self.retry_delay = backend.backoff_initial
            elif not subscribing:
                # Not an answer to a command of ours: the server dropped the subscription itself
                # (a cluster node does when the channel's slot moves to another node).
                self.on_server.discard(group)
                moved = group in self.wanted
        if moved:
            logger.info("Redis at %s no longer serves group %r: looking up its new node", self.name, group)
            backend._topology_changed()

    def _settled(self, group: str) -> None:
        # One command of ours naming ``group`` was answered (the backend's lock is held).
        left = self.pending.get(group, 0) - 1
        if left > 0:
            self.pending[group] = left
        else:
            self.pending.pop(group, None)

    def _refused(self, error: Exception) -> None:
        backend = self.backend
        with backend._cond:
            if not self.inflight:
                logger.warning("Redis at %s answered an error out of turn: %s", self.name, error)
                return
            subscribing, groups = self.inflight.popleft()
            for group in groups:
                self._settled(group)
                if subscribing:
                    self.on_server.discard(group)
            retried = groups & self.wanted if subscribing else set()
            self.failed |= retried
            self.retry_at = time.monotonic() + random.uniform(self.retry_delay / 2, self.retry_delay)
            self.retry_delay = min(self.retry_delay * 2, backend.backoff_max)
            backend._cond.notify_all()
        if retried:
            logger.warning(
                "Redis at %s refused to subscribe to %d group(s) (%s: %s): retrying",
                self.name,
                len(retried),
                type(error).__name__,
                error,
            )
            backend._topology_changed()

    def _on_connected(self, run_id: bytes | None, groups: int) -> None:
        previous, self._run_id = self._run_id, run_id
        down_since, self._down_since = self._down_since, None
        backend = self.backend
        if down_since is None:
            logger.info("Subscriber connected to Redis at %s for groups (%d now)", self.name, groups)
            return
        gap = time.monotonic() - down_since
        if self._lost_by_server and previous is not None and previous == run_id:
            # The server kept running (same run_id) and closed the connection: Redis does that
            # to a subscriber whose output buffer outgrew client-output-buffer-limit pubsub.
            backend._count("subscriber_disconnects")
            logger.error(
                "Subscribed to Redis at %s again after %.1fs. Redis had closed this process's subscriber "
                "connection while it kept running: the listener fell behind and its unread messages outgrew "
                "the server's client-output-buffer-limit for pubsub (or a CLIENT KILL). Lost for the sockets "
                "of this process: the messages of its %d group(s) that Redis held for it, and those published "
                "until now. Group messages flow again.",
                self.name,
                gap,
                groups,
            )
        else:
            what = "Redis restarted or failed over" if previous is not None and run_id != previous else "reconnected"
            logger.log(
                logging.WARNING if groups else logging.INFO,
                "Subscribed to Redis at %s again after %.1fs (%s): group messages flow; those published "
                "meanwhile to this process's %d group(s) were lost",
                self.name,
                gap,
                what,
                groups,
            )

    def _lost(self, exc: Exception) -> bool:
        """Log the loss of the connection (or a failed attempt); True if it had been up."""
        with self.backend._cond:
            was_up, groups = self.up, len(self.wanted)
        if was_up:
            self._down_since = time.monotonic()
            self._lost_by_server = not isinstance(exc, _PingTimeout)
            self.backend._count("subscriber_reconnects")
            logger.log(
                logging.WARNING if groups else logging.INFO,
                "Lost the subscription to Redis at %s (%s): group messages for this process are lost until it "
                "is back; reconnecting",
                self.name,
                exc,
            )
        elif self._down_since is None:
            self._down_since = time.monotonic()
            self._lost_by_server = False
            logger.warning("Cannot subscribe to Redis at %s (%s); retrying", self.name, exc)
        else:
            logger.debug("Redis at %s still unavailable: %s", self.name, exc)
        return was_up

    def _reset(self) -> None:
        with self.backend._cond:
            self.up = False
            self.attempted = True
            self.on_server.clear()
            self.pending.clear()
            self.inflight.clear()
            self.failed.clear()
            self.backend._cond.notify_all()


# --- presence -------------------------------------------------------------------------------------


class _Presence:
    """This process's members in Redis, and the reading of everyone's.

    Keys, for a process ``P`` (a random id per backend) and a group whose channel has the slot tag
    ``T``:

    * ``PREFIX presence:{T}``: a set of the processes with members in the group;
    * ``PREFIX presence:{T}:P``: a hash, socket id -> ``[user_id, info, joined_at]`` as JSON;
    * ``PREFIX presence-process:P``: P's heartbeat, which expires ``PRESENCE_TTL`` seconds after
      P last refreshed it (every third of it);
    * ``PREFIX presence-process:P:groups``: a set of P's groups, to clean up after P;
    * ``PREFIX presence-processes``: a set of the processes, to find those that died.

    One thread writes: the changes that joins and leaves queue, last one first, in pipelines;
    the heartbeat; now and then, the keys of dead processes.
    """

    def __init__(self, backend: RedisGroupBackend) -> None:
        self.backend = backend
        self.process = uuid.uuid4().hex[:16]
        prefix = backend.prefix
        self.ttl = backend.presence_ttl
        self._cond = threading.Condition(threading.Lock())
        # (group, socket id) -> JSON text, or None to remove: the last change wins
        self._ops: dict[tuple[str, str], str | None] = {}
        # group -> True (a first member here) / False (no member left here)
        self._groups: dict[str, bool] = {}
        self._queued = 0  # changes queued so far ...
        self._written = 0  # ... and written
        self._down = False  # the last write failed
        self._attempted = False
        self._resync = False  # rewrite everything: Redis may have lost it, or a reader removed it
        self._thread: threading.Thread | None = None
        self._closed = False
        self._next_heartbeat = 0.0
        self._next_sweep = time.monotonic() + self.ttl * random.uniform(1, 2)
        # A prefix with braces of its own would give the keys its hash tag: theirs go first then.
        self._braced_prefix = "{" in prefix or "}" in prefix
        self.alive_key = f"{prefix}presence-process:{self.process}"
        self.index_key = f"{prefix}presence-process:{self.process}:groups"
        self.registry_key = f"{prefix}presence-processes"

    # --- keys ---

    def group_key(self, group: str) -> str:
        tag = slot_tag(self.backend._channel(group))
        prefix = self.backend.prefix
        return f"{{{tag}}}{prefix}presence" if self._braced_prefix else f"{prefix}presence:{{{tag}}}"

    def members_key(self, group: str, process: str) -> str:
        return f"{self.group_key(group)}:{process}"

    def alive_key_of(self, process: str) -> str:
        return f"{self.backend.prefix}presence-process:{process}"

    def index_key_of(self, process: str) -> str:
        return f"{self.backend.prefix}presence-process:{process}:groups"

    # --- changes (under the backend's lock: note them only) ---

    def joined(self, group: str, member: Member, first: bool) -> int:
        value = json.dumps([member.user_id, member.info, member.joined_at], separators=(",", ":"))
        with self._cond:
            self._ops[(group, member.id)] = value
            if first:
                self._groups[group] = True
            return self._queue()

    def left(self, group: str, member_id: str, last: bool) -> int:
        with self._cond:
            self._ops[(group, member_id)] = None
            if last:
                self._groups[group] = False
            return self._queue()

    def _queue(self) -> int:
        self._queued += 1
        if self._thread is None and not self._closed:
            self._thread = threading.Thread(target=self._run, name="websocket-groups-presence", daemon=True)
            self._thread.start()
        self._cond.notify_all()
        return self._queued

    def wait(self, ticket: int, deadline: float) -> bool:
        """Until the change ``ticket`` is written; False if Redis failed or time ran out."""
        with self._cond:
            while self._written < ticket:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self._down and self._attempted) or self._closed:
                    return False
                self._cond.wait(remaining)
            return True

    # --- the writer thread ---

    def _run(self) -> None:
        backend = self.backend
        delay = backend.backoff_initial
        while True:
            with self._cond:
                while not self._ops and not self._groups and not self._resync and not self._closed:
                    now = time.monotonic()
                    due = min(self._next_heartbeat, self._next_sweep)
                    if now >= due:
                        break
                    self._cond.wait(due - now)
                if self._closed:
                    return
                ops, self._ops = self._ops, {}
                groups, self._groups = self._groups, {}
                target, resync = self._queued, self._resync
            try:
                self._write(ops, groups, resync)
            except Exception as exc:  # Redis down, or any surprise: keep the changes, retry
                with self._cond:
                    for key, value in ops.items():
                        self._ops.setdefault(key, value)
                    for group, present in groups.items():
                        self._groups.setdefault(group, present)
                    was_down, self._down, self._attempted = self._down, True, True
                    # Readers may remove our entries while our heartbeat lapses: write them all again.
                    self._resync = True
                    self._cond.notify_all()
                if not was_down:
                    logger.warning("Cannot write group presence to Redis at %s (%s); retrying", backend.where, exc)
                backend._stopping.wait(random.uniform(delay / 2, delay))
                delay = min(delay * 2, backend.backoff_max)
                continue
            delay = backend.backoff_initial
            if time.monotonic() >= self._next_sweep:
                self._next_sweep = time.monotonic() + self.ttl * random.uniform(1, 2)
                try:
                    self._sweep()
                except Exception as exc:
                    logger.debug("Sweeping the presence of dead processes failed: %s", exc)
            with self._cond:
                if self._down:
                    logger.warning("Group presence written to Redis at %s again", backend.where)
                self._written = max(self._written, target)
                self._down, self._attempted = False, True
                if resync:
                    self._resync = False
                self._cond.notify_all()

    def _write(self, ops: dict[tuple[str, str], str | None], groups: dict[str, bool], resync: bool) -> None:
        client = self.backend._client()
        now = time.monotonic()
        ttl_ms = int(self.ttl * 1000)
        pipe = client.pipeline(transaction=False)
        heartbeat = resync or now >= self._next_heartbeat
        first = self._next_heartbeat == 0.0
        if heartbeat:
            # XX: only refresh; a heartbeat that had expired means readers may have removed us.
            pipe.set(self.alive_key, self.backend.where_am_i, px=ttl_ms, xx=not (first or resync))
            pipe.sadd(self.registry_key, self.process)
        adds: collections.defaultdict[str, dict[FieldT, EncodableT]] = collections.defaultdict(dict)
        removes: collections.defaultdict[str, list[str]] = collections.defaultdict(list)
        for (group, member_id), value in ops.items():
            if groups.get(group) is False:
                continue  # the whole hash goes
            if value is None:
                removes[group].append(member_id)
            else:
                adds[group][member_id] = value
        for group, present in groups.items():
            if present:
                pipe.sadd(self.group_key(group), self.process)
                pipe.sadd(self.index_key, group)
            else:
                pipe.delete(self.members_key(group, self.process))
                pipe.srem(self.group_key(group), self.process)
                pipe.srem(self.index_key, group)
        for group, fields in adds.items():
            pipe.hset(self.members_key(group, self.process), mapping=fields)
        for group, member_ids in removes.items():
            pipe.hdel(self.members_key(group, self.process), *member_ids)
        results = pipe.execute()
        if heartbeat:
            self._next_heartbeat = now + self.ttl / 3
            if results[0] is None:
                logger.warning(
                    "This process's presence heartbeat in Redis at %s had expired (for more than %ss): "
                    "writing its members again",
                    self.backend.where,
                    self.ttl,
                )
                resync = True
        if resync:
            self._rewrite()

    def _rewrite(self) -> None:
        """Write every member of this process again, from its own bookkeeping."""
        client = self.backend._client()
        presence = self.backend.local_presence()
        pipe = client.pipeline(transaction=False)
        pipe.set(self.alive_key, self.backend.where_am_i, px=int(self.ttl * 1000))
        pipe.sadd(self.registry_key, self.process)
        queued = 2
        for group, members in presence.items():
            key = self.members_key(group, self.process)
            pipe.delete(key)
            fields: dict[FieldT, EncodableT] = {
                m.id: json.dumps([m.user_id, m.info, m.joined_at], separators=(",", ":")) for m in members
            }
            pipe.hset(key, mapping=fields)
            pipe.sadd(self.group_key(group), self.process)
            pipe.sadd(self.index_key, group)
            queued += 4
            if queued > 1000:
                pipe.execute()
                pipe, queued = client.pipeline(transaction=False), 0
        if queued:
            pipe.execute()

    def _sweep(self) -> None:
        """Remove what processes whose heartbeat expired left behind (they died unannounced)."""
        client = self.backend._client()
        processes = [p.decode() for p in _smembers(client, self.registry_key)]
        others = [p for p in processes if p != self.process]
        if not others:
            return
        pipe = client.pipeline(transaction=False)
        for process in others:
            pipe.exists(self.alive_key_of(process))
        dead = [p for p, alive in zip(others, pipe.execute(), strict=True) if not alive]
        for process in dead:
            groups = [g.decode("utf-8") for g in _smembers(client, self.index_key_of(process))]
            self._remove_process(client, process, groups)
            logger.info(
                "Removed the group presence of process %s, whose heartbeat expired (%d groups)", process, len(groups)
            )

    def _remove_process(self, client: _Client, process: str, groups: Iterable[str]) -> None:
        pipe = client.pipeline(transaction=False)
        queued = 0
        for group in groups:
            pipe.delete(self.members_key(group, process))
            pipe.srem(self.group_key(group), process)
            queued += 2
            if queued > 1000:
                pipe.execute()
                pipe, queued = client.pipeline(transaction=False), 0
        pipe.delete(self.index_key_of(process))
        pipe.delete(self.alive_key_of(process))
        pipe.srem(self.registry_key, process)
        pipe.execute()

    # --- reading ---

    def _live(self, client: _Client, group: str) -> tuple[list[str], list[str]]:
        processes = sorted(p.decode() for p in _smembers(client, self.group_key(group)))
        if not processes:
            return [], []
        pipe = client.pipeline(transaction=False)
        for process in processes:
            pipe.exists(self.alive_key_of(process))
        alive = pipe.execute()
        live = [p for p, a in zip(processes, alive, strict=True) if a]
        dead = [p for p, a in zip(processes, alive, strict=True) if not a]
        if dead:
            # Left by processes that died without a word: skipped, and removed for the next reader.
            try:
                pipe = client.pipeline(transaction=False)
                for process in dead:
                    pipe.delete(self.members_key(group, process))
                    pipe.srem(self.group_key(group), process)
                pipe.execute()
            except self.backend._redis.RedisError:
                pass
        return live, dead

    def count(self, group: str) -> int:
        client = self.backend._client()
        live, _ = self._live(client, group)
        if not live:
            return 0
        pipe = client.pipeline(transaction=False)
        for process in live:
            pipe.hlen(self.members_key(group, process))
        return sum(pipe.execute())

    def members(self, group: str) -> list[Member]:
        client = self.backend._client()
        live, _ = self._live(client, group)
        if not live:
            return []
        pipe = client.pipeline(transaction=False)
        for process in live:
            pipe.hgetall(self.members_key(group, process))
        found = []
        for fields in pipe.execute():
            for member_id, value in fields.items():
                try:
                    user_id, info, joined_at = json.loads(value)
                    found.append(Member(member_id.decode("ascii"), user_id, info, joined_at))
                except (ValueError, TypeError, UnicodeDecodeError):
                    logger.warning("Skipped a malformed presence entry of group %r: %r", group, value[:100])
        found.sort(key=lambda member: (member.joined_at, member.id))
        return found

    # --- the end ---

    def close(self, timeout: float) -> None:
        """Stop the writer; remove this process's presence from Redis (bounded by the socket
        timeouts): the others stop telling its members at once, not a PRESENCE_TTL later."""
        with self._cond:
            thread = self._thread
            self._closed = True
            self._cond.notify_all()
        if thread is None:
            return
        if thread is not threading.current_thread():
            thread.join(timeout)
        try:
            client = self.backend._client()
            groups = {g.decode("utf-8") for g in _smembers(client, self.index_key)}
            groups.update(self.backend.local_presence())
            self._remove_process(client, self.process, sorted(groups))
        except Exception as exc:
            logger.info("Could not remove this process's group presence from Redis (%s): it expires by itself", exc)


# --- the backends ---------------------------------------------------------------------------------


class RedisGroupBackend(BaseGroupBackend):
    """``WEBSOCKET_GROUPS = {"BACKEND": "django_websocket.groups.redis.RedisGroupBackend",
    "LOCATION": "redis://127.0.0.1:6379/0", "PREFIX": "django_websocket:", "OPTIONS": {},
    "PRESENCE_TTL": 30}``.

    ``OPTIONS`` are keyword arguments of ``redis.Redis.from_url`` (timeouts, TLS, credentials).
    """

    default_config: dict[str, Any] = {
        "LOCATION": "redis://127.0.0.1:6379/0",
        "PREFIX": "django_websocket:",
        "OPTIONS": {},
        "PRESENCE_TTL": 30,
    }

    #: Seconds between reconnection attempts: from the first to the last, doubled each time.
    backoff_initial = 0.1
    backoff_max = 5.0
    #: Seconds the subscriber connection may stay silent before it is pinged, and then how long
    #: the answer may take before the connection is deemed dead (a host that vanished sends no
    #: FIN: without this the listener would wait forever).
    idle_ping = 15.0
    ping_timeout = 10.0
    #: How long a join waits for its group's subscription (and its presence) to be in place.
    join_timeout = 5.0
    #: Channels per SUBSCRIBE or UNSUBSCRIBE command.
    channels_per_command = 500
    _poll = 1.0  # the listener's longest wait: it checks for stop and pings between
    _what = "Redis"

    # Set by __init__; declared here for the classes above, which use them.
    _redis: ModuleType
    prefix: str
    presence_ttl: float
    where: str
    where_am_i: str
    _cond: threading.Condition
    _stopping: threading.Event

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self._redis, self._Retry, self._NoBackoff = _import_redis()
        self.location = config["LOCATION"]
        self.where = self.safe_location = _redact(self.location)
        self.prefix = config["PREFIX"]
        self._prefix_bytes = self.prefix.encode("utf-8")
        try:
            self.presence_ttl = float(config["PRESENCE_TTL"])
        except (TypeError, ValueError):
            self.presence_ttl = 0.0
        if not self.presence_ttl > 0:
            raise ImproperlyConfigured(
                f"WEBSOCKET_GROUPS['PRESENCE_TTL'] must be a number of seconds above 0, not {config['PRESENCE_TTL']!r}"
            )
        self.where_am_i = f"{socket.gethostname()} pid {os.getpid()}"
        # Replies as bytes whatever OPTIONS say: payloads are binary.
        self._options: dict[str, Any] = {
            "socket_connect_timeout": 2.0,
            "socket_timeout": 2.0,
            **config.get("OPTIONS", {}),
            "decode_responses": False,
        }
        self._cond = threading.Condition(threading.Lock())  # the subscriptions' state
        self._stopping = threading.Event()
        self._subscribers: dict[str, _Subscriber] = {}  # name -> _Subscriber
        # group -> its _Subscriber, for the groups with members here
        self._route: dict[str, _Subscriber] = {}
        self._counters: collections.Counter[str] = collections.Counter()
        self._counters_lock = threading.Lock()
        self._warned_down = False
        self._setup_clients()
        self._presence = _Presence(self)
        atexit.register(self._at_exit)

    def _setup_clients(self) -> None:
        try:
            # Publishing and presence: retry once at once, so that the first command after a
            # Redis restart replaces the pool's dead connection instead of failing.
            retry = self._Retry(self._NoBackoff(), 1)
            self._publisher: Redis = self._redis.Redis.from_url(self.location, **{"retry": retry, **self._options})
        except ValueError as exc:
            raise ImproperlyConfigured(f"WEBSOCKET_GROUPS['LOCATION'] {self.safe_location!r}: {exc}") from exc
        self._server_name: str | None = self.safe_location

    def _client(self) -> _Client:
        """The client for commands (publishing, presence)."""
        return self._publisher

    def _subscriber_connection(self, pool: ConnectionPool) -> _Connection:
        """A new connection of ``pool``'s kind for a subscriber: RESP2 (its replies are what the
        listener parses), no retries of redis-py's own (the listener reconnects with backoff)."""
        kwargs = {
            **pool.connection_kwargs,
            "retry": self._Retry(self._NoBackoff(), 0),
            "health_check_interval": 0,
        }
        # redis-py 7's maintenance notifications need RESP3: a RESP2 connection goes without.
        kwargs = {name: value for name, value in kwargs.items() if "maint_notifications" not in name}
        connection: _Connection
        try:
            connection = pool.connection_class(**{**kwargs, "protocol": 2})
        except TypeError:  # redis-py 4, which speaks RESP2 only, knows no protocol
            connection = pool.connection_class(**kwargs)
        return connection

    # --- channels -----------------------------------------------------------------------------

    def _channel(self, group: str) -> bytes:
        return self._prefix_bytes + group.encode("utf-8")

    def _group_of(self, channel: bytes) -> str | None:
        if not channel.startswith(self._prefix_bytes):
            return None
        try:
            return channel[len(self._prefix_bytes) :].decode("utf-8")
        except UnicodeDecodeError:
            return None

    def _subscription_commands(self, subscribe: list[str], unsubscribe: list[str]) -> list[_Command]:
        """``[(subscribing, groups, command arguments)]`` for these groups."""
        commands: list[_Command] = []
        size = self.channels_per_command
        for subscribing, groups, name in ((True, subscribe, "SUBSCRIBE"), (False, unsubscribe, "UNSUBSCRIBE")):
            for start in range(0, len(groups), size):
                chunk = groups[start : start + size]
                commands.append((subscribing, chunk, (name, *map(self._channel, chunk))))
        return commands

    # --- sending ------------------------------------------------------------------------------

    def send(self, group: str, message: GroupMessage, exclude: frozenset[str] = frozenset()) -> None:
        try:
            self._publish(self._channel(group), encode(message, exclude))
        except self._errors() as exc:
            raise BackendUnavailable(
                f"Could not send to group {group!r}: {self._what} at {self.safe_location} is unavailable ({exc}). "
                "Nothing was sent."
            ) from exc

    def _publish(self, channel: bytes, payload: bytes) -> None:
        self._publisher.publish(channel, payload)

    # --- presence -----------------------------------------------------------------------------

    def _errors(self) -> tuple[type[Exception], ...]:
        return (self._redis.RedisError, BackendUnavailable)

    def _unavailable(self, what: str, exc: Exception) -> BackendUnavailable:
        return BackendUnavailable(f"Could not {what}: {self._what} at {self.safe_location} is unavailable ({exc})")

    def count(self, group: str) -> int:
        try:
            return self._presence.count(group)
        except self._errors() as exc:
            raise self._unavailable(f"count group {group!r}", exc) from exc

    def members(self, group: str) -> list[Member]:
        try:
            return self._presence.members(group)
        except self._errors() as exc:
            raise self._unavailable(f"read the members of group {group!r}", exc) from exc

    # --- membership hooks (under the base class's lock) ----------------------------------------

    def _member_joined(self, group: str, member: Member, first: bool) -> int:
        if first:
            with self._cond:
                self._want(group)
        return self._presence.joined(group, member, first)

    def _member_left(self, group: str, member_id: str, last: bool) -> int:
        if last:
            with self._cond:
                subscriber = self._route.pop(group, None)
                if subscriber is not None:
                    subscriber.unwant(group)
                self._unrouted_discard(group)
        return self._presence.left(group, member_id, last)

    def _want(self, group: str) -> None:
        subscriber = self._subscriber_for(group)
        if subscriber is not None:
            self._route[group] = subscriber
            subscriber.want(group)

    def _unrouted_discard(self, group: str) -> None:
        pass

    def _subscriber_for(self, group: str) -> _Subscriber | None:
        """The subscriber that should hold ``group``'s subscription (under ``_cond``)."""
        name = cast(str, self._server_name)  # one server: its (redacted) location
        subscriber = self._subscribers.get(name)
        if subscriber is None:
            pool = self._publisher.connection_pool
            subscriber = self._subscribers[name] = _Subscriber(self, name, lambda: self._subscriber_connection(pool))
        return subscriber

    def _settle(self, group: str | None, ticket: int | None) -> None:
        deadline = time.monotonic() + self.join_timeout
        subscribed = self._wait_subscribed(group, deadline) if group is not None else True
        written = self._presence.wait(ticket, deadline) if ticket is not None else True
        if group is not None and not (subscribed and written):
            if not self._warned_down:
                self._warned_down = True
                logger.warning(
                    "Joined group %r while Redis at %s is unavailable: its messages reach this process "
                    "once the connection is back",
                    group,
                    self.safe_location,
                )
        elif group is not None:
            self._warned_down = False

    def _wait_subscribed(self, group: str, deadline: float) -> bool:
        with self._cond:
            while True:
                if self._stopping.is_set():
                    return False
                subscriber = self._route.get(group)
                if subscriber is None:
                    if not self._routing(group):
                        return True  # nobody here is in the group any more: nothing to wait for
                elif subscriber.in_place(group):
                    return True
                elif subscriber.attempted and not subscriber.up:
                    return False  # down: the join goes on without it, as the log says
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)

    def _routing(self, group: str) -> bool:
        """Whether ``group`` waits for a subscriber (a cluster whose topology is unknown)."""
        return False

    # --- receiving ----------------------------------------------------------------------------

    def _on_message(self, channel: bytes, data: bytes) -> None:
        group = self._group_of(channel)
        try:
            if group is None:
                raise ValueError("not a channel of this PREFIX")
            message, exclude = decode(data)
        except (ValueError, UnicodeDecodeError) as exc:
            logger.warning("Dropped a malformed group message on channel %r: %s", channel, exc)
            return
        try:
            self.deliver(group, message, exclude)
        except Exception:
            logger.exception("Delivering a message of group %r failed", group)

    def _subscriber_down(self, subscriber: _Subscriber) -> None:
        """A subscriber lost its connection or failed to connect (before it retries)."""

    def _topology_changed(self) -> None:
        """A subscription was dropped or refused by a cluster node."""

    # --- statistics ---------------------------------------------------------------------------

    def _count(self, name: str) -> None:
        with self._counters_lock:
            self._counters[name] += 1

    def stats(self) -> dict[str, Any]:
        """Counters of this process's backend, as a dict: ``subscriber_disconnects`` (times Redis
        closed the subscriber connection while it kept running: a listener that fell behind),
        ``subscriber_reconnects`` (times a subscriber connection was lost, for any reason),
        ``subscribed_groups`` (groups whose subscription is in place now), ``subscriber_messages``
        (group messages the listeners received) and ``subscriber_connections`` (those open now)."""
        parent = getattr(super(), "stats", None)
        stats = dict(parent()) if parent is not None else {}
        with self._counters_lock:
            stats["subscriber_disconnects"] = self._counters["subscriber_disconnects"]
            stats["subscriber_reconnects"] = self._counters["subscriber_reconnects"]
        with self._cond:
            subscribers = list(self._subscribers.values())
            stats["subscribed_groups"] = sum(1 for s in subscribers for g in s.on_server if g not in s.pending and s.up)
            stats["subscriber_connections"] = sum(1 for s in subscribers if s.up)
        stats["subscriber_messages"] = sum(s.messages for s in subscribers)
        return stats

    # --- life cycle ---------------------------------------------------------------------------

    def _at_exit(self) -> None:
        if os.getpid() == self.pid and not self._stopping.is_set():
            # Only the presence: the others then stop telling this process's members at once.
            self._presence.close(timeout=1.0)

    def close(self) -> None:
        atexit.unregister(self._at_exit)
        self._presence.close(timeout=self._poll + 2.0)
        self._stopping.set()
        with self._cond:
            subscribers = list(self._subscribers.values())
            for subscriber in subscribers:
                subscriber.wake()
            self._cond.notify_all()
        for subscriber in subscribers:
            if subscriber.thread is not threading.current_thread():
                subscriber.thread.join(self._poll + 2.0)
        super().close()
        self._close_clients()

    def _close_clients(self) -> None:
        try:
            self._publisher.close()
        except Exception:
            pass


class RedisClusterGroupBackend(RedisGroupBackend):
    """``WEBSOCKET_GROUPS = {"BACKEND": "django_websocket.groups.redis.RedisClusterGroupBackend",
    "LOCATION": "redis://10.0.0.1:6379/0", ...}``: a Redis Cluster (Redis 7 or later), with sharded
    pub/sub. ``LOCATION`` is any one node's URL: the others are found from it.

    A group message is published with ``SPUBLISH`` on ``PREFIX + group``, which reaches the
    master that owns the channel's hash slot (and its replicas) only, never the whole cluster. A
    process subscribes with ``SSUBSCRIBE`` on the master of each of its groups' slots: one
    connection per such master. When a slot moves (resharding, a failover), the node drops the
    subscription or the connection is lost; the backend then reads the cluster's slots again and
    subscribes on the new owner. ``OPTIONS`` are keyword arguments of
    ``redis.cluster.RedisCluster.from_url``.
    """

    #: Seconds between two readings of the cluster's slots while something is amiss (a node
    #: down, a group without a node).
    refresh_interval = 0.5
    _what = "the Redis Cluster"

    def _setup_clients(self) -> None:
        try:
            from redis.cluster import RedisCluster  # noqa: F401  (redis-py 4.1 or later)
        except ImportError as exc:
            raise ImproperlyConfigured("The Redis Cluster group backend needs redis-py 4.5 or later") from exc
        self._cluster: RedisCluster | None = None  # made at first use: making it connects to the cluster
        self._cluster_lock = threading.Lock()
        self._unrouted: set[str] = set()  # groups with members here whose slot has no known node yet
        self._refresh = threading.Event()
        self._router: threading.Thread | None = None
        self._server_name = None
        # Check the URL now: a mistake in the settings shows at start, not at the first send.
        parts = urlsplit(self.location)
        if parts.scheme not in ("redis", "rediss") or not parts.hostname:
            raise ImproperlyConfigured(
                f"WEBSOCKET_GROUPS['LOCATION'] {self.safe_location!r}: a cluster node's URL is redis://host:port "
                "or rediss://host:port"
            )

    def _client(self) -> RedisCluster:
        cluster = self._cluster
        if cluster is not None:
            return cluster
        with self._cluster_lock:
            if self._cluster is None:
                from redis.cluster import RedisCluster

                # Fail fast: a command whose node is down fails within the socket timeouts and
                # raises BackendUnavailable, rather than retrying for seconds.
                options = {"retry": self._Retry(self._NoBackoff(), 1), **self._options}
                try:
                    self._cluster = RedisCluster.from_url(self.location, **options)
                except (self._redis.RedisError, self._redis.exceptions.RedisClusterException) as exc:
                    raise BackendUnavailable(f"no node of the cluster answers ({exc})") from exc
                except ValueError as exc:
                    raise ImproperlyConfigured(f"WEBSOCKET_GROUPS['LOCATION'] {self.safe_location!r}: {exc}") from exc
            return self._cluster

    def _errors(self) -> tuple[type[Exception], ...]:
        return (self._redis.RedisError, self._redis.exceptions.RedisClusterException, BackendUnavailable)

    def _publish(self, channel: bytes, payload: bytes) -> None:
        # (redis-py 5 has spublish(); 4.5 has not. execute_command is unannotated.)
        self._client().execute_command("SPUBLISH", channel, payload)  # type: ignore[no-untyped-call]

    def _subscription_commands(self, subscribe: list[str], unsubscribe: list[str]) -> list[_Command]:
        # A sharded (un)subscribe names channels of one slot only.
        commands: list[_Command] = []
        size = self.channels_per_command
        for subscribing, groups, name in ((True, subscribe, "SSUBSCRIBE"), (False, unsubscribe, "SUNSUBSCRIBE")):
            by_slot: collections.defaultdict[int, list[str]] = collections.defaultdict(list)
            for group in groups:
                by_slot[key_slot(self._channel(group))].append(group)
            for same_slot in by_slot.values():
                for start in range(0, len(same_slot), size):
                    chunk = same_slot[start : start + size]
                    commands.append((subscribing, chunk, (name, *map(self._channel, chunk))))
        return commands

    # --- routing groups to nodes (under _cond) -------------------------------------------------

    def _node_of(self, group: str) -> ClusterNode | None:
        """The master that owns ``group``'s slot, by the client's last reading; None if unknown."""
        cluster = self._cluster
        if cluster is None:
            return None
        try:
            return cluster.nodes_manager.get_node_from_slot(key_slot(self._channel(group)))
        except Exception:  # the slot is not covered (now), or no slot is known
            return None

    def _subscriber_for(self, group: str) -> _Subscriber | None:
        node = self._node_of(group)
        if node is None:
            self._unrouted.add(group)
            self._wake_router()
            return None
        self._unrouted.discard(group)
        subscriber = self._subscribers.get(node.name)
        if subscriber is None or subscriber.retired:
            cluster = cast("RedisCluster", self._cluster)  # it gave the node

            def connect(node: ClusterNode = node) -> _Connection:
                return self._subscriber_connection(cluster.get_redis_connection(node).connection_pool)

            subscriber = self._subscribers[node.name] = _Subscriber(self, node.name, connect)
        return subscriber

    def _unrouted_discard(self, group: str) -> None:
        self._unrouted.discard(group)

    def _routing(self, group: str) -> bool:
        if group not in self._unrouted:
            return False
        # Waiting for the cluster's slots; with no node answering, the join goes on without.
        return self._cluster is not None or self._router_attempts == 0

    def _want(self, group: str) -> None:
        if self._cluster is None:
            self._wake_router()
        super()._want(group)

    # --- the router thread: reads the cluster's slots when something moved ----------------------

    _router_attempts = 0

    def _wake_router(self) -> None:
        self._refresh.set()
        if self._router is None and not self._stopping.is_set():
            self._router = threading.Thread(
                target=self._route_groups, name="websocket-groups-redis-cluster", daemon=True
            )
            self._router.start()

    def _subscriber_down(self, subscriber: _Subscriber) -> None:
        self._wake_router()

    def _topology_changed(self) -> None:
        self._wake_router()

    def _route_groups(self) -> None:
        delay = self.refresh_interval
        while not self._stopping.is_set():
            self._refresh.wait(self.idle_ping)
            if self._stopping.is_set():
                return
            self._refresh.clear()
            try:
                cluster = self._cluster
                if cluster is None:
                    cluster = self._client()  # reads the slots as it connects
                else:
                    cluster.nodes_manager.initialize()
                healthy = self._reroute(cluster)
                delay = self.refresh_interval
            except Exception as exc:
                logger.debug("Reading the slots of the Redis Cluster at %s failed: %s", self.safe_location, exc)
                healthy = False
                delay = min(delay * 2, self.backoff_max)
            finally:
                with self._cond:
                    self._router_attempts += 1
                    self._cond.notify_all()
            if not healthy:
                # Something is amiss (a node down, a slot uncovered): read the slots again soon.
                self._stopping.wait(random.uniform(delay / 2, delay))
                self._refresh.set()

    def _reroute(self, cluster: RedisCluster) -> bool:
        """Move each group to the master that owns its slot now; True if all have a live one."""
        primaries = {node.name for node in cluster.get_primaries()}  # type: ignore[no-untyped-call]
        moved = 0
        with self._cond:
            for group in list(self._route) + list(self._unrouted):
                current = self._route.get(group)
                subscriber = self._subscriber_for(group)
                if subscriber is current:
                    continue
                if current is not None:
                    moved += 1
                    current.unwant(group)
                if subscriber is None:
                    self._route.pop(group, None)
                else:
                    self._route[group] = subscriber
                    subscriber.want(group)
            for name, subscriber in list(self._subscribers.items()):
                if name not in primaries and not subscriber.wanted:
                    subscriber.retire()
                    del self._subscribers[name]
            healthy = not self._unrouted and all(
                s.up or not s.attempted for s in self._subscribers.values() if s.wanted
            )
            self._cond.notify_all()
        if moved:
            logger.info("Moved %d group subscription(s) to the cluster nodes that now own their slots", moved)
        return healthy

    def _close_clients(self) -> None:
        self._refresh.set()
        router = self._router
        if router is not None and router is not threading.current_thread():
            router.join(self._poll + 2.0)
        cluster = self._cluster
        if cluster is not None:
            try:
                cluster.close()
            except Exception:
                pass
