"""Property tests of the protocol core: ours against the ``websockets`` library's sans-I/O server.

Random sequences of client frames, valid and invalid, are serialised and fed to our
``ServerProtocol`` (split at random points) and to ``websockets.server.ServerProtocol`` put in the
OPEN state without a handshake (fed one frame at a time, so that each of its decisions can be
tied to a frame). Both must agree on the messages, pings and pongs, on what they send back, and
on whether and with which close code the connection ends.

Where the two legitimately differ, the reference model built on websockets is normalised, and the
difference is documented here. Each was investigated; none is a bug of ours:

1. websockets' sans-I/O layer does not check UTF-8: its connection layer decodes text when the
   application reads it and then fails with 1007. The model adds that check, fail-fast at frame
   granularity with an incremental decoder (we fail within the frame: the same outcome here, as
   every frame is complete).
2. A close reason that is not UTF-8: websockets fails with 1007, we with 1002 (frames.parse_close
   raises InvalidFrame). RFC 6455 §5.5.1/§8.1 require failing without naming the code; Autobahn
   7.5.1 accepts either.
3. (No longer a difference: both accept the IANA close codes 1012-1014 from a peer.)
4. A close frame in the middle of a fragmented message: websockets fails with 1002; we accept the
   close, as RFC 6455 §5.4 allows control frames between fragments.
5. websockets checks the size limit before the reserved bits, the control-frame rules and the
   fragmentation order, so a frame breaking both gets 1009 there and 1002 here.
6. websockets counts a control frame against what is left of the message size budget (a 100-byte
   ping after 950 bytes of a 1000-byte-limit message fails with 1009); we do not count control
   frames as message data. The comparison stops at such a frame.
7. A 64-bit length with the most significant bit set: websockets does not check RFC 6455 §5.2's
   rule and fails on the size limit (1009); we fail with 1002.
8. websockets echoes the whole close payload, we echo the code only: only codes are compared.
9. With permessage-deflate, data that does not inflate: websockets fails with 1002, we with 1007.
10. With permessage-deflate, once a (corrupted) message ends the DEFLATE stream with a BFINAL
    block, websockets keeps its finished inflater and reads later messages as empty; we start a
    new one (RFC 7692 §7.2.3.3; the bug fixed in deflate.py). The comparison stops there.
11. RSV1 on a continuation frame with permessage-deflate: websockets before 17.0 ignores it (and
    may then fail on the payload, with its own code); we fail with 1002 at the header, as RFC 7692
    §6.1 sets RSV1 on the first frame only (websockets 17 agrees).

The normalisations look at frames and exception types, not at websockets' error messages, so
that they hold for every websockets version the test matrix installs.
"""

import codecs
import logging
import struct
import tracemalloc
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import PayloadTooBig
from websockets.exceptions import ProtocolError as WsProtocolError
from websockets.extensions.permessage_deflate import PerMessageDeflate as WsPerMessageDeflate
from websockets.frames import Frame as WsFrame
from websockets.frames import Opcode as WsOpcode
from websockets.protocol import State as WsState
from websockets.server import ServerProtocol as WsServerProtocol

from django_websocket.deflate import PerMessageDeflate
from django_websocket.exceptions import ProtocolError
from django_websocket.protocol import Close, Ping, Pong, ServerProtocol, State
from tests.test_frames import naive_mask, parse_frames

logging.getLogger("websockets").setLevel(logging.CRITICAL)


