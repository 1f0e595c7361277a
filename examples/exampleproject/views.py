from django.shortcuts import render
from django.urls import NoReverseMatch, reverse

# (URL name, title, description) of each example; one whose app is not installed is left out.
EXAMPLES = [
    ("echo-page", "Echo", "every message comes back, as in the 2010 example."),
    ("chat:index", "Chat", "rooms where logged-in users talk, on groups (in memory, or Redis)."),
    ("search:search", "Live search", "results pushed every few seconds and whenever the data changes."),
    ("notifications:page", "Notifications", "a badge counting what was sent to you, on a detached socket."),
]


def index(request):
    examples = []
    for name, title, description in EXAMPLES:
        try:
            url = reverse(name)
        except NoReverseMatch:
            continue
        examples.append({"url": url, "title": title, "description": description})
    return render(request, "index.html", {"examples": examples})
