"""The verifier on hand-assembled programs, one rule at a time, against the running kernel.

Every case says whether nicsim accepts it and which words its reason holds, and the same
instructions go to the kernel's verifier through bpf(BPF_PROG_LOAD): the test asserts that the
kernel agrees, or, for the rules where nicsim is stricter by design, that the kernel in
the mode the case names agrees (``perfmon=False``: a loader without CAP_PERFMON, whose kernel
also refuses uninitialised stack reads and pointer returns), or that the kernel accepts what
nicsim rejects (XDP return values out of range: the kernel does not check them; reads of
struct bpf_map through a map pointer, which nicsim has no layout for).
"""

from __future__ import annotations

import ctypes
import os
import random
import struct
from dataclasses import dataclass

import pytest

from nicsim.host.ebpf import insn as isa
from nicsim.host.ebpf.insn import Insn
from nicsim.host.ebpf.protos import HelperId, MapType
from nicsim.host.ebpf.verifier import verify

# ---------------------------------------------------------------------------------------------
# a small assembler (the kernel's BPF_* instruction macros, include/linux/filter.h)

R0, R1, R2, R3, R4, R5, R6, R7, R8, R9, R10 = range(11)


def mov(dst, imm):
    return Insn(isa.ALU64 | isa.MOV | isa.K, dst, 0, 0, imm)


def movr(dst, src):
    return Insn(isa.ALU64 | isa.MOV | isa.X, dst, src, 0, 0)


def alu(op, dst, imm):
    return Insn(isa.ALU64 | op | isa.K, dst, 0, 0, imm)


def alur(op, dst, src):
    return Insn(isa.ALU64 | op | isa.X, dst, src, 0, 0)


def alu32(op, dst, imm):
    return Insn(isa.ALU | op | isa.K, dst, 0, 0, imm)


def alu32r(op, dst, src):
    return Insn(isa.ALU | op | isa.X, dst, src, 0, 0)


def ldx(size, dst, src, off):
    return Insn(isa.LDX | isa.MEM | size, dst, src, off, 0)


def ldxsx(size, dst, src, off):
    return Insn(isa.LDX | isa.MEMSX | size, dst, src, off, 0)


def stx(size, dst, src, off):
    return Insn(isa.STX | isa.MEM | size, dst, src, off, 0)


def st(size, dst, off, imm):
    return Insn(isa.ST | isa.MEM | size, dst, 0, off, imm)


def atomic(size, dst, src, off, op):
    return Insn(isa.STX | isa.ATOMIC | size, dst, src, off, op)


def jmp(op, dst, imm, off):
    return Insn(isa.JMP | op | isa.K, dst, 0, off, imm)


def jmpr(op, dst, src, off):
    return Insn(isa.JMP | op | isa.X, dst, src, off, 0)


def jmp32(op, dst, imm, off):
    return Insn(isa.JMP32 | op | isa.K, dst, 0, off, imm)


def ja(off):
    return Insn(isa.JMP | isa.JA, 0, 0, off, 0)


def call(helper):
    return Insn(isa.JMP | isa.CALL, 0, 0, 0, int(helper))


def call_local(rel):
    return Insn(isa.JMP | isa.CALL, 0, isa.PSEUDO_CALL, 0, rel)


def exit_():
    return Insn(isa.JMP | isa.EXIT, 0, 0, 0, 0)


def lddw(dst, value):
    return [Insn(isa.LD | isa.IMM | isa.DW, dst, 0, 0, value & (2**64 - 1)), None]


def ld_map(dst, index):
    return [Insn(isa.LD | isa.IMM | isa.DW, dst, isa.PSEUDO_MAP_FD, 0, index), None]


def prog(*parts):
    out = []
    for p in parts:
        out.extend(p if isinstance(p, list) else [p])
    return out


B, H, W, DW = isa.B, isa.H, isa.W, isa.DW
CTX_DATA, CTX_END, CTX_META, CTX_IFINDEX, CTX_RXQ, CTX_EGRESS = 0, 4, 8, 12, 16, 20


@dataclass
class MapDef:
    type: int
    key_size: int
    value_size: int
    max_entries: int
    flags: int = 0


HASH = MapDef(MapType.hash, 4, 16, 64)
ARRAY = MapDef(MapType.array, 4, 64, 8)
DEVMAP = MapDef(MapType.devmap, 4, 4, 8)
XSKMAP = MapDef(MapType.xskmap, 4, 4, 4)

# Loads data into r2, data_end into r3.
PKT = [ldx(W, R2, R1, CTX_DATA), ldx(W, R3, R1, CTX_END)]
# r4 = data + n; if r4 > data_end goto +k.
def pkt_check(n, skip):
    return [movr(R4, R2), alu(isa.ADD, R4, n), jmpr(isa.JGT, R4, R3, skip)]


RET_PASS = [mov(R0, 2), exit_()]


# ---------------------------------------------------------------------------------------------
# the kernel's verifier through bpf(2)

SYS_BPF = 321  # x86_64
BPF_MAP_CREATE, BPF_MAP_UPDATE_ELEM, BPF_PROG_LOAD, BPF_MAP_FREEZE = 0, 2, 5, 22
BPF_F_RDONLY_PROG = 1 << 7
BPF_PROG_TYPE_XDP = 6
_libc = ctypes.CDLL(None, use_errno=True)


def _bpf(cmd, attr: bytearray):
    buf = (ctypes.c_char * len(attr)).from_buffer(attr)
    ret = _libc.syscall(SYS_BPF, cmd, buf, len(attr))
    return ret, ctypes.get_errno()


