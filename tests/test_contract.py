"""The behaviour every server path must give, checked over real sockets with independent clients.

Parametrised by ``server`` (see tests/servers.py): the same module runs against each path.
"""

import json
import threading
import time
import urllib.error
import urllib.request

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tests.rawclient import RawClient

TIMEOUT = 10


def ws_connect(server, path, **kwargs):
    kwargs.setdefault("open_timeout", TIMEOUT)
    kwargs.setdefault("close_timeout", TIMEOUT)
    kwargs.setdefault("max_size", 2**24)
    return connect(server.url + path, **kwargs)


def probe(ws, op, **params):
    ws.send(json.dumps({"op": op, **params}))
    return json.loads(ws.recv(timeout=TIMEOUT))


def http_get(server, path):
    try:
        with urllib.request.urlopen(server.http_url + path, timeout=TIMEOUT) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


# --- echo ------------------------------------------------------------------------------------


def test_echo_text_non_ascii_and_binary(server):
    with ws_connect(server, "/echo") as ws:
        ws.send("hello")
        assert ws.recv(timeout=TIMEOUT) == "hello"
        ws.send("héllo wörld ✓ 🎉")
        assert ws.recv(timeout=TIMEOUT) == "héllo wörld ✓ 🎉"
        ws.send(b"\x00\x01\xfe\xff")
        assert ws.recv(timeout=TIMEOUT) == b"\x00\x01\xfe\xff"
        ws.send("")
        assert ws.recv(timeout=TIMEOUT) == ""


def test_echo_without_compression(server):
    with ws_connect(server, "/echo", compression=None) as ws:
        ws.send("plain")
        assert ws.recv(timeout=TIMEOUT) == "plain"


def test_two_hundred_messages_in_order(server):
    with ws_connect(server, "/echo") as ws:
        for i in range(200):
            ws.send(f"message {i}")
        assert [ws.recv(timeout=TIMEOUT) for _ in range(200)] == [f"message {i}" for i in range(200)]


def test_large_message(server):
    payload = "x" * 500_000
    with ws_connect(server, "/echo") as ws:
        ws.send(payload)
        assert ws.recv(timeout=TIMEOUT) == payload
        data = bytes(range(256)) * 4000
        ws.send(data)
        assert ws.recv(timeout=TIMEOUT) == data


def test_fragmented_message(server):
    with ws_connect(server, "/echo") as ws:
        ws.send(["frag", "mented ", "tëxt"])
        assert ws.recv(timeout=TIMEOUT) == "fragmented tëxt"
        ws.send([b"\x01", b"\x02", b"\x03"])
        assert ws.recv(timeout=TIMEOUT) == b"\x01\x02\x03"


def test_close_handshake_echoes_1000(server):
    with ws_connect(server, "/echo") as ws:
        ws.send("x")
        ws.recv(timeout=TIMEOUT)
        ws.close(1000)
    assert ws.protocol.close_rcvd is not None
    assert ws.protocol.close_rcvd.code == 1000


def test_twenty_concurrent_connections(server):
    errors = []

    def client(n):
        try:
            with ws_connect(server, "/echo") as ws:
                for i in range(20):
                    ws.send(f"{n}:{i}")
                    assert ws.recv(timeout=TIMEOUT) == f"{n}:{i}"
        except Exception as exc:  # collected and reported below
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors


def test_ping_answered_with_same_payload(server):
    with ws_connect(server, "/echo") as ws:
        pong = ws.ping(b"are you there")
        assert pong.wait(TIMEOUT)


# --- decorators and views -----------------------------------------------------------------------


def test_accept_websocket_serves_plain_http_and_websocket(server):
    assert http_get(server, "/accept") == (200, "plain http")
    with ws_connect(server, "/accept") as ws:
        ws.send("both")
        assert ws.recv(timeout=TIMEOUT) == "both"


def test_require_websocket_refuses_plain_http_with_400(server):
    status, _ = http_get(server, "/echo")
    assert status == 400


def assert_refused(server, path, status, **kwargs):
    """The handshake to ``path`` (``kwargs`` for the client) is refused with HTTP ``status``.

    An ASGI server without the ``websocket.http.response`` extension answers every refusal with
    its own 403. Except on servers that upgrade before Django runs (gevent-websocket's handler): the ``101`` is
    already sent, so the refusal is a close frame 1008 whose reason is the status line.
    """
    if server.upgrades_before_django:
        with ws_connect(server, path, **kwargs) as ws:
            with pytest.raises(ConnectionClosed) as info:
                ws.recv(timeout=TIMEOUT)
        assert info.value.rcvd.code == 1008
        assert info.value.rcvd.reason.split()[0] == str(status)
    else:
        with pytest.raises(InvalidStatus) as info:
            ws_connect(server, path, **kwargs)
        # An ASGI server without the websocket.http.response extension can only answer 403.
        assert info.value.response.status_code == (status if server.http_response else 403)


