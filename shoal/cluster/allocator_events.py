"""Events the resource allocator handles and effects it returns (pure, typed, frozen).

See :mod:`shoal.cluster.offers` for what each one does to the allocator's state.
"""

from __future__ import annotations

import msgspec

from shoal.cluster.protocol import Offer
from shoal.cluster.resources import Resources


# --- events ----------------------------------------------------------------------------
# Events and effects hold only strings, numbers and Resources, never themselves, so
# they cannot form reference cycles: gc=False keeps the thousands a round makes out of
# the cyclic garbage collector's scans.
class AgentAdded(msgspec.Struct, frozen=True, gc=False):
    """An agent (re-)registered. ``in_use``: framework id -> resources its running
    containers already hold on this agent. Re-adding a known id replaces the agent."""

    agent_id: str
    host: str
    rack: str
    attributes: dict[str, str]
    total: Resources
    in_use: dict[str, Resources] = {}


class AgentRemoved(msgspec.Struct, frozen=True, gc=False):
    """An agent left or was declared lost: its offers are rescinded, its allocations dropped."""

    agent_id: str


class FrameworkAdded(msgspec.Struct, frozen=True, gc=False):
    """A framework registered (or re-registered: role and weight are updated)."""

    framework_id: str
    role: str = "*"
    weight: float = 1.0


class FrameworkRemoved(msgspec.Struct, frozen=True, gc=False):
    """A framework was torn down. Its offers are rescinded; what its tasks hold stays
    allocated to it until :class:`ResourcesRecovered` arrives for it."""

    framework_id: str


class OfferAccepted(msgspec.Struct, frozen=True, gc=False):
    """``used`` (contained in the offer) is now in use; the rest returns to the pool and is
    filtered for this framework on that agent for ``filter_s`` (<0: the default, 0: none)."""

    framework_id: str
    offer_id: str
    used: Resources
    filter_s: float = -1.0


class OfferDeclined(msgspec.Struct, frozen=True, gc=False):
    """The whole offer returns; filter rule as for :class:`OfferAccepted`."""

    framework_id: str
    offer_id: str
    filter_s: float = -1.0


class ResourcesRecovered(msgspec.Struct, frozen=True, gc=False):
    """A task ended on ``agent_id``: its resources return to the pool."""

    framework_id: str
    agent_id: str
    resources: Resources


class FiltersCleared(msgspec.Struct, frozen=True, gc=False):
    """Mesos reviveOffers: drop the framework's filters and un-suppress it."""

    framework_id: str


class OffersSuppressed(msgspec.Struct, frozen=True, gc=False):
    """Mesos suppressOffers: no new offers to the framework until FiltersCleared."""

    framework_id: str


class Allocate(msgspec.Struct, frozen=True, gc=False):
    """Run one allocation round now."""


class Tick(msgspec.Struct, frozen=True, gc=False):
    """Time passed: rescind timed-out offers, expire filters, run an allocation round."""


AllocatorEvent = (
    AgentAdded | AgentRemoved | FrameworkAdded | FrameworkRemoved | OfferAccepted | OfferDeclined
    | ResourcesRecovered | FiltersCleared | OffersSuppressed | Allocate | Tick
)


# --- effects ---------------------------------------------------------------------------
class OfferMade(msgspec.Struct, frozen=True, gc=False):
    offer: Offer


class OfferRescinded(msgspec.Struct, frozen=True, gc=False):
    offer_id: str
    framework_id: str
    reason: str


AllocatorEffect = OfferMade | OfferRescinded
