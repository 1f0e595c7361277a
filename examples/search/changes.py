"""Tells the open live-search sockets of this process that the entries changed.

A WebSocket view blocks on its own socket: another request cannot wake it up. So each change
bumps a counter, and the live-search views (views.py) compare it with the value they last
searched at, between short waits for messages.
"""

import threading

from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from .models import Entry

_lock = threading.Lock()
_version = 0


def version():
    """A number that changes after every committed change of the entries."""
    return _version


def bump():
    global _version
    with _lock:
        _version += 1


@receiver(post_save, sender=Entry)
@receiver(post_delete, sender=Entry)
def _entries_changed(sender, **kwargs):
    # After the commit: a search run earlier would not see the new row yet.
    transaction.on_commit(bump)
