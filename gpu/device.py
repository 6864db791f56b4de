# Ref: S. Han, K. Jang, K. Park, S. Moon, "PacketShader: a GPU-accelerated software router",
#      SIGCOMM 2010 (batches copied to the GPU, one kernel launch per batch, results copied
#      back; the CPU does packet I/O); GPU-Ether (the NIC writes frames straight into GPU
#      memory, peer to peer); R. Neugebauer et al., SIGCOMM 2018 (the PCIe model used here)
"""The GPU as a PCIe device in the simulation: copies, kernel launches and kernel time.

A :class:`GpuDevice` sits on its own PCIe link (:class:`nicsim.sim.pcie.PcieLink`). Like the
link, it is a calendar: each method schedules its work and returns the picosecond at which
it is done; a host path waits with ``env.timeout`` only when it must. Copies in, the kernel
and copies out of a batch run in order, kernels one at a time, while the copy engines overlap
a later batch's copy with an earlier kernel: :meth:`GpuDevice.offload` puts a batch's copy out
on the link only when its kernel ends (one small SimPy process), because the link sends each
direction's TLPs in the order they are scheduled.

* Host to device: the GPU's copy engine reads the batch from pinned host memory
  (``PcieLink.dma_read``: read requests up, completions down).
* Device to host: it writes the results (``PcieLink.dma_write``).
* Peer to peer (``p2p``): the NIC writes frames into GPU memory through the GPU's BAR; on
  this link they are posted writes arriving from the root complex (``PcieLink.mmio_write``
  carries the same TLPs), scheduled when the frames leave the NIC, and no host copy of the
  frame data is needed.
* A kernel costs the launch overhead (driver and doorbell, paid before the GPU starts) plus
  ``fixed + max(items * per_item + bytes * per_byte, longest * per_span_byte)`` of GPU time
  (:class:`KernelCost`), from a
  :class:`GpuProfile`: measured on an OpenCL platform (``nicsim gpu bench`` writes
  ``gpu/calibration/<platform>.json``) or the built-in assumptions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from nicsim.sim.pcie import PcieConfig, PcieLink

__all__ = ["DEFAULT_PROFILE", "GPU_BAR", "KERNELS", "STAGING_ADDR", "GpuDevice",
           "GpuProfile", "KernelCost", "Offload", "calibration_path", "load_profile"]

KERNELS = ("lpm4", "lpm6", "rss", "checksum", "ac", "aes")
DEFAULT_PROFILE = "discrete"
STAGING_ADDR = 0x2_0000_0000  # pinned host staging buffers (any address above 4 GiB)
GPU_BAR = 0x38_0000_0000  # where the BIOS placed the GPU's memory BAR (large BAR, 64-bit)


@dataclass(frozen=True)
class KernelCost:
    """GPU time of one kernel launch:
    ``fixed_ps + max(items * item_ps + nbytes * byte_ps, longest * span_ps)``.

    The first term of the maximum is throughput: work spread over all the GPU's lanes. The
    second is one work-item's walk through its frame: a kernel that runs a frame per work-item
    (Aho-Corasick, checksum, AES-CTR) cannot finish before its longest frame is done, however
    few the frames, and on a large GPU a batch of long frames is bound by that chain of
    dependent loads rather than by the work in total.

    Members
    -------
    fixed_ps : float
        Time of a launch with no work (scheduling the grid, the final wave).
    item_ps : float
        Per packet (work-item).
    byte_ps : float
        Per byte of packet data the kernel reads.
    span_ps : float
        Per byte of the longest packet data one work-item reads.
    """

    fixed_ps: float = 0.0
    item_ps: float = 0.0
    byte_ps: float = 0.0
    span_ps: float = 0.0

    def time_ps(self, items: int, nbytes: int = 0, longest: int = 0) -> int:
        return round(self.fixed_ps + max(items * self.item_ps + nbytes * self.byte_ps,
                                         longest * self.span_ps))


_ASSUMED = "assumption: a discrete data-centre GPU"
# Built-in profile: figures for a discrete GPU we cannot measure here. Launch overhead: a
# CUDA kernel launch costs ~5-10 us end to end (eunomia.dev CUDA tutorial 13, "low-latency GPU
# packet processing"); the low end is taken. IPv4 lookups at 1e9/s are the issue's target for
# a data-centre GPU; the others are assumptions of the same order (memory-bound table walks,
# ~50-100 GB/s of streaming work).
_DISCRETE = {
    "name": DEFAULT_PROFILE,
    "source": _ASSUMED,
    "launch_ps": 5_000_000,
    "kernels": {
        "lpm4": {"fixed_ps": 2_000_000, "item_ps": 1_000, "byte_ps": 0},
        "lpm6": {"fixed_ps": 2_000_000, "item_ps": 5_000, "byte_ps": 0},
        "rss": {"fixed_ps": 2_000_000, "item_ps": 1_000, "byte_ps": 0},
        "checksum": {"fixed_ps": 2_000_000, "item_ps": 200, "byte_ps": 10},
        "ac": {"fixed_ps": 2_000_000, "item_ps": 200, "byte_ps": 50},
        "aes": {"fixed_ps": 2_000_000, "item_ps": 200, "byte_ps": 25},
    },
}


@dataclass(frozen=True)
class GpuProfile:
    """What a GPU costs: launch overhead and per-kernel time.

    Members
    -------
    name : str
        ``"discrete"`` (built in) or a platform's name as a file-name part.
    launch_ps : int
        Host-side launch overhead per kernel (API call, driver, doorbell).
    kernels : dict of str to KernelCost
    source : str
        Where the figures come from.
    """

    name: str
    launch_ps: int
    kernels: dict = field(default_factory=dict)
    source: str = ""

    @classmethod
    def from_dict(cls, data: dict) -> GpuProfile:
        kernels = {k: KernelCost(**{f: float(v) for f, v in c.items()
                                    if f in ("fixed_ps", "item_ps", "byte_ps", "span_ps")})
                   for k, c in data["kernels"].items()}
        missing = sorted(set(KERNELS) - set(kernels))
        if missing:
            raise ValueError(f"GPU profile {data.get('name')!r} has no cost for kernel "
                             f"{missing[0]!r}")
        return cls(str(data["name"]), int(data["launch_ps"]), kernels,
                   str(data.get("source", "")))

    def to_dict(self) -> dict:
        return {"name": self.name, "source": self.source, "launch_ps": self.launch_ps,
                "kernels": {k: {"fixed_ps": round(c.fixed_ps, 1), "item_ps": round(c.item_ps, 3),
                                "byte_ps": round(c.byte_ps, 4), "span_ps": round(c.span_ps, 3)}
                            for k, c in self.kernels.items()}}


def calibration_path(slug: str) -> Path:
    """Return where the calibration of platform ``slug`` lives (``gpu/calibration/``)."""
    return Path(str(resources.files("nicsim.gpu").joinpath("calibration", f"{slug}.json")))


def load_profile(name: str = DEFAULT_PROFILE) -> GpuProfile:
    """Return the built-in profile, or the calibration stored for platform ``name``.

    Raises
    ------
    ValueError
        One sentence naming the profile when no such calibration exists or it is unreadable.
    """
    if name == DEFAULT_PROFILE:
        return GpuProfile.from_dict(_DISCRETE)
    path = calibration_path(name)
    try:
        data = json.loads(path.read_text())
        return GpuProfile.from_dict(data)
    except FileNotFoundError:
        known = sorted(p.stem for p in path.parent.glob("*.json")) if path.parent.is_dir() \
            else []
        raise ValueError(f"no GPU calibration {name!r}: use {DEFAULT_PROFILE!r}"
                         + "".join(f", {k!r}" for k in known)
                         + " or run 'nicsim gpu bench' on that platform") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"GPU calibration {path} is unreadable ({exc})") from None


class Offload:
    """A batch handed to the GPU by :meth:`GpuDevice.offload`.

    Members
    -------
    kernel_done_ps : int
        When its kernel finishes.
    landed_ps : int or None
        When its results are in host memory; ``None`` until the kernel has finished in
        simulated time and the copy out is scheduled.
    """

    __slots__ = ("kernel_done_ps", "landed_ps")

    def __init__(self, kernel_done_ps: int):
        self.kernel_done_ps = kernel_done_ps
        self.landed_ps = None

    def landed_by(self, t: int) -> bool:
        """Whether the results are in host memory at ``t``."""
        return self.landed_ps is not None and self.landed_ps <= t

    def ready_by(self) -> int:
        """The earliest time to look again: the landing time, or the kernel's end before
        that is known."""
        return self.kernel_done_ps if self.landed_ps is None else self.landed_ps


class GpuDevice:
    """A GPU on its own PCIe link, as a calendar of copies and kernels.

    Parameters
    ----------
    env : simpy.Environment
    profile : GpuProfile, optional
        Default: the built-in ``"discrete"`` profile.
    pcie : PcieConfig, optional
        The GPU's link (default Gen3 x16, a GPU slot).
    p2p : bool
        Frames reach GPU memory from the NIC directly (:meth:`peer_write`).

    Members
    -------
    link : nicsim.sim.pcie.PcieLink
    launches, items, h2d_bytes, d2h_bytes, p2p_bytes : int
    busy_ps : int
        GPU time spent in kernels.
    """

    def __init__(self, env, profile: GpuProfile | None = None, pcie: PcieConfig | None = None,
                 p2p: bool = False):
        self.env = env
        self.profile = profile if profile is not None else load_profile()
        self.link = PcieLink(env, pcie if pcie is not None else PcieConfig(gen=3, lanes=16))
        self.p2p = p2p
        self.free_at = env.now  # when the GPU finishes the kernels scheduled so far
        self.launches = self.items = self.h2d_bytes = self.d2h_bytes = self.p2p_bytes = 0
        self.busy_ps = 0

    def copy_to_device(self, nbytes: int, ready_ps: int | None = None) -> int:
        """Copy ``nbytes`` of pinned host memory into the GPU; return when it is there."""
        ready = self.env.now if ready_ps is None else ready_ps
        if nbytes <= 0:
            return ready
        self.h2d_bytes += nbytes
        return self.link.dma_read(STAGING_ADDR, nbytes, ready)

    def copy_to_host(self, nbytes: int, ready_ps: int | None = None) -> int:
        """Copy ``nbytes`` of results from the GPU to host memory; return when they land."""
        ready = self.env.now if ready_ps is None else ready_ps
        if nbytes <= 0:
            return ready
        self.d2h_bytes += nbytes
        return self.link.dma_write(STAGING_ADDR, nbytes, ready)

    def peer_write(self, nbytes: int, ready_ps: int | None = None) -> int:
        """A frame of ``nbytes`` written by the NIC into GPU memory; return when it is
        there."""
        ready = self.env.now if ready_ps is None else ready_ps
        if nbytes <= 0:
            return ready
        self.p2p_bytes += nbytes
        return self.link.mmio_write(GPU_BAR, nbytes, ready)

    def run_kernel(self, kernel: str, items: int, nbytes: int = 0,
                   ready_ps: int | None = None, longest: int = 0) -> int:
        """Launch ``kernel`` over ``items`` packets reading ``nbytes`` (at most ``longest`` by
        one work-item) once its input is there (``ready_ps``); return when it has finished."""
        cost = self.profile.kernels.get(kernel)
        if cost is None:
            raise ValueError(f"GPU kernel must be one of {', '.join(KERNELS)}, not {kernel!r}")
        ready = self.env.now if ready_ps is None else ready_ps
        start = max(ready + self.profile.launch_ps, self.free_at)
        run = cost.time_ps(items, nbytes, longest)
        self.free_at = start + run
        self.launches += 1
        self.items += items
        self.busy_ps += run
        return self.free_at

    def offload(self, kernel: str, items: int, in_bytes: int, out_bytes: int,
                kernel_bytes: int = 0, ready_ps: int | None = None,
                input_ready_ps: int | None = None, kernel_longest: int = 0) -> Offload:
        """Copy a batch in, run ``kernel`` on it, copy the results out.

        The copy in and the kernel are scheduled now; the copy out is put on the link when
        the kernel finishes (a SimPy process of its own), so that the next batches' copies in,
        scheduled before that, go first: the link's calendar sends each direction's TLPs in
        the order they are scheduled, and the GPU's copy engines overlap a batch's copy in
        with an earlier batch's kernel.

        Parameters
        ----------
        in_bytes : int
            Bytes copied from the host (0 when the input is in GPU memory already).
        out_bytes : int
            Result bytes copied back.
        kernel_bytes : int
            Packet bytes the kernel reads (its per-byte cost).
        kernel_longest : int
            The most of them one work-item reads (its span).
        ready_ps : int, optional
            When the host has the batch ready (default now).
        input_ready_ps : int, optional
            When input already on its way (peer writes) is in GPU memory.

        Returns
        -------
        Offload
            ``kernel_done_ps`` now, ``landed_ps`` (results in host memory) once the kernel has
            finished in simulated time.
        """
        ready = self.env.now if ready_ps is None else ready_ps
        there = self.copy_to_device(in_bytes, ready)
        if input_ready_ps is not None and input_ready_ps > there:
            there = input_ready_ps
        batch = Offload(self.run_kernel(kernel, items, kernel_bytes, there, kernel_longest))
        if out_bytes > 0:
            self.env.process(self._copy_out(batch, out_bytes))
        else:
            batch.landed_ps = batch.kernel_done_ps
        return batch

    def _copy_out(self, batch: Offload, nbytes: int):
        yield self.env.timeout(max(0, batch.kernel_done_ps - self.env.now))
        batch.landed_ps = self.copy_to_host(nbytes, batch.kernel_done_ps)
