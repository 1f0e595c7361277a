"""The Autobahn|Testsuite on each server path: every case must pass strictly, with a clean close.

Runs compliance/run.py (see compliance/README.rst) against the echo project compliance/project.
Cases 1-10 (RFC 6455, 301 cases, about 35 s each) run on every path; cases 12-13
(permessage-deflate, 216 cases, about 13 minutes: wstest itself is slow) on runserver, and on
every path with DJANGO_WEBSOCKET_COMPLIANCE=full.

The suite needs Python 2.7 (through pyenv); without it these tests fail in CI (CI=true) and are
skipped with a loud reason elsewhere.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROJECT = ROOT / "compliance" / "project"
PY = sys.executable
GUNICORN = f"{PY} -m gunicorn --workers 1 --chdir {PROJECT} --bind 127.0.0.1:{{port}}"

# Each path started as its deployment guide says, on the conformance echo project.
SERVER_COMMANDS = {
    "runserver": f"{PY} {PROJECT}/manage.py runserver --multithreaded --noreload 127.0.0.1:{{port}}",
    "gevent": f"{PY} {PROJECT}/manage.py rungevent 127.0.0.1:{{port}}",
    "gevent-websocket": f"{PY} -m django_websocket.servers.geventwebsocket 127.0.0.1:{{port}}",
    "gunicorn-gevent": f"{GUNICORN} -k django_websocket.servers.gunicorn.GeventWorker echoproject.wsgi",
    "gunicorn-gthread": f"{GUNICORN} -k django_websocket.servers.gunicorn.ThreadWorker --threads 20 echoproject.wsgi",
    "gunicorn-geventwebsocket": (
        f"{GUNICORN} -k geventwebsocket.gunicorn.workers.GeventWebSocketWorker echoproject.wsgi_geventwebsocket"
    ),
}

FULL = os.environ.get("DJANGO_WEBSOCKET_COMPLIANCE") == "full"
CASES = [(name, "core") for name in SERVER_COMMANDS] + [
    (name, "compression") for name in SERVER_COMMANDS if FULL or name == "runserver"
]


@pytest.fixture(scope="session")
def wstest():
    result = subprocess.run(
        ["bash", str(ROOT / "compliance" / "setup_autobahn.sh")], capture_output=True, text=True, timeout=900
    )
    if result.returncode != 0:
        message = f"the Autobahn testsuite could not be set up:\n{result.stderr[-3000:]}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message + "\nInstall Python 2.7.18 with pyenv to run the conformance tests.")
    return result.stdout.strip().splitlines()[-1]


@pytest.mark.timeout(2400)
@pytest.mark.parametrize("server, preset", CASES, ids=[f"{s}-{p}" for s, p in CASES])
def test_autobahn_strict(wstest, server, preset):
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(PROJECT), str(ROOT)]),
        DJANGO_SETTINGS_MODULE="echoproject.settings",
        # gunicorn >= 25.1 keeps a control socket in $XDG_RUNTIME_DIR: one per run.
        XDG_RUNTIME_DIR=str(ROOT / "compliance" / "reports"),
    )
    (ROOT / "compliance" / "reports").mkdir(exist_ok=True)
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "compliance" / "run.py"),
            "--wstest", wstest,
            "--cases", preset,
            "--name", f"{server}-{preset}",
            "--server-cmd", SERVER_COMMANDS[server],
        ],  # fmt: skip
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=2300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert "RESULT: PASS" in output
