"""The load client of benchmarks/compare.py: picows (framing in C) on uvloop, in its own process.

benchmarks/compare.py starts it pinned to the core the server does not use, once per scenario::

    python benchmarks/compare_client.py echo ws://127.0.0.1:8000/echo --connections 100
    python benchmarks/compare_client.py handshake ws://127.0.0.1:8000/echo --concurrency 8
    python benchmarks/compare_client.py idle ws://127.0.0.1:8000/echo --counts 1000 5000 10000

and reads one JSON object from its standard output. Every wait is bounded; nothing leaves
127.0.0.1. ``--server-pids`` names the server's processes: the client reads their CPU time over the
measured window (and for ``idle`` their memory) from ``/proc``, along with its own CPU time, so
that a reader can see which side was saturated.

Scenarios:

``echo``
    Each connection sends a message, waits for its echo, and sends the next at once (a closed
    loop). After ``--warmup`` seconds, round trips completing within ``--duration`` seconds are
    counted, with their latencies.
``handshake``
    ``--concurrency`` loops each open a connection (TCP connect and opening handshake), then close
    it (close handshake, then TCP close), and start over.
``idle``
    Opens connections up to each of ``--counts``, lets them idle ``--settle`` seconds, reads the
    server's resident memory, then sends a message on every one and waits for all the echoes.
"""

import argparse
import asyncio
import json
import os
import resource
import sys
import time
from pathlib import Path

import uvloop
from picows import WSCloseCode, WSListener, WSMsgType, ws_connect

CONNECT_TIMEOUT = 20.0


# --- the server's processes, seen from /proc --------------------------------------------------


def process_tree(pids):
    """The given processes and all their descendants (gunicorn's workers, say)."""
    seen, todo = [], list(pids)
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.append(pid)
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                todo.extend(int(child) for child in (task / "children").read_text().split())
            except OSError:
                pass
    return seen


