"""Views of tests/test_soundness.py: slow clients, floods, races and the teardown."""

import json
import os
import threading
import time

from django.http import HttpResponse

from django_websocket import require_websocket

# What views saw, for the tests that run a server in their own process (thread_server).
EVENTS = []


@require_websocket
def send_big(request):
    # One large binary message, for a client that reads it slowly but steadily.
    size = int(request.GET["size"])
    request.websocket.send(bytes(size))
    request.websocket.wait()


@require_websocket
def send_forever(request):
    # Sends until the connection ends (a client that never reads blocks this view in send()).
    try:
        while True:
            request.websocket.send("x" * 65536)
    finally:
        EVENTS.append("send-forever-ended")


@require_websocket
def push_loop(request):
    # The push loop of docs/howto/send-without-waiting.rst ("Only sending, but still reading"),
    # which reports its memory and how long its read() calls took, while a client floods it.
    ws = request.websocket
    longest_read = 0.0
    reads = 0
    while True:
        started = time.monotonic()
        message = ws.read()
        longest_read = max(longest_read, time.monotonic() - started)
        reads += message is not None
        if ws.closed:
            return
        ws.send(json.dumps({"longest_read": longest_read, "reads": reads, "queued": ws.count_messages()}))
        time.sleep(0.05)


@require_websocket
def racing_senders(request):
    # Two threads make the first use of a fresh connection at the same moment.
    ws = request.websocket
    barrier = threading.Barrier(2)

    def other():
        barrier.wait()
        ws.send("from the other thread")

    thread = threading.Thread(target=other)
    thread.start()
    barrier.wait()
    ws.send("from the view")
    thread.join()
    ws.wait()


@require_websocket
def join_quietly(request):
    # Joins a group and waits, without sending anything first.
    ws = request.websocket
    ws.join(request.GET["group"])
    for _message in ws:
        pass


@require_websocket
def closed_by_another_thread(request):
    # Another thread closes the connection while the view is blocked in wait(): the view must
    # wake up, whatever the client does (this one never answers the close frame).
    ws = request.websocket
    timer = threading.Timer(0.3, ws.close, args=(4000, "from another thread"))
    timer.start()
    started = time.monotonic()
    result = ws.wait()
    EVENTS.append(("woke", result, round(time.monotonic() - started, 2)))
    timer.join()


@require_websocket
def callback_after_end(request):
    ws = request.websocket
    ws.wait()  # until the client closes
    ws.add_close_callback(lambda websocket: EVENTS.append(("late-callback", websocket.close_code)))


@require_websocket
def unanswered_pings(request):
    # Pings the client never answers, then one it answers: every waiter is released.
    ws = request.websocket
    waiters = [ws.ping(f"p{i}") for i in range(200)]
    ws.send("pinged")
    ws.wait()  # the client answers the last ping, then sends a message
    EVENTS.append(("pings", sum(w.is_set() for w in waiters), len(ws._pong_waiters)))
    ws.send("done")
    ws.wait()


def memory(request):
    """This process's resident memory, in KiB."""
    with open(f"/proc/{os.getpid()}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return HttpResponse(line.split()[1], content_type="text/plain")
    return HttpResponse("0", content_type="text/plain")
