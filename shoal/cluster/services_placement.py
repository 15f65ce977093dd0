"""Offer matching and instance spreading for the service scheduler (pure).

One batch of offers is carved up instance by instance. Each instance goes to the
fitting offer whose agent runs the fewest instances of the service, then whose
rack does, then the lowest agent id (a deterministic tiebreak), so a service is
spread over nodes and racks and shares a node only when no other offered node
fits. This mirrors what Marathon users get from ``hostname:UNIQUE`` / ``rack:GROUP_BY``
constraints, made the default here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from shoal.cluster.protocol import Offer
from shoal.cluster.resources import Resources, range_count


@dataclass(slots=True)
class Slot:
    """One offer of a batch and what is still unused of it after earlier picks."""

    offer: Offer
    remaining: Resources
    used: bool = False


@dataclass(frozen=True, slots=True)
class Placement:
    """One instance placed on an offer: the ports picked and its full resources."""

    offer: Offer
    ports: tuple[int, ...]
    resources: Resources  # the instance's scalars plus its ports, taken from the offer


def constraint_value(offer: Offer, attribute: str) -> str | None:
    """The value an offer has for a constraint attribute (None if it has none).

    ``hostname`` is the agent's host, ``node`` its agent id, ``rack`` its rack; any
    other name is looked up in the agent's attributes (as Marathon's ``attr:LIKE``).
    """
    if attribute == "hostname":
        return offer.host
    if attribute == "node":
        return offer.agent_id
    if attribute == "rack":
        return offer.rack
    return offer.attributes.get(attribute)


def satisfies(offer: Offer, constraints: Sequence[tuple[str, str]]) -> bool:
    """True if the offer's agent meets every ``attribute == value`` constraint."""
    return all(constraint_value(offer, attr) == value for attr, value in constraints)


def fits(remaining: Resources, need: Resources, ports: int) -> bool:
    """True if ``need`` and ``ports`` free ports fit in what is left of an offer."""
    return remaining.contains(need) and range_count(remaining.ports()) >= ports


def place(
    count: int,
    need: Resources,
    ports: int,
    constraints: Sequence[tuple[str, str]],
    slots: Sequence[Slot],
    per_agent: dict[str, int],
    per_rack: dict[str, int],
) -> list[Placement]:
    """Place up to ``count`` instances on ``slots``, spreading them; fewer if offers run out.

    ``per_agent`` / ``per_rack`` count the service's live instances and are updated
    with each pick, as are the slots' remaining resources, so several services can
    share one batch.
    """
    out: list[Placement] = []
    eligible = [s for s in slots if satisfies(s.offer, constraints)]
    for _ in range(count):
        best: Slot | None = None
        best_key: tuple[int, int, str, str] | None = None
        for slot in eligible:
            if not fits(slot.remaining, need, ports):
                continue
            o = slot.offer
            key = (per_agent.get(o.agent_id, 0), per_rack.get(o.rack, 0), o.agent_id, o.offer_id)
            if best_key is None or key < best_key:
                best, best_key = slot, key
        if best is None:
            break
        picked, port_res = best.remaining.take_ports(ports) if ports else ([], Resources())
        task_res = need + port_res
        best.remaining = best.remaining - task_res
        best.used = True
        per_agent[best.offer.agent_id] = per_agent.get(best.offer.agent_id, 0) + 1
        per_rack[best.offer.rack] = per_rack.get(best.offer.rack, 0) + 1
        out.append(Placement(best.offer, tuple(picked), task_res))
    return out
