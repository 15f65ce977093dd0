"""CRC32C per fixed-size chunk: the integrity check on every block byte.

Chunks start at the beginning of the block; the last chunk may be short. Checksums
travel and are stored as big-endian u32s, one per chunk.
"""

from __future__ import annotations

import struct

import crc32c as _crc32c

from shoal.errors import ChecksumError

_crc = _crc32c.crc32c


def chunk_checksums(data: bytes | bytearray | memoryview, bytes_per_checksum: int) -> bytes:
    """The packed CRC32C of each chunk of ``data``."""
    view = memoryview(data)
    n = len(view)
    crcs = [_crc(view[i : i + bytes_per_checksum]) for i in range(0, n, bytes_per_checksum)]
    return struct.pack(f">{len(crcs)}I", *crcs)


def verify_chunks(
    data: bytes | bytearray | memoryview, checksums: bytes | memoryview, bytes_per_checksum: int, where: str
) -> None:
    """Raise :class:`ChecksumError` naming ``where`` and the first bad chunk."""
    view = memoryview(data)
    n = len(view)
    count = (n + bytes_per_checksum - 1) // bytes_per_checksum
    if len(checksums) != 4 * count:
        raise ChecksumError(f"{where}: expected {count} checksums, got {len(checksums) // 4}")
    expected = struct.unpack(f">{count}I", checksums)
    for idx, i in enumerate(range(0, n, bytes_per_checksum)):
        if _crc(view[i : i + bytes_per_checksum]) != expected[idx]:
            raise ChecksumError(f"{where}: checksum mismatch in chunk {idx} (byte {i})")
