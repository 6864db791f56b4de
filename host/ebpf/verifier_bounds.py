# Ref: kernel/bpf/tnum.c and include/linux/tnum.h (tristate numbers), kernel/bpf/verifier.c
#      (reg_bounds_sync, adjust_scalar_min_max_vals, is_safe_to_compute_dst_reg_range,
#      is_branch_taken, reg_set_min_max) in
#      Linux 6.x; Vishwanathan et al., "Sound, Precise, and Fast Abstract Interpretation with
#      Tristate Numbers", CGO 2022
"""What the verifier knows about a register: its type and, for numbers, their possible values.

A value is described twice, as the kernel's verifier does: a *tnum* ``(value, mask)`` says
which bits are known (mask bit 0: the bit equals the value's bit; mask bit 1: unknown), and
signed and unsigned 64-bit intervals bound it. Every operation here is sound: the set it
describes holds every value the real operation can produce from the input sets. Pointers keep
the same fields for their variable offset.

Registers are immutable :class:`Reg` objects (states share them between copies).
"""

from __future__ import annotations

from nicsim.host.ebpf import insn as isa

__all__ = [
    "U64", "U32", "S64_MIN", "S64_MAX", "Reg", "RegType", "TYPE_NAMES", "NOT_INIT_REG",
    "unknown", "const", "sized_unknown", "scalar_alu", "view32", "is_const", "branch_taken",
    "refine", "tnum_in", "s64", "sync_bounds", "describe", "signed_unknown",
]

U64 = (1 << 64) - 1
U32 = (1 << 32) - 1
S64_MIN = -(1 << 63)
S64_MAX = (1 << 63) - 1


def s64(x: int) -> int:
    """Return the 64-bit two's complement reading of ``x`` as a signed number."""
    x &= U64
    return x - (1 << 64) if x >> 63 else x


class RegType:
    """Register types (a subset of the kernel's ``enum bpf_reg_type``)."""

    NOT_INIT = 0
    SCALAR = 1
    CTX = 2
    MAP_PTR = 3          # CONST_PTR_TO_MAP
    MAP_VALUE = 4
    MAP_VALUE_OR_NULL = 5
    STACK = 6
    PACKET = 7
    PACKET_META = 8
    PACKET_END = 9
    XDP_SOCK = 10        # PTR_TO_XDP_SOCK: an xskmap lookup after its NULL check


TYPE_NAMES = {
    RegType.NOT_INIT: "?", RegType.SCALAR: "scalar", RegType.CTX: "ctx",
    RegType.MAP_PTR: "map_ptr", RegType.MAP_VALUE: "map_value",
    RegType.MAP_VALUE_OR_NULL: "map_value_or_null", RegType.STACK: "fp",
    RegType.PACKET: "pkt", RegType.PACKET_META: "pkt_meta", RegType.PACKET_END: "pkt_end",
    RegType.XDP_SOCK: "xdp_sock",
}


