"""The resource manager on a real local cluster: ``shoal run``, ``shoal ps``, the
framework API and DRF between live frameworks."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from shoal.cluster import protocol as p
from shoal.cluster.framework import Framework
from shoal.cluster.isolation import detect_isolation
from shoal.cluster.resources import Resources
from shoal.core.rpc_client import RpcClient
from shoal.core.wire import Empty
from shoal.errors import DuplicateTask, InvalidResources, UnknownFramework, UnknownOffer, UnknownTask
from tests.clitools import fails, ok, out_json, shoal
from tests.conftest import FAST, RunningCluster, wait_until

# Two racks; each worker offers 2 cpus and 1 GiB so fairness arithmetic is exact.
RESOURCES = "cpus:2;mem:1024"


@pytest.fixture(scope="module")
def rm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    rc = RunningCluster(tmp_path_factory.mktemp("rm") / "c", 3, 2, FAST, resources=RESOURCES,
                        worker_attributes={"w3": "zone:west"})
    yield rc
    rc.stop()


def master_rpc(rc: RunningCluster) -> RpcClient:
    from shoal.cluster.local import resolve

    addr = resolve(rc.folder)
    return RpcClient(addr.master, addr.secret)


def containers(folder: Path) -> list[dict]:
    return out_json(shoal(folder, "ps", "--all", "--json"))


# --- shoal run / ps -------------------------------------------------------------------------------
def test_run_round_trips_output_and_exit_status(rm_cluster: RunningCluster) -> None:
    res = ok(shoal(rm_cluster.folder, "run", "--cpus", "0.5", "--mem", "64M", "--",
                   "sh", "-c", "echo hello from $SHOAL_TASK_ID; echo oops >&2"))
    assert res.stdout.decode().startswith("hello from run-")
    assert b"oops" in res.stderr
    failed = shoal(rm_cluster.folder, "run", "--mem", "64M", "--", "sh", "-c", "echo partial; exit 7")
    assert failed.returncode == 7
    assert failed.stdout == b"partial\n"
    assert b"exited with status 7" in failed.stderr


def test_run_large_output_is_complete(rm_cluster: RunningCluster) -> None:
    res = ok(shoal(rm_cluster.folder, "run", "--mem", "64M", "--", "python3", "-c",
                   "import sys\nfor i in range(200000): sys.stdout.write(f'{i}\\n')"))
    lines = res.stdout.decode().splitlines()
    assert lines == [str(i) for i in range(200000)]


def test_memory_hog_is_killed_with_the_yarn_message(rm_cluster: RunningCluster) -> None:
    hog = "x = bytearray(300 * 1024 * 1024)\nfor i in range(0, len(x), 4096): x[i] = 1\nprint('survived')"
    res = shoal(rm_cluster.folder, "run", "--mem", "64M", "--", "python3", "-c", hog)
    assert res.returncode == 137, res.stderr
    assert b"survived" not in res.stdout
    assert b"exceeded its memory limit (64 MiB)" in res.stderr
    # ps reports the isolation the agent really applied (cgroups here if the machine allows).
    expected = detect_isolation("auto").name
    ended = [c for c in containers(rm_cluster.folder) if "memory limit" in c["message"]]
    assert ended and {c["isolation"] for c in ended} == {expected}


def test_constraint_places_on_the_named_rack_and_zone(rm_cluster: RunningCluster) -> None:
    for rack in ("r1", "r2"):
        out = ok(shoal(rm_cluster.folder, "run", "--mem", "32M", "--constraint", f"rack={rack}", "--name",
                       f"on-{rack}", "--", "true"))
        assert out.returncode == 0
    rows = {c["name"]: c for c in containers(rm_cluster.folder)}
    assert rows["on-r1"]["rack"] == "r1" and rows["on-r2"]["rack"] == "r2"
    ok(shoal(rm_cluster.folder, "run", "--mem", "32M", "--constraint", "zone=west", "--name", "west", "--", "true"))
    assert {c["agent_id"] for c in containers(rm_cluster.folder) if c["name"] == "west"} == {"w3"}


def test_requests_no_agent_can_fit_fail_at_once(rm_cluster: RunningCluster) -> None:
    line = fails(shoal(rm_cluster.folder, "run", "--cpus", "3", "--", "true"), "InsufficientResources")
    assert "no agent can ever fit" in line
    fails(shoal(rm_cluster.folder, "run", "--constraint", "rack=r9", "--", "true"), "InsufficientResources")
    fails(shoal(rm_cluster.folder, "run", "--cpus", "-1", "--", "true"), "InvalidResources")
    fails(shoal(rm_cluster.folder, "run", "--mem", "lots", "--", "true"), "InvalidResources")
    fails(shoal(rm_cluster.folder, "run", "--constraint", "rack", "--", "true"), "InvalidResources")


def test_ps_lists_running_containers(rm_cluster: RunningCluster) -> None:
    async def scenario() -> None:
        async with await Framework.register(rm_cluster.folder, name="ps-test") as fw:
            async for offer in fw.offers():
                spec = p.TaskSpec("ps-sleeper", "sleeper", ["sleep", "60"], Resources.of(cpus=0.5, mem=32))
                await fw.accept(offer, [spec])
                break
            await fw.wait_for("ps-sleeper", ("running",), timeout_s=20)
            rows = await asyncio.to_thread(lambda: out_json(shoal(rm_cluster.folder, "ps", "--json")))
            row = next(r for r in rows if r["task_id"] == "ps-sleeper")
            assert row["state"] == "running" and row["framework"] == "ps-test"
            assert row["resources"]["scalars"] == {"cpus": 0.5, "mem": 32.0}
            table = await asyncio.to_thread(lambda: ok(shoal(rm_cluster.folder, "ps")).stdout.decode())
            assert "ps-sleeper" in table and "ISOLATION" in table
            await fw.kill("ps-sleeper")
            assert (await fw.wait_for("ps-sleeper", timeout_s=20)).state == "killed"

    asyncio.run(scenario())


# --- framework API --------------------------------------------------------------------------------
def test_framework_api_bad_requests_are_named_errors(rm_cluster: RunningCluster) -> None:
    async def scenario() -> None:
        async with await Framework.register(rm_cluster.folder, name="bad-input") as fw:
            async for offer in fw.offers():
                if offer.resources.contains(Resources.of(cpus=0.2, mem=32)):
                    break
                await fw.decline(offer, filter_s=0)
            too_big = offer.resources.scalar_only() + Resources.of(cpus=1)
            with pytest.raises(InvalidResources):
                await fw.accept(offer, [p.TaskSpec("big", "big", ["true"], too_big)])
            with pytest.raises(UnknownOffer):
                await fw.accept("o-nonexistent", [p.TaskSpec("x", "x", ["true"], Resources.of(cpus=0.1, mem=8))])
            with pytest.raises(UnknownTask):
                await fw.kill("no-such-task")
            good = p.TaskSpec("dup-1", "dup", ["sleep", "30"], Resources.of(cpus=0.1, mem=16))
            await fw.accept(offer, [good], filter_s=0)
            async for offer2 in fw.offers():
                if offer2.resources.contains(good.resources):
                    break
                await fw.decline(offer2, filter_s=0)
            with pytest.raises(DuplicateTask):
                await fw.accept(offer2, [good])
            await fw.decline(offer2, filter_s=0)
            await fw.kill("dup-1")
            assert (await fw.wait_for("dup-1", timeout_s=20)).state == "killed"
        # After unregistering, its id is unknown.
        with master_rpc(rm_cluster) as rpc, pytest.raises(UnknownFramework):
            rpc.call(p.REVIVE, p.FrameworkReq(fw.framework_id))

    asyncio.run(scenario())


def test_two_frameworks_with_equal_demand_converge_to_equal_dominant_shares(rm_cluster: RunningCluster) -> None:
    """Framework A fills the whole cluster (6 cpus = 24 tasks of <0.25 cpu, 64 MiB>)
    with short tasks it keeps relaunching; then B arrives with the same demand. As A's
    tasks end, DRF offers the freed resources to B (the lower dominant share) until the
    two hold the same number of tasks (within one)."""
    task = Resources.of(cpus=0.25, mem=64)

    async def greedy(fw: Framework, counter: list[int]) -> None:
        async for offer in fw.offers():
            if offer.resources.contains(task):
                tid = f"{fw.info.name}-{counter[0]}"
                counter[0] += 1
                await fw.accept(offer, [p.TaskSpec(tid, tid, ["sleep", "1.5"], task)], filter_s=0)
            else:
                await fw.decline(offer, filter_s=0)

    def live_tasks(rpc: RpcClient) -> dict[str, int]:
        counts = {"drf-a": 0, "drf-b": 0}
        for c in rpc.call(p.LIST_CONTAINERS, Empty()).containers:
            if c.framework in counts and c.state in ("staging", "running"):
                counts[c.framework] += 1
        return counts

    async def scenario() -> dict[str, int]:
        rpc = master_rpc(rm_cluster)
        fa = await Framework.register(rm_cluster.folder, name="drf-a")
        loops = [asyncio.create_task(greedy(fa, [0]))]
        fb = None
        try:
            await asyncio.to_thread(wait_until, lambda: live_tasks(rpc)["drf-a"] >= 20, 60)
            fb = await Framework.register(rm_cluster.folder, name="drf-b")
            loops.append(asyncio.create_task(greedy(fb, [0])))
            seen: dict[str, int] = {}

            def balanced() -> bool:
                seen.update(live_tasks(rpc))
                return seen["drf-b"] >= 10 and abs(seen["drf-a"] - seen["drf-b"]) <= 1

            await asyncio.to_thread(wait_until, balanced, 60)
            return seen
        finally:
            for t in loops:
                t.cancel()
            await fa.unregister()
            if fb is not None:
                await fb.unregister()
            rpc.close()

    counts = asyncio.run(scenario())
    assert abs(counts["drf-a"] - counts["drf-b"]) <= 1


def test_unregistered_framework_tasks_are_killed_and_resources_return(rm_cluster: RunningCluster) -> None:
    async def scenario() -> str:
        fw = await Framework.register(rm_cluster.folder, name="leaver")
        need = Resources.of(cpus=1, mem=128)
        async for offer in fw.offers():
            if offer.resources.contains(need):
                break
            await fw.decline(offer, filter_s=0)
        await fw.accept(offer, [p.TaskSpec("leaver-1", "l", ["sleep", "300"], need)])
        await fw.wait_for("leaver-1", ("running",), timeout_s=20)
        await fw.unregister()
        return offer.agent_id

    agent_id = asyncio.run(scenario())
    with master_rpc(rm_cluster) as rpc:
        wait_until(lambda: next(c for c in rpc.call(p.LIST_CONTAINERS, Empty()).containers
                                if c.task_id == "leaver-1").state == "killed")
        wait_until(lambda: next(a for a in rpc.call(p.LIST_AGENTS, Empty()).agents
                                if a.info.agent_id == agent_id).available.cpus >= 1)


def test_worker_rejects_malformed_resources(tmp_path: Path) -> None:
    line = fails(shoal(None, "worker", "--master", "127.0.0.1:1", "--dir", str(tmp_path / "w"),
                       "--secret-file", str(tmp_path / "s"), "--resources", "cpus:-1"))
    assert "must not be negative" in line
    fails(shoal(None, "up", "-c", str(tmp_path / "c"), "--worker-resources", "cpus:two"), "InvalidResources")
    assert not (tmp_path / "c" / "cluster.json").exists()


def test_cluster_agents_and_frameworks_commands(rm_cluster: RunningCluster) -> None:
    agents = {a["info"]["agent_id"]: a for a in out_json(shoal(rm_cluster.folder, "cluster", "agents", "--json"))}
    assert set(agents) == {"w1", "w2", "w3"}
    assert agents["w3"]["info"]["attributes"] == {"rack": "r1", "zone": "west"}
    assert agents["w2"]["info"]["attributes"] == {"rack": "r2"}
    assert all(a["info"]["total"]["scalars"]["cpus"] == 2 for a in agents.values())
    ports = [a["info"]["total"]["ranges"]["ports"][0] for a in agents.values()]
    assert len({tuple(r) for r in ports}) == 3  # disjoint port ranges per local worker
    frameworks = out_json(shoal(rm_cluster.folder, "cluster", "frameworks", "--json"))
    assert "services" in {f["info"]["name"] for f in frameworks}
    assert "TOTAL" in ok(shoal(rm_cluster.folder, "cluster", "agents")).stdout.decode()
