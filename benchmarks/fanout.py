"""Fan-out latency of groups: one message to 1,000 sockets. Run by hand (it is not a test)::

    .venv/bin/python benchmarks/fanout.py
    .venv/bin/python benchmarks/fanout.py --sockets 2000 --messages 50 --server gevent
    .venv/bin/python benchmarks/fanout.py --server gevent --rounds 3 --scenarios floor,memory
    .venv/bin/python benchmarks/fanout.py --server gevent --sockets 3000 --per-process \
        --scenarios floor,memory,redis,redis3

Scenarios (``--scenarios``, by their short names), each on fresh servers of 127.0.0.1
(``runserver --multithreaded`` by default):

* ``floor`` (no groups): the sender's view writes to each socket itself, one after the other:
  what the machine, the server and this client allow at best;
* ``memory`` (1 process): every socket on one process, the in-memory backend (the default);
* ``detached`` (1 process): the same, each member's view detached once it joined
  (``request.websocket.detach()``): no view waits for any socket;
* ``redis`` (1 process): the same through a Redis server, to show the cost of the hop;
* ``redis2``, ``redis3``: the sockets spread over two or three processes sharing one Redis, the
  sender on the first;
* ``cluster``, ``cluster3``: one or three processes on a local Redis Cluster (three masters and
  their replicas, ``RedisClusterGroupBackend``: the group's messages go through its slot's
  master).

``--sockets`` is the total, spread over the processes, unless ``--per-process`` makes it the
number on each process (``--sockets 3000 --per-process``: 9,000 sockets for ``redis3``).
``--rounds N`` runs the scenarios N times, one after the other in turn, and pools each one's
results: on a noisy machine the ratios of one run are what to compare, and taking turns spreads
the noise over all of them. The table gives each p99 as a ratio of the floor's.

A light asyncio client in this process holds the sockets (no compression offered). For each
message a sender socket asks its view to call ``groups.send``, stamping the message with
``time.monotonic_ns()`` (one clock for every process of the machine); each member socket notes
when the message arrived. *Delivery* is that delay per socket; *last socket* is, per message,
the delay until the slowest of the sockets had it. The script prints a markdown table of p50 and
p99 of both, and is bounded in time (``--deadline``).

Needs ``redis-server`` (Debian's package) for the Redis scenarios, and ``redis-cli`` for the
cluster ones (it creates the cluster); without them they are left out.
"""

import argparse
import asyncio
import base64
import os
import resource
import statistics
import struct
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.redis_fixture import RedisClusterServers, RedisServer, _find, find_redis_server  # noqa: E402
from tests.servers import ServerProcess, free_port  # noqa: E402

SETTLE = 0.05  # seconds between two messages once the previous one reached every socket


# --- a light client --------------------------------------------------------------------------


