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


def test_cross_origin_handshake_gets_403_and_a_log_line(srv, caplog):
    with caplog.at_level(logging.WARNING, logger="django_websocket"):
        with pytest.raises(InvalidStatus) as info:
            connect(srv.url + "/echo", origin="http://evil.example", open_timeout=TIMEOUT)
    assert info.value.response.status_code == 403
    assert any("evil.example" in r.getMessage() and "ALLOWED_HOSTS" in r.getMessage() for r in caplog.records)
    assert_still_serving(srv)


@pytest.mark.parametrize("origin", ["null", "", "garbage", "http://exa mple.com", "http://127.0.0.1/path", "ftp://127.0.0.1"])
def test_malformed_or_opaque_origins_are_refused_without_crashing(srv, origin):
    with RawClient(srv.host, srv.port) as client:
        status, _, body = client.request("/echo", {"Origin": origin})
    assert status == 403, body
    assert_still_serving(srv)


def test_same_host_origin_and_missing_origin_are_accepted(srv):
    with connect(srv.url + "/echo", origin=f"http://127.0.0.1:{srv.port}", open_timeout=TIMEOUT) as ws:
        ws.send("same origin")
        assert ws.recv(timeout=TIMEOUT) == "same origin"
    with RawClient(srv.host, srv.port) as client:
        assert client.request("/echo")[0] == 101  # no Origin header at all


def test_missing_origin_refused_when_required(srv):
    with override_settings(WEBSOCKET_REQUIRE_ORIGIN=True):
        with RawClient(srv.host, srv.port) as client:
            assert client.request("/echo")[0] == 403


def test_allowed_origins_setting_and_per_view_override(srv):
    with override_settings(WEBSOCKET_ALLOWED_ORIGINS=["https://*.example.com"]):
        with RawClient(srv.host, srv.port) as client:
            assert client.request("/echo", {"Origin": "https://app.example.com"})[0] == 101
        with RawClient(srv.host, srv.port) as client:
            assert client.request("/echo", {"Origin": "http://app.example.com"})[0] == 403
    # /public is decorated with allowed_origins=["*"].
    with RawClient(srv.host, srv.port) as client:
        assert client.request("/public", {"Origin": "https://anywhere.example"})[0] == 101


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
