# Ref: P4_16 v1.2.4 §12-§14 (parser, tables, actions), bmv2 simple_switch / v1model
#      (egress_spec, mark_to_drop, direct counters and meters), RFC 2698 (two-rate three-colour
#      marker, colour-blind), RFC 1624 eqn. 3 (incremental IPv4 checksum), RFC 791 §3.1
#      (TTL), RFC 8200 §3 (hop limit), IEEE 802.1Q §9.6 (tags)
"""Golden reference of the match-action pipeline: parser, tables, actions, deparser.

A frame goes through:

1. The **parser**, which fills a header vector: ``ethernet``; up to two VLAN tags (``vlan``
   outer, ``vlan2`` inner; TPID 0x8100 or 0x88a8); the program's custom header after its
   EtherType; ``ipv4`` (version 4, IHL >= 5, options carried) or ``ipv6``; ``tcp``, ``udp`` or
   ``icmp`` (not for IPv4 fragments other than the first); the custom header after its UDP
   destination port. A header is valid only if it lies whole within the frame and within the
   first :data:`~nicsim.rtl.match_action.limits.PARSE_WINDOW` bytes; parsing stops at the first
   header that does not (``parser_error``), and the frame goes on with the headers before it
   (bmv2 does the same). A frame shorter than an Ethernet header is dropped (``runt``).
2. The **tables**, first to last as the program branches: a table whose ``if_valid`` headers are
   not all valid is skipped (``next.invalid``); otherwise its key selects an entry (exact; LPM:
   longest prefix; ternary: smallest priority number) whose action runs, or the default action
   on a miss. A hit counts the frame and its bytes in the entry's counters and, in a metered
   table, colours the frame with the entry's meter.
3. The **deparser**, which writes the header vector back: VLAN tags pushed and popped, fields
   rewritten; everything after the parsed headers (payload, IPv4 options) is left untouched.

Egress follows v1model's ``egress_spec``: it starts as port 0 and the last ``forward`` or
``to_host`` wins. A drop (``drop``, an expired TTL, a red frame in a table with
``meter = "drop"``, a tag pushed onto two) is final, unlike v1model's ``mark_to_drop`` that a
later egress write revives: a NIC must not forward what a filter dropped. The remaining tables
still apply (and count the frame).
``dec_ttl`` drops a frame whose TTL (hop limit) is 0 or 1 (``ttl_expired``) instead of sending
it on with 0; writes to IPv4 fields update the header checksum incrementally.

Meters are RFC 2698 colour-blind two-rate markers, one per entry. Time is the frame's ingress
timestamp in **nanoseconds**; buckets hold tokens in 1/2**16 byte and refill by
``floor(rate_bps * 2**16 / 8e9)`` units per nanosecond, up to their burst; a gap longer than
:data:`~nicsim.rtl.match_action.limits.METER_MAX_GAP_NS` counts as that long and a timestamp
earlier than the previous one as no time. Both buckets start full.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nicsim.rtl.match_action import limits

from ..match_action.program import HEADERS, Entry, Program, ProgramError, field_of
from .checksum import MAX_FRAME_LEN, csum_adjust
from .packet import TPID_CTAG, VLAN_TPIDS

__all__ = [
    "ParsedFrame",
    "parse",
    "deparse",
    "meter_increment",
    "MeterState",
    "Counters",
    "Outcome",
    "Pipeline",
    "DROP_RUNT",
]

ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_IPV6 = 0x86DD
IPPROTO_ICMP = 1
IPPROTO_ICMPV6 = 58
IPPROTO_TCP = 6
IPPROTO_UDP = 17

DROP_RUNT = "runt"  # shorter than an Ethernet header
DROP_ACTION = "drop"  # a drop operation
DROP_TTL = "ttl_expired"
DROP_METER = "meter_red"
DROP_VLAN = "vlan_overflow"  # push_vlan on a frame that already has two tags
DROP_OVERSIZE = "oversize"  # longer than MAX_FRAME_LEN


@dataclass
class ParsedFrame:
    """A frame's header vector.

    Members
    -------
    frame : bytes
        The frame as received.
    headers : dict of str to bytearray
        Bytes of each valid header, in parse order (``ipv4`` holds its options too).
    offsets : dict of str to int
        Where each valid header started in the received frame.
    end : int
        Offset of the first byte after the parsed headers.
    error : str or None
        Why parsing stopped early (``truncated``, ``bad_ipv4``, ``bad_ipv6``, ``vlan_depth``).
    """

    frame: bytes
    headers: dict = field(default_factory=dict)
    offsets: dict = field(default_factory=dict)
    end: int = 0
    error: str | None = None

    def valid(self, header):
        return header in self.headers

    def get(self, fld):
        raw = self.headers[fld.header]
        n = int.from_bytes(raw, "big")
        return (n >> (8 * len(raw) - fld.offset - fld.width)) & ((1 << fld.width) - 1)

    def put(self, fld, value):
        raw = self.headers[fld.header]
        total = 8 * len(raw)
        n = int.from_bytes(raw, "big")
        shift = total - fld.offset - fld.width
        mask = ((1 << fld.width) - 1) << shift
        n = (n & ~mask) | ((value << shift) & mask)
        raw[:] = n.to_bytes(len(raw), "big")


def parse(frame: bytes, program: Program) -> ParsedFrame:
    """Parse ``frame`` into its header vector (see the module docstring)."""
    p = ParsedFrame(bytes(frame))
    limit = min(len(frame), limits.PARSE_WINDOW)
    custom = program.custom

    def take(name, offset, length):
        if offset + length > limit:
            p.error = "truncated"
            return False
        p.headers[name] = bytearray(frame[offset:offset + length])
        p.offsets[name] = offset
        p.end = offset + length
        return True

    if not take("ethernet", 0, 14):
        return p
    off, etype = 14, int.from_bytes(frame[12:14], "big")
    for name in ("vlan", "vlan2"):
        if etype not in VLAN_TPIDS:
            break
        if not take(name, off, 4):
            return p
        etype = int.from_bytes(frame[off + 2:off + 4], "big")
        off += 4
    if etype in VLAN_TPIDS:
        p.error = "vlan_depth"
        return p
    if custom is not None and custom.after == "ethertype" and etype == custom.match:
        take(custom.name, off, custom.length)
        return p
    proto = None
    if etype == ETHERTYPE_IPV4:
        if off + 20 > limit:
            p.error = "truncated"
            return p
        ihl = frame[off] & 0xF
        if frame[off] >> 4 != 4 or ihl < 5:
            p.error = "bad_ipv4"
            return p
        if not take("ipv4", off, 4 * ihl):
            return p
        frag = int.from_bytes(frame[off + 6:off + 8], "big") & 0x1FFF
        proto = frame[off + 9] if frag == 0 else None
        off += 4 * ihl
        icmp = IPPROTO_ICMP
    elif etype == ETHERTYPE_IPV6:
        if off + 40 > limit:
            p.error = "truncated"
            return p
        if frame[off] >> 4 != 6:
            p.error = "bad_ipv6"
            return p
        take("ipv6", off, 40)
        proto = frame[off + 6]
        off += 40
        icmp = IPPROTO_ICMPV6
    if proto is None:
        return p
    if proto == IPPROTO_TCP:
        take("tcp", off, 20)
    elif proto == IPPROTO_UDP:
        if take("udp", off, 8) and custom is not None and custom.after == "udp_port" \
                and int.from_bytes(frame[off + 2:off + 4], "big") == custom.match:
            take(custom.name, off + 8, custom.length)
    elif proto == icmp:
        take("icmp", off, 4)
    return p


def deparse(p: ParsedFrame) -> bytes:
    """Write the header vector back in front of the untouched rest of the frame."""
    out = bytearray(p.frame)
    l2_end = 14
    for name, raw in p.headers.items():
        if name in ("ethernet", "vlan", "vlan2"):
            continue
        off = p.offsets[name]
        out[off:off + len(raw)] = raw
    # Tags as received end where the first non-L2 header (or the parsed end) starts.
    received_tags = [n for n in ("vlan", "vlan2") if n in p.offsets]
    if received_tags:
        l2_end = p.offsets[received_tags[-1]] + 4
    eth = p.headers["ethernet"]
    l2 = bytearray(eth)
    for name in ("vlan", "vlan2"):
        if name in p.headers:
            l2 += p.headers[name]
    return bytes(l2 + out[l2_end:])


def meter_increment(rate_bps: int) -> int:
    """Tokens (1/2**16 byte) a bucket of ``rate_bps`` gains each nanosecond."""
    return (rate_bps << limits.METER_FRAC_BITS) // 8_000_000_000


@dataclass
class MeterState:
    """An RFC 2698 meter's buckets (1/2**16 byte) and the time of its last frame (ns)."""

    tc: int = 0
    tp: int = 0
    last_ns: int | None = None

    def colour(self, cfg, nbytes, now_ns):
        """Colour a frame of ``nbytes`` at ``now_ns``: ``green``, ``yellow`` or ``red``."""
        frac = limits.METER_FRAC_BITS
        cmax, pmax = cfg.cbs << frac, cfg.pbs << frac
        if self.last_ns is None:
            self.tc, self.tp = cmax, pmax
        else:
            dt = min(max(now_ns - self.last_ns, 0), limits.METER_MAX_GAP_NS)
            self.tc = min(cmax, self.tc + dt * meter_increment(cfg.cir))
            self.tp = min(pmax, self.tp + dt * meter_increment(cfg.pir))
        self.last_ns = now_ns
        need = nbytes << frac
        if self.tp < need:
            return "red"
        self.tp -= need
        if self.tc < need:
            return "yellow"
        self.tc -= need
        return "green"


