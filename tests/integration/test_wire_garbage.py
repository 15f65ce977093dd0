"""Every port of a running cluster survives hostile and broken peers.

The master's RPC port and a worker's data port are fed garbage, silence, forged
HMAC proofs, oversized and undecodable frames and unknown calls. Each time the
server must drop the peer (or answer with an error) without crashing, hanging or
leaking the connection; afterwards the cluster still serves a normal round trip.
"""

from __future__ import annotations

import io
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import msgspec
import psutil
import pytest

import shoal
from shoal.core import wire
from shoal.core.node import read_secret
from shoal.core.sockio import FramedSocket
from shoal.core.wire import Empty
from shoal.dfs import protocol as p
from shoal.dfs.namespace import FileStatus
from shoal.errors import AuthenticationError, ConnectionLost, ShoalError
from tests.conftest import wait_until

MiB = 1024 * 1024
CLOSE_TIMEOUT_S = 5.0
PORTS = ["master", "data"]


# --- helpers -------------------------------------------------------------------------------------
def address(folder: Path, port: str) -> tuple[str, int]:
    if port == "master":
        a = json.loads((folder / "master" / "address.json").read_text())
        return a["host"], a["port"]
    a = json.loads((folder / "workers" / "w1" / "address.json").read_text())
    return a["host"], a["data_port"]


def raw_connect(folder: Path, port: str) -> socket.socket:
    sock = socket.create_connection(address(folder, port), timeout=CLOSE_TIMEOUT_S)
    sock.settimeout(CLOSE_TIMEOUT_S)
    return sock


def auth_connect(folder: Path, port: str) -> FramedSocket:
    conn = FramedSocket.connect(
        address(folder, port), read_secret(folder / "secret"), timeout_s=CLOSE_TIMEOUT_S, frame_bytes_max=64 * MiB
    )
    conn.settimeout(CLOSE_TIMEOUT_S)
    return conn


def send_quietly(sock: socket.socket, data: bytes) -> None:
    """Send, ignoring a server that already hung up (it may close mid-stream)."""
    try:
        sock.sendall(data)
    except (BrokenPipeError, ConnectionResetError):
        pass


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes; fails if it keeps the connection open."""
    got = bytearray()
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return bytes(got)
            got += chunk
    except ConnectionResetError:
        return bytes(got)
    except (socket.timeout, TimeoutError):
        pytest.fail(f"server kept the connection open for {CLOSE_TIMEOUT_S}s (received {bytes(got[:80])!r})")


def read_hello(sock: socket.socket) -> bytes:
    hello = bytearray()
    while len(hello) < wire.SERVER_HELLO_BYTES:
        chunk = sock.recv(wire.SERVER_HELLO_BYTES - len(hello))
        assert chunk, "server closed before its hello"
        hello += chunk
    assert hello.startswith(wire.MAGIC)
    return bytes(hello[len(wire.MAGIC) :])


def call(conn: FramedSocket, req_id: int, method: str, body: bytes) -> wire.Response:
    """Send one raw RPC envelope and read one reply."""
    conn.sendall(wire.frame(wire.encode(wire.Request(req_id, method, 5.0, msgspec.Raw(body)))))
    return wire.decode_response(conn.recv_frame())


def master_log_errors(folder: Path) -> list[str]:
    return _log_errors(folder / "master" / "master.log")


def worker_log_errors(folder: Path) -> list[str]:
    return [line for w in sorted((folder / "workers").iterdir()) for line in _log_errors(w / "worker.log")]


def _log_errors(path: Path) -> list[str]:
    """Log lines at ERROR or above, or with a traceback: a handler crashed."""
    bad = []
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("level") in ("ERROR", "CRITICAL") or "exc" in entry:
            bad.append(line)
    return bad


@pytest.fixture(scope="module")
def daemon_pids(cluster) -> dict[str, int]:
    return {e["id"]: e["pid"] for e in cluster.local.processes}


@pytest.fixture(scope="module")
def replica(cluster) -> tuple[p.LocatedBlock, bytes]:
    """A block every worker holds (replication 4 on 4 workers), for reads on w1's data port."""
    data = random.Random(3).randbytes(300_000)
    with cluster.fs.open("/wire/replica", "wb", replication=4) as f:
        f.write(data)
    located = cluster.fs.blocks("/wire/replica").blocks[0]
    assert "w1" in {loc.node_id for loc in located.locations}
    return located, data


