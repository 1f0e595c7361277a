"""Testing WebSocket views: an in-process client, and a live server that speaks WebSocket.

:class:`WebSocketClient` drives a view through the project's real URLconf, middleware and
decorators without any server: the view gets one end of a ``socket.socketpair()`` through a
:class:`~django_websocket.websocket.Handover`, and runs in a thread of its own on Django's
``WSGIHandler``, as it would under ``runserver``; the client speaks WebSocket on the other end.
It shares its cookies with a Django test :class:`~django.test.Client`, so ``force_login()`` and
``login()`` give the view its ``request.user``, and its thread shares the test's database
connections, so it sees the data of a :class:`~django.test.TestCase`'s transaction.

:class:`WebSocketLiveServerTestCase` is Django's ``LiveServerTestCase`` with a server that can
upgrade connections, for tests with a real client or a browser.

With pytest, ``from django_websocket.testing import websocket_client`` in a ``conftest.py``
gives tests the :func:`websocket_client` fixture.
"""

from __future__ import annotations

import base64
import collections
import json
import os
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Generator, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any

from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import got_request_exception, request_started
from django.db import connections
from django.test import Client, LiveServerTestCase, RequestFactory
from django.test.testcases import LiveServerThread
from django.utils.functional import classproperty

from .frames import CloseCode, Opcode, parse_close, serialize_close, serialize_frame
from .handshake import accept_key
from .servers.devserver import ThreadedWebSocketWSGIServer
from .websocket import ENVIRON_KEY, Handover

if TYPE_CHECKING:
    import asyncio

    from django.contrib.auth.base_user import AbstractBaseUser
    from django.db.backends.base.base import BaseDatabaseWrapper
    from django.http.response import HttpResponseBase

    from .protocol import ServerProtocol

    _ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]

__all__ = [
    "WebSocketClient",
    "WebSocketLiveServerThread",
    "WebSocketLiveServerTestCase",
    "websocket_client",
]

#: Seconds a :class:`WebSocketClient` waits for anything by default.
DEFAULT_TIMEOUT = 5.0

_READ_SIZE = 65536


# --- the view's thread and the test's database connections --------------------------------------
#
# In a TestCase, the test's data lives in a transaction of the test thread's connections: the
# view thread must use those very connection objects to see it (and for the test to see the
# view's writes). Such a connection is inside an atomic block, which the production code never
# touches between messages or when the view goes idle: the view runs exactly the code it runs on
# a real server. What remains are Django's request signals: request_started and request_finished
# call close_old_connections(), which would close the test's connection (its autocommit differs
# from the settings'). Django's own test Client disconnects that receiver around each request;
# here the view thread simply takes the shared connections after request_started and gives
# them back before request_finished, so that both signals find only the thread's own ones.
# An in-memory SQLite database is shared too (as Django's live server does: other connections
# would not see its tables); closing such a connection is a no-op in Django.
# Outside a transaction (TransactionTestCase) the view thread has its own connections, as on a
# server.


def _connections_to_share() -> list[BaseDatabaseWrapper]:
    shared = []
    for conn in connections.all(initialized_only=True):
        in_memory = conn.vendor == "sqlite" and conn.is_in_memory_db()  # type: ignore[attr-defined]
        if conn.in_atomic_block or in_memory:
            shared.append(conn)
    return shared


class _EnvironFactory(RequestFactory):
    """Builds the WSGI environ of a request exactly as a test ``Client`` would (its defaults, its
    cookies), without running it."""

    def __init__(self, client: Client) -> None:
        super().__init__()
        self.defaults = client.defaults
        self.cookies = client.cookies
        self.errors = getattr(client, "errors", self.errors)

    def request(self, **request: Any) -> dict[str, Any]:  # type: ignore[override]  # the environ itself
        return self._base_environ(**request)  # type: ignore[attr-defined, no-any-return]


def _describe(message: object) -> str:
    text = repr(message)
    return text if len(text) <= 200 else text[:197] + "..."


def _describe_close(code: int | None, reason: str) -> str:
    if code == CloseCode.ABNORMAL_CLOSURE:
        return "closed the connection without a close frame (1006)"
    return f"closed the connection with code {code}" + (f" ({reason!r})" if reason else "")


