"""Views of tests/test_detach.py: sockets that outlive their views."""

import json
import threading

from django.http import HttpResponse

from django_websocket import require_websocket
from django_websocket.reactor import get_reactor


def _echo_back(websocket, message):
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


def status(request):
    """The reactor's detached connections and the threads of this process, as JSON."""
    return HttpResponse(
        json.dumps({"detached": len(get_reactor()), "threads": threading.active_count()}),
        content_type="application/json",
    )
