"""Unit tests of django_websocket.handshake: reading the opening handshake from a WSGI environ
(RFC 6455 §4.2.1) and writing the 101 answer (§4.2.2)."""

import base64
import hashlib
from http import HTTPStatus

import pytest

from django_websocket.exceptions import BadRequest, HandshakeError, UnsupportedVersion
from django_websocket.handshake import (
    GUID,
    Request,
    accept_key,
    accept_response,
    is_websocket_request,
    parse_extensions,
    parse_tokens,
    read_request,
)

KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # the RFC 6455 §1.3 example key


def environ(**overrides):
    """A valid opening handshake as a WSGI environ; ``None`` removes a key."""
    env = {
        "REQUEST_METHOD": "GET",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "PATH_INFO": "/chat",
        "HTTP_HOST": "server.example.com",
        "HTTP_UPGRADE": "websocket",
        "HTTP_CONNECTION": "Upgrade",
        "HTTP_SEC_WEBSOCKET_KEY": KEY,
        "HTTP_SEC_WEBSOCKET_VERSION": "13",
        "HTTP_ORIGIN": "http://example.com",
    }
    for name, value in overrides.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def refused(**overrides):
    """The HandshakeError that read_request raises for the environ with ``overrides``."""
    with pytest.raises(HandshakeError) as info:
        read_request(environ(**overrides))
    return info.value


def test_valid_request():
    request = read_request(environ(HTTP_SEC_WEBSOCKET_PROTOCOL="chat, superchat"))
    assert isinstance(request, Request)
    assert request.key == KEY
    assert request.host == "server.example.com"
    assert request.path == "/chat"
    assert request.origin == "http://example.com"
    assert request.subprotocols == ["chat", "superchat"]
    assert request.extensions == []
    assert is_websocket_request(environ())


def test_minimal_request():
    request = read_request(environ(HTTP_ORIGIN=None, PATH_INFO=None))
    assert request.origin is None and request.path == "/"
    assert request.subprotocols == [] and request.extensions == []


@pytest.mark.parametrize("protocol", ["HTTP/1.1", "HTTP/2", "HTTP/2.0", "HTTP/1.2"])
def test_http_versions_accepted(protocol):
    assert read_request(environ(SERVER_PROTOCOL=protocol)).key == KEY


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"REQUEST_METHOD": "POST"}, id="POST"),
        pytest.param({"REQUEST_METHOD": "get"}, id="lower-case get"),
        pytest.param({"REQUEST_METHOD": "HEAD"}, id="HEAD"),
        pytest.param({"SERVER_PROTOCOL": "HTTP/1.0"}, id="HTTP/1.0"),
        pytest.param({"SERVER_PROTOCOL": "HTTP/0.9"}, id="HTTP/0.9"),
        pytest.param({"SERVER_PROTOCOL": None}, id="no protocol"),
        pytest.param({"SERVER_PROTOCOL": "SPDY/3"}, id="not HTTP"),
        pytest.param({"HTTP_HOST": None}, id="missing Host"),
        pytest.param({"HTTP_HOST": ""}, id="empty Host"),
        pytest.param({"HTTP_UPGRADE": None}, id="missing Upgrade"),
        pytest.param({"HTTP_UPGRADE": "h2c"}, id="Upgrade without websocket"),
        pytest.param({"HTTP_UPGRADE": "websockets"}, id="Upgrade websockets"),
        pytest.param({"HTTP_CONNECTION": None}, id="missing Connection"),
        pytest.param({"HTTP_CONNECTION": "keep-alive"}, id="Connection without upgrade"),
        pytest.param({"HTTP_CONNECTION": "upgraded"}, id="Connection upgraded"),
        pytest.param({"HTTP_SEC_WEBSOCKET_KEY": None}, id="missing key"),
        pytest.param({"HTTP_SEC_WEBSOCKET_KEY": "   "}, id="blank key"),
        pytest.param({"HTTP_SEC_WEBSOCKET_KEY": "not base64!"}, id="non-base64 key"),
        pytest.param({"HTTP_SEC_WEBSOCKET_KEY": "dGhlIHNhbXBsZSBub25jZQ"}, id="key without padding"),
        pytest.param({"HTTP_SEC_WEBSOCKET_KEY": base64.b64encode(bytes(15)).decode()}, id="15-byte key"),
        pytest.param({"HTTP_SEC_WEBSOCKET_KEY": base64.b64encode(bytes(17)).decode()}, id="17-byte key"),
        pytest.param({"HTTP_SEC_WEBSOCKET_VERSION": None}, id="missing version"),
        pytest.param({"HTTP_SEC_WEBSOCKET_VERSION": " "}, id="blank version"),
        pytest.param({"HTTP_SEC_WEBSOCKET_PROTOCOL": "chat, sup@r"}, id="bad subprotocol token"),
        pytest.param({"HTTP_SEC_WEBSOCKET_EXTENSIONS": 'permessage-deflate; a="b'}, id="bad extensions"),
    ],
)
def test_malformed_requests_get_400(overrides):
    error = refused(**overrides)
    assert isinstance(error, BadRequest)
    assert error.status == HTTPStatus.BAD_REQUEST == 400
    assert error.headers == ()


