# Ref: P4_16 v1.2.4 §13 (tables, match kinds exact/ternary/lpm, default actions), bmv2
#      simple_switch (v1model) semantics; IEEE 802.1Q §9.6, RFC 791 §3.1, RFC 8200 §3,
#      RFC 9293 §3.1, RFC 768, RFC 792 (header layouts); RFC 2698 (meters)
"""Match-action programs and table entries: the TOML formats and their parsed form.

A program names the parser's one custom header, the actions and the tables; table entries are a
second file (or come one at a time from the control plane). Parsing checks form (names, types,
widths); :mod:`.checker` then decides whether the hardware can run the program safely.

Program file::

    name = "router"
    [parser.custom]                      # optional: the one program-defined header
    name = "tag"                         # fields are then "tag.<field>"
    after = "ethertype"                  # or "udp_port": follows the UDP header
    match = 0x88b5                       # the EtherType (or UDP destination port) announcing it
    length = 8                           # bytes, fixed
    fields = { id = [0, 32], flags = [32, 8] }   # [bit offset from its first bit, width]

    [actions.route]
    params = { port = 4, dmac = 48 }     # action data and its width in bits
    ops = ["set ethernet.dst $dmac", "dec_ttl", "forward $port"]

    [[tables]]                           # list order is the stage order
    name = "routes"
    keys = [{ field = "ipv4.dst", match = "lpm" }]
    size = 64
    actions = ["route", "drop"]
    default = "drop"                     # or ["route", 1, "0x020000000001"] with arguments
    if_valid = ["ipv4"]                  # applied only when these headers are valid
    meter = "drop"                       # optional per-entry meters: red frames "drop" or "color"
    next = "other"                       # or { hit = "a", miss = "b", invalid = "c",  (absent: end)
                                         #      actions = { route = "d" } }; absent: the end

Entries file::

    [[entries]]
    table = "routes"
    key = { "ipv4.dst" = "10.0.0.0/8" }  # lpm "a/len", ternary "value&&&mask", exact value
    action = "route"
    args = { port = 1, dmac = "02:00:00:00:00:01" }
    priority = 10                        # ternary only; the smallest number wins
    meter = { cir = 1_000_000, cbs = 3000, pir = 2_000_000, pbs = 6000 }  # bit/s and bytes

Primitive operations (``ops``): ``drop``, ``forward PORT``, ``to_host QUEUE``, ``mirror QUEUE``,
``set FIELD VALUE``, ``dec_ttl``, ``set_dscp VALUE``, ``push_vlan VID [PCP]``, ``pop_vlan``.
An operand is a number, an address (``10.0.0.1``, ``2001:db8::1``, ``02:00:00:00:00:01``) or
``$param``.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from nicsim.rtl.match_action import limits

__all__ = [
    "ProgramError",
    "HeaderField",
    "HEADERS",
    "HEADER_ORDER",
    "PRIMITIVES",
    "CustomHeader",
    "KeySpec",
    "Op",
    "Action",
    "Table",
    "Program",
    "MeterConfig",
    "Entry",
    "parse_value",
    "load_program",
    "parse_program",
    "load_entries",
    "parse_entries",
    "make_entry",
    "make_key",
    "field_of",
]


class ProgramError(ValueError):
    """A program or entry that cannot be used; one sentence naming the input and the fix."""


@dataclass(frozen=True)
class HeaderField:
    """One field of a header: its header, offset and width in bits (network order).

    Members
    -------
    header : str
        Header name (``ipv4``).
    name : str
        Field name (``ttl``).
    offset : int
        Bit offset from the first bit of the header, most significant bit first.
    width : int
        Width in bits.
    """

    header: str
    name: str
    offset: int
    width: int

    @property
    def path(self):
        return f"{self.header}.{self.name}"


def _fields(header, spec):
    return {name: HeaderField(header, name, off, width) for name, (off, width) in spec.items()}


#: The fixed headers the parser extracts: ``{header: (length in bytes, {field: HeaderField})}``.
#: ``vlan`` is the outer tag and ``vlan2`` the inner one; a tag's ``type`` is the EtherType that
#: follows it. ``ipv4``'s length is its IHL (options are carried, not parsed); ``icmp`` is ICMP
#: for IPv4 and ICMPv6 for IPv6.
HEADERS = {
    "ethernet": (14, _fields("ethernet", {"dst": (0, 48), "src": (48, 48), "type": (96, 16)})),
    "vlan": (4, _fields("vlan", {"pcp": (0, 3), "dei": (3, 1), "vid": (4, 12),
                                 "type": (16, 16)})),
    "vlan2": (4, _fields("vlan2", {"pcp": (0, 3), "dei": (3, 1), "vid": (4, 12),
                                   "type": (16, 16)})),
    "ipv4": (20, _fields("ipv4", {
        "version": (0, 4), "ihl": (4, 4), "dscp": (8, 6), "ecn": (14, 2),
        "total_len": (16, 16), "id": (32, 16), "flags": (48, 3), "frag_offset": (51, 13),
        "ttl": (64, 8), "protocol": (72, 8), "checksum": (80, 16), "src": (96, 32),
        "dst": (128, 32)})),
    "ipv6": (40, _fields("ipv6", {
        "version": (0, 4), "dscp": (4, 6), "ecn": (10, 2), "flow_label": (12, 20),
        "payload_len": (32, 16), "next_header": (48, 8), "hop_limit": (56, 8),
        "src": (64, 128), "dst": (192, 128)})),
    "tcp": (20, _fields("tcp", {
        "src_port": (0, 16), "dst_port": (16, 16), "seq": (32, 32), "ack": (64, 32),
        "data_offset": (96, 4), "flags": (104, 8), "window": (112, 16), "checksum": (128, 16),
        "urgent": (144, 16)})),
    "udp": (8, _fields("udp", {"src_port": (0, 16), "dst_port": (16, 16), "length": (32, 16),
                               "checksum": (48, 16)})),
    "icmp": (4, _fields("icmp", {"type": (0, 8), "code": (8, 8), "checksum": (16, 16)})),
}
HEADER_ORDER = ("ethernet", "vlan", "vlan2", "ipv4", "ipv6", "tcp", "udp", "icmp")

#: Primitive operations and the operands they take (``(min, max)``).
PRIMITIVES = {
    "drop": (0, 0),
    "forward": (1, 1),
    "to_host": (1, 1),
    "mirror": (1, 1),
    "set": (2, 2),
    "dec_ttl": (0, 0),
    "set_dscp": (1, 1),
    "push_vlan": (1, 2),
    "pop_vlan": (0, 0),
}

MATCH_KINDS = ("exact", "lpm", "ternary")


@dataclass(frozen=True)
class CustomHeader:
    """The program's own header: fixed length, after an EtherType or a UDP destination port.

    Members
    -------
    name : str
    after : str
        ``"ethertype"`` (directly after the Ethernet header and tags) or ``"udp_port"``.
    match : int
        The EtherType or UDP destination port that announces it.
    length : int
        Length in bytes.
    fields : dict of str to HeaderField
    """

    name: str
    after: str
    match: int
    length: int
    fields: dict


@dataclass(frozen=True)
class KeySpec:
    """One key of a table: a header field and how it matches."""

    field: HeaderField
    match: str


@dataclass(frozen=True)
class Op:
    """One primitive operation; operands are ints, field paths (``set``) or ``$param``."""

    name: str
    args: tuple


@dataclass(frozen=True)
class Action:
    """A named action: its parameters (``{name: width}``, in order) and operations."""

    name: str
    params: dict
    ops: tuple


@dataclass
class Table:
    """One match-action table (one stage of the pipeline).

    Members
    -------
    name : str
    keys : list of KeySpec
    kind : str
        ``exact`` (all keys exact), ``lpm`` (one LPM key, the others exact) or ``ternary``.
    size : int
        Entries it can hold.
    actions : list of str
        Actions its entries (and default) may use.
    default : tuple
        ``(action, args)`` run on a miss.
    if_valid : tuple of str
        Headers that must be valid for the table to apply.
    meter : str or None
        ``"drop"`` or ``"color"``: each entry has a meter; red frames are dropped or only
        coloured.
    next_hit, next_miss, next_invalid : str or None
        Next table after a hit, a miss, and when ``if_valid`` fails (``None``: the end).
    next_actions : dict of str to str or None
        Next table after a hit by a given action (overrides ``next_hit``).
    """

    name: str
    keys: list
    kind: str
    size: int
    actions: list
    default: tuple
    if_valid: tuple = ()
    meter: str | None = None
    next_hit: str | None = None
    next_miss: str | None = None
    next_invalid: str | None = None
    next_actions: dict = field(default_factory=dict)

    @property
    def key_bits(self):
        return sum(k.field.width for k in self.keys)


@dataclass
class Program:
    """A parsed program.

    Members
    -------
    name : str
    custom : CustomHeader or None
    actions : dict of str to Action
    tables : list of Table
        In stage order; the first one is applied first.
    source : str
        Where it came from (for messages).
    """

    name: str
    custom: CustomHeader | None
    actions: dict
    tables: list
    source: str = "program"

    def table(self, name):
        for t in self.tables:
            if t.name == name:
                return t
        raise ProgramError(f"{self.source}: no table named {name!r}; tables: "
                           f"{', '.join(t.name for t in self.tables)}.")

    def header_length(self, header):
        if self.custom is not None and header == self.custom.name:
            return self.custom.length
        return HEADERS[header][0]

    def headers(self):
        """Return every header name the parser knows for this program."""
        return list(HEADER_ORDER) + ([self.custom.name] if self.custom else [])


@dataclass(frozen=True)
class MeterConfig:
    """One entry's RFC 2698 two-rate meter: rates in bit/s, bursts in bytes."""

    cir: int
    cbs: int
    pir: int
    pbs: int


