"""How many group messages per second one Redis server, or one shard of a Redis Cluster, carries
through the Redis group backends. Run by hand (it is not a test), from the repository's root::

    .venv/bin/python benchmarks/redis_throughput.py
    .venv/bin/python benchmarks/redis_throughput.py --targets single --sizes 100 --subscribers 1 4 8
    .venv/bin/python benchmarks/redis_throughput.py --publishers 1 2 --seconds 10
    .venv/bin/python benchmarks/redis_throughput.py --pipeline 50
    .venv/bin/python benchmarks/redis_throughput.py --channels 10000 50000 --members 10000 50000

Each scenario starts fresh servers on 127.0.0.1: one ``redis-server`` (``single``,
``RedisGroupBackend``), or a cluster of three masters with a replica each (``cluster``,
``RedisClusterGroupBackend``, created by ``redis-cli``), and then, as processes of their own:

* ``--subscribers`` processes, each with the backend and one member in the group: they subscribe
  as a server's process does (``SUBSCRIBE``, or ``SSUBSCRIBE`` on the group's master). A member
  takes every frame at once and only counts it, so that what is measured is Redis and each
  process's listener (reading, decoding, handing the message to its members), not socket writes:
  ``benchmarks/fanout.py`` measures those;
* ``--publishers`` processes calling ``groups.send(group, message)`` in a loop for ``--seconds``,
  each message of ``--sizes`` bytes of text: one ``PUBLISH`` (``SPUBLISH``) round trip each, as
  an application's send is. With ``--pipeline N`` they send the backend's payload N at a time
  per round trip instead, straight to the node that carries the group: a load generator, for
  the load of many application processes sending at once, which one core of publishers could
  not otherwise give (Redis then reads many commands per turn of its event loop, as it does
  under many senders).

The table gives, per scenario: messages published per second (all publishers); messages
received per second by each subscriber process, over the same window; messages lost (published
times subscribers, less what they received once the backlog drained), with the times Redis
disconnected a subscriber that fell behind (``client-output-buffer-limit pubsub``); the CPU of
the redis-server that carried the group (on a cluster: the shard's master, its replica apart) as
a share of one core during the window, and in microseconds per published message and per copy
delivered (until the backlog drained); the CPU of the subscriber processes per message received
and of the publishers per message sent; and the CPU that the rest of the machine used during
the window (a noisy neighbour shows there).

``--channels N ...`` measures instead one process that joins N groups (one member in all), and
``--members N ...`` one that puts N members in one group, from 32 threads at once as a server's
connections do: how long the joins took, and how much Redis's ``used_memory`` grew for each
(a group: its subscription and presence keys; a member: its presence entry).

Needs ``redis-server`` (Debian's package), and ``redis-cli`` for the cluster; without them the
scenarios are left out. Every process is bounded in time and stopped at the end.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.redis_fixture import RedisClusterServers, RedisServer, _find, find_redis_server  # noqa: E402

PREFIX = "bench:"
GROUP = "room:bench"
BACKENDS = {
    "single": "django_websocket.groups.redis.RedisGroupBackend",
    "cluster": "django_websocket.groups.redis.RedisClusterGroupBackend",
}
TICK = os.sysconf("SC_CLK_TCK")


# --- the processes ---------------------------------------------------------------------------


def _setup(target, location):
    import django
    from django.conf import settings

    settings.configure(
        INSTALLED_APPS=[],
        WEBSOCKET_GROUPS={"BACKEND": BACKENDS[target], "LOCATION": location, "PREFIX": PREFIX},
    )
    django.setup()


class CountingSocket:
    """A group member that takes every frame at once and counts it (see the module's doc)."""

    def __init__(self):
        self.id = uuid.uuid4().hex
        self.closed = False
        self.close_code = None
        self.close_reason = ""
        self._out = None  # nothing ever waits: each frame is "written" whole
        self.frames = 0

    def _send_now(self, message):
        self.frames += 1
        return True

    def send(self, message):
        self.frames += 1

    def fail(self, code, reason=""):
        self.closed = True

    def add_close_callback(self, callback):
        pass


def _cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_subscriber(args):
    """One server process's worth of subscription: joins, then answers "mark" with its counters."""
    _setup(args.target, args.location)
    from django_websocket import groups

    backend = groups.get_backend()
    member = CountingSocket()
    # (group, member) pairs: one member in one group; --groups N: it in N groups; --members N:
    # N members in the one group.
    if args.groups:
        joins = [(f"{GROUP}:{n}", member) for n in range(args.groups)]
    elif args.members:
        joins = [(GROUP, CountingSocket()) for _ in range(args.members[0])]
    else:
        joins = [(GROUP, member)]
    started = time.monotonic()
    if len(joins) == 1:
        backend.join(*joins[0])
    else:
        # As a server's connections do: many threads joining at once (their changes are batched).
        chunks = [joins[i::32] for i in range(32)]
        threads = [threading.Thread(target=lambda c=c: [backend.join(g, m) for g, m in c]) for c in chunks]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(600)
    joined = time.monotonic() - started
    stats = backend.stats()
    print(json.dumps({"ready": True, "joined_s": joined, "subscribed": stats["subscribed_groups"]}), flush=True)
    for line in sys.stdin:
        if line.strip() != "mark":
            break
        stats = backend.stats()
        print(
            json.dumps(
                {
                    "frames": member.frames,
                    "cpu": _cpu(),
                    "disconnects": stats["subscriber_disconnects"],
                    "reconnects": stats["subscriber_reconnects"],
                }
            ),
            flush=True,
        )
    backend.close()


def run_publisher(args):
    """Says it is ready, waits for "go START_AT", then sends from START_AT for args.seconds, one
    message after the other (``groups.send``), or ``--pipeline`` of them per round trip; prints
    how many it sent."""
    _setup(args.target, args.location)
    from django_websocket import groups
    from django_websocket.groups.redis import encode

    message = "x" * args.size
    if args.pipeline > 1:
        # A load generator, not the application's path: the backend's payload, many per round
        # trip, straight to the node that carries the group (on a cluster, its slot's master).
        import redis

        client = redis.Redis.from_url(args.node_url)
        command = "SPUBLISH" if args.target == "cluster" else "PUBLISH"
        channel, payload = (PREFIX + GROUP).encode(), encode(message, ())

        def send():
            pipe = client.pipeline(transaction=False)
            for _ in range(args.pipeline):
                pipe.execute_command(command, channel, payload)
            pipe.execute()
            return args.pipeline

    else:

        def send():
            groups.send(GROUP, message)
            return 1

    # Connects (on a cluster, reads the slots) before the window; the subscribers do not count it.
    send()
    print(json.dumps({"ready": True}), flush=True)
    start_at = float(sys.stdin.readline().split()[1])
    time.sleep(max(0.0, start_at - time.time()))
    cpu, sent, failed = _cpu(), 0, 0
    deadline = time.monotonic() + args.seconds
    while time.monotonic() < deadline:
        try:
            sent += send()
        except (groups.BackendUnavailable, OSError) as exc:
            failed += 1
            if failed == 1:
                print(f"publisher: {exc}", file=sys.stderr)
    print(json.dumps({"sent": sent, "failed": failed, "cpu": _cpu() - cpu}), flush=True)


# --- measuring -----------------------------------------------------------------------------------


def proc_cpu(pid):
    """CPU seconds (user + system) of a process, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def machine_cpu():
    """CPU seconds the whole machine was busy (every core), from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / TICK


class Child:
    def __init__(self, argv, timeout):
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1, cwd=ROOT
        )
        self.timeout = timeout

    def read(self):
        # Bounded: a child that says nothing for this long is taken as stuck.
        result = {}

        def reader():
            result["line"] = self.proc.stdout.readline()

        thread = threading.Thread(target=reader, daemon=True)
        thread.start()
        thread.join(self.timeout)
        line = result.get("line")
        if not line:
            raise RuntimeError(f"child {self.proc.args[-8:]} said nothing within {self.timeout}s")
        return json.loads(line)

    def ask(self, command):
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.read()

    def stop(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
                self.proc.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(10)


def _role_argv(role, target, location, *extra):
    return [sys.executable, __file__, "--role", role, "--target", target, "--location", location, *extra]


class Servers:
    def __init__(self, target, redis_server, redis_cli):
        self.target = target
        if target == "single":
            self.single = RedisServer(redis_server)
            self.location = self.node_url = self.single.url
            self.carrier, self.replica = self.single.proc.pid, None
            self._masters = [self.single]
        else:
            from redis.crc import key_slot

            self.cluster = RedisClusterServers(redis_server, redis_cli)
            self.location = self.cluster.url
            port = self.cluster.master_of(key_slot((PREFIX + GROUP).encode()))
            _, _, replicas = self.cluster.topology()[port]
            self.carrier = self.cluster.node(port).proc.pid
            self.node_url = self.cluster.node(port).url
            self.replica = self.cluster.node(replicas[0]).proc.pid if replicas else None
            self._masters = [self.cluster.node(p) for p in self.cluster.topology()]

    def used_memory(self):
        """Bytes of data in Redis: every master's ``used_memory``, summed."""
        return sum(int(node.client().info("memory")["used_memory"]) for node in self._masters)

    def stop(self):
        (self.single if self.target == "single" else self.cluster).stop()


def throughput(servers, size, subscribers, publishers, pipeline, seconds, drain):
    subs = [Child(_role_argv("subscriber", servers.target, servers.location), 60) for _ in range(subscribers)]
    pubs = []
    try:
        for sub in subs:
            ready = sub.read()
            assert ready["subscribed"] == 1, ready
        options = ["--size", str(size), "--seconds", str(seconds), "--pipeline", str(pipeline)]
        options += ["--node-url", servers.node_url]
        pubs = [
            Child(_role_argv("publisher", servers.target, servers.location, *options), seconds + 60)
            for _ in range(publishers)
        ]
        warm_up = 0
        for pub in pubs:
            pub.read()
            warm_up += pipeline
        # Every warm-up message has reached every subscriber before the window opens.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if all(sub.ask("mark")["frames"] >= warm_up for sub in subs):
                break
            time.sleep(0.05)
        start_at = time.time() + 0.5
        for pub in pubs:
            pub.proc.stdin.write(f"go {start_at!r}\n")
            pub.proc.stdin.flush()
        # The marks just before the publishers start, while nothing flows.
        time.sleep(max(0.0, start_at - 0.2 - time.time()))
        before = [sub.ask("mark") for sub in subs]
        redis0 = proc_cpu(servers.carrier)
        replica0 = proc_cpu(servers.replica) if servers.replica else 0.0
        machine0, t0 = machine_cpu(), time.monotonic()
        time.sleep(max(0.0, start_at + seconds - time.time()))
        window = [sub.ask("mark") for sub in subs]
        results = [pub.read() for pub in pubs]
        elapsed = time.monotonic() - t0
        redis_cpu = proc_cpu(servers.carrier) - redis0
        replica_cpu = (proc_cpu(servers.replica) - replica0) if servers.replica else None
        machine = machine_cpu() - machine0
        pub_cpu = sum(r["cpu"] for r in results)
        sent = sum(r["sent"] for r in results)
        # What was still on its way at the window's end: wait until every copy arrived, or the
        # counts stopped moving for a while (lost), bounded by ``drain``.
        deadline, last, still = time.monotonic() + drain, None, time.monotonic()
        while True:
            after = [sub.ask("mark") for sub in subs]
            frames = [a["frames"] - b["frames"] for a, b in zip(after, before, strict=True)]
            if all(f >= sent for f in frames) or time.monotonic() > deadline:
                break
            if frames != last:
                last, still = frames, time.monotonic()
            elif time.monotonic() - still > 2.0:
                break
            time.sleep(0.2)
        # Per message: the CPU until the backlog drained (Redis writes a lagging subscriber's
        # copies after the window), over what was sent, or received.
        redis_total = proc_cpu(servers.carrier) - redis0
        in_window = [w["frames"] - b["frames"] for w, b in zip(window, before, strict=True)]
        sub_cpu = [w["cpu"] - b["cpu"] for w, b in zip(window, before, strict=True)]
        sub_total = sum(a["cpu"] - b["cpu"] for a, b in zip(after, before, strict=True))
        ours = redis_cpu + (replica_cpu or 0.0) + pub_cpu + sum(sub_cpu)
        return {
            "published_per_s": sent / seconds,
            "received_per_s": sum(in_window) / len(in_window) / seconds,
            "lost": sent * subscribers - sum(frames),
            "failed": sum(r["failed"] for r in results),
            "disconnects": sum(a["disconnects"] for a in after),
            "redis_core": redis_cpu / elapsed,
            "redis_us_per_message": redis_total / sent * 1e6 if sent else None,
            "redis_us_per_copy": redis_total / (sent * subscribers) * 1e6 if sent else None,
            "replica_core": replica_cpu / elapsed if replica_cpu is not None else None,
            "subscriber_us_per_message": sub_total / sum(frames) * 1e6 if sum(frames) else None,
            "publisher_us_per_message": pub_cpu / sent * 1e6 if sent else None,
            "other_cores": max(0.0, machine - ours) / elapsed,
        }
    finally:
        for child in pubs + subs:
            child.stop()


def joins(servers, count, kind):
    """One process joins ``count`` groups (kind "groups") or puts ``count`` members in one group
    (kind "members"): how long it took, and Redis's memory for it."""
    memory0 = servers.used_memory()
    sub = Child(_role_argv("subscriber", servers.target, servers.location, f"--{kind}", str(count)), 900)
    try:
        ready = sub.read()
        time.sleep(1.0)  # the presence writer's last batch
        memory = servers.used_memory() - memory0
        return {
            "kind": kind,
            "count": count,
            "subscribed": ready["subscribed"],
            "joined_s": ready["joined_s"],
            "joins_per_s": count / ready["joined_s"],
            "bytes_each": memory / count,
        }
    finally:
        sub.stop()


# --- the table -----------------------------------------------------------------------------------


def _f(value, digits=1):
    if value is None:
        return "—"
    return f"{value:,.{digits}f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", nargs="+", choices=sorted(BACKENDS), default=["single", "cluster"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[100, 1024], help="bytes of text per message")
    parser.add_argument("--subscribers", nargs="+", type=int, default=[1, 4], help="subscribed processes")
    parser.add_argument("--publishers", nargs="+", type=int, default=[2], help="publishing processes")
    parser.add_argument(
        "--pipeline",
        type=int,
        default=1,
        help="messages per round trip: 1 is groups.send(); more loads Redis as many senders would",
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="of publishing, per scenario")
    parser.add_argument("--drain", type=float, default=20.0, help="seconds to wait for the backlog at most")
    parser.add_argument("--channels", nargs="*", type=int, default=[], help="measure N groups joined instead")
    parser.add_argument("--members", nargs="*", type=int, default=[], help="measure N members of one group instead")
    parser.add_argument("--json", help="also write the results to this file")
    # The roles of the child processes.
    parser.add_argument("--role", choices=["subscriber", "publisher"], help=argparse.SUPPRESS)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    parser.add_argument("--location", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--node-url", help=argparse.SUPPRESS)
    parser.add_argument("--groups", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "subscriber":
        return run_subscriber(args)
    if args.role == "publisher":
        return run_publisher(args)

    redis_server, redis_cli = find_redis_server(), _find("redis-cli")
    if redis_server is None:
        sys.exit("redis-server is needed: apt-get install -y redis-server")
    import redis

    version = subprocess.run([redis_server, "--version"], capture_output=True, text=True).stdout.split()[2]
    print(
        f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPUs, "
        f"redis-server {version.removeprefix('v=')}, redis-py {redis.__version__}, Python {sys.version.split()[0]}"
    )
    results = []
    for target in args.targets:
        if target == "cluster" and redis_cli is None:
            print("# cluster left out: redis-cli is needed (apt-get install -y redis-tools)")
            continue
        if args.channels or args.members:
            for kind, counts in (("groups", args.channels), ("members", args.members)):
                for count in counts:
                    servers = Servers(target, redis_server, redis_cli)
                    try:
                        row = {"target": target, **joins(servers, count, kind)}
                    finally:
                        servers.stop()
                    results.append(row)
                    print(json.dumps(row), file=sys.stderr)
            continue
        for size in args.sizes:
            for subscribers in args.subscribers:
                for publishers in args.publishers:
                    servers = Servers(target, redis_server, redis_cli)
                    try:
                        row = throughput(
                            servers, size, subscribers, publishers, args.pipeline, args.seconds, args.drain
                        )
                    finally:
                        servers.stop()
                    row = {
                        "target": target,
                        "size": size,
                        "subscribers": subscribers,
                        "publishers": publishers,
                        "pipeline": args.pipeline,
                        **row,
                    }
                    results.append(row)
                    print(json.dumps(row), file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    print()
    if args.channels or args.members:
        print("| target | one process joins | subscribed groups | seconds | joins/s | Redis bytes each |")
        print("|---|---|---|---|---|---|")
        for r in results:
            what = f"{r['count']:,} groups" if r["kind"] == "groups" else f"{r['count']:,} members of one group"
            print(
                f"| {r['target']} | {what} | {r['subscribed']:,} | {_f(r['joined_s'])} | "
                f"{_f(r['joins_per_s'], 0)} | {_f(r['bytes_each'], 0)} |"
            )
        return
    print(
        "| target | size (B) | subscribers | publishers (pipeline) | published/s | received/s per subscriber | lost "
        "(disconnects) | "
        "redis CPU (cores) | redis µs/message | redis µs/copy | replica CPU (cores) | "
        "subscriber µs/message | publisher µs/message | others' CPU (cores) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['target']} | {r['size']:,} | {r['subscribers']} | {r['publishers']} ({r['pipeline']}) | "
            f"{_f(r['published_per_s'], 0)} | {_f(r['received_per_s'], 0)} | {r['lost']:,} ({r['disconnects']}) | "
            f"{_f(r['redis_core'], 2)} | {_f(r['redis_us_per_message'])} | {_f(r['redis_us_per_copy'])} | "
            f"{_f(r['replica_core'], 2)} | {_f(r['subscriber_us_per_message'])} | "
            f"{_f(r['publisher_us_per_message'])} | {_f(r['other_cores'], 2)} |"
        )


if __name__ == "__main__":
    main()
