"""``manage.py runserver`` whose server can upgrade connections to WebSocket.

Every option of Django's runserver still works (and staticfiles' when that app is installed);
``--multithreaded`` is accepted for the 2010 command line: threading is already the default.
"""

import atexit
import signal
import sys
import threading

from django.apps import apps

from ...conf import settings
from ...servers.devserver import WebSocketWSGIServer
from ...websocket import close_all

if apps.is_installed("django.contrib.staticfiles"):
    from django.contrib.staticfiles.management.commands.runserver import Command as BaseCommand
else:
    from django.core.management.commands.runserver import Command as BaseCommand


class Command(BaseCommand):
    help = BaseCommand.help + " WebSocket views are served too."
    server_cls = WebSocketWSGIServer

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument(
            "--multithreaded",
            action="store_true",
            help="Serve each connection in its own thread (the default; kept for compatibility).",
        )

    def handle(self, *args, **options):
        if options.get("multithreaded") and not options.get("use_threading", True):
            from django.core.management.base import CommandError

            raise CommandError("--multithreaded and --nothreading contradict each other.")
        # On Ctrl-C, SIGTERM or an autoreload restart (all end in sys.exit), every open
        # WebSocket gets a close frame with 1001 "going away" before the process ends; the
        # connection threads are daemons, still running while atexit handlers run.
        atexit.register(_close_websockets)
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, _exit_on_sigterm)
        return super().handle(*args, **options)


def _exit_on_sigterm(signum, frame):
    sys.exit(0)


def _close_websockets():
    close_all(timeout=settings.WEBSOCKET_CLOSE_TIMEOUT)
