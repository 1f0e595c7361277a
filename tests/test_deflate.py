"""Unit tests of django_websocket.deflate: permessage-deflate (RFC 7692) negotiation and codec,
and interoperability with the ``websockets`` library's own implementation."""

import os
import random
import zlib

import pytest
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
from websockets.extensions.permessage_deflate import PerMessageDeflate as WsPerMessageDeflate
from websockets.frames import Frame
from websockets.frames import Opcode as WsOpcode
from websockets.headers import build_extension, parse_extension

from django_websocket.deflate import PerMessageDeflate, negotiate
from django_websocket.exceptions import InvalidPayload, MessageTooBig
from django_websocket.frames import Opcode, serialize_frame
from django_websocket.handshake import parse_extensions
from django_websocket.protocol import ServerProtocol

TAIL = b"\x00\x00\xff\xff"
TEXT = ("The quick brown fox jumps over the lazy dog. " * 40).encode()


def offers(header):
    return parse_extensions(header)


# --- negotiation (RFC 7692 §5, §7.1) ----------------------------------------------------------


def test_no_offer_is_declined():
    assert negotiate([]) == (None, None)
    assert negotiate(offers("x-webkit-deflate-frame, foo; bar")) == (None, None)


def test_plain_offer():
    response, ext = negotiate(offers("permessage-deflate"))
    assert response == "permessage-deflate"
    assert isinstance(ext, PerMessageDeflate)
    assert not ext.server_no_context_takeover and not ext.client_no_context_takeover
    assert ext.server_max_window_bits == 12  # our default


def test_server_no_context_takeover_is_accepted_and_echoed():
    response, ext = negotiate(offers("permessage-deflate; server_no_context_takeover"))
    assert response == "permessage-deflate; server_no_context_takeover"
    assert ext.server_no_context_takeover and not ext.client_no_context_takeover


def test_client_no_context_takeover_is_accepted_and_echoed():
    response, ext = negotiate(offers("permessage-deflate; client_no_context_takeover"))
    assert response == "permessage-deflate; client_no_context_takeover"
    assert ext.client_no_context_takeover and not ext.server_no_context_takeover


@pytest.mark.parametrize("bits,used", [(8, 8), (9, 9), (10, 10), (12, 12), (15, 12)])
def test_server_max_window_bits_is_echoed_and_respected(bits, used):
    response, ext = negotiate(offers(f"permessage-deflate; server_max_window_bits={bits}"))
    assert response == f"permessage-deflate; server_max_window_bits={bits}"
    assert ext.server_max_window_bits == used  # never more than asked, nor than our setting


def test_quoted_server_max_window_bits():
    response, ext = negotiate(offers('permessage-deflate; server_max_window_bits="10"'))
    assert response == "permessage-deflate; server_max_window_bits=10"
    assert ext.server_max_window_bits == 10


@pytest.mark.parametrize("value", ["", "=9", "=15", '="11"'])
def test_client_max_window_bits_is_accepted_and_not_answered(value):
    # We inflate with a 15-bit window, which reads any client window (RFC 7692 §7.1.2.2).
    response, ext = negotiate(offers(f"permessage-deflate; client_max_window_bits{value}"))
    assert response == "permessage-deflate"
    assert ext is not None


def test_all_parameters_together():
    header = (
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
        "server_max_window_bits=9; client_max_window_bits=10"
    )
    response, ext = negotiate(offers(header))
    assert response == (
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=9"
    )
    assert (ext.server_no_context_takeover, ext.client_no_context_takeover, ext.server_max_window_bits) == (
        True,
        True,
        9,
    )


def test_negotiate_settings():
    _, ext = negotiate(offers("permessage-deflate"), server_max_window_bits=15, compress_level=1, min_size=10)
    assert (ext.server_max_window_bits, ext.compress_level, ext.min_size) == (15, 1, 10)


INVALID_OFFERS = [
    "permessage-deflate; unknown",
    "permessage-deflate; unknown=1",
    "permessage-deflate; server_no_context_takeover=1",
    "permessage-deflate; client_no_context_takeover=true",
    "permessage-deflate; server_max_window_bits",  # requires a value (§7.1.2.1)
    "permessage-deflate; server_max_window_bits=7",
    "permessage-deflate; server_max_window_bits=16",
    "permessage-deflate; server_max_window_bits=08",  # no leading zeros (§7.1.2)
    "permessage-deflate; server_max_window_bits=abc",
    "permessage-deflate; client_max_window_bits=7",
    "permessage-deflate; client_max_window_bits=16",
    "permessage-deflate; client_max_window_bits=010",
    "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
    "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
    "permessage-deflate; server_max_window_bits=10; server_max_window_bits=10",
    "permessage-deflate; client_max_window_bits; client_max_window_bits=10",
]


