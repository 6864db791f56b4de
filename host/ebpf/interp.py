# Ref: RFC 9669 (BPF Instruction Set Architecture); include/uapi/linux/bpf.h (struct xdp_md);
#      kernel/bpf/core.c (___bpf_prog_run: division by zero, shift masks, atomics) and
#      net/core/filter.c (XDP helpers) in Linux 6.x
"""Run eBPF XDP programs: the whole instruction set, pre-translated to Python for speed.

A :class:`Vm` translates a program once: each basic block becomes a Python function generated
as source and compiled with :func:`compile`, which reads and writes the registers in a list and
returns the index of the next block. Registers hold unsigned 64-bit integers.

Memory is a set of regions. A pointer is ``region << 32 | offset``: the packet (the window from
``data_meta`` to ``data_end``, renumbered whenever a helper moves its edges, so a stale packet
pointer faults as the verifier would have forbidden it), one 512-byte stack per call depth,
each map value a program looked up (during one run), read-only global data, and the context
(``struct xdp_md``), whose ``data``/``data_end``/``data_meta`` loads give packet pointers as
the kernel's rewrite of those loads does. An access outside a region raises :class:`ExecError`
naming the instruction.

:meth:`Vm.run` returns the verdict, the packet, the metadata, the redirect target, the number
of instructions executed and the helper calls, for the cost model of :mod:`.cost`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nicsim.host.ebpf import insn as isa
from nicsim.host.ebpf.protos import HelperId, XdpAction

__all__ = ["ExecError", "TranslateError", "XdpResult", "Vm", "XDP_PACKET_HEADROOM",
           "XDP_FRAME_SIZE", "STACK_SIZE", "MAX_CALL_DEPTH", "XDP_FRAME_STRUCT",
           "SKB_SHARED_INFO", "CTX_SIZE"]

M64 = (1 << 64) - 1
M32 = (1 << 32) - 1
STACK_SIZE = 512            # MAX_BPF_STACK
MAX_CALL_DEPTH = 8          # MAX_CALL_FRAMES
XDP_PACKET_HEADROOM = 256   # include/uapi/linux/bpf.h
XDP_FRAME_SIZE = 4096       # one page per frame, as BPF_PROG_TEST_RUN sets frame_sz
XDP_FRAME_STRUCT = 40       # sizeof(struct xdp_frame) on 64-bit Linux 6.x (measured: 256 - 216)
SKB_SHARED_INFO = 320       # SKB_DATA_ALIGN(sizeof(struct skb_shared_info)), x86-64
CTX_SIZE = 24               # sizeof(struct xdp_md)
DEFAULT_INSN_LIMIT = 10_000_000
ZERO_STACK = bytes(STACK_SIZE)

# Region numbers (the upper 32 bits of a pointer).
CTX_REGION = 1
STACK_REGION = 2            # 2 .. 2 + MAX_CALL_DEPTH - 1
MAP_HANDLE = 0x10           # lddw of a map: MAP_HANDLE << 32 | map index (not dereferenceable)
RODATA_REGION = 0x20        # 0x20 + data map index
FIRST_DYNAMIC = 0x1000      # packet windows and map values, renumbered every run


class ExecError(RuntimeError):
    """A run that cannot go on (bad memory access, division... ); names the instruction."""

    def __init__(self, pc, message):
        super().__init__(f"insn {pc}: {message}")
        self.pc = pc


class TranslateError(ValueError):
    """An instruction the interpreter cannot translate (names it)."""


@dataclass(slots=True)
class XdpResult:
    """What one run of an XDP program did.

    Members
    -------
    verdict : int
        The program's return value (an :class:`XdpAction` when it is one).
    packet : bytes
        The frame from ``data`` to ``data_end`` after the run.
    meta : bytes
        The metadata area (``data_meta`` to ``data``).
    redirect : dict or None
        For ``XDP_REDIRECT``: ``{"kind": "ifindex", "ifindex": n}`` or ``{"kind": map type
        name, "map": name, "key": k, "target": ifindex/cpu/queue}``.
    insns : int
        Instructions executed.
    helpers : dict
        Helper name -> calls.
    map_calls : dict
        ``"lookup:hash"``-style map operation -> calls (map helpers by map type).
    trace : list of str
        Formats passed to ``bpf_trace_printk``.
    """

    verdict: int
    packet: bytes
    meta: bytes = b""
    redirect: dict | None = None
    insns: int = 0
    helpers: dict = field(default_factory=dict)
    map_calls: dict = field(default_factory=dict)
    trace: list = field(default_factory=list)

    @property
    def action(self) -> str:
        try:
            return XdpAction(self.verdict).name
        except ValueError:
            return "ABORTED"  # any other value: the driver treats it as aborted


# --- translation ---------------------------------------------------------------------------

_BLOCK_ENDS = {isa.JMP, isa.JMP32}


def _leaders(insns):
    leaders = {0}
    n = len(insns)
    for pc, ins in enumerate(insns):
        if ins is None:
            continue
        cls = ins.cls
        if cls in _BLOCK_ENDS:
            op = ins.op & 0xF0
            if op == isa.CALL:
                if ins.src == isa.PSEUDO_CALL:
                    leaders.add(pc + 1 + ins.imm)
                    leaders.add(pc + 1)
                continue
            if op == isa.EXIT:
                leaders.add(pc + 1)
                continue
            off = ins.imm if (cls == isa.JMP32 and op == isa.JA) else ins.off
            leaders.add(pc + 1 + off)
            leaders.add(pc + 1)
    return sorted(x for x in leaders if 0 <= x < n)


class _Gen:
    """Python source for one program's blocks."""

    def __init__(self, insns):
        self.insns = insns
        self.lines: list[str] = []
        self.helpers_used: set[int] = set()

    def emit(self, text, indent=1):
        self.lines.append("    " * indent + text)

    # Operand helpers ----------------------------------------------------------------------
    @staticmethod
    def src64(ins):
        return f"R[{ins.src}]" if ins.op & isa.X else str(ins.imm & M64)

    @staticmethod
    def src32(ins):
        return f"(R[{ins.src}] & {M32})" if ins.op & isa.X else str(ins.imm & M32)

    def alu(self, pc, ins):
        d = f"R[{ins.dst}]"
        op = ins.op & 0xF0
        wide = ins.cls == isa.ALU64
        if op == isa.END:
            bits = ins.imm
            if bits not in (16, 32, 64):
                raise TranslateError(f"insn {pc}: byte swap of {bits} bits")
            mask = (1 << bits) - 1
            if not wide and not ins.op & isa.X:   # to little endian: truncate only
                self.emit(f"{d} &= {mask}")
            else:                                  # to big endian, or bswap (ALU64)
                self.emit(f"{d} = int.from_bytes(({d} & {mask}).to_bytes({bits // 8}, "
                          f"'little'), 'big')")
            return
        if wide:
            s, m, bits = self.src64(ins), M64, 64
            a = d
        else:
            s, m, bits = self.src32(ins), M32, 32
            a = f"({d} & {M32})"
        sign = 1 << (bits - 1)
        signed = ins.off == 1
        if op == isa.ADD:
            self.emit(f"{d} = ({d} + {s}) & {m}")
        elif op == isa.SUB:
            self.emit(f"{d} = ({d} - {s}) & {m}")
        elif op == isa.MUL:
            self.emit(f"{d} = ({d} * {s}) & {m}")
        elif op in (isa.DIV, isa.MOD):
            if ins.off not in (0, 1):
                raise TranslateError(f"insn {pc}: division with offset {ins.off}")
            self.emit(f"_s = {s}")
            if op == isa.DIV:
                if signed:
                    self.emit(f"{d} = _sdiv({a}, _s, {bits}) if _s else 0")
                else:
                    self.emit(f"{d} = {a} // _s if _s else 0")
            else:
                if signed:
                    self.emit(f"{d} = _smod({a}, _s, {bits}) if _s else {a}")
                else:
                    self.emit(f"{d} = {a} % _s if _s else {a}")
        elif op == isa.OR:
            self.emit(f"{d} = {a} | {s}")
        elif op == isa.AND:
            self.emit(f"{d} = {a} & {s}")
        elif op == isa.XOR:
            self.emit(f"{d} = {a} ^ {s}")
        elif op == isa.LSH:
            self.emit(f"{d} = ({a} << ({s} & {bits - 1})) & {m}")
        elif op == isa.RSH:
            self.emit(f"{d} = {a} >> ({s} & {bits - 1})")
        elif op == isa.ARSH:
            self.emit(f"{d} = ((({a} ^ {sign}) - {sign}) >> ({s} & {bits - 1})) & {m}")
        elif op == isa.NEG:
            self.emit(f"{d} = (-{a}) & {m}")
        elif op == isa.MOV:
            if ins.off in (8, 16, 32) and ins.op & isa.X:  # movsx (cpu v4)
                k = ins.off
                self.emit(f"{d} = (((R[{ins.src}] & {(1 << k) - 1}) ^ {1 << (k - 1)}) - "
                          f"{1 << (k - 1)}) & {m}")
            elif ins.off:
                raise TranslateError(f"insn {pc}: mov with offset {ins.off}")
            else:
                self.emit(f"{d} = {s}")
        else:
            raise TranslateError(f"insn {pc}: unknown ALU operation {op:#x}")

    def cond(self, pc, ins):
        op = ins.op & 0xF0
        if ins.cls == isa.JMP:
            a, b, sb = f"R[{ins.dst}]", self.src64(ins), 1 << 63
        else:
            a, b, sb = f"(R[{ins.dst}] & {M32})", self.src32(ins), 1 << 31
        return {
            isa.JEQ: f"{a} == {b}", isa.JNE: f"{a} != {b}",
            isa.JGT: f"{a} > {b}", isa.JGE: f"{a} >= {b}",
            isa.JLT: f"{a} < {b}", isa.JLE: f"{a} <= {b}",
            isa.JSET: f"{a} & {b}",
            isa.JSGT: f"({a} ^ {sb}) > ({b} ^ {sb})", isa.JSGE: f"({a} ^ {sb}) >= ({b} ^ {sb})",
            isa.JSLT: f"({a} ^ {sb}) < ({b} ^ {sb})", isa.JSLE: f"({a} ^ {sb}) <= ({b} ^ {sb})",
        }.get(op)

    def load(self, pc, ins, signed=False):
        size = isa.SIZE_BYTES[ins.op & 0x18]
        d = f"R[{ins.dst}]"
        self.emit(f"_a = R[{ins.src}] + {ins.off}")
        self.emit("_b = G.get(_a >> 32)")
        self.emit(f"_o = _a & {M32}")
        self.emit(f"if _b is not None and _o + {size} <= len(_b):")
        if size == 1:
            self.emit(f"{d} = _b[_o]", 2)
        elif size == 2:
            self.emit(f"{d} = _b[_o] | (_b[_o + 1] << 8)", 2)
        else:
            self.emit(f"{d} = int.from_bytes(_b[_o:_o + {size}], 'little')", 2)
        self.emit("else:")
        self.emit(f"{d} = SLOW(_a, {size}, {pc})", 2)
        if signed:
            bits = 8 * size
            self.emit(f"{d} = (({d} ^ {1 << (bits - 1)}) - {1 << (bits - 1)}) & {M64}")

    def store(self, pc, ins, value):
        size = isa.SIZE_BYTES[ins.op & 0x18]
        self.emit(f"_a = R[{ins.dst}] + {ins.off}")
        self.emit("_b = G.get(_a >> 32)")
        self.emit(f"_o = _a & {M32}")
        self.emit(f"if _b is not None and _o + {size} <= len(_b):")
        if size == 1:
            self.emit(f"_b[_o] = {value} & 255", 2)
        else:
            self.emit(f"_b[_o:_o + {size}] = ({value} & {(1 << (8 * size)) - 1})"
                      f".to_bytes({size}, 'little')", 2)
        self.emit("else:")
        self.emit(f"STORE(_a, {size}, {value}, {pc})", 2)

    def atomic(self, pc, ins):
        size = isa.SIZE_BYTES[ins.op & 0x18]
        if size not in (4, 8):
            raise TranslateError(f"insn {pc}: atomic operation on {size} bytes")
        mask = (1 << (8 * size)) - 1
        op = ins.imm
        s = f"R[{ins.src}]"
        self.emit(f"_a = R[{ins.dst}] + {ins.off}")
        self.emit(f"_old = SLOW(_a, {size}, {pc})")
        base = op & ~isa.FETCH
        if op == isa.XCHG:
            new = f"{s} & {mask}"
        elif op == isa.CMPXCHG:
            new = None
        elif base == isa.ADD:
            new = f"(_old + {s}) & {mask}"
        elif base == isa.OR:
            new = f"_old | ({s} & {mask})"
        elif base == isa.AND:
            new = f"_old & {s}"
        elif base == isa.XOR:
            new = f"_old ^ ({s} & {mask})"
        else:
            raise TranslateError(f"insn {pc}: unknown atomic operation {op:#x}")
        if op == isa.CMPXCHG:
            self.emit(f"if _old == (R[0] & {mask}):")
            self.emit(f"STORE(_a, {size}, {s}, {pc})", 2)
            self.emit("R[0] = _old")
        else:
            self.emit(f"STORE(_a, {size}, {new}, {pc})")
            if op & isa.FETCH:
                self.emit(f"{s} = _old")

    # Blocks --------------------------------------------------------------------------------
    def block(self, start, end, name):
        """Emit a function for slots [start, end); return its instruction count."""
        self.emit(f"def {name}(R):", 0)
        count = 0
        ended = False
        pc = start
        while pc < end:
            ins = self.insns[pc]
            if ins is None:
                pc += 1
                continue
            count += 1
            cls = ins.cls
            if cls in (isa.ALU, isa.ALU64):
                self.alu(pc, ins)
            elif cls == isa.LD:
                if not ins.is_lddw:
                    raise TranslateError(f"insn {pc}: legacy packet load (LD ABS/IND) is not "
                                         f"available to XDP programs")
                if ins.src == 0:
                    self.emit(f"R[{ins.dst}] = {ins.imm & M64}")
                elif ins.src == isa.PSEUDO_MAP_FD:
                    self.emit(f"R[{ins.dst}] = {(MAP_HANDLE << 32) | (ins.imm & M32)}")
                elif ins.src == isa.PSEUDO_MAP_VALUE:
                    self.emit(f"R[{ins.dst}] = MAPVAL({ins.imm & M32}, {ins.imm >> 32}, {pc})")
                else:
                    raise TranslateError(f"insn {pc}: lddw with src {ins.src} is not supported")
            elif cls == isa.LDX:
                mode = ins.op & 0xE0
                if mode not in (isa.MEM, isa.MEMSX):
                    raise TranslateError(f"insn {pc}: load mode {mode:#x} is not supported")
                self.load(pc, ins, signed=mode == isa.MEMSX)
            elif cls == isa.ST:
                if ins.op & 0xE0 != isa.MEM:
                    raise TranslateError(f"insn {pc}: store mode {ins.op & 0xE0:#x}")
                self.store(pc, ins, str(ins.imm & M64))
            elif cls == isa.STX:
                mode = ins.op & 0xE0
                if mode == isa.MEM:
                    self.store(pc, ins, f"R[{ins.src}]")
                elif mode == isa.ATOMIC:
                    self.atomic(pc, ins)
                else:
                    raise TranslateError(f"insn {pc}: store mode {mode:#x} is not supported")
            else:  # JMP, JMP32
                op = ins.op & 0xF0
                if op == isa.CALL:
                    if ins.src == isa.PSEUDO_CALL:
                        target = pc + 1 + ins.imm
                        self.emit(f"return CALLF({pc + 1}, {target}, {pc})")
                        ended = True
                        break
                    if ins.src != 0:
                        raise TranslateError(f"insn {pc}: call of kind {ins.src} (kfunc) is "
                                             f"not supported")
                    self.emit(f"R[0] = HELPER_{ins.imm & M32}({pc}, R[1], R[2], R[3], R[4], R[5])")
                    self.helpers_used.add(ins.imm & M32)
                elif op == isa.EXIT:
                    self.emit("return EXITF()")
                    ended = True
                    break
                elif op == isa.JA:
                    off = ins.imm if cls == isa.JMP32 else ins.off
                    self.emit(f"return {pc + 1 + off}")
                    ended = True
                    break
                else:
                    cond = self.cond(pc, ins)
                    if cond is None:
                        raise TranslateError(f"insn {pc}: unknown jump {ins.op:#04x}")
                    self.emit(f"if {cond}:")
                    self.emit(f"return {pc + 1 + ins.off}", 2)
                    self.emit(f"return {pc + 1}")
                    ended = True
                    break
            pc += 1
        if not ended:
            self.emit(f"return {end}" if end < len(self.insns) else f"return FALLOFF({end})")
        return count


