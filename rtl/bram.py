# Ref: Lattice FPGA-TN-02204 "ECP5 and ECP5-5G Memory Usage Guide" (DP16KD: data widths 1, 2,
#      4, 9, 18; address bits AD[13:4] at 18 bits with AD[1:0] the byte enables; REGMODE NOREG or
#      OUTREG); yosys techlibs/lattice/brams_16kd.txt, brams_map_16kd.v and cells_bb_ecp5.v
#      (the DP16KD ports and the address and data bits its memory mapping uses); the guide's
#      PDPW16KD (512 x 36 pseudo-dual-port: write data DIA/DIB, read data DOA/DOB, AD[13:5] the
#      address, ADA[3:0] the byte enables) as yosys's brams_map_16kd.v maps it onto DP16KD
"""A simple dual-port memory whose read data leaves through a register: two cycles of latency.

:class:`RegisteredMemory` is one memory with a write port and a read port in the ``sync``
domain. The read data of the address given in cycle *t* (with ``r_en``) is on ``r_data`` from
cycle *t + 2*, from a register; without ``r_en`` the register keeps its last value.

It is built in one of two ways, with the same behaviour cycle for cycle:

* ``primitive=None`` (simulation, Verilator, any FPGA): an Amaranth
  :class:`~amaranth.lib.memory.Memory` with a synchronous read port, then a register in the
  fabric. This is what ``nicsim rtl``, the cocotb benches and the Amaranth simulations run.
* ``primitive="dp16kd"`` (ECP5 synthesis only): Lattice ``DP16KD`` block RAMs instantiated
  directly, with ``REGMODE_B="OUTREG"``, so that the register is the block RAM's own output
  register. yosys's ECP5 memory mapping always writes ``REGMODE="NOREG"`` (there is no option
  of ``memory_libmap`` that asks for the output register), and a DP16KD without it takes
  5.83 ns from clock to data in nextpnr's ECP5 timing: with the fabric register a few ns of
  routing away, that alone held the TSO engine at 112 MHz. With the output register, the 192
  flip-flops behind the TSO engine's 84 blocks get their data 1.7 to 4.9 ns after the clock,
  routing included (nextpnr, ECP5-85k). Verilator has no model of the primitive: this
  variant is for ``nicsim synth`` (see ``Design.synth_params`` in :mod:`nicsim.hw.designs`).

In the DP16KD variant port A writes and port B reads. One data width is chosen for the whole
memory: the widest configuration (18, 9, 4, 2 or 1 bits) whose depth (1024 ... 16384) holds
the memory, and as many blocks side by side as its width needs. A memory deeper than 16384
entries is cut into banks of 16384 (x1 blocks) whose outputs a multiplexer picks, after the
output registers, by the address bits taken two cycles earlier (so this case has logic
between the registers and the user). A depth that is not a power of two is cut the same way
into sections of decreasing powers of two (:func:`dp16kd_sections`) where that takes fewer
blocks, each section in its own widest configuration: a ring of 9216 words of 64 bits is 32
blocks of 8192 x 2 and 4 of 1024 x 18 (36 blocks) instead of 64 of 16384 x 1, of which 7168
entries would stay unused. The user's addresses then stay below ``depth``.

With ``granularity=8`` the write port takes a byte enable per byte (``w_en`` has ``width // 8``
bits), as the LRO engine's regions need. In the DP16KD variant every block then holds whole
bytes only: at 1, 2 and 4 bits a block's bits lie in one byte and its ``WEA`` is that byte's
enable; at 9 bits a block holds one byte (eight of its nine bits); at 18 bits it holds two bytes,
in ``DI0-7`` and ``DI9-16``, with ``AD0`` and ``AD1`` as their byte enables (the guide's byte
enables of the x18 configuration). Without ``granularity`` nothing changes.

With ``hold=False`` the user reads in every cycle (no ``r_en``: a word leaves the register two
cycles after its address, whatever follows), and a memory of at most 512 words and more than 18
bits without byte enables or ``w_read`` takes blocks in the guide's 36-bit pseudo-dual-port
configuration (PDPW16KD: ``DATA_WIDTH_A`` and ``_B`` 36, port A writing ``DIA``/``DIB`` with
``ADA0-3`` its byte enables, port B reading ``DOA``/``DOB``, both output registers on), half the
blocks of the 18-bit one: the match-action stages' counters of 128 bits take 4 blocks, not 8.
Such a block reads with both ports' halves, so there is no read enable that would hold one word
in both: that is why the configuration needs ``hold=False``.

With ``w_read=True`` port A also reads: ``w_rdata`` is the word at ``w_addr`` of two cycles
before (from a register: the DP16KD's port A output register), so a user can read and write
one address through the write port while the read port serves others (a read-modify-write
that never takes the read port: the match-action TCAM's sweeps). It is for one memory laid out
whole (no banks, no sections, no byte enables).

Nothing checks collisions: a read of the address written in the same cycle returns the old
or new word depending on the variant (``WRITEMODE`` of port A is ``NORMAL``; the behavioural
memory is not transparent). The users read only what was written in an earlier cycle.

To use it (the LRO and match-action engines can do the same)::

    m.submodules.ring = ring = RegisteredMemory(64, 4096, primitive=self.bram)
    m.d.comb += [ring.w_addr.eq(...), ring.w_data.eq(...), ring.w_en.eq(...),
                 ring.r_addr.eq(...), ring.r_en.eq(1)]
    # ring.r_data: the word at r_addr of two cycles before
"""

