"""The ``nicsim`` command line.

Errors a user can cause (a bad capture, a bad configuration, an unknown design) end in one
sentence on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from nicsim.sim import compare_cli, gpu_cli, pcie_cli, run_cli
from nicsim.sim.clierr import err_console
from nicsim.sim.clierr import fail as _fail

__all__ = ["app", "main"]

app = typer.Typer(
    help="nicsim: NIC offload gateware, its golden models and the host paths that use them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
rtl_app = typer.Typer(help="Run captures through the offload engines.", no_args_is_help=True)
app.add_typer(rtl_app, name="rtl")
from nicsim.sim.ma_cli import ma_app  # noqa: E402

app.add_typer(ma_app, name="ma")
from nicsim.sim.xdp_cli import xdp_app  # noqa: E402

app.add_typer(xdp_app, name="xdp")
from nicsim.sim.toe_cli import toe_app  # noqa: E402

app.add_typer(toe_app, name="toe")

console = Console()

WIDTH_HELP = "Data width of the gateware in bits (64, 128, 256 or 512)."
DESIGN_HELP = "Design: see 'nicsim rtl designs'."


class UserError(Exception):
    """An error to report in one line."""


def _check_width(width):
    if width not in (64, 128, 256, 512):
        _fail(f"--width must be 64, 128, 256 or 512, not {width}.")


@rtl_app.command("run")
def rtl_run(
    engine: Annotated[str, typer.Argument(help="Engine: see 'nicsim rtl engines'.")],
    in_path: Annotated[Path, typer.Option("--in", help="Input capture (pcap or pcapng).")],
    out_path: Annotated[Path, typer.Option("--out", help="Output capture (.pcap, or .pcapng "
                                                         "with per-frame comments).")],
    meta_path: Annotated[Path, typer.Option("--meta", help="One JSON line per input frame "
                                                           "(per output frame for engines "
                                                           "that segment or merge).")],
    width: Annotated[int, typer.Option(help=WIDTH_HELP)] = 64,
    backend: Annotated[str, typer.Option(help="rtl (Verilator) or model (golden "
                                              "reference).")] = "rtl",
    config: Annotated[Path | None, typer.Option(help="TOML configuration of the "
                                                     "engine.")] = None,
    mss: Annotated[int | None, typer.Option(help="Segment size (tso).")] = None,
    udp: Annotated[bool, typer.Option("--udp", help="UDP segmentation (tso).")] = False,
    fixed_id: Annotated[bool, typer.Option("--fixed-id", help="Keep the IPv4 ID of every "
                                                               "segment (tso).")] = False,
    program: Annotated[Path | None, typer.Option(help="Pipeline program TOML "
                                                      "(match-action).")] = None,
    entries: Annotated[Path | None, typer.Option(help="Table entries TOML "
                                                      "(match-action).")] = None,
    waves: Annotated[Path | None, typer.Option(help="Record the RTL run as an FST waveform "
                                                    "(GTKWave, Surfer).")] = None,
):
    """Run a capture through an engine; write the frames and per-frame metadata."""
    from nicsim.hw.engines import ENGINES, ConfigError, load_config, run_model, run_rtl
    from nicsim.hw.pcap import Packet, PcapError, read_pcap, write_pcap
    from nicsim.hw.verilator import VerilatorError

    if engine not in ENGINES:
        _fail(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}.")
    if backend not in ("rtl", "model"):
        _fail(f"--backend must be rtl or model, not {backend!r}.")
    if waves is not None and backend != "rtl":
        _fail("--waves needs --backend rtl.")
    _check_width(width)
    options = {"mss": mss, "udp": udp, "fixed_id": fixed_id, "program": program,
               "entries": entries}
    try:
        packets = read_pcap(in_path)
        cfg = load_config(engine, config, options)
        frames = [p.data for p in packets]
        times_ns = [p.time_ns - packets[0].time_ns for p in packets]
        start = time.monotonic()
        if backend == "model":
            run = run_model(engine, frames, cfg, times_ns=times_ns)
        else:
            with console.status(f"building {engine} ({width} bit) and running "
                                f"{len(frames)} frames on Verilator"):
                run = run_rtl(engine, frames, cfg, width=width, waves=waves,
                              times_ns=times_ns)
        elapsed = time.monotonic() - start
    except (PcapError, ConfigError, VerilatorError) as exc:
        _fail(str(exc))
    if run.out_meta is not None:
        # Segmenting and merging engines: one record per output frame, then the drops.
        out_packets = [Packet(data, packets[src].time_ns, comment=json.dumps(meta))
                       for data, meta, src in zip(run.frames, run.out_meta, run.origin,
                                                  strict=True)]
        records = [{"frame": i, **m} for i, m in enumerate(run.out_meta)]
        records += [{"input": i, **m} for i, m in enumerate(run.meta) if "dropped" in m]
    else:
        kept = [(p, m) for p, m in zip(packets, run.meta, strict=True) if "dropped" not in m]
        out_packets = [Packet(data, pkt.time_ns, comment=json.dumps(meta))
                       for data, (pkt, meta) in zip(run.frames, kept, strict=True)]
        records = [{"frame": i, **m} for i, m in enumerate(run.meta)]
    try:
        write_pcap(out_path, out_packets)
        with open(meta_path, "w") as handle:
            for record in records:
                handle.write(json.dumps(record) + "\n")
    except OSError as exc:
        _fail(f"cannot write output: {exc.strerror} ({exc.filename}).")
    drops = sum("dropped" in m for m in run.meta)
    console.print(f"{engine} ({backend}, {width} bit): {len(frames)} frames in, "
                  f"{len(run.frames)} out, {drops} dropped in {elapsed:.2f} s -> {out_path}, "
                  f"{meta_path}")


@rtl_app.command("engines")
def rtl_engines():
    """List the engines 'nicsim rtl run' takes."""
    from nicsim.hw.engines import ENGINES

    table = Table("engine", "what it does", "options")
    for name, spec in ENGINES.items():
        table.add_row(name, spec.summary,
                      " ".join("--" + o.replace("_", "-") for o in spec.options))
    console.print(table)


@rtl_app.command("designs")
def rtl_designs():
    """List the exported designs."""
    from nicsim.hw.designs import DESIGNS, design_names

    table = Table("design", "what it does")
    for name in design_names():
        table.add_row(name, DESIGNS[name].summary)
    console.print(table)


@rtl_app.command("regs")
def rtl_regs(
    design: Annotated[str, typer.Argument(help=DESIGN_HELP)],
):
    """Print the register map of a design (AXI4-Lite, 32-bit registers)."""
    import importlib

    from nicsim.hw.designs import DESIGNS

    if design not in DESIGNS:
        _fail(f"unknown design {design!r}; choose one of {', '.join(DESIGNS)}.")
    module = importlib.import_module(DESIGNS[design].module)
    table = Table("offset", "name", "count", "access", "contents",
                  title=f"{design} registers (SLVERR on writes to ro and unmapped addresses)")
    for reg in getattr(module, "REGISTERS", ()):
        count = "param" if reg.count is None else str(reg.count)
        table.add_row(f"0x{reg.offset:03x}", reg.name, count, reg.access, reg.doc)
    console.print(table)


nic_app = typer.Typer(help="The NIC as a device: register map and ring formats.",
                      no_args_is_help=True)
app.add_typer(nic_app, name="nic")


def _register_table(title, registers, base=0):
    table = Table("offset", "name", "count", "access", "contents", title=title)
    for reg in registers:
        table.add_row(f"0x{base + reg.offset:04x}", reg.name, str(reg.count), reg.access,
                      reg.doc)
    return table


@nic_app.command("regs")
def nic_regs():
    """Print the NIC's register map (one copy per PCI function, in its BAR)."""
    from nicsim.hw.nic import regs

    console.print(_register_table("function registers", regs.REGISTERS))
    console.print(_register_table(
        f"queue n registers, at 0x{regs.TXQ_BASE:04x} + 0x{regs.QUEUE_STRIDE:x} * n "
        f"(transmit) and 0x{regs.RXQ_BASE:04x} + 0x{regs.QUEUE_STRIDE:x} * n (receive)",
        regs.QUEUE_REGISTERS))
    console.print(_register_table(
        f"MSI-X vector v moderation, at 0x{regs.IRQ_BASE:04x} + 0x{regs.IRQ_STRIDE:x} * v",
        regs.IRQ_REGISTERS))


