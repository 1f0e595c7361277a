"""Run a Python program with django-websocket's optional C unmasking turned off.

benchmarks/compare.py starts our servers through this, so that they measure the pure-Python
masking that a plain ``pip install`` gets (and that the tests cover), even in a virtualenv where
an accelerator (websockets' speedups, wsaccel) is installed::

    python benchmarks/without_accelerator.py -m django_websocket.servers.gevent 127.0.0.1:8000
    python benchmarks/without_accelerator.py path/to/script.py ARGS
"""

import os
import runpy
import sys

# Read by django_websocket.frames when it is imported; forked workers inherit it.
os.environ["DJANGO_WEBSOCKET_PURE_PYTHON"] = "1"

if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["-m"]:
        sys.argv = [args[1], *args[2:]]
        runpy.run_module(args[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = args
        runpy.run_path(args[0], run_name="__main__")
