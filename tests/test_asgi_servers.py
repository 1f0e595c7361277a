"""The ASGI servers themselves: what each does on its own, told apart from what our bridge does.

Two kinds of checks, over real sockets against each server started as its deployment page says
(tests/servers.py):

* each contract failure listed in ``SERVER_LIMITS`` (tests/servers.py), checked the same way
  against the bare ASGI echo application (compliance/asgi_echo.py: no Django, no code of ours)
  on that server: it must fail there too, the same way, or the failure is ours to fix;
* what each server does where the ASGI interface leaves it to the server, measured per server
  and written in its deployment page: refusals before the accept, message limits (ours and the
  server's), keepalive pings, compression, the close code clients get on SIGTERM.
"""

import json
import os
import signal
import struct
import time
import urllib.parse
import uuid

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.rawclient import RawClient
from tests.servers import ASGI_SERVERS, BARE_APP, SERVER_LIMITS
from tests.test_groups import LEGACY

TIMEOUT = 10
# Long enough for a frame a server would echo at once, short enough for the negative checks.
QUIET = 2.0


def ws_connect(server, path, **kwargs):
    kwargs.setdefault("open_timeout", TIMEOUT)
    kwargs.setdefault("close_timeout", TIMEOUT)
    kwargs.setdefault("max_size", 2**25)
    return connect(server.url + path, **kwargs)


def started(name, **kwargs):
    """The server ``name`` started as documented, answering WebSocket handshakes (a server's
    workers may still be booting when its port listens)."""
    server = ASGI_SERVERS[name](**kwargs)
    deadline = time.monotonic() + 20
    while True:
        try:
            with RawClient(server.host, server.port, timeout=2) as client:
                if client.request("/scope" if kwargs.get("app") == BARE_APP else "/echo")[0] == 101:
                    return server
        except OSError:
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise AssertionError(f"{name} answers no handshake:\n{server.output()}")
        time.sleep(0.2)


def assert_no_traceback(server):
    output = server.output()
    assert "Traceback" not in output, output


# --- the contract's failures, shown with the bare echo application --------------------------------


