"""This app side by side with the alternatives, measured the same way on the same machine.

Run by hand (it is not a test), from the repository's root, in the benchmark virtualenv that
benchmarks/requirements.txt describes::

    python -m venv benchmarks/.venv
    benchmarks/.venv/bin/pip install -r benchmarks/requirements.txt -e .
    benchmarks/.venv/bin/python benchmarks/compare.py                 # everything, ~13 minutes
    benchmarks/.venv/bin/python benchmarks/compare.py --quick         # 1 run, fewer scenarios
    benchmarks/.venv/bin/python benchmarks/compare.py --servers gevent websockets --scenarios echo100

Each server under test is started on 127.0.0.1 exactly as its documentation deploys it, pinned
to the first core (``taskset -c 0``), and driven by one load client pinned to the second
(benchmarks/compare_client.py: picows, whose framing is in C, on uvloop), then stopped. Every
scenario is a separate client process with a time limit; the whole run has a deadline.

Two suites of servers. ``--suite wsgi`` (the default): this app on runserver, on gevent (our
handler; with the pure-Python masking that the tests cover, and again with the optional C
unmasking), on gunicorn's gevent and gthread workers; Channels with a sync and an async consumer
on daphne, Channels on uvicorn (``--ws websockets``), a bare ``websockets`` server, a plain
Django view on gevent-websocket (no django_websocket in its path), picows itself as the ceiling
of Python servers, and a minimal echo on gevent with no Django
(benchmarks/peer_minimal_gevent.py) as the ceiling of this app's design. ``--suite asgi``: on
each ASGI server (uvicorn with its defaults, daphne, hypercorn, Granian; one process each), this
app's regular view (a thread per connection) and ``async def`` view
(benchmarks/compare_asgi_app.py), Channels' sync and async consumers (benchmarks/compare_asgi.py)
and a bare ASGI echo with no Django (compliance/asgi_echo.py), the ceiling on that server::

    benchmarks/.venv/bin/python benchmarks/compare.py --suite asgi --idle-counts 1000 10000

Scenarios: echo round trips of 32 bytes on 1, 100 and 1,000 connections at once (each one a
closed loop: send, wait for the echo, send again; msg/s, p50/p99 latency); echo of 1 MiB binary
messages on one connection (MB/s, 10^6 bytes of payload echoed per second); opening handshakes per
second (8 loops of connect, handshake, close); idle connections (1,000, 5,000, 10,000: the
server's resident memory per connection); and for this app the fan-out of one message to 1,000
sockets, in one process and across two through Redis (benchmarks/fanout.py).

Each figure is measured ``--runs`` times (3 by default). Runs are outer loops, so every server is
measured once per run, close in time to the others: the ratios to the targets are taken within
each run, then their median is given. For each window the client also reports its own CPU use,
the server's, and the rest of the machine's: a client near 100 % would be the bottleneck, and a
busy machine makes figures less trustworthy.
"""

import argparse
import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
SETTINGS = "benchmarks.compare_settings"
PLAIN = [str(BENCH / "without_accelerator.py")]  # our servers, pure Python
PY_SPY = str(Path(sys.executable).with_name("py-spy"))

