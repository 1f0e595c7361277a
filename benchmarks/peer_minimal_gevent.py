"""The ceiling of this app's design: the least a WebSocket echo on gevent can do (compare.py).

One greenlet per connection, a blocking socket, frames parsed and unmasked in pure Python
(``int.from_bytes``), one ``send`` per frame: the execution model of django-websocket on gevent,
without Django, without a request, without checks (no UTF-8 validation, no limits, no close
handshake beyond answering one, no ping). Not a server to use: a measure of what is left once
everything a real server does is taken away::

    python benchmarks/peer_minimal_gevent.py 127.0.0.1:8000
"""

from gevent import monkey

monkey.patch_all()

import base64  # noqa: E402
import hashlib  # noqa: E402
import struct  # noqa: E402
import sys  # noqa: E402

from gevent.server import StreamServer  # noqa: E402

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3


def _read_more(sock, buf):
    data = sock.recv(65536)
    if not data:
        raise EOFError
    buf += data


def _handshake(sock):
    buf = bytearray()
    while b"\r\n\r\n" not in buf:
        _read_more(sock, buf)
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    key = next(
        line.split(b":", 1)[1].strip() for line in head.split(b"\r\n") if line.lower().startswith(b"sec-websocket-key:")
    )
    accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
    sock.sendall(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
    )
    return bytearray(rest)


def _echo(sock, buf):
    while True:
        while len(buf) < 2:
            _read_more(sock, buf)
        b0, b1 = buf[0], buf[1]
        length, header = b1 & 0x7F, 2
        if length == 126:
            while len(buf) < 4:
                _read_more(sock, buf)
            (length,), header = struct.unpack_from("!H", buf, 2), 4
        elif length == 127:
            while len(buf) < 10:
                _read_more(sock, buf)
            (length,), header = struct.unpack_from("!Q", buf, 2), 10
        end = header + 4 + length
        while len(buf) < end:
            _read_more(sock, buf)
        mask = bytes(buf[header : header + 4])
        key = int.from_bytes((mask * (length // 4 + 1))[:length], "little")
        payload = (int.from_bytes(buf[header + 4 : end], "little") ^ key).to_bytes(length, "little")
        del buf[:end]
        opcode = b0 & 0x0F
        if opcode == 0x8:
            sock.sendall(bytes((0x88, len(payload[:2]))) + payload[:2])  # echo the code, if any
            return
        if opcode in (0x1, 0x2):
            if length < 126:
                head = struct.pack("!BB", 0x80 | opcode, length)
            elif length < 65536:
                head = struct.pack("!BBH", 0x80 | opcode, 126, length)
            else:
                head = struct.pack("!BBQ", 0x80 | opcode, 127, length)
            sock.sendall(head + payload)


def handle(sock, address):
    try:
        _echo(sock, _handshake(sock))
    except (EOFError, OSError):
        pass


if __name__ == "__main__":
    host, _, port = sys.argv[1].rpartition(":")
    StreamServer((host, int(port)), handle, backlog=4096).serve_forever()
