"""The quickstart, followed as written: a new ``django-admin startproject mysite`` project, the
files that docs/tutorial/quickstart.rst (and README.rst) show, the documented ``runserver``
command, and an echo through it, from a WebSocket client and from the browser console snippet.
"""

import os
import re
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
import warnings
from pathlib import Path

import pytest

from tests import quickstart
from tests.docs_commands import ROOT, read_page
from tests.servers import free_port

PAGE = ROOT / "docs" / "tutorial" / "quickstart.rst"
README = ROOT / "README.rst"


def test_the_page_shows_the_files_the_test_uses():
    """Every code block of the quickstart comes from examples/quickstart/, and every file there
    that the project is made of is shown: what the reader copies is what this test runs."""
    included = re.findall(r"^\.\. literalinclude:: (\S+)", PAGE.read_text(encoding="utf-8"), re.M)
    paths = {(PAGE.parent / name).resolve() for name in included}
    outside = [str(p) for p in paths if quickstart.QUICKSTART not in p.parents]
    assert not outside, f"the quickstart includes files of another project: {outside}"
    wanted = {quickstart.QUICKSTART / name for name in quickstart.FILES} | {quickstart.CONSOLE_SNIPPET}
    assert paths == wanted


def test_readme_shows_the_same_code_inline():
    """README.rst must read on a code host, where includes are not followed: it carries the
    quickstart's code itself, identical to the files."""
    blocks = [text for _, text in read_page(README).blocks]
    for path in [quickstart.QUICKSTART / name for name in quickstart.FILES] + [quickstart.CONSOLE_SNIPPET]:
        assert path.read_text(encoding="utf-8") in blocks, f"README.rst lacks {path.relative_to(ROOT)} verbatim"
    readme = read_page(README)
    assert readme.server_commands == read_page(PAGE).server_commands
    assert readme.install_lines == read_page(PAGE).install_lines


@pytest.fixture(scope="module")
def project_server():
    """The quickstart's project, served by the quickstart's command, in this test environment."""
    (command,) = read_page(PAGE).server_commands
    assert command == "python manage.py runserver --multithreaded"
    parent = tempfile.mkdtemp(prefix="quickstart-")
    env = quickstart.user_env(Path(sys.executable).parent)
    project = quickstart.make_project(parent, env)
    port = free_port()
    server = quickstart.Server(quickstart.on_port(command, port), project, env)
    try:
        yield server, port
    finally:
        server.stop()
        shutil.rmtree(parent, ignore_errors=True)


def test_the_project_echoes_on_runserver(project_server):
    server, port = project_server
    assert quickstart.echo(port, server, "hello") == "hello"
    # "the echo keeps each message's type"
    assert quickstart.echo(port, server, b"\x00\xffbinary") == b"\x00\xffbinary"


def test_plain_http_is_refused_as_the_page_shows(project_server):
    server, port = project_server
    quickstart.echo(port, server)  # the server is up
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/echo", timeout=10)
    assert refused.value.code == 400
    assert "This view accepts only WebSocket connections." in refused.value.read().decode()
    assert "This view accepts only WebSocket connections." in PAGE.read_text(encoding="utf-8")


CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def test_the_console_snippet_echoes_in_a_browser(project_server):
    """The snippet, pasted into the console of a page of the site, logs the echo."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing.append("selenium")
    if missing:
        problem = f"{', '.join(missing)} missing (apt-get install -y chromium chromium-driver)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"the browser check cannot run in CI: {problem}")
        warnings.warn(f"SKIPPED the quickstart's browser check: {problem}", stacklevel=1)
        pytest.skip(problem)

    server, port = project_server
    quickstart.echo(port, server)  # the server is up
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        f"--user-data-dir={profile}",
        "--proxy-server=127.0.0.1:9",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        driver.set_page_load_timeout(15)
        driver.set_script_timeout(15)
        driver.get(f"http://127.0.0.1:{port}/")  # any page of the site: here Django's 404 page
        snippet = quickstart.CONSOLE_SNIPPET.read_text(encoding="utf-8")
        logged = driver.execute_async_script(
            "const done = arguments[arguments.length - 1];console.log = (...args) => done(args.join(' '));" + snippet
        )
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
    assert logged == "received: hello"
