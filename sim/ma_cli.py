"""The ``nicsim ma`` commands: check a match-action program, load it, manage its entries.

State between commands lives in a JSON file named by ``--state`` (default ``ma-state.json``):
``ma load`` writes it (the program's path, no entries), ``ma add``/``modify``/``delete`` read it,
change the entries and write it back together with the AXI4-Lite register writes that bring a
freshly reset device to that state; ``ma show`` prints the entries as an entries file
(``--entries`` of ``nicsim rtl run match-action``). Errors end in one sentence, exit status 2.

Live control: ``ma serve`` runs a pipeline (the gateware on Verilator, or the golden model) and
listens on a Unix socket; ``ma add/modify/delete/show/counters --live PATH`` change and read it
while it runs, ``ma send --live PATH`` puts a capture through it and ``ma stop --live PATH`` ends
it (protocol: :mod:`nicsim.hw.match_action.live`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from nicsim.sim.clierr import fail as _fail

__all__ = ["ma_app"]

console = Console()

ma_app = typer.Typer(help="Match-action programs: check, load, add/modify/delete entries.",
                     no_args_is_help=True)

STATE_HELP = "State file kept between commands (written by 'ma load')."
StateOpt = Annotated[Path, typer.Option("--state", help=STATE_HELP)]
LiveOpt = Annotated[Path | None, typer.Option(
    "--live", help="Act on the pipeline served at this socket ('ma serve') instead of the "
                   "state file.")]


def _split_pairs(text, what):
    """``"a=1,b=2"`` -> dict, or ``"1,2"`` -> list."""
    items = [t.strip() for t in text.split(",") if t.strip()] if text else []
    if items and all("=" in t for t in items):
        return dict(t.split("=", 1) for t in items)
    if any("=" in t for t in items):
        _fail(f"{what} {text!r}: give all values as name=value or none.")
    return items


def _parse_meter(text):
    if text is None:
        return None
    pairs = _split_pairs(text, "--meter")
    if not isinstance(pairs, dict):
        _fail("--meter takes cir=BIT/S,cbs=BYTES[,pir=BIT/S,pbs=BYTES].")
    try:
        return {k: int(v, 0) for k, v in pairs.items()}
    except ValueError:
        _fail(f"--meter {text!r}: rates and bursts must be integers.")


def _args(args):
    args_v = {}
    for a in args or []:
        if "=" not in a:
            _fail(f"argument {a!r}: write NAME=VALUE (see the action's params).")
        name, value = a.split("=", 1)
        args_v[name] = value
    return args_v


def _entry(cp, table, key, action, args, priority, meter):
    from nicsim.hw.match_action.program import make_entry

    return make_entry(cp.program, table, _split_pairs(key, "KEY"), action, _args(args), priority,
                      _parse_meter(meter))


def _live(path, req):
    """One request to the server at ``path``; a refusal or no server ends in one line."""
    from nicsim.hw.match_action.live import LiveError, request

    try:
        return request(path, req)
    except LiveError as exc:
        _fail(str(exc))


def _print_writes(writes):
    from nicsim.rtl.match_action.regs import REGISTERS

    names = {}
    for reg in REGISTERS:
        for i in range(reg.count or 1):
            names[reg.offset + 4 * i] = reg.name + (f"[{i}]" if (reg.count or 1) > 1 else "")
    for addr, value in writes:
        console.print(f"  write 0x{addr:03x} {names.get(addr, '?'):<12} <- 0x{value:08x}",
                      highlight=False)


def _add_all(cp, path):
    """Install the entries of the file ``path`` (if any); name the entry a refusal is about."""
    from nicsim.hw.match_action.program import ProgramError, load_entries

    loaded = load_entries(path, cp.program) if path else []
    for i, e in enumerate(loaded):
        try:
            cp.add(e)
        except ProgramError as exc:
            raise ProgramError(f"{path}: entry {i}: {exc}") from None
    return loaded


@ma_app.command("check")
def ma_check(
    program: Annotated[Path, typer.Argument(help="Program TOML.")],
    entries: Annotated[Path | None, typer.Option(help="Also check an entries file.")] = None,
    stages: Annotated[int, typer.Option(help="Stages of the gateware.")] = 4,
):
    """Check that the gateware can run a program (and hold its entries)."""
    from nicsim.hw.match_action.control import ControlPlane
    from nicsim.hw.match_action.program import ProgramError, load_program

    try:
        cp = ControlPlane(load_program(program), stages=stages)
        loaded = _add_all(cp, entries)
    except ProgramError as exc:
        _fail(str(exc))
    tables = ", ".join(f"{t.name} ({t.kind}, {t.size})" for t in cp.program.tables)
    console.print(f"{program}: ok: {len(cp.program.tables)} of {stages} stages: {tables}"
                  + (f"; {len(loaded)} entries fit" if entries else ""), highlight=False,
                  markup=False, soft_wrap=True)


@ma_app.command("load")
def ma_load(
    program: Annotated[Path, typer.Argument(help="Program TOML.")],
    state: StateOpt = Path("ma-state.json"),
    entries: Annotated[Path | None, typer.Option(help="Entries to install at once.")] = None,
    stages: Annotated[int, typer.Option(help="Stages of the gateware.")] = 4,
):
    """Check and load a program (start a new state file), optionally with entries."""
    from nicsim.hw.match_action.control import ControlPlane, save_state
    from nicsim.hw.match_action.program import ProgramError, load_program

    try:
        cp = ControlPlane(load_program(program), stages=stages)
        _add_all(cp, entries)
    except ProgramError as exc:
        _fail(str(exc))
    try:
        save_state(state, program, cp, cp.device.writes)
    except OSError as exc:
        _fail(f"cannot write {state}: {exc.strerror}.")
    console.print(f"loaded {cp.program.name} ({len(cp.program.tables)} tables, "
                  f"{len(cp.entries())} entries, {len(cp.device.writes)} register writes) "
                  f"-> {state}", highlight=False, markup=False, soft_wrap=True)


def _change(state, verb, table, key, action, args, priority, meter, live=None):
    from nicsim.hw.match_action.control import load_state, save_state
    from nicsim.hw.match_action.program import ProgramError

    if live is not None:
        answer = _live(live, {"cmd": verb, "table": table, "key": _split_pairs(key, "KEY"),
                              "action": action, "args": _args(args), "priority": priority,
                              "meter": _parse_meter(meter)})
        where = f" at stage {answer['stage']} slot {answer['slot']}" if verb == "add" else ""
        console.print(f"{verb}: {table} {key} -> {action}{where} (live {live})",
                      highlight=False, markup=False)
        _print_writes(answer["writes"])
        return
    try:
        program_path, cp, writes = load_state(state)
        entry = _entry(cp, table, key, action, args, priority, meter)
        before = len(cp.device.writes)
        result = getattr(cp, verb)(entry)
    except ProgramError as exc:
        _fail(str(exc))
    new = cp.device.writes[before:]
    try:
        save_state(state, program_path, cp, writes + new)
    except OSError as exc:
        _fail(f"cannot write {state}: {exc.strerror}.")
    where = f" at stage {result[0]} slot {result[1]}" if verb == "add" else ""
    console.print(f"{verb}: {table} {key} -> {action}{where}", highlight=False, markup=False)
    _print_writes(new)


@ma_app.command("add")
def ma_add(
    table: Annotated[str, typer.Argument(help="Table name.")],
    key: Annotated[str, typer.Argument(help="Key values in key order, comma-separated, or "
                                            "field=value pairs (10.0.0.0/8, v&&&mask).")],
    action: Annotated[str, typer.Argument(help="Action name.")],
    args: Annotated[list[str] | None, typer.Argument(help="Action arguments NAME=VALUE.")] = None,
    state: StateOpt = Path("ma-state.json"),
    priority: Annotated[int | None, typer.Option(help="Ternary priority (smallest "
                                                      "wins).")] = None,
    meter: Annotated[str | None, typer.Option(help="cir=BIT/S,cbs=BYTES[,pir=..,pbs=..] "
                                                   "(metered tables).")] = None,
    live: LiveOpt = None,
):
    """Add an entry; print the AXI4-Lite writes that install it."""
    _change(state, "add", table, key, action, args, priority, meter, live)


@ma_app.command("modify")
def ma_modify(
    table: Annotated[str, typer.Argument(help="Table name.")],
    key: Annotated[str, typer.Argument(help="Key of the entry to change.")],
    action: Annotated[str, typer.Argument(help="New action.")],
    args: Annotated[list[str] | None, typer.Argument(help="Action arguments NAME=VALUE.")] = None,
    state: StateOpt = Path("ma-state.json"),
    priority: Annotated[int | None, typer.Option(help="Ternary priority of the entry.")] = None,
    meter: Annotated[str | None, typer.Option(help="New meter.")] = None,
    live: LiveOpt = None,
):
    """Change an entry's action, arguments or meter (its counters are kept)."""
    _change(state, "modify", table, key, action, args, priority, meter, live)


