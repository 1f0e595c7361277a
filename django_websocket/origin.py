"""The Origin policy of the opening handshake (RFC 6455 §10.2).

Browsers send ``Origin`` with every WebSocket handshake, and Django's CSRF protection does not
cover the handshake (a GET): without this check any web page could open a connection with the
visitor's cookies (cross-site WebSocket hijacking).

The rule is the one of Django's CSRF Origin check: the handshake's origin must be the request's
own ``scheme://host[:port]``, or be trusted explicitly (``WEBSOCKET_ALLOWED_ORIGINS`` or the
view's ``allowed_origins``, and ``CSRF_TRUSTED_ORIGINS``). Origins are compared as RFC 6454
§5 says: scheme, host and port, all three.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TypeAlias
from urllib.parse import urlsplit

from django.conf import settings as django_settings
from django.http import HttpRequest
from django.http.request import split_domain_port

__all__ = ["check_origin", "Refusal"]

#: An origin as (scheme, host, port).
_Origin: TypeAlias = "tuple[str, str, int]"

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
# A DNS name (with the trailing dot of a fully qualified one allowed) or an IPv4 address, or
# (urlsplit strips the brackets) an IPv6 address.
_HOST = re.compile(r"[a-z0-9](?:[a-z0-9\-.]*[a-z0-9])?\.?|[0-9a-f:.]*:[0-9a-f:.]*")


class Refusal:
    """Why a handshake's origin is refused (``reason``, safe to tell the client) and what would
    allow it (``remedy``, naming the setting, for the log)."""

    __slots__ = ("reason", "remedy")

    def __init__(self, reason: str, remedy: str) -> None:
        self.reason = reason
        self.remedy = remedy

    def __str__(self) -> str:
        return f"{self.reason}; {self.remedy}"


def _normal_host(host: str) -> str:
    # "example.com." and "example.com" name the same host: Django strips the dot before
    # ALLOWED_HOSTS (split_domain_port), and so both sides of every comparison here lose it.
    return host.removesuffix(".")


def _parse(origin: str) -> _Origin | None:
    """Return (scheme, host, port) of a serialized origin (RFC 6454 §6.2), or None if malformed.

    Scheme and host are lower-cased (RFC 6454 §4) and the port is the scheme's default when the
    origin gives none, so that ``http://example.com:80`` is ``http://example.com``.
    """
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
    return scheme, _normal_host(host), port or _DEFAULT_PORTS[scheme]


def _serialize(scheme: str, host: str, port: int) -> str:
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}" if port == _DEFAULT_PORTS[scheme] else f"{scheme}://{host}:{port}"


def site_origin(request: HttpRequest) -> _Origin:
    """The request's own origin as (scheme, host, port): ``request.is_secure()`` and
    ``request.get_host()``, so Django's proxy settings apply (``SECURE_PROXY_SSL_HEADER``,
    ``USE_X_FORWARDED_HOST``), and a Host that is not in ``ALLOWED_HOSTS`` raises Django's
    ``DisallowedHost`` (a 400), as for any request."""
    scheme = "https" if request.is_secure() else "http"
    domain, port = split_domain_port(request.get_host())
    return scheme, _normal_host(domain.strip("[]")), int(port) if port else _DEFAULT_PORTS[scheme]


def _matches(pattern: str, scheme: str, host: str, port: int, *, with_domain: bool = False) -> bool:
    """Whether an origin matches one entry of a list of allowed origins.

    Entries are ``"*"``, or origins such as ``"https://example.com"`` (the port defaults to the
    scheme's) where the host may start with ``*.`` to allow every subdomain, and with
    ``with_domain`` the domain itself as well (what ``CSRF_TRUSTED_ORIGINS`` means by it).
    """
    if pattern == "*":
        return True
    wildcard = "://*." in pattern
    parsed = _parse(pattern.replace("://*.", "://wildcard.", 1))
    if parsed is None:
        return False
    p_scheme, p_host, p_port = parsed
    if p_scheme != scheme or p_port != port:
        return False
    if wildcard:
        domain = p_host[len("wildcard.") :]
        return host.endswith("." + domain) or (with_domain and host == domain)
    return p_host == host


def check_origin(
    request: HttpRequest,
    origin: str | None,
    *,
    allowed_origins: Sequence[str] | None = None,
    allowed_by: str = "WEBSOCKET_ALLOWED_ORIGINS",
    require_origin: bool = False,
) -> Refusal | None:
    """Return ``None`` if the handshake's ``Origin`` is acceptable, else a :class:`Refusal`.

    Acceptable: the request's own origin (:func:`site_origin`), one matching ``allowed_origins``
    (a list of patterns, see :func:`_matches`; ``allowed_by`` names where it comes from, for the
    log), or one of ``CSRF_TRUSTED_ORIGINS``, matched as Django matches them. A missing Origin
    (a non-browser client) is accepted unless ``require_origin``.
    """
    # First, so that a Host outside ALLOWED_HOSTS gets Django's 400 whatever the Origin.
    site = site_origin(request)
    if origin is None:
        if require_origin:
            return Refusal("no Origin header", "set WEBSOCKET_REQUIRE_ORIGIN = False to allow handshakes without one")
        return None
    origin = origin.strip()
    allowed_origins = allowed_origins or ()
    if "*" in allowed_origins or origin in allowed_origins:
        return None
    parsed = _parse(origin)
    if parsed is None:
        # "null" (sandboxed frames, file: pages, some redirects) is shared by every site: it
        # only passes when listed literally, or with "*".
        return Refusal("malformed or opaque origin", f"only listing it literally in {allowed_by} allows it")
    if parsed == site:
        return None
    scheme, host, port = parsed
    if any(_matches(pattern, scheme, host, port) for pattern in allowed_origins):
        return None
    trusted = django_settings.CSRF_TRUSTED_ORIGINS
    # Django accepts unsafe requests carrying the visitor's cookies from these origins (its CSRF
    # Origin check); a handshake from them is the same risk, so they are trusted the same way.
    # (Django has no "*" entry there: its system check wants a scheme in each.)
    if any(pattern != "*" and _matches(pattern, scheme, host, port, with_domain=True) for pattern in trusted):
        return None
    reason = f"not this site's origin ({_serialize(*site)})"
    if trusted:
        reason += " nor in CSRF_TRUSTED_ORIGINS"
    remedy = f"add it to {allowed_by} to allow it"
    hints = []
    if host == site[1] and scheme == "https" and site[0] == "http":
        hints.append("behind a proxy that terminates TLS, set SECURE_PROXY_SSL_HEADER so that Django sees it")
    forwarded = request.META.get("HTTP_X_FORWARDED_HOST")
    if forwarded and not django_settings.USE_X_FORWARDED_HOST:
        forwarded_domain = _normal_host(split_domain_port(forwarded.split(",")[0].strip())[0].strip("[]"))
        if forwarded_domain == host:
            hints.append("behind a proxy that sets X-Forwarded-Host, set USE_X_FORWARDED_HOST = True")
    if hints:
        remedy += f" ({'; '.join(hints)})"
    return Refusal(reason, remedy)
