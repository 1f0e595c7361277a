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
