"""Every install line of the documentation, run as written in a new, empty virtual environment,
then the documented server commands of its page started there, each echoing one message.

The install lines and the server commands are read from README.rst and docs/ (``$`` lines of
console blocks, tests/docs_commands.py), so that a line added to a page is tested at once. For
each distinct install line:

1. a directory holding a copy of this checkout named ``django-websocket`` (without .venv, .git
   and build output), and a virtual environment made with ``python -m venv`` next to it;
2. the line itself, run by a shell in that directory with the environment's ``bin`` first on the
   PATH, as after ``source venv/bin/activate``; then ``pip check``, and a check that none of the
   test suite's own packages leaked in (the environment holds what the line installs, no more);
3. the quickstart's project (``django-admin startproject mysite`` plus examples/quickstart/);
4. each server command of the page that the line's extras serve (a page without one: the
   quickstart's ``runserver``), started on a free port of 127.0.0.1 in the project's directory,
   and one message echoed over a real WebSocket (the ``websockets`` client of this process);
5. for ``[redis]``: ``WEBSOCKET_GROUPS`` as the groups page writes it, and one ``groups.send``
   that a subscriber of a redis-server started here receives; for ``[speedups]``: the C
   unmasking is the one in use.

A page's server command that none of its install lines serves is an error, as is a line that
installs from the package index (nothing newer than the 2010 release is there yet). The
environments are built in parallel threads, sharing pip's cache. Without ``python -m venv`` (or
``redis-server`` for the Redis line) the test is skipped with a warning, except in CI (``CI``
set), where it fails.
"""

import os
import re
import shutil
import subprocess
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests import quickstart
from tests.docs_commands import ROOT, extras_of, prose_pip_installs, read_documentation, read_page
from tests.redis_fixture import RedisServer, find_redis_server
from tests.servers import free_port

# What each documented server command needs, as extras of this project. A new kind of command
# in the docs must be added here (the test says so) before it can be tested.
NEEDS = (
    (r"python manage\.py runserver\b", set()),
    (r"python manage\.py rungevent\b", {"gevent"}),
    (r"python -m django_websocket\.servers\.gevent\b", {"gevent"}),
    (r"python -m django_websocket\.servers\.geventwebsocket\b", {"gevent-websocket"}),
    (r"gunicorn -k django_websocket\.servers\.gunicorn\.GeventWorker\b", {"gunicorn", "gevent"}),
    (r"gunicorn -k django_websocket\.servers\.gunicorn\.ThreadWorker\b", {"gunicorn"}),
    (r"gunicorn -k django_websocket\.servers\.gunicorn\.GeventWebSocketWorker\b", {"gunicorn", "gevent-websocket"}),
    (r"gunicorn -k geventwebsocket\.gunicorn\.workers\.GeventWebSocketWorker\b", {"gunicorn", "gevent-websocket"}),
    # The ASGI servers, serving the project's asgi.py as docs/howto/deployment/asgi.rst writes it.
    (r"uvicorn \S+:application\b", {"uvicorn"}),
    (r"daphne\b", {"daphne"}),
    (r"hypercorn\b", {"hypercorn"}),
    (r"granian --interface asgi\b", {"granian"}),
    (r"gunicorn -k asgi\b", {"gunicorn-asgi"}),
)
# gevent-websocket's worker serves the application of a wsgi.py wrapped as this page shows.
GEVENTWEBSOCKET_PAGE = ROOT / "docs" / "howto" / "deployment" / "gevent-websocket.rst"
# ... and the ASGI servers serve the asgi.py this page shows.
ASGI_PAGE = ROOT / "docs" / "howto" / "deployment" / "asgi.rst"
GROUPS_PAGE = ROOT / "docs" / "topics" / "groups.rst"
QUICKSTART_PAGE = ROOT / "docs" / "tutorial" / "quickstart.rst"
README = ROOT / "README.rst"
# A line that installs this checkout: the path of a directory named django-websocket.
CHECKOUT_LINE = re.compile(r"""^(?:python -m pip|pip) install "\./django-websocket(?:\[[a-z0-9,-]+\])?"$""")
# Packages of the test suite's own environment that a clean one must not have.
TOOLING = ("pytest", "hypothesis", "selenium", "sphinx")
PARALLEL = 4


