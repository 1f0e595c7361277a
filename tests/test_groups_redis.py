"""Groups on the Redis backend, with a real redis-server and real server processes.

Two ``runserver`` processes share one Redis: what a client of one sends to a group, the clients
of the other receive, in order per sender, nothing lost. Redis is killed and restarted under
running servers; messages flow again by themselves. Each real server of tests/servers.py runs
on Redis too (gunicorn with its two workers: a client of each worker receives what the other
sent).
"""

import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

from django_websocket.groups.redis import _glob_escape, _redact, decode, encode
from tests.servers import ROOT, SERVERS, runserver
from tests.test_groups import TIMEOUT, command, member, wait_until


def redis_env(redis):
    return {"DJANGO_SETTINGS_MODULE": "tests.settings_redis", "TEST_REDIS_URL": redis.url}


def http(server, path, timeout=TIMEOUT):
    try:
        with urllib.request.urlopen(server.http_url + path, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def start_on_redis(start, redis):
    server = start(redis_env(redis))
    try:
        status, body = http(server, "/groups/backend")
        assert status == 200, body
    except BaseException:
        server.stop()
        raise
    return server, body.split()[0]


def recv_all(ws, count):
    return [ws.recv(timeout=TIMEOUT) for _ in range(count)]


@pytest.fixture(scope="module")
def pair(redis_server):
    """Two runserver processes, A and B, on the session's Redis."""
    a, _ = start_on_redis(runserver, redis_server)
    try:
        b, _ = start_on_redis(runserver, redis_server)
    except BaseException:
        a.stop()
        raise
    yield a, b
    b.stop()
    a.stop()


# --- the wire format, without Redis ----------------------------------------------------------


def test_payload_round_trip():
    for message, exclude in [("héllo", frozenset()), (b"\x00\n,\xff", frozenset({"ab12", "cd34"})), ("", frozenset())]:
        assert decode(encode(message, exclude)) == (message, exclude)
    with pytest.raises(ValueError):
        decode(b"x\nwhat")


def test_prefix_is_matched_literally_and_passwords_are_not_shown():
    assert _glob_escape("app[1]*?\\:") == "app\\[1\\]\\*\\?\\\\:"
    assert _redact("redis://:s3cret@127.0.0.1:6379/0") == "redis://:***@127.0.0.1:6379/0"
    assert _redact("redis://user:s3cret@127.0.0.1/0") == "redis://user:***@127.0.0.1/0"
    assert _redact("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


# --- two processes, one Redis ------------------------------------------------------------------


def test_a_client_on_a_receives_what_a_client_on_b_sent(pair):
    a, b = pair
    with member(a, ["cross"]) as on_a, member(b, ["cross"]) as on_b, member(b) as sender:
        assert on_a.pid != on_b.pid
        command(sender, send="cross", message="from B")
        command(sender, send="cross", message="bytes from B", binary=True)
        assert recv_all(on_a, 2) == ["from B", b"bytes from B"]
        assert recv_all(on_b, 2) == ["from B", b"bytes from B"]
        # Excluding the sender works across processes: the id travels with the message.
        command(on_b, send="cross", message="not to myself", exclude_self=True)
        assert on_a.recv(timeout=TIMEOUT) == "not to myself"
        command(on_a, send="cross", message="marker")
        assert on_b.recv(timeout=TIMEOUT) == "marker"
        assert on_a.recv(timeout=TIMEOUT) == "marker"


def test_plain_view_on_b_reaches_members_on_a(pair):
    a, b = pair
    with member(a, ["bulletin"]) as on_a:
        assert http(b, "/groups/send?group=bulletin&message=notice") == (200, "sent")
        assert on_a.recv(timeout=TIMEOUT) == "notice"


def test_send_from_a_process_that_is_no_server(pair, redis_server):
    # What a management command or a task queue worker does: set Django up and send.
    a, _ = pair
    with member(a, ["from-script"]) as on_a:
        script = (
            "import django; django.setup(); "
            "from django_websocket import groups; "
            "groups.send('from-script', 'from a script'); "
            "groups.send_json('from-script', {'done': True})"
        )
        env = dict(os.environ, PYTHONPATH=str(ROOT), **redis_env(redis_server))
        subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, check=True, timeout=TIMEOUT)
        assert recv_all(on_a, 2) == ["from a script", '{"done": true}']


def test_order_per_sender_is_kept(pair):
    a, b = pair
    with member(a, ["order"]) as on_a, member(b, ["order"]) as on_b, member(a) as sa, member(b) as sb:
        for i in range(300):
            command(sa, send="order", message=f"A{i}")
            command(sb, send="order", message=f"B{i}")
        for ws in (on_a, on_b):
            received = recv_all(ws, 600)
            assert [m for m in received if m[0] == "A"] == [f"A{i}" for i in range(300)]
            assert [m for m in received if m[0] == "B"] == [f"B{i}" for i in range(300)]


def test_hundred_clients_hundred_messages_nothing_lost(pair):
    # 100 clients, half on each process, all in one group; 100 messages, half sent through
    # each process: every client gets all 100, each sender's in its order.
    a, b = pair
    clients = []
    try:
        for n in range(100):
            clients.append(member(a if n % 2 else b, ["crowd"]))
        with member(a) as sa, member(b) as sb:
            for i in range(50):
                command(sa, send="crowd", message=f"A{i}")
                command(sb, send="crowd", message=f"B{i}")
            results = [None] * len(clients)

            def collect(n):
                results[n] = recv_all(clients[n], 100)

            threads = [threading.Thread(target=collect, args=(n,)) for n in range(len(clients))]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(TIMEOUT * 3)
        for received in results:
            assert received is not None
            assert [m for m in received if m[0] == "A"] == [f"A{i}" for i in range(50)]
            assert [m for m in received if m[0] == "B"] == [f"B{i}" for i in range(50)]
    finally:
        for ws in clients:
            ws.close()
    for server in pair:
        assert "Traceback" not in server.output(), server.output()


# --- Redis faults ------------------------------------------------------------------------------


@pytest.fixture
def fragile_pair(fresh_redis):
    """Two runserver processes on a Redis of the test's own, which it kills and restarts."""
    a, _ = start_on_redis(runserver, fresh_redis)
    try:
        b, _ = start_on_redis(runserver, fresh_redis)
    except BaseException:
        a.stop()
        raise
    yield fresh_redis, a, b
    b.stop()
    a.stop()


def test_send_while_redis_is_down_fails_at_once_with_a_clear_error(fragile_pair):
    redis, a, b = fragile_pair
    with member(b) as sender:
        redis.kill()
        start = time.monotonic()
        status, body = http(b, "/groups/send?group=down&message=lost")
        assert time.monotonic() - start < 5
        assert status == 503
        assert f"Redis at {redis.url} is unavailable" in body and "Nothing was sent" in body
        command(sender, send="down", message="lost")
        answer = json.loads(sender.recv(timeout=TIMEOUT))
        assert answer["type"] == "BackendUnavailable"


def test_messages_flow_again_after_redis_restarts(fragile_pair):
    redis, a, b = fragile_pair
    with member(a, ["phoenix"]) as on_a, member(b) as sender:
        command(sender, send="phoenix", message="before")
        assert on_a.recv(timeout=TIMEOUT) == "before"

        redis.kill()
        command(sender, send="phoenix", message="during", ack="during")
        assert json.loads(sender.recv(timeout=TIMEOUT))["type"] == "BackendUnavailable"
        # Joining while Redis is down: the membership is kept and works once Redis is back.
        late = member(a, ["phoenix"])
        try:
            time.sleep(0.5)  # let the listeners of A and B notice the loss and start retrying
            redis.start()

            # The servers were not restarted: their listeners reconnect and resubscribe by
            # themselves (backoff at most 5 s). Until then a message may still be lost (pub/sub
            # stores nothing), so probe until one arrives.
            deadline = time.monotonic() + 20
            probe = 0
            while True:
                assert time.monotonic() < deadline, "no group message after Redis came back"
                command(sender, send="phoenix", message=f"probe {probe}", ack=probe)
                answer = sender.recv(timeout=TIMEOUT)
                if "error" in answer:
                    time.sleep(0.2)
                    probe += 1
                    continue
                try:
                    first = on_a.recv(timeout=0.5)
                except TimeoutError:
                    probe += 1
                    continue
                assert first.startswith("probe")
                break
            # Now everything arrives, in order, on both the old and the new member.
            while True:  # drop probes still in flight
                try:
                    on_a.recv(timeout=0.5)
                except TimeoutError:
                    break
            while True:
                try:
                    late.recv(timeout=0.5)
                except TimeoutError:
                    break
            for i in range(50):
                command(sender, send="phoenix", message=f"after {i}")
            expected = [f"after {i}" for i in range(50)]
            assert recv_all(on_a, 50) == expected
            assert recv_all(late, 50) == expected
        finally:
            late.close()
    assert "Lost the subscription to Redis" in a.output()
    assert "again after" in a.output()
    assert "Traceback" not in a.output() + b.output(), a.output() + b.output()


# --- every real server on Redis ----------------------------------------------------------------


@pytest.fixture(scope="module", params=sorted(SERVERS))
def redis_backed_server(request, redis_server):
    server, backend = start_on_redis(SERVERS[request.param], redis_server)
    if backend != "RedisGroupBackend":
        server.stop()
        pytest.skip(f"{request.param}'s command line sets its own settings module")
    yield server
    server.stop()


def test_groups_across_the_workers_of_every_server(redis_backed_server):
    server = redis_backed_server
    group = f"workers-{server.name}"
    argv = server.proc.args
    workers = min(2, int(argv[argv.index("--workers") + 1])) if "--workers" in argv else 1
    clients, pids = [], set()
    try:
        # Servers with several workers (gunicorn: 2) spread connections among them once all
        # have booted: open clients until two workers have some, for a bounded time.
        deadline = time.monotonic() + 15
        while len(clients) < 4 or (len(pids) < workers and time.monotonic() < deadline):
            ws = member(server, [group])
            if ws.pid in pids and len(clients) >= 4:
                ws.close()
                time.sleep(0.05)
                continue
            clients.append(ws)
            pids.add(ws.pid)
        sender = clients[-1]
        for i in range(30):
            command(sender, send=group, message=f"m{i}")
        for ws in clients:
            assert recv_all(ws, 30) == [f"m{i}" for i in range(30)]
    finally:
        for ws in clients:
            ws.close()
    assert len(pids) == workers, f"the clients landed on {len(pids)} of {workers} workers"
    wait_until(lambda: http(server, f"/groups/members?group={group}")[1] == "0", message="memberships ended")
