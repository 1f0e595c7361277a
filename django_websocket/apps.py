from django.apps import AppConfig


class WebSocketConfig(AppConfig):
    name = "django_websocket"
    verbose_name = "WebSocket"

    def ready(self):
        from . import checks  # noqa: F401  (registers the system checks)
