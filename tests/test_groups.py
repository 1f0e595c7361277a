"""Groups on the in-memory backend: join, leave, send from anywhere, slow consumers.

Most tests run the dev server in a thread of the test process (``thread_server``), so that the
test itself calls ``groups.send`` the way a signal handler or another view would, and so that
``override_settings`` applies. ``test_groups_on_every_server`` runs the same path on each real
server subprocess (tests/servers.py), gevent's monkey-patched greenlets included.
"""

import datetime
import decimal
import json
import os
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
import uuid

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect
from websockets.version import version as websockets_version

from django_websocket import groups
from django_websocket.groups.memory import MemoryGroupBackend
from django_websocket.testing import WebSocketClient
from tests.groupmember import Member
from tests.rawclient import RawClient
from tests.servers import ROOT

TIMEOUT = 10
# websockets 17.1 deprecates connect() outside a with block unless given legacy=True, which older
# versions (16 is the newest for Python 3.10) do not accept.
LEGACY = {"legacy": True} if tuple(int(n) for n in websockets_version.split(".")[:2]) >= (17, 1) else {}


def member(server, join=(), info=None, **kwargs):
    """A client of the member view (tests/group_views.py), once it has joined ``join`` (with
    ``info``, if given)."""
    query = f"join={','.join(join)}"
    if info is not None:
        query += "&info=" + urllib.parse.quote(json.dumps(info))
    # legacy=True: tests hold several connections at once, closed in finally blocks.
    ws = connect(f"{server.url}/groups/member?{query}", open_timeout=TIMEOUT, **LEGACY, **kwargs)
    hello = json.loads(ws.recv(timeout=TIMEOUT))
    assert hello["joined"] == sorted(join)
    ws.member_id, ws.pid = hello["id"], hello["pid"]
    return ws


def command(ws, **command):
    ws.send(json.dumps(command))


def local_members(group):
    return groups.get_backend().local_members(group)


def wait_until(predicate, timeout=TIMEOUT, message="condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{message} still false after {timeout}s")
        time.sleep(0.02)


def test_send_reaches_every_member_as_text_or_binary(thread_server):
    server = thread_server()
    clients = [member(server, ["room:1"]) for _ in range(3)]
    outsider = member(server, ["room:2"])
    try:
        groups.send("room:1", "héllo ✓")
        groups.send("room:1", b"\x00\x01\xff")
        groups.send("room:1", bytearray(b"buffer"))
        for ws in clients:
            assert ws.recv(timeout=TIMEOUT) == "héllo ✓"
            assert ws.recv(timeout=TIMEOUT) == b"\x00\x01\xff"
            assert ws.recv(timeout=TIMEOUT) == b"buffer"
        with pytest.raises(TimeoutError):
            outsider.recv(timeout=0.2)
    finally:
        for ws in clients + [outsider]:
            ws.close()


def test_send_json_encodes_django_types(thread_server):
    server = thread_server()
    with member(server, ["json"]) as ws:
        when = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
        ident = uuid.UUID(int=7)
        groups.send_json("json", {"when": when, "price": decimal.Decimal("1.50"), "id": ident, "text": "é"})
        assert json.loads(ws.recv(timeout=TIMEOUT)) == {
            "when": "2026-01-02T03:04:05Z",
            "price": "1.50",
            "id": str(ident),
            "text": "é",
        }


def test_exclude_the_sender(thread_server):
    server = thread_server()
    with member(server, ["chat"]) as alice, member(server, ["chat"]) as bob:
        command(alice, send="chat", message="from alice", exclude_self=True, ack=1)
        assert alice.recv(timeout=TIMEOUT) == '{"ack": 1}'
        assert bob.recv(timeout=TIMEOUT) == "from alice"
        # By id too, from code that has no socket at hand.
        groups.send("chat", "not for bob", exclude=[bob.member_id])
        groups.send("chat", "marker")
        assert alice.recv(timeout=TIMEOUT) == "not for bob"
        assert alice.recv(timeout=TIMEOUT) == "marker"
        assert bob.recv(timeout=TIMEOUT) == "marker"


def test_join_and_leave_from_the_view(thread_server):
    server = thread_server()
    with member(server) as ws:
        command(ws, join="a")
        assert json.loads(ws.recv(timeout=TIMEOUT)) == {"groups": ["a"]}
        command(ws, join="b")
        assert json.loads(ws.recv(timeout=TIMEOUT)) == {"groups": ["a", "b"]}
        groups.send("a", "to a")
        assert ws.recv(timeout=TIMEOUT) == "to a"
        command(ws, leave="a")
        assert json.loads(ws.recv(timeout=TIMEOUT)) == {"groups": ["b"]}
        command(ws, leave="never joined")
        assert json.loads(ws.recv(timeout=TIMEOUT)) == {"groups": ["b"]}
        groups.send("a", "missed")
        groups.send("b", "to b")
        assert ws.recv(timeout=TIMEOUT) == "to b"
        assert local_members("a") == 0
        assert local_members("b") == 1


