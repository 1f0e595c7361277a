"""The notifications example (examples/notifications) run for real, as its docs say to run it.

Under ``runserver --multithreaded`` and under the gevent server (``manage.py rungevent``), on the
in-memory backend: logged-in users' pages open detached sockets, whose views return at once (the
server's thread count does not grow with the pages), and a notification sent through the page's
form reaches every open page of its recipient, and no other.
"""

import http.cookiejar
import json
import os
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect
from websockets.version import version as websockets_version

from tests.servers import ROOT, ServerProcess, free_port

EXAMPLES = ROOT / "examples"
TIMEOUT = 10
USERS = ("ada", "bob")
# websockets 17.1 deprecates connect() outside a with block unless given legacy=True, which older
# versions (16 is the newest for Python 3.10) do not accept.
LEGACY = {"legacy": True} if tuple(int(n) for n in websockets_version.split(".")[:2]) >= (17, 1) else {}


@pytest.fixture(scope="module")
def example_env(tmp_path_factory):
    env = {
        "DJANGO_SETTINGS_MODULE": "exampleproject.settings",
        "EXAMPLE_DATABASE": str(tmp_path_factory.mktemp("notifications") / "examples.sqlite3"),
    }
    run_env = dict(os.environ, PYTHONPATH=str(ROOT), **env)
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=EXAMPLES, env=run_env, check=True, timeout=120,
    )  # fmt: skip
    create = "; ".join(f"User.objects.create_user({name!r}, password='secret-{name}')" for name in USERS)
    subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", f"from django.contrib.auth.models import User; {create}"],
        cwd=EXAMPLES, env=run_env, check=True, timeout=120,
    )  # fmt: skip
    return env


class Browser:
    """One user's cookies (session, CSRF) over plain HTTP, as a browser keeps them."""

    def __init__(self, server):
        self.server = server
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def get(self, path):
        with self.opener.open(self.server.http_url + path, timeout=TIMEOUT) as response:
            return response.read().decode()

    def post(self, path, data):
        data = {**data, "csrfmiddlewaretoken": self.cookie("csrftoken")}
        request = urllib.request.Request(self.server.http_url + path, urllib.parse.urlencode(data).encode())
        try:
            with self.opener.open(request, timeout=TIMEOUT) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def cookie(self, name):
        return next((c.value for c in self.jar if c.name == name), "")

    def log_in(self, name):
        self.get("/notifications/login/")  # the CSRF cookie
        status, page = self.post(
            "/notifications/login/", {"username": name, "password": f"secret-{name}", "next": "/notifications/"}
        )
        assert status == 200 and f"logged in as {name}" in page, page[:500]

    def open_page(self):
        cookies = "; ".join(f"{c.name}={c.value}" for c in self.jar)
        return connect(
            self.server.url + "/notifications/",
            additional_headers={"Cookie": cookies},
            open_timeout=TIMEOUT,
            **LEGACY,
        )


def threads(pid):
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^Threads:\s+(\d+)", status, re.M).group(1))


def start(kind, env):
    port = free_port()
    if kind == "runserver":
        argv = [sys.executable, "manage.py", "runserver", "--multithreaded", "--noreload", f"127.0.0.1:{port}"]
    else:
        argv = [sys.executable, "manage.py", "rungevent", f"127.0.0.1:{port}"]
    return ServerProcess(f"notifications-{kind}", argv, port, env=env, cwd=EXAMPLES)


@pytest.mark.parametrize("kind", ["runserver", "gevent"])
def test_notifications_reach_every_open_page_of_their_user(example_env, kind):
    server = start(kind, example_env)
    pages = []
    try:
        ada, bob = Browser(server), Browser(server)
        ada.log_in("ada")
        bob.log_in("bob")
        anonymous = Browser(server)
        assert "log in" in anonymous.get("/notifications/")
        with pytest.raises(InvalidStatus) as refused:
            anonymous.open_page()
        assert refused.value.response.status_code == 403

        before = threads(server.proc.pid)
        ada_pages = [ada.open_page() for _ in range(20)]
        pages += ada_pages
        bob_page = bob.open_page()
        pages.append(bob_page)
        # Each page's view detached its socket and returned: no thread stays per page.
        time.sleep(0.5)
        assert threads(server.proc.pid) <= before + 3, (before, threads(server.proc.pid))

        assert bob.post("/notifications/send/", {"to": "ada", "text": "lunch?"}) == (200, '{"sent": "ada"}')
        for page in ada_pages:
            notice = json.loads(page.recv(timeout=TIMEOUT))
            assert (notice["type"], notice["text"], notice["from"]) == ("notification", "lunch?", "bob")
        with pytest.raises(TimeoutError):
            bob_page.recv(timeout=0.3)
        # What a page sends is ignored; the page stays open and in its group.
        bob_page.send("hello?")
        assert ada.post("/notifications/send/", {"to": "bob", "text": "yes"})[0] == 200
        assert json.loads(bob_page.recv(timeout=TIMEOUT))["text"] == "yes"
    finally:
        for page in pages:
            page.close()
        server.stop()
    assert "Traceback" not in server.output(), server.output()
