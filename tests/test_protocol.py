"""Unit tests of django_websocket.protocol.ServerProtocol, the sans-I/O server core.

Client frames are built with ``serialize_frame(..., mask=...)`` (or by hand where a header must
break a rule serialize_frame cannot express); what the server writes back is parsed with the
reference parser of test_frames.
"""

import struct
import tracemalloc
import zlib

import pytest

from django_websocket.deflate import PerMessageDeflate
from django_websocket.exceptions import (
    ConnectionClosed,
    InvalidFrame,
    InvalidPayload,
    MessageTooBig,
)
from django_websocket.frames import Opcode, serialize_close, serialize_frame
from django_websocket.protocol import DEFAULT_MAX_MESSAGE_SIZE, Close, Ping, Pong, ServerProtocol, State
from tests.test_frames import naive_mask, parse_frames

MASK = b"\x37\xfa\x21\x3d"
TEXT, BINARY, CONT = Opcode.TEXT, Opcode.BINARY, Opcode.CONTINUATION
CLOSE, PING, PONG = Opcode.CLOSE, Opcode.PING, Opcode.PONG


def frame(opcode, payload=b"", *, fin=True, rsv1=False, mask=MASK):
    """A client frame (masked unless told otherwise)."""
    if isinstance(payload, str):
        payload = payload.encode()
    return serialize_frame(opcode, payload, fin=fin, rsv1=rsv1, mask=mask)


def raw_frame(b0, payload=b"", *, length=None, mask=MASK):
    """A masked client frame with an arbitrary first byte (reserved bits and opcodes)."""
    length = len(payload) if length is None else length
    if length < 126:
        header = bytes([b0, 0x80 | length])
    elif length < 0x10000:
        header = bytes([b0, 0x80 | 126]) + struct.pack("!H", length)
    else:
        header = bytes([b0, 0x80 | 127]) + struct.pack("!Q", length)
    return header + mask + naive_mask(payload, mask)


def close_payload(code, reason=""):
    return struct.pack("!H", code) + reason.encode()


def summary(events):
    """Events as comparable tuples (Ping and Pong do not define equality)."""
    out = []
    for e in events:
        if isinstance(e, str):
            out.append(("text", e))
        elif isinstance(e, bytes):
            out.append(("binary", e))
        elif isinstance(e, Pong):
            out.append(("pong", e.payload))
        elif isinstance(e, Ping):
            out.append(("ping", e.payload))
        elif isinstance(e, Close):
            out.append(("close", e.code))
        else:
            raise AssertionError(f"unexpected event {e!r}")
    return out


def sent(proto):
    """What the server wants written, as ``(opcode, payload)`` pairs; server frames are unmasked."""
    frames_out = parse_frames(proto.data_to_send())
    for f in frames_out:
        assert f["mask"] is None and f["fin"] and not (f["rsv1"] or f["rsv2"] or f["rsv3"])
    return [(f["opcode"], f["payload"]) for f in frames_out]


def feed(proto, data):
    proto.receive_data(data)
    return summary(proto.events_received())


def assert_failed(proto, code, exc_type=None):
    """The connection was failed with ``code``: one close frame sent, a Close event, CLOSED."""
    assert proto.state is State.CLOSED
    assert proto.failure is not None and proto.failure.code == code
    if exc_type is not None:
        assert isinstance(proto.failure, exc_type)
    out = sent(proto)
    assert out[-1][0] == CLOSE
    assert struct.unpack("!H", out[-1][1][:2])[0] == code
    assert proto.close_code == code


# --- plain messages -----------------------------------------------------------------------------


def test_text_and_binary_messages():
    proto = ServerProtocol()
    assert proto.state is State.OPEN
    assert feed(proto, frame(TEXT, "héllo") + frame(BINARY, b"\x00\xff")) == [
        ("text", "héllo"),
        ("binary", b"\x00\xff"),
    ]
    assert proto.data_to_send() == b""
    assert proto.state is State.OPEN


def test_empty_messages():
    proto = ServerProtocol()
    assert feed(proto, frame(TEXT) + frame(BINARY)) == [("text", ""), ("binary", b"")]


def test_fragmented_messages_are_reassembled():
    proto = ServerProtocol()
    data = frame(TEXT, "Hel", fin=False) + frame(CONT, "", fin=False) + frame(CONT, "lo", fin=False) + frame(CONT, "!")
    data += frame(BINARY, b"\x01", fin=False) + frame(CONT, b"\x02")
    assert feed(proto, data) == [("text", "Hello!"), ("binary", b"\x01\x02")]


