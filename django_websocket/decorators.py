"""The ``require_websocket`` and ``accept_websocket`` view decorators."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, ParamSpec, overload

from asgiref.sync import iscoroutinefunction
from django.core.handlers.base import BaseHandler
from django.http.response import HttpResponseBase

from .handler import VIEW_OPTIONS, error_response, prepare, serve, serve_async

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from .handler import _Request
    from .types import ViewOptions, WebSocketViewDecorator

_P = ParamSpec("_P")

__all__ = ["accept_websocket", "require_websocket"]


class _EveryDatabase(frozenset[str]):
    """The ``_non_atomic_requests`` of a WebSocket view: every database alias, whatever
    ``DATABASES`` holds when the request comes (Django checks ``alias in ...``)."""

    def __contains__(self, alias: object) -> bool:
        return True


_EVERY_DATABASE = _EveryDatabase()
# Django's own wrapping of a view in ATOMIC_REQUESTS' transactions, for the plain HTTP requests
# of an @accept_websocket view (its handler's method needs no state of the handler).
_make_view_atomic = BaseHandler().make_view_atomic


def _decorator(view: Callable[..., Any] | None, options: dict[str, Any], *, required: bool) -> Any:
    unknown = set(options) - set(VIEW_OPTIONS)
    if unknown:
        raise TypeError(f"unknown WebSocket view option(s): {', '.join(sorted(unknown))}")

    # Typed loosely: the overloads of the two decorators below give the views' types.
    def decorate(view: Callable[..., Any]) -> Any:
        if iscoroutinefunction(view):
            # An async view: on an ASGI server (django_websocket.asgi) request.websocket is an
            # AsyncWebSocket; on a WSGI server the handshake is refused with a log line.
            @functools.wraps(view)
            async def wrapper(request: _Request, *args: Any, **kwargs: Any) -> Any:
                error = prepare(request, options)
                if error is not None:
                    return error
                if request.websocket is None:
                    if required:
                        return error_response(400, "This view accepts only WebSocket connections.")
                    return await view(request, *args, **kwargs)
                return await serve_async(request, view, args, kwargs)

        else:

            @functools.wraps(view)
            def wrapper(request: _Request, *args: Any, **kwargs: Any) -> Any:
                error = prepare(request, options)
                if error is not None:
                    return error
                if request.websocket is None:
                    if required:
                        return error_response(400, "This view accepts only WebSocket connections.")
                    # A plain request is a request like any other: in ATOMIC_REQUESTS'
                    # transaction, unless the view itself is non_atomic_requests.
                    return _make_view_atomic(view)(request, *args, **kwargs)
                return serve(request, view, args, kwargs)

        # Read by WebSocketMiddleware.process_view, as csrf_exempt's flag is read by CSRF's. The
        # first two are the 2010 names, which views could also set by hand.
        marked: Any = wrapper
        marked.accept_websocket = True
        marked.require_websocket = required
        marked.websocket_decorated = True
        # A WebSocket view may live for hours: never inside one request-long transaction
        # (ATOMIC_REQUESTS); its own transaction.atomic() blocks work as usual.
        marked._non_atomic_requests = _EVERY_DATABASE
        return marked

    return decorate if view is None else decorate(view)


@overload
def accept_websocket(
    view: Callable[_P, Awaitable[HttpResponseBase | None]], **options: Unpack[ViewOptions]
) -> Callable[_P, Coroutine[Any, Any, HttpResponseBase]]: ...


@overload
def accept_websocket(
    view: Callable[_P, HttpResponseBase | None], **options: Unpack[ViewOptions]
) -> Callable[_P, HttpResponseBase]: ...


@overload
def accept_websocket(view: None = None, **options: Unpack[ViewOptions]) -> WebSocketViewDecorator: ...


def accept_websocket(view: Callable[..., Any] | None = None, **options: Any) -> Any:
    """The view serves both plain HTTP (``request.websocket`` is None) and WebSocket requests.

    Usable bare (``@accept_websocket``) or with options overriding the settings for this view:
    ``max_message_size``, ``max_frame_size``, ``subprotocols``, ``compression``, and
    ``allowed_origins`` (e.g. ``["*"]`` for a public endpoint open to every site).
    """
    return _decorator(view, options, required=False)


@overload
def require_websocket(
    view: Callable[_P, Awaitable[HttpResponseBase | None]], **options: Unpack[ViewOptions]
) -> Callable[_P, Coroutine[Any, Any, HttpResponseBase]]: ...


@overload
def require_websocket(
    view: Callable[_P, HttpResponseBase | None], **options: Unpack[ViewOptions]
) -> Callable[_P, HttpResponseBase]: ...


@overload
def require_websocket(view: None = None, **options: Unpack[ViewOptions]) -> WebSocketViewDecorator: ...


def require_websocket(view: Callable[..., Any] | None = None, **options: Any) -> Any:
    """The view serves only WebSocket requests; plain HTTP requests get 400 Bad Request."""
    return _decorator(view, options, required=True)
