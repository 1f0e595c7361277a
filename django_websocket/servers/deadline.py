"""One deadline for a whole request head, for the servers that run a thread per connection.

:setting:`WEBSOCKET_HANDSHAKE_TIMEOUT` bounds the time from when a server starts waiting for a
request until the end of its headers. A timeout on each read would not: a client sending one
byte just inside it, again and again (slowloris), would hold a thread forever. And a socket
timeout left in place after the headers would bound the rest of the exchange too, cutting a
large response or a slow upload, which the server itself does not. So the deadline ends with
the headers, and the socket gets back the timeout it had.

Under gevent a ``gevent.Timeout`` is such a deadline (see :mod:`django_websocket.servers.gevent`).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import socket
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

__all__ = ["HeadTimeout", "HeadDeadlineReader", "HeadWatchdog"]

logger = logging.getLogger("django_websocket")


class HeadTimeout(TimeoutError):
    """The client did not send its request head in time."""


class HeadDeadlineReader(socket.SocketIO):
    """The raw reader under a request handler's buffered ``rfile``: while a deadline is set,
    each read waits only for the time left before it, so that the buffered reader on top (its
    ``readline`` too) honours one deadline for all its reads.

    ``start(seconds)`` sets the deadline, ``end()`` lifts it and gives the socket back its
    timeout; past the deadline a read raises :exc:`HeadTimeout`.
    """

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(sock, "rb")
        self._socket = sock
        self._timeout = sock.gettimeout()
        self._deadline: float | None = None

    def start(self, seconds: float) -> None:
        self._deadline = time.monotonic() + seconds

    def end(self) -> None:
        if self._deadline is not None:
            self._deadline = None
            self._socket.settimeout(self._timeout)

    def readinto(self, buffer: WriteableBuffer) -> int | None:
        if self._deadline is None:
            return super().readinto(buffer)
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise HeadTimeout("request head not received in time")
        self._socket.settimeout(left)
        try:
            return super().readinto(buffer)
        except TimeoutError:
            raise HeadTimeout("request head not received in time") from None


class _Watch:
    __slots__ = ("sock", "state")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.state = "armed"  # then "ended" or "fired"


class HeadWatchdog:
    """Shuts down the connections whose request head is overdue, from one thread of its own.

    For servers whose request parser reads the socket where no timeout can be slipped in (the
    gthread worker): shutting the socket down makes the blocked read return the end of the
    stream, which the server handles as a client that went away. Each watch holds a duplicate
    of the connection's descriptor, so that the shutdown can never reach a descriptor number
    reused by another connection in the meantime.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, _Watch]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def watch(self, sock: socket.socket, seconds: float) -> _Watch:
        """Shut ``sock`` down in ``seconds`` unless :meth:`end` is called first."""
        watch = _Watch(socket.fromfd(sock.fileno(), sock.family, sock.type))
        deadline = time.monotonic() + seconds
        with self._cond:
            if self._thread is None:
                # Started on first use: in the worker process, not in gunicorn's arbiter.
                self._thread = threading.Thread(target=self._run, name="websocket-head-deadline", daemon=True)
                self._thread.start()
            heapq.heappush(self._heap, (deadline, next(self._order), watch))
            if self._heap[0][2] is watch:
                self._cond.notify()
        return watch

    def end(self, watch: _Watch) -> bool:
        """The head arrived in time: True, unless the deadline has just passed (the socket is
        then shut down, and the request must be dropped)."""
        with self._cond:
            if watch.state == "armed":
                watch.state = "ended"
        if watch.state == "ended":
            watch.sock.close()
            return True
        return False

    def _run(self) -> None:
        with self._cond:
            while True:
                if not self._heap:
                    self._cond.wait()
                    continue
                deadline, _, watch = self._heap[0]
                if watch.state == "armed":
                    left = deadline - time.monotonic()
                    if left > 0:
                        self._cond.wait(left)
                        continue
                    watch.state = "fired"
                    logger.debug("Request head not received within the handshake timeout: dropping the connection")
                    try:
                        watch.sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass  # already gone
                    watch.sock.close()
                heapq.heappop(self._heap)
