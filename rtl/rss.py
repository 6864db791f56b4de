# Ref: Microsoft "RSS hashing functions" (Toeplitz hash over src ‖ dst ‖ sport ‖ dport),
#      RFC 791 §3.1 (IPv4), RFC 8200 §4 (IPv6 extension headers), IEEE 802.1Q (VLAN tags),
#      Linux ethtool_rxfh_indir_default() (default indirection table)
"""Receive-side scaling: Toeplitz hash of each frame's flow and its receive queue.

The unit taps a packet stream and emits one result word per frame, in frame order. It follows
the golden reference :mod:`nicsim.hw.ref.rss` bit for bit: the parser sees the first 128 bytes
of a frame, walks up to two VLAN tags, an IPv4 header (options, fragments) or an IPv6 header
with up to four extension headers, picks the most specific enabled hash type and hashes the
addresses (and ports) under the runtime key; the queue is ``table[hash & (table_size - 1)]``.

Datapath
--------
Capture: the first 128 bytes of a frame are written into a buffer as beats arrive, with no
multiplexer in front of it (each beat slot has a load enable). Parse: a fixed-latency pipeline,
one frame per cycle at most, starts the cycle after the last beat. A buffer byte is
overwritten by a later frame no earlier than ``1 + offset // beat_bytes`` cycles after the
last beat, so each stage reads the bytes it needs straight from the buffer while they last and
from copy registers after that (at 64 bits almost none are needed; at 512 bits most are).

1. For each layer-3 offset (14, 18, 22: 0 to 2 VLAN tags): TPID? usable IPv4/IPv6 header?
   Which offset do the tags give, and is there a usable IPv6 header? (From the header fields
   decoded into registers as their beat arrives, and a thermometer code of the visible words
   made at the last beat.)
2. Pick the offset; classify the IPv4 protocol / IPv6 next header; select the length fields.
3. Align the addresses; the datagram bounds and which IPv6 extension headers would fit the
   visible bytes, in parts (combined in stage 4 and in the walk).
4-12. One IPv6 extension header every two stages. Headers start on 4-byte words
   (4 * i + 2); a compact view of each word (next-header class, end of a header starting
   there, fragment flags) is computed once from the buffer and shared by all stages, so a
   step is a multiplexer on the header pointer and on whether the header is a fragment
   header, in two stages (A: ptr % 4 within each group of 4 words, B: the group), and a LUT
   or two of logic (C) that makes the next state. C runs with the next header's A, which
   starts from where the next header would be (copies of it registered by B).
13. Read the TCP/UDP ports at the final pointer (IPv4: l3 + 4 * IHL) within each group of
   4 words; compare the pointer with the visible bytes and the datagram's end, in parts.
   Which hash types of the frame are enabled (stage 12 samples the mask)?
14. Are the ports usable (visible, in the datagram, not a fragment)? Pick the ports' group.
15. Pick the hash type.
16. Start the Toeplitz core (:mod:`.toeplitz`).

At 512 bits the core hashes a 36-byte tuple (IPv4: 12 bytes, zero padded) in one pipelined
pass. At narrower widths it hashes ``ceil(36 / steps)`` bytes a cycle over
``steps = ceil(34 / beat_bytes)`` cycles (64 bits: 8 bytes a cycle, 5 cycles): a frame that
can be hashed (34 bytes or more) lasts at least that many beats, so the core is free whenever
the next one arrives and never stalls the stream. The result reads the indirection table and
enters the result FIFO.

Configuration timing
--------------------
A frame is hashed with the enabled-types mask as it is :attr:`RssUnit.config_latency` cycles
after its last beat is accepted and with the key as it is :attr:`RssUnit.key_latency` cycles
after it (the core latches the whole key in that cycle, so a frame never mixes two keys), and
mapped with the table as it is :attr:`RssUnit.table_latency` cycles after its last beat. So
every frame that starts after a register write sees it. The key is written one 32-bit word at
a time; to change it without any frame hashed under a part-old part-new key, clear the enabled
mask first and restore it after.
The indirection table is a memory: it gets its default contents at configuration, not on
``rst``.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .axil import RegisterBusSignature
from .checksum_common import CreditedFIFO
from .regs import Register
from .stream import beat_signature, check_width, keep_is_contiguous
from .toeplitz import ToeplitzCore

__all__ = [
    "RSS_ID",
    "DEFAULT_KEY",
    "ALL_TYPES_MASK",
    "PARSE_WINDOW",
    "HashType",
    "RESULT_LAYOUT",
    "Register",
    "REGISTERS",
    "REG_ID",
    "REG_TABLE_SIZE",
    "REG_HASH_TYPES",
    "REG_FRAMES",
    "REG_FRAMES_NONE",
    "REG_FRAMES_MALFORMED",
    "REG_KEY",
    "REG_TABLE",
    "RssUnit",
]

RSS_ID = 0x52535301  # "RSS", version 1
# Microsoft RSS verification key (shared/REFERENCES.md); the reset value of the key registers.
DEFAULT_KEY = bytes.fromhex(
    "6d5a56da255b0ec24167253d43a38fb0d0ca2bcbae7b30b477cb2da38030f20c6a42b73bbeac01fa"
)
KEY_BYTES = 40
PARSE_WINDOW = 128  # bytes of each frame the parser sees
MAX_EXT_HEADERS = 4  # IPv6 extension headers walked before giving up on the ports
MAX_TABLE_SIZE = 512
DEFAULT_QUEUES = 4  # Linux ethtool_rxfh_indir_default(): table[i] = i % queues
TUPLE_BYTES = 36  # IPv6 addresses and ports, the longest hash input


class HashType(enum.Enum, shape=4):
    """Fields a hash covers; bit ``n`` of the enabled mask enables type ``n``."""

    NONE = 0
    IPV4 = 1
    TCP_IPV4 = 2
    UDP_IPV4 = 3
    IPV6 = 4
    TCP_IPV6 = 5
    UDP_IPV6 = 6


ALL_TYPES_MASK = 0b1111110  # every type but NONE

#: Layout of a result word: ``hash`` bits [31:0], ``hash_type`` [35:32], ``queue`` [63:48].
RESULT_LAYOUT = data.StructLayout({
    "hash": unsigned(32),
    "hash_type": HashType,
    "reserved": unsigned(12),
    "queue": unsigned(16),
})


REG_ID = 0x000
REG_TABLE_SIZE = 0x004
REG_HASH_TYPES = 0x008
REG_FRAMES = 0x010
REG_FRAMES_NONE = 0x014
REG_FRAMES_MALFORMED = 0x018
REG_KEY = 0x040
REG_TABLE = 0x800

REGISTERS = (
    Register("ID", REG_ID, 1, "ro", f"constant {RSS_ID:#010x}"),
    Register("TABLE_SIZE", REG_TABLE_SIZE, 1, "ro", "entries of the indirection table"),
    Register("HASH_TYPES", REG_HASH_TYPES, 1, "rw",
             f"bit n enables HashType n; reset {ALL_TYPES_MASK:#04x}; bits outside 1..6: error"),
    Register("FRAMES", REG_FRAMES, 1, "ro", "frames with a result (wraps at 2**32)"),
    Register("FRAMES_NONE", REG_FRAMES_NONE, 1, "ro", "frames hashed NONE (wraps)"),
    Register("FRAMES_MALFORMED", REG_FRAMES_MALFORMED, 1, "ro",
             "frames with tkeep holes, hashed NONE (wraps)"),
    Register("KEY", REG_KEY, KEY_BYTES // 4, "rw",
             "Toeplitz key, word i = key bytes 4i..4i+3 with byte 4i in bits [31:24]; "
             "reset: the Microsoft verification key"),
    Register("TABLE", REG_TABLE, None, "rw",
             "indirection table entry i; reset (at configuration, not by rst): "
             "i % min(4, 2**queue_bits); index >= table_size or value >= 2**queue_bits: error"),
)

# Next-header classes the parser tracks (internal), one-hot: bit n set for class n, none for
# any other header.
_CLS_EXT, _CLS_FRAG, _CLS_TCP, _CLS_UDP = range(4)
_CLS_BITS = 4
_ETHERTYPE_IPV4 = 0x0800
_ETHERTYPE_IPV6 = 0x86DD
_TPIDS = (0x8100, 0x88A8)  # IEEE 802.1Q C-TAG, 802.1ad S-TAG
_IPPROTO_TCP = 6
_IPPROTO_UDP = 17
_EXT_HEADERS = (0, 43, 60)  # hop-by-hop, routing, destination options: (len + 1) * 8 bytes
_NEXTHDR_FRAGMENT = 44  # 8 bytes
_PARSE_STAGES = 16  # stage 12 samples the mask, 15 picks the hash type, 16 starts the core
# Registers holding the core's start (reset_less, inverted); the first has a reset and drives
# the core's phase.
_START_COPIES = ((False, False), (False, True), (True, False), (True, True))
# Register copies of a value that synthesis keeps apart: (reset_less, initial value, inverted),
# all but the stage registers' own (True, 0, False).
_COPY_STYLES = ((True, 1, False), (True, 0, True), (True, 1, True), (False, 0, False),
                (False, 1, False), (False, 0, True), (False, 1, True))
_PORT_GROUPS = range(2, 8)  # groups of 4 words (at 4 * i + 2) the ports may start in
_VIEW_GROUPS = range(3, 8)  # groups of 4 words an IPv6 extension header may start in
_HEADER_WORDS = range(13, 32)  # words (at 4 * i + 2) an IPv6 extension header may start at
# Fields of a word's view (_FrameBytes.info).
_INFO_CLASS = slice(0, _CLS_BITS)
_INFO_AFTER = slice(_CLS_BITS, _CLS_BITS + 6)
_INFO_FAR = _CLS_BITS + 6
_INFO_FRAGMENTED = slice(_CLS_BITS + 7, _CLS_BITS + 9)
_INFO_BITS = _CLS_BITS + 9


def _select(index, options):
    """Return ``options[index]`` as a binary tree of 2:1 multiplexers (combinational).

    ``options`` maps the index values that can occur to their values; any other index is a
    don't-care, which lets whole subtrees collapse into their only possible value.
    """
    def tree(bit, base):
        if bit < 0:
            return options.get(base)
        low, high = tree(bit - 1, base), tree(bit - 1, base | 1 << bit)
        if low is None or high is None:
            return high if low is None else low
        return Mux(index[bit], high, low)

    value = tree(len(index) - 1, 0)
    return Const(0, 1) if value is None else value


def _at_least(value, k):
    """Return ``value >= k`` for a constant ``k`` as logic, not a carry chain (combinational)."""
    if k <= 0:
        return Const(1, 1)
    if k >= 1 << len(value):
        return Const(0, 1)
    result = Const(1, 1)  # the bits below the lowest compared are equal
    for i in range(len(value)):
        result = value[i] & result if k >> i & 1 else value[i] | result
    return result


def _less(a, b):
    """Return ``a < b`` (unsigned) as logic, not a carry chain (combinational)."""
    result = Const(0, 1)
    for i in range(max(len(a), len(b))):
        a_i = a[i] if i < len(a) else Const(0, 1)
        b_i = b[i] if i < len(b) else Const(0, 1)
        result = (~a_i & b_i) | (~(a_i ^ b_i) & result)
    return result


def _add_const(value, k):
    """Return ``value + k`` modulo ``2 ** len(value)`` as logic (combinational)."""
    bits, carry = [], Const(0, 1)
    for i in range(len(value)):
        if k >> i & 1:
            bits.append(~(value[i] ^ carry))
            carry = value[i] | carry
        else:
            bits.append(value[i] ^ carry)
            carry = value[i] & carry
    return Cat(bits)


def _classify(value):
    """Return the one-hot class of an IPv6 next-header value (combinational)."""
    classes = {_CLS_EXT: Cat(value == n for n in _EXT_HEADERS).any(),
               _CLS_FRAG: value == _NEXTHDR_FRAGMENT,
               _CLS_TCP: value == _IPPROTO_TCP, _CLS_UDP: value == _IPPROTO_UDP}
    return Cat(classes[n] for n in range(_CLS_BITS))


def _classify_protocol(value):
    """Return the one-hot class of an IPv4 protocol value (combinational)."""
    return _classify(value) & (1 << _CLS_TCP | 1 << _CLS_UDP)


class _FrameBytes:
    """The first bytes of a frame as parser stage ``k`` (``k`` cycles after the last beat)
    sees them.

    The capture buffer holds byte ``p`` until the next frame's beat ``p // beat_bytes``
    overwrites it, never earlier than ``1 + p // beat_bytes`` cycles after the last beat; later
    stages read copy registers, made here on demand (call outside ``m.If``/``m.Switch``).
    """

    def __init__(self, m, buf, beat_bytes):
        self._m, self._buf, self._bw = m, buf, beat_bytes
        self._copies = {}
        self._info = {}

    def _copy(self, tag, k, value_before):
        if (tag, k) not in self._copies:
            copy = Signal(len(value_before), name=f"{tag}_s{k}", reset_less=True)
            self._m.d.sync += copy.eq(value_before)
            self._copies[tag, k] = copy
        return self._copies[tag, k]

    def byte(self, p, k):
        if p >= PARSE_WINDOW:
            return Const(0, 8)
        if k <= 1 + p // self._bw:
            return self._buf[p // self._bw][8 * (p % self._bw):8 * (p % self._bw + 1)]
        return self._copy(f"byte{p}", k, self.byte(p, k - 1))

    def be16(self, p, k):
        return Cat(self.byte(p + 1, k), self.byte(p, k))

    def word(self, index, k):
        """The 4 bytes at ``4 * index + 2``, where IPv4/IPv6 headers and ports start."""
        return Cat(self.byte(4 * index + 2 + n, k) for n in range(4))

    def info(self, index, k):
        """Return the walk's view of word ``index`` for stage ``k`` >= 2: the one-hot class of
        byte 0 (a next header, field ``_INFO_CLASS``), the word after a non-fragment extension
        header starting here (``_INFO_AFTER``, from the low 4 bits of byte 1, its length in
        8-byte units after the first 8), whether the length's high bits put that word far out
        (``_INFO_FAR``) and whether bytes 2-3 hold a non-zero fragment offset or the M flag
        (``_INFO_FRAGMENTED``: either bit, one for each byte). Every bit is one LUT of the
        word's bits, bar the classes.

        Computed into a register from whatever the buffer holds, so it is one cycle old: good
        for stage k while the buffer still held the word at k - 1.
        """
        if k - 1 <= 1 + (4 * index + 2) // self._bw:
            if index not in self._info:
                current = self.word(index, 1)
                length = current[8:16]
                after = Const(index + 2, 6) + Cat(Const(0, 1), length[:4])
                # Bytes 2-3: the fragment offset (13 bits) and the M flag (bit 0 of byte 3).
                view = Signal(_INFO_BITS, name=f"info{index}", reset_less=True)
                self._m.d.sync += view.eq(Cat(_classify(current[0:8]), after[:6],
                                              length[4:].any(), current[16:24].any(),
                                              (current[24:32] & 0xF9).any()))
                self._info[index] = view
            return self._info[index]
        return self._copy(f"info{index}", k, self.info(index, k - 1))


class _Table:
    """The indirection table, in banks of 16 entries (one LUT-RAM deep).

    ``read`` returns the entry at an address one cycle later; the banks are read
    asynchronously into registers and a multiplexer on the registered bank number follows, so
    neither cycle has more than one level of multiplexers behind the RAM.
    """

    def __init__(self, m, size, queue_bits, init):
        self._m = m
        self._bank_depth = min(16, size)
        self._banks = []
        for first in range(0, size, self._bank_depth):
            bank = Memory(shape=unsigned(queue_bits), depth=self._bank_depth,
                          init=init[first:first + self._bank_depth])
            m.submodules[f"table{first // self._bank_depth}"] = bank
            self._banks.append(bank)
        self._offset_bits = (self._bank_depth - 1).bit_length()
        #: Entries in a bank.
        self.bank_depth = self._bank_depth
        #: Number of banks.
        self.banks = len(self._banks)

    def write(self, addr, data, banks):
        """Write ``data`` at ``addr`` (the offset in a bank) of each bank whose bit of
        ``banks`` is set."""
        for n, bank in enumerate(self._banks):
            port = bank.write_port()
            self._m.d.comb += [
                port.addr.eq(addr[:self._offset_bits]), port.data.eq(data), port.en.eq(banks[n]),
            ]

    def read(self, addr):
        bank_number = Signal(len(addr) - self._offset_bits, reset_less=True)
        self._m.d.sync += bank_number.eq(addr[self._offset_bits:])
        entries = {}
        for n, bank in enumerate(self._banks):
            port = bank.read_port(domain="comb")
            entry = Signal.like(port.data, reset_less=True)
            self._m.d.comb += port.addr.eq(addr[:self._offset_bits])
            self._m.d.sync += entry.eq(port.data)
            entries[n] = entry
        return _select(bank_number, entries)

    def read_one_hot(self, offset, banks):
        """Return the entry at ``offset`` of the bank whose bit of ``banks`` is set (zero if
        none) one cycle later: an OR of registers, for the register bus."""
        value = Const(0, self._banks[0].shape)
        for bank, enable in zip(self._banks, banks, strict=True):
            port = bank.read_port(domain="comb")
            entry = Signal.like(port.data, reset_less=True)
            self._m.d.comb += port.addr.eq(offset)
            self._m.d.sync += entry.eq(Mux(enable, port.data, 0))
            value = value | entry
        return value


class RssUnit(wiring.Component):
    """Compute the RSS hash, hash type and receive queue of every frame of a stream.

    A tap: it consumes the frames and emits one result word per frame, in frame order. It
    accepts a beat every cycle at every width, whatever the frame sizes, as long as results are
    taken; ``i.ready`` drops only when the result FIFO could not hold the result of every frame
    already accepted (:attr:`result_depth` results, counting those still in the pipeline).

    Parameters
    ----------
    width : int
        Data width in bits: 64, 128, 256 or 512.
    table_size : int
        Entries of the indirection table, a power of two from 1 to 512.
    queue_bits : int
        Width of a queue number, 1 to 16.

    Members
    -------
    i : In(beat stream)
        Frames (Ethernet without FCS). ``keep`` must be all ones on all but the last beat and
        ``0..01..1`` (not zero) on the last; other frames count as malformed and hash NONE.
    result : Out(stream of unsigned(64))
        One word per frame, laid out as :data:`RESULT_LAYOUT`: hash [31:0] (0 for NONE),
        hash type [35:32], queue [63:48].
    bus : In(RegisterBusSignature(12))
        Registers, see :data:`REGISTERS`.
    """

    def __init__(self, width=64, table_size=128, queue_bits=8):
        self.width = check_width(width)
        if (not isinstance(table_size, int) or not 1 <= table_size <= MAX_TABLE_SIZE
                or table_size & (table_size - 1)):
            raise ValueError(f"Table size must be a power of two from 1 to {MAX_TABLE_SIZE}, "
                             f"not {table_size!r}")
        if not isinstance(queue_bits, int) or not 1 <= queue_bits <= 16:
            raise ValueError(f"Queue bits must be from 1 to 16, not {queue_bits!r}")
        self.table_size = table_size
        self.queue_bits = queue_bits
        self.beat_bytes = width // 8
        #: Hash core cycles per tuple: the fewest beats of a frame that can be hashed (34 bytes).
        self.hash_steps = -(-34 // self.beat_bytes)
        # One byte's contribution (8 AND terms) is two LUT levels; the core registers it and
        # XORs the bytes of a chunk in registered trees.
        self._core = ToeplitzCore(TUPLE_BYTES, KEY_BYTES, steps=self.hash_steps,
                                  group_bytes=1,
                                  start_copies=len(_START_COPIES) if self.hash_steps > 1 else 1)
        #: Cycles from a frame's last beat to the cycle its enabled mask is sampled.
        self.config_latency = _PARSE_STAGES - 4
        #: Cycles from a frame's last beat to the cycle its key is sampled.
        self.key_latency = _PARSE_STAGES
        #: Cycles from a frame's last beat to the cycle its table entry is read.
        self.table_latency = _PARSE_STAGES + self._core.latency
        #: Cycles from a frame's last beat to its result at the head of an empty FIFO (table
        #: read, two registers, the FIFO's write and output register).
        self.latency = self.table_latency + 4
        #: Results the unit holds, in the pipeline and the FIFO, before it stops taking beats:
        #: more than the frames one latency can bring (a frame per cycle) and the cycle the
        #: count runs behind, so a consumer that keeps up never sees ``i.ready`` drop.
        self.result_depth = 1 << (self.latency + 3).bit_length()
        super().__init__({
            "i": In(beat_signature(width)),
            "result": Out(stream.Signature(unsigned(64))),
            "bus": In(RegisterBusSignature(12)),
        })

    @property
    def default_table(self):
        """The table after configuration: ``i % min(4, 2**queue_bits)``."""
        queues = min(DEFAULT_QUEUES, 1 << self.queue_bits)
        return [i % queues for i in range(self.table_size)]

    def elaborate(self, platform):
        m = Module()
        key = Signal(8 * KEY_BYTES, init=int.from_bytes(DEFAULT_KEY, "little"))
        enabled = Signal(7, init=ALL_TYPES_MASK)
        table = _Table(m, self.table_size, self.queue_bits, self.default_table)

        # ``i.ready``, and an inverted copy of it: the capture logic's loads are shared
        # between them.
        ready = Signal(init=1)
        stalled = Signal(init=0)
        frame = self._capture(m, (self.i.valid & ready, self.i.valid & ~stalled))
        parsed = self._parse(m, frame, enabled)

        # -----------------------------------------------------------------------------------
        # Start the core (hash_latency cycles after the last beat) with the tuple and the key
        # as it is in this cycle.
        m.submodules.core = core = self._core
        m.d.comb += [
            core.start.eq(parsed["start"][:len(core.start)]),
            core.data.eq(parsed["tuple"]),
            core.key.eq(key),
        ]

        # Frame information waits for the core; ``hashed``: the type is not NONE.
        meta = [parsed["valid"], parsed["bad"], parsed["hash_type"], parsed["hashed"]]
        for _ in range(core.latency):
            delayed = [Signal.like(v) for v in meta]
            m.d.sync += [d.eq(v) for d, v in zip(delayed, meta, strict=True)]
            meta = delayed
        r_valid, r_bad, r_type, r_hashed = meta
        # Table lookup (table_latency cycles after the last beat), at the hash (0 for NONE)
        # as the core ends it.
        lookup = table.read(Mux(r_hashed, core.hash, 0)[:(self.table_size - 1).bit_length()])
        p_valid, p_bad = Signal(), Signal()
        p_type = Signal(HashType)
        p_hash = Signal(32)
        m.d.sync += [p_valid.eq(r_valid), p_bad.eq(r_bad), p_type.eq(r_type),
                     p_hash.eq(Mux(r_hashed, core.hash, 0))]
        # The entry is picked from the banks in the cycle after the read: register it before
        # the FIFO's memory.
        queue = Signal(self.queue_bits)
        v_valid = Signal()
        v_word = Signal(32 + 4)
        m.d.sync += [queue.eq(lookup), v_valid.eq(p_valid), v_word.eq(Cat(p_hash, p_type))]

        # -----------------------------------------------------------------------------------
        # Result FIFO, and the credits that keep it from overflowing: a beat is taken only
        # while fewer than result_depth frames are accepted and their results not yet taken.
        m.submodules.fifo = fifo = CreditedFIFO(width=32 + 4 + self.queue_bits,
                                                depth=self.result_depth)
        m.d.comb += [
            fifo.w_data.eq(Cat(v_word, queue)),
            fifo.w_en.eq(v_valid),
        ]
        result = data.View(RESULT_LAYOUT, self.result.payload)
        m.d.comb += [
            result.hash.eq(fifo.r_data[0:32]),
            result.hash_type.eq(fifo.r_data[32:36]),
            result.queue.eq(fifo.r_data[36:]),
            self.result.valid.eq(fifo.r_rdy),
            fifo.r_en.eq(self.result.ready),
        ]
        # The count runs a cycle behind, from registered frame ends and takes (handshakes stay
        # off the counter's carry chain): frames outstanding are at most one more than counted,
        # so a beat is taken while fewer than result_depth - 1 are counted (result_depth out).
        depth = self.result_depth
        counted = Signal(range(depth + 1))
        ended, was_taken = Signal(), Signal()
        m.d.comb += self.i.ready.eq(ready)  # counted < depth - 1
        # ready in the next cycle from the comparisons of the count, not of the sum.
        next_ready = Mux(ended & ~was_taken, counted < depth - 2,
                         Mux(~ended & was_taken, counted < depth, counted < depth - 1))
        m.d.sync += [
            ended.eq(frame["end"]),
            was_taken.eq(self.result.valid & self.result.ready),
            counted.eq(counted + ended - was_taken),
            ready.eq(next_ready),
            stalled.eq(~next_ready),
        ]

        counters = [Signal(32, name=name) for name in ("frames", "frames_none", "frames_bad")]
        with m.If(p_valid):
            m.d.sync += counters[0].eq(counters[0] + 1)
            with m.If(p_type == HashType.NONE):
                m.d.sync += counters[1].eq(counters[1] + 1)
            with m.If(p_bad):
                m.d.sync += counters[2].eq(counters[2] + 1)

        self._registers(m, key, enabled, table, counters)
        return m

    def _capture(self, m, accepts):
        """Write the first PARSE_WINDOW bytes of each frame into the buffer as beats arrive.

        A beat is taken when ``accepts[0]``, or equally ``accepts[1]``: two copies that share
        the load of the capture logic.
        """
        accept, accept_index = accepts
        bw = self.beat_bytes
        window_beats = PARSE_WINDOW // bw
        beat = self.i.payload
        buf = [Signal(self.width, name=f"buf{j}", reset_less=True) for j in range(window_beats)]
        beat_index = Signal(range(window_beats + 1))
        # One-hot beat_index (bit window_beats: past the window), for the buffer's load enables.
        slot = Signal(window_beats + 1, init=1)
        holes = Signal()  # a non-last beat of this frame had keep not all ones

        # The highest kept byte of a contiguous last beat, one-hot.
        keep = beat.keep
        top = [keep[b] & ~(keep[b + 1] if b + 1 < bw else 0) for b in range(bw)]

        # A slot loads every cycle its one-hot bit is set, valid or not: the beat that is
        # accepted is the last one it loads before the bit moves on. The load enable is then a
        # flip-flop output alone (no input, no ready). After a last beat, slot 0 loads from the
        # next cycle on: exactly when a back-to-back frame's first beat would, the case the
        # readers of the buffer are built for.
        # The load enables come from an inverted copy of the slot bits (the buffer's many loads
        # pull them away from the capture logic).
        idle = Signal(window_beats, init=~1 % (1 << window_beats))  # ~slot
        for j in range(window_beats):
            with m.If(~idle[j]):
                m.d.sync += buf[j].eq(beat.data)
        with m.If(accept):
            with m.If(beat.last):
                m.d.sync += [slot.eq(1), holes.eq(0), idle.eq(~Const(1, window_beats))]
            with m.Else():
                with m.If(~slot[window_beats]):
                    m.d.sync += [slot.eq(slot << 1), idle.eq(~(slot << 1)[:window_beats])]
                with m.If(~keep.all()):
                    m.d.sync += holes.eq(1)
        with m.If(accept_index):
            with m.If(beat.last):
                m.d.sync += beat_index.eq(0)
            with m.Elif(~slot[window_beats]):
                m.d.sync += beat_index.eq(beat_index + 1)

        # The last word (at 4 * i + 2) a header may end in: max_ptr = (vis - 2) // 4 for the
        # vis bytes the parser may look at (vis = 1 + the index of the last byte, 128 past the
        # window), from the beat index and the one-hot top byte without an adder: for the top
        # byte b >= 1 of beat n it is n * (beat_bytes / 4) + (b - 1) // 4, for b = 0 the word
        # before (n - 1) * (beat_bytes / 4) + beat_bytes / 4 - 1.
        low_bits = (bw // 4).bit_length() - 1
        high_bits = (window_beats - 1).bit_length()
        words = Cat(Cat(top[b] for b in range(1, bw) if (b - 1) >> 2 >> bit & 1).any()
                    for bit in range(low_bits))
        last_index = Signal(high_bits, reset_less=True)  # beat_index - 1
        with m.If(accept & ~beat.last & ~slot[window_beats]):
            m.d.sync += last_index.eq(beat_index)
        max_ptr_value = Mux(slot[window_beats], 31,
                            Mux(top[0], Mux(slot[0], 0, Cat(Const(-1, low_bits), last_index)),
                                Cat(words, beat_index[:high_bits])))

        # The same as a thermometer code, reach[j] = max_ptr >= j, one LUT each: with
        # W = beat_bytes / 4 words a beat, the top byte of a contiguous last beat n at or past
        # 4 * d + 1 (keep bit 4 * d + 1) puts word n * W + d in reach; every beat after beat
        # n puts all of its words in reach. slot_after[n] = beat_index > n.
        slot_after = Signal(window_beats, init=0)
        with m.If(accept_index):
            with m.If(beat.last):
                m.d.sync += slot_after.eq(0)
            with m.Elif(~slot[window_beats]):
                m.d.sync += slot_after.eq(slot_after | slot[:window_beats])
        words_per_beat = bw // 4
        reach_value = Cat((slot[j // words_per_beat] & keep[4 * (j % words_per_beat) + 1])
                          | slot_after[j // words_per_beat] for j in range(32))

        # Header fields stage 1 needs, decoded as their beat arrives into registers of their
        # own (loaded with the buffer, so they hold the same frame as the buffer does): for
        # each layer-3 offset l3 = 14 + 4c, the ethertype before it and the first byte (the
        # three bytes share a beat at every width).
        fields = {}
        for c in range(3):
            l3 = 14 + 4 * c
            ethertype = Cat(self._beat_byte(beat.data, l3 - 1), self._beat_byte(beat.data, l3 - 2))
            first = self._beat_byte(beat.data, l3)
            decoded = {
                f"tpid{c}": (ethertype == _TPIDS[0]) | (ethertype == _TPIDS[1]),
                f"ipv4_{c}": (ethertype == _ETHERTYPE_IPV4) & (first[4:8] == 4),
                f"ipv6_{c}": (ethertype == _ETHERTYPE_IPV6) & (first[4:8] == 6),
                f"ihl{c}": first[0:4],
            }
            for name, value in decoded.items():
                reg = Signal(len(value), name=f"hdr_{name}", reset_less=True)
                with m.If(~idle[l3 // bw]):
                    m.d.sync += reg.eq(value)
                fields[name] = reg

        valid, bad = Signal(name="s1_valid"), Signal(name="s1_bad")
        max_ptr = Signal(5, name="s1_max_ptr")
        reach = Signal(32, name="s1_reach", reset_less=True)
        m.d.sync += [
            valid.eq(accept & beat.last),
            bad.eq(holes | ~keep_is_contiguous(keep, bw)),
            max_ptr.eq(max_ptr_value),
            reach.eq(reach_value),
        ]
        return {"bytes": _FrameBytes(m, buf, bw), "valid": valid, "bad": bad,
                "max_ptr": max_ptr, "reach": reach, "fields": fields,
                "end": accept & beat.last}

    def _beat_byte(self, data, p):
        """Return byte ``p`` of a frame from the beat that carries it (combinational)."""
        offset = p % self.beat_bytes
        return data[8 * offset:8 * offset + 8]

    def _parse(self, m, frame, enabled):
        """The parser pipeline; stage k runs k cycles after the frame's last beat."""
        raw = frame["bytes"]

        def stage(k, **values):
            """Register values into stage k (they are set by stage k - 1)."""
            regs = {}
            for name, value in values.items():
                # Only the valid bits need a reset; the rest is don't-care while they are low.
                reset_less = name not in ("valid", "start", "start_four", "start_two")
                reg = Signal.like(value, name=f"s{k}_{name}", reset_less=reset_less) \
                    if isinstance(value, Signal) \
                    else Signal(len(value), name=f"s{k}_{name}", reset_less=reset_less)
                m.d.sync += reg.eq(value)
                regs[name] = reg
            return regs

        def copies(name, value, count):
            """Register ``count`` copies of ``value`` (for the next stage), to share its load.

            Synthesis merges flip-flops with the same input, reset and initial value, even
            when they are kept apart on purpose: each copy has its own combination of reset,
            initial value and polarity, and none has the plain one (no reset, initial value 0,
            not inverted) that the stage registers have. Returns the copies' values.
            """
            if count > len(_COPY_STYLES):
                raise ValueError(f"At most {len(_COPY_STYLES)} distinct copies")
            values = []
            for n, (reset_less, init, inverted) in enumerate(_COPY_STYLES[:count]):
                copy = Signal(len(value), name=f"{name}{n}", init=-init, reset_less=reset_less)
                m.d.sync += copy.eq(~value if inverted else value)
                values.append(~copy if inverted else copy)
            return values

        # Stage 1: for each possible layer-3 offset l3 = 14 + 4c (0, 1, 2 VLAN tags): is the
        # ethertype a TPID, and is a usable IPv4/IPv6 header announced there. All from the
        # header fields decoded on capture and the thermometer code of max_ptr. Which offset
        # the tags give, and whether an IPv6 header is there, go into registers of their own.
        s1, fields, reach = frame, frame["fields"], frame["reach"]
        checks = {}
        v6_at = []
        for c in range(3):
            ihl = fields[f"ihl{c}"]
            checks[f"tpid{c}"] = fields[f"tpid{c}"]
            # IPv4 with its header visible: 4 * IHL <= vis - l3, or IHL + 3 + c <= max_ptr.
            checks[f"v4_{c}"] = fields[f"ipv4_{c}"] & _select(
                ihl, {v: reach[v + 3 + c] if v >= 5 else Const(0, 1) for v in range(16)})
            # IPv6 with its header visible: vis >= l3 + 40, or max_ptr >= 13 + c.
            v6_at.append(fields[f"ipv6_{c}"] & reach[13 + c])
            checks[f"ihl{c}"] = ihl
            # The word of the IPv4 ports: l3 + 4 * IHL.
            checks[f"ptr{c}"] = _select(ihl, {v: Const(3 + c + v, 5) for v in range(16)})
        tpid0, tpid1 = fields["tpid0"], fields["tpid1"]
        l3_value = Mux(tpid0, Mux(tpid1, 2, 1), 0)
        # Copies of the offset for the length fields' multiplexers (48 bits).
        l3_fields = copies("s2_l3_fields", l3_value, 2)
        s2 = stage(2, valid=s1["valid"], bad=s1["bad"], max_ptr=s1["max_ptr"],
                   reach=reach[15:32], l3=l3_value,
                   v6_type=Mux(tpid0, Mux(tpid1, v6_at[2], v6_at[1]), v6_at[0]),
                   **checks)

        # Stage 2: pick the layer-3 offset and select its length and fragment fields; per
        # offset, classify the IPv4 protocol and the IPv6 next header.
        at = [~s2["tpid0"], s2["tpid0"] & ~s2["tpid1"], s2["tpid0"] & s2["tpid1"]]
        l3_index = s2["l3"]
        v4_type = Cat(at[c] & s2[f"v4_{c}"] for c in range(3)).any()
        v6_type = s2["v6_type"]
        v6 = ~s2["bad"] & v6_type
        v4 = ~s2["bad"] & v4_type
        ihl = _select(l3_index, {c: s2[f"ihl{c}"] for c in range(3)})
        per_offset = {}
        for c in range(3):
            l3 = 14 + 4 * c
            protocol = raw.byte(l3 + 9, 2)
            per_offset[f"proto{c}"] = _classify_protocol(protocol)
            per_offset[f"nh{c}"] = _classify(raw.byte(l3 + 6, 2))

        def field16(offset, copy):
            return _select(l3_fields[copy], {c: raw.be16(14 + 4 * c + offset, 2)
                                             for c in range(3)})

        s3 = stage(
            3, valid=s2["valid"], bad=s2["bad"], v4=v4, v6=v6, max_ptr=s2["max_ptr"],
            # Thermometer code of max_ptr: bit j - 15 is j <= max_ptr (for fragment headers).
            reach=s2["reach"],
            l3=l3_index, ihl=ihl,
            # Addresses at 22 + 4 * shift. (For a frame with tkeep holes, which hashes NONE,
            # the IPv6 type alone decides: don't care.)
            shift=Mux(v6_type, l3_index, l3_index + 1),
            # The first header after l3 (for frames neither IPv4 nor IPv6: don't care).
            ptr=Mux(v6_type, 13 + l3_index,
                    _select(l3_index, {c: s2[f"ptr{c}"] for c in range(3)}))[:5],
            total_length=field16(2, 0), payload_length=field16(4, 1), fragment=field16(6, 0),
            **per_offset)

        # Stage 3: select per offset, align the addresses (IPv6 at l3 + 8, IPv4 at l3 + 12).
        def pick(name):
            return _select(s3["l3"], {c: s3[f"{name}{c}"] for c in range(3)})

        # Does an extension header starting at word i fit the visible bytes: fits (any but a
        # fragment header; see _FrameBytes.info) and fits_fragment (8 bytes, and no offset or
        # M flag)? The same for the whole walk, so computed once here; fits in parts, combined
        # in stage 4 (the first header's by the walk itself): after <= max_ptr compared by the
        # top 3 bits of ``after`` (<, ==) and the low 3.
        fits_parts, fits_fragment = [], []
        max_ptr = s3["max_ptr"]
        for index in _HEADER_WORDS:
            info = raw.info(index, 3)
            after = info[_INFO_AFTER]
            near = ~info[_INFO_FAR]
            fits_parts.append(Cat(near & _less(after[3:], max_ptr[3:]),
                                  near & (after[3:] == max_ptr[3:]),
                                  ~_less(max_ptr[:3], after[:3])))
            fits_fragment.append(~info[_INFO_FRAGMENTED].any() & s3["reach"][index + 2 - 15]
                                 if index + 2 < 32 else Const(0, 1))

        addresses = []
        v6_copies = copies("s3_v6_", v6, 3)
        for n in range(32):
            if n < 8:
                addresses.append(_select(s3["shift"],
                                         {s: raw.byte(22 + 4 * s + n, 3) for s in range(4)}))
            else:
                # The IPv6 test, from one of three copies (each zeroes 8 bytes).
                addresses.append(Mux(v6_copies[n // 8 - 1],
                                     _select(s3["l3"], {c: raw.byte(22 + 4 * c + n, 3)
                                                       for c in range(3)}), 0))
        walk = stage(
            4, valid=s3["valid"], bad=s3["bad"], v4=s3["v4"], v6=s3["v6"],
            max_ptr=s3["max_ptr"], ptr=s3["ptr"], fail=Const(0, 1),
            cls=Mux(s3["v4"], pick("proto"), Mux(s3["v6"], pick("nh"), 0)),
            fits_parts=Cat(fits_parts), fits_fragment=Cat(fits_fragment))
        ptrs = copies("s4_ptr_view", s3["ptr"][:2], len(_VIEW_GROUPS))
        # The datagram's bounds, in two stages too. The ports end inside the IPv4 datagram
        # when 4 * IHL + 4 <= total length, or IHL < total length // 4; inside the IPv6 one (at
        # l3 + 40 + payload length) at word i exactly when i <= payload length / 4 + 12 + c:
        # always when that is 32 or more (far), else when i <= bound.
        side = stage(
            4, v4_fragment=Cat(s3["fragment"][:7].any(), s3["fragment"][7:14].any()),
            v4_long=s3["total_length"][6:].any(),
            v4_less=_less(s3["ihl"], s3["total_length"][2:6]),
            l3=s3["l3"], payload_high=s3["payload_length"][7:].any(),
            payload_words=s3["payload_length"][2:7],
            addresses=Cat(addresses))
        far, bound = {}, {}
        for c in range(3):
            far[c] = side["payload_high"] | _at_least(side["payload_words"], 20 - c)
            bound[c] = _add_const(side["payload_words"], 12 + c)
        side = stage(
            5, v4_ok=~side["v4_fragment"].any() & (side["v4_long"] | side["v4_less"]),
            far=_select(side["l3"], far), bound=_select(side["l3"], bound),
            addresses=side["addresses"])

        # Stages 4 to 12: the IPv6 extension headers (see _FrameBytes.info for the view of a
        # word). The walk state: ptr, the word the next header starts at, its one-hot class,
        # whether the walk failed and whether it goes on. The view of the header at ptr (the
        # class of the next one, where it starts, whether the header fits) is a multiplexer on
        # ptr and on whether the header is a fragment header, cut in two: stage A selects by
        # ptr % 4 for each group of 4 words (a copy of ptr % 4 for each), stage B picks one by
        # the group and the kind; stage C makes the next state from it. Stage A of the next
        # header runs with stage C, on where the next header starts (copies of it registered
        # by stage B): if the walk does not advance, that view goes unused.
        # The first header's view has the parts of its fit; the later ones have the fit.
        carried = ("valid", "bad", "v4", "v6", "max_ptr", "fits", "fits_fragment")
        parts = walk["fits_parts"]
        fits = Cat(parts[3 * n] | (parts[3 * n + 1] & parts[3 * n + 2])
                   for n in range(len(_HEADER_WORDS)))
        state = stage(5, **{name: walk[name] for name in carried[:5]}, fits=fits,
                      fits_fragment=walk["fits_fragment"], ptr=walk["ptr"],
                      cls=walk["cls"], fail=walk["fail"],
                      walking=walk["valid"] & (walk["cls"][_CLS_EXT] | walk["cls"][_CLS_FRAG]))
        for step in range(MAX_EXT_HEADERS):
            k = 4 + 2 * step  # stage A; the state is at k + 1
            groups = {}
            for index in self._header_words(step):
                info, bit = raw.info(index, k), index - _HEADER_WORDS.start
                group = groups.setdefault(index // 4, ({}, {}))
                group[0][index % 4] = Cat(info[_INFO_CLASS], info[_INFO_AFTER][:5],
                                          parts[3 * bit:3 * bit + 3] if step == 0
                                          else Cat(walk["fits"][bit], Const(0, 2)))
                group[1][index % 4] = Cat(info[_INFO_CLASS], Const((index + 2) % 32, 5),
                                          walk["fits_fragment"][bit], Const(0, 2))
            views = {}
            for q, by_kind in groups.items():
                for fragment, leaves in enumerate(by_kind):
                    views[q + 8 * fragment] = _select(ptrs[q - _VIEW_GROUPS.start], leaves)
            views = stage(k + 1, **{f"view{n}": view for n, view in views.items()})

            # Stage B: the view of the header at ptr.
            view = _select(Cat(state["ptr"][2:], state["cls"][_CLS_FRAG]),
                           {int(name[4:]): value for name, value in views.items()})
            picked = stage(k + 2, **state, view=view)
            if step + 1 < MAX_EXT_HEADERS:
                ptrs = copies(f"s{k + 2}_ptr_view", view[_CLS_BITS:_CLS_BITS + 2],
                              len(_VIEW_GROUPS))
                walk = picked

            # Stage C: advance to the header's successor if it fits, else stop (and fail if
            # the walk was going on).
            view = picked["view"]
            next_class = view[:_CLS_BITS]
            next_ptr = view[_CLS_BITS:_CLS_BITS + 5]
            fit = view[_CLS_BITS + 5:]
            ok = fit[0] | (fit[1] & fit[2])
            advance = picked["walking"] & ok
            new_ptr = Mux(advance, next_ptr, picked["ptr"])
            state = stage(
                k + 3, **{name: picked[name] for name in carried},
                ptr=new_ptr, cls=Mux(advance, next_class, picked["cls"]),
                fail=picked["fail"] | (picked["walking"] & ~ok),
                walking=advance & (next_class[_CLS_EXT] | next_class[_CLS_FRAG]))
        for k in range(6, 4 + 2 * MAX_EXT_HEADERS + 2):
            side = stage(k, **side)
        walk = state
        k = 4 + 2 * MAX_EXT_HEADERS + 1
        # Sample the enabled mask (stage k - 1): which types the frame's IP version may use.
        v4, v6 = picked["v4"], picked["v6"]
        types = stage(
            k,
            tcp_enabled=Mux(v4, enabled[HashType.TCP_IPV4.value],
                            v6 & enabled[HashType.TCP_IPV6.value]),
            udp_enabled=Mux(v4, enabled[HashType.UDP_IPV4.value],
                            v6 & enabled[HashType.UDP_IPV6.value]),
            two_enabled=((v4 & enabled[HashType.IPV4.value])
                         | (v6 & enabled[HashType.IPV6.value])))
        # Each port multiplexer (a group of 4 words) has a copy of ptr % 4 of its own: ptr
        # alone would drive hundreds of LUTs.
        port_ptrs = dict(zip(_PORT_GROUPS, copies(f"s{k}_port_ptr", new_ptr[:2],
                                                  len(_PORT_GROUPS)), strict=True))

        # Stage 13: the ports (TCP/UDP header at word ptr, IPv4: l3 + 4 * IHL) for each group
        # of 4 words, and whether they are visible and inside the datagram; an IPv6 chain
        # going on after MAX_EXT_HEADERS has none.
        cls, ptr = walk["cls"], walk["ptr"]
        v4, v6, tcp = walk["v4"], walk["v6"], cls[_CLS_TCP]
        # Is the frame TCP or UDP and its 4-tuple type enabled? (Whether its ports are usable
        # comes two stages later.) One signal per IP version: stage 15 then gates each half of
        # the ports with one LUT.
        four = ~walk["fail"] & ((cls[_CLS_TCP] & types["tcp_enabled"])
                                | (cls[_CLS_UDP] & types["udp_enabled"]))
        s12 = stage(
            k + 1, valid=walk["valid"], bad=walk["bad"], v4=v4, v6=v6,
            tcp=tcp, four_v4=four & v4, four_v6=four & v6,
            # The hash core's start, but for the ports' usability: valid and a type enabled.
            start_four=walk["valid"] & four,
            start_two=walk["valid"] & types["two_enabled"],
            # Is its 2-tuple type enabled?
            two_enabled=types["two_enabled"],
            # Are the ports visible (they end at byte 4 * ptr + 6 <= vis: ptr < max_ptr) and,
            # for IPv6, inside the datagram (ptr <= bound, or far)? Each comparison of the
            # 5-bit pointers in parts: the top 2 bits (< and ==) and the low 3; stage 14
            # combines them.
            vis_high_lt=_less(ptr[3:], walk["max_ptr"][3:]),
            vis_high_eq=ptr[3:] == walk["max_ptr"][3:],
            vis_low_lt=_less(ptr[:3], walk["max_ptr"][:3]),
            v4_ok=side["v4_ok"], far=side["far"],
            dgram_high_lt=_less(ptr[3:], side["bound"][3:]),
            dgram_high_eq=ptr[3:] == side["bound"][3:],
            dgram_low_le=~_less(side["bound"][:3], ptr[:3]),
            # The ports at word 4 * q + ptr % 4 for each group q; stage 14 picks the group.
            **{f"ports{q}": _select(port_ptrs[q], {n: raw.word(4 * q + n, k) for n in range(4)})
               for q in _PORT_GROUPS},
            addresses=side["addresses"])
        # The group, in two copies (one for each half of the ports).
        ports_group = copies(f"s{k + 1}_ports_group", ptr[2:], 2)

        # Stage 14: are the ports usable; the ports of their group.
        visible = s12["vis_high_lt"] | (s12["vis_high_eq"] & s12["vis_low_lt"])
        in_datagram = Mux(s12["v4"], s12["v4_ok"],
                          s12["far"] | s12["dgram_high_lt"]
                          | (s12["dgram_high_eq"] & s12["dgram_low_le"]))
        s13 = stage(
            k + 2, **{name: s12[name] for name in (
                "valid", "bad", "v4", "v6", "tcp", "four_v4", "four_v6", "start_four",
                "start_two", "two_enabled", "addresses")},
            usable=visible & in_datagram,
            ports=Cat(_select(ports_group[half], {q: s12[f"ports{q}"][16 * half:16 * half + 16]
                                                  for q in _PORT_GROUPS}) for half in range(2)))

        # Stage 15: the hash type: the 4-tuple type if the frame has usable ports and it is
        # enabled, else the 2-tuple type if enabled.
        v4, v6, tcp = s13["v4"], s13["v6"], s13["tcp"]
        usable = s13["usable"]
        four_v4 = s13["four_v4"] & usable
        four_v6 = s13["four_v6"] & usable
        use_four = four_v4 | four_v6
        use_two = s13["two_enabled"]
        addresses = s13["addresses"]
        ports = s13["ports"]
        hash_type = Mux(use_four, Mux(v4, Mux(tcp, HashType.TCP_IPV4, HashType.UDP_IPV4),
                                      Mux(tcp, HashType.TCP_IPV6, HashType.UDP_IPV6)),
                        Mux(use_two, Mux(v4, HashType.IPV4, HashType.IPV6), HashType.NONE))
        # An iterative core loads some 670 flip-flops on start: copies of it share them. The
        # copies differ in reset, polarity or initial value, so that synthesis keeps them apart.
        start = (s13["start_four"] & usable) | s13["start_two"]
        start_copies = []
        for n, (reset_less, inverted) in enumerate(_START_COPIES):
            copy = Signal(name=f"s{k + 3}_start{n}", init=n % 2 if reset_less else inverted,
                          reset_less=reset_less)
            m.d.sync += copy.eq(start ^ inverted)
            start_copies.append(copy ^ inverted)
        out = stage(
            k + 3, valid=s13["valid"], bad=s13["bad"], hash_type=hash_type,
            hashed=use_four | use_two,
            # The hash input: the addresses, and the ports after the IPv4 or after the IPv6
            # addresses (IPv4: zeros after that).
            tuple=Cat(addresses[0:64], addresses[64:96] | Mux(four_v4, ports, 0),
                      addresses[96:256], Mux(four_v6, ports, 0)))
        out["start"] = Cat(start_copies)
        return out

    @staticmethod
    def _header_words(step):
        """Words an extension header may start at in walk step ``step``."""
        # The first is at 13 + c (0 <= c <= 2); every header is 8 bytes or more.
        return range(13, 16) if step == 0 else range(13 + 2 * step, _HEADER_WORDS.stop)

    def _registers(self, m, key, enabled, table, counters):
        """The register bus: decode a cycle ahead, read-back, write checks."""
        bus = self.bus
        key_words = [key[32 * n:32 * (n + 1)] for n in range(KEY_BYTES // 4)]
        low = {REG_ID >> 2: Const(RSS_ID, 32), REG_TABLE_SIZE >> 2: Const(self.table_size, 32),
               REG_HASH_TYPES >> 2: enabled, REG_FRAMES >> 2: counters[0],
               REG_FRAMES_NONE >> 2: counters[1], REG_FRAMES_MALFORMED >> 2: counters[2]}
        entry_bits = (self.table_size - 1).bit_length()
        bank_bits = (table.bank_depth - 1).bit_length()

        # The bus holds the address and write data from the cycle before a strobe: decode them
        # into registers then, so that the strobe cycle starts from flip-flops next to their
        # loads and the address fans out to a few registers only.
        index = bus.addr[2:6]
        in_table = bus.addr[11]
        in_low = ~in_table & (bus.addr[6:11] == 0)  # 0x000 .. 0x03c
        in_key = ~in_table & (bus.addr[6:11] == 1)  # 0x040 .. 0x07c
        entry = bus.addr[2:11]
        # Range checks as zero tests of the high bits (no carry chains).
        entry_ok = ~entry[entry_bits:].any()
        key_index_ok = index < len(key_words)

        def early(name, value):
            reg = Signal(len(value), name=f"reg_{name}", reset_less=True)
            m.d.sync += reg.eq(value)
            return reg

        # Address and data checks apart, so that each is a shallow tree; the strobe cycle
        # combines them.
        # The data checks are registered per byte: one OR tree each over all 32 bits lets
        # synthesis share terms between them and chain five LUTs.
        hash_types_addr = early("hash_types_addr", in_low & (index == REG_HASH_TYPES >> 2))
        hash_types_data = ~early("hash_types_data", Cat(
            (bus.w_data[8 * b:8 * b + 8] & ~(ALL_TYPES_MASK >> 8 * b & 0xFF)).any()
            for b in range(4))).any()
        key_addr = early("key_addr", in_key & key_index_ok)
        table_addr = early("table_addr", in_table & entry_ok)
        high = bus.w_data & ~((1 << self.queue_bits) - 1)
        table_data = ~early("table_data", Cat(high[8 * b:8 * b + 8].any()
                                              for b in range(4))).any()
        # The key word a write goes to, one-hot on the index alone (one LUT each); the strobe
        # cycle gates it with key_addr.
        key_word = early("key_word", Cat(index == n for n in range(len(key_words))))
        w_key_addr = early("w_key_addr", in_key & key_index_ok)
        readable = (early("readable_low", in_low & Cat(index == n for n in low).any())
                    | key_addr | table_addr)
        write_hash_types = hash_types_addr & hash_types_data
        write_table = table_addr & table_data
        writable = write_hash_types | key_addr | write_table
        m.d.comb += bus.err.eq((bus.r_en & ~readable) | (bus.w_en & ~writable))

        # Writes take effect a cycle after the strobe, from registers, so that the long wires
        # to the key (next to the hash core) and the table's write ports start at flip-flops.
        # The key also goes to a LUT-RAM copy that serves the reads; ``written`` tells which
        # words differ from their reset value there.
        w_data = Signal(32, reset_less=True)
        w_addr = Signal(9, reset_less=True)  # word address in the table or the key
        w_table = Signal(table.banks)  # one-hot: the bank written
        w_hash_types, w_any = Signal(), Signal()
        w_key = Signal(len(key_words))
        w_key_any = Signal()
        written = Signal(len(key_words))
        w_entry = early("w_entry", entry)
        # The table bank an access goes to, one-hot.
        banks = early("table_banks", Cat(in_table & (entry[bank_bits:] == n)
                                         for n in range(table.banks)))
        with m.If(bus.w_en):
            m.d.sync += [w_data.eq(bus.w_data), w_addr.eq(w_entry)]
        m.d.sync += [
            w_table.eq(Mux(bus.w_en & write_table, banks, 0)),
            w_hash_types.eq(bus.w_en & write_hash_types),
            w_key.eq(Mux(bus.w_en & w_key_addr, key_word, 0)),
            w_key_any.eq(bus.w_en & w_key_addr),
            w_any.eq(bus.w_en & writable),
            written.eq(written | Mux(bus.w_en & w_key_addr, key_word, 0)),
        ]
        table.write(w_addr, w_data, w_table)
        with m.If(w_hash_types):
            m.d.sync += enabled.eq(w_data)
        for n, word in enumerate(key_words):
            # Word n holds key bytes 4n .. 4n + 3 with byte 4n (the first in hash order) on top.
            with m.If(w_key[n]):
                m.d.sync += word.eq(Cat(w_data[24:32], w_data[16:24], w_data[8:16], w_data[0:8]))
        default_words = [int.from_bytes(DEFAULT_KEY[4 * n:4 * n + 4], "big")
                         for n in range(len(key_words))]
        m.submodules.key_copy = key_copy = Memory(shape=unsigned(32), depth=16,
                                                  init=default_words)
        key_write = key_copy.write_port()
        m.d.comb += [key_write.addr.eq(w_addr[:4]), key_write.data.eq(w_data),
                     key_write.en.eq(w_key_any)]

        # Reads: in the strobe cycle each source is selected into a register of its own, zero
        # unless it is the one read; the cycle after, r_data is their OR. A write strobed in
        # the cycle before (same address, as the bus holds it) lands after that: then its
        # value is returned instead, as it reads back unchanged.
        forward = w_any
        key_index = early("key_index", index)
        key_read = key_copy.read_port(domain="comb")
        m.d.comb += key_read.addr.eq(key_index)
        key_default = early("key_default", _select(index, dict(enumerate(default_words))))
        # Whether word index was written, in two halves (a multiplexer on 4 bits is too deep).
        written_low = _select(index[:3], dict(enumerate(written[:8])))
        written_high = _select(index[:1], dict(enumerate(written[8:])))
        key_written = Mux(early("key_high", index[3]), early("key_written_high", written_high),
                          early("key_written_low", written_low))
        read_key = early("read_key", in_key & key_index_ok)
        low_index = early("low_index", index[:3])
        read_low = early("read_low", in_low)
        r_key = Signal(32, reset_less=True)
        r_low = Signal(32, reset_less=True)
        r_forward = Signal(32, reset_less=True)
        m.d.sync += [
            r_key.eq(Mux(read_key & ~forward,
                         Mux(key_written, key_read.data, key_default), 0)),
            r_low.eq(Mux(read_low & ~forward, _select(low_index, low), 0)),
            r_forward.eq(Mux(forward, w_data, 0)),
        ]
        host = table.read_one_hot(early("host_offset", entry[:bank_bits]),
                                  Mux(forward, 0, banks))
        m.d.comb += bus.r_data.eq(r_key | r_low | r_forward | host)
