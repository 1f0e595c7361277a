"""The ceiling (benchmarks/compare.py): an echo server on picows (framing in C) and uvloop.

What Python on this machine can do when nothing but the callback is interpreted::

    python benchmarks/peer_picows.py 127.0.0.1:8000
"""

import asyncio
import signal
import sys

import uvloop
from picows import WSListener, WSMsgType, ws_create_server


class Echo(WSListener):
    def on_ws_frame(self, transport, frame):
        if frame.msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()
        elif frame.msg_type in (WSMsgType.TEXT, WSMsgType.BINARY):
            transport.send(frame.msg_type, frame.get_payload_as_memoryview())


async def main(host, port):
    stop = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set_result, None)
    server = await ws_create_server(lambda request: Echo(), host, port, backlog=4096)
    print(f"Serving on ws://{host}:{port}/", flush=True)
    await stop
    server.close()


if __name__ == "__main__":
    host, _, port = sys.argv[1].rpartition(":")
    uvloop.run(main(host, int(port)))
