"""Views for the tests of django_websocket.testing (tests/test_testing.py, tests/test_browser.py)."""

import json
import time

from django.contrib.auth import get_user_model
from django.http import HttpResponse

from django_websocket import accept_websocket, require_websocket


@require_websocket
def whoami(request):
    request.websocket.send(request.user.username if request.user.is_authenticated else "anonymous")


def remember(request):
    # Plain HTTP: stores a value in the session, which the WebSocket view below then reads.
    request.session["remembered"] = request.GET["value"]
    return HttpResponse("ok")


@require_websocket
def recall(request):
    request.websocket.send(request.session.get("remembered", ""))


@require_websocket
def users(request):
    """Works on the database for each command: "count", or "create NAME"."""
    User = get_user_model()
    for message in request.websocket:
        command, _, name = message.partition(" ")
        if command == "create":
            User.objects.create(username=name)
        request.websocket.send(json.dumps({"count": User.objects.count()}))


@require_websocket
def stubborn(request):
    # Keeps running after the connection ended: the client must report it.
    request.websocket.wait()
    time.sleep(1.0)


@require_websocket
def slow_to_answer(request):
    # Neither accepts nor refuses for a while.
    time.sleep(1.0)
    request.websocket.send("late")


@require_websocket
def goodbye(request):
    request.websocket.close()


@accept_websocket
def echo_page(request):
    """A page whose script echoes through this same URL: the browser test of the live server."""
    if request.websocket is None:
        return HttpResponse(ECHO_PAGE)
    for message in request.websocket:
        request.websocket.send(message)


ECHO_PAGE = """<!doctype html>
<html><head><title>echo</title></head>
<body><p id="state">connecting</p><p id="reply"></p>
<script>
  const socket = new WebSocket("ws://" + location.host + location.pathname);
  socket.onopen = () => {
    document.getElementById("state").textContent = "open";
    socket.send("hello from the browser");
  };
  socket.onmessage = (event) => { document.getElementById("reply").textContent = event.data; };
</script></body></html>
"""


# --- async views, driven by the same client ---------------------------------------------------------


@require_websocket
async def async_users(request):
    """As users, in an async view: "count" or "create NAME"."""
    User = get_user_model()
    async for message in request.websocket:
        command, _, name = message.partition(" ")
        if command == "create":
            await User.objects.acreate(username=name)
        await request.websocket.send(json.dumps({"count": await User.objects.acount()}))


@require_websocket
async def async_whoami(request):
    user = await request.auser() if hasattr(request, "auser") else request.user
    await request.websocket.send(user.username if user.is_authenticated else "anonymous")


@require_websocket
async def async_refuse(request):
    if request.GET.get("token") != "secret":
        return HttpResponse("bad token", status=403)
    await request.websocket.send("welcome")


@require_websocket
async def async_crash(request):
    await request.websocket.send("about to fail")
    raise RuntimeError("boom in an async WebSocket view")


@require_websocket(subprotocols=["chat.v2", "chat.v1"])
async def async_closer(request):
    await request.websocket.send(request.websocket.protocol or "")
    await request.websocket.close(4001, "done here")
