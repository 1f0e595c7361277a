"""Views exercised by the tests over real sockets."""

import json
import os
import threading
import time

from django.core.signals import request_finished
from django.db import connections
from django.db.backends.signals import connection_created
from django.dispatch import receiver
from django.http import HttpResponse, HttpResponseForbidden
from django.utils.decorators import method_decorator
from django.views import View

from django_websocket import accept_websocket, require_websocket
from django_websocket.exceptions import ConnectionClosed

# Filled by the request_finished handler: tests read it through the /finished view.
FINISHED = []
# The results of the latest "batch" of the probe view, also readable over HTTP at /last-results.
LAST_RESULTS = {}
# A server with several processes (gunicorn --workers 2) may answer /finished or /last-results
# from another process than the one that ran the view: tests/servers.py then gives them all a
# directory where these two are kept too.
STATE_DIR = os.environ.get("TESTS_STATE_DIR")


# Set by /finished-probe while its view runs, in its own thread (a greenlet under gevent).
_PROBE = threading.local()


@receiver(request_finished)
def _on_finished(sender, **kwargs):
    FINISHED.append(time.monotonic())
    probe = getattr(_PROBE, "name", None)
    if probe and STATE_DIR:
        # request_finished fires in the thread that served the request, once the view ended.
        _PROBE.name = None
        with open(os.path.join(STATE_DIR, "probe-finished"), "a") as f:
            f.write(probe + "\n")
    if STATE_DIR:
        # One byte per request, appended atomically whichever process writes it.
        with open(os.path.join(STATE_DIR, "finished"), "ab") as f:
            f.write(b".")


def _finished_total():
    if STATE_DIR:
        try:
            return os.path.getsize(os.path.join(STATE_DIR, "finished"))
        except FileNotFoundError:
            return 0
    return len(FINISHED)


def _save_last_results():
    if STATE_DIR:
        path = os.path.join(STATE_DIR, "last-results")
        with open(f"{path}.{os.getpid()}", "w") as f:
            json.dump(LAST_RESULTS, f)
        os.replace(f"{path}.{os.getpid()}", path)


@require_websocket
def echo(request):
    for message in request.websocket:
        request.websocket.send(message)


def _count_opened(alias="file"):
    """A list that grows each time this thread opens the ``alias`` database."""
    thread = threading.get_ident()
    opened = []

    def on_created(sender, connection, **kwargs):
        if connection.alias == alias and threading.get_ident() == thread:
            opened.append(connection)

    connection_created.connect(on_created, weak=False)
    return opened, lambda: connection_created.disconnect(on_created)


def _query(alias="file"):
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT 1")


@require_websocket
def database_ticks(request):
    # A view polling with wait(timeout) and a query per tick, as dashboards do: answers how many
    # times its thread opened the database over ?ticks= ticks of ?interval= seconds.
    opened, stop = _count_opened()
    try:
        ws = request.websocket
        ticks, interval = int(request.GET.get("ticks", 20)), float(request.GET.get("interval", 0.1))
        _query()
        for _ in range(ticks):
            ws.wait(timeout=interval)
            _query()
        ws.send(str(len(opened)))
        ws.wait()
    finally:
        stop()


@require_websocket
def database_idle(request):
    # Touches the database during the handshake (as request.user through sessions does), then
    # waits; each message is answered, after a query, with how many times the thread opened it.
    opened, stop = _count_opened()
    try:
        _query()
        request.websocket.send("ready")
        for _message in request.websocket:
            _query()
            request.websocket.send(str(len(opened)))
    finally:
        stop()


