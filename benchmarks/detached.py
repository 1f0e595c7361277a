"""Detached sockets (``request.websocket.detach()``) under load. Run by hand (it is not a test)::

    .venv/bin/python benchmarks/detached.py latency                  # gthread, 4 threads, 5,000 sockets
    .venv/bin/python benchmarks/detached.py latency --sockets 2000 --requests 100
    .venv/bin/python benchmarks/detached.py lossless --server gevent  # 1,000 sockets x 100 messages
    .venv/bin/python benchmarks/detached.py lossless --server gthread --sockets 1000 --messages 100

``latency``: gunicorn's gthread worker of this app with four threads (``gunicorn -k
django_websocket.servers.gunicorn.ThreadWorker --threads 4 --workers 1``, as
docs/howto/deployment/gunicorn.rst deploys it), ``--sockets`` detached sockets open, and plain
HTTP requests (a new connection each, one at a time, from a process of their own) answered
meanwhile: their latency with no socket open, with every socket open and idle, and while the
sockets' group gets a message every ``--interval`` seconds. Attached, four threads would hold
four sockets at most.

``lossless``: ``--sockets`` detached sockets on one process (the gevent server, or the gthread
worker above), then one view sends their group ``--messages`` messages back to back; each socket
must get every sequence number exactly once and in order. The table counts the sockets that lost,
reordered or duplicated any, and the time from the send until the last socket had the last one.

The server runs the test project (``benchmarks.settings``: its sessions and auth middleware,
``tests/detach_views.py``'s views: a socket joins ``?group=``, says "joined" and detaches). A
light asyncio client in this process (``tests/bulkclient.py``) holds the sockets and answers the
server's keepalive pings. Every wait is bounded (``--timeout``, ``--deadline``). It prints
markdown tables; the fan-out latency of detached sockets against attached ones is
``benchmarks/fanout.py --scenarios memory,detached``, their memory
``benchmarks/idle_connections.py --detach``.
"""

import argparse
import asyncio
import concurrent.futures
import http.client
import json
import multiprocessing
import os
import resource
import statistics
import sys
import threading
import time
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.bulkclient import open_clients  # noqa: E402
from tests.servers import ServerProcess, free_port  # noqa: E402


