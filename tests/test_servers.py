"""What the server adapters guarantee beyond the WebSocket itself, each checked against real
server processes started as the deployment guides start them:

* plain HTTP is served exactly as by the underlying server: a response or a request body takes
  as long as it takes;
* a client has :setting:`WEBSOCKET_HANDSHAKE_TIMEOUT` seconds for its whole request head, from
  when the server waits for it (an idle keep-alive connection too), and is dropped quietly then;
* a restarting gunicorn worker (SIGTERM, HUP, ``--max-requests``) closes its WebSockets with 1001
  and is gone well within the graceful timeout;
* runserver with its autoreloader, and the gevent server, close with 1001 and stop within
  :setting:`WEBSOCKET_CLOSE_TIMEOUT`;
* TLS on the gthread worker carries a WebSocket that is read and written from several threads.
"""

import contextlib
import os
import select
import signal
import socket
import ssl
import subprocess
import threading
import time

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests import servers
from tests.rawclient import RawClient

TIMEOUT = 10
HEAD_TIMEOUT = 2.0
SLACK = 2.0


def echo_works(server, **kwargs):
    with connect(server.url + "/echo", open_timeout=TIMEOUT, close_timeout=TIMEOUT, **kwargs) as ws:
        ws.send("still serving")
        return ws.recv(timeout=TIMEOUT) == "still serving"


def assert_no_traceback(server):
    output = server.output()
    assert "Traceback" not in output, output


def process_alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1].split()[0] != "Z"  # a zombie has exited
    except (FileNotFoundError, ProcessLookupError):
        return False