def in_ci():
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def needs(command):
    for pattern, extras in NEEDS:
        if re.match(pattern, command):
            return extras
    raise LookupError(command)


@dataclass
class Run:
    """One distinct install line, the pages that show it and the commands to start after it."""

    line: str
    pages: set = field(default_factory=set)
    commands: list = field(default_factory=list)

    def add(self, command):
        if command not in self.commands:
            self.commands.append(command)


def plan():
    """The runs to make, and the documentation's problems (as messages)."""
    pages = read_documentation()
    (base,) = read_page(README).install_lines
    quick = read_page(QUICKSTART_PAGE).server_commands
    runs, problems = {base: Run(base)}, []
    for page in pages:
        commands = []
        for command in page.server_commands:
            try:
                needs(command)
                commands.append(command)
            except LookupError:
                problems.append(f"{page.name}: `{command}` is not in tests/test_install.py's NEEDS")
        lines = page.install_lines
        for line in lines:
            run = runs.setdefault(line, Run(line))
            run.pages.add(page.name)
            for command in commands or quick:
                if needs(command) <= extras_of(line):
                    run.add(command)
        for command in commands:
            serving = lines or [base]
            if not any(needs(command) <= extras_of(line) for line in serving):
                problems.append(
                    f"{page.name}: `{command}` needs the extras {sorted(needs(command))}, which no install line "
                    f"of the page installs ({serving})"
                )
            elif not lines:
                runs[base].add(command)
                runs[base].pages.add(page.name)
    return list(runs.values()), problems


def test_the_documentation_installs_this_checkout():
    """Every documented install line installs the checkout, and is in a console block (so that
    it is tested below); the package index's name appears only in prose, as the future form."""
    runs, problems = plan()
    assert not problems, "\n".join(problems)
    assert len(runs) >= 12, [run.line for run in runs]  # the base install and one per extra
    wrong = [run.line for run in runs if not CHECKOUT_LINE.match(run.line)]
    assert not wrong, f"install lines that do not install ./django-websocket: {wrong}"
    for page in read_documentation():
        for number, text in prose_pip_installs(page):
            assert "./django-websocket" not in text, (
                f"{page.name}:{number}: `{text}` is an install line outside a console block, where the install "
                f"test does not see it: write it as `$ {text}` in a `.. code-block:: console`"
            )
    every_extra = set().union(*(extras_of(run.line) for run in runs))
    assert every_extra == {
        "gevent", "gevent-websocket", "gunicorn", "redis", "speedups",
        "uvicorn", "daphne", "hypercorn", "granian", "gunicorn-asgi",
    }  # fmt: skip


def _python_block(page, marker):
    (block,) = [text for lang, text in read_page(page).blocks if lang == "python" and marker in text]
    return block


def _check_redis(work, env, redis_url):
    """WEBSOCKET_GROUPS as the groups page writes it (LOCATION: the test's server), then one
    group message, received by a subscriber."""
    block = _python_block(GROUPS_PAGE, "RedisGroupBackend")
    script = f"""
import django, redis
from django.conf import settings
namespace = {{}}
exec({block!r}, namespace)
groups_setting = dict(namespace["WEBSOCKET_GROUPS"], LOCATION={redis_url!r})
settings.configure(INSTALLED_APPS=["django_websocket"], WEBSOCKET_GROUPS=groups_setting)
django.setup()
from django_websocket import groups
pubsub = redis.Redis.from_url({redis_url!r}).pubsub()
pubsub.psubscribe("*")
assert pubsub.get_message(timeout=5)["type"] == "psubscribe"
groups.send("install-check", "hello from the redis extra")
message = pubsub.get_message(timeout=5)
assert message and message["channel"].endswith(b"install-check"), message
assert b"hello from the redis extra" in message["data"], message
print("groups.send reached redis:", message["channel"].decode())
"""
    return _venv_python(work, env, script)


