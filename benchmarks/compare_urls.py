"""The views of benchmarks/compare.py: our echo, and gevent-websocket's own for the reference."""

from django.urls import path

from django_websocket import require_websocket

from .urls import raw_echo


@require_websocket
def echo(request):
    # What a user writes: a plain view, a loop, one send per message.
    for message in request.websocket:
        request.websocket.send(message)


urlpatterns = [path("echo", echo), path("raw-echo", raw_echo)]