@pytest.mark.parametrize("version", ["8", "7", "14", "13, 8", "abc"])
def test_other_versions_get_426_with_the_version_we_speak(version):
    error = refused(HTTP_SEC_WEBSOCKET_VERSION=version)
    assert isinstance(error, UnsupportedVersion)
    assert error.status == HTTPStatus.UPGRADE_REQUIRED == 426
    assert ("Sec-WebSocket-Version", "13") in error.headers


@pytest.mark.parametrize("char", ["\r", "\n", "\x00", "\x7f", "\x1b"])
@pytest.mark.parametrize("header", ["HTTP_HOST", "HTTP_ORIGIN", "HTTP_SEC_WEBSOCKET_PROTOCOL", "HTTP_X_CUSTOM"])
def test_control_characters_in_a_header_value_get_400(char, header):
    value = environ().get(header, "chat")
    error = refused(**{header: value + char + "injected: yes"})
    assert isinstance(error, BadRequest) and error.status == 400


def test_tab_in_a_header_value_is_allowed():
    assert read_request(environ(HTTP_X_CUSTOM="a\tb")).key == KEY


@pytest.mark.parametrize("upgrade", ["WebSocket", "WEBSOCKET", "websocket, h2c", "h2c ,  WebSocket"])
def test_upgrade_token_is_case_insensitive_and_may_be_in_a_list(upgrade):
    assert read_request(environ(HTTP_UPGRADE=upgrade)).key == KEY
    assert is_websocket_request(environ(HTTP_UPGRADE=upgrade))


@pytest.mark.parametrize("connection", ["upgrade", "UPGRADE", "keep-alive, Upgrade", "Upgrade,keep-alive"])
def test_connection_upgrade_token_is_case_insensitive_and_may_be_in_a_list(connection):
    assert read_request(environ(HTTP_CONNECTION=connection)).key == KEY


def test_key_surrounding_whitespace_is_ignored():
    assert read_request(environ(HTTP_SEC_WEBSOCKET_KEY=f"  {KEY} ")).key == KEY


def test_not_a_websocket_request():
    assert not is_websocket_request(environ(HTTP_UPGRADE=None))
    assert not is_websocket_request(environ(HTTP_UPGRADE="h2c"))


def test_parse_tokens():
    assert parse_tokens("a, B ,,c") == ["a", "b", "c"]
    assert parse_tokens("") == []


# --- subprotocols (RFC 6455 §4.2.1 item 8, §11.3.4) ------------------------------------------


@pytest.mark.parametrize(
    "header,expected",
    [
        ("chat", ["chat"]),
        ("chat, superchat", ["chat", "superchat"]),
        (
            "  v2.bookings.example.net ,v1.bookings.example.net  ",
            ["v2.bookings.example.net", "v1.bookings.example.net"],
        ),
        ("chat,,superchat,", ["chat", "superchat"]),
        ("", []),
        ("Chat", ["Chat"]),  # subprotocol names are case-sensitive: kept as given
    ],
)
def test_subprotocol_parsing(header, expected):
    assert read_request(environ(HTTP_SEC_WEBSOCKET_PROTOCOL=header)).subprotocols == expected


@pytest.mark.parametrize("header", ["chat superchat", "a/b", "chat, [x]", '"chat"'])
def test_subprotocols_must_be_tokens(header):
    assert refused(HTTP_SEC_WEBSOCKET_PROTOCOL=header).status == 400


# --- extensions (RFC 6455 §9.1) ---------------------------------------------------------------


@pytest.mark.parametrize(
    "header,expected",
    [
        ("", []),
        ("permessage-deflate", [("permessage-deflate", {})]),
        ("Permessage-Deflate", [("permessage-deflate", {})]),
        (
            "permessage-deflate; client_max_window_bits",
            [("permessage-deflate", {"client_max_window_bits": None})],
        ),
        (
            "permessage-deflate; server_max_window_bits=10; client_no_context_takeover",
            [("permessage-deflate", {"server_max_window_bits": "10", "client_no_context_takeover": None})],
        ),
        (
            'permessage-deflate; server_max_window_bits="10"',
            [("permessage-deflate", {"server_max_window_bits": "10"})],
        ),
        (
            "permessage-deflate ; server_max_window_bits = 10 ;client_max_window_bits",
            [("permessage-deflate", {"server_max_window_bits": "10", "client_max_window_bits": None})],
        ),
        (
            'foo; a="b"; c, permessage-deflate; server_no_context_takeover, bar',
            [("foo", {"a": "b", "c": None}), ("permessage-deflate", {"server_no_context_takeover": None}), ("bar", {})],
        ),
        ("a, , b", [("a", {}), ("b", {})]),
    ],
)
def test_extension_parsing(header, expected):
    assert parse_extensions(header) == expected
    assert read_request(environ(HTTP_SEC_WEBSOCKET_EXTENSIONS=header)).extensions == expected


