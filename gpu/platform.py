"""Choosing the OpenCL platform and device, and building the kernels once.

A device is usable when a small test kernel compiles on it and gives the right answer (a
platform can be listed and still fail to compile, as pyopencl's bundled PoCL does on some
CPUs). Without ``NICSIM_CL``, GPUs come before accelerators, accelerators before CPUs, and
within a kind the platforms' order is kept.

``NICSIM_CL`` overrides the choice: ``PLATFORM`` or ``PLATFORM:DEVICE``, where each part is a
number (the index ``nicsim gpu info`` prints) or a case-insensitive piece of the name
(``NICSIM_CL=nvidia``, ``NICSIM_CL=portable:0``, ``NICSIM_CL=1:0``). ``NICSIM_CL=none`` turns
OpenCL off. The named device is still checked with the test kernel.

Built programs are kept per context in memory, and pyopencl keeps their binaries under
``~/.cache/nicsim/opencl`` (``$XDG_CACHE_HOME/nicsim/opencl``), so a kernel compiles once per
machine, not once per process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

import numpy as np

__all__ = ["ENV_VAR", "GpuUnavailable", "Platform", "cache_dir", "get_platform",
           "kernel_source", "list_devices", "platform_slug"]

ENV_VAR = "NICSIM_CL"

_TEST_KERNEL = """
__kernel void nicsim_probe(__global const uint *a, __global uint *b)
{
    size_t i = get_global_id(0);
    b[i] = a[i] * 3u + (uint)i;
}
"""
_KIND_ORDER = {"gpu": 0, "accelerator": 1, "cpu": 2, "other": 3}


class GpuUnavailable(RuntimeError):
    """No usable OpenCL device; the message is one sentence saying why and what to do."""


def cache_dir() -> Path:
    """Return the folder pyopencl keeps built kernel binaries in."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "nicsim" / "opencl"


def _kind(device) -> str:
    import pyopencl as cl

    if device.type & cl.device_type.GPU:
        return "gpu"
    if device.type & cl.device_type.ACCELERATOR:
        return "accelerator"
    if device.type & cl.device_type.CPU:
        return "cpu"
    return "other"


def list_devices() -> list[dict]:
    """Return every platform and device found, with whether the test kernel works on it.

    Each entry: ``platform`` (index), ``device`` (index), ``platform_name``, ``device_name``,
    ``kind``, ``usable`` (bool) and ``error`` (why not, or ``None``). An empty list when
    pyopencl or an OpenCL loader is missing.
    """
    try:
        import pyopencl as cl
        platforms = cl.get_platforms()
    except Exception:  # noqa: BLE001 - no ICD loader, no platform: nothing to list
        return []
    out = []
    for p_index, platform in enumerate(platforms):
        try:
            devices = platform.get_devices()
        except Exception as exc:  # noqa: BLE001
            out.append({"platform": p_index, "device": None, "platform_name": platform.name,
                        "device_name": None, "kind": None, "usable": False,
                        "error": _one_line(exc)})
            continue
        for d_index, device in enumerate(devices):
            error = _probe(device)
            out.append({"platform": p_index, "device": d_index,
                        "platform_name": platform.name.strip(),
                        "device_name": device.name.strip(), "kind": _kind(device),
                        "usable": error is None, "error": error})
    return out


def _one_line(exc) -> str:
    text = " ".join(str(exc).split())
    return text[:200] or type(exc).__name__


def _probe(device) -> str | None:
    """Compile and run the test kernel on ``device``; return ``None`` or why it failed."""
    try:
        import pyopencl as cl

        ctx = cl.Context([device])
        queue = cl.CommandQueue(ctx)
        program = cl.Program(ctx, _TEST_KERNEL).build()
        a = np.arange(64, dtype=np.uint32)
        b = np.zeros_like(a)
        mf = cl.mem_flags
        a_buf = cl.Buffer(ctx, mf.READ_ONLY | mf.COPY_HOST_PTR, hostbuf=a)
        b_buf = cl.Buffer(ctx, mf.WRITE_ONLY, b.nbytes)
        program.nicsim_probe(queue, a.shape, None, a_buf, b_buf)
        cl.enqueue_copy(queue, b, b_buf)
        queue.finish()
    except Exception as exc:  # noqa: BLE001 - any failure makes the device unusable
        return _one_line(exc)
    if not np.array_equal(b, a * 3 + np.arange(64, dtype=np.uint32)):
        return "the test kernel gave wrong results"
    return None


def _matches(spec: str, index: int, name: str) -> bool:
    spec = spec.strip()
    if spec.isdigit():
        return int(spec) == index
    return spec.lower() in name.lower()