@nic_app.command("formats")
def nic_formats():
    """Print the descriptor and completion layouts (little-endian, in host memory)."""
    from nicsim.hw.nic.formats import LAYOUTS

    for layout in LAYOUTS:
        table = Table("byte", "bits", "field", "meaning", title=f"{layout.name} "
                                                                  f"({layout.size} bytes)")
        for f in layout.fields:
            table.add_row(str(layout.offsets[f.name]), str(f.bits), f.name, f.doc)
        console.print(table)


@app.command()
def export(
    design: Annotated[str, typer.Argument(help=DESIGN_HELP)],
    width: Annotated[int, typer.Option(help=WIDTH_HELP)] = 64,
    out: Annotated[Path | None, typer.Option("-o", "--out", help="Verilog file (default: "
                                                                 "DESIGN_wWIDTH.v).")] = None,
):
    """Write a design as Verilog with AXI4-Stream/AXI4-Lite ports, for use in other projects."""
    from nicsim.hw.designs import DESIGNS, elaborate
    from nicsim.hw.verilator import export_verilog

    if design not in DESIGNS:
        _fail(f"unknown design {design!r}; choose one of {', '.join(DESIGNS)}.")
    _check_width(width)
    name = design.replace("-", "_")
    out = out or Path(f"{name}_w{width}.v")
    try:
        out.write_text(export_verilog(elaborate(design, width=width), name))
    except OSError as exc:
        _fail(f"cannot write {out}: {exc.strerror}.")
    console.print(f"wrote module {name} ({width}-bit data) to {out}")