@dataclass
class Entry:
    """One table entry.

    Members
    -------
    table : str
    key : tuple of (int, int)
        ``(value, mask)`` per key of the table, in key order (exact: a full mask; lpm: a
        prefix mask).
    action : str
    args : tuple of int
        Action data, in the order of the action's parameters.
    priority : int
        Ternary tables: the smallest number wins. LPM and exact: 0.
    meter : MeterConfig or None
    """

    table: str
    key: tuple
    action: str
    args: tuple = ()
    priority: int = 0
    meter: MeterConfig | None = None

    def same_key(self, other):
        return (self.table == other.table and self.key == other.key
                and self.priority == other.priority)


def field_of(program, path):
    """Return the :class:`HeaderField` named ``path`` (``"ipv4.src"``) in ``program``."""
    header, _, name = str(path).partition(".")
    if program.custom is not None and header == program.custom.name:
        fields = program.custom.fields
    elif header in HEADERS:
        fields = HEADERS[header][1]
    else:
        raise ProgramError(f"{program.source}: unknown header in {path!r}; headers: "
                           f"{', '.join(program.headers())}.")
    if name not in fields:
        raise ProgramError(f"{program.source}: {header} has no field {name!r}; fields: "
                           f"{', '.join(fields)}.")
    return fields[name]