# name: (label, argv after the interpreter with {host} {port} {addr}, WebSocket path, ours)
SERVERS = {
    "runserver": (
        "this app, runserver",
        [*PLAIN, "-m", "django", "runserver", "--noreload", "{addr}"],
        "/echo",
        True,
    ),
    "gevent": (
        "this app, gevent",
        [*PLAIN, "-m", "django_websocket.servers.gevent", "{addr}", "--settings", SETTINGS,
         "--no-access-log", "--backlog", "4096"],
        "/echo",
        True,
    ),
    "gevent-speedups": (
        # The [speedups] extra: websockets' C unmasking (wsaccel is also in this virtualenv; the
        # faster one is chosen).
        "this app, gevent + C unmasking",
        ["-m", "django_websocket.servers.gevent", "{addr}", "--settings", SETTINGS, "--no-access-log",
         "--backlog", "4096"],
        "/echo",
        True,
    ),
    "gunicorn-gevent": (
        "this app, gunicorn gevent worker",
        [*PLAIN, "-m", "gunicorn", "-k", "django_websocket.servers.gunicorn.GeventWorker", "--workers", "1",
         "--worker-connections", "12000", "--backlog", "4096", "--bind", "{addr}", "benchmarks.compare_wsgi"],
        "/echo",
        True,
    ),
    "gunicorn-gthread": (
        # One thread per open WebSocket: enough threads for the largest scenario.
        "this app, gunicorn gthread worker",
        [*PLAIN, "-m", "gunicorn", "-k", "django_websocket.servers.gunicorn.ThreadWorker", "--workers", "1",
         "--threads", "11000", "--worker-connections", "12000", "--backlog", "4096", "--bind", "{addr}",
         "benchmarks.compare_wsgi"],
        "/echo",
        True,
    ),
    "daphne-channels": (
        "Channels sync consumer, daphne",
        ["-m", "daphne", "-b", "{host}", "-p", "{port}", "-v", "0", "benchmarks.compare_asgi:application"],
        "/sync",
        False,
    ),
    "daphne-async-channels": (
        "Channels async consumer, daphne",
        ["-m", "daphne", "-b", "{host}", "-p", "{port}", "-v", "0", "benchmarks.compare_asgi:application"],
        "/async",
        False,
    ),
    "uvicorn-async": (
        "Channels async consumer, uvicorn --ws websockets",
        ["-m", "uvicorn", "benchmarks.compare_asgi:application", "--host", "{host}", "--port", "{port}",
         "--loop", "uvloop", "--http", "httptools", "--ws", "websockets", "--no-access-log",
         "--log-level", "warning", "--backlog", "4096"],
        "/async",
        False,
    ),
    "websockets": ("bare websockets (asyncio)", [str(BENCH / "peer_websockets.py"), "{addr}"], "/", False),
    "gevent-websocket": (
        "plain Django view, gevent-websocket",
        [str(BENCH / "reference_geventwebsocket.py"), "{addr}", "--settings", SETTINGS, "--no-access-log",
         "--backlog", "4096"],
        "/raw-echo",
        False,
    ),
    "picows": ("picows + uvloop (ceiling)", [str(BENCH / "peer_picows.py"), "{addr}"], "/", False),
    "gevent-minimal": (
        "minimal echo on gevent, no Django (this design's ceiling)",
        [str(BENCH / "peer_minimal_gevent.py"), "{addr}"],
        "/",
        False,
    ),
}  # fmt: skip
WSGI_SUITE = list(SERVERS)

# The ASGI servers, each as its guide deploys it (one process), with {app} the application:
# uvicorn with its defaults (uvloop and httptools where installed, as here, and websockets'
# sans-I/O implementation), daphne, hypercorn (asyncio), Granian's ASGI interface.
ASGI_SERVERS = {
    "uvicorn": ["-m", "uvicorn", "{app}", "--host", "{host}", "--port", "{port}", "--no-access-log",
                "--log-level", "warning", "--backlog", "4096"],
    "daphne": ["-m", "daphne", "-b", "{host}", "-p", "{port}", "-v", "0", "{app}"],
    "hypercorn": ["-m", "hypercorn", "--bind", "{addr}", "--backlog", "4096", "--log-level", "warning", "{app}"],
    "granian": ["-m", "granian", "--interface", "asgi", "--host", "{host}", "--port", "{port}", "--workers", "1",
                "--backlog", "4096", "--log-level", "warning", "{app}"],
}  # fmt: skip
# On each of them: (name suffix, label, application, path, ours). A bare ASGI echo (no Django,
# compliance/asgi_echo.py) is the ceiling on that server: what is left is the server's own
# framing and its event handling.
ASGI_APPLICATIONS = [
    ("view", "this app, sync view", "benchmarks.compare_asgi_app:application", "/echo", True),
    ("async-view", "this app, async view", "benchmarks.compare_asgi_app:application", "/aecho", True),
    ("channels", "Channels sync consumer", "benchmarks.compare_asgi:application", "/sync", False),
    ("async-channels", "Channels async consumer", "benchmarks.compare_asgi:application", "/async", False),
    ("bare", "bare ASGI echo, no Django", "compliance.asgi_echo:app", "/", False),
]
ASGI_SUITE = []
for _server, _argv in ASGI_SERVERS.items():
    for _suffix, _label, _app, _path, _ours in ASGI_APPLICATIONS:
        _name = f"{_server}-{_suffix}"
        ASGI_SUITE.append(_name)
        if _name not in SERVERS:  # daphne's Channels consumers are in the WSGI suite already
            _command = [arg.replace("{app}", _app) for arg in _argv]
            SERVERS[_name] = (f"{_label}, {_server}", _command, _path, _ours)
