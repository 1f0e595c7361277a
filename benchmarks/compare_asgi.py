"""The peer on Channels (benchmarks/compare.py): the same echo as a sync and an async consumer.

Served by daphne or uvicorn as Channels' documentation deploys it, ``/sync`` with a
``WebsocketConsumer`` (each message handled in a thread through ``SyncToAsync``) and ``/async``
with an ``AsyncWebsocketConsumer``. No ``AuthMiddlewareStack``: our views run without middleware
in this benchmark too.
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.compare_settings")

from django.core.asgi import get_asgi_application  # noqa: E402

django_application = get_asgi_application()  # sets Django up before the consumers are imported

from channels.generic.websocket import AsyncWebsocketConsumer, WebsocketConsumer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402


class SyncEcho(WebsocketConsumer):
    def receive(self, text_data=None, bytes_data=None):
        self.send(text_data=text_data, bytes_data=bytes_data)


class AsyncEcho(AsyncWebsocketConsumer):
    async def receive(self, text_data=None, bytes_data=None):
        await self.send(text_data=text_data, bytes_data=bytes_data)


application = ProtocolTypeRouter(
    {
        "http": django_application,
        "websocket": URLRouter([path("sync", SyncEcho.as_asgi()), path("async", AsyncEcho.as_asgi())]),
    }
)
