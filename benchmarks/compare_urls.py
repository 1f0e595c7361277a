"""The views of benchmarks/compare.py: our echo (a regular view, and an ``async def`` one for the
ASGI servers), and gevent-websocket's own for the reference."""

from django.urls import path

from django_websocket import require_websocket

from .urls import raw_echo


@require_websocket
def echo(request):
    # What a user writes: a plain view, a loop, one send per message.
    for message in request.websocket:
        request.websocket.send(message)


@require_websocket
async def aecho(request):
    # The same loop in an async view, on an ASGI server's event loop.
    async for message in request.websocket:
        await request.websocket.send(message)


urlpatterns = [path("echo", echo), path("aecho", aecho), path("raw-echo", raw_echo)]