def test_undecorated_view_refuses_websocket_with_400(server):
    assert_refused(server, "/plain", 400)
    assert http_get(server, "/plain") == (200, "plain view, is_websocket=False")


def test_class_based_view_with_method_decorator(server):
    assert http_get(server, "/cbv") == (200, "class-based, plain http")
    with ws_connect(server, "/cbv") as ws:
        ws.send("cbv")
        assert ws.recv(timeout=TIMEOUT) == "cbv"


def test_view_can_refuse_with_http_before_upgrade(server):
    assert_refused(server, "/refuse", 403)
    with ws_connect(server, "/refuse?token=secret") as ws:
        assert ws.recv(timeout=TIMEOUT) == "welcome"


def test_only_the_sites_own_origin_is_accepted_by_default(server):
    # The own origin is built from the Host and scheme each server puts in the WSGI environ
    # (RFC 6455 §10.2; the port is part of the origin, RFC 6454 §5).
    with ws_connect(server, "/echo", origin=f"http://127.0.0.1:{server.port}") as ws:
        ws.send("own origin")
        assert ws.recv(timeout=TIMEOUT) == "own origin"
    assert_refused(server, "/echo", 403, origin="http://evil.example")
    assert_refused(server, "/echo", 403, origin=f"http://127.0.0.1:{server.port + 1}")
    assert_refused(server, "/echo", 403, origin=f"https://127.0.0.1:{server.port}")


def test_subprotocol_chosen_by_server_preference(server):
    if server.upgrades_before_django:
        # gevent-websocket's 101 named no subprotocol; the view is told so, not what it prefers.
        with ws_connect(server, "/subprotocol", subprotocols=["chat.v1", "chat.v2"]) as ws:
            assert ws.subprotocol is None
            assert ws.recv(timeout=TIMEOUT) == ""
        return
    with ws_connect(server, "/subprotocol", subprotocols=["chat.v1", "chat.v2"]) as ws:
        assert ws.subprotocol == "chat.v2"
        assert ws.recv(timeout=TIMEOUT) == "chat.v2"
    with ws_connect(server, "/subprotocol", subprotocols=["chat.v1"]) as ws:
        assert ws.subprotocol == "chat.v1"


def test_no_subprotocol_header_when_none_chosen(server):
    with RawClient(server.host, server.port) as client:
        status, headers, _ = client.request("/subprotocol", {"Sec-WebSocket-Protocol": "other"})
        assert status == 101
        assert "sec-websocket-protocol" not in headers
        assert client.recv_frame()[2] == b""


def test_view_exception_closes_with_1011(server):
    with ws_connect(server, "/crash") as ws:
        assert ws.recv(timeout=TIMEOUT) == "about to fail"
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=TIMEOUT)
    assert info.value.rcvd.code == 1011


def test_frames_sent_right_behind_the_handshake_are_kept(server):
    # A client that does not wait for the 101 (or a gevent-websocket server, which sends its 101
    # before Django runs) leaves frames in the server's buffered reader, behind the request: the
    # WebSocket must get them first.
    with RawClient(server.host, server.port) as client:
        request = (
            b"GET /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        client.send_raw(request + RawClient.frame(1, "early one") + RawClient.frame(1, "early two"))
        assert client.read_response()[0] == 101
        assert client.recv_frame() == (True, 1, b"early one")
        assert client.recv_frame() == (True, 1, b"early two")
        client.send_frame(1, "after")
        assert client.recv_frame() == (True, 1, b"after")


def test_view_return_value_is_not_written_after_upgrade(server):
    with RawClient(server.host, server.port) as client:
        status, _, _ = client.request("/returns-value")
        assert status == 101
        assert client.recv_frame() == (True, 1, b"hello")
        assert client.recv_close() == (1000, "")
        client.send_frame(8, b"\x03\xe8")
        # Nothing but the close frame: no HTTP response bytes after the frames.
        assert client.at_eof()
        assert client.buf == b""


def test_server_initiated_close_with_code_and_reason(server):
    with RawClient(server.host, server.port) as client:
        assert client.request("/server-close")[0] == 101
        assert client.recv_frame() == (True, 1, b"bye")
        assert client.recv_close() == (4001, "done here")
        client.send_frame(8, b"\x0f\xa1")
        assert client.at_eof()


def test_message_size_limit_per_view(server):
    with ws_connect(server, "/small") as ws:
        ws.send("x" * 1000)
        assert ws.recv(timeout=TIMEOUT) == "x" * 1000
        ws.send("x" * 1001)
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=TIMEOUT)
    assert info.value.rcvd.code == 1009