@app.command()
def synth(
    design: Annotated[str, typer.Argument(help=DESIGN_HELP)],
    width: Annotated[int, typer.Option(help=WIDTH_HELP)] = 64,
    device: Annotated[str, typer.Option(help="ecp5-85k, ecp5-25k or ice40-up5k.")] = "ecp5-85k",
    seed: Annotated[int, typer.Option(help="nextpnr placement seed.")] = 1,
    force: Annotated[bool, typer.Option(help="Ignore a cached result.")] = False,
    record: Annotated[Path | None, typer.Option(help="Also put the figures into this JSON "
                                                     "table (benchmarks/results/synth.json), "
                                                     "replacing the row of the same design, "
                                                     "width and device.")] = None,
    program: Annotated[Path | None, typer.Option(help="Pipeline program TOML "
                                                      "(match-action).")] = None,
    router: Annotated[str, typer.Option(help="nextpnr's router: router1 (its default) or "
                                             "router2 (congestion-driven).")] = "router1",
    placer: Annotated[str, typer.Option(help="nextpnr's placer: heap (analytical, timing "
                                             "weight 52) or static (electrostatic, for "
                                             "crowded designs).")] = "heap",
):
    """Synthesize a design with yosys + nextpnr and print its figures as JSON."""
    from nicsim.hw.designs import DESIGNS
    from nicsim.hw.synth import DEVICES, PLACERS, ROUTERS, SynthError, synthesize

    if design not in DESIGNS:
        _fail(f"unknown design {design!r}; choose one of {', '.join(DESIGNS)}.")
    if device not in DEVICES:
        _fail(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}.")
    if router not in ROUTERS:
        _fail(f"unknown router {router!r}; choose one of {', '.join(ROUTERS)}.")
    if placer not in PLACERS:
        _fail(f"unknown placer {placer!r}; choose one of {', '.join(PLACERS)}.")
    _check_width(width)
    params = {"width": width}
    if program is not None:
        from nicsim.hw.match_action.compile import design_params

        try:
            params.update(design_params(program))
        except ValueError as exc:
            _fail(str(exc))
    try:
        with err_console.status(f"synthesizing {design} ({width} bit) for {device}"):
            result = synthesize(design, params, device=device, seed=seed, force=force,
                                router=router, placer=placer)
    except SynthError as exc:
        _fail(str(exc))
    if program is not None:
        result["params"] = {"width": width, "program": program.name}
    if record is not None:
        _record_synth(record, {k: v for k, v in result.items() if k != "cells"})
    result = {k: v for k, v in result.items() if k not in ("cells", "tools")}
    print(json.dumps(result))