def _sdiv(a, b, bits):
    sign = 1 << (bits - 1)
    a, b = (a ^ sign) - sign, (b ^ sign) - sign
    q = abs(a) // abs(b)
    if (a < 0) != (b < 0):
        q = -q
    return q & ((1 << bits) - 1)


def _smod(a, b, bits):
    sign = 1 << (bits - 1)
    a, b = (a ^ sign) - sign, (b ^ sign) - sign
    r = abs(a) % abs(b)
    return (-r if a < 0 else r) & ((1 << bits) - 1)


def _check_targets(insns):
    """Refuse registers above r10, and jumps and calls that leave the program or land inside
    a lddw."""
    n = len(insns)
    for pc, ins in enumerate(insns):
        if ins is None:
            continue
        if ins.dst > 10 or ins.src > 10:
            raise TranslateError(f"insn {pc}: register r{max(ins.dst, ins.src)} does not exist")
        if ins.cls in (isa.JMP, isa.JMP32):
            op = ins.op & 0xF0
            if op == isa.EXIT or (op == isa.CALL and ins.src != isa.PSEUDO_CALL):
                continue
            off = ins.imm if (op == isa.CALL or (ins.cls == isa.JMP32 and op == isa.JA)) \
                else ins.off
            target = pc + 1 + off
            if not 0 <= target < n or insns[target] is None:
                raise TranslateError(f"insn {pc}: jump or call to {target}, outside the "
                                     f"program or inside a lddw")
        elif ins.is_lddw and (pc + 1 >= n or insns[pc + 1] is not None):
            raise TranslateError(f"insn {pc}: lddw without its second slot")


