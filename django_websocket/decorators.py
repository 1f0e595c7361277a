"""The ``require_websocket`` and ``accept_websocket`` view decorators."""

import functools

from asgiref.sync import iscoroutinefunction
from django.core.handlers.base import BaseHandler

from .handler import VIEW_OPTIONS, error_response, prepare, serve, serve_async

__all__ = ["accept_websocket", "require_websocket"]


class _EveryDatabase(frozenset):
    """The ``_non_atomic_requests`` of a WebSocket view: every database alias, whatever
    ``DATABASES`` holds when the request comes (Django checks ``alias in ...``)."""

    def __contains__(self, alias):
        return True


_EVERY_DATABASE = _EveryDatabase()
# Django's own wrapping of a view in ATOMIC_REQUESTS' transactions, for the plain HTTP requests
# of an @accept_websocket view (its handler's method needs no state of the handler).
_make_view_atomic = BaseHandler().make_view_atomic


def _decorator(view, options, *, required):
    unknown = set(options) - set(VIEW_OPTIONS)
    if unknown:
        raise TypeError(f"unknown WebSocket view option(s): {', '.join(sorted(unknown))}")

    def decorate(view):
        if iscoroutinefunction(view):
            # An async view: on an ASGI server (django_websocket.asgi) request.websocket is an
            # AsyncWebSocket; on a WSGI server the handshake is refused with a log line.
            @functools.wraps(view)
            async def wrapper(request, *args, **kwargs):
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
            def wrapper(request, *args, **kwargs):
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
        wrapper.accept_websocket = True
        wrapper.require_websocket = required
        wrapper.websocket_decorated = True
        # A WebSocket view may live for hours: never inside one request-long transaction
        # (ATOMIC_REQUESTS); its own transaction.atomic() blocks work as usual.
        wrapper._non_atomic_requests = _EVERY_DATABASE
        return wrapper

    return decorate if view is None else decorate(view)


def accept_websocket(view=None, **options):
    """The view serves both plain HTTP (``request.websocket`` is None) and WebSocket requests.

    Usable bare (``@accept_websocket``) or with options overriding the settings for this view:
    ``max_message_size``, ``max_frame_size``, ``subprotocols``, ``compression``, and
    ``allowed_origins`` (e.g. ``["*"]`` for a public endpoint open to every site).
    """
    return _decorator(view, options, required=False)


def require_websocket(view=None, **options):
    """The view serves only WebSocket requests; plain HTTP requests get 400 Bad Request."""
    return _decorator(view, options, required=True)
