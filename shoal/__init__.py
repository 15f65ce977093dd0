"""shoal: a big-data cluster in Python.

``shoal.connect("c1")`` returns a :class:`Cluster` handle; ``cluster.fs`` is the
distributed file system (see :class:`shoal.dfs.client.DFSClient`).
"""

from __future__ import annotations

import os

# Imported lazily: executors import ``shoal.compute`` and must start fast.

__version__ = "0.1.0"


class Cluster:
    """A connection to one cluster's master."""

    def __init__(self, target: str | os.PathLike | None = None, secret: bytes | str | None = None) -> None:
        from shoal.cluster.local import resolve
        from shoal.dfs.client import DFSClient
        from shoal.errors import ConnectionLost

        if isinstance(secret, str):
            secret = secret.encode()
        self.address = resolve(target, secret)
        try:
            self.fs = DFSClient(self.address.master, self.address.secret)
        except ConnectionLost as exc:
            where = self.address.folder or f"{self.address.master[0]}:{self.address.master[1]}"
            raise ConnectionLost(f"{exc}; is the cluster at {where} running? (shoal up / shoal nodes)") from None

    def close(self) -> None:
        self.fs.close()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(target: str | os.PathLike | None = None, secret: bytes | str | None = None) -> Cluster:
    """Connect to a cluster: a folder made by ``shoal up``, or ``shoal://host:port`` plus
    its secret; with no argument, the one ``SHOAL_CLUSTER`` names."""
    return Cluster(target, secret)


__all__ = ["Cluster", "connect", "__version__"]
