from django.shortcuts import render

from django_websocket import require_websocket


def index(request):
    return render(request, "echo/index.html")


@require_websocket
def echo(request):
    # The 2010 example: every message comes back as it came, text as text, binary as binary.
    for message in request.websocket:
        request.websocket.send(message)
