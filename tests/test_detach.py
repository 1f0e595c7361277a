"""Detached sockets (``request.websocket.detach()``), over every WSGI server path and real clients.

The view joins a group, says "joined" and detaches: it returns at once, and the connection lives
on in the process's reactor. Each test checks what a user relies on: group messages keep coming,
pings and closes are answered, the policy for client messages holds, membership ends with the
connection, the server's shutdown reaches detached sockets, and nothing is held per socket.
"""

import contextlib
import json
import os
import signal
import socket
import struct
import time
import urllib.parse
import urllib.request
import warnings

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests import servers
from tests.rawclient import RawClient

TIMEOUT = 10
# Every WSGI server path; gunicorn with one worker, so that a group message sent over HTTP is in
# the process of the sockets (the in-memory backend).
STARTERS = {
    "runserver": servers.runserver,
    "gevent": servers.gevent,
    "gevent-websocket": servers.gevent_websocket,
    "gunicorn-gevent": servers._gunicorn(
        "gunicorn-gevent", "django_websocket.servers.gunicorn.GeventWorker", "tests.wsgi", "--workers", "1"
    ),
    "gunicorn-gthread": servers._gunicorn(
        "gunicorn-gthread", "django_websocket.servers.gunicorn.ThreadWorker", "tests.wsgi", "--threads", "50",
        "--workers", "1",
    ),
    "gunicorn-geventwebsocket": servers._gunicorn(
        "gunicorn-geventwebsocket", "django_websocket.servers.gunicorn.GeventWebSocketWorker", "tests.wsgi",
        "--workers", "1",
    ),
}  # fmt: skip


@pytest.fixture(scope="module", params=sorted(STARTERS))
def server(request):
    started = STARTERS[request.param]()
    yield started
    started.stop()
    assert "Traceback" not in started.output()


def http_get(server, path):
    with urllib.request.urlopen(server.http_url + path, timeout=TIMEOUT) as response:
        return response.read().decode()


def status(server):
    return json.loads(http_get(server, "/detach/status"))


def send(server, group, message):
    query = urllib.parse.urlencode({"group": group, "message": message})
    assert http_get(server, f"/groups/send?{query}") == "sent"


def detached(server, group, on="ignore", **kwargs):
    # Used as a context manager by every test; websockets warns when connect() is called outside one.
    query = urllib.parse.urlencode({"group": group, "on": on})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ws = connect(server.url + f"/detach/notify?{query}", open_timeout=TIMEOUT, **kwargs)
        assert ws.recv(timeout=TIMEOUT) == "joined"
    return ws


def wait_until(predicate, timeout=TIMEOUT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def members(server, group):
    # One process serves a group's members in these tests: its local count says it.
    return int(http_get(server, "/groups/members?" + urllib.parse.urlencode({"group": group})))


def test_group_messages_reach_a_detached_socket_in_order(server, request):
    group = f"feed-{request.node.name}"
    with detached(server, group) as ws:
        assert wait_until(lambda: members(server, group) >= 1)
        for i in range(20):
            send(server, group, f"m{i}")
        assert [ws.recv(timeout=TIMEOUT) for _ in range(20)] == [f"m{i}" for i in range(20)]
        # Pings are answered while detached.
        assert ws.ping().wait(TIMEOUT)


def test_attached_and_detached_members_of_one_group(server, request):
    group = f"mixed-{request.node.name}"
    attached = server.url + "/detach/attached?" + urllib.parse.urlencode({"group": group})
    with detached(server, group) as a, connect(attached, open_timeout=TIMEOUT) as b:
        assert b.recv(timeout=TIMEOUT) == "joined"
        send(server, group, "both")
        assert a.recv(timeout=TIMEOUT) == "both"
        assert b.recv(timeout=TIMEOUT) == "both"


def test_a_client_close_completes_and_membership_ends(server, request):
    group = f"close-{request.node.name}"
    ws = detached(server, group)
    assert wait_until(lambda: members(server, group) == 1)
    ws.close(4002, "bye")
    assert ws.protocol.close_rcvd is not None and ws.protocol.close_rcvd.code == 4002  # the reactor echoed it
    assert wait_until(lambda: members(server, group) == 0)


def test_a_client_that_vanishes_while_detached(server, request):
    group = f"vanish-{request.node.name}"
    with RawClient(server.host, server.port) as client:
        assert client.request("/detach/notify?" + urllib.parse.urlencode({"group": group}))[0] == 101
        assert client.recv_frame()[2] == b"joined"
        assert wait_until(lambda: members(server, group) == 1)
        client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    assert wait_until(lambda: members(server, group) == 0)


def test_client_messages_are_ignored_by_default(server, request):
    group = f"ignore-{request.node.name}"
    with detached(server, group) as ws:
        for i in range(100):
            ws.send(f"noise {i}")
        send(server, group, "still here")
        assert ws.recv(timeout=TIMEOUT) == "still here"


def test_a_close_policy_closes_on_the_first_message(server, request):
    group = f"policy-{request.node.name}"
    with detached(server, group, on="close") as ws:
        ws.send("hello?")
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=TIMEOUT)
        assert (info.value.rcvd.code, info.value.rcvd.reason) == (4000, "no messages here")


