"""The views of the fan-out benchmark: members of one group, and a sender.

With ``BENCH_DIRECT=1`` the sender's thread writes to every member socket itself, one after the
other, without groups: the floor that the machine, the server and the client allow. With
``BENCH_DETACH=1`` each member joins, says so and detaches (``request.websocket.detach()``): its
view returns, and the group's messages reach the socket all the same.
"""

import os
import time

from django.urls import path

from django_websocket import groups, require_websocket

DIRECT = bool(os.environ.get("BENCH_DIRECT"))
DETACH = bool(os.environ.get("BENCH_DETACH"))
MEMBERS = []  # the member sockets, for BENCH_DIRECT


@require_websocket
def member(request):
    if DIRECT:
        MEMBERS.append(request.websocket)
    else:
        request.websocket.join("bench")
    request.websocket.send("ready")
    if DETACH:
        request.websocket.detach()
        return
    for _ in request.websocket:
        pass


@require_websocket
def sender(request):
    # Each message names a sequence number; the group message carries it and the time of the
    # send (CLOCK_MONOTONIC is one clock for every process of the machine).
    for seq in request.websocket:
        text = f"{seq} {time.monotonic_ns()}"
        if DIRECT:
            for websocket in MEMBERS:
                websocket.send(text)
        else:
            groups.send("bench", text)


urlpatterns = [path("member", member), path("sender", sender)]