class Reg:
    """One register's abstract value; never mutated once built.

    Members
    -------
    t : int
        :class:`RegType`.
    off : int
        Fixed offset of a pointer (0 for scalars).
    v, m : int
        The tnum: known bits and unknown-bit mask (the scalar, or a pointer's variable offset).
    smin, smax, umin, umax : int
        Signed and unsigned 64-bit bounds of the same value.
    id : int
        Link between copies: scalars copied from one another, packet pointers sharing a
        variable offset, a nullable pointer and its copies (0: none).
    rng : int
        Packet pointers: bytes from ``off`` proven to lie before ``data_end``.
    mp : int
        Map index (map pointers and map values), -1 otherwise.
    fr : int
        Stack pointers: the call frame whose stack they point into.
    """

    __slots__ = ("t", "off", "v", "m", "smin", "smax", "umin", "umax", "id", "rng", "mp", "fr")

    def __init__(self, t, v=0, m=0, smin=0, smax=0, umin=0, umax=0, off=0, id=0, rng=0,
                 mp=-1, fr=0):
        self.t = t
        self.off = off
        self.v = v
        self.m = m
        self.smin = smin
        self.smax = smax
        self.umin = umin
        self.umax = umax
        self.id = id
        self.rng = rng
        self.mp = mp
        self.fr = fr

    def replace(self, **kw) -> Reg:
        """Return a copy with the given members changed."""
        r = Reg(self.t, self.v, self.m, self.smin, self.smax, self.umin, self.umax, self.off,
                self.id, self.rng, self.mp, self.fr)
        for k, val in kw.items():
            setattr(r, k, val)
        return r

    def key(self) -> tuple:
        return (self.t, self.off, self.v, self.m, self.smin, self.smax, self.umin, self.umax,
                self.id, self.rng, self.mp, self.fr)

    def with_bounds(self, other: Reg) -> Reg:
        """Return this register with the tnum and bounds of ``other``."""
        return self.replace(v=other.v, m=other.m, smin=other.smin, smax=other.smax,
                            umin=other.umin, umax=other.umax)

    def __repr__(self) -> str:
        return describe(self)


NOT_INIT_REG = Reg(RegType.NOT_INIT)


def describe(r: Reg) -> str:
    """Return the register as the kernel's log prints it, e.g. ``pkt(off=14,r=14)``."""
    name = TYPE_NAMES[r.t]
    if r.t == RegType.NOT_INIT:
        return "?"
    if r.t == RegType.SCALAR and r.m == 0:
        return str(s64(r.v))
    parts = []
    if r.t != RegType.SCALAR:
        if r.id:
            parts.append(f"id={r.id}")
        if r.off:
            parts.append(f"off={r.off}")
        if r.t in (RegType.PACKET, RegType.PACKET_META):
            parts.append(f"r={r.rng}")
    if r.m or r.t == RegType.SCALAR:
        if r.m:
            if r.smin != S64_MIN:
                parts.append(f"smin={r.smin}")
            if r.smax != S64_MAX:
                parts.append(f"smax={r.smax}")
            if r.umin:
                parts.append(f"umin={r.umin}")
            if r.umax != U64:
                parts.append(f"umax={r.umax}")
            parts.append(f"var_off=({r.v:#x}; {r.m:#x})")
    return f"{name}({','.join(parts)})"


def unknown() -> Reg:
    """Return a scalar about which nothing is known."""
    return Reg(RegType.SCALAR, 0, U64, S64_MIN, S64_MAX, 0, U64)


def const(value: int) -> Reg:
    """Return the scalar constant ``value`` (taken modulo 2**64)."""
    u = value & U64
    s = s64(u)
    return Reg(RegType.SCALAR, u, 0, s, s, u, u)


def sized_unknown(nbytes: int) -> Reg:
    """Return an unknown zero-extended scalar of ``nbytes`` bytes (a load's result)."""
    if nbytes >= 8:
        return unknown()
    top = (1 << (8 * nbytes)) - 1
    return Reg(RegType.SCALAR, 0, top, 0, top, 0, top)


def signed_unknown(nbytes: int) -> Reg:
    """Return an unknown sign-extended scalar of ``nbytes`` bytes (a sign-extending load)."""
    if nbytes >= 8:
        return unknown()
    half = 1 << (8 * nbytes - 1)
    return sync_bounds(0, U64, -half, half - 1, 0, U64)


def is_const(r: Reg) -> bool:
    return r.t == RegType.SCALAR and r.m == 0


# ---------------------------------------------------------------------------------------------
# tnum operations, all modulo 2**64

def _tnum_range(lo: int, hi: int) -> tuple[int, int]:
    chi = lo ^ hi
    bits = chi.bit_length()
    if bits > 63:
        return 0, U64
    delta = (1 << bits) - 1
    return lo & ~delta & U64, delta