@pytest.mark.parametrize("length", [125, 126, 65535, 65536, 70000])
def test_large_frames(length):
    payload = bytes(range(256)) * (length // 256) + bytes(length % 256)
    proto = ServerProtocol()
    assert feed(proto, frame(BINARY, payload)) == [("binary", payload)]


def test_events_are_returned_once():
    proto = ServerProtocol()
    proto.receive_data(frame(TEXT, "a"))
    assert proto.events_received() == ["a"]
    assert proto.events_received() == []


# --- framing rules (RFC 6455 §5) --------------------------------------------------------------


@pytest.mark.parametrize("opcode", [TEXT, BINARY, PING, CLOSE])
def test_unmasked_client_frame_fails_1002(opcode):
    proto = ServerProtocol()
    payload = b"" if opcode == CLOSE else b"hi"
    assert feed(proto, frame(opcode, payload, mask=None)) == [("close", 1002)]
    assert_failed(proto, 1002, InvalidFrame)


@pytest.mark.parametrize("bit", [0x40, 0x20, 0x10], ids=["rsv1", "rsv2", "rsv3"])
@pytest.mark.parametrize("opcode", [TEXT, BINARY, PING, PONG, CLOSE])
def test_reserved_bits_without_extension_fail_1002(bit, opcode):
    proto = ServerProtocol()
    assert feed(proto, raw_frame(0x80 | bit | opcode, b"")) == [("close", 1002)]
    assert_failed(proto, 1002, InvalidFrame)


@pytest.mark.parametrize("bit", [0x40, 0x20, 0x10], ids=["rsv1", "rsv2", "rsv3"])
def test_reserved_bits_on_a_continuation_fail_1002(bit):
    proto = ServerProtocol()
    assert feed(proto, frame(TEXT, "a", fin=False)) == []
    assert feed(proto, raw_frame(0x80 | bit | CONT, b"b")) == [("close", 1002)]
    assert_failed(proto, 1002, InvalidFrame)


@pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF])
def test_reserved_opcodes_fail_1002(opcode):
    proto = ServerProtocol()
    assert feed(proto, raw_frame(0x80 | opcode, b"xyz")) == [("close", 1002)]
    assert_failed(proto, 1002, InvalidFrame)


@pytest.mark.parametrize("opcode", [PING, PONG, CLOSE])
def test_control_frame_over_125_bytes_fails_1002_at_the_header(opcode):
    proto = ServerProtocol()
    data = raw_frame(0x80 | opcode, b"x" * 126)
    # The two header bytes and the 16-bit length are enough: the payload is never waited for.
    assert feed(proto, data[:4]) == [("close", 1002)]
    assert_failed(proto, 1002, InvalidFrame)


@pytest.mark.parametrize("opcode", [PING, PONG, CLOSE])
def test_control_frame_of_125_bytes_is_fine(opcode):
    proto = ServerProtocol()
    payload = close_payload(1000, "r" * 123) if opcode == CLOSE else b"p" * 125
    events = feed(proto, frame(opcode, payload))
    assert len(events) == 1 and proto.failure is None


@pytest.mark.parametrize("opcode", [PING, PONG, CLOSE])
def test_fragmented_control_frame_fails_1002(opcode):
    proto = ServerProtocol()
    assert feed(proto, frame(opcode, b"", fin=False)) == [("close", 1002)]
    assert_failed(proto, 1002, InvalidFrame)


@pytest.mark.parametrize("fin", [True, False])
def test_continuation_with_no_message_started_fails_1002(fin):
    proto = ServerProtocol()
    assert feed(proto, frame(CONT, "x", fin=fin)) == [("close", 1002)]
    assert_failed(proto, 1002, InvalidFrame)


def test_continuation_after_a_finished_message_fails_1002():
    proto = ServerProtocol()
    assert feed(proto, frame(TEXT, "done") + frame(CONT, "more")) == [("text", "done"), ("close", 1002)]
    assert_failed(proto, 1002, InvalidFrame)


@pytest.mark.parametrize("first", [TEXT, BINARY])
@pytest.mark.parametrize("second", [TEXT, BINARY])
def test_new_data_frame_inside_a_fragmented_message_fails_1002(first, second):
    proto = ServerProtocol()
    assert feed(proto, frame(first, "a", fin=False) + frame(second, "b")) == [("close", 1002)]
    assert_failed(proto, 1002, InvalidFrame)


