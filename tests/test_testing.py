"""django_websocket.testing: the in-process WebSocketClient (with pytest, TestCase and
TransactionTestCase) and WebSocketLiveServerTestCase."""

import threading
import time
from unittest import mock

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection, connections
from django.test import TestCase, TransactionTestCase, override_settings
from websockets.sync.client import connect

from django_websocket.testing import (
    WebSocketClient,
    WebSocketLiveServerTestCase,
    websocket_client,  # noqa: F401 - the fixture, as a project's conftest.py would import it
)

pytestmark = pytest.mark.urls("tests.testing_urls")


# --- the protocol, in-process ------------------------------------------------------------------


def test_echo_text_binary_and_json(websocket_client):  # noqa: F811
    assert websocket_client.connect("/echo") == (True, None)
    websocket_client.send("héllo ✓")
    assert websocket_client.receive() == "héllo ✓"
    websocket_client.send(b"\x00\xff")
    assert websocket_client.receive() == b"\x00\xff"
    websocket_client.send_json({"n": [1, 2]})
    assert websocket_client.receive_json() == {"n": [1, 2]}
    websocket_client.send("x" * 200_000)  # more than one read, and a 64-bit length field
    assert websocket_client.receive() == "x" * 200_000
    assert websocket_client.receive_nothing()
    websocket_client.close()
    assert websocket_client.close_code == 1000


def test_view_refusal_gives_its_status_and_response():
    with WebSocketClient() as ws:
        assert ws.connect("/refuse") == (False, 403)
        assert ws.response.content == b"bad token"
    with WebSocketClient() as ws:
        assert ws.connect("/refuse?token=secret") == (True, None)
        assert ws.receive() == "welcome"


def test_plain_view_refusal_by_the_middleware_and_by_origin():
    with WebSocketClient() as ws:
        assert ws.connect("/plain") == (False, 400)
    with WebSocketClient() as ws:
        assert ws.connect("/echo", headers={"Origin": "http://evil.example"}) == (False, 403)
    with WebSocketClient() as ws:
        assert ws.connect("/echo", headers={"Origin": "http://testserver"}) == (True, None)


def test_subprotocol_negotiation():
    with WebSocketClient() as ws:
        assert ws.connect("/subprotocol", subprotocols=["chat.v1", "other"]) == (True, "chat.v1")
        assert ws.receive() == "chat.v1"
    with WebSocketClient() as ws:
        assert ws.connect("/subprotocol", subprotocols=["other"]) == (True, None)


def test_server_close_code_and_reason():
    with WebSocketClient() as ws:
        ws.connect("/server-close")
        assert ws.receive() == "bye"
        assert ws.wait_closed() == 4001
        assert (ws.close_code, ws.close_reason) == (4001, "done here")
    with WebSocketClient() as ws:
        ws.connect("/testing/goodbye")
        assert ws.wait_closed() == 1000


def test_assertion_messages_say_what_was_expected_and_what_came():
    with WebSocketClient() as ws:
        ws.connect("/echo")
        with pytest.raises(AssertionError, match=r"Expected a message from /echo within 0.1s, but none came"):
            ws.receive(timeout=0.1)
        ws.send("not json")
        with pytest.raises(AssertionError, match=r"Expected a JSON text message from /echo, got 'not json'"):
            ws.receive_json()
        ws.send("still open")
        with pytest.raises(AssertionError, match=r"Expected /echo to close the connection, but it sent 'still open'"):
            ws.wait_closed(timeout=1)
    with WebSocketClient() as ws:
        ws.connect("/server-close")
        ws.receive()
        closed = r"but the server closed the connection with code 4001 \('done here'\)"
        with pytest.raises(AssertionError, match=closed):
            ws.receive()
        with pytest.raises(AssertionError, match="Cannot send 'late': the connection to /server-close is closed"):
            ws.send("late")


def test_view_exception_is_raised_in_the_test_as_the_test_client_does():
    with WebSocketClient() as ws:
        ws.connect("/crash")
        assert ws.receive() == "about to fail"
        with pytest.raises(RuntimeError, match="boom in a WebSocket view"):
            ws.receive()
    with WebSocketClient(raise_request_exception=False) as ws:
        ws.connect("/crash")
        ws.receive()
        assert ws.wait_closed() == 1011


def test_a_view_that_keeps_running_is_reported():
    ws = WebSocketClient(timeout=0.3)
    ws.connect("/testing/stubborn")
    with pytest.raises(AssertionError, match="The view of /testing/stubborn is still running 0.3s after"):
        ws.close()
    ws._thread.join(5)  # let it end before the next test


def test_a_view_that_neither_accepts_nor_refuses_is_reported():
    ws = WebSocketClient(timeout=0.2)
    with pytest.raises(AssertionError, match="neither used request.websocket nor returned a response"):
        ws.connect("/testing/slow")
    ws.timeout = 5
    ws.close()


def test_one_client_one_connection():
    with WebSocketClient() as ws:
        ws.connect("/echo")
        with pytest.raises(RuntimeError, match="already connected once"):
            ws.connect("/echo")


