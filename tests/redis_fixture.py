"""Real redis-servers for the tests, on free ports of 127.0.0.1, stopped afterwards: one server,
or a Redis Cluster of three masters with a replica each.

Debian's ``redis-server`` package provides the server (and, through ``redis-tools``, the
``redis-cli`` that creates a cluster). In CI (``CI=true``) a missing program fails the tests that
need it; elsewhere they are skipped, with a warning that says how to install it.
"""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import warnings
from pathlib import Path

import pytest

from tests.servers import free_port

INSTALL = "apt-get install -y redis-server"
INSTALL_CLI = "apt-get install -y redis-tools"


class RedisMissing(UserWarning):
    pass


def in_ci():
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _find(name):
    found = shutil.which(name)
    if found:
        return found
    for folder in ("/usr/bin", "/usr/sbin", "/usr/local/bin"):
        candidate = os.path.join(folder, name)
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def find_redis_server():
    return _find("redis-server")


def _require(name, install):
    binary = _find(name)
    if binary is None:
        message = f"{name} is not installed: the Redis tests need it ({install})"
        if in_ci():
            pytest.fail(message + f"; in CI a missing {name} is a failure", pytrace=False)
        warnings.warn(RedisMissing(message), stacklevel=3)
        pytest.skip(message)
    return binary


def require_redis_server():
    """The path of redis-server; fails in CI, else skips loudly, when there is none."""
    return _require("redis-server", INSTALL)


def require_redis_cli():
    """The path of redis-cli (it creates clusters), likewise."""
    return _require("redis-cli", INSTALL_CLI)


def _ping(port, timeout=0.5):
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(b"PING\r\n")
        return sock.recv(64).startswith(b"+PONG")