# --- before authentication ----------------------------------------------------------------------
@pytest.mark.parametrize("port", PORTS)
@pytest.mark.parametrize("size", [64, 4096, 1 * MiB])
def test_random_garbage_is_dropped(cluster, port, size):
    sock = raw_connect(cluster.folder, port)
    with sock:
        send_quietly(sock, random.Random(size).randbytes(size))
        got = read_until_closed(sock)
    # At most the server's hello: no proof of the secret, no reply frame.
    assert len(got) <= wire.SERVER_HELLO_BYTES
    assert wire.MAGIC.startswith(got[: len(wire.MAGIC)])


@pytest.mark.parametrize("port", PORTS)
def test_frames_before_the_handshake_are_not_read(cluster, port):
    """A well-formed request sent without authenticating is treated as a (bad) proof."""
    request = wire.encode_request(1, p.STAT, p.PathReq("/"), 5.0)
    sock = raw_connect(cluster.folder, port)
    with sock:
        send_quietly(sock, request * 4)
        got = read_until_closed(sock)
    assert len(got) <= wire.SERVER_HELLO_BYTES


@pytest.mark.parametrize("port", PORTS)
def test_connect_and_close_silently(cluster, port):
    for _ in range(30):
        sock = raw_connect(cluster.folder, port)
        sock.close()
    for _ in range(5):  # half a proof, then gone
        sock = raw_connect(cluster.folder, port)
        read_hello(sock)
        send_quietly(sock, b"\x00" * 10)
        sock.close()
    # The worker's transfer threads all ended (they are counted in its heartbeats).
    wait_until(lambda: all(n.xceivers == 0 for n in cluster.fs.report().nodes), timeout_s=10)


@pytest.mark.parametrize("port", PORTS)
def test_wrong_hmac_is_dropped(cluster, port):
    sock = raw_connect(cluster.folder, port)
    with sock:
        read_hello(sock)
        send_quietly(sock, random.Random(1).randbytes(wire.CLIENT_PROOF_BYTES))
        assert read_until_closed(sock) == b""  # no server proof


@pytest.mark.parametrize("port", PORTS)
def test_proof_with_the_wrong_secret_is_dropped(cluster, port):
    sock = raw_connect(cluster.folder, port)
    with sock:
        server_nonce = read_hello(sock)
        client_nonce = os.urandom(wire.NONCE_BYTES)
        proof = wire.client_proof(b"not-the-cluster-secret", server_nonce, client_nonce)
        send_quietly(sock, client_nonce + proof)
        assert read_until_closed(sock) == b""


@pytest.mark.parametrize("port", PORTS)
def test_replayed_proof_is_dropped(cluster, port):
    """A proof captured from one connection is useless on the next (fresh server nonce)."""
    secret = read_secret(cluster.folder / "secret")
    first = raw_connect(cluster.folder, port)
    with first:
        nonce1 = read_hello(first)
        client_nonce = os.urandom(wire.NONCE_BYTES)
        good = client_nonce + wire.client_proof(secret, nonce1, client_nonce)
        first.sendall(good)
        assert len(first.recv(wire.MAC_BYTES, socket.MSG_WAITALL)) == wire.MAC_BYTES  # accepted here
    second = raw_connect(cluster.folder, port)
    with second:
        nonce2 = read_hello(second)
        assert nonce2 != nonce1
        send_quietly(second, good)
        assert read_until_closed(second) == b""


