"""Settings of django-websocket, with their defaults in one place.

Every value is read from ``django.conf.settings`` when it is used, never at import time, so
``override_settings`` works in tests.
"""

from typing import Any

from django.conf import settings as django_settings

DEFAULTS: dict[str, Any] = {
    # Serve WebSocket requests on views that are not decorated (needs WebSocketMiddleware).
    "WEBSOCKET_ACCEPT_ALL": False,
    # Largest message accepted, in bytes, after reassembly and decompression (None: no limit).
    "WEBSOCKET_MAX_MESSAGE_SIZE": 2**20,
    # Largest single frame accepted, in bytes, as sent on the wire (None: no limit of its own).
    "WEBSOCKET_MAX_FRAME_SIZE": None,
    # Subprotocols the server speaks, in its order of preference.
    "WEBSOCKET_SUBPROTOCOLS": (),
    # Negotiate permessage-deflate (RFC 7692) when the client offers it.
    "WEBSOCKET_COMPRESSION": True,
    # Seconds to wait for the peer's close frame after ours, then for its TCP close.
    "WEBSOCKET_CLOSE_TIMEOUT": 5.0,
    # Origins allowed to open connections besides the site's own and CSRF_TRUSTED_ORIGINS: a
    # list such as ["https://example.com", "https://*.example.com"], or ["*"]; None: no other.
    "WEBSOCKET_ALLOWED_ORIGINS": None,
    # Refuse handshakes without an Origin header (non-browser clients send none).
    "WEBSOCKET_REQUIRE_ORIGIN": False,
    # At most this many open WebSocket connections per process (None: no cap); above: 503.
    "WEBSOCKET_MAX_CONNECTIONS": None,
    # Limits on the opening handshake's headers: total bytes of names and values, and count.
    "WEBSOCKET_MAX_HEADER_SIZE": 32768,
    "WEBSOCKET_MAX_HEADERS": 100,
    # Seconds a client has to send each request head (request line and headers), on every
    # server of django_websocket.servers; None: no deadline. Slowloris guard.
    "WEBSOCKET_HANDSHAKE_TIMEOUT": 10.0,
    # Seconds a send may wait for a client that takes no bytes at all before the connection is
    # ended: "no progress for this long", not a total (a slow but steady reader is never cut).
    "WEBSOCKET_SEND_TIMEOUT": 30.0,
    # Unread messages a connection queues at most, and their total size in bytes (characters
    # of text): past either it stops reading its socket until the view reads (TCP then holds
    # the client back), so a flood costs at most about this much memory per connection.
    "WEBSOCKET_MAX_QUEUE": 32,
    "WEBSOCKET_MAX_QUEUE_BYTES": 2**20,
    # Seconds a view may stay blocked in wait() before the database connections its thread
    # holds are closed (None: they stay, as CONN_MAX_AGE decides between requests).
    "WEBSOCKET_DATABASE_IDLE_TIMEOUT": 1.0,
    # On an ASGI server (django_websocket.asgi): regular (def) WebSocket views running at once,
    # each in a thread of its own; past this many, handshakes are refused with 503.
    "WEBSOCKET_ASGI_THREADS": 500,
    # Ping after this many seconds without receiving anything (None: no keepalive) ...
    "WEBSOCKET_PING_INTERVAL": 20.0,
    # ... and fail the connection with 1011 when nothing arrives this many seconds after the ping.
    "WEBSOCKET_PING_TIMEOUT": 20.0,
    # Groups (django_websocket.groups): the backend carrying group messages, and its options.
    # The keys given in a project's setting override these; see docs/topics/groups.rst.
    "WEBSOCKET_GROUPS": {
        "BACKEND": "django_websocket.groups.memory.MemoryGroupBackend",
        # Messages of one group queued for one socket at most (a socket that keeps up has none
        # queued); one more applies SLOW_CONSUMER: "close" the socket with 1008, "drop_oldest"
        # queued message, or "drop_new" (the one that does not fit).
        "QUEUE_SIZE": 1000,
        "SLOW_CONSUMER": "close",
    },
}


class Settings:
    """``settings.WEBSOCKET_X`` with the default of :data:`DEFAULTS` when the project sets none."""

    def __getattr__(self, name: str) -> Any:
        if name not in DEFAULTS:
            raise AttributeError(name)
        return getattr(django_settings, name, DEFAULTS[name])


settings = Settings()