def test_control_frames_interleaved_with_fragments():
    proto = ServerProtocol()
    data = (
        frame(TEXT, "Hel", fin=False)
        + frame(PING, b"p1")
        + frame(CONT, "l", fin=False)
        + frame(PONG, b"q")
        + frame(PING, b"")
        + frame(CONT, "o")
    )
    assert feed(proto, data) == [("ping", b"p1"), ("pong", b"q"), ("ping", b""), ("text", "Hello")]
    assert sent(proto) == [(PONG, b"p1"), (PONG, b"")]


def test_64_bit_length_with_the_most_significant_bit_set_fails_1002():
    proto = ServerProtocol(max_message_size=None)
    header = bytes([0x82, 0x80 | 127]) + struct.pack("!Q", 1 << 63)
    # Failed as soon as the 8-byte length is here, before the mask or any payload.
    assert feed(proto, header) == [("close", 1002)]
    assert_failed(proto, 1002, InvalidFrame)


def test_64_bit_length_without_the_most_significant_bit_is_accepted_without_a_limit():
    proto = ServerProtocol(max_message_size=None)
    header = bytes([0x82, 0x80 | 127]) + struct.pack("!Q", (1 << 63) - 1) + MASK
    assert feed(proto, header + b"\x00" * 10) == []
    assert proto.state is State.OPEN and proto.failure is None


# --- ping, pong, close (RFC 6455 §5.5) --------------------------------------------------------


@pytest.mark.parametrize("payload", [b"", b"x", b"\x00\xff" * 62 + b"!"])
def test_ping_is_answered_with_a_pong_carrying_the_same_payload(payload):
    proto = ServerProtocol()
    assert feed(proto, frame(PING, payload)) == [("ping", payload)]
    assert sent(proto) == [(PONG, payload)]
    assert proto.state is State.OPEN


def test_pong_is_an_event_and_gets_no_answer():
    proto = ServerProtocol()
    assert feed(proto, frame(PONG, b"unsolicited")) == [("pong", b"unsolicited")]
    assert proto.data_to_send() == b""


@pytest.mark.parametrize("code", [1000, 1001, 1003, 1011, 3000, 4999])
def test_close_is_answered_echoing_the_code(code):
    proto = ServerProtocol()
    proto.receive_data(frame(CLOSE, close_payload(code, "bye")))
    events = proto.events_received()
    assert events == [Close(code, "bye")]
    assert sent(proto) == [(CLOSE, struct.pack("!H", code))]
    assert proto.state is State.CLOSED
    assert (proto.close_code, proto.close_reason) == (code, "bye")
    assert proto.close_received and proto.close_sent and proto.failure is None


def test_empty_close_is_answered_with_an_empty_close():
    proto = ServerProtocol()
    assert feed(proto, frame(CLOSE)) == [("close", 1005)]
    assert sent(proto) == [(CLOSE, b"")]
    assert proto.state is State.CLOSED
    assert proto.close_code == 1005


def test_nothing_is_parsed_after_a_close():
    proto = ServerProtocol()
    data = frame(TEXT, "before") + frame(CLOSE, close_payload(1000)) + frame(TEXT, "after") + frame(PING)
    assert feed(proto, data) == [("text", "before"), ("close", 1000)]
    assert sent(proto) == [(CLOSE, b"\x03\xe8")]
    # Not even later input, nor garbage.
    assert feed(proto, frame(PING, b"late") + b"\x00garbage") == []
    assert proto.data_to_send() == b""
    assert proto.state is State.CLOSED


@pytest.mark.parametrize("payload", [b"\x03", close_payload(1004), close_payload(1005), close_payload(1006)])
def test_invalid_close_payload_fails_1002(payload):
    proto = ServerProtocol()
    assert feed(proto, frame(CLOSE, payload)) == [("close", 1002)]
    assert_failed(proto, 1002, InvalidFrame)


def test_close_reason_not_utf8_fails():
    proto = ServerProtocol()
    assert feed(proto, frame(CLOSE, b"\x03\xe8\xff")) == [("close", 1002)]
    assert_failed(proto, 1002, InvalidFrame)


def test_close_in_the_middle_of_a_fragmented_message_is_accepted():
    # RFC 6455 §5.4: control frames may be injected in the middle of a fragmented message; the
    # unfinished message is simply abandoned.
    proto = ServerProtocol()
    assert feed(proto, frame(TEXT, "unfin", fin=False) + frame(CLOSE, close_payload(1001))) == [("close", 1001)]
    assert sent(proto) == [(CLOSE, b"\x03\xe9")]
    assert proto.failure is None


# --- UTF-8 (RFC 6455 §8.1): fail fast ---------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xf5", b"abc\xe2\x82"],
    ids=["ff", "overlong", "surrogate", "beyond-max", "f5", "truncated"],
)
def test_invalid_utf8_text_fails_1007(payload):
    proto = ServerProtocol()
    assert feed(proto, frame(TEXT, payload)) == [("close", 1007)]
    assert_failed(proto, 1007, InvalidPayload)