@accept_websocket
def database_transactions(request):
    # Under ATOMIC_REQUESTS: a WebSocket view runs outside the request's transaction and its own
    # atomic() blocks work; a plain request to the same view is inside the transaction.
    from django.db import transaction

    conn = connections["file"]
    if not request.is_websocket():
        return HttpResponse(f"in_atomic_block={conn.in_atomic_block}")
    with conn.cursor() as cursor:
        cursor.execute("CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, text TEXT)")
    for message in request.websocket:
        with transaction.atomic(using="file"):
            with conn.cursor() as cursor:
                cursor.execute("INSERT INTO notes (text) VALUES (%s)", [message])
        with conn.cursor() as cursor:
            cursor.execute("SELECT COUNT(*) FROM notes WHERE text = %s", [message])
            (count,) = cursor.fetchone()
        request.websocket.send(json.dumps({"count": count, "in_atomic_block": conn.in_atomic_block}))


@accept_websocket
def accept(request):
    if not request.is_websocket():
        return HttpResponse("plain http")
    for message in request.websocket:
        request.websocket.send(message)


def plain(request):
    return HttpResponse(f"plain view, is_websocket={request.is_websocket()}")


@require_websocket(subprotocols=["chat.v2", "chat.v1"])
def subprotocol(request):
    request.websocket.send(request.websocket.protocol or "")


@require_websocket
def refuse(request):
    # The view's own check, before any use of the WebSocket: a normal HTTP answer, no upgrade.
    if request.GET.get("token") != "secret":
        return HttpResponseForbidden("bad token")
    request.websocket.send("welcome")


@require_websocket
def crash(request):
    request.websocket.send("about to fail")
    raise RuntimeError("boom in a WebSocket view")


@require_websocket
def custom_attribute(request):
    # Projects hang their own state on the connection object.
    request.websocket.room = request.GET.get("room", "lobby")
    request.websocket.send(request.websocket.room)


@require_websocket
def unmasking(request):
    # An echo that also names the unmasking routine this server process uses.
    from django_websocket import frames

    for message in request.websocket:
        if message == "report unmasking":
            message = frames.apply_mask.__name__
        request.websocket.send(message)


@require_websocket(max_message_size=1000)
def small(request):
    for message in request.websocket:
        request.websocket.send(message)


@require_websocket
def returns_value(request):
    request.websocket.send("hello")
    return HttpResponse("ignored: the connection is already upgraded")


@require_websocket
def server_close(request):
    request.websocket.send("bye")
    request.websocket.close(4001, "done here")


def _run(ws, command):
    op = command["op"]
    if op == "wait":
        result = ws.wait(command.get("timeout"))
    elif op == "read":
        result = ws.read(command.get("fallback"))
    elif op == "has_messages":
        result = ws.has_messages()
    elif op == "count_messages":
        result = ws.count_messages()
    elif op == "finished":
        result = _finished_total()
    else:
        result = f"unknown op {op!r}"
    if isinstance(result, bytes):
        result = {"bytes": result.hex()}
    return result


@require_websocket
def probe(request):
    """Runs the operations the client asks for, so that tests can observe the API's semantics.

    Each text message is a JSON object {"op": ..., ...}, answered by {"result": ..., "closed": ...}.
    {"op": "batch", "sleep": s, "steps": [...]} sleeps first (letting the client's next messages
    reach the socket), then runs each step and answers with the list of results.
    """
    ws = request.websocket
    while True:
        command = ws.wait()
        if command is None:
            return
        command = json.loads(command)
        if command["op"] == "close":
            ws.close(command.get("code", 1000), command.get("reason", ""))
            return
        if command["op"] == "batch":
            time.sleep(command.get("sleep", 0))
            result = [_run(ws, step) for step in command["steps"]]
            LAST_RESULTS.update(id=command.get("id"), result=result, closed=ws.closed)
            _save_last_results()
        else:
            result = _run(ws, command)
        ws.send(json.dumps({"result": result, "closed": ws.closed, "is_closed": ws.is_closed()}))


def last_results(request):
    if STATE_DIR and os.path.exists(os.path.join(STATE_DIR, "last-results")):
        with open(os.path.join(STATE_DIR, "last-results")) as f:
            return HttpResponse(f.read(), content_type="application/json")
    return HttpResponse(json.dumps(LAST_RESULTS), content_type="application/json")


def finished_count(request):
    return HttpResponse(str(_finished_total()))


