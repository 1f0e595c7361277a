"""Real servers for the tests, each started on a free port of 127.0.0.1 and stopped after.

``SERVERS`` maps a name to a function that returns a started :class:`ServerProcess`. Each runs
the test project (``tests.settings``) exactly as a user starts it.
"""

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port, proc, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"server did not listen on {port} within {timeout}s")


class ServerProcess:
    """A server subprocess whose output goes to a file the tests can read."""

    def __init__(self, name, argv, port, env=None, cwd=ROOT, upgrades_before_django=False):
        self.name = name
        # gevent-websocket's handler sends the 101 before Django runs: refusals become close 1008.
        self.upgrades_before_django = upgrades_before_django
        self.port = port
        self.host = "127.0.0.1"
        self.url = f"ws://127.0.0.1:{port}"
        self.http_url = f"http://127.0.0.1:{port}"
        self.log = tempfile.NamedTemporaryFile(prefix=f"server-{name}-", suffix=".log", delete=False)
        full_env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
        full_env.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
        # Shared by the server's processes (see tests/views.py).
        full_env["TESTS_STATE_DIR"] = tempfile.mkdtemp(prefix=f"server-{name}-state-")
        full_env.update(env or {})
        self.state_dir = full_env["TESTS_STATE_DIR"]
        self.proc = subprocess.Popen(
            argv, cwd=cwd, env=full_env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            wait_for_port(port, self.proc)
        except BaseException:
            self.stop()
            raise

    def output(self):
        return Path(self.log.name).read_text(errors="replace")

    def stop(self, timeout=10.0):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout)
        self.log.close()


def runserver(env=None, reload=False):
    # With reload=True, as a developer runs it: the autoreloader's parent process runs the
    # server in a child process, and restarts it when a file changes.
    port = free_port()
    argv = [sys.executable, "-m", "django", "runserver", "--multithreaded", f"127.0.0.1:{port}"]
    if not reload:
        argv.insert(-1, "--noreload")
    return ServerProcess("runserver", argv, port, env)


def gevent(env=None):
    # As docs/howto/deployment/gevent.rst says: the management command, which re-executes itself
    # as python -m django_websocket.servers.gevent so that monkey-patching comes first.
    port = free_port()
    argv = [sys.executable, "-m", "django", "rungevent", f"127.0.0.1:{port}"]
    return ServerProcess("gevent", argv, port, env)


def gevent_websocket(env=None):
    # As docs/howto/deployment/gevent-websocket.rst says.
    port = free_port()
    argv = [
        sys.executable, "-m", "django_websocket.servers.geventwebsocket", f"127.0.0.1:{port}",
        "--settings", "tests.settings",
    ]
    return ServerProcess("gevent-websocket", argv, port, env, upgrades_before_django=True)


def _gunicorn(name, worker, app, *options, upgrades_before_django=False):
    """A server started as docs/howto/deployment/gunicorn.rst says, with 2 workers unless told
    otherwise; ``extra`` adds gunicorn options (``--max-requests 3``, ``--certfile``...)."""

    def start(env=None, workers=2, extra=()):
        port = free_port()
        argv = [
            sys.executable, "-m", "gunicorn", "-k", worker, "--workers", str(workers), *options, *extra,
            "--bind", f"127.0.0.1:{port}", app,
        ]  # fmt: skip
        # gunicorn >= 25.1 opens a control socket in $XDG_RUNTIME_DIR, else in ~/.gunicorn: one
        # per server, so that servers started at the same time do not share it.
        run_env = {"XDG_RUNTIME_DIR": tempfile.mkdtemp(prefix=f"server-{name}-run-"), **(env or {})}
        return ServerProcess(name, argv, port, run_env, upgrades_before_django=upgrades_before_django)

    return start


gunicorn_gevent = _gunicorn("gunicorn-gevent", "django_websocket.servers.gunicorn.GeventWorker", "tests.wsgi")
gunicorn_gthread = _gunicorn(
    "gunicorn-gthread", "django_websocket.servers.gunicorn.ThreadWorker", "tests.wsgi", "--threads", "50"
)
gunicorn_geventwebsocket = _gunicorn(
    "gunicorn-geventwebsocket",
    "django_websocket.servers.gunicorn.GeventWebSocketWorker",
    "tests.wsgi_geventwebsocket",
    upgrades_before_django=True,
)


SERVERS = {
    "runserver": runserver,
    "gevent": gevent,
    "gevent-websocket": gevent_websocket,
    "gunicorn-gevent": gunicorn_gevent,
    "gunicorn-gthread": gunicorn_gthread,
    "gunicorn-geventwebsocket": gunicorn_geventwebsocket,
}


def uvicorn(env=None):
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", "tests.asgi:application", "--host", "127.0.0.1", "--port", str(port)]
    return ServerProcess("uvicorn", argv, port, env)


SERVERS["uvicorn"] = uvicorn
