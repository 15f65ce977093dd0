"""The service scheduler: keeps Marathon-style long-running services alive on offers (pure).

The master hosts it as an in-process framework: its service code turns offers, task
updates, CLI requests and a periodic clock into events for :meth:`ServiceScheduler.handle`
and carries out the effects (launch on an offer, decline with a filter, kill, revive,
suppress). No I/O, no clock, no randomness: ``now`` is an argument.

Marathon behaviour mirrored:

- each service keeps ``instances`` instances; task ids are ``<name>.<n>`` with a
  per-name counter that is never reused (not even after a removed name is reused);
- an instance that fails or finishes is replaced after a per-service backoff delay
  (``backoff_s``, times ``backoff_factor`` per further failure, capped at
  ``backoff_max_s``); the delay is reset once an instance launched after the last
  failure has been running (and healthy, if checked) for ``backoff_reset_s``;
- a lost instance (its agent died) is replaced at once, without backoff;
- a running instance reported unhealthy is killed and counts as a failure;
- an instance staging longer than ``staging_timeout_s`` is killed and counts as a
  failure (Marathon's task launch timeout);
- after a master restart, live tasks named ``<service>.<n>`` are adopted
  (reconciliation) and tasks of unknown services are killed as orphans;
- kills are retried every ``kill_retry_s`` until the task is reported ended;
- unused offers are declined for ``decline_short_s`` while instances wait for
  resources, for the time left while every waiting service backs off, and otherwise
  for ``decline_long_s`` with SuppressOffers; ReviveOffers follows as soon as an
  instance is needed again.

Instances the scheduler is killing (scale down, removal, unhealthy, staging timeout)
no longer count as instances of their service: they are not shown in its status nor
routed to, and a replacement may start before they are gone.
"""

from __future__ import annotations

import builtins
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import msgspec

from shoal.cluster.protocol import (
    InstanceInfo,
    Offer,
    ServiceSpec,
    ServiceStatus,
    TaskSpec,
    TaskState,
    TaskStatus,
)
from shoal.cluster.services_placement import Slot, place
from shoal.errors import BadRequest, InvalidResources, ServiceExists, UnknownService

NAME_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")  # a DNS label
MAX_NAME = 63
LIVE = frozenset({"staging", "running"})
ANSWERED_MEMORY = 10_000  # offer ids remembered to ignore a duplicate delivery


# --- events ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ServiceCreated:
    """A new service to keep running (raises ServiceExists, BadRequest, InvalidResources)."""

    spec: ServiceSpec


@dataclass(frozen=True, slots=True)
class ServiceScaled:
    """Change a service's desired instance count; extras are killed."""

    name: str
    instances: int


@dataclass(frozen=True, slots=True)
class ServiceRemoved:
    """Stop a service: every instance is killed and the name becomes free."""

    name: str


@dataclass(frozen=True, slots=True)
class OffersReceived:
    """A batch of offers; each is answered at once (launched on or declined)."""

    offers: list[Offer]


@dataclass(frozen=True, slots=True)
class OfferRescinded:
    """An offer was withdrawn by the master."""

    offer_id: str


@dataclass(frozen=True, slots=True)
class TaskUpdated:
    """A task's new state. On reconciliation the master may add the task's ``spec``
    (from the agent's container report) and its agent's ``host``/``rack``, so an
    adopted instance keeps its ports and endpoint."""

    status: TaskStatus
    spec: TaskSpec | None = None
    host: str = ""
    rack: str = ""


@dataclass(frozen=True, slots=True)
class Tick:
    """The clock moved: staging timeouts, kill retries, backoff expiry."""


ServiceEvent = (
    ServiceCreated | ServiceScaled | ServiceRemoved | OffersReceived | OfferRescinded | TaskUpdated | Tick
)


# --- effects -----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class LaunchTasks:
    """Accept ``offer_id`` and launch ``tasks`` on it (they fit in the offer, ports included)."""

    offer_id: str
    tasks: list[TaskSpec]


@dataclass(frozen=True, slots=True)
class DeclineOffer:
    """Decline ``offer_id``; the master should not re-offer its resources for ``filter_s``."""

    offer_id: str
    filter_s: float


