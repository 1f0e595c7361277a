"""Unit tests of django_websocket.frames: constants, masking, frame and close-payload codecs.

Each codec is checked in both directions: what we serialise is parsed back by an independent
reference parser written here (and, where it applies, by the ``websockets`` library), and what a
peer may send is parsed by our code.
"""

import os
import struct

import pytest
from websockets.frames import Frame as WsFrame
from websockets.streams import StreamReader

from django_websocket import frames
from django_websocket.exceptions import InvalidFrame
from django_websocket.frames import (
    CONTROL_OPCODES,
    DATA_OPCODES,
    CloseCode,
    Opcode,
    apply_mask,
    is_valid_close_code,
    parse_close,
    serialize_close,
    serialize_frame,
    truncate_reason,
)

# --- reference helpers (also used by the other layer-1 test modules) ---------------------------


def naive_mask(data, mask):
    """The definition of RFC 6455 §5.3, one byte at a time: j = i MOD 4, octet ^ mask[j]."""
    return bytes(b ^ mask[i % 4] for i, b in enumerate(data))


def parse_frame(data):
    """Parse one frame (RFC 6455 §5.2) from ``data``; return a dict of its fields and the rest."""
    b0, b1 = data[0], data[1]
    length = b1 & 0x7F
    pos = 2
    if length == 126:
        (length,) = struct.unpack("!H", data[2:4])
        pos = 4
    elif length == 127:
        (length,) = struct.unpack("!Q", data[2:10])
        pos = 10
    mask = None
    if b1 & 0x80:
        mask = bytes(data[pos : pos + 4])
        pos += 4
    payload = bytes(data[pos : pos + length])
    assert len(payload) == length, "truncated frame"
    if mask is not None:
        payload = naive_mask(payload, mask)
    return {
        "fin": bool(b0 & 0x80),
        "rsv1": bool(b0 & 0x40),
        "rsv2": bool(b0 & 0x20),
        "rsv3": bool(b0 & 0x10),
        "opcode": b0 & 0x0F,
        "mask": mask,
        "length_field": b1 & 0x7F,
        "header_len": pos,
        "payload": payload,
    }, bytes(data[pos + length :])


def parse_frames(data):
    """All the frames in ``data`` (which must hold whole frames only)."""
    out = []
    while data:
        frame, data = parse_frame(data)
        out.append(frame)
    return out


# --- constants -----------------------------------------------------------------------------------


def test_opcode_values_are_those_of_rfc6455_section_5_2():
    assert {op.name: op.value for op in Opcode} == {
        "CONTINUATION": 0x0,
        "TEXT": 0x1,
        "BINARY": 0x2,
        "CLOSE": 0x8,
        "PING": 0x9,
        "PONG": 0xA,
    }
    assert DATA_OPCODES == {0x0, 0x1, 0x2}
    assert CONTROL_OPCODES == {0x8, 0x9, 0xA}
    # The control opcodes are exactly those with the high bit of the nibble set (§5.5).
    assert all(op >= 8 for op in CONTROL_OPCODES) and all(op < 8 for op in DATA_OPCODES)


@pytest.mark.parametrize("reserved", [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF])
def test_reserved_opcodes_are_not_opcodes(reserved):
    with pytest.raises(ValueError):
        Opcode(reserved)


def test_close_code_values_are_those_of_rfc6455_section_7_4_1_and_iana():
    assert CloseCode.NORMAL_CLOSURE == 1000
    assert CloseCode.GOING_AWAY == 1001
    assert CloseCode.PROTOCOL_ERROR == 1002
    assert CloseCode.UNSUPPORTED_DATA == 1003
    assert CloseCode.NO_STATUS_RCVD == 1005
    assert CloseCode.ABNORMAL_CLOSURE == 1006
    assert CloseCode.INVALID_FRAME_PAYLOAD_DATA == 1007
    assert CloseCode.POLICY_VIOLATION == 1008
    assert CloseCode.MESSAGE_TOO_BIG == 1009
    assert CloseCode.MANDATORY_EXTENSION == 1010
    assert CloseCode.INTERNAL_ERROR == 1011
    assert CloseCode.SERVICE_RESTART == 1012
    assert CloseCode.TRY_AGAIN_LATER == 1013
    assert CloseCode.BAD_GATEWAY == 1014
    assert CloseCode.TLS_HANDSHAKE == 1015
    assert 1004 not in {c.value for c in CloseCode}  # reserved, never defined


