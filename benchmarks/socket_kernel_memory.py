"""What idle TCP connections cost the kernel, outside any process's RSS. Run by hand (it is not a
test), from the repository's root::

    .venv/bin/python benchmarks/socket_kernel_memory.py
    .venv/bin/python benchmarks/socket_kernel_memory.py --connections 8000 --rounds 3

Opens ``--connections`` TCP connections over 127.0.0.1 (both ends in this process: a listening
socket accepts what its clients connect), sends a few bytes each way on every one and reads them,
so that they are as a server's idle WebSocket connections are (established, buffers empty),
then reads the kernel's ``Slab`` (``/proc/meminfo``: the socket, inode, file and dentry objects)
and the pages of socket buffers (``/proc/net/sockstat``), and closes everything. Per connection
is the growth divided by the count; each connection has two sockets here, so a server's share is
about half. Other processes on the machine move these counters too: take the median of several
rounds, on a quiet machine.

Needs two file descriptors per connection (the script raises its soft limit to the hard one).
"""

import argparse
import resource
import socket
import statistics
import time


def slab_kib():
    with open("/proc/meminfo") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("Slab:"))


def sockstat_pages():
    with open("/proc/net/sockstat") as f:
        for line in f:
            if line.startswith("TCP:"):
                fields = line.split()
                return int(fields[fields.index("mem") + 1])
    return 0


def one_round(count):
    listener = socket.create_server(("127.0.0.1", 0), backlog=1024)
    port = listener.getsockname()[1]
    clients, servers = [], []
    time.sleep(0.5)
    slab0, pages0 = slab_kib(), sockstat_pages()
    try:
        for _ in range(count):
            client = socket.create_connection(("127.0.0.1", port), timeout=5)
            server, _ = listener.accept()
            client.sendall(b"hello")
            server.recv(16)
            server.sendall(b"hi")
            client.recv(16)
            clients.append(client)
            servers.append(server)
        time.sleep(1.0)
        return (slab_kib() - slab0) / count, (sockstat_pages() - pages0) * 4 / count
    finally:
        for s in clients + servers:
            s.close()
        listener.close()
        time.sleep(1.0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=8000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = 2 * args.connections + 100
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, needed), hard))
    slabs, buffers = [], []
    for _ in range(args.rounds):
        slab, pages = one_round(args.connections)
        slabs.append(slab)
        buffers.append(pages)
        print(f"{args.connections} connections: Slab +{slab:.2f} KiB, socket buffers +{pages:.2f} KiB each")
    print(
        f"median of {args.rounds}: {statistics.median(slabs):.2f} KiB of slab and "
        f"{statistics.median(buffers):.2f} KiB of socket buffers per connection (two sockets)"
    )


if __name__ == "__main__":
    main()
