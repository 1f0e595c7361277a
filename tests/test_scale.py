"""Thousands of concurrent WebSockets on one gevent process, started as the docs say.

Checks that every connection still echoes, that the process serves them without a thread per
connection, and that it does not poll while they are idle. (Memory per connection is measured by
benchmarks/idle_connections.py, which is run by hand.)
"""

import asyncio
import os
import resource
import time
from pathlib import Path

import pytest

from tests.bulkclient import echo_all, open_clients
from tests.servers import SERVERS

CONNECTIONS = 2000

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def fd_limit():
    """Raise this process's open-file limit (the server, started after, inherits it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = CONNECTIONS + 500
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.skip(f"the hard limit of open files is {hard}, below the {needed} this test needs")
    if soft != resource.RLIM_INFINITY and soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def proc_status(pid, field):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(field)


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_two_thousand_concurrent_connections_all_echo(fd_limit):
    server = SERVERS["gevent"]()
    pid = server.proc.pid
    clients = []

    async def scenario():
        try:
            return await connect_and_check()
        finally:
            for client in clients:
                client.transport.close()
            await asyncio.sleep(0.1)

    async def connect_and_check():
        started = time.monotonic()
        failures = await open_clients(server.host, server.port, "/echo", CONNECTIONS, clients)
        assert not failures, f"{len(failures)} connections failed, e.g. {failures[0]!r}"
        opened = time.monotonic() - started
        # All open and idle: one process, a handful of threads at most, none per connection.
        threads = proc_status(pid, "Threads")
        assert threads <= 4, f"{threads} threads for {CONNECTIONS} connections"
        # Idle: no polling. (Keepalive pings go out every 20 s, none in this window.)
        await asyncio.sleep(0.5)
        before, wall = cpu_seconds(pid), time.monotonic()
        await asyncio.sleep(2)
        idle_cpu = (cpu_seconds(pid) - before) / (time.monotonic() - wall)
        assert idle_cpu < 0.1, f"the idle server used {idle_cpu:.0%} of a CPU"
        # Every connection echoes, all at once.
        echoed, latencies = await echo_all(clients, timeout=30)
        assert echoed == CONNECTIONS
        # And once more, so that each view really loops.
        echoed, _ = await echo_all(clients, timeout=30)
        assert echoed == CONNECTIONS
        return opened, max(latencies)

    try:
        opened, slowest = asyncio.run(scenario())
        print(f"{CONNECTIONS} connections opened in {opened:.1f} s; slowest echo {slowest * 1000:.0f} ms")
    finally:
        server.stop()
    assert "Traceback" not in server.output(), server.output()
