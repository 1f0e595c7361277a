"""Django integration: middleware on and off, settings, checks, decorators' edge cases."""

import inspect
import logging
import subprocess
import sys
import textwrap

import pytest
from django.core.handlers.wsgi import WSGIHandler
from django.test import override_settings
from django.utils.decorators import method_decorator
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from django_websocket import accept_websocket, require_websocket
from django_websocket.exceptions import HandshakeError
from django_websocket.handshake import read_request
from tests import servers
from tests.rawclient import RawClient
from tests.servers import ROOT

TIMEOUT = 10
NO_MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]


def echo_once(server, path):
    with connect(server.url + path, open_timeout=TIMEOUT) as ws:
        ws.send("ping?")
        return ws.recv(timeout=TIMEOUT)


def test_decorators_work_without_the_middleware(thread_server):
    with override_settings(MIDDLEWARE=NO_MIDDLEWARE):
        server = thread_server(WSGIHandler())
        assert echo_once(server, "/echo") == "ping?"
        assert echo_once(server, "/accept") == "ping?"
        # Without the middleware an undecorated view knows nothing of WebSocket: it answers
        # plain HTTP, which the client refuses as a failed handshake (as in 2010).
        with pytest.raises(InvalidStatus) as info:
            connect(server.url + "/plain-no-middleware", open_timeout=TIMEOUT)
        assert info.value.response.status_code == 200


def test_accept_all_serves_undecorated_views_through_the_middleware(thread_server):
    server = thread_server()
    with pytest.raises(InvalidStatus):
        connect(server.url + "/undecorated-echo", open_timeout=TIMEOUT)
    with override_settings(WEBSOCKET_ACCEPT_ALL=True):
        assert echo_once(server, "/undecorated-echo") == "ping?"
        # Plain HTTP still reaches the view as usual.
        with RawClient(server.host, server.port) as client:
            status, _, body = client.request("/plain", omit=("Upgrade", "Sec-WebSocket-Key", "Sec-WebSocket-Version"),
                                             headers={"Connection": "close"})
            assert (status, body) == (200, b"plain view, is_websocket=False")


def test_2010_view_attributes_set_by_hand(thread_server):
    server = thread_server()
    # /hand-marked has accept_websocket = True set by hand, /hand-required require_websocket = True.
    assert echo_once(server, "/hand-marked") == "ping?"
    with RawClient(server.host, server.port) as client:
        status, _, _ = client.request("/hand-required", omit=("Upgrade", "Sec-WebSocket-Key", "Sec-WebSocket-Version"),
                                      headers={"Connection": "close"})
        assert status == 400


def test_async_view_on_a_wsgi_server_is_refused_with_the_fix_in_the_log(thread_server, caplog):
    # Under WEBSOCKET_ACCEPT_ALL (the middleware) and decorated: 501, and the log line says what
    # to do. The module defining the view imports fine on any server.
    server = thread_server()
    with caplog.at_level(logging.ERROR, logger="django_websocket"):
        with override_settings(WEBSOCKET_ACCEPT_ALL=True):
            with pytest.raises(InvalidStatus) as info:
                connect(server.url + "/async-view", open_timeout=TIMEOUT)
            assert info.value.response.status_code == 501
        with pytest.raises(InvalidStatus) as info:
            connect(server.url + "/async/echo", open_timeout=TIMEOUT)
        assert info.value.response.status_code == 501
    messages = [r.getMessage() for r in caplog.records if r.name == "django_websocket"]
    assert len(messages) == 2, messages
    assert all("needs an ASGI server" in m and "django_websocket.asgi.get_asgi_application()" in m for m in messages)


def test_view_raising_a_handshake_error_gets_its_status(thread_server):
    server = thread_server()
    with pytest.raises(InvalidStatus) as info:
        connect(server.url + "/raises-forbidden", open_timeout=TIMEOUT)
    assert info.value.response.status_code == 403


def test_decorator_and_middleware_set_up_once(thread_server):
    # /count-setups reports how many WebSocket objects the request saw created.
    server = thread_server()
    assert echo_once(server, "/same-object") == "ping?"


def test_async_views_can_be_decorated():
    @require_websocket
    async def view(request):
        pass

    @accept_websocket(max_message_size=10)
    async def other(request):
        pass

    assert inspect.iscoroutinefunction(view) and inspect.iscoroutinefunction(other)
    assert view.require_websocket and not other.require_websocket


