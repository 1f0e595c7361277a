"""``manage.py runserver`` whose server can upgrade connections to WebSocket.

Every option of Django's runserver still works (and staticfiles' when that app is installed);
``--multithreaded`` is accepted for the 2010 command line: threading is already the default.
"""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import sys
import threading
from types import FrameType
from typing import Any

from django.apps import apps
from django.core.management.base import CommandParser
from django.utils import autoreload

from ...conf import settings
from ...servers.devserver import WebSocketWSGIServer
from ...websocket import close_all

if apps.is_installed("django.contrib.staticfiles"):
    from django.contrib.staticfiles.management.commands.runserver import Command as BaseCommand
else:
    from django.core.management.commands.runserver import Command as BaseCommand  # type: ignore[assignment]

#: Printed at start with --nothreading, which the command accepts because Django's does.
NOTHREADING_WARNING = (
    "django_websocket: --nothreading serves one connection at a time, so while a WebSocket is "
    "open every other request (pages, static files, other WebSockets) waits for it to close. "
    "Drop --nothreading."
)

#: Seconds the reloader's parent waits for the server process beyond WEBSOCKET_CLOSE_TIMEOUT
#: after passing it a SIGTERM or SIGINT: the time for the process itself to stop.
STOP_SLACK = 2.0


class Command(BaseCommand):
    help = BaseCommand.help + " WebSocket views are served too."
    server_cls = WebSocketWSGIServer

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument(
            "--multithreaded",
            action="store_true",
            help="Serve each connection in its own thread (the default; kept for compatibility).",
        )

    def handle(self, *args: Any, **options: Any) -> str | None:
        if options.get("multithreaded") and not options.get("use_threading", True):
            from django.core.management.base import CommandError

            raise CommandError("--multithreaded and --nothreading contradict each other.")
        if not options.get("use_threading", True) and os.environ.get(autoreload.DJANGO_AUTORELOAD_ENV) != "true":
            # Said once, by the process the developer started: not again by the autoreloader's
            # server process at each restart.
            self.stderr.write(NOTHREADING_WARNING, self.style.WARNING)
        # On Ctrl-C, SIGTERM or an autoreload restart (all end in sys.exit), every open
        # WebSocket gets a close frame with 1001 "going away" before the process ends; the
        # connection threads are daemons, still running while atexit handlers run.
        atexit.register(_close_websockets)
        if _in_main_thread():
            signal.signal(signal.SIGTERM, _exit_on_sigterm)
        return super().handle(*args, **options)

    def run(self, **options: Any) -> None:
        if options["use_reloader"] and os.environ.get(autoreload.DJANGO_AUTORELOAD_ENV) != "true" and _in_main_thread():
            # The reloader's parent process: it only runs the server in a child and starts it
            # again after a code change. Django's parent exits at once on SIGTERM, killing the
            # child (SIGKILL) before it could close its WebSockets.
            sys.exit(_run_server_process())
        try:
            super().run(**options)
        except KeyboardInterrupt:
            # A second one, while stopping: on Ctrl-C the terminal signals this process and
            # the reloader's parent passes the signal on too.
            pass
        finally:
            # Stopping now: the WebSockets are closed next (atexit), which a further signal
            # must not interrupt; it is bounded by WEBSOCKET_CLOSE_TIMEOUT.
            if _in_main_thread():
                for signum in (signal.SIGINT, signal.SIGTERM):
                    signal.signal(signum, signal.SIG_IGN)


class _Stopping(Exception):
    pass


def _run_server_process() -> int:
    """Run the server in a child process, as Django's autoreloader does (again each time it
    exits with 3, after a code change), and pass SIGTERM and SIGINT on to it; then wait for it,
    up to WEBSOCKET_CLOSE_TIMEOUT plus a little, while it closes its WebSockets. Return its exit
    status."""
    args = autoreload.get_child_arguments()
    env = {**os.environ, autoreload.DJANGO_AUTORELOAD_ENV: "true"}
    state: dict[str, Any] = {"child": None, "signal": None, "waiting": False}

    def pass_on(signum: int, frame: FrameType | None) -> None:
        first = state["signal"] is None
        state["signal"] = signum
        child = state["child"]
        if child is not None and child.returncode is None:
            child.send_signal(signum)
        if first and state["waiting"]:
            raise _Stopping  # out of the unbounded wait below

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, pass_on)
    while True:
        child = state["child"] = subprocess.Popen(args, env=env, close_fds=False)
        if state["signal"] is not None:  # arrived while starting it
            child.send_signal(state["signal"])
            break
        state["waiting"] = True
        try:
            returncode = child.wait()
        except _Stopping:
            break
        finally:
            state["waiting"] = False
        if state["signal"] is not None:
            break
        if returncode != 3:
            return returncode
    try:
        return child.wait(timeout=settings.WEBSOCKET_CLOSE_TIMEOUT + STOP_SLACK)
    except subprocess.TimeoutExpired:
        child.kill()
        return child.wait()


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    sys.exit(0)


def _close_websockets() -> None:
    close_all(timeout=settings.WEBSOCKET_CLOSE_TIMEOUT)
