#!/usr/bin/env bash
# Install Autobahn|Testsuite (wstest) into a cached Python 2.7 virtualenv and
# print the path of the `wstest` executable on stdout (and nothing else there,
# so callers can do: WSTEST="$(bash compliance/setup_autobahn.sh)").
#
# Why this dance: `wstest -m fuzzingclient` only runs on Python 2.7, and the
# virtualenv releases that can still create 2.7 environments are <20.22, so a
# small Python 3 venv holds that old virtualenv, which then creates the 2.7 env.
#
# Environment:
#   AUTOBAHN_HOME  cache directory (default $HOME/.cache/django-websocket/autobahn)
#   PYTHON27       Python 2.7 interpreter to use (default: pyenv's 2.7.x, then python2.7)
#   PYTHON3        Python 3 interpreter for the helper venv (default: python3)
# Options:
#   --force        rebuild both environments from scratch
#
# Missing Python 2.7 is an error, not a skip: CI must go red, never silently
# pass without having run the conformance suite.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CONSTRAINTS="$HERE/autobahn-constraints.txt"
SUITE_REQ="autobahntestsuite==25.10.1"
VIRTUALENV_REQ="virtualenv==20.21.1"   # last line that still creates 2.7 envs (<20.22)

AUTOBAHN_HOME="${AUTOBAHN_HOME:-$HOME/.cache/django-websocket/autobahn}"
TOOLS_ENV="$AUTOBAHN_HOME/py3-tools"
PY2_ENV="$AUTOBAHN_HOME/py2"
STAMP="$PY2_ENV/.installed-stamp"
LOG="$AUTOBAHN_HOME/install.log"
WSTEST="$PY2_ENV/bin/wstest"

FORCE=0
for arg in "$@"; do
    case "$arg" in
        --force) FORCE=1 ;;
        -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
        *) echo "setup_autobahn.sh: unknown argument: $arg" >&2; exit 2 ;;
    esac
done

say() { echo "[setup_autobahn] $*" >&2; }

die_loud() {
    {
        echo
        echo "######################################################################"
        echo "## ERROR: $1"
        shift
        for line in "$@"; do echo "## $line"; done
        echo "######################################################################"
        echo
    } >&2
    exit 1
}

is_py27() { [ -n "$1" ] && [ -x "$1" ] && "$1" -c 'import sys; sys.exit(sys.version_info[:2] != (2, 7))' >/dev/null 2>&1; }

find_python27() {
    if [ -n "${PYTHON27:-}" ]; then
        # An explicit choice that does not work must not fall back silently.
        is_py27 "$PYTHON27" && { echo "$PYTHON27"; return 0; }
        return 1
    fi
    local root candidates=()
    if command -v pyenv >/dev/null 2>&1; then
        root="$(pyenv root 2>/dev/null || true)"
    else
        root="${PYENV_ROOT:-$HOME/.pyenv}"
    fi
    if [ -n "$root" ] && [ -d "$root/versions" ]; then
        candidates+=("$root/versions/2.7.18/bin/python2.7")
        # Newest other 2.7.x, in case the patch release differs.
        while IFS= read -r p; do candidates+=("$p"); done \
            < <(ls -d "$root"/versions/2.7.*/bin/python2.7 2>/dev/null | sort -rV)
    fi
    # pyenv's shim would say "version not installed" instead of failing cleanly,
    # so only use a python2.7 on PATH that is not the shim (is_py27 checks it runs).
    candidates+=("$(command -v python2.7 2>/dev/null || true)")
    local c
    for c in "${candidates[@]}"; do
        if is_py27 "$c"; then echo "$c"; return 0; fi
    done
    return 1
}

PY27="$(find_python27)" || die_loud "Python 2.7 not found (PYTHON27='${PYTHON27:-}')." \
    "Autobahn|Testsuite (wstest) runs only on Python 2.7, so the WebSocket" \
    "conformance suite CANNOT run. Install it, e.g.:  pyenv install 2.7.18" \
    "or point PYTHON27 at a 2.7 interpreter. Not skipping: this is a failure."
