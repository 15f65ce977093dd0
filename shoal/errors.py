"""Named exceptions shared by every subsystem.

Each error has a stable ``code`` (its class name) so that an error raised inside a
daemon can be re-raised as the same class in the client that made the call.
"""

from __future__ import annotations


class ShoalError(Exception):
    """Base of every error shoal raises on purpose."""

    code: str = "ShoalError"

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        cls.code = cls.__name__
        _REGISTRY[cls.__name__] = cls


_REGISTRY: dict[str, type[ShoalError]] = {"ShoalError": ShoalError}


def error_from_code(code: str, message: str) -> ShoalError:
    """Rebuild a remote error as its local class (``RemoteError`` if unknown)."""
    cls = _REGISTRY.get(code)
    if cls is None:
        return RemoteError(f"{code}: {message}")
    return cls(message)


# --- configuration and cluster discovery ---------------------------------------------
class ConfigError(ShoalError, ValueError):
    """A configuration key or value is invalid."""


class ClusterNotFound(ShoalError):
    """No cluster folder / master address could be resolved."""


# --- transport -----------------------------------------------------------------------
class ProtocolError(ShoalError):
    """A peer sent bytes that are not a valid frame or message."""


class FrameTooLarge(ProtocolError):
    """A frame exceeded the configured size limit."""


class AuthenticationError(ShoalError):
    """The peer could not prove knowledge of the cluster secret."""


class RpcTimeout(ShoalError, TimeoutError):
    """A call's deadline passed before a reply arrived."""


class ConnectionLost(ShoalError, ConnectionError):
    """The connection to a daemon closed or could not be opened."""


class RemoteError(ShoalError):
    """A daemon raised an error this client does not know by name."""


class UnknownMethod(ShoalError):
    """The daemon has no handler for the method called."""


class BadRequest(ShoalError, ValueError):
    """A request was well-formed on the wire but its arguments are invalid."""


# --- file system -----------------------------------------------------------------------
class InvalidPath(ShoalError, ValueError):
    """A DFS path is not absolute, has an empty or '..' segment, or a NUL byte."""


class FileNotFound(ShoalError, FileNotFoundError):
    """The path does not exist."""


class FileAlreadyExists(ShoalError, FileExistsError):
    """The path exists and overwrite was not requested."""


class DirectoryNotEmpty(ShoalError, OSError):
    """A non-empty directory was deleted without recursive."""


class NotADirectory(ShoalError, NotADirectoryError):
    """A path component, or the target of a directory operation, is a file."""


class IsADirectory(ShoalError, IsADirectoryError):
    """A file operation named a directory."""


class LeaseHeld(ShoalError):
    """Another writer holds the lease on this file (HDFS single-writer rule)."""


class LeaseExpired(ShoalError):
    """This writer's lease is gone (it expired or the file was recovered)."""


class NoLiveWorkers(ShoalError):
    """No live worker can take a replica."""


class SafeMode(ShoalError):
    """The master is in safe mode: reads are allowed, writes are refused."""


class ChecksumError(ShoalError):
    """Bytes did not match their stored CRC32C checksum."""


class BlockMissing(ShoalError):
    """No replica of a block could be read from any worker."""


class PipelineError(ShoalError):
    """A write pipeline to the workers failed and could not be recovered."""


class ReplicaNotFound(ShoalError):
    """A worker does not hold the replica asked for."""


class ClusterAlreadyRunning(ShoalError):
    """``shoal up`` was asked to start a cluster whose folder already has one running."""


class ClusterStartFailed(ShoalError):
    """A daemon of a local cluster exited or did not come up in time."""


# --- resource manager ------------------------------------------------------------------
class InvalidResources(BadRequest):
    """A resource vector, attribute or constraint is malformed or negative."""


class InsufficientResources(ShoalError):
    """No agent can ever satisfy the request (it exceeds every agent's total)."""


class UnknownFramework(ShoalError):
    """No registered framework has this id (it may have been removed)."""


class UnknownOffer(ShoalError):
    """The offer does not exist, was rescinded, or belongs to another framework."""


class UnknownTask(ShoalError):
    """No task/container has this id."""


class UnknownAgent(ShoalError):
    """No agent has this id, or it is no longer registered."""


class DuplicateTask(BadRequest):
    """A task id is already in use."""


class UnknownService(ShoalError):
    """No service has this name."""


class ServiceExists(ShoalError):
    """A service with this name already exists."""


class ContainerError(ShoalError):
    """A container could not be started or supervised on its agent."""


class TaskFailed(ShoalError):
    """A task ended in a failed, killed or lost state."""


class StreamingCommandFailed(ShoalError):
    """A Hadoop Streaming mapper, reducer or combiner command could not be started,
    exited non-zero, was killed by a signal, or exited before reading all its input."""


# --- compute engine --------------------------------------------------------------------
class SerializationError(ShoalError):
    """A function or record could not be pickled (the message names what)."""


class JobFailed(ShoalError):
    """A compute job failed for a reason other than an exception in user code."""


class JobCancelled(JobFailed):
    """A compute job was cancelled (Ctrl-C, ``cancelJobGroup``, context stopped)."""


class FetchFailed(ShoalError):
    """A reducer could not fetch a map output: the map task must run again."""

    def __init__(self, message: str, shuffle_id: int = -1, map_index: int = -1, node_id: str = "") -> None:
        super().__init__(message)
        self.shuffle_id, self.map_index, self.node_id = shuffle_id, map_index, node_id


class RemoteTraceback(ShoalError):
    """The traceback of an exception raised in user code on an executor."""