def start_server(kind, switch_interval=None):
    port = free_port()
    env = {"DJANGO_SETTINGS_MODULE": "benchmarks.settings"}
    if switch_interval:
        env["BENCH_SWITCH_INTERVAL"] = str(switch_interval)
    if kind == "gevent":
        argv = [
            sys.executable, "-m", "django_websocket.servers.gevent", f"127.0.0.1:{port}",
            "--settings", "benchmarks.settings", "--no-access-log", "--backlog", "4096",
        ]  # fmt: skip
    else:
        # gunicorn's gthread worker holds at most --worker-connections connections at once (1,000
        # by default); a detached socket is no longer one of them once its view returned.
        argv = [
            sys.executable, "-m", "gunicorn", "-k", "django_websocket.servers.gunicorn.ThreadWorker",
            "--threads", "4", "--workers", "1", "--backlog", "4096", "--bind", f"127.0.0.1:{port}", "tests.wsgi",
        ]  # fmt: skip
        env["XDG_RUNTIME_DIR"] = str(Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-gunicorn-{port}")
        os.makedirs(env["XDG_RUNTIME_DIR"], exist_ok=True)
    server = ServerProcess(f"detached-{kind}", argv, port, env=env)
    print(f"{kind}: pid {server.proc.pid}, log {server.log.name}", file=sys.stderr)
    return server


def raise_fd_limit(needed):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        sys.exit(f"need {needed} file descriptors, the hard limit (ulimit -Hn) is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def http_get(port, path, timeout):
    """One plain request on a new connection: (seconds until the whole answer, body)."""
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        response = conn.getresponse()
        body = response.read().decode()
        if response.status != 200:
            raise RuntimeError(f"{path}: {response.status} {body[:200]}")
    finally:
        conn.close()
    return time.perf_counter() - started, body


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def latencies(port, requests, timeout, pause=0.01):
    """``requests`` plain requests one after the other, in this thread: their latencies, in ms."""
    result = []
    for _ in range(requests):
        seconds, body = http_get(port, "/plain", timeout)
        assert body.startswith("plain view"), body
        result.append(seconds * 1000)
        time.sleep(pause)
    return result


def summary(values):
    return {
        "n": len(values),
        "p50": statistics.median(values),
        "p99": percentile(values, 0.99),
        "max": max(values),
    }


def server_status(port, timeout):
    return json.loads(http_get(port, "/detach/status", timeout)[1])


async def open_detached(server, group, count, clients, timeout):
    path = "/detach/notify?" + urllib.parse.urlencode({"group": group})
    started = time.monotonic()
    failures = await open_clients(server.host, server.port, path, count, clients, concurrency=100)
    if failures:
        raise RuntimeError(f"{len(failures)} of {count} connections failed, e.g. {failures[0]!r}")
    for client in clients:
        joined = await asyncio.wait_for(client.messages.get(), timeout)
        if joined != b"joined":
            raise RuntimeError(f"expected 'joined', got {joined!r}")
    return time.monotonic() - started


def close_all(clients):
    for client in clients:
        if client.transport is not None:
            client.transport.close()


# --- latency -----------------------------------------------------------------------------------


async def run_latency(args):
    server = start_server("gthread", args.switch_interval)
    clients, rows = [], []
    # The plain requests are made and timed by a process of their own: in this one, they would
    # wait for the interpreter lock while the event loop reads the group's messages.
    timer = concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    loop = asyncio.get_running_loop()

    async def timed(requests):
        return await loop.run_in_executor(timer, latencies, server.port, requests, args.timeout)

    try:
        port = server.port
        await timed(20)  # warm-up
        rows.append(("no socket open", summary(await timed(args.requests))))
        opened_in = await open_detached(server, "bench", args.sockets, clients, args.timeout)
        status = await asyncio.to_thread(server_status, port, args.timeout)
        print(f"{args.sockets} detached sockets open in {opened_in:.1f} s: {status}", file=sys.stderr)
        await asyncio.sleep(args.settle)
        idle = await timed(args.requests)
        rows.append((f"{args.sockets:,} detached sockets, idle", summary(idle)))

        # The same while the group gets a message every --interval seconds, each sent by a
        # request of its own (so it takes one of the four threads for as long as it writes).
        stop = threading.Event()
        sent = []

        def sender():
            query = urllib.parse.urlencode({"group": "bench", "count": 1})
            while not stop.is_set():
                seconds, _ = http_get(port, f"/detach/send-sequence?{query}", args.timeout)
                sent.append(seconds * 1000)
                stop.wait(args.interval)

        thread = threading.Thread(target=sender, daemon=True)
        thread.start()
        try:
            busy = await timed(args.requests)
        finally:
            stop.set()
            await asyncio.to_thread(thread.join, args.timeout)
        # Every socket got every message of the group (the sequence numbers are all "0").
        got = []
        for client in clients:
            n = 0
            while len(sent) > n:
                message = await asyncio.wait_for(client.messages.get(), args.timeout)
                if message != b"0":
                    raise RuntimeError(f"unexpected {message!r}")
                n += 1
            got.append(n)
        assert all(n == len(sent) for n in got), "a socket missed a group message"
        label = f"{args.sockets:,} detached sockets, a group message every {args.interval * 1000:.0f} ms"
        rows.append((label, summary(busy)))
        status_after = await asyncio.to_thread(server_status, port, args.timeout)
    finally:
        timer.shutdown()
        close_all(clients)
        await asyncio.sleep(0.5)
        server.stop()
    return rows, opened_in, status, status_after, summary(sent)


def print_latency(args, rows, opened_in, status, status_after, sends):
    switch = f"; the server's switch interval {args.switch_interval * 1000:g} ms" if args.switch_interval else ""
    print(
        f"\nPlain HTTP requests on gunicorn's gthread worker (--threads 4 --workers 1), {args.requests} requests "
        f"per row, one at a time, a new connection each; {os.cpu_count()} CPUs, Python {sys.version.split()[0]}"
        f"{switch}\n"
    )
    print("| sockets | p50 (ms) | p99 (ms) | max (ms) |")
    print("|---|---:|---:|---:|")
    for label, s in rows:
        print(f"| {label} | {s['p50']:.1f} | {s['p99']:.1f} | {s['max']:.1f} |")
    print(
        f"\n{args.sockets:,} sockets opened in {opened_in:.1f} s; the worker then had {status['threads']} threads "
        f"and {status['detached']:,} detached connections ({status_after['detached']:,} at the end); "
        f"{sends['n']} group messages sent to all of them, each send taking {sends['p50']:.1f} ms (p50), "
        f"{sends['p99']:.1f} ms (p99) of its request, and every socket got every one."
    )


# --- lossless ----------------------------------------------------------------------------------


async def run_lossless(args):
    server = start_server(args.server)
    clients = []
    try:
        opened_in = await open_detached(server, "lossless", args.sockets, clients, args.timeout)
        status = await asyncio.to_thread(server_status, server.port, args.timeout)
        if status["detached"] < args.sockets:
            raise RuntimeError(f"only {status['detached']} of {args.sockets} sockets are detached: {status}")
        print(f"{args.sockets} detached sockets open in {opened_in:.1f} s: {status}", file=sys.stderr)
        received = [[] for _ in clients]
        last = [0.0]

        async def read(i, client):
            while len(received[i]) < args.messages:
                try:
                    message = await asyncio.wait_for(client.messages.get(), args.timeout)
                except asyncio.TimeoutError:
                    return
                if message is None:
                    return  # closed
                received[i].append(int(message))
                last[0] = max(last[0], time.monotonic())

        readers = [asyncio.ensure_future(read(i, c)) for i, c in enumerate(clients)]
        query = urllib.parse.urlencode({"group": "lossless", "count": args.messages})
        started = time.monotonic()
        send_seconds, body = await asyncio.to_thread(http_get, server.port, f"/detach/send-sequence?{query}", 300)
        assert body == f"sent {args.messages}", body
        await asyncio.gather(*readers)
        elapsed = last[0] - started
    finally:
        close_all(clients)
        await asyncio.sleep(0.5)
        server.stop()
    expected = list(range(args.messages))
    lost = reordered = duplicated = 0
    for got in received:
        if got == expected:
            continue
        lost += len(set(expected) - set(got)) > 0
        duplicated += len(got) != len(set(got))
        reordered += any(b < a for a, b in zip(got, got[1:], strict=False))
    return {
        "server": args.server,
        "sockets": len(clients),
        "messages": args.messages,
        "complete": sum(got == expected for got in received),
        "delivered": sum(len(got) for got in received),
        "lost": lost,
        "reordered": reordered,
        "duplicated": duplicated,
        "send": send_seconds,
        "elapsed": elapsed,
    }


def print_lossless(r):
    print(
        f"\n{r['messages']} group messages sent back to back to {r['sockets']:,} detached sockets "
        f"({os.cpu_count()} CPUs, Python {sys.version.split()[0]})\n"
    )
    print(
        "| server | sockets | messages each | sockets complete and in order | messages delivered "
        "| sockets with a loss | reordered | duplicated | send view (s) | until the last arrived (s) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(
        f"| {r['server']} | {r['sockets']:,} | {r['messages']} | {r['complete']:,} | {r['delivered']:,} | "
        f"{r['lost']} | {r['reordered']} | {r['duplicated']} | {r['send']:.2f} | {r['elapsed']:.2f} |"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    latency = sub.add_parser("latency", help="plain requests on a 4-thread gthread worker holding detached sockets")
    latency.add_argument("--sockets", type=int, default=5000)
    latency.add_argument("--requests", type=int, default=200, help="plain requests per row")
    latency.add_argument("--interval", type=float, default=0.1, help="seconds between two group messages")
    latency.add_argument("--settle", type=float, default=2.0, help="seconds to let the sockets go idle")
    latency.add_argument(
        "--switch-interval", type=float, metavar="SECONDS", help="the server's sys.setswitchinterval() (GIL)"
    )
    lossless = sub.add_parser("lossless", help="a burst of group messages to detached sockets, all checked")
    lossless.add_argument("--server", choices=["gevent", "gthread"], default="gevent")
    lossless.add_argument("--sockets", type=int, default=1000)
    lossless.add_argument("--messages", type=int, default=100)
    for each in (latency, lossless):
        each.add_argument("--timeout", type=float, default=60.0, help="seconds any one wait may take")
        each.add_argument("--deadline", type=float, default=900.0, help="seconds the whole run may take")
    args = parser.parse_args()
    raise_fd_limit(args.sockets + 200)
    if args.command == "latency":
        print_latency(args, *asyncio.run(asyncio.wait_for(run_latency(args), args.deadline)))
    else:
        result = asyncio.run(asyncio.wait_for(run_lossless(args), args.deadline))
        print_lossless(result)
        if result["complete"] != result["sockets"]:
            sys.exit(1)


if __name__ == "__main__":
    main()
