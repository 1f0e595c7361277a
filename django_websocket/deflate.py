"""The permessage-deflate extension (RFC 7692), on the stdlib's ``zlib``.

:func:`negotiate` picks the first acceptable offer of a handshake and returns the response header
value with a :class:`PerMessageDeflate` object, which the protocol uses to inflate received
messages (bounded by the message size limit while inflating) and deflate sent ones.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from typing import TYPE_CHECKING, cast

from .exceptions import InvalidPayload, MessageTooBig

if TYPE_CHECKING:
    from .handshake import ExtensionOffer

__all__ = ["PerMessageDeflate", "negotiate"]

NAME = "permessage-deflate"
# RFC 7692 §7.2.2: the four octets removed by the sender and appended again by the receiver.
_TAIL = b"\x00\x00\xff\xff"
_PARAMS = {
    "server_no_context_takeover",
    "client_no_context_takeover",
    "server_max_window_bits",
    "client_max_window_bits",
}


class PerMessageDeflate:
    """One connection's compression state.

    The compressor and decompressor are made on first use, so an idle connection costs nothing
    here (a zlib stream holds tens of KiB).
    """

    def __init__(
        self,
        *,
        server_no_context_takeover: bool = False,
        client_no_context_takeover: bool = False,
        server_max_window_bits: int = 12,
        compress_level: int = 6,
        mem_level: int = 5,
        min_size: int = 64,
    ) -> None:
        self.server_no_context_takeover = server_no_context_takeover
        self.client_no_context_takeover = client_no_context_takeover
        self.server_max_window_bits = server_max_window_bits
        self.compress_level = compress_level
        self.mem_level = mem_level
        self.min_size = min_size
        self._encoder: zlib._Compress | None = None
        self._decoder: zlib._Decompress | None = None

    def should_compress(self, payload: bytes) -> bool:
        return len(payload) >= self.min_size

    def _new_encoder(self) -> zlib._Compress:
        bits = self.server_max_window_bits
        if bits == 8:
            # zlib cannot deflate with a 256-byte window (it silently uses 512). Huffman-only
            # coding emits no back-references at all, so the stream is valid for any window.
            return zlib.compressobj(self.compress_level, zlib.DEFLATED, -9, self.mem_level, zlib.Z_HUFFMAN_ONLY)
        return zlib.compressobj(self.compress_level, zlib.DEFLATED, -bits, self.mem_level)

    def compress(self, payload: bytes) -> bytes:
        """Deflate one whole message (RFC 7692 §7.2.1)."""
        encoder = self._encoder
        if encoder is None:
            encoder = self._encoder = self._new_encoder()
        data = encoder.compress(payload) + encoder.flush(zlib.Z_SYNC_FLUSH)
        if self.server_no_context_takeover:
            self._encoder = None
        if data.endswith(_TAIL):
            data = data[:-4]
        return data

    def decompress(self, data: bytes | bytearray, *, end: bool, max_length: int | None = None) -> bytes:
        """Inflate one frame's payload of a compressed message (RFC 7692 §7.2.2).

        ``end`` marks the message's last frame. At most ``max_length`` bytes are ever produced:
        a small compressed frame cannot make us allocate more than the message size limit.
        """
        decoder = self._decoder
        if decoder is None:
            # Always the largest window: it reads any stream made with a smaller one.
            decoder = self._decoder = zlib.decompressobj(wbits=-15)
        if end:
            data = data + _TAIL
        try:
            if max_length is None:
                out = decoder.decompress(data)
            else:
                # One byte past the limit tells "too big" apart from "exactly the limit"
                # (and zlib reads max_length=0 as "no limit").
                out = decoder.decompress(data, max_length + 1)
                if len(out) > max_length:
                    raise MessageTooBig("message inflates past the size limit")
        except zlib.error as exc:
            raise InvalidPayload(f"invalid compressed data: {exc}") from None
        # RFC 7692 §7.2.3.3: a message may end with a BFINAL block, which ends the DEFLATE stream;
        # zlib would then ignore all later input, so the next message needs a new inflater.
        if end and (self.client_no_context_takeover or decoder.eof):
            self._decoder = None
        return out


def _window_bits(value: str | None) -> int | None:
    # RFC 7692 §7.1.2: 1*DIGIT, a decimal integer from 8 to 15, without leading zeros.
    if value is None or not value.isdigit() or value.startswith("0"):
        return None
    bits = int(value)
    return bits if 8 <= bits <= 15 else None


def negotiate(
    offers: Iterable[ExtensionOffer],
    *,
    server_max_window_bits: int = 12,
    compress_level: int = 6,
    mem_level: int = 5,
    min_size: int = 64,
) -> tuple[str, PerMessageDeflate] | tuple[None, None]:
    """Accept the first valid permessage-deflate offer (RFC 7692 §5, §7.1).

    ``offers`` is what :func:`~django_websocket.handshake.parse_extensions` returns. Returns
    ``(response_header_value, PerMessageDeflate)``, or ``(None, None)`` when no offer is acceptable
    (declining is not an error: the connection simply runs uncompressed).
    """
    for name, params in offers:
        if name != NAME:
            continue
        if set(params) - _PARAMS or any(not isinstance(v, (str, type(None))) for v in params.values()):
            continue  # unknown or repeated parameter: decline this offer (§5)
        values = cast("dict[str, str | None]", params)  # no repeated parameter, then
        if params.get("server_no_context_takeover", None) is not None:
            continue
        if params.get("client_no_context_takeover", None) is not None:
            continue
        requested_bits = None
        if "server_max_window_bits" in params:
            requested_bits = _window_bits(values["server_max_window_bits"])
            if requested_bits is None:
                continue
        if "client_max_window_bits" in params and params["client_max_window_bits"] is not None:
            if _window_bits(values["client_max_window_bits"]) is None:
                continue
        response = [NAME]
        server_nct = "server_no_context_takeover" in params
        client_nct = "client_no_context_takeover" in params
        if server_nct:
            response.append("server_no_context_takeover")
        if client_nct:
            response.append("client_no_context_takeover")
        bits = server_max_window_bits
        if requested_bits is not None:
            # §7.1.2.1: echo the limit; we deflate with no larger a window.
            bits = min(bits, requested_bits)
            response.append(f"server_max_window_bits={requested_bits}")
        # client_max_window_bits is never limited in the response: we inflate with a 15-bit
        # window, which reads whatever window the client uses (§7.1.2.2).
        extension = PerMessageDeflate(
            server_no_context_takeover=server_nct,
            client_no_context_takeover=client_nct,
            server_max_window_bits=bits,
            compress_level=compress_level,
            mem_level=mem_level,
            min_size=min_size,
        )
        return "; ".join(response), extension
    return None, None
