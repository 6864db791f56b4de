"""Control plane of the match-action pipeline: load a program, add, modify, delete entries,
read counters and meters, through the AXI4-Lite registers of :mod:`nicsim.rtl.match_action.regs`.

A :class:`ControlPlane` talks to a *device*: any object with ``write(addr, value)`` and
``read(addr) -> int`` (a Verilator testbench, a register log). It places entries in the
stages' slots: exact tables are hash tables of 4-way buckets (the bucket is
:func:`nicsim.rtl.match_action.hashing.key_hash` of the key; an add whose bucket is full is
refused with an error, as a full table is); ternary and LPM entries take the first free slot.
It keeps a shadow :class:`~nicsim.hw.ref.match_action.Pipeline`, so it refuses exactly what
the reference refuses (duplicate keys, full tables, equal ternary priorities).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from nicsim.rtl.match_action import limits, regs
from nicsim.rtl.match_action.hashing import key_hash

from ..ref.match_action import Counters, Pipeline
from .checker import check_program
from .compile import compile_program, entry_writes, key_value, stage_slots
from .program import Entry, Program, ProgramError, load_program, make_entry

__all__ = ["RegisterLog", "ControlPlane", "entry_spec", "save_state", "load_state"]


@dataclass
class RegisterLog:
    """A device that records writes (reads answer 0): for dry runs and the harness."""

    writes: list = field(default_factory=list)

    def write(self, addr, value):
        self.writes.append((addr, value & 0xFFFFFFFF))

    def read(self, addr):
        return 0


class ControlPlane:
    """Load a program and manage its entries on a device.

    Parameters
    ----------
    program : Program
        The program; it is checked here (:func:`nicsim.hw.match_action.checker.check_program`).
    device : object, optional
        ``write(addr, value)`` / ``read(addr)``; a :class:`RegisterLog` by default.
    stages : int
        Stages of the gateware.
    """

    def __init__(self, program: Program, device=None, stages: int = limits.DEFAULT_STAGES):
        self.program = check_program(program, stages)
        self.config = compile_program(program, stages)
        self.device = device if device is not None else RegisterLog()
        self.shadow = Pipeline(program)
        self.stage = {t.name: i for i, t in enumerate(program.tables)}
        self.slots = {t.name: [None] * stage_slots(t) for t in program.tables}

    # Placement ------------------------------------------------------------------------------

    def _slot_of(self, entry):
        for i, e in enumerate(self.slots[entry.table]):
            if e is not None and e.same_key(entry) or (
                    e is not None and e.key == entry.key
                    and self.program.table(entry.table).kind != "ternary"):
                return i
        return None

    def _free_slot(self, entry):
        table = self.program.table(entry.table)
        slots = self.slots[table.name]
        if table.kind != "exact":
            return slots.index(None)
        key, _, _ = key_value(table, entry)
        buckets = len(slots) // limits.EXACT_WAYS
        bucket = key_hash(key, table.key_bits, buckets.bit_length() - 1)
        for way in range(limits.EXACT_WAYS):
            slot = bucket * limits.EXACT_WAYS + way
            if slots[slot] is None:
                return slot
        raise ProgramError(f"table {table.name!r}: bucket {bucket} already holds "
                           f"{limits.EXACT_WAYS} entries whose keys hash alike; delete one or "
                           "give the table more entries.")

    def _apply(self, writes):
        for addr, value in writes:
            self.device.write(addr, value)

    # Entries --------------------------------------------------------------------------------

    def add(self, entry: Entry):
        """Install a new entry; return its ``(stage, slot)``."""
        table = self.program.table(entry.table)
        if self._slot_of(entry) is not None:
            raise ProgramError(f"table {table.name!r} already has an entry with this key; "
                               "modify it instead.")
        slot = self._free_slot(entry) if len(self.shadow.tables[table.name].entries) \
            < table.size else None
        self.shadow.add(entry)  # raises for a full table, equal priorities
        self.slots[table.name][slot] = entry
        self._apply(entry_writes(self.program, entry, self.stage[table.name], slot))
        return self.stage[table.name], slot

    def modify(self, entry: Entry):
        """Change the action, arguments (and meter) of the entry with ``entry``'s key.

        Counters are kept; a meter keeps its buckets unless its rates changed.
        """
        slot = self._slot_of(entry)
        if slot is None:
            raise ProgramError(f"table {entry.table!r} has no entry with this key.")
        old = self.slots[entry.table][slot]
        self.shadow.modify(entry)
        self.slots[entry.table][slot] = entry
        self._apply(entry_writes(self.program, entry, self.stage[entry.table], slot,
                                 keep_counters=True, keep_meter=old.meter == entry.meter))

    def delete(self, entry: Entry):
        """Remove the entry with ``entry``'s key."""
        slot = self._slot_of(entry)
        if slot is None:
            raise ProgramError(f"table {entry.table!r} has no entry with this key.")
        self.shadow.delete(entry)
        self.slots[entry.table][slot] = None
        self.device.write(regs.REG_COMMIT, regs.commit_word(self.stage[entry.table], slot,
                                                            install=False))

    def find(self, table, key, priority=None):
        """Return the installed entry of ``table`` with ``key`` (loose values) or raise."""
        from .program import make_key

        items = make_key(self.program, table, key)
        ternary = self.program.table(table).kind == "ternary"
        found = [e for e in self.slots[table] if e is not None and e.key == items
                 and (not ternary or priority is None or e.priority == priority)]
        if not found:
            raise ProgramError(f"table {table!r} has no entry with key {key!r}.")
        if len(found) > 1:
            raise ProgramError(f"table {table!r} has {len(found)} entries with key {key!r}, of "
                               f"priorities {sorted(e.priority for e in found)}; name one by "
                               "its priority.")
        return found[0]

    def entries(self):
        """Return the installed entries, table by table."""
        return [e for t in self.program.tables for e in self.slots[t.name] if e is not None]

    # Counters and meters --------------------------------------------------------------------

    def _select(self, entry=None, table=None):
        if entry is not None:
            slot = self._slot_of(entry)
            if slot is None:
                raise ProgramError(f"table {entry.table!r} has no entry with this key.")
            self.device.write(regs.REG_SELECT, regs.select_word(self.stage[entry.table], slot))
        else:
            self.device.write(regs.REG_SELECT, regs.select_word(self.stage[table], miss=True))

    def _read64(self, lo, hi):
        return self.device.read(lo) | self.device.read(hi) << 32

    def counters(self, entry: Entry) -> Counters:
        """Read the packet and byte counters of an entry."""
        self._select(entry)
        return Counters(self._read64(regs.REG_PACKETS_LO, regs.REG_PACKETS_HI),
                        self._read64(regs.REG_BYTES_LO, regs.REG_BYTES_HI))

    def miss_counters(self, table: str) -> Counters:
        """Read the counters of a table's misses."""
        self.program.table(table)
        self._select(table=table)
        return Counters(self._read64(regs.REG_PACKETS_LO, regs.REG_PACKETS_HI),
                        self._read64(regs.REG_BYTES_LO, regs.REG_BYTES_HI))

    def meter(self, entry: Entry):
        """Read an entry's meter buckets: ``(committed, peak)`` tokens in whole bytes."""
        self._select(entry)
        return self.device.read(regs.REG_METER_TC), self.device.read(regs.REG_METER_TP)


