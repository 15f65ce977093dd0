"""Lease timing for the DFS single-writer rule (pure; the clock is an argument).

The :class:`~shoal.dfs.namespace.Namespace` records WHICH client holds the lease on
each open file (that is durable state, persisted through the edit log). This module
records only WHEN each client last renewed, which is soft state: it is not logged,
and after a master restart every holder starts with a fresh lease, as in HDFS.

How the NameNode service is meant to use the two together (HDFS ``LeaseManager``):

* ``create``, ``append`` and ``add_block`` (and the client's periodic ``renew_lease``
  call) run ``leases.renew(client, now)`` once the op has been applied.
* When a client's ``create(overwrite)``/``append`` hits ``LeaseHeld`` and
  ``leases.holder_expired(holder, now, soft_limit_s)`` is true, the service first
  recovers the file (block recovery on the workers, ``CommitBlockLengthOp`` for
  the lengths they agree on, then ``RecoverLeaseOp``) and retries the op.
* A master timer calls ``leases.expired_clients(now, hard_limit_s)``; for each such
  client it recovers every file of ``namespace.files_leased_by(client)`` and then
  calls ``leases.forget(client)``.
* At start-up (after loading the image and replaying the log) the service calls
  ``leases.renew(client, now)`` for every holder in ``namespace.under_construction()``.
* When a client no longer holds any file (``files_leased_by`` is empty) the service
  may ``forget`` it; ``renew`` of a client that holds nothing is harmless.
"""

from __future__ import annotations

import math

from shoal.errors import BadRequest

# HDFS defaults (HdfsConstants.LEASE_SOFTLIMIT_PERIOD / LEASE_HARDLIMIT_PERIOD).
LEASE_SOFT_LIMIT_S = 60.0
LEASE_HARD_LIMIT_S = 3600.0


class LeaseManager:
    """Last-renewal time per client; answers "has this writer gone quiet?"."""

    def __init__(self) -> None:
        self._renewed_at: dict[str, float] = {}

    def renew(self, client: str, now: float) -> None:
        """Record that ``client`` showed signs of life at ``now`` (never moves back)."""
        if not client:
            raise BadRequest("lease client name must not be empty")
        if not math.isfinite(now):
            raise BadRequest(f"lease renewal time must be finite, got {now!r}")
        previous = self._renewed_at.get(client)
        self._renewed_at[client] = now if previous is None else max(previous, now)

    def forget(self, client: str) -> None:
        """Drop the client's record (after its files were recovered or closed)."""
        self._renewed_at.pop(client, None)

    def last_renewal(self, client: str) -> float | None:
        return self._renewed_at.get(client)

    def holder_expired(self, client: str, now: float, limit_s: float) -> bool:
        """True if ``client`` has not renewed within ``limit_s`` of ``now``.

        A client this manager has never heard of counts as expired: nothing vouches
        for it (see the start-up rule in the module docstring).
        """
        renewed_at = self._renewed_at.get(client)
        return renewed_at is None or now - renewed_at > limit_s

    def expired_clients(self, now: float, limit_s: float) -> list[str]:
        """Known clients past ``limit_s``, oldest renewal first (ties by name)."""
        expired = [(t, c) for c, t in self._renewed_at.items() if now - t > limit_s]
        return [c for _, c in sorted(expired)]

    def clients(self) -> list[str]:
        return sorted(self._renewed_at)
