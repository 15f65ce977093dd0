"""The pure service scheduler: placement, backoff, health, scaling, reconciliation, offers."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck as HealthCheck_
from hypothesis import given, settings
from hypothesis import strategies as hs

from shoal.cluster.protocol import HealthCheck, Offer, ServiceSpec, TaskSpec, TaskStatus
from shoal.cluster.resources import Resources
from shoal.cluster.services import (
    DeclineOffer,
    KillTask,
    LaunchTasks,
    OfferRescinded,
    OffersReceived,
    ReviveOffers,
    ServiceCreated,
    ServiceEffect,
    ServiceRemoved,
    ServiceScaled,
    ServiceScheduler,
    SuppressOffers,
    TaskUpdated,
    Tick,
)
from shoal.errors import BadRequest, InvalidResources, ServiceExists, UnknownService

FW = "fw-1"
CMD_CHECK = HealthCheck("cmd", command="true")


def make_spec(name: str = "web", instances: int = 1, **kw: object) -> ServiceSpec:
    kw.setdefault("resources", Resources.of(cpus=1, mem=128))
    return ServiceSpec(name=name, instances=instances, command=["sleep", "1000"], **kw)  # type: ignore[arg-type]


_ids = iter(range(10**9))


def offer(agent: str, rack: str = "r1", *, cpus: float = 4, mem: float = 1024, ports: tuple[int, int] | None = (31000, 31009),
          attrs: dict[str, str] | None = None, oid: str | None = None) -> Offer:
    res = Resources.of(cpus=cpus, mem=mem)
    if ports:
        res = res.with_ranges("ports", [ports])
    return Offer(oid or f"o{next(_ids)}", FW, agent, f"host-{agent}", rack, attrs or {}, res)


def sched(*specs: ServiceSpec, **kw: float) -> ServiceScheduler:
    s = ServiceScheduler(framework_id=FW, **kw)
    for sp in specs:
        s.handle(ServiceCreated(sp), 0.0)
    s.validate()
    return s


def run(s: ServiceScheduler, event: object, now: float) -> list[ServiceEffect]:
    out = s.handle(event, now)  # type: ignore[arg-type]
    s.validate()
    return out


def tasks(effects: list[ServiceEffect]) -> list[TaskSpec]:
    return [t for e in effects if isinstance(e, LaunchTasks) for t in e.tasks]


def declined(effects: list[ServiceEffect]) -> dict[str, float]:
    return {e.offer_id: e.filter_s for e in effects if isinstance(e, DeclineOffer)}


def kills(effects: list[ServiceEffect]) -> dict[str, str]:
    return {e.task_id: e.reason for e in effects if isinstance(e, KillTask)}


def upd(task_id: str, state: str, *, healthy: bool | None = None, message: str = "", agent: str = "a1",
        exit_code: int | None = None, fw: str = FW) -> TaskUpdated:
    return TaskUpdated(TaskStatus(task_id, state, agent, fw, message, exit_code, healthy))  # type: ignore[arg-type]


def launch_one(s: ServiceScheduler, now: float, agent: str = "a1", rack: str = "r1") -> TaskSpec:
    (t,) = tasks(run(s, OffersReceived([offer(agent, rack, cpus=1)]), now))
    return t


# --- validation ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["Web", "-web", "web-", "we.b", "we_b", "", "a" * 64])
def test_bad_names_are_refused(name: str) -> None:
    with pytest.raises(BadRequest):
        sched().handle(ServiceCreated(make_spec(name)), 0)


def test_longest_dns_label_is_fine() -> None:
    s = sched(make_spec("a" * 63), make_spec("0-a"))
    assert [st.spec.name for st in s.list()] == ["0-a", "a" * 63]


def test_bad_specs_are_refused() -> None:
    s = sched(make_spec("web"))
    with pytest.raises(ServiceExists):
        s.handle(ServiceCreated(make_spec("web")), 0)
    with pytest.raises(BadRequest):
        s.handle(ServiceCreated(make_spec("neg", -1)), 0)
    with pytest.raises(BadRequest):
        s.handle(ServiceCreated(ServiceSpec("empty", 1, [], Resources.of(cpus=1, mem=1))), 0)
    with pytest.raises(BadRequest):
        s.handle(ServiceCreated(ServiceSpec("blank", 1, [" "], Resources.of(cpus=1, mem=1), shell=True)), 0)
    with pytest.raises(InvalidResources):
        s.handle(ServiceCreated(make_spec("nomem", resources=Resources.of(cpus=1))), 0)
    with pytest.raises(InvalidResources):
        s.handle(ServiceCreated(make_spec("nocpu", resources=Resources.of(mem=64))), 0)
    with pytest.raises(BadRequest):
        s.handle(ServiceCreated(make_spec("http", health=HealthCheck("http"))), 0)
    assert [st.spec.name for st in s.list()] == ["web"]


def test_scale_and_remove_check_their_arguments() -> None:
    s = sched(make_spec("web"))
    with pytest.raises(UnknownService):
        s.handle(ServiceScaled("nope", 1), 0)
    with pytest.raises(UnknownService):
        s.handle(ServiceRemoved("nope"), 0)
    with pytest.raises(BadRequest):
        s.handle(ServiceScaled("web", -1), 0)
    with pytest.raises(UnknownService):
        s.status("nope")
    with pytest.raises(UnknownService):
        s.endpoints("nope")
    assert s.status("web").spec.instances == 1


# --- ids and launches ------------------------------------------------------------------------
def test_task_ids_count_up_and_are_never_reused() -> None:
    s = sched(make_spec("web", 2))
    first = tasks(run(s, OffersReceived([offer("a1"), offer("a2")]), 1))
    assert sorted(t.task_id for t in first) == ["web.0", "web.1"]
    run(s, upd("web.0", "lost"), 2)
    assert launch_one(s, 2).task_id == "web.2"
    run(s, ServiceRemoved("web"), 3)
    run(s, ServiceCreated(make_spec("web", 1)), 4)
    assert launch_one(s, 5).task_id == "web.3"


def test_launch_carries_the_spec_and_ports_from_the_offer() -> None:
    sp = make_spec("web", 2, ports=2, env={"A": "1"}, health=CMD_CHECK, shell=True)
    s = sched(sp)
    o = offer("a1", ports=(40000, 40003))
    eff = run(s, OffersReceived([o]), 1)
    (launch,) = [e for e in eff if isinstance(e, LaunchTasks)]
    assert launch.offer_id == o.offer_id
    total = Resources()
    seen_ports: set[int] = set()
    for t in launch.tasks:
        assert t.agent_id == "a1" and t.env == {"A": "1"} and t.health == CMD_CHECK and t.shell
        assert t.command == sp.command and t.name == "web"
        ports = [p for lo, hi in t.resources.ports() for p in range(lo, hi + 1)]
        assert len(ports) == 2 and not seen_ports & set(ports)
        seen_ports |= set(ports)
        total = total + t.resources
    assert o.resources.contains(total)
    info = s.status("web").instances
    assert sorted(p for i in info for p in i.ports) == [40000, 40001, 40002, 40003]


def test_offer_without_enough_ports_or_resources_is_not_used() -> None:
    s = sched(make_spec("web", 1, ports=3))
    small = offer("a1", ports=(31000, 31001))
    tiny = offer("a2", cpus=0.5)
    eff = run(s, OffersReceived([small, tiny]), 1)
    assert tasks(eff) == []
    assert declined(eff) == {small.offer_id: 1.0, tiny.offer_id: 1.0}


def test_duplicate_offer_delivery_is_ignored() -> None:
    s = sched(make_spec("web", 2))
    o = offer("a1", cpus=1, oid="dup")
    assert len(tasks(run(s, OffersReceived([o]), 1))) == 1
    assert run(s, OffersReceived([o]), 2) == []
    assert run(s, OfferRescinded("dup"), 3) == []


# --- placement -------------------------------------------------------------------------------
def test_three_instances_spread_over_three_agents() -> None:
    s = sched(make_spec("web", 3))
    eff = run(s, OffersReceived([offer("a1", "r1"), offer("a2", "r2"), offer("a3", "r3")]), 1)
    assert sorted(t.agent_id for t in tasks(eff)) == ["a1", "a2", "a3"]


def test_four_instances_over_two_racks_of_two_nodes() -> None:
    s = sched(make_spec("web", 4))
    offers = [offer("a1", "r1"), offer("a2", "r1"), offer("b1", "r2"), offer("b2", "r2")]
    eff = run(s, OffersReceived(offers), 1)
    rack = {"a1": "r1", "a2": "r1", "b1": "r2", "b2": "r2"}
    placed = [t.agent_id for t in tasks(eff)]
    assert sorted(placed) == ["a1", "a2", "b1", "b2"]
    assert sorted(rack[a] for a in placed) == ["r1", "r1", "r2", "r2"]


def test_rack_spread_beats_agent_id_order() -> None:
    s = sched(make_spec("web", 2))
    assert launch_one(s, 1, "a1", "r1").agent_id == "a1"
    # a2 sorts first but shares r1 with the existing instance: b1 on r2 wins.
    eff = run(s, OffersReceived([offer("a2", "r1"), offer("b1", "r2")]), 2)
    assert [t.agent_id for t in tasks(eff)] == ["b1"]


def test_colocates_only_when_no_other_node_fits() -> None:
    s = sched(make_spec("web", 3))
    big, small = offer("a1", cpus=8), offer("a2", "r2", cpus=1)
    eff = run(s, OffersReceived([big, small]), 1)
    assert sorted(t.agent_id for t in tasks(eff)) == ["a1", "a1", "a2"]


def test_spread_counts_instances_from_earlier_batches() -> None:
    s = sched(make_spec("web", 2))
    launch_one(s, 1, "a1")
    eff = run(s, OffersReceived([offer("a1"), offer("a9")]), 2)
    assert [t.agent_id for t in tasks(eff)] == ["a9"]


@pytest.mark.parametrize(
    ("constraint", "agent"),
    [(("rack", "r2"), "b"), (("hostname", "host-c"), "c"), (("zone", "west"), "a"), (("node", "b"), "b")],
)
def test_constraints_pick_matching_agents(constraint: tuple[str, str], agent: str) -> None:
    s = sched(make_spec("web", 1, constraints=[constraint]))
    offers = [offer("a", "r1", attrs={"zone": "west"}), offer("b", "r2"), offer("c", "r3", attrs={"zone": "east"})]
    assert [t.agent_id for t in tasks(run(s, OffersReceived(offers), 1))] == [agent]


def test_unsatisfiable_constraint_declines_briefly() -> None:
    s = sched(make_spec("web", 1, constraints=[("rack", "nowhere")]))
    o = offer("a1")
    assert run(s, OffersReceived([o]), 1) == [DeclineOffer(o.offer_id, 1.0)]
    assert s.wants_offers()


def test_several_services_share_one_batch_without_overcommitting() -> None:
    s = sched(make_spec("api", 2), make_spec("web", 2))
    o = offer("a1", cpus=3)
    placed = tasks(run(s, OffersReceived([o]), 1))
    assert len(placed) == 3
    assert sorted(t.task_id for t in placed) == ["api.0", "api.1", "web.0"]


# --- offers: decline, suppress, revive ----------------------------------------------------------
def test_nothing_needed_declines_long_and_suppresses_once() -> None:
    s = sched(make_spec("web", 0))
    o1, o2 = offer("a1"), offer("a2")
    assert run(s, OffersReceived([o1]), 1) == [DeclineOffer(o1.offer_id, 120.0), SuppressOffers()]
    assert run(s, OffersReceived([o2]), 2) == [DeclineOffer(o2.offer_id, 120.0)]
    assert not s.wants_offers()


@pytest.mark.parametrize("trigger", ["scale", "create", "lost", "failed"])
def test_revive_when_needed_again_after_going_quiet(trigger: str) -> None:
    s = sched(make_spec("web", 1))
    t = launch_one(s, 1)
    assert run(s, OffersReceived([offer("a2")]), 2)[-1] == SuppressOffers()
    if trigger == "scale":
        eff = run(s, ServiceScaled("web", 2), 3)
    elif trigger == "create":
        eff = run(s, ServiceCreated(make_spec("api")), 3)
    elif trigger == "lost":
        eff = run(s, upd(t.task_id, "lost"), 3)
    else:
        run(s, upd(t.task_id, "failed"), 3)
        eff = run(s, Tick(), 3.5)
        assert eff == []  # still backing off
        eff = run(s, Tick(), 4)
    assert eff == [ReviveOffers()]
    assert s.wants_offers()


def test_no_revive_while_offers_keep_coming() -> None:
    s = sched(make_spec("web", 1))
    assert run(s, ServiceScaled("web", 3), 1) == []


def test_decline_during_backoff_filters_until_the_deadline() -> None:
    s = sched(make_spec("web", 1), backoff_s=10)
    t = launch_one(s, 0)
    run(s, upd(t.task_id, "failed"), 5)
    o = offer("a1")
    eff = run(s, OffersReceived([o]), 8)
    assert eff == [DeclineOffer(o.offer_id, 7.0)]
    assert not s.wants_offers()
    assert run(s, Tick(), 14.9) == []
    assert run(s, Tick(), 15) == [ReviveOffers()]


# --- failures and backoff -------------------------------------------------------------------
def test_failed_instance_is_replaced_after_growing_backoff() -> None:
    s = sched(make_spec("web", 1), backoff_s=2, backoff_factor=2, backoff_max_s=5)
    t = launch_one(s, 0)
    run(s, upd(t.task_id, "failed", message="container exceeded its memory limit (64 MiB)", exit_code=137), 10)
    st = s.status("web")
    assert st.last_failure == "container exceeded its memory limit (64 MiB)"
    assert st.backoff_s == 2 and st.instances == []
    assert tasks(run(s, OffersReceived([offer("a1")]), 11.9)) == []
    t = launch_one(s, 12)
    run(s, upd(t.task_id, "finished", exit_code=0), 13)
    assert s.status("web").backoff_s == 4
    assert s.status("web").last_failure == "finished with exit code 0"
    assert tasks(run(s, OffersReceived([offer("a1")]), 16.9)) == []
    t = launch_one(s, 17)
    run(s, upd(t.task_id, "failed"), 18)
    assert s.status("web").backoff_s == 5  # capped
    assert s.backoff_until("web") == 23


def test_backoff_resets_after_a_new_instance_stays_up() -> None:
    s = sched(make_spec("web", 1), backoff_s=1, backoff_factor=2, backoff_reset_s=60)
    t = launch_one(s, 0)
    run(s, upd(t.task_id, "failed"), 1)
    t = launch_one(s, 2)
    run(s, upd(t.task_id, "failed"), 3)
    assert s.status("web").backoff_s == 2
    t = launch_one(s, 5)
    run(s, upd(t.task_id, "running"), 6)
    run(s, Tick(), 65.9)
    assert s.status("web").backoff_s == 2
    run(s, Tick(), 66)
    assert s.status("web").backoff_s == 0
    assert s.backoff_until("web") == float("-inf")
    assert s.status("web").last_failure == "task failed"  # history stays visible


def test_old_stable_instance_does_not_reset_a_crash_loop() -> None:
    s = sched(make_spec("web", 2), backoff_s=1, backoff_factor=2)
    old = launch_one(s, 0, "a1")
    run(s, upd(old.task_id, "running"), 0)
    t = launch_one(s, 0, "a2")
    run(s, upd(t.task_id, "failed"), 100)
    run(s, Tick(), 100)
    assert s.status("web").backoff_s == 1


def test_health_checked_instance_must_be_healthy_to_reset_backoff() -> None:
    s = sched(make_spec("web", 1, health=CMD_CHECK), backoff_reset_s=10)
    t = launch_one(s, 0)
    run(s, upd(t.task_id, "failed"), 1)
    t = launch_one(s, 2)
    run(s, upd(t.task_id, "running"), 2)
    run(s, Tick(), 50)
    assert s.status("web").backoff_s == 1
    run(s, upd(t.task_id, "running", healthy=True), 50)
    run(s, Tick(), 60)
    assert s.status("web").backoff_s == 0


def test_lost_instance_is_replaced_at_once() -> None:
    s = sched(make_spec("web", 1), backoff_s=30)
    t = launch_one(s, 0)
    run(s, upd(t.task_id, "lost", message="agent a1 lost"), 5)
    assert s.status("web").backoff_s == 0
    assert s.status("web").last_failure == "lost: agent a1 lost"
    assert launch_one(s, 5, "a2").task_id == "web.1"


def test_instances_killed_by_the_scheduler_are_forgotten() -> None:
    s = sched(make_spec("web", 2))
    run(s, OffersReceived([offer("a1"), offer("a2")]), 0)
    eff = run(s, ServiceScaled("web", 1), 1)
    (victim,) = kills(eff)
    run(s, upd(victim, "killed"), 2)
    st = s.status("web")
    assert st.backoff_s == 0 and st.last_failure == "" and len(st.instances) == 1
    assert run(s, upd(victim, "killed"), 3) == []  # a repeated update changes nothing
    assert s.status("web").last_failure == ""


def test_unexpected_kill_counts_as_failure() -> None:
    s = sched(make_spec("web", 1))
    t = launch_one(s, 0)
    run(s, upd(t.task_id, "killed", message="killed by user"), 1)
    assert s.status("web").last_failure == "killed by user"
    assert s.status("web").backoff_s == 1


# --- health --------------------------------------------------------------------------------
def test_unhealthy_instance_is_killed_and_counts_as_failure() -> None:
    s = sched(make_spec("web", 1, ports=1, health=HealthCheck("http", path="/ok")))
    t = launch_one(s, 0)
    run(s, upd(t.task_id, "running", healthy=True), 1)
    assert s.endpoints("web") == ["host-a1:31000"]
    eff = run(s, upd(t.task_id, "running", healthy=False, message="GET /ok returned 500"), 2)
    assert kills(eff) == {t.task_id: "unhealthy"}
    st = s.status("web")
    assert st.last_failure == "health check failed: GET /ok returned 500"
    assert st.backoff_s == 1 and st.instances == [] and s.endpoints("web") == []
    assert tasks(run(s, OffersReceived([offer("a2")]), 2.5)) == []
    assert launch_one(s, 3, "a2").task_id == "web.1"
    assert run(s, upd(t.task_id, "killed"), 4) == []


def test_instance_already_ended_by_its_health_check_is_not_killed_again() -> None:
    s = sched(make_spec("web", 1, health=CMD_CHECK))
    t = launch_one(s, 0)
    eff = run(s, upd(t.task_id, "killed", healthy=False, message="health check failed: exit 1"), 1)
    assert kills(eff) == {}
    assert s.status("web").last_failure == "health check failed: exit 1"
    assert s.status("web").backoff_s == 1


def test_status_counts_and_endpoints() -> None:
    s = sched(make_spec("web", 3, ports=1, health=CMD_CHECK), make_spec("bare", 1, ports=1))
    eff = run(s, OffersReceived([offer("a1", "r1"), offer("a2", "r2"), offer("a3", "r3")]), 0)
    by_id = {t.task_id: t for t in tasks(eff)}
    run(s, upd("web.0", "running", healthy=True, agent=by_id["web.0"].agent_id), 1)
    run(s, upd("web.1", "running", agent=by_id["web.1"].agent_id), 1)  # not checked yet
    run(s, upd("bare.0", "running", agent=by_id["bare.0"].agent_id), 1)
    st = s.status("web")
    assert (st.running, st.healthy) == (2, 1)
    assert [(i.task_id, i.state, i.healthy) for i in st.instances] == [
        ("web.0", "running", True), ("web.1", "running", None), ("web.2", "staging", None)]
    web0 = by_id["web.0"]
    assert s.endpoints("web") == [f"host-{web0.agent_id}:{web0.resources.ports()[0][0]}"]
    assert s.status("bare").healthy == 1
    assert len(s.endpoints("bare")) == 1
    assert [x.spec.name for x in s.list()] == ["bare", "web"]


# --- scaling, staging timeout, kill retries ---------------------------------------------------
def test_scale_down_prefers_staging_then_unhealthy_then_newest() -> None:
    s = sched(make_spec("web", 5, health=CMD_CHECK))
    offers = [offer(f"a{i}", f"r{i}") for i in range(5)]
    placed = {t.task_id: t for t in tasks(run(s, OffersReceived(offers), 0))}
    assert len(placed) == 5
    for tid in ["web.0", "web.1", "web.2"]:
        run(s, upd(tid, "running", healthy=True, agent=placed[tid].agent_id), 1)
    run(s, upd("web.3", "running", agent=placed["web.3"].agent_id), 1)  # health not yet known
    # web.4 still staging
    assert set(kills(run(s, ServiceScaled("web", 4), 2))) == {"web.4"}
    assert set(kills(run(s, ServiceScaled("web", 3), 3))) == {"web.3"}
    assert set(kills(run(s, ServiceScaled("web", 1), 4))) == {"web.1", "web.2"}
    assert [i.task_id for i in s.status("web").instances] == ["web.0"]
    assert s.specs()[0].instances == 1


def test_stuck_staging_instance_is_killed_and_replaced() -> None:
    s = sched(make_spec("web", 1), staging_timeout_s=300)
    t = launch_one(s, 0)
    assert run(s, Tick(), 299) == []
    eff = run(s, Tick(), 300)
    assert kills(eff) == {t.task_id: "staging timeout"}
    assert "did not start" in s.status("web").last_failure
    assert launch_one(s, 301).task_id == "web.1"


def test_kills_are_retried_until_the_task_ends() -> None:
    s = sched(make_spec("web", 1), kill_retry_s=30)
    t = launch_one(s, 0)
    run(s, ServiceRemoved("web"), 1)
    assert kills(run(s, Tick(), 30)) == {}
    assert kills(run(s, Tick(), 31)) == {t.task_id: "service removed"}
    assert kills(run(s, Tick(), 45)) == {}
    run(s, upd(t.task_id, "killed"), 46)
    assert kills(run(s, Tick(), 100)) == {}


def test_removal_kills_every_instance_and_frees_the_name() -> None:
    s = sched(make_spec("web", 2), make_spec("api", 1))
    run(s, OffersReceived([offer("a1"), offer("a2")]), 0)
    eff = run(s, ServiceRemoved("web"), 1)
    assert set(kills(eff)) == {"web.0", "web.1"}
    assert [x.spec.name for x in s.list()] == ["api"]
    with pytest.raises(UnknownService):
        s.status("web")
    run(s, ServiceCreated(make_spec("web", 1)), 2)
    # The old instances still report in while dying: they must not be adopted.
    assert run(s, upd("web.0", "running"), 3) == []
    assert s.status("web").instances == []
    assert set(kills(run(s, Tick(), 31))) == {"web.0", "web.1"}  # still being killed
    assert [x.name for x in s.specs()] == ["api", "web"]


# --- reconciliation --------------------------------------------------------------------------
def test_reported_task_of_known_service_is_adopted() -> None:
    s = sched(make_spec("web", 2, ports=1))
    spec = TaskSpec("web.7", "web", ["sleep", "1000"],
                    Resources.of(cpus=1, mem=128).with_ranges("ports", [(31005, 31005)]), "a3")
    st = TaskStatus("web.7", "running", "a3", FW)
    assert run(s, TaskUpdated(st, spec, host="h3", rack="r3"), 0) == []
    (inst,) = s.status("web").instances
    assert (inst.task_id, inst.host, inst.rack, inst.ports, inst.state) == ("web.7", "h3", "r3", [31005], "running")
    assert s.endpoints("web") == ["h3:31005"]
    assert launch_one(s, 1).task_id == "web.8"


def test_reported_task_of_an_earlier_service_with_the_same_name_is_killed() -> None:
    # "web" was removed and created again with another command while its old
    # instance was still running: after a master restart that instance is an orphan.
    s = sched(make_spec("web", 1))
    old = TaskSpec("web.3", "web", ["old-server"], Resources.of(cpus=1, mem=128), "a3")
    st = TaskStatus("web.3", "running", "a3", FW)
    assert run(s, TaskUpdated(st, old, host="h3", rack="r3"), 0) == [KillTask("web.3", "orphan")]
    assert s.status("web").instances == []


def test_adopting_too_many_kills_the_extras() -> None:
    s = sched(make_spec("web", 1))
    t = launch_one(s, 0)  # web.0, still staging
    assert kills(run(s, upd("web.4", "running", agent="a2"), 1)) == {t.task_id: "scaled down"}
    assert kills(run(s, upd("web.5", "running", agent="a3"), 2)) == {"web.5": "scaled down"}
    assert [i.task_id for i in s.status("web").instances] == ["web.4"]


def test_orphans_are_killed_and_strangers_ignored() -> None:
    s = sched(make_spec("web", 1))
    assert kills(run(s, upd("gone.3", "running"), 0)) == {"gone.3": "orphan"}
    assert kills(run(s, upd("not-a-service-id", "staging"), 0)) == {"not-a-service-id": "orphan"}
    assert run(s, upd("gone.4", "failed"), 0) == []
    assert run(s, upd("web.9", "running", fw="someone-else"), 0) == []
    assert s.status("web").instances == []
    assert run(s, upd("gone.3", "killed"), 1) == []
    assert kills(run(s, Tick(), 100)) == {"not-a-service-id": "orphan"}  # only the live orphan is retried


def test_ended_unknown_task_still_raises_the_counter() -> None:
    s = sched(make_spec("web", 1))
    run(s, upd("web.41", "failed"), 0)
    assert launch_one(s, 1).task_id == "web.42"


# --- validate can fail --------------------------------------------------------------------------
def test_validate_catches_broken_state() -> None:
    s = sched(make_spec("web", 1))
    launch_one(s, 0)
    s._services["web"].spec = make_spec("web", 0)  # keeps 1 instance but wants 0
    with pytest.raises(AssertionError):
        s.validate()
    s = sched(make_spec("web", 1))
    s._services["web"].delay = 1000.0
    with pytest.raises(AssertionError):
        s.validate()


# --- property tests: a toy master and agents around the scheduler ------------------------------
BACKOFF = {"backoff_s": 1.0, "backoff_factor": 2.0, "backoff_max_s": 20.0, "backoff_reset_s": 30.0,
           "staging_timeout_s": 50.0, "kill_retry_s": 10.0}
NAMES = ["api", "db", "web"]


@dataclass
class SimTask:
    spec: TaskSpec
    state: str  # staging | running
    healthy: bool | None = None


class Sim:
    """Agents that run what the scheduler launches and a master that offers free resources.

    Checks, after every step, what no single unit test sees: launches fit their offers and
    every offer is answered once, ids are fresh, no launch beats its backoff deadline, ports
    are never shared on an agent, and a service never has more live instances than it wants
    once the scheduler's own kills are set aside.
    """

    def __init__(self, agents: list[tuple[str, Resources]]) -> None:
        self.agents = {f"a{i}": (rack, total) for i, (rack, total) in enumerate(agents)}
        self.s = ServiceScheduler(framework_id=FW, **BACKOFF)
        self.now = 0.0
        self.live: dict[str, SimTask] = {}
        self.kill_asked: set[str] = set()
        self.seen_ids: set[str] = set()  # task ids launched since the last master restart
        self.offers = 0
        self.filtered: dict[str, float] = {}  # agent -> not offered before (decline filters)
        self.suppressed = False
        self.restarting = False  # agents have not re-reported yet: tasks may be unknown

    # -- driving ---------------------------------------------------------------------------
    def step(self, event: object) -> list[ServiceEffect]:
        deadlines = {st.spec.name: self.s.backoff_until(st.spec.name) for st in self.s.list()}
        try:
            eff = self.s.handle(event, self.now)  # type: ignore[arg-type]
        except (UnknownService, ServiceExists):
            return []
        self.s.validate()
        self.check_effects(event, eff, deadlines)
        self.check_state()
        return eff

    def free(self, agent: str) -> Resources:
        rack, total = self.agents[agent]
        for t in self.live.values():
            if t.spec.agent_id == agent:
                total = total - t.spec.resources
        return total

    def offer(self, agents: list[str]) -> None:
        offers = []
        for a in agents:
            if self.suppressed or self.filtered.get(a, -1.0) > self.now:
                continue  # the master honours decline filters and suppression, until a revive
            free = self.free(a)
            if free.cpus > 0 and free.mem > 0:
                self.offers += 1
                offers.append(Offer(f"offer-{self.offers}", FW, a, f"host-{a}", self.agents[a][0], {}, free))
        if offers:
            self.step(OffersReceived(offers))

    def report(self, task_id: str, state: str, healthy: bool | None = None) -> None:
        t = self.live[task_id]
        if state in ("staging", "running"):
            t.state, t.healthy = state, healthy
        else:
            del self.live[task_id]
        self.step(TaskUpdated(TaskStatus(task_id, state, t.spec.agent_id, FW, f"sim {state}", None, healthy)))  # type: ignore[arg-type]

    def deliver_kills(self) -> None:
        for tid in sorted(self.kill_asked & set(self.live)):
            self.report(tid, "killed")

    def restart_master(self) -> None:
        """A new scheduler from the persisted specs; agents re-report their tasks."""
        specs = self.s.specs()
        self.s = ServiceScheduler(framework_id=FW, **BACKOFF)
        self.filtered, self.suppressed = {}, False
        self.kill_asked = set()  # kills in flight died with the master: the new one must find orphans
        self.seen_ids = set(self.live)
        self.restarting = True
        for sp in specs:
            self.step(ServiceCreated(sp))
        for tid in sorted(self.live):
            t = self.live[tid]
            rack = self.agents[t.spec.agent_id][0]
            st = TaskStatus(tid, t.state, t.spec.agent_id, FW, "", None, t.healthy)  # type: ignore[arg-type]
            self.step(TaskUpdated(st, t.spec, host=f"host-{t.spec.agent_id}", rack=rack))
        self.restarting = False
        self.check_state()

    # -- checks ----------------------------------------------------------------------------
    def check_effects(self, event: object, eff: list[ServiceEffect], deadlines: dict[str, float]) -> None:
        self.kill_asked |= {e.task_id for e in eff if isinstance(e, KillTask)}
        for e in eff:
            if isinstance(e, SuppressOffers):
                self.suppressed = True
            elif isinstance(e, ReviveOffers):
                self.suppressed, self.filtered = False, {}
        answered: list[str] = [e.offer_id for e in eff if isinstance(e, (LaunchTasks, DeclineOffer))]
        if not isinstance(event, OffersReceived):
            assert answered == []
            return
        by_id = {o.offer_id: o for o in event.offers}
        assert sorted(answered) == sorted(by_id), "every offer is answered exactly once"
        for e in eff:
            if isinstance(e, DeclineOffer):
                self.filtered[by_id[e.offer_id].agent_id] = self.now + e.filter_s
            if not isinstance(e, LaunchTasks):
                continue
            o = by_id[e.offer_id]
            assert e.tasks
            used = Resources()
            for t in e.tasks:
                name = t.task_id.rpartition(".")[0]
                assert t.agent_id == o.agent_id and t.name == name
                assert t.task_id not in self.seen_ids and t.task_id not in self.live
                assert self.now >= deadlines.get(name, float("-inf")), f"{t.task_id} launched during backoff"
                sp = self.s.status(name).spec
                assert t.resources.scalar_only() == sp.resources
                assert sum(hi - lo + 1 for lo, hi in t.resources.ports()) == sp.ports
                assert all(o.attributes.get(k, {"rack": o.rack, "hostname": o.host}.get(k)) == v for k, v in sp.constraints)
                used = used + t.resources
                self.seen_ids.add(t.task_id)
                self.live[t.task_id] = SimTask(t, "staging")
            assert o.resources.contains(used), "launches fit their offer"

    def check_state(self) -> None:
        # The scheduler tracks exactly the live tasks it has not given up on.
        kept = {i.task_id for st in self.s.list() for i in st.instances}
        assert kept <= set(self.live), f"ghost instances {kept - set(self.live)}"
        assert self.restarting or set(self.live) - self.kill_asked <= kept, f"forgotten tasks {set(self.live) - self.kill_asked - kept}"
        for st in self.s.list():
            sp = st.spec
            assert st.backoff_s == 0 or BACKOFF["backoff_s"] <= st.backoff_s <= BACKOFF["backoff_max_s"]
            assert len(st.instances) <= sp.instances
            wanted_alive = [t for tid, t in self.live.items() if t.spec.name == sp.name and tid not in self.kill_asked]
            assert self.restarting or len(wanted_alive) <= sp.instances, f"{sp.name} has too many live instances"
        ports: set[tuple[str, int]] = set()
        for t in self.live.values():
            for lo, hi in t.spec.resources.ports():
                for p in range(lo, hi + 1):
                    assert (t.spec.agent_id, p) not in ports
                    ports.add((t.spec.agent_id, p))

    # -- one random action ---------------------------------------------------------------------
    def act(self, action: tuple[str, int, int, float]) -> None:
        kind, a, b, dt = action
        self.now += dt
        live = sorted(self.live)
        pick = live[a % len(live)] if live else None
        if kind == "offer":
            agents = sorted(self.agents)
            self.offer([ag for i, ag in enumerate(agents) if (a >> i) & 1 or len(agents) == 1])
        elif kind == "tick":
            self.step(Tick())
        elif kind == "run" and pick:
            health = self.live[pick].spec.health
            self.report(pick, "running", None if health is None else [None, True, False][b % 3])
        elif kind == "end" and pick:
            self.report(pick, ["failed", "finished", "killed", "lost"][b % 4])
        elif kind == "agent_lost":
            agent = sorted(self.agents)[a % len(self.agents)]
            for tid in [t for t in live if self.live[t].spec.agent_id == agent]:
                self.report(tid, "lost")
        elif kind == "kills":
            self.deliver_kills()
        elif kind == "scale":
            self.step(ServiceScaled(NAMES[a % 3], b % 5))
        elif kind == "remove":
            self.step(ServiceRemoved(NAMES[a % 3]))
        elif kind == "create":
            self.step(ServiceCreated(service_spec(a, b)))
        elif kind == "restart":
            self.restart_master()


def service_spec(a: int, b: int) -> ServiceSpec:
    return ServiceSpec(
        name=NAMES[a % 3], instances=b % 5, command=["serve"],
        resources=Resources.of(cpus=[0.5, 1][a % 2], mem=[64, 128][b % 2]),
        ports=(a // 3) % 3, health=CMD_CHECK if (a // 9) % 2 else None,
        constraints=[("rack", "r0")] if (b // 5) % 3 == 0 else [],
    )


KINDS = ["offer"] * 5 + ["run"] * 4 + ["end"] * 2 + ["tick"] * 2 + ["kills"] * 2 + ["scale"] * 2 + [
    "agent_lost", "remove", "create", "restart"]
actions = hs.lists(
    hs.tuples(hs.sampled_from(KINDS), hs.integers(0, 63), hs.integers(0, 63), hs.sampled_from([0.0, 0.5, 2.0, 7.0, 30.0])),
    min_size=5, max_size=80,
)
initial = hs.lists(hs.tuples(hs.integers(0, 63), hs.integers(0, 63)), min_size=1, max_size=3)


def small_agents(n: int, draw_sizes: list[tuple[int, int, int]]) -> list[tuple[str, Resources]]:
    out = []
    for i, (cpus, mem, nports) in enumerate(draw_sizes[:n]):
        res = Resources.of(cpus=cpus, mem=mem)
        if nports:
            res = res.with_ranges("ports", [(31000 + 100 * i, 31000 + 100 * i + nports - 1)])
        out.append((f"r{i % 3}", res))
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck_.too_slow])
@given(
    sizes=hs.lists(hs.tuples(hs.integers(1, 6), hs.sampled_from([128, 512, 2048]), hs.integers(0, 6)), min_size=1, max_size=5),
    services=initial,
    steps=actions,
)
def test_invariants_hold_under_random_interleavings(sizes: list[tuple[int, int, int]], services: list[tuple[int, int]],
                                                    steps: list[tuple[str, int, int, float]]) -> None:
    sim = Sim(small_agents(len(sizes), sizes))
    for a, b in services:
        sim.step(ServiceCreated(service_spec(a, b)))
    for action in steps:
        sim.act(action)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck_.too_slow])
@given(n_agents=hs.integers(1, 5), services=initial, steps=actions)
def test_converges_once_failures_stop(n_agents: int, services: list[tuple[int, int]],
                                      steps: list[tuple[str, int, int, float]]) -> None:
    # Every agent could hold every instance, so only failures stand in the way.
    sim = Sim([(f"r{i % 3}", Resources.of(cpus=16, mem=4096).with_ranges("ports", [(31000, 31029)]))
               for i in range(n_agents)])
    for a, b in services:
        sim.step(ServiceCreated(service_spec(a, b)))
    for action in steps:
        sim.act(action)
    for _ in range(10):
        sim.now += BACKOFF["backoff_max_s"] + 1
        sim.deliver_kills()
        sim.act(("tick", 0, 0, 0.0))
        sim.offer(sorted(sim.agents))
        for tid in sorted(sim.live):
            t = sim.live[tid]
            if tid not in sim.kill_asked and (t.state == "staging" or (t.spec.health and t.healthy is not True)):
                sim.report(tid, "running", None if t.spec.health is None else True)
    sim.deliver_kills()
    for st_ in sim.s.list():
        assert (st_.running, st_.healthy, len(st_.instances)) == (st_.spec.instances,) * 3, st_
    assert not sim.s.wants_offers()
    assert not sim.kill_asked & set(sim.live)
