"""``WebSocketMiddleware``: ``request.websocket`` and ``request.is_websocket()`` on every request."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http.response import HttpResponseBase

from .conf import settings
from .handler import error_response, prepare, serve, serve_async

if TYPE_CHECKING:
    from .handler import _Request

logger = logging.getLogger("django_websocket")

__all__ = ["WebSocketMiddleware"]


class WebSocketMiddleware:
    """Sets ``request.websocket`` (None for plain HTTP) and ``request.is_websocket()``.

    A WebSocket request to a view that is not decorated gets 400, unless ``WEBSOCKET_ACCEPT_ALL``
    is true or the view has the 2010 attribute ``accept_websocket = True``: then this middleware
    runs the view on the WebSocket itself (put it last in ``MIDDLEWARE``, since the
    ``process_view`` of middleware after it is then skipped). A plain HTTP request to a view with
    ``require_websocket = True`` gets 400.

    It works in both of Django's modes: synchronous (WSGI servers, and regular views on ASGI
    servers) and asynchronous (``async def`` views on ASGI servers).
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[_Request], Any]) -> None:
        self.get_response = get_response
        self.asynchronous = iscoroutinefunction(get_response)
        if self.asynchronous:
            markcoroutinefunction(self)
            # Django adapts process_view to the mode by its kind: a coroutine here.
            self.process_view = self._process_view_async  # type: ignore[method-assign, assignment]

    def __call__(self, request: _Request) -> Any:  # a response, or a coroutine in async mode
        if self.asynchronous:
            return self.__acall__(request)
        prepare(request)
        return self.get_response(request)

    async def __acall__(self, request: _Request) -> Any:
        prepare(request)
        return await self.get_response(request)

    def _check(self, request: _Request, view_func: Callable[..., Any]) -> HttpResponseBase | Literal[False] | None:
        """The answer to give instead of the view, or None to serve it on the WebSocket, or
        False when the view itself (its decorator, or plain HTTP) takes it from here."""
        if getattr(view_func, "websocket_decorated", False):
            return False  # the view's decorator serves both kinds of request
        if not request.is_websocket():
            if getattr(view_func, "require_websocket", False):
                return error_response(400, "This view accepts only WebSocket connections.")
            return False
        if not (getattr(view_func, "accept_websocket", False) or settings.WEBSOCKET_ACCEPT_ALL):
            return error_response(400, "This view does not accept WebSocket connections.")
        return prepare(request)

    def process_view(
        self, request: _Request, view_func: Callable[..., Any], view_args: tuple[Any, ...], view_kwargs: dict[str, Any]
    ) -> HttpResponseBase | None:
        answer = self._check(request, view_func)
        if answer is not None:
            return answer or None
        if iscoroutinefunction(view_func):
            return serve_async_refused(request, view_func)
        return serve(request, view_func, view_args, view_kwargs)

    async def _process_view_async(
        self, request: _Request, view_func: Callable[..., Any], view_args: tuple[Any, ...], view_kwargs: dict[str, Any]
    ) -> HttpResponseBase | None:
        answer = self._check(request, view_func)
        if answer is not None:
            return answer or None
        if not iscoroutinefunction(view_func):
            logger.error(
                "WebSocket request to %s refused: %s is a regular view reached through Django's "
                "asynchronous path; decorate it with @accept_websocket so that it runs in a thread of its own.",
                request.path,
                view_func.__qualname__,
            )
            request.websocket._reject()  # type: ignore[union-attr]  # set: a WebSocket request
            return error_response(500, "This view cannot serve WebSocket connections here.")
        return await serve_async(request, view_func, view_args, view_kwargs)


def serve_async_refused(request: _Request, view_func: Callable[..., Any]) -> HttpResponseBase:
    logger.error(
        "WebSocket request to %s refused: %s is an async view, which needs an ASGI server. Serve the "
        "project with django_websocket.asgi.get_asgi_application(), or make the view a regular def view.",
        request.path,
        view_func.__qualname__,
    )
    request.websocket._reject()  # type: ignore[union-attr]  # set: a WebSocket request
    return error_response(501, "This WebSocket view needs an ASGI server.")