SUITES = {"wsgi": WSGI_SUITE, "asgi": ASGI_SUITE, "all": list(SERVERS)}

# Handshakes in flight while a client opens its connections: Django's development server listens
# with a backlog of 10, so more would be dropped SYNs and retries a second later.
CONNECT_CONCURRENCY = {"runserver": 8}
# Servers measured in some scenarios only: the accelerator changes nothing but unmasking.
ONLY = {"gevent-speedups": {"mib"}}

# name: (column title, client arguments)
SCENARIOS = {
    "echo1": ("echo 32 B, 1 conn (msg/s)", ["echo", "--connections", "1", "--size", "32"]),
    "echo100": ("100 conns (msg/s)", ["echo", "--connections", "100", "--size", "32"]),
    "echo1000": ("1,000 conns (msg/s)", ["echo", "--connections", "1000", "--size", "32"]),
    "mib": ("1 MiB binary echo (MB/s)", ["echo", "--connections", "1", "--size", str(2**20), "--binary"]),
    "handshake": ("handshakes/s", ["handshake", "--concurrency", "8"]),
}
IDLE_COUNTS = [1000, 5000, 10000]

# A window during which the rest of the machine used more than this (in cores) is "disturbed": on
# a shared machine another process took part of the server's or the client's core.
DISTURBED = 0.3

# (what, our server, scenario, peer, at least this ratio; or None: at most an absolute figure)
TARGETS = [
    ("gevent, echo 1 conn ≥ 1.2× websockets", "gevent", "echo1", "websockets", 1.2),
    ("gevent, echo 100 conns ≥ 1.4× websockets", "gevent", "echo100", "websockets", 1.4),
    ("gevent, echo 1,000 conns ≥ 1.4× websockets", "gevent", "echo1000", "websockets", 1.4),
    ("gevent, echo 100 conns ≥ 8× Channels on daphne", "gevent", "echo100", "daphne-channels", 8.0),
    ("gevent, echo 1,000 conns ≥ 8× Channels on daphne", "gevent", "echo1000", "daphne-channels", 8.0),
    ("gevent, 1 MiB echo ≥ 1× websockets (pure Python)", "gevent", "mib", "websockets", 1.0),
    ("gevent + C unmasking, 1 MiB echo ≥ 1× websockets", "gevent-speedups", "mib", "websockets", 1.0),
    ("runserver, echo 1 conn ≥ 1× Channels on daphne", "runserver", "echo1", "daphne-channels", 1.0),
]
for _server in ASGI_SERVERS:
    TARGETS += [
        (f"{_server}: sync view, echo 100 conns ≥ 2× Channels sync consumer", f"{_server}-view", "echo100",
         f"{_server}-channels", 2.0),
        (f"{_server}: async view, echo 100 conns ≥ 1.5× Channels async consumer", f"{_server}-async-view", "echo100",
         f"{_server}-async-channels", 1.5),
        (f"{_server}: async view, echo 100 conns ≥ 0.7× bare ASGI echo", f"{_server}-async-view", "echo100",
         f"{_server}-bare", 0.7),
    ]  # fmt: skip
    # The same comparisons elsewhere, and the sync view against the bare app: reported, no target.
    for _scenario, _what in (("echo1", "echo 1 conn"), ("echo1000", "echo 1,000 conns"), ("mib", "1 MiB echo")):
        TARGETS += [
            (f"{_server}: sync view, {_what} / Channels sync consumer", f"{_server}-view", _scenario,
             f"{_server}-channels", None),
            (f"{_server}: async view, {_what} / Channels async consumer", f"{_server}-async-view", _scenario,
             f"{_server}-async-channels", None),
            (f"{_server}: async view, {_what} / bare ASGI echo", f"{_server}-async-view", _scenario,
             f"{_server}-bare", None),
        ]  # fmt: skip
    TARGETS.append((f"{_server}: sync view, echo 100 conns / bare ASGI echo", f"{_server}-view", "echo100",
                    f"{_server}-bare", None))  # fmt: skip
IDLE_TARGET = ("gevent", 10000, 16.0)  # KiB per idle socket at most


