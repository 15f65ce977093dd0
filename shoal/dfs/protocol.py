"""Messages of the file system: client <-> master, worker <-> master, and data transfer.

Each RPC is a :class:`~shoal.core.wire.Method` with typed request and reply structs.
Data-transfer messages are header frames on a worker's data port, each followed by
raw block bytes where noted.
"""

from __future__ import annotations

import msgspec

from shoal.core.config import Config
from shoal.core.wire import Empty, Method
from shoal.dfs.namespace import BlockInfo, ContentSummary, FileStatus


class DatanodeInfo(msgspec.Struct, frozen=True):
    """Where a worker's data port is and which rack it is on."""

    node_id: str
    host: str
    data_port: int
    rack: str
    http_port: int = 0  # WebHDFS (0: not served)

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.data_port)

    def label(self) -> str:
        return f"{self.node_id}@{self.rack}"


class LocatedBlock(msgspec.Struct, frozen=True):
    """A block and the workers holding (or about to hold) it, nearest first."""

    block: BlockInfo
    locations: list[DatanodeInfo]


# --- client -> master --------------------------------------------------------------------
class PathReq(msgspec.Struct, frozen=True):
    path: str


class MkdirsReq(msgspec.Struct, frozen=True):
    path: str
    parents: bool = True


class MkdirsResp(msgspec.Struct, frozen=True):
    created: bool


class CreateReq(msgspec.Struct, frozen=True):
    path: str
    client: str
    overwrite: bool = False
    replication: int = 0  # 0: the cluster default
    block_size: int = 0  # 0: the cluster default


class AppendReq(msgspec.Struct, frozen=True):
    path: str
    client: str


class AppendResp(msgspec.Struct, frozen=True):
    status: FileStatus
    last_block: LocatedBlock | None


class AddBlockReq(msgspec.Struct, frozen=True):
    path: str
    client: str
    previous_length: int | None
    excluded: list[str] = []
    writer_node: str | None = None


class AbandonBlockReq(msgspec.Struct, frozen=True):
    path: str
    client: str
    block_id: int


class CompleteReq(msgspec.Struct, frozen=True):
    path: str
    client: str
    last_length: int | None


class RenewLeaseReq(msgspec.Struct, frozen=True):
    client: str


class GetBlockLocationsReq(msgspec.Struct, frozen=True):
    path: str
    reader_node: str | None = None


class LocatedBlocks(msgspec.Struct, frozen=True):
    status: FileStatus
    blocks: list[LocatedBlock]


class Listing(msgspec.Struct, frozen=True):
    entries: list[FileStatus]


class RenameReq(msgspec.Struct, frozen=True):
    src: str
    dst: str


class DeleteReq(msgspec.Struct, frozen=True):
    path: str
    recursive: bool = False


class ReportBadBlockReq(msgspec.Struct, frozen=True):
    block_id: int
    node_id: str
    reason: str


class NodeReport(msgspec.Struct, frozen=True):
    """One worker as ``shoal nodes`` shows it."""

    node_id: str
    host: str
    data_port: int
    rack: str
    state: str
    capacity_bytes: int
    used_bytes: int
    remaining_bytes: int
    blocks: int
    pid: int
    last_heartbeat_s: float  # seconds since the last heartbeat
    xceivers: int


class ClusterReport(msgspec.Struct, frozen=True):
    nodes: list[NodeReport]
    files: int
    blocks: int
    under_replicated_blocks: int


class NodeReq(msgspec.Struct, frozen=True):
    node_id: str


class FsckBlock(msgspec.Struct, frozen=True):
    block_id: int
    length: int
    expected: int
    replicas: list[str]  # node@rack of readable replicas
    corrupt: list[str]
    status: str  # healthy | under-replicated | mis-replicated | corrupt | missing


class FsckFile(msgspec.Struct, frozen=True):
    path: str
    length: int
    replication: int
    status: str  # the worst status of its blocks
    blocks: list[FsckBlock]


class FsckReport(msgspec.Struct, frozen=True):
    path: str
    files: list[FsckFile]
    directories: int
    totals: dict[str, int]  # blocks per status
    healthy: bool  # nothing missing or corrupt
    safe_mode: bool


