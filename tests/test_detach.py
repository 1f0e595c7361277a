"""Detached sockets (``request.websocket.detach()``), over every server path and real clients.

The view joins a group, says "joined" and detaches: it returns at once, and the connection lives
on, in the process's reactor on a WSGI server, read by the event loop on an ASGI server (for
regular and ``async def`` views alike). Each test checks what a user relies on: group messages
keep coming, pings and closes are answered, the policy for client messages holds, membership
ends with the connection, the server's shutdown reaches detached sockets as it reaches attached
ones, a member too slow for its group gets the group's policy, and nothing is held per socket.
"""

import contextlib
import functools
import json
import os
import signal
import socket
import struct
import time
import urllib.parse
import urllib.request
import uuid
import warnings

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tests import servers
from tests.rawclient import RawClient
from tests.test_asgi_servers import FACTS
from tests.test_groups import EXTRA, LEGACY, QUEUE, read_flood

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
WSGI = set(STARTERS)
# The ASGI servers, with one worker for the same reason, each for regular and async def views.
STARTERS.update({name: functools.partial(start, workers=1) for name, start in servers.ASGI_SERVERS.items()})
TARGETS = sorted([(name, "sync") for name in STARTERS] + [(name, "async") for name in servers.ASGI_SERVERS])


class Target:
    """A started server, and the kind of view (``"sync"``, or ``"async"`` on an ASGI server)
    whose paths :meth:`path` gives."""

    def __init__(self, server, kind):
        self.server = server
        self.kind = kind

    def __getattr__(self, name):
        return getattr(self.server, name)

    def path(self, view):
        return f"/detach/{'a' if self.kind == 'async' else ''}{view}"


def assert_no_traceback(server):
    output = server.output()
    assert "Traceback" not in output, output[-5000:]


@pytest.fixture(scope="module")
def running():
    """One server at a time, kept while the tests of its sync and async views run."""
    started = {}
    yield started
    for server in started.values():
        server.stop()
        assert_no_traceback(server)


@pytest.fixture(scope="module", params=TARGETS, ids=[f"{name}-{kind}" for name, kind in TARGETS])
def server(request, running):
    name, kind = request.param
    if name not in running:
        for other in list(running):
            stopped = running.pop(other)
            stopped.stop()
            assert_no_traceback(stopped)
        running[name] = STARTERS[name]()
    return Target(running[name], kind)


def close_from_server(server, code, reason=""):
    """The (code, reason) a client gets when the server side closes with ``code`` and ``reason``,
    detached or attached: daphne sends only 1000 and 3000-4999, without the reason (its limits in
    tests/servers.py's SERVER_LIMITS)."""
    if server.name == "daphne":
        return (code if code == 1000 or 3000 <= code <= 4999 else 1000, "")
    return (code, reason)


def http_get(server, path):
    with urllib.request.urlopen(server.http_url + path, timeout=TIMEOUT) as response:
        return response.read().decode()


def status(server):
    return json.loads(http_get(server, "/detach/status"))


def send(server, group, message):
    query = urllib.parse.urlencode({"group": group, "message": message})
    assert http_get(server, f"/groups/send?{query}") == "sent"


def detached(server, group, on="ignore", path=None, **kwargs):
    # Used as a context manager by every test; websockets warns when connect() is called outside one.
    query = urllib.parse.urlencode({"group": group, "on": on})
    path = path or server.path("notify")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ws = connect(server.url + f"{path}?{query}", open_timeout=TIMEOUT, **kwargs)
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
    attached = server.url + server.path("attached") + "?" + urllib.parse.urlencode({"group": group})
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
    # Echoed (by the reactor on a WSGI server, by the ASGI server itself; daphne answers any
    # client's close with 1000, attached sockets' too).
    echo = 1000 if server.name == "daphne" else 4002
    assert ws.protocol.close_rcvd is not None and ws.protocol.close_rcvd.code == echo
    assert wait_until(lambda: members(server, group) == 0)