def test_membership_ends_when_the_socket_closes(thread_server):
    server = thread_server()
    ws = member(server, ["leaving", "other"])
    assert local_members("leaving") == 1
    ws.close()
    wait_until(lambda: local_members("leaving") == 0 and local_members("other") == 0, message="membership")
    groups.send("leaving", "nobody")  # no member: nothing happens


def test_membership_ends_when_the_client_vanishes(thread_server):
    server = thread_server()
    with RawClient(server.host, server.port) as client:
        assert client.request("/groups/member?join=vanish")[0] == 101
        client.recv_frame()
    # The TCP connection is gone without a close frame: the view's read sees it.
    wait_until(lambda: local_members("vanish") == 0, message="membership of a vanished client")


def test_group_messages_arrive_while_the_view_iterates(thread_server):
    # The view sits in `for command in request.websocket` and answers each command itself,
    # while group messages from this thread go through the same socket: nothing is mixed up.
    server = thread_server()
    with member(server, ["busy"]) as ws:

        def sender():
            for i in range(200):
                groups.send("busy", f"group {i}")

        thread = threading.Thread(target=sender)
        thread.start()
        for i in range(200):
            command(ws, send="elsewhere", message="x", ack=i)
        thread.join(TIMEOUT)
        received = [ws.recv(timeout=TIMEOUT) for _ in range(400)]
        acks = [json.loads(m)["ack"] for m in received if m.startswith("{")]
        group = [m for m in received if m.startswith("group")]
        assert acks == list(range(200))
        assert group == [f"group {i}" for i in range(200)]


def test_send_from_a_plain_http_view(thread_server):
    server = thread_server()
    with member(server, ["news"]) as ws:
        with urllib.request.urlopen(f"{server.http_url}/groups/send?group=news&message=extra", timeout=TIMEOUT) as r:
            assert r.read() == b"sent"
        assert ws.recv(timeout=TIMEOUT) == "extra"


# --- presence: who is in a group --------------------------------------------------------------


def test_count_and_members_in_one_process(thread_server):
    server = thread_server()
    with (
        member(server, ["presence"], info={"name": "alice"}) as alice,
        member(server, ["presence"], info={"name": "bob"}) as bob,
        member(server, ["presence-other"]) as carol,
    ):
        assert groups.count("presence") == 2
        assert groups.count("presence-other") == 1
        assert groups.count("presence-nobody") == 0 and groups.members("presence-nobody") == []
        found = groups.members("presence")
        assert [(m.id, m.user_id, m.info) for m in found] == [
            (alice.member_id, None, {"name": "alice"}),  # in the order they joined
            (bob.member_id, None, {"name": "bob"}),
        ]
        assert groups.members("presence-other")[0].id == carol.member_id
        assert groups.members("presence-other")[0].info is None

        # Joining again only replaces the info; leaving takes the socket out at once.
        joined_at = found[0].joined_at
        command(alice, join="presence", info=["away", 1])
        assert json.loads(alice.recv(timeout=TIMEOUT)) == {"groups": ["presence"]}
        command(bob, leave="presence")
        assert json.loads(bob.recv(timeout=TIMEOUT)) == {"groups": []}
        assert groups.count("presence") == 1
        assert groups.members("presence") == [groups.Member(alice.member_id, None, ["away", 1], joined_at)]
    # Closing ends the membership (the server sees the close a moment later).
    wait_until(lambda: groups.count("presence") == 0 and groups.count("presence-other") == 0, message="presence")
    assert groups.members("presence") == []


def test_info_is_kept_as_json_gives_it_back():
    from django_websocket.groups import _json_copy

    when = datetime.datetime(2026, 1, 2, tzinfo=datetime.timezone.utc)
    info = {"when": when, "tags": ("a", "b"), "n": decimal.Decimal("1.5")}
    copy = _json_copy(info)
    assert copy == {"when": "2026-01-02T00:00:00Z", "tags": ["a", "b"], "n": "1.5"}
    with pytest.raises(TypeError, match="JSON-serialisable"):
        _json_copy({"socket": object()})