MKDIRS = Method("dfs.mkdirs", MkdirsReq, MkdirsResp)
CREATE = Method("dfs.create", CreateReq, FileStatus)
APPEND = Method("dfs.append", AppendReq, AppendResp)
ADD_BLOCK = Method("dfs.add_block", AddBlockReq, LocatedBlock)
ABANDON_BLOCK = Method("dfs.abandon_block", AbandonBlockReq, Empty)
COMPLETE = Method("dfs.complete", CompleteReq, FileStatus)
RENEW_LEASE = Method("dfs.renew_lease", RenewLeaseReq, Empty)
GET_BLOCK_LOCATIONS = Method("dfs.get_block_locations", GetBlockLocationsReq, LocatedBlocks)
STAT = Method("dfs.stat", PathReq, FileStatus)
LIST = Method("dfs.list", PathReq, Listing)
RENAME = Method("dfs.rename", RenameReq, FileStatus)
DELETE = Method("dfs.delete", DeleteReq, Empty)
CONTENT_SUMMARY = Method("dfs.content_summary", PathReq, ContentSummary)
REPORT_BAD_BLOCK = Method("dfs.report_bad_block", ReportBadBlockReq, Empty)
CLUSTER_REPORT = Method("cluster.report", Empty, ClusterReport)
GET_CONFIG = Method("cluster.config", Empty, Config)
DECOMMISSION = Method("dfs.decommission", NodeReq, NodeReport)
FSCK = Method("dfs.fsck", PathReq, FsckReport)


# --- worker -> master --------------------------------------------------------------------
class ReplicaReport(msgspec.Struct, frozen=True, array_like=True):
    block_id: int
    gen_stamp: int
    length: int


class RegisterReq(msgspec.Struct, frozen=True):
    node: DatanodeInfo
    capacity_bytes: int
    remaining_bytes: int
    pid: int


class RegisterResp(msgspec.Struct, frozen=True):
    config: Config


class DeleteReplicas(msgspec.Struct, frozen=True, tag="delete"):
    """Delete these replicas (their files are gone or they are surplus)."""

    block_ids: list[int]


class ReplicateBlock(msgspec.Struct, frozen=True, tag="replicate"):
    """Copy a replica this worker holds to ``targets`` (a pipeline, in order)."""

    block_id: int
    gen_stamp: int
    length: int
    targets: list[DatanodeInfo]


Command = DeleteReplicas | ReplicateBlock


class HeartbeatReq(msgspec.Struct, frozen=True):
    node_id: str
    capacity_bytes: int
    used_bytes: int
    remaining_bytes: int
    xceivers: int
    block_report: list[ReplicaReport] | None = None


class HeartbeatResp(msgspec.Struct, frozen=True):
    commands: list[Command] = []
    reregister: bool = False


class BlockReceivedReq(msgspec.Struct, frozen=True):
    node_id: str
    replicas: list[ReplicaReport]


REGISTER = Method("worker.register", RegisterReq, RegisterResp)
HEARTBEAT = Method("worker.heartbeat", HeartbeatReq, HeartbeatResp)
BLOCK_RECEIVED = Method("worker.block_received", BlockReceivedReq, Empty)


# --- data transfer (worker data port) ------------------------------------------------------
class WriteBlockOp(msgspec.Struct, frozen=True, tag="write"):
    """Start a write pipeline: this worker stores the block and forwards to ``downstream``."""

    block_id: int
    gen_stamp: int
    downstream: list[DatanodeInfo]
    bytes_per_checksum: int
    client: str
    # Append: keep the first ``append_at`` bytes (chunk-aligned) of the existing
    # replica and continue from there; -1 for a new block.
    append_at: int = -1


class ReadBlockOp(msgspec.Struct, frozen=True, tag="read"):
    """Stream ``length`` bytes of a replica from ``offset`` (both within the block)."""

    block_id: int
    gen_stamp: int
    offset: int
    length: int


DataOp = WriteBlockOp | ReadBlockOp


class PipelineReady(msgspec.Struct, frozen=True):
    """Reply to :class:`WriteBlockOp` once the whole downstream pipeline is connected."""

    ok: bool
    error: str = ""
    bad_node: str | None = None


class PacketHeader(msgspec.Struct, frozen=True, array_like=True):
    """Precedes ``data_len`` raw bytes; ``checksums`` are CRC32C per chunk, big-endian u32."""

    seqno: int
    offset: int
    data_len: int
    last: bool
    checksums: bytes


class PacketAck(msgspec.Struct, frozen=True, array_like=True):
    seqno: int
    ok: bool
    error: str = ""
    bad_node: str | None = None


class ReadBlockReply(msgspec.Struct, frozen=True):
    """Precedes ``data_len`` raw bytes starting at ``chunk_offset`` (chunk-aligned)."""

    ok: bool
    error_code: str = ""
    error: str = ""
    chunk_offset: int = 0
    data_len: int = 0
    bytes_per_checksum: int = 0
    checksums: bytes = b""