class WebSocketClient:
    """A WebSocket client for tests that runs the view in-process, through the real URLconf,
    middleware and decorators.

    ``client`` is a Django test :class:`~django.test.Client` whose cookies (and so session and
    login) the WebSocket requests carry; by default a new one. ``timeout`` bounds every wait, in
    seconds. When the view raises, the exception is raised again in the test (at :meth:`connect`,
    or when the client sees the connection end), as the test ``Client`` does, unless
    ``raise_request_exception`` (by default the ``client``'s) is false.

    One object is one connection: :meth:`connect` once, then :meth:`send` and :meth:`receive`,
    and :meth:`close` (or use it as a context manager), which also checks that the view returned.
    """

    # Set by connect(): every use comes after it.
    _sock: socket.socket
    _thread: threading.Thread
    _handover: Handover | _ASGIConnection

    def __init__(
        self,
        client: Client | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        raise_request_exception: bool | None = None,
    ) -> None:
        self.client = Client() if client is None else client
        self.timeout = timeout
        if raise_request_exception is None:
            raise_request_exception = getattr(self.client, "raise_request_exception", True)
        self.raise_request_exception = raise_request_exception
        #: The path of :meth:`connect`.
        self.path: str | None = None
        #: Whether the view accepted the connection.
        self.accepted = False
        #: The subprotocol the view accepted, or None.
        self.subprotocol: str | None = None
        #: The :class:`~django.http.HttpResponse` of a refused handshake, else None.
        self.response: HttpResponseBase | None = None
        #: The close code the server sent (1006 if it closed the connection without one), once
        #: the client saw the end of the connection; else None.
        self.close_code: int | None = None
        #: The reason that came with :attr:`close_code`.
        self.close_reason = ""
        self._sock = None  # type: ignore[assignment]
        self._buf = bytearray()
        self._messages: collections.deque[str | bytes] = collections.deque()
        # (opcode, [payloads]) of a fragmented message being received
        self._fragments: tuple[int, list[bytes]] | None = None
        self._close_sent = False
        self._thread = None  # type: ignore[assignment]
        self._handover = None  # type: ignore[assignment]
        self._environ: dict[str, Any] | None = None
        self._exc_info: _ExcInfo | tuple[None, None, None] | None = None
        self._finished = False

    # --- authentication, on the shared test Client -------------------------------------------

    def force_login(self, user: AbstractBaseUser, backend: str | None = None) -> None:
        """Log ``user`` in for the requests of this client and of its test ``Client``."""
        self.client.force_login(user, backend)

    def login(self, **credentials: Any) -> bool:
        """As the test ``Client``'s ``login()``: True if the credentials were accepted."""
        return self.client.login(**credentials)

    def logout(self) -> None:
        """Log out, for this client and its test ``Client``."""
        self.client.logout()

    # --- the opening handshake ----------------------------------------------------------------

    def connect(
        self,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        subprotocols: Iterable[str] = (),
        secure: bool = False,
        timeout: float | None = None,
        **extra: Any,
    ) -> tuple[bool, str | int | None]:
        """Open a WebSocket to ``path`` (which may hold a query string) and wait for the view's answer.

        Returns ``(True, subprotocol)`` when the view accepted the connection (``subprotocol`` is
        None when none was chosen), ``(False, status)`` when it refused it with an HTTP response,
        which is then in :attr:`response`. ``headers`` are sent with the request (an ``Origin``,
        say), ``subprotocols`` are offered in ``Sec-WebSocket-Protocol``, and ``extra`` holds WSGI
        environ entries as for the test ``Client``.
        """
        if self.path is not None:
            raise RuntimeError("this WebSocketClient already connected once: use a new one per connection")
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        self.path = path
        key = base64.b64encode(os.urandom(16)).decode("ascii")
        handshake = {
            "HTTP_HOST": "testserver",
            "HTTP_UPGRADE": "websocket",
            "HTTP_CONNECTION": "Upgrade",
            "HTTP_SEC_WEBSOCKET_KEY": key,
            "HTTP_SEC_WEBSOCKET_VERSION": "13",
        }
        if subprotocols:
            handshake["HTTP_SEC_WEBSOCKET_PROTOCOL"] = ", ".join(subprotocols)
        environ: dict[str, Any] = _EnvironFactory(self.client).generic(  # type: ignore[assignment]
            "GET", path, secure=secure, headers=headers, **{**handshake, **extra}
        )
        view_sock, self._sock = socket.socketpair()
        self._handover = Handover(lambda: (view_sock, b""), detachable=True)
        environ[ENVIRON_KEY] = self._handover

        shared = _connections_to_share()
        if _resolves_to_async_view(environ["PATH_INFO"]):
            # An async view: served as an ASGI server serves it (django_websocket.asgi), the
            # frames of the connection done in process by _ASGIConnection.
            self._start_asgi(environ, view_sock, key, shared)
        else:
            self._start_wsgi(environ, view_sock, shared)

        head = self._read_response_head(deadline, timeout)

        if head is None:
            # The view returned without taking the connection: a refusal (or a crash).
            self._sock.close()
            self._finish()
            return False, self.response.status_code if self.response is not None else None
        status_line, _, header_lines = head.partition("\r\n")
        status = status_line.split(" ", 2)[1] if status_line.count(" ") >= 1 else status_line
        if status != "101":
            raise AssertionError(f"Expected 101 Switching Protocols from {path}, got {status_line!r}")
        response_headers = {}
        for line in header_lines.split("\r\n"):
            name, _, value = line.partition(":")
            response_headers[name.strip().lower()] = value.strip()
        if response_headers.get("sec-websocket-accept") != accept_key(key):
            raise AssertionError(f"Wrong Sec-WebSocket-Accept from {path}: {response_headers!r}")
        self.accepted = True
        self.subprotocol = response_headers.get("sec-websocket-protocol")
        return True, self.subprotocol

    def _start_wsgi(
        self, environ: dict[str, Any], view_sock: socket.socket, shared: list[BaseDatabaseWrapper]
    ) -> None:
        # The handler is built here, not in __init__, so that override_settings(MIDDLEWARE=...)
        # inside a test applies, as it does to the test Client.
        handler = WSGIHandler()
        self._share(shared, lambda environ=None, **kwargs: environ is self._environ)
        self._environ = environ
        self._thread = threading.Thread(
            target=self._serve,
            args=(handler, environ, view_sock, shared),
            name=f"WebSocketClient {self.path}",
            daemon=True,
        )
        self._thread.start()

    def _start_asgi(
        self, environ: dict[str, Any], view_sock: socket.socket, key: str, shared: list[BaseDatabaseWrapper]
    ) -> None:
        scope = _scope_from_environ(environ, self)
        self._share(shared, lambda scope=None, **kwargs: scope is not None and scope.get(_CLIENT_KEY) is self)
        connection = _ASGIConnection(self, _handler_giving_back(shared), scope, view_sock, key, shared)
        self._handover = connection
        self._thread = threading.Thread(target=connection.run, name=f"WebSocketClient {self.path}", daemon=True)
        self._thread.start()

    def _share(self, shared: list[BaseDatabaseWrapper], is_ours: Callable[..., bool]) -> None:
        # See the top of the module: the view takes the test's connections after request_started.
        for conn in shared:
            conn.inc_thread_sharing()
        if shared:

            def take_shared(sender: object, **kwargs: Any) -> None:
                if is_ours(**kwargs):
                    for conn in shared:
                        connections[conn.alias] = conn

            request_started.connect(take_shared, dispatch_uid=self._dispatch_uid, weak=False)
        got_request_exception.connect(self._store_exception, dispatch_uid=self._dispatch_uid, weak=False)

    @property
    def _dispatch_uid(self) -> str:
        return f"django_websocket.testing.{id(self)}"

    def _serve(
        self, handler: WSGIHandler, environ: dict[str, Any], view_sock: socket.socket, shared: list[BaseDatabaseWrapper]
    ) -> None:
        # The view's thread, which plays the part of a server's connection thread.
        try:
            response = handler(environ, lambda status, headers, exc_info=None: None)
            if not self._handover.taken:
                self.response = response
            # The test's connections go back before request_finished (see the top of the module).
            for conn in shared:
                if connections[conn.alias] is conn:
                    del connections[conn.alias]
            # As a server does once it is done with the response: sends request_finished.
            response.close()
        finally:
            if not self._handover.taken:
                # Nobody took the connection: the client sees its end, and reads the refusal.
                view_sock.close()
            request_started.disconnect(dispatch_uid=self._dispatch_uid)
            got_request_exception.disconnect(dispatch_uid=self._dispatch_uid)
            # Given back only now that nothing of the request can touch them any more, however
            # long the view ran after the test gave up on it.
            for conn in shared:
                conn.dec_thread_sharing()

    def _store_exception(self, sender: object, request: object = None, **kwargs: Any) -> None:
        # The request is this client's: its environ holds our handover, or its scope our mark.
        meta = getattr(request, "META", {})
        scope = getattr(request, "scope", {})
        if meta.get(ENVIRON_KEY) is self._handover or scope.get(_CLIENT_KEY) is self:
            self._exc_info = sys.exc_info()

    def _read_response_head(self, deadline: float, timeout: float) -> str | None:
        # The 101 response, or None when the view's end of the connection closed unused.
        while b"\r\n\r\n" not in self._buf:
            data = self._recv(deadline)
            if data is None:
                raise AssertionError(
                    f"Expected {self.path} to accept or refuse the WebSocket within {timeout}s, but its "
                    "view neither used request.websocket nor returned a response"
                )
            if not data:
                if self._buf:
                    raise AssertionError(f"Incomplete response from {self.path}: {bytes(self._buf)!r}")
                return None
            self._buf += data
        head, _, rest = bytes(self._buf).partition(b"\r\n\r\n")
        self._buf = bytearray(rest)
        return head.decode("latin-1")

    # --- sending ------------------------------------------------------------------------------

    def send(self, message: str | bytes | bytearray | memoryview) -> None:
        """Send ``message``: ``str`` as a text message, bytes-like as a binary one."""
        if isinstance(message, str):
            opcode, payload = Opcode.TEXT, message.encode("utf-8")
        elif isinstance(message, (bytes, bytearray, memoryview)):
            opcode, payload = Opcode.BINARY, bytes(message)
        else:
            raise TypeError(f"a WebSocket message is str or bytes, not {type(message).__name__}: see send_json()")
        self._require_open(f"send {_describe(message)}")
        self._send_frame(opcode, payload)

    def send_json(self, data: Any) -> None:
        """Send ``data`` as JSON in a text message."""
        self.send(json.dumps(data))

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        frame = serialize_frame(opcode, payload, mask=os.urandom(4))
        self._sock.settimeout(self.timeout)
        try:
            self._sock.sendall(frame)
        except TimeoutError:
            raise AssertionError(
                f"Could not send to {self.path} within {self.timeout}s: its view does not read"
            ) from None
        except OSError as exc:
            raise AssertionError(f"Could not send to {self.path}: the connection is gone ({exc})") from None

    def _require_open(self, what: str) -> None:
        if not self.accepted:
            raise AssertionError(f"Cannot {what}: the WebSocket is not connected (call connect() first)")
        if self.close_code is not None or self._close_sent:
            raise AssertionError(
                f"Cannot {what}: the connection to {self.path} is closed"
                + (f"; the server {_describe_close(self.close_code, self.close_reason)}" if self.close_code else "")
            )

    # --- receiving ----------------------------------------------------------------------------

    def receive(self, timeout: float | None = None) -> str | bytes:
        """Return the next message from the view (``str`` or ``bytes``), waiting up to ``timeout``.

        Fails the test when none comes in time, or when the server closes the connection instead
        (then with the view's exception, if it raised one).
        """
        timeout = self.timeout if timeout is None else timeout
        if not self._messages:
            if not self.accepted:
                raise AssertionError(f"Cannot receive: the WebSocket to {self.path} is not connected")
            self._read_until(lambda: self._messages, time.monotonic() + timeout)
        if self._messages:
            return self._messages.popleft()
        if self.close_code is not None:
            self._view_ended()
            self._raise_view_exception()
            closed = _describe_close(self.close_code, self.close_reason)
            raise AssertionError(f"Expected a message from {self.path}, but the server {closed}")
        raise AssertionError(f"Expected a message from {self.path} within {timeout}s, but none came")

    def receive_json(self, timeout: float | None = None) -> Any:
        """Return the next message decoded from JSON; fails the test if it is not JSON text."""
        message = self.receive(timeout)
        if not isinstance(message, str):
            raise AssertionError(f"Expected a JSON text message from {self.path}, got binary {_describe(message)}")
        try:
            return json.loads(message)
        except ValueError as exc:
            raise AssertionError(f"Expected a JSON text message from {self.path}, got {_describe(message)}: {exc}")

    def receive_nothing(self, timeout: float = 0.1) -> bool:
        """Whether no message arrives within ``timeout`` seconds (one that does stays queued)."""
        if not self._messages and self.accepted:
            self._read_until(lambda: self._messages, time.monotonic() + timeout)
        return not self._messages

    def wait_closed(self, timeout: float | None = None) -> int:
        """Wait until the server closes the connection and return its close code.

        Fails the test if a message comes first (read it with :meth:`receive` before), or when
        the connection stays open for ``timeout`` seconds.
        """
        timeout = self.timeout if timeout is None else timeout
        if not self.accepted:
            raise AssertionError(f"Cannot wait for the close: the WebSocket to {self.path} is not connected")
        self._read_until(lambda: self._messages, time.monotonic() + timeout)
        if self._messages:
            raise AssertionError(
                f"Expected {self.path} to close the connection, but it sent {_describe(self._messages[0])}"
            )
        if self.close_code is None:
            raise AssertionError(f"Expected {self.path} to close the connection within {timeout}s, but it stayed open")
        self._view_ended()
        self._raise_view_exception()
        return self.close_code

    def _recv(self, deadline: float) -> bytes | None:
        # b"" at the end of the connection, None when the deadline passed first.
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        self._sock.settimeout(left)
        try:
            return self._sock.recv(_READ_SIZE)
        except TimeoutError:
            return None
        except OSError:
            return b""

    def _read_until(self, done: Callable[[], object], deadline: float) -> None:
        # Read frames until done() is true, the connection ends, or the deadline passes.
        while not done() and self.close_code is None:
            if not self._process_frames():
                data = self._recv(deadline)
                if data is None:
                    return
                if not data:
                    self._connection_lost()
                    return
                self._buf += data

    def _process_frames(self) -> bool:
        # Handle every complete frame in the buffer; False when none was complete.
        progressed = False
        while self.close_code is None:
            frame = self._parse_frame()
            if frame is None:
                break
            progressed = True
            self._handle_frame(*frame)
        return progressed

    def _parse_frame(self) -> tuple[bool, int, bytes] | None:
        buf = self._buf
        if len(buf) < 2:
            return None
        b0, b1 = buf[0], buf[1]
        if b1 & 0x80:
            raise AssertionError(f"{self.path} sent a masked frame: servers must not mask (RFC 6455 §5.1)")
        if b0 & 0x70:
            raise AssertionError(f"{self.path} set RSV bits, but no extension was negotiated (RFC 6455 §5.2)")
        length, pos = b1 & 0x7F, 2
        if length == 126:
            if len(buf) < 4:
                return None
            (length,), pos = struct.unpack("!H", buf[2:4]), 4
        elif length == 127:
            if len(buf) < 10:
                return None
            (length,), pos = struct.unpack("!Q", buf[2:10]), 10
        if len(buf) < pos + length:
            return None
        payload = bytes(buf[pos : pos + length])
        del buf[: pos + length]
        return bool(b0 & 0x80), b0 & 0x0F, payload

    def _handle_frame(self, fin: bool, opcode: int, payload: bytes) -> None:
        if opcode == Opcode.PING:
            self._send_frame(Opcode.PONG, payload)
        elif opcode == Opcode.PONG:
            pass
        elif opcode == Opcode.CLOSE:
            self.close_code, self.close_reason = parse_close(payload)
            if not self._close_sent:
                # Answer with the same code (RFC 6455 §5.5.1), then the server ends the TCP connection.
                self._close_sent = True
                code = None if self.close_code == CloseCode.NO_STATUS_RCVD else self.close_code
                try:
                    self._send_frame(Opcode.CLOSE, serialize_close(code))
                except AssertionError:
                    pass  # the server already went away: nothing left to answer
            self._drain()
        elif opcode in (Opcode.TEXT, Opcode.BINARY):
            if self._fragments is not None:
                raise AssertionError(f"{self.path} started a new message inside a fragmented one (RFC 6455 §5.4)")
            self._fragments = (opcode, [payload])
            if fin:
                self._end_message()
        elif opcode == Opcode.CONTINUATION:
            if self._fragments is None:
                raise AssertionError(f"{self.path} sent a continuation frame outside a message (RFC 6455 §5.4)")
            self._fragments[1].append(payload)
            if fin:
                self._end_message()
        else:
            raise AssertionError(f"{self.path} sent a frame with the reserved opcode {opcode:#x}")

    def _end_message(self) -> None:
        opcode, parts = self._fragments  # type: ignore[misc]  # a message is being received
        self._fragments = None
        data = b"".join(parts)
        if opcode == Opcode.TEXT:
            try:
                self._messages.append(data.decode("utf-8"))
            except UnicodeDecodeError:
                raise AssertionError(f"{self.path} sent a text message that is not UTF-8: {_describe(data)}") from None
        else:
            self._messages.append(data)

    def _drain(self) -> None:
        # After the close handshake the server closes the TCP connection (RFC 6455 §7.1.1): read
        # until it does, so that our own close is not a reset, then close our end.
        deadline = time.monotonic() + self.timeout
        while True:
            data = self._recv(deadline)
            if not data:
                break
        self._sock.close()

    def _connection_lost(self) -> None:
        self.close_code, self.close_reason = CloseCode.ABNORMAL_CLOSURE, ""
        self._sock.close()

    # --- closing ------------------------------------------------------------------------------

    def close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Close the connection with ``code`` and wait for the view to return.

        Messages not yet received are discarded. Fails the test when the server does not answer
        the close frame, or the view keeps running, within the timeout; raises the view's
        exception if it raised one. Calling it again does nothing.
        """
        if self._finished or self._thread is None:
            return
        if self.accepted and self.close_code is None and not self._close_sent:
            self._close_sent = True
            deadline = time.monotonic() + self.timeout
            try:
                self._send_frame(Opcode.CLOSE, serialize_close(code, reason))
            except AssertionError:
                self._connection_lost()
            self._read_until(lambda: False, deadline)
            if self.close_code is None:
                self._sock.close()
                self._finish()
                raise AssertionError(f"{self.path} did not answer the close frame within {self.timeout}s")
        elif self._sock.fileno() != -1:
            self._sock.close()
        self._finish()

    def _join(self, deadline: float) -> bool:
        self._thread.join(max(0, deadline - time.monotonic()))
        return not self._thread.is_alive()

    def _view_ended(self) -> None:
        # Once the connection ended, the view returns soon: wait for it, so that its exception
        # (if it raised one) is known.
        self._join(time.monotonic() + self.timeout)

    def _finish(self) -> None:
        self._finished = True
        if not self._join(time.monotonic() + self.timeout):
            raise AssertionError(
                f"The view of {self.path} is still running {self.timeout}s after its connection closed: "
                "does it loop without checking request.websocket.closed?"
            )
        self._raise_view_exception()

    def _raise_view_exception(self) -> None:
        exc_info, self._exc_info = self._exc_info, None
        if exc_info is not None and self.raise_request_exception:
            raise exc_info[1].with_traceback(exc_info[2])  # type: ignore[union-attr]

    def __enter__(self) -> WebSocketClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            # Do not hide the test's own failure behind a second one.
            try:
                self.close()
            except Exception:
                pass

    def __repr__(self) -> str:
        if self.path is None:
            state = "not connected"
        elif not self.accepted:
            state = "refused"
        elif self.close_code is not None:
            state = f"closed {self.close_code}"
        else:
            state = "open"
        return f"<WebSocketClient {self.path!r} {state}>"


# --- async views: the ASGI application, in process ------------------------------------------------

_CLIENT_KEY = "django_websocket.testing.client"


def _give_back(shared: list[BaseDatabaseWrapper]) -> None:
    for conn in shared:
        if connections[conn.alias] is conn:
            del connections[conn.alias]


def _handler_giving_back(shared: list[BaseDatabaseWrapper]) -> Any:
    """The project's ASGI application, which gives the test's connections back (from asgiref's
    thread for sync code, where the async view's queries ran) before request_finished."""
    from asgiref.sync import sync_to_async

    from .asgi import WebSocketASGIHandler

    class Handler(WebSocketASGIHandler):
        async def _finish_response(self, response: Any) -> None:
            if shared:
                await sync_to_async(_give_back)(shared)
            await super()._finish_response(response)

    return Handler()


def _resolves_to_async_view(path_info: str) -> bool:
    from asgiref.sync import iscoroutinefunction
    from django.urls import Resolver404, get_resolver

    try:
        return iscoroutinefunction(get_resolver().resolve(path_info).func)
    except Resolver404:
        return False


def _scope_from_environ(environ: dict[str, Any], client: WebSocketClient) -> dict[str, Any]:
    """The ``websocket`` scope an ASGI server would give for the request ``environ`` describes."""
    headers = []
    for name, value in environ.items():
        if name.startswith("HTTP_"):
            headers.append((name[5:].lower().replace("_", "-").encode("latin-1"), str(value).encode("latin-1")))
    secure = environ.get("wsgi.url_scheme") == "https"
    return {
        "type": "websocket",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "scheme": "wss" if secure else "ws",
        "path": environ["PATH_INFO"],
        "raw_path": environ["PATH_INFO"].encode("utf-8"),
        "query_string": environ.get("QUERY_STRING", "").encode("latin-1"),
        "root_path": "",
        "headers": headers,
        "client": (environ.get("REMOTE_ADDR", "127.0.0.1"), 50000),
        "server": (environ.get("SERVER_NAME", "testserver"), int(environ.get("SERVER_PORT", 80))),
        "subprotocols": [
            p.strip() for p in environ.get("HTTP_SEC_WEBSOCKET_PROTOCOL", "").split(",") if p.strip()
        ],
        # A refusal reaches the client with its status and body, as on uvicorn or hypercorn.
        "extensions": {"websocket.http.response": {}},
        _CLIENT_KEY: client,
    }


class _ASGIConnection:
    """A small ASGI server for one connection, in a thread of its own: it runs the project's
    ASGI application (:mod:`django_websocket.asgi`) on a ``websocket`` scope, and speaks
    WebSocket on its end of the client's socket pair with the protocol core, as an ASGI server
    would with its own framing."""

    # Set by _main() and the accept: every use comes after them.
    loop: asyncio.AbstractEventLoop
    to_app: asyncio.Queue[dict[str, Any]]
    proto: ServerProtocol

    def __init__(
        self,
        client: WebSocketClient,
        app: Any,
        scope: dict[str, Any],
        sock: socket.socket,
        key: str,
        shared: list[BaseDatabaseWrapper],
    ) -> None:
        self.client = client
        self.app = app
        self.scope = scope
        self.sock = sock
        self.key = key
        self.shared = shared
        self.taken = False  # whether the app accepted (for the client's refusal logic)
        self.proto = None  # type: ignore[assignment]
        self.response_start: dict[str, Any] | None = None

    def run(self) -> None:
        import asyncio

        try:
            asyncio.run(self._main())
        finally:
            request_started.disconnect(dispatch_uid=self.client._dispatch_uid)
            got_request_exception.disconnect(dispatch_uid=self.client._dispatch_uid)
            for conn in self.shared:
                conn.dec_thread_sharing()

    async def _main(self) -> None:
        import asyncio

        self.loop = asyncio.get_running_loop()
        self.sock.setblocking(False)
        self.to_app = asyncio.Queue()
        self.to_app.put_nowait({"type": "websocket.connect"})
        self.reader: asyncio.Task[None] | None = None
        try:
            await self.app(self.scope, self.to_app.get, self._from_app)
        finally:
            if self.reader is not None:
                self.reader.cancel()
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.sock.close()

    async def _write(self, data: bytes) -> None:
        try:
            await self.loop.sock_sendall(self.sock, data)
        except OSError:
            pass

    async def _from_app(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind == "websocket.accept":
            from .handshake import accept_response
            from .protocol import ServerProtocol

            self.taken = True
            self.proto = ServerProtocol(max_message_size=None)
            await self._write(accept_response(self.key, event.get("subprotocol"), None, event.get("headers", ())))
            self.reader = self.loop.create_task(self._read())
        elif kind == "websocket.http.response.start":
            self.response_start = event
        elif kind == "websocket.http.response.body":
            from django.http import HttpResponse

            start: dict[str, Any] = self.response_start  # type: ignore[assignment]  # the event before
            response = HttpResponse(event.get("body", b""), status=start["status"])
            for name, value in start.get("headers", ()):
                if name.lower() != b"set-cookie":
                    response[name.decode("latin-1")] = value.decode("latin-1")
            self.client.response = response
        elif kind == "websocket.close":
            if self.proto is None:
                # A close before the accept: an ASGI server answers 403.
                from django.http import HttpResponseForbidden

                self.client.response = HttpResponseForbidden()
                return
            await self._write(self.proto.send_close(event.get("code", 1000), event.get("reason") or ""))
        elif kind == "websocket.send":
            if self.proto is not None and not self.proto.close_sent:
                text = event.get("text")
                await self._write(self.proto.send(text if text is not None else event.get("bytes", b"")))

    async def _read(self) -> None:
        from .protocol import Close, State

        proto = self.proto
        while True:
            try:
                data = await self.loop.sock_recv(self.sock, _READ_SIZE)
            except OSError:
                data = b""
            if not data:
                proto.receive_eof()
            else:
                proto.receive_data(data)
            for event in proto.events_received():
                if isinstance(event, str):
                    self.to_app.put_nowait({"type": "websocket.receive", "text": event})
                elif isinstance(event, bytes):
                    self.to_app.put_nowait({"type": "websocket.receive", "bytes": event})
                elif isinstance(event, Close):
                    self.to_app.put_nowait({"type": "websocket.disconnect", "code": event.code, "reason": event.reason})
            reply = proto.data_to_send()
            if reply:
                await self._write(reply)
            if proto.state is State.CLOSED:
                return


# --- a live server that speaks WebSocket -----------------------------------------------------------


class _LiveWebSocketServer(ThreadedWebSocketWSGIServer):
    """The live server, which knows its connections so that it can end them when it stops."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._connections: dict[threading.Thread, socket.socket] = {}  # connection thread -> its socket
        self._connections_lock = threading.Lock()

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections[threading.current_thread()] = request
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._connections_lock:
                self._connections.pop(threading.current_thread(), None)

    def end_connections(self, timeout: float = 5.0) -> None:
        """End every open connection (WebSockets included) and wait for their threads.

        A WebSocket outlives the test that opened it when a browser keeps its page open; its
        view must be over before the test case gives the database connections back.
        """
        with self._connections_lock:
            connections_ = dict(self._connections)
        for sock in connections_.values():
            try:
                sock.shutdown(socket.SHUT_RDWR)  # the view's wait() sees the end and returns
            except OSError:
                pass
        deadline = time.monotonic() + timeout
        for thread in connections_:
            thread.join(max(0, deadline - time.monotonic()))


class WebSocketLiveServerThread(LiveServerThread):
    """Django's live server thread, on a server that can hand connections to WebSocket views."""

    server_class = _LiveWebSocketServer

    def terminate(self) -> None:
        if hasattr(self, "httpd"):
            self.httpd.shutdown()  # no new connections ...
            self.httpd.end_connections()  # type: ignore[attr-defined]  # ... and none left running
        super().terminate()


class WebSocketLiveServerTestCase(LiveServerTestCase):
    """``LiveServerTestCase`` whose server also serves WebSocket views, for real clients and
    browsers: connect to ``self.live_server_ws_url + "/path"``.

    Like Django's, it is a ``TransactionTestCase``; set ``static_handler`` to
    ``django.contrib.staticfiles.handlers.StaticFilesHandler`` to serve the apps' static files as
    ``StaticLiveServerTestCase`` does.
    """

    server_thread_class = WebSocketLiveServerThread

    @classproperty
    def live_server_ws_url(cls) -> str:
        """``ws://host:port`` of the live server."""
        return f"ws://{cls.host}:{cls.server_thread.port}"


# --- pytest ------------------------------------------------------------------------------------

try:
    import pytest
except ImportError:  # pragma: no cover - pytest is optional
    pytest = None  # type: ignore[assignment]

if pytest is not None:

    @pytest.fixture
    def websocket_client(client: Client) -> Generator[WebSocketClient, None, None]:
        """A :class:`WebSocketClient` sharing pytest-django's ``client`` (cookies, login), closed
        after the test, which fails if its view is still running then."""
        ws = WebSocketClient(client)
        yield ws
        ws.close()