def _tnum_add(av, am, bv, bm):
    sm = (am + bm) & U64
    sv = (av + bv) & U64
    sigma = (sm + sv) & U64
    chi = sigma ^ sv
    mu = chi | am | bm
    return sv & ~mu & U64, mu


def _tnum_sub(av, am, bv, bm):
    dv = (av - bv) & U64
    alpha = (dv + am) & U64
    beta = (dv - bm) & U64
    chi = alpha ^ beta
    mu = chi | am | bm
    return dv & ~mu & U64, mu


def _tnum_and(av, am, bv, bm):
    alpha = av | am
    beta = bv | bm
    v = av & bv
    return v, alpha & beta & ~v & U64


def _tnum_or(av, am, bv, bm):
    v = av | bv
    mu = am | bm
    return v, mu & ~v & U64


def _tnum_xor(av, am, bv, bm):
    v = av ^ bv
    mu = am | bm
    return v & ~mu & U64, mu


def tnum_in(outer_v, outer_m, inner_v, inner_m) -> bool:
    """Return True when every value of tnum ``inner`` is a value of tnum ``outer``."""
    if inner_m & ~outer_m:
        return False
    return (inner_v & ~outer_m) == outer_v


# ---------------------------------------------------------------------------------------------
# bounds


def sync_bounds(v, m, smin, smax, umin, umax) -> Reg | None:
    """Make tnum and bounds agree (the kernel's reg_bounds_sync); None when no value fits."""
    for _ in range(2):
        # Bounds from the tnum.
        umin = max(umin, v)
        umax = min(umax, v | m)
        sv_min = s64(v | (m & (1 << 63)))
        sv_max = s64(v | (m & ~(1 << 63)))
        smin = max(smin, sv_min)
        smax = min(smax, sv_max)
        # Signed from unsigned when the unsigned range stays on one side of the sign bit.
        if (umin >> 63) == (umax >> 63):
            smin = max(smin, s64(umin))
            smax = min(smax, s64(umax))
        # Unsigned from signed when the signed range does not cross zero.
        if smin >= 0 or smax < 0:
            umin = max(umin, smin & U64)
            umax = min(umax, smax & U64)
        if umin > umax or smin > smax:
            return None
        # Tnum from the unsigned range.
        rv, rm = _tnum_range(umin, umax)
        if (v ^ rv) & ~m & ~rm & U64:
            return None  # the known bits of the tnum and the range contradict
        v, m = v | rv, m & rm
    return Reg(RegType.SCALAR, v, m, smin, smax, umin, umax)


def view32(r: Reg) -> Reg:
    """Return the scalar made of the low 32 bits of ``r`` (zero-extended)."""
    if r.umax <= U32:
        return r
    v, m = r.v & U32, r.m & U32
    smin, smax = S64_MIN, S64_MAX
    if r.smin >= -(1 << 31) and r.smax < (1 << 31) and r.smin >= 0:
        smin, smax = r.smin, r.smax
    out = sync_bounds(v, m, smin, smax, 0, U32)
    return out if out is not None else sync_bounds(v, m, 0, U32, 0, U32)


def _signed32(r: Reg) -> tuple[int, int]:
    """Return signed bounds of the low 32 bits of ``r`` read as a signed 32-bit number."""
    w = view32(r)
    if w.umax < (1 << 31):
        return w.umin, w.umax
    if w.umin >= (1 << 31):
        return w.umin - (1 << 32), w.umax - (1 << 32)
    return -(1 << 31), (1 << 31) - 1


