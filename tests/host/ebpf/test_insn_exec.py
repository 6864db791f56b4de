"""Each instruction class of the interpreter: hand-worked values, then the kernel on random ones.

The hand-worked table follows RFC 9669 (32-bit results zero-extended, division by zero gives 0
and modulo by zero keeps the dividend, shifts masked to the width, signed division truncates
towards zero). The differential part loads the same instruction sequences into the running
kernel with bpf(BPF_PROG_LOAD) and runs them with BPF_PROG_TEST_RUN; each sequence leaves r0 and
r1 in the first 16 bytes of the packet.
"""

import random

import pytest

from nicsim.host.ebpf import insn as isa
from nicsim.host.ebpf.elf import Program
from nicsim.host.ebpf.insn import Insn
from nicsim.host.ebpf.interp import ExecError, Vm

from .kernel_oracle import kernel_available, kernel_run_insns

M64 = (1 << 64) - 1
ALU_OPS = [isa.ADD, isa.SUB, isa.MUL, isa.DIV, isa.OR, isa.AND, isa.LSH, isa.RSH, isa.NEG,
           isa.MOD, isa.XOR, isa.MOV, isa.ARSH]
JMP_OPS = [isa.JEQ, isa.JGT, isa.JGE, isa.JSET, isa.JNE, isa.JSGT, isa.JSGE, isa.JLT, isa.JLE,
           isa.JSLT, isa.JSLE]


def lddw(reg, value):
    return [Insn(isa.LD | isa.IMM | isa.DW, reg, 0, 0, value & M64), None]


def mov(reg, imm):
    return Insn(isa.ALU64 | isa.MOV | isa.K, reg, 0, 0, imm)


EXIT = Insn(isa.JMP | isa.EXIT, 0, 0, 0, 0)


def harness(body, a, b):
    """r0 = a, r1 = b, run ``body``, store r0 and r1 at data[0:16], return XDP_PASS."""
    head = [
        Insn(isa.ALU64 | isa.MOV | isa.X, 6, 1, 0, 0),            # r6 = ctx
        Insn(isa.LDX | isa.MEM | isa.W, 8, 6, 0, 0),              # r8 = data
        Insn(isa.LDX | isa.MEM | isa.W, 3, 6, 4, 0),              # r3 = data_end
        Insn(isa.ALU64 | isa.MOV | isa.X, 4, 8, 0, 0),
        Insn(isa.ALU64 | isa.ADD | isa.K, 4, 0, 0, 16),
    ]
    rest = [*lddw(0, a), *lddw(1, b), *body,
            Insn(isa.STX | isa.MEM | isa.DW, 8, 0, 0, 0),
            Insn(isa.STX | isa.MEM | isa.DW, 8, 1, 8, 0),
            mov(0, 2), EXIT]
    # if r4 > r3 goto the final "r0 = 1; exit"
    guard = Insn(isa.JMP | isa.JGT | isa.X, 4, 3, len(rest), 0)
    return [*head, guard, *rest, mov(0, 1), EXIT]


def run_ours(insns, data=bytes(32)):
    vm = Vm(Program("t", "xdp", insns))
    res = vm.run(data)
    return res.verdict, res.packet


def regs_after(body, a, b):
    verdict, out = run_ours(harness(body, a, b))
    assert verdict == 2
    return int.from_bytes(out[0:8], "little"), int.from_bytes(out[8:16], "little")


def alu(op, cls=isa.ALU64, src=isa.X, imm=0, off=0):
    return Insn(cls | op | src, 0, 1 if src == isa.X else 0, off, imm)


