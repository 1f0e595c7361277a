"""Groups on the Redis Cluster backend, against a real local cluster: three masters with a replica
each (tests/redis_fixture.py), started once for the module, and two runserver processes on it.

Each group's messages go to the master that owns its channel's slot, and only there (SPUBLISH and
SSUBSCRIBE); presence keys live in that slot too. A slot moved to another master, and a master
killed so that its replica takes over, leave the running servers delivering again by themselves.
The whole cluster down: sending fails at once, as on one Redis server.
"""

import json
import time

import pytest

from django_websocket.groups.redis import key_slot
from tests.servers import runserver
from tests.test_groups import TIMEOUT, command, member, wait_until
from tests.test_groups_redis import http, presence, recv_all, stats

PREFIX = "tests:"


@pytest.fixture(scope="module")
def cluster_pair(redis_cluster):
    """Two runserver processes, A and B, on the module's cluster."""
    env = {
        "DJANGO_SETTINGS_MODULE": "tests.settings_redis",
        "TEST_REDIS_URL": redis_cluster.url,
        "TEST_REDIS_BACKEND": "RedisClusterGroupBackend",
    }
    servers = []
    try:
        for _ in range(2):
            servers.append(runserver(env))
            assert http(servers[-1], "/groups/backend")[1].split()[0] == "RedisClusterGroupBackend"
        yield servers
    finally:
        for server in servers:
            server.stop()


def slot_of(group):
    return key_slot((PREFIX + group).encode())


def group_on(cluster, port, stem):
    """A group name starting with ``stem`` whose channel's slot the master on ``port`` owns."""
    slots = set(cluster.topology()[port][1])
    return next(f"{stem}-{n}" for n in range(100_000) if slot_of(f"{stem}-{n}") in slots)


def shard_subscribers(cluster, port, group):
    return cluster.node(port).client().execute_command("PUBSUB", "SHARDNUMSUB", PREFIX + group)[1]


def spublish_calls(cluster, port):
    stats_ = cluster.node(port).client().info("commandstats")
    return stats_.get("cmdstat_spublish", {}).get("calls", 0)


def probe_until_delivered(sender, receivers, group, deadline):
    """Send probes to ``group`` until each of ``receivers`` got one; the probes' acks (or errors)
    come back at once: ``(seconds until delivered, slowest answer to a send)``."""
    start, slowest, n = time.monotonic(), 0.0, 0
    waiting = list(receivers)
    while waiting:
        assert time.monotonic() < deadline, "no delivery"
        sent = time.monotonic()
        command(sender, send=group, message=f"probe {n}", ack=n)
        answer = json.loads(sender.recv(timeout=TIMEOUT))
        slowest = max(slowest, time.monotonic() - sent)
        n += 1
        if "error" in answer:
            assert answer["type"] == "BackendUnavailable", answer
            time.sleep(0.1)
            continue
        for ws in list(waiting):
            try:
                if ws.recv(timeout=0.3).startswith("probe"):
                    waiting.remove(ws)
            except TimeoutError:
                pass
    delivered = time.monotonic() - start
    for ws in receivers:  # drop the probes still in flight
        while True:
            try:
                ws.recv(timeout=0.3)
            except TimeoutError:
                break
    return delivered, slowest


