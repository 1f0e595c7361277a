"""The typed public API: a user's views type-check under ``mypy --strict``, the mistakes the
types exist for are reported, and the package's names are visible to ``help()`` and ``dir()``.

The views are in ``tests/typing_project/``: ``views.py`` uses the documented API as the docs
show it (it must give no error), ``misuse.py`` makes the mistakes, each line marked with the
error codes mypy must report there.
"""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROJECT = ROOT / "tests" / "typing_project"

pytest.importorskip("mypy", reason="mypy is in the lint dependency group")

_ERROR = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+): error: .*\[(?P<code>[a-z-]+)\]$")
_EXPECTED = re.compile(r"#\s*error:\s*(?P<codes>[a-z, -]+)$")


@pytest.fixture(scope="module")
def mypy_errors(tmp_path_factory):
    """``(file name, line, code)`` of every error of one strict mypy run over the project."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--config-file",
            str(PROJECT / "mypy.ini"),
            "--cache-dir",
            str(tmp_path_factory.mktemp("mypy-cache")),
            "--no-error-summary",
            "--hide-error-context",
            "--no-pretty",
            str(PROJECT / "views.py"),
            str(PROJECT / "misuse.py"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    errors = set()
    for line in result.stdout.splitlines():
        match = _ERROR.match(line)
        if match:
            errors.add((Path(match["file"]).name, int(match["line"]), match["code"]))
        elif ": error:" in line:
            raise AssertionError(f"unparsed mypy error: {line}")
    # 1: errors were found (misuse.py); anything else is mypy failing to run.
    assert result.returncode == 1, result.stdout + result.stderr
    return errors


def test_documented_views_type_check_strictly(mypy_errors):
    assert sorted(e for e in mypy_errors if e[0] == "views.py") == []


def _expected(path):
    expected = set()
    for number, line in enumerate(path.read_text().splitlines(), 1):
        match = _EXPECTED.search(line)
        if match:
            expected |= {(path.name, number, code.strip()) for code in match["codes"].split(",")}
    return expected


def test_misuse_is_reported(mypy_errors):
    source = (PROJECT / "misuse.py").read_text().splitlines()
    expected = _expected(PROJECT / "misuse.py")
    assert len(expected) >= 10  # the markers were read
    # Among them: send() takes str or bytes-like, not a float (sent as str() at run time).
    float_line = next(n for n, line in enumerate(source, 1) if "send(1.5)" in line)
    assert ("misuse.py", float_line, "arg-type") in expected
    assert sorted(e for e in mypy_errors if e[0] == "misuse.py") == sorted(expected)


def _run(code):
    # A fresh interpreter with no Django settings: the protocol core must import without them.
    env = {k: v for k, v in __import__("os").environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_public_names_are_visible_to_dir_and_help():
    import django_websocket

    found = _run(
        "import json, pydoc, sys, django_websocket as p\n"
        "before = sorted(m for m in sys.modules if m == 'django' or m.startswith('django.'))\n"
        "names = dir(p)\n"
        "text = pydoc.render_doc(p, renderer=pydoc.plaintext)\n"
        "print(json.dumps({'before': before, 'dir': names, 'help': text, 'all': p.__all__}))\n"
    )
    # Importing the package imports nothing of Django: the names are loaded when first used.
    assert found["before"] == []
    public = set(django_websocket.__all__)
    assert {"require_websocket", "accept_websocket", "WebSocketMiddleware", "WebSocketRequest"} <= public
    assert public <= set(found["dir"])
    assert not {"TYPE_CHECKING", "annotations", "import_module"} & set(found["dir"])
    text = found["help"]
    functions = text.split("\nFUNCTIONS\n", 1)[1]
    classes = text.split("\nCLASSES\n", 1)[1].split("\nFUNCTIONS\n", 1)[0]
    assert "require_websocket(" in functions and "accept_websocket(" in functions
    for name in ("WebSocketMiddleware", "WebSocketRequest", "AsyncWebSocketRequest", "HttpOrWebSocketRequest",
                 "AsyncHttpOrWebSocketRequest", "WebSocketConnection", "AsyncWebSocketConnection"):
        assert f"class {name}(" in classes, name
    # The package's docstring names every public name.
    for name in public - {"__version__"}:
        assert f"``{name}``" in django_websocket.__doc__, name


def test_lazy_names_resolve_to_their_modules():
    import django_websocket
    from django_websocket import decorators, middleware, types

    assert django_websocket.require_websocket is decorators.require_websocket
    assert django_websocket.WebSocketMiddleware is middleware.WebSocketMiddleware
    assert django_websocket.WebSocketRequest is types.WebSocketRequest
    assert django_websocket.Message == str | bytes
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        django_websocket.nothing  # noqa: B018
