"""``async def`` WebSocket views, for the async contract (tests/test_contract_async.py).

On an ASGI server (django_websocket.asgi) they run on the event loop with an AsyncWebSocket.
What a test must read after the connection is over is written to a file of the server's state
directory (``TESTS_STATE_DIR``, shared by a server's worker processes) and read back through the
plain view ``record``.
"""

import asyncio
import json
import os
import threading

from django.http import HttpResponse, HttpResponseForbidden

from django_websocket import groups, require_websocket

STATE_DIR = os.environ.get("TESTS_STATE_DIR")


def _write(name, data):
    if STATE_DIR:
        path = os.path.join(STATE_DIR, f"async-{name}")
        with open(f"{path}.{os.getpid()}", "w") as f:
            json.dump(data, f)
        os.replace(f"{path}.{os.getpid()}", path)


def record(request):
    """What the view named ``?name=`` recorded, or 404 while there is nothing."""
    path = os.path.join(STATE_DIR or "", f"async-{request.GET['name']}")
    if not STATE_DIR or not os.path.exists(path):
        return HttpResponse("nothing yet", status=404)
    with open(path) as f:
        return HttpResponse(f.read(), content_type="application/json")


@require_websocket
async def echo(request):
    async for message in request.websocket:
        await request.websocket.send(message)


@require_websocket(max_message_size=1000)
async def small(request):
    async for message in request.websocket:
        await request.websocket.send(message)


@require_websocket(subprotocols=["chat.v2", "chat.v1"])
async def subprotocol(request):
    ws = request.websocket
    if request.GET.get("choose"):
        # The view's own choice, among those the client offered.
        await ws.accept(request.GET["choose"])
    else:
        await ws.accept()
    await ws.send(ws.protocol or "")
    await ws.wait()


@require_websocket
async def refuse(request):
    # A refusal before anything is sent: an HTTP answer, no upgrade.
    if request.GET.get("token") != "secret":
        return HttpResponseForbidden("bad token")
    await request.websocket.send("welcome")


@require_websocket
async def crash(request):
    await request.websocket.send("about to fail")
    raise RuntimeError("boom in an async WebSocket view")


@require_websocket
async def server_close(request):
    await request.websocket.send("bye")
    await request.websocket.close(4001, "done here")


@require_websocket
async def client_close(request):
    """Reads until the client closes, then records the close code and reason it saw."""
    ws = request.websocket
    await ws.send("ready")
    async for _message in ws:
        pass
    _write(request.GET["name"], {"code": ws.close_code, "reason": ws.close_reason, "closed": ws.closed})


async def _run(ws, command):
    op = command["op"]
    if op == "wait":
        result = await ws.wait(command.get("timeout"))
    elif op == "read":
        result = ws.read(command.get("fallback"))
    elif op == "has_messages":
        result = ws.has_messages()
    elif op == "count_messages":
        result = ws.count_messages()
    else:
        result = f"unknown op {op!r}"
    if isinstance(result, bytes):
        result = {"bytes": result.hex()}
    return result


@require_websocket
async def probe(request):
    """The async twin of tests/views.py's probe: JSON commands {"op": ...} answered with
    {"result": ..., "closed": ...}; {"op": "batch", "sleep": s, "steps": [...]} sleeps (without
    blocking the loop) so that the client's next messages arrive, then runs each step. A batch
    with an "id" records its results once done, for a client that closed meanwhile."""
    ws = request.websocket
    while True:
        command = await ws.wait()
        if command is None:
            return
        command = json.loads(command)
        if command["op"] == "batch":
            await asyncio.sleep(command.get("sleep", 0))
            result = [await _run(ws, step) for step in command["steps"]]
            if command.get("id"):
                _write(command["id"], {"result": result, "closed": ws.closed})
        else:
            result = await _run(ws, command)
        if not ws.closed:
            await ws.send(json.dumps({"result": result, "closed": ws.closed}))


@require_websocket
async def vanish(request):
    """Echoes until the connection ends, then records how it ended: for a client that vanishes
    without a close frame."""
    ws = request.websocket
    try:
        async for message in ws:
            await ws.send(message)
    finally:
        _write(request.GET["name"], {"code": ws.close_code, "closed": ws.closed})


@require_websocket
async def member(request):
    """Joins ``?join=``, answers {"joined": ..., "pid": ...}, then obeys JSON commands:
    {"send": group, "message": m} (groups.send from the loop, through a thread: the backend may
    block), {"thread_send": group, "message": m} (groups.send from a thread of its own, as a
    signal handler or a task queue's worker would)."""
    ws = request.websocket
    group = request.GET["join"]
    await ws.join(group)
    await ws.send(json.dumps({"joined": group, "pid": os.getpid()}))
    loop = asyncio.get_running_loop()
    async for command in ws:
        command = json.loads(command)
        if "send" in command:
            await loop.run_in_executor(None, groups.send, command["send"], command["message"])
        elif "thread_send" in command:
            thread = threading.Thread(target=groups.send, args=(command["thread_send"], command["message"]))
            thread.start()


def group_send(request):
    """``groups.send`` from a plain (regular) HTTP view; answers the process id that sent."""
    groups.send(request.GET["group"], request.GET["message"])
    return HttpResponse(str(os.getpid()), content_type="text/plain")
