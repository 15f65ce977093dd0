"""Replica files on disk: checksums, visibility on finalize, restart scan, id validation."""

from __future__ import annotations

import os

import pytest

from shoal.dfs.blockstore import BlockStore, check_block_id
from shoal.dfs.checksum import chunk_checksums, verify_chunks
from shoal.errors import BadRequest, ChecksumError, ReplicaNotFound

BPC = 4096


def write_replica(store: BlockStore, block_id: int, data: bytes) -> None:
    w = store.create(block_id, 1001, BPC)
    for off in range(0, len(data), 3 * BPC):
        piece = memoryview(data)[off : off + 3 * BPC]
        w.write(off, piece, chunk_checksums(piece, BPC))
    w.finalize()


def test_replica_visible_only_after_finalize(tmp_path) -> None:
    store = BlockStore(tmp_path)
    data = os.urandom(5 * BPC + 17)
    w = store.create(42, 1001, BPC)
    w.write(0, memoryview(data), chunk_checksums(data, BPC))
    with pytest.raises(ReplicaNotFound):
        store.get(42)
    report = w.finalize()
    assert (report.block_id, report.length) == (42, len(data))
    replica = store.get(42)
    assert replica.data_path.read_bytes() == data
    sums = store.read_checksums(replica, 0, 6)
    verify_chunks(data, sums, BPC, "test")


def test_restart_rescans_finalized_and_drops_partial(tmp_path) -> None:
    store = BlockStore(tmp_path)
    data = os.urandom(2 * BPC)
    write_replica(store, 7, data)
    partial = store.create(8, 1001, BPC)
    partial.write(0, memoryview(data), chunk_checksums(data, BPC))  # never finalized
    again = BlockStore(tmp_path)
    assert [r.block_id for r in again.report()] == [7]
    assert again.get(7).length == len(data)
    assert not any(again.rbw.iterdir())


def test_checksum_detects_flipped_byte() -> None:
    data = bytearray(os.urandom(3 * BPC))
    sums = chunk_checksums(data, BPC)
    data[BPC + 5] ^= 0xFF
    with pytest.raises(ChecksumError, match="chunk 1"):
        verify_chunks(data, sums, BPC, "blk")


def test_delete(tmp_path) -> None:
    store = BlockStore(tmp_path)
    write_replica(store, 9, b"x" * 100)
    path = store.get(9).data_path
    assert store.delete(9) is True
    assert not path.exists()
    assert store.delete(9) is False


@pytest.mark.parametrize("bad", [-1, 2**63, "1/../../etc", 1.5, True])
def test_block_ids_are_validated(bad) -> None:
    with pytest.raises(BadRequest):
        check_block_id(bad)


def test_packets_must_arrive_in_order(tmp_path) -> None:
    store = BlockStore(tmp_path)
    w = store.create(11, 1, BPC)
    with pytest.raises(BadRequest):
        w.write(BPC, memoryview(b"x" * BPC), chunk_checksums(b"x" * BPC, BPC))
    w.abort()
