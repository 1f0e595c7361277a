"""The ASGI bridge (django_websocket/events.py) against a stub server, for what no real server
here does often: a ``send()`` that waits (a server whose buffers are full), sends from several
threads and the view at once, many connections' writers woken from threads in one batch.

The contracts (tests/test_contract.py, tests/test_contract_async.py) run the same code on the
real servers.
"""

import asyncio
import random
import threading

from django_websocket.events import ASGIWebSocket, AsyncWebSocket, EventHandover
from django_websocket.handshake import Request


def _connection(loop, cls, *, waits=0.0):
    """A stub server's connection: ``receive()`` from a queue, ``send()`` that records each
    event and, with probability ``waits``, waits before taking it (a loop turn, or 1 ms)."""
    queue = asyncio.Queue()
    sent = []

    async def receive():
        return await queue.get()

    async def send(event):
        if random.random() < waits:
            await asyncio.sleep(0 if random.random() < 0.8 else 0.001)
        sent.append(event)
        if event["type"] == "websocket.close":
            queue.put_nowait({"type": "websocket.disconnect", "code": event.get("code", 1000)})

    handover = EventHandover(loop, receive, send, Request("", [], [], None, "testserver", "/"))
    return cls(handover.handshake, handover, send_timeout=10, close_timeout=5), queue, sent


def _texts(sent, prefix):
    return [e["text"] for e in sent if e["type"] == "websocket.send" and e["text"].startswith(prefix)]


def test_async_sends_keep_their_order_when_the_server_makes_send_wait():
    async def main():
        random.seed(6455)
        ws, _, sent = _connection(asyncio.get_running_loop(), AsyncWebSocket, waits=0.3)
        await ws.accept()

        def other_thread():
            for i in range(300):
                ws._send_threadsafe(f"t{i}")

        thread = threading.Thread(target=other_thread)
        thread.start()
        for i in range(2000):
            # Large ones too: past 64 KiB queued, send() waits for room.
            await ws.send(f"v{i}:" + "x" * (i % 40) * 500)
            if i % 7 == 0:
                await asyncio.sleep(0)
        thread.join()
        await ws.close()
        return ws, sent

    ws, sent = asyncio.run(main())
    assert sent[0]["type"] == "websocket.accept"
    assert sent[-1]["type"] == "websocket.close"
    assert [text.split(":")[0] for text in _texts(sent, "v")] == [f"v{i}" for i in range(2000)]
    assert _texts(sent, "t") == [f"t{i}" for i in range(300)]
    assert ws.end_reason == "closed"


def test_async_echo_through_the_stub_server():
    async def main():
        ws, queue, sent = _connection(asyncio.get_running_loop(), AsyncWebSocket)
        await ws.accept()
        for i in range(100):
            queue.put_nowait({"type": "websocket.receive", "text": f"m{i}"})
        for _ in range(100):
            await ws.send(await ws.wait())
        queue.put_nowait({"type": "websocket.disconnect", "code": 1000})
        assert await ws.wait() is None
        return ws, sent

    ws, sent = asyncio.run(main())
    assert _texts(sent, "m") == [f"m{i}" for i in range(100)]
    assert (ws.close_code, ws.end_reason) == (1000, "closed")


def test_threads_of_many_connections_wake_their_writers():
    # Regular views: each connection's thread sends; the writers are woken in batches.
    async def main():
        loop = asyncio.get_running_loop()
        connections = [_connection(loop, ASGIWebSocket, waits=0.1) for _ in range(50)]
        for ws, _, _ in connections:
            ws.accept()
        await asyncio.sleep(0.05)

        def view(ws, n):
            for i in range(200):
                ws.send(f"c{n}-{i}")
            ws.close()

        threads = [threading.Thread(target=view, args=(ws, n)) for n, (ws, _, _) in enumerate(connections)]
        for thread in threads:
            thread.start()
        while any(thread.is_alive() for thread in threads):
            await asyncio.sleep(0.01)
        for ws, _, _ in connections:
            await ws._finish()
        return connections

    for n, (ws, _, sent) in enumerate(asyncio.run(main())):
        assert _texts(sent, "c") == [f"c{n}-{i}" for i in range(200)]
        assert sent[-1]["type"] == "websocket.close"
        assert ws.end_reason == "closed"


def test_a_thread_waiting_for_a_message_is_woken():
    async def main():
        ws, queue, _ = _connection(asyncio.get_running_loop(), ASGIWebSocket)
        ws.accept()
        got = []
        thread = threading.Thread(target=lambda: got.extend([ws.wait(5), ws.wait(5)]))
        thread.start()
        await asyncio.sleep(0.1)  # the thread waits on its Condition by now
        queue.put_nowait({"type": "websocket.receive", "text": "one"})
        await asyncio.sleep(0.05)
        queue.put_nowait({"type": "websocket.disconnect", "code": 1000})
        while thread.is_alive():
            await asyncio.sleep(0.01)
        await ws._finish()
        return got

    assert asyncio.run(main()) == ["one", None]