@dataclass
class Platform:
    """The chosen OpenCL device with its context and queue.

    Members
    -------
    name : str
        ``"<platform name> / <device name>"``.
    slug : str
        The name as a file-name part (see :func:`platform_slug`).
    kind : str
        ``"gpu"``, ``"accelerator"``, ``"cpu"`` or ``"other"``.
    ctx, queue : pyopencl.Context, pyopencl.CommandQueue
        The queue has profiling on (kernel times for calibration).
    """

    name: str
    slug: str
    kind: str
    device: object
    ctx: object
    queue: object

    def program(self, *names: str, options: tuple = ()):
        """Return the program built from kernel files ``names`` (concatenated), once per
        context."""
        key = (names, tuple(options))
        built = self._programs.get(key)
        if built is None:
            import pyopencl as cl

            source = "\n".join(kernel_source(n) for n in names)
            path = cache_dir()
            try:
                path.mkdir(parents=True, exist_ok=True)
                built = cl.Program(self.ctx, source).build(options=list(options),
                                                           cache_dir=str(path))
            except OSError:
                built = cl.Program(self.ctx, source).build(options=list(options))
            self._programs[key] = built
        return built

    def kernel(self, name: str, *files: str):
        """Return kernel ``name`` of the program built from ``files``, one object per
        context (kernel arguments are set at each call)."""
        key = (name, files)
        found = self._kernels.get(key)
        if found is None:
            import pyopencl as cl

            found = self._kernels[key] = cl.Kernel(self.program(*files), name)
        return found

    def __post_init__(self):
        self._programs = {}
        self._kernels = {}


def platform_slug(name: str) -> str:
    """Make a platform name a file-name part: lower case, runs of other characters as ``-``.

    ``"Portable Computing Language / pthread-skylake-avx512-AMD EPYC"`` becomes
    ``"portable-computing-language-pthread-skylake-avx512-amd-epyc"``.
    """
    out = []
    for char in name.lower():
        out.append(char if char.isalnum() else "-")
    return "-".join(part for part in "".join(out).split("-") if part)[:80]


def kernel_source(name: str) -> str:
    """Return the text of ``gpu/kernels/<name>.cl``."""
    return resources.files("nicsim.gpu").joinpath("kernels", f"{name}.cl").read_text()


@cache
def get_platform() -> Platform:
    """Return the usable OpenCL device (see the module documentation), chosen once.

    Raises
    ------
    GpuUnavailable
        When pyopencl or every platform is missing or fails the test kernel, when
        ``NICSIM_CL`` names nothing usable, or when it is ``none``.
    """
    spec = os.environ.get(ENV_VAR, "").strip()
    if spec.lower() == "none":
        raise GpuUnavailable(f"OpenCL is turned off ({ENV_VAR}=none); unset it to use a "
                             f"platform")
    try:
        import pyopencl as cl  # noqa: F401
    except ImportError:
        raise GpuUnavailable("pyopencl is not installed; install the nicsim package with its "
                             "dependencies") from None
    devices = list_devices()
    if not devices:
        raise GpuUnavailable("no OpenCL platform found; install one (Debian: apt install "
                             "pocl-opencl-icd) or a GPU vendor's OpenCL driver")
    if spec:
        plat_spec, _, dev_spec = spec.partition(":")
        chosen = [d for d in devices
                  if _matches(plat_spec, d["platform"], d["platform_name"])
                  and (not dev_spec or d["device"] is not None
                       and _matches(dev_spec, d["device"], d["device_name"] or ""))]
        if not chosen:
            raise GpuUnavailable(f"{ENV_VAR}={spec!r} names no OpenCL device; 'nicsim gpu "
                                 f"info' lists them (PLATFORM[:DEVICE], index or part of the "
                                 f"name)")
        usable = [d for d in chosen if d["usable"]]
        if not usable:
            raise GpuUnavailable(f"{ENV_VAR}={spec!r}: the OpenCL device "
                                 f"{chosen[0]['device_name']!r} cannot build the test kernel "
                                 f"({chosen[0]['error']})")
    else:
        usable = sorted((d for d in devices if d["usable"]),
                        key=lambda d: _KIND_ORDER.get(d["kind"], 3))
        if not usable:
            first = devices[0]
            raise GpuUnavailable(f"no OpenCL device can build the test kernel (first: "
                                 f"{first['platform_name']}: {first['error']}); install "
                                 f"Debian's pocl-opencl-icd or a GPU driver, or pick one with "
                                 f"{ENV_VAR}")
    pick = usable[0]
    import pyopencl as cl

    device = cl.get_platforms()[pick["platform"]].get_devices()[pick["device"]]
    ctx = cl.Context([device])
    queue = cl.CommandQueue(ctx, properties=cl.command_queue_properties.PROFILING_ENABLE)
    name = f"{pick['platform_name']} / {pick['device_name']}"
    return Platform(name=name, slug=platform_slug(name), kind=pick["kind"], device=device,
                    ctx=ctx, queue=queue)
