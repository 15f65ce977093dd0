"""``shoal cluster drf`` and ``shoal cluster maxmin``: the fairness calculators."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from shoal.cli.cluster import cluster_group

PAPER = ["drf", "--capacity", "cpus=9,mem=18", "--demand", "fw1=cpus:1,mem:4", "--demand", "fw2=cpus:3,mem:1"]
MAXMIN = ["maxmin", "--capacity", "10", "--demand", "A=1", "--demand", "B=2", "--demand", "C=5", "--demand", "D=6"]


def run(*args: str):
    result = CliRunner().invoke(cluster_group, list(args), env={"COLUMNS": "200"})
    assert "Traceback" not in result.output
    return result


def ok(*args: str) -> str:
    result = run(*args)
    assert result.exit_code == 0, result.output + result.stderr
    return result.stdout


def fails(*args: str) -> str:
    result = run(*args)
    assert result.exit_code == 1, (result.exit_code, result.output)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("shoal: error: "), lines
    return lines[0]


def test_drf_paper_example_table_and_summary() -> None:
    out = ok(*PAPER)
    rows = [line for line in out.splitlines() if line.startswith("│")]
    launched = [row.split("│")[2].strip() for row in rows]
    assert launched == ["fw1", "fw2", "fw1", "fw2", "fw1"]
    assert "cpus 3/9, mem 12/18 → 0.67" in rows[-1] and "cpus 6/9, mem 2/18 → 0.67" in rows[-1]
    assert "9/9 cpus, 14/18 mem" in rows[-1] and "fw1 3, fw2 2" in rows[-1]
    assert "cpus 1/9, mem 4/18 → 0.22" in rows[0]
    assert "fw1: 3 tasks <3 cpus, 12 mem>, dominant share 0.67" in out
    assert "fw2: 2 tasks <6 cpus, 2 mem>, dominant share 0.67" in out
    assert "total: 9/9 cpus, 14/18 mem" in out
    assert "equal shares go to the framework given first" in out


def test_drf_json() -> None:
    data = json.loads(ok(*PAPER, "--json"))
    assert [s["framework"] for s in data["steps"]] == ["fw1", "fw2", "fw1", "fw2", "fw1"]
    assert data["final"]["fw1"] == {"tasks": 3, "used": {"cpus": 3.0, "mem": 12.0}, "dominant_share": 2 / 3}
    assert data["final"]["fw2"] == {"tasks": 2, "used": {"cpus": 6.0, "mem": 2.0}, "dominant_share": 2 / 3}
    assert data["allocated"] == {"cpus": 9.0, "mem": 14.0}
    assert data["capacity"] == {"cpus": 9.0, "mem": 18.0}
    assert data["steps"][1]["dominant"] == {"fw1": 2 / 9, "fw2": 1 / 3}
    assert "tie" in data["tie_break"] or "equal shares" in data["tie_break"]


def test_drf_accepts_mesos_syntax_and_reports_nothing_fits() -> None:
    data = json.loads(ok("drf", "--capacity", "cpus:9;mem:18G", "--demand", "a=cpus:1;mem:1G", "--json"))
    assert data["final"]["a"]["tasks"] == 9
    out = ok("drf", "--capacity", "cpus=1", "--demand", "big=cpus:2")
    assert "nothing is launched" in out and "big: 0 tasks <0 cpus>, dominant share 0.00" in out


def test_maxmin_example() -> None:
    out = ok(*MAXMIN)
    rows = {r.split("│")[1].strip(): r.split("│")[3].strip() for r in out.splitlines() if r.startswith("│")}
    assert rows == {"A": "1", "B": "2", "C": "3.5", "D": "3.5"}
    assert "allocated 10 of 10" in out
    data = json.loads(ok(*MAXMIN, "--json"))
    assert [(r["framework"], r["allocation"]) for r in data["allocations"]] == [
        ("A", 1.0), ("B", 2.0), ("C", 3.5), ("D", 3.5)
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["drf", "--capacity", "cpus=abc", "--demand", "f=cpus:1"], "bad value for resource cpus"),
        (["drf", "--capacity", "cpus=-9", "--demand", "f=cpus:1"], "must not be negative"),
        (["drf", "--capacity", "", "--demand", "f=cpus:1"], "--capacity is empty"),
        (["drf", "--capacity", "cpus=9", "--demand", "f"], "expected NAME=SPEC"),
        (["drf", "--capacity", "cpus=9", "--demand", "f=cpus:-1"], "must not be negative"),
        (["drf", "--capacity", "cpus=9", "--demand", "f=cpus:1", "--demand", "f=cpus:2"], "given twice"),
        (["drf", "--capacity", "cpus=9", "--demand", "f=gpus:1"], "f demands gpus, which the capacity"),
        (["drf", "--capacity", "cpus=9", "--demand", "f=cpus:0"], "demands nothing"),
        (["maxmin", "--capacity", "ten", "--demand", "A=1"], "--capacity must be a number"),
        (["maxmin", "--capacity", "10", "--demand", "A=-1"], "must not be negative"),
        (["maxmin", "--capacity", "-10", "--demand", "A=1"], "must not be negative"),
        (["maxmin", "--capacity", "10", "--demand", "A=1", "--demand", "A=2"], "given twice"),
        (["maxmin", "--capacity", "10", "--demand", "A=x"], "the demand of A must be a number"),
        (["maxmin", "--capacity", "nan", "--demand", "A=1"], "finite number"),
    ],
)
def test_bad_input_is_one_line_and_exit_1(args: list[str], message: str) -> None:
    line = fails(*args)
    assert message in line and line.endswith("[InvalidResources]"), line


def test_registered_in_shoal_command() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")}
    env["COLUMNS"] = "200"
    res = subprocess.run(
        [sys.executable, "-m", "shoal.cli.main", "cluster", *PAPER, "--json"],
        env=env, capture_output=True, timeout=60,
    )
    assert res.returncode == 0, res.stderr.decode()
    assert [s["framework"] for s in json.loads(res.stdout)["steps"]] == ["fw1", "fw2", "fw1", "fw2", "fw1"]
    helptext = subprocess.run(
        [sys.executable, "-m", "shoal.cli.main", "cluster", "--help"], env=env, capture_output=True, timeout=60
    ).stdout.decode()
    assert "Resource manager: fairness calculators, agents and frameworks." in helptext
