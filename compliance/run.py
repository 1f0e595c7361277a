#!/usr/bin/env python3
"""Run Autobahn|Testsuite (wstest -m fuzzingclient) against a server command.

    python compliance/run.py --server-cmd "python compliance/peer_echo.py {port}" \
        --cases core --name peer-websockets

Steps: pick a free port on 127.0.0.1, start the server command with {port}
substituted, wait until it accepts connections, check that a WebSocket
handshake works, write a fuzzingclient spec from fuzzingclient.json, run wstest
under a hard timeout, stop the server, then judge the report's index.json.

Exit status: 0 only if every requested case ran and every case's behavior and
behaviorClose are OK (or INFORMATIONAL, Autobahn's verdict for cases that only
report); 1 for anything else (non-strict or failed cases, missing/empty report,
timeout, server crash); 2 for bad command-line usage.

Standard library only, Python >= 3.8: it must run before anything is installed.
"""

import argparse
import base64
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_TEMPLATE = HERE / "fuzzingclient.json"
DEFAULT_AUTOBAHN_HOME = Path.home() / ".cache" / "django-websocket" / "autobahn"
REPORT_MARKER = ".compliance-report"  # lets us wipe old reports without risk

# Case-set presets, with the case counts of autobahntestsuite 25.10.1 (a count
# mismatch with wstest's own list is reported, not silently accepted).
PRESETS = {
    "core": ([f"{group}.*" for group in range(1, 11)], 301),
    "compression": (["12.*", "13.*"], 216),
    "all": (["*"], 517),
}
# Default wstest budget per preset. Measured on the 2-core reference machine
# against a correct server: core ~25 s (mostly deliberate waits in groups 6 and
# 9), compression ~13 min (wstest itself is CPU-bound in groups 12/13). The
# bounds leave room for a slower server but stop a hung one early (it costs
# 100 s per group-9 case, 90 min for the whole group).
DEFAULT_TIMEOUTS = {"core": 600, "compression": 1800, "all": 2400}
FALLBACK_TIMEOUT = 2400  # arbitrary patterns: could include all of 12/13

PASSING = {"OK", "INFORMATIONAL"}
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class Interrupted(Exception):
    """SIGTERM/SIGINT received: unwind through `finally` so the server dies."""


def log(message):
    print(f"[compliance] {message}", flush=True)


# --------------------------------------------------------------------------
# arguments


def split_patterns(values):
    """Accept both repeated options and comma-separated lists."""
    out = []
    for value in values or []:
        out.extend(p.strip() for p in value.split(",") if p.strip())
    return out