def test_a_close_policy_with_a_code_no_endpoint_may_send_is_refused_at_detach(server):
    # 1005 (no status) is only ever reported, never sent (RFC 6455 §7.4.1): refused when the
    # view detaches, not when the first message comes, in the reactor's thread.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ws = connect(server.url + "/detach/bad-close?code=1005", open_timeout=TIMEOUT)
    with ws:
        assert ws.recv(timeout=TIMEOUT) == "ValueError: 1005 is not a close code that may be sent (RFC 6455 §7.4)"
        ws.send("still attached?")
        assert ws.recv(timeout=TIMEOUT) == "attached"


def test_a_callback_policy_answers_each_message_in_order(server, request):
    group = f"callback-{request.node.name}"
    with detached(server, group, on="callback") as ws:
        for i in range(50):
            ws.send(str(i))
        assert [ws.recv(timeout=TIMEOUT) for _ in range(50)] == [f"got:{i}" for i in range(50)]


def test_detached_sockets_hold_no_thread_or_greenlet(server, request):
    # 40 detached sockets: the server's thread count stays (runserver and gthread run a view per
    # thread; on gevent a greenlet is not a thread, and this checks the reactor added one only).
    group = f"count-{request.node.name}"
    before = status(server)
    with contextlib.ExitStack() as stack:
        for _ in range(40):
            stack.enter_context(detached(server, group))
        assert wait_until(lambda: members(server, group) >= 1)
        after = status(server)
        assert after["detached"] >= before["detached"] + 40  # one process: its reactor has them
        assert after["threads"] <= before["threads"] + 6, (before, after)
        send(server, group, "to all")


def test_shutdown_closes_detached_sockets_with_1001():
    server = servers.gevent()
    try:
        with contextlib.ExitStack() as stack:
            clients = [stack.enter_context(detached(server, "shutdown")) for _ in range(5)]
            os.killpg(server.proc.pid, signal.SIGTERM)
            for ws in clients:
                with pytest.raises(ConnectionClosed) as info:
                    ws.recv(timeout=TIMEOUT)
                assert info.value.rcvd is not None and info.value.rcvd.code == 1001
            server.proc.wait(TIMEOUT)
    finally:
        server.stop()
    assert "Traceback" not in server.output()


def test_a_gthread_worker_with_four_threads_holds_hundreds_of_detached_sockets():
    server = servers._gunicorn(
        "gunicorn-gthread-4",
        "django_websocket.servers.gunicorn.ThreadWorker",
        "tests.wsgi",
        "--threads",
        "4",
        "--workers",
        "1",
    )(env=None)
    try:
        with contextlib.ExitStack() as stack:
            clients = [stack.enter_context(detached(server, "many")) for _ in range(300)]
            started = time.monotonic()
            assert http_get(server, "/plain").startswith("plain view")
            answered = time.monotonic() - started
            send(server, "many", "hello")
            got = sum(ws.recv(timeout=TIMEOUT) == "hello" for ws in clients)
        assert got == 300
        assert answered < 2.0, answered
    finally:
        server.stop()


# --- nothing lost or reordered, at a small scale -------------------------------------------------------


@pytest.mark.parametrize("name", ["gevent", "runserver"])
def test_a_burst_to_hundreds_of_detached_sockets_loses_and_reorders_nothing(name):
    # 200 detached sockets, then one view sends their group 50 messages back to back: each
    # socket must get "0".."49", exactly once each and in order (RFC 6455 §6.1: a message is
    # delivered whole, and TCP keeps the order of what one writer wrote). A real client per
    # socket, from one asyncio loop (tests/bulkclient.py), reading them all at once.
    import asyncio

    from tests.bulkclient import open_clients

    sockets, messages, group = 200, 50, f"burst-{name}"
    server = STARTERS[name]()
    clients = []

    async def scenario():
        try:
            # Few handshakes at a time: runserver's listen backlog is small.
            failures = await open_clients(
                server.host, server.port, f"/detach/notify?group={group}", sockets, clients, concurrency=8
            )
            assert not failures, f"{len(failures)} connections failed, e.g. {failures[0]!r}"
            for client in clients:
                assert await asyncio.wait_for(client.messages.get(), TIMEOUT) == b"joined"
            assert await asyncio.to_thread(members, server, group) == sockets
            # Their views have returned: the reactor holds them all.
            assert (await asyncio.to_thread(status, server))["detached"] >= sockets
            sent = await asyncio.to_thread(
                http_get, server, "/detach/send-sequence?" + urllib.parse.urlencode({"group": group, "count": messages})
            )
            assert sent == f"sent {messages}"
            return await asyncio.gather(*(received(client) for client in clients))
        finally:
            for client in clients:
                client.transport.close()
            await asyncio.sleep(0.1)

    async def received(client):
        got = []
        try:
            while len(got) < messages:
                message = await asyncio.wait_for(client.messages.get(), TIMEOUT)
                if message is None:
                    break  # closed
                got.append(int(message))
        except asyncio.TimeoutError:
            pass
        return got

    try:
        results = asyncio.run(asyncio.wait_for(scenario(), 90))
        expected = list(range(messages))
        wrong = [got for got in results if got != expected]
        assert not wrong, f"{len(wrong)} of {sockets} sockets got another sequence, e.g. {wrong[0]}"
    finally:
        server.stop()
    assert "Traceback" not in server.output()
