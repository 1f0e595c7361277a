"""System checks of django-websocket, and the words shared with the other messages about the
same mistake (the start-up line of ``runserver``, the 501's log line).

Nothing is registered on import: the app's ``ready()`` registers the checks, so that the
handler can use the helpers below in a project that does not install the app.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig
from django.core import checks
from django.core.management import get_commands

W001 = "django_websocket.W001"

#: The one line of settings that puts the app where its commands win.
INSTALLED_APPS_LINE = 'INSTALLED_APPS = ["django_websocket", ...]'


def runserver_owner() -> str | None:
    """The app whose ``runserver`` Django runs (the first app listed that has one), e.g.
    ``"django_websocket"``, ``"django.contrib.staticfiles"`` or ``"django.core"``."""
    return get_commands().get("runserver")


def shadowing_fix(owner: str | None, verb: str = "list") -> str:
    """What to do when ``owner``'s runserver shadows ours, in the same words everywhere."""
    return f"{verb} 'django_websocket' above {owner!r} in INSTALLED_APPS: {INSTALLED_APPS_LINE}"


def serves_websockets(owner: str | None) -> bool:
    """Whether the runserver of ``owner`` serves WebSocket views: ours, or daphne's when the
    project's ``ASGI_APPLICATION`` is set (daphne's runserver serves it; with
    ``django_websocket.asgi.get_asgi_application()`` there, WebSocket views work)."""
    if owner in (None, "django_websocket"):
        return True
    if owner == "daphne":
        from django.conf import settings

        return bool(getattr(settings, "ASGI_APPLICATION", None))
    return False


def check_runserver(app_configs: Sequence[AppConfig] | None, **kwargs: Any) -> list[checks.CheckMessage]:
    """django_websocket.W001: another app's ``runserver`` shadows ours (the first app listed wins)."""
    owner = runserver_owner()
    if serves_websockets(owner):
        return []
    return [
        checks.Warning(
            f"The runserver command of {owner!r} shadows django_websocket's, so the development "
            "server will refuse WebSocket connections (501) and reject --multithreaded.",
            hint=shadowing_fix(owner, "List") + ".",
            id=W001,
        )
    ]


def warn_if_runserver_is_shadowed() -> None:
    """When the command being run is ``runserver`` and it is another app's, say so on stderr
    before that command parses its arguments: its first words would otherwise be
    ``unrecognized arguments: --multithreaded``, or nothing at all until the first 501.

    Skipped in the autoreloader's child process (the parent said it already, and the child's
    system checks say it again as W001), and when W001 is silenced: the project then uses
    another development server on purpose.
    """
    if sys.argv[1:2] != ["runserver"]:
        return
    from django.conf import settings
    from django.utils.autoreload import DJANGO_AUTORELOAD_ENV

    if os.environ.get(DJANGO_AUTORELOAD_ENV) == "true":
        return
    if W001 in getattr(settings, "SILENCED_SYSTEM_CHECKS", ()):
        return
    owner = runserver_owner()
    if serves_websockets(owner):
        return
    sys.stderr.write(
        f"django_websocket: runserver here is the command of {owner!r}, which cannot serve WebSocket views "
        f"(they get 501) and has no --multithreaded: {shadowing_fix(owner)}\n"
    )
    sys.stderr.flush()
