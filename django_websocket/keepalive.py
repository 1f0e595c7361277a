"""Keepalive: ping connections that went silent and fail those whose peer stopped answering.

One watcher thread per process serves every connection (under gevent's monkey-patching it is a
greenlet), so no connection needs a thread of its own for this. Only bytes *received* count as
life: a connection is pinged after ``ping_interval`` seconds without any, and failed with 1011
when no pong (or anything else) arrives within ``ping_timeout`` (RFC 6455 §5.5.2-§5.5.3).

The watcher never waits for a connection: it only tries each connection's locks and writes what
the socket takes at once (see :mod:`django_websocket.websocket`). A view blocked sending to a
client that stopped reading therefore delays nobody else's keepalive, and a silent peer is
failed within ``ping_interval + ping_timeout`` and one tick, whatever the other connections do.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .websocket import WebSocket

logger = logging.getLogger("django_websocket")

# Every handshake adds to this set, the watcher copies it and removes ended connections: each of
# these is one operation on the set (atomic under the GIL, and under the set's own lock in a
# free-threaded build; connections hash by identity, no Python code runs), so no lock is taken.
# A lock here, taken by every accept() around Thread.is_alive() (which under gevent switches to
# the hub), made the handshakes of a burst queue behind one another, each one's turn coming
# through the hub: thousands of views, and their requests, stayed alive until the burst ended.
_watched: set[WebSocket] = set()
_lock = threading.Lock()  # only to start the watcher once
# Whether the watcher runs, and in which process (a forked child has none). Not
# Thread.is_alive(): under gevent each call on a live thread switches to the hub and back.
_running = False
_pid = 0


def watch(websocket: WebSocket) -> None:
    """Keep ``websocket`` alive until it closes (its ``ping_interval`` must be set)."""
    _watched.add(websocket)
    if not _running or _pid != os.getpid():
        _start()


def _start() -> None:
    global _running, _pid
    with _lock:
        if _running and _pid == os.getpid():
            return  # started by another caller
        _running, _pid = True, os.getpid()
        thread = threading.Thread(target=_run, name="websocket-keepalive", daemon=True)
    # Started outside the lock: start() waits for the new thread to run (under gevent, a switch).
    try:
        thread.start()
    except BaseException:
        _running = False  # the next watch() tries again
        raise


def _tick_interval(connections: Iterable[WebSocket]) -> float:
    shortest = 1.0
    for ws in connections:
        for value in (ws.ping_interval, ws.ping_timeout):
            if value and value < shortest * 4:
                shortest = value / 4
    return max(0.05, shortest)


def _run() -> None:
    global _running
    try:
        _watch_forever()
    finally:
        _running = False


def _watch_forever() -> None:
    while True:
        connections = list(_watched)
        pause = _tick_interval(connections)
        now = time.monotonic()
        ended = []
        for websocket in connections:
            try:
                if not check(websocket, now):
                    ended.append(websocket)
            except Exception:  # one bad connection must not stop keepalive for the others
                logger.exception("Keepalive check of %r failed", websocket)
        if ended:
            _watched.difference_update(ended)
        time.sleep(pause)


def check(websocket: WebSocket, now: float | None = None) -> bool:
    """Ping ``websocket`` if it went silent; fail it if its peer stopped answering. Never
    blocks. Returns False once the connection is over (it needs watching no more)."""
    if websocket.closed:
        return False
    now = time.monotonic() if now is None else now
    if websocket.reading_paused:
        # The view is not reading and its queue is full: the peer sent us more than the view
        # read, so it is alive; what it sends now waits in TCP's buffers, pongs included.
        websocket.ping_sent = None
        websocket.last_received = now
        return True
    sent = websocket.ping_sent  # read once: the connection's reader may clear it meanwhile
    if sent is not None:
        # Read whatever arrived (the pong) if no one else is reading right now.
        websocket._pull(blocking=False)
        if websocket.last_received > sent:
            websocket.ping_sent = None  # something arrived after the ping: the peer is alive
        elif websocket.ping_timeout and now - sent > websocket.ping_timeout:
            websocket.fail(1011, "keepalive ping timeout")
            return False
        return True
    if now - websocket.last_received >= websocket.ping_interval:  # type: ignore[operator]  # set: see watch()
        websocket.ping_sent = now
        if not websocket._send_keepalive_ping():
            return False
    elif websocket._out:
        websocket._flush(blocking=False)  # what another thread could not write at once
    return True
