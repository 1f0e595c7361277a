"""CPU per echo round trip of the connection object alone (django_websocket.websocket), over a
socket pair in one process with threads: no server, no Django request, no network stack beyond
the kernel's socket pair. Two checkouts run one after the other, several times, show what a
change to websocket.py costs, with far less noise than a whole server on a shared machine::

    python benchmarks/connection_cpu.py /path/to/old/checkout . --rounds 3

It prints, for each checkout and round, the CPU time (both ends, one process) and the wall time
per 32-byte round trip, then the median CPU time of each checkout and their ratio.
"""

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

# Run in a subprocess per measurement, so that each checkout's package is the one imported.
CHILD = r"""
import os, socket, sys, threading, time
sys.path.insert(0, sys.argv[1])
os.environ["DJANGO_WEBSOCKET_PURE_PYTHON"] = "1"
from django_websocket.frames import Opcode, serialize_frame
from django_websocket.handshake import Request
from django_websocket.websocket import Handover, WebSocket

count = int(sys.argv[2])
view_end, client = socket.socketpair()
handshake = Request("dGhlIHNhbXBsZSBub25jZQ==", [], [], None, "x", "/")
ws = WebSocket(handshake, Handover(lambda: (view_end, b"")), compression=False, send_timeout=30)


def view():
    for message in ws:
        ws.send(message)


threading.Thread(target=view, daemon=True).start()
frame = serialize_frame(Opcode.TEXT, b"x" * 32, mask=b"abcd")
buf = b""


def round_trips(n):
    global buf
    for _ in range(n):
        client.sendall(frame)
        while len(buf) < 34:
            buf += client.recv(65536)
        buf = buf[34:]


client.sendall(frame)  # the view's first wait() accepts: the 101 comes first
head = b""
while b"\r\n\r\n" not in head:
    head += client.recv(65536)
buf = head.split(b"\r\n\r\n", 1)[1]
while len(buf) < 34:
    buf += client.recv(65536)
buf = buf[34:]
round_trips(2000)
cpu, wall = time.process_time(), time.perf_counter()
round_trips(count)
print((time.process_time() - cpu) / count * 1e6, (time.perf_counter() - wall) / count * 1e6)
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkouts", nargs="+", help="repository roots to compare")
    parser.add_argument("--count", type=int, default=20000, help="round trips per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    results = {root: [] for root in options.checkouts}
    for round_ in range(options.rounds):
        for root in options.checkouts:
            path = str(Path(root).resolve())
            done = subprocess.run(
                [sys.executable, "-c", CHILD, path, str(options.count)], capture_output=True, text=True, timeout=300
            )
            if done.returncode:
                sys.exit(done.stderr)
            cpu, wall = map(float, done.stdout.split())
            results[root].append(cpu)
            print(f"round {round_ + 1} {root}: {cpu:.1f} us CPU, {wall:.1f} us wall per round trip")
    medians = {root: statistics.median(values) for root, values in results.items()}
    first = options.checkouts[0]
    for root, median in medians.items():
        print(f"median {root}: {median:.1f} us CPU per round trip ({median / medians[first]:.2f}x {first})")


if __name__ == "__main__":
    main()
