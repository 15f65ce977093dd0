"""The pure wire codec: frames, envelopes, the HMAC challenge."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.core import wire
from shoal.dfs import protocol as p
from shoal.errors import (
    AuthenticationError,
    FileNotFound,
    FrameTooLarge,
    LeaseHeld,
    ProtocolError,
    RemoteError,
    error_from_code,
)


def test_request_round_trip() -> None:
    framed = wire.encode_request(7, p.MKDIRS, p.MkdirsReq("/a/b", True), 2.5)
    n = wire.frame_length(framed[:4], 1 << 20)
    req = wire.decode_request(framed[4 : 4 + n])
    assert (req.id, req.method, req.timeout_s) == (7, "dfs.mkdirs", 2.5)
    assert p.MKDIRS.decode_request(req.body) == p.MkdirsReq("/a/b", True)


def test_error_response_carries_the_class() -> None:
    framed = wire.encode_response(3, None, LeaseHeld("held by c1"))
    resp = wire.decode_response(framed[4:])
    assert resp.error_code == "LeaseHeld"
    exc = error_from_code(resp.error_code, resp.error_message)
    assert isinstance(exc, LeaseHeld) and "held by c1" in str(exc)


def test_unknown_error_code_is_remote_error() -> None:
    assert isinstance(error_from_code("ZeroDivisionError", "x"), RemoteError)
    assert isinstance(error_from_code("FileNotFound", "x"), FileNotFoundError)
    assert isinstance(error_from_code("FileNotFound", "x"), FileNotFound)


def test_frame_limit() -> None:
    with pytest.raises(FrameTooLarge):
        wire.frame_length(b"\xff\xff\xff\xff", 64 * 1024 * 1024)
    assert wire.frame_length((1000).to_bytes(4, "big"), 1000) == 1000


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_garbage_never_decodes_to_anything_but_protocol_error(data: bytes) -> None:
    for decode in (wire.decode_request, wire.decode_response, p.CREATE.decode_request):
        try:
            decode(data)
        except ProtocolError:
            pass


def test_malformed_body_is_protocol_error() -> None:
    raw = msgspec.msgpack.encode({"path": 5})
    with pytest.raises(ProtocolError):
        p.MKDIRS.decode_request(raw)


def test_hmac_challenge() -> None:
    secret, other = b"s3cret", b"other"
    sn, cn = b"a" * 32, b"b" * 32
    proof = wire.client_proof(secret, sn, cn)
    wire.verify(wire.client_proof(secret, sn, cn), proof, "client")
    with pytest.raises(AuthenticationError):
        wire.verify(wire.client_proof(other, sn, cn), proof, "client")
    # The server's proof differs from the client's: a reflected proof does not pass.
    assert wire.server_proof(secret, sn, cn) != proof
    assert wire.check_server_hello(wire.MAGIC + sn) == sn
    with pytest.raises(AuthenticationError):
        wire.check_server_hello(b"HTTP/1.1 200 OK\r\n" + b"x" * 21)