# --- processes -------------------------------------------------------------------------------


def pinned(core):
    """The taskset prefix pinning a process to ``core``, where taskset and two cores exist."""
    if shutil.which("taskset") and (os.cpu_count() or 1) >= 2:
        return ["taskset", "-c", str(core)]
    return []


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, name):
        self.name = name
        label, argv, self.path, self.ours = SERVERS[name]
        self.port = free_port()
        values = {"host": "127.0.0.1", "port": str(self.port), "addr": f"127.0.0.1:{self.port}"}
        argv = [sys.executable, *(arg.format(**values) for arg in argv)]
        env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1", DJANGO_SETTINGS_MODULE=SETTINGS)
        # gunicorn >= 25.1 opens a control socket in $XDG_RUNTIME_DIR: one per server.
        env["XDG_RUNTIME_DIR"] = tempfile.mkdtemp(prefix=f"bench-{name}-run-")
        self.log = tempfile.NamedTemporaryFile("w", prefix=f"bench-{name}-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(
            [*pinned(0), *argv], cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.url = f"ws://127.0.0.1:{self.port}{self.path}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {self.proc.returncode}: see {self.log.name}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"{name} did not listen within 30 s: see {self.log.name}")

    def stop(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
            except ProcessLookupError:
                pass
        self.log.close()


def run_client(server, args, options, timeout):
    argv = [
        *pinned(1), sys.executable, str(BENCH / "compare_client.py"), *args, server.url,
        "--server-pids", str(server.proc.pid),
        "--connect-concurrency", str(CONNECT_CONCURRENCY.get(server.name, 32)),
        "--warmup", str(options.warmup), "--duration", str(options.duration),
    ]  # fmt: skip
    try:
        done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"the client did not finish within {timeout:.0f} s"}
    if done.returncode:
        return {"error": f"the client exited with {done.returncode}: {done.stderr.strip()[-300:]}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- profiles (--profile) -------------------------------------------------------------------

# Where a sample's innermost Python frame is, by its file (as py-spy names it): what part of the
# server spent it. C code (system calls, the servers' native parts) counts for the Python frame
# that called it; uvloop's own work (polling, running callbacks) for asyncio's Runner.run.
PROFILE_PARTS = [
    ("this app", ("django_websocket/", "compare_urls.py", "compare_asgi_app.py")),
    ("Channels", ("channels/", "asgiref/", "compare_asgi.py")),
    ("bare app", ("asgi_echo.py",)),
    ("Django", ("django/",)),
    ("event loop", ("asyncio/", "uvloop/", "asyncioreactor.py", "selectors.py")),
    ("threads", ("threading.py", "concurrent/")),
]


def start_profile(server, scenario, options, run):
    """py-spy on the server over the measured window of an echo (``--profile DIR``): samples
    of the thread holding the GIL, so that threads waiting count for nothing."""
    if not options.profile or not scenario.startswith("echo") or not shutil.which(PY_SPY):
        return None
    path = Path(options.profile) / f"{server.name}-{scenario}-run{run + 1}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    argv = [*pinned(1), PY_SPY, "record", "--pid", str(server.proc.pid), "--subprocesses", "--gil", "--nonblocking",
            "--rate", "250", "--format", "raw", "--output", str(path),
            "--duration", str(max(1, round(options.warmup + options.duration)))]  # fmt: skip
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), path


def finish_profile(process, path):
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    return profile_shares(path)


def profile_shares(path):
    """{part: share of the samples} of a py-spy raw profile (collapsed stacks)."""
    counts, total = {}, 0
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return {}
    for line in lines:
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        leaf = stack.rsplit(";", 1)[-1]
        # Anything else: the server's own code (its framing, its protocol, the standard library it calls).
        part = next((name for name, marks in PROFILE_PARTS if any(mark in leaf for mark in marks)), "the server")
        counts[part] = counts.get(part, 0) + int(count)
        total += int(count)
    return {part: count / total for part, count in counts.items()} if total else {}


# --- the runs --------------------------------------------------------------------------------


