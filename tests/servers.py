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

    def __init__(
        self, name, argv, port, env=None, cwd=ROOT, upgrades_before_django=False, asgi=False, http_response=True
    ):
        self.name = name
        self.argv = argv
        # gevent-websocket's handler sends the 101 before Django runs: refusals become close 1008.
        self.upgrades_before_django = upgrades_before_django
        # An ASGI server (the events of django_websocket.events, the server framing).
        self.asgi = asgi
        # Whether a refusal before the accept reaches the client with its own status and body:
        # an ASGI server without the websocket.http.response extension answers 403 to all.
        self.http_response = http_response
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
        sys.executable,
        "-m",
        "django_websocket.servers.geventwebsocket",
        f"127.0.0.1:{port}",
        "--settings",
        "tests.settings",
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


# --- ASGI servers, each started as its page of docs/howto/deployment/ says ------------------------
#
# Each entry starts the test project's asgi.py (tests/asgi.py, django_websocket.asgi) by default;
# ``app=`` starts another ASGI application on the same server the same way (the bare echo
# application of compliance/asgi_echo.py, to tell the server's own behaviour from ours), and
# ``options`` adds command-line options (a limit, a timeout) to the documented command, and
# ``workers`` sets the number of worker processes (2 by default; daphne runs one).

APP = "tests.asgi:application"
BARE_APP = "compliance.asgi_echo:app"


def _uvicorn(ws):
    def argv(app, port, workers):
        ws_option = [] if ws == "auto" else ["--ws", ws]
        return ["-m", "uvicorn", app, *ws_option, "--workers", workers, "--host", "127.0.0.1", "--port", str(port)]

    return argv


def _daphne(app, port, workers):
    # daphne runs one process: no workers to ask for.
    return ["-m", "daphne", "-b", "127.0.0.1", "-p", str(port), app]


def _hypercorn(app, port, workers):
    return ["-m", "hypercorn", "--workers", workers, "--bind", f"127.0.0.1:{port}", app]


def _granian(app, port, workers):
    return [
        "-m", "granian", "--interface", "asgi", "--workers", workers, "--host", "127.0.0.1", "--port", str(port), app,
    ]  # fmt: skip


def _gunicorn_asgi(app, port, workers):
    return ["-m", "gunicorn", "-k", "asgi", "--workers", workers, "--bind", f"127.0.0.1:{port}", app]


def _asgi(name, argv, *, http_response):
    def start(env=None, app=APP, options=(), workers=2):
        port = free_port()
        command = [sys.executable, *argv(app, port, str(workers))]
        # Options go right after the server's module name, where every server's parser takes them.
        command[3:3] = list(options)
        run_env = {"XDG_RUNTIME_DIR": tempfile.mkdtemp(prefix=f"server-{name}-run-"), **(env or {})}
        return ServerProcess(name, command, port, run_env, asgi=True, http_response=http_response)

    start.server_name = name
    return start


ASGI_SERVERS = {
    # uvicorn's three WebSocket implementations: "websockets-sansio" is its default ("auto") when
    # websockets is installed, as the [uvicorn] extra installs it.
    "uvicorn": _asgi("uvicorn", _uvicorn("auto"), http_response=True),
    "uvicorn-websockets": _asgi("uvicorn-websockets", _uvicorn("websockets"), http_response=True),
    "uvicorn-wsproto": _asgi("uvicorn-wsproto", _uvicorn("wsproto"), http_response=True),
    "daphne": _asgi("daphne", _daphne, http_response=False),
    "hypercorn": _asgi("hypercorn", _hypercorn, http_response=True),
    "granian": _asgi("granian", _granian, http_response=True),
    "gunicorn-asgi": _asgi("gunicorn-asgi", _gunicorn_asgi, http_response=False),
}
SERVERS.update(ASGI_SERVERS)

# What fails on an ASGI server because of the server's own framing or handshake handling:
# contract test -> the measured reason. tests/test_contract.py expects these failures (strictly:
# a server that stops failing makes its test fail, so the entry goes), and
# tests/test_asgi_servers.py checks each one the same way against the bare echo application on
# that server (no Django, no code of ours), where it fails too.
_EARLY_FRAMES = (
    "{server} drops the frames a client sends right behind its handshake request, before the 101: "
    "the bare ASGI echo application never receives them either"
)
_DAPHNE_EMPTY = (
    "daphne drops every empty message an application sends (it sends only a truthy 'text' or "
    "'bytes'): the bare echo application's empty echo never arrives either"
)
_DAPHNE_CODES = (
    "daphne sends only the close codes 1000 and 3000-4999 (its send() raises for the others, for "
    "the bare application too): our bridge then closes with 1000"
)
_NO_DISCONNECT_REASON = (
    "{server} gives no reason in websocket.disconnect (the bare echo application is told the client's "
    "close code, 4002, without its reason)"
)
_HYPERCORN_1006 = (
    "hypercorn gives the code 1006 in websocket.disconnect for a client's clean close (1000 or 4002): the "
    "bare echo application is told 1006 too"
)
SERVER_LIMITS = {
    "uvicorn": {"test_frames_sent_right_behind_the_handshake_are_kept": _EARLY_FRAMES.format(server="uvicorn")},
    "uvicorn-websockets": {
        "test_frames_sent_right_behind_the_handshake_are_kept": _EARLY_FRAMES.format(server="uvicorn (websockets)")
    },
    "uvicorn-wsproto": {
        "test_frames_sent_right_behind_the_handshake_are_kept": _EARLY_FRAMES.format(server="uvicorn (wsproto)")
    },
    "gunicorn-asgi": {
        "test_frames_sent_right_behind_the_handshake_are_kept": _EARLY_FRAMES.format(server="gunicorn's asgi worker"),
        "test_client_close_code_and_reason_reach_the_view": _NO_DISCONNECT_REASON.format(
            server="gunicorn's asgi worker"
        ),
    },
    "granian": {
        "test_client_close_code_and_reason_reach_the_view": _NO_DISCONNECT_REASON.format(server="Granian"),
    },
    "hypercorn": {
        "test_frames_sent_right_behind_the_handshake_are_kept": (
            "hypercorn answers 400 to a handshake request followed by frames before its 101, whatever the "
            "application (the bare echo application gets the same 400)"
        ),
        "test_client_close_code_and_reason_reach_the_view": _HYPERCORN_1006,
        "test_async_for_ends_when_the_client_closes": _HYPERCORN_1006,
    },
    "daphne": {
        "test_frames_sent_right_behind_the_handshake_are_kept": _EARLY_FRAMES.format(server="daphne"),
        "test_echo_text_non_ascii_and_binary": _DAPHNE_EMPTY,
        "test_no_subprotocol_header_when_none_chosen": _DAPHNE_EMPTY,
        "test_view_exception_closes_with_1011": _DAPHNE_CODES,
        "test_message_size_limit_per_view": _DAPHNE_CODES,
        "test_server_initiated_close_with_code_and_reason": (
            "daphne drops the reason of every close an application sends (the bare echo application's "
            "close 4001 'done here' arrives as 4001 with no reason)"
        ),
        "test_client_close_code_and_reason_reach_the_view": _NO_DISCONNECT_REASON.format(server="daphne"),
    },
}
