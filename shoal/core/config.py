"""One typed configuration object with the real systems' defaults.

Keys are ``section.name`` (``dfs.block_size``). Values come from, lowest first: the
defaults below, a cluster folder's ``config.json`` (written by ``shoal up --set``),
environment variables ``SHOAL_<SECTION>_<NAME>`` and explicit ``--set`` flags. Tests
scale the timers down through the same keys; nothing patches them in place.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import msgspec

from shoal.core.units import parse_size
from shoal.errors import ConfigError

MiB = 1024 * 1024


class DfsConfig(msgspec.Struct, kw_only=True, frozen=True):
    """HDFS-style file system settings (defaults as HDFS ships them, unless noted)."""

    block_size: int = 128 * MiB
    replication: int = 3
    heartbeat_interval_s: float = 3.0
    # HDFS: 2 * recheck interval (5 min) + 10 * heartbeat = 10.5 minutes.
    dead_node_interval_s: float = 630.0
    block_report_every: int = 10
    # HDFS checksums every 512 bytes; per-call overhead in Python makes 64 KiB the
    # sweet spot (see docs/dfs.md).
    bytes_per_checksum: int = 64 * 1024
    packet_bytes: int = 1 * MiB
    # Packets a writer may have in flight before it waits for acks.
    pipeline_window_packets: int = 16
    lease_soft_limit_s: float = 60.0
    lease_hard_limit_s: float = 3600.0
    # HDFS dfs.datanode.synconclose defaults to false: replicas reach the page cache,
    # which survives kill -9 of any process; set true to fsync every finalized replica.
    sync_on_close: bool = False
    # A worker with less free space than this is never chosen for a new replica.
    reserved_bytes: int = 0
    # The master checkpoints its namespace (fsimage) after this long or this many
    # edit-log transactions, whichever comes first (HDFS dfs.namenode.checkpoint.period
    # and dfs.namenode.checkpoint.txns).
    checkpoint_interval_s: float = 3600.0
    checkpoint_txns: int = 1_000_000
    # Re-replication: copies a worker may send or receive at once
    # (dfs.namenode.replication.max-streams) and how long a copy may take before it
    # is rescheduled (dfs.namenode.reconstruction.pending.timeout-sec, 5 minutes).
    replication_max_streams: int = 2
    replication_timeout_s: float = 300.0
    # Block scanner: verify every replica once per period at a bounded rate
    # (dfs.datanode.scan.period.hours = 3 weeks, 1 MiB/s per volume).
    scan_period_s: float = 504 * 3600.0
    scanner_bytes_per_s: int = 1 * MiB
    # Safe mode: the fraction of blocks with a live replica before writes resume
    # (dfs.namenode.safemode.threshold-pct).
    safemode_threshold: float = 0.999


class RpcConfig(msgspec.Struct, kw_only=True, frozen=True):
    """Wire-protocol limits and timeouts."""

    frame_bytes_max: int = 64 * MiB
    call_timeout_s: float = 60.0
    connect_timeout_s: float = 10.0
    auth_timeout_s: float = 10.0
    inflight_calls_max: int = 256


class ClusterConfig(msgspec.Struct, kw_only=True, frozen=True):
    """Resource-manager settings (Mesos defaults where Mesos has one)."""

    # Mesos --allocation_interval: how often the allocator runs a round of offers.
    allocation_interval_s: float = 1.0
    # Offers not answered within this long are rescinded (Mesos --offer_timeout).
    offer_timeout_s: float = 30.0
    # Default filter for declined / unused offered resources (Mesos refuse_seconds).
    decline_filter_s: float = 5.0
    # An agent that has not polled for this long is lost, with its containers
    # (Mesos: agent_ping_timeout 15 s x max_agent_ping_timeouts 5).
    agent_timeout_s: float = 75.0
    # Agents and frameworks long-poll the master; a poll returns after this at most.
    poll_wait_s: float = 5.0
    # A framework that stops polling for this long is removed and its tasks killed
    # (Mesos' framework failover timeout, for frameworks that give none).
    framework_timeout_s: float = 60.0
    # Marathon's launch backoff: 1 s, times 1.15 per failure, at most 300 s.
    backoff_s: float = 1.0
    backoff_factor: float = 1.15
    backoff_max_s: float = 300.0
    # Containers: SIGTERM, then SIGKILL after this grace period (Mesos: 3 s).
    kill_grace_s: float = 3.0
    # How often the agent samples container memory when it enforces limits itself.
    memory_poll_s: float = 0.2
    # Isolation: "auto" (cgroups + namespaces when root and cgroups allow, else a
    # process group with rlimits) or "process" to force the fallback.
    isolation: str = "auto"


class Config(msgspec.Struct, kw_only=True, frozen=True):
    """The whole configuration of a node or client."""

    dfs: DfsConfig = DfsConfig()
    rpc: RpcConfig = RpcConfig()
    cluster: ClusterConfig = ClusterConfig()

    def get(self, key: str) -> Any:
        section, name = _split_key(key)
        return getattr(getattr(self, section), name)

    def with_overrides(self, overrides: Mapping[str, Any]) -> Config:
        """Return a copy with ``key -> value`` applied (values may be strings)."""
        sections: dict[str, dict[str, Any]] = {}
        for key, raw in overrides.items():
            section, name = _split_key(key)
            sections.setdefault(section, {})[name] = _coerce(key, self.get(key), raw)
        new = self
        for section, values in sections.items():
            new = msgspec.structs.replace(
                new, **{section: msgspec.structs.replace(getattr(new, section), **values)}
            )
        new.check()
        return new

    def check(self) -> None:
        """Reject values no cluster can run with."""
        d = self.dfs
        if d.block_size <= 0:
            raise ConfigError("dfs.block_size must be positive")
        if not 1 <= d.replication <= 512:
            raise ConfigError("dfs.replication must be between 1 and 512")
        if d.bytes_per_checksum <= 0 or d.packet_bytes < d.bytes_per_checksum:
            raise ConfigError("dfs.packet_bytes must be at least dfs.bytes_per_checksum (> 0)")
        if d.packet_bytes % d.bytes_per_checksum:
            raise ConfigError("dfs.packet_bytes must be a multiple of dfs.bytes_per_checksum")
        for key in ("dfs.heartbeat_interval_s", "dfs.dead_node_interval_s", "rpc.call_timeout_s"):
            if self.get(key) <= 0:
                raise ConfigError(f"{key} must be positive")
        if d.block_report_every < 1:
            raise ConfigError("dfs.block_report_every must be at least 1")
        for key, value in self.items():
            if key == "cluster.decline_filter_s" and value < 0:
                raise ConfigError(f"{key} must not be negative (0: no filter)")
            if key.startswith("cluster.") and key != "cluster.decline_filter_s" and isinstance(value, float) and value <= 0:
                raise ConfigError(f"{key} must be positive")
        if self.cluster.isolation not in {"auto", "process"}:
            raise ConfigError("cluster.isolation must be auto or process")

    def items(self) -> list[tuple[str, Any]]:
        """Every key with its current value, in declaration order."""
        out = []
        for section in msgspec.structs.fields(self):
            sub = getattr(self, section.name)
            for f in msgspec.structs.fields(sub):
                out.append((f"{section.name}.{f.name}", getattr(sub, f.name)))
        return out

    def overrides(self) -> dict[str, Any]:
        """Keys whose value differs from the default."""
        default = dict(Config().items())
        return {k: v for k, v in self.items() if default[k] != v}


def _split_key(key: str) -> tuple[str, str]:
    section, _, name = key.partition(".")
    sub = getattr(Config(), section, None) if section in {"dfs", "rpc", "cluster"} else None
    if sub is None or not name or name not in sub.__struct_fields__:
        known = ", ".join(k for k, _ in Config().items())
        raise ConfigError(f"unknown config key {key!r}; known keys: {known}")
    return section, name


def _coerce(key: str, current: Any, raw: Any) -> Any:
    try:
        if isinstance(current, bool):
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in {"1", "true", "yes", "on"}:
                return True
            if text in {"0", "false", "no", "off"}:
                return False
            raise ValueError(raw)
        if isinstance(current, int):
            return parse_size(raw) if isinstance(raw, str) else int(raw)
        if isinstance(current, float):
            return float(raw)
        return type(current)(raw)
    except (ValueError, ConfigError) as exc:
        raise ConfigError(f"bad value for {key}: {raw!r} (expected {type(current).__name__})") from exc


def parse_settings(pairs: Iterable[str]) -> dict[str, str]:
    """Parse ``key=value`` strings from ``--set`` flags."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ConfigError(f"--set expects key=value, got {pair!r}")
        _split_key(key.strip())
        out[key.strip()] = value.strip()
    return out


def env_overrides(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """``SHOAL_DFS_BLOCK_SIZE=1M`` style overrides from the environment."""
    environ = os.environ if environ is None else environ
    out = {}
    for key, _ in Config().items():
        name = "SHOAL_" + key.upper().replace(".", "_")
        if name in environ:
            out[key] = environ[name]
    return out


def load_config(folder: Path | None = None, overrides: Mapping[str, Any] | None = None) -> Config:
    """Defaults, then ``folder/config.json``, then the environment, then ``overrides``."""
    merged: dict[str, Any] = {}
    if folder is not None and (folder / "config.json").exists():
        merged.update(json.loads((folder / "config.json").read_text()))
    merged.update(env_overrides())
    merged.update(overrides or {})
    return Config().with_overrides(merged)


def save_overrides(folder: Path, overrides: Mapping[str, Any]) -> None:
    """Record a cluster's ``--set`` values so every node and client agrees."""
    (folder / "config.json").write_text(json.dumps(dict(overrides), indent=2, sort_keys=True) + "\n")