@ma_app.command("delete")
def ma_delete(
    table: Annotated[str, typer.Argument(help="Table name.")],
    key: Annotated[str, typer.Argument(help="Key of the entry to delete.")],
    state: StateOpt = Path("ma-state.json"),
    priority: Annotated[int | None, typer.Option(help="Ternary priority of the entry.")] = None,
    live: LiveOpt = None,
):
    """Delete an entry."""
    from nicsim.hw.match_action.control import load_state, save_state
    from nicsim.hw.match_action.program import ProgramError

    if live is not None:
        answer = _live(live, {"cmd": "delete", "table": table, "key": _split_pairs(key, "KEY"),
                              "priority": priority})
        console.print(f"delete: {table} {key} (live {live})", highlight=False, markup=False)
        _print_writes(answer["writes"])
        return
    try:
        program_path, cp, writes = load_state(state)
        slot_entry = cp.find(table, _split_pairs(key, "KEY"), priority)
        before = len(cp.device.writes)
        cp.delete(slot_entry)
    except ProgramError as exc:
        _fail(str(exc))
    new = cp.device.writes[before:]
    try:
        save_state(state, program_path, cp, writes + new)
    except OSError as exc:
        _fail(f"cannot write {state}: {exc.strerror}.")
    console.print(f"delete: {table} {key}", highlight=False, markup=False)
    _print_writes(new)