@dataclass
class Counters:
    """Packets and bytes (as received) of one entry or one table's misses."""

    packets: int = 0
    bytes: int = 0


@dataclass
class Outcome:
    """What the pipeline did with one frame.

    Members
    -------
    frame : bytes or None
        The frame leaving the pipeline (``None``: dropped).
    meta : dict
        ``action`` (``forward``, ``host``, ``drop``), ``port``, ``queue``, ``table_hits`` (names of
        the tables that hit, in order), ``mirror`` (host queue of a copy, or ``None``),
        ``color`` (of the last meter, or ``None``) and for drops ``dropped`` (the reason).
    """

    frame: bytes | None
    meta: dict


@dataclass
class _TableState:
    entries: list = field(default_factory=list)
    counters: list = field(default_factory=list)
    meters: list = field(default_factory=list)
    miss: Counters = field(default_factory=Counters)


class Pipeline:
    """A program with its table entries, counters and meters.

    Parameters
    ----------
    program : Program
        A checked program (:func:`nicsim.hw.match_action.checker.check_program`).
    entries : list of Entry
        Initial entries.
    """

    def __init__(self, program: Program, entries=()):
        self.program = program
        self.tables = {t.name: _TableState() for t in program.tables}
        for e in entries:
            self.add(e)

    # Control plane ----------------------------------------------------------------------

    def _find(self, entry):
        state = self.tables[entry.table]
        for i, e in enumerate(state.entries):
            if e.key == entry.key and (self.program.table(entry.table).kind != "ternary"
                                       or e.priority == entry.priority):
                return i
        return None

    def add(self, entry: Entry):
        """Add an entry; an entry with the same key (and priority) raises ProgramError."""
        table = self.program.table(entry.table)
        state = self.tables[entry.table]
        if self._find(entry) is not None:
            raise ProgramError(f"table {entry.table!r} already has an entry with this key; "
                               "modify it instead.")
        if len(state.entries) >= table.size:
            raise ProgramError(f"table {entry.table!r} is full ({table.size} entries).")
        if table.kind == "ternary" and any(e.priority == entry.priority for e in state.entries):
            raise ProgramError(f"table {entry.table!r} already has an entry of priority "
                               f"{entry.priority}; ternary priorities must differ.")
        state.entries.append(entry)
        state.counters.append(Counters())
        state.meters.append(MeterState())

    def modify(self, entry: Entry):
        """Replace the action, arguments and meter of the entry with ``entry``'s key.

        Counters are kept; the meter restarts full if its configuration changed.
        """
        i = self._find(entry)
        if i is None:
            raise ProgramError(f"table {entry.table!r} has no entry with this key.")
        state = self.tables[entry.table]
        if state.entries[i].meter != entry.meter:
            state.meters[i] = MeterState()
        state.entries[i] = entry

    def delete(self, entry: Entry):
        """Delete the entry with ``entry``'s key (action and arguments are ignored)."""
        i = self._find(entry)
        if i is None:
            raise ProgramError(f"table {entry.table!r} has no entry with this key.")
        state = self.tables[entry.table]
        for lst in (state.entries, state.counters, state.meters):
            del lst[i]

    def counters(self, entry: Entry) -> Counters:
        """Return the counters of the entry with ``entry``'s key."""
        i = self._find(entry)
        if i is None:
            raise ProgramError(f"table {entry.table!r} has no entry with this key.")
        return self.tables[entry.table].counters[i]

    # Data plane -------------------------------------------------------------------------

    def _lookup(self, table, p):
        state = self.tables[table.name]
        values = [p.get(k.field) for k in table.keys]
        best, best_rank = None, None
        for i, e in enumerate(state.entries):
            if all(v & m == ev for v, (ev, m) in zip(values, e.key, strict=True)):
                if table.kind == "exact":
                    return i
                if table.kind == "lpm":
                    rank = -sum(bin(m).count("1") for (_, m), k in zip(e.key, table.keys,
                                                                      strict=True)
                                if k.match == "lpm")
                else:
                    rank = e.priority
                if best is None or rank < best_rank:
                    best, best_rank = i, rank
        return best

    def process(self, frame: bytes, now_ns: int = 0) -> Outcome:
        """Run one frame, received at ``now_ns`` (meters), through the pipeline."""
        meta = {"action": "drop", "port": None, "queue": None, "table_hits": [],
                "mirror": None, "color": None}
        if len(frame) < 14:
            meta["dropped"] = DROP_RUNT
            return Outcome(None, meta)
        if len(frame) > MAX_FRAME_LEN:
            meta["dropped"] = DROP_OVERSIZE
            return Outcome(None, meta)
        p = parse(frame, self.program)
        egress = ["port", 0, None, None]  # kind, number, drop reason, mirror queue
        names = {t.name: t for t in self.program.tables}
        table = self.program.tables[0]
        while table is not None:
            if not all(p.valid(h) for h in table.if_valid):
                nxt = table.next_invalid
            else:
                state = self.tables[table.name]
                i = self._lookup(table, p)
                if i is None:
                    state.miss.packets += 1
                    state.miss.bytes += len(frame)
                    action, args = table.default
                    self._run(action, args, p, egress)
                    nxt = table.next_miss
                else:
                    entry = state.entries[i]
                    state.counters[i].packets += 1
                    state.counters[i].bytes += len(frame)
                    meta["table_hits"].append(table.name)
                    self._run(entry.action, entry.args, p, egress)
                    if table.meter is not None:
                        colour = state.meters[i].colour(entry.meter, len(frame), now_ns)
                        meta["color"] = colour
                        if colour == "red" and table.meter == "drop" and egress[0] != "drop":
                            egress[:3] = ["drop", None, DROP_METER]
                    nxt = table.next_actions.get(entry.action, table.next_hit)
            table = names[nxt] if nxt is not None else None
        meta["mirror"] = egress[3]
        if egress[0] == "drop":
            meta["dropped"] = egress[2]
            return Outcome(None, meta)
        if egress[0] == "port":
            meta.update(action="forward", port=egress[1])
        else:
            meta.update(action="host", queue=egress[1])
        return Outcome(deparse(p), meta)

    def _operand(self, arg, params, args):
        if isinstance(arg, str) and arg.startswith("$"):
            return args[list(params).index(arg[1:])]
        from ..match_action.program import parse_value

        return parse_value(arg, 1 << 10)

    def _set(self, p, fld, value):
        """Write a field; an IPv4 header's checksum follows (RFC 1624)."""
        if fld.header == "ipv4":
            raw = p.headers["ipv4"]
            old = [int.from_bytes(raw[i:i + 2], "big") for i in range(0, 20, 2)]
            p.put(fld, value)
            new = [int.from_bytes(raw[i:i + 2], "big") for i in range(0, 20, 2)]
            csum = csum_adjust(int.from_bytes(raw[10:12], "big"), old, new)
            raw[10:12] = csum.to_bytes(2, "big")
        else:
            p.put(fld, value)

    def _run(self, action_name, args, p, egress):
        action = self.program.actions[action_name]
        prog = self.program
        for op in action.ops:
            vals = [a if op.name == "set" and i == 0 else self._operand(a, action.params, args)
                    for i, a in enumerate(op.args)]
            if op.name == "drop" and egress[0] != "drop":
                egress[:3] = ["drop", None, DROP_ACTION]
            elif op.name == "forward" and egress[0] != "drop":
                egress[:3] = ["port", vals[0], None]
            elif op.name == "to_host" and egress[0] != "drop":
                egress[:3] = ["host", vals[0], None]
            elif op.name == "mirror":
                egress[3] = vals[0]
            elif op.name == "set":
                fld = field_of(prog, vals[0])
                if p.valid(fld.header):
                    self._set(p, fld, vals[1] & ((1 << fld.width) - 1))
            elif op.name == "dec_ttl":
                hdr = "ipv4" if p.valid("ipv4") else "ipv6" if p.valid("ipv6") else None
                if hdr is not None:
                    fld = HEADERS[hdr][1]["ttl" if hdr == "ipv4" else "hop_limit"]
                    ttl = p.get(fld)
                    if ttl <= 1:
                        if egress[0] != "drop":
                            egress[:3] = ["drop", None, DROP_TTL]
                    else:
                        self._set(p, fld, ttl - 1)
            elif op.name == "set_dscp":
                hdr = "ipv4" if p.valid("ipv4") else "ipv6" if p.valid("ipv6") else None
                if hdr is not None:
                    self._set(p, HEADERS[hdr][1]["dscp"], vals[0] & 0x3F)
            elif op.name == "push_vlan":
                if p.valid("vlan2"):
                    if egress[0] != "drop":
                        egress[:3] = ["drop", None, DROP_VLAN]
                    continue
                pcp = vals[1] if len(vals) > 1 else 0
                eth = p.headers["ethernet"]
                tag = bytearray((((pcp & 7) << 13) | (vals[0] & 0xFFF)).to_bytes(2, "big")
                                + eth[12:14])
                eth[12:14] = TPID_CTAG.to_bytes(2, "big")
                if p.valid("vlan"):
                    p.headers["vlan2"] = p.headers["vlan"]
                p.headers["vlan"] = tag
            elif op.name == "pop_vlan":
                if p.valid("vlan"):
                    eth = p.headers["ethernet"]
                    eth[12:14] = p.headers["vlan"][2:4]
                    if p.valid("vlan2"):
                        p.headers["vlan"] = p.headers.pop("vlan2")
                    else:
                        del p.headers["vlan"]
        return None