# The whole module takes about 10 s of CPU; every example is bounded (deadline), none can hang.
def fast(n):
    return settings(
        max_examples=n,
        deadline=2000,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


# --- generating client frames -----------------------------------------------------------------


class F:
    """One client frame as generated: header fields, payload, and how it is written."""

    def __init__(self, opcode, payload=b"", *, fin=True, rsv=0, mask=b"\x00\x00\x00\x00", length=None):
        self.opcode, self.payload, self.fin, self.rsv, self.mask = opcode, payload, fin, rsv, mask
        self.length = len(payload) if length is None else length  # a bogus length may be declared

    def __repr__(self):
        return f"F({self.opcode:#x}, {self.payload[:20]!r}, fin={self.fin}, rsv={self.rsv:#x}, length={self.length})"

    def serialize(self):
        b0 = (0x80 if self.fin else 0) | self.rsv | self.opcode
        masked = 0x80 if self.mask is not None else 0
        if self.length < 126:
            header = bytes([b0, masked | self.length])
        elif self.length < 0x10000:
            header = bytes([b0, masked | 126]) + struct.pack("!H", self.length)
        else:
            header = bytes([b0, masked | 127]) + struct.pack("!Q", self.length)
        if self.mask is None:
            return header + self.payload
        return header + self.mask + naive_mask(self.payload, self.mask)


masks = st.one_of(st.binary(min_size=4, max_size=4), st.just(b"\x00\x00\x00\x00"))


# Text whose encoding is sliced anywhere: whole characters, split ones, and invalid bytes.
def _cut(t):
    data, a, b = t
    a, b = sorted((a % (len(data) + 1), b % (len(data) + 1)))
    return data[a:b]


utf8ish = st.one_of(
    st.text(max_size=40).map(str.encode),
    st.tuples(
        st.text(st.characters(min_codepoint=0x80, codec="utf-8"), min_size=1, max_size=20).map(str.encode),
        st.integers(0, 100),
        st.integers(0, 100),
    ).map(_cut),
    st.sampled_from([b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xe2\x82", b"\x80"]),
    st.binary(max_size=20),
)
CLOSE_CODES = [1000, 1001, 1002, 1003, 1004, 1005, 1006, 1007, 1011, 1012, 1014, 1015, 999, 0, 2999, 3000, 4999, 5000]
close_payloads = st.one_of(
    st.just(b""),
    st.binary(min_size=1, max_size=1),
    st.tuples(st.sampled_from(CLOSE_CODES), st.one_of(st.text(max_size=10).map(str.encode), utf8ish)).map(
        lambda t: struct.pack("!H", t[0]) + t[1][:123]
    ),
)


# Payloads of any size up to 400 bytes (left alone, hypothesis favours short ones).
binaries = st.one_of(st.binary(max_size=20), st.integers(0, 400).flatmap(lambda n: st.binary(min_size=n, max_size=n)))
texts = st.one_of(utf8ish, st.text(min_size=20, max_size=200).map(str.encode))


@st.composite
def message_frames(draw, broken=False, unfinished=False):
    """A data message cut into 1-4 fragments, with control frames between them.

    ``broken``: one of its frames breaks a rule (or is missing); ``unfinished``: its last frame
    does not have FIN set, so what comes next lands in the middle of the message.
    """
    opcode = draw(st.sampled_from([TEXT, BINARY]))
    payload = draw(texts if opcode == TEXT else binaries)
    cuts = sorted(draw(st.lists(st.integers(0, len(payload)), max_size=3)))
    pieces = [payload[a:b] for a, b in zip([0, *cuts], [*cuts, len(payload)], strict=True)]
    frames = []
    for i, piece in enumerate(pieces):
        frames.append(F(opcode if i == 0 else CONT, piece, fin=i == len(pieces) - 1, mask=draw(masks)))
        if i < len(pieces) - 1:
            frames += draw(st.lists(control_frames(), max_size=1))
    if unfinished:
        frames[-1].fin = False  # the last frame is always a data frame
    if broken:
        i = draw(st.integers(0, len(frames) - 1))
        mutation = draw(st.sampled_from(MUTATIONS + ["drop"]))
        if mutation == "drop":
            del frames[i]
        else:
            apply_mutation(draw, frames[i], mutation)
    return frames


@st.composite
def control_frames(draw):
    opcode = draw(st.sampled_from([PING, PONG, PING, CLOSE]))
    payload = draw(close_payloads if opcode == CLOSE else st.binary(max_size=125))
    return F(opcode, payload, mask=draw(masks))


@st.composite
def random_frames(draw):
    """Any header at all: reserved opcodes and bits, unmasked, over-long control frames..."""
    opcode = draw(st.integers(0, 15))
    if opcode == CLOSE:
        payload = draw(close_payloads)
    elif opcode in (TEXT, CONT):
        payload = draw(utf8ish)
    else:
        payload = draw(st.binary(max_size=130))
    return F(
        opcode,
        payload,
        fin=draw(st.booleans()),
        rsv=draw(st.sampled_from([0] * 6 + [0x40, 0x20, 0x10])),
        mask=draw(st.sampled_from([True] * 5 + [False])) and draw(masks) or None,
    )


@st.composite
def huge_length_frames(draw):
    """A header declaring a huge payload (never sent): the size rules, RFC 6455 §5.2's MSB rule.

    Always over every limit used here, so both sides decide at the header and the stream stays
    aligned on the generated frames.
    """
    length = draw(st.one_of(st.integers(2**20 + 1, 2**63 - 1), st.integers(2**63, 2**64 - 1)))
    return F(draw(st.sampled_from([TEXT, BINARY, CONT, PING])), b"", length=length)


MUTATIONS = ["rsv1", "rsv2", "rsv3", "unmask", "fin", "opcode"]


def apply_mutation(draw, f, mutation):
    if mutation in ("rsv1", "rsv2", "rsv3"):
        f.rsv |= {"rsv1": 0x40, "rsv2": 0x20, "rsv3": 0x10}[mutation]
    elif mutation == "unmask":
        f.mask = None
    elif mutation == "fin":
        f.fin = not f.fin
    elif mutation == "opcode":
        f.opcode = draw(st.integers(0, 15))


def mutated(frame_strategy):
    """Now and then, break one rule of an otherwise valid frame."""

    @st.composite
    def build(draw):
        f = draw(frame_strategy)
        mutation = draw(st.sampled_from(["none"] * 24 + MUTATIONS))
        apply_mutation(draw, f, mutation)
        return f

    return build()


@st.composite
def frame_sequences(draw):
    items = draw(
        st.lists(
            st.one_of(
                message_frames(),
                message_frames(),
                message_frames(),
                message_frames(unfinished=True),
                message_frames(broken=True),
                mutated(control_frames()).map(lambda f: [f]),
                mutated(control_frames()).map(lambda f: [f]),
                mutated(random_frames()).map(lambda f: [f]),
                huge_length_frames().map(lambda f: [f]),
            ),
            max_size=8,
        )
    )
    return [f for item in items for f in item]


def split(data, points):
    points = sorted({p % (len(data) + 1) for p in points})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


# --- running both -------------------------------------------------------------------------------


def sent_summary(data):
    out = []
    for f in parse_frames(data):
        if f["opcode"] == CLOSE:
            out.append(("close", struct.unpack("!H", f["payload"][:2])[0] if f["payload"] else None))
        else:
            assert f["opcode"] == PONG, f
            out.append(("pong", f["payload"]))
    return out


def run_ours(pieces, limit, extension=None):
    """Feed our protocol; return (events, outcome, sent)."""
    proto = ServerProtocol(max_message_size=limit, extension=extension)
    events, out = [], b""
    for piece in pieces:
        proto.receive_data(piece)
        events += proto.events_received()
        out += proto.data_to_send()
    proto.receive_eof()
    events += proto.events_received()
    out += proto.data_to_send()
    assert proto.state is State.CLOSED
    assert isinstance(events[-1], Close) and not any(isinstance(e, Close) for e in events[:-1])
    if proto.failure is not None:
        outcome = ("fail", proto.failure.code)
    elif events[-1].code == 1006 and not proto.close_received:
        outcome = ("eof", 1006)
    else:
        outcome = ("close", events[-1].code)
    summary = []
    for e in events[:-1]:
        if isinstance(e, str):
            summary.append(("text", e))
        elif isinstance(e, bytes):
            summary.append(("binary", e))
        elif isinstance(e, Pong):
            summary.append(("pong", e.payload))
        else:
            assert isinstance(e, Ping)
            summary.append(("ping", e.payload))
    return summary, outcome, sent_summary(out)


def framing_error(f, in_message, extension):
    """Whether our header checks reject ``f`` with 1002 (see differences 5 and 7)."""
    if f.rsv & 0x30 or f.length >> 63:
        return True
    if f.opcode >= 8:
        return not f.fin or f.length > 125 or bool(f.rsv)
    if f.opcode == CONT:
        return not in_message or bool(f.rsv)
    return in_message or (bool(f.rsv) and not extension)


def run_websockets(frames, limit, extension=None):
    """Feed websockets frame by frame and build the normalised reference result.

    Returns (events, outcome, sent); outcome is None when the comparison must stop early
    (difference 6), and then events and sent are only a prefix of ours.
    """
    ws = WsServerProtocol(state=WsState.OPEN, max_size=limit)
    if extension is not None:
        ws.extensions = [extension]
    events, sent = [], []
    message = None  # (opcode, parts, utf-8 decoder) of the message being reassembled

    def sent_so_far():
        return sent + sent_summary(b"".join(ws.data_to_send()))

    for f in frames:
        in_message = message is not None
        ws.receive_data(f.serialize())
        if extension is not None and f.opcode == CONT and f.rsv & 0x40:  # difference 11
            return events, ("fail", 1002), sent + [("close", 1002)]
        for frame in ws.events_received():
            if frame.opcode in (WsOpcode.TEXT, WsOpcode.BINARY, WsOpcode.CONT):
                if frame.opcode != WsOpcode.CONT:
                    decoder = codecs.getincrementaldecoder("utf-8")() if frame.opcode == WsOpcode.TEXT else None
                    message = (frame.opcode, [], decoder)
                opcode, parts, decoder = message
                if decoder is not None:
                    try:  # difference 1
                        parts.append(decoder.decode(bytes(frame.data), frame.fin))
                    except UnicodeDecodeError:
                        return events, ("fail", 1007), sent_so_far() + [("close", 1007)]
                else:
                    parts.append(bytes(frame.data))
                if frame.fin:
                    events.append(("text", "".join(parts)) if decoder else ("binary", b"".join(parts)))
                    message = None
            elif frame.opcode == WsOpcode.PING:
                events.append(("ping", bytes(frame.data)))
            elif frame.opcode == WsOpcode.PONG:
                events.append(("pong", bytes(frame.data)))
            else:
                code = ws.close_rcvd.code
                return events, ("close", code), sent_so_far()
        sent = sent_so_far()
        if extension is not None and getattr(extension, "decoder", None) is not None and extension.decoder.eof:
            return events, None, sent  # difference 10
        exc = ws.parser_exc
        if exc is None:
            continue
        assert sent[-1][0] == "close"
        if isinstance(exc, UnicodeDecodeError) and f.opcode == CLOSE:  # difference 2
            return events, ("fail", 1002), sent[:-1] + [("close", 1002)]
        if f.opcode == CLOSE and in_message and ws.close_rcvd is not None:  # difference 4
            code = ws.close_rcvd.code
            return events, ("close", code), sent[:-1] + [("close", None if code == 1005 else code)]
        if isinstance(exc, WsProtocolError) and isinstance(exc.__cause__, zlib.error):  # difference 9
            return events, ("fail", 1007), sent[:-1] + [("close", 1007)]
        if isinstance(exc, PayloadTooBig):
            if framing_error(f, in_message, extension is not None):  # differences 5 and 7
                return events, ("fail", 1002), sent[:-1] + [("close", 1002)]
            if f.opcode >= 8:  # difference 6
                return events, None, sent[:-1]
        code = ws.close_sent.code
        return events, ("fail", code), sent
    ws.receive_eof()
    assert isinstance(ws.parser_exc, EOFError)
    return events, ("eof", 1006), sent


def compare(frames, points, limit, our_extension=None, their_extension=None):
    data = b"".join(f.serialize() for f in frames)
    ours = run_ours(split(data, points), limit, our_extension)
    theirs = run_websockets(frames, limit, their_extension)
    if theirs[1] is None:
        assert ours[0][: len(theirs[0])] == theirs[0]
        assert ours[2][: len(theirs[2])] == theirs[2]
    else:
        assert ours == theirs
    return ours


@fast(300)
@given(
    frames=frame_sequences(),
    points=st.lists(st.integers(0, 10**6), max_size=6),
    limit=st.sampled_from([2**20, 300, 64]),
)
def test_we_agree_with_websockets(frames, points, limit):
    compare(frames, points, limit)


@st.composite
def valid_messages(draw):
    """Only valid messages, fragmented, with pings between fragments: sizes around the limit."""
    frames = []
    for _ in range(draw(st.integers(1, 4))):
        opcode = draw(st.sampled_from([TEXT, BINARY]))
        size = draw(st.integers(0, 120))
        payload = draw(
            st.text(min_size=size, max_size=size).map(str.encode) if opcode == TEXT else st.just(bytes(size))
        )
        cuts = sorted(draw(st.lists(st.integers(0, len(payload)), min_size=1, max_size=4)))
        pieces = [payload[a:b] for a, b in zip([0, *cuts], [*cuts, len(payload)], strict=True)]
        for i, piece in enumerate(pieces):
            frames.append(F(opcode if i == 0 else CONT, piece, fin=i == len(pieces) - 1, mask=draw(masks)))
            if i < len(pieces) - 1 and draw(st.integers(0, 3)) == 0:
                frames.append(F(PING, draw(st.binary(max_size=8)), mask=draw(masks)))
    return frames


@fast(250)
@given(frames=valid_messages(), points=st.lists(st.integers(0, 10**6), max_size=6), limit=st.integers(1, 200))
def test_we_agree_with_websockets_on_size_limits_and_fragments(frames, points, limit):
    compare(frames, points, limit)


@st.composite
def text_messages(draw):
    """Text messages only, valid or not, cut anywhere: UTF-8 split across fragments and chunks."""
    frames = []
    for _ in range(draw(st.integers(1, 3))):
        payload = draw(st.one_of(utf8ish, st.text(max_size=30).map(str.encode)))
        cuts = sorted(draw(st.lists(st.integers(0, len(payload)), max_size=4)))
        pieces = [payload[a:b] for a, b in zip([0, *cuts], [*cuts, len(payload)], strict=True)]
        for i, piece in enumerate(pieces):
            frames.append(F(TEXT if i == 0 else CONT, piece, fin=i == len(pieces) - 1, mask=draw(masks)))
    return frames


@fast(200)
@given(frames=text_messages(), points=st.lists(st.integers(0, 10**6), max_size=6))
def test_we_agree_with_websockets_on_utf8(frames, points):
    compare(frames, points, 2**20)


# --- with permessage-deflate --------------------------------------------------------------------


@st.composite
def compressed_conversations(draw):
    """Messages a websockets client would send with permessage-deflate, now and then corrupted."""
    client_nct = draw(st.booleans())
    bits = draw(st.integers(9, 15))
    client = WsPerMessageDeflate(
        remote_no_context_takeover=False,
        local_no_context_takeover=client_nct,
        remote_max_window_bits=15,
        local_max_window_bits=bits,
    )
    frames = []
    for _ in range(draw(st.integers(1, 5))):
        opcode = draw(st.sampled_from([TEXT, BINARY]))
        payload = draw(texts if opcode == TEXT else st.one_of(binaries, st.text(max_size=300).map(str.encode)))
        compress = draw(st.booleans()) or draw(st.booleans())
        cuts = sorted(draw(st.lists(st.integers(0, len(payload)), max_size=3)))
        pieces = [payload[a:b] for a, b in zip([0, *cuts], [*cuts, len(payload)], strict=True)]
        for i, piece in enumerate(pieces):
            ws_frame = WsFrame(WsOpcode(opcode if i == 0 else CONT), piece, fin=i == len(pieces) - 1)
            if compress:
                ws_frame = client.encode(ws_frame)
            data = bytes(ws_frame.data)
            if data and draw(st.integers(0, 9)) == 0:
                pos = draw(st.integers(0, len(data) - 1))
                data = data[:pos] + bytes([data[pos] ^ draw(st.integers(1, 255))]) + data[pos + 1 :]
            rsv = 0x40 if ws_frame.rsv1 else 0
            if draw(st.integers(0, 14)) == 0:
                rsv ^= 0x40  # RSV1 where it does not belong, or missing where it does
            frames.append(F(ws_frame.opcode, data, fin=ws_frame.fin, rsv=rsv, mask=draw(masks)))
        if draw(st.integers(0, 4)) == 0:
            frames.append(draw(mutated(control_frames())))
    server_ext = PerMessageDeflate(client_no_context_takeover=client_nct)
    their_ext = WsPerMessageDeflate(
        remote_no_context_takeover=client_nct,
        local_no_context_takeover=False,
        remote_max_window_bits=bits,
        local_max_window_bits=15,
    )
    return frames, server_ext, their_ext


@fast(250)
@given(conversation=compressed_conversations(), points=st.lists(st.integers(0, 10**6), max_size=6))
def test_we_agree_with_websockets_on_compressed_messages(conversation, points):
    frames, ours, theirs = conversation
    # A large limit: websockets measures compressed frames on the wire as well (difference 9's
    # neighbour), which only matters near the limit; the limits are unit-tested in test_protocol.
    compare(frames, points, 2**20, ours, theirs)


# --- robustness ---------------------------------------------------------------------------------


def check_end_state(proto, events, out):
    """Whatever came in, the connection ends in a consistent state."""
    assert proto.state is State.CLOSED
    assert isinstance(events[-1], Close)
    for e in events[:-1]:
        assert isinstance(e, (str, bytes, Ping, Pong)), e
    assert proto.close_code == events[-1].code
    frames_out = parse_frames(out)  # whole, well-formed server frames only
    for f in frames_out[:-1]:
        assert f["opcode"] == PONG and len(f["payload"]) <= 125
    if proto.failure is not None:
        assert isinstance(proto.failure, ProtocolError)
        assert proto.failure.code in (1002, 1007, 1009)
        assert events[-1].code == proto.failure.code
        assert frames_out[-1]["opcode"] == CLOSE
        assert struct.unpack("!H", frames_out[-1]["payload"][:2])[0] == proto.failure.code
    if frames_out and frames_out[-1]["opcode"] == CLOSE:
        assert len(frames_out[-1]["payload"]) <= 125
        assert proto.close_sent


def summarize(events):
    return [
        (type(e).__name__, e.code if isinstance(e, Close) else e.payload if isinstance(e, Ping) else e) for e in events
    ]


def feed_everything(pieces, **kwargs):
    proto = ServerProtocol(**kwargs)
    events, out = [], b""
    for piece in pieces:
        proto.receive_data(piece)  # must never raise
        events += proto.events_received()
        out += proto.data_to_send()
    proto.receive_eof()
    events += proto.events_received()
    out += proto.data_to_send()
    check_end_state(proto, events, out)
    return events


@fast(200)
@given(
    data=st.one_of(
        st.binary(max_size=3000),
        st.lists(
            st.one_of(frame_sequences().map(lambda fs: b"".join(f.serialize() for f in fs)), st.binary(max_size=50)),
            max_size=3,
        ).map(b"".join),
    ),
    points=st.lists(st.integers(0, 10**6), max_size=8),
    deflate=st.booleans(),
    limit=st.sampled_from([None, 2**20, 100]),
)
def test_arbitrary_bytes_never_raise_and_end_in_a_valid_state(data, points, deflate, limit):
    extension = PerMessageDeflate() if deflate else None
    events = feed_everything(split(data, points), max_message_size=limit, extension=extension)
    # And splitting does not change the outcome.
    whole = feed_everything([data], max_message_size=limit, extension=PerMessageDeflate() if deflate else None)
    assert summarize(events) == summarize(whole)


@fast(200)
@given(
    data=st.lists(
        st.tuples(st.integers(0, 0xFF), st.binary(max_size=40)).map(
            # Random first bytes on masked frames with arbitrary, even compressed-looking, payloads.
            lambda t: bytes([t[0], 0x80 | len(t[1])]) + b"\x00\x00\x00\x00" + t[1]
        ),
        max_size=20,
    ).map(b"".join),
    points=st.lists(st.integers(0, 10**6), max_size=4),
)
def test_random_headers_with_deflate_never_raise(data, points):
    feed_everything(split(data, points), extension=PerMessageDeflate())


@pytest.mark.parametrize("limit", [None, 2**20])
def test_a_declared_huge_frame_neither_hangs_nor_buffers_more_than_it_receives(limit):
    # 2**62 bytes announced, then a trickle. With a limit, the header alone fails the connection
    # and the rest is discarded; without one, what arrives is the message so far, held once.
    proto = ServerProtocol(max_message_size=limit)
    tracemalloc.start()
    try:
        proto.receive_data(F(BINARY, b"", length=2**62).serialize())
        for _ in range(100):
            proto.receive_data(bytes(1000))
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert held < (10_000 if limit else 150_000), held
    assert proto.state is (State.CLOSED if limit else State.OPEN)
    proto.receive_eof()
    assert proto.state is State.CLOSED
    assert proto.close_code == (1009 if limit else 1006)
