"""Pages and views for tests/test_browser_client.py: the browser client (websocket.js) itself.

The test project has no staticfiles app; ``static/`` serves the app's own static directory
at the URL staticfiles would give it, so the pages load the very file that ships.
"""

import time
from pathlib import Path

from django.http import HttpResponse
from django.views.static import serve

import django_websocket
from django_websocket import require_websocket

STATIC = Path(django_websocket.__file__).resolve().parent / "static"


def static(request, path):
    return serve(request, path, document_root=STATIC)


# The page records every event of the clients a test makes in it (``watch(name, client)``):
# the tests read ``events`` back and measure times from its ``t`` (performance.now(), in ms).
PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>browser client</title>
<link rel="icon" href="data:,">
<script src="/static/django_websocket/websocket.js"></script>
<script>
  "use strict";
  const FIELDS = ["data", "code", "reason", "wasClean", "reconnect", "delay", "attempt", "cause",
    "reconnected", "previous"];
  window.events = [];
  window.clients = {};
  function watch(name, client) {
    clients[name] = client;
    for (const type of DjangoWebSocket.EVENTS) {
      client.addEventListener(type, (event) => {
        const record = { name, type, t: performance.now(), state: client.state, queued: client.queued };
        for (const field of FIELDS) {
          if (field in event && !(event[field] instanceof Blob) && !(event[field] instanceof Error)) {
            record[field] = event[field];
          }
        }
        events.push(record);
      });
    }
    return client;
  }
</script></head>
<body><p id="status">client test page</p></body></html>
"""

MODULE_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>module</title><link rel="icon" href="data:,">
<script type="module">
  import "/static/django_websocket/websocket.js";
  const socket = new DjangoWebSocket("/echo");
  socket.onopen = () => socket.send("echoed to a module");
  socket.onmessage = (event) => { document.getElementById("reply").textContent = event.data; };
</script></head>
<body><p id="reply"></p></body></html>
"""


def page(request):
    return HttpResponse(PAGE)


def module_page(request):
    return HttpResponse(MODULE_PAGE)


@require_websocket
def silent(request):
    """Takes every message, answers none: a server gone quiet, as far as the page can tell."""
    for _message in request.websocket:
        pass


@require_websocket
def close_with(request, code):
    """Accepts, keeps the connection ``?after=`` seconds (0 by default), then closes with ``code``."""
    deadline = time.monotonic() + float(request.GET.get("after", 0))
    while (left := deadline - time.monotonic()) > 0:
        request.websocket.wait(left)
        if request.websocket.closed:
            return
    request.websocket.close(code, f"closed with {code}")