def entry_spec(program: Program, entry: Entry) -> dict:
    """Return an entry as the loose values :func:`make_entry` and entries files take."""
    table = program.table(entry.table)
    key = {}
    for k, (v, m) in zip(table.keys, entry.key, strict=True):
        if k.match == "exact":
            key[k.field.path] = hex(v)
        elif k.match == "lpm":
            key[k.field.path] = f"{v:#x}/{bin(m).count('1')}"
        else:
            key[k.field.path] = f"{v:#x}&&&{m:#x}"
    spec = {"table": entry.table, "key": key, "action": entry.action,
            "args": {p: a for p, a in zip(program.actions[entry.action].params, entry.args,
                                          strict=True)}}
    if table.kind == "ternary":
        spec["priority"] = entry.priority
    if entry.meter is not None:
        spec["meter"] = vars(entry.meter).copy() if hasattr(entry.meter, "__dict__") else {
            "cir": entry.meter.cir, "cbs": entry.meter.cbs, "pir": entry.meter.pir,
            "pbs": entry.meter.pbs}
    return spec


def save_state(path, program_path, cp: ControlPlane, writes):
    """Write the control plane's state (program, entries in slot order, register writes)."""
    doc = {"program": str(Path(program_path).resolve()), "stages": cp.config["stages"],
           "entries": [dict(entry_spec(cp.program, e), slot=[cp.stage[e.table], s])
                       for t in cp.program.tables for s, e in enumerate(cp.slots[t.name])
                       if e is not None],
           "writes": [[a, v] for a, v in writes]}
    Path(path).write_text(json.dumps(doc, indent=1) + "\n")


def load_state(path):
    """Read a state file; return ``(program_path, ControlPlane, writes)``.

    The entries are placed back into the slots they had, so later commands address the same
    hardware slots.
    """
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
        program_path = str(doc["program"])
        stages = int(doc.get("stages", limits.DEFAULT_STAGES))
    except OSError as exc:
        raise ProgramError(f"{path}: cannot read the state ({exc.strerror}); run "
                           "'nicsim ma load PROG.toml --state FILE' first.") from None
    except (ValueError, KeyError, TypeError):
        raise ProgramError(f"{path}: not a state file written by 'nicsim ma load'.") from None
    cp = ControlPlane(load_program(program_path), stages=stages)
    try:
        for spec in doc.get("entries", []):
            spec = dict(spec)
            stage, slot = spec.pop("slot")
            entry = make_entry(cp.program, **spec)
            slots = cp.slots[entry.table]
            if stage != cp.stage[entry.table] or not isinstance(slot, int) \
                    or not 0 <= slot < len(slots) or slots[slot] is not None:
                raise ValueError("a slot twice or in the wrong stage")
            cp.shadow.add(entry)
            cp.slots[entry.table][slot] = entry
        writes = [(int(a), int(v)) for a, v in doc.get("writes", [])]
    except ProgramError as exc:
        raise ProgramError(f"{path}: {exc}") from None
    except (ValueError, KeyError, TypeError, IndexError):
        raise ProgramError(f"{path}: its entries do not fit the program {program_path}; run "
                           "'nicsim ma load' again.") from None
    return program_path, cp, writes
