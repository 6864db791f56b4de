# Ref: kernel/bpf/verifier.c in Linux 6.x (check_subprogs, check_cfg, do_check,
#      check_mem_access, check_packet_access, check_map_access, check_stack_read/write,
#      adjust_ptr_min_max_vals, check_cond_jmp_op, find_good_pkt_pointers,
#      mark_ptr_or_null_regs, check_helper_call, check_func_arg, check_func_call,
#      prepare_func_exit, is_state_visited, states_equal, check_max_stack_depth,
#      check_return_code, mark_ptr_not_null_reg, check_sock_access, reg_not_null);
#      net/core/filter.c (xdp_is_valid_access, bpf_xdp_sock_is_valid_access);
#      Documentation/bpf/verifier.rst
"""Prove an XDP program safe before it runs, as the Linux kernel's verifier does.

:func:`verify` walks every path of the program with an abstract state per path: each register
is uninitialised, a scalar (a tnum and signed/unsigned bounds, see
:mod:`nicsim.host.ebpf.verifier_bounds`) or a pointer of a kind (context, packet, packet end,
packet metadata, stack, map, map value, nullable map value, AF_XDP socket) with its offset.
Each instruction is checked against the state of the path that reaches it: memory accesses
stay inside what the pointer's kind allows (packet bytes only up to a comparison with
``data_end``, an AF_XDP socket's 4-byte ``queue_id`` read only), reads use initialised
registers and stack bytes, helpers get the argument kinds of their prototype, pointer
arithmetic follows the kernel's rules, and the program returns an XDP action (0..4).

Paths are explored depth first; at jump targets a state that is contained in one already proven
safe there is pruned (only live registers are compared), and a state equal to one of its own
ancestors at the same instruction is an infinite loop. Loops whose bound the states show are
walked iteration by iteration, within the kernel's budget of one million instructions.

The rules are the kernel's for a loader holding CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN, with
four stricter ones: stack bytes must be written before they are read (the kernel relaxes this
for CAP_PERFMON), R0 at exit must be a scalar in 0..4 (the kernel does not check XDP return
values), only the helpers nicsim implements may be called, and a map pointer cannot be
dereferenced (the kernel reads struct bpf_map through BTF). Not modelled: BTF, kfuncs, spin
locks, iterators, callbacks, tail calls into other programs' verification.
"""

from __future__ import annotations

from dataclasses import dataclass

from nicsim.host.ebpf import insn as isa
from nicsim.host.ebpf.protos import (
    PKT_CHANGING_HELPERS,
    PROTOS,
    XDP_HELPERS,
    ArgType,
    HelperId,
    MapType,
    RetType,
    map_helper_error,
)
from nicsim.host.ebpf.verifier_bounds import (
    NOT_INIT_REG,
    S64_MIN,
    TYPE_NAMES,
    U32,
    U64,
    Reg,
    RegType,
    branch_taken,
    const,
    describe,
    is_const,
    refine,
    s64,
    scalar_alu,
    signed_unknown,
    sized_unknown,
    sync_bounds,
    tnum_in,
    unknown,
    view32,
)

__all__ = ["verify", "VerifyResult", "MAX_BPF_STACK", "MAX_CALL_FRAMES",
           "COMPLEXITY_LIMIT_INSNS"]

MAX_BPF_STACK = 512                 # bytes of stack, all frames of a call chain together
MAX_CALL_FRAMES = 8                 # MAX_CALL_FRAMES in include/linux/bpf_verifier.h
COMPLEXITY_LIMIT_INSNS = 1_000_000  # BPF_COMPLEXITY_LIMIT_INSNS
COMPLEXITY_LIMIT_JMP_SEQ = 8192     # pending branches (BPF_COMPLEXITY_LIMIT_JMP_SEQ)
MAX_PACKET_OFF = 0xFFFF             # MAX_PACKET_OFF
MAX_VAR_OFF = 1 << 29               # BPF_MAX_VAR_OFF
MAX_VAR_SIZE = 1 << 29              # BPF_MAX_VAR_SIZ
BPF_F_RDONLY_PROG = 1 << 7
XDP_MD_FIELDS = {0: "data", 4: "data_end", 8: "data_meta", 12: "ingress_ifindex",
                 16: "rx_queue_index", 20: "egress_ifindex"}
XDP_RET_MIN, XDP_RET_MAX = 0, 4     # XDP_ABORTED .. XDP_REDIRECT
# struct bpf_xdp_sock (include/uapi/linux/bpf.h) has one member, __u32 queue_id: a program may
# read those 4 bytes at offset 0 and nothing else (bpf_xdp_sock_is_valid_access).
XDP_SOCK_QUEUE_ID = (0, 4)

T = RegType
PKT_TYPES = (T.PACKET, T.PACKET_META)
PKT_ANY = (T.PACKET, T.PACKET_META, T.PACKET_END)
MEM_TYPES = (T.STACK, T.PACKET, T.PACKET_META, T.MAP_VALUE)

# Stack byte kinds (the kernel's STACK_INVALID, STACK_MISC, STACK_ZERO, STACK_SPILL).
INV, MISC, ZERO, SPILL = 0, 1, 2, 3
EMPTY_SLOT = ((INV,) * 8, None)
SPILL_KINDS = (SPILL,) * 8

# Result ranges nicsim knows beyond RET_INTEGER: redirect helpers return an XDP action
# (XDP_REDIRECT, or on failure the action in the low bits of flags: net/core/filter.c).
RET_RANGES = {HelperId.redirect: (0, 4), HelperId.redirect_map: (0, 4)}


@dataclass(frozen=True)
class VerifyResult:
    """The verifier's verdict.

    Members
    -------
    ok : bool
        The program is accepted.
    insn : int or None
        Slot index of the rejected instruction (None when accepted or not tied to one).
    reason : str
        One line: ``"insn 12: invalid access to packet ..."``; empty when accepted.
    insns_processed : int
        Instructions the walk processed (the kernel's "processed N insns").
    states : int
        States kept for pruning.
    stack_depth : int
        Deepest stack use of any call chain, in bytes.
    """

    ok: bool
    insn: int | None
    reason: str
    insns_processed: int
    states: int = 0
    stack_depth: int = 0


class VerifyError(Exception):
    def __init__(self, insn, msg):
        super().__init__(msg)
        self.insn = insn
        self.msg = msg


class Frame:
    """One call frame: registers, stack slots, and where it was called from."""

    __slots__ = ("regs", "stack", "callsite", "subprog", "frameno")

    def __init__(self, regs, stack, callsite, subprog, frameno):
        self.regs = regs
        self.stack = stack        # spi -> (kinds: 8-tuple in address order, spilled Reg|None)
        self.callsite = callsite
        self.subprog = subprog
        self.frameno = frameno

    def copy(self):
        return Frame(list(self.regs), dict(self.stack), self.callsite, self.subprog,
                     self.frameno)


class State:
    """One path's state: the call frames, innermost last."""

    __slots__ = ("frames", "parent")

    def __init__(self, frames, parent=None):
        self.frames = frames
        self.parent = parent

    def copy(self):
        return State([f.copy() for f in self.frames], self.parent)

    @property
    def cur(self):
        return self.frames[-1]


class Explored:
    """A state kept at a prune point; safe to prune against once ``branches`` is 0."""

    __slots__ = ("state", "branches", "parent", "key", "idx", "hits", "misses")

    def __init__(self, state, parent, key, idx):
        self.state = state
        self.branches = 1
        self.parent = parent
        self.key = key
        self.idx = idx
        self.hits = 0
        self.misses = 0


def verify(program, maps=(), prog_type="xdp", *, complexity_limit=COMPLEXITY_LIMIT_INSNS,
           gpl=True) -> VerifyResult:
    """Verify ``program`` for attachment as ``prog_type``.

    Parameters
    ----------
    program : object with ``.insns``, or a list
        Relocated instructions, one entry per slot (:class:`~nicsim.host.ebpf.insn.Insn`,
        None in the second slot of a lddw): a lddw with ``src=PSEUDO_MAP_FD`` holds an index
        into ``maps`` (``PSEUDO_MAP_VALUE``: index in the low 32 bits, value offset in the high
        32 bits); subprograms follow the main program, called with ``src=PSEUDO_CALL``.
    maps : sequence
        Map descriptions with ``type``, ``key_size``, ``value_size``, ``max_entries`` (and
        optionally ``flags`` and ``initial``).
    prog_type : str
        Only ``"xdp"``.
    complexity_limit : int
        Instructions the walk may process before it gives up (the kernel's one million).
    gpl : bool
        The program's license is GPL-compatible (GPL-only helpers allowed).

    Returns
    -------
    VerifyResult
    """
    insns = list(getattr(program, "insns", program))
    if prog_type != "xdp":
        return VerifyResult(False, None, f"program type {prog_type!r} is not supported "
                                         f"(only xdp)", 0)
    v = _Verifier(insns, list(maps), complexity_limit, gpl)
    try:
        v.run()
    except VerifyError as exc:
        where = f"insn {exc.insn}: " if exc.insn is not None else ""
        return VerifyResult(False, exc.insn, where + exc.msg, v.processed, v.total_states)
    return VerifyResult(True, None, "", v.processed, v.total_states, v.max_depth)