def test_invalid_utf8_fails_as_soon_as_the_bad_byte_arrives():
    # κόσμε, then a byte that can never start a character, then more valid text.
    good = "κόσμε".encode()
    data = frame(TEXT, good + b"\xff" + b"more text" * 10)
    bad_at = 2 + 4 + len(good)  # header, mask, valid bytes
    proto = ServerProtocol()
    for i, byte in enumerate(data):
        proto.receive_data(bytes([byte]))
        if i < bad_at:
            assert proto.state is State.OPEN, i
            assert proto.events_received() == []
        else:
            break
    # Failed on the bad byte itself, with most of the frame still to come.
    assert i == bad_at < len(data) - 1
    assert summary(proto.events_received()) == [("close", 1007)]
    assert_failed(proto, 1007, InvalidPayload)


def test_invalid_utf8_in_a_partial_frame_fails_before_the_frame_is_complete():
    proto = ServerProtocol()
    data = frame(TEXT, b"ab\xf4\x90" + b"x" * 200)
    assert feed(proto, data[:12]) == [("close", 1007)]
    assert_failed(proto, 1007, InvalidPayload)


def test_invalid_utf8_in_a_first_fragment_fails_before_the_message_ends():
    proto = ServerProtocol()
    assert feed(proto, frame(TEXT, b"ok\xed\xa0\x80", fin=False)) == [("close", 1007)]
    assert_failed(proto, 1007, InvalidPayload)


def test_invalid_utf8_in_a_later_fragment_fails_1007():
    proto = ServerProtocol()
    assert feed(proto, frame(TEXT, "fine", fin=False)) == []
    assert feed(proto, frame(CONT, b"\x80", fin=False)) == [("close", 1007)]
    assert_failed(proto, 1007, InvalidPayload)


@pytest.mark.parametrize("char", ["é", "€", "𝄞"], ids=["2-byte", "3-byte", "4-byte"])
def test_character_split_between_fragments_is_valid(char):
    encoded = char.encode()
    for cut in range(1, len(encoded)):
        proto = ServerProtocol()
        data = frame(TEXT, b"a" + encoded[:cut], fin=False) + frame(PING, b"!") + frame(CONT, encoded[cut:] + b"z")
        assert feed(proto, data) == [("ping", b"!"), ("text", "a" + char + "z")]
        assert proto.failure is None


def test_four_byte_character_split_over_four_fragments():
    encoded = "𝄞".encode()
    data = frame(TEXT, encoded[:1], fin=False)
    data += frame(CONT, encoded[1:2], fin=False) + frame(CONT, encoded[2:3], fin=False) + frame(CONT, encoded[3:])
    proto = ServerProtocol()
    assert feed(proto, data) == [("text", "𝄞")]


def test_truncated_character_at_the_end_of_a_fragmented_message_fails_1007():
    proto = ServerProtocol()
    assert feed(proto, frame(TEXT, "caf", fin=False)) == []
    assert feed(proto, frame(CONT, b"\xc3")) == [("close", 1007)]
    assert_failed(proto, 1007, InvalidPayload)


def test_truncated_character_at_the_end_of_a_frame_fed_in_pieces_fails_1007():
    data = frame(TEXT, b"caf\xc3")
    proto = ServerProtocol()
    assert feed(proto, data[:-1]) == []  # a valid prefix so far
    assert feed(proto, data[-1:]) == [("close", 1007)]
    assert_failed(proto, 1007, InvalidPayload)


def test_binary_messages_are_not_utf8_checked():
    proto = ServerProtocol()
    assert feed(proto, frame(BINARY, b"\xff\xc3", fin=False) + frame(CONT, b"\x80")) == [("binary", b"\xff\xc3\x80")]


# --- size limits ------------------------------------------------------------------------------


def test_default_max_message_size_is_1_mib():
    assert DEFAULT_MAX_MESSAGE_SIZE == 2**20 == ServerProtocol().max_message_size
    proto = ServerProtocol()
    assert feed(proto, frame(BINARY, bytes(2**20))) == [("binary", bytes(2**20))]
    assert feed(proto, frame(BINARY, bytes(2**20 + 1))[:14]) == [("close", 1009)]


def test_message_at_the_limit_is_accepted_and_over_it_fails_1009():
    proto = ServerProtocol(max_message_size=10)
    assert feed(proto, frame(TEXT, "x" * 10)) == [("text", "x" * 10)]
    assert feed(proto, frame(TEXT, "x" * 11)) == [("close", 1009)]
    assert_failed(proto, 1009, MessageTooBig)


