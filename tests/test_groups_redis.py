"""Groups on the Redis backend, with a real redis-server and real server processes.

Two ``runserver`` processes share one Redis: what a client of one sends to a group, the clients
of the other receive, in order per sender, nothing lost. Redis is killed and restarted under
running servers; messages flow again by themselves. Each real server of tests/servers.py runs
on Redis too (gunicorn with its two workers: a client of each worker receives what the other
sent).
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest
from django.test import override_settings

from django_websocket import groups
from django_websocket.groups.redis import _redact, decode, encode
from django_websocket.testing import WebSocketClient
from tests.groupmember import Member
from tests.redis_fixture import DelayingProxy
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


def stats(server):
    status, body = http(server, "/groups/stats")
    assert status == 200, body
    return json.loads(body)


def presence(server, group):
    status, body = http(server, f"/groups/presence?group={group}")
    assert status == 200, body
    return json.loads(body)


def numsub(redis, group, prefix="tests:"):
    return redis.client().execute_command("PUBSUB", "NUMSUB", prefix + group)[1]


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


def test_passwords_are_not_shown():
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


# --- per-group subscriptions --------------------------------------------------------------------


def test_numsub_counts_the_processes_holding_members_of_a_group(pair, redis_server):
    a, b = pair
    assert numsub(redis_server, "numsub") == 0
    with member(a, ["numsub"]) as first_on_a:
        # join() returned after the subscription was in place: no wait needed.
        assert numsub(redis_server, "numsub") == 1
        with member(a, ["numsub"]), member(b, ["numsub"]) as on_b:
            assert numsub(redis_server, "numsub") == 2  # processes, not sockets
            command(on_b, leave="numsub")
            assert json.loads(on_b.recv(timeout=TIMEOUT)) == {"groups": []}
            # The unsubscribe goes out after leave() returns (nobody waits for it).
            wait_until(lambda: numsub(redis_server, "numsub") == 1, message="B unsubscribed")
            command(on_b, join="numsub")
            assert json.loads(on_b.recv(timeout=TIMEOUT)) == {"groups": ["numsub"]}
            assert numsub(redis_server, "numsub") == 2
        wait_until(lambda: numsub(redis_server, "numsub") == 1, message="B's member closed")
        assert http(a, "/groups/members?group=numsub") == (200, "1")
        assert first_on_a.pid == a.proc.pid
    wait_until(lambda: numsub(redis_server, "numsub") == 0, message="A's members closed")
    # No pattern subscription is left anywhere.
    assert redis_server.client().execute_command("PUBSUB", "NUMPAT") == 0


def test_a_process_without_members_of_a_group_receives_none_of_its_messages(pair):
    a, b = pair
    with member(a, ["busy-room"]) as on_a, member(b, ["quiet-room"]) as on_b, member(a) as sender:
        before_a, before_b = stats(a)["subscriber_messages"], stats(b)["subscriber_messages"]
        for i in range(200):
            command(sender, send="busy-room", message=f"m{i}")
        assert recv_all(on_a, 200) == [f"m{i}" for i in range(200)]
        # A marker to B's own group: once B has it, B's listener has read whatever came before.
        command(sender, send="quiet-room", message="marker")
        assert on_b.recv(timeout=TIMEOUT) == "marker"
        after_a, after_b = stats(a)["subscriber_messages"], stats(b)["subscriber_messages"]
        assert after_a - before_a == 200
        # B got the marker only: none of busy-room's 200 (with one pattern subscription per
        # process, as before, it got all 200 and dropped them).
        assert after_b - before_b == 1, (before_b, after_b)
        assert stats(b)["subscribed_groups"] == 1


def test_joins_together_share_commands_and_a_restart_resubscribes_everything(fresh_redis):
    # In this process, with stand-ins for sockets: 300 groups joined at once by 300 threads.
    backend = in_process_backend(fresh_redis.url)
    sockets = [Member() for _ in range(300)]
    try:
        start = threading.Barrier(len(sockets), timeout=TIMEOUT)

        def join(n):
            start.wait()
            backend.join(f"many:{n}", sockets[n])

        threads = [threading.Thread(target=join, args=(n,)) for n in range(len(sockets))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(TIMEOUT)
        client = fresh_redis.client()
        counts = client.execute_command("PUBSUB", "NUMSUB", *(f"tests:many:{n}" for n in range(300)))[1::2]
        assert counts == [1] * 300
        commands = client.info("commandstats")["cmdstat_subscribe"]["calls"]
        print(f"300 joins at once: {commands} SUBSCRIBE commands")
        assert commands < 300, f"{commands} SUBSCRIBE commands for 300 joins"

        # Redis restarts (its counters too): one SUBSCRIBE puts the 300 subscriptions back.
        fresh_redis.restart()
        wait_until(lambda: backend.stats()["subscribed_groups"] == 300, timeout=20, message="resubscribed")
        client = fresh_redis.client()
        counts = client.execute_command("PUBSUB", "NUMSUB", *(f"tests:many:{n}" for n in range(300)))[1::2]
        assert counts == [1] * 300
        assert client.info("commandstats")["cmdstat_subscribe"]["calls"] == 1
        for n in (0, 150, 299):
            backend.send(f"many:{n}", f"to {n}")
        wait_until(lambda: all(sockets[n].received == [f"to {n}"] for n in (0, 150, 299)), message="delivery")

        # The last member of each group closes: UNSUBSCRIBE follows, several groups a command.
        for socket_ in sockets:
            socket_.close()

        def unsubscribed():
            counts = client.execute_command("PUBSUB", "NUMSUB", *(f"tests:many:{n}" for n in range(300)))[1::2]
            return counts == [0] * 300

        wait_until(unsubscribed, message="unsubscribed")
        assert backend.stats()["subscribed_groups"] == 0
        assert client.info("commandstats")["cmdstat_unsubscribe"]["calls"] < 300
    finally:
        backend.close()


def in_process_backend(location, **config):
    from django_websocket.groups.redis import RedisGroupBackend

    return RedisGroupBackend(
        {**RedisGroupBackend.default_config, "QUEUE_SIZE": 100, "LOCATION": location, "PREFIX": "tests:", **config}
    )


@pytest.mark.parametrize("marker", [b"SUBSCRIBE", b"HSET"])
def test_join_returns_once_its_subscription_and_presence_are_in_place(fresh_redis, marker):
    # Redis answers slowly, the subscriber's commands or the presence writes: join() waits.
    proxy = DelayingProxy(fresh_redis.port, marker, delay=0.5)
    backend = in_process_backend(proxy.url)
    try:
        first, second = Member(), Member()
        start = time.monotonic()
        backend.join("slow", first)
        assert time.monotonic() - start >= 0.5
        # In place when join() returns: nothing to wait for before sending.
        assert numsub(fresh_redis, "slow") == 1
        assert backend.count("slow") == 1
        backend.send("slow", "hello")
        wait_until(lambda: first.received == ["hello"], message="delivery")
        backend.join("slow", second)
        # leave() returns once the others no longer see the member (the presence write).
        proxy.marker = b"HDEL"
        start = time.monotonic()
        backend.leave("slow", second)
        assert time.monotonic() - start >= 0.5
        assert backend.count("slow") == 1
    finally:
        backend.close()
        proxy.stop()


# --- presence across processes -----------------------------------------------------------------


def test_members_are_seen_across_processes(pair):
    a, b = pair
    with (
        member(a, ["lobby"], info={"name": "ada"}) as ada,
        member(b, ["lobby"], info={"name": "grace"}) as grace,
        member(b, ["lobby"], info={"name": "hopper"}) as hopper,
    ):
        for server in (a, b):
            seen = presence(server, "lobby")
            assert seen["count"] == 3
            assert [(m["id"], m["user_id"], m["info"]) for m in seen["members"]] == [
                (ada.member_id, None, {"name": "ada"}),  # in the order they joined
                (grace.member_id, None, {"name": "grace"}),
                (hopper.member_id, None, {"name": "hopper"}),
            ]
        # leave() returns once the others no longer see the member.
        command(grace, leave="lobby")
        assert json.loads(grace.recv(timeout=TIMEOUT)) == {"groups": []}
        assert [m["info"]["name"] for m in presence(a, "lobby")["members"]] == ["ada", "hopper"]
        command(hopper, leave="lobby")  # B's last member of the group
        assert json.loads(hopper.recv(timeout=TIMEOUT)) == {"groups": []}
        assert presence(a, "lobby")["count"] == 1
        # Joining again with another info replaces it.
        command(grace, join="lobby", info={"name": "grace", "back": True})
        assert json.loads(grace.recv(timeout=TIMEOUT)) == {"groups": ["lobby"]}
        command(ada, join="lobby", info={"name": "ada", "away": True})
        assert json.loads(ada.recv(timeout=TIMEOUT)) == {"groups": ["lobby"]}
        assert [m["info"] for m in presence(b, "lobby")["members"]] == [
            {"name": "ada", "away": True},
            {"name": "grace", "back": True},
        ]
    # Closing ends the membership everywhere, without waiting for PRESENCE_TTL.
    wait_until(lambda: presence(a, "lobby")["count"] == 0, message="members closed")
    assert presence(b, "lobby") == {"count": 0, "members": []}


@pytest.mark.django_db
def test_the_user_of_a_socket_is_seen_from_another_process(pair, redis_server, client, django_user_model):
    # The socket in this process (its user logged in through the test client), read from B.
    a, b = pair
    user = django_user_model.objects.create_user("ada", password="pw")
    client.force_login(user)
    settings = {"BACKEND": "django_websocket.groups.redis.RedisGroupBackend", "LOCATION": redis_server.url}
    with override_settings(WEBSOCKET_GROUPS={**settings, "PREFIX": "tests:"}):
        ws = WebSocketClient(client)
        try:
            assert ws.connect("/groups/member?join=whois")[0]
            mine = json.loads(ws.receive())["id"]
            with member(a, ["whois"]) as theirs:
                seen = {m["id"]: m["user_id"] for m in presence(b, "whois")["members"]}
                assert seen == {mine: user.pk, theirs.member_id: None}
        finally:
            ws.close()
            groups.get_backend().close()


def test_the_members_of_a_killed_process_expire_after_presence_ttl(fresh_redis):
    ttl = 2.0
    env = {**redis_env(fresh_redis), "TEST_REDIS_PRESENCE_TTL": str(ttl)}
    doomed = runserver(env)
    witness = runserver(env)
    clients = []
    try:
        clients += [member(doomed, ["wake"]) for _ in range(3)]
        with member(witness, ["wake"]) as survivor:
            assert presence(witness, "wake")["count"] == 4
            os.kill(doomed.proc.pid, signal.SIGKILL)  # no close frames, no cleanup, no atexit
            killed = time.monotonic()
            doomed.proc.wait(TIMEOUT)
            wait_until(lambda: presence(witness, "wake")["count"] == 1, timeout=ttl + 5, message="expiry")
            expired_after = time.monotonic() - killed
            # The heartbeat was refreshed at most TTL/3 before the kill.
            assert ttl * 2 / 3 - 0.3 <= expired_after <= ttl + 1.0, expired_after
            print(f"members of the killed process gone {expired_after:.2f}s after SIGKILL (PRESENCE_TTL {ttl}s)")
            assert [m["id"] for m in presence(witness, "wake")["members"]] == [survivor.member_id]
            # The reader removed what the dead process left in the group: one process is listed.
            group_keys = fresh_redis.client().keys("tests:presence:{tests:wake}*")
            assert len(group_keys) == 2, group_keys  # the set of processes and the survivor's hash
    finally:
        for ws in clients:
            ws.close()  # their server is gone: this only closes the client's end
        doomed.stop()
        witness.stop()


def test_a_subscriber_that_falls_behind_is_disconnected_counted_and_resubscribed(fresh_redis):
    # A tiny pub/sub output buffer: Redis closes a subscriber with more than 64 KiB unread.
    client = fresh_redis.client()
    client.config_set("client-output-buffer-limit", "pubsub 65536 0 0")
    server = runserver(redis_env(fresh_redis))
    try:
        with member(server, ["flood"]) as ws:
            assert stats(server)["subscriber_disconnects"] == 0
            # The listener made slow: its whole process stopped while 20 MB are published to its
            # group (more than the kernel's socket buffers hold, so Redis buffers the rest).
            os.kill(server.proc.pid, signal.SIGSTOP)
            try:
                payload = encode("x" * 100_000, frozenset())
                for _ in range(200):
                    client.publish("tests:flood", payload)
                # Redis closed the connection (it tells it in its log).
                wait_until(lambda: "output buffer limits" in fresh_redis.log(), message="Redis closing the subscriber")
            finally:
                os.kill(server.proc.pid, signal.SIGCONT)
            wait_until(
                lambda: stats(server)["subscriber_disconnects"] == 1, timeout=20, message="the disconnect counted"
            )
            output = server.output()
            assert "client-output-buffer-limit" in output and "Lost for the sockets of this process" in output
            # Subscribed again: the group's messages flow (what came before the marker is a prefix
            # of the flood, or nothing: the rest was lost, as the log says).
            assert numsub(fresh_redis, "flood") == 1
            groups_marker = "after the flood"
            client.publish("tests:flood", encode(groups_marker, frozenset()))
            while True:
                message = ws.recv(timeout=TIMEOUT)
                if message == groups_marker:
                    break
                assert message == "x" * 100_000
            # A Redis restart is told apart: reconnected, but not counted as a disconnect.
            reconnects = stats(server)["subscriber_reconnects"]
            fresh_redis.restart()
            wait_until(lambda: stats(server)["subscriber_reconnects"] == reconnects + 1, message="the restart seen")
            wait_until(lambda: "Redis restarted or failed over" in server.output(), message="the restart logged")
            assert stats(server)["subscriber_disconnects"] == 1
    finally:
        server.stop()
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