def _check_speedups(work, env):
    script = """
from django_websocket import frames
assert frames.apply_mask.__name__ == "_apply_mask_speedups", frames.apply_mask
assert frames.apply_mask(b"abcd", b"\\x01\\x02\\x03\\x04") == bytes([0x60, 0x60, 0x60, 0x60])
print("unmasking:", frames.apply_mask.__name__)
"""
    return _venv_python(work, env, script)


def _venv_python(work, env, script):
    path = Path(work) / "check.py"
    path.write_text(script, encoding="utf-8")
    result = quickstart.shell(f"python {path}", work, env, timeout=60)
    assert result.returncode == 0, f"{script}\n{result.stdout}{result.stderr}"
    return result.stdout.strip()


def _serve(command, project, env):
    """Start a documented server command in the project and echo one message through it."""
    wsgi = project / "mysite" / "wsgi.py"
    if ".asgi:application" in command:
        wsgi = project / "mysite" / "asgi.py"
    original = wsgi.read_text(encoding="utf-8")
    if command.startswith("gunicorn -k geventwebsocket."):
        wsgi.write_text(_python_block(GEVENTWEBSOCKET_PAGE, "get_wsgi_application"), encoding="utf-8")
    elif ".asgi:application" in command:
        wsgi.write_text(_python_block(ASGI_PAGE, "django_websocket.asgi import get_asgi_application"), encoding="utf-8")
    try:
        port = free_port()
        started = time.monotonic()
        with quickstart.Server(quickstart.on_port(command, port), project, env) as server:
            received = quickstart.echo(port, server, "hello", timeout=60)
            assert received == "hello", f"`{command}` echoed {received!r}:\n{server.output()}"
        return f"`{command}` echoed ({time.monotonic() - started:.1f}s)"
    finally:
        wsgi.write_text(original, encoding="utf-8")


def _run(run, work, redis_url):
    """Everything for one install line; returns what was checked, raises on the first failure."""
    started = time.monotonic()
    work.mkdir()
    quickstart.copy_checkout(work / "django-websocket")
    venv = work / "venv"
    made = subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True, timeout=180)
    assert made.returncode == 0, f"python -m venv failed: {made.stderr}"
    env = quickstart.user_env(venv / "bin")
    done = []
    installed = quickstart.shell(run.line, work, env, timeout=600)
    assert installed.returncode == 0, f"`{run.line}` failed:\n{installed.stdout[-3000:]}{installed.stderr[-3000:]}"
    done.append(f"installed ({time.monotonic() - started:.1f}s)")
    check = quickstart.shell("python -m pip check", work, env, timeout=60)
    assert check.returncode == 0, f"pip check after `{run.line}`:\n{check.stdout}{check.stderr}"
    leaked = _venv_python(work, env, f"import importlib.util as u\nprint(*[m for m in {TOOLING!r} if u.find_spec(m)])")
    assert not leaked, f"not a clean environment: it has {leaked}"
    project = quickstart.make_project(work, env)
    for command in run.commands:
        done.append(_serve(command, project, env))
    extras = extras_of(run.line)
    if "redis" in extras:
        if redis_url is None:
            done.append("redis check SKIPPED: no redis-server")
        else:
            done.append(_check_redis(work, env, redis_url))
    if "speedups" in extras:
        done.append(_check_speedups(work, env))
    return time.monotonic() - started, done