def test_message_size_fails_at_the_header_before_the_payload():
    proto = ServerProtocol(max_message_size=1000)
    data = frame(BINARY, bytes(5000))
    assert feed(proto, data[: 4 + 4]) == [("close", 1009)]  # 16-bit length header and mask
    assert_failed(proto, 1009, MessageTooBig)


def test_message_size_applies_to_the_reassembled_message():
    proto = ServerProtocol(max_message_size=10)
    assert feed(proto, frame(TEXT, "x" * 4, fin=False) + frame(CONT, "x" * 4, fin=False)) == []
    # 8 bytes so far; a 3-byte fragment would make 11. It fails at its header, before its payload.
    last = frame(CONT, "x" * 3)
    assert feed(proto, last[:6]) == [("close", 1009)]
    assert_failed(proto, 1009, MessageTooBig)


def test_fragments_summing_to_the_limit_are_accepted():
    proto = ServerProtocol(max_message_size=10)
    data = frame(BINARY, b"x" * 4, fin=False) + frame(PING, b"p" * 100) + frame(CONT, b"y" * 6)
    # The ping does not count towards the message size.
    assert feed(proto, data) == [("ping", b"p" * 100), ("binary", b"x" * 4 + b"y" * 6)]
    # The count starts again at each message.
    assert feed(proto, frame(BINARY, b"z" * 10)) == [("binary", b"z" * 10)]


@pytest.mark.parametrize(
    "opcode,payload",
    [(BINARY, bytes(8192)), (TEXT, b"a" * 8192), (TEXT, "€".encode() * 2731)],
    ids=["binary", "ascii", "3-byte-chars"],
)
def test_a_message_trickled_byte_by_byte_costs_about_its_size(opcode, payload):
    # The limit bounds memory only if a message held in many tiny pieces is not many objects.
    data = frame(opcode, payload)
    proto = ServerProtocol()
    tracemalloc.start()
    try:
        for i in range(len(data) - 1):
            proto.receive_data(data[i : i + 1])
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    proto.receive_data(data[-1:])
    assert proto.events_received() == [payload if opcode == BINARY else payload.decode()]
    assert held < 3 * len(payload), held


def test_no_message_size_limit():
    proto = ServerProtocol(max_message_size=None)
    big = bytes(3 * 2**20)
    assert feed(proto, frame(BINARY, big)) == [("binary", big)]


def test_max_frame_size():
    proto = ServerProtocol(max_message_size=100, max_frame_size=5)
    data = frame(TEXT, "abcde", fin=False) + frame(CONT, "fghij")
    assert feed(proto, data) == [("text", "abcdefghij")]
    assert feed(proto, frame(TEXT, "abcdef")[:6]) == [("close", 1009)]
    assert_failed(proto, 1009, MessageTooBig)


# --- failure, EOF and the rest of the connection's life ---------------------------------------


def test_input_after_a_failure_is_discarded():
    proto = ServerProtocol()
    data = frame(TEXT, "ok") + frame(CONT, "bad") + frame(PING, b"x") + frame(TEXT, "never")
    assert feed(proto, data) == [("text", "ok"), ("close", 1002)]
    assert_failed(proto, 1002, InvalidFrame)
    assert feed(proto, frame(PING, b"y") + frame(CLOSE)) == []
    assert proto.data_to_send() == b""
    proto.receive_eof()
    assert proto.events_received() == []  # the Close event was already given
    assert proto.close_code == 1002


def test_receive_eof_without_close_is_abnormal_closure():
    proto = ServerProtocol()
    proto.receive_eof()
    assert proto.events_received() == [Close(1006, "")]
    assert proto.state is State.CLOSED and proto.close_code == 1006
    assert proto.data_to_send() == b""


def test_receive_eof_in_the_middle_of_a_frame():
    proto = ServerProtocol()
    assert feed(proto, frame(TEXT, "a", fin=False) + frame(CONT, "bcdef")[:7]) == []
    proto.receive_eof()
    assert summary(proto.events_received()) == [("close", 1006)]
    assert feed(proto, frame(CONT, "x")) == []


def test_receive_eof_after_the_closing_handshake_adds_no_event():
    proto = ServerProtocol()
    assert feed(proto, frame(CLOSE, close_payload(1000))) == [("close", 1000)]
    proto.receive_eof()
    assert proto.events_received() == []
    assert proto.close_code == 1000