# --- masking (RFC 6455 §5.3) -------------------------------------------------------------------

def _accelerator(load, name):
    try:
        return pytest.param(load(), id=name)
    except ImportError:
        # websockets is a test dependency: its accelerator must be tested wherever CI runs.
        if os.environ.get("CI") and name == "websockets-speedups":
            raise
        return pytest.param(None, id=name, marks=pytest.mark.skip(reason=f"{name} is not installed"))


STRATEGIES = [
    pytest.param(frames._mask_int, id="int"),
    pytest.param(frames._mask_translate, id="translate"),
    pytest.param(frames._apply_mask_python, id="python-dispatch"),
    pytest.param(apply_mask, id="apply_mask"),
    # The optional C accelerators, used by apply_mask where installed: the same checks.
    _accelerator(frames._load_websockets_speedups, "websockets-speedups"),
    _accelerator(frames._load_wsaccel, "wsaccel"),
]
MASKS = [b"\x00\x00\x00\x00", b"\xff\xff\xff\xff", b"\x01\x80\xfe\x37", b"\x37\xfa\x21\x3d"]


def test_the_naive_reference_is_right():
    # Checked against the RFC 6455 §5.7 example: "Hello" masked with 37 fa 21 3d.
    assert naive_mask(b"Hello", b"\x37\xfa\x21\x3d") == bytes.fromhex("7f9f4d5158")


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_mask_agrees_with_reference_for_every_length_up_to_10000(strategy):
    data = os.urandom(10001)
    mask = b"\x01\x80\xfe\x37"
    reference = naive_mask(data, mask)
    assert frames._TRANSLATE_THRESHOLD < 10001
    for n in range(10001):  # includes 0, the translate threshold and both sides of it
        assert strategy(data[:n], mask) == reference[:n], n


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("mask", MASKS, ids=lambda m: m.hex())
def test_mask_agrees_with_reference_around_the_boundaries(strategy, mask):
    data = os.urandom(10000)
    reference = naive_mask(data, mask)
    threshold = frames._TRANSLATE_THRESHOLD
    assert threshold < 10000 - 10
    for n in [*range(0, 70), *range(threshold - 9, threshold + 10), 8191, 8192, 8193, 10000]:
        result = strategy(data[:n], mask)
        assert type(result) is bytes
        assert result == reference[:n], n


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("offset", range(8))
def test_mask_applied_from_an_offset_with_the_rotated_key(strategy, offset):
    # The protocol unmasks a frame piecewise as it arrives: a piece starting at payload offset k
    # uses the key rotated by k mod 4. Each piece must equal that slice of the whole unmasking.
    mask = b"\x01\x80\xfe\x37"
    data = os.urandom(5000)
    reference = naive_mask(data, mask)
    k = offset % 4
    rotated = mask[k:] + mask[:k]
    for n in (0, 1, 3, 4, 5, 4095, 4096, 4100):
        assert strategy(data[offset : offset + n], rotated) == reference[offset : offset + n]


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_mask_accepts_any_bytes_like_and_is_an_involution(strategy, kind):
    mask = bytearray(b"\x37\xfa\x21\x3d")
    for n in (0, 5, 4096, 5000):
        data = os.urandom(n)
        masked = strategy(kind(data), mask)
        assert masked == naive_mask(data, mask)
        assert strategy(masked, mask) == data


# --- serialize_frame (RFC 6455 §5.2) ----------------------------------------------------------

LENGTHS = [
    (0, 0, 2),
    (1, 1, 2),
    (125, 125, 2),  # the largest 7-bit length
    (126, 126, 4),  # the smallest 16-bit length
    (127, 126, 4),
    (65535, 126, 4),  # the largest 16-bit length
    (65536, 127, 10),  # the smallest 64-bit length
    (70000, 127, 10),
]


