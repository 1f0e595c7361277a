"""Safe defaults over real sockets: every bad input gets its answer, and the server keeps serving."""

import contextlib
import logging
import os
import signal
import socket
import threading
import time

import pytest
from django.test import override_settings
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from django_websocket import websocket as websocket_module
from tests.rawclient import RawClient
from tests.servers import runserver

TIMEOUT = 10


def assert_still_serving(server):
    with connect(server.url + "/echo", open_timeout=TIMEOUT) as ws:
        ws.send("still serving")
        assert ws.recv(timeout=TIMEOUT) == "still serving"


@pytest.fixture
def srv(thread_server):
    return thread_server()


# --- Origin (RFC 6455 §10.2) -------------------------------------------------------------------
#
# The default is Django's CSRF Origin rule: a handshake's Origin must be the request's own
# scheme://host[:port], or be allowed explicitly. Origins are compared as RFC 6454 §4-5 does:
# scheme, host and port, the port defaulting to the scheme's.


def handshake_status(srv, origin=None, host=None, path="/echo", **headers):
    """The status a raw handshake gets, with ``Origin`` and ``Host`` as given (``Host``: the
    server's own ``127.0.0.1:port`` by default, as a browser sends it)."""
    sent = {"Host": host or f"127.0.0.1:{srv.port}", **{k.replace("_", "-"): v for k, v in headers.items()}}
    if origin is not None:
        sent["Origin"] = origin
    with RawClient(srv.host, srv.port) as client:
        return client.request(path, sent)[0]


def refusals(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "django_websocket" and r.levelno == logging.WARNING]


def test_cross_origin_handshake_gets_403_and_a_log_line_naming_the_setting(srv, caplog):
    with caplog.at_level(logging.WARNING, logger="django_websocket"):
        with pytest.raises(InvalidStatus) as info:
            connect(srv.url + "/echo", origin="http://evil.example", open_timeout=TIMEOUT)
    assert info.value.response.status_code == 403
    assert refusals(caplog) == [
        "Refused WebSocket handshake to /echo from origin 'http://evil.example': not this site's origin "
        f"(http://127.0.0.1:{srv.port}); add it to WEBSOCKET_ALLOWED_ORIGINS to allow it"
    ]
    assert_still_serving(srv)


def test_allowed_hosts_wildcard_does_not_open_cross_origin_handshakes(srv):
    # ALLOWED_HOSTS = ["*"] (common in containers) says which Host headers Django answers, not
    # which pages may use the visitor's cookies.
    with override_settings(ALLOWED_HOSTS=["*"]):
        assert handshake_status(srv, "http://evil.example") == 403
        assert handshake_status(srv, "http://evil.example", host="evil.example") == 101  # its own origin
        assert handshake_status(srv, f"http://127.0.0.1:{srv.port}") == 101


def test_same_host_on_another_port_is_another_origin(srv):
    # RFC 6454 §5: the port is part of the origin; another port may be another application.
    assert handshake_status(srv, f"http://127.0.0.1:{srv.port + 1}") == 403
    assert handshake_status(srv, "http://127.0.0.1") == 403
    assert handshake_status(srv, f"http://localhost:{srv.port}") == 403  # another host, same machine


def test_https_origin_on_a_plain_connection_is_refused_with_a_proxy_hint(srv, caplog):
    with caplog.at_level(logging.WARNING, logger="django_websocket"):
        assert handshake_status(srv, f"https://127.0.0.1:{srv.port}") == 403
    [message] = refusals(caplog)
    assert f"not this site's origin (http://127.0.0.1:{srv.port})" in message
    assert "SECURE_PROXY_SSL_HEADER" in message


def test_own_origin_and_missing_origin_are_accepted(srv):
    with connect(srv.url + "/echo", origin=f"http://127.0.0.1:{srv.port}", open_timeout=TIMEOUT) as ws:
        ws.send("same origin")
        assert ws.recv(timeout=TIMEOUT) == "same origin"
    assert handshake_status(srv, f"HTTP://127.0.0.1:{srv.port}") == 101  # schemes and hosts ignore case
    assert handshake_status(srv) == 101  # no Origin header at all
    # The own origin needs no listing, whatever else is allowed.
    with override_settings(WEBSOCKET_ALLOWED_ORIGINS=["https://app.example.com"]):
        assert handshake_status(srv, f"http://127.0.0.1:{srv.port}") == 101


