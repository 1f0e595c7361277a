"""Idle WebSocket connections on one gevent process: memory per connection, and each one echoes.

Run by hand (it is not a test), from the repository's root::

    .venv/bin/python benchmarks/idle_connections.py
    .venv/bin/python benchmarks/idle_connections.py --server gevent-websocket --counts 10000
    .venv/bin/python benchmarks/idle_connections.py --counts 2000 --profile 8
    .venv/bin/python benchmarks/idle_connections.py --join --counts 1000 5000

``--join``: each connection's view joins a group first (the in-memory backend), so that the
difference with a run without it is what an idle group member costs. ``--detach``: the view
joins the group and detaches (``request.websocket.detach()``, a callback echoing): what an idle
detached socket costs. ``--breakdown``: at each count, where the server's memory is (glibc's heap and its
free part, pymalloc's arenas and free blocks). ``--usual-middleware``: the middleware ``django-admin startproject``
writes (sessions, CSRF, auth, messages, clickjacking) in front of the views.

It starts the server (``python -m django_websocket.servers.gevent``, exactly as deployed, on
127.0.0.1, with the test project's ``@require_websocket`` echo view behind its sessions, auth and
WebSocket middleware), opens 1,000, then 5,000, then 10,000 WebSocket connections with a light
asyncio client in this process, and at each step, once the connections have been idle for a
moment, reads the server's resident memory (``VmRSS`` in ``/proc/PID/status``) and CPU time, then
sends a message on every connection and waits for each echo. It prints a markdown table.

KiB per connection = (RSS with N connections - RSS after a warm-up with none) / N. The client
answers the server's keepalive pings, as a browser does. ``--profile FRAMES`` starts tracemalloc
in the server and prints where the memory of the open connections was allocated.

Both processes need more file descriptors than the usual 1024: the script raises its soft limit
to the hard one (inherited by the server); raise the hard limit (``ulimit -Hn``, limits.conf or
systemd's LimitNOFILE) if it is below the largest count plus a few hundred.
"""

import argparse
import asyncio
import os
import random
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.bulkclient import echo_all, open_clients  # noqa: E402

# name: (how the server is started, the echo view's path)
SERVERS = {
    "gevent": (["-m", "django_websocket.servers.gevent"], "/echo"),
    "gevent-websocket": (["-m", "django_websocket.servers.geventwebsocket"], "/echo"),
    # A plain Django view on gevent-websocket, without this app: the figure to compare with.
    "reference": ([str(ROOT / "benchmarks" / "reference_geventwebsocket.py")], "/raw-echo"),
}


# --- the server ------------------------------------------------------------------------------


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(name, port, profile, ping_interval=None, usual_middleware=False):
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    if usual_middleware:
        env["BENCH_USUAL_MIDDLEWARE"] = "1"
    if ping_interval is not None:
        env["BENCH_PING_INTERVAL"] = str(ping_interval)
    if profile:
        env["BENCH_TRACEMALLOC"] = str(profile)
    if name == "reference":
        env["BENCH_REFERENCE"] = "1"
    argv = [
        sys.executable, *SERVERS[name][0], f"127.0.0.1:{port}",
        "--settings", "benchmarks.settings", "--no-access-log", "--backlog", "4096",
    ]  # fmt: skip
    log = tempfile.NamedTemporaryFile("w", prefix=f"bench-server-{name}-", suffix=".log", delete=False)
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    proc.log = log
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}: see {log.name}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc
        except OSError:
            time.sleep(0.1)
    stop_server(proc)
    raise TimeoutError("the server did not listen within 30 s")


