"""``WebSocketMiddleware``: ``request.websocket`` and ``request.is_websocket()`` on every request."""

import inspect
import logging

from .conf import settings
from .handler import error_response, prepare, serve

logger = logging.getLogger("django_websocket")

__all__ = ["WebSocketMiddleware"]


class WebSocketMiddleware:
    """Sets ``request.websocket`` (None for plain HTTP) and ``request.is_websocket()``.

    A WebSocket request to a view that is not decorated gets 400, unless ``WEBSOCKET_ACCEPT_ALL``
    is true or the view has the 2010 attribute ``accept_websocket = True``: then this middleware
    runs the view on the WebSocket itself (put it last in ``MIDDLEWARE``, since the
    ``process_view`` of middleware after it is then skipped). A plain HTTP request to a view with
    ``require_websocket = True`` gets 400.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        prepare(request)
        return self.get_response(request)

    def process_view(self, request, view_func, view_args, view_kwargs):
        if getattr(view_func, "websocket_decorated", False):
            return None  # the view's decorator serves both kinds of request
        if not request.is_websocket():
            if getattr(view_func, "require_websocket", False):
                return error_response(400, "This view accepts only WebSocket connections.")
            return None
        if not (getattr(view_func, "accept_websocket", False) or settings.WEBSOCKET_ACCEPT_ALL):
            return error_response(400, "This view does not accept WebSocket connections.")
        if inspect.iscoroutinefunction(view_func):
            logger.error("WebSocket request to %s refused: %s is an async view", request.path, view_func.__qualname__)
            return error_response(400, "This view cannot serve WebSocket connections.")
        error = prepare(request)
        if error is not None:
            return error
        return serve(request, view_func, view_args, view_kwargs)