def _record_synth(path, row):
    """Upsert one synthesis row into a results table, under a lock (several runs may write)."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        doc = json.loads(path.read_text()) if path.exists() else {"device": row.get("device"),
                                                                   "results": []}
        def key(r):
            return (r.get("design"), json.dumps(r.get("params"), sort_keys=True),
                    r.get("device"))

        doc["results"] = sorted([r for r in doc["results"] if key(r) != key(row)] + [row],
                                key=lambda r: (r.get("design", ""), r.get("device", ""),
                                               (r.get("params") or {}).get("width", 0)))
        path.write_text(json.dumps(doc, indent=1) + "\n")


@app.command("synth-verilog")
def synth_verilog(
    files: Annotated[list[Path], typer.Argument(help="Verilog source files.")],
    top: Annotated[str, typer.Option(help="Top module.")],
    param: Annotated[list[str] | None, typer.Option(help="Verilog parameter NAME=VALUE "
                                                         "(repeatable).")] = None,
    device: Annotated[str, typer.Option(help="ecp5-85k, ecp5-25k or ice40-up5k.")] = "ecp5-85k",
):
    """Synthesize any Verilog block through the same flow, for side-by-side comparisons."""
    from nicsim.hw.synth import DEVICES, SynthError, synthesize_verilog

    if device not in DEVICES:
        _fail(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}.")
    params = {}
    for item in param or []:
        name, sep, value = item.partition("=")
        if not sep or not name:
            _fail(f"--param takes NAME=VALUE, not {item!r}.")
        params[name] = value
    try:
        sources = {f.name: f.read_text() for f in files}
    except OSError as exc:
        _fail(f"cannot read {exc.filename}: {exc.strerror}.")
    try:
        with err_console.status(f"synthesizing {top} for {device}"):
            result = synthesize_verilog(sources, top, device=device, parameters=params)
    except SynthError as exc:
        _fail(str(exc))
    print(json.dumps({k: v for k, v in result.items() if k not in ("cells", "tools")}))


@app.command("synth-all")
def synth_all(
    out: Annotated[Path, typer.Option(help="JSON file for the table.")] = Path(
        "benchmarks/results/synth.json"),
    widths: Annotated[str, typer.Option(help="Comma-separated widths.")] = "64,512",
    device: Annotated[str, typer.Option(help="FPGA device.")] = "ecp5-85k",
):
    """Synthesize every block at each width and put the figures into the table, row by row
    (rows of other runs, such as the match-action programs' from ``nicsim synth --program P
    --record``, stay)."""
    from nicsim.hw.designs import design_names
    from nicsim.hw.synth import SynthError, synthesize

    rows = []
    table = Table("design", "width", "fmax MHz", "LUT4", "FF", "BRAM", "seconds")
    for design in design_names():
        for width in (int(w) for w in widths.split(",")):
            try:
                with err_console.status(f"synthesizing {design} ({width} bit)"):
                    r = synthesize(design, {"width": width}, device=device)
            except (SynthError, ImportError) as exc:
                err_console.print(f"{design} {width}: {exc}")
                continue
            r = {k: v for k, v in r.items() if k != "cells"}
            _record_synth(out, r)
            rows.append(r)
            table.add_row(design, str(width), str(r["fmax_mhz"]), str(r["luts"]), str(r["ffs"]),
                          str(r["brams"]), str(r["seconds"]))
    console.print(table)
    console.print(f"wrote {len(rows)} rows into {out}")


@app.command()
def demo(
    frames: Annotated[int, typer.Option(help="Frames in the generated capture.")] = 300,
    width: Annotated[int, typer.Option(help=WIDTH_HELP)] = 64,
    outdir: Annotated[Path, typer.Option(help="Where the capture and results go.")] = Path(
        "out/demo"),
):
    """Run a mixed capture through rss and checksum-rx on the RTL, and a 64 KiB send through
    the TSO and LRO engines."""
    from nicsim.sim.demo import run_demo, run_segmentation_demo

    _check_width(width)
    try:
        run_demo(console, frames=frames, width=width, outdir=outdir)
        run_segmentation_demo(console, width=width, outdir=outdir)
    except UserError as exc:
        _fail(str(exc))


pcie_cli.register(app)
run_cli.register(app)
compare_cli.register(app)
app.add_typer(gpu_cli.app, name="gpu")


def main():
    """Entry point of the ``nicsim`` command."""
    try:
        app()
    except KeyboardInterrupt:
        err_console.print("nicsim: interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