def measure(options, deadline, results):
    """results[name][scenario] = [one result per run]; idle under results[name]["idle"]."""
    scenarios = [s for s in options.scenarios if s in SCENARIOS]
    for run in range(options.runs):
        for name in options.servers:
            if time.monotonic() > deadline:
                print("deadline reached: stopping", file=sys.stderr)
                return
            wanted = [s for s in scenarios if s in ONLY.get(name, SCENARIOS)]
            if not wanted:
                continue
            server = Server(name)
            try:
                for scenario in wanted:
                    profiler = start_profile(server, scenario, options, run)
                    result = run_client(server, SCENARIOS[scenario][1], options, options.warmup + options.duration + 60)
                    if profiler is not None:
                        result["profile"] = finish_profile(*profiler)
                    results.setdefault(name, {}).setdefault(scenario, []).append(result)
                    print(f"run {run + 1} {name} {scenario}: {summary(scenario, result)}", file=sys.stderr)
            finally:
                server.stop()
        if "idle" in options.scenarios and run < options.idle_runs:
            for name in [n for n in options.servers if "idle" in ONLY.get(n, {"idle"})]:
                if time.monotonic() > deadline:
                    print("deadline reached: stopping", file=sys.stderr)
                    return
                server = Server(name)
                try:
                    args = ["idle", "--counts", *map(str, options.idle_counts), "--settle", str(options.settle)]
                    result = run_client(server, args, options, 300)
                finally:
                    server.stop()
                results.setdefault(name, {}).setdefault("idle", []).append(result)
                print(f"run {run + 1} {name} idle: {summary('idle', result)}", file=sys.stderr)


def summary(scenario, result):
    if "error" in result:
        return "ERROR " + result["error"]
    if scenario == "idle":
        return ", ".join(f"{r['connections']}: {r['kib_per_connection']:.1f} KiB" for r in result["rows"])
    cpu = f"(server {result['server_cpu']:.0%}, client {result['client_cpu']:.0%}, other {result['other_cpu']:.2f})"
    if scenario == "handshake":
        return f"{result['per_s']:,.0f}/s {cpu}"
    if scenario == "mib":
        return f"{result['mb_per_s']:,.0f} MB/s {cpu}"
    if not result["messages"]:
        return f"no echo within the window {cpu}"
    return f"{result['msg_per_s']:,.0f} msg/s p50 {result['p50_ms']:.2f} ms p99 {result['p99_ms']:.2f} ms {cpu}"


def figure(scenario, result):
    """The headline figure of one result, or None if the run failed."""
    if result is None or "error" in result:
        return None
    if result.get("wrong") or result.get("errors") or result.get("messages") == 0:
        return None
    return {"handshake": result.get("per_s"), "mib": result.get("mb_per_s")}.get(scenario, result.get("msg_per_s"))


def cpu_per_op(scenario, result):
    """Server CPU µs per round trip (or handshake): what each one cost the server."""
    done = figure(scenario, result)
    if not done:
        return None
    count = result["per_s"] if scenario == "handshake" else result["msg_per_s"]
    return result["server_cpu"] / count * 1e6


def idle_figure(result, count):
    if result is None or "error" in result:
        return None
    for row in result["rows"]:
        if row["connections"] == count and not row["failures"] and row["echoed"] == row["open"]:
            return row["kib_per_connection"]
    return None


# --- the report ------------------------------------------------------------------------------


def cell(values, digits=0, runs=None):
    """Median, and the spread of the runs as ± half their range relative to the median.

    With ``runs`` (the results the values come from), windows the rest of the machine disturbed
    are left out when undisturbed ones exist: "(n)" then says how many runs the figure rests on,
    and "*" marks a figure from disturbed windows only.
    """
    mark = ""
    if runs is not None:
        calm = [v for v, r in zip(values, runs, strict=False) if r.get("other_cpu", 0) <= DISTURBED]
        if [v for v in calm if v is not None]:
            if len(calm) < len(values):
                mark = f" ({len([v for v in calm if v is not None])})"
            values = calm
        else:
            mark = "*"
    values = [v for v in values if v is not None]
    if not values:
        return "failed"
    median = statistics.median(values)
    text = f"{median:,.{digits}f}"
    if len(values) > 1 and median:
        text += f" ±{(max(values) - min(values)) / 2 / median:.0%}"
    return text + mark


