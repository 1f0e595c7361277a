"""Groups: send a message to many sockets at once, from any code.

A socket's view puts it in groups with ``request.websocket.join("room:42")`` (and
``leave``); membership ends by itself when the socket closes. Any code (another view, a signal
handler, a management command, a task queue worker) then sends to every member::

    from django_websocket import groups

    groups.send("room:42", "hello")            # str: a text message, bytes: binary
    groups.send_json("room:42", {"n": 1}, exclude=request.websocket)
    groups.count("room:42"), groups.members("room:42")   # who is in the room

Sending never waits for a client: a member's frame is written at once when its socket takes it
without waiting; a member that is behind gets a bounded queue, written by a sender thread while
it has messages waiting. A full queue applies the group's slow-consumer policy (``configure``):
close the socket with 1008, drop the oldest queued message, or drop the new one; ``stats()``
counts what was delivered and dropped. The backend (``WEBSOCKET_GROUPS["BACKEND"]``) decides
how far a message goes: the sockets of this process (in-memory, the default) or of every process
on one Redis server or one Redis Cluster.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, TypeAlias, cast

from django.core.serializers.json import DjangoJSONEncoder
from django.utils.module_loading import import_string

from ..conf import DEFAULTS, settings
from ..websocket import WebSocket
from . import base
from .base import SLOW_CONSUMER_POLICIES, BackendUnavailable, Member, validate_group

if TYPE_CHECKING:
    from typing import Protocol

    from ..types import AsyncWebSocketConnection, Sendable, WebSocketConnection
    from .base import BaseGroupBackend, GroupSocket

    class _Joining(GroupSocket, Protocol):
        # The self of the mixins' methods: a connection combined with a mixin.
        id: str
        _group_backend: BaseGroupBackend | None
        _user_id_of: Any

        def _user_id(self) -> Any: ...

        def _ensure_accepted(self) -> None: ...

    class _AsyncJoining(GroupSocket, Protocol):
        id: str
        _group_backend: BaseGroupBackend | None
        _user_id_of: Any

        def _user_id(self) -> Any: ...

        async def _ensure_accepted(self) -> None: ...

    #: What ``exclude`` of :func:`send` takes: a socket or its id, or an iterable of them.
    Exclude: TypeAlias = (
        "WebSocketConnection | AsyncWebSocketConnection | str"
        " | Iterable[WebSocketConnection | AsyncWebSocketConnection | str] | None"
    )

__all__ = [
    "send",
    "send_json",
    "count",
    "members",
    "Member",
    "configure",
    "stats",
    "get_backend",
    "SLOW_CONSUMER_POLICIES",
    "GroupsMixin",
    "AsyncGroupsMixin",
    "GroupWebSocket",
    "BackendUnavailable",
]

_backend: BaseGroupBackend | None = None
_backend_lock = threading.Lock()


def _config() -> tuple[type[BaseGroupBackend], dict[str, Any]]:
    # The backend's class and its configuration: WEBSOCKET_GROUPS over the defaults, the
    # class's own defaults (default_config) under both.
    config = {**DEFAULTS["WEBSOCKET_GROUPS"], **settings.WEBSOCKET_GROUPS}
    try:
        cls = import_string(config["BACKEND"])
    except ImportError as exc:
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured(f"WEBSOCKET_GROUPS['BACKEND'] {config['BACKEND']!r}: {exc}") from exc
    return cls, {**getattr(cls, "default_config", {}), **config}


def uses_memory_backend() -> bool:
    """Whether ``WEBSOCKET_GROUPS`` names the in-memory backend (or a subclass): one that
    reaches the sockets of this process only. Servers that run several processes warn then."""
    from .memory import MemoryGroupBackend

    cls, _ = _config()
    return isinstance(cls, type) and issubclass(cls, MemoryGroupBackend)


def get_backend() -> BaseGroupBackend:
    """The group backend of this process, built from ``WEBSOCKET_GROUPS`` (read at each call:
    a change of the setting, or a fork, gives a new backend)."""
    global _backend
    cls, config = _config()
    backend = _backend
    pid = os.getpid()
    if backend is not None and backend.pid == pid and backend.config == config:
        return backend
    with _backend_lock:
        backend = _backend
        if backend is None or backend.pid != pid or backend.config != config:
            if backend is not None and backend.pid == pid:
                backend.close()
            # After a fork the parent's backend is left alone: its threads did not follow.
            backend = _backend = cls(config)
    return backend


def _exclude_ids(exclude: Exclude) -> frozenset[str]:
    if exclude is None:
        return frozenset()
    if isinstance(exclude, (str, GroupsMixin)):
        exclude = (exclude,)
    # Else an iterable: every connection is a GroupsMixin (handler.py), though the protocols of
    # django_websocket.types cannot say so.
    items = cast("Iterable[WebSocketConnection | AsyncWebSocketConnection | str]", exclude)
    return frozenset(item if isinstance(item, str) else item.id for item in items)


def send(group: str, message: Sendable, *, exclude: Exclude = None) -> None:
    """Send ``message`` to every socket in ``group``: a ``str`` as text, bytes as binary.

    ``exclude`` is a socket (``request.websocket``), its ``id``, or an iterable of them, that
    will not get the message (the sender, typically). Returns once the message is handed to the
    backend, never waiting for a client. Raises :class:`BackendUnavailable` when the backend
    cannot carry it (Redis down): then nobody gets it.
    """
    validate_group(group)
    if isinstance(message, (bytearray, memoryview)):
        message = bytes(message)  # a copy: the caller may reuse its buffer once we return
    elif not isinstance(message, (str, bytes)):
        raise TypeError(f"a group message is str or bytes, not {type(message).__name__}: see send_json()")
    get_backend().send(group, message, _exclude_ids(exclude))


def send_json(
    group: str, data: Any, *, exclude: Exclude = None, cls: type[json.JSONEncoder] | None = None, **kwargs: Any
) -> None:
    """Send ``data`` encoded as JSON in a text message: with Django's encoder by default (dates,
    decimals and UUIDs included), else the ``cls`` given; ``kwargs`` go to ``json.dumps``."""
    send(group, json.dumps(data, cls=cls or DjangoJSONEncoder, **kwargs), exclude=exclude)


def count(group: str) -> int:
    """How many sockets are in ``group``: in this process on the in-memory backend, in every
    process on Redis. Raises :class:`BackendUnavailable` when Redis cannot answer."""
    validate_group(group)
    return get_backend().count(group)


def members(group: str) -> list[Member]:
    """The sockets in ``group``, as a list of :class:`Member` (``.user_id``, ``.info``, ``.id``,
    ``.joined_at``) in the order they joined: in this process on the in-memory backend, in every
    process on Redis. Raises :class:`BackendUnavailable` when Redis cannot answer."""
    validate_group(group)
    return get_backend().members(group)


def _json_copy(info: Any) -> Any:
    # What JSON gives back, whichever the backend: a member's info reads the same in memory and
    # from Redis, and later changes to the caller's object do not show.
    if info is None or isinstance(info, (str, int, float, bool)):
        return info
    try:
        return json.loads(json.dumps(info, cls=DjangoJSONEncoder))
    except TypeError as exc:
        raise TypeError(f"a group member's info must be JSON-serialisable: {exc}") from None


def configure(group: str, *, slow_consumer: str | None = None, queue_size: int | None = None) -> None:
    """Set how ``group`` treats the sockets of this process that cannot keep up with it.

    ``queue_size``: the messages of this group that may wait for one socket; ``slow_consumer``:
    what one more does, ``"close"`` (the socket, with 1008), ``"drop_oldest"`` (the oldest of
    the group's queued messages for that socket) or ``"drop_new"`` (the new message, for that
    socket). Either left out is ``WEBSOCKET_GROUPS``'s ``QUEUE_SIZE`` or ``SLOW_CONSUMER``.
    A ``group`` ending in ``*`` configures every group whose name starts with what precedes it
    (``"ticker:*"``); an exact name wins over prefixes, and a longer prefix over a shorter one.
    Called with neither option, it removes what was configured for ``group``.

    Applies to the messages delivered from then on, in this process (call it where every
    process runs it, such as an ``AppConfig.ready()``); it outlives changes of the settings.
    """
    base.configure(group, slow_consumer=slow_consumer, queue_size=queue_size)


def stats() -> dict[str, Any]:
    """Counters of this process's group deliveries since its backend was built, as a dict::

        {"total": {"delivered": ..., "dropped_oldest": ..., "dropped_new": ..., "closed_slow": ...,
                   "members": ..., "queued": ..., "behind": ...},
         "groups": {"ticker": {"delivered": ..., "dropped_oldest": ..., "dropped_new": ...,
                               "closed_slow": ..., "members": ..., "queued": ..., "behind": ...}}}

    ``delivered``: messages written to a member's connection (a frame that one message to 1,000
    members wrote counts 1,000); ``dropped_oldest``, ``dropped_new``: messages a full queue
    dropped; ``closed_slow``: sockets closed with 1008 for being too slow; ``members``: sockets
    in groups (in the totals: sockets in any group); ``queued``: messages waiting now;
    ``behind``: sockets with messages waiting now. A group is listed while it has members in
    this process, and for a minute or more after its last member left; the totals keep all.
    The backend's own counters come beside ``total`` and ``groups`` (Redis: ``subscriber_*``).
    """
    return get_backend().stats()


class GroupsMixin:
    """Gives a :class:`~django_websocket.websocket.WebSocket` ``join``, ``leave``, ``groups``
    and an ``id`` unique across processes (what ``exclude`` matches).

    A class combining it with :class:`~django_websocket.websocket.WebSocket` declares the slots
    ``id``, ``_group_backend`` and ``_user_id_of`` (a mixin with slots of its own could not be
    combined with it). ``_user_id_of`` is a function giving the id of the request's user, set by
    the Django layer that made the socket (:mod:`django_websocket.handler`), or None.
    """

    __slots__ = ()

    # The slots of the class combining the mixin with a connection (see above).
    id: str
    _group_backend: BaseGroupBackend | None
    _user_id_of: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.id = uuid.uuid4().hex  # type: ignore[misc]  # a slot of the combining class
        self._group_backend = None  # type: ignore[misc]
        self._user_id_of = None

    def _user_id(self) -> Any:
        user_id_of = self._user_id_of
        return user_id_of() if user_id_of is not None else None

    def join(self: _Joining, group: str, info: Any = None) -> None:
        """Put this socket in ``group``, then accept the connection if it was not yet.

        ``info`` is JSON data that :func:`members` tells with the socket (a name, a status);
        joining a group again replaces it. The socket's user (``request.user.pk``, if logged
        in) is recorded too. The membership is in place (with Redis: the subscription too)
        before the ``101`` goes out, so a client that sees its connection open gets every group
        message sent after, when the view joins before it first sends or waits.
        """
        info = _json_copy(info)
        backend = get_backend()
        self._group_backend = backend
        backend.join(group, self, info=info, user_id=self._user_id())
        self._ensure_accepted()

    def leave(self: _Joining, group: str) -> None:
        """Take this socket out of ``group``; leaving a group it is not in does nothing. With
        Redis, returns once the other processes' :func:`members` no longer tell it (bounded)."""
        if self._group_backend is not None:
            self._group_backend.leave(group, self)

    @property
    def groups(self: _Joining) -> frozenset[str]:
        """The groups this socket is in."""
        if self._group_backend is None:
            return frozenset()
        return self._group_backend.groups_of(self)


