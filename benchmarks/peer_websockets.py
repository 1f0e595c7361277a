"""The peer on the bare ``websockets`` library: an asyncio echo server (benchmarks/compare.py).

Its defaults, as its documentation shows them: the asyncio event loop of the standard library,
1 MiB messages at most, keepalive pings every 20 s::

    python benchmarks/peer_websockets.py 127.0.0.1:8000
"""

import asyncio
import signal
import sys

from websockets.asyncio.server import serve


async def echo(websocket):
    async for message in websocket:
        await websocket.send(message)


async def main(host, port):
    stop = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set_result, None)
    async with serve(echo, host, port, backlog=4096):
        print(f"Serving on ws://{host}:{port}/", flush=True)
        await stop


if __name__ == "__main__":
    host, _, port = sys.argv[1].rpartition(":")
    asyncio.run(main(host, int(port)))
