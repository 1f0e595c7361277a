"""The sans-I/O WebSocket server protocol (RFC 6455 §5-§7).

:class:`ServerProtocol` never touches a socket. Bytes read from the peer go in through
:meth:`~ServerProtocol.receive_data` (and :meth:`~ServerProtocol.receive_eof`); what they mean comes
out of :meth:`~ServerProtocol.events_received` (messages as ``str``/``bytes``, and :class:`Ping`,
:class:`Pong`, :class:`Close` events); what must be written back (pongs, close replies) comes out
of :meth:`~ServerProtocol.data_to_send`. Messages we send are turned into frame bytes by
:meth:`~ServerProtocol.send`. The I/O layer is a thin loop around this object, which is what lets the
same core serve threads, gevent and tests.
"""

from __future__ import annotations

import codecs
import enum
from typing import TYPE_CHECKING, TypeAlias

from .exceptions import ConnectionClosed, InvalidFrame, InvalidPayload, MessageTooBig, ProtocolError
from .frames import CloseCode, Opcode, apply_mask, parse_close, serialize_close, serialize_frame

if TYPE_CHECKING:
    from .deflate import PerMessageDeflate

__all__ = ["State", "Ping", "Pong", "Close", "ServerProtocol", "DEFAULT_MAX_MESSAGE_SIZE", "Message", "Event"]

DEFAULT_MAX_MESSAGE_SIZE = 2**20  # 1 MiB

_TEXT = Opcode.TEXT.value
_BINARY = Opcode.BINARY.value
_CONTINUATION = Opcode.CONTINUATION.value
_CLOSE = Opcode.CLOSE.value
_PING = Opcode.PING.value
_PONG = Opcode.PONG.value
_Utf8Decoder = codecs.getincrementaldecoder("utf-8")


class State(enum.IntEnum):
    """Connection states (RFC 6455 §4, §7)."""

    CONNECTING = 0
    OPEN = 1
    CLOSING = 2  # we sent a close frame and wait for the peer's
    CLOSED = 3  # the close handshake is over (or the connection failed): close the transport


class Ping:
    __slots__ = ("payload",)

    def __init__(self, payload: bytes) -> None:
        self.payload = payload

    def __repr__(self) -> str:
        return f"Ping({self.payload!r})"


class Pong(Ping):
    __slots__ = ()

    def __repr__(self) -> str:
        return f"Pong({self.payload!r})"


class Close:
    """The connection closed: ``code`` is 1005 when the peer gave none, 1006 when it just went away."""

    __slots__ = ("code", "reason")

    def __init__(self, code: int, reason: str = "") -> None:
        self.code = code
        self.reason = reason

    def __repr__(self) -> str:
        return f"Close({self.code!r}, {self.reason!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Close) and (self.code, self.reason) == (other.code, other.reason)


#: A message: text as ``str``, binary as ``bytes``.
Message: TypeAlias = str | bytes
#: What :meth:`ServerProtocol.events_received` returns: messages, and control frames as events.
Event: TypeAlias = str | bytes | Ping | Pong | Close