@pytest.mark.parametrize("offer", INVALID_OFFERS)
def test_invalid_offer_is_declined_and_the_next_is_tried(offer):
    assert negotiate(offers(offer)) == (None, None)
    response, ext = negotiate(offers(f"{offer}, permessage-deflate; client_no_context_takeover"))
    assert response == "permessage-deflate; client_no_context_takeover"
    assert ext.client_no_context_takeover


def test_first_acceptable_offer_wins():
    response, _ = negotiate(offers("permessage-deflate; server_max_window_bits=10, permessage-deflate"))
    assert response == "permessage-deflate; server_max_window_bits=10"


# --- the codec (RFC 7692 §7.2) ----------------------------------------------------------------


def test_rfc7692_examples_decompress():
    # §7.2.3.1: "Hello" in one compressed frame.
    assert PerMessageDeflate().decompress(bytes.fromhex("f248cdc9c90700"), end=True) == b"Hello"
    # §7.2.3.1: the same, fragmented into two frames.
    ext = PerMessageDeflate()
    assert ext.decompress(bytes.fromhex("f248cd"), end=False) + ext.decompress(bytes.fromhex("c9c90700"), end=True) == (
        b"Hello"
    )
    # §7.2.3.2: the second "Hello" refers back to the first (sharing the LZ77 window).
    ext = PerMessageDeflate()
    assert ext.decompress(bytes.fromhex("f248cdc9c90700"), end=True) == b"Hello"
    assert ext.decompress(bytes.fromhex("f200110000"), end=True) == b"Hello"
    # §7.2.3.3: a DEFLATE block with BFINAL set to 1.
    assert PerMessageDeflate().decompress(bytes.fromhex("f348cdc9c9070000"), end=True) == b"Hello"
    # §7.2.3.4: two DEFLATE blocks in one message.
    data = bytes.fromhex("f24805000000ffffcac9c90700")
    assert PerMessageDeflate().decompress(data, end=True) == b"Hello"
    # §7.2.3.5 and §7.2.3.6: a stored (uncompressed) block; an empty message.
    assert PerMessageDeflate().decompress(bytes.fromhex("000500faff48656c6c6f00"), end=True) == b"Hello"
    assert PerMessageDeflate().decompress(b"\x00", end=True) == b""


def test_rfc7692_examples_compress():
    ext = PerMessageDeflate()
    assert ext.compress(b"Hello") == bytes.fromhex("f248cdc9c90700")
    assert ext.compress(b"Hello") == bytes.fromhex("f200110000")  # context takeover (§7.2.3.2)


def test_messages_after_a_bfinal_message_still_decompress():
    # RFC 7692 §7.2.3.3 lets a sender end a message with a BFINAL block. The DEFLATE stream is over
    # then; the next message must still be read, not silently inflated to nothing.
    ext = PerMessageDeflate()
    assert ext.decompress(bytes.fromhex("f348cdc9c9070000"), end=True) == b"Hello"
    assert ext.decompress(bytes.fromhex("f348cdc9c9070000"), end=True) == b"Hello"
    assert ext.decompress(bytes.fromhex("f248cdc9c90700"), end=True) == b"Hello"
    deflater = zlib.compressobj(6, zlib.DEFLATED, -15)
    world = deflater.compress(b"world") + deflater.flush(zlib.Z_FINISH)  # BFINAL set
    assert ext.decompress(world + b"\x00", end=True) == b"world"
    assert ext.decompress(bytes.fromhex("f248cdc9c90700"), end=True) == b"Hello"


@pytest.mark.parametrize("server_nct", [False, True])
@pytest.mark.parametrize("bits", [9, 12, 15])
def test_compress_round_trip(server_nct, bits):
    sender = PerMessageDeflate(server_no_context_takeover=server_nct, server_max_window_bits=bits)
    # The receiver is a plain raw inflater, kept across messages unless context is not taken over.
    inflater = zlib.decompressobj(-bits)
    messages = [TEXT, b"", os.urandom(3000), TEXT, bytes(100000), TEXT[:100]]
    for message in messages:
        data = sender.compress(message)
        assert not data.endswith(TAIL)
        if server_nct:
            inflater = zlib.decompressobj(-bits)
        assert inflater.decompress(data + TAIL) == message


def test_context_takeover_is_used_and_can_be_disabled():
    message = random.Random(0).randbytes(2000)  # incompressible alone, within a 12-bit window
    with_context = PerMessageDeflate()
    first, second = with_context.compress(message), with_context.compress(message)
    assert len(first) > 2000
    assert len(second) < 100  # the second refers back to the first
    without = PerMessageDeflate(server_no_context_takeover=True)
    assert without.compress(message) == without.compress(message) == first