def test_client_with_the_wrong_secret_cannot_connect(cluster):
    with pytest.raises((AuthenticationError, ConnectionLost)):
        FramedSocket.connect(address(cluster.folder, "master"), b"wrong", timeout_s=5, frame_bytes_max=MiB)
    with pytest.raises(ShoalError):
        shoal.connect(cluster.folder, secret=b"wrong")


def test_client_refuses_a_server_that_cannot_prove_the_secret():
    """Mutual authentication: a fake server that answers junk is rejected by the client."""
    listener = socket.create_server(("127.0.0.1", 0))
    with listener:
        port = listener.getsockname()[1]

        def fake_server() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.sendall(wire.MAGIC + os.urandom(wire.NONCE_BYTES))
                conn.recv(wire.CLIENT_PROOF_BYTES, socket.MSG_WAITALL)
                conn.sendall(os.urandom(wire.MAC_BYTES))
                conn.recv(1)

        t = threading.Thread(target=fake_server, daemon=True)
        t.start()
        with pytest.raises(AuthenticationError):
            FramedSocket.connect(("127.0.0.1", port), b"secret", timeout_s=5, frame_bytes_max=MiB)
        t.join(5)


# --- after authentication: the master's RPC port -------------------------------------------------
@pytest.mark.parametrize("header", [b"\xff\xff\xff\xff", (64 * MiB + 1).to_bytes(4, "big")], ids=["4GiB", "limit+1"])
def test_master_oversized_frame_gets_error_then_close(cluster, header):
    conn = auth_connect(cluster.folder, "master")
    try:
        conn.sendall(header)
        resp = wire.decode_response(conn.recv_frame())
        assert resp.id == 0
        assert resp.error_code == "FrameTooLarge"
        assert read_until_closed(conn.sock) == b""
    finally:
        conn.close()


@pytest.mark.parametrize(
    "payload",
    [b"", b"\xc1" * 16, random.Random(5).randbytes(200), wire.encode({"id": 1, "method": "dfs.stat"}), wire.encode([1, 2])],
    ids=["empty", "reserved-byte", "random", "map-not-array", "short-array"],
)
def test_master_undecodable_frame_gets_error_then_close(cluster, payload):
    conn = auth_connect(cluster.folder, "master")
    try:
        conn.sendall(wire.frame(payload))
        resp = wire.decode_response(conn.recv_frame())
        assert (resp.id, resp.error_code) == (0, "ProtocolError")
        assert read_until_closed(conn.sock) == b""
    finally:
        conn.close()


def test_master_truncated_frame_then_close(cluster):
    """A peer that dies mid-frame is cleaned up; the next connection works."""
    conn = auth_connect(cluster.folder, "master")
    conn.sendall((1000).to_bytes(4, "big") + b"x" * 10)
    conn.close()
    conn = auth_connect(cluster.folder, "master")
    try:
        assert call(conn, 1, p.STAT.name, wire.encode(p.PathReq("/"))).error_code is None
    finally:
        conn.close()


def test_master_unknown_method_keeps_the_connection(cluster):
    conn = auth_connect(cluster.folder, "master")
    try:
        resp = call(conn, 7, "dfs.no_such_method", wire.encode(Empty()))
        assert (resp.id, resp.error_code) == (7, "UnknownMethod")
        assert "dfs.no_such_method" in resp.error_message
        # The same connection still serves real calls.
        resp = call(conn, 8, p.STAT.name, wire.encode(p.PathReq("/")))
        assert (resp.id, resp.error_code) == (8, None)
        status = msgspec.msgpack.decode(resp.body, type=FileStatus)
        assert (status.path, status.kind) == ("/", "directory")
    finally:
        conn.close()


@pytest.mark.parametrize(
    "body",
    [wire.encode(b"\xc1garbage"), wire.encode({"path": 42}), wire.encode({}), wire.encode("just a string")],
    ids=["bytes", "wrong-type", "missing-field", "not-a-struct"],
)
def test_master_bad_request_body_keeps_the_connection(cluster, body):
    conn = auth_connect(cluster.folder, "master")
    try:
        resp = call(conn, 3, p.STAT.name, body)
        assert resp.id == 3
        assert resp.error_code in ("ProtocolError", "BadRequest"), resp
        resp = call(conn, 4, p.STAT.name, wire.encode(p.PathReq("/")))
        assert (resp.id, resp.error_code) == (4, None)
    finally:
        conn.close()


