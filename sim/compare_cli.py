"""The ``nicsim compare`` command: packet paths side by side over cores and load.

``register(app)`` adds the command to a typer application. For every path, core count and
offered load it builds a scenario (the defaults of :mod:`nicsim.sim.scenario`, the options of
the command, then ``--set`` overrides), runs it and tabulates packet rate, CPU use and
latency; ``--json`` writes one row per point, ``--plot`` a PNG. The XDP paths load the program
an XDP deployment of the application would (:func:`nicsim.host.xdp.compare_defaults`: drop
the traffic in the driver for ``drop``, XDP_TX for ``l2fwd``) unless ``--set`` names one;
``af_xdp`` runs the application on a socket per queue.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from nicsim.sim.clierr import err_console
from nicsim.sim.clierr import fail as _fail

__all__ = ["register", "compare_points", "parse_cores", "parse_loads"]

console = Console()


def parse_cores(text):
    """Return the core counts of ``"1..6"``, ``"1,2,4"`` or ``"4"``."""
    text = text.strip()
    match = re.fullmatch(r"(\d+)\s*\.\.\s*(\d+)", text)
    if match:
        low, high = int(match[1]), int(match[2])
        if not 1 <= low <= high <= 64:
            raise ValueError(f"--cores {text!r} must be a range 1..64 going up")
        return list(range(low, high + 1))
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--cores takes LOW..HIGH or a comma-separated list, not "
                         f"{text!r}") from None
    if not values or any(not 1 <= v <= 64 for v in values):
        raise ValueError(f"--cores values must be 1..64, not {text!r}")
    return values


def parse_loads(text):
    """Return the offered loads (Mpps) of ``"1,2.5,5"``."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--load takes comma-separated Mpps figures, not {text!r}") from None
    if not values or any(not v > 0 for v in values):
        raise ValueError(f"--load figures must be positive, not {text!r}")
    return values


def compare_points(paths, app, cores, size, loads, overrides, duration_us, flows,
                   progress=None):
    """Run every point; return the rows (see the module documentation)."""
    from nicsim.sim.scenario import load_scenario
    from nicsim.sim.world import World

    points = [(p, n, load) for p in paths for n in cores for load in (loads or [None])]
    rows = []
    for done, (path, n, load) in enumerate(points):
        sets = [f"host.path=\"{path}\"", f"host.app=\"{app}\"", f"host.cores={n}",
                f"nic.rxqs={n}", f"nic.txqs={n}", f"traffic.0.size={size}",
                f"traffic.0.flows={flows}", f"duration_us={duration_us}"]
        if load is not None:
            sets.append(f"traffic.0.rate_mpps={load}")
        if path in ("xdp", "xdp_generic"):  # the program an XDP deployment of the app loads
            from nicsim.host.xdp import compare_defaults
            from nicsim.sim.traffic import DPORT

            sets += compare_defaults(path, app, overrides, DPORT)
        scenario = load_scenario(text=f"name = \"{path}-{app}-{n}c\"\n",
                                 overrides=sets + list(overrides))
        results = World(scenario).run()
        rows.append({
            "path": path, "app": app, "cores": n, "frame_size": size,
            "offered_mpps": results["offered"]["mpps"],
            "mpps": results["throughput"]["mpps"],
            "cpu_busy": results["cpu_busy"],
            "latency_us": {k: results["latency_us"][k] for k in ("p50", "p99")},
            "drops": results["drops"],
        })
        if progress is not None:
            progress(done + 1, len(points))
    return rows


