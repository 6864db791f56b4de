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
2. Pick the offset; classify the IPv4 protocol / IPv6 next header; select the length fields.
3. Align the addresses; datagram bounds; which IPv6 extension headers would fit the visible
   bytes.
4-11. One IPv6 extension header every two stages. Headers start on 4-byte words
   (4 * i + 2); a compact view of each word (next-header class, end of a header starting
   there, fragment flags) is computed once from the buffer and shared by all stages, so a
   step is a 10-bit multiplexer on the header pointer and on whether the header is a
   fragment header (first stage) and one LUT of logic (second stage).
12. Read the TCP/UDP ports at the final pointer (IPv4: l3 + 4 * IHL); visible, in the
   datagram, not a fragment? Which hash types of the frame are enabled?
13. Pick the hash type.
14. Start the Toeplitz core (:mod:`.toeplitz`).

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
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .axil import RegisterBusSignature
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
_PARSE_STAGES = 14  # stage 12 samples the mask, 13 picks the hash type, 14 starts the core
_HEADER_WORDS = range(13, 32)  # words (at 4 * i + 2) an IPv6 extension header may start at
# Fields of a word's view (_FrameBytes.info).
_INFO_CLASS = slice(0, _CLS_BITS)
_INFO_AFTER = slice(_CLS_BITS, _CLS_BITS + 6)
_INFO_FRAGMENTED = _CLS_BITS + 6
_INFO_BITS = _CLS_BITS + 7


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
        header starting here (``_INFO_AFTER``; byte 1 is its length in 8-byte units after the
        first 8; 63 when far out) and whether bytes 2-3 hold a non-zero fragment offset or the
        M flag (``_INFO_FRAGMENTED``).

        Computed into a register from whatever the buffer holds, so it is one cycle old: good
        for stage k while the buffer still held the word at k - 1.
        """
        if k - 1 <= 1 + (4 * index + 2) // self._bw:
            if index not in self._info:
                current = self.word(index, 1)
                length = current[8:16]
                after = Mux(length[4:].any(), 63, index + 2 + 2 * length[:4])
                fragment_field = Cat(current[24:32], current[16:24])
                view = Signal(_INFO_BITS, name=f"info{index}", reset_less=True)
                self._m.d.sync += view.eq(Cat(_classify(current[0:8]), after[:6],
                                              (fragment_field & 0xFFF9) != 0))
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

    def write(self, addr, data, en):
        for n, bank in enumerate(self._banks):
            port = bank.write_port()
            self._m.d.comb += [
                port.addr.eq(addr[:self._offset_bits]), port.data.eq(data),
                port.en.eq(en & (addr[self._offset_bits:] == n) if len(self._banks) > 1 else en),
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
        # Bytes XORed in one tree before a register: at most 2 LUT levels at 64 bits (chunks of
        # 8 bytes); wider chunks take larger groups, fewer registers.
        group_bytes = 1 if self.hash_steps >= 5 else 2 if self.hash_steps > 1 else 4
        self._core = ToeplitzCore(TUPLE_BYTES, KEY_BYTES, steps=self.hash_steps,
                                  group_bytes=group_bytes)
        #: Cycles from a frame's last beat to the cycle its enabled mask is sampled.
        self.config_latency = _PARSE_STAGES - 2
        #: Cycles from a frame's last beat to the cycle its key is sampled.
        self.key_latency = _PARSE_STAGES
        #: Cycles from a frame's last beat to the cycle its table entry is read.
        self.table_latency = _PARSE_STAGES + self._core.latency + 1
        #: Cycles from a frame's last beat to its result at the head of an empty FIFO (table
        #: read, a register, the FIFO's write and output register).
        self.latency = self.table_latency + 3
        #: Results the unit holds, in the pipeline and the FIFO, before it stops taking beats:
        #: more than the frames one latency can bring (a frame per cycle), so a consumer that
        #: keeps up never sees ``i.ready`` drop.
        self.result_depth = 1 << (self.latency + 4).bit_length()
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

        frame = self._capture(m)
        parsed = self._parse(m, frame, enabled)

        # -----------------------------------------------------------------------------------
        # Start the core (hash_latency cycles after the last beat) with the tuple and the key
        # as it is in this cycle. For IPv4 the addresses are followed by zeros.
        addresses, ports = parsed["addresses"], parsed["ports"]
        tuple_bytes = Cat(
            addresses[0:64],
            addresses[64:96] | Mux(parsed["ports_v4"], ports, 0),
            addresses[96:256],
            Mux(parsed["ports_v6"], ports, 0),
        )
        m.submodules.core = core = self._core
        m.d.comb += [
            core.start.eq(parsed["start"]),
            core.data.eq(tuple_bytes),
            core.key.eq(key),
        ]

        # Frame information waits for the core.
        meta = [parsed["valid"], parsed["bad"], parsed["hash_type"]]
        for _ in range(core.latency):
            delayed = [Signal.like(v) for v in meta]
            m.d.sync += [d.eq(v) for d, v in zip(delayed, meta, strict=True)]
            meta = delayed
        r_valid, r_bad, r_type = meta
        p_valid, p_bad = Signal(), Signal()
        p_type = Signal(HashType)
        p_hash = Signal(32)
        m.d.sync += [p_valid.eq(r_valid), p_bad.eq(r_bad), p_type.eq(r_type),
                     p_hash.eq(Mux(r_type != HashType.NONE, core.hash, 0))]

        # Table lookup (table_latency cycles after the last beat).
        lookup = table.read(p_hash[:(self.table_size - 1).bit_length()])
        q_valid, q_bad = Signal(), Signal()
        q_type = Signal(HashType)
        q_hash = Signal(32)
        m.d.sync += [q_valid.eq(p_valid), q_bad.eq(p_bad), q_type.eq(p_type), q_hash.eq(p_hash)]

        # -----------------------------------------------------------------------------------
        # Result FIFO, and the credits that keep it from overflowing: a beat is taken only
        # while fewer than result_depth frames are accepted and their results not yet taken.
        m.submodules.fifo = fifo = SyncFIFOBuffered(width=32 + 4 + self.queue_bits,
                                                     depth=self.result_depth)
        m.d.comb += [
            fifo.w_data.eq(Cat(q_hash, q_type, lookup)),
            fifo.w_en.eq(q_valid),
        ]
        result = data.View(RESULT_LAYOUT, self.result.payload)
        m.d.comb += [
            result.hash.eq(fifo.r_data[0:32]),
            result.hash_type.eq(fifo.r_data[32:36]),
            result.queue.eq(fifo.r_data[36:]),
            self.result.valid.eq(fifo.r_rdy),
            fifo.r_en.eq(self.result.ready),
        ]
        outstanding = Signal(range(self.result_depth + 1))
        outstanding_next = Signal.like(outstanding)
        ready = Signal(init=1)
        m.d.comb += [
            outstanding_next.eq(outstanding + frame["end"]
                                - (self.result.valid & self.result.ready)),
            self.i.ready.eq(ready),
        ]
        m.d.sync += [outstanding.eq(outstanding_next),
                     ready.eq(outstanding_next != self.result_depth)]

        counters = [Signal(32, name=name) for name in ("frames", "frames_none", "frames_bad")]
        with m.If(q_valid):
            m.d.sync += counters[0].eq(counters[0] + 1)
            with m.If(q_type == HashType.NONE):
                m.d.sync += counters[1].eq(counters[1] + 1)
            with m.If(q_bad):
                m.d.sync += counters[2].eq(counters[2] + 1)

        self._registers(m, key, enabled, table, counters)
        return m

    def _capture(self, m):
        """Write the first PARSE_WINDOW bytes of each frame into the buffer as beats arrive."""
        bw = self.beat_bytes
        window_beats = PARSE_WINDOW // bw
        beat = self.i.payload
        accept = self.i.valid & self.i.ready
        buf = [Signal(self.width, name=f"buf{j}", reset_less=True) for j in range(window_beats)]
        beat_index = Signal(range(window_beats + 1))
        # One-hot beat_index (bit window_beats: past the window), for the buffer's load enables.
        slot = Signal(window_beats + 1, init=1)
        holes = Signal()  # a non-last beat of this frame had keep not all ones

        # Bytes in a contiguous last beat: one plus the index of its highest kept byte.
        keep = beat.keep
        top = [keep[b] & ~(keep[b + 1] if b + 1 < bw else 0) for b in range(bw)]
        top_index = Cat(Cat(top[b] for b in range(bw) if b >> bit & 1).any()
                        for bit in range(max(1, (bw - 1).bit_length())))

        # A slot loads on valid alone: a beat not accepted is loaded again when it is, and the
        # load enable then comes from flip-flops and the valid input, not from ready.
        for j in range(window_beats):
            with m.If(self.i.valid & slot[j]):
                m.d.sync += buf[j].eq(beat.data)
        with m.If(accept):
            with m.If(beat.last):
                m.d.sync += [beat_index.eq(0), slot.eq(1), holes.eq(0)]
            with m.Else():
                with m.If(~slot[window_beats]):
                    m.d.sync += [beat_index.eq(beat_index + 1), slot.eq(slot << 1)]
                with m.If(~keep.all()):
                    m.d.sync += holes.eq(1)

        valid, bad = Signal(name="s1_valid"), Signal(name="s1_bad")
        vis = Signal(range(PARSE_WINDOW + 1), name="s1_vis")  # bytes the parser may look at
        m.d.sync += [
            valid.eq(accept & beat.last),
            bad.eq(holes | ~keep_is_contiguous(keep, bw)),
            vis.eq(Mux(beat_index == window_beats, PARSE_WINDOW,
                       beat_index * bw + top_index + 1)),
        ]
        return {"bytes": _FrameBytes(m, buf, bw), "valid": valid, "bad": bad, "vis": vis,
                "end": accept & beat.last}

    def _parse(self, m, frame, enabled):
        """The parser pipeline; stage k runs k cycles after the frame's last beat."""
        raw = frame["bytes"]

        def stage(k, **values):
            """Register values into stage k (they are set by stage k - 1)."""
            regs = {}
            for name, value in values.items():
                # Only the valid bits need a reset; the rest is don't-care while they are low.
                reset_less = name not in ("valid", "start")
                reg = Signal.like(value, name=f"s{k}_{name}", reset_less=reset_less) \
                    if isinstance(value, Signal) \
                    else Signal(len(value), name=f"s{k}_{name}", reset_less=reset_less)
                m.d.sync += reg.eq(value)
                regs[name] = reg
            return regs

        # Stage 1: for each possible layer-3 offset l3 = 14 + 4c (0, 1, 2 VLAN tags): is the
        # ethertype a TPID, and is a usable IPv4/IPv6 header announced there.
        s1 = frame
        checks = {}
        for c in range(3):
            l3 = 14 + 4 * c
            ethertype = raw.be16(12 + 4 * c, 1)
            first = raw.byte(l3, 1)
            ihl, version = first[0:4], first[4:8]
            checks[f"tpid{c}"] = (ethertype == _TPIDS[0]) | (ethertype == _TPIDS[1])
            checks[f"v4_{c}"] = (ethertype == _ETHERTYPE_IPV4) & (version == 4) & (ihl >= 5)
            # The IPv4 header is visible when 4 * IHL <= vis - l3.
            checks[f"room{c}"] = Mux(s1["vis"] >= l3, (s1["vis"] - l3) >> 2, 0)[:5]
            checks[f"v6_{c}"] = ((ethertype == _ETHERTYPE_IPV6) & (version == 6)
                                 & (s1["vis"] >= l3 + 40))
            checks[f"ihl{c}"] = ihl
            checks[f"ptr{c}"] = (3 + c + ihl)[:5]  # word of the IPv4 ports: l3 + 4 * IHL
        s2 = stage(
            2, valid=s1["valid"], bad=s1["bad"],
            # A header starting at word i (byte 4 * i + 2) ends visibly at word j <= max_ptr.
            max_ptr=Mux(s1["vis"] >= 2, (s1["vis"] - 2) >> 2, 0)[:5], **checks)

        # Stage 2: pick the layer-3 offset and select its length and fragment fields; per
        # offset, classify the IPv4 protocol and the IPv6 next header.
        at = [~s2["tpid0"], s2["tpid0"] & ~s2["tpid1"], s2["tpid0"] & s2["tpid1"]]
        l3_index = Mux(s2["tpid0"], Mux(s2["tpid1"], 2, 1), 0)
        v4_type = Cat(at[c] & s2[f"v4_{c}"] for c in range(3)).any()
        v6 = ~s2["bad"] & Cat(at[c] & s2[f"v6_{c}"] for c in range(3)).any()
        v4 = ~s2["bad"] & Cat(at[c] & s2[f"v4_{c}"] & (s2[f"ihl{c}"] <= s2[f"room{c}"])
                              for c in range(3)).any()
        ihl = _select(l3_index, {c: s2[f"ihl{c}"] for c in range(3)})
        per_offset = {}
        for c in range(3):
            l3 = 14 + 4 * c
            protocol = raw.byte(l3 + 9, 2)
            per_offset[f"proto{c}"] = _classify_protocol(protocol)
            per_offset[f"nh{c}"] = _classify(raw.byte(l3 + 6, 2))

        def field16(offset):
            return _select(l3_index, {c: raw.be16(14 + 4 * c + offset, 2) for c in range(3)})

        s3 = stage(
            3, valid=s2["valid"], bad=s2["bad"], v4=v4, v6=v6, max_ptr=s2["max_ptr"],
            # Thermometer code of max_ptr: bit j - 15 is j <= max_ptr (for fragment headers).
            reach=Cat(j <= s2["max_ptr"] for j in range(15, 32)),
            l3=l3_index, ihl=ihl,
            shift=Mux(v6, l3_index, l3_index + 1),  # addresses at 22 + 4 * shift
            # The first header after l3 (for frames neither IPv4 nor IPv6: don't care).
            ptr=Mux(v4_type, _select(l3_index, {c: s2[f"ptr{c}"] for c in range(3)}),
                    13 + l3_index)[:5],
            total_length=field16(2), payload_length=field16(4), fragment=field16(6),
            **per_offset)

        # Stage 3: select per offset, align the addresses (IPv6 at l3 + 8, IPv4 at l3 + 12).
        def pick(name):
            return _select(s3["l3"], {c: s3[f"{name}{c}"] for c in range(3)})

        # Does an extension header starting at word i fit the visible bytes: fits (any but a
        # fragment header; see _FrameBytes.info) and fits_fragment (8 bytes, and no offset or
        # M flag)? The same for the whole walk, so computed once here.
        fits, fits_fragment = [], []
        for index in _HEADER_WORDS:
            info = raw.info(index, 3)
            fits.append(info[_INFO_AFTER] <= s3["max_ptr"])
            fits_fragment.append(~info[_INFO_FRAGMENTED] & s3["reach"][index + 2 - 15]
                                 if index + 2 < 32 else Const(0, 1))

        addresses = []
        for n in range(32):
            if n < 8:
                addresses.append(_select(s3["shift"],
                                         {s: raw.byte(22 + 4 * s + n, 3) for s in range(4)}))
            else:
                addresses.append(Mux(s3["v6"], _select(s3["l3"], {c: raw.byte(22 + 4 * c + n, 3)
                                                                  for c in range(3)}), 0))
        walk = stage(
            4, valid=s3["valid"], bad=s3["bad"], v4=s3["v4"], v6=s3["v6"],
            max_ptr=s3["max_ptr"], ptr=s3["ptr"], fail=Const(0, 1),
            cls=Mux(s3["v4"], pick("proto"), Mux(s3["v6"], pick("nh"), 0)),
            fits=Cat(fits), fits_fragment=Cat(fits_fragment))
        side = stage(
            4, v4_fragment=(s3["fragment"] & 0x3FFF) != 0,
            # The ports end inside the IPv4 datagram: 4 * IHL + 4 <= total length.
            v4_length_ok=4 * s3["ihl"] + 4 <= s3["total_length"],
            # IPv6: ports at word i end inside the datagram (at l3 + 40 + payload length)
            # exactly when i <= payload length / 4 + 12 + c.
            bound=(s3["payload_length"] >> 2) + 12 + s3["l3"],
            addresses=Cat(addresses))

        # Stages 4 to 11: one IPv6 extension header in two stages each (see _FrameBytes.info
        # for the view of a word). The walk state: ptr, the word the next header starts at,
        # and its one-hot class. The view of the header at ptr (the class of the next one,
        # where it starts, whether the header fits) is a multiplexer on ptr and on whether the
        # header is a fragment header, cut in two: stage A selects by ptr % 8 for each group
        # of 8 words, stage B by the group and moves the walk on.
        for step in range(MAX_EXT_HEADERS):
            k = 4 + 2 * step
            cls = walk["cls"]
            groups = {}
            for index in self._header_words(step):
                info, bit = raw.info(index, k), index - _HEADER_WORDS.start
                group = groups.setdefault(index // 8, ({}, {}))
                group[0][index % 8] = Cat(info[_INFO_CLASS], info[_INFO_AFTER][:5],
                                          walk["fits"][bit])
                group[1][index % 8] = Cat(info[_INFO_CLASS], Const((index + 2) % 32, 5),
                                          walk["fits_fragment"][bit])
            views = {}
            for g, by_kind in groups.items():
                for fragment, leaves in enumerate(by_kind):
                    view = Signal(_CLS_BITS + 6, name=f"view{g}{'f' * fragment}_s{k}")
                    m.d.comb += view.eq(_select(walk["ptr"][:3], leaves))
                    views[f"view{g}{'f' * fragment}"] = view
            walking = walk["valid"] & ~walk["fail"] & (cls[_CLS_EXT] | cls[_CLS_FRAG])
            if step == 0:
                # IPv6: the ports end inside the datagram when ptr <= bound (5 bits) or when
                # bound is 32 or more.
                side = {**side, "bound": side["bound"][:5], "far": side["bound"][5:].any()}
            half = stage(
                k + 1, valid=walk["valid"], bad=walk["bad"], v4=walk["v4"], v6=walk["v6"],
                max_ptr=walk["max_ptr"], ptr=walk["ptr"], cls=cls, fail=walk["fail"],
                walking=walking, fits=walk["fits"], fits_fragment=walk["fits_fragment"], **views)
            side = stage(k + 1, **side)

            # The next state for each candidate view, then the one of the current header.
            walking = half["walking"]
            candidates = {}
            for g in groups:
                for fragment in (0, 1):
                    view = half[f"view{g}{'f' * fragment}"]
                    next_class = view[:_CLS_BITS]
                    next_ptr, ok = view[_CLS_BITS:_CLS_BITS + 5], view[_CLS_BITS + 5]
                    advance = walking & ok
                    candidates[g + 4 * fragment] = Cat(
                        Mux(advance, next_ptr, half["ptr"]),
                        Mux(advance, next_class, half["cls"]),
                        half["fail"] | (walking & ~ok))
            state = _select(Cat(half["ptr"][3:], half["cls"][_CLS_FRAG]), candidates)
            walk = stage(
                k + 2, valid=half["valid"], bad=half["bad"], v4=half["v4"], v6=half["v6"],
                max_ptr=half["max_ptr"],
                ptr=state[:5], cls=state[5:5 + _CLS_BITS], fail=state[5 + _CLS_BITS],
                fits=half["fits"], fits_fragment=half["fits_fragment"])
            side = stage(k + 2, **side)

        # Stage 12: the ports (TCP/UDP header at word ptr, IPv4: l3 + 4 * IHL), and whether
        # they are visible and inside the datagram; an IPv6 chain going on after
        # MAX_EXT_HEADERS has none. Sample the enabled mask.
        k = 4 + 2 * MAX_EXT_HEADERS
        cls, ptr = walk["cls"], walk["ptr"]
        v4, v6, tcp = walk["v4"], walk["v6"], cls[_CLS_TCP]
        s12 = stage(
            k + 1, valid=walk["valid"], bad=walk["bad"], v4=v4, v6=v6,
            transport=~walk["fail"] & (cls[_CLS_TCP] | cls[_CLS_UDP]),
            tcp=tcp,
            # Is the 4-tuple type of the frame (if it has usable ports) enabled, and its
            # 2-tuple type?
            four_enabled=Mux(v4, Mux(tcp, enabled[HashType.TCP_IPV4.value],
                                     enabled[HashType.UDP_IPV4.value]),
                             Mux(tcp, enabled[HashType.TCP_IPV6.value],
                                 enabled[HashType.UDP_IPV6.value])),
            two_enabled=(v4 & enabled[HashType.IPV4.value]) | (v6 & enabled[HashType.IPV6.value]),
            visible=ptr < walk["max_ptr"],  # the ports end at byte 4 * ptr + 6 <= vis
            in_datagram=Mux(walk["v4"], ~side["v4_fragment"] & side["v4_length_ok"],
                            side["far"] | (ptr <= side["bound"])),
            # The ports at word 8 * g + ptr % 8 for each group g; stage 13 picks the group.
            **{f"ports{g}": _select(ptr[:3], {n: raw.word(8 * g + n, k) for n in range(8)})
               for g in (1, 2, 3)},
            ports_group=ptr[3:], addresses=side["addresses"])

        # Stage 13: the hash type: the 4-tuple type if the frame has usable ports and it is
        # enabled, else the 2-tuple type if enabled.
        v4, v6, tcp = s12["v4"], s12["v6"], s12["tcp"]
        use_four = (s12["transport"] & s12["visible"] & s12["in_datagram"]
                    & s12["four_enabled"])
        use_two = s12["two_enabled"]
        hash_type = Mux(use_four, Mux(v4, Mux(tcp, HashType.TCP_IPV4, HashType.UDP_IPV4),
                                      Mux(tcp, HashType.TCP_IPV6, HashType.UDP_IPV6)),
                        Mux(use_two, Mux(v4, HashType.IPV4, HashType.IPV6), HashType.NONE))
        out = stage(
            k + 2, valid=s12["valid"], bad=s12["bad"], hash_type=hash_type,
            start=s12["valid"] & (use_four | use_two),
            # Where the tuple takes the ports: after the IPv4 or after the IPv6 addresses.
            ports_v4=use_four & v4, ports_v6=use_four & v6,
            ports=_select(s12["ports_group"], {g: s12[f"ports{g}"] for g in (1, 2, 3)}),
            addresses=s12["addresses"])
        return out

    @staticmethod
    def _header_words(step):
        """Words an extension header may start at in walk step ``step``."""
        # The first is at 13 + c (0 <= c <= 2); every header is 8 bytes or more.
        return range(13, 16) if step == 0 else range(13 + 2 * step, _HEADER_WORDS.stop)

    def _registers(self, m, key, enabled, table, counters):
        """The register bus: decode by address fields, read-back, write checks."""
        bus = self.bus
        index = bus.addr[2:6]
        in_table = bus.addr[11]
        in_low = ~in_table & (bus.addr[6:11] == 0)  # 0x000 .. 0x03c
        in_key = ~in_table & (bus.addr[6:11] == 1)  # 0x040 .. 0x07c
        entry = bus.addr[2:11]
        # Range checks as zero tests of the high bits (no carry chains in the err path).
        entry_ok = ~entry[(self.table_size - 1).bit_length():].any()
        key_words = [key[32 * n:32 * (n + 1)] for n in range(KEY_BYTES // 4)]
        low = {REG_ID >> 2: Const(RSS_ID, 32), REG_TABLE_SIZE >> 2: Const(self.table_size, 32),
               REG_HASH_TYPES >> 2: enabled, REG_FRAMES >> 2: counters[0],
               REG_FRAMES_NONE >> 2: counters[1], REG_FRAMES_MALFORMED >> 2: counters[2]}

        # Writes are decoded into registers and take effect a cycle later, so that the long
        # wires to the key (next to the hash core) and the table's write port start at
        # flip-flops.
        mask_ok = (bus.w_data & ~ALL_TYPES_MASK) == 0
        write_hash_types = in_low & (index == REG_HASH_TYPES >> 2) & mask_ok
        write_key = in_key & (index < len(key_words))
        write_table = in_table & entry_ok & ~bus.w_data[self.queue_bits:].any()
        w_data = Signal(32, reset_less=True)
        w_addr = Signal(10, reset_less=True)  # word address
        w_table, w_hash_types, w_any = Signal(), Signal(), Signal()
        w_key = Signal(len(key_words))
        with m.If(bus.w_en):
            m.d.sync += [w_data.eq(bus.w_data), w_addr.eq(bus.addr[2:12])]
        m.d.sync += [
            w_table.eq(bus.w_en & write_table),
            w_hash_types.eq(bus.w_en & write_hash_types),
            w_key.eq(Cat(bus.w_en & write_key & (index == n) for n in range(len(key_words)))),
            w_any.eq(bus.w_en & (write_table | write_hash_types | write_key)),
        ]
        table.write(w_addr[:9], w_data, w_table)
        with m.If(w_hash_types):
            m.d.sync += enabled.eq(w_data)
        for n, word in enumerate(key_words):
            # Word n holds key bytes 4n .. 4n + 3 with byte 4n (the first in hash order) on top.
            with m.If(w_key[n]):
                m.d.sync += word.eq(Cat(w_data[24:32], w_data[16:24], w_data[8:16], w_data[0:8]))

        # Reads: in the r_en cycle, a first level of multiplexers (by the low address bits)
        # selects into registers, the table is read through its own; the cycle after, the
        # word is picked from these. A write of the cycle before r_en lands after the first
        # cycle: then the written value is returned instead, as it reads back unchanged.
        swapped = [Cat(word[24:32], word[16:24], word[8:16], word[0:8]) for word in key_words]
        sources = {  # name: (selected when, value)
            "key_low": (bus.addr[6] & ~index[3], _select(index[:3], dict(enumerate(swapped[:8])))),
            "key_high": (bus.addr[6] & index[3], _select(index[:1], dict(enumerate(swapped[8:])))),
            "low": (~bus.addr[6], _select(index[:3], low)),
        }
        words = {}
        for name, (when, value) in sources.items():
            words[name] = (Signal(name=f"r_{name}_sel"), Signal(32, name=f"r_{name}",
                                                                reset_less=True))
            m.d.sync += [words[name][0].eq(when), words[name][1].eq(value)]
        r_table, forward = Signal(), Signal()
        host = table.read(entry)
        m.d.sync += [
            r_table.eq(in_table),
            forward.eq(w_any & (w_addr == bus.addr[2:12])),
        ]
        r_word = Const(0, 32)
        for selected, value in words.values():
            r_word = r_word | Mux(selected, value, 0)
        m.d.comb += bus.r_data.eq(Mux(forward, w_data, Mux(r_table, host, r_word)))

        readable = ((in_low & Cat(index == n for n in low).any())
                    | (in_key & (index < len(key_words))) | (in_table & entry_ok))
        m.d.comb += bus.err.eq((bus.r_en & ~readable)
                               | (bus.w_en & ~(write_hash_types | write_key | write_table)))