@pytest.mark.parametrize("length,field,header_len", LENGTHS)
@pytest.mark.parametrize("mask", [None, b"\x37\xfa\x21\x3d"], ids=["unmasked", "masked"])
def test_serialize_frame_length_encodings(length, field, header_len, mask):
    payload = os.urandom(length)
    data = serialize_frame(Opcode.BINARY, payload, mask=mask)
    # Serialise: the exact header bytes.
    assert data[0] == 0x82
    assert data[1] == (0x80 if mask else 0) | field
    if field == 126:
        assert data[2:4] == struct.pack("!H", length)
    elif field == 127:
        assert data[2:10] == struct.pack("!Q", length)
    mask_len = 4 if mask else 0
    assert len(data) == header_len + mask_len + length
    if mask:
        assert data[header_len : header_len + 4] == mask
        assert data[header_len + 4 :] == naive_mask(payload, mask)
    else:
        assert data[header_len:] == payload
    # Parse back with the reference parser.
    frame, rest = parse_frame(data)
    assert rest == b""
    assert (frame["fin"], frame["opcode"], frame["payload"], frame["mask"]) == (True, 2, payload, mask)
    assert frame["header_len"] == header_len + mask_len


@pytest.mark.parametrize("length", [0, 125, 126, 65535, 65536])
@pytest.mark.parametrize("masked", [False, True])
def test_serialize_frame_is_read_by_websockets(length, masked):
    # Cross-check with an independent implementation's parser.
    payload = os.urandom(length)
    data = serialize_frame(Opcode.BINARY, payload, fin=False, mask=b"\x01\x02\x03\x04" if masked else None)
    reader = StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    parser = WsFrame.parse(reader.read_exact, mask=masked)
    with pytest.raises(StopIteration) as stop:
        next(parser)
    frame = stop.value.value
    assert (frame.opcode, frame.fin, frame.rsv1, bytes(frame.data)) == (Opcode.BINARY, False, False, payload)


@pytest.mark.parametrize("opcode", list(Opcode))
@pytest.mark.parametrize("fin", [True, False])
@pytest.mark.parametrize("rsv1", [True, False])
def test_serialize_frame_first_byte(opcode, fin, rsv1):
    data = serialize_frame(opcode, b"abc", fin=fin, rsv1=rsv1)
    assert data[0] == (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    frame, _ = parse_frame(data)
    assert (frame["fin"], frame["rsv1"], frame["rsv2"], frame["rsv3"], frame["opcode"]) == (
        fin,
        rsv1,
        False,
        False,
        opcode,
    )
    assert frame["payload"] == b"abc"


def test_serialize_frame_accepts_bytearray_and_memoryview_payloads():
    for payload in (bytearray(b"xyz"), memoryview(b"xyz")):
        assert serialize_frame(Opcode.BINARY, payload) == b"\x82\x03xyz"
        assert serialize_frame(Opcode.BINARY, payload, mask=b"\x00\x00\x01\x00") == b"\x82\x83\x00\x00\x01\x00xy{"


def test_rfc6455_section_5_7_examples():
    # A single-frame unmasked text message, and the same masked.
    assert serialize_frame(Opcode.TEXT, b"Hello") == bytes.fromhex("810548656c6c6f")
    assert serialize_frame(Opcode.TEXT, b"Hello", mask=b"\x37\xfa\x21\x3d") == bytes.fromhex("818537fa213d7f9f4d5158")
    # A fragmented unmasked text message.
    assert serialize_frame(Opcode.TEXT, b"Hel", fin=False) == bytes.fromhex("010348656c")
    assert serialize_frame(Opcode.CONTINUATION, b"lo") == bytes.fromhex("80026c6f")
    # Unmasked ping and pong.
    assert serialize_frame(Opcode.PING, b"Hello") == bytes.fromhex("890548656c6c6f")
    assert serialize_frame(Opcode.PONG, b"Hello", mask=b"\x37\xfa\x21\x3d") == bytes.fromhex("8a8537fa213d7f9f4d5158")
    # 256 bytes and 64 KiB binary messages in a single unmasked frame.
    assert serialize_frame(Opcode.BINARY, bytes(256))[:4] == bytes.fromhex("827e0100")
    assert serialize_frame(Opcode.BINARY, bytes(65536))[:10] == bytes.fromhex("827f0000000000010000")


# --- close payloads (RFC 6455 §5.5.1, §7.4) ---------------------------------------------------

# 1012-1014 are IANA registrations later than RFC 6455, accepted like the RFC's own codes.
RECEIVABLE = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999]
NOT_RECEIVABLE = [0, 1, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535]


