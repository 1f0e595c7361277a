"""``manage.py rungevent [addrport]``: serve the project with gevent, WebSocket views included.

gevent's monkey-patching must come before Django imports ``threading`` and ``socket``, and by the
time a management command runs Django is long set up. So unless the process was already patched
(in ``manage.py``), this command replaces itself (``exec``) with
``python -m django_websocket.servers.gevent``, which patches first, with the same settings and
Python path. The process keeps its id, so process managers and signals are unaffected.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

MODULE = "django_websocket.servers.gevent"


class Command(BaseCommand):
    help = "Serves the project with gevent's WSGI server (one greenlet per connection), WebSocket views included."
    # The server loads the project itself: checks run there, once, after patching.
    requires_system_checks = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("addrport", nargs="?", default="127.0.0.1:8000", help="Default 127.0.0.1:8000.")
        parser.add_argument("--backlog", type=int, default=2048, help="Listen backlog (default 2048).")
        parser.add_argument("--no-access-log", action="store_true", help="Do not log each request.")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            from gevent import monkey
        except ImportError:
            raise CommandError("rungevent needs gevent: pip install 'django-websocket[gevent]'") from None
        argv = [options["addrport"], "--backlog", str(options["backlog"])]
        if options["no_access_log"]:
            argv.append("--no-access-log")
        if all(monkey.is_module_patched(name) for name in ("socket", "select", "threading")):
            from django.core.wsgi import get_wsgi_application

            from ...servers import gevent as server

            host, port = server.build_parser("rungevent", "").parse_args(argv).addrport
            log = None if options["no_access_log"] else "default"
            server.serve(get_wsgi_application(), host, port, backlog=options["backlog"], log=log)
            return
        if not settings.SETTINGS_MODULE:
            raise CommandError(
                "rungevent needs a settings module; with settings.configure(), call "
                "gevent.monkey.patch_all() first thing in manage.py instead."
            )
        env = dict(os.environ, DJANGO_SETTINGS_MODULE=settings.SETTINGS_MODULE)
        env["PYTHONPATH"] = os.pathsep.join(_project_paths())
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, [sys.executable, "-m", MODULE, *argv], env)


def _project_paths() -> list[str]:
    """The entries of ``sys.path`` before the interpreter's own: manage.py's directory,
    ``--pythonpath`` and ``PYTHONPATH``, where the project's packages are found."""
    prefixes = tuple({sys.prefix, sys.base_prefix, sys.exec_prefix})
    paths = []
    for path in sys.path:
        if path and os.path.abspath(path).startswith(prefixes):
            break
        paths.append(os.path.abspath(path or os.curdir))
    return paths
