"""The shell commands the documentation tells users to run, read from its .rst files.

A command is a line starting with ``$ `` in a ``.. code-block:: console`` block (continuation
lines ending with ``\\`` are joined). README.rst and every page under docs/ are read, so that a
new install line or server command is tested as soon as it is written.
"""

import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_DIRECTIVE = re.compile(r"^(?P<indent>\s*)\.\. (?:code-block|code|sourcecode):: (?P<lang>\S+)\s*$")
_INSTALL = re.compile(r"^(?:python -m pip|pip) install ")
_SERVER_PREFIXES = (
    "python manage.py runserver",
    "python manage.py rungevent",
    "python -m django_websocket.servers.",
    "gunicorn ",
    "uvicorn ",
    "daphne ",
    "hypercorn ",
    "granian ",
)


@dataclass
class Page:
    path: Path
    commands: list = field(default_factory=list)  # (line number, command), in page order
    console_lines: set = field(default_factory=set)  # line numbers inside console blocks
    blocks: list = field(default_factory=list)  # (language, text) of every code block

    @property
    def name(self):
        return self.path.relative_to(ROOT).as_posix()

    @property
    def install_lines(self):
        """The lines that install this project (``pip install tox`` and the like are not)."""
        return [cmd for _, cmd in self.commands if _INSTALL.match(cmd) and "django-websocket" in cmd]

    @property
    def server_commands(self):
        return [cmd for _, cmd in self.commands if cmd.startswith(_SERVER_PREFIXES)]


def documentation_files():
    files = [ROOT / "README.rst"]
    files += sorted(p for p in (ROOT / "docs").rglob("*.rst") if "_build" not in p.parts)
    return files


def _indent(line):
    return len(line) - len(line.lstrip())


def read_page(path):
    page = Page(Path(path))
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        match = _DIRECTIVE.match(lines[i])
        i += 1
        if not match:
            continue
        base = len(match["indent"])
        # The directive's options (":caption: ..."), then its content, indented deeper.
        while i < len(lines) and lines[i].strip().startswith(":") and _indent(lines[i]) > base:
            i += 1
        start = i
        while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > base):
            i += 1
        content = lines[start:i]
        page.blocks.append((match["lang"], textwrap.dedent("\n".join(content)).strip("\n") + "\n"))
        if match["lang"] in ("console", "shell-session"):
            page.console_lines.update(range(start + 1, i + 1))
            page.commands.extend(_commands(content, start + 1))
    return page


def _commands(content, first_number):
    pending = None
    for number, raw in enumerate(content, first_number):
        text = raw.strip()
        if pending is not None:
            start, so_far = pending
            so_far += " " + text
        elif text.startswith("$ "):
            start, so_far = number, text[2:]
        else:
            continue  # output shown after a command, or a blank line
        if so_far.endswith("\\"):
            pending = (start, so_far[:-1].rstrip())
        else:
            pending = None
            yield start, " ".join(so_far.split())


def read_documentation():
    return [read_page(path) for path in documentation_files()]


def prose_pip_installs(page):
    """``pip install ...`` written outside console blocks (in prose or literal blocks), with
    their line numbers: such a line escapes the install test."""
    found = []
    for number, line in enumerate(page.path.read_text(encoding="utf-8").splitlines(), 1):
        if number in page.console_lines:
            continue
        for match in re.finditer(r"pip install[^`\n]*", line):
            found.append((number, match.group(0).strip()))
    return found


def extras_of(install_line):
    """The extras an install line asks for: ``"./django-websocket[gunicorn,gevent]"`` gives
    ``{"gunicorn", "gevent"}``."""
    match = re.search(r"django-websocket\[([^\]]*)\]", install_line)
    return {name.strip() for name in match.group(1).split(",")} if match else set()