# (name, body, a, b, expected r0) - worked by hand from RFC 9669.
HAND = [
    ("add64 wraps", [alu(isa.ADD)], M64, 2, 1),
    ("add32 zero-extends", [alu(isa.ADD, isa.ALU)], 0xFFFF_FFFF_FFFF_FFFF, 1, 0),
    ("sub32", [alu(isa.SUB, isa.ALU)], 0x1_0000_0000, 1, 0xFFFF_FFFF),
    ("mul64", [alu(isa.MUL)], 0x1_0000_0001, 0x1_0000_0001, 0x2_0000_0001),
    ("div64 by zero is 0", [alu(isa.DIV)], 1234, 0, 0),
    ("mod64 by zero keeps", [alu(isa.MOD)], 1234, 0, 1234),
    ("mod32 by zero truncates", [alu(isa.MOD, isa.ALU)], 0x5_0000_0007, 0, 7),
    ("div32 uses low words", [alu(isa.DIV, isa.ALU)], 0x7_0000_0064, 0x1_0000_000A, 10),
    ("sdiv64 truncates toward 0", [alu(isa.DIV, off=1)], -7, 2, -3 & M64),
    ("smod64 sign of dividend", [alu(isa.MOD, off=1)], -7, 2, -1 & M64),
    ("smod64 negative divisor", [alu(isa.MOD, off=1)], 7, -2, 1),
    ("sdiv64 INT_MIN/-1 wraps", [alu(isa.DIV, off=1)], 1 << 63, -1, 1 << 63),
    ("sdiv32", [alu(isa.DIV, isa.ALU, off=1)], 0xFFFF_FFF9, 2, 0xFFFF_FFFD),
    ("lsh64 masks count", [alu(isa.LSH)], 1, 65, 2),
    ("lsh32 masks count", [alu(isa.LSH, isa.ALU)], 1, 33, 2),
    ("rsh64 logical", [alu(isa.RSH)], 1 << 63, 63, 1),
    ("arsh64", [alu(isa.ARSH)], 1 << 63, 62, 0xFFFF_FFFF_FFFF_FFFE),
    ("arsh32 zero-extends", [alu(isa.ARSH, isa.ALU)], 0x8000_0000, 4, 0xF800_0000),
    ("neg64", [Insn(isa.ALU64 | isa.NEG, 0, 0, 0, 0)], 1, 0, M64),
    ("neg32", [Insn(isa.ALU | isa.NEG, 0, 0, 0, 0)], 1, 0, 0xFFFF_FFFF),
    ("mov32 zero-extends", [alu(isa.MOV, isa.ALU)], 5, M64, 0xFFFF_FFFF),
    ("mov64 imm sign-extends", [alu(isa.MOV, src=isa.K, imm=-1)], 0, 0, M64),
    ("mov32 imm", [alu(isa.MOV, isa.ALU, isa.K, imm=-1)], 0, 0, 0xFFFF_FFFF),
    ("movsx8", [alu(isa.MOV, off=8)], 0, 0x180, M64 - 0x7F),
    ("movsx16", [alu(isa.MOV, off=16)], 0, 0x8001, (-0x7FFF) & M64),
    ("movsx32", [alu(isa.MOV, off=32)], 0, 0x8000_0000, 0xFFFF_FFFF_8000_0000),
    ("movsx32 alu32 form 8", [alu(isa.MOV, isa.ALU, off=8)], 0, 0xFF, 0xFFFF_FFFF),
    ("xor32", [alu(isa.XOR, isa.ALU)], 0xFF_0000_00FF, 0x0F, 0xF0),
    ("and64 imm sign-extends", [alu(isa.AND, src=isa.K, imm=-2)], 0xFF, 0, 0xFE),
    ("or32 imm", [alu(isa.OR, isa.ALU, isa.K, imm=0x10)], 0x1_0000_0001, 0, 0x11),
    ("be16", [Insn(isa.ALU | isa.END | isa.X, 0, 0, 0, 16)], 0x1234_5678_9ABC, 0, 0xBC9A),
    ("be32", [Insn(isa.ALU | isa.END | isa.X, 0, 0, 0, 32)], 0x1122_3344_5566, 0, 0x6655_4433),
    ("be64", [Insn(isa.ALU | isa.END | isa.X, 0, 0, 0, 64)], 0x0102030405060708, 0,
     0x0807060504030201),
    ("le16 truncates", [Insn(isa.ALU | isa.END | isa.K, 0, 0, 0, 16)], 0x1234_5678, 0, 0x5678),
    ("bswap32 (alu64)", [Insn(isa.ALU64 | isa.END, 0, 0, 0, 32)], 0xAABB_CCDD_EEFF, 0,
     0xFFEE_DDCC),
]


@pytest.mark.parametrize("name, body, a, b, expected", HAND, ids=[h[0] for h in HAND])
def test_alu_hand_values(name, body, a, b, expected):
    assert regs_after(body, a, b)[0] == expected


def jump_body(op, cls=isa.JMP, src=isa.X, imm=0):
    """r0 = 1 when the jump is taken, else 0."""
    return [Insn(cls | op | src, 0, 1 if src == isa.X else 0, 2, imm), mov(0, 0),
            Insn(isa.JMP | isa.JA, 0, 0, 1, 0), mov(0, 1)]