def test_middleware_settings_apply_per_connection():
    without = [m for m in settings.MIDDLEWARE if "WebSocketMiddleware" not in m]
    with override_settings(MIDDLEWARE=without), WebSocketClient() as ws:
        # No middleware: the undecorated view knows nothing of WebSocket and answers plain HTTP.
        assert ws.connect("/plain-no-middleware") == (False, 200)


@pytest.mark.django_db
def test_fixture_shares_pytest_django_client(websocket_client, client, django_user_model):  # noqa: F811
    user = django_user_model.objects.create_user("ada", password="pw")
    client.force_login(user)
    websocket_client.connect("/testing/whoami")
    assert websocket_client.receive() == "ada"


# --- authentication, cookies and the database: TestCase and TransactionTestCase --------------------


@override_settings(ROOT_URLCONF="tests.testing_urls")
class InTransactionTests(TestCase):
    @classmethod
    def setUpTestData(cls):
        cls.user = get_user_model().objects.create_user("grace", password="secret")

    def ws(self):
        ws = WebSocketClient(self.client)
        self.addCleanup(ws.close)
        return ws

    def test_force_login_gives_request_user(self):
        ws = self.ws()
        ws.force_login(self.user)
        ws.connect("/testing/whoami")
        self.assertEqual(ws.receive(), "grace")

    def test_login_with_credentials(self):
        ws = self.ws()
        self.assertTrue(ws.login(username="grace", password="secret"))
        ws.connect("/testing/whoami")
        self.assertEqual(ws.receive(), "grace")

    def test_anonymous_without_login(self):
        ws = self.ws()
        ws.connect("/testing/whoami")
        self.assertEqual(ws.receive(), "anonymous")

    def test_cookies_are_shared_with_the_test_client(self):
        self.client.get("/testing/remember", {"value": "from http"})
        ws = self.ws()
        ws.connect("/testing/recall")
        self.assertEqual(ws.receive(), "from http")

    def test_view_and_test_see_each_others_uncommitted_rows(self):
        User = get_user_model()
        User.objects.create(username="made-by-the-test")
        ws = self.ws()
        ws.connect("/testing/users")
        ws.send("count")
        self.assertEqual(ws.receive_json(), {"count": 2})
        ws.send("create made-by-the-view")
        self.assertEqual(ws.receive_json(), {"count": 3})
        self.assertTrue(User.objects.filter(username="made-by-the-view").exists())

    def test_view_never_closes_the_tests_connection(self):
        # request.websocket.wait() and the request signals call close_old_connections(), which
        # closes a connection held in a transaction (here the TestCase's).
        closes = []
        original_close = connection.close

        def spy():
            closes.append(threading.current_thread().name)
            original_close()

        with mock.patch.object(connection, "close", spy):
            ws = WebSocketClient(self.client)
            ws.connect("/testing/users")
            for _ in range(3):
                ws.send("count")
                ws.receive_json()
            ws.close()
        self.assertEqual(closes, [])
        self.assertTrue(connection.in_atomic_block)
        self.assertEqual(get_user_model().objects.count(), 1)

    def test_two_connections_at_once(self):
        first, second = self.ws(), self.ws()
        first.connect("/echo")
        second.connect("/echo")
        first.send("one")
        second.send("two")
        self.assertEqual((first.receive(), second.receive()), ("one", "two"))


@override_settings(ROOT_URLCONF="tests.testing_urls")
class CommittedTests(TransactionTestCase):
    def test_login_and_database(self):
        user = get_user_model().objects.create_user("linus", password="pw")
        with WebSocketClient() as ws:
            ws.force_login(user)
            ws.connect("/testing/whoami")
            self.assertEqual(ws.receive(), "linus")
        with WebSocketClient() as ws:
            ws.connect("/testing/users")
            ws.send("create from-the-view")
            self.assertEqual(ws.receive_json(), {"count": 2})
        self.assertTrue(get_user_model().objects.filter(username="from-the-view").exists())


@override_settings(ROOT_URLCONF="tests.testing_urls")
class DatabaseRulesTests(TransactionTestCase):
    # The view thread runs the code it runs on a server, with connections of its own (the "file"
    # database is on disk: its connections really close): what fails on a server fails here.
    databases = {"default", "file"}

    def test_atomic_requests_do_not_wrap_websocket_views(self):
        settings_dict = connections.settings["file"]
        settings_dict["ATOMIC_REQUESTS"] = True
        self.addCleanup(settings_dict.__setitem__, "ATOMIC_REQUESTS", False)
        with WebSocketClient() as ws:
            ws.connect("/database/transactions")
            for i in range(3):
                ws.send("note")
                self.assertEqual(ws.receive_json(), {"count": i + 1, "in_atomic_block": False})

    def test_an_idle_view_releases_its_connection(self):
        with WebSocketClient() as ws:
            ws.connect("/database/idle")
            self.assertEqual(ws.receive(), "ready")
            ws.send("query")
            self.assertEqual(ws.receive(), "1")  # busy: the same connection
            time.sleep(1.5)  # WEBSOCKET_DATABASE_IDLE_TIMEOUT is 1 s
            ws.send("query")
            self.assertEqual(ws.receive(), "2")  # idle: it was closed, and opened again


