"""Per-frame kernels on batches: receive checksum verification and RSS.

Each wrapper takes a :class:`nicsim.gpu.batch.Batch` (or a list of frames) and returns numpy
arrays, one entry per frame, equal to what the golden references give frame by frame:
:func:`nicsim.hw.ref.checksum.rx_checksum` and :func:`nicsim.hw.ref.rss.rss_hash`.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from nicsim.hw.ref.rss import RssConfig

from .batch import Batch, empty_device, from_device, launch, pack, to_device

__all__ = ["ChecksumKernel", "ChecksumResult", "RssKernel", "RssOut", "toeplitz_tables"]


def toeplitz_tables(key: bytes, positions: int = 36) -> np.ndarray:
    """Per input byte position and value, the Toeplitz hash contribution (uint32,
    ``positions * 256`` entries): the XOR of the 32-bit windows of ``key`` at the byte's set
    bits, bit ``i`` of the input (MSB of byte 0 first) taking the window at key bit ``i``."""
    key_int = int.from_bytes(key, "big")
    key_bits = 8 * len(key)
    out = np.zeros((positions, 256), dtype=np.uint32)
    values = np.arange(256)
    for position in range(positions):
        for bit in range(8):
            window = (key_int >> (key_bits - 32 - (8 * position + 7 - bit))) & 0xFFFFFFFF
            out[position, (values >> bit) & 1 == 1] ^= np.uint32(window)
    return out.reshape(-1)


class ChecksumResult(NamedTuple):
    """Per-frame verdicts (``hw.ref.checksum.Status`` values) and CHECKSUM_COMPLETE sums."""

    ip: np.ndarray
    l4: np.ndarray
    csum_complete: np.ndarray


class RssOut(NamedTuple):
    """Per-frame Toeplitz hash, hash type (``hw.ref.rss.HashType`` values) and queue."""

    hash: np.ndarray
    hash_type: np.ndarray
    queue: np.ndarray


def _batch(frames) -> Batch:
    return frames if isinstance(frames, Batch) else pack(frames)


class ChecksumKernel:
    """Batched receive checksum verification on the OpenCL device."""

    def __init__(self, platform):
        self.platform = platform
        self.kernel = platform.kernel("rx_checksum", "common", "checksum")
        self.last_event = None

    def run(self, frames) -> ChecksumResult:
        b = _batch(frames)
        p = self.platform
        n = b.count
        ip, l4, csum = (empty_device(p, n), empty_device(p, n), empty_device(p, 2 * n))
        self.last_event = launch(p, self.kernel, n, to_device(p, b.data),
                                 to_device(p, b.offsets), np.uint32(n), ip, l4, csum)
        return ChecksumResult(from_device(p, ip, n, np.uint8), from_device(p, l4, n, np.uint8),
                              from_device(p, csum, n, np.uint16))


class RssKernel:
    """Batched RSS (hash type, Toeplitz hash, queue) on the OpenCL device.

    Parameters
    ----------
    platform : nicsim.gpu.platform.Platform
    config : nicsim.hw.ref.rss.RssConfig, optional
        Key, enabled hash types and indirection table (default: the reference's defaults).
    """

    def __init__(self, platform, config: RssConfig | None = None):
        self.platform = platform
        self.config = config = config if config is not None else RssConfig()
        config.validate()
        self.kernel = platform.kernel("rss_hash", "common", "rss")
        self.byte_hash = to_device(platform, toeplitz_tables(config.key))
        self.table = to_device(platform, np.asarray(config.table, dtype=np.uint32))
        self.mask = np.uint32(len(config.table) - 1)
        self.last_event = None

    def run(self, frames) -> RssOut:
        b = _batch(frames)
        p = self.platform
        n = b.count
        h, t, q = empty_device(p, 4 * n), empty_device(p, n), empty_device(p, 4 * n)
        self.last_event = launch(p, self.kernel, n, to_device(p, b.data),
                                 to_device(p, b.offsets), np.uint32(n), self.byte_hash,
                                 np.uint32(self.config.enabled), self.table, self.mask, h, t, q)
        return RssOut(from_device(p, h, n, np.uint32), from_device(p, t, n, np.uint8),
                      from_device(p, q, n, np.uint32))
