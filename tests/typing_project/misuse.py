"""Mistakes the documented types catch: each line marked ``# error: CODE[, CODE]`` must be
reported by ``mypy --strict`` with those error codes, and nothing else (tests/test_types.py)."""

from django.http import HttpResponse

from django_websocket import (
    AsyncWebSocketRequest,
    HttpOrWebSocketRequest,
    WebSocketRequest,
    accept_websocket,
    groups,
    require_websocket,
)


@require_websocket
def sends_a_float(request: WebSocketRequest) -> None:
    request.websocket.send(1.5)  # error: arg-type
    request.websocket.send({"price": 12.5})  # error: arg-type
    request.websocket.close("bye")  # error: arg-type
    groups.send("room", 1.5)  # error: arg-type


@require_websocket
def ignores_the_end(request: WebSocketRequest) -> None:
    text: str = request.websocket.wait()  # error: assignment
    print(text.upper())


@accept_websocket
def forgets_plain_http(request: HttpOrWebSocketRequest) -> HttpResponse:
    request.websocket.send("hello")  # error: union-attr
    return HttpResponse("page")


@require_websocket
async def forgets_await(request: AsyncWebSocketRequest) -> None:
    request.websocket.send("hello")  # error: unused-coroutine
    for message in request.websocket:  # error: attr-defined
        print(message)


@require_websocket(max_message_size="1 MiB")  # error: call-overload, untyped-decorator
def bad_option(request: WebSocketRequest) -> None: ...


@require_websocket(max_size=1024)  # error: call-overload, untyped-decorator
def unknown_option(request: WebSocketRequest) -> None: ...


@require_websocket
def echo(request: WebSocketRequest, room: str) -> None: ...


echo("not a request", "room")  # error: arg-type


def misreads_groups() -> None:
    groups.configure("ticker", queue_size="100")  # error: arg-type
    total: str = groups.count("room")  # error: assignment
    print(total, groups.members("room")[0].name)  # error: attr-defined
    groups.get_backend().send("room", 1.5)  # error: arg-type
