"""Run a Python program with the optional ``wsaccel`` accelerator made unimportable.

benchmarks/compare.py starts our servers through this, so that they measure the pure-Python
masking that a plain ``pip install`` gets (and that the tests cover), even in a virtualenv where
wsaccel is installed::

    python benchmarks/without_accelerator.py -m django_websocket.servers.gevent 127.0.0.1:8000
    python benchmarks/without_accelerator.py path/to/script.py ARGS
"""

import runpy
import sys

# None in sys.modules makes every "import wsaccel..." raise ImportError, which is what
# django_websocket.frames sees when wsaccel is not installed. Forked workers inherit it.
sys.modules["wsaccel"] = None

if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["-m"]:
        sys.argv = [args[1], *args[2:]]
        runpy.run_module(args[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = args
        runpy.run_path(args[0], run_name="__main__")
