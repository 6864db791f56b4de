"""The ``nicsim pcie`` command: pcie-bench bandwidth figures, optionally checked by simulation.

``register(app)`` adds the command to a typer application; errors a user can cause end in one
sentence on stderr and exit status 2.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from nicsim.sim.clierr import err_console
from nicsim.sim.clierr import fail as _fail

__all__ = ["register", "pcie_command"]

console = Console()

# Configuration fields named in PcieConfig's errors, and the options that set them.
_OPTION_OF_FIELD = {"pcie.gen": "--gen", "pcie.lanes": "--lanes", "pcie.mps": "--mps",
                    "pcie.mrrs": "--mrrs", "pcie.rcb": "--rcb"}


def _gbit(bytes_per_s):
    return bytes_per_s * 8 / 1e9


def pcie_command(
    gen: Annotated[int, typer.Option(help="PCIe generation, 1 to 5.")] = 3,
    lanes: Annotated[int, typer.Option(help="Link width: 1, 2, 4, 8 or 16.")] = 8,
    mps: Annotated[int, typer.Option(help="Maximum payload size in bytes (128..4096).")] = 256,
    mrrs: Annotated[int, typer.Option(help="Maximum read request size in bytes "
                                           "(128..4096).")] = 512,
    op: Annotated[str, typer.Option(help="read or write (device-initiated DMA).")] = "write",
    size: Annotated[int, typer.Option(help="Bytes per DMA transfer.")] = 1500,
    rcb: Annotated[int, typer.Option(help="Read completion boundary in bytes (64 or "
                                          "128).")] = 64,
    rcb_chunks: Annotated[bool, typer.Option("--rcb-chunks", help="Completions cut at every "
                                             "RCB boundary instead of at MPS.")] = False,
    addr32: Annotated[bool, typer.Option("--addr32", help="3-DW headers (32-bit addresses) "
                                         "instead of 4-DW.")] = False,
    ecrc: Annotated[bool, typer.Option("--ecrc", help="TLPs carry an ECRC digest.")] = False,
    latency_ns: Annotated[float, typer.Option(help="One-way link latency in ns.")] = 500.0,
    simulate: Annotated[bool, typer.Option("--simulate", help="Also move back-to-back "
                                           "transfers through the SimPy link model.")] = False,
    transfers: Annotated[int, typer.Option(help="Transfers for --simulate.")] = 10_000,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of "
                                          "tables.")] = False,
):
    """Print PCIe bandwidth for a DMA transfer size (pcie-bench model), optionally simulated."""
    from nicsim.sim.pcie import (
        PcieConfig,
        effective_bandwidth,
        raw_bandwidth,
        simulate_bandwidth,
        tlp_bandwidth,
        transfer_cost,
        window_bandwidth,
    )

    if op not in ("read", "write"):
        _fail(f"--op must be read or write, not {op!r}.")
    if size < 1:
        _fail(f"--size must be at least 1 byte, not {size}.")
    if not latency_ns >= 0 or latency_ns > 1e9:
        _fail(f"--latency-ns must be between 0 and 1e9, not {latency_ns}.")
    if transfers < 4:
        _fail(f"--transfers must be at least 4, not {transfers}.")
    try:
        config = PcieConfig(gen=gen, lanes=lanes, mps=mps, mrrs=mrrs, rcb=rcb,
                            rcb_chunks=rcb_chunks, addr64=not addr32, ecrc=ecrc,
                            latency_ps=round(latency_ns * 1000))
    except ValueError as exc:
        message = str(exc)
        for name, option in _OPTION_OF_FIELD.items():
            message = message.replace(name + " ", option + " ")
        _fail(message)

    cost = transfer_cost(config, op, size)
    effective = effective_bandwidth(config, op, size)
    window, window_name = window_bandwidth(config, op, size)
    expected = min(effective, window)
    result = {
        "gen": gen, "lanes": lanes, "mps": mps, "mrrs": mrrs, "rcb": rcb,
        "rcb_chunks": rcb_chunks, "addr64": not addr32, "ecrc": ecrc,
        "latency_ns": latency_ns, "op": op, "size": size,
        "raw_gbps": _gbit(raw_bandwidth(config)),
        "tlp_gbps": _gbit(tlp_bandwidth(config)),
        "effective_gbps": _gbit(effective),
        "window_gbps": _gbit(window), "window_limit": window_name,
        "expected_gbps": _gbit(expected),
        "up_tlps": cost.up_tlps, "up_wire_bytes": cost.up_wire_bytes,
        "down_tlps": cost.down_tlps, "down_wire_bytes": cost.down_wire_bytes,
    }
    if simulate:
        with err_console.status(f"simulating {transfers} transfers"):
            sim = simulate_bandwidth(config, op, size, transfers)
        link = sim.link
        result.update({
            "transfers": transfers,
            "simulated_gbps": _gbit(sim.bytes_per_s),
            "difference": sim.bytes_per_s / expected - 1,
            "credit_stalls": link.up.credit_stalls,
            "tag_stalls": link.up.tag_stalls,
            "utilisation": link.utilisation(sim.last_done_ps),
        })
    if as_json:
        print(json.dumps(result))
        return

    title = (f"PCIe gen{gen} x{lanes}, MPS {mps}, MRRS {mrrs}, RCB {rcb}, "
             f"{'32' if addr32 else '64'}-bit addresses{', ECRC' if ecrc else ''}: "
             f"{op} of {size} B")
    table = Table("per direction", "Gb/s", "GB/s", title=title)

    def row(name, bytes_per_s):
        table.add_row(name, f"{_gbit(bytes_per_s):.2f}", f"{bytes_per_s / 1e9:.3f}")

    row("raw", raw_bandwidth(config))
    row("TLP layer (ACK, UpdateFC, SKIP paid)", tlp_bandwidth(config))
    row(f"effective ({op} payload, pcie-bench)", effective)
    row(f"credit/tag window at {latency_ns:g} ns ({window_name})", window)
    if window < effective:
        row("expected (window-limited)", expected)
    if simulate:
        row(f"simulated ({transfers} transfers)", sim.bytes_per_s)
    console.print(table)
    per = Table("per transfer", "up (device->host)", "down (host->device)")
    per.add_row("TLPs", str(cost.up_tlps), str(cost.down_tlps))
    per.add_row("wire bytes", str(cost.up_wire_bytes), str(cost.down_wire_bytes))
    console.print(per)
    if simulate:
        util = result["utilisation"]
        console.print(f"simulated vs analytic: {result['difference'] * 100:+.3f}%; "
                      f"utilisation up {util['up']:.3f}, down {util['down']:.3f}; "
                      f"credit stalls {result['credit_stalls']}, tag stalls "
                      f"{result['tag_stalls']}")


def register(app: typer.Typer) -> None:
    """Add the ``pcie`` command to ``app``."""
    app.command("pcie")(pcie_command)
