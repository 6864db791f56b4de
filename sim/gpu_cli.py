"""The ``nicsim gpu`` commands: the OpenCL devices found, and the kernels' throughput.

Errors a user can cause (no usable OpenCL device, a bad ``NICSIM_CL``, a bad signature file,
an output that cannot be written) end in one sentence on stderr and exit status 2.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from nicsim.sim.clierr import err_console
from nicsim.sim.clierr import fail as _fail

__all__ = ["app"]

app = typer.Typer(help="OpenCL kernels for packet processing: devices and throughput.",
                  no_args_is_help=True)
console = Console()


@app.command("info")
def info(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a "
                                          "table.")] = False,
):
    """List the OpenCL platforms and devices, whether each runs the test kernel, and the
    one nicsim picks (NICSIM_CL=PLATFORM[:DEVICE] overrides)."""
    from nicsim.gpu.platform import ENV_VAR, GpuUnavailable, get_platform, list_devices

    devices = list_devices()
    try:
        chosen = get_platform().name
        why = None
    except GpuUnavailable as exc:
        chosen, why = None, str(exc)
    if as_json:
        console.print_json(json.dumps({"devices": devices, "chosen": chosen, "error": why,
                                       ENV_VAR: os.environ.get(ENV_VAR)}))
        return
    table = Table(title="OpenCL devices")
    for column in ("platform", "device", "platform name", "device name", "kind", "usable"):
        table.add_column(column)
    for d in devices:
        usable = "yes" if d["usable"] else f"no: {d['error']}"
        table.add_row(str(d["platform"]), str(d["device"]), d["platform_name"],
                      d["device_name"] or "-", d["kind"] or "-", usable)
    console.print(table)
    override = os.environ.get(ENV_VAR)
    console.print(f"{ENV_VAR}: {override!r}" if override else f"{ENV_VAR}: not set")
    if chosen:
        console.print(f"chosen: {chosen}")
    else:
        err_console.print(f"nicsim: no usable OpenCL device: {why}", highlight=False,
                          soft_wrap=True)


@app.command("bench")
def bench(
    out: Annotated[Path | None, typer.Option(help="Results file (default: "
                                             "benchmarks/results/gpu-<platform>.json).")] = None,
    calibration: Annotated[bool, typer.Option(help="Also write the GPU device model's "
                                              "calibration, gpu/calibration/<platform>.json "
                                              "(host.gpu_profile = \"<platform>\").")] = True,
    scale: Annotated[float, typer.Option(help="Batch sizes relative to the defaults "
                                         "(0.01 .. 10).")] = 1.0,
    reps: Annotated[int, typer.Option(help="Runs per measurement, the median kept.")] = 5,
    signatures: Annotated[Path | None, typer.Option(help="IDS signature file for the "
                                                    "Aho-Corasick kernel (default: 200 "
                                                    "random patterns).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a "
                                          "table.")] = False,
):
    """Measure each kernel's packets/s on the OpenCL device against numpy in the same run."""
    from nicsim.gpu.bench import run_bench
    from nicsim.gpu.device import calibration_path
    from nicsim.gpu.platform import GpuUnavailable, get_platform
    from nicsim.hw.ref.ac import load_signatures

    if not 0.01 <= scale <= 10:
        _fail(f"--scale must be from 0.01 to 10, not {scale}")
    if reps < 1:
        _fail(f"--reps must be at least 1, not {reps}")
    patterns = None
    if signatures is not None:
        try:
            patterns = [s.content for s in load_signatures(signatures)]
        except ValueError as exc:
            _fail(str(exc))
    try:
        platform = get_platform()
    except GpuUnavailable as exc:
        _fail(f"no usable OpenCL device: {exc}")
    err_console.print(f"nicsim gpu bench on {platform.name}", highlight=False, soft_wrap=True)
    result = run_bench(platform, scale=scale, reps=reps, signatures=patterns,
                       progress=lambda text: err_console.print(f"  {text}", highlight=False))
    out = out or Path("benchmarks") / "results" / f"gpu-{platform.slug}.json"
    targets = [(out, result)]
    if calibration:
        targets.append((calibration_path(platform.slug), result["profile"]))
    for path, data in targets:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(data, indent=2) + "\n")
        except OSError as exc:
            _fail(f"cannot write {path} ({exc.strerror})")
    if as_json:
        console.print_json(json.dumps(result))
        return
    table = Table(title=f"Kernels on {platform.name} (packets/s)")
    for column in ("kernel", "frame bytes", "packets", "OpenCL kernel", "OpenCL with copies",
                   "numpy", "kernel / numpy", "agree"):
        table.add_column(column, justify="right")
    for r in result["results"]:
        table.add_row(r["kernel"], str(r["frame_bytes"] or "-"), str(r["packets"]),
                      f"{r['opencl_pps']:,}", f"{r['opencl_end_to_end_pps']:,}",
                      f"{r['numpy_pps']:,}", f"{r['opencl_over_numpy']}",
                      "yes" if r["agree"] else "NO")
    # Whole figures also into a log or a pipe, where the console would be 80 columns wide.
    (console if console.width >= 132 else Console(width=132)).print(table)
    console.print(f"wrote {out}" + (f" and {targets[1][0]}" if calibration else ""),
                  soft_wrap=True)


