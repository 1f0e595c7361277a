"""The chat example (examples/chat) run for real, as its docs say to run it.

Under ``runserver --multithreaded`` on the in-memory backend, out of the box; and under gunicorn
with two gevent workers on the Redis backend (``REDIS_URL``), where the clients of a room are
spread over both workers and still all see every message.
"""

import json
import os
import subprocess
import sys
import time
import urllib.request

import pytest
from websockets.sync.client import connect
from websockets.version import version as websockets_version

from tests.servers import ROOT, ServerProcess, free_port

EXAMPLES = ROOT / "examples"
TIMEOUT = 10
# websockets 17.1 deprecates connect() outside a with block unless given legacy=True, which older
# versions (16 is the newest for Python 3.10) do not accept.
LEGACY = {"legacy": True} if tuple(int(n) for n in websockets_version.split(".")[:2]) >= (17, 1) else {}


@pytest.fixture(scope="module")
def example_env(tmp_path_factory):
    env = {
        "DJANGO_SETTINGS_MODULE": "exampleproject.settings",
        "EXAMPLE_DATABASE": str(tmp_path_factory.mktemp("chat") / "examples.sqlite3"),
    }
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=EXAMPLES,
        env=dict(os.environ, PYTHONPATH=str(ROOT), **env),
        check=True,
        timeout=120,
    )
    return env


def enter(server, room):
    ws = connect(f"{server.url}/chat/{room}/", open_timeout=TIMEOUT, **LEGACY)
    # The view joins the room, then welcomes: with several workers, the notice of someone who
    # entered just before (on another worker, through Redis) may reach the socket in between.
    # Only such "joined" notices may come first.
    for _ in range(20):
        welcome = json.loads(ws.recv(timeout=TIMEOUT))
        if welcome["type"] != "joined":
            break
    assert welcome["type"] == "welcome", welcome
    ws.user = welcome["user"]
    return ws


def get(server, path):
    with urllib.request.urlopen(server.http_url + path, timeout=TIMEOUT) as response:
        return response.status, response.read().decode()


def joined_until(ws, users, others):
    """Read "joined" notices until each of ``users`` was announced; return every name announced.

    Only names in ``others`` may come besides: with several workers, the notice of someone who
    entered on another worker just before ``ws`` travels through Redis and may reach ``ws``'s
    worker after ``ws`` joined (pub/sub orders each sender's messages, not different senders').
    """
    seen = []
    while not set(users) <= set(seen):
        event = json.loads(ws.recv(timeout=TIMEOUT))
        assert event["type"] == "joined", event
        assert event["user"] in set(users) | set(others) and event["user"] not in seen, (event, seen)
        seen.append(event["user"])
    return seen


def chat_round(server, room, clients):
    """Each client says one line; every client must see all of them, each sender's in order."""
    for n, ws in enumerate(clients):
        ws.send(f"line {n}")
    expected = {f"line {n}": ws.user for n, ws in enumerate(clients)}
    users = {ws.user for ws in clients}
    for ws in clients:
        seen = []
        while len(seen) < len(clients):
            event = json.loads(ws.recv(timeout=TIMEOUT))
            if event["type"] == "joined" and event["user"] in users:
                continue  # a late notice of someone already in the room (see joined_until)
            seen.append(event)
        assert all(event["type"] == "message" for event in seen), seen
        assert {event["text"]: event["user"] for event in seen} == expected


def test_chat_under_runserver_in_memory(example_env):
    port = free_port()
    argv = [sys.executable, "manage.py", "runserver", "--multithreaded", "--noreload", f"127.0.0.1:{port}"]
    server = ServerProcess("chat-runserver", argv, port, env=example_env, cwd=EXAMPLES)
    try:
        status, page = get(server, "/chat/lobby/")
        assert status == 200 and "new DjangoWebSocket(" in page
        alice = enter(server, "lobby")
        bob = enter(server, "lobby")
        assert alice.user.startswith("anonymous-") and bob.user.startswith("anonymous-")
        assert json.loads(alice.recv(timeout=TIMEOUT)) == {"type": "joined", "user": bob.user}
        assert json.loads(get(server, "/chat/lobby/members/")[1]) == {"members": [alice.user, bob.user]}
        chat_round(server, "lobby", [alice, bob])
        bob.close()
        assert json.loads(alice.recv(timeout=TIMEOUT)) == {"type": "left", "user": bob.user}
        # Bob left the room before his notice went out: he is no longer in it.
        assert json.loads(get(server, "/chat/lobby/members/")[1]) == {"members": [alice.user]}
        alice.close()
    finally:
        server.stop()
    assert "Traceback" not in server.output(), server.output()


def _worker_connections(master_pid, port):
    """{worker pid: established connections to ``port``}, read from /proc (Linux)."""
    inodes = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        with open(table) as lines:
            next(lines)
            for line in lines:
                fields = line.split()
                local_port = int(fields[1].rsplit(":", 1)[1], 16)
                if local_port == port and fields[3] == "01":  # 01: ESTABLISHED
                    inodes[fields[9]] = True
    counts = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as stat:
                if int(stat.read().rsplit(")", 1)[1].split()[1]) != master_pid:
                    continue
            links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        except OSError:
            continue  # a process that ended meanwhile
        counts[int(pid)] = sum(1 for link in links if link.startswith("socket:[") and link[8:-1] in inodes)
    return counts


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts connections per worker in /proc")
def test_chat_on_two_gunicorn_gevent_workers_with_redis(example_env, redis_server):
    pytest.importorskip("gevent")
    port = free_port()
    argv = [
        sys.executable, "-m", "gunicorn",
        "-k", "django_websocket.servers.gunicorn.GeventWorker", "--workers", "2",
        "--bind", f"127.0.0.1:{port}", "exampleproject.wsgi",
    ]  # fmt: skip
    env = {**example_env, "REDIS_URL": redis_server.url}
    server = ServerProcess("chat-gunicorn", argv, port, env=env, cwd=EXAMPLES)
    clients = []
    try:
        assert get(server, "/static/django_websocket/websocket.js")[0] == 200  # the page's script, too
        # Both workers take connections once both have booted: enter until each holds some.
        deadline = time.monotonic() + 20
        while True:
            clients.append(enter(server, "workers"))
            per_worker = _worker_connections(server.proc.pid, port)
            if len(clients) >= 6 and sum(1 for count in per_worker.values() if count) == 2:
                break
            assert time.monotonic() < deadline, f"connections per worker: {per_worker}"
        for n, ws in enumerate(clients):
            # Each client hears of everyone who entered after it, whichever worker they are on.
            # Notices from different workers travel through Redis independently: only each
            # sender's own order is guaranteed (tests/test_groups_redis.py checks that), so
            # this checks who was announced, not in which order.
            joined_until(ws, [other.user for other in clients[n + 1 :]], [other.user for other in clients[:n]])
        # Who is in the room, asked of either worker: everyone, on both workers (Redis presence).
        for _ in range(4):
            assert json.loads(get(server, "/chat/workers/members/")[1]) == {"members": [ws.user for ws in clients]}
        chat_round(server, "workers", clients)
    finally:
        for ws in clients:
            ws.close()
        server.stop()
    assert "Traceback" not in server.output(), server.output()
