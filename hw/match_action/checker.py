"""Verify a match-action program before it is offloaded: reject what the hardware cannot run.

The seed survey asks that programs offloaded to a NIC be verified before they run; this is that
verifier for the match-action pipeline. :func:`check_program` rejects, with one sentence naming
the table or action and the fix:

* more tables than stages, tables or keys larger than the gateware holds
  (:mod:`nicsim.rtl.match_action.limits`), too many actions or too much action data;
* branches to unknown tables, cycles between tables, and branches that go back to an earlier
  stage (tables are listed in the order they apply);
* keys or field writes outside a header (custom fields past its length), writes to fields the
  pipeline keeps consistent itself (checksums, lengths, the EtherTypes that chain headers) or
  that a TCP/UDP checksum covers (addresses, ports: the pipeline does not rewrite L4
  checksums), constants and parameters that do not fit their operand;
* keys read or actions run on headers that may be absent: a header counts as present in a
  table only if every path to it passed an ``if_valid`` naming it (``ethernet`` is always
  present: shorter frames are dropped by the parser);
* meter rates and bursts outside the meters' range (:func:`check_meter`).
"""

from __future__ import annotations

from nicsim.rtl.match_action import limits

from .program import HEADERS, MeterConfig, Program, ProgramError, field_of

__all__ = ["CheckError", "check_program", "check_meter", "READ_ONLY_FIELDS"]


class CheckError(ProgramError):
    """A program the hardware cannot run safely; one sentence naming the problem and the fix."""


#: Fields actions may not write, and why.
READ_ONLY_FIELDS = {
    "ipv4.checksum": "the pipeline updates it itself (RFC 1624)",
    "ipv4.version": "it decides how the header is parsed",
    "ipv4.ihl": "it decides how the header is parsed",
    "ipv4.total_len": "it must match the frame",
    "ipv4.protocol": "it decides the next header and is in the TCP/UDP checksum",
    "ipv4.src": "a TCP/UDP checksum covers it and the pipeline does not rewrite those",
    "ipv4.dst": "a TCP/UDP checksum covers it and the pipeline does not rewrite those",
    "ipv6.version": "it decides how the header is parsed",
    "ipv6.payload_len": "it must match the frame",
    "ipv6.next_header": "it decides the next header",
    "ipv6.src": "a TCP/UDP checksum covers it and the pipeline does not rewrite those",
    "ipv6.dst": "a TCP/UDP checksum covers it and the pipeline does not rewrite those",
    "ethernet.type": "it chains the headers (use push_vlan/pop_vlan)",
    "vlan.type": "it chains the headers (use push_vlan/pop_vlan)",
    "vlan2.type": "it chains the headers (use push_vlan/pop_vlan)",
}
for _h in ("tcp", "udp", "icmp"):
    for _f in HEADERS[_h][1]:
        READ_ONLY_FIELDS[f"{_h}.{_f}"] = ("a checksum over the payload covers it and the "
                                          "pipeline does not rewrite those")


def _fail(program, message):
    raise CheckError(f"{program.source}: {message}")


def check_meter(meter: MeterConfig):
    """Raise :class:`CheckError` unless the meter's rates and bursts are in range."""
    lo, hi = limits.METER_MIN_RATE_BPS, limits.METER_MAX_RATE_BPS
    for name in ("cir", "pir"):
        rate = getattr(meter, name)
        if not lo <= rate <= hi:
            raise CheckError(f"meter {name} {rate} bit/s is out of range: the meters run "
                             f"{lo} to {hi} bit/s.")
    for name in ("cbs", "pbs"):
        burst = getattr(meter, name)
        if not limits.METER_MIN_BURST <= burst <= limits.METER_MAX_BURST:
            raise CheckError(f"meter {name} {burst} bytes is out of range: bursts are "
                             f"{limits.METER_MIN_BURST} to {limits.METER_MAX_BURST} bytes.")
    if meter.pir < meter.cir:
        raise CheckError(f"meter pir {meter.pir} is below cir {meter.cir}: RFC 2698 needs "
                         "PIR >= CIR.")


def _operand_width(program, action, arg):
    """Width of an operand: a parameter's declared width, or the bits a constant needs."""
    if isinstance(arg, str) and arg.startswith("$"):
        return action.params[arg[1:]], True
    from .program import parse_value

    try:
        value = parse_value(arg, 1 << 10, f"action {action.name!r} operand")
    except ProgramError as exc:
        _fail(program, str(exc).rstrip(".") + ".")
    return max(value.bit_length(), 1), False


def _check_actions(program):
    for action in program.actions.values():
        if len(action.ops) > limits.MAX_OPS:
            _fail(program, f"action {action.name!r} has {len(action.ops)} operations; a stage "
                           f"runs at most {limits.MAX_OPS}.")
        bits = sum(action.params.values())
        if bits > limits.MAX_ARG_BITS:
            _fail(program, f"action {action.name!r} takes {bits} bits of parameters; an entry "
                           f"holds at most {limits.MAX_ARG_BITS}.")
        for op in action.ops:
            if op.name == "set":
                fld = field_of(program, op.args[0])
                if fld.path in READ_ONLY_FIELDS:
                    _fail(program, f"action {action.name!r} writes {fld.path}: "
                                   f"{READ_ONLY_FIELDS[fld.path]}.")
                width, _ = _operand_width(program, action, op.args[1])
                if width > fld.width:
                    _fail(program, f"action {action.name!r} writes a {width}-bit value into "
                                   f"{fld.width}-bit {fld.path}.")
            bounds = {"forward": ("port", limits.PORTS), "to_host": ("queue", limits.HOST_QUEUES),
                      "mirror": ("queue", limits.HOST_QUEUES), "set_dscp": ("DSCP", 64),
                      "push_vlan": ("VLAN ID", 4096)}
            if op.name in bounds:
                what, n = bounds[op.name]
                width, is_param = _operand_width(program, action, op.args[0])
                if width > (n - 1).bit_length():
                    _fail(program, f"action {action.name!r}: {op.name} "
                                   f"{'parameter ' + op.args[0] if is_param else op.args[0]} may "
                                   f"exceed {what} {n - 1}; make it at most "
                                   f"{(n - 1).bit_length()} bits.")
            if op.name == "push_vlan" and len(op.args) == 2:
                width, _ = _operand_width(program, action, op.args[1])
                if width > 3:
                    _fail(program, f"action {action.name!r}: push_vlan priority must fit 3 "
                                   "bits.")


