"""The quickstart's project, made as a user makes it, and the documented commands run in it.

``django-admin startproject mysite``, then the files of ``examples/quickstart/`` that
docs/tutorial/quickstart.rst includes: lines appended to ``mysite/settings.py``, a new
``mysite/views.py``, a new ``mysite/urls.py``. Used by tests/test_quickstart.py (in the test
environment) and tests/test_install.py (in a clean environment per install line).
"""

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from tests.docs_commands import ROOT

QUICKSTART = ROOT / "examples" / "quickstart"

# File of examples/quickstart/ -> (file of the new project, what the quickstart says to do).
FILES = {
    "mysite/settings_additions.py": ("mysite/settings.py", "append"),
    "mysite/views.py": ("mysite/views.py", "create"),
    "mysite/urls.py": ("mysite/urls.py", "replace"),
}
CONSOLE_SNIPPET = QUICKSTART / "console.js"

# What the environment of a user's shell does not have: the test process's own settings,
# path and switches must not leak into the commands run "as a user runs them".
_NOT_A_USERS = ("PYTHONPATH", "DJANGO_SETTINGS_MODULE", "DJANGO_WEBSOCKET_PURE_PYTHON", "VIRTUAL_ENV", "PYTHONHOME")


def user_env(bin_dir, **extra):
    """The environment of a shell in which ``bin_dir`` (a virtualenv's ``bin``) comes first on
    the PATH, as after ``source venv/bin/activate``."""
    env = {k: v for k, v in os.environ.items() if k not in _NOT_A_USERS and not k.startswith("PYTEST_")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(Path(bin_dir).parent)
    env["PYTHONUNBUFFERED"] = "1"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env.update(extra)
    return env


def shell(command, cwd, env, timeout):
    """Run one documented command line as a shell runs it; returns the CompletedProcess."""
    return subprocess.run(
        ["bash", "-c", command],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def make_project(parent, env):
    """``django-admin startproject mysite`` in ``parent`` (with the ``django-admin`` that
    ``env``'s PATH finds), then the quickstart's changes. Returns the project's directory."""
    result = shell("django-admin startproject mysite", parent, env, timeout=120)
    if result.returncode != 0:
        raise AssertionError(f"django-admin startproject failed:\n{result.stdout}{result.stderr}")
    project = Path(parent) / "mysite"
    for source, (target, how) in FILES.items():
        text = (QUICKSTART / source).read_text(encoding="utf-8")
        path = project / target
        if how == "create":
            assert not path.exists(), f"startproject made {target}, which the quickstart creates"
            path.write_text(text, encoding="utf-8")
        elif how == "replace":
            assert path.exists(), f"startproject made no {target} for the quickstart to replace"
            path.write_text(text, encoding="utf-8")
        else:
            path.write_text(path.read_text(encoding="utf-8") + "\n" + text, encoding="utf-8")
    return project


def copy_checkout(dest):
    """A copy of this checkout at ``dest``, as a clone or an unpacked source archive has it:
    without .git, virtual environments, caches and build output."""
    shutil.copytree(
        ROOT,
        dest,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", ".tox", "__pycache__", "*.pyc", "*.egg-info", "build", "dist", "_build",
            ".pytest_cache", ".hypothesis", "*.sqlite3", "reports", ".autobahn",
        ),
    )  # fmt: skip


_ADDRESS = re.compile(r"\b(?:\d{1,3}(?:\.\d{1,3}){3}|localhost):\d+\b")
# uvicorn's and Granian's --host/--port, daphne's -b/-p.
_HOST_PORT = re.compile(r"(--host|-b) \S+ (--port|-p) \d+\b")


def on_port(command, port):
    """The documented server command, listening on 127.0.0.1:``port`` instead of the address it
    names (``127.0.0.1:8000``, ``0.0.0.0:8000``, ``--host 0.0.0.0 --port 8000``, ``-b 0.0.0.0 -p
    8000``), or with that address added for a ``runserver`` that names none."""
    if _HOST_PORT.search(command):
        return _HOST_PORT.sub(lambda m: f"{m[1]} 127.0.0.1 {m[2]} {port}", command)
    if _ADDRESS.search(command):
        return _ADDRESS.sub(f"127.0.0.1:{port}", command)
    if re.match(r"python manage\.py runserver\b", command):
        return f"{command} 127.0.0.1:{port}"
    raise ValueError(f"no address to change in {command!r}")


class Server:
    """A documented server command running in a shell of its own (its process group is
    stopped at the end), its output in a file."""

    def __init__(self, command, cwd, env):
        self.command = command
        self.log = tempfile.NamedTemporaryFile(prefix="quickstart-server-", suffix=".log", delete=False)
        # gunicorn >= 25.1 opens a control socket in $XDG_RUNTIME_DIR: one per server.
        env = dict(env, XDG_RUNTIME_DIR=tempfile.mkdtemp(prefix="quickstart-run-"))
        self.proc = subprocess.Popen(
            ["bash", "-c", f"exec {command}"],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def output(self):
        return Path(self.log.name).read_text(errors="replace")

    def stop(self, timeout=10):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout)
            except ProcessLookupError:
                pass
        # runserver's autoreloader runs the server in a child of the same process group.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.log.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def echo(port, server, message="hello", timeout=30.0):
    """Connect to ``ws://127.0.0.1:port/echo`` (retrying while the server starts, at most
    ``timeout`` seconds), send ``message`` and return what comes back."""
    from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
    from websockets.sync.client import connect

    deadline = time.monotonic() + timeout
    while True:
        if server.proc.poll() is not None:
            raise AssertionError(f"`{server.command}` exited with {server.proc.returncode}:\n{server.output()}")
        try:
            with connect(f"ws://127.0.0.1:{port}/echo", open_timeout=5, close_timeout=5) as ws:
                ws.send(message)
                return ws.recv(timeout=5)
        except InvalidStatus as exc:  # the server answered, and refused
            raise AssertionError(f"`{server.command}` refused the handshake: {exc}:\n{server.output()}")
        except (OSError, TimeoutError, InvalidHandshake, ConnectionClosed) as exc:
            # Not listening yet, or no gunicorn worker booted yet (the arbiter listens first).
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no echo from `{server.command}` within {timeout:.0f}s ({exc!r}):\n{server.output()}"
                )
            time.sleep(0.2)