@ma_app.command("show")
def ma_show(state: StateOpt = Path("ma-state.json"), live: LiveOpt = None):
    """Print the installed entries as an entries file."""
    from nicsim.hw.match_action.control import entry_spec, load_state
    from nicsim.hw.match_action.program import ProgramError

    if live is not None:
        status = _live(live, {"cmd": "status"})
        specs = _live(live, {"cmd": "entries"})["entries"]
        print(f"# program {status['program']} ({status['backend']}, live {live}): "
              f"{len(specs)} entries, {status['frames']} frames sent")
        for spec in specs:
            spec.pop("slot", None)
            print(_toml_entry(spec))
        return
    try:
        program_path, cp, writes = load_state(state)
    except ProgramError as exc:
        _fail(str(exc))
    print(f"# program {program_path}: {len(cp.entries())} entries, {len(writes)} register "
          "writes since load")
    for e in cp.entries():
        print(_toml_entry(entry_spec(cp.program, e)))


def _toml_value(v):
    if isinstance(v, dict):
        return "{ " + ", ".join(f'"{k}" = {_toml_value(x)}' for k, x in v.items()) + " }"
    if isinstance(v, int):
        return str(v)
    return f'"{v}"'


def _toml_entry(spec):
    lines = ["[[entries]]"]
    for k, v in spec.items():
        lines.append(f"{k} = {_toml_value(v)}")
    return "\n".join(lines) + "\n"


@ma_app.command("counters")
def ma_counters(
    table: Annotated[str | None, typer.Argument(help="Table (default: every entry and every "
                                                     "table's misses).")] = None,
    key: Annotated[str | None, typer.Argument(help="Key of the entry (default: the table's "
                                                   "misses).")] = None,
    live: LiveOpt = None,
    priority: Annotated[int | None, typer.Option(help="Ternary priority of the entry.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON line per counter.")] = False,
):
    """Read counters (and meter buckets) back from a running pipeline."""
    import json

    if live is None:
        _fail("counters are read from a running pipeline: give --live PATH (see 'ma serve').")
    req = {"cmd": "counters", "table": table, "priority": priority}
    if key is not None:
        if table is None:
            _fail("a KEY needs its TABLE.")
        req["key"] = _split_pairs(key, "KEY")
    for row in _live(live, req)["counters"]:
        if as_json:
            print(json.dumps(row))
            continue
        what = "miss" if row["key"] is None else ",".join(
            f"{k}={v}" for k, v in row["key"].items())
        if "priority" in row:
            what += f" priority {row['priority']}"
        meter = (f", meter {row['meter'][0]}/{row['meter'][1]} bytes committed/peak"
                 if "meter" in row else "")
        console.print(f"{row['table']} {what}: {row['packets']} packets, {row['bytes']} bytes"
                      f"{meter}", highlight=False, markup=False, soft_wrap=True)