@dataclass(frozen=True, slots=True)
class KillTask:
    """Kill one task (scale down, removal, unhealthy, staging timeout, orphan)."""

    task_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class ReviveOffers:
    """Clear decline filters and suppression: the scheduler needs resources again."""


@dataclass(frozen=True, slots=True)
class SuppressOffers:
    """Stop sending offers until a revive: the scheduler needs nothing."""


ServiceEffect = LaunchTasks | DeclineOffer | KillTask | ReviveOffers | SuppressOffers
# The class below has a method named ``list``: its signatures use this alias or ``builtins.list``.
Effects = list[ServiceEffect]


# --- state -------------------------------------------------------------------------------------
@dataclass(slots=True)
class _Instance:
    task_id: str
    index: int
    agent_id: str
    host: str
    rack: str
    ports: tuple[int, ...]
    state: TaskState  # staging | running only
    launched_at: float  # when launched, or adopted
    healthy: bool | None = None
    stable_since: float | None = None  # running (and healthy, if checked) since


@dataclass(slots=True)
class _Service:
    spec: ServiceSpec
    delay: float  # the next launch delay once failures > 0
    instances: dict[str, _Instance] = field(default_factory=dict)
    failures: int = 0  # since the last reset
    last_failure_at: float | None = None
    last_failure: str = ""

    def deadline(self) -> float:
        """No launch for this service before this time."""
        return -math.inf if self.last_failure_at is None else self.last_failure_at + self.delay

    def deficit(self) -> int:
        return max(0, self.spec.instances - len(self.instances))


@dataclass(slots=True)
class _Killing:
    service: str  # "" for an orphan of no known service
    agent_id: str
    sent_at: float
    reason: str


def split_task_id(task_id: str) -> tuple[str, int] | None:
    """``"web.3"`` -> ``("web", 3)``; None if the id is not a service task id."""
    name, dot, index = task_id.rpartition(".")
    if not dot or not index.isdigit() or not NAME_RE.fullmatch(name):
        return None
    return name, int(index)


def check_spec(spec: ServiceSpec) -> None:
    """Raise BadRequest / InvalidResources if a service definition cannot be run."""
    if len(spec.name) > MAX_NAME or not NAME_RE.fullmatch(spec.name):
        raise BadRequest(
            f"bad service name {spec.name!r}: use up to {MAX_NAME} lowercase letters, digits and '-',"
            " starting and ending with a letter or digit"
        )
    if spec.instances < 0:
        raise BadRequest(f"instances must be 0 or more, got {spec.instances}")
    if not spec.command or not "".join(spec.command).strip():
        raise BadRequest(f"service {spec.name} has an empty command")
    if spec.resources.cpus <= 0 or spec.resources.mem <= 0:
        raise InvalidResources(f"service {spec.name} must ask for cpus and mem, got {spec.resources.format()}")
    if spec.resources.ranges:
        raise InvalidResources(f"service {spec.name}: give a port count (ports=N), not port ranges")
    if spec.ports < 0:
        raise BadRequest(f"ports must be 0 or more, got {spec.ports}")
    if spec.health is not None and spec.health.kind == "http" and spec.ports < 1:
        raise BadRequest(f"service {spec.name} has an http health check but no port for it to probe")
    for attr, value in spec.constraints:
        if not attr or not value:
            raise BadRequest(f"service {spec.name}: bad constraint {attr}={value}")


