"""Keepalive: ping connections that went silent and fail those whose peer stopped answering.

One watcher thread per process serves every connection (under gevent's monkey-patching it is a
greenlet), so no connection needs a thread of its own for this. Only bytes *received* count as
life: a connection is pinged after ``ping_interval`` seconds without any, and failed with 1011
when no pong (or anything else) arrives within ``ping_timeout`` (RFC 6455 §5.5.2-§5.5.3).
"""

import logging
import threading
import time

logger = logging.getLogger("django_websocket")

_watched = set()
_lock = threading.Lock()
_thread = None


def watch(websocket):
    """Keep ``websocket`` alive until it closes (its ``ping_interval`` must be set)."""
    global _thread
    with _lock:
        _watched.add(websocket)
        if _thread is None or not _thread.is_alive():
            _thread = threading.Thread(target=_run, name="websocket-keepalive", daemon=True)
            _thread.start()


def _tick_interval():
    intervals = [ws.ping_interval for ws in _watched if ws.ping_interval]
    timeouts = [ws.ping_timeout for ws in _watched if ws.ping_timeout]
    shortest = min(intervals + timeouts, default=1.0)
    return max(0.05, min(1.0, shortest / 4))


def _run():
    while True:
        with _lock:
            connections = list(_watched)
            pause = _tick_interval()
        for websocket in connections:
            if websocket.closed:
                with _lock:
                    _watched.discard(websocket)
                continue
            try:
                check(websocket)
            except Exception:  # one bad connection must not stop keepalive for the others
                logger.exception("Keepalive check of %r failed", websocket)
        time.sleep(pause)


def check(websocket, now=None):
    """Ping ``websocket`` if it went silent; fail it if its peer stopped answering."""
    if websocket.ping_sent is not None:
        # Read whatever arrived (the pong) if the view is not reading right now.
        websocket._pull(accept=False)
    now = time.monotonic() if now is None else now
    if websocket.ping_sent is not None:
        if websocket.last_received > websocket.ping_sent:
            websocket.ping_sent = None  # something arrived after the ping: the peer is alive
        elif websocket.ping_timeout and now - websocket.ping_sent > websocket.ping_timeout:
            websocket.fail(1011, "keepalive ping timeout")
        return
    if now - websocket.last_received >= websocket.ping_interval:
        from .exceptions import ConnectionClosed

        try:
            websocket.ping_sent = now
            websocket.ping(b"keepalive")
        except ConnectionClosed:
            pass