@pytest.mark.django_db
def test_members_tell_the_user_of_the_socket(client, django_user_model):
    user = django_user_model.objects.create_user("ada", password="pw")
    client.force_login(user)
    logged_in = WebSocketClient(client)
    anonymous = WebSocketClient()
    in_async_view = WebSocketClient(client)
    try:
        assert logged_in.connect("/groups/member?join=users")[0]
        mine = json.loads(logged_in.receive())["id"]
        assert anonymous.connect("/groups/member?join=users")[0]
        theirs = json.loads(anonymous.receive())["id"]
        # An async view: request.user is read in Django's thread for such work.
        assert in_async_view.connect("/groups/amember?join=users&info=%22async%22")[0]
        async_id = json.loads(in_async_view.receive())["id"]
        found = {m.id: (m.user_id, m.info) for m in groups.members("users")}
        assert found == {mine: (user.pk, None), theirs: (None, None), async_id: (user.pk, "async")}
        in_async_view.send("users")  # the async view leaves the group it is sent
        assert json.loads(in_async_view.receive()) == {"groups": []}
        assert groups.count("users") == 2
    finally:
        for ws in (logged_in, anonymous, in_async_view):
            ws.close()
    wait_until(lambda: groups.count("users") == 0, message="presence of closed sockets")


def test_arguments_are_checked():
    with pytest.raises(TypeError, match="send_json"):
        groups.send("g", 42)
    with pytest.raises(TypeError, match="group name"):
        groups.send(b"g", "x")
    with pytest.raises(ValueError, match="1 to 200"):
        groups.send("", "x")
    with pytest.raises(ValueError, match="1 to 200"):
        groups.send("g" * 201, "x")
    groups.send("nobody-here", "fine")  # an empty group is not an error


def test_burst_beyond_the_queue_closes_the_socket_with_1008(thread_server, caplog):
    # The client reads, but this thread queues faster than any socket can send: past
    # QUEUE_SIZE the socket is closed with 1008 rather than buffering without bound.
    with override_settings(WEBSOCKET_GROUPS={"QUEUE_SIZE": 5}):
        server = thread_server()
        with member(server, ["burst"]) as ws:
            start = time.monotonic()
            for i in range(2000):
                groups.send("burst", f"m{i}")
            assert time.monotonic() - start < 2.0
            received = []
            with pytest.raises(ConnectionClosed) as info:
                while True:
                    received.append(ws.recv(timeout=TIMEOUT))
            assert info.value.rcvd.code == 1008
            assert len(received) < 2000
            assert received == [f"m{i}" for i in range(len(received))]  # in order, a prefix
            wait_until(lambda: local_members("burst") == 0, message="membership of the slow socket")
    assert "too slow for its group messages" in caplog.text


def test_stalled_client_never_blocks_the_sender(thread_server, caplog):
    # A client that stopped reading: its TCP buffers fill, its sender thread blocks, its queue
    # overflows. groups.send keeps returning at once; the socket is dropped within the send
    # timeout and its membership ends; the other member gets every message.
    settings = {"WEBSOCKET_GROUPS": {"QUEUE_SIZE": 4}, "WEBSOCKET_SEND_TIMEOUT": 1.0}
    with override_settings(**settings):
        server = thread_server()
        with RawClient(server.host, server.port) as stalled, member(server, ["feed"]) as healthy:
            assert stalled.request("/groups/member?join=feed")[0] == 101
            wait_until(lambda: local_members("feed") == 2, message="both joined")
            chunk = "x" * 262144
            slowest = 0.0
            for i in range(100):
                start = time.monotonic()
                groups.send("feed", f"{i}:{chunk}")
                slowest = max(slowest, time.monotonic() - start)
                assert healthy.recv(timeout=TIMEOUT) == f"{i}:{chunk}"
            assert slowest < 0.1, f"a send blocked for {slowest:.3f}s"
            wait_until(lambda: local_members("feed") == 1, message="the stalled socket dropped")
    assert "too slow for its group messages" in caplog.text


def test_get_backend_follows_the_setting():
    default = groups.get_backend()
    assert isinstance(default, MemoryGroupBackend)
    assert groups.get_backend() is default
    with override_settings(WEBSOCKET_GROUPS={"QUEUE_SIZE": 7}):
        changed = groups.get_backend()
        assert changed is not default and changed.config["QUEUE_SIZE"] == 7
    with override_settings(WEBSOCKET_GROUPS={"BACKEND": "no.such.Backend"}):
        with pytest.raises(ImproperlyConfigured, match="no.such.Backend"):
            groups.get_backend()


