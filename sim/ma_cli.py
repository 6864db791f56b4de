"""The ``nicsim ma`` commands: check a match-action program, load it, manage its entries.

State between commands lives in a JSON file named by ``--state`` (default ``ma-state.json``):
``ma load`` writes it (the program's path, no entries), ``ma add``/``modify``/``delete`` read it,
change the entries and write it back together with the AXI4-Lite register writes that bring a
freshly reset device to that state; ``ma show`` prints the entries as an entries file
(``--entries`` of ``nicsim rtl run match-action``). Errors end in one sentence, exit status 2.
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


def _entry(cp, table, key, action, args, priority, meter):
    from nicsim.hw.match_action.program import make_entry

    args_v = {}
    for a in args or []:
        if "=" not in a:
            _fail(f"argument {a!r}: write NAME=VALUE (see the action's params).")
        name, value = a.split("=", 1)
        args_v[name] = value
    return make_entry(cp.program, table, _split_pairs(key, "KEY"), action, args_v, priority,
                      _parse_meter(meter))


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


def _change(state, verb, table, key, action, args, priority, meter):
    from nicsim.hw.match_action.control import load_state, save_state
    from nicsim.hw.match_action.program import ProgramError

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
):
    """Add an entry; print the AXI4-Lite writes that install it."""
    _change(state, "add", table, key, action, args, priority, meter)


@ma_app.command("modify")
def ma_modify(
    table: Annotated[str, typer.Argument(help="Table name.")],
    key: Annotated[str, typer.Argument(help="Key of the entry to change.")],
    action: Annotated[str, typer.Argument(help="New action.")],
    args: Annotated[list[str] | None, typer.Argument(help="Action arguments NAME=VALUE.")] = None,
    state: StateOpt = Path("ma-state.json"),
    priority: Annotated[int | None, typer.Option(help="Ternary priority of the entry.")] = None,
    meter: Annotated[str | None, typer.Option(help="New meter.")] = None,
):
    """Change an entry's action, arguments or meter (its counters are kept)."""
    _change(state, "modify", table, key, action, args, priority, meter)


@ma_app.command("delete")
def ma_delete(
    table: Annotated[str, typer.Argument(help="Table name.")],
    key: Annotated[str, typer.Argument(help="Key of the entry to delete.")],
    state: StateOpt = Path("ma-state.json"),
    priority: Annotated[int | None, typer.Option(help="Ternary priority of the entry.")] = None,
):
    """Delete an entry."""
    from nicsim.hw.match_action.control import load_state, save_state
    from nicsim.hw.match_action.program import ProgramError

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
def ma_show(state: StateOpt = Path("ma-state.json")):
    """Print the installed entries as an entries file."""
    from nicsim.hw.match_action.control import entry_spec, load_state
    from nicsim.hw.match_action.program import ProgramError

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