def cpu_seconds(pids):
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def rss_kib(pids):
    total = 0
    for pid in process_tree(pids):
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def machine_busy_seconds():
    """CPU time every process of the machine used so far, in seconds (all cores)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, idle, iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Window:
    """Wall time, the client's CPU, the server's CPU and everything else's over the measured window.

    ``other_cpu`` is what the rest of the machine used meanwhile (in cores): on a shared machine,
    a figure measured while it was high is less trustworthy.
    """

    def __init__(self, server_pids):
        # Walked once, before the window: with a thread per connection it takes a while.
        self.server_pids = process_tree(server_pids)

    def start(self):
        self.client0 = own_cpu_seconds()
        self.server0 = cpu_seconds(self.server_pids)
        self.machine0 = machine_busy_seconds()
        self.t0 = time.perf_counter()

    def stop(self):
        self.elapsed = time.perf_counter() - self.t0
        self.client_cpu = (own_cpu_seconds() - self.client0) / self.elapsed
        self.server_cpu = (cpu_seconds(self.server_pids) - self.server0) / self.elapsed
        machine = (machine_busy_seconds() - self.machine0) / self.elapsed
        return {
            "elapsed": self.elapsed,
            "client_cpu": self.client_cpu,
            "server_cpu": self.server_cpu,
            "other_cpu": max(0.0, machine - self.client_cpu - self.server_cpu),
        }


def percentiles(latencies_ns):
    if not latencies_ns:
        return {"p50_ms": None, "p99_ms": None}
    ordered = sorted(latencies_ns)
    pick = lambda fraction: ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] / 1e6  # noqa: E731
    return {"p50_ms": pick(0.50), "p99_ms": pick(0.99)}


# --- echo: a closed loop per connection -------------------------------------------------------


class EchoLoad:
    def __init__(self, payload, msg_type):
        self.payload = payload
        self.msg_type = msg_type
        self.running = True
        self.measuring = False
        self.latencies = []
        self.bytes = 0
        self.wrong = 0
        self.in_flight = 0
        self.drained = asyncio.get_running_loop().create_future()


class EchoListener(WSListener):
    def __init__(self, load):
        self.load = load
        self.sent_at = 0

    def start(self, transport):
        load = self.load
        load.in_flight += 1
        self.sent_at = time.perf_counter_ns()
        transport.send(load.msg_type, load.payload)

    def on_ws_frame(self, transport, frame):
        load = self.load
        if frame.msg_type == load.msg_type:
            now = time.perf_counter_ns()
            if load.measuring:
                load.latencies.append(now - self.sent_at)
                size = frame.payload_size
                load.bytes += size
                if size != len(load.payload):
                    load.wrong += 1
            if load.running:
                self.sent_at = now
                transport.send(load.msg_type, load.payload)
            else:
                load.in_flight -= 1
                if load.in_flight == 0 and not load.drained.done():
                    load.drained.set_result(None)
        elif frame.msg_type == WSMsgType.CLOSE:
            transport.disconnect()

    def on_ws_disconnected(self, transport):
        load = self.load
        if load.running or not load.drained.done():
            load.in_flight -= 1
            load.wrong += 1
            if not load.running and load.in_flight <= 0 and not load.drained.done():
                load.drained.set_result(None)


async def open_many(url, count, factory, concurrency, read_buffer=16 * 1024):
    """Open ``count`` connections, ``concurrency`` handshakes at a time; (transports, failures)."""
    limit = asyncio.Semaphore(concurrency)
    transports, failures = [], []

    async def one():
        async with limit:
            try:
                transport, listener = await asyncio.wait_for(
                    ws_connect(factory, url, read_buffer_init_size=read_buffer, max_frame_size=4 * 2**20),
                    CONNECT_TIMEOUT,
                )
            except (OSError, asyncio.TimeoutError, Exception) as exc:  # noqa: B014 (reported, not raised)
                failures.append(repr(exc))
                return
            transports.append((transport, listener))

    await asyncio.gather(*(one() for _ in range(count)))
    return transports, failures


async def close_all(transports):
    for transport, _ in transports:
        transport.send_close(WSCloseCode.OK)
    await asyncio.sleep(0.2)
    for transport, _ in transports:
        transport.disconnect()


async def echo(options):
    payload = os.urandom(options.size) if options.binary else b"x" * options.size
    load = EchoLoad(payload, WSMsgType.BINARY if options.binary else WSMsgType.TEXT)
    transports, failures = await open_many(
        options.url, options.connections, lambda: EchoListener(load), options.connect_concurrency
    )
    if failures:
        await close_all(transports)
        return {"error": f"{len(failures)} of {options.connections} connections failed, e.g. {failures[0]}"}
    for transport, listener in transports:
        listener.start(transport)
    await asyncio.sleep(options.warmup)
    window = Window(options.server_pids)
    window.start()
    load.measuring = True
    await asyncio.sleep(options.duration)
    load.measuring = False
    stats = window.stop()
    load.running = False
    try:
        await asyncio.wait_for(load.drained, 10)
    except asyncio.TimeoutError:
        pass
    await close_all(transports)
    count = len(load.latencies)
    return {
        **stats,
        "messages": count,
        "msg_per_s": count / stats["elapsed"],
        "mb_per_s": load.bytes / stats["elapsed"] / 1e6,
        "wrong": load.wrong,
        **percentiles(load.latencies),
    }


# --- handshakes --------------------------------------------------------------------------------


class CloseListener(WSListener):
    def on_ws_frame(self, transport, frame):
        if frame.msg_type == WSMsgType.CLOSE:
            # The server answered our close: end the TCP connection (RFC 6455 §7.1.1).
            transport.disconnect()


async def handshake(options):
    latencies, errors = [], []
    state = {"running": True, "measuring": False}

    async def loop():
        while state["running"]:
            started = time.perf_counter_ns()
            try:
                transport, _ = await asyncio.wait_for(ws_connect(CloseListener, options.url), CONNECT_TIMEOUT)
                transport.send_close(WSCloseCode.OK)
                await asyncio.wait_for(transport.wait_disconnected(), CONNECT_TIMEOUT)
            except (OSError, asyncio.TimeoutError, Exception) as exc:  # noqa: B014 (reported, not raised)
                if state["measuring"]:
                    errors.append(repr(exc))
                await asyncio.sleep(0.01)
                continue
            if state["measuring"]:
                latencies.append(time.perf_counter_ns() - started)

    tasks = [asyncio.ensure_future(loop()) for _ in range(options.concurrency)]
    await asyncio.sleep(options.warmup)
    window = Window(options.server_pids)
    window.start()
    state["measuring"] = True
    await asyncio.sleep(options.duration)
    state["measuring"] = False
    stats = window.stop()
    state["running"] = False
    await asyncio.wait(tasks, timeout=2 * CONNECT_TIMEOUT)
    for task in tasks:
        task.cancel()
    return {
        **stats,
        "handshakes": len(latencies),
        "per_s": len(latencies) / stats["elapsed"],
        "errors": len(errors),
        "error_example": errors[0] if errors else None,
        **percentiles(latencies),
    }


# --- idle connections --------------------------------------------------------------------------


class IdleListener(WSListener):
    """Answers pings (picows does it by itself) and notes the echo it is waiting for."""

    def __init__(self):
        self.echoed = None

    def on_ws_frame(self, transport, frame):
        if frame.msg_type == WSMsgType.TEXT:
            if self.echoed is not None and not self.echoed.done():
                self.echoed.set_result(frame.get_payload_as_bytes())
        elif frame.msg_type == WSMsgType.CLOSE:
            transport.disconnect()


async def echo_each(transports, timeout):
    loop = asyncio.get_running_loop()
    for transport, listener in transports:
        listener.echoed = loop.create_future()
        transport.send(WSMsgType.TEXT, b"are you there")
    done, _ = await asyncio.wait([listener.echoed for _, listener in transports], timeout=timeout)
    return sum(1 for future in done if future.result() == b"are you there")


async def idle(options):
    pids = options.server_pids
    # Warm-up: the first connections load code and fill caches that later ones share.
    warm, failures = await open_many(options.url, 50, IdleListener, options.connect_concurrency, 1024)
    if failures:
        return {"error": f"warm-up: {failures[0]}"}
    await echo_each(warm, 30)
    await close_all(warm)
    await asyncio.sleep(2)
    baseline = rss_kib(pids)
    rows, transports = [], []
    for count in sorted(options.counts):
        started = time.perf_counter()
        more, failures = await open_many(
            options.url, count - len(transports), IdleListener, options.connect_concurrency, 1024
        )
        transports += more
        opened_in = time.perf_counter() - started
        await asyncio.sleep(options.settle)
        rss = rss_kib(pids)
        started = time.perf_counter()
        echoed = await echo_each(transports, 60)
        rows.append(
            {
                "connections": count,
                "open": len(transports),
                "failures": len(failures),
                "failure_example": failures[0] if failures else None,
                "rss_kib": rss,
                "kib_per_connection": (rss - baseline) / max(1, len(transports)),
                "opened_in": opened_in,
                "echoed": echoed,
                "echoed_in": time.perf_counter() - started,
            }
        )
        if failures:
            break  # the server is at its limit: a larger count says nothing more
    await close_all(transports)
    return {"baseline_kib": baseline, "rows": rows}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scenario", choices=["echo", "handshake", "idle"])
    parser.add_argument("url")
    parser.add_argument("--server-pids", type=int, nargs="*", default=[])
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--size", type=int, default=32, help="bytes per message")
    parser.add_argument("--binary", action="store_true", help="binary messages of random bytes (else text)")
    parser.add_argument("--concurrency", type=int, default=8, help="handshake loops")
    parser.add_argument("--connect-concurrency", type=int, default=8, help="handshakes in flight while opening")
    parser.add_argument("--counts", type=int, nargs="+", default=[1000, 5000, 10000])
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--duration", type=float, default=2.0)
    parser.add_argument("--settle", type=float, default=2.0)
    options = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    scenario = {"echo": echo, "handshake": handshake, "idle": idle}[options.scenario]
    result = uvloop.run(scenario(options))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
