"""The search itself: plain ORM queries on the Entry table."""

from django.db.models import Case, IntegerField, Q, Value, When

from .models import Entry

LIMIT = 10


def search(query, limit=LIMIT):
    """The ``limit`` best entries for ``query`` and how many matched in all.

    Every word of the query must appear in the title or the summary. Titles that start with the
    query come first, then titles that contain it, then the rest; an empty query lists the
    newest entries.
    """
    query = " ".join(query.split())
    entries = Entry.objects.all()
    if query:
        for word in query.split():
            entries = entries.filter(Q(title__icontains=word) | Q(summary__icontains=word))
        entries = entries.annotate(
            rank=Case(
                When(title__istartswith=query, then=Value(0)),
                When(title__icontains=query, then=Value(1)),
                default=Value(2),
                output_field=IntegerField(),
            )
        ).order_by("rank", "title")
    total = entries.count()
    results = [
        {"title": entry.title, "summary": entry.summary, "added": entry.added.isoformat()}
        for entry in entries[:limit]
    ]
    return results, total
