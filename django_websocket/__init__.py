"""django-websocket: WebSocket (RFC 6455) for ordinary Django views, on WSGI and ASGI servers.

The public names, importable from ``django_websocket``:

Decorators and middleware
    ``require_websocket``, ``accept_websocket``: make a view a WebSocket view (bare, or with
    options such as ``subprotocols=[...]``); ``WebSocketMiddleware``: ``request.websocket`` and
    ``request.is_websocket()`` on every request.

Types, for annotating views (see ``django_websocket.types``)
    ``WebSocketRequest`` (``request.websocket`` is a ``WebSocketConnection``),
    ``AsyncWebSocketRequest`` (an ``AsyncWebSocketConnection``), ``HttpOrWebSocketRequest`` and
    ``AsyncHttpOrWebSocketRequest`` (``None`` for plain HTTP: ``@accept_websocket`` views),
    ``WebSocketConnection``, ``AsyncWebSocketConnection``, ``Message`` (``str | bytes``).

``__version__``
    The version of the package.

The modules: ``django_websocket.groups`` (send to many connections), ``.testing`` (a test client
and live server), ``.exceptions``, ``.asgi`` (ASGI servers), ``.websocket`` and ``.events`` (the
connection classes), and the protocol core (``.protocol``, ``.frames``, ``.handshake``), which
imports without Django.
"""

from typing import TYPE_CHECKING

__version__ = "1.0.0a1.dev0"

__all__ = [
    "accept_websocket",
    "require_websocket",
    "WebSocketMiddleware",
    "WebSocketRequest",
    "AsyncWebSocketRequest",
    "HttpOrWebSocketRequest",
    "AsyncHttpOrWebSocketRequest",
    "WebSocketConnection",
    "AsyncWebSocketConnection",
    "Message",
    "__version__",
]

if TYPE_CHECKING:
    from .decorators import accept_websocket, require_websocket
    from .middleware import WebSocketMiddleware
    from .types import (
        AsyncHttpOrWebSocketRequest,
        AsyncWebSocketConnection,
        AsyncWebSocketRequest,
        HttpOrWebSocketRequest,
        Message,
        WebSocketConnection,
        WebSocketRequest,
    )

# Each public name and the module it lives in, imported at first use: the protocol core
# (django_websocket.protocol, ...) must import without Django, and this package with it.
_LAZY = {
    "accept_websocket": "decorators",
    "require_websocket": "decorators",
    "WebSocketMiddleware": "middleware",
    "WebSocketRequest": "types",
    "AsyncWebSocketRequest": "types",
    "HttpOrWebSocketRequest": "types",
    "AsyncHttpOrWebSocketRequest": "types",
    "WebSocketConnection": "types",
    "AsyncWebSocketConnection": "types",
    "Message": "types",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'django_websocket' has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f".{module}", __name__), name)


def __dir__() -> list[str]:
    # The public names (for help(), dir() and editors), and the module's own dunders.
    return sorted({*__all__, *(name for name in globals() if name.startswith("__"))})
