from django.shortcuts import render

from django_websocket import accept_websocket


@accept_websocket
def echo(request):
    # The 2010 example: every message comes back as it came, text as text, binary as binary.
    # The same URL serves the page (plain HTTP) and the socket its script opens.
    if not request.is_websocket():
        return render(request, "echo/echo.html")
    for message in request.websocket:
        request.websocket.send(message)