@pytest.mark.parametrize("op, cls, a, b, taken", [
    (isa.JGT, isa.JMP, M64, 1, 1),           # unsigned: max > 1
    (isa.JSGT, isa.JMP, M64, 1, 0),          # signed: -1 > 1 is false
    (isa.JSLT, isa.JMP, 1 << 63, 0, 1),      # INT64_MIN < 0
    (isa.JSGE, isa.JMP32, 0x1_7FFF_FFFF, 0x8000_0000, 1),   # 32-bit: INT32_MAX >= INT32_MIN
    (isa.JEQ, isa.JMP32, 0x5_0000_0001, 1, 1),  # upper halves ignored
    (isa.JEQ, isa.JMP, 0x5_0000_0001, 1, 0),
    (isa.JSET, isa.JMP, 0b1010, 0b0100, 0),
    (isa.JSET, isa.JMP, 0b1010, 0b0010, 1),
    (isa.JLE, isa.JMP32, 0xFFFF_FFFF, 0, 0),
    (isa.JSLE, isa.JMP32, 0xFFFF_FFFF, 0, 1),
])
def test_jump_hand_values(op, cls, a, b, taken):
    assert regs_after(jump_body(op, cls), a, b)[0] == taken


def test_loads_stores_and_atomics_on_the_stack():
    fp = 10
    body = [
        # *(u64 *)(fp - 8) = r0; *(u8 *)(fp - 8) = 0xAB (imm store); r1 = *(u16 *)(fp - 8)
        Insn(isa.STX | isa.MEM | isa.DW, fp, 0, -8, 0),
        Insn(isa.ST | isa.MEM | isa.B, fp, 0, -8, 0xAB),
        Insn(isa.LDX | isa.MEM | isa.H, 1, fp, -8, 0),
        # r2 = 5; lock *(u64 *)(fp - 8) += r2 (fetch: r2 = old)
        mov(2, 5),
        Insn(isa.STX | isa.ATOMIC | isa.DW, fp, 2, -8, isa.ADD | isa.FETCH),
        # r0 = *(u64 *)(fp - 8) - old (== 5)
        Insn(isa.LDX | isa.MEM | isa.DW, 0, fp, -8, 0),
        Insn(isa.ALU64 | isa.SUB | isa.X, 0, 2, 0, 0),
    ]
    r0, r1 = regs_after(body, 0x1122_3344_5566_7788, 0)
    assert r1 == 0x77AB       # little endian: byte 0 replaced by the byte store
    assert r0 == 5


def test_cmpxchg_and_xchg():
    fp = 10
    body = [
        Insn(isa.STX | isa.MEM | isa.DW, fp, 1, -8, 0),             # mem = b (= 7)
        mov(0, 7), mov(3, 9),
        Insn(isa.STX | isa.ATOMIC | isa.DW, fp, 3, -8, isa.CMPXCHG),  # r0 == mem: mem = 9
        mov(3, 11),
        Insn(isa.STX | isa.ATOMIC | isa.DW, fp, 3, -8, isa.XCHG),     # r3 = 9, mem = 11
        Insn(isa.LDX | isa.MEM | isa.DW, 1, fp, -8, 0),
        Insn(isa.ALU64 | isa.LSH | isa.K, 0, 0, 0, 8),
        Insn(isa.ALU64 | isa.OR | isa.X, 0, 3, 0, 0),
    ]
    r0, r1 = regs_after(body, 0, 7)
    assert (r0, r1) == ((7 << 8) | 9, 11)


def test_bpf_to_bpf_call_keeps_callee_saved_registers():
    # main: r6 = 40; r1 = 2; call sub; r0 += r6; exit.  sub: r6 = 1000; r0 = r1 * 3; exit
    insns = [mov(6, 40), mov(1, 2), Insn(isa.JMP | isa.CALL, 0, isa.PSEUDO_CALL, 0, 2),
             Insn(isa.ALU64 | isa.ADD | isa.X, 0, 6, 0, 0), EXIT,
             mov(6, 1000), Insn(isa.ALU64 | isa.MOV | isa.X, 0, 1, 0, 0),
             Insn(isa.ALU64 | isa.MUL | isa.K, 0, 0, 0, 3), EXIT]
    verdict, _ = run_ours(insns)
    assert verdict == 46


def _call(target_minus_next):
    return Insn(isa.JMP | isa.CALL, 0, isa.PSEUDO_CALL, 0, target_minus_next)