@pytest.mark.parametrize(
    "host, origin, expected",
    [
        # An explicit default port is the same origin as none (RFC 6454 §4, step 6).
        ("example.com", "http://example.com:80", 101),
        ("example.com:80", "http://example.com", 101),
        ("example.com", "http://example.com:8080", 403),
        ("example.com:8080", "http://example.com", 403),
        ("EXAMPLE.com", "http://example.COM", 101),
        # A fully qualified name with its trailing dot: Django strips the dot from the Host
        # before ALLOWED_HOSTS (split_domain_port), and the same is done for both sides here.
        ("example.com.", "http://example.com", 101),
        ("example.com", "http://example.com.", 101),
        ("example.com.:8080", "http://example.com.:8080", 101),
        ("example.com.", "http://example.com.:8080", 403),
        ("[::1]:8000", "http://[::1]:8000", 101),
        ("[::1]:8000", "http://[::1]:8001", 403),
    ],
)
def test_origins_compare_as_rfc_6454_says(srv, host, origin, expected):
    with override_settings(ALLOWED_HOSTS=["example.com", "[::1]"]):
        assert handshake_status(srv, origin, host=host) == expected


def test_host_not_in_allowed_hosts_gets_djangos_400(srv):
    # The own origin comes from request.get_host(), which refuses such a Host as for any request.
    assert handshake_status(srv, "http://evil.example", host="evil.example") == 400
    assert handshake_status(srv, host="evil.example") == 400
    assert_still_serving(srv)


PROXY = {"USE_X_FORWARDED_HOST": True, "SECURE_PROXY_SSL_HEADER": ("HTTP_X_FORWARDED_PROTO", "https")}


@pytest.mark.parametrize("allowed_hosts", [["example.com", "127.0.0.1"], ["*"]])
def test_behind_a_proxy_the_forwarded_origin_is_the_own_one(srv, allowed_hosts):
    forwarded = {"X_Forwarded_Host": "example.com", "X_Forwarded_Proto": "https"}
    with override_settings(ALLOWED_HOSTS=allowed_hosts, **PROXY):
        assert handshake_status(srv, "https://example.com", **forwarded) == 101
        # The proxy's view of itself is not the site's origin any more.
        assert handshake_status(srv, f"http://127.0.0.1:{srv.port}", **forwarded) == 403
        assert handshake_status(srv, f"https://127.0.0.1:{srv.port}", **forwarded) == 403
        assert handshake_status(srv, "http://example.com", **forwarded) == 403
        # A forwarded port is part of the forwarded host.
        on_8443 = {"X_Forwarded_Host": "example.com:8443", "X_Forwarded_Proto": "https"}
        assert handshake_status(srv, "https://example.com:8443", **on_8443) == 101
        assert handshake_status(srv, "https://example.com", **on_8443) == 403
    # Without the proxy settings, the same headers are whatever a client made up.
    with override_settings(ALLOWED_HOSTS=allowed_hosts):
        assert handshake_status(srv, "https://example.com", **forwarded) == 403


def test_the_proxy_hint_names_use_x_forwarded_host(srv, caplog):
    with caplog.at_level(logging.WARNING, logger="django_websocket"):
        assert handshake_status(srv, "https://example.com", X_Forwarded_Host="example.com") == 403
    [message] = refusals(caplog)
    assert "USE_X_FORWARDED_HOST" in message and "WEBSOCKET_ALLOWED_ORIGINS" in message


@pytest.mark.parametrize(
    "origin, expected",
    [
        ("https://app.example.com", 101),
        ("https://APP.example.com:443", 101),
        ("http://app.example.com", 403),
        ("https://app.example.com:8443", 403),
        ("https://other.example.com", 403),
        # Django's "*." entries: the domain and every subdomain, on that scheme and port.
        ("https://partner.example", 101),
        ("https://a.b.partner.example", 101),
        ("https://evilpartner.example", 403),
        ("http://a.partner.example", 403),
        ("https://a.partner.example:8443", 403),
    ],
)
def test_csrf_trusted_origins_are_trusted_as_django_trusts_them(srv, origin, expected):
    # Django accepts unsafe requests carrying the visitor's cookies from these origins: a
    # handshake from them is the same risk (docs/topics/security.rst).
    with override_settings(CSRF_TRUSTED_ORIGINS=["https://app.example.com", "https://*.partner.example"]):
        assert handshake_status(srv, origin) == expected