def _check_tables(program, stages):
    if len(program.tables) > stages:
        _fail(program, f"{len(program.tables)} tables need {len(program.tables)} stages; the "
                       f"pipeline has {stages} (one table a stage).")
    if program.custom is not None:
        c = program.custom
        for f in c.fields.values():
            if f.offset + f.width > 8 * c.length:
                _fail(program, f"custom field {f.path} (bits {f.offset}..{f.offset + f.width - 1})"
                               f" lies outside the {c.length}-byte {c.name} header.")
    names = {t.name: i for i, t in enumerate(program.tables)}
    for t in program.tables:
        cap = limits.MAX_ENTRIES[t.kind]
        if t.size > cap:
            _fail(program, f"table {t.name!r} asks for {t.size} entries; an {t.kind} stage "
                           f"holds at most {cap}.")
        if t.key_bits > limits.MAX_KEY_BITS:
            _fail(program, f"table {t.name!r} has a {t.key_bits}-bit key; a stage matches at "
                           f"most {limits.MAX_KEY_BITS} bits.")
        if len(t.actions) > limits.MAX_ACTIONS:
            _fail(program, f"table {t.name!r} names {len(t.actions)} actions; a stage takes at "
                           f"most {limits.MAX_ACTIONS}.")
        if t.default[0] not in t.actions and t.default[0] != "nop":
            _fail(program, f"table {t.name!r}: default action {t.default[0]!r} is not in its "
                           "actions list.")
        for a in t.next_actions:
            if a not in t.actions:
                _fail(program, f"table {t.name!r} branches on action {a!r}, which it does not "
                               "take.")
        for target in _targets(t):
            if target not in names:
                _fail(program, f"table {t.name!r} goes next to unknown table {target!r}.")
    _check_cycles(program, names)
    for i, t in enumerate(program.tables):
        for target in _targets(t):
            if names[target] <= i:
                _fail(program, f"table {t.name!r} goes next to {target!r}, an earlier stage: "
                               "list the tables in the order they apply.")


def _targets(t):
    out = [t.next_hit, t.next_miss, t.next_invalid, *t.next_actions.values()]
    return [x for x in dict.fromkeys(out) if x is not None]


def _check_cycles(program, names):
    state = {}

    def visit(name, path):
        state[name] = 1
        for nxt in _targets(program.tables[names[name]]):
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt):] + [nxt]
                _fail(program, f"tables {' -> '.join(cycle)} form a cycle; a frame must "
                               "leave the pipeline.")
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[name] = 2

    for t in program.tables:
        if t.name not in state:
            visit(t.name, [t.name])


_VLAN_HEADERS = {"vlan", "vlan2"}


def _check_validity(program):
    """Follow every path from the first table; every header used must be known present."""
    present = {program.tables[0].name: frozenset({"ethernet"})}
    for t in program.tables:
        if t.name not in present:
            continue  # unreachable: never applied
        inside = present[t.name] | set(t.if_valid)
        for k in t.keys:
            if k.field.header not in inside:
                _fail(program, f"table {t.name!r} matches on {k.field.path}, but {k.field.header}"
                               f" may be absent there: add if_valid = [\"{k.field.header}\"].")
        after = inside
        for name in t.actions:
            after = after & _check_action_validity(program, t, program.actions[name], inside)
        for target, via in ((t.next_invalid, present[t.name]),
                            *((x, after) for x in (t.next_hit, t.next_miss,
                                                   *t.next_actions.values()))):
            if target is not None:
                present[target] = present.get(target, via) & via


def _check_action_validity(program, table, action, valid):
    valid = set(valid)
    for op in action.ops:
        need = None
        if op.name == "set":
            need = field_of(program, op.args[0]).header
            if need not in valid:
                break
        elif op.name in ("dec_ttl", "set_dscp"):
            if not valid & {"ipv4", "ipv6"}:
                need = "ipv4"
                break
        elif op.name == "pop_vlan":
            need = "vlan"
            if need not in valid:
                break
            valid -= _VLAN_HEADERS
        elif op.name == "push_vlan":
            valid -= _VLAN_HEADERS
        need = None
    else:
        return frozenset(valid)
    _fail(program, f"action {action.name!r} in table {table.name!r} uses {need}, which may be "
                   f"absent there: add if_valid = [\"{need}\"] to the table.")


def check_program(program: Program, stages: int = limits.DEFAULT_STAGES) -> Program:
    """Raise :class:`CheckError` unless the gateware with ``stages`` stages can run ``program``.

    Returns the program, so that ``check_program(load_program(path))`` reads naturally.
    """
    if not 1 <= stages <= limits.MAX_STAGES:
        raise CheckError(f"the pipeline has 1 to {limits.MAX_STAGES} stages, not {stages}.")
    _check_actions(program)
    _check_tables(program, stages)
    _check_validity(program)
    return program