class ServiceScheduler:
    """The brain of the service framework: one object, one mutator (:meth:`handle`)."""

    def __init__(
        self,
        *,
        framework_id: str,
        backoff_s: float = 1.0,
        backoff_factor: float = 1.15,
        backoff_max_s: float = 300.0,
        backoff_reset_s: float = 60.0,
        staging_timeout_s: float = 300.0,
        kill_retry_s: float = 30.0,
        decline_short_s: float = 1.0,
        decline_long_s: float = 120.0,
    ) -> None:
        if not (0 < backoff_s <= backoff_max_s) or backoff_factor < 1:
            raise BadRequest("backoff needs 0 < backoff_s <= backoff_max_s and backoff_factor >= 1")
        self.framework_id = framework_id
        self.backoff_s = backoff_s
        self.backoff_factor = backoff_factor
        self.backoff_max_s = backoff_max_s
        self.backoff_reset_s = backoff_reset_s
        self.staging_timeout_s = staging_timeout_s
        self.kill_retry_s = kill_retry_s
        self.decline_short_s = decline_short_s
        self.decline_long_s = decline_long_s
        self._services: dict[str, _Service] = {}
        self._counters: dict[str, int] = {}  # next task index per name; outlives removal
        self._killing: dict[str, _Killing] = {}  # tasks we killed, until they are reported ended
        self._agents: dict[str, tuple[str, str]] = {}  # agent id -> (host, rack), learnt from offers
        self._answered: dict[str, None] = {}  # offer ids already launched on or declined (insertion-ordered)
        self._quiet = False  # we declined with a long filter or suppressed: need a revive to get offers
        self._suppressed = False
        self._now = -math.inf

    # --- the mutator ---------------------------------------------------------------------------
    def handle(self, event: ServiceEvent, now: float) -> Effects:
        """Apply one event at time ``now``; return what the master must do.

        Invalid requests raise (BadRequest, ServiceExists, UnknownService, ...) before
        any state changes.
        """
        if isinstance(event, ServiceCreated):
            check_spec(event.spec)
            if event.spec.name in self._services:
                raise ServiceExists(f"service {event.spec.name} already exists")
        elif isinstance(event, (ServiceScaled, ServiceRemoved)):
            self._service(event.name)
            if isinstance(event, ServiceScaled) and event.instances < 0:
                raise BadRequest(f"instances must be 0 or more, got {event.instances}")
        self._now = now
        out: Effects = []
        if isinstance(event, ServiceCreated):
            self._services[event.spec.name] = _Service(event.spec, delay=self.backoff_s)
            self._counters.setdefault(event.spec.name, 0)
        elif isinstance(event, ServiceScaled):
            svc = self._services[event.name]
            svc.spec = msgspec.structs.replace(svc.spec, instances=event.instances)
            out += self._kill_extras(svc, now)
        elif isinstance(event, ServiceRemoved):
            svc = self._services.pop(event.name)
            for inst in list(svc.instances.values()):
                out.append(self._kill(svc, inst, "service removed", now))
        elif isinstance(event, OffersReceived):
            out += self._on_offers(event.offers, now)
        elif isinstance(event, OfferRescinded):
            pass  # offers are answered within the batch that brought them: none is ever held
        elif isinstance(event, TaskUpdated):
            out += self._on_update(event, now)
        elif isinstance(event, Tick):
            out += self._on_tick(now)
        else:
            raise BadRequest(f"unknown service event {event!r}")
        self._reset_backoffs(now)
        if self._quiet and self._needs_now(now):
            # Offers were filtered or suppressed while we needed nothing; ask for them again.
            self._quiet = self._suppressed = False
            out.append(ReviveOffers())
        return out

    # --- queries -------------------------------------------------------------------------------
    def status(self, name: str) -> ServiceStatus:
        """Current state of one service (its kept instances, backoff and last failure)."""
        svc = self._service(name)
        infos: builtins.list[InstanceInfo] = []
        for inst in sorted(svc.instances.values(), key=lambda i: i.index):
            host, rack = inst.host, inst.rack
            if not host:
                host, rack = self._agents.get(inst.agent_id, ("", rack))
            infos.append(
                InstanceInfo(inst.task_id, inst.agent_id, host, rack, [*inst.ports], inst.state, inst.healthy)
            )
        running = sum(1 for i in svc.instances.values() if i.state == "running")
        healthy = sum(1 for i in svc.instances.values() if self._is_healthy(svc, i))
        backoff = svc.delay if svc.failures else 0.0
        return ServiceStatus(svc.spec, running, healthy, infos, backoff, svc.last_failure)

    def list(self) -> builtins.list[ServiceStatus]:
        """Status of every service, sorted by name."""
        return [self.status(name) for name in sorted(self._services)]

    def endpoints(self, name: str) -> builtins.list[str]:
        """``host:port`` (first port) of each running, healthy (or unchecked) instance."""
        return [
            f"{info.host}:{info.ports[0]}"
            for info in self.status(name).instances
            if info.ports and info.host and info.state == "running"
            and (info.healthy is True or (info.healthy is None and self._services[name].spec.health is None))
        ]

    def specs(self) -> builtins.list[ServiceSpec]:
        """Every service definition (with its current instance count), for persistence."""
        return [self._services[n].spec for n in sorted(self._services)]

    def wants_offers(self) -> bool:
        """True if some service has instances to launch now (as of the last ``now`` seen)."""
        return self._needs_now(self._now)

    def backoff_until(self, name: str) -> float:
        """No instance of ``name`` is launched before this time (``-inf`` if not backing off)."""
        return self._service(name).deadline()

    # --- offers --------------------------------------------------------------------------------
    def _on_offers(self, offers: Sequence[Offer], now: float) -> Effects:
        slots: builtins.list[Slot] = []
        for offer in offers:
            self._agents[offer.agent_id] = (offer.host, offer.rack)
            if offer.offer_id in self._answered or any(s.offer.offer_id == offer.offer_id for s in slots):
                continue  # a duplicate delivery: it was answered already
            slots.append(Slot(offer, offer.resources))
        launches: dict[str, builtins.list[TaskSpec]] = {}
        for name in sorted(self._services):
            svc = self._services[name]
            if not svc.deficit() or now < svc.deadline():
                continue
            per_agent: dict[str, int] = {}
            per_rack: dict[str, int] = {}
            for inst in svc.instances.values():
                rack = inst.rack or self._agents.get(inst.agent_id, ("", ""))[1]
                per_agent[inst.agent_id] = per_agent.get(inst.agent_id, 0) + 1
                per_rack[rack] = per_rack.get(rack, 0) + 1
            spec = svc.spec
            for p in place(svc.deficit(), spec.resources, spec.ports, spec.constraints, slots, per_agent, per_rack):
                index = self._counters[name]
                self._counters[name] = index + 1
                task_id = f"{name}.{index}"
                task = TaskSpec(task_id, name, list(spec.command), p.resources, p.offer.agent_id, spec.shell,
                                dict(spec.env), spec.health)
                launches.setdefault(p.offer.offer_id, []).append(task)
                svc.instances[task_id] = _Instance(task_id, index, p.offer.agent_id, p.offer.host, p.offer.rack,
                                                   p.ports, "staging", now)
        out: Effects = []
        unused: builtins.list[str] = []
        for slot in slots:
            self._remember(slot.offer.offer_id)
            if slot.used:
                out.append(LaunchTasks(slot.offer.offer_id, launches[slot.offer.offer_id]))
            else:
                unused.append(slot.offer.offer_id)
        if unused:
            out += self._decline(unused, now)
        return out

    def _decline(self, offer_ids: Sequence[str], now: float) -> Effects:
        """Decline unused offers: briefly if we still need resources, else for long."""
        out: Effects = []
        waiting = [s.deadline() - now for s in self._services.values() if s.deficit()]
        if self._needs_now(now):
            filter_s = self.decline_short_s
        elif waiting:
            # Backing off: no need to see these agents again before the earliest deadline.
            filter_s = min(max(min(waiting), self.decline_short_s), self.decline_long_s)
            self._quiet = self._quiet or filter_s > self.decline_short_s
        else:
            filter_s = self.decline_long_s
            self._quiet = True
            if not self._suppressed:
                self._suppressed = True
                out.append(SuppressOffers())
        return [DeclineOffer(oid, filter_s) for oid in offer_ids] + out

    def _remember(self, offer_id: str) -> None:
        self._answered[offer_id] = None
        if len(self._answered) > ANSWERED_MEMORY:
            del self._answered[next(iter(self._answered))]

    # --- task updates --------------------------------------------------------------------------
    def _on_update(self, ev: TaskUpdated, now: float) -> Effects:
        st = ev.status
        tid = st.task_id
        if tid in self._killing:
            if st.state not in LIVE:
                del self._killing[tid]  # the kill (or the task's own end) is done: forget it
            return []
        parsed = split_task_id(tid)
        svc = self._services.get(parsed[0]) if parsed else None
        if svc is not None and tid in svc.instances:
            return self._on_instance_update(svc, svc.instances[tid], ev, now)
        if st.framework_id and st.framework_id != self.framework_id:
            return []  # not one of ours
        if parsed:
            # Never reuse an id seen on the cluster, even one we are about to kill.
            self._counters[parsed[0]] = max(self._counters.get(parsed[0], 0), parsed[1] + 1)
        if st.state not in LIVE:
            return []  # an ended task we do not track: nothing to do
        if svc is None or not parsed or (ev.spec is not None and not _launched_from(svc.spec, ev.spec)):
            # An orphan, e.g. of a service removed while the master was down, or of an
            # earlier service of the same name (another command, size or health check).
            self._killing[tid] = _Killing("", st.agent_id, now, "orphan")
            return [KillTask(tid, "orphan")]
        # Reconciliation: the master restarted and the agent re-reported this task.
        host, rack = ev.host, ev.rack
        if not host:
            host, rack = self._agents.get(st.agent_id, ("", rack))
        ports: tuple[int, ...] = ()
        if ev.spec is not None:
            ports = tuple(p for lo, hi in ev.spec.resources.ports() for p in range(lo, hi + 1))
        inst = _Instance(tid, parsed[1], st.agent_id, host, rack, ports, st.state, now)
        svc.instances[tid] = inst
        out = self._on_instance_update(svc, inst, ev, now)
        if tid in svc.instances:
            out += self._kill_extras(svc, now)
        return out

    def _on_instance_update(self, svc: _Service, inst: _Instance, ev: TaskUpdated, now: float) -> Effects:
        st = ev.status
        if st.agent_id and not inst.agent_id:
            inst.agent_id = st.agent_id
        if st.state == "staging":
            return []
        if st.state == "running":
            inst.state = "running"
            if st.healthy is not None:
                inst.healthy = st.healthy
            if inst.healthy is False:
                # Marathon kills a task whose health check fails and counts it as a failure.
                self._record_failure(svc, _describe_end(st), now)
                return [self._kill(svc, inst, "unhealthy", now)]
            if svc.spec.health is None or inst.healthy is True:
                if inst.stable_since is None:
                    inst.stable_since = now
            return []
        del svc.instances[inst.task_id]
        if st.state == "lost":
            svc.last_failure = f"lost: {st.message or 'its agent was lost'}"  # replaced at once, no backoff
        else:
            self._record_failure(svc, _describe_end(st), now)
        return []

    def _record_failure(self, svc: _Service, message: str, now: float) -> None:
        """One more failure: grow the delay (from backoff_s, capped) and restart the clock."""
        svc.delay = self.backoff_s if svc.failures == 0 else min(svc.delay * self.backoff_factor, self.backoff_max_s)
        svc.failures += 1
        svc.last_failure_at = now
        svc.last_failure = message

    def _reset_backoffs(self, now: float) -> None:
        # Reset once an instance launched after the last failure has stayed up a while:
        # stable old instances say nothing about whether a crash-looping one was fixed.
        for svc in self._services.values():
            if svc.last_failure_at is None:
                continue
            for inst in svc.instances.values():
                if (inst.stable_since is not None and inst.launched_at >= svc.last_failure_at
                        and now - inst.stable_since >= self.backoff_reset_s):
                    svc.failures, svc.last_failure_at, svc.delay = 0, None, self.backoff_s
                    break

    # --- timers --------------------------------------------------------------------------------
    def _on_tick(self, now: float) -> Effects:
        out: Effects = []
        for svc in self._services.values():
            for inst in list(svc.instances.values()):
                if inst.state == "staging" and now - inst.launched_at >= self.staging_timeout_s:
                    self._record_failure(svc, f"task did not start within {self.staging_timeout_s:g}s", now)
                    out.append(self._kill(svc, inst, "staging timeout", now))
        for tid, k in self._killing.items():
            if now - k.sent_at >= self.kill_retry_s:
                k.sent_at = now  # the kill or its answer may have been lost: Marathon retries kills
                out.append(KillTask(tid, k.reason))
        return out

    # --- kills ---------------------------------------------------------------------------------
    def _kill(self, svc: _Service, inst: _Instance, reason: str, now: float) -> KillTask:
        del svc.instances[inst.task_id]
        self._killing[inst.task_id] = _Killing(svc.spec.name, inst.agent_id, now, reason)
        return KillTask(inst.task_id, reason)

    def _kill_extras(self, svc: _Service, now: float) -> Effects:
        """Kill instances above the desired count: staging first, then unhealthy, then newest."""
        extra = len(svc.instances) - svc.spec.instances
        if extra <= 0:
            return []

        def key(i: _Instance) -> tuple[int, float, int]:
            rank = 0 if i.state == "staging" else 2 if self._is_healthy(svc, i) else 1
            return (rank, -i.launched_at, -i.index)

        victims = sorted(svc.instances.values(), key=key)[:extra]
        return [self._kill(svc, inst, "scaled down", now) for inst in victims]

    # --- helpers -------------------------------------------------------------------------------
    def _service(self, name: str) -> _Service:
        svc = self._services.get(name)
        if svc is None:
            raise UnknownService(f"no service named {name!r}")
        return svc

    @staticmethod
    def _is_healthy(svc: _Service, inst: _Instance) -> bool:
        return inst.state == "running" and (inst.healthy is True or (svc.spec.health is None and inst.healthy is None))

    def _needs_now(self, now: float) -> bool:
        return any(s.deficit() and now >= s.deadline() for s in self._services.values())

    # --- invariants ----------------------------------------------------------------------------
    def validate(self) -> None:
        """Check every invariant; raise ``AssertionError`` naming the first broken one."""

        def check(ok: bool, message: str) -> None:
            if not ok:
                raise AssertionError(f"service scheduler invariant broken: {message}")

        for name, svc in self._services.items():
            check(svc.spec.name == name, f"{name} is filed under the wrong name")
            check(len(svc.instances) <= svc.spec.instances, f"{name} keeps more instances than it wants")
            in_range = self.backoff_s - 1e-9 <= svc.delay <= self.backoff_max_s + 1e-9
            check(in_range, f"{name} delay {svc.delay} is outside [backoff_s, backoff_max_s]")
            check((svc.failures == 0) == (svc.last_failure_at is None), f"{name} failure count and time disagree")
            for tid, inst in svc.instances.items():
                check(tid == inst.task_id == f"{name}.{inst.index}", f"{tid} has a malformed id")
                check(inst.index < self._counters.get(name, 0), f"{tid} is at or above its name's counter")
                check(inst.state in LIVE, f"{tid} is kept in state {inst.state}")
                check(tid not in self._killing, f"{tid} is both kept and being killed")
                check(inst.stable_since is None or inst.state == "running", f"{tid} is stable but not running")
        for tid, k in self._killing.items():
            parsed = split_task_id(tid)
            if parsed and k.service:
                check(parsed[1] < self._counters.get(parsed[0], 0), f"killed {tid} is at or above its counter")
        check(not (self._quiet and self._needs_now(self._now)), "offers are filtered though instances are needed")
        check(not self._suppressed or self._quiet, "suppressed but not quiet")
        check(len(self._answered) <= ANSWERED_MEMORY, "too many answered offers remembered")


def _describe_end(st: TaskStatus) -> str:
    """Why an instance failed, for ``ServiceStatus.last_failure``."""
    if st.healthy is False and not st.message.startswith("health check failed"):
        return "health check failed" + (f": {st.message}" if st.message else "")
    if st.message:
        return st.message
    if st.exit_code is not None:
        return f"{st.state} with exit code {st.exit_code}"
    return f"task {st.state}"


def _launched_from(spec: ServiceSpec, task: TaskSpec) -> bool:
    """Whether a re-reported task could have been launched for ``spec`` (Marathon
    adopts only instances of the app version it knows)."""
    want = spec.resources
    return (list(task.command) == list(spec.command) and task.shell == spec.shell and task.health == spec.health
            and task.resources.cpus == want.cpus and task.resources.get("mem") == want.get("mem"))
