"""Views of the group tests (tests/test_groups.py, tests/test_groups_redis.py)."""

import json
import os
import time

from django.http import HttpResponse

from django_websocket import groups, require_websocket


@require_websocket
def member(request):
    """Joins the groups of ``?join=a,b`` (with ``?info=`` JSON, if given), answers ``{"joined":
    [...], "id": ..., "pid": ...}``, then obeys JSON commands while group messages reach the client
    through the socket's own send path:

    ``{"send": group, "message": str, "binary": bool, "exclude_self": bool, "ack": bool}``,
    ``{"send_json": group, "data": ...}``, ``{"join": group, "info": ...}``, ``{"leave": group}`` (these two
    answer ``{"groups": [...]}``), ``{"configure": group, "slow_consumer": ..., "queue_size": ...}``
    (answers ``{"configured": group}``), ``{"flood": group, "size": int, "then": int, ...}``
    (the arguments of :func:`flood`; answers ``{"sent": n}``), ``{"stats": true}`` (answers
    ``groups.stats()``).
    A failed send answers ``{"error": ..., "type": ...}``.
    """
    ws = request.websocket
    info = json.loads(request.GET["info"]) if "info" in request.GET else None
    for group in filter(None, request.GET.get("join", "").split(",")):
        ws.join(group, info=info)
    ws.send(json.dumps({"joined": sorted(ws.groups), "id": ws.id, "pid": os.getpid()}))
    for command in ws:
        command = json.loads(command)
        try:
            if "send" in command:
                message = command["message"]
                if command.get("binary"):
                    message = message.encode("utf-8")
                groups.send(command["send"], message, exclude=ws if command.get("exclude_self") else None)
                if "ack" in command:
                    ws.send(json.dumps({"ack": command.get("ack")}))
            elif "send_json" in command:
                groups.send_json(command["send_json"], command["data"])
            elif "join" in command:
                ws.join(command["join"], info=command.get("info"))
                ws.send(json.dumps({"groups": sorted(ws.groups)}))
            elif "leave" in command:
                ws.leave(command["leave"])
                ws.send(json.dumps({"groups": sorted(ws.groups)}))
            elif "configure" in command:
                options = {key: command[key] for key in ("slow_consumer", "queue_size") if key in command}
                groups.configure(command["configure"], **options)
                ws.send(json.dumps({"configured": command["configure"]}))
            elif "flood" in command:
                options = {
                    key: command[key]
                    for key in ("size", "then", "start", "until_behind", "settle", "limit")
                    if key in command
                }
                sent = flood(command["flood"], **options)
                ws.send(json.dumps({"sent": sent}))
            elif "stats" in command:
                ws.send(json.dumps(groups.stats()))
        except groups.BackendUnavailable as exc:
            ws.send(json.dumps({"error": str(exc), "type": type(exc).__name__}))


def flood(group, size=65536, then=0, start=0, until_behind=True, settle=0.0, limit=5000):
    """Send ``group`` the messages ``"<start>:xxx…"``, ``"<start + 1>:xxx…"`` (``size`` bytes of
    padding) until one of its members is behind (its socket took no more at once; unless not
    ``until_behind``), then, after ``settle`` seconds (the kernel may still move some bytes on
    to the client, and the member's sender thread take one more message), ``then`` more without
    waiting in between; returns how many were sent."""
    padding = "x" * size
    sent = 0
    while until_behind:
        while not groups.stats()["groups"][group]["behind"]:
            if sent == limit:
                raise AssertionError(f"no member of {group!r} fell behind after {limit} messages")
            groups.send(group, f"{start + sent}:{padding}")
            sent += 1
        if settle:
            time.sleep(settle)
        # Behind for good, not for a moment (another thread was writing to the member).
        if groups.stats()["groups"][group]["behind"]:
            break
    for _ in range(then):
        groups.send(group, f"{start + sent}:{padding}")
        sent += 1
    return sent


def send(request):
    """``groups.send`` from a plain HTTP view: 200, or 503 with the error when the backend is down."""
    message = request.GET["message"]
    if request.GET.get("binary"):
        message = message.encode("utf-8")
    try:
        groups.send(request.GET["group"], message)
    except groups.BackendUnavailable as exc:
        return HttpResponse(str(exc), status=503, content_type="text/plain")
    return HttpResponse("sent", content_type="text/plain")


def members(request):
    """How many sockets of this process are in ``?group=``."""
    return HttpResponse(str(groups.get_backend().local_members(request.GET["group"])), content_type="text/plain")


def backend(request):
    """The class of this process's group backend and the process id."""
    return HttpResponse(f"{type(groups.get_backend()).__name__} {os.getpid()}", content_type="text/plain")


def presence(request):
    """``{"count": n, "members": [{"id", "user_id", "info"}...]}`` of ``?group=``: 503 when the
    backend cannot tell."""
    group = request.GET["group"]
    try:
        count = groups.count(group)
        members = groups.members(group)
    except groups.BackendUnavailable as exc:
        return HttpResponse(str(exc), status=503, content_type="text/plain")
    found = [{"id": m.id, "user_id": m.user_id, "info": m.info, "joined_at": m.joined_at} for m in members]
    return HttpResponse(json.dumps({"count": count, "members": found}), content_type="application/json")


def stats(request):
    """The counters of this process's group backend, as JSON (``{}`` if it keeps none)."""
    backend = groups.get_backend()
    counters = backend.stats() if hasattr(backend, "stats") else {}
    return HttpResponse(json.dumps({"pid": os.getpid(), **counters}), content_type="application/json")


@require_websocket
async def async_member(request):
    """The async view's way: ``await ws.join(group, info=...)`` for ``?join=``, then answers
    ``{"joined": [...], "id": ...}`` and leaves the groups of the messages it receives."""
    ws = request.websocket
    info = json.loads(request.GET["info"]) if "info" in request.GET else None
    for group in filter(None, request.GET.get("join", "").split(",")):
        await ws.join(group, info=info)
    await ws.send(json.dumps({"joined": sorted(ws.groups), "id": ws.id}))
    async for group in ws:
        await ws.leave(group)
        await ws.send(json.dumps({"groups": sorted(ws.groups)}))