def test_a_client_that_vanishes_while_detached(server, request):
    group = f"vanish-{request.node.name}"
    with RawClient(server.host, server.port) as client:
        assert client.request(server.path("notify") + "?" + urllib.parse.urlencode({"group": group}))[0] == 101
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
        assert (info.value.rcvd.code, info.value.rcvd.reason) == close_from_server(server, 4000, "no messages here")


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
    # On an async view, "callback" is an async def one, awaited on the loop; "thread-callback"
    # a plain one, on the reactor's pool, sending through the loop.
    for on in ("callback", "thread-callback") if server.kind == "async" else ("callback",):
        with detached(server, group, on=on) as ws:
            for i in range(50):
                ws.send(str(i))
            assert [ws.recv(timeout=TIMEOUT) for _ in range(50)] == [f"got:{i}" for i in range(50)]
            # The callback closes the connection (from the pool's thread, or the loop).
            ws.send("close please")
            with pytest.raises(ConnectionClosed) as info:
                ws.recv(timeout=TIMEOUT)
            assert (info.value.rcvd.code, info.value.rcvd.reason) == close_from_server(server, 4001, "as asked")


def test_a_detached_member_too_slow_for_its_group_is_closed_with_1008(server, request):
    # As tests/test_groups.py's stalled members, detached: a raw client that reads "joined",
    # then nothing; the group's messages fill the socket's buffers (and, on an ASGI server,
    # the server's), then the member's outbox, and the group's "close" policy closes it.
    group = f"slow-{uuid.uuid4().hex[:8]}"
    control_url = server.url + "/groups/member"
    with (
        connect(control_url, open_timeout=TIMEOUT, **LEGACY) as control,
        RawClient(server.host, server.port, timeout=TIMEOUT) as stalled,
    ):
        control.recv(timeout=TIMEOUT)
        assert stalled.request(server.path("notify") + "?" + urllib.parse.urlencode({"group": group}))[0] == 101
        assert stalled.recv_frame(TIMEOUT)[2] == b"joined"
        assert wait_until(lambda: members(server, group) == 1)
        ask = functools.partial(_ask, control)
        assert ask(configure=group, slow_consumer="close", queue_size=QUEUE) == {"configured": group}
        sent = ask(flood=group, then=QUEUE + EXTRA, settle=0.3, limit=2000)["sent"]
        got, close_code = read_flood(stalled)
        assert close_code == close_from_server(server, 1008)[0], (sent, len(got))
        assert got == list(range(len(got))) and len(got) < sent  # a prefix: then the close
        stats = ask(stats=True)["groups"][group]
        assert stats["members"] == 0 and stats["closed_slow"] == 1, stats


def _ask(control, **command):
    control.send(json.dumps(command))
    return json.loads(control.recv(timeout=60))


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


def once_a_thread_is_free(open_connection, *args, **kwargs):
    # A view's thread ends just after the client had its "joined": the next handshake may come
    # first and be refused. Retried, within bounds: threads never released fail here.
    deadline = time.monotonic() + TIMEOUT
    while True:
        try:
            return open_connection(*args, **LEGACY, **kwargs)
        except InvalidStatus:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.mark.parametrize("name", sorted(servers.ASGI_SERVERS))
def test_a_detached_regular_view_releases_its_asgi_thread(name):
    # WEBSOCKET_ASGI_THREADS=2: two regular views at once, yet 20 detached sockets leave room
    # for two more attached ones, and group messages reach all of them.
    overrides = json.dumps({"WEBSOCKET_ASGI_THREADS": 2})
    server = Target(STARTERS[name](env={"TESTS_SETTINGS_OVERRIDES": overrides}), "sync")
    try:
        attached = server.url + "/detach/attached?group=threads"
        with contextlib.ExitStack() as stack:
            clients = [stack.enter_context(once_a_thread_is_free(detached, server, "threads")) for _ in range(20)]
            for _ in range(2):
                clients.append(stack.enter_context(once_a_thread_is_free(connect, attached, open_timeout=TIMEOUT)))
                assert clients[-1].recv(timeout=TIMEOUT) == "joined"
            # Both threads are taken now: a third regular view is refused (503, or 403 where
            # the server cannot answer with a status), so the count is really two.
            with pytest.raises(InvalidStatus):
                connect(attached, open_timeout=TIMEOUT)
            assert wait_until(lambda: members(server, "threads") == 22)
            send(server, "threads", "to all")
            assert all(ws.recv(timeout=TIMEOUT) == "to all" for ws in clients)
    finally:
        server.stop()
    assert_no_traceback(server)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", sorted(servers.ASGI_SERVERS))
