"""Messages between a driver and its executors (msgspec, over shoal's RPC)."""

from __future__ import annotations

import msgspec

from shoal.compute.shuffle import MapStatus
from shoal.core.wire import Method


class RegisterExecutor(msgspec.Struct, frozen=True):
    executor_id: str
    node_id: str
    host: str
    rack: str
    pid: int
    slots: int = 1
    shuffle_service: tuple[str, int] | None = None


class Registered(msgspec.Struct, frozen=True):
    app_id: str
    poll_wait_s: float
    control_wait_s: float


class TaskMetrics(msgspec.Struct):
    duration_s: float = 0.0
    records_in: int = 0
    shuffle_read_bytes: int = 0
    shuffle_read_remote_bytes: int = 0
    shuffle_read_records: int = 0
    shuffle_write_bytes: int = 0
    shuffle_write_records: int = 0
    spills: int = 0
    spilled_bytes: int = 0
    result_bytes: int = 0
    status: str = ""  # the task's last status message (Hadoop's reporter:status)


class TaskError(msgspec.Struct, frozen=True):
    exc_type: str
    message: str
    traceback: str
    pickled: bytes = b""  # the exception itself, when it pickles
    fetch_failed: tuple[int, int, str] | None = None


class TaskResult(msgspec.Struct, frozen=True):
    task_id: int
    state: str  # "succeeded" | "failed" | "killed"
    value: bytes = b""  # pickled result of a result task
    map_status: MapStatus | None = None
    error: TaskError | None = None
    metrics: TaskMetrics = msgspec.field(default_factory=TaskMetrics)
    accumulators: bytes = b""  # pickled {accumulator id: update}
    cached: list[tuple[int, int]] = []  # (rdd id, partition) blocks stored by this task


class TaskLaunch(msgspec.Struct, frozen=True):
    task_id: int
    stage_id: int
    stage_attempt: int
    partition: int
    attempt: int
    map_statuses: dict[int, list[MapStatus | None]] = {}  # shuffle id -> statuses


class PollTasks(msgspec.Struct, frozen=True):
    executor_id: str
    results: list[TaskResult] = []
    wait_s: float = 0.0


class TaskBatch(msgspec.Struct, frozen=True):
    tasks: list[TaskLaunch] = []
    stages: dict[int, bytes] = {}  # stage closures this executor has not seen yet
    shutdown: bool = False


class ControlPoll(msgspec.Struct, frozen=True):
    executor_id: str
    running: list[int] = []
    wait_s: float = 0.0


class ControlReply(msgspec.Struct, frozen=True):
    kill: list[int] = []
    drop_rdds: list[int] = []
    shutdown: bool = False


class FetchData(msgspec.Struct, frozen=True):
    kind: str  # "broadcast" | "slice"
    ident: int
    index: int = 0


class Data(msgspec.Struct, frozen=True):
    data: bytes


class MapOutputsRequest(msgspec.Struct, frozen=True):
    """A reduce task that started early (slow start) follows the map outputs of a
    shuffle as they register (Hadoop's task completion events): it asks for events
    from ``from_event`` on, for its ``reduce_index``; the driver answers once there
    is one, or after ``wait_s``."""

    shuffle_id: int
    reduce_index: int
    from_event: int = 0
    wait_s: float = 0.0


class MapSegment(msgspec.Struct, frozen=True, array_like=True):
    """Where one map output's segment for one reduce partition is."""

    map_index: int
    node_id: str
    service: tuple[str, int] | None
    data_path: str
    offset: int
    length: int


class MapOutputs(msgspec.Struct, frozen=True):
    events: list[MapSegment]  # registrations from ``from_event`` on, in order
    next_event: int  # ask from here next time
    total_maps: int


REGISTER = Method("compute.register", RegisterExecutor, Registered)
NEXT = Method("compute.next", PollTasks, TaskBatch)
CONTROL = Method("compute.control", ControlPoll, ControlReply)
FETCH = Method("compute.fetch", FetchData, Data)
MAP_OUTPUTS = Method("compute.map_outputs", MapOutputsRequest, MapOutputs)