_MAC = re.compile(r"^[0-9a-fA-F]{2}([:-][0-9a-fA-F]{2}){5}$")


def parse_value(value, width, what="value"):
    """Return ``value`` (int, ``0x..``, dotted IPv4, IPv6, MAC) as an int that fits ``width``."""
    if isinstance(value, bool):
        raise ProgramError(f"{what}: {value!r} is not a number or an address.")
    if isinstance(value, int):
        n = value
    else:
        text = str(value).strip()
        try:
            if _MAC.match(text):
                n = int(text.replace(":", "").replace("-", ""), 16)
            elif text.count(".") == 3 or ":" in text:
                n = int(ipaddress.ip_address(text))
            else:
                n = int(text, 0)
        except ValueError:
            raise ProgramError(f"{what}: {value!r} is not a number or an address.") from None
    if not 0 <= n < 1 << width:
        raise ProgramError(f"{what}: {value!r} does not fit in {width} bits.")
    return n


def _read_toml(path_or_text, what):
    if isinstance(path_or_text, Path) or (isinstance(path_or_text, str)
                                          and "\n" not in path_or_text
                                          and path_or_text.endswith(".toml")):
        path = Path(path_or_text)
        try:
            text = path.read_text()
        except OSError as exc:
            raise ProgramError(f"{path}: cannot read the {what} ({exc.strerror}).") from None
        except UnicodeDecodeError:
            raise ProgramError(f"{path}: the {what} is not UTF-8 text.") from None
        source = str(path)
    else:
        text, source = str(path_or_text), what
    try:
        return tomllib.loads(text), source
    except tomllib.TOMLDecodeError as exc:
        raise ProgramError(f"{source}: not valid TOML ({exc}).") from None


