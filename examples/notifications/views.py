"""Notifications: a badge counting what was sent to the logged-in user, over a detached socket.

The page and its socket share one URL (``/notifications/``). The socket's view joins the group
``user:<pk>`` and detaches: it returns at once, and the connection lives on in the process's
reactor, holding no thread, greenlet, request or database connection while it waits. The page
only listens; what it might send is ignored. Anything in the project reaches a user's open pages
with ``notify(user, text)``: here, the form of the page, which POSTs to ``/notifications/send/``.
"""

from django.contrib.auth import get_user_model
from django.http import HttpResponseForbidden, JsonResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_POST

from django_websocket import accept_websocket, groups

MAX_LENGTH = 200  # characters of one notification


def user_group(user):
    """The group of every open page of ``user``: one per tab, on any process."""
    return f"user:{user.pk}"


def notify(user, text, sender=""):
    """Push a notification to the open pages of ``user`` (none open: nobody gets it)."""
    notice = {"type": "notification", "text": text[:MAX_LENGTH], "from": sender}
    groups.send_json(user_group(user), {**notice, "at": timezone.now()})


@accept_websocket
def page(request):
    """The page, and the socket its script opens on the same URL."""
    if not request.is_websocket():
        return render(request, "notifications/page.html")
    if not request.user.is_authenticated:
        # Refused before the 101: the page's client sees a failed connection.
        return HttpResponseForbidden("Log in to get notifications.")
    # detach-start
    websocket = request.websocket
    websocket.join(user_group(request.user))
    # The view returns now; the socket stays open, in the group, until the page goes away.
    websocket.detach(on_message="ignore")
    # detach-end


@require_POST
def send(request):
    """Notify the user named ``to`` (``text``); answers ``{"sent": "<name>"}``, or an error."""
    if not request.user.is_authenticated:
        return JsonResponse({"error": "Log in to send notifications."}, status=403)
    text = request.POST.get("text", "").strip()
    if not text:
        return JsonResponse({"error": "Write something to send."}, status=400)
    try:
        user = get_user_model()._default_manager.get_by_natural_key(request.POST.get("to", ""))
    except get_user_model().DoesNotExist:
        return JsonResponse({"error": "No such user."}, status=404)
    try:
        notify(user, text, sender=request.user.get_username())
    except groups.BackendUnavailable:
        return JsonResponse({"error": "Not sent: notifications are unavailable, try again."}, status=503)
    return JsonResponse({"sent": user.get_username()})
