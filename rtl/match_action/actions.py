# Ref: RFC 1624 eqn. 3 (incremental checksum update), RFC 791 §3.1 (TTL), RFC 8200 §3 (hop
#      limit), RFC 2474 §3 (DSCP), IEEE 802.1Q §9.6 (tag push and pop)
"""Primitive operations of the compiled actions, as combinational rewrites of the header vector.

A header vector here is a dict of Amaranth values (``valid_<header>``, ``<header>`` and the
control fields of :func:`nicsim.rtl.match_action.hv.hv_layout`); each operation returns a new
dict, so the operations of one action chain in order within a cycle, with the meaning the golden
reference :class:`nicsim.hw.ref.match_action.Pipeline` gives them. Writes to IPv4 fields update
the header checksum as the reference does: ``~(~HC + sum(~m + m'))`` over all ten words.
"""

from amaranth.hdl import Cat, Const, Mux, Signal

from .hv import EGRESS_DROP, EGRESS_HOST, EGRESS_PORT

__all__ = ["apply_ops", "ipv4_csum_set", "ipv4_csum_pre", "op_fields", "CSUM_PRE",
           "IPV4_CSUM", "REASON_DROP", "REASON_TTL",
           "REASON_METER", "REASON_VLAN", "REASON_RUNT", "REASON_OVERSIZE"]

REASON_RUNT, REASON_DROP, REASON_TTL, REASON_METER, REASON_VLAN, REASON_OVERSIZE = range(1, 7)

IPV4_TTL = (88, 8)  # (shift, width) in the 160-bit IPv4 header
IPV4_CSUM = (64, 16)
IPV4_DSCP = (146, 6)
IPV6_HOP_LIMIT = (256, 8)
IPV6_DSCP = (310, 6)
TPID_CTAG = 0x8100
#: Key of a header vector dict (:func:`apply_ops`) that may hold ``(ipv4, {(shift, width):
#: pre})``: the vector's IPv4 header and :func:`ipv4_csum_pre` of it for the fields its actions
#: write, computed a cycle early by the caller.
CSUM_PRE = "csum_pre"


def _word(v160, k):
    return v160[16 * (9 - k):16 * (10 - k)]


def _fold16(x, most):
    """``x``, at most ``most``, folded to 16 bits with end-around carries (RFC 1071): the same
    value modulo 0xFFFF, zero only where ``x`` is. A sum at most 0x1FFFE takes one fold (its
    low half is below 0xFFFF where it carries)."""
    while most > 0xFFFF:
        x = x[:16] + x[16:]
        most = 0xFFFF if most <= 0x1FFFE else 0xFFFF + (most >> 16)
    return x[:16]


