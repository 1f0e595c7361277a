import json
import time

from django.conf import settings
from django.contrib import messages
from django.shortcuts import redirect, render
from django.utils import timezone

from django_websocket import accept_websocket

from . import changes
from .forms import EntryForm
from .models import Entry
from .search import search as find

# Seconds the view waits for a message before it looks whether the entries changed: the view
# blocks on its socket, and nothing else can wake it (see changes.py).
CHANGE_CHECK = 0.5
MAX_QUERY = 100


def refresh_interval():
    """Seconds between two searches for an unchanged query (the 2010 example searched Google
    every 30 seconds): the LIVE_SEARCH_INTERVAL setting."""
    return getattr(settings, "LIVE_SEARCH_INTERVAL", 30)


@accept_websocket
def search(request):
    """The search page, and the socket its script opens on the same URL."""
    if not request.is_websocket():
        return render(request, "search/search.html", {"interval": refresh_interval()})
    live_search(request.websocket)


def live_search(websocket):
    # Each text message is the query as typed. The view answers it at once, then pushes fresh
    # results every refresh_interval() seconds, and as soon as the entries change.
    query = None  # nothing to search for before the page sends its first query
    searched_version = None
    next_search = 0.0
    while True:
        timeout = None  # without a query, just wait for one
        if query is not None:
            now = time.monotonic()
            if searched_version != changes.version() or now >= next_search:
                searched_version = changes.version()  # read first: a change during the search counts
                results, total = find(query)
                websocket.send(
                    json.dumps(
                        {"query": query, "results": results, "total": total, "at": timezone.now().isoformat()}
                    )
                )
                next_search = now + refresh_interval()
            timeout = min(CHANGE_CHECK, max(0.0, next_search - time.monotonic()))
        message = websocket.wait(timeout)
        if message is None:
            if websocket.closed:
                return
            continue  # the timeout: time to look again
        if isinstance(message, str):
            query = message[:MAX_QUERY]
            searched_version = None  # a new query: search now


def add(request):
    """A form adding an entry: every open search page whose query matches shows it at once."""
    form = EntryForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        entry = form.save()
        messages.success(request, f"Added “{entry.title}”.")
        return redirect("search:add")
    return render(request, "search/add.html", {"form": form, "latest": Entry.objects.all()[:5]})