def test_shutdown_on_an_asgi_server_reaches_detached_sockets_as_attached_ones(name):
    # Each server ends its connections its own way on SIGTERM (tests/test_asgi_servers.py's
    # FACTS): detached sockets, of regular and async views, end exactly as attached ones.
    options = ["--graceful-timeout", "2"] if name == "gunicorn-asgi" else []
    started = STARTERS[name](options=options)
    sync, asynchronous = Target(started, "sync"), Target(started, "async")
    try:
        with contextlib.ExitStack() as stack:
            clients = []
            for target in (sync, asynchronous):
                clients += [stack.enter_context(detached(target, "shutdown", **LEGACY)) for _ in range(2)]
                path = target.path("attached") + "?group=shutdown"
                clients.append(stack.enter_context(connect(started.url + path, open_timeout=TIMEOUT, **LEGACY)))
                assert clients[-1].recv(timeout=TIMEOUT) == "joined"
            assert wait_until(lambda: members(started, "shutdown") == 6)
            os.killpg(started.proc.pid, signal.SIGTERM)
            codes = []
            for ws in clients:
                with pytest.raises(ConnectionClosed) as info:
                    ws.recv(timeout=TIMEOUT)
                codes.append(info.value.rcvd.code if info.value.rcvd else None)
            assert codes == [FACTS[name]["shutdown"]] * 6
            started.proc.wait(TIMEOUT)
    finally:
        started.stop()
    assert_no_traceback(started)


def test_shutdown_closes_detached_sockets_with_1001():
    server = Target(servers.gevent(), "sync")
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
    server = Target(server, "sync")
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


def test_the_views_of_a_burst_of_handshakes_on_gevent_end_as_each_one_detaches():
    # 600 handshakes to a view that detaches, 40 at a time: each view's greenlet (and with it
    # its request, environ and middleware objects) must end once its socket is detached,
    # however many other handshakes are in progress. The server's live greenlets, sampled during
    # the burst, stay near the 40 handshakes in progress, not near the sockets opened so far
    # (views that queued behind one another kept their requests until the burst was over).
    import asyncio

    from tests.bulkclient import open_clients

    sockets, concurrency, group = 600, 40, "burst-greenlets"
    server = servers.gevent()
    clients, samples = [], []

    async def scenario():
        try:
            before = (await asyncio.to_thread(status, server))["greenlets"]
            opening = asyncio.ensure_future(
                open_clients(server.host, server.port, f"/detach/notify?group={group}", sockets, clients, concurrency)
            )
            while not opening.done():
                samples.append((len(clients), (await asyncio.to_thread(status, server))["greenlets"] - before))
                await asyncio.sleep(0.05)
            failures = await opening
            assert not failures, f"{len(failures)} connections failed, e.g. {failures[0]!r}"
            assert await asyncio.to_thread(wait_until, lambda: members(server, group) == sockets)
        finally:
            for client in clients:
                client.transport.close()
            await asyncio.sleep(0.1)

    try:
        asyncio.run(asyncio.wait_for(scenario(), 90))
    finally:
        server.stop()
    assert "Traceback" not in server.output()
    # The handshakes in progress, the status request itself and the reactor's own greenlets.
    bound = concurrency + 30
    assert len(samples) >= 3, samples
    assert max(extra for _, extra in samples) <= bound, samples
