"""Compile a checked program to the gateware's configuration, and entries to register values.

The gateware is elaborated for one program (:func:`compile_program` gives the plain-data
configuration :class:`nicsim.rtl.match_action.MatchAction` takes: key wiring, action logic,
branches); its tables are filled at run time through AXI4-Lite (:func:`entry_writes`).

Header fields are addressed in the header vector as ``[header, shift, width]``: the header's
bytes read as one big-endian number, the field is ``(value >> shift) & (2**width - 1)``.
"""

from __future__ import annotations

from nicsim.rtl.match_action import limits, regs

from ..ref.match_action import meter_increment
from .program import Entry, Program, field_of, parse_value

__all__ = ["design_params", "compile_program", "stage_slots", "key_value", "entry_writes",
           "table_actions", "HV_LENGTHS"]

#: Bytes each header occupies in the header vector (IPv4: the fixed part; options are carried).
HV_LENGTHS = {"ethernet": 14, "vlan": 4, "vlan2": 4, "ipv4": 20, "ipv6": 40, "tcp": 20,
              "udp": 8, "icmp": 4}


def _hv_len(program, header):
    if program.custom is not None and header == program.custom.name:
        return program.custom.length
    return HV_LENGTHS[header]


def _field_ref(program, fld):
    length = _hv_len(program, fld.header)
    header = "custom" if program.custom is not None and fld.header == program.custom.name \
        else fld.header
    return [header, 8 * length - fld.offset - fld.width, fld.width]


def table_actions(table):
    """Actions of a table by number: its list, plus ``nop`` when only the default uses it."""
    names = list(table.actions)
    if table.default[0] not in names:
        names.append(table.default[0])
    return names


def _arg_slices(action):
    out, shift = {}, 0
    for name, width in action.params.items():
        out[name] = (shift, width)
        shift += width
    return out


def _source(program, action, operand):
    if isinstance(operand, str) and operand.startswith("$"):
        shift, width = _arg_slices(action)[operand[1:]]
        return ["arg", shift, width]
    return ["const", parse_value(operand, 1 << 10)]


def _compile_op(program, action, op):
    if op.name == "set":
        return ["set", *_field_ref(program, field_of(program, op.args[0])),
                _source(program, action, op.args[1])]
    if op.name in ("forward", "to_host", "mirror", "set_dscp"):
        return [op.name, _source(program, action, op.args[0])]
    if op.name == "push_vlan":
        pcp = _source(program, action, op.args[1]) if len(op.args) > 1 else ["const", 0]
        return ["push_vlan", _source(program, action, op.args[0]), pcp]
    return [op.name]


def stage_slots(table):
    """Slots a table's stage has: exact tables round up to a power of two of 4-way buckets."""
    if table.kind != "exact":
        return table.size
    buckets = 1
    while buckets * limits.EXACT_WAYS < table.size:
        buckets *= 2
    return buckets * limits.EXACT_WAYS


def compile_program(program: Program, stages: int = limits.DEFAULT_STAGES) -> dict:
    """Return the gateware configuration of a checked program (JSON-serialisable)."""
    index = {t.name: i for i, t in enumerate(program.tables)}

    def target(name):
        return -1 if name is None else index[name]

    out_stages = []
    for t in program.tables:
        names = table_actions(t)
        actions = []
        for name in names:
            a = program.actions[name]
            actions.append({"name": name, "ops": [_compile_op(program, a, op) for op in a.ops]})
        hit = target(t.next_hit)
        lpm_width = next((k.field.width for k in t.keys if k.match == "lpm"), None)
        out_stages.append({
            "name": t.name,
            "kind": "exact" if t.kind == "exact" else "ternary",
            "slots": stage_slots(t),
            "key": [_field_ref(program, k.field) for k in t.keys],
            "if_valid": ["custom" if program.custom is not None and h == program.custom.name
                         else h for h in t.if_valid],
            "meter": t.meter,
            "actions": actions,
            "default": names.index(t.default[0]),
            "default_args": _pack_args(program.actions[t.default[0]], t.default[1]),
            "next_hit": [target(t.next_actions[n]) if n in t.next_actions else hit
                         for n in names],
            "next_miss": target(t.next_miss),
            "next_invalid": target(t.next_invalid),
        })
        if lpm_width is not None:  # the largest priority :func:`key_value` gives (prefix 0)
            out_stages[-1]["max_priority"] = lpm_width
    custom = None
    if program.custom is not None:
        c = program.custom
        custom = {"after": c.after, "match": c.match, "length": c.length}
    return {"name": program.name, "stages": stages, "tables": out_stages, "custom": custom}


def _pack_args(action, args):
    value = 0
    for (shift, _), arg in zip(_arg_slices(action).values(), args, strict=True):
        value |= arg << shift
    return value


def key_value(table, entry: Entry):
    """Return ``(key, mask, priority)`` of an entry as the stage stores them.

    The first key field is the most significant. LPM entries get the priority
    ``width - prefix_len`` of their LPM field, so the longest prefix wins among the matches.
    """
    key = mask = 0
    prio = entry.priority
    for kspec, (v, m) in zip(table.keys, entry.key, strict=True):
        key = key << kspec.field.width | v
        mask = mask << kspec.field.width | m
        if kspec.match == "lpm":
            prio = kspec.field.width - bin(m).count("1")
    return key, mask, prio


def entry_writes(program: Program, entry: Entry, stage: int, slot: int, *, keep_counters=False,
                 keep_meter=False):
    """Return the ``(address, value)`` writes that install ``entry`` in ``slot`` of ``stage``."""
    table = program.tables[stage]
    key, mask, prio = key_value(table, entry)
    action = program.actions[entry.action]
    args = _pack_args(action, entry.args)
    writes = [(regs.REG_KEY + 4 * i, key >> 32 * i & 0xFFFFFFFF) for i in range(regs.KEY_WORDS)]
    if table.kind != "exact":
        writes += [(regs.REG_MASK + 4 * i, mask >> 32 * i & 0xFFFFFFFF)
                   for i in range(regs.KEY_WORDS)]
        writes.append((regs.REG_PRIORITY, prio))
    writes += [(regs.REG_ARGS + 4 * i, args >> 32 * i & 0xFFFFFFFF) for i in range(regs.ARG_WORDS)]
    writes.append((regs.REG_ACTION, table_actions(table).index(entry.action)))
    if entry.meter is not None:
        m = entry.meter
        writes += [(regs.REG_METER_CIR, meter_increment(m.cir)),
                   (regs.REG_METER_PIR, meter_increment(m.pir)),
                   (regs.REG_METER_CBS, m.cbs), (regs.REG_METER_PBS, m.pbs)]
    writes.append((regs.REG_COMMIT, regs.commit_word(stage, slot, True, keep_counters,
                                                     keep_meter)))
    return writes


def design_params(path, stages: int = limits.DEFAULT_STAGES) -> dict:
    """Return the elaboration parameters of the ``match-action`` design for a program file."""
    from .checker import check_program
    from .program import load_program

    return {"program": compile_program(check_program(load_program(path), stages), stages)}