def test_master_replies_before_closing_on_half_close(cluster):
    """Requests followed by shutdown(SHUT_WR) still get their replies (10 tries, 20 calls each)."""
    replies = []
    for _ in range(10):
        conn = auth_connect(cluster.folder, "master")
        try:
            conn.sendall(b"".join(wire.encode_request(i, p.STAT, p.PathReq("/"), 5.0) for i in range(1, 21)))
            conn.sock.shutdown(socket.SHUT_WR)
            got = set()
            try:
                while len(got) < 20:
                    resp = wire.decode_response(conn.recv_frame())
                    assert resp.error_code is None, resp
                    got.add(resp.id)
            except ConnectionLost:
                pass
            replies.append(len(got))
        finally:
            conn.close()
    assert replies == [20] * 10


# --- after authentication: a worker's data port --------------------------------------------------
@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (b"\xff\xff\xff\xff", "FrameTooLarge"),
        ((64 * MiB + 1).to_bytes(4, "big"), "FrameTooLarge"),
        (wire.frame(b"\xc1" * 16), "ProtocolError"),
        (wire.frame(b""), "ProtocolError"),
        (wire.frame(wire.encode({"type": "format-disk", "block_id": 1})), "ProtocolError"),
        (
            wire.frame(wire.encode({"type": "read", "block_id": "../../etc/passwd", "gen_stamp": 1, "offset": 0, "length": 1})),
            "ProtocolError",
        ),
    ],
    ids=["4GiB", "limit+1", "reserved-byte", "empty", "unknown-op", "path-as-block-id"],
)
def test_data_port_bad_frame_gets_error_then_close(cluster, frame, code):
    conn = auth_connect(cluster.folder, "data")
    try:
        conn.sendall(frame)
        got = read_until_closed(conn.sock)
    finally:
        conn.close()
    # One error frame (the RPC reply envelope, id 0), then the connection is closed.
    assert len(got) >= 4, got
    n = int.from_bytes(got[:4], "big")
    assert len(got) == 4 + n, got
    resp = wire.decode_response(got[4:])
    assert (resp.id, resp.error_code) == (0, code)


def test_data_port_malformed_op_is_not_a_crash(cluster):
    """An undecodable op must end as a ProtocolError, not an unexpected exception."""
    log = cluster.folder / "workers" / "w1" / "worker.log"
    before = len(_log_errors(log))
    for payload in (b"\xc1" * 16, b"", wire.encode({"type": "format-disk"})):
        conn = auth_connect(cluster.folder, "data")
        try:
            conn.sendall(wire.frame(payload))
            read_until_closed(conn.sock)
        finally:
            conn.close()
    assert _log_errors(log)[before:] == []


def test_data_port_bad_read_keeps_the_connection(cluster, replica):
    located, data = replica
    block = located.block
    conn = auth_connect(cluster.folder, "data")
    try:
        for op, code in [
            (p.ReadBlockOp(block.block_id + 10_000_000, 1, 0, 1), "ReplicaNotFound"),
            (p.ReadBlockOp(-1, 1, 0, 1), "BadRequest"),
            (p.ReadBlockOp(block.block_id, block.gen_stamp, 0, block.length + 1), "BadRequest"),
            (p.ReadBlockOp(block.block_id, block.gen_stamp, -5, 10), "BadRequest"),
        ]:
            conn.send_msg(op)
            reply = conn.recv_msg(p.ReadBlockReply)
            assert (reply.ok, reply.error_code) == (False, code), (op, reply)
        # Then a good read on the same connection returns the right bytes.
        conn.send_msg(p.ReadBlockOp(block.block_id, block.gen_stamp, 1000, 5000))
        reply = conn.recv_msg(p.ReadBlockReply)
        assert reply.ok
        assert reply.chunk_offset <= 1000 and reply.chunk_offset + reply.data_len >= 6000
        got = conn.recv_exactly(reply.data_len)
        assert got == data[reply.chunk_offset : reply.chunk_offset + reply.data_len]
    finally:
        conn.close()


