"""The server's opening handshake (RFC 6455 §4.2), read from a WSGI environ.

:func:`read_request` validates the client's request and returns a :class:`Request`;
:func:`accept_response` builds the ``101 Switching Protocols`` answer as bytes. Errors are
:class:`~django_websocket.exceptions.HandshakeError` subclasses that carry their HTTP status.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable, Mapping
from typing import Any, TypeAlias

from .exceptions import BadRequest, HeadersTooLarge, UnsupportedVersion

__all__ = [
    "GUID",
    "Request",
    "is_websocket_request",
    "read_request",
    "accept_key",
    "accept_response",
    "parse_tokens",
    "parse_extensions",
]

# RFC 6455 §1.3: the GUID concatenated with the key before hashing.
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

# RFC 7230 §3.2.6 token characters.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# CR, LF, NUL and the other C0 controls but HTAB never belong in a header value (RFC 7230 §3.2).
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def parse_tokens(value: str) -> list[str]:
    """Split a comma-separated header into its tokens, lower-cased (RFC 7230 §7)."""
    return [t.strip().lower() for t in value.split(",") if t.strip()]


def is_websocket_request(environ: Mapping[str, Any]) -> bool:
    """Whether the request asks to upgrade to WebSocket (``Upgrade`` holds the ``websocket`` token).

    Such a request is then either accepted or refused with an HTTP error, never served as plain HTTP.
    """
    upgrade = environ.get("HTTP_UPGRADE")
    if not upgrade:
        return False
    return "websocket" in parse_tokens(upgrade)


class Request:
    """A validated opening handshake: what the client asked for."""

    __slots__ = ("key", "subprotocols", "extensions", "origin", "host", "path")

    def __init__(
        self,
        key: str,
        subprotocols: list[str],
        extensions: list[ExtensionOffer],
        origin: str | None,
        host: str,
        path: str,
    ) -> None:
        self.key = key
        #: The subprotocols the client offered, in its order of preference (§4.1, §11.3.4).
        self.subprotocols = subprotocols
        #: The extension offers, as ``[(name, {param: value-or-None}), ...]`` (§9.1).
        self.extensions = extensions
        self.origin = origin
        self.host = host
        self.path = path

    def __repr__(self) -> str:
        return f"<Request {self.path!r} subprotocols={self.subprotocols!r}>"


def read_request(
    environ: Mapping[str, Any], *, max_header_size: int | None = None, max_headers: int | None = None
) -> Request:
    """Validate the client's opening handshake (RFC 6455 §4.2.1) and return a :class:`Request`.

    Raises :class:`BadRequest` (400) for a malformed request, :class:`UnsupportedVersion` (426,
    with ``Sec-WebSocket-Version: 13``) for a version other than 13, and :class:`HeadersTooLarge`
    (431) when the headers exceed ``max_header_size`` bytes or ``max_headers`` in number.
    """
    count = size = 0
    for name, value in environ.items():
        if not name.startswith("HTTP_") or not isinstance(value, str):
            continue
        count += 1
        size += len(name) - 5 + len(value)
        # RFC 7230 §3.2: field values never contain CR, LF or NUL; a server that let them
        # through could be made to split or forge headers.
        if _CONTROL.search(value):
            raise BadRequest(f"control character in the {_header_name(name)} header")
    if max_headers is not None and count > max_headers:
        raise HeadersTooLarge(f"{count} headers, more than the limit of {max_headers}")
    if max_header_size is not None and size > max_header_size:
        raise HeadersTooLarge(f"{size} bytes of headers, more than the limit of {max_header_size}")
    # §4.2.1 item 1: "An HTTP/1.1 or higher GET request".
    if environ.get("REQUEST_METHOD") != "GET":
        raise BadRequest("the opening handshake must be a GET request")
    if not _http_11_or_higher(environ.get("SERVER_PROTOCOL", "")):
        raise BadRequest("the opening handshake needs HTTP/1.1 or higher")
    # Item 2: a Host header.
    host = environ.get("HTTP_HOST", "")
    if not host:
        raise BadRequest("missing Host header")
    # Items 3-4: Upgrade holds "websocket" and Connection holds "upgrade", both case-insensitive
    # token lists (Firefox sends "Connection: keep-alive, Upgrade").
    if "websocket" not in parse_tokens(environ.get("HTTP_UPGRADE", "")):
        raise BadRequest("the Upgrade header must contain 'websocket'")
    if "upgrade" not in parse_tokens(environ.get("HTTP_CONNECTION", "")):
        raise BadRequest("the Connection header must contain 'upgrade'")
    # Item 5: a key that base64-decodes to exactly 16 bytes.
    key = environ.get("HTTP_SEC_WEBSOCKET_KEY", "").strip()
    if not key:
        raise BadRequest("missing Sec-WebSocket-Key header")
    try:
        raw_key = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("Sec-WebSocket-Key is not valid base64") from None
    if len(raw_key) != 16:
        raise BadRequest("Sec-WebSocket-Key must decode to 16 bytes")
    # Item 6: version 13; another version gets 426 and the one we speak (§4.4).
    version = environ.get("HTTP_SEC_WEBSOCKET_VERSION", "").strip()
    if not version:
        raise BadRequest("missing Sec-WebSocket-Version header")
    if version != "13":
        raise UnsupportedVersion(f"unsupported Sec-WebSocket-Version {version!r}")
    subprotocols = []
    for token in environ.get("HTTP_SEC_WEBSOCKET_PROTOCOL", "").split(","):
        token = token.strip()
        if not token:
            continue
        if not _TOKEN.fullmatch(token):
            raise BadRequest(f"invalid subprotocol {token!r} in Sec-WebSocket-Protocol")
        subprotocols.append(token)
    extensions = parse_extensions(environ.get("HTTP_SEC_WEBSOCKET_EXTENSIONS", ""))
    path = environ.get("PATH_INFO", "/")
    return Request(key, subprotocols, extensions, environ.get("HTTP_ORIGIN"), host, path)


def _header_name(meta_key: str) -> str:
    return "-".join(part.capitalize() for part in meta_key[5:].split("_"))


def _http_11_or_higher(protocol: str) -> bool:
    match = re.fullmatch(r"HTTP/(\d+)(?:\.(\d+))?", protocol)
    return match is not None and (int(match[1]), int(match[2] or 0)) >= (1, 1)


def parse_extensions(value: str) -> list[ExtensionOffer]:
    """Parse ``Sec-WebSocket-Extensions`` (RFC 6455 §9.1) into ``[(name, {param: value}), ...]``.

    A parameter without a value maps to ``None``. Quoted values are unquoted. Raises
    :class:`BadRequest` on a malformed header.
    """
    offers: list[ExtensionOffer] = []
    for item in _split_outside_quotes(value, ","):
        if not item.strip():
            continue
        parts = _split_outside_quotes(item, ";")
        name = parts[0].strip()
        if not _TOKEN.fullmatch(name):
            raise BadRequest(f"invalid extension name {name!r}")
        params: dict[str, ExtensionParam] = {}
        for param in parts[1:]:
            param = param.strip()
            if not param:
                raise BadRequest("empty extension parameter")
            pname, sep, pvalue = param.partition("=")
            pname = pname.strip()
            if not _TOKEN.fullmatch(pname):
                raise BadRequest(f"invalid extension parameter {pname!r}")
            if sep:
                pvalue = pvalue.strip()
                if len(pvalue) >= 2 and pvalue[0] == pvalue[-1] == '"':
                    # RFC 6455 §9.1: the value *after quoted-string unescaping* must be a token;
                    # a quoted-pair is a backslash and the character it stands for (RFC 7230 §3.2.6).
                    pvalue = re.sub(r"\\(.)", r"\1", pvalue[1:-1])
                if not _TOKEN.fullmatch(pvalue):
                    raise BadRequest(f"invalid value for extension parameter {pname!r}")
                params_value: str | None = pvalue
            else:
                params_value = None
            if pname in params:
                # RFC 7692 §7: a repeated parameter makes the offer invalid; keep the marker.
                params[pname] = _Duplicate
            else:
                params[pname] = params_value
        offers.append((name.lower(), params))
    return offers


class _Duplicate:
    """Marks a parameter given twice in one extension offer."""


#: A parameter's value in an extension offer: a str, ``None`` when it has none, or the marker of
#: a parameter given twice.
ExtensionParam: TypeAlias = "str | None | type[_Duplicate]"
#: One offer of ``Sec-WebSocket-Extensions``: the extension's name and its parameters.
ExtensionOffer: TypeAlias = "tuple[str, dict[str, ExtensionParam]]"


def _split_outside_quotes(value: str, sep: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in value:
        if escaped:  # the character of a quoted-pair never opens, closes or separates
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        if char == sep and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    if quoted:
        raise BadRequest("unbalanced quote in Sec-WebSocket-Extensions")
    parts.append("".join(current))
    return parts


def accept_key(key: str) -> str:
    """``Sec-WebSocket-Accept`` for a ``Sec-WebSocket-Key`` (RFC 6455 §4.2.2 item 5.4)."""
    digest = hashlib.sha1((key + GUID).encode("ascii")).digest()
    return base64.b64encode(digest).decode("ascii")


def accept_response(
    key: str,
    subprotocol: str | None = None,
    extensions: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
) -> bytes:
    """The ``101 Switching Protocols`` response as bytes (RFC 6455 §4.2.2).

    ``Sec-WebSocket-Protocol`` is sent only when a subprotocol was chosen, and
    ``Sec-WebSocket-Extensions`` only when one was negotiated.
    """
    lines = [
        "HTTP/1.1 101 Switching Protocols",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Accept: {accept_key(key)}",
    ]
    if subprotocol:
        lines.append(f"Sec-WebSocket-Protocol: {subprotocol}")
    if extensions:
        lines.append(f"Sec-WebSocket-Extensions: {extensions}")
    for name, value in headers:
        if _CONTROL.search(name) or _CONTROL.search(value):
            raise ValueError(f"control character in response header {name!r}")
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