def test_receive_eof_after_we_sent_close_is_abnormal():
    proto = ServerProtocol()
    proto.send_close(1000)
    assert proto.state is State.CLOSING
    proto.receive_eof()
    assert proto.events_received() == [Close(1006, "")]
    assert proto.state is State.CLOSED


STREAMS = {
    "mixed": (
        frame(TEXT, "He", fin=False)
        + frame(PING, b"ping")
        + frame(CONT, b"llo " + "𝄞".encode()[:2], fin=False)
        + frame(CONT, "𝄞".encode()[2:])
        + frame(BINARY, bytes(range(130)))
        + frame(PONG)
        + frame(TEXT, "")
        + frame(CLOSE, close_payload(1001, "gone"))
        + frame(TEXT, "after close")
    ),
    "failing": frame(BINARY, b"xy", fin=False) + frame(PING, b"1") + frame(CONT, b"z") + frame(TEXT, b"ok\xe2\x28\xa1"),
}


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_every_split_yields_the_same_events(name):
    data = STREAMS[name]
    whole = ServerProtocol()
    whole.receive_data(data)
    expected_events = summary(whole.events_received())
    expected_out = whole.data_to_send()
    assert expected_events[-1][0] == "close"
    for i in range(len(data) + 1):
        for j in range(i, len(data) + 1, 7 if i % 3 else 1):
            proto = ServerProtocol()
            events = []
            for piece in (data[:i], data[i:j], data[j:]):
                proto.receive_data(piece)
                events += summary(proto.events_received())
            assert events == expected_events, (i, j)
            assert proto.data_to_send() == expected_out, (i, j)


def test_byte_by_byte_stream():
    data = STREAMS["mixed"]
    proto = ServerProtocol()
    events = []
    for k in range(len(data)):
        proto.receive_data(data[k : k + 1])
        events += summary(proto.events_received())
    assert events == [
        ("ping", b"ping"),
        ("text", "Hello 𝄞"),
        ("binary", bytes(range(130))),
        ("pong", b""),
        ("text", ""),
        ("close", 1001),
    ]


# --- sending ----------------------------------------------------------------------------------


def test_send_text_and_binary():
    proto = ServerProtocol()
    assert parse_frames(proto.send("héllo")) == [
        {
            "fin": True,
            "rsv1": False,
            "rsv2": False,
            "rsv3": False,
            "opcode": TEXT,
            "mask": None,
            "length_field": 6,
            "header_len": 2,
            "payload": "héllo".encode(),
        }
    ]
    assert proto.send("héllo") == b"\x81\x06" + "héllo".encode()
    for payload in (b"\x00\x01", bytearray(b"\x00\x01"), memoryview(b"\x00\x01")):
        (f,) = parse_frames(proto.send(payload))
        assert (f["opcode"], f["payload"], f["mask"]) == (BINARY, b"\x00\x01", None)
    (f,) = parse_frames(proto.send(b"x" * 70000))
    assert (f["length_field"], f["payload"]) == (127, b"x" * 70000)


def test_send_ping_and_pong():
    proto = ServerProtocol()
    assert parse_frames(proto.send_ping(b"abc"))[0]["opcode"] == PING
    assert parse_frames(proto.send_pong(b"abc"))[0]["payload"] == b"abc"
    with pytest.raises(ValueError):
        proto.send_ping(b"x" * 126)
    with pytest.raises(ValueError):
        proto.send_pong(b"x" * 126)


def test_send_close_then_send_raises_connection_closed():
    proto = ServerProtocol()
    data = proto.send_close(4000, "shutting down")
    assert parse_frames(data) == parse_frames(serialize_frame(CLOSE, serialize_close(4000, "shutting down")))
    assert proto.state is State.CLOSING
    assert proto.send_close(1000) == b""  # the second time
    for send in (lambda: proto.send("x"), lambda: proto.send(b"x"), proto.send_ping, proto.send_pong):
        with pytest.raises(ConnectionClosed) as info:
            send()
        assert info.value.code == 4000


def test_send_close_without_code_sends_an_empty_close():
    proto = ServerProtocol()
    assert proto.send_close(None) == b"\x88\x00"


def test_send_after_receiving_close_raises_connection_closed():
    proto = ServerProtocol()
    proto.receive_data(frame(CLOSE, close_payload(1001)))
    with pytest.raises(ConnectionClosed) as info:
        proto.send("too late")
    assert info.value.code == 1001
    assert proto.send_close() == b""


def test_send_after_a_failure_raises_connection_closed():
    proto = ServerProtocol()
    proto.receive_data(frame(TEXT, b"\xff"))
    assert proto.data_to_send()[:1] == b"\x88"  # the close frame goes out, then sending fails
    with pytest.raises(ConnectionClosed) as info:
        proto.send("x")
    assert info.value.code == 1007