def fanout(options):
    """benchmarks/fanout.py on gevent: its table, as it prints it."""
    # fanout.py uses the test suite's helpers (pytest among them): the project's virtualenv has them.
    python = ROOT / ".venv" / "bin" / "python"
    python = str(python) if python.exists() else sys.executable
    argv = [python, str(BENCH / "fanout.py"), "--server", "gevent", "--messages", str(options.fanout_messages),
            "--deadline", "240"]  # fmt: skip
    try:
        done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        return "fanout.py did not finish within 300 s"
    if done.returncode:
        return f"fanout.py exited with {done.returncode}: {done.stderr.strip()[-500:]}"
    return done.stdout.strip()


def machine():
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    memory = int(Path("/proc/meminfo").read_text().split()[1]) / 2**20
    versions = []
    for package in ("django", "gevent", "gunicorn", "channels", "daphne", "uvicorn", "hypercorn", "granian",
                    "websockets", "picows", "uvloop", "httptools", "wsaccel"):  # fmt: skip
        try:
            from importlib.metadata import version

            versions.append(f"{package} {version(package)}")
        except Exception:
            pass
    return (
        f"{os.cpu_count()} × {model}, {memory:.0f} GiB, Linux {platform.release()}, "
        f"Python {platform.python_version()}; " + ", ".join(versions)
    )