def test_unknown_decorator_option_is_a_clear_error():
    with pytest.raises(TypeError, match="max_size"):

        @require_websocket(max_size=10)
        def view(request):
            pass


def test_method_decorator_marks_the_class_based_view():
    from django.views import View

    @method_decorator(require_websocket, name="dispatch")
    class Echo(View):
        def get(self, request):
            pass

    view = Echo.as_view()
    assert (view.accept_websocket, view.require_websocket, view.websocket_decorated) == (True, True, True)


def test_settings_are_read_when_used(thread_server):
    server = thread_server()
    with override_settings(WEBSOCKET_MAX_MESSAGE_SIZE=10):
        with RawClient(server.host, server.port) as client:
            assert client.request("/echo")[0] == 101
            client.send_frame(1, "x" * 11)
            assert client.recv_close()[0] == 1009


def test_server_without_handover_answers_501(client):
    # Django's test client (like a WSGI server that cannot upgrade) gives no socket.
    response = client.get(
        "/echo",
        HTTP_UPGRADE="websocket",
        HTTP_CONNECTION="Upgrade",
        HTTP_HOST="testserver",
        HTTP_SEC_WEBSOCKET_KEY="dGhlIHNhbXBsZSBub25jZQ==",
        HTTP_SEC_WEBSOCKET_VERSION="13",
    )
    assert response.status_code == 501


def test_system_check_warns_when_another_runserver_shadows_ours():
    from django.core.management import get_commands

    from django_websocket.checks import check_runserver

    get_commands.cache_clear()
    try:
        with override_settings(INSTALLED_APPS=["django.contrib.staticfiles", "django_websocket"]):
            get_commands.cache_clear()
            warnings = check_runserver(None)
        assert [w.id for w in warnings] == ["django_websocket.W001"]
        assert "django.contrib.staticfiles" in warnings[0].msg
        assert "above" in warnings[0].hint
        get_commands.cache_clear()
        assert check_runserver(None) == []
    finally:
        get_commands.cache_clear()


def test_runserver_keeps_django_options_and_staticfiles():
    result = subprocess.run(
        [sys.executable, "-m", "django", "help", "runserver"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(ROOT), "DJANGO_SETTINGS_MODULE": "tests.settings", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    for option in ("--multithreaded", "--nothreading", "--noreload", "--ipv6"):
        assert option in result.stdout


_header_text = st.text(alphabet=st.characters(codec="latin-1"), max_size=40)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "REQUEST_METHOD",
                "SERVER_PROTOCOL",
                "HTTP_HOST",
                "HTTP_UPGRADE",
                "HTTP_CONNECTION",
                "HTTP_SEC_WEBSOCKET_KEY",
                "HTTP_SEC_WEBSOCKET_VERSION",
                "HTTP_SEC_WEBSOCKET_PROTOCOL",
                "HTTP_SEC_WEBSOCKET_EXTENSIONS",
                "HTTP_ORIGIN",
            ]
        ),
        _header_text,
    )
)
def test_handshake_fuzz_only_raises_handshake_errors(environ):
    try:
        request = read_request(environ)
    except HandshakeError as exc:
        assert exc.status in (400, 426, 431)
    else:
        assert len(request.key) == 24