PY3="${PYTHON3:-python3}"
"$PY3" -c 'import sys; sys.exit(sys.version_info < (3, 7))' 2>/dev/null \
    || die_loud "Python >= 3.7 not found as '$PY3' (set PYTHON3)." \
        "It is needed to run virtualenv<20.22, which creates the Python 2.7 env."

mkdir -p "$AUTOBAHN_HOME"

# Serialise concurrent setups (two CI steps, or a developer and CI) on one cache.
if command -v flock >/dev/null 2>&1; then
    exec 9>"$AUTOBAHN_HOME/.lock"
    flock 9
fi

# The stamp records everything that determines the env's contents; any change
# (new pins, another interpreter) triggers a clean rebuild instead of a
# half-upgraded env.
want_stamp="$(
    {
        echo "$SUITE_REQ $VIRTUALENV_REQ"
        echo "$PY27"
        "$PY27" -c 'import sys; print(sys.version)' 2>&1
        cat "$CONSTRAINTS"
    } | sha256sum | cut -d' ' -f1
)"

wstest_works() {
    # Capture first: piping into `grep -q` lets grep exit early, wstest then
    # dies of SIGPIPE and, under pipefail, a working install looks broken.
    local out
    [ -x "$WSTEST" ] && out="$("$WSTEST" --help 2>&1)" && [[ "$out" == *fuzzingclient* ]]
}

if [ "$FORCE" = 0 ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want_stamp" ] && wstest_works; then
    say "cached: $WSTEST"
    echo "$WSTEST"
    exit 0
fi

start=$(date +%s)
: >"$LOG"
fail_with_log() {
    echo "---- last lines of $LOG ----" >&2
    tail -n 40 "$LOG" >&2 || true
    die_loud "$1" "Full log: $LOG"
}

say "using Python 2.7 at $PY27"
if [ "$FORCE" = 1 ] || [ ! -x "$TOOLS_ENV/bin/virtualenv" ]; then
    say "creating helper venv $TOOLS_ENV ($VIRTUALENV_REQ)"
    rm -rf "$TOOLS_ENV"
    "$PY3" -m venv "$TOOLS_ENV" >>"$LOG" 2>&1 || fail_with_log "could not create Python 3 venv"
    "$TOOLS_ENV/bin/pip" install --disable-pip-version-check "$VIRTUALENV_REQ" >>"$LOG" 2>&1 \
        || fail_with_log "could not install $VIRTUALENV_REQ"
fi

# Always start the 2.7 env from scratch: a partial earlier install (no stamp)
# is not worth repairing.
rm -rf "$PY2_ENV"
say "creating Python 2.7 virtualenv $PY2_ENV"
# Keep virtualenv's seed-wheel cache inside AUTOBAHN_HOME and stop it from
# spawning background "periodic update" downloads.
VIRTUALENV_OVERRIDE_APP_DATA="$AUTOBAHN_HOME/virtualenv-appdata" \
    "$TOOLS_ENV/bin/virtualenv" --no-periodic-update -p "$PY27" "$PY2_ENV" >>"$LOG" 2>&1 \
    || fail_with_log "virtualenv could not create a Python 2.7 env"

say "installing $SUITE_REQ (compiles wsaccel/ujson with gcc; ~1 min)"
# PIP_NO_PYTHON_VERSION_WARNING: silence pip's 2.7 end-of-life banner.
PIP_NO_PYTHON_VERSION_WARNING=1 "$PY2_ENV/bin/pip" install --disable-pip-version-check \
    -c "$CONSTRAINTS" "$SUITE_REQ" >>"$LOG" 2>&1 \
    || fail_with_log "pip could not install $SUITE_REQ into the 2.7 env"

wstest_works || { "$WSTEST" --help >>"$LOG" 2>&1 || true; fail_with_log "'wstest --help' does not work after install"; }
version="$("$WSTEST" -a 2>&1 | tr '\n' ' ' | sed 's/ *$//')"
case "$version" in
    *"AutobahnTestSuite 25.10.1"*) ;;
    *) echo "$version" >>"$LOG"; fail_with_log "unexpected 'wstest -a' output: $version" ;;
esac

echo "$want_stamp" >"$STAMP"
say "installed ($version) in $(( $(date +%s) - start )) s"
echo "$WSTEST"
