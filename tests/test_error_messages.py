"""Mistakes of set-up, each answered by a message that names its fix, checked where the user
sees it: the output of the real command, the log of the real server.

* django_websocket listed below ``django.contrib.staticfiles``: the first line ``runserver``
  prints says so (before ``unrecognized arguments: --multithreaded``), W001 in the same words;
* a handshake on a server that cannot upgrade: the 501's log line (and body) name the fix for
  that server: Django's runserver without the app or with it shadowed, gunicorn's sync worker,
  gunicorn's own gevent worker;
* the in-memory group backend under several gunicorn workers: a warning at start-up;
* ``runserver --nothreading``: a warning at start.
"""

import json
import shutil
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests import quickstart, servers
from tests.docs_commands import ROOT, read_page
from tests.rawclient import RawClient

TIMEOUT = 30
# What the quickstart appends to settings.py, and what a project with the wrong order has.
FIRST = 'INSTALLED_APPS.insert(0, "django_websocket")'
APPEND = 'INSTALLED_APPS.append("django_websocket")'
FIX_LINE = 'INSTALLED_APPS = ["django_websocket", ...]'
SHADOW_FIX = f"list 'django_websocket' above 'django.contrib.staticfiles' in INSTALLED_APPS: {FIX_LINE}"
START_LINE = (
    "django_websocket: runserver here is the command of 'django.contrib.staticfiles', which cannot serve "
    f"WebSocket views (they get 501) and has no --multithreaded: {SHADOW_FIX}"
)
# What the 501's log line says after "WebSocket request to /echo refused with 501: this server
# cannot upgrade connections; ", on each server.
REFUSED = "WebSocket request to /echo refused with 501: this server cannot upgrade connections; "
FIX_SHADOWED = (
    f"this is the runserver of 'django.contrib.staticfiles', which shadows django_websocket's: {SHADOW_FIX}"
)
FIX_WITHOUT_APP = (
    f"this is Django's runserver, and django_websocket's replaces it only when the app is installed, first: {FIX_LINE}"
)
GUNICORN_SYNC_FIX = (
    "-k django_websocket.servers.gunicorn.ThreadWorker --threads N or -k django_websocket.servers.gunicorn.GeventWorker"
)
FIX_GUNICORN_SYNC = (
    "gunicorn's sync (and gthread) worker cannot hand a connection over: run gunicorn with "
    f"{GUNICORN_SYNC_FIX} (each open WebSocket holds one of a ThreadWorker's N threads; a "
    "GeventWorker holds thousands)"
)
FIX_GUNICORN_GEVENT = (
    "gunicorn's own gevent worker cannot hand a connection over: run gunicorn with "
    "-k django_websocket.servers.gunicorn.GeventWorker (the same gevent worker, able to)"
)
FIX_OTHER = (
    "serve the project with one of django_websocket's runserver (development), python -m "
    "django_websocket.servers.gevent (or manage.py rungevent), gunicorn -k "
    "django_websocket.servers.gunicorn.GeventWorker, -k django_websocket.servers.gunicorn.ThreadWorker "
    "--threads N or -k django_websocket.servers.gunicorn.GeventWebSocketWorker, or an ASGI server with "
    "django_websocket.asgi.get_asgi_application()"
)
MEMORY_WARNING = (
    "[WARNING] django_websocket: WEBSOCKET_GROUPS uses the in-memory backend, which reaches the "
    "sockets of one worker only, and gunicorn runs 2 workers: a group message sent in one worker "
    'reaches none of the others\' sockets. Set WEBSOCKET_GROUPS = {"BACKEND": '
    '"django_websocket.groups.redis.RedisGroupBackend", "LOCATION": "redis://..."} (or run --workers 1).'
)
NOTHREADING_WARNING = (
    "django_websocket: --nothreading serves one connection at a time, so while a WebSocket is open "
    "every other request (pages, static files, other WebSockets) waits for it to close. Drop --nothreading."
)