def scalar_alu(op: int, a: Reg, b: Reg, is64: bool) -> Reg:
    """Return the abstract result of ``a op b`` for the ALU operation ``op`` (insn.ADD, ...).

    ``b`` is ignored for NEG. 32-bit operations work on the low halves and zero-extend.
    Division and modulo (unsigned or signed, 64 or 32 bits, constants included) give a
    scalar about which nothing is known, not even that a 32-bit result is zero-extended: the
    kernel computes no range for them (``is_safe_to_compute_dst_reg_range`` leaves out
    ``BPF_DIV`` and ``BPF_MOD``, so ``adjust_scalar_min_max_vals`` calls
    ``__mark_reg_unknown``), and a tighter range here would accept programs it refuses.
    """
    if op in (isa.DIV, isa.MOD):
        return unknown()
    if not is64:
        a32, b32 = view32(a), view32(b)
        if op == isa.ARSH:
            if is_const(a32) and is_const(b32):
                x = a32.v - (1 << 32) if a32.v >> 31 else a32.v
                return const((x >> (b32.v & 31)) & U32)
            return sized_unknown(4)
        if op in (isa.LSH, isa.RSH) and is_const(b32):
            b32 = const(b32.v & 31)
        res = scalar_alu(op, a32, b32, True)
        return view32(res)
    if is_const(a) and is_const(b):
        return const(_exact(op, a.v, b.v))
    if op == isa.ADD:
        v, m = _tnum_add(a.v, a.m, b.v, b.m)
        smin, smax = a.smin + b.smin, a.smax + b.smax
        if smin < S64_MIN or smax > S64_MAX:
            smin, smax = S64_MIN, S64_MAX
        umin, umax = a.umin + b.umin, a.umax + b.umax
        if umax > U64:
            if umin > U64:
                umin, umax = umin - (1 << 64), umax - (1 << 64)
            else:
                umin, umax = 0, U64
        return sync_bounds(v, m, smin, smax, umin, umax) or unknown()
    if op == isa.SUB:
        v, m = _tnum_sub(a.v, a.m, b.v, b.m)
        smin, smax = a.smin - b.smax, a.smax - b.smin
        if smin < S64_MIN or smax > S64_MAX:
            smin, smax = S64_MIN, S64_MAX
        if a.umin < b.umax:
            umin, umax = 0, U64
        else:
            umin, umax = a.umin - b.umax, a.umax - b.umin
        return sync_bounds(v, m, smin, smax, umin, umax) or unknown()
    if op == isa.MUL:
        if a.umax * b.umax <= U64:
            umin, umax = a.umin * b.umin, a.umax * b.umax
            return sync_bounds(0, U64, S64_MIN, S64_MAX, umin, umax) or unknown()
        return unknown()
    if op == isa.AND:
        v, m = _tnum_and(a.v, a.m, b.v, b.m)
        umax = min(a.umax, b.umax)
        smin, smax = S64_MIN, S64_MAX
        if a.smin >= 0 or b.smin >= 0:
            smin, smax = 0, min(a.smax if a.smin >= 0 else S64_MAX,
                                b.smax if b.smin >= 0 else S64_MAX)
        return sync_bounds(v, m, smin, smax, 0, umax) or unknown()
    if op == isa.OR:
        v, m = _tnum_or(a.v, a.m, b.v, b.m)
        umin = max(a.umin, b.umin)
        return sync_bounds(v, m, S64_MIN, S64_MAX, umin, U64) or unknown()
    if op == isa.XOR:
        v, m = _tnum_xor(a.v, a.m, b.v, b.m)
        return sync_bounds(v, m, S64_MIN, S64_MAX, 0, U64) or unknown()
    if op in (isa.LSH, isa.RSH, isa.ARSH):
        if not is_const(b):
            return unknown()
        s = b.v & 63
        if op == isa.LSH:
            v, m = (a.v << s) & U64, (a.m << s) & U64
            if (a.umax << s) <= U64:
                return sync_bounds(v, m, S64_MIN, S64_MAX, a.umin << s, a.umax << s) or unknown()
            return sync_bounds(v, m, S64_MIN, S64_MAX, 0, U64) or unknown()
        if op == isa.RSH:
            return sync_bounds(a.v >> s, a.m >> s, S64_MIN, S64_MAX, a.umin >> s,
                         a.umax >> s) or unknown()
        v, m = s64(a.v) >> s & U64, s64(a.m) >> s & U64
        return sync_bounds(v, m, a.smin >> s, a.smax >> s, 0, U64) or unknown()
    if op == isa.NEG:
        return unknown()
    return unknown()