@method_decorator(accept_websocket, name="dispatch")
class EchoView(View):
    def get(self, request):
        if request.websocket is None:
            return HttpResponse("class-based, plain http")
        for message in request.websocket:
            request.websocket.send(message)


# Things views report to the in-process tests (tests/test_safety.py).
EVENTS = []


@require_websocket(allowed_origins=["*"])
def public(request):
    request.websocket.send("public")


@require_websocket(allowed_origins=["https://partner.example"])
def partner(request):
    request.websocket.send("partner")


@require_websocket
def server_close_long(request):
    request.websocket.close(4000, "é" * 200)


@require_websocket
def flood(request):
    # Sends until the client (which never reads) makes a send time out.
    try:
        for _ in range(100_000):
            request.websocket.send("x" * 65536)
    finally:
        EVENTS.append("flood-ended")


def undecorated_echo(request):
    # No decorator: served only with WebSocketMiddleware and WEBSOCKET_ACCEPT_ALL = True.
    if not request.is_websocket():
        return HttpResponse("undecorated, plain http")
    for message in request.websocket:
        request.websocket.send(message)


def plain_no_middleware(request):
    return HttpResponse("plain, no middleware")


@accept_websocket
@accept_websocket
def same_object(request):
    # Decorated twice, with the middleware too: one WebSocket object, one handshake.
    websocket = request.websocket
    for message in websocket:
        assert request.websocket is websocket
        websocket.send(message)


def hand_marked(request):
    for message in request.websocket:
        request.websocket.send(message)


hand_marked.accept_websocket = True  # the 2010 way, with WebSocketMiddleware


def hand_required(request):
    return HttpResponse("never reached over plain HTTP")


hand_required.require_websocket = True


async def async_view(request):
    return HttpResponse("async")


@require_websocket
def raises_forbidden(request):
    from django_websocket.exceptions import ForbiddenHandshake

    raise ForbiddenHandshake("not you")


@require_websocket
def ticker(request):
    # Only sends; the client's close must still end it.
    try:
        while not request.websocket.closed:
            request.websocket.send("tick")
            time.sleep(0.05)
    finally:
        EVENTS.append("ticker-ended")


@require_websocket
def finished_probe(request):
    _PROBE.name = request.GET["name"]
    for message in request.websocket:
        request.websocket.send(message)


@require_websocket
async def async_echo(request):
    async for message in request.websocket:
        await request.websocket.send(message)

# --- for the server tests (tests/test_servers.py) ------------------------------------------------


def _with_length(content, **kwargs):
    # A length, so that the servers neither chunk the response nor close the connection after it.
    response = HttpResponse(content, **kwargs)
    response["Content-Length"] = str(len(response.content))
    return response


def large(request):
    # A plain response of ?size= bytes, which a slow client takes a while to read.
    return _with_length(b"x" * int(request.GET["size"]), content_type="application/octet-stream")


def upload(request):
    # Reads the whole request body, however slowly it arrives.
    return _with_length(str(len(request.body)))


def pid(request):
    return _with_length(str(os.getpid()))


@require_websocket
def two_senders(request):
    """Sends from two threads while this one reads: "go N [SIZE]" starts two threads each
    sending N messages "a:i" / "b:i" (followed by a space and SIZE bytes of padding if given);
    every other message is echoed; "join" waits for both threads, then sends "done"."""
    ws = request.websocket
    threads = []

    def sender(name, count, padding):
        try:
            for i in range(count):
                ws.send(f"{name}:{i}{padding}")
        except ConnectionClosed:
            pass  # the client went away

    for message in ws:
        if isinstance(message, str) and message.startswith("go "):
            count, _, size = message[3:].partition(" ")
            padding = " " + "p" * int(size) if size else ""
            args = [(name, int(count), padding) for name in "ab"]
            threads = [threading.Thread(target=sender, args=a) for a in args]
            for thread in threads:
                thread.start()
        elif message == "join":
            for thread in threads:
                thread.join(30)
            ws.send("done")
        else:
            ws.send(message)
