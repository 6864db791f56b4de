"""The ``nicsim run`` command: simulate a scenario and write its results.

``register(app)`` adds the command to a typer application. Output in ``--out``:
``results.json`` (deterministic: the same scenario and seed give the same file),
``perf.json`` (wall-clock figures of the run, which vary), ``scenario.toml``-equivalent
``scenario.json`` (the scenario after overrides and defaults), plots as PNG and the pcaps of
the links the scenario's ``output.pcap`` names.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from nicsim.sim.clierr import err_console
from nicsim.sim.clierr import fail as _fail

__all__ = ["register", "write_outputs"]

console = Console()


def _plots(world, results, out):
    """Write the latency distribution and the per-interval packet rate as PNG files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    lat = world.delivered()[2]
    written = []
    if lat:
        lat_us = np.sort(np.asarray(lat, dtype=np.float64) / 1e6)
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(lat_us, np.arange(1, len(lat_us) + 1) / len(lat_us))
        ax.set_xlabel("latency (µs)")
        ax.set_ylabel("fraction of frames")
        ax.set_title(f"{results['scenario']}: latency CDF")
        ax.grid(True, alpha=0.3)
        fig.tight_layout()
        fig.savefig(out / "latency_cdf.png", dpi=100)
        plt.close(fig)
        written.append("latency_cdf.png")
    fig, ax = plt.subplots(figsize=(6, 4))
    labels = ["offered", "delivered"] + list(results["drops"])
    values = [results["offered"]["frames"], results["delivered_frames"]] + list(
        results["drops"].values())
    ax.barh(labels, values)
    ax.set_xlabel("frames")
    ax.set_title(f"{results['scenario']}: where frames went")
    fig.tight_layout()
    fig.savefig(out / "frames.png", dpi=100)
    plt.close(fig)
    written.append("frames.png")
    return written


def write_outputs(world, results, wall_s, out, plots=True):
    """Write ``results.json``, ``perf.json``, ``scenario.json``, plots and pcaps to ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1, sort_keys=False) + "\n")
    (out / "scenario.json").write_text(world.scenario.model_dump_json(indent=1) + "\n")
    frames = results["offered"]["frames"]
    perf = {"wall_s": round(wall_s, 3),
            "simulated_frames_per_wall_s": round(frames / wall_s) if wall_s else None}
    (out / "perf.json").write_text(json.dumps(perf, indent=1) + "\n")
    written = ["results.json", "perf.json", "scenario.json"]
    for link in world.rx_wires + world.tx_wires + [world.sink]:
        if getattr(link, "capture", None) is not None:
            name = f"{link.name}.pcap"
            link.write_pcap(out / name)
            written.append(name)
    if plots:
        written += _plots(world, results, out)
    return written, perf


def register(app: typer.Typer) -> None:
    """Add ``nicsim run`` to ``app``."""

    @app.command("run")
    def run_command(
        scenario: Annotated[Path, typer.Argument(help="Scenario file (TOML).")],
        out: Annotated[Path, typer.Option("--out", help="Directory for results.json, plots "
                                                        "and pcaps.")] = Path("out/run"),
        set_: Annotated[list[str] | None, typer.Option(
            "--set", help="Override a scenario parameter: KEY=VALUE with a dotted key, e.g. "
                          "pcie.lanes=16 or traffic.0.rate_gbps=5 (repeatable).")] = None,
        quiet: Annotated[bool, typer.Option(help="No progress bar or table.")] = False,
    ):
        """Simulate a scenario end to end and write results.json, plots and pcaps."""
        from nicsim.sim.scenario import ScenarioError, load_scenario
        from nicsim.sim.world import World

        try:
            s = load_scenario(scenario, set_ or ())
        except ScenarioError as exc:
            _fail(str(exc))
        import time

        start = time.perf_counter()
        try:
            world = World(s, capture=tuple(s.output.pcap))
        except ValueError as exc:
            _fail(f"{scenario}: {exc}")
        if quiet:
            results = world.run()
        else:
            with Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                          TextColumn("{task.percentage:>3.0f}% of simulated time"),
                          TimeElapsedColumn(), console=err_console, transient=True) as bar:
                task = bar.add_task(s.name, total=100)
                results = world.run(lambda done, total: bar.update(
                    task, completed=100 * done / total))
        wall = time.perf_counter() - start
        written, perf = write_outputs(world, results, wall, out, plots=s.output.plots)
        if not quiet:
            table = Table("figure", "value", title=f"{s.name} ({s.duration_us:g} µs simulated)")
            table.add_row("offered", f"{results['offered']['mpps']:.3f} Mpps")
            table.add_row("throughput", f"{results['throughput']['mpps']:.3f} Mpps, "
                                        f"{results['throughput']['gbps']:.3f} Gb/s")
            lat = results["latency_us"]
            if lat["p50"] is not None:
                table.add_row("latency p50 / p99 / p99.9",
                              f"{lat['p50']:.3f} / {lat['p99']:.3f} / {lat['p999']:.3f} µs")
            table.add_row("drops", ", ".join(f"{k}: {v}" for k, v in results["drops"].items())
                          or "none")
            table.add_row("PCIe up / down", f"{results['pcie']['up_util']:.1%} / "
                                            f"{results['pcie']['down_util']:.1%}")
            table.add_row("interrupts", str(results["interrupts"]))
            table.add_row("CPU busy", ", ".join(f"{b:.0%}" for b in results["cpu_busy"]))
            table.add_row("wall time", f"{perf['wall_s']} s "
                                       f"({perf['simulated_frames_per_wall_s']} frames/s)")
            console.print(table)
            console.print(f"wrote {', '.join(written)} to {out}")
