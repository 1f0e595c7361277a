"""The contract of tests/test_contract.py for ``async def`` views, on each ASGI server.

The views (tests/async_views.py) run on the server's event loop with an AsyncWebSocket. Tests
named as in tests/test_contract.py check the same thing, and a server's own limits
(tests/servers.py's SERVER_LIMITS) mark them the same way.
"""

import json
import time
import urllib.request
import uuid

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.rawclient import RawClient
from tests.servers import ASGI_SERVERS
from tests.test_contract import TIMEOUT, http_get, ws_connect
from tests.test_groups import LEGACY

pytestmark = pytest.mark.parametrize("server", sorted(ASGI_SERVERS), indirect=True)


def probe(ws, op, **params):
    ws.send(json.dumps({"op": op, **params}))
    return json.loads(ws.recv(timeout=TIMEOUT))


def recorded(server, name):
    """What a view recorded once its connection was over (tests/async_views.py's record)."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        status, body = http_get(server, f"/async/record?name={name}")
        if status == 200:
            return json.loads(body)
        if time.monotonic() > deadline:
            raise AssertionError(f"the view recorded nothing for {name} within {TIMEOUT}s:\n{server.output()[-3000:]}")
        time.sleep(0.05)


# --- echo ------------------------------------------------------------------------------------


def test_echo_text_non_ascii_and_binary(server):
    with ws_connect(server, "/async/echo") as ws:
        ws.send("hello")
        assert ws.recv(timeout=TIMEOUT) == "hello"
        ws.send("héllo wörld ✓ 🎉")
        assert ws.recv(timeout=TIMEOUT) == "héllo wörld ✓ 🎉"
        ws.send(b"\x00\x01\xfe\xff")
        assert ws.recv(timeout=TIMEOUT) == b"\x00\x01\xfe\xff"
        ws.send("")
        assert ws.recv(timeout=TIMEOUT) == ""


def test_two_hundred_messages_in_order(server):
    with ws_connect(server, "/async/echo") as ws:
        for i in range(200):
            ws.send(f"message {i}" if i % 2 else f"message {i}".encode())
        expected = [f"message {i}" if i % 2 else f"message {i}".encode() for i in range(200)]
        assert [ws.recv(timeout=TIMEOUT) for _ in range(200)] == expected


def test_large_message(server):
    payload = "x" * 500_000
    with ws_connect(server, "/async/echo") as ws:
        ws.send(payload)
        assert ws.recv(timeout=TIMEOUT) == payload
        data = bytes(range(256)) * 2000
        ws.send(data)
        assert ws.recv(timeout=TIMEOUT) == data


def test_fragmented_message(server):
    with ws_connect(server, "/async/echo") as ws:
        ws.send(["frag", "mented ", "tëxt"])
        assert ws.recv(timeout=TIMEOUT) == "fragmented tëxt"
        ws.send([b"\x01", b"\x02", b"\x03"])
        assert ws.recv(timeout=TIMEOUT) == b"\x01\x02\x03"


# --- closing, both ways ------------------------------------------------------------------------


def test_close_handshake_echoes_1000(server):
    with ws_connect(server, "/async/echo") as ws:
        ws.send("x")
        ws.recv(timeout=TIMEOUT)
        ws.close(1000)
    assert ws.protocol.close_rcvd is not None
    assert ws.protocol.close_rcvd.code == 1000


def test_server_initiated_close_with_code_and_reason(server):
    with RawClient(server.host, server.port) as client:
        assert client.request("/async/server-close")[0] == 101
        assert client.recv_frame() == (True, 1, b"bye")
        assert client.recv_close() == (4001, "done here")
        client.send_frame(8, b"\x0f\xa1")
        assert client.at_eof()


def test_client_close_code_and_reason_reach_the_view(server):
    name = uuid.uuid4().hex
    with ws_connect(server, f"/async/client-close?name={name}") as ws:
        assert ws.recv(timeout=TIMEOUT) == "ready"
        ws.close(4002, "client says bye")
    assert recorded(server, name) == {"code": 4002, "reason": "client says bye", "closed": True}


def test_view_exception_closes_with_1011(server):
    with ws_connect(server, "/async/crash") as ws:
        assert ws.recv(timeout=TIMEOUT) == "about to fail"
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=TIMEOUT)
    assert info.value.rcvd.code == 1011


def test_message_size_limit_per_view(server):
    with ws_connect(server, "/async/small") as ws:
        ws.send("x" * 1000)
        assert ws.recv(timeout=TIMEOUT) == "x" * 1000
        ws.send("x" * 1001)
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=TIMEOUT)
    assert info.value.rcvd.code == 1009


# --- the handshake --------------------------------------------------------------------------------


def test_subprotocol_chosen_by_server_preference(server):
    with ws_connect(server, "/async/subprotocol", subprotocols=["chat.v1", "chat.v2"]) as ws:
        assert ws.subprotocol == "chat.v2"
        assert ws.recv(timeout=TIMEOUT) == "chat.v2"
    with ws_connect(server, "/async/subprotocol?choose=chat.v1", subprotocols=["chat.v1", "chat.v2"]) as ws:
        assert ws.subprotocol == "chat.v1"
        assert ws.recv(timeout=TIMEOUT) == "chat.v1"


def test_view_can_refuse_with_http_before_upgrade(server):
    with pytest.raises(InvalidStatus) as info:
        ws_connect(server, "/async/refuse")
    response = info.value.response
    if server.http_response:
        # The view's own response, status and body, through websocket.http.response.
        assert (response.status_code, response.body) == (403, b"bad token")
    else:
        assert response.status_code == 403
    with ws_connect(server, "/async/refuse?token=secret") as ws:
        assert ws.recv(timeout=TIMEOUT) == "welcome"


def test_require_websocket_refuses_plain_http_with_400(server):
    assert http_get(server, "/async/echo")[0] == 400


# --- the AsyncWebSocket API --------------------------------------------------------------------


def test_wait_with_timeout_returns_none_while_open(server):
    with ws_connect(server, "/async/probe") as ws:
        started = time.monotonic()
        assert probe(ws, "wait", timeout=0.3) == {"result": None, "closed": False}
        assert time.monotonic() - started >= 0.3
        # A message that arrives within the timeout is returned at once.
        ws.send(json.dumps({"op": "batch", "steps": [{"op": "wait", "timeout": 5}]}))
        ws.send("in time")
        assert json.loads(ws.recv(timeout=TIMEOUT)) == {"result": ["in time"], "closed": False}


def test_has_messages_count_and_read_fallback(server):
    with ws_connect(server, "/async/probe") as ws:
        assert probe(ws, "has_messages")["result"] is False
        assert probe(ws, "count_messages")["result"] == 0
        assert probe(ws, "read", fallback="nothing")["result"] == "nothing"
        steps = ["count_messages", "read", "has_messages", "count_messages", "read", "has_messages"]
        ws.send(json.dumps({"op": "batch", "sleep": 0.3, "steps": [{"op": step} for step in steps]}))
        ws.send("first")
        ws.send(b"second")
        answer = json.loads(ws.recv(timeout=TIMEOUT))
        assert answer["result"] == [2, "first", True, 1, {"bytes": b"second".hex()}, False]
        assert answer["closed"] is False


def test_wait_returns_messages_then_none_once_closed(server):
    name = uuid.uuid4().hex
    with RawClient(server.host, server.port) as client:
        assert client.request("/async/probe")[0] == 101
        steps = [{"op": "wait"}, {"op": "wait"}, {"op": "wait", "timeout": 0.1}, {"op": "read", "fallback": "fb"}]
        client.send_frame(1, json.dumps({"op": "batch", "id": name, "sleep": 0.3, "steps": steps}))
        client.send_frame(1, "queued")
        client.send_frame(8, b"\x03\xe8")
        assert client.recv_close() == (1000, "")
        assert client.at_eof()
    assert recorded(server, name) == {"result": ["queued", None, None, "fb"], "closed": True}


def test_async_for_ends_when_the_client_closes(server):
    name = uuid.uuid4().hex
    with ws_connect(server, f"/async/client-close?name={name}") as ws:
        assert ws.recv(timeout=TIMEOUT) == "ready"
        for i in range(5):
            ws.send(f"drained {i}")
    assert recorded(server, name) == {"code": 1000, "reason": "", "closed": True}


# --- groups -------------------------------------------------------------------------------------


def member(server, group):
    ws = ws_connect(server, f"/async/groups/member?join={group}", **LEGACY)
    hello = json.loads(ws.recv(timeout=TIMEOUT))
    assert hello["joined"] == group
    return ws, hello["pid"]


def test_group_messages_reach_an_async_member(server):
    group = f"async-{uuid.uuid4().hex}"
    ws, pid = member(server, group)
    with ws:
        # From the view itself (the loop hands the send to a thread) and from a thread of its own.
        ws.send(json.dumps({"send": group, "message": "from the loop"}))
        assert ws.recv(timeout=TIMEOUT) == "from the loop"
        ws.send(json.dumps({"thread_send": group, "message": "from a thread"}))
        assert ws.recv(timeout=TIMEOUT) == "from a thread"
        # From a plain HTTP view: with the in-memory backend a group reaches the sockets of its
        # own process, so the request is repeated until a worker of the member's process answers.
        for attempt in range(40):
            with urllib.request.urlopen(
                f"{server.http_url}/async/groups/send?group={group}&message=http-{attempt}", timeout=TIMEOUT
            ) as response:
                if int(response.read()) == pid:
                    break
        else:
            pytest.fail(f"no request reached the member's process {pid} in 40 tries")
        assert ws.recv(timeout=TIMEOUT) == f"http-{attempt}"


def test_many_threads_sending_to_an_async_member_keep_every_message(server):
    group = f"async-{uuid.uuid4().hex}"
    ws, _ = member(server, group)
    with ws:
        for n in range(4):
            ws.send(json.dumps({"thread_send": group, "message": f"t{n}"}))
        ws.send(json.dumps({"send": group, "message": "last"}))
        received = [ws.recv(timeout=TIMEOUT) for _ in range(5)]
    assert sorted(received) == ["last", "t0", "t1", "t2", "t3"]


# --- clients that vanish ------------------------------------------------------------------------


def test_client_vanishing_ends_the_view_without_a_traceback(server):
    name = uuid.uuid4().hex
    with RawClient(server.host, server.port) as client:
        assert client.request(f"/async/vanish?name={name}")[0] == 101
        client.send_frame(1, "hello")
        assert client.recv_frame() == (True, 1, b"hello")
        client.send_raw(RawClient.frame(1, b"a" * 1000)[:300])  # half a frame, then gone
    # The code is the one the server gives in websocket.disconnect: 1006 on most, 1005 ("no
    # status") on uvicorn's wsproto implementation, for the same vanished client.
    ending = recorded(server, name)
    assert ending["closed"] is True and ending["code"] in (1005, 1006), ending
    with ws_connect(server, "/async/echo") as ws:
        ws.send("still here")
        assert ws.recv(timeout=TIMEOUT) == "still here"
    time.sleep(0.3)
    output = server.output()
    tracebacks = [
        block
        for block in output.split("Traceback")[1:]
        if "boom in an async WebSocket view" not in block and "boom in a WebSocket view" not in block
    ]
    assert not tracebacks, output