def test_failure_close_can_be_held_until_earlier_messages_are_answered():
    # "hello" then a bad frame in one read: the application may still echo "hello" before the
    # close goes out (what the Autobahn suite calls strict behaviour).
    proto = ServerProtocol()
    proto.receive_data(frame(TEXT, "hello") + frame(TEXT, b"\xff"))
    assert proto.events_received()[0] == "hello"
    assert proto.data_to_send(hold_failure_close=True) == b""
    assert proto.failure_close_pending
    assert proto.send("hello") == b"\x81\x05hello"
    close = proto.data_to_send()
    assert close[0] == 0x88 and close[2:4] == b"\x03\xef"  # 1007
    assert not proto.failure_close_pending and proto.close_sent
    with pytest.raises(ConnectionClosed):
        proto.send("too late")


def test_closing_handshake_started_by_the_server():
    proto = ServerProtocol()
    proto.send_close(1000, "bye")
    # Data frames may still arrive until the client's close (§7.1.2); a ping gets no pong now.
    assert feed(proto, frame(TEXT, "late") + frame(PING, b"p")) == [("text", "late"), ("ping", b"p")]
    assert proto.data_to_send() == b""
    assert feed(proto, frame(CLOSE, close_payload(1000))) == [("close", 1000)]
    assert proto.data_to_send() == b""  # no second close frame
    assert proto.state is State.CLOSED


def test_failure_while_closing_sends_no_second_close():
    proto = ServerProtocol()
    proto.send_close(1000)
    assert feed(proto, frame(CONT, "x")) == [("close", 1002)]
    assert proto.data_to_send() == b""
    assert proto.state is State.CLOSED and isinstance(proto.failure, InvalidFrame)


def test_fail_reason_is_truncated_to_fit_a_control_frame():
    proto = ServerProtocol()
    proto.fail(InvalidFrame("é" * 200))
    ((opcode, payload),) = sent(proto)
    assert opcode == CLOSE and len(payload) <= 125
    assert payload[:2] == b"\x03\xea"
    payload[2:].decode()  # still valid UTF-8


# --- permessage-deflate (RFC 7692) ------------------------------------------------------------


class Compressor:
    """A client-side deflater (RFC 7692 §7.2.1) with context takeover."""

    def __init__(self, wbits=15):
        self.obj = zlib.compressobj(6, zlib.DEFLATED, -wbits)

    def __call__(self, data, fin=True):
        """The compressed payload of a message, or of one of its frames (``fin=False``)."""
        out = self.obj.compress(data) + self.obj.flush(zlib.Z_SYNC_FLUSH)
        assert out.endswith(b"\x00\x00\xff\xff")
        # The 4 octets are removed at the end of the message only (RFC 7692 §7.2.1).
        return out[:-4] if fin else out


def test_compressed_messages_round_trip():
    proto = ServerProtocol(extension=PerMessageDeflate())
    compress = Compressor()
    text = "compressible text " * 50
    data = frame(TEXT, compress(text.encode()), rsv1=True)
    data += frame(BINARY, compress(bytes(1000)), rsv1=True)
    data += frame(BINARY, b"not compressed")  # RSV1 unset: the message is not compressed
    data += frame(TEXT, compress(text.encode()), rsv1=True)  # uses the context of the first
    assert feed(proto, data) == [("text", text), ("binary", bytes(1000)), ("binary", b"not compressed"), ("text", text)]
    # And what we send decompresses back.
    reply = parse_frames(proto.send(text))[0]
    assert reply["rsv1"] and reply["opcode"] == TEXT
    assert zlib.decompressobj(-15).decompress(reply["payload"] + b"\x00\x00\xff\xff") == text.encode()
    small = parse_frames(proto.send(b"tiny"))[0]
    assert not small["rsv1"] and small["payload"] == b"tiny"


def test_fragmented_compressed_message():
    proto = ServerProtocol(extension=PerMessageDeflate())
    payload = Compressor()("fragmented ✓ ".encode() * 100)
    a, b, c = payload[:5], payload[5:20], payload[20:]
    data = frame(TEXT, a, rsv1=True, fin=False) + frame(PING, b"!") + frame(CONT, b, fin=False) + frame(CONT, c)
    assert feed(proto, data) == [("ping", b"!"), ("text", "fragmented ✓ " * 100)]