class RedisServer:
    """One redis-server process without persistence; ``kill`` and ``start`` again on the same
    port simulate a crash and a restart."""

    def __init__(self, binary, extra=()):
        self.binary = binary
        self.extra = tuple(extra)  # more redis-server options, such as a cluster node's
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.dir = Path(tempfile.mkdtemp(prefix="redis-test-"))
        self.proc = None
        self.start()

    def start(self, timeout=10.0):
        argv = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.dir),
            "--logfile", str(self.dir / "redis.log"),
            "--daemonize", "no",
            *self.extra,
        ]  # fmt: skip
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}: {self.log()}")
            try:
                if _ping(self.port):
                    return
            except OSError:
                pass
            time.sleep(0.05)
        self.kill()
        raise TimeoutError(f"redis-server did not answer on {self.port} within {timeout}s: {self.log()}")

    def kill(self):
        """Stop at once (SIGKILL), as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def restart(self):
        self.kill()
        self.start()

    def log(self):
        path = self.dir / "redis.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def client(self):
        """A redis-py client of this server alone (RESP2, short timeouts)."""
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, protocol=2, socket_timeout=5, socket_connect_timeout=2)

    def stop(self):
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


class DelayingProxy:
    """A TCP proxy in front of a Redis server that holds back, for ``delay`` seconds, each chunk
    a client sends that contains ``marker`` (a command name): a slow network or server for the
    commands of one kind only, to watch who waits for their answer."""

    def __init__(self, port, marker, delay):
        self.target, self.marker, self.delay = port, marker, delay
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.sockets = [self.listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # stopped
            server = socket.create_connection(("127.0.0.1", self.target), timeout=5)
            server.settimeout(None)
            self.sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, source, sink, from_client):
        try:
            while data := source.recv(65536):
                if from_client and self.marker in data:
                    time.sleep(self.delay)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def stop(self):
        for sock in self.sockets:
            sock.close()


class RedisClusterServers:
    """A Redis Cluster on 127.0.0.1: ``masters`` masters with one replica each, created by
    ``redis-cli --cluster create``. ``url`` is the first node's: any one node's URL is all a client
    needs. A short ``cluster-node-timeout`` makes a replica take over within seconds of its
    master's death (``kill``); a killed node started again rejoins as a replica."""

    def __init__(self, server_binary, cli_binary, masters=3, node_timeout_ms=1000, timeout=60.0):
        self.cli = cli_binary
        options = (
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",  # in the node's own --dir
            "--cluster-node-timeout", str(node_timeout_ms),
            # A replica takes over however long ago it last heard its master (a test's
            # replica is always current; the default would refuse after a while).
            "--cluster-replica-validity-factor", "0",
        )  # fmt: skip
        self.nodes = []
        try:
            for _ in range(masters * 2):
                # The cluster bus port defaults to the port + 10000, which a free port may not
                # allow: each node gets a free one of its own, kept across its restarts.
                self.nodes.append(RedisServer(server_binary, (*options, "--cluster-port", str(free_port()))))
            argv = [cli_binary, "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in self.nodes)]
            argv += ["--cluster-replicas", "1", "--cluster-yes"]
            created = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
            if created.returncode != 0:
                raise RuntimeError(f"redis-cli --cluster create failed: {created.stdout}{created.stderr}")
            self.wait_healthy(timeout)
        except BaseException:
            self.stop()
            raise
        self.url = f"redis://127.0.0.1:{self.nodes[0].port}/0"

    def node(self, port):
        return next(n for n in self.nodes if n.port == port)

    def topology(self, via=None):
        """``{master port: (node id, [slots], [replica ports])}``, as a live node sees it."""
        for candidate in [via] if via else [n for n in self.nodes if n.proc.poll() is None]:
            try:
                lines = candidate.client().execute_command("CLUSTER", "NODES")
                break
            except Exception:
                continue
        else:
            raise RuntimeError("no live node answers CLUSTER NODES")
        if isinstance(lines, bytes):
            lines = lines.decode()
        masters, replicas = {}, []
        for line in lines.strip().splitlines():
            fields = line.split()
            node_id, address, flags = fields[0], fields[1], fields[2].split(",")
            port = int(address.split("@")[0].rsplit(":", 1)[1])
            if "fail" in flags or "fail?" in flags or "noaddr" in flags:
                continue
            if "master" in flags:
                slots = []
                for part in fields[8:]:
                    if part.startswith("["):
                        continue  # a slot being migrated
                    low, _, high = part.partition("-")
                    slots.extend(range(int(low), int(high or low) + 1))
                masters[port] = (node_id, slots, [])
            else:
                replicas.append((port, fields[3]))
        by_id = {node_id: port for port, (node_id, _, _) in masters.items()}
        for port, master_id in replicas:
            if master_id in by_id:
                masters[by_id[master_id]][2].append(port)
        return masters

    def master_of(self, slot):
        for port, (_, slots, _) in self.topology().items():
            if slot in slots:
                return port
        raise LookupError(f"no master serves slot {slot}")

    def wait_healthy(self, timeout=30.0):
        """Until every live node says the cluster is ok and every master has a synced replica."""
        deadline = time.monotonic() + timeout
        while True:
            problem = self._problem()
            if problem is None:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"the cluster is not healthy after {timeout}s: {problem}")
            time.sleep(0.1)

    def _problem(self):
        live = [n for n in self.nodes if n.proc.poll() is None]
        for node in live:
            try:
                info = node.client().execute_command("CLUSTER", "INFO")
            except Exception as exc:
                return f"node {node.port}: {exc}"
            info = info.decode() if isinstance(info, bytes) else info
            if "cluster_state:ok" not in info:
                return f"node {node.port} says {info.splitlines()[0]}"
            known = int(info.split("cluster_known_nodes:")[1].split()[0])
            if known < len(self.nodes):
                return f"node {node.port} knows {known} nodes"
        try:
            masters = self.topology()
        except RuntimeError as exc:
            return str(exc)
        if sum(len(slots) for _, slots, _ in masters.values()) != 16384:
            return "not every slot is served"
        for port, (_, _, replicas) in masters.items():
            if not replicas:
                return f"master {port} has no replica"
            for replica in replicas:
                try:
                    info = self.node(replica).client().info("replication")
                except Exception as exc:
                    return f"replica {replica}: {exc}"
                if info.get("master_link_status") != "up":
                    return f"replica {replica} is not in sync with {port}"
        return None

    def stop(self):
        for node in self.nodes:
            node.stop()


@pytest.fixture(scope="session")
def redis_server():
    """A Redis server shared by the tests of a session (tests use distinct group names)."""
    server = RedisServer(require_redis_server())
    yield server
    server.stop()


@pytest.fixture
def fresh_redis():
    """A Redis server of the test's own, which it may kill and restart."""
    server = RedisServer(require_redis_server())
    yield server
    server.stop()


@pytest.fixture(scope="module")
def redis_cluster():
    """A Redis Cluster (3 masters, 3 replicas) for the tests of one module; they may kill a
    master, provided they start it again (it rejoins as a replica) and wait until healthy."""
    cluster = RedisClusterServers(require_redis_server(), require_redis_cli())
    yield cluster
    cluster.stop()