class AsyncGroupsMixin(GroupsMixin):
    """:class:`GroupsMixin` for an :class:`~django_websocket.events.AsyncWebSocket`: ``join``
    and ``leave`` are coroutines (joining may wait for the backend: Redis subscribes first)."""

    __slots__ = ()

    async def join(self: _AsyncJoining, group: str, info: Any = None) -> None:  # type: ignore[override]
        """Put this socket in ``group``, then accept the connection if it was not yet."""
        import asyncio
        import functools

        from asgiref.sync import sync_to_async

        info = _json_copy(info)
        # request.user may query the database: in Django's thread for such work.
        user_id = await sync_to_async(self._user_id)() if self._user_id_of is not None else None
        backend = get_backend()
        self._group_backend = backend
        join = functools.partial(backend.join, group, self, info=info, user_id=user_id)
        await asyncio.get_running_loop().run_in_executor(None, join)
        await self._ensure_accepted()

    async def leave(self: _AsyncJoining, group: str) -> None:  # type: ignore[override]
        """Take this socket out of ``group``; leaving a group it is not in does nothing."""
        import asyncio

        if self._group_backend is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._group_backend.leave, group, self)


class GroupWebSocket(GroupsMixin, WebSocket):
    """A :class:`~django_websocket.websocket.WebSocket` that can join groups."""

    __slots__ = ("id", "_group_backend", "_user_id_of")