@ma_app.command("serve")
def ma_serve(
    program: Annotated[Path, typer.Option(help="Program TOML.")],
    socket_path: Annotated[Path, typer.Option("--socket", help="Unix socket to listen on.")],
    entries: Annotated[Path | None, typer.Option(help="Entries to install at start.")] = None,
    backend: Annotated[str, typer.Option(help="rtl (gateware on Verilator) or model (golden "
                                              "reference).")] = "rtl",
    width: Annotated[int, typer.Option(help="Data width of the gateware: 64 or 512.")] = 64,
    stages: Annotated[int, typer.Option(help="Stages of the gateware.")] = 4,
    frame_interval_ns: Annotated[int | None, typer.Option(
        help="Meters' time between frames without capture times (default 100).")] = None,
):
    """Run a pipeline and change it while it runs: add/modify/delete/show/counters/send/stop
    with --live PATH."""
    from nicsim.hw.match_action.live import LiveError, LivePipeline, LiveServer
    from nicsim.hw.match_action.program import ProgramError
    from nicsim.hw.verilator import VerilatorError

    if backend not in ("rtl", "model"):
        _fail(f"--backend must be rtl or model, not {backend!r}.")
    if width not in (64, 512):
        _fail(f"--width must be 64 or 512, not {width}.")
    if frame_interval_ns is not None and frame_interval_ns < 0:
        _fail(f"--frame-interval-ns must be 0 or more, not {frame_interval_ns}.")
    try:
        pipeline = LivePipeline(program, entries, backend, width, stages, frame_interval_ns)
    except (ProgramError, LiveError, VerilatorError) as exc:
        _fail(str(exc))
    try:
        server = LiveServer(pipeline, socket_path)
    except LiveError as exc:
        pipeline.close()
        _fail(str(exc))
    console.print(f"serving {pipeline.cp.program.name} ({backend}, {width} bit, "
                  f"{len(pipeline.cp.entries())} entries) at {socket_path}; stop with "
                  f"'nicsim ma stop --live {socket_path}'", highlight=False, markup=False,
                  soft_wrap=True)
    server.serve()
    console.print(f"stopped: {pipeline.frames} frames served", highlight=False)


@ma_app.command("send")
def ma_send(
    live: Annotated[Path, typer.Option("--live", help="Socket of the running pipeline.")],
    in_path: Annotated[Path, typer.Option("--in", help="Input capture (pcap or pcapng).")],
    out_path: Annotated[Path, typer.Option("--out", help="Output capture.")],
    meta_path: Annotated[Path, typer.Option("--meta", help="One JSON line per input "
                                                           "frame.")],
):
    """Send a capture through a running pipeline; write what came out as 'nicsim rtl run
    match-action' does."""
    import json

    from nicsim.hw.pcap import Packet, PcapError, read_pcap, write_pcap

    try:
        packets = read_pcap(in_path)
    except PcapError as exc:
        _fail(str(exc))
    times = [p.time_ns - packets[0].time_ns for p in packets]
    answer = _live(live, {"cmd": "send", "frames": [p.data.hex() for p in packets],
                          "times_ns": times})
    frames, meta = [bytes.fromhex(f) for f in answer["frames"]], answer["meta"]
    kept = [(p, m) for p, m in zip(packets, meta, strict=True) if "dropped" not in m]
    if len(kept) != len(frames):
        _fail(f"the server at {live} answered {len(frames)} frames for {len(kept)} kept.")
    try:
        write_pcap(out_path, [Packet(data, pkt.time_ns, comment=json.dumps(m))
                              for data, (pkt, m) in zip(frames, kept, strict=True)])
        with open(meta_path, "w") as handle:
            for i, m in enumerate(meta):
                handle.write(json.dumps({"frame": i, **m}) + "\n")
    except OSError as exc:
        _fail(f"cannot write output: {exc.strerror} ({exc.filename}).")
    drops = sum("dropped" in m for m in meta)
    console.print(f"match-action (live {live}): {len(packets)} frames in, {len(frames)} out, "
                  f"{drops} dropped -> {out_path}, {meta_path}", highlight=False, markup=False,
                  soft_wrap=True)


@ma_app.command("stop")
def ma_stop(live: Annotated[Path, typer.Option("--live", help="Socket of the running "
                                                              "pipeline.")]):
    """Stop a running pipeline."""
    _live(live, {"cmd": "stop"})
    console.print(f"stopped the server at {live}", highlight=False, markup=False)
