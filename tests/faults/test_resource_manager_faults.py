"""Resource-manager failures with real processes: an agent killed with -9, a framework
that disappears, a service whose node dies."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path

import psutil
import pytest

from shoal.cluster import protocol as p
from shoal.cluster.framework import Framework
from shoal.cluster.local import resolve
from shoal.cluster.resources import Resources
from shoal.core.rpc_client import RpcClient
from shoal.core.wire import Empty
from tests.clitools import ok, out_json, shoal
from tests.conftest import RunningCluster, wait_until

pytestmark = pytest.mark.slow


def marked_processes(marker: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(marker in part for part in proc.info["cmdline"] or ()):
                found.append(proc)
        except psutil.Error:
            pass
    return found


def sleeper(marker: str) -> list[str]:
    return [sys.executable, "-c", f"import time; time.sleep(600)  # {marker}"]


def master_rpc(rc: RunningCluster) -> RpcClient:
    addr = resolve(rc.folder)
    return RpcClient(addr.master, addr.secret)


def test_agent_killed_mid_task_reports_lost_and_leaves_no_process(make_cluster) -> None:
    rc = make_cluster(workers=2, racks=1)
    marker = "shoal-lost-marker-1"

    async def scenario() -> p.TaskStatus:
        async with await Framework.register(rc.folder, name="loser") as fw:
            async for offer in fw.offers():
                if offer.agent_id != "w2":
                    await fw.decline(offer, filter_s=30)
                    continue
                await fw.accept(offer, [p.TaskSpec("doomed", "doomed", sleeper(marker), Resources.of(cpus=0.5, mem=64))])
                break
            await fw.wait_for("doomed", ("running",), timeout_s=20)
            await asyncio.to_thread(wait_until, lambda: len(marked_processes(marker)) >= 1)
            os.kill(rc.worker_pid("w2"), signal.SIGKILL)
            return await fw.wait_for("doomed", timeout_s=30)

    status = asyncio.run(scenario())
    assert status.state == "lost"
    assert "w2" in status.message
    # The container died with its agent (parent-death signal), not left as an orphan.
    wait_until(lambda: not marked_processes(marker), timeout_s=15)
    with master_rpc(rc) as rpc:
        agents = {a.info.agent_id: a.state for a in rpc.call(p.LIST_AGENTS, Empty()).agents}
    assert agents == {"w1": "active", "w2": "lost"}


def test_framework_that_disappears_has_its_containers_killed(make_cluster, tmp_path: Path) -> None:
    rc = make_cluster(workers=1, racks=1)
    marker = "shoal-orphan-marker-2"
    script = tmp_path / "fw.py"
    script.write_text(textwrap.dedent(f"""
        import asyncio, sys
        from shoal.cluster import protocol as p
        from shoal.cluster.framework import Framework
        from shoal.cluster.resources import Resources

        async def main():
            fw = await Framework.register({str(rc.folder)!r}, name="vanishing")
            offer = await anext(fw.offers())
            cmd = [sys.executable, "-c", "import time; time.sleep(600)  # {marker}"]
            await fw.accept(offer, [p.TaskSpec("orphan", "orphan", cmd, Resources.of(cpus=1, mem=64))])
            await fw.wait_for("orphan", ("running",), timeout_s=20)
            print("running", flush=True)
            await asyncio.sleep(600)

        asyncio.run(main())
    """))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline() == b"running\n"
        assert marked_processes(marker)
        proc.kill()
        proc.wait()
        with master_rpc(rc) as rpc:
            def state() -> str:
                return next(c for c in rpc.call(p.LIST_CONTAINERS, Empty()).containers if c.task_id == "orphan").state

            wait_until(lambda: state() == "killed", timeout_s=30)
            wait_until(lambda: not marked_processes(marker), timeout_s=15)
            # Its resources are back in the pool and no framework is left registered.
            agent = rpc.call(p.LIST_AGENTS, Empty()).agents[0]
            wait_until(lambda: rpc.call(p.LIST_AGENTS, Empty()).agents[0].available.cpus == agent.info.total.cpus)
            assert all(f.info.name != "vanishing" for f in rpc.call(p.LIST_FRAMEWORKS, Empty()).frameworks)
    finally:
        proc.kill()


def _healthy_endpoints(folder: Path) -> list[str]:
    return out_json(shoal(folder, "service", "endpoints", "web", "--json"))["endpoints"]


def _answers(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{endpoint}/", timeout=5) as resp:
            return resp.status == 200
    except OSError:
        return False


def test_service_survives_the_kill_of_a_node(make_cluster) -> None:
    rc = make_cluster(workers=4, racks=2)
    ok(shoal(rc.folder, "service", "create", "web", "--instances", "3", "--cpus", "0.1", "--mem", "64M",
             "--ports", "1", "--health-http", "/", "--health-interval", "0.5", "--health-grace", "20",
             "--", "python3", "-m", "http.server", "--bind", "127.0.0.1", "$PORT0"))
    wait_until(lambda: len(_healthy_endpoints(rc.folder)) == 3, timeout_s=60)
    endpoints = _healthy_endpoints(rc.folder)
    assert all(_answers(e) for e in endpoints)
    status = out_json(shoal(rc.folder, "service", "ls", "--json"))[0]
    nodes = {i["agent_id"] for i in status["instances"]}
    racks = {i["rack"] for i in status["instances"]}
    assert len(nodes) == 3 and racks == {"r1", "r2"}  # spread over nodes and both racks

    victim = sorted(nodes)[0]
    lost_ports = {e for e in endpoints if any(i["agent_id"] == victim and e.endswith(f":{i['ports'][0]}")
                                              for i in status["instances"])}
    os.kill(rc.worker_pid(victim), signal.SIGKILL)

    def recovered() -> bool:
        eps = _healthy_endpoints(rc.folder)
        return len(eps) == 3 and not set(eps) & lost_ports

    wait_until(recovered, timeout_s=60)
    assert all(_answers(e) for e in _healthy_endpoints(rc.folder))
    status = out_json(shoal(rc.folder, "service", "ls", "--json"))[0]
    assert victim not in {i["agent_id"] for i in status["instances"]}

    ok(shoal(rc.folder, "service", "scale", "web", "1"))
    wait_until(lambda: len(_healthy_endpoints(rc.folder)) == 1, timeout_s=30)
    ok(shoal(rc.folder, "service", "rm", "web"))
    assert out_json(shoal(rc.folder, "service", "ls", "--json")) == []
    wait_until(lambda: not [c for c in out_json(shoal(rc.folder, "ps", "--json"))], timeout_s=30)


def test_failing_service_backs_off_and_reports_why(make_cluster) -> None:
    rc = make_cluster(workers=1, racks=1)
    ok(shoal(rc.folder, "service", "create", "crashy", "--instances", "1", "--mem", "32M", "--",
             "sh", "-c", "echo starting; exit 3"))

    def failed_with_backoff() -> bool:
        s = out_json(shoal(rc.folder, "service", "ls", "--json"))[0]
        return "exited with status 3" in s["last_failure"]

    def attempts() -> list[dict]:
        return [c for c in out_json(shoal(rc.folder, "ps", "--all", "--json")) if c["task_id"].startswith("crashy.")]

    wait_until(failed_with_backoff, timeout_s=30)
    wait_until(lambda: len(attempts()) >= 3, timeout_s=30)  # restarted, again and again
    seen = attempts()
    assert all(c["state"] in ("failed", "staging", "running") for c in seen)
    assert len({c["task_id"] for c in seen}) == len(seen)  # a new task id each time


def test_service_instances_are_adopted_after_a_master_restart(make_cluster) -> None:
    """The master is killed with -9 and restarted on its port: the service definition
    comes back from services.json and the running instances are adopted as the agents
    re-register, neither killed nor duplicated."""
    from tests.faults.test_master_restart import kill_master, restart_master

    rc = make_cluster(workers=2, racks=1)
    ok(shoal(rc.folder, "service", "create", "keep", "--instances", "2", "--mem", "32M", "--",
             "sleep", "600"))

    def running_ids() -> set[str]:
        return {c["task_id"] for c in out_json(shoal(rc.folder, "ps", "--json")) if c["state"] == "running"}

    wait_until(lambda: len(running_ids()) == 2, timeout_s=30)
    before = running_ids()
    port = kill_master(rc)
    restart_master(rc, port, workers=2)
    wait_until(lambda: running_ids() == before, timeout_s=30)
    status = out_json(shoal(rc.folder, "service", "ls", "--json"))
    assert [(s["spec"]["name"], s["running"]) for s in status] == [("keep", 2)]
    assert {i["task_id"] for i in status[0]["instances"]} == before
    # Nothing new was launched meanwhile: the only containers ever seen are the originals.
    assert {c["task_id"] for c in out_json(shoal(rc.folder, "ps", "--all", "--json"))} == before