def load_program(path):
    """Read and parse a program file (form only: see :func:`.checker.check_program`)."""
    doc, source = _read_toml(Path(path), "program")
    return parse_program(doc, source)


def _expect(cond, source, message):
    if not cond:
        raise ProgramError(f"{source}: {message}")


def _known(section, allowed, source, where):
    unknown = sorted(set(section) - set(allowed))
    _expect(not unknown, source, f"unknown setting(s) {unknown} in {where}; use "
                                 f"{sorted(allowed)}.")


def parse_program(doc, source="program"):
    """Parse a program from its TOML document (a dict)."""
    _expect(isinstance(doc, dict), source, "a program is a TOML table.")
    _known(doc, {"name", "parser", "actions", "tables"}, source, "the program")
    prog = Program(str(doc.get("name", "program")), None, {}, [], source)
    parser = doc.get("parser", {})
    _expect(isinstance(parser, dict), source, "[parser] must be a table.")
    _known(parser, {"custom"}, source, "[parser]")
    if "custom" in parser:
        prog.custom = _parse_custom(parser["custom"], source)
    actions = doc.get("actions", {})
    _expect(isinstance(actions, dict), source, "[actions] must be a table of actions.")
    prog.actions = {"nop": Action("nop", {}, ()), "drop": Action("drop", {}, (Op("drop", ()),))}
    for name, spec in actions.items():
        _expect(name not in prog.actions, source,
                f"action {name!r} is built in; give yours another name.")
        prog.actions[name] = _parse_action(prog, name, spec)
    tables = doc.get("tables", [])
    _expect(isinstance(tables, list) and tables, source,
            "a program needs at least one [[tables]] entry.")
    for spec in tables:
        _expect(isinstance(spec, dict), source, "each [[tables]] entry must be a table.")
        table = _parse_table(prog, spec)
        _expect(all(t.name != table.name for t in prog.tables), source,
                f"two tables are named {table.name!r}.")
        prog.tables.append(table)
    return prog


def _parse_custom(spec, source):
    _expect(isinstance(spec, dict), source, "[parser.custom] must be a table.")
    _known(spec, {"name", "after", "match", "length", "fields"}, source, "[parser.custom]")
    for key in ("name", "after", "match", "length", "fields"):
        _expect(key in spec, source, f"[parser.custom] needs {key!r}.")
    name = str(spec["name"])
    _expect(re.fullmatch(r"[a-z_][a-z0-9_]*", name) is not None and name not in HEADERS
            and name != "meta", source,
            f"custom header name {name!r} must be a new lower-case identifier.")
    after = str(spec["after"])
    _expect(after in ("ethertype", "udp_port"), source,
            f"parser.custom.after must be 'ethertype' or 'udp_port', not {after!r}.")
    match = parse_value(spec["match"], 16, f"{source}: parser.custom.match")
    length = spec["length"]
    _expect(isinstance(length, int) and 1 <= length <= limits.CUSTOM_MAX_BYTES, source,
            f"parser.custom.length must be 1..{limits.CUSTOM_MAX_BYTES} bytes, not {length!r}.")
    fields = {}
    _expect(isinstance(spec["fields"], dict) and spec["fields"], source,
            "parser.custom.fields must name at least one field: { name = [offset, width] }.")
    for fname, pos in spec["fields"].items():
        _expect(isinstance(pos, list) and len(pos) == 2 and all(isinstance(p, int) for p in pos)
                and pos[0] >= 0 and pos[1] >= 1, source,
                f"custom field {fname!r} must be [bit offset, width], not {pos!r}.")
        fields[fname] = HeaderField(name, fname, pos[0], pos[1])
    return CustomHeader(name, after, match, length, fields)


