"""Settings of the benchmark server: the test project, with a view reporting memory allocations.

``BENCH_TRACEMALLOC=1`` starts tracemalloc when the server loads (before any connection), so that
``/tracemalloc`` can tell where the memory of the open connections went; ``BENCH_GC_LOG=N``
prints in the server's log each collection of generation N or older, what it found and its time.
"""

import os
import sys
import tracemalloc

from tests.settings import *  # noqa: F403

ROOT_URLCONF = "benchmarks.urls"
# Only the warnings: thousands of connections must not mean thousands of log lines.
LOGGING["loggers"]["django_websocket"]["level"] = "WARNING"  # noqa: F405

if "BENCH_PING_INTERVAL" in os.environ:
    WEBSOCKET_PING_INTERVAL = float(os.environ["BENCH_PING_INTERVAL"]) or None

if os.environ.get("BENCH_SWITCH_INTERVAL"):
    # How often a thread holding the GIL hands it over (5 ms by default): benchmarks/detached.py
    # measures what a thread writing to thousands of sockets costs the others' requests.
    sys.setswitchinterval(float(os.environ["BENCH_SWITCH_INTERVAL"]))

if os.environ.get("BENCH_TRACEMALLOC") and not tracemalloc.is_tracing():
    tracemalloc.start(int(os.environ["BENCH_TRACEMALLOC"]))

if os.environ.get("BENCH_REFERENCE"):
    # The reference (reference_geventwebsocket.py): no django_websocket in the request's path.
    MIDDLEWARE = [m for m in MIDDLEWARE if not m.startswith("django_websocket.")]  # noqa: F405

if os.environ.get("BENCH_USUAL_MIDDLEWARE"):
    # What `django-admin startproject` writes (sessions, CSRF, auth, messages, clickjacking), and
    # this app's middleware: the memory a real project's idle socket keeps.
    INSTALLED_APPS = [*INSTALLED_APPS, "django.contrib.messages"]  # noqa: F405
    MIDDLEWARE = [
        "django.middleware.security.SecurityMiddleware",
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.middleware.common.CommonMiddleware",
        "django.middleware.csrf.CsrfViewMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        "django.contrib.messages.middleware.MessageMiddleware",
        "django.middleware.clickjacking.XFrameOptionsMiddleware",
        "django_websocket.middleware.WebSocketMiddleware",
    ]

if os.environ.get("BENCH_GC_LOG"):
    # Every collection of the generation given or older, in the server's log: when the cyclic
    # collector runs during a burst of handshakes, and what it finds.
    import gc
    import time as _time

    _gc_started = []

    def _gc_log(phase, info, _min=int(os.environ["BENCH_GC_LOG"])):
        if info["generation"] < _min:
            return
        if phase == "start":
            _gc_started[:] = [_time.perf_counter()]
        else:
            took = (_time.perf_counter() - _gc_started[0]) * 1000
            print(f"gc gen{info['generation']}: {info['collected']} collected in {took:.1f} ms", flush=True)

    gc.callbacks.append(_gc_log)