def test_2010_style_project_installed_from_the_checkout(tmp_path):
    """pip install the checkout into a fresh venv and run a project written like the 2010 README."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", str(ROOT)], capture_output=True, text=True, timeout=600
    )
    assert install.returncode == 0, install.stderr
    project = tmp_path / "project"
    (project / "oldsite").mkdir(parents=True)
    (project / "oldsite" / "__init__.py").write_text("")
    (project / "oldsite" / "settings.py").write_text(
        textwrap.dedent(
            """
            SECRET_KEY = "x"
            DEBUG = True
            ALLOWED_HOSTS = ["127.0.0.1"]
            INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth"]
            INSTALLED_APPS += ["django_websocket"]
            ROOT_URLCONF = "oldsite.urls"
            DATABASES = {}
            """
        )
    )
    (project / "oldsite" / "urls.py").write_text(
        textwrap.dedent(
            """
            from django.http import HttpResponse
            from django.urls import path
            from django_websocket import accept_websocket, require_websocket

            @require_websocket
            def echo(request):
                for message in request.websocket:
                    request.websocket.send(message)

            @accept_websocket
            def both(request):
                if not request.is_websocket():
                    return HttpResponse("plain")
                request.websocket.send("ws")

            urlpatterns = [path("echo", echo), path("both", both)]
            """
        )
    )
    (project / "manage.py").write_text(
        textwrap.dedent(
            """
            import os, sys
            os.environ.setdefault("DJANGO_SETTINGS_MODULE", "oldsite.settings")
            from django.core.management import execute_from_command_line
            execute_from_command_line(sys.argv)
            """
        )
    )
    from tests.servers import ServerProcess, free_port

    port = free_port()
    server = ServerProcess(
        "2010-project",
        [str(python), "manage.py", "runserver", "--multithreaded", "--noreload", f"127.0.0.1:{port}"],
        port,
        env={"PYTHONPATH": str(project), "DJANGO_SETTINGS_MODULE": "oldsite.settings"},
        cwd=project,
    )
    try:
        assert echo_once(server, "/echo") == "ping?"
        with connect(server.url + "/echo", open_timeout=TIMEOUT) as ws:
            ws.send("héllo")
            assert ws.recv(timeout=TIMEOUT) == "héllo"
            ws.send(b"\x00")
            assert ws.recv(timeout=TIMEOUT) == b"\x00"
        with connect(server.url + "/both", open_timeout=TIMEOUT) as ws:
            assert ws.recv(timeout=TIMEOUT) == "ws"
        import urllib.request

        with urllib.request.urlopen(server.http_url + "/both", timeout=TIMEOUT) as response:
            assert response.read() == b"plain"
    finally:
        server.stop()


def test_send_only_view_notices_the_client_close(thread_server):
    # /ticker sends every 50 ms and never reads; it must stop soon after the client closes.
    from tests import views

    server = thread_server()
    with override_settings(WEBSOCKET_PING_INTERVAL=None):
        with connect(server.url + "/ticker", open_timeout=TIMEOUT) as ws:
            assert ws.recv(timeout=TIMEOUT) == "tick"
        import time

        closed_at = time.monotonic()
        deadline = closed_at + TIMEOUT
        while "ticker-ended" not in views.EVENTS and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "ticker-ended" in views.EVENTS
        assert time.monotonic() - closed_at < 3


def test_wait_zero_returns_what_the_socket_holds(thread_server):
    import json

    server = thread_server()
    with connect(server.url + "/probe", open_timeout=TIMEOUT) as ws:
        ws.send(json.dumps({"op": "batch", "sleep": 0.3, "steps": [{"op": "wait", "timeout": 0}]}))
        ws.send("already there")
        assert json.loads(ws.recv(timeout=TIMEOUT))["result"] == ["already there"]


@pytest.mark.parametrize("pure", ["", "1"], ids=["accelerated", "pure-python"])
def test_large_messages_through_either_unmasking(pure):
    # A server where websockets' C unmasking is importable (a test dependency) uses it when
    # DJANGO_WEBSOCKET_PURE_PYTHON is not set: the same bytes come back, in both frame types.
    server = servers.runserver(env={"DJANGO_WEBSOCKET_PURE_PYTHON": pure})
    try:
        payload = bytes(range(256)) * 4000 + b"odd"  # not a whole number of 4- or 8-byte words
        # No compression: the payloads must cross the wire as they are, masked by the client.
        with connect(server.url + "/unmasking", open_timeout=TIMEOUT, max_size=None, compression=None) as ws:
            ws.send(payload)
            assert ws.recv(timeout=TIMEOUT) == payload
            text = "é€😀" * 1000
            ws.send(text)
            assert ws.recv(timeout=TIMEOUT) == text
            ws.send(b"")
            assert ws.recv(timeout=TIMEOUT) == b""
            ws.send("report unmasking")
            assert ws.recv(timeout=TIMEOUT) == ("_apply_mask_python" if pure else "_apply_mask_speedups")
    finally:
        server.stop()


def test_a_view_can_set_its_own_attributes_on_the_websocket(thread_server):
    server = thread_server()
    with connect(server.url + "/custom-attribute?room=kitchen", open_timeout=TIMEOUT) as ws:
        assert ws.recv(timeout=TIMEOUT) == "kitchen"