from amaranth.hdl import ClockSignal, Const, Instance, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

__all__ = ["PRIMITIVES", "RegisteredMemory", "dp16kd_geometry", "dp16kd_sections"]

#: Values of ``primitive``: the behavioural memory (``None``) or ECP5 ``DP16KD`` instances.
PRIMITIVES = (None, "dp16kd")

# DP16KD configurations: data bits, entries, lowest address bit used (36: the pseudo-dual-port
# configuration, ``hold=False`` only).
_DP16KD_MODES = ((18, 1024, 4), (9, 2048, 3), (4, 4096, 2), (2, 8192, 1), (1, 16384, 0))
_PDP_MODE = (36, 512, 5)
_DP16KD_DEPTH = 16384


def dp16kd_geometry(width, depth, granularity=None, wide=False):
    """Return how :class:`RegisteredMemory` lays out a memory in DP16KD blocks.

    Parameters
    ----------
    granularity : None or 8
        With 8, blocks of 9 and 18 bits hold one and two whole bytes (see the module
        docstring).
    wide : bool
        The 36-bit pseudo-dual-port configuration is allowed (``hold=False``, no byte
        enables): taken for at most 512 words of more than 18 bits.

    Returns
    -------
    tuple
        ``(bits, columns, banks)``: the data width of each block, the blocks side by side and
        the banks of 16384 entries (1 unless the memory is deeper than that). A depth that
        :func:`dp16kd_sections` cuts into sections is laid out by that function instead.
    """
    banks = -(-depth // _DP16KD_DEPTH)
    if banks > 1:
        return 1, width, banks
    if wide and not granularity and depth <= _PDP_MODE[1] and width > 18:
        return _PDP_MODE[0], -(-width // _PDP_MODE[0]), 1
    for bits, entries, _ in _DP16KD_MODES:
        if depth <= entries:
            if granularity and bits >= 9:
                return bits, -(-width // (8 * (bits // 9))), 1
            return bits, -(-width // bits), 1
    raise AssertionError("unreachable")  # pragma: no cover


def dp16kd_sections(width, depth, granularity=None):
    """Return the sections of a memory whose depth is not a power of two, or ``None``.

    A depth of up to 16384 entries that is not a power of two is cut into sections of
    decreasing powers of two (its binary digits, with the depth rounded up to a multiple of
    1024, the shallowest configuration), each laid out by :func:`dp16kd_geometry`, where that
    takes fewer blocks than one layout for the whole depth: 9216 words of 64 bits are 32
    blocks of 8192 x 2 and 4 of 1024 x 18 (36) instead of 64 of 16384 x 1.

    Returns
    -------
    list of tuple or None
        ``(base, entries, bits, columns)`` per section: its first address, its depth (a power
        of two that divides ``base``), and its blocks' data width and count. ``None`` where
        the memory is laid out whole.
    """
    if depth > _DP16KD_DEPTH or depth & (depth - 1) == 0:
        return None
    rounded = -(-depth // 1024) * 1024
    sections, base = [], 0
    for k in reversed(range(rounded.bit_length())):
        if rounded >> k & 1:
            bits, columns, _ = dp16kd_geometry(width, 1 << k, granularity)
            sections.append((base, 1 << k, bits, columns))
            base += 1 << k
    bits, columns, banks = dp16kd_geometry(width, depth, granularity)
    if sum(s[3] for s in sections) >= columns * banks:
        return None
    return sections


class RegisteredMemory(wiring.Component):
    """A simple dual-port memory with registered read data (two cycles from address to data).

    Parameters
    ----------
    width : int
        Bits of a word.
    depth : int
        Words.
    primitive : None or str
        ``None``: a behavioural memory and a fabric register; ``"dp16kd"``: ECP5 DP16KD blocks
        with their output register (synthesis only).
    attrs : dict, optional
        Attributes of the behavioural memory (e.g. ``{"no_rw_check": 1}`` for yosys).
    granularity : None or int
        ``8``: byte enables on the write port (``width`` a multiple of 8).
    w_read : bool
        Port A reads too (``w_rdata``; see the module docstring).
    hold : bool
        ``True``: ``r_en`` says whether to read, and the register keeps its word without it.
        ``False``: no ``r_en``, a read in every cycle; lets the DP16KD variant take 36-bit
        blocks (see the module docstring).

    Members
    -------
    w_addr, w_data, w_en : In
        Write port (``w_en``: one bit, or one per byte with ``granularity=8``).
    r_addr, r_en : In
        Read address, and whether to read it (no ``r_en`` with ``hold=False``).
    r_data : Out
        The word at ``r_addr`` of two cycles before (if ``r_en`` was set then).
    w_rdata : Out
        With ``w_read``: the word at ``w_addr`` of two cycles before (a cycle without a write
        then).
    """

    def __init__(self, width, depth, *, primitive=None, attrs=None, granularity=None,
                 w_read=False, hold=True):
        if primitive not in PRIMITIVES:
            raise ValueError(f"Block RAM primitive must be one of {PRIMITIVES}, "
                             f"not {primitive!r}")
        if width < 1 or depth < 2:
            raise ValueError(f"Memory of {width} bits x {depth} words is too small")
        if granularity not in (None, 8) or (granularity and width % 8):
            raise ValueError(f"Write granularity must be None or 8 with a width that is a "
                             f"multiple of 8, not {granularity!r} at {width} bits")
        if w_read and (granularity or depth > _DP16KD_DEPTH
                       or dp16kd_sections(width, depth) is not None):
            raise ValueError("A read on the write port needs a memory laid out whole: no byte "
                             "enables, at most 16384 words, a power-of-two depth or one layout")
        self.granularity = granularity
        self.w_read = w_read
        self.hold = hold
        self.width = width
        self.depth = depth
        self.primitive = primitive
        self.attrs = dict(attrs or {})
        abits = (depth - 1).bit_length()
        members = {
            "w_addr": In(abits), "w_data": In(width),
            "w_en": In(width // granularity if granularity else 1),
            "r_addr": In(abits), "r_data": Out(width),
        }
        if hold:
            members["r_en"] = In(1, init=1)
        if w_read:
            members["w_rdata"] = Out(width)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        if self.primitive == "dp16kd":
            self._dp16kd(m)
            return m
        m.submodules.mem = mem = Memory(shape=self.width, depth=self.depth, init=[],
                                        attrs=self.attrs)
        w_port = mem.write_port(granularity=self.granularity)
        r_port = mem.read_port()
        m.d.comb += [
            w_port.addr.eq(self.w_addr), w_port.data.eq(self.w_data), w_port.en.eq(self.w_en),
            r_port.addr.eq(self.r_addr), r_port.en.eq(self.r_en if self.hold else 1),
        ]
        m.d.sync += self.r_data.eq(r_port.data)
        if self.w_read:
            a_port = mem.read_port()
            m.d.comb += a_port.addr.eq(self.w_addr)
            m.d.sync += self.w_rdata.eq(a_port.data)
        return m

    @property
    def _wide(self):
        return not self.hold and not self.w_read

    def _dp16kd(self, m):
        sections = dp16kd_sections(self.width, self.depth, self.granularity)
        if sections and not (self._wide and self.depth <= _PDP_MODE[1] and self.width > 18):
            self._dp16kd_sections(m, sections)
            return
        bits, columns, banks = dp16kd_geometry(self.width, self.depth, self.granularity,
                                               wide=self._wide)
        abits = len(self.w_addr)
        inner = min(abits, 14 - self._low(bits))  # address bits inside one block
        bank_outs = []
        for bank in range(banks):
            # Writes reach the bank its upper address bits pick.
            if banks > 1:
                w_en = Signal(len(self.w_en), name=f"w_en_bank{bank}")
                m.d.comb += w_en.eq(Mux(self.w_addr[inner:] == bank, self.w_en, 0))
            else:
                w_en = self.w_en
            bank_outs.append(self._blocks(m, f"bram_b{bank}", bits, columns, inner, w_en,
                                          f"r_data_bank{bank}"))
        if banks == 1:
            m.d.comb += self.r_data.eq(bank_outs[0])
            return
        self._bank_pick(m, abits, inner, bank_outs)

    @staticmethod
    def _low(bits):
        return dict((b, lo) for b, _, lo in (*_DP16KD_MODES, _PDP_MODE))[bits]

    def _dp16kd_sections(self, m, sections):
        # Each section is written where its upper address bits match its base; the reads
        # of every section are picked by the section of the address, two cycles on.
        outs, hits = [], []
        for k, (base, entries, bits, columns) in enumerate(sections):
            inner = exact_log2(entries)
            hit_w = self.w_addr[inner:] == base >> inner
            hits.append(self.r_addr[inner:] == base >> inner)
            w_en = Signal(len(self.w_en), name=f"w_en_sec{k}")
            m.d.comb += w_en.eq(Mux(hit_w, self.w_en, 0))
            outs.append(self._blocks(m, f"bram_s{k}", bits, columns, inner, w_en,
                                     f"r_data_sec{k}"))
        pick_a = Signal(range(len(sections)), name="section_a")
        pick = Signal(range(len(sections)), name="section")
        with m.If(self.r_en if self.hold else 1):
            for k in reversed(range(len(sections))):  # the first section that matches
                with m.If(hits[k]):
                    m.d.sync += pick_a.eq(k)
        m.d.sync += pick.eq(pick_a)
        with m.Switch(pick):
            for k, out in enumerate(outs):
                with m.Case(k):
                    m.d.comb += self.r_data.eq(out)

    def _blocks(self, m, prefix, bits, columns, inner, w_en, out_name):
        """Instantiate ``columns`` blocks side by side on the low ``inner`` address bits;
        return their read data (``self.width`` bits)."""
        low = self._low(bits)
        out = Signal(max(columns * bits, self.width), name=out_name)
        out_a = Signal.like(out, name=out_name + "_a")
        if self.w_read:
            m.d.comb += self.w_rdata.eq(out_a[:self.width])
        for col in range(columns):
            ports = {}
            for n in range(14):
                ports[f"i_ADA{n}"] = Const(0, 1)
                ports[f"i_ADB{n}"] = Const(0, 1)
            for n in range(inner):
                ports[f"i_ADA{n + low}"] = self.w_addr[n]
                ports[f"i_ADB{n + low}"] = self.r_addr[n]
            if bits == 18:  # byte enables of the write port
                ports["i_ADA0"] = ports["i_ADA1"] = Const(1, 1)
            if self.granularity:
                ports.update(self._byte_lanes(col, bits, w_en, out))
                we = ports.pop("i_WEA")
            elif bits == 36:  # as yosys maps PDPW16KD: WEA set, ADA0-3 the byte enables
                for n in range(4):
                    ports[f"i_ADA{n}"] = w_en
                we = Const(1, 1)
            else:
                we = w_en
            lo, hi = col * bits, min((col + 1) * bits, self.width)

            def bit(k, lo=lo, hi=hi):
                return self.w_data[lo + k] if lo + k < hi else Const(0, 1)

            for n in range(18 if not self.granularity else 0):
                ports[f"i_DIA{n}"] = bit(n)
                ports[f"i_DIB{n}"] = bit(18 + n) if bits == 36 else Const(0, 1)
                if bits == 36:  # the word is {DOB, DOA}
                    ports[f"o_DOA{n}"] = out[col * bits + n]
                    ports[f"o_DOB{n}"] = out[col * bits + 18 + n]
                elif n < bits:
                    ports[f"o_DOB{n}"] = out[col * bits + n]
                    if self.w_read:
                        ports[f"o_DOA{n}"] = out_a[col * bits + n]
            for side in "AB":
                ports[f"i_CLK{side}"] = ClockSignal("sync")
                ports[f"i_RST{side}"] = Const(0, 1)
                ports[f"i_OCE{side}"] = Const(1, 1)
                for n in range(3):
                    ports[f"i_CS{side}{n}"] = Const(0, 1)
            ports["i_WEA"] = we
            ports["i_CEA"] = Const(1, 1)
            ports["i_WEB"] = Const(0, 1)
            ports["i_CEB"] = self.r_en if self.hold else Const(1, 1)
            m.submodules[f"{prefix}_c{col}"] = Instance(
                "DP16KD",
                p_DATA_WIDTH_A=bits, p_DATA_WIDTH_B=bits,
                p_REGMODE_A="OUTREG" if self.w_read or bits == 36 else "NOREG",
                p_REGMODE_B="OUTREG",
                p_RESETMODE="SYNC", p_ASYNC_RESET_RELEASE="SYNC",
                p_CSDECODE_A="0b000", p_CSDECODE_B="0b000",
                p_WRITEMODE_A="NORMAL", p_WRITEMODE_B="NORMAL",
                p_GSR="AUTO",
                **ports)
        return out[:self.width]

    def _byte_lanes(self, col, bits, w_en, out):
        """Data pins, output pins and write enables of block ``col`` with byte enables: the
        block holds whole bytes (see the module docstring)."""
        ports = {f"i_DI{side}{n}": Const(0, 1) for side in "AB" for n in range(18)}
        if bits < 9:
            lo = col * bits
            lanes = [(n, lo + n) for n in range(bits)]
            ports["i_WEA"] = w_en[lo // 8]
        else:
            per = bits // 9  # bytes in the block
            lanes = [(9 * k + n, 8 * (per * col + k) + n) for k in range(per) for n in range(8)
                     if 8 * (per * col + k) < self.width]
            used = [per * col + k for k in range(per) if 8 * (per * col + k) < self.width]
            ports["i_WEA"] = w_en[used[0]] if len(used) == 1 else w_en[used[0]:used[-1] + 1].any()
            if bits == 18:  # AD0 and AD1: the enables of DI0-8 and DI9-17
                for k in range(2):
                    ports[f"i_ADA{k}"] = w_en[used[k]] if k < len(used) else Const(0, 1)
        for pin, bit in lanes:
            ports[f"i_DIA{pin}"] = self.w_data[bit]
            ports[f"o_DOB{pin}"] = out[bit]
        return ports

    def _bank_pick(self, m, abits, inner, bank_outs):
        # The bank of each read, two cycles on (as its data leaves the output registers); a
        # read without r_en keeps the bank of the last one, as the registers keep its data.
        pick_a = Signal(abits - inner, name="bank_a")
        pick = Signal(abits - inner, name="bank")
        with m.If(self.r_en if self.hold else 1):
            m.d.sync += pick_a.eq(self.r_addr[inner:])
        m.d.sync += pick.eq(pick_a)
        with m.Switch(pick):
            for bank, out in enumerate(bank_outs):
                with m.Case(bank):
                    m.d.comb += self.r_data.eq(out)
