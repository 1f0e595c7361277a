"""Chat rooms: every message goes to everyone in the room, through a group.

The room page and its socket share one URL (``/chat/<room>/``). The view puts the socket in the
group ``chat:<room>``, with the user's name as its presence info, and sends each message it
receives to that group: a member's socket gets the message from its own sender thread, whatever
its view is doing, so the view just loops over its socket. Who is in the room is the group's
members (``/chat/<room>/members/``, which the page asks again whenever someone comes or goes).
On the in-memory backend (the default) a room spans the sockets of one process, which is all of
``runserver``; with the Redis backend (``REDIS_URL``, see the project's settings) a room spans
every worker and host.
"""

import json
import logging
import random

from django.http import JsonResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.text import slugify

from django_websocket import accept_websocket, groups

logger = logging.getLogger(__name__)

ROOMS = ["lobby", "django", "websockets"]
MAX_LENGTH = 500  # characters of one chat message


def index(request):
    """Pick a room: one of the list, or any name typed in the form."""
    name = slugify(request.GET.get("room", ""))
    if name:
        return redirect("chat:room", room=name)
    return render(request, "chat/index.html", {"rooms": ROOMS, "name": display_name(request)})


def display_name(request):
    """The user's name when logged in, else a name kept in the session: "anonymous-NNN"."""
    if request.user.is_authenticated:
        return request.user.get_username()
    name = request.session.get("chat_name")
    if name is None:
        # Set when the page is served; the socket's request then finds it in the session.
        name = request.session["chat_name"] = f"anonymous-{random.randint(100, 999)}"
    return name


@accept_websocket
def room(request, room):
    """The room's page, and the socket its script opens on the same URL."""
    if not request.is_websocket():
        return render(request, "chat/room.html", {"room": room, "name": display_name(request)})
    chat(request.websocket, f"chat:{room}", display_name(request))


def members(request, room):
    """Who is in the room, as JSON: ``{"members": ["ada", "anonymous-123", ...]}``, in the order
    they came (a user with two tabs open is there twice)."""
    try:
        found = groups.members(f"chat:{room}")
    except groups.BackendUnavailable:
        return JsonResponse({"error": "The chat is unavailable."}, status=503)
    return JsonResponse({"members": [member.info["name"] for member in found]})


# chat-start
def chat(websocket, group, name):
    # The membership ends by itself when the socket closes; its info is what members() tell.
    websocket.join(group, info={"name": name})
    websocket.send(json.dumps({"type": "welcome", "user": name}))
    announce(group, {"type": "joined", "user": name}, exclude=websocket)
    try:
        for text in websocket:
            if not isinstance(text, str) or not text.strip():
                continue  # binary or blank: not chat
            message = {"type": "message", "user": name, "text": text[:MAX_LENGTH], "at": timezone.now()}
            try:
                groups.send_json(group, message)
            except groups.BackendUnavailable:
                # Redis is down: say so to this user rather than lose the message silently.
                error = {"type": "error", "text": "Not delivered: the chat is unavailable, try again."}
                websocket.send(json.dumps(error))
    finally:
        # Out of the room before saying so: whoever asks who is in it then no longer sees us.
        websocket.leave(group)
        announce(group, {"type": "left", "user": name})


def announce(group, notice, exclude=None):
    try:
        groups.send_json(group, notice, exclude=exclude)
    except groups.BackendUnavailable as exc:
        logger.warning("Chat notice lost: %s", exc)  # a notice is not worth failing the view


# chat-end
