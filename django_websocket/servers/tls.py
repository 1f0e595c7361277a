"""A TLS socket that several threads may use at once, for the servers that run a WebSocket's
view in a thread of its own (gunicorn's gthread worker with ``--certfile``).

A WebSocket is read by its view's thread while other threads send to it (a group message, a
keepalive ping, another request's ``send()``). On a plain socket that is safe: the kernel keeps
the two directions apart. On an ``ssl.SSLSocket`` both go through one OpenSSL ``SSL`` object,
which must not be used by two threads at a time. :class:`SerializedTLSSocket` makes every SSL
call under one lock, on a socket kept non-blocking so that no call holds the lock while it
waits: it waits for readiness outside the lock, then tries again.
"""

from __future__ import annotations

import errno
import select
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

_T = TypeVar("_T")

__all__ = ["SerializedTLSSocket"]

_READABLE = select.POLLIN | select.POLLPRI | select.POLLERR | select.POLLHUP
_WRITABLE = select.POLLOUT | select.POLLERR | select.POLLHUP


class SerializedTLSSocket:
    """Wraps a connected ``ssl.SSLSocket`` (whose handshake is done) for a WebSocket.

    ``recv()`` and ``send()`` block for some progress up to the timeout of :meth:`settimeout`
    (``None``: no limit; ``0``: not at all, raising ``BlockingIOError``), then raise
    ``TimeoutError``; ``sendall()`` bounds the whole call by it, as a socket's does.
    """

    def __init__(self, sock: ssl.SSLSocket) -> None:
        self._sock = sock
        self._lock = threading.Lock()
        self._timeout = sock.gettimeout()
        sock.setblocking(False)

    # --- timeouts ------------------------------------------------------------------------------

    def settimeout(self, timeout: float | None) -> None:
        if timeout is not None and timeout < 0:
            raise ValueError("Timeout value out of range")
        self._timeout = timeout

    def gettimeout(self) -> float | None:
        return self._timeout

    def setblocking(self, flag: bool) -> None:
        self._timeout = None if flag else 0.0

    # --- I/O -----------------------------------------------------------------------------------

    def recv(self, bufsize: int) -> bytes:
        return self._call(self._sock.recv, bufsize, events=_READABLE)

    def send(self, data: bytes | bytearray | memoryview) -> int:
        return self._call(self._sock.send, data, events=_WRITABLE)

    def sendall(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data).cast("B")
        deadline = None if self._timeout is None else time.monotonic() + self._timeout
        while view:
            sent = self._call(self._sock.send, view, events=_WRITABLE, deadline=deadline)
            view = view[sent:]

    def pending(self) -> int:
        with self._lock:
            return self._sock.pending()

    def shutdown(self, how: int) -> None:
        with self._lock:
            self._sock.shutdown(how)

    def close(self) -> None:
        with self._lock:
            self._sock.close()

    def fileno(self) -> int:
        return self._sock.fileno()

    def getpeername(self) -> Any:
        return self._sock.getpeername()

    def getsockname(self) -> Any:
        return self._sock.getsockname()

    def _call(self, method: Callable[..., _T], *args: Any, events: int, deadline: float | None = None) -> _T:
        if deadline is None and self._timeout:
            deadline = time.monotonic() + self._timeout
        while True:
            with self._lock:
                try:
                    return method(*args)
                except ssl.SSLWantReadError:
                    wait_for = _READABLE  # also while sending: TLS may need to read first
                except ssl.SSLWantWriteError:
                    wait_for = _WRITABLE
                except BlockingIOError:
                    wait_for = events  # no TLS any more (after shutdown): the plain socket's
            if self._timeout == 0:
                raise BlockingIOError("the operation would block")
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise TimeoutError("timed out")
            # Outside the lock, so that the other direction goes on meanwhile. Bounded slices:
            # should another thread's SSL call have taken in what this one waits for, the
            # socket would not show it, and the next try finds it.
            fd = self._sock.fileno()
            if fd < 0:
                raise OSError(errno.EBADF, "the socket was closed")
            poller = select.poll()
            poller.register(fd, wait_for)
            poller.poll(_SLICE_MS if left is None else min(_SLICE_MS, max(1, int(left * 1000 + 0.999))))


#: Longest single wait for readiness, in milliseconds (see _call).
_SLICE_MS = 1000