def _name(t):
    return TYPE_NAMES[t]


class _Verifier:
    def __init__(self, insns, maps, limit, gpl):
        self.insns = insns
        self.maps = maps
        self.limit = limit
        self.gpl = gpl
        self.processed = 0
        self.total_states = 0
        self.id_gen = 0
        self.max_depth = 0
        self.idx = 0

    def fail(self, msg, idx=None):
        raise VerifyError(self.idx if idx is None else idx, msg)

    def new_id(self):
        self.id_gen += 1
        return self.id_gen

    # -----------------------------------------------------------------------------------
    # pass 1: instruction checks, subprograms, control flow

    def run(self):
        self.check_insns()
        self.check_cfg()
        self.compute_liveness()
        self.do_check()
        self.check_stack_depth()

    def check_insns(self):
        insns = self.insns
        n = len(insns)
        if n == 0:
            raise VerifyError(None, "program has no instructions")
        for i, ins in enumerate(insns):
            self.idx = i
            if ins is None:
                if i == 0 or insns[i - 1] is None or not insns[i - 1].is_lddw:
                    self.fail("empty slot that is not the second half of a lddw")
                continue
            if ins.is_lddw and (i + 1 >= n or insns[i + 1] is not None):
                self.fail("lddw without its second slot (None)")
            self.check_encoding(i, ins)
        starts = {0}
        for i, ins in enumerate(insns):
            if ins is not None and ins.op == isa.JMP | isa.CALL and ins.src == isa.PSEUDO_CALL:
                t = i + ins.imm + 1
                if not 0 <= t < n or insns[t] is None:
                    self.fail(f"function call to insn {t} is out of range", i)
                starts.add(t)
        self.subprog_starts = sorted(starts)
        self.subprog_of = [0] * n
        bounds = self.subprog_starts + [n]
        for k, start in enumerate(self.subprog_starts):
            for i in range(start, bounds[k + 1]):
                self.subprog_of[i] = start
            last = bounds[k + 1] - 1
            if insns[last] is None:
                last -= 1
            ins = insns[last]
            if not (ins.op == isa.JMP | isa.EXIT or ins.op == isa.JMP | isa.JA
                    or ins.op == isa.JMP32 | isa.JA):
                self.fail("last insn is not an exit or jmp", last)

    def check_encoding(self, i, ins):
        cls = ins.cls
        op = ins.op
        if cls in (isa.ALU, isa.ALU64):
            code = op & 0xF0
            if code not in isa.ALU_OPS:
                self.fail(f"invalid BPF_ALU opcode {op:#04x}")
            if code == isa.END:
                if ins.imm not in (16, 32, 64) or ins.src or ins.off:
                    self.fail("BPF_END uses reserved fields")
                if cls == isa.ALU64 and op & isa.X:
                    self.fail("BPF_END uses reserved fields")
            elif code == isa.NEG:
                if op & isa.X or ins.src or ins.off or ins.imm:
                    self.fail("BPF_NEG uses reserved fields")
            elif op & isa.X:
                if ins.imm or (ins.off and not (code == isa.MOV and ins.off in (8, 16, 32))
                               and not (code in (isa.DIV, isa.MOD) and ins.off == 1)):
                    self.fail("BPF_ALU uses reserved fields")
            else:
                if ins.src or (ins.off and not (code in (isa.DIV, isa.MOD) and ins.off == 1)):
                    self.fail("BPF_ALU uses reserved fields")
                if code in (isa.DIV, isa.MOD) and ins.imm == 0:
                    self.fail("div by zero")
                if code in (isa.LSH, isa.RSH, isa.ARSH):
                    width = 64 if cls == isa.ALU64 else 32
                    if not 0 <= ins.imm < width:
                        self.fail(f"invalid shift {ins.imm}")
            self.check_regno(ins.dst)
            if op & isa.X:
                self.check_regno(ins.src)
        elif cls in (isa.JMP, isa.JMP32):
            code = op & 0xF0
            if code not in isa.JMP_OPS:
                self.fail(f"invalid BPF_JMP/JMP32 opcode {op:#04x}")
            if code == isa.CALL:
                if cls != isa.JMP or op & isa.X or ins.off or ins.dst:
                    self.fail("BPF_CALL uses reserved fields")
                if ins.src == isa.PSEUDO_KFUNC_CALL:
                    self.fail("kernel function calls are not supported")
                if ins.src not in (0, isa.PSEUDO_CALL):
                    self.fail("BPF_CALL uses reserved fields")
            elif code == isa.EXIT:
                if cls != isa.JMP or op & isa.X or ins.src or ins.dst or ins.off or ins.imm:
                    self.fail("BPF_EXIT uses reserved fields")
            elif code == isa.JA:
                if op & isa.X or ins.src or ins.dst or (cls == isa.JMP and ins.imm) or (
                        cls == isa.JMP32 and ins.off):
                    self.fail("BPF_JA uses reserved fields")
            else:
                if not op & isa.X and ins.src:
                    self.fail("BPF_JMP/JMP32 uses reserved fields")
                if op & isa.X and ins.imm:
                    self.fail("BPF_JMP/JMP32 uses reserved fields")
                self.check_regno(ins.dst)
                if op & isa.X:
                    self.check_regno(ins.src)
        elif cls == isa.LD:
            mode = op & 0xE0
            if mode in (isa.ABS, isa.IND):
                self.fail("BPF_LD_[ABS|IND] instructions not allowed for this program type")
            if op != isa.LD | isa.IMM | isa.DW:
                self.fail(f"invalid BPF_LD opcode {op:#04x}")
            if ins.off:
                self.fail("BPF_LD uses reserved fields")
            if ins.src not in (0, isa.PSEUDO_MAP_FD, isa.PSEUDO_MAP_VALUE):
                self.fail(f"lddw with src={ins.src} is not supported")
            self.check_regno(ins.dst)
        elif cls == isa.LDX:
            mode = op & 0xE0
            if mode not in (isa.MEM, isa.MEMSX) or (mode == isa.MEMSX and op & 0x18 == isa.DW):
                self.fail(f"invalid BPF_LDX opcode {op:#04x}")
            if ins.imm:
                self.fail("BPF_LDX uses reserved fields")
            self.check_regno(ins.dst)
            self.check_regno(ins.src)
        elif cls == isa.ST:
            if op & 0xE0 != isa.MEM or ins.src:
                self.fail(f"invalid BPF_ST opcode {op:#04x}" if op & 0xE0 != isa.MEM
                          else "BPF_ST uses reserved fields")
            self.check_regno(ins.dst)
        elif cls == isa.STX:
            mode = op & 0xE0
            if mode == isa.ATOMIC:
                if op & 0x18 not in (isa.W, isa.DW):
                    self.fail("invalid atomic operand size")
                if ins.imm not in (isa.ADD, isa.OR, isa.AND, isa.XOR,
                                   isa.ADD | isa.FETCH, isa.OR | isa.FETCH,
                                   isa.AND | isa.FETCH, isa.XOR | isa.FETCH,
                                   isa.XCHG, isa.CMPXCHG):
                    self.fail(f"BPF_ATOMIC uses invalid atomic opcode {ins.imm:#04x}")
            elif mode != isa.MEM or ins.imm:
                self.fail(f"invalid BPF_STX opcode {op:#04x}" if mode != isa.MEM
                          else "BPF_STX uses reserved fields")
            self.check_regno(ins.dst)
            self.check_regno(ins.src)

    def check_regno(self, r):
        if r > 10:
            self.fail(f"R{r} is invalid")

    def successors(self, i, ins):
        """Return the slots control may reach from ``i`` within its subprogram."""
        cls = ins.cls
        if cls in (isa.JMP, isa.JMP32):
            code = ins.op & 0xF0
            if code == isa.EXIT:
                return ()
            if code == isa.CALL:
                return (i + 1,)
            if code == isa.JA:
                return (i + (ins.imm if cls == isa.JMP32 else ins.off) + 1,)
            return (i + 1, i + ins.off + 1)
        return (i + ins.slots,)

    def check_cfg(self):
        insns = self.insns
        n = len(insns)
        self.prune = [False] * n
        seen = [False] * n
        for start in self.subprog_starts:
            self.prune[start] = True
        todo = [0]
        seen[0] = True
        while todo:
            i = todo.pop()
            ins = insns[i]
            succ = self.successors(i, ins)
            cls = ins.cls
            is_jump = cls in (isa.JMP, isa.JMP32) and ins.op & 0xF0 not in (isa.CALL, isa.EXIT)
            for t in succ:
                if not 0 <= t < n or self.subprog_of[t] != self.subprog_of[i]:
                    self.fail(f"jump out of range from insn {i} to {t}", i)
                if insns[t] is None:
                    self.fail(f"jump into the middle of ldimm64 insn {t - 1}", i)
                if is_jump:
                    self.prune[t] = True
                if not seen[t]:
                    seen[t] = True
                    todo.append(t)
            if ins.op == isa.JMP | isa.CALL:
                if ins.src == isa.PSEUDO_CALL:
                    t = i + ins.imm + 1
                    if not seen[t]:
                        seen[t] = True
                        todo.append(t)
                self.prune[i] = True
                self.prune[i + 1] = True
        for i in range(n):
            if insns[i] is not None and not seen[i]:
                self.fail(f"unreachable insn {i}", i)

    def compute_liveness(self):
        """Registers read before written on some path from each instruction (bit i: Ri)."""
        insns = self.insns
        n = len(insns)
        uses = [0] * n
        defs = [0] * n
        succs = [()] * n
        preds = [[] for _ in range(n)]
        for i, ins in enumerate(insns):
            if ins is None:
                continue
            u = d = 0
            cls = ins.cls
            op = ins.op
            code = op & 0xF0
            if cls in (isa.ALU, isa.ALU64):
                if code != isa.MOV:
                    u |= 1 << ins.dst
                if op & isa.X:
                    u |= 1 << ins.src
                d |= 1 << ins.dst
            elif cls in (isa.JMP, isa.JMP32):
                if code == isa.CALL:
                    if ins.src == isa.PSEUDO_CALL:
                        u |= 0b111110
                    else:
                        proto = PROTOS.get(ins.imm)
                        nargs = len(proto.args) if proto else 5
                        u |= ((1 << (nargs + 1)) - 1) & ~1
                    d |= 0b111111
                elif code == isa.EXIT:
                    u |= 1
                elif code != isa.JA:
                    u |= 1 << ins.dst
                    if op & isa.X:
                        u |= 1 << ins.src
            elif cls == isa.LD:
                d |= 1 << ins.dst
            elif cls == isa.LDX:
                u |= 1 << ins.src
                d |= 1 << ins.dst
            elif cls == isa.ST:
                u |= 1 << ins.dst
            elif cls == isa.STX:
                u |= (1 << ins.dst) | (1 << ins.src)
                if op & 0xE0 == isa.ATOMIC:
                    if ins.imm == isa.CMPXCHG:
                        u |= 1
                        d |= 1
                    elif ins.imm & isa.FETCH:
                        d |= 1 << ins.src
            uses[i], defs[i] = u & 0x3FF, d & 0x3FF
            succs[i] = self.successors(i, ins)
            for t in succs[i]:
                preds[t].append(i)
        live = [0] * n
        work = [i for i in range(n) if insns[i] is not None]
        on = [True] * n
        while work:
            i = work.pop()
            on[i] = False
            out = 0
            for t in succs[i]:
                out |= live[t]
            new = uses[i] | (out & ~defs[i])
            if new != live[i]:
                live[i] = new
                for p in preds[i]:
                    if not on[p]:
                        on[p] = True
                        work.append(p)
        self.live = live
        self.compute_relevance(succs, preds)

    def compute_relevance(self, succs, preds):
        """Registers whose scalar value may matter to a check on some path (bit i: Ri).

        A static stand-in for the kernel's precision tracking: a value matters when it may
        reach a memory address, a stored value, a conditional jump, a helper argument, the
        exit value, or an addition or subtraction of registers (pointer arithmetic checks the
        offset's bounds). Two states whose scalars differ only in registers that do not
        matter walk the same way, so pruning ignores those registers.
        """
        insns = self.insns
        n = len(insns)
        kill = [0] * n
        gen = [0] * n
        cond = [None] * n  # (if this register matters after, these matter before)
        for i, ins in enumerate(insns):
            if ins is None:
                continue
            cls = ins.cls
            op = ins.op
            code = op & 0xF0
            d, sbit = 1 << ins.dst, 1 << ins.src
            if cls in (isa.ALU, isa.ALU64):
                if code == isa.MOV:
                    kill[i] = d
                    if op & isa.X:
                        cond[i] = (d, sbit)
                elif code in (isa.ADD, isa.SUB) and op & isa.X:
                    gen[i] = d | sbit
                else:
                    kill[i] = d
                    cond[i] = (d, d | (sbit if op & isa.X else 0))
            elif cls in (isa.JMP, isa.JMP32):
                if code == isa.CALL:
                    kill[i] = 0b111111
                    if ins.src == isa.PSEUDO_CALL:
                        gen[i] = 0b111110
                    else:
                        proto = PROTOS.get(ins.imm)
                        nargs = len(proto.args) if proto else 5
                        gen[i] = ((1 << (nargs + 1)) - 1) & ~1
                elif code == isa.EXIT:
                    kill[i] = 0x3FF
                    gen[i] = 1
                elif code != isa.JA:
                    gen[i] = d | (sbit if op & isa.X else 0)
            elif cls == isa.LD:
                kill[i] = d
            elif cls == isa.LDX:
                kill[i] = d
                gen[i] = sbit
            elif cls == isa.ST:
                gen[i] = d
            elif cls == isa.STX:
                gen[i] = d | sbit | (1 if op & 0xE0 == isa.ATOMIC else 0)
        rel = [0] * n
        work = [i for i in range(n) if insns[i] is not None]
        on = [True] * n
        while work:
            i = work.pop()
            on[i] = False
            out = 0
            for t in succs[i]:
                out |= rel[t]
            new = gen[i] | (out & ~kill[i])
            c = cond[i]
            if c is not None and out & c[0]:
                new |= c[1]
            new &= 0x3FF
            if new != rel[i]:
                rel[i] = new
                for p in preds[i]:
                    if not on[p]:
                        on[p] = True
                        work.append(p)
        self.relevant = rel

    # -----------------------------------------------------------------------------------
    # pass 2: walk the paths

    def do_check(self):
        regs = [NOT_INIT_REG] * 11
        regs[1] = Reg(T.CTX)
        regs[10] = Reg(T.STACK, fr=0)
        state = State([Frame(regs, {}, -1, 0, 0)])
        self.active = {}     # idx -> {state key: explored states still being walked}
        self.done = {}       # idx -> explored states whose every path is proven safe
        self.jumps = self.prev_jumps = self.prev_processed = 0
        self.depth = {start: 0 for start in self.subprog_starts}
        self.callees = {start: set() for start in self.subprog_starts}
        self.callsites = {}  # (caller, callee) -> the first call instruction walked
        pending = []
        idx = 0
        insns = self.insns
        while True:
            if self.prune[idx]:
                if self.is_state_visited(state, idx):
                    self.branch_done(state)
                    if not pending:
                        return
                    state, idx = pending.pop()
                    continue
            self.idx = idx
            self.processed += 1
            if self.processed > self.limit:
                self.fail(f"BPF program is too large. Processed {self.processed} insn")
            ins = insns[idx]
            cls = ins.cls
            if cls in (isa.ALU, isa.ALU64):
                self.check_alu(state, ins)
                idx += 1
            elif cls == isa.LDX:
                self.check_ldx(state, ins)
                idx += 1
            elif cls == isa.STX:
                if ins.op & 0xE0 == isa.ATOMIC:
                    self.check_atomic(state, ins)
                else:
                    self.check_stx(state, ins)
                idx += 1
            elif cls == isa.ST:
                self.check_st(state, ins)
                idx += 1
            elif cls == isa.LD:
                self.check_lddw(state, ins)
                idx += 2
            else:
                self.jumps += 1
                code = ins.op & 0xF0
                if code == isa.JA:
                    idx += (ins.imm if cls == isa.JMP32 else ins.off) + 1
                elif code == isa.CALL:
                    if ins.src == isa.PSEUDO_CALL:
                        idx = self.check_func_call(state, idx, ins)
                    else:
                        self.check_helper_call(state, ins)
                        idx += 1
                elif code == isa.EXIT:
                    nxt = self.check_exit(state)
                    if nxt is None:
                        self.branch_done(state)
                        if not pending:
                            return
                        state, idx = pending.pop()
                    else:
                        idx = nxt
                else:
                    other = self.check_cond_jmp(state, idx, ins)
                    if other is None:
                        idx += 1
                    elif other == "jump":
                        idx += ins.off + 1
                    elif other == "dead":
                        self.branch_done(state)
                        if not pending:
                            return
                        state, idx = pending.pop()
                    else:
                        if state.parent is not None:
                            state.parent.branches += 1
                        pending.append((other, idx + ins.off + 1))
                        if len(pending) > COMPLEXITY_LIMIT_JMP_SEQ:
                            self.fail(f"The sequence of {len(pending)} jumps is too complex.")
                        idx += 1

    def branch_done(self, state):
        e = state.parent
        while e is not None:
            e.branches -= 1
            if e.branches > 0:
                break
            # Every path from e is proven safe: e may now prune others.
            keys = self.active[e.idx]
            keys[e.key] -= 1
            if not keys[e.key]:
                del keys[e.key]
            self.done[e.idx].append(e)
            e = e.parent

    # -----------------------------------------------------------------------------------
    # state pruning

    def live_masks(self, state, idx):
        """Per frame, innermost last: (registers live, registers whose value matters)."""
        masks = []
        frames = state.frames
        for k in range(len(frames)):
            if k == len(frames) - 1:
                masks.append((self.live[idx], self.relevant[idx]))
            else:
                after = frames[k + 1].callsite + 1
                masks.append((self.live[after] & 0x3C0, self.relevant[after] & 0x3C0))
        return masks

    def state_key(self, state, masks):
        parts = []
        for fr, (live, rel) in zip(state.frames, masks, strict=True):
            regs = tuple(None if not live >> i & 1 else
                         r.key() if rel >> i & 1 or r.t != T.SCALAR else T.SCALAR
                         for i, r in enumerate(fr.regs[:10]))
            stack = tuple(sorted((spi, kinds, sp.key() if sp is not None else None)
                                 for spi, (kinds, sp) in fr.stack.items()))
            parts.append((fr.callsite, regs, stack))
        return tuple(parts)

    def is_state_visited(self, state, idx):
        """Prune ``state`` at ``idx`` if a proven state covers it; detect loops; keep it."""
        masks = self.live_masks(state, idx)
        active = self.active.get(idx)
        if active is None:
            active = self.active[idx] = {}
            self.done[idx] = []
        key = None
        if active:
            key = self.state_key(state, masks)
            if key in active:
                self.fail(f"infinite loop detected at insn {idx}", idx)
        done = self.done[idx]
        for k in range(len(done) - 1, -1, -1):
            e = done[k]
            if self.states_safe(e.state, state, masks):
                e.hits += 1
                return True
            e.misses += 1
            if e.misses > e.hits * 3 + 3:
                del done[k]  # a state that rarely prunes only costs time (as the kernel)
        # Keep a state only every few jumps and instructions, as the kernel does.
        if (self.jumps - self.prev_jumps < 2 or self.processed - self.prev_processed < 8) \
                and self.prev_processed:
            return False
        self.prev_jumps = self.jumps
        self.prev_processed = self.processed or 1
        if key is None:
            key = self.state_key(state, masks)
        e = Explored(state.copy(), state.parent, key, idx)
        active[key] = active.get(key, 0) + 1
        self.total_states += 1
        state.parent = e
        return False

    def states_safe(self, old, cur, masks):
        if len(old.frames) != len(cur.frames):
            return False
        idmap = {}
        rev = {}
        for fo, fc, (live, rel) in zip(old.frames, cur.frames, masks, strict=True):
            if fo.callsite != fc.callsite:
                return False
            for i in range(10):
                if not live >> i & 1:
                    continue
                o, c = fo.regs[i], fc.regs[i]
                if not rel >> i & 1 and o.t == T.SCALAR and c.t == T.SCALAR:
                    continue
                if not self.regsafe(o, c, idmap, rev):
                    return False
            if not self.stacksafe(fo, fc, idmap, rev):
                return False
        return True

    @staticmethod
    def check_ids(a, b, idmap, rev, scalar):
        if a == 0:
            return scalar or b == 0
        if b == 0:
            return False
        if idmap.get(a, b) != b or rev.get(b, a) != a:
            return False
        idmap[a] = b
        rev[b] = a
        return True

    def regsafe(self, o, c, idmap, rev):
        if o is c or o.t == T.NOT_INIT:
            return True
        if o.t != c.t:
            return False
        if not (o.umin <= c.umin and o.umax >= c.umax and o.smin <= c.smin
                and o.smax >= c.smax and tnum_in(o.v, o.m, c.v, c.m)):
            return False
        if o.t == T.SCALAR:
            return self.check_ids(o.id, c.id, idmap, rev, True)
        if o.off != c.off or o.mp != c.mp or o.fr != c.fr:
            return False
        if o.t in PKT_TYPES:
            if o.rng > c.rng:
                return False
            return self.check_ids(o.id, c.id, idmap, rev, False)
        if o.t == T.MAP_VALUE_OR_NULL:
            return self.check_ids(o.id, c.id, idmap, rev, False)
        return True

    def stacksafe(self, fo, fc, idmap, rev):
        cstack = fc.stack
        for spi, (okinds, ospill) in fo.stack.items():
            cslot = cstack.get(spi, EMPTY_SLOT)
            if cslot == (okinds, ospill):
                continue
            ckinds, cspill = cslot
            if ospill is not None:
                if cspill is None or okinds != ckinds or not self.regsafe(ospill, cspill,
                                                                          idmap, rev):
                    return False
                continue
            for j in range(8):
                ok = okinds[j]
                if ok == INV:
                    continue
                ck = ckinds[j]
                if ok == MISC:
                    if ck == INV or (ck == SPILL and cspill.t != T.SCALAR):
                        return False
                elif ok == ZERO:
                    if ck != ZERO and not (ck == SPILL and is_const(cspill) and cspill.v == 0):
                        return False
        return True

    # -----------------------------------------------------------------------------------
    # registers

    def read_reg(self, fr, r):
        reg = fr.regs[r]
        if reg.t == T.NOT_INIT:
            self.fail(f"R{r} !read_ok")
        return reg

    def write_reg(self, fr, r, val):
        if r == 10:
            self.fail("frame pointer is read only")
        fr.regs[r] = val

    def set_scalar(self, state, fr, r, bounds):
        """Narrow scalar ``r`` to ``bounds`` and every scalar linked to it by id."""
        old = fr.regs[r]
        fr.regs[r] = old.with_bounds(bounds)
        if old.id:
            for f in state.frames:
                regs = f.regs
                for i in range(10):
                    x = regs[i]
                    if x.t == T.SCALAR and x.id == old.id:
                        regs[i] = x.with_bounds(bounds)
                for spi, (kinds, sp) in list(f.stack.items()):
                    if sp is not None and sp.t == T.SCALAR and sp.id == old.id:
                        f.stack[spi] = (kinds, sp.with_bounds(bounds))

    # -----------------------------------------------------------------------------------
    # ALU

    def check_alu(self, state, ins):
        fr = state.cur
        op = ins.op
        code = op & 0xF0
        is64 = ins.cls == isa.ALU64
        d = ins.dst
        if code == isa.END:
            a = self.read_reg(fr, d)
            if a.t != T.SCALAR:
                self.write_reg(fr, d, unknown())
                return
            self.write_reg(fr, d, self.byteswap(a, ins))
            return
        if code == isa.NEG:
            a = self.read_reg(fr, d)
            if a.t != T.SCALAR:
                self.write_reg(fr, d, unknown())
                return
            if is64:
                res = const(-a.v) if is_const(a) else unknown()
            else:
                a32 = view32(a)
                res = const(-a32.v & U32) if is_const(a32) else sized_unknown(4)
            self.write_reg(fr, d, res)
            return
        if op & isa.X:
            b = self.read_reg(fr, ins.src)
        else:
            b = const(ins.imm if is64 else ins.imm & U32)
        if code == isa.MOV:
            self.check_mov(state, fr, ins, b, is64)
            return
        a = self.read_reg(fr, d)
        if a.t != T.SCALAR or b.t != T.SCALAR:
            self.write_reg(fr, d, self.ptr_alu(ins, a, b, is64))
            return
        # div and mod (sdiv and smod too) give an unknown 64-bit scalar (scalar_alu)
        self.write_reg(fr, d, scalar_alu(code, a, b, is64))

    def check_mov(self, state, fr, ins, b, is64):
        d = ins.dst
        if ins.off:  # movsx
            if b.t != T.SCALAR:
                self.fail(f"R{ins.src} sign-extension mov of a pointer is not allowed")
            bits = ins.off
            low = view32(b) if bits < 32 or not is64 else b
            if is_const(low):
                x = low.v & ((1 << bits) - 1)
                if x >> (bits - 1):
                    x -= 1 << bits
                res = const(x if is64 else x & U32)
            elif low.umax < (1 << (bits - 1)):
                res = b.with_bounds(low).replace(id=0)
                res = view32(res) if not is64 else res
            else:
                res = signed_unknown(bits // 8) if is64 else sized_unknown(4)
            self.write_reg(fr, d, res)
            return
        if not is64:
            if b.t != T.SCALAR:
                self.write_reg(fr, d, unknown().with_bounds(sized_unknown(4)))
                return
            self.write_reg(fr, d, view32(b).replace(id=0))
            return
        if ins.op & isa.X and b.t == T.SCALAR and not is_const(b):
            if b.id == 0:
                b = b.replace(id=self.new_id())
                fr.regs[ins.src] = b
        self.write_reg(fr, d, b)

    def byteswap(self, a, ins):
        bits = ins.imm
        to_be = ins.op & isa.X  # BPF_TO_BE; ALU64 END is an unconditional swap
        swap = ins.cls == isa.ALU64 or to_be
        mask = (1 << bits) - 1
        if is_const(a):
            x = a.v & mask
            if swap:
                x = int.from_bytes(x.to_bytes(bits // 8, "little"), "big")
            return const(x)
        if not swap:
            if a.umax <= mask:
                return a.replace(id=0)
            return sized_unknown(bits // 8)
        return sized_unknown(bits // 8)

    def ptr_alu(self, ins, a, b, is64):
        """Arithmetic with a pointer operand (adjust_ptr_min_max_vals)."""
        code = ins.op & 0xF0
        d = ins.dst
        opname = isa.ALU_OPS[code]
        if a.t != T.SCALAR and b.t != T.SCALAR:
            if code == isa.SUB:
                return unknown()  # pointer - pointer: a number (privileged)
            self.fail(f"R{d} pointer {opname} pointer prohibited")
        if not is64:
            if code == isa.SUB:
                return sized_unknown(4)
            self.fail(f"R{d} 32-bit pointer arithmetic prohibited")
        if a.t == T.SCALAR:
            if code == isa.SUB:
                self.fail(f"R{d} tried to subtract pointer from scalar")
            ptr, off = b, a
        else:
            ptr, off = a, b
        if ptr.t == T.MAP_VALUE_OR_NULL:
            self.fail(f"R{d} pointer arithmetic on {_name(ptr.t)} prohibited, "
                      f"null-check it first")
        if ptr.t in (T.PACKET_END, T.MAP_PTR, T.XDP_SOCK):
            if not (ptr.t == T.MAP_PTR and is_const(off) and off.v == 0 and code == isa.ADD):
                self.fail(f"R{d} pointer arithmetic on {_name(ptr.t)} prohibited")
        if code in (isa.AND, isa.OR, isa.XOR):
            self.fail(f"R{d} bitwise operator {opname} on pointer prohibited")
        if code not in (isa.ADD, isa.SUB):
            self.fail(f"R{d} pointer arithmetic with {opname} operator prohibited")
        self.sane_offset(off, ptr)
        self.sane_offset(ptr, ptr)
        if code == isa.SUB and ptr.t == T.STACK:
            self.fail(f"R{d} subtraction from stack pointer prohibited")
        known = is_const(off)
        if known:
            k = s64(off.v)
            new_off = ptr.off + k if code == isa.ADD else ptr.off - k
            if -(1 << 31) <= new_off < (1 << 31):
                res = ptr.replace(off=new_off)
                self.sane_offset(res, res)
                return res
        var = scalar_alu(code, ptr, off, True)
        res = ptr.with_bounds(var)
        if ptr.t in PKT_TYPES:
            res = res.replace(id=self.new_id(), rng=0)
        self.sane_offset(res, res)
        return res

    def sane_offset(self, r, ptr):
        name = _name(ptr.t)
        if is_const(r) or (r.t != T.SCALAR and r.m == 0):
            val = s64(r.v)
            if val >= MAX_VAR_OFF or val <= -MAX_VAR_OFF:
                self.fail(f"math between {name} pointer and {val} is not allowed")
        if r.off >= MAX_VAR_OFF or r.off <= -MAX_VAR_OFF:
            self.fail(f"{name} pointer offset {r.off} is not allowed")
        if r.smin == S64_MIN:
            self.fail(f"math between {name} pointer and register with unbounded min value "
                      f"is not allowed")
        if r.smin >= MAX_VAR_OFF or r.smin <= -MAX_VAR_OFF:
            self.fail(f"value {r.smin} makes {name} pointer be out of bounds")

    # -----------------------------------------------------------------------------------
    # lddw

    def check_lddw(self, state, ins):
        fr = state.cur
        if ins.src == 0:
            self.write_reg(fr, ins.dst, const(ins.imm))
            return
        idx = ins.imm & U32
        if idx >= len(self.maps):
            self.fail(f"fd {idx} is not pointing to valid bpf_map")
        if ins.src == isa.PSEUDO_MAP_FD:
            self.write_reg(fr, ins.dst, Reg(T.MAP_PTR, mp=idx))
            return
        m = self.maps[idx]
        off = ins.imm >> 32
        if m.type != MapType.array or m.max_entries != 1:
            self.fail("map does not support direct value access (single-entry array only)")
        if off >= m.value_size:
            self.fail(f"invalid access to map value pointer, value_size={m.value_size} "
                      f"off={off}")
        self.write_reg(fr, ins.dst, Reg(T.MAP_VALUE, off=off, mp=idx))

    # -----------------------------------------------------------------------------------
    # memory

    def check_ldx(self, state, ins):
        fr = state.cur
        size = isa.SIZE_BYTES[ins.op & 0x18]
        ptr = self.read_reg(fr, ins.src)
        val = self.check_mem_access(state, ins.src, ptr, ins.off, size, write=False)
        if ins.op & 0xE0 == isa.MEMSX and val.t == T.SCALAR:
            bits = 8 * size
            if is_const(val):
                x = val.v
                if x >> (bits - 1):
                    x -= 1 << bits
                val = const(x)
            elif val.umax >= (1 << (bits - 1)):
                val = signed_unknown(size)
        self.write_reg(fr, ins.dst, val)

    def check_stx(self, state, ins):
        fr = state.cur
        size = isa.SIZE_BYTES[ins.op & 0x18]
        ptr = self.read_reg(fr, ins.dst)
        val = self.read_reg(fr, ins.src)
        self.check_mem_access(state, ins.dst, ptr, ins.off, size, write=True, value=val)

    def check_st(self, state, ins):
        fr = state.cur
        size = isa.SIZE_BYTES[ins.op & 0x18]
        ptr = self.read_reg(fr, ins.dst)
        if ptr.t == T.CTX:
            self.fail(f"BPF_ST stores into R{ins.dst} ctx is not allowed")
        mask = (1 << (8 * size)) - 1
        val = const(ins.imm & mask if size < 8 else ins.imm)
        self.check_mem_access(state, ins.dst, ptr, ins.off, size, write=True, value=val)

    def check_atomic(self, state, ins):
        fr = state.cur
        size = isa.SIZE_BYTES[ins.op & 0x18]
        ptr = self.read_reg(fr, ins.dst)
        self.read_reg(fr, ins.src)
        if ins.imm == isa.CMPXCHG:
            self.read_reg(fr, 0)
        if ptr.t in (T.CTX, T.PACKET, T.PACKET_META, T.XDP_SOCK):
            self.fail(f"BPF_ATOMIC stores into R{ins.dst} {_name(ptr.t)} is not allowed")
        self.check_mem_access(state, ins.dst, ptr, ins.off, size, write=False)
        self.check_mem_access(state, ins.dst, ptr, ins.off, size, write=True,
                              value=sized_unknown(size))
        result = sized_unknown(size)
        if ins.imm == isa.CMPXCHG:
            self.write_reg(fr, 0, result)
        elif ins.imm & isa.FETCH:
            self.write_reg(fr, ins.src, result)

    def check_mem_access(self, state, regno, ptr, insn_off, size, write, value=None):
        """Check one load or store through register ``regno``; return the loaded value."""
        t = ptr.t
        if t == T.STACK:
            return self.stack_access(state, regno, ptr, insn_off, size, write, value)
        if t in PKT_TYPES:
            self.check_packet_access(regno, ptr, ptr.off + insn_off, size)
            return sized_unknown(size)
        if t == T.MAP_VALUE:
            m = self.maps[ptr.mp]
            off = ptr.off + insn_off
            if write and getattr(m, "flags", 0) & BPF_F_RDONLY_PROG:
                self.fail(f"write into map forbidden, value_size={m.value_size} off={off} "
                          f"size={size}")
            self.check_map_access(regno, ptr, off, size, m.value_size)
            initial = getattr(m, "initial", None)
            if (not write and ptr.m == 0 and initial is not None
                    and getattr(m, "flags", 0) & BPF_F_RDONLY_PROG):
                at = off + ptr.v
                return const(int.from_bytes(initial[at:at + size], "little"))
            return sized_unknown(size)
        if t == T.CTX:
            return self.check_ctx_access(regno, ptr, insn_off, size, write)
        if t == T.XDP_SOCK:
            return self.check_xdp_sock_access(regno, ptr, ptr.off + insn_off, size, write)
        if t == T.NOT_INIT:
            self.fail(f"R{regno} !read_ok")
        self.fail(f"R{regno} invalid mem access '{_name(t)}'")

    def check_packet_access(self, regno, ptr, off, size, what="access to"):
        if ptr.smin < 0:
            self.fail(f"R{regno} min value is negative, either use unsigned index or do a "
                      f"if (index >=0) check.")
        if off < 0 or off + size > ptr.rng:
            kind = "packet" if ptr.t == T.PACKET else "packet metadata"
            self.fail(f"invalid {what} {kind}, off={off} size={size}, R{regno} range is "
                      f"{ptr.rng} (check against "
                      f"{'data_end' if ptr.t == T.PACKET else 'data'} first)")

    def check_map_access(self, regno, ptr, off, size, value_size):
        if ptr.smin + off < 0:
            self.fail(f"R{regno} min value is outside of the allowed memory range")
        if ptr.m == 0:
            at = off + ptr.v
            if at < 0 or at + size > value_size:
                self.fail(f"invalid access to map value, value_size={value_size} off={at} "
                          f"size={size}")
            return
        if ptr.smin + off + size > value_size:
            self.fail(f"invalid access to map value, value_size={value_size} "
                      f"off={ptr.smin + off} size={size}")
        if ptr.umax >= MAX_VAR_OFF:
            self.fail(f"R{regno} unbounded memory access, make sure to bounds check any "
                      f"such access")
        if ptr.umax + off + size > value_size:
            self.fail(f"R{regno} max value is outside of allowed memory range "
                      f"(value_size={value_size}, off={ptr.umax + off}, size={size})")

    def check_xdp_sock_access(self, regno, ptr, off, size, write):
        """An AF_XDP socket from an xskmap: a 4-byte read of ``queue_id``, no write."""
        if write:
            self.fail(f"R{regno} cannot write into xdp_sock")
        if ptr.smin < 0:
            self.fail(f"R{regno} min value is negative, either use unsigned index or do a "
                      f"if (index >=0) check.")
        if (off, size) != XDP_SOCK_QUEUE_ID:
            self.fail(f"R{regno} invalid xdp_sock access off={off} size={size} (only the "
                      f"4-byte queue_id at 0 may be read)")
        return sized_unknown(size)

    def check_ctx_access(self, regno, ptr, off, size, write):
        if ptr.off:
            self.fail(f"dereference of modified ctx ptr R{regno} off={ptr.off} disallowed")
        if ptr.m or ptr.v:
            self.fail(f"variable ctx access var_off=({ptr.v:#x}; {ptr.m:#x}) disallowed")
        field = XDP_MD_FIELDS.get(off)
        if (write or field is None or field == "egress_ifindex" or size != 4):
            self.fail(f"invalid bpf_context access off={off} size={size}"
                      + (" (struct xdp_md is read-only)" if write else ""))
        if field == "data":
            return Reg(T.PACKET)
        if field == "data_end":
            return Reg(T.PACKET_END)
        if field == "data_meta":
            return Reg(T.PACKET_META)
        return sized_unknown(4)

    # stack

    def stack_frame(self, state, ptr):
        return state.frames[ptr.fr]

    def stack_access(self, state, regno, ptr, insn_off, size, write, value):
        fr = self.stack_frame(state, ptr)
        base = ptr.off + insn_off
        if ptr.m == 0:
            off = base + s64(ptr.v)
            if off % size:
                self.fail(f"misaligned stack access off {off} size {size}")
            if off < -MAX_BPF_STACK or off + size > 0:
                self.fail(f"invalid {'write to' if write else 'read from'} stack R{regno} "
                          f"off={off} size={size}")
            self.note_depth(fr, off)
            if write:
                self.stack_write(fr, off, size, value)
                return None
            return self.stack_read(fr, regno, off, size)
        # variable offset
        if (base + ptr.v) % size or ptr.m & (size - 1):
            self.fail(f"misaligned stack access off ({ptr.v:#x}; {ptr.m:#x})+{base} "
                      f"size {size}")
        lo, hi = base + ptr.smin, base + ptr.smax
        if lo < -MAX_BPF_STACK or hi + size > 0:
            self.fail(f"invalid variable-offset {'write to' if write else 'read from'} stack "
                      f"R{regno} var_off=({ptr.v:#x}; {ptr.m:#x}) off={base} size={size}")
        self.note_depth(fr, lo)
        if write:
            if value is not None and value.t != T.SCALAR:
                self.fail(f"R{regno} spill of a pointer through a variable offset")
            for a in range(lo, hi + size):
                self.mark_byte(fr, a, MISC, keep_invalid=True)
            return None
        for a in range(lo, hi + size):
            kinds, _ = fr.stack.get((-a - 1) // 8, EMPTY_SLOT)
            if kinds[a % 8] == INV:
                self.fail(f"invalid variable-offset read from stack R{regno} "
                          f"var_off=({ptr.v:#x}; {ptr.m:#x}) off={base} size={size}: "
                          f"byte {a} is not initialised")
        return sized_unknown(size)

    def note_depth(self, fr, off):
        if -off > self.depth[fr.subprog]:
            self.depth[fr.subprog] = -off

    def mark_byte(self, fr, a, kind, keep_invalid=False):
        spi = (-a - 1) // 8
        kinds, sp = fr.stack.get(spi, EMPTY_SLOT)
        kinds = self.unspill(kinds, sp)
        j = a % 8
        if not (keep_invalid and kinds[j] == INV):
            kinds[j] = kind
        fr.stack[spi] = (tuple(kinds), None)

    @staticmethod
    def unspill(kinds, sp):
        """Return the slot's byte kinds with the spilled register's bytes made plain data."""
        out = list(kinds)
        if sp is not None:
            for i in range(8):
                if out[i] == SPILL:
                    out[i] = ZERO if is_const(sp) and (sp.v >> (8 * i)) & 0xFF == 0 else MISC
        return out

    def stack_write(self, fr, off, size, value):
        spi = (-off - 1) // 8
        j = off % 8
        if value.t != T.SCALAR:
            if size != 8:
                self.fail("invalid size of register spill")
            fr.stack[spi] = (SPILL_KINDS, value)
            return
        if size == 8:
            fr.stack[spi] = (SPILL_KINDS, value)
            return
        kinds, sp = fr.stack.get(spi, EMPTY_SLOT)
        kinds = self.unspill(kinds, sp)
        mask = (1 << (8 * size)) - 1
        if j == 0:
            # A narrow scalar spill at the start of a slot keeps its value (the kernel's
            # save_register_state with size < 8).
            if is_const(value):
                val = const(value.v & mask)
            elif value.umax <= mask:
                val = value
            else:
                val = sized_unknown(size)
            for i in range(size):
                kinds[i] = SPILL
            fr.stack[spi] = (tuple(kinds), val)
            return
        kind = ZERO if is_const(value) and value.v & mask == 0 else MISC
        for i in range(j, j + size):
            kinds[i] = kind
        fr.stack[spi] = (tuple(kinds), None)

    def stack_read(self, fr, regno, off, size):
        spi = (-off - 1) // 8
        j = off % 8
        kinds, sp = fr.stack.get(spi, EMPTY_SLOT)
        if sp is not None:
            spilled = kinds.count(SPILL)
            if j == 0 and size == spilled:
                return sp
            if sp.t != T.SCALAR:
                self.fail("invalid size of register fill")
            if is_const(sp) and j + size <= spilled:
                return const((sp.v >> (8 * j)) & ((1 << (8 * size)) - 1))
            kinds = self.unspill(kinds, sp)
        part = kinds[j:j + size]
        if INV in part:
            self.fail(f"invalid read from stack R{regno} off={off} size={size} "
                      f"(stack byte {off + part.index(INV)} was never written)")
        if all(k == ZERO for k in part):
            return const(0)
        return sized_unknown(size)

    def helper_stack_access(self, state, regno, ptr, size, read, write):
        fr = self.stack_frame(state, ptr)
        if ptr.m == 0:
            lo = hi = ptr.off + s64(ptr.v)
        else:
            lo, hi = ptr.off + ptr.smin, ptr.off + ptr.smax
        if lo < -MAX_BPF_STACK or hi + size > 0 or (size == 0 and hi > 0):
            self.fail(f"invalid indirect access to stack R{regno} off={lo} size={size}")
        self.note_depth(fr, lo)
        for a in range(lo, hi + size):
            spi = (-a - 1) // 8
            kinds, sp = fr.stack.get(spi, EMPTY_SLOT)
            if read and kinds[a % 8] == INV:
                self.fail(f"invalid indirect read from stack R{regno} off {lo}+{a - lo} "
                          f"size {size} (stack byte {a} was never written)")
        if write:
            for a in range(lo, hi + size):
                self.mark_byte(fr, a, MISC, keep_invalid=ptr.m != 0)

    # -----------------------------------------------------------------------------------
    # jumps

    def check_cond_jmp(self, state, idx, ins):
        """Return None (fall through), "jump", "dead" or the jump-taken state."""
        fr = state.cur
        code = ins.op & 0xF0
        is64 = ins.cls == isa.JMP
        a = self.read_reg(fr, ins.dst)
        src_is_reg = bool(ins.op & isa.X)
        if src_is_reg:
            b = self.read_reg(fr, ins.src)
        else:
            b = const(ins.imm if is64 else ins.imm & U32)
        # Nullable pointer against 0: the two branches learn null / not null.
        if is64 and code in (isa.JEQ, isa.JNE):
            for p_reg, p, other in ((ins.dst, a, b), (ins.src if src_is_reg else None, b, a)):
                if p_reg is not None and p.t == T.MAP_VALUE_OR_NULL and is_const(other) \
                        and other.v == 0:
                    taken = state.copy()
                    null_in_taken = code == isa.JEQ
                    self.mark_null(taken, p.id, null_in_taken)
                    self.mark_null(state, p.id, not null_in_taken)
                    return taken
        if a.t != T.SCALAR or b.t != T.SCALAR:
            # Pointer that cannot be NULL against 0 (an xdp_sock is not one of those to the
            # kernel, reg_not_null(): both branches are walked).
            for p, other in ((a, b), (b, a)):
                if (p.t not in (T.SCALAR, T.MAP_VALUE_OR_NULL, T.XDP_SOCK) and is_const(other)
                        and other.v == 0 and code in (isa.JEQ, isa.JNE) and is64):
                    return "jump" if code == isa.JNE else None
            if is64 and a.t in PKT_ANY and b.t in PKT_ANY:
                taken = state.copy()
                self.pkt_compare(state, taken, code, a, b)
                return taken
            return state.copy()
        outcome = branch_taken(code, a, b, is64)
        if outcome == 1:
            return "jump"
        if outcome == 0:
            return None
        taken = state.copy()
        ok_taken = self.narrow(taken, ins, code, a, b, True, is64, src_is_reg)
        ok_fall = self.narrow(state, ins, code, a, b, False, is64, src_is_reg)
        if ok_taken and ok_fall:
            return taken
        if ok_taken:
            return "jump"
        if ok_fall:
            return None
        return "dead"

    def narrow(self, state, ins, code, a, b, taken, is64, src_is_reg):
        res = refine(code, a, b, taken, is64)
        if res is None:
            return False
        na, nb = res
        fr = state.cur
        if ins.op & isa.X and ins.src == ins.dst:
            return True
        self.set_scalar(state, fr, ins.dst, na)
        if src_is_reg:
            self.set_scalar(state, fr, ins.src, nb)
        return True

    def mark_null(self, state, pid, is_null):
        """Settle the nullable pointer ``pid`` and its copies: 0, or what the lookup gave (a
        map value; an AF_XDP socket for an xskmap, mark_ptr_not_null_reg)."""
        def settled(x):
            if is_null:
                return const(0)
            xsk = 0 <= x.mp < len(self.maps) and self.maps[x.mp].type == MapType.xskmap
            kind = T.XDP_SOCK if xsk else T.MAP_VALUE
            return x.replace(t=kind, id=0)

        for f in state.frames:
            regs = f.regs
            for i in range(10):
                x = regs[i]
                if x.t == T.MAP_VALUE_OR_NULL and x.id == pid:
                    regs[i] = settled(x)
            for spi, (kinds, sp) in list(f.stack.items()):
                if sp is not None and sp.t == T.MAP_VALUE_OR_NULL and sp.id == pid:
                    f.stack[spi] = (kinds, settled(sp))

    def pkt_compare(self, fall, taken, code, a, b):
        """Learn packet ranges from comparing a packet pointer with its end."""
        def is_end(p, e):
            if p.t == T.PACKET and e.t == T.PACKET_END:
                return True
            return (p.t == T.PACKET_META and e.t == T.PACKET and e.off == 0 and e.m == 0
                    and e.v == 0)
        if is_end(a, b):       # pkt' OP end
            p = a
            table = {isa.JGT: (fall, False), isa.JGE: (fall, True),
                     isa.JLT: (taken, True), isa.JLE: (taken, False)}
        elif is_end(b, a):     # end OP pkt'
            p = b
            table = {isa.JGT: (taken, True), isa.JGE: (taken, False),
                     isa.JLT: (fall, False), isa.JLE: (fall, True)}
        else:
            return
        entry = table.get(code)
        if entry is None:
            return
        st, right_open = entry
        if p.off < 0 or (p.off == 0 and right_open):
            return
        if p.umax > MAX_PACKET_OFF or p.umax + p.off > MAX_PACKET_OFF:
            return
        new_range = p.off + 1 if right_open else p.off
        for f in st.frames:
            regs = f.regs
            for i in range(10):
                x = regs[i]
                if x.t == p.t and x.id == p.id and x.rng < new_range:
                    regs[i] = x.replace(rng=new_range)
            for spi, (kinds, sp) in list(f.stack.items()):
                if sp is not None and sp.t == p.t and sp.id == p.id and sp.rng < new_range:
                    f.stack[spi] = (kinds, sp.replace(rng=new_range))

    # -----------------------------------------------------------------------------------
    # calls

    def check_helper_call(self, state, ins):
        hid = ins.imm
        proto = PROTOS.get(hid)
        if proto is None or hid not in XDP_HELPERS:
            try:
                name = f"bpf_{HelperId(hid).name}#{hid}"
            except ValueError:
                name = f"#{hid}"
            self.fail(f"program of this type cannot use helper {name}")
        if proto.gpl_only and not self.gpl:
            self.fail("cannot call GPL-restricted function from non-GPL compatible program")
        fr = state.cur
        meta_map = None
        key = None  # a constant array index passed as the key
        mem = None  # (regno, reg, arg type) of the memory argument waiting for its size
        for i, at in enumerate(proto.args, start=1):
            if at == ArgType.DONTCARE:
                continue
            r = fr.regs[i]
            if r.t == T.NOT_INIT:
                self.fail(f"R{i} !read_ok")
            if at == ArgType.ANYTHING:
                continue
            if at == ArgType.CONST_MAP_PTR:
                if r.t != T.MAP_PTR:
                    self.fail(f"R{i} type={_name(r.t)} expected=map_ptr")
                meta_map = r.mp
                err = map_helper_error(self.maps[r.mp].type, hid)
                if err:
                    self.fail(err)
            elif at in (ArgType.PTR_TO_MAP_KEY, ArgType.PTR_TO_MAP_VALUE):
                if meta_map is None:
                    self.fail("invalid map_ptr to access map->key")
                m = self.maps[meta_map]
                size = m.key_size if at == ArgType.PTR_TO_MAP_KEY else m.value_size
                self.helper_mem(state, i, r, size, read=True, write=False)
                if (at == ArgType.PTR_TO_MAP_KEY and hid == HelperId.map_lookup_elem
                        and m.type in (MapType.array, MapType.percpu_array)):
                    key = self.const_stack_value(state, r, size)
            elif at == ArgType.PTR_TO_CTX:
                if r.t != T.CTX:
                    self.fail(f"R{i} type={_name(r.t)} expected=ctx")
                if r.off or r.m or r.v:
                    self.fail(f"dereference of modified ctx ptr R{i} off={r.off} disallowed")
            elif at in (ArgType.PTR_TO_MEM, ArgType.PTR_TO_MEM_RDONLY,
                        ArgType.PTR_TO_MEM_OR_NULL, ArgType.PTR_TO_UNINIT_MEM):
                nullable = at == ArgType.PTR_TO_MEM_OR_NULL and is_const(r) and r.v == 0
                if r.t not in MEM_TYPES and not nullable:
                    self.fail(f"R{i} type={_name(r.t)} expected=fp, pkt, pkt_meta, "
                              f"map_value")
                mem = (i, r, at)
            elif at in (ArgType.CONST_SIZE, ArgType.CONST_SIZE_OR_ZERO):
                if r.t != T.SCALAR:
                    self.fail(f"R{i} type={_name(r.t)} expected=scalar")
                if r.smin < 0:
                    self.fail(f"R{i} min value is negative, either use unsigned or "
                              f"'var &= const'")
                zero_ok = at == ArgType.CONST_SIZE_OR_ZERO
                if r.umin == 0 and not zero_ok:
                    self.fail(f"R{i} invalid zero-sized read")
                if r.umax >= MAX_VAR_SIZE:
                    self.fail(f"R{i} unbounded memory access, use 'var &= const' or "
                              f"'if (var < const)'")
                mi, mr, mat = mem
                if mr.t == T.SCALAR:
                    if r.umax:
                        self.fail(f"R{mi} type=scalar expected=fp, pkt, pkt_meta, map_value")
                elif r.umax:
                    self.helper_mem(state, mi, mr, r.umax,
                                    read=mat != ArgType.PTR_TO_UNINIT_MEM,
                                    write=mat in (ArgType.PTR_TO_MEM,
                                                  ArgType.PTR_TO_UNINIT_MEM))
                mem = None
        if hid in PKT_CHANGING_HELPERS:
            for f in state.frames:
                regs = f.regs
                for i in range(10):
                    if regs[i].t in PKT_ANY:
                        regs[i] = unknown()
                for spi, (kinds, sp) in list(f.stack.items()):
                    if sp is not None and sp.t in PKT_ANY:
                        f.stack[spi] = (kinds, unknown())
        regs = fr.regs
        for i in range(1, 6):
            regs[i] = NOT_INIT_REG
        if proto.ret == RetType.VOID:
            regs[0] = NOT_INIT_REG
        elif proto.ret == RetType.PTR_TO_MAP_VALUE_OR_NULL:
            if key is not None and key < self.maps[meta_map].max_entries:
                # An array element that exists: the kernel drops the NULL case
                # (can_elide_value_nullness).
                regs[0] = Reg(T.MAP_VALUE, mp=meta_map)
            else:
                regs[0] = Reg(T.MAP_VALUE_OR_NULL, mp=meta_map, id=self.new_id())
        else:
            rng = RET_RANGES.get(hid)
            if rng is None:
                regs[0] = unknown()
            else:
                regs[0] = _range(*rng)

    def const_stack_value(self, state, r, size):
        """Return the number the ``size`` stack bytes at ``r`` hold if it is known, else None."""
        if r.t != T.STACK or r.m or size > 8:
            return None
        off = r.off + s64(r.v)
        spi = (-off - 1) // 8
        j = off % 8
        kinds, sp = self.stack_frame(state, r).stack.get(spi, EMPTY_SLOT)
        if j + size > 8:
            return None
        if sp is not None:
            # The kernel takes a spilled key only when the spill has the key's size
            # (get_constant_map_key).
            if is_const(sp) and j == 0 and size == kinds.count(SPILL):
                return sp.v & ((1 << (8 * size)) - 1)
            return None
        if all(k == ZERO for k in kinds[j:j + size]):
            return 0
        return None

    def helper_mem(self, state, regno, r, size, read, write):
        if r.t == T.STACK:
            self.helper_stack_access(state, regno, r, size, read, write)
        elif r.t in PKT_TYPES:
            self.check_packet_access(regno, r, r.off, size, what="indirect access to")
        elif r.t == T.MAP_VALUE:
            m = self.maps[r.mp]
            if write and getattr(m, "flags", 0) & BPF_F_RDONLY_PROG:
                self.fail(f"write into map forbidden, value_size={m.value_size} off={r.off} "
                          f"size={size}")
            self.check_map_access(regno, r, r.off, size, m.value_size)
        else:
            self.fail(f"R{regno} type={_name(r.t)} expected=fp, pkt, pkt_meta, map_value")

    def check_func_call(self, state, idx, ins):
        target = idx + ins.imm + 1
        if len(state.frames) >= MAX_CALL_FRAMES:
            self.fail(f"the call stack of {len(state.frames) + 1} frames is too deep")
        for f in state.frames:
            if f.subprog == target:
                self.fail(f"recursive call to the subprogram at insn {target}")
        caller = state.cur
        self.callees[caller.subprog].add(target)
        self.callsites.setdefault((caller.subprog, target), idx)
        frameno = len(state.frames)
        regs = [NOT_INIT_REG] * 11
        for i in range(1, 6):
            regs[i] = caller.regs[i]
        regs[10] = Reg(T.STACK, fr=frameno)
        state.frames.append(Frame(regs, {}, idx, target, frameno))
        return target

    def check_exit(self, state):
        fr = state.cur
        r0 = fr.regs[0]
        if r0.t == T.NOT_INIT and len(state.frames) == 1:
            self.fail("R0 !read_ok (R0 is not set at exit)")
        if len(state.frames) > 1:
            # A subprogram may return nothing: the caller's R0 is then uninitialised.
            if r0.t == T.STACK and r0.fr == fr.frameno:
                self.fail("cannot return stack pointer to the caller frame")
            state.frames.pop()
            caller = state.cur
            for i in range(1, 6):
                caller.regs[i] = NOT_INIT_REG
            caller.regs[0] = r0
            # pointers into the dead frame's stack left in caller registers or stack
            for f in state.frames:
                for i in range(10):
                    if f.regs[i].t == T.STACK and f.regs[i].fr >= len(state.frames):
                        f.regs[i] = unknown()
            return fr.callsite + 1
        if r0.t != T.SCALAR:
            self.fail(f"At program exit the register R0 is not a known value "
                      f"({describe(r0)}): XDP programs return an action, not a pointer")
        if r0.smin < XDP_RET_MIN or r0.smax > XDP_RET_MAX or r0.umax > XDP_RET_MAX:
            self.fail(f"At program exit the register R0 has value {describe(r0)}, should "
                      f"have been in [{XDP_RET_MIN}, {XDP_RET_MAX}] (an XDP action)")
        return None

    def check_stack_depth(self):
        """The deepest call chain's stack fits in 512 bytes (frames rounded up to 16 bytes,
        as the kernel does for JIT-compiled programs: round_up_stack_depth)."""
        def frame_size(sp):
            return (self.depth[sp] + 15) // 16 * 16

        def deepest(sp, size_of, memo):
            if sp not in memo:
                memo[sp] = size_of(sp) + max(
                    (deepest(c, size_of, memo) for c in self.callees[sp]), default=0)
            return memo[sp]

        sizes = {}
        total = deepest(0, frame_size, sizes)
        self.max_depth = deepest(0, self.depth.get, {})
        if total > MAX_BPF_STACK:
            calls = self.chain_length(0)
            # The main program's call into the deepest chain names the instruction.
            first = max(self.callees[0], key=sizes.__getitem__, default=None)
            raise VerifyError(self.callsites.get((0, first)),
                              f"combined stack size of {calls} calls is {total}. "
                                    f"Too large (limit {MAX_BPF_STACK})")

    def chain_length(self, sp):
        return 1 + max((self.chain_length(c) for c in self.callees[sp]), default=0)


def _range(lo, hi):
    return sync_bounds(0, U64, lo, hi, lo, hi)