def test_messages_reach_every_process_through_the_shard_of_their_group_only(redis_cluster, cluster_pair):
    a, b = cluster_pair
    masters = sorted(redis_cluster.topology())
    # One group on each master.
    names = [group_on(redis_cluster, port, "shard") for port in masters]
    with member(a, names) as on_a, member(b, names) as on_b, member(b) as sender:
        for name, port in zip(names, masters, strict=True):
            # Both processes subscribed on the group's own master, on no other.
            assert shard_subscribers(redis_cluster, port, name) == 2
            assert all(shard_subscribers(redis_cluster, other, name) == 0 for other in masters if other != port)
        before = {port: spublish_calls(redis_cluster, port) for port in masters}
        for name in names:
            command(sender, send=name, message=f"to {name}")
        command(sender, send=names[0], message="binary", binary=True)
        expected = [f"to {name}" for name in names] + [b"binary"]
        for ws in (on_a, on_b):
            received = recv_all(ws, 4)
            # Groups on different masters come through different connections: one sender's
            # order holds within a group (a slot), not across masters.
            assert sorted(received, key=repr) == sorted(expected, key=repr)
            assert received.index(f"to {names[0]}") < received.index(b"binary")
        after = {port: spublish_calls(redis_cluster, port) for port in masters}
        # Each message was published on its group's master alone: never broadcast.
        assert {port: after[port] - before[port] for port in masters} == {
            masters[0]: 2,
            masters[1]: 1,
            masters[2]: 1,
        }
        assert stats(a)["subscriber_connections"] == 3  # one per master holding its groups


def test_members_are_seen_across_processes_and_kept_in_their_group_slot(redis_cluster, cluster_pair):
    a, b = cluster_pair
    port = sorted(redis_cluster.topology())[1]
    name = group_on(redis_cluster, port, "lobby")
    with member(a, [name], info={"name": "ada"}) as ada, member(b, [name], info={"name": "grace"}) as grace:
        for server in (a, b):
            seen = presence(server, name)
            assert seen["count"] == 2
            assert [(m["id"], m["info"]) for m in seen["members"]] == [
                (ada.member_id, {"name": "ada"}),
                (grace.member_id, {"name": "grace"}),
            ]
        # The group's presence keys (its set of processes and their hashes) are in its slot.
        owner = redis_cluster.node(port).client()
        keys = owner.execute_command("CLUSTER", "GETKEYSINSLOT", slot_of(name), 100)
        assert len(keys) == 3 and all(key.startswith(b"tests:presence:{") for key in keys), keys
        command(grace, leave=name)
        assert json.loads(grace.recv(timeout=TIMEOUT)) == {"groups": []}
        assert presence(a, name)["count"] == 1
    wait_until(lambda: presence(b, name)["count"] == 0, message="members closed")


def _migrate(cluster, slot, source, target):
    """Move ``slot`` from the master on port ``source`` to the one on ``target``, keys and all, as
    ``redis-cli --cluster reshard`` does."""
    topology = cluster.topology()
    source_id, target_id = topology[source][0], topology[target][0]
    src, dst = cluster.node(source).client(), cluster.node(target).client()
    dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
    src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
    while keys := src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
        src.execute_command("MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", *keys)
    for port in (target, source, *[p for p in topology if p not in (source, target)]):
        cluster.node(port).client().execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
    wait_until(lambda: cluster.master_of(slot) == target, message="the slot's new owner known")


def test_a_moved_slot_is_followed(redis_cluster, cluster_pair):
    a, b = cluster_pair
    source, target = sorted(redis_cluster.topology())[:2]
    name = group_on(redis_cluster, source, "moving")
    with member(a, [name]) as on_a, member(b, [name]) as on_b, member(b) as sender:
        command(sender, send=name, message="before")
        assert on_a.recv(timeout=TIMEOUT) == on_b.recv(timeout=TIMEOUT) == "before"

        _migrate(redis_cluster, slot_of(name), source, target)
        # The old owner dropped the subscriptions; the processes subscribe on the new one. A
        # message published in between is lost (pub/sub stores nothing): probe until delivered.
        took, _ = probe_until_delivered(sender, [on_a, on_b], name, time.monotonic() + 20)
        print(f"delivery resumed {took:.2f}s after the slot moved")
        assert took < 5  # told by the old owner at once, not found by a periodic look
        for i in range(20):
            command(sender, send=name, message=f"after {i}")
        assert recv_all(on_a, 20) == recv_all(on_b, 20) == [f"after {i}" for i in range(20)]
        assert shard_subscribers(redis_cluster, target, name) == 2
        assert shard_subscribers(redis_cluster, source, name) == 0
        assert presence(a, name)["count"] == 2  # the presence keys moved with the slot
    for server in (a, b):
        assert "no longer serves group" in server.output()

    # A slot moved while no process here has members in it: a process that joins it right after
    # still has the old owner in its map, which answers MOVED; it reads the slots and subscribes
    # on the new owner, and join() returns once that is done.
    name = group_on(redis_cluster, target, "stale")
    _migrate(redis_cluster, slot_of(name), target, source)
    with member(a, [name]) as on_a, member(b) as sender:
        assert shard_subscribers(redis_cluster, source, name) == 1
        command(sender, send=name, message="found")
        assert on_a.recv(timeout=TIMEOUT) == "found"
    assert "refused to subscribe to 1 group(s) (MovedError" in a.output()


