"""The edit log and checkpoints: recovery, torn tails, corruption, group commit."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from shoal.dfs.editlog import EditLog, EditLogCorrupt, EditLogFailed
from shoal.dfs.namespace import (
    AddBlockOp,
    AppendOp,
    CommitBlockLengthOp,
    CompleteOp,
    CreateOp,
    DeleteOp,
    MkdirsOp,
    Namespace,
    NamespaceOp,
    RecoverLeaseOp,
    RenameOp,
    SetReplicationOp,
)
from shoal.errors import ShoalError

BLOCK = 1024
NAMES = ["/a", "/a/b", "/a/b/c", "/d", "/d/e", "/f", "/a/x", "/d/y"]


def random_op(rng: random.Random, now: float) -> NamespaceOp:
    """One op of a random kind; many are refused by the namespace and never logged."""
    path, other = rng.choice(NAMES), rng.choice(NAMES)
    client = rng.choice(["c1", "c2"])
    length = rng.choice([None, rng.randint(0, BLOCK), BLOCK])
    makers = [
        (3, lambda: MkdirsOp(path, True, now)),
        (4, lambda: CreateOp(path, client, rng.randint(1, 3), BLOCK, rng.random() < 0.3, now)),
        (6, lambda: AddBlockOp(path, client, length, now)),
        (3, lambda: CompleteOp(path, client, length, now)),
        (1, lambda: AppendOp(path, client, now)),
        (1, lambda: RenameOp(path, other, now)),
        (1, lambda: DeleteOp(path, rng.random() < 0.5, now)),
        (1, lambda: SetReplicationOp(path, rng.randint(1, 5))),
        (1, lambda: RecoverLeaseOp(path, now)),
        (1, lambda: CommitBlockLengthOp((1 << 30) + rng.randint(0, 40), rng.randint(0, BLOCK))),
    ]
    return rng.choices([m for _, m in makers], weights=[w for w, _ in makers])[0]()


class Writer:
    """A namespace whose accepted ops go to the log, as the NameNode does."""

    def __init__(self, log: EditLog, ns: Namespace, seed: int = 0) -> None:
        self.log, self.ns = log, ns
        self.rng = random.Random(seed)
        self.now = 1000.0

    def apply(self, count: int) -> list[int]:
        """Append ``count`` ops that the namespace accepts; returns their txids."""
        txids = []
        while len(txids) < count:
            self.now += 1.0
            op = random_op(self.rng, self.now)
            try:
                self.ns.apply(op)
            except ShoalError:
                continue
            txids.append(self.log.append(op))
        return txids


def open_writer(folder: Path, seed: int = 0) -> Writer:
    log, ns, _ = EditLog.open(folder)
    return Writer(log, ns, seed)


def reopen(folder: Path) -> tuple[Namespace, int]:
    log, ns, last = EditLog.open(folder)
    log.close()
    ns.validate()
    return ns, last


def segments(folder: Path) -> list[str]:
    return sorted(f.name for f in folder.iterdir() if f.name.startswith("edits_"))


def images(folder: Path) -> list[str]:
    return sorted(f.name for f in folder.iterdir() if f.name.startswith("fsimage_"))


def in_progress(folder: Path) -> Path:
    (name,) = [n for n in segments(folder) if "-" not in n]
    return folder / name


def test_empty_folder_opens_empty(tmp_path: Path) -> None:
    log, ns, last = EditLog.open(tmp_path / "meta")
    assert last == 0 and ns.to_image() == Namespace().to_image()
    log.close()
    assert reopen(tmp_path / "meta")[1] == 0


def test_round_trip_through_sync_and_reopen(tmp_path: Path) -> None:
    w = open_writer(tmp_path)
    txids = w.apply(500)
    assert txids == list(range(1, 501))
    asyncio.run(w.log.sync())
    assert not w.log.unsynced
    w.log.close()
    ns, last = reopen(tmp_path)
    assert last == 500
    assert ns.to_image() == w.ns.to_image()


def test_appends_are_not_durable_before_sync(tmp_path: Path) -> None:
    w = open_writer(tmp_path)
    w.apply(10)
    assert in_progress(tmp_path).stat().st_size == 0  # only buffered so far
    w.log.flush()
    size = in_progress(tmp_path).stat().st_size
    assert size > 0 and w.log.fsyncs == 1
    w.log.close()


def test_checkpoint_then_more_ops_then_reopen(tmp_path: Path) -> None:
    w = open_writer(tmp_path)
    w.apply(200)
    asyncio.run(w.log.sync())
    assert w.log.checkpoint(w.ns) == 200
    assert images(tmp_path) == [f"fsimage_{200:019d}"]
    assert segments(tmp_path) == [f"edits_{1:019d}-{200:019d}", f"edits_{201:019d}"]
    w.apply(150)
    w.log.flush()
    w.log.close()
    ns, last = reopen(tmp_path)
    assert last == 350
    assert ns.to_image() == w.ns.to_image()


def test_checkpoint_purges_what_no_kept_image_needs(tmp_path: Path) -> None:
    w = open_writer(tmp_path)
    for _ in range(4):
        w.apply(50)
        w.log.flush()
        w.log.checkpoint(w.ns)
    # The two newest images are kept, and the edits the older one needs to catch up.
    assert images(tmp_path) == [f"fsimage_{150:019d}", f"fsimage_{200:019d}"]
    assert segments(tmp_path) == [f"edits_{151:019d}-{200:019d}", f"edits_{201:019d}"]
    assert w.log.checkpoint(w.ns) == 200  # nothing new: no new image
    assert images(tmp_path)[-1] == f"fsimage_{200:019d}"
    w.log.close()
    ns, last = reopen(tmp_path)
    assert last == 200 and ns.to_image() == w.ns.to_image()


def test_corrupt_newest_image_falls_back_to_the_previous(tmp_path: Path) -> None:
    w = open_writer(tmp_path)
    for _ in range(2):
        w.apply(60)
        w.log.flush()
        w.log.checkpoint(w.ns)
    w.apply(30)
    w.log.flush()
    w.log.close()
    newest = tmp_path / images(tmp_path)[-1]
    raw = bytearray(newest.read_bytes())
    raw[len(raw) // 2] ^= 0x40
    newest.write_bytes(bytes(raw))
    ns, last = reopen(tmp_path)
    assert last == 150 and ns.to_image() == w.ns.to_image()


def test_crash_between_image_and_roll(tmp_path: Path) -> None:
    """The image is saved but the segment was not rolled: its records overlap the image."""
    w = open_writer(tmp_path)
    w.apply(40)
    w.log.flush()
    w.log.checkpoint(w.ns)
    w.log.close()
    (tmp_path / f"edits_{41:019d}").unlink()
    (tmp_path / f"edits_{1:019d}-{40:019d}").rename(tmp_path / f"edits_{1:019d}")
    log, ns, last = EditLog.open(tmp_path)
    assert last == 40 and ns.to_image() == w.ns.to_image()
    w2 = Writer(log, ns, seed=3)
    w2.apply(10)
    log.flush()
    log.close()
    ns2, last2 = reopen(tmp_path)
    assert last2 == 50 and ns2.to_image() == w2.ns.to_image()


def test_checkpoint_needs_a_synced_log(tmp_path: Path) -> None:
    w = open_writer(tmp_path)
    w.apply(3)
    with pytest.raises(RuntimeError):
        w.log.checkpoint(w.ns)
    w.log.close()


@pytest.mark.parametrize("cut", [1, 3, 7, 9])
def test_torn_final_record_is_dropped(tmp_path: Path, cut: int) -> None:
    w = open_writer(tmp_path)
    w.apply(99)
    w.log.flush()
    expected = w.ns.to_image()
    w.apply(1)
    w.log.flush()
    w.log.close()
    path = in_progress(tmp_path)
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size - cut)
    log, ns, last = EditLog.open(tmp_path)
    assert last == 99 and ns.to_image() == expected
    assert path.stat().st_size < size - cut  # the torn bytes are gone from the file
    # The log continues after the good records: new ops are not hidden by garbage.
    w2 = Writer(log, ns, seed=5)
    w2.apply(20)
    log.flush()
    log.close()
    ns2, last2 = reopen(tmp_path)
    assert last2 == 119 and ns2.to_image() == w2.ns.to_image()


@pytest.mark.parametrize("garbage", [b"\x00" * 13, b"\xff\xff\xff\xff", bytes(range(200))])
def test_garbage_after_the_last_record_is_dropped(tmp_path: Path, garbage: bytes) -> None:
    w = open_writer(tmp_path)
    w.apply(40)
    w.log.flush()
    w.log.close()
    with open(in_progress(tmp_path), "ab") as f:
        f.write(garbage)
    ns, last = reopen(tmp_path)
    assert last == 40 and ns.to_image() == w.ns.to_image()


def flip_byte_in_record(path: Path, index: int) -> None:
    """Flip a payload byte of the ``index``-th record of a segment."""
    raw = bytearray(path.read_bytes())
    pos = 0
    for _ in range(index):
        pos += 8 + int.from_bytes(raw[pos : pos + 4], "big")
    raw[pos + 8 + 2] ^= 0x01
    path.write_bytes(bytes(raw))


def test_corruption_in_the_middle_is_an_error(tmp_path: Path) -> None:
    w = open_writer(tmp_path)
    w.apply(50)
    w.log.flush()
    w.log.close()
    flip_byte_in_record(in_progress(tmp_path), 20)
    with pytest.raises(EditLogCorrupt, match="bad record"):
        EditLog.open(tmp_path)


def test_corrupt_length_in_the_middle_is_an_error(tmp_path: Path) -> None:
    """A damaged length that points past the end must not pass for a torn tail."""
    w = open_writer(tmp_path)
    w.apply(50)
    w.log.flush()
    w.log.close()
    path = in_progress(tmp_path)
    raw = bytearray(path.read_bytes())
    raw[0] = 0x00
    raw[1] = 0x7F  # the first record now claims ~8 MB
    path.write_bytes(bytes(raw))
    with pytest.raises(EditLogCorrupt):
        EditLog.open(tmp_path)


def test_bad_last_record_of_a_finalized_segment_is_an_error(tmp_path: Path) -> None:
    w = open_writer(tmp_path)
    w.apply(10)
    w.log.flush()
    w.log.checkpoint(w.ns)
    w.apply(10)
    w.log.flush()
    w.log.checkpoint(w.ns)
    w.log.close()
    finalized = tmp_path / f"edits_{11:019d}-{20:019d}"
    (tmp_path / f"fsimage_{20:019d}").unlink()  # force replay through that segment
    flip_byte_in_record(finalized, 9)
    with pytest.raises(EditLogCorrupt):
        EditLog.open(tmp_path)


def test_missing_segment_is_an_error(tmp_path: Path) -> None:
    w = open_writer(tmp_path)
    w.apply(10)
    w.log.flush()
    w.log.checkpoint(w.ns)
    w.log.close()
    (tmp_path / f"fsimage_{10:019d}").unlink()
    (tmp_path / f"edits_{1:019d}-{10:019d}").unlink()
    with pytest.raises(EditLogCorrupt, match="missing"):
        EditLog.open(tmp_path)


def test_op_that_does_not_replay_is_corruption(tmp_path: Path) -> None:
    log, _, _ = EditLog.open(tmp_path)
    log.append(DeleteOp("/never-created", False, 1.0))
    log.close()
    with pytest.raises(EditLogCorrupt, match="does not replay"):
        EditLog.open(tmp_path)


def test_one_process_per_folder(tmp_path: Path) -> None:
    log, _, _ = EditLog.open(tmp_path)
    with pytest.raises(EditLogFailed, match="in use"):
        EditLog.open(tmp_path)
    log.close()
    reopen(tmp_path)


def test_group_commit_coalesces_concurrent_syncs(tmp_path: Path) -> None:
    log, ns, _ = EditLog.open(tmp_path)
    durable: list[int] = []

    async def one(i: int) -> None:
        txid = log.append(MkdirsOp(f"/g/{i}", True, float(i)))
        await log.sync()
        assert log.synced_txid >= txid
        durable.append(txid)

    async def main() -> None:
        await asyncio.gather(*(one(i) for i in range(200)))

    asyncio.run(main())
    assert sorted(durable) == list(range(1, 201))
    assert 1 <= log.fsyncs <= 20, log.fsyncs
    log.close()
    ns, last = reopen(tmp_path)
    assert last == 200 and len(ns.list("/g")) == 200


def test_group_commit_with_staggered_arrivals(tmp_path: Path) -> None:
    """Callers arrive over many loop iterations while flushes run: one flush at a time,
    each taking everything appended meanwhile, so flushes <= iterations with appends."""
    log, _, _ = EditLog.open(tmp_path)
    rng = random.Random(7)
    waits = [rng.randint(0, 19) for _ in range(200)]

    async def one(i: int) -> None:
        for _ in range(waits[i]):
            await asyncio.sleep(0)
        txid = log.append(MkdirsOp(f"/g/{i}", True, float(i)))
        await log.sync()
        assert log.synced_txid >= txid

    async def main() -> None:
        await asyncio.gather(*(one(i) for i in range(200)))

    asyncio.run(main())
    assert log.fsyncs <= len(set(waits)) < 200
    log.close()
    assert reopen(tmp_path)[1] == 200


def test_cancelled_caller_does_not_lose_the_flush(tmp_path: Path) -> None:
    log, _, _ = EditLog.open(tmp_path)

    async def main() -> None:
        log.append(MkdirsOp("/x", True, 1.0))
        task = asyncio.ensure_future(log.sync())
        await asyncio.sleep(0)
        task.cancel()
        log.append(MkdirsOp("/y", True, 2.0))
        await log.sync()

    asyncio.run(main())
    assert log.synced_txid == 2
    log.close()
    ns, last = reopen(tmp_path)
    assert last == 2 and [s.path for s in ns.list("/")] == ["/x", "/y"]