def _parse_operand(prog, text, action_name, params):
    if text.startswith("$"):
        if text[1:] not in params:
            raise ProgramError(f"{prog.source}: action {action_name!r} uses {text} but has no "
                               f"parameter {text[1:]!r}; add it to params.")
        return text
    return text


def _parse_action(prog, name, spec):
    src = prog.source
    _expect(isinstance(spec, dict), src, f"action {name!r} must be a table with params and ops.")
    _known(spec, {"params", "ops"}, src, f"action {name!r}")
    params = spec.get("params", {})
    _expect(isinstance(params, dict) and all(isinstance(w, int) and w >= 1
                                             for w in params.values()),
            src, f"action {name!r}: params must be {{ name = width in bits }}.")
    ops = []
    for text in spec.get("ops", []):
        words = str(text).split()
        _expect(words and words[0] in PRIMITIVES, src,
                f"action {name!r}: {text!r} is not an operation; use one of "
                f"{', '.join(PRIMITIVES)}.")
        lo, hi = PRIMITIVES[words[0]]
        _expect(lo <= len(words) - 1 <= hi, src,
                f"action {name!r}: {words[0]} takes {lo if lo == hi else f'{lo} or {hi}'} "
                f"operand(s), not {len(words) - 1}.")
        args = [_parse_operand(prog, w, name, params) for w in words[1:]]
        ops.append(Op(words[0], tuple(args)))
    return Action(name, dict(params), tuple(ops))


def _parse_table(prog, spec):
    src = prog.source
    _known(spec, {"name", "keys", "size", "actions", "default", "if_valid", "meter", "next"},
           src, "a [[tables]] entry")
    _expect("name" in spec, src, "every table needs a name.")
    name = str(spec["name"])
    keys = []
    raw_keys = spec.get("keys", [])
    _expect(isinstance(raw_keys, list) and raw_keys, src, f"table {name!r} needs keys.")
    for k in raw_keys:
        _expect(isinstance(k, dict) and "field" in k, src,
                f"table {name!r}: a key is {{ field = 'hdr.field', match = 'exact' }}.")
        match = str(k.get("match", "exact"))
        _expect(match in MATCH_KINDS, src, f"table {name!r}: match kind {match!r} is not one of "
                                           f"{', '.join(MATCH_KINDS)}.")
        keys.append(KeySpec(field_of(prog, k["field"]), match))
    kinds = [k.match for k in keys]
    _expect(kinds.count("lpm") <= 1, src, f"table {name!r} has {kinds.count('lpm')} LPM keys; "
                                          "a table takes at most one (P4 rule).")
    kind = "ternary" if "ternary" in kinds else "lpm" if "lpm" in kinds else "exact"
    size = spec.get("size", 64)
    _expect(isinstance(size, int) and size >= 1, src,
            f"table {name!r}: size must be a positive number of entries.")
    actions = [str(a) for a in spec.get("actions", [])]
    _expect(actions, src, f"table {name!r} names no actions.")
    for a in actions:
        _expect(a in prog.actions, src, f"table {name!r} uses unknown action {a!r}; define "
                                        f"[actions.{a}].")
    default = spec.get("default", "nop")
    if isinstance(default, str):
        default = [default]
    _expect(isinstance(default, list) and default and str(default[0]) in prog.actions, src,
            f"table {name!r}: default must be an action name or [action, args...].")
    daction = prog.actions[str(default[0])]
    _expect(len(default) - 1 == len(daction.params), src,
            f"table {name!r}: default action {daction.name!r} takes {len(daction.params)} "
            f"argument(s), not {len(default) - 1}.")
    dargs = tuple(parse_value(v, w, f"{src}: table {name!r} default {p}")
                  for v, (p, w) in zip(default[1:], daction.params.items(), strict=True))
    if_valid = spec.get("if_valid", [])
    if isinstance(if_valid, str):
        if_valid = [if_valid]
    for h in if_valid:
        _expect(h in prog.headers(), src, f"table {name!r}: if_valid names unknown header "
                                          f"{h!r}; headers: {', '.join(prog.headers())}.")
    meter = spec.get("meter")
    _expect(meter in (None, "drop", "color"), src,
            f"table {name!r}: meter must be 'drop' or 'color', not {meter!r}.")
    table = Table(name, keys, kind, size, actions, (daction.name, dargs), tuple(if_valid), meter)
    nxt = spec.get("next")
    if isinstance(nxt, str) or nxt is None:
        table.next_hit = table.next_miss = table.next_invalid = nxt
    else:
        _expect(isinstance(nxt, dict), src, f"table {name!r}: next must be a table name or "
                                            "{ hit = .., miss = .. }.")
        _known(nxt, {"hit", "miss", "invalid", "actions"}, src, f"table {name!r} next")
        table.next_hit = nxt.get("hit")
        table.next_miss = nxt.get("miss")
        table.next_invalid = nxt.get("invalid")
        table.next_actions = dict(nxt.get("actions", {}))
    return table