@pytest.mark.parametrize("code", RECEIVABLE)
def test_parse_close_valid_codes(code):
    payload = struct.pack("!H", code) + "bye ✓".encode()
    assert parse_close(payload) == (code, "bye ✓")
    # Serialise: the same payload comes out of serialize_close.
    assert serialize_close(code, "bye ✓") == payload
    assert is_valid_close_code(code) and is_valid_close_code(code, sending=True)


@pytest.mark.parametrize("code", NOT_RECEIVABLE)
def test_parse_close_invalid_codes(code):
    with pytest.raises(InvalidFrame):
        parse_close(struct.pack("!H", code))
    with pytest.raises(InvalidFrame):
        parse_close(struct.pack("!H", code) + b"reason")
    assert not is_valid_close_code(code)


@pytest.mark.parametrize("code", [1012, 1013, 1014])
def test_later_iana_codes_may_be_sent(code):
    assert is_valid_close_code(code, sending=True)
    assert serialize_close(code, "x") == struct.pack("!H", code) + b"x"


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000])
def test_serialize_close_refuses_codes_that_may_not_be_sent(code):
    assert not is_valid_close_code(code, sending=True)
    with pytest.raises(ValueError):
        serialize_close(code)


def test_parse_close_empty_payload_means_no_status():
    code, reason = parse_close(b"")
    assert (code, reason) == (1005, "")
    assert code is CloseCode.NO_STATUS_RCVD
    # And no code serialises to an empty payload.
    assert serialize_close(None) == b""


def test_parse_close_one_byte_payload_is_invalid():
    for payload in (b"\x03", b"\xe8", b"\x00"):
        with pytest.raises(InvalidFrame):
            parse_close(payload)


@pytest.mark.parametrize("reason", [b"\xff", b"abc\xc3", b"\xed\xa0\x80", b"\xc0\xaf", b"ok\xf4\x90\x80\x80"])
def test_parse_close_reason_must_be_utf8(reason):
    with pytest.raises(InvalidFrame):
        parse_close(b"\x03\xe8" + reason)


def test_parse_close_accepts_bytearray():
    assert parse_close(bytearray(b"\x03\xe9gone")) == (1001, "gone")


def test_close_reason_of_123_bytes_is_kept_whole():
    reason = "r" * 123
    payload = serialize_close(1000, reason)
    assert len(payload) == 125  # the control frame limit (§5.5)
    assert parse_close(payload) == (1000, reason)


def test_close_reason_truncated_to_123_bytes():
    payload = serialize_close(1000, "x" * 500)
    assert payload == b"\x03\xe8" + b"x" * 123
    assert truncate_reason("x" * 500) == b"x" * 123


@pytest.mark.parametrize("prefix", range(4))
@pytest.mark.parametrize("char", ["é", "€", "😀"], ids=["2-byte", "3-byte", "4-byte"])
def test_close_reason_truncated_on_a_character_boundary(prefix, char):
    # With 0-3 ASCII bytes in front, a multi-byte character straddles the 123-byte cut for some
    # prefixes: it is dropped whole, never split.
    reason = "a" * prefix + char * 100
    width = len(char.encode())
    data = truncate_reason(reason)
    whole_chars = (123 - prefix) // width
    assert data == ("a" * prefix + char * whole_chars).encode()
    assert 123 - width < len(data) <= 123
    # Both directions: the truncated payload parses back as a prefix of the reason.
    payload = serialize_close(4000, reason)
    assert len(payload) <= 125
    code, parsed = parse_close(payload)
    assert code == 4000 and reason.startswith(parsed) and parsed.encode() == data


def test_truncate_reason_short_reasons_unchanged():
    assert truncate_reason("") == b""
    assert truncate_reason("déjà vu") == "déjà vu".encode()


def test_the_suite_runs_the_pure_python_path():
    # tests/conftest.py asks for it; without it, the tests above would not cover the default.
    assert apply_mask is frames._apply_mask_python
