"""A real redis-server for the tests, on a free port of 127.0.0.1, stopped afterwards.

Debian's ``redis-server`` package provides it. In CI (``CI=true``) a missing redis-server fails
the tests that need it; elsewhere they are skipped, with a warning that says how to install it.
"""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

import pytest

from tests.servers import free_port

INSTALL = "apt-get install -y redis-server"


class RedisMissing(UserWarning):
    pass


def in_ci():
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def find_redis_server():
    found = shutil.which("redis-server")
    if found:
        return found
    for candidate in ("/usr/bin/redis-server", "/usr/sbin/redis-server", "/usr/local/bin/redis-server"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def require_redis_server():
    """The path of redis-server; fails in CI, else skips loudly, when there is none."""
    binary = find_redis_server()
    if binary is None:
        message = f"redis-server is not installed: the Redis tests need it ({INSTALL})"
        if in_ci():
            pytest.fail(message + "; in CI a missing redis-server is a failure", pytrace=False)
        warnings.warn(RedisMissing(message), stacklevel=2)
        pytest.skip(message)
    return binary


def _ping(port, timeout=0.5):
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(b"PING\r\n")
        return sock.recv(64).startswith(b"+PONG")


class RedisServer:
    """One redis-server process without persistence; ``kill`` and ``start`` again on the same
    port simulate a crash and a restart."""

    def __init__(self, binary):
        self.binary = binary
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

    def stop(self):
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


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