def test_delivery_resumes_after_a_failover(redis_cluster, cluster_pair):
    a, b = cluster_pair
    port = sorted(redis_cluster.topology())[2]
    name = group_on(redis_cluster, port, "failover")
    with member(a, [name]) as on_a, member(b, [name]) as on_b, member(b) as sender:
        command(sender, send=name, message="before")
        assert on_a.recv(timeout=TIMEOUT) == on_b.recv(timeout=TIMEOUT) == "before"

        redis_cluster.node(port).kill()
        killed = time.monotonic()
        # Until a replica is promoted (cluster-node-timeout 1 s, then its election), sends to the
        # group fail at once with BackendUnavailable; then the servers, never restarted, subscribe
        # on the new master by themselves.
        took, slowest = probe_until_delivered(sender, [on_a, on_b], name, killed + 30)
        print(f"delivery resumed {took:.2f}s after the master was killed; slowest send {slowest:.2f}s")
        assert slowest < 5, f"a send took {slowest:.2f}s"
        assert took < 10  # about 3 s measured: the replica's takeover, and our next look at the slots
        promoted = redis_cluster.master_of(slot_of(name))
        assert promoted != port
        for i in range(20):
            command(sender, send=name, message=f"after {i}")
        assert recv_all(on_a, 20) == recv_all(on_b, 20) == [f"after {i}" for i in range(20)]
        assert shard_subscribers(redis_cluster, promoted, name) == 2
    for server in (a, b):
        assert f"Lost the subscription to Redis at 127.0.0.1:{port}" in server.output()
    # The old master comes back, as a replica of the new one.
    redis_cluster.node(port).start()
    redis_cluster.wait_healthy()


def test_the_whole_cluster_down_fails_sends_at_once_and_recovers(redis_cluster, cluster_pair):
    a, b = cluster_pair
    name = group_on(redis_cluster, sorted(redis_cluster.topology())[0], "outage")
    with member(a, [name]) as on_a, member(b) as sender:
        for node in redis_cluster.nodes:
            node.kill()
        start = time.monotonic()
        status, body = http(b, f"/groups/send?group={name}&message=lost")
        assert time.monotonic() - start < 5
        assert status == 503 and "the Redis Cluster at" in body and "Nothing was sent" in body, body
        assert http(b, f"/groups/presence?group={name}")[0] == 503
        # Joining while the cluster is down: the membership is kept, and works once it is back.
        start = time.monotonic()
        late = member(b, [name])
        assert time.monotonic() - start < 8
        try:
            for node in redis_cluster.nodes:
                node.start()
            redis_cluster.wait_healthy()
            probe_until_delivered(sender, [on_a, late], name, time.monotonic() + 30)
            for i in range(10):
                command(sender, send=name, message=f"after {i}")
            assert recv_all(on_a, 10) == recv_all(late, 10) == [f"after {i}" for i in range(10)]
        finally:
            late.close()
    assert "while Redis at" in b.output()  # the warning of the join while down
    for server in (a, b):
        assert "Traceback" not in server.output(), server.output()