# --- async views, through the project's ASGI application ------------------------------------------


def test_async_view_echo_through_the_client():
    with WebSocketClient() as ws:
        assert ws.connect("/async/echo") == (True, None)
        for message in ("hello", b"\x00\xff", "", "é" * 1000):
            ws.send(message)
            assert ws.receive() == message


def test_async_view_refusal_subprotocol_and_close_code():
    ws = WebSocketClient()
    assert ws.connect("/testing/async/refuse") == (False, 403)
    assert ws.response.content == b"bad token"
    with WebSocketClient() as ws:
        assert ws.connect("/testing/async/refuse?token=secret") == (True, None)
        assert ws.receive() == "welcome"
    with WebSocketClient() as ws:
        assert ws.connect("/testing/async/closer", subprotocols=["chat.v1", "chat.v2"]) == (True, "chat.v2")
        assert ws.receive() == "chat.v2"
        assert ws.wait_closed() == 4001
        assert ws.close_reason == "done here"


def test_async_view_exception_is_raised_in_the_test():
    ws = WebSocketClient()
    ws.connect("/testing/async/crash")
    assert ws.receive() == "about to fail"
    with pytest.raises(RuntimeError, match="boom in an async"):
        ws.wait_closed()
    assert ws.close_code == 1011


@override_settings(ROOT_URLCONF="tests.testing_urls")
class AsyncViewsInTransactionTests(TestCase):
    def test_async_view_and_test_share_the_transaction(self):
        User = get_user_model()
        User.objects.create(username="made-by-the-test")
        with WebSocketClient(self.client) as ws:
            ws.connect("/testing/async/users")
            ws.send("count")
            self.assertEqual(ws.receive_json(), {"count": 1})
            ws.send("create made-by-the-async-view")
            self.assertEqual(ws.receive_json(), {"count": 2})
        self.assertTrue(User.objects.filter(username="made-by-the-async-view").exists())

    def test_force_login_reaches_an_async_view(self):
        user = get_user_model().objects.create_user("ada", password="pw")
        with WebSocketClient(self.client) as ws:
            ws.force_login(user)
            ws.connect("/testing/async/whoami")
            self.assertEqual(ws.receive(), "ada")


# --- WebSocketLiveServerTestCase ------------------------------------------------------------------


# Django's live server serves static files under STATIC_URL, which the test project leaves unset.
@override_settings(ROOT_URLCONF="tests.testing_urls", STATIC_URL="/static/")
class LiveServerTests(WebSocketLiveServerTestCase):
    def test_real_client_over_the_live_server(self):
        self.assertTrue(self.live_server_ws_url.startswith("ws://localhost:"))
        with connect(self.live_server_ws_url + "/echo", open_timeout=10) as ws:
            ws.send("over a real socket")
            self.assertEqual(ws.recv(timeout=10), "over a real socket")

    def test_session_cookie_logs_the_real_client_in(self):
        user = get_user_model().objects.create_user("barbara", password="pw")
        self.client.force_login(user)
        cookie = "; ".join(f"{m.key}={m.coded_value}" for m in self.client.cookies.values())
        with connect(self.live_server_ws_url + "/testing/whoami", additional_headers={"Cookie": cookie}) as ws:
            self.assertEqual(ws.recv(timeout=10), "barbara")

    def test_plain_http_still_served(self):
        response = self.client.get("/testing/echo-page")
        self.assertContains(response, "new WebSocket")


# --- detached sockets through the client ------------------------------------------------------------


def test_the_client_drives_a_detached_socket():
    from django_websocket import groups

    with WebSocketClient() as ws:
        assert ws.connect("/detach/notify?group=client-detached&on=callback") == (True, None)
        assert ws.receive() == "joined"
        # The view has returned (the client checks its end as for any view) while the
        # connection lives on: group messages come, and the reactor's worker answers messages.
        assert ws._thread is not None and not ws._thread.join(5) and not ws._thread.is_alive()
        groups.send("client-detached", "pushed")
        assert ws.receive() == "pushed"
        ws.send("hi")
        assert ws.receive() == "got:hi"


def test_the_client_drives_a_detached_socket_of_an_async_view():
    # The async view detaches with an async def callback: the application's call outlives it in
    # the client's thread, as on an ASGI server.
    from django_websocket import groups
    from tests import detach_views

    with WebSocketClient() as ws:
        assert ws.connect("/detach/anotify?group=client-adetached&on=callback") == (True, None)
        assert ws.receive() == "joined"
        deadline = time.monotonic() + 5
        while "client-adetached" not in detach_views._returned:
            assert time.monotonic() < deadline, "the view did not return"
            time.sleep(0.01)
        groups.send("client-adetached", "pushed")
        assert ws.receive() == "pushed"
        ws.send("hi")
        assert ws.receive() == "got:hi"
        ws.send("close please")
        assert ws.wait_closed() == 4001 and ws.close_reason == "as asked"
    assert groups.count("client-adetached") == 0