# --- the request.websocket API ---------------------------------------------------------------


def test_wait_with_timeout_returns_none_while_open(server):
    with ws_connect(server, "/probe") as ws:
        answer = probe(ws, "wait", timeout=0.2)
        assert answer == {"result": None, "closed": False, "is_closed": False}


def test_has_messages_count_and_read_fallback(server):
    with ws_connect(server, "/probe") as ws:
        assert probe(ws, "has_messages")["result"] is False
        assert probe(ws, "count_messages")["result"] == 0
        assert probe(ws, "read", fallback="nothing")["result"] == "nothing"
        # The view sleeps, so that both messages below are in the socket when it counts them.
        steps = ["count_messages", "read", "has_messages", "count_messages", "read", "has_messages"]
        ws.send(json.dumps({"op": "batch", "sleep": 0.3, "steps": [{"op": step} for step in steps]}))
        ws.send("first")
        ws.send(b"second")
        answer = json.loads(ws.recv(timeout=TIMEOUT))
        assert answer["result"] == [2, "first", True, 1, {"bytes": b"second".hex()}, False]
        assert answer["closed"] is False


def test_wait_returns_messages_then_none_once_closed(server):
    with RawClient(server.host, server.port) as client:
        assert client.request("/probe")[0] == 101
        steps = [{"op": "wait"}, {"op": "wait"}, {"op": "wait", "timeout": 0.1}, {"op": "read", "fallback": "fb"}]
        client.send_frame(1, json.dumps({"op": "batch", "id": "after-close", "sleep": 0.3, "steps": steps}))
        client.send_frame(1, "queued")
        client.send_frame(8, b"\x03\xe8")
        # The server replies to the close with 1000 and ends the connection; the view's answer
        # comes too late to be sent, which is not an error.
        assert client.recv_close() == (1000, "")
        assert client.at_eof()
    deadline = time.monotonic() + TIMEOUT
    while http_get(server, "/last-results")[1].find("after-close") < 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    results = json.loads(http_get(server, "/last-results")[1])
    # The queued message first, then None (closed), also with a timeout; read gives the fallback.
    assert results == {"id": "after-close", "result": ["queued", None, None, "fb"], "closed": True}


def test_request_finished_fires_when_view_ends(server):
    import os
    import uuid

    name = uuid.uuid4().hex
    path = os.path.join(server.state_dir, "probe-finished")
    with ws_connect(server, f"/finished-probe?name={name}") as ws:
        ws.send("x")
        ws.recv(timeout=TIMEOUT)
    # The view's thread records its name when request_finished fires there, after the view ended.
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        if os.path.exists(path) and name in open(path).read().split():
            break
        time.sleep(0.05)
    assert os.path.exists(path) and name in open(path).read().split()


# --- clients that misbehave or vanish ----------------------------------------------------------


def test_client_vanishing_mid_frame_leaves_server_serving(server):
    with RawClient(server.host, server.port) as client:
        assert client.request("/echo")[0] == 101
        # A header announcing 1000 bytes, then only part of them, then gone.
        client.send_raw(RawClient.frame(1, b"a" * 1000)[:300])
    with RawClient(server.host, server.port) as client:
        assert client.request("/echo")[0] == 101
        client.send_raw(b"\x81")  # half a header
    with ws_connect(server, "/echo") as ws:
        ws.send("still here")
        assert ws.recv(timeout=TIMEOUT) == "still here"


def test_no_traceback_in_server_output_for_vanished_clients(server):
    for _ in range(5):
        with RawClient(server.host, server.port) as client:
            client.request("/echo")
            client.send_raw(RawClient.frame(1, b"hello"))
    with ws_connect(server, "/echo") as ws:
        ws.send("ok")
        assert ws.recv(timeout=TIMEOUT) == "ok"
    time.sleep(0.3)
    output = server.output()
    # The /crash tests (of this module and, on the ASGI servers the two modules share, of
    # tests/test_contract_async.py) legitimately log their RuntimeError; nothing else may.
    tracebacks = [
        block
        for block in output.split("Traceback")[1:]
        if "boom in a WebSocket view" not in block and "boom in an async WebSocket view" not in block
    ]
    assert not tracebacks, output
