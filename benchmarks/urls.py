"""The benchmark's URLs: the test project's echo view, the same view as a group member, and the
allocation report; where the server's memory is (``/memory``: glibc's heap, pymalloc's arenas,
the cyclic collector), which greenlets are alive and where they wait (``/alive``, ``/stacks``);
the test project's plain view and the views of its detached sockets (``tests/detach_views.py``,
for benchmarks/detached.py)."""

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
    import time

    gc.collect()
    started = time.perf_counter(), time.process_time()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    # Its cost, in the server's log.
    wall, cpu = time.perf_counter() - started[0], time.process_time() - started[1]
    print(f"malloc_trim(0): {wall * 1000:.2f} ms, {cpu * 1000:.2f} ms of CPU", flush=True)
    with open(f"/proc/{os.getpid()}/status") as f:
        rss = next(line.split()[1] for line in f if line.startswith("VmRSS:"))
    return HttpResponse(rss)


def memory(request):
    """Where the server's resident memory is, in KiB, as JSON: ``rss``; ``heap`` (glibc's main
    arena, from ``[heap]`` in smaps) and ``anon`` (other anonymous mappings: pymalloc's arenas,
    large allocations); glibc's ``mallinfo2`` (``in_use``, ``free`` in its heap, ``mmapped``);
    pymalloc's own figures (arenas, and the bytes of its blocks in use and free)."""
    import ctypes
    import json
    import os
    import re
    import sys
    import tempfile
    import time

    stats_before = gc.get_stats()
    tracked = len(gc.get_objects())
    started = time.perf_counter()
    found = gc.collect()
    figures = {
        "gc_tracked": tracked,
        "gc_found": found,
        "gc_ms": round((time.perf_counter() - started) * 1000, 1),
        "gc_collections": [g["collections"] for g in stats_before],
        "heap": 0,
        "anon": 0,
    }
    kind = None
    with open(f"/proc/{os.getpid()}/smaps") as f:
        for line in f:
            first = line.split(None, 6)
            if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
                name = first[5].strip() if len(first) > 5 else ""
                kind = "heap" if name == "[heap]" else "anon" if not name else None
            elif kind and line.startswith("Rss:"):
                figures[kind] += int(first[1])
    with open(f"/proc/{os.getpid()}/status") as f:
        figures["rss"] = int(next(line.split()[1] for line in f if line.startswith("VmRSS:")))

    class Mallinfo2(ctypes.Structure):
        _fields_ = [
            (name, ctypes.c_size_t)
            for name in "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()
        ]

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = Mallinfo2
    info = libc.mallinfo2()
    figures.update(in_use=info.uordblks // 1024, free=info.fordblks // 1024, mmapped=info.hblkhd // 1024)
    # sys._debugmallocstats() writes to the C stderr: read it back from a file (a pipe could
    # fill before it is read).
    with tempfile.TemporaryFile() as out:
        saved = os.dup(2)
        os.dup2(out.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        out.seek(0)
        stats = out.read().decode(errors="replace")
    for label, key in (
        ("# arenas allocated current", "arenas"),
        ("# bytes in allocated blocks", "pymalloc_used"),
        ("# bytes in available blocks", "pymalloc_free"),
        ("# bytes lost to pool headers", "pool_headers"),
        ("# bytes lost to quantization", "quantization"),
        ("# bytes lost to arena alignment", "alignment"),
    ):
        match = re.search(re.escape(label) + r"\s*=\s*([\d,]+)", stats)
        if match:
            value = int(match.group(1).replace(",", ""))
            figures[key] = value if key == "arenas" else value // 1024
    match = re.search(r"(\d+) unused pools \* (\d+) bytes", stats)
    if match:
        figures["pymalloc_unused_pools"] = int(match.group(1)) * int(match.group(2)) // 1024
    return HttpResponse(json.dumps(figures), content_type="application/json")


def alive(request):
    """Greenlets alive and ``WSGIRequest`` objects in memory now, without collecting, as JSON."""
    import json

    from django.core.handlers.wsgi import WSGIRequest
    from greenlet import greenlet

    counts = {"greenlets": 0, "requests": 0}
    for obj in gc.get_objects():
        if isinstance(obj, greenlet) and not obj.dead:
            counts["greenlets"] += 1
        elif type(obj) is WSGIRequest:
            counts["requests"] += 1
    return HttpResponse(json.dumps(counts), content_type="application/json")


def stacks(request):
    """Where the live greenlets are suspended: their innermost frames, counted, as text."""
    import collections
    import traceback

    from greenlet import greenlet

    where = collections.Counter()
    for obj in gc.get_objects():
        if isinstance(obj, greenlet) and not obj.dead and obj.gr_frame is not None:
            frames = traceback.extract_stack(obj.gr_frame)[-int(request.GET.get("frames", 6)) :]
            where["\n  ".join(f"{f.filename}:{f.lineno} {f.name}" for f in frames)] += 1
    lines = [f"{count} at\n  {stack}" for stack, count in where.most_common(5)]
    return HttpResponse("\n".join(lines) + "\n", content_type="text/plain")


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
    path("memory", memory),
    path("alive", alive),
    path("stacks", stacks),
    path("stats", stats),
    path("raw-echo", raw_echo),
    path("tracemalloc", allocations),
    path("plain", views.plain),
    path("detach/notify", detach_views.notify),
    path("detach/send-sequence", detach_views.send_sequence),
    path("detach/status", detach_views.status),
    path("groups/members", group_views.members),
]