def report(options, results, fanout_table, started, load_before, load_after):
    lines = []
    out = lines.append
    pin = "server on core 0, client on core 1 (taskset)" if pinned(0) else "not pinned (no taskset)"
    out(f"Machine: {machine()}.")
    out(f"Date: {time.strftime('%Y-%m-%d %H:%M %Z')}; {options.runs} run(s); {pin}; "
        f"load average before/after: {load_before} / {load_after}.")  # fmt: skip
    out(f"Command: `{' '.join(['benchmarks/.venv/bin/python', *sys.argv])}` ({time.monotonic() - started:.0f} s).")
    out("")
    scenarios = [s for s in options.scenarios if s in SCENARIOS]
    idle = "idle" in options.scenarios
    head = ["server", *(SCENARIOS[s][0] for s in scenarios)]
    if idle:
        head += [f"KiB per idle socket ({count:,})" for count in options.idle_counts]
    out("| " + " | ".join(head) + " |")
    out("|---|" + "---:|" * (len(head) - 1))
    for name in options.servers:
        row = [SERVERS[name][0]]
        for scenario in scenarios:
            runs = results.get(name, {}).get(scenario)
            row.append(cell([figure(scenario, r) for r in runs], runs=runs) if runs else "—")
        if idle:
            for count in options.idle_counts:
                runs = results.get(name, {}).get("idle")
                row.append(cell([idle_figure(r, count) for r in runs], 1) if runs else "—")
        out("| " + " | ".join(row) + " |")
    out("")
    out(f"Medians of the runs, ± half their range; windows during which other processes used more than {DISTURBED}")
    out("of a core are left out when others exist: (n) is then the number of runs a figure rests on, and * marks")
    out("a figure from disturbed windows only. Latency of the echo round trips, ms (p50 / p99):")
    out("")
    echoes = [s for s in scenarios if s != "handshake"]
    if echoes or "handshake" in scenarios:
        titles = {"echo1": "1 conn", "echo100": "100 conns", "echo1000": "1,000 conns", "mib": "1 MiB",
                  "handshake": "handshake"}  # fmt: skip
        out("| server | " + " | ".join(titles[s] for s in scenarios) + " |")
        out("|---|" + "---:|" * len(scenarios))
        for name in options.servers:
            row = [SERVERS[name][0]]
            for scenario in scenarios:
                runs = [r for r in results.get(name, {}).get(scenario, []) if "error" not in r and r.get("p50_ms")]
                if runs:
                    p50 = statistics.median(r["p50_ms"] for r in runs)
                    p99 = statistics.median(r["p99_ms"] for r in runs)
                    row.append(f"{p50:.2f} / {p99:.2f}")
                else:
                    row.append("—")
            out("| " + " | ".join(row) + " |")
        out("")
        out("Server CPU time per echo or handshake, µs (median; on a shared machine this is steadier than")
        out("the rates, which depend on how much of its core the server got):")
        out("")
        out("| server | " + " | ".join(titles[s] for s in scenarios) + " |")
        out("|---|" + "---:|" * len(scenarios))
        for name in options.servers:
            row = [SERVERS[name][0]]
            for scenario in scenarios:
                runs = results.get(name, {}).get(scenario)
                row.append(cell([cpu_per_op(scenario, r) for r in runs], 1, runs=runs) if runs else "—")
            out("| " + " | ".join(row) + " |")
        out("")
        out("CPU during the measured windows (median, in cores: server / client / rest of the machine):")
        out("")
        out("| server | " + " | ".join(titles[s] for s in scenarios) + " |")
        out("|---|" + "---:|" * len(scenarios))
        for name in options.servers:
            row = [SERVERS[name][0]]
            for scenario in scenarios:
                runs = [r for r in results.get(name, {}).get(scenario, []) if "error" not in r]
                if runs:
                    row.append(" / ".join(f"{statistics.median(r[k] for r in runs):.2f}"
                                          for k in ("server_cpu", "client_cpu", "other_cpu")))  # fmt: skip
                else:
                    row.append("—")
            out("| " + " | ".join(row) + " |")
        out("")
    if options.profile:
        parts = ["the server", *(name for name, _ in PROFILE_PARTS)]
        out("Where the server's CPU went (py-spy, samples of the thread holding the GIL, by the file of the")
        out("innermost Python frame; C code counts for the frame that called it), share of the samples:")
        out("")
        out("| server | scenario | " + " | ".join(parts) + " |")
        out("|---|---|" + "---:|" * len(parts))
        for name in options.servers:
            for scenario in echoes:
                shares = [r["profile"] for r in results.get(name, {}).get(scenario, []) if r.get("profile")]
                if shares:
                    row = [f"{statistics.median(s.get(part, 0.0) for s in shares):.0%}" for part in parts]
                    out(f"| {SERVERS[name][0]} | {titles[scenario]} | " + " | ".join(row) + " |")
        out("")
    errors = [
        f"- {name} {scenario} run {i + 1}: "
        + (r.get("error") or ("wrong or lost echoes" if r.get("wrong") else r.get("error_example") or "no echo"))
        for name in options.servers
        for scenario, runs in results.get(name, {}).items()
        for i, r in enumerate(runs)
        if "error" in r or r.get("wrong") or r.get("errors") or r.get("messages") == 0
    ]
    if idle:
        for name in options.servers:
            for i, r in enumerate(results.get(name, {}).get("idle", [])):
                for row in r.get("rows", []):
                    if row["failures"] or row["echoed"] != row["open"]:
                        errors.append(
                            f"- {name} idle {row['connections']:,} run {i + 1}: {row['open']:,} open, "
                            f"{row['echoed']:,} echoed, {row['failures']} failed ({row['failure_example']})"
                        )
    if errors:
        out("Failures (their figures are left out):")
        out("")
        lines.extend(errors)
        out("")
    out("Targets (ratios taken within each run, median of the runs; a ratio marked * comes from a")
    out(f"window during which other processes used more than {DISTURBED} of a core: the median leaves")
    out("those out when the other runs allow):")
    out("")
    out("| target | ratio per run | median | | same, by server CPU per message |")
    out("|---|---|---:|---|---:|")
    for what, ours, scenario, peer, wanted in TARGETS:
        if ours not in options.servers or peer not in options.servers or scenario not in scenarios:
            continue
        mine = results.get(ours, {}).get(scenario, [])
        theirs = results.get(peer, {}).get(scenario, [])
        ratios, disturbed = [], []
        for a, b in zip(mine, theirs, strict=False):
            disturbed.append(any(r.get("other_cpu", 0) > DISTURBED for r in (a, b)))
            a, b = figure(scenario, a), figure(scenario, b)
            ratios.append(a / b if a is not None and b else None)
        valid = [r for r, d in zip(ratios, disturbed, strict=False) if r is not None and not d]
        valid = valid or [r for r in ratios if r is not None]
        median = statistics.median(valid) if valid else None
        if median is None:
            verdict = "—"
        elif wanted is None:
            verdict = ""
        else:
            verdict = "met" if median >= wanted else f"not met ({median / wanted * 100:.1f} % of it)"
        marked = zip(ratios, disturbed, strict=False)
        per_run = ", ".join(("failed" if r is None else f"{r:.2f}") + ("*" if d else "") for r, d in marked)
        # The same comparison from what each message cost each server's CPU, which a busy
        # machine disturbs less than it disturbs the rates.
        by_cpu = []
        for (a, b), d in zip(zip(mine, theirs, strict=False), disturbed, strict=False):
            a, b = cpu_per_op(scenario, a), cpu_per_op(scenario, b)
            if a and b and (not d or all(disturbed)):
                by_cpu.append(b / a)
        cpu_text = f"{statistics.median(by_cpu):.2f}×" if by_cpu else "—"
        out(f"| {what} | {per_run} | {'—' if median is None else f'{median:.2f}×'} | {verdict} | {cpu_text} |")
    name, count, limit = IDLE_TARGET
    if idle and name in options.servers and count in options.idle_counts:
        values = [idle_figure(r, count) for r in results.get(name, {}).get("idle", [])]
        valid = [v for v in values if v is not None]
        if valid:
            median = statistics.median(valid)
            verdict = "met" if median <= limit else f"not met ({median - limit:.1f} KiB over)"
            out(f"| {name}, ≤ {limit:.0f} KiB per idle socket at {count:,} | "
                f"{', '.join(f'{v:.1f}' for v in valid)} KiB | {median:.1f} KiB | {verdict} | |")  # fmt: skip
    if fanout_table:
        out("")
        out("Fan-out (benchmarks/fanout.py on gevent, not pinned):")
        out("")
        lines.extend(line for line in fanout_table.splitlines() if line.strip())
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--suite", choices=list(SUITES), default="wsgi",
        help="the servers measured unless --servers names them: wsgi (this app on its WSGI servers and the peers"
        " of those), asgi (this app's sync and async views, Channels' consumers and a bare ASGI echo on each ASGI"
        " server), all",
    )  # fmt: skip
    parser.add_argument("--servers", nargs="+", choices=list(SERVERS))
    parser.add_argument("--scenarios", nargs="+", choices=[*SCENARIOS, "idle", "fanout"])
    parser.add_argument("--runs", type=int, default=3, help="runs of each figure (default 3)")
    parser.add_argument(
        "--idle-runs", type=int, default=1, help="runs of the idle scenario (default 1: memory varies little)"
    )
    parser.add_argument("--idle-counts", type=int, nargs="+", default=IDLE_COUNTS)
    parser.add_argument("--warmup", type=float, default=0.3, help="seconds before each measured window")
    parser.add_argument("--duration", type=float, default=1.5, help="seconds of each measured window")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds idle connections rest before measuring")
    parser.add_argument("--fanout-messages", type=int, default=20)
    parser.add_argument("--deadline", type=float, default=1500, help="seconds the whole run may take")
    parser.add_argument("--json", help="also write every raw result to this file")
    parser.add_argument(
        "--profile", metavar="DIR",
        help="record the server with py-spy during each echo window (raw stacks in DIR) and report where its CPU"
        " went; py-spy runs on the client's core, so figures of a profiled run are not for comparison",
    )  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="1 run, shorter windows, 1,000 idle sockets, no fan-out")
    if "--quick" in sys.argv[1:]:
        # Fewer runs and scenarios, unless given explicitly.
        parser.set_defaults(runs=1, idle_runs=1, duration=1.0, idle_counts=[1000])
    options = parser.parse_args()
    if options.servers is None:
        options.servers = SUITES[options.suite]
    if options.scenarios is None:
        # Fan-out is measured on gevent: part of the WSGI suite only.
        options.scenarios = [*SCENARIOS, "idle"] + (["fanout"] if options.suite != "asgi" and not options.quick else [])
    if not pinned(0):
        print("taskset or a second core is missing: server and client share the CPU", file=sys.stderr)
    # The client and the servers hold one descriptor per connection.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if "idle" in options.scenarios and hard < max(options.idle_counts) + 500:
        sys.exit(f"the open-file limit ({hard}) is below {max(options.idle_counts) + 500}: raise it (ulimit -Hn)")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    started = time.monotonic()
    load_before = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    results = {}
    try:
        measure(options, started + options.deadline, results)
    except KeyboardInterrupt:
        print("interrupted: reporting what was measured", file=sys.stderr)
    fanout_table = None
    if "fanout" in options.scenarios and time.monotonic() < started + options.deadline:
        print("fan-out (benchmarks/fanout.py)…", file=sys.stderr)
        fanout_table = fanout(options)
    load_after = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    if options.json:
        Path(options.json).write_text(json.dumps(results, indent=1))
    print(report(options, results, fanout_table, started, load_before, load_after))


if __name__ == "__main__":
    main()