def _kernel_load(insns, maps, log=True):
    """Load into the kernel; return (accepted, last log line: only with ``log``)."""
    fds = []
    try:
        for m in maps:
            attr = bytearray(128)
            struct.pack_into("<IIIII", attr, 0, int(m.type), m.key_size, m.value_size,
                             m.max_entries, m.flags)
            fd, err = _bpf(BPF_MAP_CREATE, attr)
            if fd < 0:
                return None, f"map create failed: {os.strerror(err)}"
            fds.append(fd)
            initial = getattr(m, "initial", None)
            if initial is not None:
                # Global data as libbpf leaves it: the value written, .rodata frozen (its
                # contents are then constants to the verifier).
                key = ctypes.create_string_buffer(4)
                value = ctypes.create_string_buffer(bytes(initial), len(initial))
                attr = bytearray(32)
                struct.pack_into("<IIQQQ", attr, 0, fd, 0, ctypes.addressof(key),
                                 ctypes.addressof(value), 0)
                if _bpf(BPF_MAP_UPDATE_ELEM, attr)[0] < 0:
                    return None, "map update failed"
                if m.flags & BPF_F_RDONLY_PROG:
                    attr = bytearray(8)
                    struct.pack_into("<I", attr, 0, fd)
                    if _bpf(BPF_MAP_FREEZE, attr)[0] < 0:
                        return None, "map freeze failed"
        code = []
        for ins in insns:
            if ins is not None and ins.is_lddw and ins.src in (isa.PSEUDO_MAP_FD,
                                                               isa.PSEUDO_MAP_VALUE):
                index = ins.imm & 0xFFFFFFFF
                fd = fds[index] if index < len(fds) else 0x7FFFFFFF
                ins = Insn(ins.op, ins.dst, ins.src, ins.off, (ins.imm >> 32 << 32) | fd)
            code.append(ins)
        blob = isa.encode(code)
        cbuf = ctypes.create_string_buffer(blob, len(blob))
        lic = ctypes.create_string_buffer(b"GPL")
        for level, size in ((0, 0), (1, 1 << 24))[:2 if log else 1]:
            logbuf = ctypes.create_string_buffer(size or 1)
            attr = bytearray(144)
            struct.pack_into("<IIQQIIQ", attr, 0, BPF_PROG_TYPE_XDP, len(blob) // 8,
                             ctypes.addressof(cbuf), ctypes.addressof(lic), level, size,
                             ctypes.addressof(logbuf) if size else 0)
            fd, err = _bpf(BPF_PROG_LOAD, attr)
            if fd >= 0:
                os.close(fd)
                return True, ""
            if level:
                lines = [ln for ln in logbuf.value.decode(errors="replace").splitlines()
                         if ln.strip() and not ln.startswith(("processed", "verification"))]
                return False, lines[-1] if lines else os.strerror(err)
        return False, "" if log else os.strerror(err)
    finally:
        for fd in fds:
            os.close(fd)


