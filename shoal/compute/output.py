"""``saveAsTextFile`` / ``saveAsPickleFile``: one part file per partition, written
through Hadoop's ``FileOutputCommitter`` protocol (``committer.OutputCommitter``).

The driver sets the job up (an existing output directory is refused), each task
writes its partition to its attempt's own file and commits it (the first attempt
of a partition to commit wins, so retried and speculative tasks never leave
duplicates), and the driver commits the job (``_SUCCESS``) or aborts it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import IO, TYPE_CHECKING, Any

from shoal.compute.committer import OutputCommitter, write_pickle_partition, write_text_partition

if TYPE_CHECKING:
    from shoal.compute.rdd import RDD

# Hadoop codec class names (and short names) -> the committer's codecs.
CODECS = {
    "org.apache.hadoop.io.compress.GzipCodec": "gzip",
    "org.apache.hadoop.io.compress.BZip2Codec": "bz2",
    "gzip": "gzip",
    "gz": "gzip",
    "bzip2": "bz2",
    "bz2": "bz2",
}


def codec_for(compression_codec_class: str | None) -> str | None:
    if compression_codec_class is None:
        return None
    codec = CODECS.get(compression_codec_class) or CODECS.get(compression_codec_class.lower())
    if codec is None:
        raise ValueError(
            f"unsupported compression codec {compression_codec_class!r}: use "
            "org.apache.hadoop.io.compress.GzipCodec or org.apache.hadoop.io.compress.BZip2Codec")
    return codec


def partition_writer(committer: OutputCommitter, write: Callable[[IO[bytes], Iterator], Any],
                      ) -> Callable[[Iterator], int]:
    """The per-partition function of an output job: write, then commit the attempt."""

    def run(records: Iterator) -> int:
        from shoal.compute.taskcontext import TaskContext

        tc = TaskContext.get()
        if tc is None:
            raise RuntimeError("output partitions are written inside tasks only")
        partition, attempt = tc.partitionId(), tc.taskAttemptId()
        try:
            f = committer.open_task_output(partition, attempt)
            try:
                count, _ = write(f, records)
            finally:
                f.close()
            committer.commit_task(partition, attempt)
        except BaseException:  # including a kill: leave nothing of this attempt behind
            try:
                committer.abort_task(partition, attempt)
            except Exception:
                pass
            raise
        return count

    return run


def _save(rdd: RDD, committer: OutputCommitter, write: Callable[[IO[bytes], Iterator], Any], action: str) -> None:
    committer.setup_job()  # FileAlreadyExists before any task runs
    try:
        rdd.ctx.run_job(rdd, partition_writer(committer, write), None, action)
    except BaseException:
        committer.abort_job()
        raise
    committer.commit_job()


def save_as_text(rdd: RDD, path: str, compressionCodecClass: str | None = None) -> None:
    """Each record as a line: ``str(record)`` in UTF-8 (bytes records as they are);
    ``part-NNNNN`` files, ``part-NNNNN.gz`` with the gzip codec."""
    committer = OutputCommitter(path, codec=codec_for(compressionCodecClass))
    _save(rdd, committer, write_text_partition, "saveAsTextFile")


def save_as_pickle(rdd: RDD, path: str, batchSize: int = 10) -> None:
    """Records as pickled batches of ``batchSize`` (``0``: the engine's default batch),
    read back by ``pickleFile``."""
    from shoal.compute.serde import DEFAULT_BATCH_RECORDS

    batch = batchSize if batchSize and batchSize > 0 else DEFAULT_BATCH_RECORDS

    def write(f: IO[bytes], records: Iterator) -> tuple[int, int]:
        return write_pickle_partition(f, records, batch)

    _save(rdd, OutputCommitter(path), write, "saveAsPickleFile")
