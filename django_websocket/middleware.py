"""``WebSocketMiddleware``: ``request.websocket`` and ``request.is_websocket()`` on every request."""

from .conf import settings
from .handler import error_response, prepare, serve

__all__ = ["WebSocketMiddleware"]


class WebSocketMiddleware:
    """Sets ``request.websocket`` (None for plain HTTP) and ``request.is_websocket()``.

    A WebSocket request to a view that is not decorated gets 400, unless ``WEBSOCKET_ACCEPT_ALL``
    is true: then this middleware runs the view on the WebSocket itself (put it last in
    ``MIDDLEWARE``, since the ``process_view`` of middleware after it is then skipped).
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        prepare(request)
        return self.get_response(request)

    def process_view(self, request, view_func, view_args, view_kwargs):
        if not request.is_websocket() or getattr(view_func, "accepts_websocket", False):
            return None  # plain HTTP, or the view's decorator serves it
        if not settings.WEBSOCKET_ACCEPT_ALL:
            return error_response(400, "This view does not accept WebSocket connections.")
        error = prepare(request)
        if error is not None:
            return error
        return serve(request, view_func, view_args, view_kwargs)
