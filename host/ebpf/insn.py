"""eBPF instructions: the encoding every part of nicsim.host.ebpf reads.

An instruction is 8 bytes, little endian (the kernel's ``struct bpf_insn``): opcode (u8), the
destination register in the low nibble and the source register in the high nibble of byte 1,
a signed 16-bit offset and a signed 32-bit immediate. ``BPF_LD | BPF_IMM | BPF_DW`` (lddw)
takes two slots; the second slot's immediate holds the upper 32 bits. Jump offsets count slots,
so :func:`decode` keeps one entry per slot and puts ``None`` in the second slot of a lddw.
Opcode names follow include/uapi/linux/bpf.h and bpf_common.h (RFC 9669).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = [
    "Insn", "DecodeError", "decode", "encode",
    "CLASS_NAMES", "ALU_OPS", "JMP_OPS", "SIZE_BYTES",
]

# Instruction classes (op & 0x07).
LD, LDX, ST, STX, ALU, JMP, JMP32, ALU64 = range(8)
CLASS_NAMES = ("ld", "ldx", "st", "stx", "alu", "jmp", "jmp32", "alu64")

# Source operand (op & 0x08) for ALU/JMP.
K, X = 0x00, 0x08

# ALU operations (op & 0xF0).
ADD, SUB, MUL, DIV, OR, AND, LSH, RSH, NEG, MOD, XOR, MOV, ARSH, END = (
    0x00, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0x80, 0x90, 0xA0, 0xB0, 0xC0, 0xD0)
ALU_OPS = {ADD: "add", SUB: "sub", MUL: "mul", DIV: "div", OR: "or", AND: "and", LSH: "lsh",
           RSH: "rsh", NEG: "neg", MOD: "mod", XOR: "xor", MOV: "mov", ARSH: "arsh",
           END: "end"}

# Jump operations (op & 0xF0).
JA, JEQ, JGT, JGE, JSET, JNE, JSGT, JSGE, CALL, EXIT, JLT, JLE, JSLT, JSLE = (
    0x00, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0x80, 0x90, 0xA0, 0xB0, 0xC0, 0xD0)
JMP_OPS = {JA: "ja", JEQ: "jeq", JGT: "jgt", JGE: "jge", JSET: "jset", JNE: "jne",
           JSGT: "jsgt", JSGE: "jsge", CALL: "call", EXIT: "exit", JLT: "jlt", JLE: "jle",
           JSLT: "jslt", JSLE: "jsle"}

# Load/store size (op & 0x18) and mode (op & 0xE0).
W, H, B, DW = 0x00, 0x08, 0x10, 0x18
SIZE_BYTES = {W: 4, H: 2, B: 1, DW: 8}
IMM, ABS, IND, MEM, MEMSX, ATOMIC = 0x00, 0x20, 0x40, 0x60, 0x80, 0xC0

# Atomic operations (imm of a BPF_ATOMIC store).
FETCH = 0x01
XCHG = 0xE0 | FETCH
CMPXCHG = 0xF0 | FETCH

# Source register values with special meaning.
PSEUDO_MAP_FD = 1       # lddw: imm is a map (the loader puts the map's index here)
PSEUDO_MAP_VALUE = 2    # lddw: imm is a map, the next slot's imm an offset into its value
PSEUDO_CALL = 1         # call: imm is a bpf-to-bpf call, relative in slots
PSEUDO_KFUNC_CALL = 2   # call: a kernel function (not supported by nicsim)

_STRUCT = struct.Struct("<BBhi")


class DecodeError(ValueError):
    """Bytes that are not a sequence of eBPF instructions."""


@dataclass(frozen=True)
class Insn:
    """One decoded instruction.

    Members
    -------
    op : int
        The opcode byte.
    dst, src : int
        Register numbers 0..15 (valid ones are 0..10).
    off : int
        Signed 16-bit offset.
    imm : int
        Signed 32-bit immediate; for lddw the whole 64-bit value (unsigned).
    """

    op: int
    dst: int
    src: int
    off: int
    imm: int

    @property
    def cls(self) -> int:
        return self.op & 0x07

    @property
    def is_lddw(self) -> bool:
        return self.op == (LD | IMM | DW)

    @property
    def slots(self) -> int:
        return 2 if self.is_lddw else 1

    def __str__(self) -> str:
        return (f"{CLASS_NAMES[self.cls]} op={self.op:#04x} dst=r{self.dst} src=r{self.src} "
                f"off={self.off} imm={self.imm}")


def decode(code: bytes) -> list[Insn | None]:
    """Decode a program; one entry per 8-byte slot, ``None`` for a lddw's second slot."""
    if len(code) % 8:
        raise DecodeError(f"program is {len(code)} bytes, not a multiple of 8")
    out: list[Insn | None] = []
    n = len(code) // 8
    i = 0
    while i < n:
        op, regs, off, imm = _STRUCT.unpack_from(code, 8 * i)
        if op == (LD | IMM | DW):
            if i + 1 >= n:
                raise DecodeError(f"insn {i}: lddw without its second slot")
            op2, regs2, off2, imm2 = _STRUCT.unpack_from(code, 8 * (i + 1))
            if op2 or regs2 or off2:
                raise DecodeError(f"insn {i + 1}: second slot of lddw is not zero apart "
                                  f"from its immediate")
            value = (imm & 0xFFFFFFFF) | ((imm2 & 0xFFFFFFFF) << 32)
            out.append(Insn(op, regs & 0xF, regs >> 4, off, value))
            out.append(None)
            i += 2
        else:
            out.append(Insn(op, regs & 0xF, regs >> 4, off, imm))
            i += 1
    return out


def encode(insns) -> bytes:
    """Encode instructions (``None`` slots skipped; lddw writes both of its slots)."""
    parts = []
    for ins in insns:
        if ins is None:
            continue
        regs = (ins.dst & 0xF) | ((ins.src & 0xF) << 4)
        if ins.is_lddw:
            value = ins.imm & 0xFFFFFFFFFFFFFFFF
            lo = value & 0xFFFFFFFF
            hi = value >> 32
            parts.append(_STRUCT.pack(ins.op, regs, ins.off, lo - (1 << 32) if lo >> 31 else lo))
            parts.append(_STRUCT.pack(0, 0, 0, hi - (1 << 32) if hi >> 31 else hi))
        else:
            parts.append(_STRUCT.pack(ins.op, regs, ins.off, ins.imm))
    return b"".join(parts)
