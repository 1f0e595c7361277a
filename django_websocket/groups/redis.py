"""The Redis group backend: group messages between processes and hosts, through Redis pub/sub.

Every process publishes a group message on the channel ``PREFIX + group``. A process that holds
members (it joined at least one socket) keeps **one** subscriber connection to Redis, with one
pattern subscription ``PREFIX*``, read by one listener thread that hands each message to the
process's own members. Joining and leaving are local bookkeeping, effective at once: nothing is
sent to Redis per socket or per group.

Pub/sub semantics: a message reaches the processes subscribed at the moment it is published and is
never stored. While a process is disconnected from Redis, the messages meant for its sockets are
lost; the listener reconnects by itself, with backoff, and delivery resumes. A ``send`` while
Redis is down raises :class:`~django_websocket.groups.BackendUnavailable` within the socket
timeouts (``OPTIONS``); it never waits for Redis to come back.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Iterable
from types import ModuleType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from django.core.exceptions import ImproperlyConfigured

from .base import BackendUnavailable, BaseGroupBackend

if TYPE_CHECKING:
    from redis.backoff import NoBackoff
    from redis.client import PubSub
    from redis.retry import Retry

__all__ = ["RedisGroupBackend"]

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


def encode(message: str | bytes, exclude: Iterable[str]) -> bytes:
    """A group message as one Redis payload: kind, the excluded socket ids, then the message."""
    if isinstance(message, str):
        kind, payload = _TEXT, message.encode("utf-8")
    else:
        kind, payload = _BINARY, bytes(message)
    # Socket ids are hex strings: neither ',' nor '\n' can occur in them.
    return b"".join((kind, ",".join(sorted(exclude)).encode("ascii"), b"\n", payload))


def decode(data: bytes) -> tuple[str | bytes, frozenset[str]]:
    """The inverse of :func:`encode`: ``(message, exclude)``."""
    end = data.index(b"\n")
    kind, exclude, payload = data[:1], data[1:end], data[end + 1 :]
    if kind == _TEXT:
        message: str | bytes = payload.decode("utf-8")
    elif kind == _BINARY:
        message = payload
    else:
        raise ValueError(f"unknown group message kind {kind!r}")
    return message, frozenset(exclude.decode("ascii").split(",")) if exclude else frozenset()


def _glob_escape(text: str) -> str:
    # PSUBSCRIBE patterns are globs: the prefix must match only itself.
    return "".join("\\" + char if char in "*?[]\\" else char for char in text)


def _redact(url: str) -> str:
    # For log lines and errors: never print a password.
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + netloc))


class RedisGroupBackend(BaseGroupBackend):
    """``WEBSOCKET_GROUPS = {"BACKEND": "django_websocket.groups.redis.RedisGroupBackend",
    "LOCATION": "redis://127.0.0.1:6379/0", "PREFIX": "django_websocket:", "OPTIONS": {}}``.

    ``OPTIONS`` are keyword arguments of ``redis.Redis.from_url`` (timeouts, TLS, credentials).
    """

    default_config = {"LOCATION": "redis://127.0.0.1:6379/0", "PREFIX": "django_websocket:", "OPTIONS": {}}

    #: Seconds between reconnection attempts: from the first to the last, doubled each time.
    backoff_initial = 0.1
    backoff_max = 5.0
    #: Seconds the subscriber connection may stay silent before it is pinged, and then how long
    #: the answer may take before the connection is deemed dead (a host that vanished sends no
    #: FIN: without this the listener would wait forever).
    idle_ping = 15.0
    ping_timeout = 10.0
    #: How long the first join of a process waits for the subscription to be in place.
    first_join_timeout = 5.0
    _poll = 1.0  # the listener's longest blocking read: it checks for stop and pings between

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self._redis, Retry, NoBackoff = _import_redis()
        self.location = config["LOCATION"]
        self.safe_location = _redact(self.location)
        self.prefix = config["PREFIX"]
        self._prefix_bytes = self.prefix.encode("utf-8")
        options = {"socket_connect_timeout": 2.0, "socket_timeout": 2.0, **config.get("OPTIONS", {})}
        try:
            # Publishing: retry once at once, so that the first send after a Redis restart
            # replaces the pool's dead connection instead of failing.
            self._publisher = self._redis.Redis.from_url(self.location, **{"retry": Retry(NoBackoff(), 1), **options})
            # Subscribing: no retries of redis-py's own; the listener reconnects with backoff.
            self._subscriber = self._redis.Redis.from_url(
                self.location, **{**options, "retry": Retry(NoBackoff(), 0), "health_check_interval": 0}
            )
        except ValueError as exc:
            raise ImproperlyConfigured(f"WEBSOCKET_GROUPS['LOCATION'] {self.safe_location!r}: {exc}") from exc
        self._pattern = _glob_escape(self.prefix) + "*"
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._subscribed = threading.Event()  # set while the pattern subscription is in place
        self._first_attempt = threading.Event()  # set once the first connection attempt ended
        self._start_lock = threading.Lock()
        self._warned_down = False
        self._down_since: float | None = None  # monotonic time the subscription was lost or first failed

    # --- sending ------------------------------------------------------------------------------

    def send(self, group: str, message: str | bytes, exclude: frozenset[str] = frozenset()) -> None:
        channel = self._prefix_bytes + group.encode("utf-8")
        try:
            self._publisher.publish(channel, encode(message, exclude))
        except self._redis.RedisError as exc:
            raise BackendUnavailable(
                f"Could not send to group {group!r}: Redis at {self.safe_location} is unavailable ({exc}). "
                "Nothing was sent."
            ) from exc

    # --- receiving ----------------------------------------------------------------------------

    def joined(self, group: str) -> None:
        if self._thread is None:
            with self._start_lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._listen, name="websocket-groups-redis", daemon=True)
                    self._thread.start()
        # A message sent right after the first join must not be missed: wait (bounded) until
        # the subscription is in place, or until Redis proved unreachable.
        self._first_attempt.wait(self.first_join_timeout)
        if not self._subscribed.is_set() and not self._warned_down:
            self._warned_down = True
            logger.warning(
                "Joined group %r while Redis at %s is unavailable: its messages reach this process "
                "once the connection is back",
                group,
                self.safe_location,
            )

    def _listen(self) -> None:
        delay = self.backoff_initial
        while not self._stopping.is_set():
            pubsub = self._subscriber.pubsub()
            try:
                pubsub.psubscribe(self._pattern)
                self._read(pubsub)
            except Exception as exc:  # connection lost or refused, or any surprise: reconnect
                if self._subscribed.is_set():
                    self._subscribed.clear()
                    self._down_since = time.monotonic()
                    delay = self.backoff_initial
                    logger.warning(
                        "Lost the subscription to Redis at %s (%s): group messages for this process "
                        "are lost until it is back; reconnecting",
                        self.safe_location,
                        exc,
                    )
                elif self._down_since is None:
                    self._down_since = time.monotonic()
                    logger.warning("Cannot subscribe to Redis at %s (%s); retrying", self.safe_location, exc)
                else:
                    logger.debug("Redis at %s still unavailable: %s", self.safe_location, exc)
            finally:
                try:
                    pubsub.close()
                except Exception:
                    pass
                self._first_attempt.set()
            # Full jitter: processes that lost Redis together do not all come back at once.
            self._stopping.wait(random.uniform(delay / 2, delay))
            delay = min(delay * 2, self.backoff_max)

    def _read(self, pubsub: PubSub) -> None:
        last_heard = time.monotonic()
        ping_sent: float | None = None
        while not self._stopping.is_set():
            message = pubsub.get_message(timeout=self._poll)
            now = time.monotonic()
            if message is None:
                if ping_sent is not None:
                    if now - ping_sent > self.ping_timeout:
                        raise self._redis.ConnectionError(f"no answer to PING within {self.ping_timeout}s")
                elif now - last_heard > self.idle_ping:
                    pubsub.ping()
                    ping_sent = now
                continue
            last_heard, ping_sent = now, None
            kind = message["type"]
            if kind == "pmessage":
                self._on_message(message["channel"], message["data"])
            elif kind == "psubscribe":
                self._on_subscribed()

    def _on_subscribed(self) -> None:
        self._subscribed.set()
        self._first_attempt.set()
        if self._down_since is not None:
            logger.warning(
                "Subscribed to Redis at %s again after %.1fs: group messages flow",
                self.safe_location,
                time.monotonic() - self._down_since,
            )
            self._down_since = None
        else:
            logger.info("Subscribed to Redis at %s for groups (channels %s*)", self.safe_location, self.prefix)
        self._warned_down = False

    def _on_message(self, channel: bytes, data: bytes) -> None:
        try:
            group = channel[len(self._prefix_bytes) :].decode("utf-8")
            message, exclude = decode(data)
        except (ValueError, UnicodeDecodeError) as exc:
            logger.warning("Dropped a malformed group message on channel %r: %s", channel, exc)
            return
        try:
            self.deliver(group, message, exclude)
        except Exception:
            logger.exception("Delivering a message of group %r failed", group)

    # --- life cycle ---------------------------------------------------------------------------

    def close(self) -> None:
        self._stopping.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(self._poll + 2.0)
        super().close()
        for client in (self._publisher, self._subscriber):
            try:
                client.close()
            except Exception:
                pass