def stop_server(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    proc.log.close()


def rss_kib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def raise_fd_limit(needed):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(hard, max(needed, soft))
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    if soft < needed:
        sys.exit(f"need {needed} file descriptors per process, the hard limit is {hard}: raise it (ulimit -Hn)")
    return soft


# --- the run ---------------------------------------------------------------------------------


async def run(options):
    port = free_port()
    raise_fd_limit(max(options.counts) + 200)
    server = start_server(options.server, port, options.profile, options.ping_interval, options.usual_middleware)
    rows, clients = [], []
    try:
        # Warm-up: the first connections load code and fill caches that later ones share.
        warm = []
        path = "/detached-echo" if options.detach else "/group-echo" if options.join else SERVERS[options.server][1]
        failures = await open_clients("127.0.0.1", port, path, 50, warm)
        assert not failures, failures
        await echo_all(warm)
        for client in warm:
            client.transport.close()
        await asyncio.sleep(2)
        if options.profile:
            await asyncio.to_thread(http_get, port, "/tracemalloc?baseline")
        baseline = rss_kib(server.pid)
        breakdowns = [("warm-up", await asyncio.to_thread(http_get, port, "/memory"))] if options.breakdown else []
        print(f"server pid {server.pid}, RSS after warm-up {baseline / 1024:.1f} MiB", file=sys.stderr)
        # With --trim, the memory held per connection is measured from the trimmed warm-up.
        trimmed_baseline = int(await asyncio.to_thread(http_get, port, "/trim")) if options.trim else None
        for count in sorted(options.counts):
            started = time.monotonic()
            failures = await open_clients("127.0.0.1", port, path, count - len(clients), clients)
            opened_in = time.monotonic() - started
            if failures:
                print(f"{len(failures)} connections failed, e.g. {failures[0]!r}", file=sys.stderr)
            await asyncio.sleep(options.settle)
            rss = rss_kib(server.pid)
            if options.breakdown:
                breakdowns.append((len(clients), await asyncio.to_thread(http_get, port, "/memory")))
            trimmed = None
            if options.trim:
                # The trim also lowers the RSS of the next counts: it gives back what the earlier
                # handshakes freed, which the allocator would otherwise reuse for the next ones.
                trimmed = int(await asyncio.to_thread(http_get, port, "/trim"))
                print(f"{len(clients)} connections: RSS {rss} KiB, {trimmed} KiB after malloc_trim", file=sys.stderr)
            cpu_before, wall_before = cpu_seconds(server.pid), time.monotonic()
            await asyncio.sleep(options.idle)
            idle_cpu = (cpu_seconds(server.pid) - cpu_before) / (time.monotonic() - wall_before) * 100
            # One connection at a time, the others idle: how promptly a message is answered.
            single = []
            for client in random.sample(clients, min(100, len(clients))):
                ok, latency = await echo_all([client], timeout=10)
                single.extend(latency if ok else [float("inf")])
            # Then every connection at once.
            started = time.monotonic()
            ok, _ = await echo_all(clients)
            echoed_in = time.monotonic() - started
            alive = sum(not c.closed for c in clients)
            rows.append(
                {
                    "connections": len(clients),
                    "rss": rss,
                    "per_connection": (rss - baseline) / len(clients),
                    "per_connection_trimmed": None if trimmed is None else (trimmed - trimmed_baseline) / len(clients),
                    "idle_cpu": idle_cpu,
                    "opened_in": opened_in,
                    "echoed": ok,
                    "alive": alive,
                    "echoed_in": echoed_in,
                    "single_p50": statistics.median(single),
                    "single_max": max(single),
                }
            )
            print(f"{len(clients)} connections: {rows[-1]['per_connection']:.1f} KiB each", file=sys.stderr)
        report = await asyncio.to_thread(http_get, port, "/tracemalloc?top=30") if options.profile else None
    finally:
        for client in clients:
            if client.transport is not None:
                client.transport.close()
        await asyncio.sleep(0.5)
        stop_server(server)
    for label, figures in breakdowns:
        print(f"memory ({label}): {figures}", file=sys.stderr)
    return baseline, rows, report


def http_get(port, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=120) as response:
        return response.read().decode()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", choices=sorted(SERVERS), default="gevent")
    parser.add_argument("--counts", type=int, nargs="+", default=[1000, 5000, 10000])
    parser.add_argument("--settle", type=float, default=3.0, help="Seconds to let connections go idle.")
    parser.add_argument("--idle", type=float, default=5.0, help="Seconds over which idle CPU is measured.")
    parser.add_argument("--join", action="store_true", help="Each connection joins a group first.")
    parser.add_argument("--detach", action="store_true", help="Each connection joins a group and detaches.")
    parser.add_argument("--trim", action="store_true", help="Also report RSS after the server's malloc_trim().")
    parser.add_argument(
        "--breakdown", action="store_true", help="Print where the RSS is (glibc heap, pymalloc) at each count."
    )
    parser.add_argument("--usual-middleware", action="store_true", help="startproject's middleware in front.")
    parser.add_argument("--profile", type=int, default=0, metavar="FRAMES", help="tracemalloc in the server.")
    parser.add_argument(
        "--ping-interval", type=float, metavar="SECONDS", help="WEBSOCKET_PING_INTERVAL for the server (0: off)."
    )
    options = parser.parse_args()
    baseline, rows, report = asyncio.run(run(options))
    joined = ", each connection in a group" if options.join else ""
    joined = ", each connection in a group and detached" if options.detach else joined
    if options.usual_middleware:
        joined += ", startproject's middleware"
    print(
        f"\nServer: `{' '.join(SERVERS[options.server][0])}`{joined} (Python {sys.version.split()[0]}); "
        f"RSS after warm-up {baseline / 1024:.1f} MiB.\n"
    )
    trim = " KiB/connection after malloc_trim |" if options.trim else ""
    print(
        f"| idle connections | server RSS | KiB/connection |{trim} idle CPU | opened in "
        "| one echo, others idle (p50 / max) | all echo at once |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if options.trim else ""))
    for r in rows:
        trimmed = f" {r['per_connection_trimmed']:.1f} |" if options.trim else ""
        print(
            f"| {r['connections']:,} | {r['rss'] / 1024:.1f} MiB | {r['per_connection']:.1f} |{trimmed} "
            f"{r['idle_cpu']:.1f} % | {r['opened_in']:.1f} s | "
            f"{r['single_p50'] * 1000:.1f} ms / {r['single_max'] * 1000:.1f} ms | "
            f"{r['echoed']:,}/{r['connections']:,} in {r['echoed_in']:.1f} s |"
        )
    if report:
        print("\nWhere the memory went (tracemalloc, growth since the warm-up):\n\n```\n" + report + "```")
    if any(r["echoed"] != r["connections"] for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
