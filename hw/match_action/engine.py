"""``nicsim rtl run match-action``: captures through the golden pipeline or the gateware.

Configuration (command line ``--program``/``--entries``, or the ``[match-action]`` section of
``--config``): ``program`` and ``entries`` (TOML files), ``stages`` (default 4) and
``frame_interval_ns``. The meters' time base, the same on both backends: each frame's capture
time (``times_ns``, nanoseconds from the first frame, as ``nicsim rtl run`` reads them from the
capture; a time earlier than the frame before it counts as that frame's time, so meters never
see time run backwards); with ``frame_interval_ns`` set, or without capture times, frame ``i``
is stamped ``i * frame_interval_ns`` instead (default 100 ns).

Metadata per input frame: ``action`` (``forward``, ``host``, ``drop``), ``port``, ``queue``,
``table_hits`` (names of the tables that hit), ``mirror`` (host queue of a copy or ``None``),
``color`` (of the last meter) and ``dropped`` (the reason) for drops.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import accumulate
from pathlib import Path

from nicsim.rtl.match_action import limits

from ..engines import EngineRun
from ..ref.match_action import Pipeline
from .control import ControlPlane
from .program import Program, ProgramError, load_entries, load_program

__all__ = ["MaConfig", "load_config", "frame_times", "run_model", "run_rtl", "decode_result"]


@dataclass
class MaConfig:
    """A checked program, its entries and the time base of the meters."""

    program: Program
    entries: list = field(default_factory=list)
    stages: int = limits.DEFAULT_STAGES
    frame_interval_ns: int | None = None
    program_path: str | None = None


def load_config(section, options):
    """Build a :class:`MaConfig` from a TOML section and ``--program``/``--entries``."""
    known = {"program", "entries", "stages", "frame_interval_ns"}
    unknown = sorted(set(section) - known)
    if unknown:
        raise ValueError(f"unknown match-action setting(s) {unknown}; use {sorted(known)}")
    prog_path = options.get("program") or section.get("program")
    if prog_path is None:
        raise ValueError("match-action needs a program: --program P.toml")
    stages = section.get("stages", limits.DEFAULT_STAGES)
    if isinstance(stages, bool) or not isinstance(stages, int):
        raise ValueError(f"stages must be a whole number of stages, not {stages!r}")
    interval = section.get("frame_interval_ns")
    if interval is not None and (isinstance(interval, bool) or not isinstance(interval, int)
                                 or interval < 0):
        raise ValueError(f"frame_interval_ns must be a whole number of nanoseconds, 0 or more, "
                         f"not {interval!r}")
    try:
        cp = ControlPlane(load_program(Path(prog_path)), stages=stages)
        entries_path = options.get("entries") or section.get("entries")
        entries = load_entries(Path(entries_path), cp.program) if entries_path else []
        for i, e in enumerate(entries):
            try:
                cp.add(e)  # refuses what the hardware cannot hold (full buckets too)
            except ProgramError as exc:
                raise ProgramError(f"{entries_path}: entry {i}: {exc}") from None
    except ProgramError as exc:
        raise ValueError(str(exc).rstrip(".")) from None
    return MaConfig(cp.program, entries, stages, interval, str(prog_path))


def frame_times(config: MaConfig, count, times_ns=None):
    """The meters' time of each of ``count`` frames (see the module docstring)."""
    if times_ns is None or config.frame_interval_ns is not None:
        step = 100 if config.frame_interval_ns is None else config.frame_interval_ns
        return [i * step for i in range(count)]
    if len(times_ns) != count:
        raise ValueError(f"{len(times_ns)} capture times for {count} frames")
    return list(accumulate(map(int, times_ns), max, initial=0))[1:]


def run_model(frames, config: MaConfig, times_ns=None) -> EngineRun:
    """Run frames through the golden pipeline."""
    pipe = Pipeline(config.program, config.entries)
    return EngineRun(*process_frames(pipe, frames, frame_times(config, len(frames), times_ns)))


def process_frames(pipe: Pipeline, frames, stamps):
    """Run frames stamped ``stamps`` through a reference pipeline (its state carries on);
    return the output frames and one metadata record per input frame."""
    out, meta = [], []
    for frame, stamp in zip(frames, stamps, strict=True):
        result = pipe.process(frame, stamp)
        if result.frame is not None:
            out.append(result.frame)
        meta.append(result.meta)
    return out, meta


def decode_result(word, config: MaConfig):
    """Decode the gateware's result word of one frame into its metadata record."""
    from nicsim.rtl.match_action import result_fields

    f = result_fields(word)
    names = [t.name for t in config.program.tables]
    meta = {"action": ("forward", "host", "drop")[f["egress"]], "port": None, "queue": None,
            "table_hits": [names[i] for i in range(len(names)) if f["hits"] >> i & 1],
            "mirror": f["mirror_queue"] if f["mirror"] else None,
            "color": (None, "green", "yellow", "red")[f["color"]]}
    if f["egress"] == 0:
        meta["port"] = f["number"]
    elif f["egress"] == 1:
        meta["queue"] = f["number"]
    else:
        from nicsim.rtl.match_action import DROP_REASONS

        meta["dropped"] = DROP_REASONS[f["reason"]]
    return meta


def run_rtl(frames, config: MaConfig, *, width=64, idle_pct=0, backpressure_pct=0, seed=1,
            waves=None, times_ns=None) -> EngineRun:
    """Run frames through the gateware on Verilator, entries loaded over AXI4-Lite first."""
    from ..harness import build_harness, run_harness

    cp = ControlPlane(config.program, stages=config.stages)
    for e in config.entries:
        cp.add(e)
    params = {"width": width, "program": cp.config}
    sent = [i for i, f in enumerate(frames) if f]
    stamps = frame_times(config, len(frames), times_ns)
    build = build_harness("match-action", params, waves=waves is not None)
    done = run_harness(build, [frames[i] for i in sent],
                       [stamps[i] for i in sent], cp.device.writes, [],
                       idle_pct=idle_pct, backpressure_pct=backpressure_pct, seed=seed,
                       waves=waves)
    return EngineRun(*harness_outputs(frames, done, config))


def harness_outputs(frames, done, config: MaConfig):
    """The output frames and one metadata record per frame of ``frames`` from a harness job
    that was given the non-empty ones (an empty frame never enters the gateware: a runt)."""
    results = iter(done.results)
    meta = [decode_result(next(results), config) if f else
            {"action": "drop", "port": None, "queue": None, "table_hits": [], "mirror": None,
             "color": None, "dropped": "runt"} for f in frames]
    kept = sum("dropped" not in m for m in meta)
    if kept != len(done.frames):
        raise RuntimeError(f"match-action gateware emitted {len(done.frames)} frames where its "
                           f"results announced {kept}")
    return [f for f, _ in done.frames], meta