def _project(parent, env, settings_line):
    """The quickstart's project, in a directory of its own, with the line of settings.py that
    installs the app replaced by ``settings_line``."""
    Path(parent).mkdir()
    project = quickstart.make_project(parent, env)
    settings = project / "mysite" / "settings.py"
    text = settings.read_text(encoding="utf-8")
    assert FIRST in text, "the quickstart no longer installs the app this way: update this test"
    settings.write_text(text.replace(FIRST, settings_line), encoding="utf-8")
    return project


@pytest.fixture(scope="module")
def projects():
    """Two throwaway projects: ``"after"`` lists django_websocket below staticfiles, ``"without"``
    does not install it (its view still uses the decorator)."""
    parent = Path(tempfile.mkdtemp(prefix="error-messages-"))
    env = quickstart.user_env(Path(sys.executable).parent)
    try:
        yield env, {
            "after": _project(parent / "after", env, APPEND),
            "without": _project(parent / "without", env, "# django_websocket is not installed"),
        }
    finally:
        shutil.rmtree(parent, ignore_errors=True)


def refused(port, server, path="/echo", timeout=TIMEOUT):
    """The HTTP response refusing a WebSocket handshake to ``path`` (retried while the server
    starts, at most ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        if server.proc.poll() is not None:
            raise AssertionError(f"the server exited with {server.proc.returncode}:\n{server.output()}")
        try:
            with connect(f"ws://127.0.0.1:{port}{path}", open_timeout=5, close_timeout=2):
                raise AssertionError(f"the handshake was accepted:\n{server.output()}")
        except InvalidStatus as exc:
            return exc.response
        except (OSError, TimeoutError) as exc:
            if time.monotonic() > deadline:
                raise AssertionError(f"no answer within {timeout}s ({exc!r}):\n{server.output()}") from None
            time.sleep(0.2)


def wait_for_text(server, text, timeout=TIMEOUT):
    deadline = time.monotonic() + timeout
    while text not in server.output():
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} not in the output within {timeout}s:\n{server.output()}")
        time.sleep(0.1)


def lines_with(output, text):
    return [line for line in output.splitlines() if text in line]


# --- 1. django_websocket listed after django.contrib.staticfiles -----------------------------


def test_multithreaded_with_the_wrong_order_says_the_fix_first(projects):
    env, project = projects
    result = quickstart.shell(
        f"python manage.py runserver --multithreaded 127.0.0.1:{servers.free_port()} 2>&1",
        project["after"],
        env,
        timeout=60,
    )
    assert result.returncode != 0, result.stdout
    lines = result.stdout.splitlines()
    assert lines[0] == START_LINE, result.stdout
    # Django's own refusal still follows.
    assert "unrecognized arguments: --multithreaded" in result.stdout


def test_the_system_check_gives_the_same_fix(projects):
    env, project = projects
    result = quickstart.shell("python manage.py check 2>&1", project["after"], env, timeout=60)
    assert "(django_websocket.W001) The runserver command of 'django.contrib.staticfiles' shadows" in result.stdout
    assert f"HINT: L{SHADOW_FIX[1:]}." in result.stdout, result.stdout
    # Not the start-up line: the command run is not runserver.
    assert "django_websocket: runserver here" not in result.stdout


def test_shadowed_runserver_says_the_fix_first_and_in_each_501(projects):
    # Without --multithreaded staticfiles' runserver starts, and cannot upgrade.
    env, project = projects
    port = servers.free_port()
    with quickstart.Server(f"python manage.py runserver 127.0.0.1:{port}", project["after"], env) as server:
        response = refused(port, server)
        assert response.status_code == 501
        assert response.body.decode() == (
            "This server cannot upgrade connections to WebSocket: list 'django_websocket' above "
            "'django.contrib.staticfiles' in INSTALLED_APPS.\n"
        )
        wait_for_text(server, "refused with 501")
        output = server.output()
    assert output.splitlines()[0] == START_LINE, output
    # Once: the autoreloader's server process does not say it again (its W001 does).
    assert lines_with(output, "django_websocket: runserver here") == [START_LINE], output
    assert lines_with(output, "refused with 501") == [REFUSED + FIX_SHADOWED], output


# --- 2. the 501 of a server that cannot upgrade ----------------------------------------------


def test_runserver_without_the_app_names_the_installed_apps_line(projects):
    env, project = projects
    port = servers.free_port()
    with quickstart.Server(f"python manage.py runserver 127.0.0.1:{port}", project["without"], env) as server:
        response = refused(port, server)
        assert response.status_code == 501
        assert response.body.decode() == (
            "This server cannot upgrade connections to WebSocket: add 'django_websocket' first in INSTALLED_APPS.\n"
        )
        wait_for_text(server, "refused with 501")
        output = server.output()
    assert lines_with(output, "refused with 501") == [REFUSED + FIX_WITHOUT_APP], output


@pytest.mark.parametrize(
    "worker, log, body",
    [
        ("sync", FIX_GUNICORN_SYNC, f"run gunicorn with {GUNICORN_SYNC_FIX}"),
        ("gevent", FIX_GUNICORN_GEVENT, "run gunicorn with -k django_websocket.servers.gunicorn.GeventWorker"),
    ],
)
def test_gunicorns_own_workers_name_ours(worker, log, body):
    server = servers._gunicorn(f"gunicorn-{worker}", worker, "tests.wsgi")(workers=1)
    try:
        response = refused(server.port, server)
        assert response.status_code == 501
        assert response.body.decode() == f"This server cannot upgrade connections to WebSocket: {body}.\n"
        wait_for_text(server, "refused with 501")
    finally:
        server.stop()
    assert lines_with(server.output(), "refused with 501") == [REFUSED + log], server.output()


def test_any_other_wsgi_server_gets_the_list_of_servers():
    # wsgiref's server, which Django's runserver is built on, outside runserver.
    port = servers.free_port()
    script = (
        "import sys; from wsgiref.simple_server import make_server; from tests.wsgi import application; "
        "make_server('127.0.0.1', int(sys.argv[1]), application).serve_forever()"
    )
    server = servers.ServerProcess("wsgiref", [sys.executable, "-c", script, str(port)], port)
    try:
        # It answers in HTTP/1.0, which a WebSocket client does not read: a raw one does.
        with RawClient("127.0.0.1", port) as client:
            status, _, body = client.request("/echo")
        assert status == 501
        assert body.decode() == (
            "This server cannot upgrade connections to WebSocket: see the server's log for the servers that can.\n"
        )
        wait_for_text(server, "refused with 501")
    finally:
        server.stop()
    assert lines_with(server.output(), "refused with 501") == [REFUSED + FIX_OTHER], server.output()


# --- 3. the in-memory group backend under several workers ------------------------------------

MEMORY_BACKEND = "WEBSOCKET_GROUPS uses the in-memory backend"


def _both_workers_loaded(server, timeout=TIMEOUT):
    """Wait until two distinct worker processes have answered: both have loaded the
    application, so each has said at boot what it had to say."""
    pids, deadline = set(), time.monotonic() + timeout
    while len(pids) < 2:
        if time.monotonic() > deadline:
            raise AssertionError(f"only workers {pids} answered within {timeout}s:\n{server.output()}")
        with urllib.request.urlopen(server.http_url + "/pid", timeout=5) as response:
            pids.add(response.read())
    return pids


@pytest.mark.parametrize("worker", ["gunicorn-gthread", "gunicorn-gevent"])
def test_memory_backend_under_two_workers_is_warned_once(worker):
    server = servers.SERVERS[worker](workers=2)
    try:
        _both_workers_loaded(server)
    finally:
        server.stop()
    warnings = lines_with(server.output(), MEMORY_BACKEND)
    assert len(warnings) == 1, server.output()
    assert warnings[0].endswith(MEMORY_WARNING), warnings


def test_memory_backend_under_one_worker_is_not_warned():
    server = servers.gunicorn_gthread(workers=1)
    try:
        urllib.request.urlopen(server.http_url + "/pid", timeout=10).close()  # the worker is loaded
    finally:
        server.stop()
    assert "Booting worker" in server.output()
    assert MEMORY_BACKEND not in server.output()


def test_redis_backend_under_two_workers_is_not_warned():
    # The backend is only named: nothing connects to Redis before a socket joins a group.
    groups = {"BACKEND": "django_websocket.groups.redis.RedisGroupBackend", "LOCATION": "redis://127.0.0.1:9/0"}
    server = servers.gunicorn_gthread(env={"TESTS_SETTINGS_OVERRIDES": json.dumps({"WEBSOCKET_GROUPS": groups})})
    try:
        _both_workers_loaded(server)
    finally:
        server.stop()
    assert MEMORY_BACKEND not in server.output()


# --- 4. runserver --nothreading --------------------------------------------------------------

def _runserver(*options):
    port = servers.free_port()
    argv = [sys.executable, "-m", "django", "runserver", *options, f"127.0.0.1:{port}"]
    return servers.ServerProcess("runserver", argv, port)


def test_nothreading_is_warned_once_at_start():
    # With the autoreloader, as a developer runs it: its server process does not repeat it.
    server = _runserver("--nothreading")
    try:
        wait_for_text(server, "Starting development server")
    finally:
        server.stop()
    output = server.output()
    assert lines_with(output, "--nothreading serves") == [NOTHREADING_WARNING], output
    assert output.index(NOTHREADING_WARNING) < output.index("Performing system checks")


def test_threading_is_not_warned():
    server = _runserver("--noreload")
    try:
        wait_for_text(server, "Starting development server")
    finally:
        server.stop()
    assert "--nothreading" not in server.output()


# --- where users look for them ----------------------------------------------------------------

DOCS = {
    "docs/reference/runserver.rst": [
        START_LINE, REFUSED + FIX_SHADOWED, REFUSED + FIX_WITHOUT_APP, NOTHREADING_WARNING,
    ],  # fmt: skip
    "docs/howto/deployment/runserver.rst": [START_LINE, REFUSED + FIX_WITHOUT_APP, NOTHREADING_WARNING],
    "docs/howto/deployment/gunicorn.rst": [REFUSED + FIX_GUNICORN_SYNC, REFUSED + FIX_GUNICORN_GEVENT, MEMORY_WARNING],
    "docs/howto/deployment/gevent.rst": [REFUSED + FIX_OTHER],
    "docs/howto/deployment/checklist.rst": [REFUSED + FIX_GUNICORN_GEVENT],
    "docs/topics/groups.rst": [MEMORY_WARNING],
}


@pytest.mark.parametrize("page", sorted(DOCS))
def test_the_docs_show_each_message_as_printed(page):
    """Each message, as the real runs above print it, in a code block of the page where a user
    who sees it looks: a changed wording must change the docs too."""
    blocks = [text for _, text in read_page(ROOT / page).blocks]
    missing = [message for message in DOCS[page] if not any(message in block for block in blocks)]
    assert not missing, f"{page} does not show: {missing}"


def test_the_lifecycle_table_gives_each_501_fix():
    # A table cell wraps its text: compared with the whitespace of both made single spaces.
    text = " ".join((ROOT / "docs/topics/lifecycle.rst").read_text(encoding="utf-8").split())
    assert REFUSED.strip() in text
    for fix in (FIX_WITHOUT_APP, FIX_SHADOWED, FIX_GUNICORN_SYNC, FIX_GUNICORN_GEVENT, FIX_OTHER):
        assert f"``{fix}``" in text, fix