def _readthedocs_steps():
    """The install commands and the Sphinx options of .readthedocs.yaml (its few keys, read
    without a YAML parser: the file is kept that simple)."""
    text = (ROOT / ".readthedocs.yaml").read_text(encoding="utf-8")
    install = re.search(r"^    install:\n((?:      - .*\n)+)", text, re.M)
    assert install, "no build.jobs.install in .readthedocs.yaml"
    commands = [line.strip()[2:] for line in install.group(1).splitlines()]
    conf = re.search(r"^sphinx:\n  configuration: (\S+)$", text, re.M)
    assert conf, "no sphinx.configuration in .readthedocs.yaml"
    warnings_fail = re.search(r"^  fail_on_warning: true$", text, re.M) is not None
    return commands, conf.group(1), warnings_fail


def _run_readthedocs(work):
    """The documentation built as Read the Docs builds it: a new environment in a copy of the
    checkout, the install commands of .readthedocs.yaml, then Sphinx (-W with fail_on_warning)."""
    started = time.monotonic()
    commands, conf, warnings_fail = _readthedocs_steps()
    assert warnings_fail, ".readthedocs.yaml must set fail_on_warning: true"
    work.mkdir()
    checkout = work / "django-websocket"
    quickstart.copy_checkout(checkout)
    venv = work / "venv"
    made = subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True, timeout=180)
    assert made.returncode == 0, f"python -m venv failed: {made.stderr}"
    env = quickstart.user_env(venv / "bin")
    for command in commands:
        result = quickstart.shell(command, checkout, env, timeout=600)
        assert result.returncode == 0, f"`{command}`:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
    docs = str(Path(conf).parent)
    result = quickstart.shell(f"python -m sphinx -q -W --keep-going -b html {docs} {work / 'html'}", checkout, env, 600)
    assert result.returncode == 0, f"sphinx:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
    assert (work / "html" / "index.html").exists()
    return time.monotonic() - started, [f"{' && '.join(commands)}; sphinx -W: built"]


@pytest.mark.timeout(1200)
def test_each_documented_install_line_serves_its_pages(tmp_path):
    runs, problems = plan()
    assert not problems, "\n".join(problems)

    missing = []
    try:
        import ensurepip  # noqa: F401  (python -m venv needs it to give the environment pip)
    except ImportError:
        missing.append("python -m venv with pip (Debian: apt-get install -y python3-venv)")
    if shutil.which("bash") is None:
        missing.append("bash")
    redis_binary = find_redis_server()
    if redis_binary is None:
        missing.append("redis-server (apt-get install -y redis-server), for the [redis] line")
    if missing:
        message = f"the install test needs {', '.join(missing)}"
        if in_ci():
            pytest.fail(message + "; in CI a missing tool is a failure", pytrace=False)
        warnings.warn(message, stacklevel=1)
        if missing != [missing[-1]] or redis_binary is not None:
            pytest.skip(message)
        # Only redis-server is missing: every line but the Redis check runs.

    redis = RedisServer(redis_binary) if redis_binary else None
    redis_url = redis.url if redis else None
    started = time.monotonic()
    try:
        with ThreadPoolExecutor(max_workers=PARALLEL) as pool:
            jobs = [
                (f"{run.line}  [{', '.join(sorted(run.pages))}]", _run, (run, tmp_path / f"line{i}", redis_url))
                for i, run in enumerate(runs)
            ]
            jobs.append(("the docs as .readthedocs.yaml builds them", _run_readthedocs, (tmp_path / "readthedocs",)))
            futures = [(label, pool.submit(function, *args)) for label, function, args in jobs]
            report, failures = [], []
            for label, future in futures:
                try:
                    elapsed, done = future.result(timeout=1100)
                    report.append(f"ok   {elapsed:5.1f}s  {label}")
                    report.extend(f"             {item}" for item in done)
                except Exception as exc:  # each failure is reported, with all the others
                    failures.append(f"FAIL {label}\n{exc}")
                    report.append(f"FAIL {label}")
    finally:
        if redis:
            redis.stop()
    report.append(f"{len(runs)} install lines and the docs build in {time.monotonic() - started:.1f}s")
    print("\n".join(report))
    assert not failures, "\n\n".join(failures)