@pytest.mark.parametrize("client_nct", [False, True])
def test_decompress_round_trip(client_nct):
    receiver = PerMessageDeflate(client_no_context_takeover=client_nct)
    deflater = zlib.compressobj(6, zlib.DEFLATED, -15)
    for message in [TEXT, b"x", os.urandom(2000), TEXT, b""]:
        if client_nct:
            deflater = zlib.compressobj(6, zlib.DEFLATED, -15)
        data = deflater.compress(message) + deflater.flush(zlib.Z_SYNC_FLUSH)
        assert data.endswith(TAIL)
        data = data[:-4]
        # Fed in three frames, the last one marked as the end of the message.
        pieces = [data[:3], data[3:10], data[10:]]
        out = receiver.decompress(pieces[0], end=False) + receiver.decompress(pieces[1], end=False)
        out += receiver.decompress(pieces[2], end=True)
        assert out == message


def test_client_no_context_takeover_resets_the_inflater():
    # A client that promised no context takeover, but referred back anyway, is caught.
    deflater = zlib.compressobj(6, zlib.DEFLATED, -15)
    first = (deflater.compress(TEXT) + deflater.flush(zlib.Z_SYNC_FLUSH))[:-4]
    second = (deflater.compress(TEXT) + deflater.flush(zlib.Z_SYNC_FLUSH))[:-4]
    keeps = PerMessageDeflate()
    assert keeps.decompress(first, end=True) == TEXT
    assert keeps.decompress(second, end=True) == TEXT
    resets = PerMessageDeflate(client_no_context_takeover=True)
    assert resets.decompress(first, end=True) == TEXT
    with pytest.raises(InvalidPayload):
        resets.decompress(second, end=True)


def test_decompress_max_length():
    data = PerMessageDeflate().compress(bytes(1000))
    assert PerMessageDeflate().decompress(data, end=True, max_length=1000) == bytes(1000)
    with pytest.raises(MessageTooBig):
        PerMessageDeflate().decompress(data, end=True, max_length=999)
    with pytest.raises(MessageTooBig):
        PerMessageDeflate().decompress(data, end=True, max_length=0)
    assert PerMessageDeflate().decompress(PerMessageDeflate().compress(b""), end=True, max_length=0) == b""


def test_decompress_invalid_data():
    with pytest.raises(InvalidPayload):
        PerMessageDeflate().decompress(b"\xff\xff", end=True)


def test_should_compress():
    ext = PerMessageDeflate(min_size=64)
    assert not ext.should_compress(b"x" * 63)
    assert ext.should_compress(b"x" * 64)


# --- server_max_window_bits=8 -----------------------------------------------------------------


def inflate_with_window(data, wbits):
    """Inflate raw DEFLATE with zlib's window limited to 2**wbits bytes *truly* enforced.

    zlib resolves back-references against its window and the current output buffer; with one
    byte of output per call, the window is the only history, so a distance larger than the
    window fails with "invalid distance too far back".
    """
    inflater = zlib.decompressobj(-wbits)
    out = bytearray()
    while True:
        chunk = inflater.decompress(data, 1)
        data = inflater.unconsumed_tail
        out += chunk
        if not chunk and not data:
            return bytes(out)


def test_window_checker_rejects_distances_past_the_window():
    # The check has teeth: a 300-byte back-reference is refused with a 256-byte window...
    block = os.urandom(300)
    deflater = zlib.compressobj(9, zlib.DEFLATED, -15)
    data = deflater.compress(block * 3) + deflater.flush(zlib.Z_SYNC_FLUSH)
    assert inflate_with_window(data, 9) == block * 3
    with pytest.raises(zlib.error, match="too far back"):
        inflate_with_window(data, 8)


def test_zlib_cannot_deflate_with_an_8_bit_window():
    # Why deflate.py needs a workaround at all (madler/zlib#171).
    with pytest.raises(ValueError):
        zlib.compressobj(6, zlib.DEFLATED, -8)


def test_server_max_window_bits_8_output_fits_a_256_byte_window():
    _, ext = negotiate(offers("permessage-deflate; server_max_window_bits=8"))
    assert ext.server_max_window_bits == 8
    block = os.urandom(300)
    messages = [block * 4, TEXT, bytes(5000), block * 2, TEXT]
    stream = b""
    for message in messages:
        data = ext.compress(message)
        # Each message alone decodes with a 256-byte window ...
        assert inflate_with_window(data + TAIL, 8)[-len(message) :] == message
        stream += data + TAIL
    # ... and so does the whole stream with context takeover, as one 8-bit inflater reads it.
    assert inflate_with_window(stream, 8) == b"".join(messages)
    assert zlib.decompressobj(-8).decompress(stream) == b"".join(messages)
    # It still compresses (Huffman coding of text), though without back-references.
    assert len(ext.compress(TEXT)) < len(TEXT)


