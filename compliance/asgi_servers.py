#!/usr/bin/env python3
"""The Autobahn|Testsuite on each ASGI server, through our application and with a bare one.

    python3 compliance/asgi_servers.py --python .venv/bin/python            # both, every server
    python3 compliance/asgi_servers.py --python .venv/bin/python --bare uvicorn daphne

For each server, compliance/run.py runs cases 1-10 against the server started as its
deployment guide says (one worker), serving either the echo project through
django_websocket.asgi (``echoproject.asgi:application``) or the bare ASGI echo application of
compliance/asgi_echo.py (no Django, no code of ours), then the counts of both are printed side by
side: what the bare application loses is the server's framing; anything more is our bridge's.
tests/test_compliance.py runs the first kind in CI; this script is how the second kind's counts in
docs/topics/conformance.rst were measured.

Both runs get the same server options: message limits raised to 32 MiB where the server has one
(group 9 sends 16 MiB messages; daphne limits each frame too), keepalive pings off where the
server has them (the suite checks every frame it receives). Standard library only.
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
APP = "echoproject.asgi:application"
BARE_APP = "compliance.asgi_echo:app"
BIG = str(32 * 2**20)

# {python}: the interpreter of the environment holding the servers; {big}: 32 MiB; {here}: this
# folder; {app}, {port}: filled in.
COMMANDS = {
    "uvicorn": "{python} -m uvicorn {app} --ws-max-size {big} --ws-ping-interval 0 --host 127.0.0.1 --port {port}",
    "uvicorn-websockets": (
        "{python} -m uvicorn {app} --ws websockets --ws-max-size {big} --ws-ping-interval 0 "
        "--host 127.0.0.1 --port {port}"
    ),
    "uvicorn-wsproto": (
        "{python} -m uvicorn {app} --ws wsproto --ws-max-size {big} --ws-ping-interval 0 --host 127.0.0.1 --port {port}"
    ),
    "daphne": (
        "{python} -m daphne --websocket-max-message-size {big} --websocket-max-frame-size {big} "
        "-b 127.0.0.1 -p {port} {app}"
    ),
    "hypercorn": "{python} -m hypercorn --config {here}/hypercorn.toml --bind 127.0.0.1:{port} {app}",
    "granian": "{python} -m granian --interface asgi --host 127.0.0.1 --port {port} {app}",
    "gunicorn-asgi": ("{python} -m gunicorn -k asgi --websocket-max-message-size {big} --bind 127.0.0.1:{port} {app}"),
}


def environment(report_root):
    """What the server processes need: the echo project and the checkout on the path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE / "project"), str(ROOT)])
    env["DJANGO_SETTINGS_MODULE"] = "echoproject.settings"
    # gunicorn >= 25.1 keeps a control socket in $XDG_RUNTIME_DIR.
    env["XDG_RUNTIME_DIR"] = str(report_root)
    return env


def command(name, python, bare=False):
    # run.py replaces {port}; the rest is ours to fill.
    text = COMMANDS[name].replace("{python}", python).replace("{big}", BIG).replace("{here}", str(HERE))
    return text.replace("{app}", BARE_APP if bare else APP)


def run(name, python, wstest, bare):
    label = f"{name}-{'bare' if bare else 'ours'}-core"
    reports = HERE / "reports"
    reports.mkdir(exist_ok=True)
    argv = [
        sys.executable,
        str(HERE / "run.py"),
        "--cases",
        "core",
        "--name",
        label,
        "--server-cmd",
        command(name, python, bare),
    ]
    if wstest:
        argv += ["--wstest", wstest]
    subprocess.run(argv, cwd=ROOT, env=environment(reports), stdout=subprocess.DEVNULL, timeout=1200)
    summary = json.loads((reports / label / "summary.json").read_text())["summary"] or {}
    return summary


def describe(summary):
    if not summary:
        return "no report"
    counts = dict(summary.get("behavior", {}))
    closes = {k: v for k, v in summary.get("behaviorClose", {}).items() if k != "OK"}
    text = ", ".join(f"{n} {k}" for k, n in sorted(counts.items(), key=lambda kv: -kv[1]))
    if closes:
        text += "; close: " + ", ".join(f"{n} {k}" for k, n in sorted(closes.items()))
    bad = [c["id"] for c in summary.get("non_passing", [])]
    if bad:
        text += f"; not OK: {' '.join(bad)}"
    return text


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("servers", nargs="*", default=list(COMMANDS), help=f"of {', '.join(COMMANDS)}")
    parser.add_argument("--python", default=sys.executable, help="interpreter with the servers installed")
    parser.add_argument("--wstest", default=os.environ.get("WSTEST"))
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--bare", action="store_true", help="only the bare ASGI application")
    which.add_argument("--ours", action="store_true", help="only the echo project through django_websocket")
    args = parser.parse_args(argv)
    kinds = [True] if args.bare else [False] if args.ours else [False, True]
    for name in args.servers:
        for bare in kinds:
            summary = run(name, args.python, args.wstest, bare)
            print(f"{name:<20} {'bare ASGI app' if bare else 'our app':<14} {describe(summary)}", flush=True)


if __name__ == "__main__":
    main()
