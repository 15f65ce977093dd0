"""HDFS append: new bytes join the last block (or new blocks) under the writer's lease."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from shoal.errors import LeaseHeld

MiB = 1024 * 1024


def test_appends_of_every_alignment_round_trip(cluster) -> None:
    fs = cluster.fs
    expect = b""
    # Sizes chosen to hit: empty file, partial chunk, chunk boundary, block boundary, many blocks.
    for size in [0, 1, 70000, 65536, MiB - 70001, 5, 3 * MiB + 17, 0, 123]:
        chunk = os.urandom(size)
        with fs.open("/append/a.bin", "ab") as f:
            f.write(chunk)
        expect += chunk
        assert fs.stat("/append/a.bin").length == len(expect)
        assert fs.cat("/append/a.bin") == expect
    blocks = fs.blocks("/append/a.bin").blocks
    assert [b.block.length for b in blocks[:-1]] == [MiB] * (len(blocks) - 1)
    assert fs.fsck("/append").healthy


def test_append_needs_the_lease(cluster) -> None:
    fs = cluster.fs
    with fs.open("/append/held.bin", "wb") as f:
        f.write(b"abc")
    writer = fs.open("/append/held.bin", "ab")
    try:
        other = cluster.connect()
        with pytest.raises(LeaseHeld):
            other.fs.open("/append/held.bin", "ab")
        other.close()
        writer.write(b"def")
    finally:
        writer.close()
    assert fs.cat("/append/held.bin") == b"abcdef"


def test_readers_see_only_acknowledged_bytes_during_append(cluster) -> None:
    fs = cluster.fs
    base = os.urandom(100_000)
    with fs.open("/append/live.bin", "wb") as f:
        f.write(base)
    with fs.open("/append/live.bin", "ab") as f:
        f.write(os.urandom(50_000))
        # The appended bytes are not visible until the writer closes.
        assert fs.cat("/append/live.bin") == base
    assert fs.stat("/append/live.bin").length == 150_000


def test_cli_append_to_file(cluster, tmp_path) -> None:
    local = tmp_path / "part.txt"
    local.write_bytes(b"line one\n")
    env = {**os.environ, "SHOAL_CLUSTER": str(cluster.folder)}
    for _ in range(2):
        subprocess.run(
            [sys.executable, "-m", "shoal.cli.main", "fs", "appendToFile", str(local), "/append/cli.txt"],
            check=True, env=env,
        )
    assert cluster.fs.cat("/append/cli.txt") == b"line one\nline one\n"