def _plot(rows, loads, out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for path in dict.fromkeys(r["path"] for r in rows):
        mine = [r for r in rows if r["path"] == path]
        if loads:
            for cores in dict.fromkeys(r["cores"] for r in mine):
                pts = [r for r in mine if r["cores"] == cores]
                ax.plot([r["offered_mpps"] for r in pts],
                        [sum(r["cpu_busy"]) for r in pts], marker="o",
                        label=f"{path}, {cores} core(s)")
            ax.set_xlabel("offered load (Mpps)")
            ax.set_ylabel("CPU busy (cores)")
        else:
            ax.plot([r["cores"] for r in mine], [r["mpps"] for r in mine], marker="o",
                    label=path)
            ax.set_xlabel("cores")
            ax.set_ylabel("packet rate (Mpps)")
    ax.set_title(f"{rows[0]['app']}, {rows[0]['frame_size']}-byte frames")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def register(app: typer.Typer) -> None:
    """Add ``nicsim compare`` to ``app``."""

    @app.command("compare")
    def compare_command(
        paths: Annotated[str, typer.Argument(help="Comma-separated paths, e.g. "
                                                  "linux,pmd,netmap,xdp,af_xdp.")],
        app_name: Annotated[str, typer.Option("--app", help="Application.")] = "drop",
        cores: Annotated[str, typer.Option(help="Core counts: LOW..HIGH or a list.")] = "1",
        size: Annotated[int, typer.Option(help="Frame size with FCS (bytes).")] = 64,
        load: Annotated[str | None, typer.Option(
            help="Offered loads in Mpps (comma-separated); without it, line rate.")] = None,
        set_: Annotated[list[str] | None, typer.Option(
            "--set", help="Scenario override KEY=VALUE (repeatable), e.g. "
                          "wire.rate_gbps=100 or host.costs.syscall=200.")] = None,
        json_path: Annotated[Path | None, typer.Option("--json", help="Write one row per "
                                                                      "point here.")] = None,
        plot: Annotated[Path | None, typer.Option(help="PNG plot (default compare.png "
                                                       "beside --json, else none).")] = None,
        duration_us: Annotated[float, typer.Option(help="Simulated time per point.")] = 500.0,
        flows: Annotated[int, typer.Option(help="Flows in the traffic (RSS spreads them).")]
        = 256,
    ):
        """Compare packet paths: packet rate over cores, or CPU use over offered load."""
        from nicsim.host.paths import PATHS
        from nicsim.sim.scenario import ScenarioError

        names = [p.strip() for p in paths.split(",") if p.strip()]
        for name in names:
            if name not in PATHS:
                _fail(f"unknown path {name!r}; choose from {', '.join(PATHS)}.")
        try:
            core_counts = parse_cores(cores)
            loads = parse_loads(load) if load is not None else None
        except ValueError as exc:
            _fail(str(exc))
        with Progress(TextColumn("[bold]compare"), BarColumn(), MofNCompleteColumn(),
                      console=err_console, transient=True) as bar:
            task = bar.add_task("points", total=len(names) * len(core_counts)
                                * len(loads or [None]))
            try:
                rows = compare_points(names, app_name, core_counts, size, loads, set_ or (),
                                      duration_us, flows,
                                      lambda done, total: bar.update(task, completed=done))
            except ScenarioError as exc:
                _fail(str(exc))
            except ValueError as exc:
                _fail(str(exc).rstrip("."))
        table = Table("path", "cores", "offered Mpps", "Mpps", "CPU busy", "p50 µs", "p99 µs",
                      "drops", title=f"{app_name}, {size}-byte frames")
        for r in rows:
            lat = r["latency_us"]
            table.add_row(r["path"], str(r["cores"]), f"{r['offered_mpps']:.3f}",
                          f"{r['mpps']:.3f}", " ".join(f"{b:.0%}" for b in r["cpu_busy"]),
                          "-" if lat["p50"] is None else f"{lat['p50']:.2f}",
                          "-" if lat["p99"] is None else f"{lat['p99']:.2f}",
                          str(sum(r["drops"].values())))
        console.print(table)
        if json_path is not None:
            json_path.parent.mkdir(parents=True, exist_ok=True)
            json_path.write_text(json.dumps(rows, indent=1) + "\n")
            console.print(f"wrote {json_path}")
            if plot is None:
                plot = json_path.with_suffix(".png")
        if plot is not None:
            _plot(rows, loads, plot)
            console.print(f"wrote {plot}")