def test_csrf_trusted_origin_refusal_names_both_settings(srv, caplog):
    with override_settings(CSRF_TRUSTED_ORIGINS=["https://app.example.com"]):
        with caplog.at_level(logging.WARNING, logger="django_websocket"):
            assert handshake_status(srv, "https://evil.example") == 403
    [message] = refusals(caplog)
    assert message.endswith(
        f"not this site's origin (http://127.0.0.1:{srv.port}) nor in CSRF_TRUSTED_ORIGINS; "
        "add it to WEBSOCKET_ALLOWED_ORIGINS to allow it"
    )


@pytest.mark.parametrize("origin", ["null", "", "garbage", "http://exa mple.com", "http://127.0.0.1/path", "ftp://127.0.0.1"])
def test_malformed_or_opaque_origins_are_refused_without_crashing(srv, origin):
    with RawClient(srv.host, srv.port) as client:
        status, _, body = client.request("/echo", {"Origin": origin})
    assert status == 403, body
    assert_still_serving(srv)


def test_missing_origin_refused_when_required(srv, caplog):
    with override_settings(WEBSOCKET_REQUIRE_ORIGIN=True):
        with caplog.at_level(logging.WARNING, logger="django_websocket"):
            assert handshake_status(srv) == 403
        assert handshake_status(srv, f"http://127.0.0.1:{srv.port}") == 101
    [message] = refusals(caplog)
    assert "WEBSOCKET_REQUIRE_ORIGIN" in message


@pytest.mark.parametrize(
    "origin, expected",
    [
        ("https://app.example.com", 101),
        ("https://APP.Example.com:443", 101),
        ("https://a.b.example.com", 101),
        ("https://example.com", 403),  # "*." is for subdomains only
        ("http://app.example.com", 403),
        ("https://app.example.com:8443", 403),
        ("http://localhost:3000", 101),
        ("http://localhost", 403),
        ("https://evil.example", 403),
    ],
)
def test_allowed_origins_setting_patterns(srv, origin, expected):
    with override_settings(WEBSOCKET_ALLOWED_ORIGINS=["https://*.example.com", "http://localhost:3000"]):
        assert handshake_status(srv, origin) == expected


def test_allowed_origins_star_and_per_view_override(srv, caplog):
    with override_settings(WEBSOCKET_ALLOWED_ORIGINS=["*"]):
        assert handshake_status(srv, "https://anywhere.example") == 101
    # /public is decorated with allowed_origins=["*"].
    assert handshake_status(srv, "https://anywhere.example", path="/public") == 101
    # /partner with allowed_origins=["https://partner.example"], which replaces the setting.
    with override_settings(WEBSOCKET_ALLOWED_ORIGINS=["https://app.example.com"]):
        assert handshake_status(srv, "https://partner.example", path="/partner") == 101
        assert handshake_status(srv, f"http://127.0.0.1:{srv.port}", path="/partner") == 101
        with caplog.at_level(logging.WARNING, logger="django_websocket"):
            assert handshake_status(srv, "https://app.example.com", path="/partner") == 403
    [message] = refusals(caplog)
    assert message.endswith("add it to the view's allowed_origins to allow it")


# --- handshake limits ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers, omit, expected",
    [
        ({"Upgrade": "h2c"}, (), 400),
        ({"Connection": "keep-alive"}, (), 400),
        ({"Sec-WebSocket-Key": "not base64!"}, (), 400),
        ({"Sec-WebSocket-Key": "c2hvcnQ="}, (), 400),
        ({}, ("Sec-WebSocket-Key",), 400),
        ({}, ("Sec-WebSocket-Version",), 400),
        ({"Sec-WebSocket-Version": "8"}, (), 426),
        ({"X-Injected": "a\x00b"}, (), 400),
        ({"Upgrade": "WebSocket", "Connection": "keep-alive, Upgrade"}, (), 101),
    ],
)
def test_malformed_handshakes_get_their_status_before_any_upgrade(srv, headers, omit, expected):
    with RawClient(srv.host, srv.port) as client:
        status, response_headers, _ = client.request("/echo", headers, omit=omit)
    assert status == expected
    if expected == 426:
        assert response_headers["sec-websocket-version"] == "13"
    assert_still_serving(srv)


def test_post_and_http10_handshakes_get_400(srv):
    with RawClient(srv.host, srv.port) as client:
        assert client.request("/echo", method="POST")[0] == 400
    assert_still_serving(srv)