def test_redis_backend_without_the_redis_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "redis", None)  # as if not installed
    with override_settings(WEBSOCKET_GROUPS={"BACKEND": "django_websocket.groups.redis.RedisGroupBackend"}):
        with pytest.raises(ImproperlyConfigured, match=r"pip install 'django-websocket\[redis\]'"):
            groups.get_backend()


def test_groups_on_every_server(server):
    # The same path on each real server (threads under runserver, greenlets under gevent).
    # Each client sends to a group of its own: with several worker processes and this
    # in-memory backend, a group reaches only its own process (see test_groups_redis.py).
    clients = [member(server, [f"own-{n}"]) for n in range(5)]
    try:
        for n, ws in enumerate(clients):
            for i in range(20):
                command(ws, send=f"own-{n}", message=f"{n}:{i}", binary=i % 2 == 1)
        for n, ws in enumerate(clients):
            expected = [f"{n}:{i}" if i % 2 == 0 else f"{n}:{i}".encode() for i in range(20)]
            assert [ws.recv(timeout=TIMEOUT) for _ in range(20)] == expected
    finally:
        for ws in clients:
            ws.close()


# --- the backend's bookkeeping at scale ---------------------------------------------------------

# Run under gevent's monkey-patching, as the gevent servers run it: each member's sender is then a
# greenlet, so that 10,000 of them start in a moment and the timings are those of the membership
# bookkeeping alone. (With threads, starting 10,000 senders alone takes seconds on a small machine.)
SCALE_SCRIPT = """
from gevent import monkey

monkey.patch_all()

import json
import time

import gevent

from django_websocket.groups.memory import MemoryGroupBackend
from tests.groupmember import Member

N = 10_000
backend = MemoryGroupBackend({"QUEUE_SIZE": 10})
members = [Member() for _ in range(N)]
for m in members:
    backend.join("room", m)
timings = {}
started = time.process_time()
for m in members:
    backend.join("second", m)
timings["join"] = time.process_time() - started
delivered = backend.deliver("room", "hello")
deadline = time.monotonic() + 10
while not all(m.received for m in members) and time.monotonic() < deadline:
    gevent.sleep(0.01)
started = time.process_time()
for m in members:
    backend.leave("second", m)
timings["leave"] = time.process_time() - started
started = time.process_time()
for m in members:
    m.close()  # its close callback: backend.discard
timings["close"] = time.process_time() - started
print(json.dumps({
    "timings": timings,
    "delivered": delivered,
    "received": sum(m.received == ["hello"] for m in members),
    "left": [backend.local_members("room"), backend.local_members("second")],
    "groups_of": sum(bool(backend.groups_of(m)) for m in members),
}))
"""


def test_ten_thousand_members_join_leave_and_close_in_well_under_a_second():
    # Leaving used to rebuild the group's member tuple under the backend's lock: 10,000 members
    # closing at once took seconds (quadratic), during which no one could join or deliver.
    result = subprocess.run(
        [sys.executable, "-c", SCALE_SCRIPT],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["delivered"] == report["received"] == 10_000
    assert report["left"] == [0, 0] and report["groups_of"] == 0
    # Measured: about 0.02 s to join and to leave, 0.2 s to close (the senders' greenlets ending);
    # 0.2 s, 1.5 s and 2.1 s with the tuple rebuilt at each change.
    timings = report["timings"]
    assert timings["join"] < 0.5, timings
    assert timings["leave"] < 0.5, timings
    assert timings["close"] < 0.75, timings


def test_delivery_reads_a_snapshot_while_members_join_and_leave():
    # Delivery must never iterate the membership another thread is changing: each message goes
    # to the members of one moment, every steady member gets every message, in order.
    backend = MemoryGroupBackend({"QUEUE_SIZE": 100_000})
    steady = [Member() for _ in range(50)]
    coming_and_going = [Member() for _ in range(50)]
    for m in steady:
        backend.join("room", m)
    stop = threading.Event()

    def churn():
        while not stop.is_set():
            for m in coming_and_going:
                backend.join("room", m)
            for m in coming_and_going:
                backend.leave("room", m)

    churner = threading.Thread(target=churn, daemon=True)
    churner.start()
    try:
        counts = [backend.deliver("room", f"m{i}") for i in range(2000)]
    finally:
        stop.set()
        churner.join(TIMEOUT)
    try:
        assert all(50 <= count <= 100 for count in counts)
        assert len(set(counts)) > 1  # the membership did change under the deliveries
        expected = [f"m{i}" for i in range(2000)]
        wait_until(lambda: all(len(m.received) == 2000 for m in steady), message="steady members' messages")
        assert all(m.received == expected for m in steady)
    finally:
        backend.close()