# --- interoperability with the websockets library --------------------------------------------


def ws_peer(server_nct=False, client_nct=False, server_bits=15, client_bits=15):
    """websockets' extension object as the client would hold it (remote = server)."""
    return WsPerMessageDeflate(
        remote_no_context_takeover=server_nct,
        local_no_context_takeover=client_nct,
        remote_max_window_bits=server_bits,
        local_max_window_bits=client_bits,
    )


MESSAGES = [TEXT, "καλημέρα κόσμε ".encode() * 50, os.urandom(500), bytes(70000), TEXT, b"a"]


@pytest.mark.parametrize("server_nct", [False, True])
@pytest.mark.parametrize("bits", [8, 10, 15])
def test_websockets_inflates_what_we_deflate(server_nct, bits):
    ours = PerMessageDeflate(server_no_context_takeover=server_nct, server_max_window_bits=bits)
    theirs = ws_peer(server_nct=server_nct, server_bits=bits)
    for message in MESSAGES:
        frame = Frame(WsOpcode.BINARY, ours.compress(message), fin=True, rsv1=True)
        assert bytes(theirs.decode(frame, max_size=None).data) == message


@pytest.mark.parametrize("client_nct", [False, True])
@pytest.mark.parametrize("bits", [9, 12, 15])
def test_we_inflate_what_websockets_deflates(client_nct, bits):
    ours = PerMessageDeflate(client_no_context_takeover=client_nct)
    theirs = ws_peer(client_nct=client_nct, client_bits=bits)
    for message in MESSAGES:
        # Each message in three fragments: websockets keeps the 4 tail octets on all but the last.
        cut1, cut2 = len(message) // 3, 2 * len(message) // 3
        frames = [
            theirs.encode(Frame(WsOpcode.TEXT, message[:cut1], fin=False)),
            theirs.encode(Frame(WsOpcode.CONT, message[cut1:cut2], fin=False)),
            theirs.encode(Frame(WsOpcode.CONT, message[cut2:], fin=True)),
        ]
        assert frames[0].rsv1 and not frames[1].rsv1 and not frames[2].rsv1
        out = b"".join(ours.decompress(bytes(f.data), end=f.fin) for f in frames)
        assert out == message


@pytest.mark.parametrize(
    "factory_kwargs",
    [
        {},
        {"server_no_context_takeover": True},
        {"client_no_context_takeover": True},
        {"server_max_window_bits": 8},
        {"server_max_window_bits": 10, "client_max_window_bits": 9},
        {"server_no_context_takeover": True, "client_no_context_takeover": True, "client_max_window_bits": None},
    ],
    ids=repr,
)
def test_negotiation_and_messages_with_a_websockets_client(factory_kwargs):
    from websockets.client import ClientProtocol
    from websockets.protocol import State
    from websockets.uri import parse_uri

    factory = ClientPerMessageDeflateFactory(**factory_kwargs)
    offer = build_extension([(factory.name, factory.get_request_params())])
    response, ext = negotiate(parse_extensions(offer))
    assert response is not None
    ((name, params),) = parse_extension(response)
    client = ClientProtocol(parse_uri("ws://localhost/"), state=State.OPEN, max_size=None)
    client.extensions = [factory.process_response_params(params, [])]
    server = ServerProtocol(max_message_size=None, extension=ext)
    for message in MESSAGES:
        # Client to server, one message in two frames.
        half = len(message) // 2
        client.send_binary(message[:half], fin=False)
        client.send_continuation(message[half:], fin=True)
        for data in client.data_to_send():
            server.receive_data(data)
        assert server.events_received() == [message]
        # Server to client.
        client.receive_data(server.send(message))
        (frame,) = client.events_received()
        assert bytes(frame.data) == message
    assert server.failure is None and client.close_code is None


def test_compressed_frames_we_send_carry_rsv1_on_the_first_frame_only():
    ext = PerMessageDeflate()
    proto = ServerProtocol(extension=ext)
    data = proto.send(TEXT.decode())
    assert data[0] == 0x80 | 0x40 | Opcode.TEXT
    # And it is the same as serialising the compressed payload ourselves.
    assert data == serialize_frame(Opcode.TEXT, PerMessageDeflate().compress(TEXT), rsv1=True)
    assert proto.send(b"short")[0] == 0x80 | Opcode.BINARY  # under min_size: not compressed