_EXACT = {
    isa.ADD: lambda x, y: x + y,
    isa.SUB: lambda x, y: x - y,
    isa.MUL: lambda x, y: x * y,
    isa.DIV: lambda x, y: x // y if y else 0,
    isa.MOD: lambda x, y: x % y if y else x,
    isa.OR: lambda x, y: x | y,
    isa.AND: lambda x, y: x & y,
    isa.XOR: lambda x, y: x ^ y,
    isa.LSH: lambda x, y: x << (y & 63),
    isa.RSH: lambda x, y: x >> (y & 63),
    isa.ARSH: lambda x, y: s64(x) >> (y & 63),
    isa.NEG: lambda x, y: -x,
}


def _exact(op: int, x: int, y: int) -> int:
    return _EXACT[op](x, y)


# ---------------------------------------------------------------------------------------------
# conditional jumps on scalars


def branch_taken(op: int, a: Reg, b: Reg, is64: bool) -> int:
    """Return 1 if ``a op b`` holds for every value, 0 if for none, -1 if it depends."""
    if not is64:
        if op in (isa.JSGT, isa.JSGE, isa.JSLT, isa.JSLE):
            amin, amax = _signed32(a)
            bmin, bmax = _signed32(b)
            return _cmp_bounds(op, amin, amax, bmin, bmax, signed=True)
        a, b = view32(a), view32(b)
    if op == isa.JEQ:
        if is_const(a) and is_const(b):
            return int(a.v == b.v)
        if (a.v & ~b.m & ~a.m) != (b.v & ~a.m & ~b.m):
            return 0
        if a.umin > b.umax or a.umax < b.umin or a.smin > b.smax or a.smax < b.smin:
            return 0
        return -1
    if op == isa.JNE:
        r = branch_taken(isa.JEQ, a, b, True)
        return -1 if r < 0 else 1 - r
    if op == isa.JSET:
        if a.v & b.v:
            return 1
        if not ((a.v | a.m) & (b.v | b.m)):
            return 0
        return -1
    if op in (isa.JGT, isa.JGE, isa.JLT, isa.JLE):
        return _cmp_bounds(op, a.umin, a.umax, b.umin, b.umax, signed=False)
    return _cmp_bounds(op, a.smin, a.smax, b.smin, b.smax, signed=True)


def _cmp_bounds(op, amin, amax, bmin, bmax, signed):
    if signed:
        op = {isa.JSGT: isa.JGT, isa.JSGE: isa.JGE, isa.JSLT: isa.JLT,
              isa.JSLE: isa.JLE}.get(op, op)
    if op == isa.JGT:
        return 1 if amin > bmax else 0 if amax <= bmin else -1
    if op == isa.JGE:
        return 1 if amin >= bmax else 0 if amax < bmin else -1
    if op == isa.JLT:
        return 1 if amax < bmin else 0 if amin >= bmax else -1
    if op == isa.JLE:
        return 1 if amax <= bmin else 0 if amin > bmax else -1
    return -1


def _negate(op):
    return {isa.JEQ: isa.JNE, isa.JNE: isa.JEQ, isa.JGT: isa.JLE, isa.JLE: isa.JGT,
            isa.JGE: isa.JLT, isa.JLT: isa.JGE, isa.JSGT: isa.JSLE, isa.JSLE: isa.JSGT,
            isa.JSGE: isa.JSLT, isa.JSLT: isa.JSGE}.get(op)