def _pieces(shift, width):
    """The words (``k``, the word's lowest bit, the field's bits in it as a mask) a field at
    ``(shift, width)`` of the 160-bit header overlaps, the checksum word left out."""
    out = []
    for k in range(9 - (shift + width - 1) // 16, 10 - shift // 16):
        if k == 5:
            continue
        base = 16 * (9 - k)
        f_lo, f_hi = max(shift, base), min(shift + width, base + 16)
        out.append((k, base, f_lo, f_hi, ((1 << (f_hi - f_lo)) - 1) << (f_lo - base)))
    return out


def ipv4_csum_pre(old, shift, width):
    """The part of the sum of :func:`ipv4_csum_set` that the old header alone decides, folded
    to 16 bits: ``~HC``, 0xFFFF for each word the field does not overlap, and for each one it
    does, ``~m`` plus the old word's bits outside the field, which is ``0xFFFF`` less the old
    field's bits: ``~m`` within the field and ones outside, with no addition."""
    pieces = _pieces(shift, width)
    const = (10 - len(pieces)) * 0xFFFF + sum(0xFFFF ^ field for *_, field in pieces)
    pre, most = ~_word(old, 5) + const, 0xFFFF + const
    for k, _, _, _, field in pieces:
        pre = pre + (~_word(old, k) & field)
        most += field
    return _fold16(pre, most)


def op_fields(op):
    """The header fields ``(header, shift, width)`` a compiled operation may write (the IPv4
    checksum, which follows every IPv4 field, left out)."""
    if op[0] == "set":
        return [(op[1], op[2], op[3])]
    if op[0] == "dec_ttl":
        return [("ipv4", *IPV4_TTL), ("ipv6", *IPV6_HOP_LIMIT)]
    if op[0] == "set_dscp":
        return [("ipv4", *IPV4_DSCP), ("ipv6", *IPV6_DSCP)]
    return []


def ipv4_csum_set(old, shift, width, value, pre=None):
    """Return the IPv4 header ``old`` with the field at ``(shift, width)`` set to ``value`` and
    its checksum updated (RFC 1624 eqn. 3: ``~(~HC + sum(~m + m'))`` over the ten words).

    Only the words the field overlaps change; every other word adds ``~m + m = 0xFFFF``. A
    changed word is the old word's bits outside the field plus the field's bits, so the sum
    splits into a part of the old header alone (:func:`ipv4_csum_pre`, which a caller may
    compute a cycle early and pass as ``pre``) and the field's pieces, added last: one 16-bit
    addition and its end-around carry lie behind the value. A field over the checksum word is
    overwritten by the checksum.
    """
    value = _extend(value, width)
    new = _put(old, shift, width, value)
    if pre is None:
        pre = ipv4_csum_pre(old, shift, width)
    late, late_most = Const(0, 1), 0
    for _, base, f_lo, f_hi, field in _pieces(shift, width):
        late = late + Cat(Const(0, f_lo - base), value[f_lo - shift:f_hi - shift])
        late_most += field
    folded = _fold16(pre + late, 0xFFFF + late_most)
    lo, csum_width = IPV4_CSUM
    return Cat(new[:lo], ~folded, new[lo + csum_width:])


def _put(value, shift, width, field):
    field = field[:width] if len(field) >= width else Cat(field, Const(0, width - len(field)))
    return Cat(value[:shift], field, value[shift + width:])


def _source(src, args):
    if src[0] == "const":
        return Const(src[1], max(src[1].bit_length(), 1))
    _, shift, width = src
    return args[shift:shift + width]


def _drop(hv, reason, cond=True):
    fire = cond & (hv["egress"] != EGRESS_DROP)
    hv["egress"] = Mux(fire, EGRESS_DROP, hv["egress"])
    hv["reason"] = Mux(fire, reason, hv["reason"])


def _set(hv, header, shift, width, value):
    old = hv[header]
    if header == "ipv4":
        # (The checksum's part of the old header, registered a step early, where ``old`` is
        # still the header the action started from: ``CSUM_PRE``, see ``apply_ops``.)
        early = hv.get(CSUM_PRE)
        pre = early[1].get((shift, width)) if early is not None and early[0] is old else None
        new = ipv4_csum_set(old, shift, width, value, pre)
    else:
        new = _put(old, shift, width, value)
    hv[header] = Mux(hv["valid_" + header], new, old)


def _extend(v, n):
    return v[:n] if len(v) >= n else Cat(v, Const(0, n - len(v)))


def apply_ops(m, hv, ops, args, prefix="a"):
    """Return a copy of ``hv`` after the compiled ``ops`` ran with action data ``args``.

    Every value an operation changes is held in a new combinational signal of ``m``, so later
    operations refer to it instead of copying its expression. ``hv[CSUM_PRE]``, where given,
    holds the checksum parts a field write to the unchanged IPv4 header uses
    (:func:`ipv4_csum_pre`).
    """
    hv = dict(hv)
    for n, op in enumerate(ops):
        before = dict(hv)
        _apply_op(hv, op, args)
        for name, value in hv.items():
            if value is not before[name]:
                sig = Signal(len(value), name=f"{prefix}_op{n}_{name}")
                m.d.comb += sig.eq(value)
                hv[name] = sig
    return hv


def _l3_valid(hv):
    """The validity of the vector's layer-3 headers (0 for one it does not carry)."""
    return tuple(hv["valid_" + h] if h in hv else Const(0, 1) for h in ("ipv4", "ipv6"))


def _apply_op(hv, op, args):
    """Apply one compiled operation to ``hv`` in place."""
    name = op[0]
    if name == "drop":
        _drop(hv, REASON_DROP)
    elif name in ("forward", "to_host"):
        kind = EGRESS_PORT if name == "forward" else EGRESS_HOST
        live = hv["egress"] != EGRESS_DROP
        hv["egress"] = Mux(live, kind, hv["egress"])
        hv["number"] = Mux(live, _extend(_source(op[1], args), 8), hv["number"])
    elif name == "mirror":
        hv["mirror"] = Const(1, 1)
        hv["mirror_queue"] = _extend(_source(op[1], args), 6)
    elif name == "set":
        _, header, shift, width, src = op
        _set(hv, header, shift, width, _source(src, args))
    elif name == "dec_ttl":
        # A header vector without ``ipv4`` or ``ipv6`` belongs to a table that never sees it
        # valid (:func:`nicsim.rtl.match_action.hv.carried_headers`).
        v4, v6 = _l3_valid(hv)
        ttl4 = hv["ipv4"][IPV4_TTL[0]:IPV4_TTL[0] + 8] if "ipv4" in hv else Const(0, 8)
        hop6 = hv["ipv6"][IPV6_HOP_LIMIT[0]:IPV6_HOP_LIMIT[0] + 8] if "ipv6" in hv else Const(0, 8)
        ttl = Mux(v4, ttl4, hop6)
        expired = (v4 | v6) & (ttl <= 1)
        _drop(hv, REASON_TTL, expired)
        if "ipv4" in hv:
            old4 = hv["ipv4"]
            _set(hv, "ipv4", *IPV4_TTL, (ttl4 - 1)[:8])
            hv["ipv4"] = Mux(expired, old4, hv["ipv4"])
        if "ipv6" in hv:
            old6 = hv["ipv6"]
            new6 = _put(old6, *IPV6_HOP_LIMIT, (hop6 - 1)[:8])
            hv["ipv6"] = Mux(~v4 & v6 & ~expired, new6, old6)
    elif name == "set_dscp":
        dscp = _extend(_source(op[1], args), 6)
        v4, v6 = _l3_valid(hv)
        if "ipv4" in hv:
            _set(hv, "ipv4", *IPV4_DSCP, dscp)
        if "ipv6" in hv:
            hv["ipv6"] = Mux(~v4 & v6, _put(hv["ipv6"], *IPV6_DSCP, dscp), hv["ipv6"])
    elif name == "push_vlan":
        vid = _extend(_source(op[1], args), 12)
        pcp = _extend(_source(op[2], args), 3)
        full = hv["valid_vlan2"]
        _drop(hv, REASON_VLAN, full)
        eth = hv["ethernet"]
        tag = Cat(eth[:16], vid, Const(0, 1), pcp)
        hv["ethernet"] = Mux(full, eth, Cat(Const(TPID_CTAG, 16), eth[16:]))
        hv["vlan2"] = Mux(full, hv["vlan2"], hv["vlan"])
        hv["valid_vlan2"] = Mux(full, hv["valid_vlan2"], hv["valid_vlan"])
        hv["vlan"] = Mux(full, hv["vlan"], tag)
        hv["valid_vlan"] = Mux(full, hv["valid_vlan"], 1)
    elif name == "pop_vlan":
        has, has2 = hv["valid_vlan"], hv["valid_vlan2"]
        eth = hv["ethernet"]
        hv["ethernet"] = Mux(has, Cat(hv["vlan"][:16], eth[16:]), eth)
        hv["vlan"] = Mux(has & has2, hv["vlan2"], hv["vlan"])
        hv["valid_vlan"] = Mux(has, has2, hv["valid_vlan"])
        hv["valid_vlan2"] = Mux(has, 0, hv["valid_vlan2"])
    else:
        raise ValueError(f"unknown operation {name!r}")
