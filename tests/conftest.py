import os
import threading

import pytest

# The pure-Python unmasking is what a plain install runs: the suite runs it too, here and in
# every server it starts (they inherit this environment). The optional C accelerators have
# their own tests (tests/test_frames.py, tests/test_integration.py).
os.environ["DJANGO_WEBSOCKET_PURE_PYTHON"] = "1"

from tests.servers import SERVER_LIMITS, SERVERS


def pytest_report_header(config):
    return f"servers under test: {', '.join(SERVERS)}; CI={os.environ.get('CI', '')!r}"


@pytest.fixture(scope="session", params=sorted(SERVERS))
def server(request):
    """Each real server path, started once per test session, running the test project."""
    started = SERVERS[request.param]()
    yield started
    started.stop()


@pytest.fixture(autouse=True)
def _server_limit(request):
    """A contract test (tests/test_contract.py, tests/test_contract_async.py: same names, same
    checks) that fails on a server because of the server's own framing or handshake handling
    (tests/servers.py's SERVER_LIMITS, each shown with a bare ASGI application by
    tests/test_asgi_servers.py) is an expected failure there, strictly."""
    callspec = getattr(request.node, "callspec", None)
    name = callspec.params.get("server") if callspec else None
    reason = SERVER_LIMITS.get(name, {}).get(request.node.originalname)
    if reason:
        request.node.add_marker(pytest.mark.xfail(reason=reason, strict=True))


class ThreadServer:
    """The dev server in a thread of the test process (so ``override_settings`` applies)."""

    def __init__(self, handler=None):
        from django.core.handlers.wsgi import WSGIHandler
        from django.test.testcases import QuietWSGIRequestHandler

        from django_websocket.servers.devserver import ThreadedWebSocketWSGIServer

        self.httpd = ThreadedWebSocketWSGIServer(("127.0.0.1", 0), QuietWSGIRequestHandler)
        self.httpd.set_app(handler or WSGIHandler())
        self.host, self.port = "127.0.0.1", self.httpd.server_address[1]
        self.url = f"ws://127.0.0.1:{self.port}"
        self.http_url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def thread_server():
    """A fresh in-process dev server (its WSGIHandler reads MIDDLEWARE when it starts)."""
    servers = []

    def start(handler=None):
        srv = ThreadServer(handler)
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.stop()


# A real redis-server for the group tests (tests/redis_fixture.py).
from tests.redis_fixture import fresh_redis, redis_cluster, redis_server  # noqa: E402, F401


def pytest_collection_modifyitems(config, items):
    # The conformance runs are the longest tests by far: start them first, so that with
    # pytest-xdist (./run-tests uses two workers) the rest of the suite runs beside them.
    def rank(item):
        if "test_compliance" not in item.nodeid:
            return 2
        return 0 if "-compression]" in item.nodeid else 1

    items.sort(key=rank)