def early_frames(server):
    """The contract's test_frames_sent_right_behind_the_handshake_are_kept, on any echo path:
    (status, what came back for the two early frames, the echo of a frame sent after the 101)."""
    with RawClient(server.host, server.port) as client:
        request = (
            b"GET /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        client.send_raw(request + RawClient.frame(1, "early one") + RawClient.frame(1, "early two"))
        status = client.read_response()[0]
        if status != 101:
            return status, None, None
        try:
            early = client.recv_frame(timeout=QUIET)[2]
        except TimeoutError:
            early = None
        client.send_frame(1, "after")
        return status, early, client.recv_frame(timeout=TIMEOUT)[2]


def bare_close(server, code, reason=""):
    """Ask the bare application to close with ``code`` and ``reason``: ('closed', code, reason),
    or ('refused', the server's error) when the server's send() refused the close event."""
    query = urllib.parse.urlencode({"code": code, "reason": reason})
    with RawClient(server.host, server.port) as client:
        assert client.request(f"/close?{query}")[0] == 101
        assert client.recv_frame() == (True, 1, b"bye")
        fin, opcode, payload = client.recv_frame(timeout=TIMEOUT)
        if opcode == 1:
            return ("refused", payload.decode())
        assert opcode == 8, (opcode, payload)
        return ("closed", struct.unpack("!H", payload[:2])[0], payload[2:].decode())


def bare_empty_message_echoed(server):
    with ws_connect(server, "/echo") as ws:
        ws.send("")
        ws.send("next")
        return ws.recv(timeout=TIMEOUT) == ""


def _check_early_frames(server):
    status, early, after = early_frames(server)
    if server.name == "hypercorn":
        assert status == 400
    else:
        # The upgrade works and a frame sent after the 101 is echoed: only the early ones are lost.
        assert (status, early, after) == (101, None, b"after")


def _check_empty_message(server):
    assert not bare_empty_message_echoed(server)


def _check_close_code(server):
    for code in (1011, 1009, 1001, 1008):
        outcome = bare_close(server, code)
        assert outcome[0] == "refused" and f"invalid close code {code}" in outcome[1], outcome
    assert bare_close(server, 4001) == ("closed", 4001, "")


def _check_close_reason(server):
    assert bare_close(server, 4001, "done here") == ("closed", 4001, "")


def bare_disconnect(server, code, reason):
    """The websocket.disconnect event the bare application got (it prints it) once a client
    closed with ``code`` and ``reason``."""
    marker = f"asgi_echo: websocket.disconnect /echo?{uuid.uuid4().hex} "
    with ws_connect(server, marker.split()[-1]) as ws:
        ws.send("x")
        assert ws.recv(timeout=TIMEOUT) == "x"
        ws.close(code, reason)
    deadline = time.monotonic() + TIMEOUT
    while marker not in server.output():
        assert time.monotonic() < deadline, f"no websocket.disconnect within {TIMEOUT}s:\n{server.output()}"
        time.sleep(0.05)
    (line,) = [line for line in server.output().splitlines() if line.startswith(marker)]
    return json.loads(line[len(marker) :])


def _check_disconnect(server):
    event = bare_disconnect(server, 4002, "client says bye")
    if server.name == "hypercorn":
        assert event["code"] == 1006, event
        assert bare_disconnect(server, 1000, "")["code"] == 1006
    else:
        assert event["code"] == 4002 and not event.get("reason"), event


# Contract test -> the same check against the bare application.
BARE_CHECKS = {
    "test_frames_sent_right_behind_the_handshake_are_kept": _check_early_frames,
    "test_echo_text_non_ascii_and_binary": _check_empty_message,
    "test_no_subprotocol_header_when_none_chosen": _check_empty_message,
    "test_view_exception_closes_with_1011": _check_close_code,
    "test_message_size_limit_per_view": _check_close_code,
    "test_server_initiated_close_with_code_and_reason": _check_close_reason,
    "test_client_close_code_and_reason_reach_the_view": _check_disconnect,
    "test_async_for_ends_when_the_client_closes": _check_disconnect,
}
LIMITS = [(name, test) for name, tests in sorted(SERVER_LIMITS.items()) for test in sorted(tests)]


@pytest.fixture(scope="module", params=sorted(SERVER_LIMITS))
def bare_server(request):
    server = started(request.param, app=BARE_APP)
    yield server
    server.stop()


def test_every_limit_has_a_bare_check():
    assert {test for _, test in LIMITS} <= set(BARE_CHECKS)
    assert set(SERVER_LIMITS) <= set(ASGI_SERVERS)


def test_contract_failures_are_the_servers_own(bare_server):
    """Each contract test marked for this server fails the same way with no code of ours."""
    for test in sorted(SERVER_LIMITS[bare_server.name]):
        BARE_CHECKS[test](bare_server)
    # The bare application on a server without the limit passes the same checks: the checks
    # can tell (granian keeps early frames, uvicorn sends empty messages and any close code).
    assert_no_traceback(bare_server)


@pytest.mark.parametrize("name", ["granian", "uvicorn"])
def test_the_bare_checks_pass_where_the_server_has_no_such_limit(name):
    server = started(name, app=BARE_APP)
    try:
        if name == "granian":
            assert early_frames(server) == (101, b"early one", b"early two")
        assert bare_empty_message_echoed(server)
        assert bare_close(server, 1011) == ("closed", 1011, "")
        assert bare_close(server, 4001, "done here") == ("closed", 4001, "done here")
        if name == "uvicorn":
            assert bare_disconnect(server, 4002, "client says bye")["reason"] == "client says bye"
    finally:
        server.stop()


# --- what each server does itself, measured ------------------------------------------------------

SMALL = 4096  # a server limit below ours (WEBSOCKET_MAX_MESSAGE_SIZE, 1 MiB by default)


def _hypercorn_config(tmp_path):
    # hypercorn's message limit has no command-line option: a configuration file.
    path = tmp_path / "hypercorn.toml"
    path.write_text(f"websocket_max_message_size = {SMALL}\n")
    return ["--config", str(path), "--websocket-ping-interval", "1"]


# Per server: the options giving it a message limit below ours and keepalive pings every second
# (None where the server has no such setting), the close code the server itself sends for a
# message over its limit, whether it negotiates permessage-deflate, and the close code clients
# get on SIGTERM (None: the TCP connection is dropped without a close frame).
FACTS = {
    "uvicorn": {
        "options": ["--ws-max-size", str(SMALL), "--ws-ping-interval", "1"],
        "limit": 1009, "pings": True, "deflate": True, "shutdown": 1012,
    },
    "uvicorn-websockets": {
        "options": ["--ws-max-size", str(SMALL), "--ws-ping-interval", "1"],
        "limit": 1009, "pings": True, "deflate": True, "shutdown": 1012,
    },
    "uvicorn-wsproto": {
        "options": ["--ws-max-size", str(SMALL), "--ws-ping-interval", "1"],
        "limit": 1009, "pings": True, "deflate": True, "shutdown": 1012,
    },
    "daphne": {
        # Over its limit, daphne drops the TCP connection without a close frame.
        "options": ["--websocket-max-message-size", str(SMALL), "--ping-interval", "1"],
        "limit": "no close frame", "pings": True, "deflate": False, "shutdown": None,
    },
    "hypercorn": {"options": _hypercorn_config, "limit": 1009, "pings": True, "deflate": True, "shutdown": None},
    "granian": {"options": [], "limit": None, "pings": False, "deflate": False, "shutdown": None},
    "gunicorn-asgi": {
        # --graceful-timeout: the worker keeps its connections open that long after SIGTERM
        # (30 s by default), then drops them.
        "options": ["--websocket-max-message-size", str(SMALL), "--graceful-timeout", "2"],
        "limit": 1009, "pings": False, "deflate": False, "shutdown": None,
    },
}  # fmt: skip


def test_every_asgi_server_has_its_facts():
    assert set(FACTS) == set(ASGI_SERVERS)


def pings_within(server, seconds):
    """Whether the server pings an idle connection within ``seconds``."""
    with RawClient(server.host, server.port) as client:
        assert client.request("/echo")[0] == 101
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                fin, opcode, payload = client.recv_frame(timeout=max(0.05, deadline - time.monotonic()))
            except TimeoutError:
                return False
            if opcode == 9:
                return True
        return False


def close_code_for(server, size):
    """The close code a message of ``size`` bytes gets, or None if it is echoed."""
    with ws_connect(server, "/echo", compression=None) as ws:
        ws.send("x" * size)
        try:
            assert ws.recv(timeout=TIMEOUT) == "x" * size
            return None
        except ConnectionClosed as exc:
            return exc.rcvd.code if exc.rcvd else "no close frame"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", sorted(ASGI_SERVERS))
def test_what_the_server_does_itself(name, tmp_path):
    facts = FACTS[name]
    options = facts["options"](tmp_path) if callable(facts["options"]) else facts["options"]
    server = started(name, options=options)
    try:
        # Compression is the server's to negotiate (WEBSOCKET_COMPRESSION is not consulted).
        with ws_connect(server, "/echo") as ws:
            offered = ws.response.headers.get("Sec-WebSocket-Extensions") or ""
            assert ("permessage-deflate" in offered) is facts["deflate"], offered
            ws.send("echo")
            assert ws.recv(timeout=TIMEOUT) == "echo"
            # ASGI has no ping event: the view cannot ping, the server's keepalive does.
        assert pings_within(server, 3.0) is facts["pings"]
        # Our limit is 1 MiB: a message over the server's own limit gets the server's answer.
        if facts["limit"] is not None:
            assert close_code_for(server, SMALL - 100) is None
            assert close_code_for(server, SMALL + 100) == facts["limit"]
        # SIGTERM with two connections open.
        clients = [ws_connect(server, "/echo", **LEGACY) for _ in range(2)]
        for ws in clients:
            ws.send("before")
            assert ws.recv(timeout=TIMEOUT) == "before"
        os.killpg(server.proc.pid, signal.SIGTERM)
        for ws in clients:
            with pytest.raises(ConnectionClosed) as info:
                ws.recv(timeout=TIMEOUT)
            assert (info.value.rcvd.code if info.value.rcvd else None) == facts["shutdown"]
        server.proc.wait(TIMEOUT)
        assert_no_traceback(server)
    finally:
        server.stop()


# --- a valid message with a bad frame right behind it ---------------------------------------------


@pytest.mark.timeout(120)
def test_granian_gets_the_answer_out_before_it_reads_a_bad_frame():
    """Granian reads the client's frames only inside receive() and refuses every send() once that
    read met a bad frame: the reader lets the view's thread answer a message before it reads on
    (django_websocket.events), as the bare application answers before its next receive()."""
    server = started("granian")
    try:
        # The reader's wait is bounded (django_websocket.events._HANDLING_BOUND): on a machine
        # too loaded to schedule the view's thread within it, an answer can still come late.
        # Before the wait, about half the answers were lost; a few late ones are allowed.
        answers = []
        for _ in range(20):
            with RawClient(server.host, server.port) as client:
                assert client.request("/echo")[0] == 101
                # RFC 6455 §5.2: RSV bits with no extension negotiated fail the connection.
                client.send_raw(RawClient.frame(1, "valid") + RawClient.frame(1, "bad", rsv=3))
                try:
                    answers.append(client.recv_frame(timeout=TIMEOUT))
                except EOFError:
                    answers.append(None)
        answered = sum(answer == (True, 1, b"valid") for answer in answers)
        assert answered >= 17, f"{answered} of 20 answered before the bad frame was read: {answers}"
        assert_no_traceback(server)
    finally:
        server.stop()