class _Cap(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


class _CapHdr(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


CAP_SYS_ADMIN, CAP_PERFMON = 21, 38


def drop_perfmon():
    """Drop CAP_SYS_ADMIN and CAP_PERFMON from this process's effective capabilities."""
    hdr = _CapHdr(0x20080522, 0)
    data = (_Cap * 2)()
    if _libc.capget(ctypes.byref(hdr), data) != 0:
        raise OSError(ctypes.get_errno(), "capget")
    for cap in (CAP_SYS_ADMIN, CAP_PERFMON):
        data[cap // 32].effective &= ~(1 << (cap % 32))
    if _libc.capset(ctypes.byref(hdr), data) != 0:
        raise OSError(ctypes.get_errno(), "capset")


def in_child(fn, *args):
    """Run ``fn(*args)`` in a forked child without CAP_PERFMON; return its (bool, str)."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            os.close(rfd)
            drop_perfmon()
            ok, msg = fn(*args)
            os.write(wfd, (("1" if ok else "0" if ok is not None else "-") + msg).encode())
        except BaseException as exc:  # noqa: BLE001 - report anything to the parent
            os.write(wfd, f"-{exc}".encode())
        finally:
            os._exit(0)
    os.close(wfd)
    chunks = []
    while chunk := os.read(rfd, 65536):
        chunks.append(chunk)
    os.close(rfd)
    os.waitpid(pid, 0)
    text = b"".join(chunks).decode(errors="replace")
    flag, msg = text[:1], text[1:]
    return {"1": True, "0": False}.get(flag), msg


_KERNEL = None


def kernel_ready():
    """Return (True, "") when bpf(BPF_PROG_LOAD) works here, else (False, why)."""
    global _KERNEL
    if _KERNEL is None:
        if os.geteuid() != 0:
            _KERNEL = (False, "not root: the kernel's verifier needs CAP_BPF and "
                              "CAP_NET_ADMIN to load XDP programs")
        else:
            try:
                ok, msg = _kernel_load(prog(RET_PASS), [])
            except OSError as exc:
                ok, msg = False, str(exc)
            _KERNEL = (bool(ok), "" if ok else f"the kernel refuses a trivial XDP program: "
                                                f"{msg}")
    return _KERNEL


def kernel_verdict(insns, maps, perfmon=True):
    if perfmon:
        return _kernel_load(insns, maps)
    return in_child(_kernel_load, insns, maps)


# ---------------------------------------------------------------------------------------------
# the cases


@dataclass
class Case:
    name: str
    insns: list
    ok: bool
    why: str = ""           # words of nicsim's reason (rejections)
    maps: tuple = ()
    insn: int | None = None  # slot nicsim must name
    kernel: str = "same"    # "same"; "noperfmon": agrees without CAP_PERFMON; "accepts"


def C(name, parts, ok, why="", maps=(), insn=None, kernel="same"):
    return Case(name, prog(*parts), ok, why, tuple(maps), insn, kernel)


def _map_lookup(key_off=-8, map_index=0):
    """r0 = lookup(map, fp+key_off) with a zeroed 8-byte key slot."""
    return [st(DW, R10, -8, 0), *ld_map(R1, map_index), movr(R2, R10), alu(isa.ADD, R2, key_off),
            call(HelperId.map_lookup_elem)]


def _xsk(*body):
    """Look up slot 0 of an xskmap (map 0); XDP_PASS on NULL, else ``body`` from insn 9 with
    the socket (the kernel's PTR_TO_XDP_SOCK) in R0."""
    return [*_map_lookup(), jmp(isa.JNE, R0, 0, 2), *RET_PASS, *body]


CASES = [
    # ---- control flow
    C("empty-fallthrough", [mov(R0, 2)], False, "last insn is not an exit", insn=0),
    C("jump-out-of-range", [mov(R0, 2), ja(5), exit_()], False, "jump out of range", insn=1),
    C("jump-into-lddw", [mov(R0, 2), jmp(isa.JEQ, R0, 0, 1), lddw(R1, 5), exit_()], False,
      "middle of ldimm64", insn=1),
    C("unreachable", [mov(R0, 2), exit_(), mov(R0, 1), exit_()], False, "unreachable insn 2",
      insn=2),
    C("infinite-loop", [mov(R0, 2), ldx(W, R2, R1, CTX_RXQ), jmp(isa.JEQ, R2, 0, 1), ja(-1),
                        exit_()], False, "infinite loop", insn=3),
    C("bounded-loop", [mov(R1, 0), alu(isa.ADD, R1, 1), jmp(isa.JLT, R1, 10, -2), *RET_PASS],
      True),
    C("loop-bounded-by-packet-byte",
      [*PKT, *pkt_check(1, 6), ldx(B, R5, R2, 0), mov(R1, 0), alu(isa.ADD, R1, 1),
       jmpr(isa.JLT, R1, R5, -2), *RET_PASS, *RET_PASS], True),
    C("ld-abs", [Insn(isa.LD | isa.ABS | isa.B, 0, 0, 0, 12), *RET_PASS], False,
      "BPF_LD_[ABS|IND]", insn=0),
    C("div-by-zero-imm", [mov(R0, 2), alu(isa.DIV, R0, 0), exit_()], False, "div by zero"),
    C("div-by-zero-reg-is-fine", [mov(R0, 2), mov(R1, 0), alur(isa.DIV, R0, R1), mov(R0, 2),
                                  exit_()], True),
    C("shift-too-far", [mov(R0, 2), alu(isa.LSH, R0, 64), exit_()], False, "invalid shift"),
    # div and mod results are unknown 64-bit scalars to the kernel, constants included
    C("div-const-not-folded", [mov(R2, 8), alu(isa.DIV, R2, 2), jmp(isa.JEQ, R2, 4, 1),
                               ldx(DW, R0, R10, 8), *RET_PASS], False,
      "invalid read from stack", insn=3),
    C("mod32-not-zero-extended", [ldx(W, R2, R1, CTX_IFINDEX), alu32(isa.MOD, R2, 16),
                                  *lddw(R3, 0xFFFFFFFF), jmpr(isa.JGT, R2, R3, 2), *RET_PASS,
                                  ldx(DW, R0, R10, 8), *RET_PASS], False,
      "invalid read from stack", insn=7),
    C("pkt-var-off-by-div", [*PKT, *pkt_check(1, 7), ldx(B, R5, R2, 0), alu(isa.DIV, R5, 4),
                             alur(isa.ADD, R2, R5), *pkt_check(2, 1), ldx(H, R0, R2, 0),
                             *RET_PASS], False, "unbounded min value", insn=7),
    C("pkt-var-off-by-div-masked", [*PKT, *pkt_check(1, 8), ldx(B, R5, R2, 0),
                                    alu(isa.DIV, R5, 4), alu(isa.AND, R5, 63),
                                    alur(isa.ADD, R2, R5), *pkt_check(2, 1),
                                    ldx(H, R0, R2, 0), *RET_PASS], True),
    # ---- registers
    C("uninit-reg", [movr(R0, R5), exit_()], False, "R5 !read_ok", insn=0),
    C("uninit-r0-at-exit", [exit_()], False, "R0 !read_ok", insn=0),
    C("write-fp", [mov(R10, 0), *RET_PASS], False, "frame pointer is read only", insn=0),
    C("bad-register", [Insn(isa.ALU64 | isa.MOV | isa.K, 11, 0, 0, 0), *RET_PASS], False,
      "R11 is invalid"),
    C("callee-saved-clobbered", [call(HelperId.ktime_get_ns), movr(R0, R1), *RET_PASS], False,
      "R1 !read_ok", insn=1),
    # ---- packet access
    C("pkt-no-check", [*PKT, ldx(B, R0, R2, 0), *RET_PASS], False,
      "invalid access to packet", insn=2),
    C("pkt-checked", [*PKT, *pkt_check(14, 2), ldx(H, R0, R2, 12), mov(R0, 1), *RET_PASS],
      True),
    C("pkt-off-by-one", [*PKT, *pkt_check(14, 2), ldx(H, R0, R2, 13), mov(R0, 1), *RET_PASS],
      False, "off=13 size=2", insn=5),
    C("pkt-check-wrong-branch", [*PKT, *pkt_check(14, 2), *RET_PASS, ldx(B, R0, R2, 0),
                                 *RET_PASS], False, "invalid access to packet", insn=7),
    C("pkt-end-on-left", [*PKT, movr(R4, R2), alu(isa.ADD, R4, 14), jmpr(isa.JLT, R3, R4, 2),
                          ldx(B, R0, R2, 13), mov(R0, 1), *RET_PASS], True),
    C("pkt-jge-strict", [*PKT, movr(R4, R2), alu(isa.ADD, R4, 14), jmpr(isa.JGE, R4, R3, 2),
                         ldx(B, R0, R2, 14), mov(R0, 1), *RET_PASS], True),
    C("pkt-jge-strict-past", [*PKT, movr(R4, R2), alu(isa.ADD, R4, 14),
                              jmpr(isa.JGE, R4, R3, 2), ldx(H, R0, R2, 14), mov(R0, 1),
                              *RET_PASS], False, "invalid access to packet"),
    C("pkt-jle-taken", [*PKT, movr(R4, R2), alu(isa.ADD, R4, 8), jmpr(isa.JLE, R4, R3, 2),
                        *RET_PASS, ldx(DW, R0, R2, 0), *RET_PASS], True),
    C("pkt-jlt-end-fall", [*PKT, movr(R4, R2), alu(isa.ADD, R4, 8), jmpr(isa.JLT, R3, R4, 3),
                           ldx(DW, R0, R2, 0), *RET_PASS, *RET_PASS], True),
    C("pkt-write", [*PKT, *pkt_check(6, 2), st(W, R2, 0, 0x11223344), mov(R0, 3), *RET_PASS],
      True),
    C("pkt-end-arith", [*PKT, alu(isa.ADD, R3, 1), *RET_PASS], False,
      "pointer arithmetic on pkt_end", insn=2),
    C("pkt-end-deref", [*PKT, ldx(B, R0, R3, 0), *RET_PASS], False,
      "invalid mem access 'pkt_end'"),
    C("pkt-var-off", [*PKT, *pkt_check(1, 8), ldx(B, R5, R2, 0), alu(isa.AND, R5, 15),
                      alu(isa.LSH, R5, 2), alur(isa.ADD, R2, R5), *pkt_check(2, 1),
                      ldx(H, R0, R2, 0), *RET_PASS], True),
    C("pkt-var-off-check-lost", [*PKT, *pkt_check(2, 6), ldx(B, R5, R2, 0),
                                 alu(isa.AND, R5, 15), alur(isa.ADD, R2, R5),
                                 ldx(B, R0, R2, 0), *RET_PASS, *RET_PASS], False,
      "invalid access to packet"),
    C("pkt-var-off-unbounded", [*PKT, *pkt_check(8, 3), ldx(DW, R5, R2, 0),
                                alur(isa.ADD, R2, R5), ldx(B, R0, R2, 0), *RET_PASS], False,
      "unbounded min value"),
    C("pkt-meta", [ldx(W, R2, R1, CTX_META), ldx(W, R3, R1, CTX_DATA), movr(R4, R2),
                   alu(isa.ADD, R4, 4), jmpr(isa.JGT, R4, R3, 1), ldx(W, R0, R2, 0),
                   *RET_PASS], True),
    C("pkt-meta-unchecked", [ldx(W, R2, R1, CTX_META), ldx(W, R0, R2, 0), *RET_PASS], False,
      "invalid access to packet"),
    C("pkt-spill-fill", [*PKT, stx(DW, R10, R2, -8), *pkt_check(4, 2), ldx(DW, R6, R10, -8),
                         ldx(W, R0, R6, 0), *RET_PASS], True),
    C("pkt-partial-fill", [*PKT, stx(DW, R10, R2, -8), ldx(W, R6, R10, -8), *RET_PASS],
      False, "invalid size of register fill"),
    C("adjust-head-stale", [*PKT, *pkt_check(4, 6), movr(R6, R2), mov(R2, 4),
                            call(HelperId.xdp_adjust_head), ldx(B, R0, R6, 0), *RET_PASS,
                            *RET_PASS], False, "invalid mem access 'scalar'"),
    C("adjust-head-reload", [movr(R6, R1), mov(R2, 4), call(HelperId.xdp_adjust_head),
                             ldx(W, R2, R6, CTX_DATA), ldx(W, R3, R6, CTX_END),
                             *pkt_check(1, 1), ldx(B, R0, R2, 0), *RET_PASS], True),
    # ---- context
    C("ctx-write", [mov(R2, 1), stx(W, R1, R2, CTX_RXQ), *RET_PASS], False,
      "invalid bpf_context access", insn=1),
    C("ctx-store-imm", [st(W, R1, CTX_RXQ, 1), *RET_PASS], False, "BPF_ST stores into R1 ctx"),
    C("ctx-read-8", [ldx(DW, R2, R1, CTX_DATA), *RET_PASS], False, "invalid bpf_context"),
    C("ctx-read-past", [ldx(W, R2, R1, 24), *RET_PASS], False, "invalid bpf_context"),
    C("ctx-read-egress", [ldx(W, R2, R1, CTX_EGRESS), *RET_PASS], False,
      "invalid bpf_context"),
    C("ctx-read-ifindex", [ldx(W, R2, R1, CTX_IFINDEX), ldx(W, R3, R1, CTX_RXQ), *RET_PASS],
      True),
    C("ctx-modified", [alu(isa.ADD, R1, 4), ldx(W, R2, R1, 0), *RET_PASS], False,
      "modified ctx ptr"),
    # ---- stack
    C("stack-uninit-read", [ldx(DW, R2, R10, -8), *RET_PASS], False, "invalid read from stack",
      insn=0, kernel="noperfmon"),
    C("stack-partly-written", [st(W, R10, -8, 1), ldx(DW, R2, R10, -8), *RET_PASS], False,
      "invalid read from stack", kernel="noperfmon"),
    C("stack-written-read", [st(W, R10, -8, 1), st(W, R10, -4, 2), ldx(DW, R2, R10, -8),
                             ldx(B, R3, R10, -5), *RET_PASS], True),
    C("stack-overflow", [st(DW, R10, -520, 0), *RET_PASS], False, "invalid write to stack"),
    C("stack-above-fp", [st(DW, R10, 0, 0), *RET_PASS], False, "invalid write to stack"),
    C("stack-misaligned", [st(W, R10, -6, 0), *RET_PASS], False, "misaligned stack access"),
    C("stack-ptr-spill-narrow", [*PKT, stx(W, R10, R2, -8), *RET_PASS], False,
      "invalid size of register spill"),
    C("stack-sub-fp", [movr(R2, R10), alu(isa.SUB, R2, 8), st(DW, R2, 0, 0), *RET_PASS], False,
      "subtraction from stack pointer"),
    C("stack-const-spill", [mov(R2, 3), stx(DW, R10, R2, -16), ldx(DW, R0, R10, -16),
                            exit_()], True),
    # ---- maps
    C("map-lookup-checked", [*_map_lookup(), jmp(isa.JEQ, R0, 0, 1), ldx(DW, R1, R0, 8),
                             *RET_PASS], True, maps=[HASH]),
    C("map-null-deref", [*_map_lookup(), ldx(DW, R1, R0, 0), *RET_PASS], False,
      "invalid mem access 'map_value_or_null'", maps=[HASH]),
    C("map-null-branch-deref", [*_map_lookup(), jmp(isa.JNE, R0, 0, 1), ldx(DW, R1, R0, 0),
                                *RET_PASS], False, "invalid mem access 'scalar'",
      maps=[HASH]),
    C("map-value-oob", [*_map_lookup(), jmp(isa.JEQ, R0, 0, 1), ldx(DW, R1, R0, 16),
                        *RET_PASS], False, "invalid access to map value", maps=[HASH]),
    C("map-value-idx-bounded", [movr(R6, R1), call(HelperId.get_prandom_u32), movr(R7, R0),
                                *_map_lookup(), jmp(isa.JEQ, R0, 0, 4), movr(R8, R7),
                                jmp(isa.JGT, R8, 56, 2), alur(isa.ADD, R0, R7),
                                ldx(DW, R1, R0, 0), *RET_PASS], True, maps=[ARRAY]),
    C("map-value-idx-unbounded", [movr(R6, R1), call(HelperId.get_prandom_u32), movr(R7, R0),
                                  *_map_lookup(), jmp(isa.JEQ, R0, 0, 4), movr(R8, R7),
                                  jmp(isa.JGT, R8, 60, 2), alur(isa.ADD, R0, R7),
                                  ldx(DW, R1, R0, 0), *RET_PASS], False,
      "outside of allowed memory range", maps=[ARRAY]),
    C("array-const-key-not-null", [st(W, R10, -4, 0), *ld_map(R1, 0), movr(R2, R10),
                                   alu(isa.ADD, R2, -4), call(HelperId.map_lookup_elem),
                                   ldx(DW, R1, R0, 0), *RET_PASS], True, maps=[ARRAY]),
    C("array-const-key-spilled-wider", [st(DW, R10, -8, 0), *ld_map(R1, 0), movr(R2, R10),
                                        alu(isa.ADD, R2, -8), call(HelperId.map_lookup_elem),
                                        ldx(DW, R1, R0, 0), *RET_PASS], False,
      "map_value_or_null", maps=[ARRAY]),
    C("array-key-past-end", [st(W, R10, -4, 8), *ld_map(R1, 0), movr(R2, R10),
                             alu(isa.ADD, R2, -4), call(HelperId.map_lookup_elem),
                             ldx(DW, R1, R0, 0), *RET_PASS], False, "map_value_or_null",
      maps=[ARRAY]),
    C("hash-const-key-may-be-null", [st(W, R10, -4, 0), *ld_map(R1, 0), movr(R2, R10),
                                     alu(isa.ADD, R2, -4), call(HelperId.map_lookup_elem),
                                     ldx(DW, R1, R0, 0), *RET_PASS], False,
      "map_value_or_null", maps=[HASH]),
    C("map-arith-before-null-check", [*_map_lookup(), alu(isa.ADD, R0, 8), *RET_PASS], False,
      "null-check it first", maps=[HASH]),
    C("map-key-uninit", [*ld_map(R1, 0), movr(R2, R10), alu(isa.ADD, R2, -8),
                         call(HelperId.map_lookup_elem), *RET_PASS], False,
      "indirect read from stack", maps=[HASH], kernel="noperfmon"),
    C("map-key-outside-stack", [*ld_map(R1, 0), movr(R2, R10), alu(isa.ADD, R2, -2),
                                call(HelperId.map_lookup_elem), *RET_PASS], False,
      "invalid indirect access to stack", maps=[HASH]),
    C("map-arg-not-map", [mov(R1, 0), movr(R2, R10), alu(isa.ADD, R2, -8),
                          call(HelperId.map_lookup_elem), *RET_PASS], False,
      "R1 type=scalar expected=map_ptr"),
    C("map-update", [st(DW, R10, -8, 0), st(DW, R10, -24, 0), st(DW, R10, -16, 7),
                     *ld_map(R1, 0), movr(R2, R10), alu(isa.ADD, R2, -8), movr(R3, R10),
                     alu(isa.ADD, R3, -24), mov(R4, 0), call(HelperId.map_update_elem),
                     *RET_PASS], True, maps=[HASH]),
    C("map-update-value-short", [st(DW, R10, -8, 0), st(DW, R10, -16, 7), *ld_map(R1, 0),
                                 movr(R2, R10), alu(isa.ADD, R2, -8), movr(R3, R10),
                                 alu(isa.ADD, R3, -8), mov(R4, 0),
                                 call(HelperId.map_update_elem), *RET_PASS], False,
      "invalid indirect access to stack", maps=[HASH]),
    C("map-key-from-packet", [*PKT, *pkt_check(4, 5), *ld_map(R1, 0),
                              call(HelperId.map_lookup_elem), *RET_PASS, *RET_PASS], True,
      maps=[HASH]),
    C("map-key-packet-short", [*PKT, *pkt_check(3, 5), *ld_map(R1, 0),
                               call(HelperId.map_lookup_elem), *RET_PASS, *RET_PASS], False,
      "invalid indirect access to packet", maps=[HASH]),
    C("redirect-map-devmap", [*ld_map(R1, 0), mov(R2, 0), mov(R3, 0),
                              call(HelperId.redirect_map), exit_()], True, maps=[DEVMAP]),
    C("redirect-map-on-array", [*ld_map(R1, 0), mov(R2, 0), mov(R3, 0),
                                call(HelperId.redirect_map), exit_()], False,
      "cannot take a map of type array", maps=[ARRAY]),
    C("lookup-on-cpumap", [*_map_lookup(), *RET_PASS], False, "cannot be used with",
      maps=[MapDef(MapType.cpumap, 4, 4, 4)]),
    C("map-ptr-deref", [*ld_map(R1, 0), ldx(W, R2, R1, 16), *RET_PASS], False,
      "invalid mem access 'map_ptr'", maps=[DEVMAP], kernel="accepts"),
    C("bad-map-index", [*ld_map(R1, 3), *RET_PASS], False, "not pointing to valid bpf_map",
      maps=[HASH]),
    # ---- an xskmap lookup: struct bpf_xdp_sock, read-only, its u32 queue_id alone
    C("xsk-read-queue-id", _xsk(ldx(W, R1, R0, 0), *RET_PASS), True, maps=[XSKMAP]),
    C("xsk-read-queue-id-sx", _xsk(ldxsx(W, R1, R0, 0), *RET_PASS), True, maps=[XSKMAP]),
    C("xsk-read-before-null-check", [*_map_lookup(), ldx(W, R1, R0, 0), *RET_PASS], False,
      "R0 invalid mem access 'map_value_or_null'", maps=[XSKMAP], insn=6),
    C("xsk-read-byte", _xsk(ldx(B, R1, R0, 1), *RET_PASS), False,
      "R0 invalid xdp_sock access off=1 size=1", maps=[XSKMAP], insn=9),
    C("xsk-read-half", _xsk(ldx(H, R1, R0, 0), *RET_PASS), False,
      "R0 invalid xdp_sock access off=0 size=2", maps=[XSKMAP], insn=9),
    C("xsk-read-misaligned", _xsk(ldx(W, R1, R0, 2), *RET_PASS), False,
      "R0 invalid xdp_sock access off=2 size=4", maps=[XSKMAP], insn=9),
    C("xsk-read-past-queue-id", _xsk(ldx(W, R1, R0, 4), *RET_PASS), False,
      "R0 invalid xdp_sock access off=4 size=4", maps=[XSKMAP], insn=9),
    C("xsk-read-dw", _xsk(ldx(DW, R1, R0, 0), *RET_PASS), False,
      "R0 invalid xdp_sock access off=0 size=8", maps=[XSKMAP], insn=9),
    C("xsk-write", _xsk(mov(R1, 5), stx(W, R0, R1, 0), *RET_PASS), False,
      "R0 cannot write into xdp_sock", maps=[XSKMAP], insn=10),
    C("xsk-store-imm", _xsk(st(H, R0, 1, 5), *RET_PASS), False,
      "R0 cannot write into xdp_sock", maps=[XSKMAP], insn=9),
    C("xsk-atomic", _xsk(mov(R1, 1), atomic(W, R0, R1, 0, isa.ADD), *RET_PASS), False,
      "BPF_ATOMIC stores into R0 xdp_sock is not allowed", maps=[XSKMAP], insn=10),
    C("xsk-ptr-add-0", _xsk(alu(isa.ADD, R0, 0), *RET_PASS), False,
      "R0 pointer arithmetic on xdp_sock prohibited", maps=[XSKMAP], insn=9),
    C("xsk-as-map-key", _xsk(movr(R2, R0), *ld_map(R1, 1), call(HelperId.map_lookup_elem),
                             *RET_PASS), False, "R2 type=xdp_sock expected=",
      maps=[XSKMAP, HASH], insn=12),
    C("xsk-as-helper-memory", _xsk(movr(R1, R0), mov(R2, 4), mov(R3, 0), mov(R4, 0),
                                   mov(R5, 0), call(HelperId.csum_diff), *RET_PASS), False,
      "R1 type=xdp_sock expected=", maps=[XSKMAP], insn=14),
    C("xsk-spilled-and-filled", _xsk(stx(DW, R10, R0, -16), ldx(DW, R1, R10, -16),
                                     ldx(W, R2, R1, 0), *RET_PASS), True, maps=[XSKMAP]),
    C("xsk-as-redirect-key", _xsk(movr(R2, R0), *ld_map(R1, 0), mov(R3, 0),
                                  call(HelperId.redirect_map), exit_()), True, maps=[XSKMAP]),
    # reg_not_null() leaves out PTR_TO_XDP_SOCK: a second NULL check walks both branches.
    C("xsk-checked-again", _xsk(jmp(isa.JNE, R0, 0, 1), ldx(W, R1, R5, 0), *RET_PASS), False,
      "R5 !read_ok", maps=[XSKMAP], insn=10),
    # ---- helpers
    C("helper-not-for-xdp", [mov(R2, 0), call(26), *RET_PASS], False, "cannot use helper"),
    C("helper-ctx-arg", [mov(R1, 0), mov(R2, 4), call(HelperId.xdp_adjust_head), *RET_PASS],
      False, "R1 type=scalar expected=ctx"),
    C("helper-arg-uninit", [call(HelperId.redirect), *RET_PASS], False, "R2 !read_ok"),
    C("csum-diff-null", [mov(R1, 0), mov(R2, 0), st(DW, R10, -8, 1), movr(R3, R10),
                         alu(isa.ADD, R3, -8), mov(R4, 8), mov(R5, 0),
                         call(HelperId.csum_diff), *RET_PASS], True),
    C("csum-diff-size-unbounded", [movr(R6, R1), call(HelperId.get_prandom_u32), movr(R4, R0),
                                   mov(R1, 0), mov(R2, 0), st(DW, R10, -8, 1),
                                   movr(R3, R10), alu(isa.ADD, R3, -8), mov(R5, 0),
                                   call(HelperId.csum_diff), *RET_PASS], False,
      "R4 min value is negative"),
    C("csum-diff-size-masked", [movr(R6, R1), call(HelperId.get_prandom_u32), movr(R4, R0),
                                alu(isa.AND, R4, 7), mov(R1, 0), mov(R2, 0),
                                st(DW, R10, -8, 1), movr(R3, R10), alu(isa.ADD, R3, -8),
                                mov(R5, 0), call(HelperId.csum_diff), *RET_PASS], True),
    # ---- pointer arithmetic
    C("ptr-mul", [*PKT, alu(isa.MUL, R2, 2), *RET_PASS], False, "mul operator prohibited"),
    C("ptr-and", [*PKT, alu(isa.AND, R2, 0xFF), *RET_PASS], False, "bitwise operator"),
    C("ptr-plus-ptr", [*PKT, alur(isa.ADD, R2, R3), *RET_PASS], False,
      "pointer add pointer prohibited"),
    C("ptr-minus-ptr", [*PKT, movr(R4, R3), alur(isa.SUB, R4, R2), *RET_PASS], True),
    C("scalar-minus-ptr", [*PKT, mov(R4, 100), alur(isa.SUB, R4, R2), *RET_PASS], False,
      "subtract pointer from scalar"),
    C("ptr-alu32", [*PKT, alu32(isa.ADD, R2, 1), *RET_PASS], False, "32-bit pointer"),
    C("pkt-var-off-then-check", [*PKT, *pkt_check(64, 10), ldx(B, R5, R2, 0), movr(R6, R5),
                                 jmp(isa.JGT, R6, 32, 7), alur(isa.ADD, R2, R5),
                                 *pkt_check(32, 3), ldx(B, R0, R2, 31), *RET_PASS, *RET_PASS],
      True),
    C("signed-index-negative", [*PKT, *pkt_check(64, 6), ldxsx(B, R5, R2, 0),
                                jmp(isa.JSGT, R5, 32, 4), alur(isa.ADD, R2, R5),
                                ldx(B, R0, R2, 0), *RET_PASS, *RET_PASS], False,
      "min value is negative"),
    C("pkt-var-add-resets-range", [*PKT, *pkt_check(64, 6), ldx(B, R5, R2, 0),
                                   jmp32(isa.JGT, R5, 40, 4), alur(isa.ADD, R2, R5),
                                   ldx(B, R0, R2, 0), *RET_PASS, *RET_PASS], False,
      "invalid access to packet"),
    C("jmp32-bounds-index", [ldx(W, R7, R1, CTX_RXQ), *_map_lookup(), jmp(isa.JEQ, R0, 0, 4),
                             movr(R8, R7), jmp32(isa.JGT, R8, 56, 2), alur(isa.ADD, R0, R7),
                             ldx(DW, R1, R0, 0), *RET_PASS], True, maps=[ARRAY]),
    C("prandom-is-64-bit", [call(HelperId.get_prandom_u32), movr(R7, R0), *_map_lookup(),
                            jmp(isa.JEQ, R0, 0, 4), movr(R8, R7), jmp32(isa.JGT, R8, 56, 2),
                            alur(isa.ADD, R0, R7), ldx(DW, R1, R0, 0), *RET_PASS], False,
      "unbounded", maps=[ARRAY]),
    C("atomic-add-stack", [st(DW, R10, -8, 0), mov(R2, 1), atomic(DW, R10, R2, -8, isa.ADD),
                           *RET_PASS], True),
    C("atomic-stores-pointer", [st(DW, R10, -8, 0), atomic(DW, R10, R1, -8, isa.XCHG),
                                *RET_PASS], True),
    C("atomic-on-packet", [*PKT, *pkt_check(8, 4), mov(R5, 1), atomic(DW, R2, R5, 0, isa.ADD),
                           *RET_PASS, *RET_PASS], False, "BPF_ATOMIC stores into R2 pkt"),
    # ---- bpf-to-bpf calls
    C("subprog-call", [mov(R1, 1), call_local(1), exit_(), movr(R0, R1), alu(isa.ADD, R0, 1),
                       exit_()], True),
    C("subprog-ctx-arg", [call_local(1), exit_(), ldx(W, R2, R1, CTX_DATA),
                          ldx(W, R3, R1, CTX_END), *pkt_check(1, 2), ldx(B, R0, R2, 0),
                          mov(R0, 2), *RET_PASS], True),
    C("subprog-r0-uninit", [call_local(1), exit_(), mov(R1, 0), exit_()], False, "R0 !read_ok",
      insn=1),
    C("subprog-returns-nothing", [call_local(2), mov(R0, 2), exit_(), mov(R1, 0), exit_()],
      True),
    C("subprog-caller-regs-clobbered", [mov(R2, 1), call_local(2), movr(R0, R2), exit_(),
                                        mov(R0, 2), exit_()], False, "R2 !read_ok"),
    C("subprog-callee-saved", [mov(R6, 2), call_local(2), movr(R0, R6), exit_(), mov(R0, 1),
                               exit_()], True),
    C("subprog-reads-caller-stack", [st(DW, R10, -8, 2), movr(R1, R10), alu(isa.ADD, R1, -8),
                                     call_local(1), exit_(), ldx(DW, R0, R1, 0), exit_()],
      True),
    C("subprog-returns-its-stack", [call_local(2), mov(R0, 2), exit_(), movr(R0, R10),
                                    alu(isa.ADD, R0, -8), exit_()], False,
      "stack pointer to the caller"),
    C("call-depth-9", [*[x for _ in range(8) for x in (call_local(1), exit_())], mov(R0, 2),
                       exit_()], False, "too deep"),
    C("call-depth-8", [*[x for _ in range(7) for x in (call_local(1), exit_())], mov(R0, 2),
                       exit_()], True),
    C("combined-stack", [st(DW, R10, -256, 0), call_local(2), mov(R0, 2), exit_(),
                         st(DW, R10, -304, 0), mov(R0, 2), exit_()], False, "stack size",
      insn=1),  # the call into the chain too deep
    C("combined-stack-fits", [st(DW, R10, -184, 0), call_local(2), mov(R0, 2), exit_(),
                              st(DW, R10, -304, 0), mov(R0, 2), exit_()], True),
    C("recursion", [call_local(1), exit_(), ldx(W, R2, R1, CTX_RXQ), mov(R0, 2),
                    jmp(isa.JEQ, R2, 1, 1), exit_(), call_local(-5), exit_()], False,
      "recursive"),
    # ---- return value
    C("return-out-of-range", [mov(R0, 5), exit_()], False, "should have been in [0, 4]",
      insn=1, kernel="accepts"),
    C("return-unknown", [ldx(W, R0, R1, CTX_RXQ), exit_()], False,
      "should have been in [0, 4]", kernel="accepts"),
    C("return-masked", [ldx(W, R0, R1, CTX_RXQ), alu(isa.AND, R0, 3), exit_()], True),
    C("return-pointer", [ldx(W, R0, R1, CTX_DATA), exit_()], False,
      "not a known value", kernel="noperfmon"),
    C("return-redirect", [mov(R1, 1), mov(R2, 0), call(HelperId.redirect), exit_()], True),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case(case):
    res = verify(case.insns, case.maps)
    assert res.ok == case.ok, res.reason or "accepted"
    if not case.ok:
        assert case.why in res.reason, res.reason
        if case.insn is not None:
            assert res.insn == case.insn, res.reason
        assert res.reason.startswith(f"insn {res.insn}: ") if res.insn is not None else True
        assert "\n" not in res.reason


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case_against_kernel(case):
    ready, why = kernel_ready()
    if not ready:
        pytest.skip(why)
    if case.kernel == "accepts":
        accepted, log = kernel_verdict(case.insns, case.maps)
        assert accepted, f"the kernel rejected it: {log}"
        return
    accepted, log = kernel_verdict(case.insns, case.maps, perfmon=case.kernel != "noperfmon")
    if accepted is None and case.kernel == "noperfmon":
        pytest.skip(f"cannot load without CAP_PERFMON here: {log}")
    assert accepted is not None, log
    assert accepted == case.ok, f"kernel: {'accepted' if accepted else log}"


@pytest.mark.parametrize("insns, why", [
    ([], "no instructions"),
    ([None, exit_()], "empty slot"),
    ([lddw(R0, 1)[0], mov(R0, 1), exit_()], "lddw without its second slot"),
    ([Insn(0xFF, 0, 0, 0, 0), *RET_PASS], "invalid"),
    ([Insn(isa.JMP | isa.CALL, 0, isa.PSEUDO_CALL, 0, 100), *RET_PASS], "out of range"),
    ([Insn(isa.JMP | isa.CALL, 0, isa.PSEUDO_KFUNC_CALL, 0, 1), *RET_PASS], "kernel function"),
])
def test_malformed_program(insns, why):
    res = verify(insns, [])
    assert not res.ok and why in res.reason, res.reason


def test_only_xdp():
    res = verify(prog(RET_PASS), [], prog_type="sched_cls")
    assert not res.ok and "not supported" in res.reason


def test_garbled_programs_give_one_line_verdicts():
    """Random changes to the cases above: every one ends in a verdict, never an exception."""
    rng = random.Random(7)
    maps = [HASH, ARRAY, DEVMAP]
    for _ in range(400):
        insns = list(rng.choice(CASES).insns)
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(insns))
            ins = insns[i]
            if ins is None or ins.is_lddw:
                continue
            fields = [ins.op, ins.dst, ins.src, ins.off, ins.imm]
            k = rng.randrange(5)
            fields[k] = [rng.randrange(256), rng.randrange(16), rng.randrange(16),
                         rng.randint(-40, 40), rng.choice([0, -1, 8, 2**31 - 1])][k]
            if fields[0] != isa.LD | isa.IMM | isa.DW:
                insns[i] = Insn(*fields)
        res = verify(insns, maps, complexity_limit=20_000)
        assert "\n" not in res.reason
        assert res.ok or res.reason
        assert res.insn is None or 0 <= res.insn < len(insns)