class ServerProtocol:
    """The server side of one WebSocket connection, after the opening handshake.

    ``max_message_size`` (bytes, ``None`` for no limit) applies to each reassembled message after
    decompression; ``max_frame_size`` to each frame's payload as it is on the wire. ``extension`` is
    the negotiated permessage-deflate object, if any (see :mod:`django_websocket.deflate`).
    """

    # Slots: one of these per open connection, and a detached idle one is little else.
    __slots__ = (
        "state", "max_message_size", "max_frame_size", "extension", "close_code", "close_reason", "close_sent",
        "close_received", "failure", "_failure_close", "_buf", "_pos", "_events", "_out", "_f_opcode", "_f_fin",
        "_f_mask", "_f_remaining", "_f_offset", "_f_pieces", "_f_collected", "_m_opcode", "_m_compressed",
        "_m_buf", "_m_size", "_m_decoder",
    )  # fmt: skip

    def __init__(
        self,
        *,
        max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
        max_frame_size: int | None = None,
        extension: PerMessageDeflate | None = None,
    ) -> None:
        self.state = State.OPEN
        self.max_message_size = max_message_size
        self.max_frame_size = max_frame_size
        self.extension = extension
        #: The close code and reason, once known (sent or received); 1006 if the peer vanished.
        self.close_code: int | None = None
        self.close_reason = ""
        self.close_sent = False
        self.close_received = False
        #: The :class:`ProtocolError` that failed the connection, if one did.
        self.failure: ProtocolError | None = None
        # The close frame of a failure, until data_to_send() hands it out (see there).
        self._failure_close: bytes | None = None
        self._buf = bytearray()
        self._pos = 0
        self._events: list[Event] = []
        self._out: list[bytes] = []
        # The frame being read: its header fields and how much payload is still to come.
        self._f_opcode: int | None = None
        self._f_fin = False
        self._f_mask = b""
        self._f_remaining = 0
        self._f_offset = 0
        # The pieces of a large binary frame received so far (see _collect_binary), and their size.
        self._f_pieces: list[bytes | bytearray | memoryview] | None = None
        self._f_collected = 0
        # The data message being reassembled (RFC 6455 §5.4).
        self._m_opcode: int | None = None
        self._m_compressed = False
        self._m_buf = bytearray()
        self._m_size = 0
        self._m_decoder: codecs.IncrementalDecoder | None = None

    # --- input --------------------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Feed bytes read from the peer."""
        if self.state is State.CLOSED:
            return  # RFC 6455 §5.5.1 / §7.1.7: nothing after a close or a failure is processed
        try:
            if self._f_pieces is not None:
                data = self._collect_binary(data)
                if not data:
                    return
            self._buf += data
            self._parse()
        except ProtocolError as exc:
            self.fail(exc)

    def _collect_binary(self, data: bytes | bytearray | memoryview) -> bytes | bytearray | memoryview:
        # A large binary frame arrives in pieces, kept aside as they are and joined once at the
        # end: grown in the parse buffer, it would be copied again each time the buffer grows.
        missing = self._f_remaining - self._f_collected
        if len(data) < missing:
            pieces: list[bytes | bytearray | memoryview] = self._f_pieces  # type: ignore[assignment]  # set: see receive_data
            if len(data) >= 4096:
                pieces.append(data if type(data) is bytes else bytes(data))
            elif type(pieces[-1]) is bytearray and len(pieces[-1]) < 65536:
                pieces[-1] += data
            else:
                # Small pieces are gathered, so that a frame trickled byte by byte is not one
                # object per byte (which would cost ~40 times the size limit).
                pieces.append(bytearray(data))
            self._f_collected += len(data)
            return b""
        pieces = self._f_pieces  # type: ignore[assignment]
        pieces.append(memoryview(data)[:missing])
        self._f_pieces = None
        self._f_opcode = None
        self._data(apply_mask(b"".join(pieces), self._f_mask), self._f_fin)
        return data[missing:]

    def receive_eof(self) -> None:
        """The peer closed its side of the TCP connection."""
        if self.state is not State.CLOSED:
            # No close frame came: the connection closed abnormally (RFC 6455 §7.1.5, §7.4.1).
            self.state = State.CLOSED
            if not self.close_received:
                self.close_code, self.close_reason = CloseCode.ABNORMAL_CLOSURE, ""
                self._events.append(Close(CloseCode.ABNORMAL_CLOSURE, ""))
        self._buf = bytearray()
        self._pos = 0
        self._f_pieces = None

    def events_received(self) -> list[Event]:
        """Return and forget the events parsed since the last call."""
        events, self._events = self._events, []
        return events

    def data_to_send(self, *, hold_failure_close: bool = False) -> bytes:
        """Return and forget the bytes the protocol wants written (pongs, close frames).

        With ``hold_failure_close``, the close frame of a failure stays back (and data may still
        be sent): an application that has not yet consumed the messages received before the bad
        frame can answer them first, then the close goes out with the next call.
        """
        if not self._out and self._failure_close is None:
            return b""  # the common case, once per read: nothing to write, nothing allocated
        out = b"".join(self._out) if self._out else b""
        self._out = []
        if self._failure_close is not None and not hold_failure_close:
            out += self._failure_close
            self._failure_close = None
            self.close_sent = True
        return out

    @property
    def failure_close_pending(self) -> bool:
        """Whether the close frame of a failure was held back by ``data_to_send``."""
        return self._failure_close is not None

    def fail(self, exc: ProtocolError) -> None:
        """Fail the connection with ``exc.code`` (RFC 6455 §7.1.7): send a close, discard input."""
        self.failure = exc
        if not self.close_sent and self._failure_close is None:
            self._failure_close = serialize_frame(_CLOSE, serialize_close(exc.code, str(exc)))
        if not self.close_received:
            self.close_code, self.close_reason = exc.code, str(exc)
            self._events.append(Close(exc.code, str(exc)))
        self.state = State.CLOSED
        self._buf = bytearray()
        self._pos = 0
        self._f_pieces = None

    def _parse(self) -> None:
        buf = self._buf
        pos = self._pos
        end = len(buf)
        while self.state is not State.CLOSED:
            if self._f_opcode is None:
                # A new frame header (RFC 6455 §5.2), validated as soon as its first two bytes
                # are here so that a bad frame fails before its payload is waited for.
                if end - pos < 2:
                    break
                b0 = buf[pos]
                b1 = buf[pos + 1]
                opcode = b0 & 0x0F
                length = b1 & 0x7F
                if (b0 == 0x81 or b0 == 0x82) and b1 > 0x80 and b1 < 0xFE and self._m_opcode is None:
                    # The most common frame of all, valid as its two bytes show (§5.2): a small
                    # (7-bit length), masked, final text or binary frame with no RSV bit,
                    # starting a message. It skips the checks below.
                    fin, rsv1 = True, False
                    header_len = 2
                else:
                    fin = bool(b0 & 0x80)
                    rsv1 = bool(b0 & 0x40)
                    self._check_header(b0, b1, opcode, fin, rsv1, length)
                    if length < 126:
                        header_len = 2
                    elif length == 126:
                        if end - pos < 4:
                            break
                        length = (buf[pos + 2] << 8) | buf[pos + 3]
                        header_len = 4
                    else:
                        if end - pos < 10:
                            break
                        length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                        if length >> 63:
                            raise InvalidFrame("the most significant bit of a 64-bit length must be 0 (§5.2)")
                        header_len = 10
                if end - pos < header_len + 4:
                    break
                if opcode < 8:
                    self._check_size(opcode, rsv1, length)
                    start = pos + header_len + 4
                    if fin and opcode and not rsv1 and end - start >= length:
                        # Fast path, the common case: a whole unfragmented, uncompressed message
                        # is already here. It needs none of the state kept for a frame or a
                        # message that arrives in pieces: a fifth of the cost of receiving a small one.
                        message = apply_mask(buf[start : start + length], bytes(buf[start - 4 : start]))
                        pos = start + length
                        if opcode == _TEXT:
                            try:
                                message = message.decode("utf-8")  # type: ignore[assignment]  # now text
                            except UnicodeDecodeError as exc:
                                raise InvalidPayload(f"invalid UTF-8 in a text message: {exc.reason}") from None
                        self._events.append(message)
                        continue
                self._f_mask = bytes(buf[pos + header_len : pos + header_len + 4])
                pos += header_len + 4
                self._f_opcode = opcode
                self._f_fin = fin
                self._f_remaining = length
                self._f_offset = 0
                if opcode != _CONTINUATION and opcode < 8:
                    self._m_opcode = opcode
                    self._m_compressed = rsv1
            opcode = self._f_opcode
            remaining = self._f_remaining
            if opcode >= 8:
                # Control frames are at most 125 bytes: handle them whole (§5.5).
                if end - pos < remaining:
                    break
                payload = apply_mask(buf[pos : pos + remaining], self._f_mask)
                pos += remaining
                self._f_opcode = None
                self._control(opcode, payload)
                continue
            # Data frames are handled as their payload arrives, so that invalid UTF-8 fails as
            # soon as it is seen, even in the middle of a frame (§8.1, "fail fast").
            take = min(end - pos, remaining)
            if take < remaining and self._m_opcode == _BINARY and not self._m_compressed:
                # Binary payload has nothing to check as it arrives: collect the whole frame (its
                # size passed the limits with its header) and unmask it in one go, rather than
                # piece by piece into the message and copied again at its end.
                self._f_pieces = [bytes(buf[pos:end])]
                self._f_collected = end - pos
                pos = end
                break
            if take == 0 and remaining:
                break
            mask = self._f_mask
            offset = self._f_offset & 3
            if offset:
                mask = mask[offset:] + mask[:offset]
            chunk = apply_mask(buf[pos : pos + take], mask)
            pos += take
            self._f_offset += take
            self._f_remaining = remaining = remaining - take
            frame_done = remaining == 0
            if frame_done:
                self._f_opcode = None
            self._data(chunk, frame_done and self._f_fin)
        # Drop consumed bytes; keep the buffer small when a large payload streams through.
        if pos >= end:
            buf.clear()
            pos = 0
        elif pos > 65536:
            del buf[:pos]
            pos = 0
        self._pos = pos

    def _check_header(self, b0: int, b1: int, opcode: int, fin: bool, rsv1: bool, length: int) -> None:
        if b0 & 0x30:
            raise InvalidFrame("RSV2/RSV3 set without a negotiated extension (§5.2)")
        if not b1 & 0x80:
            raise InvalidFrame("client frames must be masked (§5.1)")
        if opcode >= 8:
            if opcode not in (_CLOSE, _PING, _PONG):
                raise InvalidFrame(f"reserved control opcode {opcode:#x} (§5.2)")
            if not fin:
                raise InvalidFrame("fragmented control frame (§5.5)")
            if length > 125:
                raise InvalidFrame("control frame payload over 125 bytes (§5.5)")
            if rsv1:
                raise InvalidFrame("RSV1 set on a control frame (§5.2; RFC 7692 §6)")
        elif opcode == _CONTINUATION:
            if self._m_opcode is None:
                raise InvalidFrame("continuation frame with no message started (§5.4)")
            if rsv1:
                raise InvalidFrame("RSV1 set on a continuation frame (RFC 7692 §6.1)")
        elif opcode in (_TEXT, _BINARY):
            if self._m_opcode is not None:
                raise InvalidFrame("new data frame inside a fragmented message (§5.4)")
            if rsv1 and self.extension is None:
                raise InvalidFrame("RSV1 set without a negotiated extension (§5.2)")
        else:
            raise InvalidFrame(f"reserved data opcode {opcode:#x} (§5.2)")

    def _check_size(self, opcode: int, rsv1: bool, length: int) -> None:
        if self.max_frame_size is not None and length > self.max_frame_size:
            raise MessageTooBig(f"frame of {length} bytes is over the limit of {self.max_frame_size}")
        compressed = rsv1 if opcode != _CONTINUATION else self._m_compressed
        limit = self.max_message_size
        # A compressed message is measured after decompression, as it inflates (see _data).
        if limit is not None and not compressed:
            size = length + (self._m_size if opcode == _CONTINUATION else 0)
            if size > limit:
                raise MessageTooBig(f"message of {size}+ bytes is over the limit of {limit}")

    def _data(self, chunk: bytes | bytearray, message_done: bool) -> None:
        if self._m_compressed:
            limit = self.max_message_size
            chunk = self.extension.decompress(  # type: ignore[union-attr]  # RSV1 needs the extension
                chunk, end=message_done, max_length=None if limit is None else limit - self._m_size
            )
            if limit is not None and self._m_size + len(chunk) > limit:
                raise MessageTooBig(f"message inflates past the limit of {limit} bytes")
        self._m_size += len(chunk)
        # The message so far is kept as one bytearray, not a list of pieces: a peer trickling a
        # message byte by byte would otherwise make each byte cost an object (~40x the limit).
        buf = self._m_buf
        if self._m_opcode == _TEXT:
            if message_done and not buf and self._m_decoder is None:
                # Fast path: a whole text message in one piece.
                try:
                    message = chunk.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise InvalidPayload(f"invalid UTF-8 in a text message: {exc.reason}") from None
                self._events.append(message)
                self._end_message()
                return
            if self._m_decoder is None:
                self._m_decoder = _Utf8Decoder()
            try:
                # Validated as it arrives, to fail fast (RFC 6455 §8.1); decoded whole at the end.
                self._m_decoder.decode(chunk, message_done)
            except UnicodeDecodeError as exc:
                raise InvalidPayload(f"invalid UTF-8 in a text message: {exc.reason}") from None
            buf += chunk
            if message_done:
                self._events.append(buf.decode("utf-8"))
                self._end_message()
        else:
            if message_done:
                if buf:
                    buf += chunk
                    chunk = buf
                self._events.append(bytes(chunk))
                self._end_message()
            else:
                buf += chunk

    def _end_message(self) -> None:
        self._m_opcode = None
        self._m_buf = bytearray()
        self._m_size = 0
        self._m_decoder = None

    def _control(self, opcode: int, payload: bytes) -> None:
        if opcode == _PING:
            self._events.append(Ping(payload))
            if not self.close_sent:
                # RFC 6455 §5.5.2: answer with a pong carrying the same application data.
                self._out.append(serialize_frame(_PONG, payload))
        elif opcode == _PONG:
            self._events.append(Pong(payload))
        else:
            code, reason = parse_close(payload)
            self.close_received = True
            if not self.close_sent:
                # RFC 6455 §5.5.1: reply with a close frame, echoing the status code.
                reply = b"" if code == CloseCode.NO_STATUS_RCVD else serialize_close(code)
                self._out.append(serialize_frame(_CLOSE, reply))
                self.close_sent = True
                self.close_code, self.close_reason = code, reason
            elif self.close_code is None:
                self.close_code, self.close_reason = code, reason
            self.state = State.CLOSED
            self._events.append(Close(code, reason))

    # --- output -------------------------------------------------------------------------------

    def send(self, message: str | bytes | bytearray | memoryview) -> bytes:
        """Return the frame bytes for ``message``: ``str`` as text, bytes-like as binary."""
        if self.close_sent:
            raise ConnectionClosed(self.close_code, self.close_reason)
        if isinstance(message, str):
            opcode = _TEXT
            payload = message.encode("utf-8")
        else:
            opcode = _BINARY
            payload = bytes(message)
        if self.extension is not None and self.extension.should_compress(payload):
            return serialize_frame(opcode, self.extension.compress(payload), rsv1=True)
        return serialize_frame(opcode, payload)

    def send_ping(self, payload: bytes = b"") -> bytes:
        if self.close_sent:
            raise ConnectionClosed(self.close_code, self.close_reason)
        if len(payload) > 125:
            raise ValueError("a ping payload is at most 125 bytes (RFC 6455 §5.5)")
        return serialize_frame(_PING, bytes(payload))

    def send_pong(self, payload: bytes = b"") -> bytes:
        if self.close_sent:
            raise ConnectionClosed(self.close_code, self.close_reason)
        if len(payload) > 125:
            raise ValueError("a pong payload is at most 125 bytes (RFC 6455 §5.5)")
        return serialize_frame(_PONG, bytes(payload))

    def send_close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> bytes:
        """Return the close frame to start the closing handshake, or ``b""`` if one was sent.

        After a failure whose close frame is still held back, that frame is returned instead.
        """
        if self.close_sent:
            return b""
        if self._failure_close is not None:
            return self.data_to_send()
        frame = serialize_frame(_CLOSE, serialize_close(code, reason))
        self.close_sent = True
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason
        self.state = State.CLOSED if self.close_received else State.CLOSING
        return frame
