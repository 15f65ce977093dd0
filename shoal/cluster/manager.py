"""The master's resource manager: agents, frameworks and tasks around the DRF allocator.

A thin asyncio service (architecture section 3): every decision about who gets which
resources is the pure :class:`~shoal.cluster.offers.ResourceAllocator`'s; this module
keeps the books the allocator does not need (task records, framework event queues,
agent command queues), answers long polls, and turns allocator effects into messages.

Mesos behaviour mirrored:
- Offers are made per agent to the framework with the lowest weighted dominant share;
  resources offered count as allocated until accepted, declined or rescinded.
- An agent silent for ``cluster.agent_timeout_s`` is lost: its tasks become ``lost``,
  their frameworks are told and its resources leave the pool.
- A framework that stops polling for its failover timeout is removed: its tasks are
  killed and its resources return to the pool as the agents confirm each kill.
- Containers an agent reports for a framework the master does not know are killed
  (after a master restart frameworks are not recovered; see docs/resource-manager.md).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import msgspec

from shoal.cluster import offers as a
from shoal.cluster import protocol as p
from shoal.cluster.resources import Resources
from shoal.core.config import ClusterConfig
from shoal.core.rpc import RpcServer
from shoal.core.wire import Empty
from shoal.errors import (
    BadRequest,
    DuplicateTask,
    InvalidResources,
    UnknownAgent,
    UnknownFramework,
    UnknownOffer,
    UnknownTask,
)

ENDED_TASKS_KEPT = 500  # recently ended tasks shown by ``shoal ps --all``
PENDING_EVENTS_MAX = 10_000  # per framework; a framework that never polls is removed first
TASK_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


@dataclass
class AgentRecord:
    info: p.AgentInfo
    last_seen: float
    state: str = "active"  # or "lost"
    commands: list[p.AgentCommand] = field(default_factory=list)
    wake: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class FrameworkRecord:
    framework_id: str
    info: p.FrameworkInfo
    last_seen: float
    offers: dict[str, p.Offer] = field(default_factory=dict)  # made, not yet delivered
    rescinded: list[str] = field(default_factory=list)
    updates: list[p.TaskStatus] = field(default_factory=list)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    removed: str = ""
    internal: bool = False  # hosted in the master (the service scheduler): never times out

    def pending(self) -> bool:
        return bool(self.offers or self.rescinded or self.updates or self.removed)


@dataclass
class TaskRecord:
    spec: p.TaskSpec
    framework_id: str
    status: p.TaskStatus
    started: float  # wall clock

    @property
    def ended(self) -> bool:
        return self.status.state in p.TERMINAL_STATES


class ResourceManager:
    """Master-side bookkeeping for the resource manager; runs on the master's event loop."""

    def __init__(self, config: ClusterConfig, log: logging.Logger, clock=time.monotonic, wall=time.time) -> None:
        self.config = config
        self.log = log
        self.clock = clock
        self.wall = wall
        self.allocator = a.ResourceAllocator(
            offer_timeout_s=config.offer_timeout_s, decline_filter_s=config.decline_filter_s
        )
        self.agents: dict[str, AgentRecord] = {}
        self.frameworks: dict[str, FrameworkRecord] = {}
        self.tasks: dict[str, TaskRecord] = {}
        self.ended: OrderedDict[str, TaskRecord] = OrderedDict()
        self._ids = itertools.count(1)
        self._epoch = format(int(wall() * 1000) % 36**6, "x")
        self._allocate_soon = False
        # Hook for the in-master service framework: called with offers / updates for it.
        self.internal_offers: dict[str, list[p.Offer]] = {}
        self.on_internal_events = lambda framework_id: None
        self.tick_hooks: list = []  # run after each timer tick (the service host's)

    # --- wiring ------------------------------------------------------------------------------
    def register(self, server: RpcServer) -> None:
        for method, handler in {
            p.REGISTER_AGENT: self.register_agent,
            p.AGENT_POLL: self.agent_poll,
            p.STATUS_UPDATE: self.status_update,
            p.REGISTER_FRAMEWORK: self.register_framework,
            p.FRAMEWORK_POLL: self.framework_poll,
            p.ACCEPT: self.accept,
            p.DECLINE: self.decline,
            p.REVIVE: self.revive,
            p.KILL_TASK: self.kill_task,
            p.UNREGISTER: self.unregister,
            p.LIST_CONTAINERS: self.list_containers,
            p.LIST_AGENTS: self.list_agents,
            p.LIST_FRAMEWORKS: self.list_frameworks,
            p.LOCATE_TASK: self.locate_task,
        }.items():
            server.register(method, handler)

    async def run(self, stop: asyncio.Event) -> None:
        """Timers: lost agents, silent frameworks, offer timeouts, allocation rounds."""
        interval = self.config.allocation_interval_s
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), interval)
            except asyncio.TimeoutError:
                pass
            try:
                self.tick()
            except Exception:  # a bug here must not stop the master's other services
                self.log.exception("resource manager tick failed")

    def tick(self) -> None:
        now = self.clock()
        for agent in list(self.agents.values()):
            if agent.state == "active" and now - agent.last_seen > self.config.agent_timeout_s:
                self._agent_lost(agent, f"agent {agent.info.agent_id} lost (no contact for {now - agent.last_seen:.0f}s)")
        for fw in list(self.frameworks.values()):
            timeout = fw.info.failover_timeout_s or self.config.framework_timeout_s
            if not fw.removed and not fw.internal and now - fw.last_seen > timeout:
                self._remove_framework(fw, f"framework did not poll for {timeout:g}s")
        self._apply(self.allocator.handle(a.Tick(), now))
        for hook in self.tick_hooks:
            hook()

    # --- allocator effects ----------------------------------------------------------------------
    def _apply(self, effects: list) -> None:
        touched: set[str] = set()
        for effect in effects:
            if isinstance(effect, a.OfferMade):
                fw = self.frameworks.get(effect.offer.framework_id)
                if fw is None or fw.removed:  # cannot happen: the allocator forgets removed frameworks
                    continue
                fw.offers[effect.offer.offer_id] = effect.offer
                touched.add(fw.framework_id)
            elif isinstance(effect, a.OfferRescinded):
                fw = self.frameworks.get(effect.framework_id)
                if fw is None:
                    continue
                if fw.offers.pop(effect.offer_id, None) is None:
                    fw.rescinded.append(effect.offer_id)  # already delivered: tell the framework
                touched.add(fw.framework_id)
        for fid in touched:
            self._wake_framework(self.frameworks[fid])

    def _wake_framework(self, fw: FrameworkRecord) -> None:
        fw.wake.set()
        if fw.internal and fw.pending():
            self.on_internal_events(fw.framework_id)

    def allocate_soon(self) -> None:
        """Run an allocation round on the next loop iteration (coalesced), so a launch
        does not wait for the next allocation interval."""
        if self._allocate_soon:
            return
        self._allocate_soon = True

        def run() -> None:
            self._allocate_soon = False
            self._apply(self.allocator.handle(a.Allocate(), self.clock()))

        asyncio.get_running_loop().call_soon(run)

    # --- agents ----------------------------------------------------------------------------------
    def register_agent(self, req: p.RegisterAgentReq) -> Empty:
        info = req.info
        now = self.clock()
        old = self.agents.get(info.agent_id)
        if old is not None and old.state == "active":
            # Re-registration (the agent restarted or we told it to): forget its offers first.
            self._apply(self.allocator.handle(a.AgentRemoved(info.agent_id), now))
        record = AgentRecord(info, last_seen=now)
        if old is not None:
            record.wake = old.wake
        self.agents[info.agent_id] = record
        in_use: dict[str, Resources] = {}
        for report in req.containers:
            tid = report.spec.task_id
            known = self.tasks.get(tid)
            fw = self.frameworks.get(report.framework_id)
            adoptable = known is None and tid not in self.ended
            if fw is not None and not fw.removed and (adoptable or (known and known.status.agent_id == info.agent_id)):
                if known is None:
                    # The master restarted and the framework kept its id (the in-master
                    # service scheduler does): adopt the task and tell its framework.
                    self.tasks[tid] = TaskRecord(report.spec, fw.framework_id, report.status, report.status.timestamp)
                    fw.updates.append(report.status)
                    self._wake_framework(fw)
                in_use[fw.framework_id] = in_use.get(fw.framework_id, Resources()) + report.spec.resources
                continue
            # Unknown to this master (it restarted), or already declared lost: the
            # framework has been told it is gone, so it must not keep running.
            record.commands.append(p.KillContainer(tid, "unknown to the master after re-registration"))
        self._apply(
            self.allocator.handle(
                a.AgentAdded(info.agent_id, info.host, info.rack, dict(info.attributes), info.total, in_use), now
            )
        )
        self.log.info("agent %s registered: %s (%s, %d containers)", info.agent_id, info.total.format(),
                      info.isolation, len(req.containers))
        record.wake.set()
        self.allocate_soon()
        return Empty()

    async def agent_poll(self, req: p.AgentPollReq) -> p.AgentPollResp:
        agent = self.agents.get(req.agent_id)
        if agent is None or agent.state != "active":
            return p.AgentPollResp(reregister=True)
        agent.last_seen = self.clock()
        if not agent.commands:
            agent.wake.clear()
            wait_s = max(0.0, min(req.wait_s, self.config.poll_wait_s))
            try:
                await asyncio.wait_for(agent.wake.wait(), wait_s)
            except asyncio.TimeoutError:
                pass
            agent = self.agents.get(req.agent_id)
            if agent is None or agent.state != "active":
                return p.AgentPollResp(reregister=True)
            agent.last_seen = self.clock()
        commands, agent.commands = agent.commands, []
        return p.AgentPollResp(commands=commands)

    def status_update(self, req: p.StatusUpdateReq) -> Empty:
        agent = self.agents.get(req.agent_id)
        if agent is not None and agent.state == "active":
            agent.last_seen = self.clock()
        for status in req.updates:
            self._task_status(status, from_agent=req.agent_id)
        return Empty()

    def _task_status(self, status: p.TaskStatus, from_agent: str) -> None:
        task = self.tasks.get(status.task_id)
        if task is None or task.ended:
            return  # a late or repeated update (the agent resends until acknowledged)
        if from_agent and task.status.agent_id != from_agent:
            return
        status = p.TaskStatus(
            status.task_id, status.state, task.status.agent_id, task.framework_id, status.message,
            status.exit_code, status.healthy, status.timestamp or self.wall(),
        )
        task.status = status
        if task.ended:
            del self.tasks[status.task_id]
            self.ended[status.task_id] = task
            while len(self.ended) > ENDED_TASKS_KEPT:
                self.ended.popitem(last=False)
            self._apply(
                self.allocator.handle(
                    a.ResourcesRecovered(task.framework_id, task.status.agent_id, task.spec.resources), self.clock()
                )
            )
            self.allocate_soon()
        fw = self.frameworks.get(task.framework_id)
        if fw is not None and not fw.removed:
            if len(fw.updates) < PENDING_EVENTS_MAX:
                fw.updates.append(status)
            self._wake_framework(fw)

    def _agent_lost(self, agent: AgentRecord, reason: str) -> None:
        self.log.warning("%s", reason)
        agent.state = "lost"
        agent.commands.clear()
        agent.wake.set()
        self._apply(self.allocator.handle(a.AgentRemoved(agent.info.agent_id), self.clock()))
        for task in [t for t in self.tasks.values() if t.status.agent_id == agent.info.agent_id]:
            self._task_status(p.TaskStatus(task.spec.task_id, "lost", message=reason), from_agent="")

    # --- frameworks --------------------------------------------------------------------------------
    def register_framework(self, info: p.FrameworkInfo, *, internal: bool = False, framework_id: str = "") -> p.FrameworkRegistered:
        if not info.name or len(info.name) > 200:
            raise BadRequest("a framework needs a name of at most 200 characters")
        if not info.weight > 0:
            raise BadRequest(f"framework weight must be positive, got {info.weight:g}")
        fid = framework_id or f"fw-{self._epoch}-{next(self._ids):04d}"
        now = self.clock()
        self.frameworks[fid] = FrameworkRecord(fid, info, last_seen=now, internal=internal)
        self._apply(self.allocator.handle(a.FrameworkAdded(fid, info.role, info.weight), now))
        self.log.info("framework %s registered: %s (role %s, weight %g)", fid, info.name, info.role, info.weight)
        self.allocate_soon()
        return p.FrameworkRegistered(fid)

    def _framework(self, framework_id: str) -> FrameworkRecord:
        fw = self.frameworks.get(framework_id)
        if fw is None or fw.removed:
            reason = f" ({fw.removed})" if fw is not None else ""
            raise UnknownFramework(f"no framework {framework_id!r} is registered{reason}")
        fw.last_seen = self.clock()
        return fw

    async def framework_poll(self, req: p.FrameworkPollReq) -> p.FrameworkEvents:
        fw = self.frameworks.get(req.framework_id)
        if fw is None:
            raise UnknownFramework(f"no framework {req.framework_id!r} is registered")
        if fw.removed:
            return p.FrameworkEvents(removed=fw.removed)
        fw.last_seen = self.clock()
        if not fw.pending():
            fw.wake.clear()
            try:
                await asyncio.wait_for(fw.wake.wait(), max(0.0, min(req.wait_s, self.config.poll_wait_s)))
            except asyncio.TimeoutError:
                pass
            fw.last_seen = self.clock()
        return self.drain(fw)

    def drain(self, fw: FrameworkRecord) -> p.FrameworkEvents:
        events = p.FrameworkEvents(list(fw.offers.values()), fw.rescinded, fw.updates, fw.removed)
        fw.offers, fw.rescinded, fw.updates = {}, [], []
        fw.wake.clear()
        return events

    def accept(self, req: p.AcceptReq) -> Empty:
        fw = self._framework(req.framework_id)
        offers: dict[str, p.Offer] = {}
        for oid in req.offer_ids:
            offer = self.allocator.offer(oid)
            if offer is None or offer.framework_id != fw.framework_id:
                raise UnknownOffer(f"offer {oid} does not exist, was rescinded or is not yours")
            offers[oid] = offer
        by_agent = {o.agent_id: o for o in offers.values()}
        if len(by_agent) != len(offers):
            raise BadRequest("accept at most one offer per agent at a time")
        used: dict[str, Resources] = {oid: Resources() for oid in offers}
        launches: list[p.TaskSpec] = []
        seen: set[str] = set()
        for spec in req.tasks:
            self._check_task(spec, seen)
            agent_id = spec.agent_id or (next(iter(by_agent)) if len(by_agent) == 1 else "")
            offer = by_agent.get(agent_id)
            if offer is None:
                raise BadRequest(f"task {spec.task_id} names agent {spec.agent_id!r}, which none of the offers is for")
            used[offer.offer_id] = used[offer.offer_id] + spec.resources
            launches.append(_with_agent(spec, agent_id))
        for oid, total in used.items():
            if not offers[oid].resources.contains(total):
                raise InvalidResources(
                    f"tasks need {total.format()} but offer {oid} has {offers[oid].resources.format()}"
                )
        now = self.clock()
        for oid, total in used.items():
            self._apply(self.allocator.handle(a.OfferAccepted(fw.framework_id, oid, total, req.filter_s), now))
        wall = self.wall()
        for spec in launches:
            status = p.TaskStatus(spec.task_id, "staging", spec.agent_id, fw.framework_id, "", None, None, wall)
            self.tasks[spec.task_id] = TaskRecord(spec, fw.framework_id, status, wall)
            agent = self.agents[spec.agent_id]
            agent.commands.append(p.LaunchContainer(spec, fw.framework_id))
            agent.wake.set()
        self.allocate_soon()  # what the tasks left unused may go to another framework now
        return Empty()

    def _check_task(self, spec: p.TaskSpec, seen: set[str]) -> None:
        tid = spec.task_id
        if not tid or len(tid) > 200 or not set(tid) <= TASK_ID_CHARS:
            raise BadRequest(f"bad task id {tid!r}: use 1-200 letters, digits, '.', '_' or '-'")
        if tid in self.tasks or tid in self.ended or tid in seen:
            raise DuplicateTask(f"task id {tid!r} is already in use")
        seen.add(tid)
        if not spec.command or not all(spec.command):
            raise BadRequest(f"task {tid} has an empty command")
        if spec.resources.cpus <= 0 or spec.resources.mem <= 0:
            raise InvalidResources(f"task {tid} must ask for some cpus and mem, got {spec.resources.format()}")

    def decline(self, req: p.DeclineReq) -> Empty:
        fw = self._framework(req.framework_id)
        now = self.clock()
        for oid in req.offer_ids:
            offer = self.allocator.offer(oid)
            if offer is None or offer.framework_id != fw.framework_id:
                continue  # declining a rescinded offer is harmless
            self._apply(self.allocator.handle(a.OfferDeclined(fw.framework_id, oid, req.filter_s), now))
        self.allocate_soon()
        return Empty()

    def revive(self, req: p.FrameworkReq) -> Empty:
        fw = self._framework(req.framework_id)
        self._apply(self.allocator.handle(a.FiltersCleared(fw.framework_id), self.clock()))
        self.allocate_soon()
        return Empty()

    def suppress(self, framework_id: str) -> None:
        self._apply(self.allocator.handle(a.OffersSuppressed(framework_id), self.clock()))

    def kill_task(self, req: p.KillTaskReq) -> Empty:
        fw = self._framework(req.framework_id)
        task = self.tasks.get(req.task_id)
        if task is None or task.framework_id != fw.framework_id:
            if req.task_id in self.ended and self.ended[req.task_id].framework_id == fw.framework_id:
                return Empty()  # already ended: killing it again is a no-op, as in Mesos
            raise UnknownTask(f"framework {fw.framework_id} has no task {req.task_id!r}")
        self._kill(task, "killed by its framework")
        return Empty()

    def _kill(self, task: TaskRecord, reason: str) -> None:
        agent = self.agents.get(task.status.agent_id)
        if agent is None or agent.state != "active":
            self._task_status(p.TaskStatus(task.spec.task_id, "lost", message="its agent is gone"), from_agent="")
            return
        agent.commands.append(p.KillContainer(task.spec.task_id, reason))
        agent.wake.set()

    def unregister(self, req: p.FrameworkReq) -> Empty:
        fw = self._framework(req.framework_id)
        self._remove_framework(fw, "unregistered")
        return Empty()

    def _remove_framework(self, fw: FrameworkRecord, reason: str) -> None:
        self.log.info("framework %s (%s) removed: %s", fw.framework_id, fw.info.name, reason)
        fw.removed = reason
        fw.offers.clear()
        fw.wake.set()
        self._apply(self.allocator.handle(a.FrameworkRemoved(fw.framework_id), self.clock()))
        for task in [t for t in self.tasks.values() if t.framework_id == fw.framework_id]:
            self._kill(task, f"framework {fw.info.name} is gone ({reason})")
        self.allocate_soon()

    # --- inspection ------------------------------------------------------------------------------------
    def list_containers(self, _: Empty) -> p.ContainerList:
        rows = [self._container_info(t) for t in self.tasks.values()]
        rows += [self._container_info(t) for t in reversed(self.ended.values())]
        return p.ContainerList(rows)

    def _container_info(self, task: TaskRecord) -> p.ContainerInfo:
        agent = self.agents.get(task.status.agent_id)
        fw = self.frameworks.get(task.framework_id)
        ports = [port for lo, hi in task.spec.resources.ports() for port in range(lo, hi + 1)]
        return p.ContainerInfo(
            task.spec.task_id, task.spec.name, task.status.agent_id, agent.info.host if agent else "",
            agent.info.rack if agent else "", task.framework_id, fw.info.name if fw else "",
            task.spec.resources, agent.info.isolation if agent else "", task.status.state, task.started,
            ports, task.status.healthy, task.status.message,
        )

    def list_agents(self, _: Empty) -> p.AgentList:
        rows = []
        for agent in self.agents.values():
            running = sum(1 for t in self.tasks.values() if t.status.agent_id == agent.info.agent_id)
            available = self.allocator.agent_available(agent.info.agent_id) if agent.state == "active" else Resources()
            rows.append(p.AgentSummary(agent.info, available, agent.state, running))
        return p.AgentList(sorted(rows, key=lambda r: r.info.agent_id))

    def list_frameworks(self, _: Empty) -> p.FrameworkList:
        rows = []
        for fw in self.frameworks.values():
            if fw.removed:
                continue
            tasks = sum(1 for t in self.tasks.values() if t.framework_id == fw.framework_id)
            rows.append(
                p.FrameworkSummary(
                    fw.framework_id, fw.info, self.allocator.allocated(fw.framework_id),
                    self.allocator.dominant_share(fw.framework_id), tasks,
                )
            )
        return p.FrameworkList(rows)

    def locate_task(self, req: p.TaskReq) -> p.TaskLocation:
        task = self.tasks.get(req.task_id) or self.ended.get(req.task_id)
        if task is None:
            raise UnknownTask(f"no task {req.task_id!r}")
        agent = self.agents.get(task.status.agent_id)
        if agent is None:
            raise UnknownAgent(f"task {req.task_id} ran on agent {task.status.agent_id}, which is unknown")
        return p.TaskLocation(req.task_id, agent.info.agent_id, agent.info.host, agent.info.rpc_port, task.status.state)


def _with_agent(spec: p.TaskSpec, agent_id: str) -> p.TaskSpec:
    return spec if spec.agent_id == agent_id else msgspec.structs.replace(spec, agent_id=agent_id)
