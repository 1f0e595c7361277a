from django.apps import AppConfig


class WebSocketConfig(AppConfig):
    name = "django_websocket"
    verbose_name = "WebSocket"

    def ready(self) -> None:
        from django.core import checks as django_checks

        from . import checks

        django_checks.register(checks.check_runserver)
        checks.warn_if_runserver_is_shadowed()