def masked_frame(opcode, payload):
    # Client frames are masked (RFC 6455 §5.3); the mask may be anything for a benchmark.
    mask = os.urandom(4)
    length = len(payload)
    if length < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
    elif length < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
    value = int.from_bytes(payload, "big") ^ int.from_bytes((mask * (length // 4 + 1))[:length], "big")
    return head + mask + value.to_bytes(length, "big")


class Client(asyncio.Protocol):
    """One WebSocket connection: the handshake, then the server's (unmasked, uncompressed) frames."""

    def __init__(self, path, on_text):
        self.path = path
        self.on_text = on_text
        self.buffer = bytearray()
        self.upgraded = asyncio.get_running_loop().create_future()
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(
            f"GET {self.path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )

    def data_received(self, data):
        now = time.monotonic_ns()
        self.buffer += data
        if not self.upgraded.done():
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(self.buffer[: self.buffer.find(b"\r\n")])
            del self.buffer[: end + 4]
            if b" 101 " not in status:
                self.upgraded.set_exception(ConnectionError(status.decode(errors="replace")))
                return
            self.upgraded.set_result(True)
        while len(self.buffer) >= 2:
            opcode, length = self.buffer[0] & 0x0F, self.buffer[1] & 0x7F
            offset = 2
            if length == 126:
                if len(self.buffer) < 4:
                    return
                (length,), offset = struct.unpack_from("!H", self.buffer, 2), 4
            elif length == 127:
                if len(self.buffer) < 10:
                    return
                (length,), offset = struct.unpack_from("!Q", self.buffer, 2), 10
            if len(self.buffer) < offset + length:
                return
            payload = bytes(self.buffer[offset : offset + length])
            del self.buffer[: offset + length]
            if opcode == 1:
                self.on_text(payload.decode(), now)
            elif opcode == 9:
                self.send(payload, opcode=10)

    def send(self, payload, opcode=1):
        self.transport.write(masked_frame(opcode, payload.encode() if isinstance(payload, str) else payload))

    def close(self):
        if self.transport is not None:
            self.transport.write(masked_frame(8, b"\x03\xe8"))
            self.transport.close()


# --- one scenario ----------------------------------------------------------------------------


async def run_scenario(servers, sockets, messages, timeout):
    loop = asyncio.get_running_loop()
    arrivals = {}  # seq -> [delay in ns, one per socket]
    ready = 0
    all_ready = loop.create_future()
    done = {}

    def on_text(text, now):
        nonlocal ready
        if text == "ready":
            ready += 1
            if ready == sockets and not all_ready.done():
                all_ready.set_result(True)
            return
        seq, sent = text.split()
        delays = arrivals.setdefault(int(seq), [])
        delays.append(now - int(sent))
        if len(delays) == sockets and int(seq) in done:
            done[int(seq)].set_result(True)

    clients = []
    limit = asyncio.Semaphore(8)  # the dev server's listen backlog is small: no SYN floods

    async def open_member(n):
        server = servers[n % len(servers)]
        async with limit:
            _, client = await loop.create_connection(lambda: Client("/member", on_text), "127.0.0.1", server.port)
            await asyncio.wait_for(client.upgraded, timeout)
        clients.append(client)

    await asyncio.gather(*(open_member(n) for n in range(sockets)))
    await asyncio.wait_for(all_ready, timeout)
    _, sender = await loop.create_connection(lambda: Client("/sender", on_text), "127.0.0.1", servers[0].port)
    await asyncio.wait_for(sender.upgraded, timeout)

    results = []
    warmup = 3
    for seq in range(warmup + messages):
        done[seq] = loop.create_future()
        sender.send(str(seq))
        try:
            await asyncio.wait_for(done[seq], timeout)
        except asyncio.TimeoutError:
            got = len(arrivals.get(seq, ()))
            raise RuntimeError(f"message {seq} reached {got} of {sockets} sockets within {timeout}s") from None
        if seq >= warmup:
            results.append(arrivals[seq])
        await asyncio.sleep(SETTLE)
    sender.close()
    for client in clients:
        client.close()
    return results


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def start_servers(kind, count, env):
    servers = []
    for _ in range(count):
        port = free_port()
        if kind == "runserver":
            argv = [sys.executable, "-m", "django", "runserver", "--multithreaded", "--noreload", f"127.0.0.1:{port}"]
        else:
            argv = [sys.executable, "-m", "django", "rungevent", f"127.0.0.1:{port}"]
        env = {"DJANGO_SETTINGS_MODULE": "benchmarks.fanout_settings", **env}
        servers.append(ServerProcess(f"fanout-{kind}", argv, port, env=env))
    return servers


# short name: (name, processes, Redis: None, "server" or "cluster", env of the servers)
CLUSTER = {"BENCH_REDIS_BACKEND": "RedisClusterGroupBackend"}
SCENARIOS = {
    "floor": ("no groups (floor)", 1, None, {"BENCH_DIRECT": "1"}),
    "memory": ("memory, 1 process", 1, None, {}),
    "detached": ("memory, 1 process, detached", 1, None, {"BENCH_DETACH": "1"}),
    "redis": ("redis, 1 process", 1, "server", {}),
    "redis2": ("redis, 2 processes", 2, "server", {}),
    "redis3": ("redis, 3 processes", 3, "server", {}),
    "cluster": ("redis cluster, 1 process", 1, "cluster", CLUSTER),
    "cluster3": ("redis cluster, 3 processes", 3, "cluster", CLUSTER),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sockets", type=int, default=1000)
    parser.add_argument("--per-process", action="store_true", help="--sockets on each process, not in all")
    parser.add_argument("--messages", type=int, default=30, help="measured messages per scenario (after 3 warm-ups)")
    parser.add_argument("--server", choices=["runserver", "gevent"], default="runserver")
    parser.add_argument("--scenarios", default="floor,memory,redis,redis2", help=f"of {', '.join(SCENARIOS)}")
    parser.add_argument("--rounds", type=int, default=1, help="runs of every scenario, taking turns")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds any one step may take")
    parser.add_argument("--deadline", type=float, default=600.0, help="seconds the whole run may take")
    args = parser.parse_args()

    # Both this process and the servers hold one descriptor per socket.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    chosen = [name.strip() for name in args.scenarios.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenarios {', '.join(unknown)}: choose among {', '.join(SCENARIOS)}")
    redis_binary, cli_binary = find_redis_server(), _find("redis-cli")
    if not redis_binary and any(SCENARIOS[name][2] for name in chosen):
        print("redis-server not found (apt-get install -y redis-server): Redis scenarios left out\n", file=sys.stderr)
        chosen = [name for name in chosen if not SCENARIOS[name][2]]
    if not cli_binary and any(SCENARIOS[name][2] == "cluster" for name in chosen):
        print("redis-cli not found (apt-get install -y redis-tools): cluster scenarios left out\n", file=sys.stderr)
        chosen = [name for name in chosen if SCENARIOS[name][2] != "cluster"]

    started = time.monotonic()
    results = {name: ([], []) for name in chosen}  # short name -> (deliveries, slowest), in ms
    for round_ in range(args.rounds):
        for short in chosen:
            name, processes, on_redis, env = SCENARIOS[short]
            left = args.deadline - (time.monotonic() - started)
            if left <= 0:
                print(f"deadline reached: {name} (round {round_ + 1}) not run", file=sys.stderr)
                break
            sockets = args.sockets * processes if args.per_process else args.sockets
            if on_redis == "cluster":
                redis = RedisClusterServers(redis_binary, cli_binary)
            else:
                redis = RedisServer(redis_binary) if on_redis else None
            servers = []
            try:
                if redis is not None:
                    env = {**env, "BENCH_REDIS_URL": redis.url}
                servers = start_servers(args.server, processes, env)
                print(f"{name}: {sockets} sockets, {args.messages} messages…", file=sys.stderr)
                measured = asyncio.run(
                    asyncio.wait_for(run_scenario(servers, sockets, args.messages, args.timeout), left)
                )
            finally:
                for server in servers:
                    server.stop()
                if redis is not None:
                    redis.stop()
            deliveries, slowest = results[short]
            deliveries.extend(delay / 1e6 for delays in measured for delay in delays)
            slowest.extend(max(delays) / 1e6 for delays in measured)

    sockets = f"{args.sockets} sockets{' per process' if args.per_process else ''}"
    rounds = f", {args.rounds} rounds" if args.rounds > 1 else ""
    print(f"\nFan-out of one group message to {sockets} ({args.server}, {os.cpu_count()} CPUs{rounds}), ms\n")
    floor = results.get("floor")
    floor_p99 = (percentile(floor[0], 0.99), percentile(floor[1], 0.99)) if floor and floor[0] else None
    print("| scenario | processes | sockets | delivery p50 | delivery p99 | last socket p50 | last socket p99 |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for short, (deliveries, slowest) in results.items():
        if not deliveries:
            continue
        name, processes = SCENARIOS[short][:2]
        p99, last_p99 = percentile(deliveries, 0.99), percentile(slowest, 0.99)
        ratio = last_ratio = ""
        if floor_p99 and short != "floor":
            ratio, last_ratio = f" ({p99 / floor_p99[0]:.2f}x)", f" ({last_p99 / floor_p99[1]:.2f}x)"
        print(
            f"| {name} | {processes} | {args.sockets * processes if args.per_process else args.sockets} "
            f"| {statistics.median(deliveries):.1f} | {p99:.1f}{ratio} "
            f"| {statistics.median(slowest):.1f} | {last_p99:.1f}{last_ratio} |"
        )


if __name__ == "__main__":
    main()
