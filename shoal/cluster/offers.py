"""Mesos-style resource offers, shared fairly by weighted DRF (pure).

The :class:`ResourceAllocator` is the core of the master's resource manager. Like
Mesos' hierarchical allocator (here with a single level), an allocation round walks
the agents that have resources to spare and offers *all* of an agent's available
resources to the framework first in the fair order: lowest weighted dominant share
(:mod:`shoal.cluster.drf`; offered resources count as allocated, as in Mesos), ties to
the earlier-registered framework. Frameworks accept part of an offer (the rest returns
to the pool), decline it, or let it time out; a decline or a partial accept may set a
*filter* that keeps that agent from the framework for a while (Mesos' refuse_seconds).

Differences from Mesos, on purpose:

- Roles are recorded but are labels only: the fair order is one level, over
  frameworks, by weight (Mesos sorts roles first, then frameworks within a role).
- Agents are visited in registration order, not shuffled, so rounds are reproducible.
- An agent has at most one outstanding offer: while it is offered, resources freed on
  it wait until the offer is accepted, declined or rescinded. So an agent's resources
  are offered to at most one framework at a time.
- A filter covers the whole agent for that framework, not only the declined resources.

Cluster-wide sums (:meth:`ResourceAllocator.allocated`, :meth:`cluster_total`) hold
scalar kinds only: ports are per agent and do not add up across agents.

The core does no I/O; time comes in as the ``now`` argument of :meth:`handle`, which
is assumed not to go backwards.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field


from shoal.cluster.allocator_events import (  # re-exported: callers use offers.X
    AgentAdded,
    AgentRemoved,
    Allocate,
    AllocatorEffect,
    AllocatorEvent,
    FiltersCleared,
    FrameworkAdded,
    FrameworkRemoved,
    OfferAccepted,
    OfferDeclined,
    OfferMade,
    OfferRescinded,
    OffersSuppressed,
    ResourcesRecovered,
    Tick,
)
from shoal.cluster.drf import fair_order_key
from shoal.cluster.protocol import Offer
from shoal.cluster.resources import SCALE, Resources, intersection, normalized, range_count
from shoal.errors import BadRequest, InvalidResources, UnknownAgent, UnknownFramework, UnknownOffer

# Mesos only offers an agent whose spare resources reach MIN_CPUS or MIN_MEM.
MIN_OFFER_CPUS = 0.01
MIN_OFFER_MEM = 32.0
EMPTY = Resources()


# --- state -----------------------------------------------------------------------------
ACTIVE = "active"
REMOVED = "removed"  # torn down; kept only while its tasks still hold resources
UNREGISTERED = "unregistered"  # known from an agent's in_use before it (re-)registered


@dataclass(slots=True, eq=False)
class _Agent:
    agent_id: str
    host: str
    rack: str
    attributes: dict[str, str]
    total: Resources
    in_use: dict[str, Resources]  # framework id -> what its tasks hold here (never empty)
    seq: int  # registration order: the order rounds visit agents in
    available: Resources = EMPTY  # neither offered nor in use
    offer_id: str | None = None  # the one outstanding offer of this agent, if any


@dataclass(slots=True, eq=False)
class _Framework:
    framework_id: str
    role: str
    weight: float
    seq: int  # registration order: the tie-break of the fair order
    state: str
    suppressed: bool = False
    alloc: dict[str, int] = field(default_factory=dict)  # offered + in use, scalars, 1/SCALE units
    share: float = 0.0  # weighted dominant share of alloc (cached)
    filters: dict[str, float] = field(default_factory=dict)  # agent id -> filtered while now < value
    agents: set[str] = field(default_factory=set)  # agents where it has resources in use
    offers: dict[str, None] = field(default_factory=dict)  # outstanding offer ids, in order made


@dataclass(slots=True, eq=False)
class _Outstanding:
    offer: Offer
    made_at: float


def _bump(acc: dict[str, int], res: Resources, sign: int) -> None:
    """acc += sign * res (scalar kinds, exact units); zero entries are dropped."""
    for k, v in res.scalars.items():
        n = acc.get(k, 0) + sign * round(v * SCALE)
        if n:
            acc[k] = n
        else:
            del acc[k]


def offerable(res: Resources) -> bool:
    """Enough to be worth an offer (Mesos' MIN_CPUS / MIN_MEM)."""
    return res.scalars.get("cpus", 0.0) >= MIN_OFFER_CPUS or res.scalars.get("mem", 0.0) >= MIN_OFFER_MEM


class ResourceAllocator:
    """Offers agents' resources to frameworks in weighted-DRF order (see the module doc).

    ``offer_timeout_s``: an offer unanswered this long is rescinded on the next Tick
    (0 or infinity: never). ``decline_filter_s``: the filter used when a decline or
    accept asks for the default (``filter_s < 0``); Mesos' default is 5 s.
    """

    def __init__(self, *, offer_timeout_s: float, decline_filter_s: float, offer_id_prefix: str = "o-") -> None:
        if math.isnan(offer_timeout_s) or offer_timeout_s < 0:
            raise BadRequest(f"offer_timeout_s must be >= 0, got {offer_timeout_s!r}")
        if math.isnan(decline_filter_s) or decline_filter_s < 0:
            raise BadRequest(f"decline_filter_s must be >= 0, got {decline_filter_s!r}")
        self.offer_timeout_s = offer_timeout_s
        self.decline_filter_s = decline_filter_s
        self._prefix = offer_id_prefix
        self._agents: dict[str, _Agent] = {}
        self._fws: dict[str, _Framework] = {}
        self._offers: dict[str, _Outstanding] = {}  # in the order made (now never goes back)
        self._free: set[str] = set()  # agents with no outstanding offer and offerable spare resources
        self._total: dict[str, int] = {}  # sum of agent totals, scalar kinds, 1/SCALE units
        self._shares_stale = False  # the total changed: every cached share must be recomputed
        self._filter_heap: list[tuple[float, str, str]] = []  # (until, framework, agent), lazily pruned
        self._offer_seq = 0
        self._agent_seq = 0
        self._fw_seq = 0
        self._dispatch = {
            AgentAdded: self._agent_added, AgentRemoved: self._agent_removed,
            FrameworkAdded: self._framework_added, FrameworkRemoved: self._framework_removed,
            OfferAccepted: self._offer_accepted, OfferDeclined: self._offer_declined,
            ResourcesRecovered: self._recovered, FiltersCleared: self._filters_cleared,
            OffersSuppressed: self._suppressed, Allocate: self._allocate_event, Tick: self._tick,
        }

    # --- the one mutator -------------------------------------------------------------
    def handle(self, event: AllocatorEvent, now: float) -> list[AllocatorEffect]:
        """Apply one event at time ``now``; returns the offers made and rescinded.
        A rejected event (an exception) leaves the state unchanged."""
        fn = self._dispatch.get(type(event))
        if fn is None:
            raise TypeError(f"not an allocator event: {event!r}")
        return fn(event, now)

    # --- queries -----------------------------------------------------------------------
    def offer(self, offer_id: str) -> Offer | None:
        out = self._offers.get(offer_id)
        return out.offer if out else None

    def offers_for(self, framework_id: str) -> list[Offer]:
        """Outstanding offers to a framework, oldest first."""
        fw = self._fws.get(framework_id)
        return [self._offers[o].offer for o in fw.offers] if fw else []

    def agent_available(self, agent_id: str) -> Resources:
        """Resources of the agent neither offered nor in use."""
        return self._agent(agent_id).available

    def agent_total(self, agent_id: str) -> Resources:
        return self._agent(agent_id).total

    def in_use(self, framework_id: str, agent_id: str) -> Resources:
        """What the framework's tasks hold on one agent (ports included)."""
        agent = self._agents.get(agent_id)
        return agent.in_use.get(framework_id, EMPTY) if agent else EMPTY

    def allocated(self, framework_id: str) -> Resources:
        """Offered + in use, scalar kinds, summed over agents (empty if unknown)."""
        fw = self._fws.get(framework_id)
        return Resources.of({k: v / SCALE for k, v in fw.alloc.items()}) if fw else EMPTY

    def dominant_share(self, framework_id: str) -> float:
        """Weighted dominant share over the cluster total (0 if unknown)."""
        fw = self._fws.get(framework_id)
        if fw is None:
            return 0.0
        self._refresh_shares()
        return fw.share

    def cluster_total(self) -> Resources:
        """Sum of agent totals, scalar kinds."""
        return Resources.of({k: v / SCALE for k, v in self._total.items()})

    def framework_state(self, framework_id: str) -> str | None:
        """"active", "removed" (still holding resources), "unregistered" or None."""
        fw = self._fws.get(framework_id)
        return fw.state if fw else None

    def _agent(self, agent_id: str) -> _Agent:
        agent = self._agents.get(agent_id)
        if agent is None:
            raise UnknownAgent(f"no agent {agent_id!r}")
        return agent

    # --- agents ------------------------------------------------------------------------
    def _agent_added(self, ev: AgentAdded, now: float) -> list[AllocatorEffect]:
        total = normalized(ev.total, f"agent {ev.agent_id} total")
        in_use: dict[str, Resources] = {}
        held = EMPTY
        ports = 0
        for fid, res in ev.in_use.items():
            res = normalized(res, f"agent {ev.agent_id} in use by {fid}")
            if res.is_empty():
                continue
            in_use[fid] = res
            held += res
            ports += sum(range_count(r) for r in res.ranges.values())
        if not total.contains(held) or ports != sum(range_count(r) for r in held.ranges.values()):
            raise InvalidResources(
                f"agent {ev.agent_id}: resources in use ({held.format()}) do not fit in its total ({total.format()})"
            )
        effects: list[AllocatorEffect] = []
        before: list[_Framework] = []
        if ev.agent_id in self._agents:
            before = [self._fws[fid] for fid in self._agents[ev.agent_id].in_use]
            effects = self._drop_agent(ev.agent_id, "agent re-registered", forget=False)
        self._agent_seq += 1
        agent = _Agent(ev.agent_id, ev.host, ev.rack, dict(ev.attributes), total, in_use, self._agent_seq, total - held)
        self._agents[ev.agent_id] = agent
        for fid, res in in_use.items():
            fw = self._fws.get(fid)
            if fw is None:  # its framework has not (re-)registered yet, e.g. after a master failover
                self._fw_seq += 1
                fw = self._fws[fid] = _Framework(fid, "", 1.0, self._fw_seq, UNREGISTERED)
            fw.agents.add(ev.agent_id)
            self._add_alloc(fw, res, 1)
        for fw in before:  # a removed framework whose tasks are not in the new report
            self._maybe_forget(fw)
        self._add_total(total, 1)
        self._refresh_free(agent)
        return effects

    def _agent_removed(self, ev: AgentRemoved, now: float) -> list[AllocatorEffect]:
        self._agent(ev.agent_id)
        return self._drop_agent(ev.agent_id, "agent removed")

    def _drop_agent(self, agent_id: str, reason: str, forget: bool = True) -> list[AllocatorEffect]:
        agent = self._agents[agent_id]
        effects: list[AllocatorEffect] = []
        if agent.offer_id is not None:
            effects.append(self._rescind(agent.offer_id, reason))
        for fid, res in agent.in_use.items():
            fw = self._fws[fid]
            fw.agents.discard(agent_id)
            self._add_alloc(fw, res, -1)
            if forget:
                self._maybe_forget(fw)
        for fw in self._fws.values():
            fw.filters.pop(agent_id, None)
        self._add_total(agent.total, -1)
        self._free.discard(agent_id)
        del self._agents[agent_id]
        return effects

    # --- frameworks --------------------------------------------------------------------
    def _framework_added(self, ev: FrameworkAdded, now: float) -> list[AllocatorEffect]:
        if isinstance(ev.weight, bool) or not isinstance(ev.weight, (int, float)) or not (
            ev.weight > 0 and math.isfinite(ev.weight)
        ):
            raise InvalidResources(f"framework {ev.framework_id}: weight must be a positive number, got {ev.weight!r}")
        fw = self._fws.get(ev.framework_id)
        if fw is not None and fw.state == REMOVED:
            raise BadRequest(f"framework {ev.framework_id} was removed; register under a new id")
        if fw is None:
            self._fw_seq += 1
            fw = self._fws[ev.framework_id] = _Framework(ev.framework_id, ev.role, ev.weight, self._fw_seq, ACTIVE)
        elif fw.state == UNREGISTERED:
            self._fw_seq += 1  # its registration, not the agent report, sets its place in ties
            fw.seq = self._fw_seq
        fw.state = ACTIVE
        fw.role = ev.role
        fw.weight = float(ev.weight)
        fw.share = self._share(fw)
        return []

    def _framework_removed(self, ev: FrameworkRemoved, now: float) -> list[AllocatorEffect]:
        fw = self._fws.get(ev.framework_id)
        if fw is None:
            raise UnknownFramework(f"no framework {ev.framework_id!r}")
        if fw.state == REMOVED:
            return []
        effects: list[AllocatorEffect] = [self._rescind(o, "framework removed") for o in list(fw.offers)]
        fw.state = REMOVED
        fw.filters.clear()
        self._compact_filter_heap()
        self._maybe_forget(fw)
        return effects

    def _active(self, framework_id: str) -> _Framework:
        fw = self._fws.get(framework_id)
        if fw is None or fw.state != ACTIVE:
            raise UnknownFramework(f"no registered framework {framework_id!r}")
        return fw

    def _filters_cleared(self, ev: FiltersCleared, now: float) -> list[AllocatorEffect]:
        fw = self._active(ev.framework_id)
        fw.filters.clear()
        fw.suppressed = False
        self._compact_filter_heap()
        return []

    def _suppressed(self, ev: OffersSuppressed, now: float) -> list[AllocatorEffect]:
        # Like Mesos, outstanding offers stay; only new offers stop.
        self._active(ev.framework_id).suppressed = True
        return []

    def _maybe_forget(self, fw: _Framework) -> None:
        if fw.state != ACTIVE and not fw.agents and not fw.offers:
            del self._fws[fw.framework_id]

    # --- offers ------------------------------------------------------------------------
    def _take_offer(self, framework_id: str, offer_id: str, filter_s: float) -> tuple[_Framework, Offer]:
        out = self._offers.get(offer_id)
        if out is None or out.offer.framework_id != framework_id:
            raise UnknownOffer(f"no outstanding offer {offer_id!r} to framework {framework_id!r}")
        if isinstance(filter_s, bool) or not isinstance(filter_s, (int, float)) or math.isnan(filter_s):
            raise BadRequest(f"filter_s must be a number, got {filter_s!r}")
        return self._fws[framework_id], out.offer

    def _offer_accepted(self, ev: OfferAccepted, now: float) -> list[AllocatorEffect]:
        fw, offer = self._take_offer(ev.framework_id, ev.offer_id, ev.filter_s)
        used = normalized(ev.used, f"offer {ev.offer_id}")
        try:
            rest = offer.resources - used  # checks that the offer contains it
        except InvalidResources:
            raise InvalidResources(
                f"offer {ev.offer_id} holds {offer.resources.format()}; it cannot cover {used.format()}"
            ) from None
        self._close_offer(offer, rest)
        if not used.is_empty():
            agent = self._agents[offer.agent_id]
            held = agent.in_use.get(fw.framework_id)
            agent.in_use[fw.framework_id] = used if held is None else held + used
            fw.agents.add(agent.agent_id)
        if not rest.is_empty():  # nothing declined, nothing to filter
            self._filter(fw, offer.agent_id, ev.filter_s, now)
        return []

    def _offer_declined(self, ev: OfferDeclined, now: float) -> list[AllocatorEffect]:
        fw, offer = self._take_offer(ev.framework_id, ev.offer_id, ev.filter_s)
        self._close_offer(offer, offer.resources)
        self._filter(fw, offer.agent_id, ev.filter_s, now)
        return []

    def _close_offer(self, offer: Offer, returned: Resources) -> None:
        """Forget an outstanding offer; ``returned`` (part of it) goes back to the pool."""
        del self._offers[offer.offer_id]
        fw = self._fws[offer.framework_id]
        del fw.offers[offer.offer_id]
        self._add_alloc(fw, returned, -1)
        agent = self._agents[offer.agent_id]
        agent.offer_id = None
        if agent.available.is_empty():  # the usual case: nothing was freed while it was offered
            agent.available = returned
        elif not returned.is_empty():
            agent.available = agent.available + returned
        self._refresh_free(agent)

    def _rescind(self, offer_id: str, reason: str) -> OfferRescinded:
        offer = self._offers[offer_id].offer
        self._close_offer(offer, offer.resources)
        return OfferRescinded(offer_id, offer.framework_id, reason)

    def _filter(self, fw: _Framework, agent_id: str, filter_s: float, now: float) -> None:
        seconds = self.decline_filter_s if filter_s < 0 else filter_s
        if seconds > 0:
            until = now + seconds
            fw.filters[agent_id] = until
            heapq.heappush(self._filter_heap, (until, fw.framework_id, agent_id))

    def _recovered(self, ev: ResourcesRecovered, now: float) -> list[AllocatorEffect]:
        fw = self._fws.get(ev.framework_id)
        agent = self._agents.get(ev.agent_id)
        if fw is None or agent is None:  # already gone with its agent or framework
            return []
        held = agent.in_use.get(fw.framework_id)
        if held is None:
            return []
        # Return at most what it holds: a late or duplicate report never goes negative.
        take = intersection(normalized(ev.resources, "recovered resources"), held)
        if take.is_empty():
            return []
        rest = held - take
        if rest.is_empty():
            del agent.in_use[fw.framework_id]
            fw.agents.discard(agent.agent_id)
        else:
            agent.in_use[fw.framework_id] = rest
        self._add_alloc(fw, take, -1)
        agent.available = agent.available + take
        self._refresh_free(agent)
        self._maybe_forget(fw)
        return []

    # --- time --------------------------------------------------------------------------
    def _tick(self, ev: Tick, now: float) -> list[AllocatorEffect]:
        effects: list[AllocatorEffect] = []
        timeout = self.offer_timeout_s
        if 0 < timeout < math.inf:
            expired = []
            for oid, out in self._offers.items():  # oldest first
                if out.made_at + timeout > now:
                    break
                expired.append(oid)
            effects += [self._rescind(o, f"offer not answered within {timeout:g}s") for o in expired]
        heap = self._filter_heap
        while heap and heap[0][0] <= now:
            until, fid, aid = heapq.heappop(heap)
            fw = self._fws.get(fid)
            if fw is not None and fw.filters.get(aid) == until:
                del fw.filters[aid]
        effects += self._allocate(now)
        return effects

    def _compact_filter_heap(self) -> None:
        live = sum(len(fw.filters) for fw in self._fws.values())
        if len(self._filter_heap) > 1024 and len(self._filter_heap) > 2 * live:
            self._filter_heap = [
                (until, fid, aid) for fid, fw in self._fws.items() for aid, until in fw.filters.items()
            ]
            heapq.heapify(self._filter_heap)

    # --- allocation --------------------------------------------------------------------
    def _allocate_event(self, ev: Allocate, now: float) -> list[AllocatorEffect]:
        return self._allocate(now)

    def _allocate(self, now: float) -> list[AllocatorEffect]:
        """One round: each agent with spare resources, in registration order, is offered
        whole to the first framework in the fair order not filtered on it."""
        if not self._free:
            return []
        self._refresh_shares()
        fws = self._fws
        heap = [
            (fair_order_key(fw.share, fw.seq), fid)
            for fid, fw in fws.items() if fw.state == ACTIVE and not fw.suppressed
        ]
        if not heap:
            return []
        heapq.heapify(heap)
        effects: list[AllocatorEffect] = []
        agents = self._agents
        for agent_id in sorted(self._free, key=lambda a: agents[a].seq):
            aside = []  # frameworks filtered on this agent: skipped, put back after
            chosen = None
            while heap and chosen is None:
                entry = heapq.heappop(heap)
                fw = fws[entry[1]]
                if fw.filters.get(agent_id, -math.inf) > now:
                    aside.append(entry)
                else:
                    chosen = fw
            if chosen is not None:
                effects.append(OfferMade(self._make_offer(chosen, agents[agent_id], now)))
                # Its share grew: it goes back in at its new place, so one round spreads
                # the agents over the frameworks fairly.
                heapq.heappush(heap, (fair_order_key(chosen.share, chosen.seq), chosen.framework_id))
            for entry in aside:
                heapq.heappush(heap, entry)
        return effects

    def _make_offer(self, fw: _Framework, agent: _Agent, now: float) -> Offer:
        self._offer_seq += 1
        oid = f"{self._prefix}{self._offer_seq}"
        res = agent.available
        offer = Offer(oid, fw.framework_id, agent.agent_id, agent.host, agent.rack, agent.attributes, res)
        agent.available = EMPTY
        agent.offer_id = oid
        self._free.discard(agent.agent_id)
        self._offers[oid] = _Outstanding(offer, now)
        fw.offers[oid] = None
        self._add_alloc(fw, res, 1)  # offered counts as allocated, as in Mesos
        return offer

    def _refresh_free(self, agent: _Agent) -> None:
        if agent.offer_id is None and offerable(agent.available):
            self._free.add(agent.agent_id)
        else:
            self._free.discard(agent.agent_id)

    # --- shares ------------------------------------------------------------------------
    def _add_alloc(self, fw: _Framework, res: Resources, sign: int) -> None:
        _bump(fw.alloc, res, sign)
        if not self._shares_stale:
            fw.share = self._share(fw)

    def _add_total(self, res: Resources, sign: int) -> None:
        _bump(self._total, res, sign)
        self._shares_stale = True

    def _share(self, fw: _Framework) -> float:
        """Same value as drf.weighted_dominant_share(allocated, cluster_total, weight),
        on exact integer units."""
        total = self._total
        share = 0.0
        for k, v in fw.alloc.items():
            t = total.get(k)
            if t:
                s = v / t
                if s > share:
                    share = s
        return share / fw.weight

    def _refresh_shares(self) -> None:
        if self._shares_stale:
            self._shares_stale = False
            for fw in self._fws.values():
                fw.share = self._share(fw)

    # --- invariants --------------------------------------------------------------------
    def validate(self) -> None:
        """Check every invariant; raises AssertionError naming the first one broken."""
        total: dict[str, int] = {}
        alloc: dict[str, dict[str, int]] = {fid: {} for fid in self._fws}
        holders: dict[str, set[str]] = {fid: set() for fid in self._fws}
        free = set()
        for aid, agent in self._agents.items():
            _bump(total, agent.total, 1)
            parts = [("available", agent.available)]
            if agent.offer_id is not None:
                out = self._offers.get(agent.offer_id)
                assert out is not None, f"agent {aid} points at missing offer {agent.offer_id}"
                assert out.offer.agent_id == aid, f"offer {agent.offer_id} is not on agent {aid}"
                parts.append((f"offer {agent.offer_id}", out.offer.resources))
            for fid, res in agent.in_use.items():
                assert fid in self._fws, f"agent {aid}: unknown framework {fid} holds resources"
                assert not res.is_empty(), f"agent {aid}: empty in-use entry for {fid}"
                holders[fid].add(aid)
                _bump(alloc[fid], res, 1)
                parts.append((f"in use by {fid}", res))
            # offered + in use + available == total, with nothing counted twice (ports too)
            left = agent.total
            for what, res in parts:
                assert left.contains(res), f"agent {aid} over-committed: {what} {res.format()} not in {left.format()}"
                left = left - res
            assert left.is_empty(), f"agent {aid}: {left.format()} unaccounted for"
            if agent.offer_id is None and offerable(agent.available):
                free.add(aid)
        for oid, out in self._offers.items():
            offer = out.offer
            fw = self._fws.get(offer.framework_id)
            assert fw is not None and fw.state == ACTIVE, f"offer {oid} is to a gone framework {offer.framework_id}"
            assert oid in fw.offers, f"offer {oid} missing from its framework"
            agent = self._agents.get(offer.agent_id)
            assert agent is not None and agent.offer_id == oid, f"offer {oid}: agent does not point back"
            _bump(alloc[offer.framework_id], offer.resources, 1)
        for fid, fw in self._fws.items():
            assert all(o in self._offers for o in fw.offers), f"framework {fid} lists a closed offer"
            assert fw.agents == holders[fid], f"framework {fid}: agents {fw.agents} != {holders[fid]}"
            assert fw.alloc == alloc[fid], f"framework {fid}: allocation {fw.alloc} != offered + in use {alloc[fid]}"
            assert all(v > 0 for v in fw.alloc.values()) and fw.weight > 0, f"framework {fid}: negative"
            if fw.state != ACTIVE:  # kept only while its tasks hold something; never offered to
                assert fw.agents and not fw.offers and not fw.filters, f"framework {fid} ({fw.state}) not forgotten"
            assert set(fw.filters) <= set(self._agents), f"framework {fid} filters a gone agent"
            if not self._shares_stale:
                assert fw.share == self._share(fw), f"framework {fid}: stale share"
        assert self._total == total, "cached cluster total is wrong"
        assert self._free == free, f"offerable agents {sorted(self._free)} != {sorted(free)}"
        seqs = [fw.seq for fw in self._fws.values()]
        assert len(seqs) == len(set(seqs)), "two frameworks share a tie-break sequence number"
