"""Batches of frames as the kernels take them, and the buffer plumbing the wrappers share.

A batch of ``n`` frames is one ``uint8`` array of their bytes back to back and ``n + 1``
``uint32`` offsets: frame ``i`` is ``data[offsets[i]:offsets[i + 1]]`` (PacketShader's
chunk: one copy to the device per batch, not one per packet).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["Batch", "pack", "to_device", "empty_device", "from_device", "launch"]

MAX_BATCH_BYTES = 1 << 31  # offsets are 32-bit


class Batch(NamedTuple):
    """Frames packed for a kernel.

    Members
    -------
    data : numpy.ndarray of uint8
    offsets : numpy.ndarray of uint32, ``n + 1`` entries
    """

    data: np.ndarray
    offsets: np.ndarray

    @property
    def count(self) -> int:
        return len(self.offsets) - 1

    def frame(self, i: int) -> bytes:
        return self.data[self.offsets[i]:self.offsets[i + 1]].tobytes()


def pack(frames) -> Batch:
    """Pack a sequence of bytes-like frames into a :class:`Batch`.

    Raises
    ------
    ValueError
        If the frames hold 2 GiB or more (offsets are 32-bit).
    """
    frames = [bytes(f) for f in frames]
    lengths = np.fromiter((len(f) for f in frames), dtype=np.int64, count=len(frames))
    total = int(lengths.sum())
    if total >= MAX_BATCH_BYTES:
        raise ValueError(f"a batch holds less than 2 GiB of frames, not {total} bytes")
    offsets = np.zeros(len(frames) + 1, dtype=np.uint32)
    offsets[1:] = np.cumsum(lengths)
    data = np.frombuffer(b"".join(frames), dtype=np.uint8) if total else \
        np.zeros(0, dtype=np.uint8)
    return Batch(data, offsets)


def to_device(platform, array, writable=False):
    """Copy a numpy array to a new device buffer (a 1-byte buffer stands for an empty one:
    OpenCL has no empty buffers)."""
    import pyopencl as cl

    mf = cl.mem_flags
    array = np.ascontiguousarray(array)
    if array.nbytes == 0:
        array = np.zeros(1, dtype=np.uint8)
    flags = (mf.READ_WRITE if writable else mf.READ_ONLY) | mf.COPY_HOST_PTR
    return cl.Buffer(platform.ctx, flags, hostbuf=array)


def empty_device(platform, nbytes):
    """Allocate a device buffer of ``nbytes`` (at least 1)."""
    import pyopencl as cl

    return cl.Buffer(platform.ctx, cl.mem_flags.READ_WRITE, max(1, int(nbytes)))


def from_device(platform, buffer, shape, dtype):
    """Copy a device buffer back into a new numpy array of ``shape`` and ``dtype``."""
    import pyopencl as cl

    out = np.empty(shape, dtype=dtype)
    if out.nbytes:
        cl.enqueue_copy(platform.queue, out, buffer)
    return out


def launch(platform, kernel, items, *args):
    """Run ``kernel`` over ``items`` work-items (none for 0); return the event or ``None``."""
    if items == 0:
        return None
    return kernel(platform.queue, (int(items),), None, *args)
