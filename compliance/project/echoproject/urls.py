from django.urls import path

from django_websocket import require_websocket


@require_websocket
def echo(request):
    for message in request.websocket:
        request.websocket.send(message)


@require_websocket
async def async_echo(request):
    # The same echo as an async def view, on the ASGI servers' event loop.
    async for message in request.websocket:
        await request.websocket.send(message)


urlpatterns = [path("", echo), path("async", async_echo)]
