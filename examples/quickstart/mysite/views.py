from django_websocket import require_websocket


@require_websocket
def echo(request):
    for message in request.websocket:
        request.websocket.send(message)