def _numbers(text, kind, option):
    try:
        values = [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        _fail(f"{option} takes numbers separated by commas, not {text!r}")
    if not values or any(v <= 0 for v in values):
        _fail(f"{option} takes positive numbers separated by commas, not {text!r}")
    return values


@app.command("sweep")
def sweep(
    batches: Annotated[str, typer.Option(help="GPU batch sizes, comma-separated.")] =
        "16,64,256,1024",
    rates: Annotated[str, typer.Option(help="Offered loads in Mpps, comma-separated.")] =
        "0.05,1,4,14.88",
    profile: Annotated[str, typer.Option(help="GPU profile (host.gpu_profile).")] = "discrete",
    kernel: Annotated[str, typer.Option(help="GPU kernel (host.gpu_kernel).")] = "lpm4",
    duration_us: Annotated[float, typer.Option(help="Simulated traffic time per run.")] = 500.0,
    out: Annotated[Path, typer.Option(help="Results file.")] =
        Path("benchmarks/results/gpu-sweep.json"),
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a "
                                          "table.")] = False,
):
    """Simulate l3fwd on the PMD path and on the GPU path at each batch size and load:
    where the CPU wins (low load) and what the batch size trades (latency for throughput)."""
    from nicsim.sim.scenario import ScenarioError, load_scenario
    from nicsim.sim.world import run_scenario

    batch_list = _numbers(batches, int, "--batches")
    rate_list = _numbers(rates, float, "--rates")
    runs = []
    for rate in rate_list:
        cases = [("pmd", None)] + [("gpu", b) for b in batch_list]
        for path, batch in cases:
            sets = [f"host.path={path}", "host.app=l3fwd", f"traffic.0.rate_mpps={rate}",
                    "traffic.0.flows=64", f"duration_us={duration_us}"]
            if batch is not None:
                sets += [f"host.gpu_batch={batch}", f"host.gpu_profile=\"{profile}\"",
                         f"host.gpu_kernel={kernel}"]
            try:
                _, result, _ = run_scenario(load_scenario(None, sets))
            except (ScenarioError, ValueError) as exc:
                _fail(str(exc))
            runs.append({"path": path, "batch": batch, "offered_mpps": rate,
                         "throughput_mpps": result["throughput"]["mpps"],
                         "latency_p50_us": result["latency_us"]["p50"],
                         "latency_p99_us": result["latency_us"]["p99"],
                         "delivered": result["delivered_frames"],
                         "offered": result["offered"]["frames"]})
    data = {"app": "l3fwd", "frame_bytes": 64, "profile": profile, "kernel": kernel,
            "duration_us": duration_us, "runs": runs}
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(data, indent=2) + "\n")
    except OSError as exc:
        _fail(f"cannot write {out} ({exc.strerror})")
    if as_json:
        console.print_json(json.dumps(data))
        return
    table = Table(title=f"l3fwd, 64-byte frames: PMD vs GPU ({profile}, {kernel})")
    for column in ("offered Mpps", "path", "batch", "Mpps out", "p50 us", "p99 us"):
        table.add_column(column, justify="right")
    for r in runs:
        table.add_row(f"{r['offered_mpps']}", r["path"], str(r["batch"] or "-"),
                      f"{r['throughput_mpps']:.3f}", f"{r['latency_p50_us'] or 0:.1f}",
                      f"{r['latency_p99_us'] or 0:.1f}")
    console.print(table)
    console.print(f"wrote {out}")
