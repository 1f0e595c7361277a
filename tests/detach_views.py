"""Views of tests/test_detach.py: sockets that outlive their views."""

import asyncio
import json
import threading

from django.http import HttpResponse

from django_websocket import groups, require_websocket
from django_websocket.reactor import get_reactor


def _echo_back(websocket, message):
    # On the reactor's pool: "close please" closes the connection from there.
    if message == "close please":
        websocket.close(4001, "as asked")
    else:
        websocket.send(f"got:{message}")


@require_websocket
def notify(request):
    # Joins ?group=, says so, then detaches with the ?on= policy: the view returns at once.
    ws = request.websocket
    ws.join(request.GET["group"], info={"kind": "detached"})
    ws.send("joined")
    on = request.GET.get("on", "ignore")
    if on == "close":
        ws.detach(("close", 4000, "no messages here"))
    elif on == "callback":
        ws.detach(_echo_back)
    else:
        ws.detach()


@require_websocket
def attached(request):
    # The same member, attached: its view waits until the client closes.
    ws = request.websocket
    ws.join(request.GET["group"])
    ws.send("joined")
    for _message in ws:
        pass


def send_sequence(request):
    """``?group=&count=``: sends the group ``count`` messages "0", "1", ... back to back, as fast
    as the backend takes them (a burst, so that a member falling behind would show)."""
    group, count = request.GET["group"], int(request.GET["count"])
    for seq in range(count):
        groups.send(group, str(seq))
    return HttpResponse(f"sent {count}")


async def _async_echo_back(websocket, message):
    if message == "close please":
        await websocket.close(4001, "as asked")
    else:
        await websocket.send(f"got:{message}")


@require_websocket
async def async_notify(request):
    # notify() for an async view (ASGI servers): detach() is a plain call there. ?on=callback
    # detaches with an async def callback, ?on=thread-callback with a plain one, which runs on
    # the reactor's pool and sends through the loop.
    ws = request.websocket
    await ws.join(request.GET["group"], info={"kind": "detached"})
    await ws.send("joined")
    on = request.GET.get("on", "ignore")
    if on == "close":
        ws.detach(("close", 4000, "no messages here"))
    elif on == "callback":
        ws.detach(_async_echo_back)
    elif on == "thread-callback":
        loop = asyncio.get_running_loop()

        def echo_back(websocket, message):
            answer = (
                websocket.close(4001, "as asked") if message == "close please" else websocket.send(f"got:{message}")
            )
            asyncio.run_coroutine_threadsafe(answer, loop).result(10)

        ws.detach(echo_back)
    else:
        ws.detach()
    _returned.add(request.GET["group"])


@require_websocket
async def async_attached(request):
    ws = request.websocket
    await ws.join(request.GET["group"])
    await ws.send("joined")
    async for _message in ws:
        pass


# The groups of the async_notify views that returned (the in-process test client's test).
_returned = set()


def status(request):
    """The reactor's detached connections, the threads of this process and, under gevent, its
    live greenlets, as JSON."""
    import gc

    greenlets = None
    try:
        import greenlet

        greenlets = sum(isinstance(o, greenlet.greenlet) and not o.dead for o in gc.get_objects())
    except ImportError:
        pass
    return HttpResponse(
        json.dumps({"detached": len(get_reactor()), "threads": threading.active_count(), "greenlets": greenlets}),
        content_type="application/json",
    )


def referrers(request):
    """Debugging aid: what keeps the WSGI environs of detached connections alive."""
    import gc

    from django_websocket.websocket import ENVIRON_KEY

    gc.collect()  # what only cycles hold is not kept
    environs = [o for o in gc.get_objects() if isinstance(o, dict) and ENVIRON_KEY in o and o is not request.META]
    kinds = {}
    for environ in environs[:50]:
        for ref in gc.get_referrers(environ):
            if ref is environs:
                continue
            name = type(ref).__qualname__
            if isinstance(ref, dict):
                name += ":" + ",".join(sorted(map(str, list(ref)[:6])))
            kinds[name] = kinds.get(name, 0) + 1
    report = {"environs": len(environs), "referrers": kinds}
    return HttpResponse(json.dumps(report, indent=1), content_type="application/json")


@require_websocket
def bad_close(request):
    # detach() with a close code no endpoint may send (1005 only describes a closure locally):
    # says what detach() raised, then stays attached until the client closes.
    ws = request.websocket
    try:
        ws.detach(("close", int(request.GET.get("code", 1005))))
    except ValueError as exc:
        ws.send(f"ValueError: {exc}")
    else:
        ws.send("detached")
        return
    for _message in ws:
        ws.send("attached")
