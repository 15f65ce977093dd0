"""Hosts the service scheduler (Marathon's role) inside the master as a framework.

The pure :class:`~shoal.cluster.services.ServiceScheduler` decides; this glue feeds it
the offers and task updates the resource manager queues for the in-master framework,
carries out its launches, declines and kills through the same calls an outside
framework makes, and persists the service definitions to ``DIR/services.json``
(Marathon keeps them in ZooKeeper) so a restarted master keeps running them; their
running instances are adopted again as the agents re-register.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path

import msgspec

from shoal.cluster import protocol as p
from shoal.cluster import services as s
from shoal.cluster.manager import ResourceManager
from shoal.core.config import ClusterConfig
from shoal.core.node import write_json_atomic
from shoal.core.rpc import RpcServer
from shoal.core.wire import Empty
from shoal.errors import ShoalError, UnknownTask

FRAMEWORK_ID = "shoal-services"
STATE_FILE = "services.json"
RECONCILE_POLLS = 3  # agent poll intervals to wait for re-reported instances after a restart


class ServiceHost:
    """The in-master framework that keeps services' instances running."""

    def __init__(self, manager: ResourceManager, folder: Path, config: ClusterConfig, log: logging.Logger,
                 clock=time.monotonic) -> None:
        self.manager = manager
        self.path = folder / STATE_FILE
        self.log = log
        self.clock = clock
        self.scheduler = s.ServiceScheduler(
            framework_id=FRAMEWORK_ID, backoff_s=config.backoff_s, backoff_factor=config.backoff_factor,
            backoff_max_s=config.backoff_max_s,
        )
        self._scheduled = False
        manager.register_framework(
            p.FrameworkInfo(name="services", role="services"), internal=True, framework_id=FRAMEWORK_ID
        )
        manager.on_internal_events = self._events_arrived
        loaded = self._load()
        # After a master restart, agents re-register within a poll or two and re-report
        # their running instances; launching before then would duplicate them, so
        # offers are declined until this reconciliation period ends (as Marathon
        # reconciles tasks before it scales).
        self.reconcile_until = clock() + RECONCILE_POLLS * config.poll_wait_s if loaded else 0.0
        for spec in loaded:
            self._handle(s.ServiceCreated(spec))

    def register(self, server: RpcServer) -> None:
        server.register(p.SERVICE_CREATE, self.create)
        server.register(p.SERVICE_SCALE, self.scale)
        server.register(p.SERVICE_LIST, self.list)
        server.register(p.SERVICE_REMOVE, self.remove)
        server.register(p.SERVICE_ENDPOINTS, self.endpoints)

    # --- persistence -------------------------------------------------------------------------------
    def _load(self) -> list[p.ServiceSpec]:
        if not self.path.exists():
            return []
        try:
            return msgspec.json.decode(self.path.read_bytes(), type=list[p.ServiceSpec])
        except (msgspec.DecodeError, OSError) as exc:
            self.log.error("cannot read %s (%s); starting with no services", self.path, exc)
            return []

    def _save(self) -> None:
        write_json_atomic(self.path, json.loads(msgspec.json.encode(self.scheduler.specs())))

    # --- RPC -----------------------------------------------------------------------------------------
    def create(self, spec: p.ServiceSpec) -> p.ServiceStatus:
        self._handle(s.ServiceCreated(spec))
        self._save()
        self.log.info("service %s created (%d instances)", spec.name, spec.instances)
        return self.scheduler.status(spec.name)

    def scale(self, req: p.ServiceScaleReq) -> p.ServiceStatus:
        self._handle(s.ServiceScaled(req.name, req.instances))
        self._save()
        return self.scheduler.status(req.name)

    def list(self, _: Empty) -> p.ServiceList:
        return p.ServiceList(self.scheduler.list())

    def remove(self, req: p.ServiceNameReq) -> Empty:
        self._handle(s.ServiceRemoved(req.name))
        self._save()
        return Empty()

    def endpoints(self, req: p.ServiceNameReq) -> p.Endpoints:
        return p.Endpoints(req.name, self.scheduler.endpoints(req.name))

    # --- driving the scheduler ---------------------------------------------------------------------------
    def tick(self) -> None:
        self._handle(s.Tick())

    def _events_arrived(self, _framework_id: str) -> None:
        """Called inside the manager's bookkeeping: deliver on the next loop turn, so the
        scheduler's calls back into the manager never nest inside its own updates."""
        if self._scheduled:
            return
        self._scheduled = True
        asyncio.get_running_loop().call_soon(self._deliver)

    def _deliver(self) -> None:
        self._scheduled = False
        fw = self.manager.frameworks[FRAMEWORK_ID]
        events = self.manager.drain(fw)
        try:
            for offer_id in events.rescinded:
                self._handle(s.OfferRescinded(offer_id))
            for status in events.updates:
                self._handle(self._update(status))
            if events.offers and self.clock() < self.reconcile_until:
                self.manager.decline(p.DeclineReq(FRAMEWORK_ID, [o.offer_id for o in events.offers], 0.0))
            elif events.offers:
                self._handle(s.OffersReceived(events.offers))
        except Exception:
            self.log.exception("service scheduler failed on an event")

    def _update(self, status: p.TaskStatus) -> s.TaskUpdated:
        task = self.manager.tasks.get(status.task_id) or self.manager.ended.get(status.task_id)
        agent = self.manager.agents.get(status.agent_id)
        return s.TaskUpdated(
            status,
            task.spec if task is not None else None,
            agent.info.host if agent else "",
            agent.info.rack if agent else "",
        )

    def _handle(self, event: s.ServiceEvent) -> None:
        for effect in self.scheduler.handle(event, self.clock()):
            try:
                self._execute(effect)
            except ShoalError as exc:
                self.log.warning("service effect %s failed: %s", type(effect).__name__, exc)

    def _execute(self, effect: s.ServiceEffect) -> None:
        m = self.manager
        if isinstance(effect, s.LaunchTasks):
            try:
                m.accept(p.AcceptReq(FRAMEWORK_ID, [effect.offer_id], effect.tasks, filter_s=1.0))
            except ShoalError as exc:
                # E.g. the offer was rescinded meanwhile: the instances never started.
                for spec in effect.tasks:
                    status = p.TaskStatus(spec.task_id, "lost", spec.agent_id, FRAMEWORK_ID,
                                          f"launch failed: {exc}", timestamp=time.time())
                    self._handle(s.TaskUpdated(status, spec))
                return
            for spec in effect.tasks:
                self.log.info("service task %s launching on %s", spec.task_id, spec.agent_id)
        elif isinstance(effect, s.DeclineOffer):
            m.decline(p.DeclineReq(FRAMEWORK_ID, [effect.offer_id], effect.filter_s))
        elif isinstance(effect, s.KillTask):
            try:
                m.kill_task(p.KillTaskReq(FRAMEWORK_ID, effect.task_id))
            except UnknownTask:
                # The master has no such task (an orphan, or already gone): tell the
                # scheduler it is over so it stops retrying the kill.
                status = p.TaskStatus(effect.task_id, "killed", framework_id=FRAMEWORK_ID,
                                      message="unknown to the master", timestamp=time.time())
                self._handle(s.TaskUpdated(status))
        elif isinstance(effect, s.ReviveOffers):
            m.revive(p.FrameworkReq(FRAMEWORK_ID))
        elif isinstance(effect, s.SuppressOffers):
            m.suppress(FRAMEWORK_ID)