def test_too_many_or_too_large_headers_get_431(srv):
    with override_settings(WEBSOCKET_MAX_HEADERS=20, WEBSOCKET_MAX_HEADER_SIZE=2000):
        with RawClient(srv.host, srv.port) as client:
            many = {f"X-Filler-{i}": "x" for i in range(30)}
            assert client.request("/echo", many)[0] == 431
        with RawClient(srv.host, srv.port) as client:
            assert client.request("/echo", {"X-Big": "x" * 3000})[0] == 431
    assert_still_serving(srv)


def test_slowloris_handshake_is_dropped(srv):
    with override_settings(WEBSOCKET_HANDSHAKE_TIMEOUT=0.5):
        with RawClient(srv.host, srv.port) as client:
            client.send_raw(b"GET /echo HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never finished
            started = time.monotonic()
            assert client.at_eof(timeout=5)
            assert time.monotonic() - started < 3
    assert_still_serving(srv)


def test_connection_cap_gives_503(srv):
    with override_settings(WEBSOCKET_MAX_CONNECTIONS=2):
        with connect(srv.url + "/echo") as a, connect(srv.url + "/echo") as b:
            a.send("a")
            b.send("b")
            assert (a.recv(timeout=TIMEOUT), b.recv(timeout=TIMEOUT)) == ("a", "b")
            with pytest.raises(InvalidStatus) as info:
                connect(srv.url + "/echo", open_timeout=TIMEOUT)
            assert info.value.response.status_code == 503
        deadline = time.monotonic() + TIMEOUT
        while websocket_module.open_connections() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert_still_serving(srv)


# --- frame limits -------------------------------------------------------------------------------


def test_two_mib_message_closes_with_1009_by_default(srv):
    with connect(srv.url + "/echo", max_size=None) as ws:
        ws.send("x" * (2 * 2**20))
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=TIMEOUT)
    assert info.value.rcvd.code == 1009
    assert_still_serving(srv)


def test_max_frame_size(srv):
    with override_settings(WEBSOCKET_MAX_FRAME_SIZE=100):
        with RawClient(srv.host, srv.port) as client:
            assert client.request("/echo")[0] == 101
            client.send_frame(1, "x" * 100)
            assert client.recv_frame()[2] == b"x" * 100
            client.send_frame(1, "x" * 101)
            assert client.recv_close()[0] == 1009


def test_decompression_bomb_closes_with_1009(srv):
    import zlib

    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    bomb = compressor.compress(b"\0" * (64 * 2**20)) + compressor.flush(zlib.Z_SYNC_FLUSH)
    bomb = bomb[:-4]  # RFC 7692 §7.2.1
    assert len(bomb) < 100_000
    with RawClient(srv.host, srv.port) as client:
        status, headers, _ = client.request("/echo", {"Sec-WebSocket-Extensions": "permessage-deflate"})
        assert status == 101 and headers["sec-websocket-extensions"].startswith("permessage-deflate")
        client.send_frame(2, bomb, rsv=4)
        assert client.recv_close()[0] == 1009
    assert_still_serving(srv)


@pytest.mark.parametrize(
    "frame, code",
    [
        (RawClient.frame(1, b"unmasked", mask=False), 1002),
        (RawClient.frame(3, b"reserved opcode"), 1002),
        (RawClient.frame(1, b"rsv2", rsv=2), 1002),
        (RawClient.frame(9, b"x" * 126), 1002),
        (RawClient.frame(9, b"fragmented ping", fin=False), 1002),
        (RawClient.frame(0, b"orphan continuation"), 1002),
        (RawClient.frame(1, b"\xff\xfe invalid"), 1007),
        (RawClient.frame(8, b"\x03"), 1002),
        (RawClient.frame(8, b"\x03\xed"), 1002),  # 1005 may not be sent
        (RawClient.frame(8, b"\x03\xe8\xff"), 1002),  # reason not UTF-8
    ],
    ids=[
        "unmasked",
        "reserved-opcode",
        "rsv2",
        "long-ping",
        "fragmented-ping",
        "orphan-continuation",
        "invalid-utf8",
        "one-byte-close",
        "close-1005",
        "close-reason-not-utf8",
    ],
)
def test_bad_frames_get_their_close_code(srv, frame, code):
    with RawClient(srv.host, srv.port) as client:
        assert client.request("/echo")[0] == 101
        client.send_raw(frame)
        assert client.recv_close()[0] == code
        assert client.at_eof()
    assert_still_serving(srv)


