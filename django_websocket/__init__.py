"""django-websocket: WebSocket (RFC 6455) for ordinary, synchronous Django views."""

__version__ = "1.0.0a1.dev0"

__all__ = ["accept_websocket", "require_websocket", "WebSocketMiddleware", "__version__"]


def __getattr__(name):
    # Lazy, so that the protocol core (django_websocket.protocol, ...) imports without Django.
    if name in ("accept_websocket", "require_websocket"):
        from . import decorators

        return getattr(decorators, name)
    if name == "WebSocketMiddleware":
        from .middleware import WebSocketMiddleware

        return WebSocketMiddleware
    raise AttributeError(f"module 'django_websocket' has no attribute {name!r}")
