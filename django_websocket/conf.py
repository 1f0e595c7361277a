"""Settings of django-websocket, with their defaults in one place.

Every value is read from ``django.conf.settings`` when it is used, never at import time, so
``override_settings`` works in tests.
"""

from django.conf import settings as django_settings

DEFAULTS = {
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
}


class Settings:
    """``settings.WEBSOCKET_X`` with the default of :data:`DEFAULTS` when the project sets none."""

    def __getattr__(self, name):
        if name not in DEFAULTS:
            raise AttributeError(name)
        return getattr(django_settings, name, DEFAULTS[name])


settings = Settings()
