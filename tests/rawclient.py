"""A minimal WebSocket client over a raw socket, able to send what a real client never would.

Used to check the server's answers to malformed handshakes and frames. Every read is bounded.
"""

import base64
import os
import socket
import struct
import time

from django_websocket.frames import apply_mask

KEY = base64.b64encode(b"0123456789abcdef").decode()


class RawClient:
    def __init__(self, host, port, timeout=5.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --- HTTP -----------------------------------------------------------------------------

    def request(self, path="/echo", headers=None, method="GET", version="HTTP/1.1", omit=()):
        base = {
            "Host": "127.0.0.1",
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Key": KEY,
            "Sec-WebSocket-Version": "13",
        }
        for name in omit:
            base.pop(name)
        base.update(headers or {})
        lines = [f"{method} {path} {version}"] + [f"{k}: {v}" for k, v in base.items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        return self.read_response()

    def read_response(self):
        """Return (status, {lower-case header: value}, body-bytes-if-any) of an HTTP response."""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"connection closed before a full response: {self.buf!r}")
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        body = b""
        if status != 101 and "content-length" not in headers:
            # No length: the body ends with the connection.
            while chunk := self.sock.recv(65536):
                self.buf += chunk
            body, self.buf = self.buf, b""
        elif status != 101:
            length = int(headers["content-length"])
            while len(self.buf) < length:
                chunk = self.sock.recv(65536)
                if not chunk:
                    break
                self.buf += chunk
            body, self.buf = self.buf[:length], self.buf[length:]
        return status, headers, body

    # --- frames ---------------------------------------------------------------------------

    @staticmethod
    def frame(opcode, payload=b"", fin=True, rsv=0, mask=True, length=None):
        if isinstance(payload, str):
            payload = payload.encode()
        n = len(payload) if length is None else length
        b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
        mbit = 0x80 if mask else 0
        if n < 126:
            header = struct.pack("!BB", b0, mbit | n)
        elif n < 65536:
            header = struct.pack("!BBH", b0, mbit | 126, n)
        else:
            header = struct.pack("!BBQ", b0, mbit | 127, n)
        if mask:
            key = os.urandom(4)
            return header + key + apply_mask(payload, key)
        return header + payload

    def send_frame(self, opcode, payload=b"", **kwargs):
        self.sock.sendall(self.frame(opcode, payload, **kwargs))

    def send_raw(self, data):
        self.sock.sendall(data)

    def _fill(self, n, deadline):
        while len(self.buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no complete frame in time")
            self.sock.settimeout(left)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed")
            self.buf += chunk

    def recv_frame(self, timeout=5.0):
        """Return (fin, opcode, payload) of the next frame from the server (never masked)."""
        deadline = time.monotonic() + timeout
        self._fill(2, deadline)
        b0, b1 = self.buf[0], self.buf[1]
        assert not b1 & 0x80, "server frames must not be masked"
        n = b1 & 0x7F
        pos = 2
        if n == 126:
            self._fill(4, deadline)
            n = struct.unpack("!H", self.buf[2:4])[0]
            pos = 4
        elif n == 127:
            self._fill(10, deadline)
            n = struct.unpack("!Q", self.buf[2:10])[0]
            pos = 10
        self._fill(pos + n, deadline)
        payload = self.buf[pos : pos + n]
        self.buf = self.buf[pos + n :]
        return bool(b0 & 0x80), b0 & 0x0F, payload

    def recv_close(self, timeout=5.0):
        """Skip data frames until a close frame; return its (code, reason), code None if empty."""
        deadline = time.monotonic() + timeout
        while True:
            fin, opcode, payload = self.recv_frame(max(0.01, deadline - time.monotonic()))
            if opcode == 8:
                if not payload:
                    return None, ""
                return struct.unpack("!H", payload[:2])[0], payload[2:].decode("utf-8", "replace")

    def at_eof(self, timeout=5.0):
        """Whether the server closes the TCP connection within ``timeout``."""
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                self.sock.settimeout(max(0.01, deadline - time.monotonic()))
                if not self.sock.recv(65536):
                    return True
        except TimeoutError:
            return False
        except OSError:
            return True
        return False
