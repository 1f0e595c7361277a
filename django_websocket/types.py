"""The types of ``request.websocket`` and of a WebSocket view's request, for annotations.

Django passes a WebSocket view its usual request object; these names only tell a type checker
(mypy, pyright, an IDE) what that request carries::

    from django_websocket import WebSocketRequest, require_websocket

    @require_websocket
    def echo(request: WebSocketRequest) -> None:
        for message in request.websocket:
            request.websocket.send(message)

* :class:`WebSocketRequest`: the request of a regular (``def``) view decorated with
  ``@require_websocket``; ``request.websocket`` is a :class:`WebSocketConnection`.
* :class:`AsyncWebSocketRequest`: the same for an ``async def`` view; ``request.websocket`` is an
  :class:`AsyncWebSocketConnection`.
* :class:`HttpOrWebSocketRequest` and :class:`AsyncHttpOrWebSocketRequest`: the request of an
  ``@accept_websocket`` view (or any view, with the middleware), whose ``request.websocket`` is
  ``None`` for plain HTTP.

:class:`WebSocketConnection` is what every server's blocking connection offers
(:class:`~django_websocket.websocket.WebSocket` on the WSGI servers,
:class:`~django_websocket.events.ASGIWebSocket` on an ASGI server, both with the groups methods);
:class:`AsyncWebSocketConnection` is the :class:`~django_websocket.events.AsyncWebSocket` of
``async def`` views. They are :class:`typing.Protocol` classes: annotate with them, never
``isinstance()`` against them, and never instantiate the request classes (they exist for type
checkers, and Django's request objects are not instances of them).
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Sequence
from typing import TYPE_CHECKING, Any, ParamSpec, Protocol, TypeAlias, TypedDict, TypeVar, overload

from django.http import HttpRequest
from django.http.response import HttpResponseBase

from .frames import CloseCode
from .handshake import Request
from .protocol import Message
from .websocket import ConnectionState

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = [
    "Message",
    "Sendable",
    "WebSocketConnection",
    "AsyncWebSocketConnection",
    "WebSocketRequest",
    "AsyncWebSocketRequest",
    "HttpOrWebSocketRequest",
    "AsyncHttpOrWebSocketRequest",
    "ViewOptions",
    "WebSocketViewDecorator",
]

_T = TypeVar("_T")
_P = ParamSpec("_P")

#: What ``send()`` takes: ``str`` is sent as a text message, the others as a binary one. (Other
#: values are sent as ``str(value)`` at run time, as in the 2010 app; type checkers flag them, so
#: that a dict meant for ``json.dumps()`` is not sent as its ``repr``.)
Sendable: TypeAlias = str | bytes | bytearray | memoryview


class _Connection(Protocol):
    # What both kinds of connection have: their state, the handshake, and the calls that never wait.

    @property
    def handshake(self) -> Request:
        """The validated opening handshake (its ``path``, ``origin``, ``subprotocols``, ...)."""
        ...

    @property
    def id(self) -> str:
        """An id unique across processes: what ``exclude`` of :func:`django_websocket.groups.send` matches."""
        ...

    @property
    def accepted(self) -> bool: ...

    @property
    def state(self) -> ConnectionState: ...

    @property
    def closed(self) -> bool: ...

    @property
    def close_code(self) -> int | None: ...

    @property
    def close_reason(self) -> str: ...

    @property
    def end_reason(self) -> str | None: ...

    @property
    def subprotocols(self) -> list[str]: ...

    @property
    def protocol(self) -> str | None: ...

    @property
    def groups(self) -> frozenset[str]: ...

    def is_closed(self) -> bool: ...

    def choose_subprotocol(self) -> str | None: ...

    @overload
    def read(self) -> Message | None: ...

    @overload
    def read(self, fallback: _T) -> Message | _T: ...

    def has_messages(self) -> bool: ...

    def count_messages(self) -> int: ...

    def fail(self, code: int, reason: str = "") -> None: ...

    def add_close_callback(self, callback: Callable[[Self], object]) -> None: ...

    @property
    def detached(self) -> bool: ...

    def detach(self, on_message: Any = "ignore") -> None:
        """Let the connection outlive the view (a plain call for both kinds): see
        :meth:`django_websocket.websocket.WebSocket.detach`."""


class WebSocketConnection(_Connection, Protocol):
    """``request.websocket`` of a regular (``def``) view, on every server: the blocking API of
    :class:`~django_websocket.websocket.WebSocket` (see :doc:`/reference/websocket`), with the
    groups' ``join()``, ``leave()``, ``groups`` and ``id``."""

    @property
    def reading_paused(self) -> bool: ...

    def accept(self, subprotocol: str | None = None) -> None: ...

    def wait(self, timeout: float | None = None) -> Message | None: ...

    def __iter__(self) -> Iterator[Message]: ...

    def send(self, message: Sendable) -> None: ...

    def ping(self, payload: str | bytes | None = None) -> threading.Event: ...

    def close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None: ...

    def start_close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> bool: ...

    def join(self, group: str, info: Any = None) -> None: ...

    def leave(self, group: str) -> None: ...