def test_rsv1_on_a_continuation_of_a_compressed_message_fails_1002():
    proto = ServerProtocol(extension=PerMessageDeflate())
    payload = Compressor()(b"hello hello hello")
    assert feed(proto, frame(TEXT, payload[:3], rsv1=True, fin=False)) == []
    assert feed(proto, frame(CONT, payload[3:], rsv1=True)) == [("close", 1002)]
    assert_failed(proto, 1002, InvalidFrame)


def test_rsv1_on_a_control_frame_fails_1002_even_with_the_extension():
    proto = ServerProtocol(extension=PerMessageDeflate())
    assert feed(proto, frame(PING, b"", rsv1=True)) == [("close", 1002)]
    assert_failed(proto, 1002, InvalidFrame)


def test_invalid_compressed_data_fails():
    proto = ServerProtocol(extension=PerMessageDeflate())
    # 0xff: BFINAL=1, BTYPE=11, a reserved block type (RFC 1951 §3.2.3).
    assert feed(proto, frame(BINARY, b"\xff\xff\xff", rsv1=True)) == [("close", 1007)]
    assert_failed(proto, 1007, InvalidPayload)


def test_compressed_text_with_invalid_utf8_fails_1007():
    proto = ServerProtocol(extension=PerMessageDeflate())
    assert feed(proto, frame(TEXT, Compressor()(b"abc\xff"), rsv1=True)) == [("close", 1007)]


def test_compressed_message_at_the_limit_and_over_it():
    compress = Compressor()
    proto = ServerProtocol(max_message_size=1000, extension=PerMessageDeflate())
    assert feed(proto, frame(BINARY, compress(bytes(1000)), rsv1=True)) == [("binary", bytes(1000))]
    assert feed(proto, frame(BINARY, compress(bytes(1001)), rsv1=True)) == [("close", 1009)]
    assert_failed(proto, 1009, MessageTooBig)


def test_compressed_fragments_summing_over_the_limit_fail_1009():
    compress = Compressor()
    proto = ServerProtocol(max_message_size=1000, extension=PerMessageDeflate())
    first = compress(bytes(600), fin=False)
    second = compress(bytes(600))
    assert feed(proto, frame(BINARY, first, rsv1=True, fin=False)) == []
    assert feed(proto, frame(CONT, second)) == [("close", 1009)]
    assert_failed(proto, 1009, MessageTooBig)


def _zeros_stream(mib):
    """The raw DEFLATE stream (RFC 7692 payload) of ``mib`` MiB of zeros, without building them.

    With a byte-aligned sync flush after each MiB, the compressed form of every MiB after the
    first is the same bytes (the window is all zeros either way), so the stream is the first
    block followed by copies of the second.
    """
    obj = zlib.compressobj(9, zlib.DEFLATED, -15)
    zero = bytes(2**20)
    first = obj.compress(zero) + obj.flush(zlib.Z_SYNC_FLUSH)
    second = obj.compress(zero) + obj.flush(zlib.Z_SYNC_FLUSH)
    assert obj.compress(zero) + obj.flush(zlib.Z_SYNC_FLUSH) == second
    return first + second * (mib - 1)


def test_the_zeros_stream_is_what_it_claims():
    head = _zeros_stream(8)
    assert zlib.decompressobj(-15).decompress(head) == bytes(8 * 2**20)


def test_decompression_bomb_fails_1009_without_inflating_it():
    payload = _zeros_stream(1024)  # 1 GiB of zeros in about 1 MiB
    assert len(payload) < 2 * 2**20
    data = frame(BINARY, payload, rsv1=True)
    chunk = 64 * 1024
    proto = ServerProtocol(extension=PerMessageDeflate())  # the default 1 MiB limit
    tracemalloc.start()
    try:
        fed = 0
        while proto.state is State.OPEN and fed < len(data):
            proto.receive_data(data[fed : fed + chunk])
            fed += chunk
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert summary(proto.events_received()) == [("close", 1009)]
    assert_failed(proto, 1009, MessageTooBig)
    # Failed after a few KiB of input (1 KiB inflates to about 1 MiB) ...
    assert fed <= 2 * chunk
    # ... and never held much more than the 1 MiB limit.
    assert peak < 4 * 2**20, peak


def test_decompression_bomb_spread_over_fragments():
    payload = _zeros_stream(64)
    step = 500
    pieces = [payload[i : i + step] for i in range(0, len(payload), step)]
    proto = ServerProtocol(max_message_size=10 * 2**20, extension=PerMessageDeflate())
    events = feed(proto, frame(BINARY, pieces[0], rsv1=True, fin=False))
    for piece in pieces[1:]:
        if events:
            break
        events = feed(proto, frame(CONT, piece, fin=False))
    assert events == [("close", 1009)]
    assert_failed(proto, 1009, MessageTooBig)
