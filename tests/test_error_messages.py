"""Mistakes of set-up, each answered by a message that names its fix, checked where the user
sees it: the output of the real command, the log of the real server.

* django_websocket listed below ``django.contrib.staticfiles``: the first line ``runserver``
  prints says so (before ``unrecognized arguments: --multithreaded``), W001 in the same words;
"""

import shutil
import sys
import tempfile
import time
from pathlib import Path

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests import quickstart, servers

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
