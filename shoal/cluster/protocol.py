"""Messages of the resource manager: agent <-> master, framework <-> master, CLI.

Agents and frameworks talk to the master by long-polling (a poll returns as soon as
there is something to deliver, or after ``wait_s``), so neither needs a listening port
the master must reach; the agent serves one small RPC port for reading container
output. Tasks and containers share one id: a task runs in exactly one container.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from shoal.cluster.resources import Resources
from shoal.core.wire import Empty, Method

TaskState = Literal["staging", "running", "finished", "failed", "killed", "lost"]
TERMINAL_STATES: frozenset[str] = frozenset({"finished", "failed", "killed", "lost"})

# How a container is isolated on its agent (reported honestly by ``shoal ps``).
ISOLATION_CGROUPS_V1 = "cgroups-v1+namespaces"
ISOLATION_CGROUPS_V2 = "cgroups-v2+namespaces"
ISOLATION_PROCESS = "process-group+rlimits"
ISOLATION_CGROUPS_V1_ONLY = "cgroups-v1"  # cgroups, but no namespaces (no unshare)
ISOLATION_CGROUPS_V2_ONLY = "cgroups-v2"


class HealthCheck(msgspec.Struct, frozen=True):
    """Marathon/Mesos-style health check, run by the agent next to the task.

    ``kind`` "http": GET http://127.0.0.1:$PORT0{path} must answer 2xx/3xx;
    "cmd": ``command`` (a shell string, in the task's sandbox and environment) must exit 0.
    Checks start at launch; failures are ignored until the task has passed once or
    ``grace_s`` has gone by (Marathon's grace period); then ``max_failures``
    consecutive failures kill the task.
    """

    kind: Literal["http", "cmd"]
    path: str = "/"
    command: str = ""
    interval_s: float = 10.0
    timeout_s: float = 20.0
    grace_s: float = 300.0
    max_failures: int = 3


class TaskSpec(msgspec.Struct, frozen=True):
    """What to run and with what: one container.

    ``command`` is an argv list, or with ``shell`` a one-element list holding a
    ``/bin/sh -c`` string. ``resources`` must fit in the offer it is launched from;
    its ``ports`` ranges are the ports given to the task (exported as $PORT0.., $PORT).
    """

    task_id: str
    name: str
    command: list[str]
    resources: Resources
    agent_id: str = ""
    shell: bool = False
    env: dict[str, str] = {}
    health: HealthCheck | None = None


class TaskStatus(msgspec.Struct, frozen=True):
    """A state change of a task, as sent to its framework (and shown by ``shoal ps``)."""

    task_id: str
    state: TaskState
    agent_id: str = ""
    framework_id: str = ""
    message: str = ""
    exit_code: int | None = None
    healthy: bool | None = None  # None: no health check (or not yet checked)
    timestamp: float = 0.0  # wall clock, seconds


# --- agent <-> master -----------------------------------------------------------------------
class AgentInfo(msgspec.Struct, frozen=True):
    agent_id: str
    host: str
    rpc_port: int  # the agent's own port: container output (READ_OUTPUT)
    rack: str
    attributes: dict[str, str]
    total: Resources
    isolation: str


class ContainerReport(msgspec.Struct, frozen=True):
    """A container the agent is running, as sent on (re-)registration."""

    spec: TaskSpec
    framework_id: str
    status: TaskStatus


class RegisterAgentReq(msgspec.Struct, frozen=True):
    info: AgentInfo
    containers: list[ContainerReport] = []


class LaunchContainer(msgspec.Struct, frozen=True, tag="launch"):
    spec: TaskSpec
    framework_id: str


class KillContainer(msgspec.Struct, frozen=True, tag="kill"):
    task_id: str
    reason: str = "killed"


AgentCommand = LaunchContainer | KillContainer


class AgentPollReq(msgspec.Struct, frozen=True):
    agent_id: str
    wait_s: float


class AgentPollResp(msgspec.Struct, frozen=True):
    commands: list[AgentCommand] = []
    reregister: bool = False  # the master does not know this agent (it restarted, or declared it lost)


class StatusUpdateReq(msgspec.Struct, frozen=True):
    agent_id: str
    updates: list[TaskStatus]


# --- framework <-> master ------------------------------------------------------------------
class FrameworkInfo(msgspec.Struct, frozen=True):
    name: str
    role: str = "*"
    weight: float = 1.0
    user: str = ""
    # A framework that has not polled for this long is removed and its tasks killed
    # (Mesos' failover timeout; 0 means the cluster default).
    failover_timeout_s: float = 0.0


class FrameworkRegistered(msgspec.Struct, frozen=True):
    framework_id: str


class Offer(msgspec.Struct, frozen=True, gc=False):
    """Resources of one agent offered to one framework until accepted, declined or rescinded."""

    offer_id: str
    framework_id: str
    agent_id: str
    host: str
    rack: str
    attributes: dict[str, str]
    resources: Resources


class FrameworkPollReq(msgspec.Struct, frozen=True):
    framework_id: str
    wait_s: float


class FrameworkEvents(msgspec.Struct, frozen=True):
    offers: list[Offer] = []
    rescinded: list[str] = []
    updates: list[TaskStatus] = []
    removed: str = ""  # non-empty: the framework was removed, with the reason


class AcceptReq(msgspec.Struct, frozen=True):
    framework_id: str
    offer_ids: list[str]
    tasks: list[TaskSpec]
    filter_s: float = -1.0  # unused resources are not re-offered for this long (<0: default)


class DeclineReq(msgspec.Struct, frozen=True):
    framework_id: str
    offer_ids: list[str]
    filter_s: float = -1.0


class FrameworkReq(msgspec.Struct, frozen=True):
    framework_id: str


class KillTaskReq(msgspec.Struct, frozen=True):
    framework_id: str
    task_id: str


# --- inspection (CLI) -------------------------------------------------------------------------
class ContainerInfo(msgspec.Struct, frozen=True):
    task_id: str
    name: str
    agent_id: str
    host: str
    rack: str
    framework_id: str
    framework: str
    resources: Resources
    isolation: str
    state: TaskState
    started: float  # wall clock
    ports: list[int] = []
    healthy: bool | None = None
    message: str = ""


class ContainerList(msgspec.Struct, frozen=True):
    containers: list[ContainerInfo]


class TaskReq(msgspec.Struct, frozen=True):
    task_id: str


class AgentSummary(msgspec.Struct, frozen=True):
    info: AgentInfo
    available: Resources
    state: Literal["active", "lost"]
    containers: int


class AgentList(msgspec.Struct, frozen=True):
    agents: list[AgentSummary]


class FrameworkSummary(msgspec.Struct, frozen=True):
    framework_id: str
    info: FrameworkInfo
    allocated: Resources
    dominant_share: float
    tasks: int


class FrameworkList(msgspec.Struct, frozen=True):
    frameworks: list[FrameworkSummary]


class TaskLocation(msgspec.Struct, frozen=True):
    """Where a task's container runs, for reading its output from the agent."""

    task_id: str
    agent_id: str
    host: str
    rpc_port: int
    state: TaskState


# --- agent's own port: container output ---------------------------------------------------------
class ReadOutputReq(msgspec.Struct, frozen=True):
    task_id: str
    stream: Literal["stdout", "stderr"]
    offset: int
    max_bytes: int = 1 << 20
    wait_s: float = 0.0  # wait this long for new bytes if there are none yet


class OutputChunk(msgspec.Struct, frozen=True):
    data: bytes
    offset: int  # offset just past ``data``
    finished: bool  # the container has ended and ``offset`` is the end of the stream


# --- services (Marathon-style) -------------------------------------------------------------------
class ServiceSpec(msgspec.Struct, frozen=True):
    name: str
    instances: int
    command: list[str]
    resources: Resources  # per instance, scalars only
    ports: int = 0  # how many host ports each instance needs
    shell: bool = False
    health: HealthCheck | None = None
    constraints: list[tuple[str, str]] = []  # attribute == value
    env: dict[str, str] = {}


class ServiceScaleReq(msgspec.Struct, frozen=True):
    name: str
    instances: int


class ServiceNameReq(msgspec.Struct, frozen=True):
    name: str


class InstanceInfo(msgspec.Struct, frozen=True):
    task_id: str
    agent_id: str
    host: str
    rack: str
    ports: list[int]
    state: TaskState
    healthy: bool | None


class ServiceStatus(msgspec.Struct, frozen=True):
    spec: ServiceSpec
    running: int
    healthy: int
    instances: list[InstanceInfo]
    backoff_s: float = 0.0  # current launch delay after failures
    last_failure: str = ""


class ServiceList(msgspec.Struct, frozen=True):
    services: list[ServiceStatus]


class Endpoints(msgspec.Struct, frozen=True):
    name: str
    endpoints: list[str]  # host:port of each healthy instance (its first port)


# Agent -> master
REGISTER_AGENT = Method("cluster.register_agent", RegisterAgentReq, Empty)
AGENT_POLL = Method("cluster.agent_poll", AgentPollReq, AgentPollResp)
STATUS_UPDATE = Method("cluster.status_update", StatusUpdateReq, Empty)
# Framework -> master
REGISTER_FRAMEWORK = Method("cluster.register_framework", FrameworkInfo, FrameworkRegistered)
FRAMEWORK_POLL = Method("cluster.framework_poll", FrameworkPollReq, FrameworkEvents)
ACCEPT = Method("cluster.accept", AcceptReq, Empty)
DECLINE = Method("cluster.decline", DeclineReq, Empty)
REVIVE = Method("cluster.revive", FrameworkReq, Empty)
KILL_TASK = Method("cluster.kill_task", KillTaskReq, Empty)
UNREGISTER = Method("cluster.unregister", FrameworkReq, Empty)
# Inspection
LIST_CONTAINERS = Method("cluster.list_containers", Empty, ContainerList)
LIST_AGENTS = Method("cluster.list_agents", Empty, AgentList)
LIST_FRAMEWORKS = Method("cluster.list_frameworks", Empty, FrameworkList)
LOCATE_TASK = Method("cluster.locate_task", TaskReq, TaskLocation)
# Services
SERVICE_CREATE = Method("cluster.service_create", ServiceSpec, ServiceStatus)
SERVICE_SCALE = Method("cluster.service_scale", ServiceScaleReq, ServiceStatus)
SERVICE_LIST = Method("cluster.service_list", Empty, ServiceList)
SERVICE_REMOVE = Method("cluster.service_remove", ServiceNameReq, Empty)
SERVICE_ENDPOINTS = Method("cluster.service_endpoints", ServiceNameReq, Endpoints)
# Agent's port
READ_OUTPUT = Method("agent.read_output", ReadOutputReq, OutputChunk)
