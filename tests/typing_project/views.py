"""A user's WebSocket views, written against the documented API and annotated with the
documented types: ``mypy --strict`` must find nothing here (tests/test_types.py)."""

import json

from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse
from django.http.response import HttpResponseBase
from django.urls import path
from django.utils.decorators import method_decorator
from django.views import View

from django_websocket import (
    AsyncHttpOrWebSocketRequest,
    AsyncWebSocketConnection,
    AsyncWebSocketRequest,
    HttpOrWebSocketRequest,
    Message,
    WebSocketConnection,
    WebSocketRequest,
    accept_websocket,
    groups,
    require_websocket,
)
from django_websocket.exceptions import ConnectionClosed
from django_websocket.frames import CloseCode
from django_websocket.groups.redis import RedisGroupBackend


@require_websocket
def echo(request: WebSocketRequest) -> None:
    for message in request.websocket:
        request.websocket.send(message)


@require_websocket
async def async_echo(request: AsyncWebSocketRequest) -> None:
    async for message in request.websocket:
        await request.websocket.send(message)


@require_websocket(subprotocols=["chat.v2", "chat.v1"], max_message_size=64 * 1024)
def chat(request: WebSocketRequest, room: str) -> HttpResponseBase | None:
    ws = request.websocket
    if ws.protocol is None:
        return HttpResponseBadRequest("Speak chat.v2 or chat.v1.")
    ws.join(f"room:{room}")
    ws.send("Say something.")
    while True:
        message = ws.wait(timeout=30)
        if message is None:
            if ws.closed:
                break
            ws.send("still there?")
            continue
        if message == "bye":
            ws.close(4000, "see you")
            break
        groups.send(f"room:{room}", message, exclude=ws)
        groups.send_json(f"room:{room}", {"from": ws.id, "size": len(message)})
    print(ws.close_code, ws.close_reason, sorted(ws.groups))
    return None


@require_websocket(compression=False, allowed_origins=["*"])
async def async_room(request: AsyncWebSocketRequest, room: str) -> None:
    ws = request.websocket
    await ws.join(room)
    message = await ws.wait(timeout=1.5)
    if isinstance(message, str):
        await ws.send(json.dumps({"echo": message}))
    elif message is not None:
        await ws.send(message)
    queued = ws.read()
    if queued is not None and ws.has_messages():
        await ws.send(f"{ws.count_messages()} more")
    await ws.leave(room)
    await ws.close(CloseCode.GOING_AWAY)


@accept_websocket
def scoreboard(request: HttpOrWebSocketRequest) -> HttpResponse | None:
    if request.websocket is None:
        return HttpResponse("the page")
    ws = request.websocket
    nothing = object()
    while not ws.closed:
        update = ws.read(nothing)
        if update is not nothing:
            ws.send(b"binary" if isinstance(update, bytes) else "text")
        pong = ws.ping(b"latency")
        pong.wait(1)
    return None


@accept_websocket(max_frame_size=65536)
async def async_scoreboard(request: AsyncHttpOrWebSocketRequest) -> HttpResponse | None:
    if request.websocket is None:
        return HttpResponse("the page")
    try:
        await request.websocket.send("score")
    except ConnectionClosed as exc:
        print(exc.code, exc.reason)
    return None


def lobby(request: HttpRequest) -> JsonResponse:
    # Presence, counters and per-group policies, as docs/topics/groups.rst shows them.
    groups.configure("ticker", slow_consumer="drop_oldest", queue_size=100)
    groups.configure("room:*", slow_consumer="drop_new")
    members = groups.members("room:lobby")
    names = [m.info["name"] for m in members if m.user_id is not None]
    first: groups.Member | None = members[0] if members else None
    stats = groups.stats()
    dropped: int = stats["total"]["dropped_oldest"] + stats["total"]["dropped_new"]
    backend = groups.get_backend()
    if isinstance(backend, RedisGroupBackend):
        dropped += backend.stats()["subscriber_disconnects"]
    print(groups.get_backend().stats()["total"])
    return JsonResponse(
        {"count": groups.count("room:lobby"), "names": names, "since": first and first.joined_at, "dropped": dropped}
    )


def pump(ws: WebSocketConnection, messages: list[Message]) -> None:
    ws.accept(ws.choose_subprotocol())
    for message in messages:
        ws.send(message)
    ws.add_close_callback(lambda connection: print(connection.close_code))
    if not ws.start_close(CloseCode.NORMAL_CLOSURE, "done"):
        ws.fail(1011, "gone")


async def async_pump(ws: AsyncWebSocketConnection, messages: list[Message]) -> None:
    await ws.accept()
    for message in messages:
        await ws.send(message)
    ws.add_close_callback(lambda connection: print(connection.end_reason))


@method_decorator(accept_websocket, name="dispatch")
class EchoView(View):
    def get(self, request: HttpOrWebSocketRequest) -> HttpResponse | None:
        if request.websocket is None:
            return HttpResponse("Connect with a WebSocket client.")
        for message in request.websocket:
            request.websocket.send(message)
        return None


@method_decorator(require_websocket(max_message_size=4096), name="dispatch")
class StrictEchoView(View):
    def get(self, request: WebSocketRequest) -> None:
        for message in request.websocket:
            request.websocket.send(message)


def plain(request: WebSocketRequest) -> None:
    request.websocket.send("decorated in the URLconf")


urlpatterns = [
    path("echo", echo),
    path("async-echo", async_echo),
    path("chat/<str:room>", chat),
    path("async-room/<str:room>", async_room),
    path("scoreboard", scoreboard),
    path("async-scoreboard", async_scoreboard),
    path("cbv", EchoView.as_view()),
    path("strict-cbv", StrictEchoView.as_view()),
    path("plain", require_websocket(plain)),
    path("lobby", lobby),
    path("plain-with-options", require_websocket(plain, subprotocols=["v1"])),
]