def translate(insns):
    """Return ``(blocks, counts)``: per slot, the block function starting there and its length.

    Raises
    ------
    TranslateError
        An instruction nicsim cannot run (it is named).
    """
    if not insns:
        raise TranslateError("empty program")
    _check_targets(insns)
    gen = _Gen(insns)
    leaders = _leaders(insns)
    ends = leaders[1:] + [len(insns)]
    counts = {}
    for start, end in zip(leaders, ends, strict=True):
        counts[start] = gen.block(start, end, f"b{start}")
    return "\n".join(gen.lines) + "\n", leaders, counts, gen.helpers_used


# --- the machine ---------------------------------------------------------------------------

class Vm:
    """A translated XDP program with its maps, ready to run packets.

    Parameters
    ----------
    program : Program
        From :func:`nicsim.host.ebpf.elf.load_object`.
    maps : list of BpfMap
        The object's maps, in the order of ``BpfObject.maps`` (create them with
        :func:`nicsim.host.ebpf.maps.create_map`), or ``None`` to create them here from
        ``map_specs``.
    map_specs : list of MapSpec
        Used when ``maps`` is None.
    fib : FibTable or None
        Routing table for ``bpf_fib_lookup``.
    ncpus : int
        CPUs of per-CPU maps.
    seed : int
        Seed of ``bpf_get_prandom_u32``.
    insn_limit : int
        Instructions after which a run is stopped as runaway.
    """

    def __init__(self, program, maps=None, map_specs=None, *, fib=None, ncpus=1, seed=1,
                 insn_limit=DEFAULT_INSN_LIMIT):
        import random

        from nicsim.host.ebpf import helpers as helper_mod
        from nicsim.host.ebpf.maps import create_map

        self.program = program
        if maps is None:
            maps = [create_map(spec, ncpus) for spec in (map_specs or [])]
        self.maps = maps
        self.fib = fib
        self.ncpus = ncpus
        self.rng = random.Random(seed)
        self.insn_limit = insn_limit
        self.helper_table = helper_mod.HELPERS
        source, leaders, counts, helpers_used = translate(program.insns)
        self.source = source
        self.regions: dict[int, bytearray] = {}
        self.stacks = [bytearray(STACK_SIZE) for _ in range(MAX_CALL_DEPTH)]
        self.stack_regions = {STACK_REGION + depth: stack
                              for depth, stack in enumerate(self.stacks)}
        self.env = {
            "G": self.regions, "SLOW": self._slow_load, "STORE": self._slow_store,
            "CALLF": self._call, "EXITF": self._exit,
            "MAPVAL": self._map_value_ptr, "FALLOFF": self._fall_off,
            "_sdiv": _sdiv, "_smod": _smod,
        }
        for hid in helpers_used:
            self.env[f"HELPER_{hid}"] = self._bind_helper(hid)
        code = compile(source, f"<ebpf {getattr(program, 'name', '?')}>", "exec")
        exec(code, self.env)
        n = len(program.insns)
        self.blocks = [None] * (n + 1)
        self.counts = [0] * (n + 1)
        for start in leaders:
            self.blocks[start] = self.env[f"b{start}"]
            self.counts[start] = counts[start]
        self._fresh_state()

    @classmethod
    def from_file(cls, path, prog=None, **kwargs):
        """Load an object (or compile a C file) and return a Vm for its program ``prog``
        (the only XDP program when None); keyword arguments go to :class:`Vm`.

        Raises
        ------
        BuildError
            The C file does not compile.
        ValueError
            ``LoadError``, ``MapError``, ``TranslateError``, or no such program.
        """
        from pathlib import Path

        from nicsim.host.ebpf.build import compile_c
        from nicsim.host.ebpf.elf import load_object

        path = Path(path)
        obj = load_object(compile_c(path) if path.suffix == ".c" else path)
        if prog is None:
            if len(obj.programs) != 1:
                raise ValueError(f"{path}: {len(obj.programs)} XDP programs "
                                 f"({', '.join(obj.programs)}); name one")
            prog = next(iter(obj.programs))
        if prog not in obj.programs:
            raise ValueError(f"{path}: no XDP program {prog!r} ({', '.join(obj.programs)})")
        vm = cls(obj.programs[prog], map_specs=obj.maps, **kwargs)
        vm.object = obj
        return vm

    def map(self, name):
        """Return the map called ``name`` (needs a Vm made by :meth:`from_file`)."""
        return self.maps[self.object.map_index(name)]

    # Run state ------------------------------------------------------------------------------
    def _fresh_state(self):
        self.frames = []
        self.helper_calls = {}
        self.map_calls = {}
        self.redirect = None
        self.trace = []
        self.now_ns = 0
        self.cpu = 0
        self.ifindex = 1
        self.rx_queue = 0
        self.next_region = FIRST_DYNAMIC
        self.value_regions = {}

    def _new_region(self, buf):
        rid = self.next_region
        self.next_region += 1
        self.regions[rid] = buf
        return rid

    def _set_window(self):
        """Publish the packet window [meta, end) as a fresh region; return its number."""
        if self.pkt_region is not None:
            self.regions.pop(self.pkt_region, None)
        self.pkt_region = self._new_region(memoryview(self.frame)[self.meta:self.end])
        return self.pkt_region

    def packet_ptr(self, frame_offset):
        """Return the pointer to ``frame_offset`` of the current frame."""
        return (self.pkt_region << 32) + frame_offset - self.meta

    def value_ptr(self, value):
        """Return a pointer to a map value (registering it for this run)."""
        rid = self.value_regions.get(id(value))
        if rid is None:
            rid = self._new_region(value)
            self.value_regions[id(value)] = rid
        return rid << 32

    def run(self, packet: bytes, *, ifindex=1, rx_queue=0, now_ns=0, cpu=0,
            meta: bytes = b"") -> XdpResult:
        """Run the program over one frame; return an :class:`XdpResult`.

        Raises
        ------
        ExecError
            An access outside memory the program may touch, a runaway loop, a bad helper
            argument (the instruction is named).
        """
        length = len(packet)
        data = XDP_PACKET_HEADROOM
        frame_size = XDP_PACKET_HEADROOM + length + SKB_SHARED_INFO
        if frame_size < XDP_FRAME_SIZE:
            frame_size = XDP_FRAME_SIZE
        self.frame = frame = bytearray(frame_size)
        self.data = data
        self.meta = data - len(meta)
        if meta:
            frame[self.meta:data] = meta
        self.end = end = data + length
        frame[data:end] = packet
        self.hard_end = frame_size - SKB_SHARED_INFO
        regions = self.regions
        regions.clear()
        regions.update(self.stack_regions)
        self.value_regions = {}
        # The packet window is the first dynamic region (see _set_window).
        regions[FIRST_DYNAMIC] = memoryview(frame)[self.meta:end]
        self.pkt_region = FIRST_DYNAMIC
        self.next_region = FIRST_DYNAMIC + 1
        self.frames = []
        self.helper_calls = {}
        self.map_calls = {}
        self.redirect = None
        self.trace = []
        self.now_ns, self.cpu, self.ifindex, self.rx_queue = now_ns, cpu, ifindex, rx_queue
        self.stacks[0][:] = ZERO_STACK
        R = [0, CTX_REGION << 32, 0, 0, 0, 0, 0, 0, 0, 0, (STACK_REGION << 32) + STACK_SIZE]
        self.R = R
        blocks, counts = self.blocks, self.counts
        limit = self.insn_limit
        pc = 0
        n = 0
        while pc >= 0:
            n += counts[pc]
            pc = blocks[pc](R)
            if n > limit:
                raise ExecError(pc, f"more than {limit} instructions executed (a loop the "
                                    f"verifier would not accept?)")
        verdict = R[0] & M32
        return XdpResult(verdict=verdict, packet=bytes(self.frame[self.data:self.end]),
                         meta=bytes(self.frame[self.meta:self.data]),
                         redirect=self.redirect if verdict == XdpAction.REDIRECT else None,
                         insns=n, helpers=self.helper_calls, map_calls=self.map_calls,
                         trace=self.trace)

    # Called from generated code ---------------------------------------------------------------
    def _call(self, ret, target, pc):
        R = self.R
        depth = len(self.frames) + 1
        if depth >= MAX_CALL_DEPTH:
            raise ExecError(pc, f"call depth over {MAX_CALL_DEPTH}")
        self.frames.append((R[6], R[7], R[8], R[9], R[10], ret))
        self.stacks[depth][:] = ZERO_STACK
        R[10] = ((STACK_REGION + depth) << 32) + STACK_SIZE
        return target

    def _exit(self):
        if not self.frames:
            return -1
        R = self.R
        R[6], R[7], R[8], R[9], R[10], ret = self.frames.pop()
        return ret

    def _fall_off(self, pc):
        raise ExecError(pc - 1, "execution ran past the last instruction")

    def _map_value_ptr(self, index, offset, pc):
        if not 0 <= index < len(self.maps):
            raise ExecError(pc, f"global data map {index} does not exist")
        m = self.maps[index]
        value = m.lookup(bytes(4))
        if value is None:
            raise ExecError(pc, f"map {m.name!r} has no element 0")
        if m.flags & 0x80:  # BPF_F_RDONLY_PROG
            return ((RODATA_REGION + index) << 32) + offset
        return self.value_ptr(value) + offset

    def describe(self, addr):
        """Return a short description of what ``addr`` points into."""
        region, off = addr >> 32, addr & M32
        if region == CTX_REGION:
            return f"context+{off}"
        if STACK_REGION <= region < STACK_REGION + MAX_CALL_DEPTH:
            return f"stack frame {region - STACK_REGION} at fp{off - STACK_SIZE:+d}"
        if region == MAP_HANDLE:
            return "a map handle"
        if region == self.pkt_region:
            return (f"packet at data{off - (self.data - self.meta):+d} "
                    f"(length {self.end - self.data})")
        if region in self.regions:
            return f"a map value+{off} (size {len(self.regions[region])})"
        if region == 0:
            return f"address {addr:#x} (NULL or a scalar)"
        return f"address {addr:#x} (a stale packet pointer or no object)"

    def _ctx_load(self, off, size, pc):
        if size == 4 and off in (0, 4, 8):
            return self.packet_ptr((self.data, self.end, self.meta)[off // 4])
        if size == 4 and off == 12:
            return self.ifindex
        if size == 4 and off == 16:
            return self.rx_queue
        if size == 4 and off == 20:
            return 0  # egress_ifindex: only set for devmap programs
        raise ExecError(pc, f"invalid context access: {size} bytes at xdp_md+{off}")

    def _slow_load(self, addr, size, pc):
        region, off = addr >> 32, addr & M32
        if region == CTX_REGION:
            if size == 4 and off < 12 and not off & 3:  # data, data_end, data_meta
                return ((self.pkt_region << 32) - self.meta
                        + (self.data, self.end, self.meta)[off >> 2])
            return self._ctx_load(off, size, pc)
        buf = self.regions.get(region)
        if buf is None and region >= RODATA_REGION and region - RODATA_REGION < len(self.maps):
            buf = self.maps[region - RODATA_REGION].lookup(bytes(4))
        if buf is None or off + size > len(buf) or addr < 0:
            raise ExecError(pc, f"invalid read of {size} bytes at {self.describe(addr)}")
        return int.from_bytes(buf[off:off + size], "little")

    def _slow_store(self, addr, size, value, pc):
        region, off = addr >> 32, addr & M32
        buf = self.regions.get(region)
        if region == CTX_REGION:
            raise ExecError(pc, "the XDP context is read-only")
        if buf is None or off + size > len(buf) or addr < 0:
            what = ("read-only global data" if RODATA_REGION <= region < RODATA_REGION
                    + len(self.maps) else self.describe(addr))
            raise ExecError(pc, f"invalid write of {size} bytes at {what}")
        buf[off:off + size] = (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")

    def read(self, addr, size, pc):
        """Return ``size`` bytes at ``addr`` (for helpers)."""
        region, off = addr >> 32, addr & M32
        buf = self.regions.get(region)
        if buf is None and RODATA_REGION <= region < RODATA_REGION + len(self.maps):
            buf = self.maps[region - RODATA_REGION].lookup(bytes(4))
        if buf is None or off + size > len(buf) or size < 0:
            raise ExecError(pc, f"helper reads {size} bytes at {self.describe(addr)}")
        return bytes(buf[off:off + size])

    def write(self, addr, data, pc):
        """Write ``data`` at ``addr`` (for helpers)."""
        region, off = addr >> 32, addr & M32
        buf = self.regions.get(region)
        if buf is None or off + len(data) > len(buf):
            raise ExecError(pc, f"helper writes {len(data)} bytes at {self.describe(addr)}")
        buf[off:off + len(data)] = data

    def map_arg(self, value, pc):
        """Return the map a helper's map argument names."""
        if value >> 32 != MAP_HANDLE or (value & M32) >= len(self.maps):
            raise ExecError(pc, f"helper argument is not a map ({self.describe(value)})")
        return self.maps[value & M32]

    def _bind_helper(self, hid):
        """Return ``f(pc, r1..r5) -> r0`` calling helper ``hid`` and counting the call."""
        entry = self.helper_table.get(hid)
        if entry is None:
            try:
                name = HelperId(hid).name
            except ValueError:
                name = f"#{hid}"

            def missing(pc, *_):
                raise ExecError(pc, f"helper {name} is not implemented")
            return missing
        name, fn = entry

        def call(pc, r1, r2, r3, r4, r5):
            calls = self.helper_calls
            calls[name] = calls.get(name, 0) + 1
            return fn(self, pc, r1, r2, r3, r4, r5) & M64
        return call