def refine(op: int, a: Reg, b: Reg, taken: bool, is64: bool):
    """Return ``(a', b')``: the scalars narrowed by knowing whether ``a op b`` held.

    Returns None when no values satisfy the outcome (the branch cannot be taken).
    """
    if not taken:
        if op == isa.JSET:
            if is_const(b) and (is64 or (b.v <= U32 and a.umax <= U32)):
                out = sync_bounds(a.v & ~b.v & U64, a.m & ~b.v & U64, a.smin, a.smax, a.umin,
                                  a.umax)
                return (out, b) if out is not None else None
            return a, b
        op = _negate(op)
    if op == isa.JSET:
        if is_const(b) and b.v and (b.v & (b.v - 1)) == 0 and (is64 or b.v <= U32):
            out = sync_bounds(a.v | b.v, a.m & ~b.v & U64, a.smin, a.smax, a.umin, a.umax)
            return (out, b) if out is not None else None
        return a, b
    if not is64:
        # Narrow only where the 32-bit comparison says the same as the 64-bit one.
        if op in (isa.JSGT, isa.JSGE, isa.JSLT, isa.JSLE):
            ok = a.umax < (1 << 31) and b.umax < (1 << 31)
        else:
            ok = a.umax <= U32 and b.umax <= U32
        if not ok:
            return a, b
    if op == isa.JEQ:
        v, m = a.v | b.v, a.m & b.m
        if (a.v & ~b.m) & ~a.m != (b.v & ~a.m) & ~b.m:
            return None
        out = sync_bounds(v & ~m & U64, m, max(a.smin, b.smin), min(a.smax, b.smax),
                    max(a.umin, b.umin), min(a.umax, b.umax))
        if out is None:
            return None
        return out, out
    if op == isa.JNE:
        # Only a constant at the edge of the other's range narrows it.
        if is_const(b):
            a2 = _exclude(a, b.v)
            if a2 is None:
                return None
            return a2, b
        if is_const(a):
            b2 = _exclude(b, a.v)
            if b2 is None:
                return None
            return a, b2
        return a, b
    unsigned = op in (isa.JGT, isa.JGE, isa.JLT, isa.JLE)
    base = {isa.JSGT: isa.JGT, isa.JSGE: isa.JGE, isa.JSLT: isa.JLT,
            isa.JSLE: isa.JLE}.get(op, op)
    if base in (isa.JLT, isa.JLE):  # a < b  is  b > a
        res = _narrow_gt(b, a, base == isa.JLT, unsigned)
        return None if res is None else (res[1], res[0])
    return _narrow_gt(a, b, base == isa.JGT, unsigned)


def _exclude(r: Reg, val: int):
    if r.m == 0:
        return None if r.v == val else r
    umin, umax, smin, smax = r.umin, r.umax, r.smin, r.smax
    if umin == val:
        umin += 1
    if umax == val:
        umax -= 1
    sval = s64(val)
    if smin == sval:
        smin += 1
    if smax == sval:
        smax -= 1
    return sync_bounds(r.v, r.m, smin, smax, umin, umax)


def _narrow_gt(a: Reg, b: Reg, strict: bool, unsigned: bool):
    """Narrow for ``a > b`` (strict) or ``a >= b``."""
    d = 1 if strict else 0
    if unsigned:
        a_min = max(a.umin, b.umin + d)
        b_max = min(b.umax, a.umax - d)
        if a_min > U64 or b_max < 0:
            return None
        na = sync_bounds(a.v, a.m, a.smin, a.smax, a_min, a.umax)
        nb = sync_bounds(b.v, b.m, b.smin, b.smax, b.umin, b_max)
    else:
        a_min = max(a.smin, b.smin + d)
        b_max = min(b.smax, a.smax - d)
        if a_min > S64_MAX or b_max < S64_MIN:
            return None
        na = sync_bounds(a.v, a.m, a_min, a.smax, a.umin, a.umax)
        nb = sync_bounds(b.v, b.m, b.smin, b_max, b.umin, b.umax)
    if na is None or nb is None:
        return None
    return na, nb
