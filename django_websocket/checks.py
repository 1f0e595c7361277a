"""System checks of django-websocket."""

from django.core import checks
from django.core.management import get_commands


@checks.register()
def check_runserver(app_configs, **kwargs):
    """django_websocket.W001: another app's ``runserver`` shadows ours (the first app listed wins)."""
    owner = get_commands().get("runserver")
    if owner in (None, "django_websocket"):
        return []
    return [
        checks.Warning(
            f"The runserver command of {owner!r} shadows django_websocket's, so the development "
            "server will refuse WebSocket connections.",
            hint=f"List 'django_websocket' above {owner!r} in INSTALLED_APPS.",
            id="django_websocket.W001",
        )
    ]
