"""The Origin policy of the opening handshake (RFC 6455 §10.2).

Browsers send ``Origin`` with every WebSocket handshake, and Django's CSRF protection does not
cover the handshake (a GET): without this check any web page could open a connection with the
visitor's cookies (cross-site WebSocket hijacking).
"""

import re
from urllib.parse import urlsplit

from django.conf import settings as django_settings
from django.http.request import split_domain_port, validate_host

__all__ = ["check_origin"]

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
# A DNS name or an IPv4 address, or (urlsplit strips the brackets) an IPv6 address.
_HOST = re.compile(r"[a-z0-9](?:[a-z0-9\-.]*[a-z0-9])?|[0-9a-f:.]*:[0-9a-f:.]*")


def _parse(origin):
    """Return (scheme, host, port) of a serialized origin (RFC 6454 §6.2), or None if malformed."""
    try:
        parts = urlsplit(origin)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if scheme not in _DEFAULT_PORTS or not _HOST.fullmatch(host) or parts.path or parts.query or parts.fragment:
        return None
    if parts.username is not None or parts.password is not None:
        return None
    return scheme, host, port or _DEFAULT_PORTS[scheme]


def _allowed_hosts():
    allowed = list(django_settings.ALLOWED_HOSTS)
    if django_settings.DEBUG and not allowed:
        # What Django itself accepts in DEBUG with an empty ALLOWED_HOSTS.
        allowed = [".localhost", "127.0.0.1", "[::1]"]
    return allowed


def _matches(pattern, scheme, host, port):
    """Whether an origin matches one ``WEBSOCKET_ALLOWED_ORIGINS`` entry.

    Entries are ``"*"``, or origins such as ``"https://example.com"`` (the port defaults to the
    scheme's) where the host may start with ``*.`` to allow every subdomain.
    """
    if pattern == "*":
        return True
    parsed = _parse(pattern.replace("://*.", "://wildcard."))
    if parsed is None:
        return False
    p_scheme, p_host, p_port = parsed
    if p_scheme != scheme or p_port != port:
        return False
    if p_host.startswith("wildcard.") and "://*." in pattern:
        suffix = p_host[len("wildcard") :]
        return host.endswith(suffix) and len(host) > len(suffix)
    return p_host == host


def check_origin(origin, *, secure, allowed_origins=None, require_origin=False):
    """Return ``None`` if the handshake's ``Origin`` is acceptable, else the reason it is not.

    With ``allowed_origins`` (a list of patterns, see :func:`_matches`), the origin must match one.
    Without, its host must be one of ``ALLOWED_HOSTS`` (with Django's wildcards), and a
    connection made over TLS only accepts an https origin. A missing Origin (a non-browser client)
    is accepted unless ``require_origin``.
    """
    if origin is None:
        return "no Origin header (WEBSOCKET_REQUIRE_ORIGIN is on)" if require_origin else None
    origin = origin.strip()
    if allowed_origins is not None and ("*" in allowed_origins or origin in allowed_origins):
        return None
    parsed = _parse(origin)
    if parsed is None:
        return "malformed or opaque origin"
    scheme, host, port = parsed
    if allowed_origins is not None:
        if any(_matches(pattern, scheme, host, port) for pattern in allowed_origins):
            return None
        return "origin not in WEBSOCKET_ALLOWED_ORIGINS"
    if secure and scheme not in ("https", "wss"):
        return "insecure origin for a secure connection"
    domain, _ = split_domain_port(host if ":" not in host else f"[{host}]")
    if not validate_host(domain or host, _allowed_hosts()):
        return "origin host not in ALLOWED_HOSTS"
    return None
