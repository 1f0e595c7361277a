"""Reference echo server built on the `websockets` library (not on our code).

It exists to prove the Autobahn harness end to end independently of
django_websocket: `run.py` must be able to run the suite against it, and must
*fail* on the handful of cases websockets itself does not pass strictly.

Usage: python compliance/peer_echo.py PORT   (listens on 127.0.0.1 only)
"""

import signal
import sys

from websockets.exceptions import ConnectionClosed
from websockets.sync.server import serve


def echo(connection):
    # Iterating yields complete (reassembled) messages, str for text and bytes
    # for binary, and send() keeps that type: exactly what Autobahn checks.
    try:
        for message in connection:
            connection.send(message)
    except ConnectionClosed:
        # Many cases deliberately break the protocol; websockets has already
        # sent the right close frame, so there is nothing to log.
        pass


def main():
    port = int(sys.argv[1])
    # SIGTERM (what run.py sends first) becomes SystemExit, so serve_forever()
    # unwinds through the context manager and closes the listening socket.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    # max_size=None: group 9 sends messages up to 16 MiB.
    # compression="deflate": permessage-deflate, needed by groups 12 and 13.
    # ping_interval=None: keepalive pings are not part of any case.
    with serve(
        echo,
        "127.0.0.1",
        port,
        max_size=None,
        compression="deflate",
        ping_interval=None,
    ) as server:
        print(f"peer_echo: websockets echo server on ws://127.0.0.1:{port}/", flush=True)
        server.serve_forever()


if __name__ == "__main__":
    main()