class AsyncWebSocketConnection(_Connection, Protocol):
    """``request.websocket`` of an ``async def`` view (an ASGI server): the methods that wait are
    coroutines (``accept``, ``wait``, ``send``, ``close``, ``join``, ``leave``, and ``async for``);
    ``read()``, ``has_messages()``, ``count_messages()`` and ``fail()`` are plain calls."""

    async def accept(self, subprotocol: str | None = None) -> None: ...

    async def wait(self, timeout: float | None = None) -> Message | None: ...

    def __aiter__(self) -> AsyncIterator[Message]: ...

    async def send(self, message: Sendable) -> None: ...

    async def close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None: ...

    async def join(self, group: str, info: Any = None) -> None: ...

    async def leave(self, group: str) -> None: ...


class WebSocketRequest(HttpRequest):
    """The request of a regular view decorated with ``@require_websocket``: ``request.websocket``
    is the connection."""

    websocket: WebSocketConnection
    is_websocket: Callable[[], bool]


class AsyncWebSocketRequest(HttpRequest):
    """The request of an ``async def`` view decorated with ``@require_websocket``."""

    websocket: AsyncWebSocketConnection
    is_websocket: Callable[[], bool]


class HttpOrWebSocketRequest(HttpRequest):
    """The request of a regular view decorated with ``@accept_websocket`` (or of any view, with the
    middleware): ``request.websocket`` is ``None`` for plain HTTP. Test ``request.websocket is
    None``, which type checkers understand, rather than ``request.is_websocket()``."""

    websocket: WebSocketConnection | None
    is_websocket: Callable[[], bool]


class AsyncHttpOrWebSocketRequest(HttpRequest):
    """The request of an ``async def`` view decorated with ``@accept_websocket``."""

    websocket: AsyncWebSocketConnection | None
    is_websocket: Callable[[], bool]


class ViewOptions(TypedDict, total=False):
    """The options of ``@require_websocket(...)`` and ``@accept_websocket(...)``."""

    max_message_size: int | None
    max_frame_size: int | None
    subprotocols: Sequence[str]
    compression: bool
    allowed_origins: Sequence[str] | None


class WebSocketViewDecorator(Protocol):
    """What ``require_websocket(**options)`` and ``accept_websocket(**options)`` return: a
    decorator that keeps the view's parameters, for ``def`` and ``async def`` views."""

    @overload
    def __call__(
        self, view: Callable[_P, Awaitable[HttpResponseBase | None]], /
    ) -> Callable[_P, Coroutine[Any, Any, HttpResponseBase]]: ...

    @overload
    def __call__(self, view: Callable[_P, HttpResponseBase | None], /) -> Callable[_P, HttpResponseBase]: ...