def _st(reg, off, imm):
    return Insn(isa.ST | isa.MEM | isa.DW, reg, 0, off, imm)


def test_nested_calls_with_stacks_of_their_own_match_kernel():
    # main: slot = 5; r0 = sub1(&slot) + r6 (40, kept) + slot (9, written by sub1).
    # sub1: its own slot = 100; r0 = sub2(7) + its slot; *arg = 9.  sub2: r0 = r1 * 3, r6
    # clobbered (the caller's r6 survives): 21 + 100 + 40 + 9 = 170.
    insns = [mov(6, 40), _st(10, -8, 5), Insn(isa.ALU64 | isa.MOV | isa.X, 1, 10, 0, 0),
             Insn(isa.ALU64 | isa.ADD | isa.K, 1, 0, 0, -8), _call(4),
             Insn(isa.ALU64 | isa.ADD | isa.X, 0, 6, 0, 0),
             Insn(isa.LDX | isa.MEM | isa.DW, 2, 10, -8, 0),
             Insn(isa.ALU64 | isa.ADD | isa.X, 0, 2, 0, 0), EXIT,
             # sub1 (9)
             Insn(isa.ALU64 | isa.MOV | isa.X, 6, 1, 0, 0), _st(10, -8, 100), mov(1, 7),
             _call(4), Insn(isa.LDX | isa.MEM | isa.DW, 2, 10, -8, 0),
             Insn(isa.ALU64 | isa.ADD | isa.X, 0, 2, 0, 0), _st(6, 0, 9), EXIT,
             # sub2 (17)
             Insn(isa.ALU64 | isa.MOV | isa.X, 0, 1, 0, 0),
             Insn(isa.ALU64 | isa.MUL | isa.K, 0, 0, 0, 3), mov(6, 555), EXIT]
    assert run_ours(insns)[0] == 170
    ok, _ = kernel_available()
    if ok:
        accepted, retval, out, log = kernel_run_insns(insns, bytes(32))
        assert accepted, log[-400:]
        assert (retval, out) == run_ours(insns)


def test_out_of_bounds_packet_read_names_the_instruction():
    insns = [Insn(isa.LDX | isa.MEM | isa.W, 2, 1, 0, 0),      # r2 = data
             Insn(isa.LDX | isa.MEM | isa.B, 0, 2, 100, 0),    # no bounds check: data[100]
             EXIT]
    with pytest.raises(ExecError, match=r"insn 1: invalid read of 1 bytes at packet"):
        run_ours(insns, bytes(20))


def test_null_and_context_writes_fault():
    with pytest.raises(ExecError, match="insn 1"):
        run_ours([mov(2, 0), Insn(isa.LDX | isa.MEM | isa.W, 0, 2, 0, 0), EXIT])
    with pytest.raises(ExecError, match="insn 0: .*read-only"):
        run_ours([Insn(isa.ST | isa.MEM | isa.W, 1, 0, 0, 5), EXIT])


def test_runaway_loop_is_stopped():
    vm = Vm(Program("t", "xdp", [Insn(isa.JMP | isa.JA, 0, 0, -1, 0), EXIT]), insn_limit=1000)
    with pytest.raises(ExecError, match="more than 1000 instructions"):
        vm.run(bytes(20))


# --- the kernel on random operands -----------------------------------------------------------

def _kernel():
    ok, why = kernel_available()
    if not ok:
        pytest.skip(f"kernel oracle unavailable: {why}")


def _values(rng):
    specials = [0, 1, 2, 31, 32, 63, 64, 0x7FFF_FFFF, 0x8000_0000, 0xFFFF_FFFF, 1 << 63,
                M64, M64 - 1, 0x1_0000_0000]
    return rng.choice(specials) if rng.random() < 0.4 else rng.getrandbits(64)


def _random_alu(rng):
    op = rng.choice(ALU_OPS)
    cls = rng.choice([isa.ALU, isa.ALU64])
    src = isa.K if op == isa.NEG else rng.choice([isa.K, isa.X])
    off = 0
    if op in (isa.DIV, isa.MOD):
        off = rng.choice([0, 1])
    if op == isa.MOV and src == isa.X and rng.random() < 0.4:
        off = rng.choice([8, 16] + ([32] if cls == isa.ALU64 else []))
    imm = rng.randrange(-(1 << 31), 1 << 31)
    if op in (isa.LSH, isa.RSH, isa.ARSH) and src == isa.K:
        imm = rng.randrange(32 if cls == isa.ALU else 64)
    if op in (isa.DIV, isa.MOD) and src == isa.K and imm == 0:
        imm = 3
    if op == isa.NEG or src == isa.X:
        imm = 0
    return [alu(op, cls, src, imm, off)]


