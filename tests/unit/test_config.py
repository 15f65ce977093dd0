"""Typed configuration: defaults, overrides, rejections."""

from __future__ import annotations

import pytest

from shoal.core.config import Config, env_overrides, load_config, parse_settings, save_overrides
from shoal.core.units import format_size, parse_size
from shoal.errors import ConfigError


def test_defaults_are_the_real_systems() -> None:
    cfg = Config()
    assert cfg.dfs.block_size == 128 * 1024 * 1024
    assert cfg.dfs.replication == 3
    assert cfg.dfs.heartbeat_interval_s == 3.0
    assert cfg.dfs.block_report_every == 10
    assert cfg.dfs.dead_node_interval_s == 630.0


def test_overrides_parse_sizes_floats_and_bools() -> None:
    cfg = Config().with_overrides(
        {"dfs.block_size": "1M", "dfs.heartbeat_interval_s": "0.05", "dfs.sync_on_close": "yes"}
    )
    assert cfg.dfs.block_size == 1024 * 1024
    assert cfg.dfs.heartbeat_interval_s == 0.05
    assert cfg.dfs.sync_on_close is True
    assert cfg.overrides() == {"dfs.block_size": 1048576, "dfs.heartbeat_interval_s": 0.05, "dfs.sync_on_close": True}


@pytest.mark.parametrize(
    "key,value",
    [
        ("dfs.nope", "1"),
        ("nope.block_size", "1"),
        ("dfs.block_size", "big"),
        ("dfs.replication", "0"),
        ("dfs.heartbeat_interval_s", "-1"),
        ("dfs.packet_bytes", "1000"),
    ],
)
def test_bad_keys_and_values_are_rejected(key: str, value: str) -> None:
    with pytest.raises(ConfigError):
        Config().with_overrides({key: value})


def test_layering_file_env_flags(tmp_path, monkeypatch) -> None:
    save_overrides(tmp_path, {"dfs.replication": "2", "dfs.block_size": "2M"})
    monkeypatch.setenv("SHOAL_DFS_BLOCK_SIZE", "4M")
    assert env_overrides() == {"dfs.block_size": "4M"}
    cfg = load_config(tmp_path, {"dfs.heartbeat_interval_s": "0.1"})
    assert (cfg.dfs.replication, cfg.dfs.block_size, cfg.dfs.heartbeat_interval_s) == (2, 4 * 1024 * 1024, 0.1)


def test_parse_settings() -> None:
    assert parse_settings(["dfs.replication=2"]) == {"dfs.replication": "2"}
    with pytest.raises(ConfigError):
        parse_settings(["dfs.replication"])
    with pytest.raises(ConfigError):
        parse_settings(["bogus.key=1"])


def test_sizes() -> None:
    assert parse_size("4096") == 4096
    assert parse_size("64k") == 65536
    assert parse_size("1.5G") == 3 * 512 * 1024 * 1024
    assert parse_size("128MiB") == 128 * 1024 * 1024
    with pytest.raises(ConfigError):
        parse_size("12 parsecs")
    assert format_size(1536) == "1.5 KiB"