def test_new_data_frame_inside_fragmented_message(srv):
    with RawClient(srv.host, srv.port) as client:
        assert client.request("/echo")[0] == 101
        client.send_frame(1, "start", fin=False)
        client.send_frame(9, "interleaved ping is fine")
        assert client.recv_frame() == (True, 10, b"interleaved ping is fine")
        client.send_frame(1, "a new message", fin=True)
        assert client.recv_close()[0] == 1002


def test_close_reason_is_cut_to_123_bytes(srv):
    # /server-close-long closes with a 200-character reason of 2-byte characters.
    with RawClient(srv.host, srv.port) as client:
        assert client.request("/server-close-long")[0] == 101
        code, reason = client.recv_close()
    assert code == 4000
    assert len(reason.encode()) <= 123 and reason == "é" * 61


# --- liveness --------------------------------------------------------------------------------------


def test_keepalive_pings_and_fails_a_silent_peer_with_1011(srv):
    with override_settings(WEBSOCKET_PING_INTERVAL=0.3, WEBSOCKET_PING_TIMEOUT=0.5):
        with RawClient(srv.host, srv.port) as client:
            assert client.request("/echo")[0] == 101
            started = time.monotonic()
            fin, opcode, payload = client.recv_frame()
            assert opcode == 9  # a ping, which this client never answers
            assert client.recv_close()[0] == 1011
            assert client.at_eof()
            assert time.monotonic() - started < 4
    assert_still_serving(srv)


def test_keepalive_keeps_an_answering_peer(srv):
    with override_settings(WEBSOCKET_PING_INTERVAL=0.2, WEBSOCKET_PING_TIMEOUT=0.4):
        # The websockets client answers pings by itself, while the view waits for messages.
        with connect(srv.url + "/echo") as ws:
            time.sleep(1.5)
            ws.send("alive")
            assert ws.recv(timeout=TIMEOUT) == "alive"


def test_peer_that_never_answers_our_close_is_cut(srv):
    with override_settings(WEBSOCKET_CLOSE_TIMEOUT=0.5, WEBSOCKET_PING_INTERVAL=None):
        with RawClient(srv.host, srv.port) as client:
            assert client.request("/server-close")[0] == 101
            assert client.recv_frame()[2] == b"bye"
            assert client.recv_close() == (4001, "done here")
            started = time.monotonic()
            assert client.at_eof(timeout=5)  # we never answer the close
            assert time.monotonic() - started < 3


def test_stalled_reader_is_cut_by_the_send_timeout(srv):
    with override_settings(WEBSOCKET_SEND_TIMEOUT=0.5, WEBSOCKET_PING_INTERVAL=None):
        with RawClient(srv.host, srv.port) as client:
            client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            assert client.request("/flood")[0] == 101
            # Never read: the server's sends block, time out, and the connection is closed.
            deadline = time.monotonic() + TIMEOUT
            while time.monotonic() < deadline:
                if websocket_module.open_connections() == 0 and "flood-ended" in _events():
                    break
                time.sleep(0.1)
            assert "flood-ended" in _events()
    assert_still_serving(srv)


def _events():
    from tests import views

    return views.EVENTS


# --- shutdown ----------------------------------------------------------------------------------------


def test_new_handshakes_during_shutdown_get_503(srv):
    try:
        websocket_module.close_all(timeout=1)
        with pytest.raises(InvalidStatus) as info:
            connect(srv.url + "/echo", open_timeout=TIMEOUT)
        assert info.value.response.status_code == 503
    finally:
        websocket_module._shutting_down.clear()
    assert_still_serving(srv)


def test_sigterm_closes_every_client_with_1001_and_exits():
    server = runserver()
    try:
        stack = contextlib.ExitStack()
        clients = [stack.enter_context(connect(server.url + "/echo", open_timeout=TIMEOUT)) for _ in range(5)]
        for ws in clients:
            ws.send("hi")
            assert ws.recv(timeout=TIMEOUT) == "hi"
        codes = []

        def wait_close(ws):
            try:
                ws.recv(timeout=TIMEOUT)
            except ConnectionClosed as exc:
                codes.append(exc.rcvd.code if exc.rcvd else None)

        threads = [threading.Thread(target=wait_close, args=(ws,)) for ws in clients]
        for t in threads:
            t.start()
        started = time.monotonic()
        os.kill(server.proc.pid, signal.SIGTERM)
        for t in threads:
            t.join(TIMEOUT)
        assert codes == [1001] * 5
        server.proc.wait(TIMEOUT)
        assert time.monotonic() - started < 6
        output = server.output()
        assert "Traceback" not in output, output
        stack.close()
    finally:
        server.stop()
