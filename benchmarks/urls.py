"""The benchmark's URLs: the test project's echo view, the same view as a group member, and the
allocation report; the test project's plain view and the views of its detached sockets
(``tests/detach_views.py``, for benchmarks/detached.py)."""

import gc
import tracemalloc

from django.http import HttpResponse
from django.urls import path

from django_websocket import require_websocket
from tests import detach_views, group_views, views

_baseline = []


@require_websocket
def group_echo(request):
    """The echo view of a socket that joined a group first: what an idle group member costs."""
    request.websocket.join("idle")
    for message in request.websocket:
        request.websocket.send(message)


def _echo_back(websocket, message):
    websocket.send(message)


@require_websocket
def detached_echo(request):
    """The same group member, detached: the view returns, the reactor keeps the socket and its
    worker echoes each message (what an idle detached socket costs)."""
    request.websocket.join("idle")
    request.websocket.detach(_echo_back)


def trim(request):
    """Return the heap's free memory to the system (glibc's malloc_trim), then report RSS in
    KiB: what of the resident memory is freed memory the allocator kept."""
    import ctypes
    import os

    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open(f"/proc/{os.getpid()}/status") as f:
        rss = next(line.split()[1] for line in f if line.startswith("VmRSS:"))
    return HttpResponse(rss)


def raw_echo(request):
    """The reference: echo with gevent-websocket's own object, as a view did before this app."""
    websocket = request.environ["wsgi.websocket"]
    while True:
        message = websocket.receive()
        if message is None:
            break
        websocket.send(message)
    return HttpResponse()


def allocations(request):
    """``?baseline``: remember the allocations now; else the top allocation sites since then."""
    if not tracemalloc.is_tracing():
        return HttpResponse("start the server with BENCH_TRACEMALLOC=<frames>\n", status=409)
    gc.collect()
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<frozen importlib._bootstrap>")]
    )
    if "baseline" in request.GET or not _baseline:
        _baseline[:] = [snapshot]
        return HttpResponse("baseline taken\n")
    group = request.GET.get("group", "lineno")
    top = int(request.GET.get("top", 25))
    stats = snapshot.compare_to(_baseline[0], group)
    lines = [f"{'KiB':>9} {'count':>8}  where"]
    for stat in stats[:top]:
        frames = stat.traceback.format(limit=int(request.GET.get("frames", 1)))
        lines.append(f"{stat.size_diff / 1024:9.1f} {stat.count_diff:8d}  " + "\n                    ".join(frames))
    total = sum(stat.size_diff for stat in stats)
    lines.append(f"{total / 1024:9.1f}           total traced growth")
    return HttpResponse("\n".join(lines) + "\n", content_type="text/plain")


def stats(request):
    """How many greenlets are alive in the server (benchmarks/stress.py counts them)."""
    import json

    from greenlet import greenlet

    gc.collect()
    count = sum(1 for obj in gc.get_objects() if isinstance(obj, greenlet) and not obj.dead)
    return HttpResponse(json.dumps({"greenlets": count}), content_type="application/json")


urlpatterns = [
    path("echo", views.echo),
    path("group-echo", group_echo),
    path("detached-echo", detached_echo),
    path("trim", trim),
    path("stats", stats),
    path("raw-echo", raw_echo),
    path("tracemalloc", allocations),
    path("plain", views.plain),
    path("detach/notify", detach_views.notify),
    path("detach/send-sequence", detach_views.send_sequence),
    path("detach/status", detach_views.status),
    path("groups/members", group_views.members),
]
