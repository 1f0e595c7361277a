"""A stand-in for a socket, with only what a group backend uses of one: for the tests of the
backend's own bookkeeping at a scale (10,000 members) where real connections would measure
the connections, not the bookkeeping."""

import threading
import uuid


class Member:
    def __init__(self):
        self.id = uuid.uuid4().hex
        self.closed = False
        self.received = []
        self._callbacks = []
        self._lock = threading.Lock()

    def add_close_callback(self, callback):
        self._callbacks.append(callback)

    def send(self, message):
        with self._lock:
            self.received.append(message)

    def close(self):
        """What a real socket does when it closes: run its close callbacks."""
        self.closed = True
        for callback in self._callbacks:
            callback(self)
