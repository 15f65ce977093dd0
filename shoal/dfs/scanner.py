"""The block scanner: re-verifies every stored replica at a bounded rate.

As HDFS's VolumeScanner: each replica is read and checked against its stored
CRC32Cs once per ``dfs.scan_period_s``, never faster than
``dfs.scanner_bytes_per_s``, so disk rot is found even in data nobody reads.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from shoal.core.config import DfsConfig
from shoal.dfs.blockstore import BlockStore
from shoal.dfs.checksum import verify_chunks
from shoal.errors import ChecksumError, ReplicaNotFound

log = logging.getLogger("dfs.scanner")

SCAN_READ_BYTES = 1024 * 1024


class BlockScanner:
    """Walks the replicas of one store; reports the corrupt ones."""

    def __init__(
        self,
        store: BlockStore,
        config: DfsConfig,
        report_bad: Callable[[int, str], None],
        stop: threading.Event,
    ) -> None:
        self.store = store
        self.config = config
        self.report_bad = report_bad
        self.stop = stop
        self.last_scanned: dict[int, float] = {}
        self.bytes_scanned = 0

    def run(self) -> None:
        while not self.stop.is_set():
            due = self._next_due(time.monotonic())
            if due is None:
                self.stop.wait(min(self.config.scan_period_s, 5.0))
                continue
            self.scan(due)

    def _next_due(self, now: float) -> int | None:
        """The replica verified longest ago, if its period has passed."""
        oldest: tuple[float, int] | None = None
        for r in self.store.report():
            last = self.last_scanned.get(r.block_id, float("-inf"))
            if now - last >= self.config.scan_period_s and (oldest is None or last < oldest[0]):
                oldest = (last, r.block_id)
        return None if oldest is None else oldest[1]

    def scan(self, block_id: int) -> bool:
        """Verify one replica; returns False (and reports it) if it is corrupt."""
        try:
            replica = self.store.get(block_id)
        except ReplicaNotFound:
            return True
        bpc = replica.bytes_per_checksum
        step = max(bpc, SCAN_READ_BYTES - SCAN_READ_BYTES % bpc)
        buf = bytearray(step)
        view = memoryview(buf)
        offset = 0
        try:
            with open(replica.data_path, "rb") as f:
                while offset < replica.length:
                    started = time.monotonic()
                    n = f.readinto(buf)
                    if n == 0:
                        raise ChecksumError(f"replica is {offset} bytes, expected {replica.length}")
                    sums = self.store.read_checksums(replica, offset // bpc, -(-n // bpc))
                    verify_chunks(view[:n], sums, bpc, f"block {block_id}")
                    offset += n
                    self.bytes_scanned += n
                    self._throttle(n, time.monotonic() - started)
        except FileNotFoundError:
            return True  # deleted while being scanned
        except ChecksumError as exc:
            self.last_scanned[block_id] = time.monotonic()
            self.report_bad(block_id, f"block scanner: {exc}")
            return False
        self.last_scanned[block_id] = time.monotonic()
        return True

    def _throttle(self, n: int, spent_s: float) -> None:
        """Sleep so the scan rate stays under ``scanner_bytes_per_s`` (a bound, not a sync)."""
        budget_s = n / max(1, self.config.scanner_bytes_per_s)
        if budget_s > spent_s:
            self.stop.wait(budget_s - spent_s)
