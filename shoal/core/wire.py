"""The wire format shared by every shoal connection (pure: no sockets here).

A connection starts with a mutual HMAC challenge over the cluster secret; only then
is any frame read. A frame is a 4-byte big-endian length followed by that many bytes
of MessagePack. RPC frames carry a typed envelope (:class:`Request` /
:class:`Response`) whose body is the method's own msgspec struct, encoded once.
Bulk data (block bytes) follows a header frame as raw bytes, never inside a frame.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass
from typing import Generic, TypeVar

import msgspec

from shoal.errors import AuthenticationError, FrameTooLarge, ProtocolError

MAGIC = b"SHOAL\x01"
NONCE_BYTES = 32
MAC_BYTES = 32
LENGTH = struct.Struct(">I")
SERVER_HELLO_BYTES = len(MAGIC) + NONCE_BYTES
CLIENT_PROOF_BYTES = NONCE_BYTES + MAC_BYTES


def client_proof(secret: bytes, server_nonce: bytes, client_nonce: bytes) -> bytes:
    """What the connecting side sends to prove it knows the secret."""
    return hmac.new(secret, b"C" + server_nonce + client_nonce, hashlib.sha256).digest()


def server_proof(secret: bytes, server_nonce: bytes, client_nonce: bytes) -> bytes:
    """What the accepting side answers, so the client knows it reached a real node."""
    return hmac.new(secret, b"S" + client_nonce + server_nonce, hashlib.sha256).digest()


def check_server_hello(hello: bytes) -> bytes:
    """Return the server nonce from its hello, or raise if it is not a shoal node."""
    if len(hello) != SERVER_HELLO_BYTES or not hello.startswith(MAGIC):
        raise AuthenticationError("peer is not a shoal node (bad hello)")
    return hello[len(MAGIC) :]


def verify(expected: bytes, got: bytes, who: str) -> None:
    if not hmac.compare_digest(expected, got):
        raise AuthenticationError(f"{who} failed the cluster-secret challenge")


def frame_length(header: bytes, frame_bytes_max: int) -> int:
    """Decode a 4-byte length prefix, enforcing the size limit."""
    (n,) = LENGTH.unpack(header)
    if n > frame_bytes_max:
        raise FrameTooLarge(f"frame of {n} bytes exceeds the limit of {frame_bytes_max} bytes")
    return n


def frame(payload: bytes) -> bytes:
    return LENGTH.pack(len(payload)) + payload


class Request(msgspec.Struct, array_like=True, frozen=True):
    """An RPC call: ``timeout_s`` is relative so clocks need not agree."""

    id: int
    method: str
    timeout_s: float
    body: msgspec.Raw


class Response(msgspec.Struct, array_like=True, frozen=True):
    """An RPC reply: an error (``error_code`` names a ``shoal.errors`` class) or a body."""

    id: int
    error_code: str | None
    error_message: str
    body: msgspec.Raw


ReqT = TypeVar("ReqT", bound=msgspec.Struct)
RespT = TypeVar("RespT", bound=msgspec.Struct)


@dataclass(frozen=True)
class Method(Generic[ReqT, RespT]):
    """A named call with its request and reply types, shared by client and server."""

    name: str
    request: type[ReqT]
    response: type[RespT]

    def __post_init__(self) -> None:
        object.__setattr__(self, "_req_dec", msgspec.msgpack.Decoder(self.request))
        object.__setattr__(self, "_resp_dec", msgspec.msgpack.Decoder(self.response))

    def decode_request(self, raw: bytes) -> ReqT:
        try:
            return self._req_dec.decode(raw)  # type: ignore[attr-defined]
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            raise ProtocolError(f"malformed {self.name} request: {exc}") from None

    def decode_response(self, raw: bytes) -> RespT:
        try:
            return self._resp_dec.decode(raw)  # type: ignore[attr-defined]
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            raise ProtocolError(f"malformed {self.name} reply: {exc}") from None


class Empty(msgspec.Struct, frozen=True):
    """A request or reply with no fields."""


_encoder = msgspec.msgpack.Encoder()
_request_decoder = msgspec.msgpack.Decoder(Request)
_response_decoder = msgspec.msgpack.Decoder(Response)


def encode(obj: object) -> bytes:
    return _encoder.encode(obj)


def encode_request(req_id: int, method: Method, body: msgspec.Struct, timeout_s: float) -> bytes:
    return frame(_encoder.encode(Request(req_id, method.name, timeout_s, msgspec.Raw(_encoder.encode(body)))))


def encode_response(req_id: int, body: msgspec.Struct | None, error: BaseException | None = None) -> bytes:
    if error is not None:
        code = getattr(error, "code", None) or "RemoteError"
        msg = str(error) if code != "RemoteError" else f"{type(error).__name__}: {error}"
        resp = Response(req_id, code, msg, msgspec.Raw(b"\xc0"))
    else:
        resp = Response(req_id, None, "", msgspec.Raw(_encoder.encode(body)))
    return frame(_encoder.encode(resp))


def decode_request(payload: bytes) -> Request:
    try:
        return _request_decoder.decode(payload)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"malformed request frame: {exc}") from None


def decode_response(payload: bytes) -> Response:
    try:
        return _response_decoder.decode(payload)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"malformed reply frame: {exc}") from None