def load_entries(path, program):
    """Read and parse an entries file for ``program``."""
    doc, source = _read_toml(Path(path), "entries")
    return parse_entries(doc, program, source)


def parse_entries(doc, program, source="entries"):
    """Parse ``[[entries]]`` of a TOML document against ``program``."""
    _known(doc, {"entries"}, source, "the entries file")
    raw = doc.get("entries", [])
    _expect(isinstance(raw, list), source, "[[entries]] must be a list of tables.")
    out = []
    for i, spec in enumerate(raw):
        _expect(isinstance(spec, dict), source, f"entry {i} must be a table.")
        _known(spec, {"table", "key", "action", "args", "priority", "meter"}, source,
               f"entry {i}")
        _expect("table" in spec and "key" in spec and "action" in spec, source,
                f"entry {i} needs table, key and action.")
        try:
            out.append(make_entry(program, spec["table"], spec["key"], spec["action"],
                                  spec.get("args", {}), spec.get("priority"), spec.get("meter")))
        except ProgramError as exc:
            raise ProgramError(f"{source}: entry {i}: {exc}") from None
    return out


def _key_item(kspec, value):
    width = kspec.field.width
    full = (1 << width) - 1
    what = kspec.field.path
    if kspec.match == "exact":
        return parse_value(value, width, what), full
    if kspec.match == "lpm":
        if isinstance(value, dict):
            v, plen = value.get("value"), value.get("prefix_len", width)
        else:
            text = str(value)
            v, _, plen = text.partition("/")
            try:
                plen = int(plen) if plen else width
            except ValueError:
                pass  # refused just below, with the text given
        if isinstance(plen, bool) or not isinstance(plen, int) or not 0 <= plen <= width:
            raise ProgramError(f"{what}: prefix length must be 0..{width}, not {plen!r}.")
        mask = full ^ ((1 << (width - plen)) - 1)
        v = parse_value(v, width, what)
        if v & ~mask & full:
            raise ProgramError(f"{what}: {value!r} has bits set beyond its prefix length.")
        return v, mask
    if isinstance(value, dict):
        v, m = value.get("value"), value.get("mask", full)
    else:
        text = str(value)
        v, sep, m = text.partition("&&&")
        if not sep:
            m = full
    v, m = parse_value(v, width, what), parse_value(m, width, f"{what} mask")
    if v & ~m:
        raise ProgramError(f"{what}: value {v:#x} has bits outside its mask {m:#x}.")
    return v, m


