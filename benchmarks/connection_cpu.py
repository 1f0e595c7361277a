"""CPU per echo round trip of the connection object alone (django_websocket.websocket), over a
socket pair in one process with threads: no server, no Django request, no network stack beyond
the kernel's socket pair. Two checkouts side by side show what a change to websocket.py costs,
with far less noise than a whole server on a shared machine::

    python benchmarks/connection_cpu.py /path/to/old/checkout 20000
    python benchmarks/connection_cpu.py . 20000

It prints the CPU time (both ends, one process) and the wall time per 32-byte round trip.
"""
import os
import socket
import sys
import threading
import time

root = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else os.getcwd()
sys.path.insert(0, root)
os.environ["DJANGO_WEBSOCKET_PURE_PYTHON"] = "1"
from django_websocket.frames import Opcode, serialize_frame
from django_websocket.handshake import Request
from django_websocket.websocket import Handover, WebSocket

N = int(sys.argv[2]) if len(sys.argv) > 2 else 20000
a, b = socket.socketpair()
ws = WebSocket(Request("dGhlIHNhbXBsZSBub25jZQ==", [], [], None, "x", "/"), Handover(lambda: (a, b"")), compression=False, send_timeout=30)

def server():
    for m in ws:
        ws.send(m)

t = threading.Thread(target=server, daemon=True); t.start()
# read the 101
frame = serialize_frame(Opcode.TEXT, b"x" * 32, mask=b"abcd")
buf = b""
def run(n):
    global buf
    for _ in range(n):
        b.sendall(frame)
        while len(buf) < 34:
            buf += b.recv(65536)
        buf = buf[34:]
# first send triggers accept (wait() accepts)
b.sendall(frame)
head = b""
while b"\r\n\r\n" not in head:
    head += b.recv(65536)
buf = head.split(b"\r\n\r\n", 1)[1]
while len(buf) < 34:
    buf += b.recv(65536)
buf = buf[34:]
run(2000)
c0 = time.process_time(); w0 = time.perf_counter()
run(N)
c1 = time.process_time(); w1 = time.perf_counter()
print(f"{root}: {(c1-c0)/N*1e6:.1f} us CPU per round trip (both ends), {(w1-w0)/N*1e6:.1f} us wall")
