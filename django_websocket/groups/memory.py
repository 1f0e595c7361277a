"""The in-memory group backend (the default): the sockets of this one process.

Needs no set-up and suits ``runserver`` and any single-process server. A message sent from
another process (a second worker, a management command, a task queue worker) reaches nobody
here: use the Redis backend for those.
"""

from .base import BaseGroupBackend, GroupMessage

__all__ = ["MemoryGroupBackend"]


class MemoryGroupBackend(BaseGroupBackend):
    """``WEBSOCKET_GROUPS = {"BACKEND": "django_websocket.groups.memory.MemoryGroupBackend"}``
    (the default): the sockets of this process; :func:`~django_websocket.groups.count` and
    :func:`~django_websocket.groups.members` tell this process's."""

    def send(self, group: str, message: GroupMessage, exclude: frozenset[str] = frozenset()) -> None:
        self.deliver(group, message, exclude)