def resolve_cases(spec):
    """Expand preset names; return (patterns, expected case count or None)."""
    items = split_patterns([spec])
    patterns = []
    for item in items:
        patterns.extend(PRESETS[item][0] if item in PRESETS else [item])
    # The count is only known for non-overlapping presets ("core,compression").
    presets_only = all(item in PRESETS for item in items) and len(set(items)) == len(items)
    if presets_only and ("all" not in items or len(items) == 1):
        return patterns, sum(PRESETS[item][1] for item in items)
    return patterns, None


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Run the Autobahn|Testsuite fuzzingclient against a server command.",
        epilog="Presets: " + ", ".join(f"{k} = {' '.join(v[0])} ({v[1]} cases)" for k, v in PRESETS.items()),
    )
    parser.add_argument("--server-cmd", required=True,
                        help='command that starts the server; "{port}" is replaced by the chosen port')
    parser.add_argument("--cases", default="core",
                        help="comma-separated case patterns (e.g. '1.*,9.1.1') and/or presets (default: core)")
    parser.add_argument("--exclude", action="append", default=[],
                        help="comma-separated case patterns to skip (repeatable)")
    parser.add_argument("--timeout", type=float, default=None,
                        help="hard limit in seconds for the wstest run (default depends on the preset)")
    parser.add_argument("--startup-timeout", type=float, default=30.0,
                        help="seconds to wait for the server to accept connections (default 30)")
    parser.add_argument("--name", default="server",
                        help="agent name; reports go to compliance/reports/NAME/ (default: server)")
    parser.add_argument("--path", default="/", help="WebSocket URL path (default: /)")
    parser.add_argument("--wstest", default=None,
                        help="wstest executable (default: $WSTEST, else $AUTOBAHN_HOME/py2/bin/wstest)")
    parser.add_argument("--template", type=Path, default=DEFAULT_TEMPLATE, help="fuzzingclient spec template")
    parser.add_argument("--report-dir", type=Path, default=None,
                        help="report directory (default: compliance/reports/NAME); wiped first")
    parser.add_argument("--no-preflight", action="store_true",
                        help="skip the single WebSocket handshake check before running the suite")
    args = parser.parse_args(argv)

    if "{port}" not in args.server_cmd:
        parser.error("--server-cmd must contain {port}: the harness chooses the port")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", args.name):
        parser.error("--name must be letters, digits, '_', '.', '-' (it names a directory)")
    if not args.path.startswith("/"):
        parser.error("--path must start with '/'")
    args.patterns, args.expected_count = resolve_cases(args.cases)
    if not args.patterns:
        parser.error("--cases selects nothing")
    args.exclude = split_patterns(args.exclude)
    if args.exclude:
        args.expected_count = None  # wstest's own list is authoritative then
    if args.timeout is None:
        items = split_patterns([args.cases])
        if all(item in DEFAULT_TIMEOUTS for item in items):
            args.timeout = min(sum(DEFAULT_TIMEOUTS[item] for item in set(items)), DEFAULT_TIMEOUTS["all"])
        else:
            args.timeout = FALLBACK_TIMEOUT
    return args


def find_wstest(explicit):
    candidates = [explicit] if explicit else []
    if not explicit:
        if os.environ.get("WSTEST"):
            candidates.append(os.environ["WSTEST"])
        home = Path(os.environ.get("AUTOBAHN_HOME") or DEFAULT_AUTOBAHN_HOME)
        candidates.append(str(home / "py2" / "bin" / "wstest"))
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


# --------------------------------------------------------------------------
# server lifecycle


def free_port():
    # Bind to port 0 and let the kernel choose; the tiny window before the
    # server binds it is acceptable (the server would fail loudly, not hang).
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(command, port, log_path):
    argv = [arg.replace("{port}", str(port)) for arg in shlex.split(command)]
    log(f"starting server: {shlex.join(argv)}")
    env = dict(os.environ, PYTHONUNBUFFERED="1")  # so server.log is complete on a crash
    log_file = open(log_path, "wb")
    try:
        # Own session/process group: we can signal the server and anything it
        # spawned (an autoreloader, a shell wrapper) without touching ourselves.
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log_file,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)
    finally:
        log_file.close()


def signal_group(proc, sig):
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop_process(proc, grace=10.0):
    """SIGTERM the process group, then SIGKILL it if it lingers."""
    if proc.poll() is None:
        signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            signal_group(proc, signal.SIGKILL)
            proc.wait()
    # Children that outlived the leader (same group) are killed too.
    signal_group(proc, signal.SIGKILL)
    return proc.returncode


def wait_for_port(proc, port, deadline_s):
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return f"server exited with status {proc.returncode} before accepting connections"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                return None
        except OSError:
            time.sleep(0.1)
    return f"server did not accept connections on 127.0.0.1:{port} within {deadline_s:g} s"