def test_data_port_bad_write_is_refused(cluster):
    conn = auth_connect(cluster.folder, "data")
    try:
        conn.send_msg(p.WriteBlockOp(-3, 1, [], 65536, "intruder"))
        reply = conn.recv_msg(p.PipelineReady)
        assert not reply.ok
        assert "invalid block id" in reply.error
    finally:
        conn.close()


# --- the cluster afterwards ----------------------------------------------------------------------
def test_cluster_still_healthy_afterwards(cluster, daemon_pids, tmp_path):
    fs = cluster.fs
    data = random.Random(99).randbytes(3 * MiB + 5)
    src, dst = tmp_path / "in", tmp_path / "out"
    src.write_bytes(data)
    fs.put(src, "/wire/after")
    assert fs.get("/wire/after", dst) == len(data)
    assert dst.read_bytes() == data
    report = fs.report()
    assert [(n.node_id, n.state) for n in report.nodes] == [(w, "live") for w in ("w1", "w2", "w3", "w4")]
    # Same processes as at the start: nothing crashed and restarted.
    for node_id, pid in daemon_pids.items():
        assert psutil.pid_exists(pid), node_id
    assert {n.node_id: n.pid for n in report.nodes} == {k: v for k, v in daemon_pids.items() if k != "master"}
    # No handler crashed on the garbage (they log exceptions at ERROR with a traceback).
    assert master_log_errors(cluster.folder) == []
    assert worker_log_errors(cluster.folder) == []


# --- a peer that says nothing at all --------------------------------------------------------------
def test_silent_peers_are_dropped_after_the_auth_timeout(make_cluster):
    rc = make_cluster(workers=1, racks=1, overrides={"rpc.auth_timeout_s": "1"})
    for port in PORTS:
        for partial in (b"", b"\x00" * 10):  # nothing, or half a proof, then silence
            sock = raw_connect(rc.folder, port)
            with sock:
                started = time.monotonic()
                read_hello(sock)
                sock.sendall(partial)
                assert read_until_closed(sock) == b""
                assert time.monotonic() - started < CLOSE_TIMEOUT_S
    assert rc.fs.report().nodes[0].state == "live"
    rc.fs.put(io.BytesIO(b"still here"), "/ok")
    assert rc.fs.cat("/ok") == b"still here"


# --- the client side -------------------------------------------------------------------------------
STALE_READER_PROBE = r"""
import json, os, sys, threading, time
import shoal
from shoal.dfs import protocol as p

folder = sys.argv[1]
first = shoal.connect(folder)
first.fs.stat("/")
first.close()
deadline = time.monotonic() + 2
while time.monotonic() < deadline and any(t.name == "rpc-reader" for t in threading.enumerate()):
    time.sleep(0.02)
leaked = sum(1 for t in threading.enumerate() if t.name == "rpc-reader")

second = shoal.connect(folder)  # takes the file descriptor number the first one freed
second.fs.stat("/")
errors = []
for _ in range(5):
    pid = os.posix_spawn("/bin/true", ["true"], dict(os.environ))  # any child process
    os.waitpid(pid, 0)
    try:
        second.fs.rpc.call(p.STAT, p.PathReq("/"), timeout_s=2)
    except Exception as exc:
        errors.append(repr(exc))
print(json.dumps({"leaked_readers": leaked, "errors": errors}))
"""


def test_closed_client_does_not_steal_from_a_new_connection(cluster):
    """A closed client's reader thread ends; it must not keep reading a reused fd number."""
    out = subprocess.run(
        [sys.executable, "-c", STALE_READER_PROBE, str(cluster.folder)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"leaked_readers": 0, "errors": []}