def children(pid):
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().split(") ", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                found.append(int(entry))
    return found


def wait_until(predicate, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def close_codes(clients, timeout=TIMEOUT):
    """Wait, in parallel, for each client's connection to be closed; its close code, or None
    (no close frame) or "open" (still open after ``timeout``)."""
    codes = [None] * len(clients)

    def wait_close(i, ws):
        try:
            ws.recv(timeout=timeout)
            codes[i] = "message"
        except TimeoutError:
            codes[i] = "open"
        except ConnectionClosed as exc:
            codes[i] = exc.rcvd.code if exc.rcvd else None

    threads = [threading.Thread(target=wait_close, args=(i, ws)) for i, ws in enumerate(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout + 5)
    return codes


def open_echo_clients(stack, server, count, **kwargs):
    """``count`` echo connections, each checked, closed when ``stack`` (an ExitStack) is."""
    clients = []
    for i in range(count):
        ws = stack.enter_context(connect(server.url + "/echo", open_timeout=TIMEOUT, close_timeout=1, **kwargs))
        clients.append(ws)
        ws.send(f"hello {i}")
        assert ws.recv(timeout=TIMEOUT) == f"hello {i}"
    return clients


# --- plain HTTP and the request head ------------------------------------------------------------------


# The request head and plain HTTP are ours on the WSGI paths only: an ASGI server reads the
# request itself (its deployment guide says what it bounds).
WSGI_SERVERS = sorted(set(servers.SERVERS) - set(servers.ASGI_SERVERS))


@pytest.fixture(scope="module", params=WSGI_SERVERS)
def head_server(request):
    """Each server path, with a short handshake timeout."""
    server = servers.SERVERS[request.param](env={"TESTS_WEBSOCKET_HANDSHAKE_TIMEOUT": str(HEAD_TIMEOUT)})
    yield server
    server.stop()


def test_slow_reader_gets_the_whole_plain_response(head_server):
    # A download that takes well beyond the handshake timeout: nothing of ours may cut it.
    size = 16 * 2**20
    rate = 4 * 2**20  # bytes per second: about 4 s for the whole response
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    sock.settimeout(TIMEOUT)
    sock.connect((head_server.host, head_server.port))
    with sock:
        sock.sendall(f"GET /large?size={size} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        data = bytearray()
        started = time.monotonic()
        while time.monotonic() - started < 30:
            try:
                chunk = sock.recv(65536)
            except ConnectionError:
                break
            if not chunk:
                break
            data += chunk
            # Read no faster than the rate.
            ahead = len(data) / rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    assert len(body) == size, f"received {len(body)} of {size} bytes"
    assert_no_traceback(head_server)


def test_slow_request_body_is_read_whole(head_server):
    # The client pauses longer than the handshake timeout between parts of its body.
    body = b"y" * 300_000
    with RawClient(head_server.host, head_server.port, timeout=TIMEOUT) as client:
        client.send_raw(
            b"POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
        )
        for part in (body[:100_000], body[100_000:200_000], body[200_000:]):
            client.send_raw(part)
            time.sleep(HEAD_TIMEOUT * 0.75)
        time.sleep(HEAD_TIMEOUT * 0.75)  # the last pause, with the body complete: no matter
        status, _, answer = client.read_response()
    assert (status, answer) == (200, b"300000")
    assert_no_traceback(head_server)


def _slowloris(server, first=b"GET /echo HTTP/1.1\r\n", gap=HEAD_TIMEOUT / 4, limit=HEAD_TIMEOUT + 6):
    """Send ``first``, then one byte of a header every ``gap`` seconds (well inside any per-read
    timeout); return the seconds until the server dropped the connection, or None."""
    sock = socket.create_connection((server.host, server.port), timeout=TIMEOUT)
    started = time.monotonic()
    with sock:
        sock.sendall(first)
        trickle = b"X-Slow: " + b"s" * 1000
        i = 0
        while time.monotonic() - started < limit:
            readable, _, _ = select.select([sock], [], [], gap)
            try:
                if readable:
                    if not sock.recv(65536):
                        return time.monotonic() - started
                    continue  # an answer: keep going until the connection ends
                sock.sendall(trickle[i % len(trickle) : i % len(trickle) + 1])
                i += 1
            except OSError:
                return time.monotonic() - started
    return None


def test_slowloris_is_dropped_at_the_deadline(head_server):
    results = []
    thread = threading.Thread(target=lambda: results.append(_slowloris(head_server)))
    thread.start()
    try:
        time.sleep(HEAD_TIMEOUT / 2)
        assert echo_works(head_server)  # meanwhile, others are served
    finally:
        thread.join(HEAD_TIMEOUT + 10)
    held = results[0]
    assert held is not None and held < HEAD_TIMEOUT + SLACK, f"held for {held}"
    assert echo_works(head_server)
    assert_no_traceback(head_server)


def test_silent_connection_is_dropped_at_the_deadline(head_server):
    with RawClient(head_server.host, head_server.port) as client:
        started = time.monotonic()
        assert client.at_eof(timeout=HEAD_TIMEOUT + 6)
        assert time.monotonic() - started < HEAD_TIMEOUT + SLACK
    assert_no_traceback(head_server)


def test_idle_keepalive_connection_is_dropped_at_the_deadline(head_server):
    with RawClient(head_server.host, head_server.port) as client:
        client.send_raw(b"GET /pid HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        status, headers, _ = client.read_response()
        assert status == 200
        # The server waits for the next request from now on.
        started = time.monotonic()
        assert client.at_eof(timeout=HEAD_TIMEOUT + 6)
        assert time.monotonic() - started < HEAD_TIMEOUT + SLACK
    assert echo_works(head_server)
    assert_no_traceback(head_server)


def test_keepalive_connection_serves_several_requests_in_time(head_server):
    # The deadline starts over for each request of a kept-alive connection.
    with RawClient(head_server.host, head_server.port) as client:
        for _ in range(3):
            client.send_raw(b"GET /pid HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            status, headers, _ = client.read_response()
            assert status == 200
            if headers.get("connection", "").lower() == "close":
                break
            time.sleep(HEAD_TIMEOUT * 0.5)
    assert_no_traceback(head_server)


# --- gunicorn worker restarts -------------------------------------------------------------------------

GRACEFUL = 10
WORKERS = {
    "gevent": servers.gunicorn_gevent,
    "gthread": servers.gunicorn_gthread,
    "geventwebsocket": servers.gunicorn_geventwebsocket,
}


@pytest.mark.parametrize("cause", ["sigterm", "hup", "max-requests"])
@pytest.mark.parametrize("worker", sorted(WORKERS))
def test_worker_restart_closes_websockets_with_1001(worker, cause):
    extra = ["--graceful-timeout", str(GRACEFUL)]
    if cause == "max-requests":
        extra += ["--max-requests", "4"]  # the three handshakes, then one plain request
    server = WORKERS[worker](workers=1, extra=extra)
    try:
        assert wait_until(lambda: len(children(server.proc.pid)) == 1, TIMEOUT)
        (old_worker,) = children(server.proc.pid)
        with contextlib.ExitStack() as stack:
            clients = open_echo_clients(stack, server, 3)
            started = time.monotonic()
            if cause == "sigterm":
                os.kill(server.proc.pid, signal.SIGTERM)
            elif cause == "hup":
                os.kill(server.proc.pid, signal.SIGHUP)
            else:
                with RawClient(server.host, server.port) as client:
                    client.send_raw(b"GET /pid HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                    assert client.read_response()[0] == 200
            assert close_codes(clients, timeout=GRACEFUL - 2) == [1001] * 3
        assert wait_until(lambda: not process_alive(old_worker), GRACEFUL - 2), "the worker is still running"
        assert time.monotonic() - started < GRACEFUL
        if cause == "sigterm":
            server.proc.wait(TIMEOUT)
        else:
            assert echo_works(server)  # a new worker serves
        output = server.output()
        assert "Traceback" not in output and "WORKER TIMEOUT" not in output, output
    finally:
        server.stop()


# --- runserver's autoreloader ------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["sigterm", "ctrl-c"])
def test_runserver_with_autoreloader_closes_with_1001(how):
    close_timeout = 2
    server = servers.runserver(env={"TESTS_WEBSOCKET_CLOSE_TIMEOUT": str(close_timeout)}, reload=True)
    try:
        with RawClient(server.host, server.port) as client:
            client.send_raw(b"GET /pid HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            child = int(client.read_response()[2])
        assert child != server.proc.pid  # served by the reloader's child process
        with contextlib.ExitStack() as stack:
            clients = open_echo_clients(stack, server, 3)
            started = time.monotonic()
            if how == "sigterm":
                os.kill(server.proc.pid, signal.SIGTERM)  # a process manager stops the parent
            else:
                os.killpg(server.proc.pid, signal.SIGINT)  # Ctrl-C: the terminal signals both
            assert close_codes(clients) == [1001] * 3
            server.proc.wait(TIMEOUT)
            assert time.monotonic() - started < close_timeout + SLACK + 1
        assert wait_until(lambda: not process_alive(child), 2)
        assert_no_traceback(server)
    finally:
        server.stop()


# --- the gevent server's shutdown --------------------------------------------------------------------


@pytest.mark.parametrize("name", ["gevent", "gevent-websocket"])
def test_gevent_shutdown_is_bounded_by_the_close_timeout(name):
    close_timeout = 1.0
    server = servers.SERVERS[name](env={"TESTS_WEBSOCKET_CLOSE_TIMEOUT": str(close_timeout)})
    try:
        # Clients that never answer the close frame: the server waits close_timeout for them.
        stubborn = [RawClient(server.host, server.port) for _ in range(3)]
        for client in stubborn:
            assert client.request("/echo")[0] == 101
        started = time.monotonic()
        os.kill(server.proc.pid, signal.SIGTERM)
        for client in stubborn:
            assert client.recv_close(timeout=TIMEOUT)[0] == 1001
        server.proc.wait(TIMEOUT)
        elapsed = time.monotonic() - started
        assert elapsed < close_timeout + SLACK, f"stopped in {elapsed:.1f}s"
        for client in stubborn:
            client.close()
        assert_no_traceback(server)
    finally:
        server.stop()


# --- TLS on the gthread worker -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    return cert, key


def start_tls_server(certificate, env=None):
    cert, key = certificate
    server = servers.gunicorn_gthread(env=env, workers=1, extra=["--certfile", str(cert), "--keyfile", str(key)])
    server.url = f"wss://127.0.0.1:{server.port}"
    server.context = ssl.create_default_context(cafile=str(cert))
    return server


@pytest.fixture(scope="module")
def tls_server(certificate):
    server = start_tls_server(certificate)
    yield server
    server.stop()


def test_tls_echo_and_clean_close(tls_server):
    with connect(tls_server.url + "/echo", ssl=tls_server.context, open_timeout=TIMEOUT, close_timeout=TIMEOUT) as ws:
        for message in ("hello", "x" * 100_000, b"\x00\x01" * 40_000):
            ws.send(message)
            assert ws.recv(timeout=TIMEOUT) == message
        ws.close(1000)
    assert ws.protocol.close_rcvd.code == 1000


def test_tls_two_threads_send_while_the_view_reads(tls_server):
    count = 2000
    with connect(
        tls_server.url + "/two-senders", ssl=tls_server.context, open_timeout=TIMEOUT, close_timeout=TIMEOUT
    ) as ws:
        ws.send(f"go {count}")
        for i in range(300):
            ws.send(f"echo {i} " + "e" * (i * 50))
        ws.send("join")
        received = {"a": [], "b": [], "echo": []}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            message = ws.recv(timeout=TIMEOUT)
            if message == "done":
                break
            name, _, rest = message.partition(":") if not message.startswith("echo ") else ("echo", "", message)
            received[name].append(rest)
        ws.close(1000)
    assert received["a"] == [str(i) for i in range(count)]
    assert received["b"] == [str(i) for i in range(count)]
    assert received["echo"] == [f"echo {i} " + "e" * (i * 50) for i in range(300)]
    assert ws.protocol.close_rcvd.code == 1000
    assert echo_works(tls_server, ssl=tls_server.context)
    assert_no_traceback(tls_server)


def test_tls_stalled_reader_is_cut_by_the_send_timeout(certificate):
    # The view floods a client that does not read: its send must give up after
    # WEBSOCKET_SEND_TIMEOUT and close the connection, freeing the thread.
    server = start_tls_server(certificate, env={"TESTS_WEBSOCKET_SEND_TIMEOUT": "1"})
    try:
        raw = socket.create_connection((server.host, server.port), timeout=TIMEOUT)
        with server.context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
            sock.sendall(
                b"GET /flood HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Key: MDEyMzQ1Njc4OWFiY2RlZg==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
            time.sleep(3)  # not reading, well past the send timeout
            # What the server sent before giving up, then the end of the stream; a server still
            # sending would take minutes to send its 6 GiB.
            deadline = time.monotonic() + TIMEOUT
            received = 0
            ended = False
            while time.monotonic() < deadline:
                try:
                    chunk = sock.recv(65536)
                except (ssl.SSLError, ConnectionError):
                    ended = True
                    break
                if not chunk:
                    ended = True
                    break
                received += len(chunk)
            assert ended, f"still sending after {received} bytes"
            assert received < 64 * 2**20
        assert echo_works(server, ssl=server.context)
        assert_no_traceback(server)
    finally:
        server.stop()


class _OpenSSLClient:
    """``openssl s_client`` as a WebSocket client: unlike Python's ssl module it can make TLS 1.3
    key updates (its ``K`` command, a line of its own on stdin), which the server answers with
    one of its own: reading a key update changes the state of the writing side."""

    def __init__(self, server, cert):
        self.proc = subprocess.Popen(
            ["openssl", "s_client", "-connect", f"127.0.0.1:{server.port}", "-tls1_3", "-quiet", "-no_ign_eof",
             "-CAfile", str(cert)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0,
        )  # fmt: skip
        self.buf = b""
        self.errors = b""
        os.set_blocking(self.proc.stdout.fileno(), False)
        os.set_blocking(self.proc.stderr.fileno(), False)

    def write(self, data):
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def key_update(self, timeout=5):
        # Alone on its line, and taken before anything else is written: s_client looks for its
        # commands at the start of what it reads from stdin.
        done = self.errors.count(b"KEYUPDATE") + 1
        self.write(b"K\n")
        deadline = time.monotonic() + timeout
        while self.errors.count(b"KEYUPDATE") < done:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.proc.stderr], [], [], left)[0]:
                raise TimeoutError("s_client did not take the key update command")
            chunk = self.proc.stderr.read(65536)
            if not chunk:
                self._ended()
            self.errors += chunk

    def _ended(self):
        self.proc.wait(5)
        self.errors += self.proc.stderr.read() or b""
        raise EOFError(f"s_client ended: {self.errors.decode(errors='replace')}")

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([self.proc.stdout], [], [], left)[0]:
            raise TimeoutError("nothing more from the server")
        chunk = self.proc.stdout.read(65536)
        if not chunk:
            self._ended()
        self.buf += chunk

    def handshake(self, path, timeout=TIMEOUT):
        deadline = time.monotonic() + timeout
        self.write(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: MDEyMzQ1Njc4OWFiY2RlZg==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        # s_client prints the session's details first; the server's bytes follow.
        while b"\r\n\r\n" not in self.buf.partition(b"HTTP/1.1 ")[2]:
            self._fill(deadline)
        head, _, self.buf = self.buf.partition(b"HTTP/1.1 ")[2].partition(b"\r\n\r\n")
        return int(head.split()[0])

    def recv_text(self, deadline):
        while len(self.buf) < 2 or len(self.buf) < self._frame_length():
            self._fill(deadline)
        n, length = self._frame_length(), self._payload_length()
        frame, self.buf = self.buf[:n], self.buf[n:]
        assert frame[0] == 0x81, frame[:20]
        return frame[n - length :].decode()

    def _payload_length(self):
        n = self.buf[1] & 0x7F
        if n == 126:
            return int.from_bytes(self.buf[2:4], "big")
        if n == 127:
            return int.from_bytes(self.buf[2:10], "big")
        return n

    def _frame_length(self):
        n = self.buf[1] & 0x7F
        header = 4 if n == 126 else 10 if n == 127 else 2
        if len(self.buf) < header:
            return header + 1
        return header + self._payload_length()

    def close(self):
        try:
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        os.set_blocking(self.proc.stderr.fileno(), True)
        errors = (self.errors + self.proc.stderr.read()).decode(errors="replace")
        self.proc.stderr.close()
        self.proc.stdout.close()
        return errors


def test_tls_key_updates_while_two_threads_send(tls_server, certificate):
    cert, _ = certificate
    count = 100_000  # enough to go on sending during all the key updates
    received = {"a": [], "b": [], "echo": []}
    client = _OpenSSLClient(tls_server, cert)

    def record(message):
        name, _, rest = ("echo", "", message) if message.startswith("echo ") else message.partition(":")
        received[name].append(rest)
        return message

    def read_until(expected, deadline):
        while record(client.recv_text(deadline)) != expected:
            pass

    try:
        assert client.handshake("/two-senders") == 101
        deadline = time.monotonic() + 30
        client.write(RawClient.frame(1, f"go {count}"))
        record(client.recv_text(deadline))  # the senders have started
        for i in range(20):
            client.key_update()  # asking the server for one too
            client.write(RawClient.frame(1, f"echo {i}"))
            # Answered before anything else is written: s_client reads the next command alone.
            read_until(f"echo {i}", deadline)
        client.write(RawClient.frame(1, "join"))
        while (message := client.recv_text(deadline)) != "done":
            record(message)
        client.write(RawClient.frame(8, b"\x03\xe8"))
    finally:
        errors = client.close()
    assert errors.count("KEYUPDATE") == 20
    assert "bad record mac" not in errors and "decryption failed" not in errors, errors
    assert received["a"] == [str(i) for i in range(count)]
    assert received["b"] == [str(i) for i in range(count)]
    assert received["echo"] == [f"echo {i}" for i in range(20)]
    assert_no_traceback(tls_server)
    assert "WebSocket failed" not in tls_server.output(), tls_server.output()