def test_quoted_comma_and_semicolon_do_not_split():
    # A quoted-string may hold separators; after unquoting the value must still be a token
    # (RFC 6455 §9.1), so these are rejected as a whole rather than split in the wrong place.
    for header in ['x; a="1,2"', 'x; a="1;2"']:
        with pytest.raises(BadRequest):
            parse_extensions(header)


def test_quoted_values_are_unescaped_before_the_token_check():
    # RFC 6455 §9.1: "the value after quoted-string unescaping MUST conform to the 'token' ABNF";
    # a quoted-pair is a backslash and the character it stands for (RFC 7230 §3.2.6).
    assert parse_extensions(r'permessage-deflate; server_max_window_bits="1\0"') == [
        ("permessage-deflate", {"server_max_window_bits": "10"})
    ]
    assert parse_extensions(r'x; a="\a\b", y') == [("x", {"a": "ab"}), ("y", {})]
    # An escaped quote neither closes the string nor makes a token.
    for header in [r'x; a="b\"', r'x; a="\"b\""', r'x; a="b\,c"']:
        with pytest.raises(BadRequest):
            parse_extensions(header)


def test_duplicate_parameter_is_marked_not_merged():
    ((name, params),) = parse_extensions("permessage-deflate; server_max_window_bits=10; server_max_window_bits=11")
    assert name == "permessage-deflate"
    assert params["server_max_window_bits"] not in ("10", "11", None)


@pytest.mark.parametrize(
    "header",
    [
        "permessage-deflate;",  # empty parameter
        "permessage-deflate; ; x",
        "permessage deflate",  # name is not a token
        "; x",  # no name
        "permessage-deflate; a b",  # parameter name is not a token
        "permessage-deflate; a=",  # empty value
        'permessage-deflate; a=""',  # empty quoted value
        'permessage-deflate; a="1 2"',  # quoted value that is not a token
        "permessage-deflate; a=1 2",
        'permessage-deflate; a="10',  # unbalanced quote
        "permessage-deflate; a=@",
        "x=1",
    ],
)
def test_malformed_extension_headers(header):
    with pytest.raises(BadRequest):
        parse_extensions(header)
    assert refused(HTTP_SEC_WEBSOCKET_EXTENSIONS=header).status == 400


# --- the answer (RFC 6455 §4.2.2) -------------------------------------------------------------


def test_accept_key_rfc6455_section_1_3_example():
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert GUID == "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def test_accept_key_definition():
    key = base64.b64encode(b"0123456789abcdef").decode()
    expected = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
    assert accept_key(key) == expected


def parse_response(data):
    head, sep, rest = data.partition(b"\r\n\r\n")
    assert sep and rest == b""
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = [tuple(line.split(": ", 1)) for line in lines]
    return status, headers


def test_accept_response_without_subprotocol():
    status, headers = parse_response(accept_response(KEY))
    assert status == "HTTP/1.1 101 Switching Protocols"
    assert headers == [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
    ]
    assert b"Sec-WebSocket-Protocol" not in accept_response(KEY, subprotocol=None)
    assert b"Sec-WebSocket-Protocol" not in accept_response(KEY, subprotocol="")


def test_accept_response_with_subprotocol_and_extensions():
    _, headers = parse_response(
        accept_response(KEY, "chat", "permessage-deflate; server_no_context_takeover", [("X-Extra", "1")])
    )
    assert ("Sec-WebSocket-Protocol", "chat") in headers
    assert ("Sec-WebSocket-Extensions", "permessage-deflate; server_no_context_takeover") in headers
    assert headers[-1] == ("X-Extra", "1")
    assert [name for name, _ in headers].count("Sec-WebSocket-Protocol") == 1


@pytest.mark.parametrize("name,value", [("X-A", "1\r\nSet-Cookie: x"), ("X-A\n", "1"), ("X-A", "a\x00b")])
def test_accept_response_refuses_header_injection(name, value):
    with pytest.raises(ValueError):
        accept_response(KEY, headers=[(name, value)])


def test_request_round_trip_through_the_answer():
    # Both directions: the key read from a request is the one the answer is computed from.
    key = base64.b64encode(b"\x01" * 16).decode()
    request = read_request(environ(HTTP_SEC_WEBSOCKET_KEY=key, HTTP_SEC_WEBSOCKET_PROTOCOL="b, a"))
    _, headers = parse_response(accept_response(request.key, request.subprotocols[0]))
    assert dict(headers)["Sec-WebSocket-Accept"] == accept_key(key)
    assert dict(headers)["Sec-WebSocket-Protocol"] == "b"