def preflight(port, path, timeout=15.0):
    """One handshake shaped like wstest's, then a clean close.

    Returns None on success, else a description of what went wrong. A server
    that cannot do this would just fail all cases slowly; this fails in a
    second with the HTTP response in hand.
    """
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET {path} HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\n"
        "Upgrade: WebSocket\r\n"  # capitalised, as wstest sends it
        "Connection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n"
        "User-Agent: compliance-preflight\r\n"
        "\r\n"
    ).encode()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(request)
            head = b""
            while b"\r\n\r\n" not in head and len(head) < 65536:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                head += chunk
            text = head.split(b"\r\n\r\n", 1)[0].decode("latin-1")
            lines = text.split("\r\n")
            if not lines or not re.match(r"HTTP/1\.1 101\b", lines[0]):
                return "handshake not accepted; response was:\n" + (text or "(connection closed, nothing sent)")
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            expected = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
            if headers.get("sec-websocket-accept") != expected:
                return f"bad Sec-WebSocket-Accept {headers.get('sec-websocket-accept')!r}, expected {expected!r}"
            # Masked close frame, code 1000; then let the server finish closing.
            mask = os.urandom(4)
            payload = (1000).to_bytes(2, "big")
            sock.sendall(bytes([0x88, 0x80 | len(payload)]) + mask
                         + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
            sock.settimeout(5.0)
            try:
                while sock.recv(4096):
                    pass
            except OSError:
                pass
    except OSError as exc:
        return f"connection error during handshake: {exc}"
    return None


# --------------------------------------------------------------------------
# wstest


class WstestWatcher:
    """Copies wstest's output to a log and tracks progress from it."""

    def __init__(self, stream, log_path):
        self.stream = stream
        self.log_path = log_path
        self.planned = None  # list of case ids wstest said it will run
        self.started = 0
        self.current = None
        self.thread = threading.Thread(target=self._pump, daemon=True)
        self.thread.start()

    def _pump(self):
        with open(self.log_path, "w", encoding="utf-8") as log_file:
            for line in self.stream:
                log_file.write(line)
                log_file.flush()
                match = re.match(r"Running test case ID (\S+)", line)
                if match:
                    self.started += 1
                    self.current = match.group(1)
                elif line.startswith("Cases = ["):
                    # Python 2 repr of a list of str: ['1.1.1', '1.1.2', ...]
                    self.planned = re.findall(r"'([0-9.]+)'", line)


def run_wstest(wstest, spec_path, report_dir, timeout):
    """Returns (watcher, returncode or None if it timed out, seconds)."""
    start = time.monotonic()
    proc = subprocess.Popen([wstest, "-m", "fuzzingclient", "-s", str(spec_path)],
                            cwd=str(report_dir), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, errors="replace", start_new_session=True)
    watcher = WstestWatcher(proc.stdout, report_dir / "wstest.log")
    try:
        last_note = start
        while True:
            elapsed = time.monotonic() - start
            if elapsed >= timeout:
                stop_process(proc, grace=5.0)
                return watcher, None, elapsed
            try:
                proc.wait(min(5.0, timeout - elapsed))
                break
            except subprocess.TimeoutExpired:
                pass
            # A heartbeat so long CI runs show where they are.
            if time.monotonic() - last_note >= 30:
                last_note = time.monotonic()
                total = len(watcher.planned) if watcher.planned else "?"
                log(f"  ... {watcher.started}/{total} cases started, now {watcher.current}, "
                    f"{time.monotonic() - start:.0f} s")
    finally:
        if proc.poll() is None:
            stop_process(proc, grace=5.0)
    watcher.thread.join(10)
    return watcher, proc.returncode, time.monotonic() - start


# --------------------------------------------------------------------------
# report


def case_key(case_id):
    return tuple(int(part) for part in case_id.split(".") if part.isdigit())


def plain_text(html, limit=200):
    """Case descriptions are HTML fragments; one readable line is enough here."""
    text = " ".join(re.sub(r"<[^>]+>", " ", html or "").split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def tail(path, lines=30):
    try:
        content = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return "(no log)"
    # wstest's "Cases = [...]" line alone can be 3 kB: clip long lines.
    clipped = [line if len(line) <= 300 else line[:297] + "..." for line in content[-lines:]]
    return "\n".join(clipped) or "(empty)"


def evaluate(report_dir, planned, expected_count, problems):
    """Read index.json, print the summary, return the summary dict.

    Appends to `problems` every reason for failing.
    """
    index_path = report_dir / "index.json"
    if not index_path.is_file():
        problems.append(f"no report: {index_path} was not written")
        return None
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except ValueError as exc:
        problems.append(f"unreadable report {index_path}: {exc}")
        return None

    cases = {}
    for agent, agent_cases in index.items():
        for case_id, result in agent_cases.items():
            cases[case_id] = dict(result, agent=agent)
    if not cases:
        problems.append("empty report: index.json lists no cases (server unreachable?)")
        return None
    if len(index) != 1:
        problems.append(f"expected one agent in the report, found {sorted(index)}")

    if planned is None:
        problems.append("could not read wstest's planned case list from wstest.log")
    else:
        if expected_count is not None and len(planned) != expected_count:
            problems.append(f"wstest planned {len(planned)} cases, the preset expects {expected_count}")
        missing = sorted(set(planned) - set(cases), key=case_key)
        if missing:
            shown = ", ".join(missing[:15]) + (" ..." if len(missing) > 15 else "")
            problems.append(f"{len(missing)} planned cases are missing from the report "
                            f"(wstest stops when the server refuses connections): {shown}")

    for c in cases.values():  # a malformed entry must fail, not crash the summary
        c.setdefault("behavior", "MISSING")
        c.setdefault("behaviorClose", "MISSING")
    behaviors = Counter(c["behavior"] for c in cases.values())
    closes = Counter(c["behaviorClose"] for c in cases.values())
    bad = sorted((cid for cid, c in cases.items()
                  if c["behavior"] not in PASSING or c["behaviorClose"] not in PASSING), key=case_key)

    print()
    print(f"Autobahn|Testsuite results: {len(cases)} cases ({report_dir / 'index.html'})")
    rows = max(len(behaviors), len(closes))
    order = {"OK": 0, "INFORMATIONAL": 1}  # passing verdicts first, then the rest by name
    b_items = sorted(behaviors.items(), key=lambda kv: (order.get(kv[0], 2), kv[0]))
    c_items = sorted(closes.items(), key=lambda kv: (order.get(kv[0], 2), kv[0]))
    print(f"  {'behavior':<18}{'count':>6}     {'behaviorClose':<18}{'count':>6}")
    for i in range(rows):
        left = f"{b_items[i][0]:<18}{b_items[i][1]:>6}" if i < len(b_items) else " " * 24
        right = f"{c_items[i][0]:<18}{c_items[i][1]:>6}" if i < len(c_items) else ""
        print(f"  {left}     {right}")

    details = []
    if bad:
        print()
        print(f"Non-passing cases ({len(bad)}):")
        for cid in bad:
            c = cases[cid]
            detail = {"id": cid, "behavior": c["behavior"], "behaviorClose": c["behaviorClose"],
                      "remoteCloseCode": c.get("remoteCloseCode"), "duration_ms": c.get("duration")}
            try:
                case_report = json.loads((report_dir / c["reportfile"]).read_text(encoding="utf-8"))
            except (OSError, ValueError, KeyError):
                case_report = {}
            detail["description"] = plain_text(case_report.get("description", ""))
            detail["result"] = case_report.get("result", "")
            detail["resultClose"] = case_report.get("resultClose", "")
            details.append(detail)
            # wstest reports a since-epoch "duration" when the handshake failed.
            duration = c.get("duration")
            duration = f"{duration} ms" if isinstance(duration, int) and duration < 10**8 else "n/a"
            print(f"  {cid:<9} behavior={c['behavior']:<12} close={c['behaviorClose']:<10} "
                  f"remoteCloseCode={c.get('remoteCloseCode')}  ({duration})")
            if detail["description"]:
                print(f"            description: {detail['description']}")
            if detail["result"]:
                print(f"            result:      {detail['result']}")
            if detail["resultClose"]:
                print(f"            resultClose: {detail['resultClose']}")
        problems.append(f"{len(bad)} of {len(cases)} cases are not OK/INFORMATIONAL")

    return {"cases": len(cases), "behavior": dict(behaviors), "behaviorClose": dict(closes),
            "non_passing": details}


# --------------------------------------------------------------------------
# main


def prepare_report_dir(path):
    if path.exists():
        if not (path / REPORT_MARKER).exists() and any(path.iterdir()):
            raise SystemExit(f"refusing to wipe {path}: not a report directory made by run.py")
        shutil.rmtree(path)
    path.mkdir(parents=True)
    (path / REPORT_MARKER).write_text("made by compliance/run.py; wiped on every run\n")


def build_spec(template_path, url, args, report_dir):
    spec = json.loads(template_path.read_text(encoding="utf-8"))
    spec.pop("_comment", None)
    server = dict(spec.get("servers", [{}])[0])
    server.update(agent=args.name, url=url)
    spec["servers"] = [server]
    spec["outdir"] = str(report_dir)
    spec["cases"] = args.patterns
    spec["exclude-cases"] = args.exclude
    return spec


def main(argv=None):
    args = parse_args(argv)
    wstest = find_wstest(args.wstest)
    if not wstest:
        print("ERROR: wstest not found. Run:  WSTEST=\"$(bash compliance/setup_autobahn.sh)\"  "
              "and pass --wstest \"$WSTEST\" (or export WSTEST / AUTOBAHN_HOME).", file=sys.stderr)
        return 1

    report_dir = (args.report_dir or HERE / "reports" / args.name).resolve()
    prepare_report_dir(report_dir)

    def on_signal(signum, _frame):
        raise Interrupted(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    port = free_port()
    url = f"ws://127.0.0.1:{port}{args.path}"
    spec_path = report_dir / "spec.json"
    spec_path.write_text(json.dumps(build_spec(args.template, url, args, report_dir), indent=3) + "\n")

    problems = []
    watcher = None
    timings = {}
    t0 = time.monotonic()
    server = start_server(args.server_cmd, port, report_dir / "server.log")
    server_died = None
    try:
        error = wait_for_port(server, port, args.startup_timeout)
        timings["startup_s"] = round(time.monotonic() - t0, 2)
        if not error and not args.no_preflight:
            error = preflight(port, args.path)
            if error:
                error = f"preflight WebSocket handshake to {url} failed: {error}"
        if error:
            problems.append(error)
        else:
            log(f"server up in {timings['startup_s']} s; running wstest on {url} "
                f"(cases {','.join(args.patterns)}"
                f"{'; excluding ' + ','.join(args.exclude) if args.exclude else ''}; "
                f"timeout {args.timeout:g} s)")
            watcher, rc, seconds = run_wstest(wstest, spec_path, report_dir, args.timeout)
            timings["wstest_s"] = round(seconds, 1)
            if rc is None:
                problems.append(
                    f"wstest timed out after {seconds:.0f} s, during case {watcher.current} "
                    f"({watcher.started} of {len(watcher.planned or []) or '?'} started); "
                    "each group-9 case waits up to 100 s for an echo that never comes; "
                    "the report below covers only the cases that ran")
            elif rc != 0:
                problems.append(f"wstest exited with status {rc}; see {report_dir / 'wstest.log'}")
            log(f"wstest {'stopped at the timeout' if rc is None else 'finished'} after {seconds:.1f} s")
            # Checked before we stop it: a crash mid-run is a failure even if
            # the cases that ran were fine.
            server_died = server.poll()
    except Interrupted as exc:
        problems.append(f"interrupted by {exc}")
    finally:
        stop_process(server)

    if server_died is not None:
        problems.append(f"server exited with status {server_died} during the run")

    summary = evaluate(report_dir, watcher.planned if watcher else None, args.expected_count, problems) \
        if watcher else None

    # Logs help with anything beyond plain non-passing cases.
    if not summary or len(problems) > (1 if summary["non_passing"] else 0):
        print(f"\n---- last lines of {report_dir / 'server.log'} ----\n{tail(report_dir / 'server.log')}")
        if watcher:
            print(f"---- last lines of {report_dir / 'wstest.log'} ----\n{tail(report_dir / 'wstest.log', 15)}")

    (report_dir / "summary.json").write_text(json.dumps({
        "url": url, "server_cmd": args.server_cmd, "cases": args.patterns, "exclude": args.exclude,
        "timings": timings, "summary": summary, "problems": problems, "passed": not problems,
    }, indent=2) + "\n")

    print()
    if problems:
        for problem in problems:
            print(f"FAIL: {problem}")
        print(f"RESULT: FAIL ({report_dir})")
        return 1
    print(f"RESULT: PASS: all {summary['cases']} cases OK/INFORMATIONAL ({report_dir})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
