"""A light asyncio WebSocket client for thousands of connections from one process.

Used by tests/test_scale.py and benchmarks/idle_connections.py. One ``asyncio.Protocol`` per
connection, no extension offered (frames are never compressed), pings answered at once as a
browser does; every wait is bounded.
"""

import asyncio
import base64
import os
import time


class Client(asyncio.Protocol):
    """One WebSocket connection: the handshake, then frames parsed as they come (RFC 6455 §5.2).

    Pings are answered at once; text and binary messages are queued for the echo check. No
    extension is offered, so frames are never compressed.
    """

    def __init__(self, host, port, path):
        loop = asyncio.get_running_loop()
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        self.opened = loop.create_future()
        self.messages = asyncio.Queue()
        self.buf = bytearray()
        self.transport = None
        self.closed = False

    def connection_made(self, transport):
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data):
        self.buf += data
        if not self.opened.done():
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(self.buf[: self.buf.find(b"\r\n")])
            del self.buf[: end + 4]
            if b" 101 " not in status:
                self.opened.set_exception(ConnectionError(status.decode("latin-1")))
                return
            self.opened.set_result(True)
        while len(self.buf) >= 2:
            n, pos = self.buf[1] & 0x7F, 2
            if n == 126:
                if len(self.buf) < 4:
                    return
                n, pos = int.from_bytes(self.buf[2:4], "big"), 4
            elif n == 127:
                if len(self.buf) < 10:
                    return
                n, pos = int.from_bytes(self.buf[2:10], "big"), 10
            if len(self.buf) < pos + n:
                return
            opcode, payload = self.buf[0] & 0x0F, bytes(self.buf[pos : pos + n])
            del self.buf[: pos + n]
            if opcode == 0x9:
                self.send(0xA, payload)
            elif opcode in (0x1, 0x2):
                self.messages.put_nowait(payload)
            elif opcode == 0x8:
                self.closed = True
                self.messages.put_nowait(None)

    def connection_lost(self, exc):
        self.closed = True
        if not self.opened.done():
            self.opened.set_exception(exc or ConnectionError("closed during the handshake"))
        self.messages.put_nowait(None)

    def send(self, opcode, payload):
        # RFC 6455 §5.3: every client frame is masked.
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            header = bytes([0x80 | opcode, 0x80 | n])
        else:
            header = bytes([0x80 | opcode, 0x80 | 126]) + n.to_bytes(2, "big")
        key = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
        masked = (int.from_bytes(payload, "big") ^ key).to_bytes(n, "big") if n else b""
        self.transport.write(header + mask + masked)


async def open_clients(host, port, path, count, clients, concurrency=200):
    loop = asyncio.get_running_loop()
    slots = asyncio.Semaphore(concurrency)
    failures = []

    async def one():
        async with slots:
            try:
                _, client = await asyncio.wait_for(
                    loop.create_connection(lambda: Client(host, port, path), host, port), 30
                )
                await asyncio.wait_for(client.opened, 30)
                clients.append(client)
            except (OSError, asyncio.TimeoutError, ConnectionError) as exc:
                failures.append(exc)

    await asyncio.gather(*(one() for _ in range(count)))
    return failures


async def echo_all(clients, timeout=60.0):
    """Send a message on every connection at once; return (ok, latencies in seconds)."""
    latencies = []

    async def one(i, client):
        text = f"echo {i}".encode()
        start = time.monotonic()
        client.send(0x1, text)
        try:
            answer = await asyncio.wait_for(client.messages.get(), timeout)
        except asyncio.TimeoutError:
            return False
        latencies.append(time.monotonic() - start)
        return answer == text

    results = await asyncio.gather(*(one(i, c) for i, c in enumerate(clients)))
    return sum(results), latencies