def make_key(program, table, key):
    """Return the ``(value, mask)`` items of a key given loosely (see :func:`make_entry`)."""
    t = program.table(str(table))
    if isinstance(key, dict):
        names = [k.field.path for k in t.keys]
        extra = sorted(set(map(str, key)) - set(names))
        missing = [n for n in names if n not in key and t.kind == "exact"]
        if extra or missing:
            raise ProgramError(f"table {t.name!r} is keyed on {', '.join(names)}; "
                               f"{_differs(extra, missing)}.")
        items = []
        for k in t.keys:
            if k.field.path in key:
                items.append(_key_item(k, key[k.field.path]))
            elif k.match == "exact":
                raise ProgramError(f"exact key {k.field.path} needs a value.")
            else:
                items.append((0, 0))  # wildcard
    else:
        values = list(key) if isinstance(key, (list, tuple)) else [key]
        if len(values) != len(t.keys):
            raise ProgramError(f"table {t.name!r} takes {len(t.keys)} key value(s), not "
                               f"{len(values)}.")
        items = [_key_item(k, v) for k, v in zip(t.keys, values, strict=True)]
    return tuple(items)


def _differs(extra, missing):
    return f"unknown {extra}" if extra else f"missing {missing}"


def make_entry(program, table, key, action, args=None, priority=None, meter=None):
    """Build an :class:`Entry` from loose values (TOML or command line), checking form.

    ``key`` is ``{field path: value}`` or a list of values in key order; ``args`` is
    ``{param: value}`` or a list in parameter order; ``meter`` is
    ``{cir, cbs, pir, pbs}`` (``pir``/``pbs`` default to ``cir``/``cbs``).
    """
    from .checker import check_meter

    t = program.table(str(table))
    items = make_key(program, table, key)
    action = str(action)
    if action not in t.actions:
        raise ProgramError(f"table {t.name!r} does not take action {action!r}; use one of "
                           f"{', '.join(t.actions)}.")
    act = program.actions[action]
    args = args or {}
    if isinstance(args, dict):
        extra = sorted(set(args) - set(act.params))
        missing = [p for p in act.params if p not in args]
        if extra or missing:
            raise ProgramError(f"action {action!r} takes {list(act.params) or 'no arguments'}; "
                               f"{_differs(extra, missing)}.")
        values = [args[p] for p in act.params]
    else:
        values = list(args)
        if len(values) != len(act.params):
            raise ProgramError(f"action {action!r} takes {len(act.params)} argument(s), not "
                               f"{len(values)}.")
    argv = tuple(parse_value(v, w, f"{action} {p}")
                 for v, (p, w) in zip(values, act.params.items(), strict=True))
    if t.kind == "ternary":
        if priority is None or not isinstance(priority, int) or not 0 <= priority < 1 << 16:
            raise ProgramError(f"table {t.name!r} is ternary: each entry needs a priority "
                               "0..65535 (the smallest wins).")
    elif priority not in (None, 0):
        raise ProgramError(f"table {t.name!r} is {t.kind}: its entries take no priority.")
    mcfg = None
    if meter is not None:
        if t.meter is None:
            raise ProgramError(f"table {t.name!r} has no meters; set meter = 'drop' or "
                               "'color' in the program.")
        if not isinstance(meter, dict) or "cir" not in meter or "cbs" not in meter:
            raise ProgramError("meter must be { cir = bit/s, cbs = bytes[, pir, pbs] }.")
        unknown = sorted(set(map(str, meter)) - {"cir", "cbs", "pir", "pbs"})
        if unknown:
            raise ProgramError(f"meter: unknown setting(s) {unknown}; a meter takes cir, cbs, "
                               "pir and pbs.")
        try:
            vals = [int(meter.get(k, meter.get(d))) for k, d in
                    (("cir", "cir"), ("cbs", "cbs"), ("pir", "cir"), ("pbs", "cbs"))]
        except (TypeError, ValueError):
            raise ProgramError("meter rates and bursts must be integers.") from None
        mcfg = MeterConfig(*vals)
        check_meter(mcfg)
    elif t.meter is not None:
        raise ProgramError(f"table {t.name!r} meters every entry: give the entry "
                           "meter = { cir = bit/s, cbs = bytes }.")
    return Entry(t.name, tuple(items), action, argv, int(priority or 0), mcfg)
