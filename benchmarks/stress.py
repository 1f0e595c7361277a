"""Load on the gevent path: many clients x many messages, nothing lost or reordered, and clients
killed mid-message leak nothing (threads, greenlets, file descriptors counted before and after).

Run by hand (it is not a test), from the repository's root::

    .venv/bin/python benchmarks/stress.py                       # 1,000 clients x 1,000 messages
    .venv/bin/python benchmarks/stress.py --clients 200 --messages 200   # a quick run

The server is ``python -m django_websocket.servers.gevent`` on 127.0.0.1, as deployed, with the
test project's echo view. The clients (the ``websockets`` asyncio client) run in several
processes; each sends its messages numbered, in windows, and checks that every echo comes back
in order. Then a process opens connections, sends half a frame on each and is killed with
SIGKILL; the server's threads, greenlets and open file descriptors must return to what they were
before the load. Every phase is bounded in time. Prints a markdown table; exits 1 on any loss,
reordering or leak.
"""

import argparse
import asyncio
import json
import multiprocessing
import os
import signal
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.idle_connections import free_port, raise_fd_limit, start_server, stop_server  # noqa: E402


def server_stats(pid, port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=30) as response:
        greenlets = json.loads(response.read())["greenlets"]
    return {
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "threads": len(os.listdir(f"/proc/{pid}/task")),
        "greenlets": greenlets,
    }


async def _client(url, cid, messages, window, results):
    from websockets.asyncio.client import connect

    lost = reordered = 0
    async with connect(url, compression=None, max_size=None, open_timeout=60, ping_interval=None) as ws:
        sent = 0
        expected = 0
        while expected < messages:
            upto = min(messages, sent + window)
            for i in range(sent, upto):
                await ws.send(f"{cid}:{i}")
            sent = upto
            while expected < sent:
                try:
                    echo = await asyncio.wait_for(ws.recv(), 60)
                except (asyncio.TimeoutError, Exception):
                    lost += sent - expected
                    expected = sent
                    break
                number = int(echo.split(":")[1])
                if number != expected:
                    reordered += 1
                expected += 1
    results.append((lost, reordered))


def _client_process(url, first, count, messages, window, queue):
    async def main():
        results = []

        async def one(cid):
            try:
                await _client(url, cid, messages, window, results)
            except Exception:
                results.append((messages, 0))

        await asyncio.gather(*(one(cid) for cid in range(first, first + count)))
        return results

    results = asyncio.run(main())
    queue.put((sum(r[0] for r in results), sum(r[1] for r in results), len(results)))


def _killer_process(port, count):
    # Opens connections, sends a frame header announcing 1,000 bytes and only 10 of them, and
    # is then killed: the kernel resets every connection mid-message.
    from tests.rawclient import RawClient

    clients = []
    for _ in range(count):
        client = RawClient("127.0.0.1", port, timeout=30)
        client.request("/echo")
        client.send_raw(RawClient.frame(1, b"x" * 1000)[:16])
        clients.append(client)
    time.sleep(60)  # killed long before


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--window", type=int, default=50, help="messages in flight per client")
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--killed", type=int, default=200, help="clients killed mid-message")
    parser.add_argument("--deadline", type=float, default=600)
    options = parser.parse_args()
    raise_fd_limit(options.clients + options.killed + 500)
    port = free_port()
    server = start_server("gevent", port, profile=0, ping_interval=0)
    url = f"ws://127.0.0.1:{port}/echo"
    failed = False
    try:
        asyncio.run(_warm_up(url))
        before = server_stats(server.pid, port)
        queue = multiprocessing.Queue()
        per = options.clients // options.processes
        procs = [
            multiprocessing.Process(
                target=_client_process, args=(url, n * per, per, options.messages, options.window, queue)
            )
            for n in range(options.processes)
        ]
        started = time.monotonic()
        for proc in procs:
            proc.start()
        totals = [0, 0, 0]
        for _ in procs:
            lost, reordered, count = queue.get(timeout=options.deadline)
            totals = [totals[0] + lost, totals[1] + reordered, totals[2] + count]
        elapsed = time.monotonic() - started
        for proc in procs:
            proc.join(30)
        killer = multiprocessing.Process(target=_killer_process, args=(port, options.killed))
        killer.start()
        time.sleep(min(30, 2 + options.killed / 100))
        during_kill = server_stats(server.pid, port)
        os.kill(killer.pid, signal.SIGKILL)
        killer.join(10)
        deadline = time.monotonic() + 30
        while True:
            after = server_stats(server.pid, port)
            # A leak is anything above the count before the load (it may end lower: a thread or
            # greenlet of the first request, e.g. gevent's resolver, can finish meanwhile).
            leaked = [key for key in after if after[key] > before[key]]
            if not leaked or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        total_messages = totals[2] * options.messages
        print("| clients | messages each | lost | reordered | seconds | msg/s |")
        print("|---:|---:|---:|---:|---:|---:|")
        print(
            f"| {totals[2]:,} | {options.messages:,} | {totals[0]:,} | {totals[1]:,} | {elapsed:.1f} "
            f"| {total_messages / elapsed:,.0f} |"
        )
        print()
        print("| server | before | with killed clients connected | after |")
        print("|---|---:|---:|---:|")
        for key in ("fds", "threads", "greenlets"):
            print(f"| {key} | {before[key]} | {during_kill[key]} | {after[key]} |")
        failed = totals[0] or totals[1] or totals[2] != per * options.processes or leaked
    finally:
        stop_server(server)
    print("\nRESULT:", "FAIL" if failed else "PASS")
    return 1 if failed else 0


async def _warm_up(url):
    from websockets.asyncio.client import connect

    async with connect(url, compression=None) as ws:
        await ws.send("warm-up")
        await ws.recv()


if __name__ == "__main__":
    sys.exit(main())
