"""The database and long-lived views, over real servers: no request-long transaction, no
connection held by an idle socket, none reopened on every tick, CONN_MAX_AGE honoured.

Each server gets an on-disk SQLite database (tests/settings.py, the "file" alias): its
connections really open and close, and the open ones show as descriptors of the server process.
"""

import contextlib
import json
import os
import time
import urllib.request
from pathlib import Path

import pytest
from websockets.sync.client import connect

from tests import servers

TIMEOUT = 10
SERVERS = [servers.runserver, servers.gevent, servers.gunicorn_gthread]
IDS = ["runserver", "gevent", "gunicorn-gthread"]


def start(factory, tmp_path, **env):
    database = tmp_path / "db.sqlite3"
    server = factory(env={"TESTS_FILE_DATABASE": str(database), **env})
    server.database = database
    return server


def open_database_files(server):
    """How many descriptors the server's processes hold on its database file."""
    pids = [server.proc.pid]
    children = Path(f"/proc/{server.proc.pid}/task/{server.proc.pid}/children")
    if children.exists():
        pids += [int(pid) for pid in children.read_text().split()]
    count = 0
    for pid in pids:
        fd_dir = Path(f"/proc/{pid}/fd")
        for fd in fd_dir.iterdir() if fd_dir.exists() else ():
            try:
                if os.readlink(fd) == str(server.database):
                    count += 1
            except OSError:
                pass
    return count


def wait_until(predicate, timeout=TIMEOUT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


@pytest.mark.parametrize("factory", SERVERS, ids=IDS)
def test_views_run_outside_atomic_requests_and_their_own_atomic_works(factory, tmp_path):
    # ATOMIC_REQUESTS = True used to wrap the whole WebSocket view in one transaction, and the
    # cleanup between messages then closed the connection inside it: the second message's query
    # raised "Cannot operate on a closed database".
    server = start(factory, tmp_path, TESTS_ATOMIC_REQUESTS="1")
    try:
        with connect(server.url + "/database/transactions", open_timeout=TIMEOUT) as ws:
            for i in range(3):
                ws.send(f"note {i % 2}")
                assert json.loads(ws.recv(timeout=TIMEOUT)) == {"count": 1 + i // 2, "in_atomic_block": False}
        # A plain request to the same (@accept_websocket) view is still in the transaction.
        with urllib.request.urlopen(server.http_url + "/database/transactions", timeout=TIMEOUT) as response:
            assert response.read() == b"in_atomic_block=True"
    finally:
        server.stop()
    assert "Traceback" not in server.output()


@pytest.mark.parametrize("factory", SERVERS, ids=IDS)
def test_idle_sockets_hold_no_database_connection(factory, tmp_path):
    # 20 sockets whose handshake touched the database used to hold 20 connections while idle.
    server = start(factory, tmp_path)
    stack = contextlib.ExitStack()
    try:
        sockets = [stack.enter_context(connect(server.url + "/database/idle", open_timeout=TIMEOUT)) for _ in range(20)]
        for ws in sockets:
            assert ws.recv(timeout=TIMEOUT) == "ready"
        # WEBSOCKET_DATABASE_IDLE_TIMEOUT is 1 s by default.
        assert wait_until(lambda: open_database_files(server) == 0, timeout=5), open_database_files(server)
        # A message after the idle time gets a fresh connection, and the query works.
        for ws in sockets:
            ws.send("query")
            assert ws.recv(timeout=TIMEOUT) == "2"
    finally:
        stack.close()
        server.stop()
    assert "Traceback" not in server.output()


@pytest.mark.parametrize("factory", SERVERS, ids=IDS)
def test_a_view_polling_with_a_short_timeout_keeps_its_connection(factory, tmp_path):
    # A loop on wait(timeout=0.1) with a query per tick used to reconnect on every tick (20
    # ticks opened 20 connections with CONN_MAX_AGE = 0).
    server = start(factory, tmp_path)
    try:
        with connect(server.url + "/database/ticks?ticks=20&interval=0.1", open_timeout=TIMEOUT) as ws:
            assert ws.recv(timeout=TIMEOUT) == "1"
    finally:
        server.stop()


def test_conn_max_age_still_renews_a_busy_views_connection(tmp_path):
    # CONN_MAX_AGE = 1: a connection older than a second is replaced between two messages, as
    # between two requests, however busy the view is (25 ticks of 0.1 s: 2 or 3 connections).
    server = start(servers.runserver, tmp_path, TESTS_CONN_MAX_AGE="1")
    try:
        with connect(server.url + "/database/ticks?ticks=25&interval=0.1", open_timeout=TIMEOUT) as ws:
            assert ws.recv(timeout=TIMEOUT) in ("2", "3", "4")
    finally:
        server.stop()


def test_the_idle_timeout_setting_can_keep_connections(tmp_path):
    # WEBSOCKET_DATABASE_IDLE_TIMEOUT = None: connections stay, as CONN_MAX_AGE decides.
    server = start(servers.runserver, tmp_path, TESTS_SETTINGS_OVERRIDES='{"WEBSOCKET_DATABASE_IDLE_TIMEOUT": null}')
    try:
        with connect(server.url + "/database/idle", open_timeout=TIMEOUT) as ws:
            assert ws.recv(timeout=TIMEOUT) == "ready"
            time.sleep(1.5)
            assert open_database_files(server) >= 1
            ws.send("query")
            assert ws.recv(timeout=TIMEOUT) == "1"
    finally:
        server.stop()