def _random_jump(rng):
    src = rng.choice([isa.K, isa.X])
    imm = rng.randrange(-(1 << 31), 1 << 31) if src == isa.K else 0
    return jump_body(rng.choice(JMP_OPS), rng.choice([isa.JMP, isa.JMP32]), src, imm)


def _random_swap(rng):
    kind = rng.choice([(isa.ALU, isa.K), (isa.ALU, isa.X), (isa.ALU64, isa.K)])
    return [Insn(kind[0] | isa.END | kind[1], 0, 0, 0, rng.choice([16, 32, 64]))]


def _random_mem(rng):
    size = rng.choice([isa.B, isa.H, isa.W, isa.DW])
    off = -8 - 8 * rng.randrange(4)
    ops = [Insn(isa.STX | isa.MEM | isa.DW, 10, 0, off, 0)]
    if rng.random() < 0.5:
        width = isa.SIZE_BYTES[size]
        ops.append(Insn(isa.ST | isa.MEM | size, 10, 0, off + width * rng.randrange(8 // width),
                        rng.randrange(-(1 << 31), 1 << 31)))
    else:
        ops.append(Insn(isa.STX | isa.MEM | size, 10, 1, off, 0))
    load = rng.choice([isa.B, isa.H, isa.W, isa.DW])
    mode = isa.MEMSX if load != isa.DW and rng.random() < 0.5 else isa.MEM
    ops.append(Insn(isa.LDX | mode | load, 0, 10, off, 0))
    return ops


def _random_atomic(rng):
    size = rng.choice([isa.W, isa.DW])
    op = rng.choice([isa.ADD, isa.OR, isa.AND, isa.XOR])
    if rng.random() < 0.5:
        op |= isa.FETCH
    if rng.random() < 0.25:
        op = rng.choice([isa.XCHG, isa.CMPXCHG])
    ops = [Insn(isa.STX | isa.MEM | isa.DW, 10, 0, -8, 0)]
    if op == isa.CMPXCHG:
        ops += [Insn(isa.ALU64 | isa.MOV | isa.X, 2, 1, 0, 0),
                Insn(isa.STX | isa.ATOMIC | size, 10, 2, -8, op)]
    else:
        ops.append(Insn(isa.STX | isa.ATOMIC | size, 10, 1, -8, op))
    ops.append(Insn(isa.LDX | isa.MEM | isa.DW, 3, 10, -8, 0))
    ops.append(Insn(isa.ALU64 | isa.XOR | isa.X, 0, 3, 0, 0))   # r0 ^= memory after
    return ops


@pytest.mark.parametrize("kind", ["alu", "jump", "swap", "mem", "atomic"])
def test_instructions_match_kernel(kind):
    _kernel()
    rng = random.Random(f"insn-{kind}")
    make = {"alu": _random_alu, "jump": _random_jump, "swap": _random_swap,
            "mem": _random_mem, "atomic": _random_atomic}[kind]
    checked = 0
    for _ in range(60 if kind == "alu" else 30):
        body = make(rng)
        prog = harness(body, _values(rng), _values(rng))
        accepted, retval, out, log = kernel_run_insns(prog, bytes(32))
        assert accepted, f"kernel refused {[str(i) for i in body]}: {log[-400:]}"
        ours = run_ours(prog)
        assert ours == (retval, out), [str(i) for i in body if i is not None]
        checked += 1
    assert checked


def test_gotol_jumps_by_its_immediate():
    # JMP32 | JA takes its offset from imm (cpu v4 "gotol"): skip the "r0 = 1", which the
    # first jump keeps reachable (r1 is 0 here, so it falls through).
    body = [Insn(isa.JMP | isa.JNE | isa.K, 1, 0, 1, 0), Insn(isa.JMP32 | isa.JA, 0, 0, 0, 1),
            mov(0, 1)]
    assert regs_after(body, 7, 0)[0] == 7
    ok, _ = kernel_available()
    if ok:
        prog = harness(body, 7, 0)
        accepted, retval, out, log = kernel_run_insns(prog, bytes(32))
        assert accepted, log[-300:]
        assert run_ours(prog) == (retval, out)
