# Ref: Linux net/ipv4/tcp_offload.c tcp_gso_segment(), net/ipv4/udp_offload.c
#      __udp_gso_segment(), net/ipv4/af_inet.c inet_gso_segment(), net/ipv6/ip6_offload.c
#      ipv6_gso_segment(); RFC 9293 §3.1, RFC 768, RFC 791 §3.1, RFC 8200 §3 and §8.1, RFC 1071
"""Transmit segmentation offload: TCP (TSO) and UDP (USO) super-frames cut into MSS-sized frames.

The rules are those of :func:`nicsim.hw.ref.tso.tso_segment`. Each super-frame carries its
command in ``user`` of its first beat (:class:`TsoCommandLayout`).

The design, in four parts that run at the same time:

* **Ingress**: every frame is stored whole in a frame ring (room for a frame of the largest
  size, 64 KiB of payload behind 142 bytes of headers, and 256 beats more, in whole kibi-words:
  9216 beats at 64 bit) while its length is counted, so that a frame whose payload is over the
  limit or shorter than the MSS is dropped before any of it is sent. The ring's addresses run
  modulo its depth; the next frame fills it while the current one is read.
* **Segmenter**, in two halves. The header side reads a frame's header beats back into a
  register (and into one of four header template banks), parses them (a few cycles), sums the
  header words it will need (one header beat a cycle) and decides drop or send, while the
  payload side segments the frame before. The payload side runs a gearbox over the payload
  beats: it writes each segment's payload into a segment ring at the byte lanes it will have in
  the output frame (right behind the headers), one beat a cycle, while the beats are summed.
  Its planner works out from the lengths alone which input bytes make each output beat, and
  queues one command a beat for its mover, which rotates the data.
* **Finisher**: when a segment's payload sum is known, computes its header fields (lengths,
  IPv4 ID, sequence number, flags, IPv4 header checksum, TCP/UDP checksum) and queues a
  segment descriptor.
* **Reader**: sends each segment as template header beats, then the payload beats from the
  segment ring, with the per-segment fields written over the template on the fly, one beat a
  cycle. It also sends one result word per super-frame, in frame order.

The segment ring holds two segments of the largest MSS (``max_mss``, 9000 bytes by default):
one drains while the next fills, so a segment's checksum is known before its header leaves.
Once a super-frame's first segment is buffered the output sends a beat every cycle, across
segments and across super-frames of 64 KiB (``benchmarks/bench_tso.py``). The header side
works on the next super-frame while the payload side moves the current one, and the finisher
carries each frame's values down its pipeline, so the payload side takes the next frame two
cycles after the current one's last payload beat (``_PIPE_DRAIN``; a dropped frame's result
still waits for the last descriptor, ``_FIN_DRAIN``): back-to-back super-frames of one
1448-byte segment leave at 0.90 (64 bit) and 0.65 (512 bit) beats a cycle (0.88 and 0.59 with
the payload side waiting for the finisher, 0.80 and 0.43 with the header work in series). At
512 bit the header side (read, parse, sums: about 32 cycles a frame) is what holds them now.

For timing (ECP5, ``nicsim synth tso``), the decisions that move data take their inputs from
flip-flops: room and credit flags are registered a cycle late with the margin that takes,
the oldest commands, payload beats and descriptors wait in flip-flop windows popped on
flip-flop state (:func:`_window`: an entry loads on one enable, from the entry above or the
queue by a flip-flop select, and the wide data takes its enable from copies of the
consumer's flip-flops), the rotation, the header sums and the reader's byte rewrites are
pipelined, queue writes and the ring's write and read addresses come from flip-flops, the
segmenter's state changes on flags set a cycle ahead (``rd_last``, ``step_hit``,
``sum_more``, ``in_start``, ``p_free``), the hand-over to the payload side is a flip-flop set
from the next values of ``in_start`` and ``p_busy``, every queue keeps its level as a
thermometer code (:class:`.checksum_common.CreditedFIFO` with ``thermometer``: one LUT from
the read decision to each bit, no carry chain), and the reader's room for the head's next
beat is one flip-flop set for the head of the next cycle. The planner counts commands instead of
subtracting a remainder: a segment's first command, its full commands and the size of its
last one are worked out from per-frame values and from ``pay_after`` a cycle ahead, so
that ``seg_end`` comes from a counter's sign bit; ``plan`` itself is a flip-flop set from
the next values of its parts, and the command's lane arithmetic runs in two registered
steps behind it. The frame ring, segment ring and template are
:class:`.bram.RegisteredMemory`: two cycles from address to data, the second a register.
For ECP5 synthesis (``bram="dp16kd"``, which ``nicsim synth`` passes through
``Design.synth_params``) that register is the DP16KD's own output register (``REGMODE_B``
``OUTREG``): yosys's ECP5 memory mapping always writes ``NOREG`` and has no option for it,
and a DP16KD without it takes 5.83 ns from clock to data in nextpnr's timing, 8.9 ns with the
route to a fabric flip-flop. Verilator and the Amaranth simulations run the behavioural
memories with the same latency (bit-exact, same rates).

Measured at 64 bit on ECP5-85k (nextpnr placing for 250 MHz, seed 1 unless said): 112.2 MHz
with the fabric registers behind the block RAMs (103 of the 169 endpoints later than 6.67 ns
were those registers); 119.7 MHz with the output registers (no block RAM path left among the
149 endpoints later than 6.67 ns: the reader's beat counter ``left`` and its flags, the
segmenter's state enable, the planner's ``seg_end``, the descriptor window, ``src_count``,
``room``, the finisher's first sums); 126.8 MHz with the state and issue flags above; 142.1
MHz (84 DP16KD, 7173 LUT4, 8261 flip-flops; 139.4 MHz with seed 2) once the reader takes its
head descriptor on one LUT of flip-flops. Its nine registers later than 6.67 ns (from
nextpnr's per-endpoint arrival times) were the planner's ``seg_end`` (``rem - avail``
compared with the lane count, 7.04 ns), the result queue's push, ``can_finish`` (five LUT
levels), the descriptor window, the descriptor credits (the drop decision), ``room``, the
finisher's first sums (a four-word sum: three LUT levels of compressor before the carry
chain) and the planner's lane arithmetic. Those are all cut here (the counting planner,
registered pushes and credits, pair sums, the window enables), and with them the paths that
led next: the source read flags, ``pay_le``, the header sums' word tests and group select,
the next segment's sums, the header beat enables, the template lanes. The routed figure did
not follow: 137.0, 139.0, 138.0 and 135.6 MHz (seed 1) after the four rounds, 140.7 MHz with
seed 2 (7167 LUT4, 8855 flip-flops). Its late paths were two or three LUT levels with 5 to
5.8 ns of routing each, 300 to 570 endpoints later than 6 ns whichever path was cut.

The 84 block RAMs then were the frame ring's 64 (16384 words of 64 bits, one bit a block:
the next power of two above the 8210 beats of the largest frame, room for two such frames),
16 for the segment ring (4096 x 4) and 4 for the template (128 x 18). The ring now holds the
largest frame and 256 beats more (9216 words in two sections: 32 blocks of 8192 x 2 and 4 of
1024 x 18, :func:`.bram.dp16kd_sections`), its addresses run modulo its depth (the sums in
flip-flops ahead of their use), and it frees each beat as the payload side reads it, so the
next frame fills it behind the reads and the rates stay as they were (line rate for 64 KiB
sends at both widths, ``benchmarks/bench_tso.py``): 56 DP16KD. With nextpnr's default
placement the fewer blocks alone did not move the figure (134.3 MHz, seed 1; an experiment
with a ring of 8192 words, 52 blocks, too small for the largest frame: 142.1 MHz, inside the
spread of seeds). Placement did: with HeAP's timing weight at 52 instead of 10
(``hw/synth.py``, for every design) the same netlist routed at 151.4 MHz, and the late
endpoints fell from hundreds to a few, now paths of logic depth: at rtl be0e403, 138.7 MHz,
held by one planner path of five LUT levels (``pay_after <= p_a_lanes`` into ``n_s1``,
7.2 ns; the next endpoint at 6.6 ns), now a flip-flop set with ``pay_after``
(``pay_small``). Measured at rtl 2af07d2: 148.5 MHz (seed 1; 7312 LUT4, 8958 flip-flops,
56 DP16KD; 118.1 MHz with the default weight, late on the ring's free pointer ``ring_rp``
behind ``p_draining`` with 2.2 to 2.4 ns routes). The one path later than 6.67 ns runs from
the command queue's ``nonempty`` to its ``stored`` counter
(:class:`.checksum_common.CreditedFIFO`, 6.74 ns, 4.85 ns of it routing); the next endpoints
end by 6.44 ns. Taking the queue's level from sums of the register alone (+1 and -1 picked
after the fetch decision) removed that path, but the netlist then routed at 142.1 MHz (seed 1,
late on ``in_start`` through the planner into ``seg_id``, three LUTs with 5.8 ns of routing):
at this depth the figure moves a few percent with placement, and the change was not kept.
nextpnr's timing-driven ripup (``--tmg-ripup``) routed for
more than 27 minutes without finishing on the 84-block netlist and is not used.

Every endpoint of that run (arrival times from nextpnr's SDF, ``--sdf``): the seven within 0.3
ns of 6.67 ns were the level counters of two queues (commands and descriptors: the read
decision, a step LUT and the carry chain into ``stored``, 4.6 to 4.85 ns of routing), and the
next ones, by 6.3 ns, the output queue's counter, the planner's registers loaded at the
hand-over (``p_busy`` through ``in_start & ~p_busy`` and ``plan & seg_end`` into their enables,
three LUTs) and ``ring_rp`` (``p_draining`` through ``p_step == _PIPE_DRAIN``, four LUTs). Cut
here: the queues' levels as thermometer codes, the hand-over as a flip-flop worked out a cycle
ahead, the drain's end as ``p_free``. Measured at rtl ba0d5f9 (seed 1): 152.6 MHz (7350 LUT4,
9013 flip-flops, 56 DP16KD); the late endpoints are now the result credits (``res_credits``,
behind the reader's take decision, 6.55 ns), the command window's data enables (the mover's
emit decision, three LUTs, then the enables of each entry's 112 bits) and the header sums'
group select. Cutting those as well (the result credits as a thermometer code, the group select
one-hot, ``ip_len`` from a per-frame header length, the template slot matches in pairs of bits)
left 20 endpoints later than 6 ns instead of 173 but routed at 151.8 MHz (seed 1, held by one
path: the reader's ``beat >= bh`` into the segment ring's read pointer, 6.59 ns); with that
comparison as a flip-flop too, 149.9 MHz (the command window's enables, 115 endpoints later
than 6 ns); with the window's data enables split between ``emit`` and ``emit_data``, 140.7 MHz.
Those were not kept: past 150 MHz the figure follows placement by a few percent either way, and
what holds it is the mover's emit decision reaching the windows' data enables, which takes a
change of structure (the per-segment fields out of the command queue) rather than another
register.

At 512 bit (rtl be0e403, ECP5-85k, seed 1) the engine fits: 21 082 LUT4 and 2 361 carry cells
(25 804 LUT4 as the synthesis table counts them), 24 136 flip-flops, 86 DP16KD (41 % of the
device: the ring 2048 x 512 in 57 blocks of 2048 x 9, the segment ring 512 x 512 in 29 of 1024
x 18), 526 LUT RAM cells; 30 813 of the 83 640 logic cells once packed; its routing had not
finished after more than 30 minutes on a loaded machine. Routed at rtl ba0d5f9 (seed 1, HeAP
timing weight 52): 83.4 MHz (21 192 LUT4 and 2 354 carry cells, 25 900 as the table counts
them, 24 221 flip-flops, 86 DP16KD, 30 884 logic cells packed; 58.8 MHz estimated after
placement; 95 minutes for the whole flow on a machine shared with three other synthesis runs).
Its critical path is the header sums' pseudo-header word sum of a 64-byte beat
(``hpart_pseudo`` into ``hbeat_pseudo``: eight LUT levels, then the carry chain, 12 ns): at
this width the sums of one header beat a cycle want more registered steps.
"""

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from .axil import RegisterBusSignature
from .bram import PRIMITIVES, RegisteredMemory
from .checksum_common import CreditedFIFO, counter_registers
from .regs import Register
from .stream import beat_signature, check_width

__all__ = [
    "REGISTERS",
    "COUNTERS",
    "REASONS",
    "MAX_HEADER",
    "TsoCommandLayout",
    "TsoResultLayout",
    "Tso",
]

#: Read-only 32-bit counters (wrapping), by byte address. Writes and other addresses: SLVERR.
COUNTERS = {
    "frames_in": 0x00,
    "frames_segmented": 0x04,
    "segments_out": 0x08,
    "drop_bad_mss": 0x0C,
    "drop_not_ip": 0x10,
    "drop_malformed": 0x14,
    "drop_fragment": 0x18,
    "drop_ipv6_ext_headers": 0x1C,
    "drop_wrong_protocol": 0x20,
    "drop_oversize": 0x24,
    "drop_short": 0x28,
}
_COUNTER_DOCS = {
    "frames_in": "super-frames accepted",
    "frames_segmented": "super-frames sent as segments",
    "segments_out": "frames (segments) sent",
    "drop_bad_mss": "dropped: MSS 0 or over max_mss",
    "drop_not_ip": "dropped: ethertype after the VLAN tags neither IPv4 nor IPv6 (or cut short)",
    "drop_malformed": "dropped: IP/TCP/UDP header truncated or invalid, or a tkeep hole",
    "drop_fragment": "dropped: IPv4 MF flag or fragment offset set",
    "drop_ipv6_ext_headers": "dropped: IPv6 next header is an extension header",
    "drop_wrong_protocol": "dropped: not TCP (tcp mode) or not UDP (udp mode)",
    "drop_oversize": "dropped: payload over max_payload",
    "drop_short": "dropped: payload shorter than the MSS",
}

#: The register map (see :mod:`.regs`): every counter read-only, 32 bits, wrapping.
REGISTERS = tuple(
    Register(name.upper(), offset, 1, "ro", _COUNTER_DOCS[name])
    for name, offset in COUNTERS.items()
)

#: Result codes (``TsoResultLayout.reason``): 0 sent, then the drop reasons of
#: :mod:`nicsim.hw.ref.tso`.
REASONS = ("sent", "bad_mss", "not_ip", "malformed", "fragment", "ipv6_ext_headers",
           "wrong_protocol", "oversize", "short")
_CODE = {name: code for code, name in enumerate(REASONS)}

#: Longest header the engine takes: Ethernet, two VLAN tags, IPv4 with options, TCP with options.
MAX_HEADER = 14 + 8 + 60 + 60

_TPIDS = (0x8100, 0x88A8)
_IPV6_EXT_HEADERS = (0, 43, 44, 50, 51, 60, 135, 139, 140, 253, 254)
_TCP_FIN, _TCP_PSH, _TCP_CWR = 0x01, 0x08, 0x80
# Cycles after a frame's last emit: before the next frame starts (its per-frame values reach
# the finisher's stage A, which keeps copies down its pipeline), and before a drop's descriptor
# may follow (the last segment's descriptor is queued).
_PIPE_DRAIN = 2
_FIN_DRAIN = 9
# The block RAMs are never read where they are written in the same cycle (a frame is read
# once it is stored, a segment once it is written, a template bank once it is filled; the
# reads issued every cycle elsewhere are not used): no collision logic behind them (yosys).
_NO_RW_CHECK = {"no_rw_check": 1}
# Memories shallower than this stay behavioural under ``bram`` (the template at 256 and 512
# bit: a few words across many DP16KD blocks; yosys picks their mapping).
_BRAM_MIN_DEPTH = 64
_BANKS = 4  # header template banks: frames whose header is read while earlier ones are sent
_CMD_DEPTH = 16  # gearbox commands planned ahead of the data (covers the queue's loop)
_SRC_DEPTH = 16  # payload beats read ahead of the gearbox (covers the read loop)
_OUT_DEPTH = 16  # beats between the reader and ``o``; covers its credit loop at full rate
_RES_DEPTH = 8  # result words between the reader and ``result``
_SLOTS = 13  # header bytes rewritten per segment
_GEAR_LAG = 2  # cycles from the mover's emit to the gearbox output (``gb``)
# The frame ring: room for the largest frame and this many beats more, in whole kibi-words
# where that is less than the next power of two (DP16KD blocks in sections, see .bram).
_RING_SLACK = 256
_RING_PAGE = 1024


class TsoCommandLayout(data.Struct):
    """The command of a super-frame, in ``user`` of its first beat.

    Members
    -------
    mss : unsigned(16)
        Payload bytes per segment (1 to ``max_mss``).
    udp : unsigned(1)
        UDP segmentation (USO) instead of TCP.
    fixed_id : unsigned(1)
        Keep the IPv4 ID of the super-frame in every segment.
    """

    mss: unsigned(16)
    udp: unsigned(1)
    fixed_id: unsigned(1)


class TsoResultLayout(data.Struct):
    """One result word per super-frame, in frame order.

    Members
    -------
    reason : unsigned(8)
        Index in :data:`REASONS` (0: sent).
    segments : unsigned(24)
        Segments sent (0 for a drop).
    """

    reason: unsigned(8)
    segments: unsigned(24)


def _rotate(m, value, amount, limit, name, lanes, first_bit=0):
    """Return ``value`` with byte ``j`` taken from byte ``(j + a) % lanes`` (combinational),
    ``a`` being ``amount << first_bit`` (the bits of the amount below ``limit``).

    Every step is a signal of its own: an expression used twice would be built twice.
    """
    for n, bit in enumerate(range(first_bit, exact_log2(limit))):
        step = 8 << bit
        rotated = Signal(len(value), name=f"{name}_rot{bit}")
        m.d.comb += rotated.eq(Mux(amount[n], Cat(value[step:], value[:step]), value))
        value = rotated
    return value


def _window(m, fifo, width, consume, flush, name, entries, consume_data=None):
    """Keep the oldest ``entries`` of ``fifo`` in flip-flops: ``[(data, valid)]``, oldest first.

    ``consume`` takes the oldest entry, ``flush`` drops them all. The queue is popped when the
    last flip-flop is empty, a decision taken from flip-flops alone: the consumer's logic stays
    off the queue's read side (its counters and the enables of its output register).
    ``consume_data``, the same decision from copies of its flip-flops, goes to the data
    entries' enables (a net of its own for the wide part).
    """
    if consume_data is None:
        consume_data = consume
    d = [Signal(width, name=f"{name}{i}") for i in range(entries)]
    v = [Signal(name=f"{name}{i}_v") for i in range(entries)]
    pop = Signal(name=f"{name}_pop")
    src = fifo.r_data
    m.d.comb += [pop.eq(fifo.r_rdy & ~v[-1]), fifo.r_en.eq(pop)]
    for i in range(entries):
        up_v = v[i + 1] if i + 1 < entries else Const(0)
        up_d = d[i + 1] if i + 1 < entries else src
        below = v[i - 1] if i else Const(1)
        # An entry loads when the oldest is consumed or when it is empty (the entries fill
        # from the oldest, so the one above is empty too), from the one above if that is
        # valid, else from the queue. The consumer's decision reaches the data bits as one
        # enable; the select is a flip-flop. (An invalid entry's data does not matter: a
        # flush leaves it to them as well.)
        load = Signal(name=f"{name}{i}_load")
        m.d.comb += load.eq(consume_data | ~v[i])
        with m.If(load):
            m.d.sync += d[i].eq(Mux(up_v, up_d, src) if i + 1 < entries else src)
        with m.If(flush):
            m.d.sync += v[i].eq(0)
        with m.Elif(consume):
            m.d.sync += v[i].eq(up_v | (pop & v[i]))
        with m.Else():
            m.d.sync += v[i].eq(v[i] | (pop & below))
    return list(zip(d, v, strict=True)), pop


def _ring_inc(value, depth):
    """``value + 1`` modulo ``depth`` (``value < depth``)."""
    bits = len(value)
    nxt = value + 1
    if depth & (depth - 1) == 0:
        return nxt[:bits]
    # nxt <= depth: it is depth where it has all of depth's one bits (no compare).
    at_end = Cat(*(nxt[k] for k in range(depth.bit_length()) if depth >> k & 1)).all()
    return Mux(at_end, 0, nxt[:bits])


def _ring_add(m, out, a, b, depth):
    """Set ``out`` to ``a + b`` modulo ``depth`` (both below ``depth``) two cycles later: the
    sum, then the modulo, each in flip-flops."""
    bits = len(out)
    total = Signal(bits + 1, name=f"{out.name}_sum")
    m.d.sync += total.eq(a + b)
    if depth & (depth - 1) == 0:
        m.d.sync += out.eq(total[:bits])
    else:
        m.d.sync += out.eq(Mux(total >= depth, total - depth, total)[:bits])


def _tree(m, values, name):
    """Return the sum of ``values`` as a combinational adder tree."""
    values = list(values)
    while len(values) > 1:
        values = [values[i] + values[i + 1] if i + 1 < len(values) else values[i]
                  for i in range(0, len(values), 2)]
    return values[0]


def _or_tree(values):
    """Return the bitwise OR of ``values`` as a balanced tree (combinational)."""
    values = list(values)
    while len(values) > 1:
        values = [values[i] | values[i + 1] if i + 1 < len(values) else values[i]
                  for i in range(0, len(values), 2)]
    return values[0]


class Tso(wiring.Component):
    """Cut TCP and UDP super-frames into MSS-sized frames (TSO/USO).

    Parameters
    ----------
    width : int
        Data width in bits (64, 128, 256 or 512).
    max_mss : int
        Largest MSS taken (sizes the segment ring); a larger one drops the frame.
    max_payload : int
        Largest payload of a super-frame (sizes the frame ring); a longer one drops the frame.
    queue_depth : int
        Segments whose descriptor may wait for the reader (a power of two).
    bram : None or str
        How the frame ring, segment ring and template memories are built
        (:class:`.bram.RegisteredMemory`): ``None`` behavioural memories (simulation, any
        FPGA), ``"dp16kd"`` ECP5 DP16KD instances with their output register (synthesis
        only: ``nicsim synth`` passes it for ECP5). Same behaviour cycle for cycle.

    Members
    -------
    i : In(beat stream, user_width=18)
        Super-frames, with their :class:`TsoCommandLayout` in ``user`` of the first beat.
    o : Out(beat stream, user_width=2)
        Segments; ``keep`` all ones but on the last beat; ``user[0]`` first segment of its
        super-frame, ``user[1]`` last one, on every beat.
    result : Out(stream of unsigned(32))
        One :class:`TsoResultLayout` word per super-frame, in frame order, once it is decided
        (a drop) or once its last segment is queued.
    bus : In(RegisterBusSignature(8))
        Counters, see :data:`REGISTERS`.
    """

    def __init__(self, width=64, *, max_mss=9000, max_payload=65536, queue_depth=16,
                 bram=None):
        self.width = check_width(width)
        if bram not in PRIMITIVES:
            raise ValueError(f"Block RAM primitive must be one of {PRIMITIVES}, not {bram!r}")
        self.bram = bram
        if not 1 <= max_mss <= 0xFFFF - MAX_HEADER:
            raise ValueError(f"Largest MSS must be between 1 and {0xFFFF - MAX_HEADER} bytes, "
                             f"not {max_mss!r}")
        if not 1 <= max_payload <= 1 << 16:
            raise ValueError(f"Largest payload must be between 1 and 65536 bytes, "
                             f"not {max_payload!r}")
        if queue_depth < 4 or queue_depth & (queue_depth - 1):
            raise ValueError(f"Queue depth must be a power of two, at least 4, "
                             f"not {queue_depth!r}")
        self.max_mss = max_mss
        self.max_payload = max_payload
        self.queue_depth = queue_depth
        lanes = width // 8
        self.header_beats = MAX_HEADER // lanes + 1  # beats 0 .. MAX_HEADER // lanes
        self.max_beats = -(-(MAX_HEADER + max_payload) // lanes)
        self.ring_depth = min(1 << self.max_beats.bit_length(),
                              -(-(self.max_beats + _RING_SLACK) // _RING_PAGE) * _RING_PAGE)
        segment_beats = -(-(MAX_HEADER + max_mss) // lanes) + 1
        self.segment_depth = 1 << (2 * segment_beats - 1).bit_length()
        super().__init__({
            "i": In(beat_signature(width, TsoCommandLayout.as_shape().size)),
            "o": Out(beat_signature(width, 2)),
            "result": Out(stream.Signature(unsigned(32))),
            "bus": In(RegisterBusSignature(8)),
        })

    def elaborate(self, platform):
        m = Module()
        self._m = m
        width = self.width
        lanes = width // 8
        self._shift = exact_log2(lanes)
        self._counters = {name: Signal(32, name=name) for name in COUNTERS}
        self._ingress(m)
        self._segmenter(m)
        self._finisher(m)
        self._reader(m)
        counter_registers(m, self.bus, COUNTERS, self._counters)
        return m

    def _count(self, m, name):
        counter = self._counters[name]
        m.d.sync += counter.eq(counter + 1)

    # ---- Ingress: frames into the frame ring, one descriptor per frame. ----------------------

    def _ingress(self, m):
        width, lanes = self.width, self.width // 8
        depth = self.ring_depth
        addr_bits = (depth - 1).bit_length()
        self.flen_max = (1 << 17) - 1
        self.frame_layout = data.StructLayout({
            "beats": unsigned(addr_bits),  # beats stored
            "length": unsigned(17),  # bytes (flen_max: longer than stored)
            "hole": unsigned(1),
            "command": TsoCommandLayout,
        })
        m.submodules.ring = ring = RegisteredMemory(width, depth, primitive=self.bram,
                                                    attrs=_NO_RW_CHECK)
        self.ring = ring
        m.submodules.frames = frames = CreditedFIFO(self.frame_layout.size, 16, thermometer=True)
        self.frames = frames

        # Ring addresses modulo its depth (``_ring_inc``); the ring never fills (``room``), so
        # wp == rp is empty.
        wp = Signal(addr_bits)
        self.ring_rp = rp = Signal(addr_bits)  # moved by the segmenter
        index = Signal(range(self.max_beats + 1))
        hole = Signal()
        command = Signal(TsoCommandLayout)
        room = Signal(init=1)
        credits = Signal(range(17), init=16)
        credit = Signal(init=1)
        self.frame_popped = Signal()
        accept = self.i.valid & self.i.ready
        beat = self.i.payload
        storing = Signal(init=1)  # index < max_beats, kept as a flip-flop
        m.d.comb += self.i.ready.eq(credit & (room | ~storing))
        # The ring is written a cycle after the beat is taken, from flip-flops: the write
        # enable and address fan out to every block RAM of the ring.
        w_addr = Signal(addr_bits)
        w_data = Signal(width)
        w_en = Signal()
        m.d.sync += [w_addr.eq(wp), w_data.eq(beat.data), w_en.eq(accept & storing)]
        m.d.comb += [ring.w_addr.eq(w_addr), ring.w_data.eq(w_data), ring.w_en.eq(w_en)]
        # The ring's level in flip-flops (the difference, then modulo the depth), then the
        # room flag from it: it is the level of three cycles before, and four beats may be
        # taken since (in those cycles and in its own), so it leaves room for four and one
        # more: the ring holds depth - 1 beats at most, and wp == rp is empty, never full.
        diff = Signal(signed(addr_bits + 1))
        used = Signal(addr_bits)
        m.d.sync += [diff.eq(wp - rp), used.eq(Mux(diff < 0, diff + depth, diff)),
                     room.eq(used < depth - 4)]
        full = Const((1 << lanes) - 1, lanes)
        contiguous = (beat.keep != 0) & ((beat.keep & (beat.keep + 1))[:lanes] == 0)
        count = Signal(range(lanes + 1))
        m.d.comb += count.eq(_tree(m, (beat.keep[j] for j in range(lanes)), "count"))
        first_command = Mux(index == 0, TsoCommandLayout(beat.user), command)
        entry = Signal(self.frame_layout)
        m.d.comb += [
            entry.beats.eq(Mux(storing, index + 1, index)),
            entry.length.eq(Mux(storing, (index << self._shift) + count, self.flen_max)),
            entry.hole.eq(hole | ~contiguous),
            entry.command.eq(first_command),
        ]
        # Queued a cycle later, from flip-flops (the length's adder would otherwise end at the
        # queue's memory); the credits count the frame at its last beat.
        entry_r = Signal(self.frame_layout)
        entry_push = Signal()
        m.d.sync += [entry_r.eq(entry), entry_push.eq(accept & beat.last)]
        m.d.comb += [frames.w_data.eq(entry_r.as_value()), frames.w_en.eq(entry_push)]
        with m.If(accept):
            with m.If(storing):
                m.d.sync += wp.eq(_ring_inc(wp, depth))
            with m.If(index == 0):
                m.d.sync += command.eq(beat.user)
            with m.If(beat.last):
                m.d.sync += [index.eq(0), hole.eq(0), storing.eq(1)]
            with m.Else():
                m.d.sync += [index.eq(index + storing), hole.eq(hole | (beat.keep != full)),
                             storing.eq(storing & (index != self.max_beats - 1))]
        frame_in = accept & beat.last
        # Counted a cycle late (flip-flops), with the margin that takes.
        frame_in_r = Signal()
        popped_r = Signal()
        m.d.sync += [frame_in_r.eq(frame_in), popped_r.eq(self.frame_popped)]
        with m.If(frame_in_r):
            self._count(m, "frames_in")
        m.d.sync += [
            credits.eq(credits - frame_in_r + popped_r),
            credit.eq(credits > 2),
        ]

    # ---- Segmenter: header, parse, sums, decision, gearbox. ----------------------------------

    def _segmenter(self, m):
        width, lanes, shift = self.width, self.width // 8, self._shift
        hb = self.header_beats
        depth = self.ring_depth
        addr_bits = (depth - 1).bit_length()
        tb_bits = (hb - 1).bit_length()
        self.tb_bits = tb_bits
        frames = self.frames
        head = data.View(self.frame_layout, frames.r_data)
        ring = self.ring

        tmpl_depth = _BANKS << tb_bits
        m.submodules.template = template = RegisteredMemory(
            width, tmpl_depth, primitive=self.bram if tmpl_depth >= _BRAM_MIN_DEPTH else None,
            attrs=_NO_RW_CHECK)
        self.template = template

        # Frame being worked on.
        beats = Signal(addr_bits)
        flen = Signal(17)
        hole = Signal()
        mss = Signal(16)
        udp = Signal()
        fixed_id = Signal()
        bank = Signal(range(_BANKS))
        self.bank_busy = bank_busy = Signal(_BANKS)
        self.bank_free = Signal(_BANKS)  # set by the reader
        m.d.sync += bank_busy.eq(bank_busy & ~self.bank_free)
        # The template bank of the next frame is free (a cycle late, and not in the cycle after
        # a frame is handed over, which moves to the next bank).
        bank_ok = Signal()
        handover = Signal()  # in_start & ~p_busy, a flip-flop set from their next values
        in_start = Signal()
        in_set = Signal()  # in_start is set (the last step of Sum Header)
        m.d.sync += bank_ok.eq(~bank_busy.bit_select(bank, 1) & ~handover)

        # A dropped frame leaves a descriptor too, so that its result word keeps frame order.
        self.drop_push = Signal()
        self.drop_reason = Signal(4)

        # Header register, filled from the ring.
        hdr = Signal(hb * width)
        rd_index = Signal(range(hb + 1))
        rd_valid = Signal()
        rd_at = Signal(range(hb + 1))
        n_hdr = Signal(range(hb + 1))
        rd_last = Signal()  # rd_index + 1 >= n_hdr, a cycle ahead (the FSM's enable)
        # The block RAM's data leaves through its output register (see :mod:`.bram`), then into
        # a rank of flip-flops that fans out, two cycles after the read.
        ring_q0 = Signal(width)
        ring_q = Signal(width)
        rd_valid_q0 = Signal()
        rd_at_q0 = Signal(range(hb + 1))
        rd_valid_q = Signal()
        rd_at_q = Signal(range(hb + 1))
        m.d.comb += ring_q0.eq(ring.r_data)
        m.d.sync += [rd_valid_q0.eq(rd_valid), rd_at_q0.eq(rd_at),
                     ring_q.eq(ring_q0), rd_valid_q.eq(rd_valid_q0), rd_at_q.eq(rd_at_q0)]
        # Which header beat the data is, one-hot in flip-flops beside rd_at_q (each bit is
        # the enable of a beat's flip-flops).
        rd_hot_q = Signal(hb)
        m.d.sync += rd_hot_q.eq(Mux(rd_valid_q0, (Const(1, hb) << rd_at_q0)[:hb], 0))
        for b in range(hb):
            with m.If(rd_hot_q[b]):
                m.d.sync += hdr[b * width:(b + 1) * width].eq(ring_q)
        m.d.comb += [
            template.w_addr.eq(Cat(rd_at_q[:tb_bits], bank)),
            template.w_data.eq(ring_q),
            template.w_en.eq(rd_valid_q),
        ]

        def byte(offset):
            return hdr[8 * offset:8 * offset + 8]

        def be(offset, count, pick):
            return Cat(*(pick(offset + i) for i in reversed(range(count))))

        # ---- Parse (registered steps over the stable header register).
        et = [be(12 + 4 * t, 2, byte) for t in range(3)]
        tpid = [Signal(name=f"tpid{t}") for t in range(2)]
        m.d.sync += [tpid[t].eq((et[t] == _TPIDS[0]) | (et[t] == _TPIDS[1])) for t in range(2)]
        tags = Signal(2)
        l2ok = Signal()
        ethertype = Signal(16)
        m.d.sync += [
            tags.eq(Mux(~tpid[0], 0, Mux(~tpid[1], 1, 2))),
            l2ok.eq(Mux(~tpid[0], flen >= 14, Mux(~tpid[1], flen >= 18, flen >= 22))),
            ethertype.eq(Mux(~tpid[0], et[0], Mux(~tpid[1], et[1], et[2]))),
        ]

        def at3(offset):
            return Mux(tags == 0, byte(14 + offset), Mux(tags == 1, byte(18 + offset),
                                                         byte(22 + offset)))

        l3 = Signal(5)
        vbyte = Signal(8)
        frag = Signal()
        proto = Signal(8)
        ip_id = Signal(16)
        is_v4 = Signal()
        is_v6 = Signal()
        m.d.sync += [
            l3.eq(14 + 4 * tags),
            vbyte.eq(at3(0)),
            frag.eq((be(6, 2, at3) & 0x3FFF) != 0),
            ip_id.eq(be(4, 2, at3)),
            is_v4.eq(l2ok & (ethertype == 0x0800)),
            is_v6.eq(l2ok & (ethertype == 0x86DD)),
        ]
        ihl = vbyte[:4]
        ip_len_bytes = Mux(is_v4, ihl << 2, 40)
        ip_ok = Signal()
        ip_end = Signal(7)
        ip_min = Signal(7)
        ip_ver = Signal()
        m.d.sync += ip_ok.eq(ip_ver & (flen >= ip_min) & (flen >= ip_end))
        l4_index = Signal(4)  # l4 = 34 + 4 * l4_index
        l4 = Signal(7)
        iphl = Signal(7)
        m.d.sync += [
            proto.eq(Mux(is_v4, at3(9), at3(6))),
            ip_end.eq(l3 + Mux(is_v4, ihl << 2, 40)), ip_min.eq(l3 + Mux(is_v4, 20, 40)),
            ip_ver.eq(Mux(is_v4, (vbyte[4:] == 4) & (ihl >= 5), vbyte[4:] == 6)),
            l4_index.eq(tags + Mux(is_v4, ihl - 5, 5)),
            l4.eq(l3 + ip_len_bytes),
            iphl.eq(Mux(is_v4, ihl << 2, 0)),
        ]

        # The TCP/UDP header bytes in two registered steps: the four candidate positions of
        # l4_index's group of four, then the one of them.
        l4_sub = Signal(2)
        m.d.sync += l4_sub.eq(l4_index[:2])
        cands = {}
        for offset in (4, 5, 6, 7, 12, 13):
            cand = Signal(32, name=f"l4_cand{offset}")
            options = [Cat(*(byte(34 + 4 * n + offset) for n in range(4 * g, min(4 * g + 4, 13))))
                       for g in range(4)]
            with m.Switch(l4_index[2:]):
                for g, option in enumerate(options):
                    with m.Case(g):
                        m.d.sync += cand.eq(option)
            cands[offset] = cand

        def at4(offset):
            return cands[offset].word_select(l4_sub, 8)

        doff_byte = Signal(8)
        flags = Signal(8)
        seq = Signal(32)
        m.d.sync += [
            doff_byte.eq(at4(12)),
            flags.eq(at4(13)),
            seq.eq(be(4, 4, at4)),
        ]
        l4_hdr = Signal(7)
        m.d.sync += l4_hdr.eq(Mux(udp, 8, doff_byte[4:] << 2))
        hlen = Signal(8)
        m.d.sync += hlen.eq(l4 + l4_hdr)
        payload = Signal(18)
        m.d.sync += payload.eq(flen - hlen)
        pay0 = Signal(18)  # payload after the first segment
        first_last = Signal()  # the first segment is the last one
        first_fits = Signal()  # the first segment's payload fits in its first beat
        avail0 = Signal(shift + 1)  # payload bytes in a segment's first beat
        mss2 = Signal(17)
        m.d.sync += mss2.eq(mss << 1)
        pay0_le = Signal()  # pay0 <= mss: the second segment is the last
        hb_more = Signal()  # a payload beat after the header's beats
        hb_more1 = Signal()  # two of them
        self.beats_m1 = beats_m1 = Signal(len(beats))  # beats - 1, beats - 2 (0 for fewer)
        self.beats_m2 = beats_m2 = Signal(len(beats))
        m.d.sync += [pay0_le.eq(pay0 <= mss), hb_more.eq(hlen[shift:] < beats),
                     beats_m1.eq(Mux(beats >= 1, beats - 1, 0)),
                     beats_m2.eq(Mux(beats >= 2, beats - 2, 0)),
                     hb_more1.eq(hlen[shift:] < beats_m1)]
        m.d.sync += [pay0.eq(payload - mss), first_last.eq(payload == mss),
                     avail0.eq(lanes - hlen[:shift]), first_fits.eq(mss <= avail0)]
        # The planner's per-frame values (see the gearbox below), for a segment of ``mss``
        # bytes: K = avail0 + 1 + 2 * lanes; a segment of T > avail0 bytes takes its first
        # command, Q = (T - avail0 - 1) // lanes full commands, then a last command of
        # (T - avail0 - 1) % lanes + 1 bytes; ``cn`` starts at Q - 2 = (T - K) >> shift.
        self.cn_bits = cn_bits = (self.max_mss >> shift).bit_length() + 2
        k_frame = Signal(shift + 3)
        a_lanes = Signal(shift + 2)  # avail0 + lanes: T <= a_lanes is Q == 0
        d_frame = Signal(signed(19))
        cn_frame = Signal(cn_bits)
        nbl_frame = Signal(shift + 1)
        s1_frame = Signal()
        m.d.sync += [
            k_frame.eq(avail0 + 1 + 2 * lanes), a_lanes.eq(avail0 + lanes),
            d_frame.eq(mss - k_frame),
            cn_frame.eq(d_frame[shift:shift + cn_bits]), nbl_frame.eq(d_frame[:shift] + 1),
            s1_frame.eq(mss <= a_lanes),
        ]
        # For the planner's pay_small (pay_after <= a_lanes): pay0's, and the bound that tells
        # it from pay_after before the MSS is taken off.
        mss_a = Signal(18)
        pay0_small = Signal()
        m.d.sync += [mss_a.eq(mss + a_lanes), pay0_small.eq(pay0 <= a_lanes)]
        hdr_last = Signal(8 - shift)  # last header beat
        hdr_end = Signal(8 - shift + 2)  # the step that ends the header sums
        m.d.sync += [hdr_last.eq((hlen - 1) >> shift), hdr_end.eq(hdr_last + 8)]
        l4_min = Signal(7)
        m.d.sync += l4_min.eq(l4 + Mux(udp, 8, 20))
        l4_ok = (flen >= l4_min) & (udp | ((doff_byte[4:] >= 5) & (flen >= hlen)))
        ext = Cat(*(proto == n for n in _IPV6_EXT_HEADERS)).any()
        wanted = Mux(udp, 17, 6)
        checks = {  # each test in a flip-flop of its own, then the order of the reference
            "bad_mss": (mss == 0) | (mss > self.max_mss),
            "hole": hole,
            "not_ip": ~(is_v4 | is_v6),
            "ip_bad": ~ip_ok,
            "fragment": is_v4 & frag,
            "protocol": proto != wanted,
            "ext": is_v6 & ext,
            "l4_bad": ~l4_ok,
            "oversize": (payload > self.max_payload) | (flen == self.flen_max),
            "short": payload < mss,
        }
        c = {}
        for name, test in checks.items():
            c[name] = Signal(name=f"check_{name}")
            m.d.sync += c[name].eq(test)
        reason = Signal(4)
        m.d.sync += reason.eq(
            Mux(c["bad_mss"], _CODE["bad_mss"],
            Mux(c["hole"], _CODE["malformed"],
            Mux(c["not_ip"], _CODE["not_ip"],
            Mux(c["ip_bad"], _CODE["malformed"],
            Mux(c["fragment"], _CODE["fragment"],
            Mux(c["protocol"], Mux(c["ext"], _CODE["ipv6_ext_headers"],
                                   _CODE["wrong_protocol"]),
            Mux(c["l4_bad"], _CODE["malformed"],
            Mux(c["oversize"], _CODE["oversize"],
            Mux(c["short"], _CODE["short"], 0))))))))))

        # ---- Header sums, one header beat a cycle.
        sum_beat = Signal(range(hb + 1))
        sum_go = Signal()
        sum_more = Signal()  # sum_beat <= hdr_last, as a flip-flop
        beat_r = Signal(width)
        base_r = Signal.like(sum_beat)
        go_r = Signal()
        # The beat in two registered steps: its group of four beats, then the beat.
        groups = -(-hb // 4)
        group_r = Signal(4 * width)
        sel_r = Signal.like(sum_beat)
        go_g = Signal()
        # The group number in eight copies, one per half beat of the group (each one's select
        # reaches an eighth of the bits); stored as sum_beat // 4 ^ i, so that no two copies
        # are the same flip-flops to yosys.
        gsel_bits = max(len(sum_beat) - 2, 1)
        copies = 8  # each for half a beat of the group
        half = width // 2
        gsel = [Signal(gsel_bits, name=f"hsum_gsel{i}") for i in range(copies)]
        for i in range(copies):
            with m.Switch(gsel[i] ^ (i % (1 << gsel_bits))):
                for g in range(groups):
                    with m.Case(g):
                        m.d.sync += group_r[i * half:(i + 1) * half].eq(
                            hdr[4 * g * width + i * half:4 * g * width + (i + 1) * half])

        def gsel_load(group):
            return [c.eq((group ^ (i % (1 << gsel_bits)))[:gsel_bits])
                    for i, c in enumerate(gsel)]
        m.d.sync += [sel_r.eq(sum_beat), go_g.eq(sum_go),
                     beat_r.eq(group_r.word_select(sel_r[:2], width)),
                     base_r.eq(sel_r), go_r.eq(go_g)]
        # The bounds of each sum, as offsets in flip-flops (set while the parse settles).
        bounds = {n: Signal(8, name=f"hsum_{n}") for n in (
            "ps_lo", "ps_hi", "ip_lo", "ip_hi", "ip_x0", "ip_x1", "ip_x2",
            "l4_lo", "l4_hi", "l4_x0", "l4_x1", "l4_x2", "l4_x3")}
        m.d.sync += [
            bounds["ps_lo"].eq(Mux(is_v4, l3 + 12, l3 + 8)),
            bounds["ps_hi"].eq(Mux(is_v4, l3 + 20, l3 + 40)),
            bounds["ip_lo"].eq(l3), bounds["ip_hi"].eq(Mux(is_v4, l4, 0)),
            bounds["ip_x0"].eq(l3 + 2), bounds["ip_x1"].eq(l3 + 4), bounds["ip_x2"].eq(l3 + 10),
            bounds["l4_lo"].eq(l4), bounds["l4_hi"].eq(Mux(udp, l4 + 4, hlen)),
            bounds["l4_x0"].eq(l4 + 4), bounds["l4_x1"].eq(l4 + 6), bounds["l4_x2"].eq(l4 + 12),
            bounds["l4_x3"].eq(l4 + 16),
        ]
        bd = bounds
        # Which sums each word of the beat goes into, as flip-flops (the comparisons take a
        # cycle of their own), beside the beat.
        words = []
        beat_w = Signal(width)
        m.d.sync += beat_w.eq(beat_r)
        for w in range(lanes // 2):
            # Each comparison in a flip-flop of its own (from sel_r, a cycle ahead of base_r),
            # then their conjunctions.
            o = Cat(Const(2 * w, shift), sel_r)
            tests = {
                "ps": [o >= bd["ps_lo"], o < bd["ps_hi"]],
                "ip": [o >= bd["ip_lo"], o < bd["ip_hi"], o != bd["ip_x0"], o != bd["ip_x1"],
                       o != bd["ip_x2"]],
                "l4": [o >= bd["l4_lo"], o < bd["l4_hi"], o != bd["l4_x0"], o != bd["l4_x1"],
                       o != bd["l4_x2"], o != bd["l4_x3"]],
            }
            wflags = {}
            for k, conds in tests.items():
                regs = []
                for n, cond in enumerate(conds):
                    reg = Signal(name=f"hsum_{k}{w}_t{n}")
                    m.d.sync += reg.eq(cond)
                    regs.append(reg)
                wflags[k] = Signal(name=f"hsum_{k}{w}")
                m.d.sync += wflags[k].eq(Cat(*regs).all())
            word = Cat(beat_w[16 * w + 8:16 * w + 16], beat_w[16 * w:16 * w + 8])
            words.append((word, wflags["ps"], wflags["ip"], wflags["l4"]))
        masked = {k: Signal(lanes // 2 * 16, name=f"hsum_{k}") for k in ("pseudo", "ip", "l4")}
        go_w = Signal()
        go_2 = Signal()
        go_3 = Signal()
        go_4 = Signal()
        m.d.sync += [go_w.eq(go_r), go_2.eq(go_w), go_3.eq(go_2), go_4.eq(go_3)]
        for k, idx in (("pseudo", 1), ("ip", 2), ("l4", 3)):
            m.d.sync += masked[k].eq(Cat(*(Mux(wd[idx], wd[0], 0) for wd in words)))
        # Sums of pairs of words, then of the pairs, then the running sum.
        acc = {k: Signal(24, name=f"hacc_{k}") for k in masked}
        for k in masked:
            parts = []
            for g in range(0, lanes // 2, 2):
                part = Signal(17, name=f"hpart_{k}{g}")
                m.d.sync += part.eq(_tree(m, (masked[k][16 * w:16 * w + 16]
                                              for w in range(g, min(g + 2, lanes // 2))), k))
                parts.append(part)
            beat_sum = Signal(24, name=f"hbeat_{k}")
            m.d.sync += beat_sum.eq(_tree(m, parts, k))
            with m.If(go_4):
                m.d.sync += acc[k].eq(acc[k] + beat_sum)
        # The TCP/UDP sum's constant part, in two halves (taken once the sums are done).
        l4_fixed_a = Signal(25)
        l4_fixed_b = Signal(17)
        m.d.sync += [l4_fixed_a.eq(acc["pseudo"] + acc["l4"]),
                     l4_fixed_b.eq(proto + Mux(udp, 0, Cat(Const(0, 8), doff_byte)))]

        # ---- Gearbox state and its per-frame constants.
        hm = Signal(shift)
        bh = Signal(8 - shift + 1)
        self.gb = gb = {}
        gb_active = Signal()

        step = Signal(range(32))
        # step + 1 == the step that ends Parse or Sum Header, a cycle ahead (the FSM's enable
        # takes flip-flops, not comparisons; hdr_end is settled all through Sum Header).
        step_hit = Signal()
        src_idx = Signal(addr_bits)
        # src_idx < p_beats and src_idx + 1 < p_beats, as flip-flops.
        src_more = Signal()
        src_more1 = Signal()
        # Next ring addresses to read (flip-flops, for the RAM's sake): the header of the frame
        # being parsed, the payload of the frame being segmented. Header reads go first.
        h_raddr = Signal(addr_bits)
        s_raddr = Signal(addr_bits)
        h_base = Signal(addr_bits)  # first beat of the frame being parsed
        # Ring sums modulo its depth, in flip-flops ahead of their use (the operands are set
        # many cycles before): the first beat of the frame after the one being parsed, and
        # the first payload beat of the one being parsed; p_end: the frame being segmented's
        # h_next, which frees its beats once it is done.
        h_next = Signal(addr_bits)
        s_start = Signal(addr_bits)
        p_end = Signal(addr_bits)
        _ring_add(m, h_next, h_base, beats, depth)
        _ring_add(m, s_start, h_base, hlen[shift:], depth)
        # The frame being segmented (the header side moves on to the next one).
        p_busy = Signal()
        p_draining = Signal()
        p_step = Signal(range(_PIPE_DRAIN + 1))
        p_free = Signal()  # p_step == _PIPE_DRAIN while draining, a flip-flop set a cycle ahead
        p_beats = Signal(addr_bits)
        p_beats_m2 = Signal(addr_bits)
        p_mss2 = Signal(17)  # 2 * p_mss
        p_mss = Signal(16)
        p_fixed_id = Signal()
        p_first_fits = Signal()
        src_count = Signal(range(_SRC_DEPTH + 2))
        m.submodules.source = source = CreditedFIFO(width, _SRC_DEPTH, thermometer=True)
        src_issue = Signal()
        src_pop = Signal()
        m.d.sync += src_count.eq(src_count + src_issue - src_pop)
        src_land = Signal()
        src_land_a = Signal()
        m.d.sync += [src_land_a.eq(src_issue), src_land.eq(src_land_a)]
        src_land_q0 = Signal()
        src_land_q = Signal()
        m.d.sync += [src_land_q0.eq(src_land), src_land_q.eq(src_land_q0)]
        m.d.comb += [source.w_data.eq(ring_q), source.w_en.eq(src_land_q)]

        rd_issue = Signal()  # in Read Header (a flip-flop: it picks the ring's read address)
        ring_raddr = Signal(addr_bits)
        m.d.comb += [
            ring.r_addr.eq(ring_raddr),
            # Read every cycle: an enable would fan out from the issue logic to every RAM
            # block of the ring; the data is taken only where a read was issued.
            ring.r_en.eq(1),
        ]
        # The address goes to every block RAM of the ring from a flip-flop, a cycle later.
        rd_valid_a = Signal()
        rd_at_a = Signal(range(hb + 1))
        m.d.sync += [ring_raddr.eq(Mux(rd_issue, h_raddr, s_raddr)),
                     rd_valid_a.eq(rd_issue), rd_at_a.eq(rd_index),
                     rd_valid.eq(rd_valid_a), rd_at.eq(rd_at_a)]

        # Per-frame values for the finisher.
        self.fc = fc = {
            "udp": Signal(name="fc_udp"), "v4": Signal(name="fc_v4"),
            "fixed_id": Signal(name="fc_fixed_id"),
            "l4_hdr": Signal(7, name="fc_l4_hdr"), "iphl": Signal(7, name="fc_iphl"),
            "hlen": Signal(8, name="fc_hlen"), "flags": Signal(8, name="fc_flags"),
            "l4_fixed": Signal(26, name="fc_l4_fixed"), "ip_base": Signal(24, name="fc_ip_base"),
            "bank": Signal(range(_BANKS), name="fc_bank"),
        }
        # Per-bank values for the reader: where the payload starts, which bytes to rewrite.
        slot_layout = data.StructLayout({"en": 1, "beat": 8 - shift + 1, "lane": shift})
        self.finfo_layout = finfo_layout = data.StructLayout({
            "bh": 8 - shift + 1, "hm": shift, "slots": data.ArrayLayout(slot_layout, _SLOTS)})
        self.finfo = [Signal(finfo_layout, name=f"finfo{b}") for b in range(_BANKS)]
        positions = [  # (enable, offset) per slot
            (1, Mux(is_v4, l3 + 2, l3 + 4)), (1, Mux(is_v4, l3 + 3, l3 + 5)),
            (is_v4 & ~fixed_id, l3 + 4), (is_v4 & ~fixed_id, l3 + 5),
            (is_v4, l3 + 10), (is_v4, l3 + 11),
            (1, l4 + 4), (1, l4 + 5), (~udp, l4 + 6), (~udp, l4 + 7),
            (~udp, l4 + 13),
            (1, Mux(udp, l4 + 6, l4 + 16)), (1, Mux(udp, l4 + 7, l4 + 17)),
        ]
        # In flip-flops while the parse settles (the sums stay off the banks' enables).
        positions_r = []
        for n, (en, pos) in enumerate(positions):
            en_r = Signal(name=f"slot_pos{n}_en")
            pos_r = Signal(8, name=f"slot_pos{n}")
            m.d.sync += [en_r.eq(en), pos_r.eq(pos)]
            positions_r.append((en_r, pos_r))

        # Gearbox, in two parts: a planner that works out, beat by beat, which bytes go where
        # (it needs no data, only lengths), and a mover that shifts the payload beats
        # accordingly. The command queue between them keeps the byte arithmetic off the data
        # path's handshakes.
        f_lane = Signal(shift)
        first = Signal()  # this command is its segment's first
        seg_len = Signal(16)
        pay_after = Signal(18)
        seg_seq = Signal(32)
        seg_id = Signal(16)
        seg_k = Signal(24)
        seg_first = Signal()
        self.desc_credit = Signal(init=1)  # room for a descriptor (drops)
        self.gear_ok = Signal(init=1)  # room in the segment ring and for a descriptor (emits)
        self.gear_ok_n = Signal()  # its complement (a copy for the source window's data)

        cmd_layout = data.StructLayout({
            "rot": shift, "sel_hi": lanes, "mask": lanes, "need_hi": 1, "advance": 1,
            "seg_end": 1, "last": 1, "first": 1, "len": 16, "seq": 32, "id": 16, "k": 24,
        })
        m.submodules.commands = cmds = CreditedFIFO(cmd_layout.size, _CMD_DEPTH, thermometer=True)
        cmd_credits = Signal(range(_CMD_DEPTH + 1), init=_CMD_DEPTH)
        plan = Signal()

        # A segment of T bytes is planned as counts, not as a running remainder: its first
        # command takes avail_first bytes (all T if they fit: one command), then come Q full
        # commands and a last one of nb_end bytes (see the header side's per-frame values).
        # ``cn`` counts the full commands down from Q - 2: its sign bit says that the next
        # command is the last, so the end of a segment is known from flip-flops.
        start = Signal(shift)  # first lane of this beat's bytes: hm on a segment's first beat
        avail = Signal(shift + 1)  # lanes - start
        avail_first = Signal(shift + 1)
        seg_end = Signal()  # the segment's last command
        last_r = Signal()  # this segment is the frame's last (pay_after == 0)
        nb_end = Signal(shift + 1)  # bytes of the segment's last command
        s1 = Signal()  # the command after the first one is the last (Q == 0)
        cn = Signal(self.cn_bits)  # full commands left after the next one, minus one
        # Per-frame values (the segments before the last are ``mss`` bytes long).
        p_k = Signal(shift + 3)
        p_a_lanes = Signal(shift + 2)
        p_cn = Signal(self.cn_bits)
        p_nbl = Signal(shift + 1)
        p_s1 = Signal()
        p_mss_a = Signal(18)  # p_mss + p_a_lanes
        # pay_after <= p_a_lanes, a flip-flop set with pay_after (from n_pay_small).
        pay_small = Signal()
        n_pay_small = Signal()
        # The next segment's values, worked out from pay_after in the cycle after it changes:
        # a segment of one command (not the last) waits a cycle for them (blocked).
        n_take = Signal(16)
        n_pay = Signal(18)
        n_fits = Signal()
        n_last = Signal()
        n_cn = Signal(self.cn_bits)
        n_nbl = Signal(shift + 1)
        n_s1 = Signal()
        n_pay_le = Signal()  # n_pay <= p_mss
        blocked = Signal()
        # pay_after <= p_mss, a flip-flop set with pay_after (from n_pay, settled by then).
        pay_le = Signal()
        d_last = Signal(signed(20))
        m.d.comb += d_last.eq(pay_after - p_k)
        m.d.sync += [
            n_take.eq(Mux(pay_le, pay_after, p_mss)),
            n_pay.eq(Mux(pay_le, 0, pay_after - p_mss)),
            n_fits.eq(p_first_fits | (pay_after <= avail_first)),
            n_last.eq(pay_le),
            n_pay_le.eq(pay_le | (pay_after <= p_mss2)),
            n_cn.eq(Mux(pay_le, d_last[shift:shift + self.cn_bits], p_cn)),
            n_nbl.eq(Mux(pay_le, d_last[:shift] + 1, p_nbl)),
            n_pay_small.eq(pay_le | (pay_after <= p_mss_a)),
            n_s1.eq(Mux(pay_le, pay_small, p_s1)),
        ]
        # ``plan`` is a flip-flop: it is set from the next values of its three parts (it
        # reaches every register of the planner).
        gb_active_d = Signal()
        blocked_d = Signal()
        m.d.comb += [
            gb_active_d.eq(Mux(handover, 1, Mux(plan & seg_end & last_r, 0, gb_active))),
            blocked_d.eq(Mux(handover, first_fits & ~first_last,
                             plan & seg_end & n_fits & ~n_last)),
        ]
        m.d.sync += [gb_active.eq(gb_active_d), blocked.eq(blocked_d),
                     plan.eq(gb_active_d & (cmd_credits > 1) & ~blocked_d)]
        # The next segment's sequence number, IPv4 ID and index, worked out in the cycle after
        # the values change (segments are two cycles apart at least: see blocked).
        seq_next = Signal(32)
        id_next = Signal(16)
        k_next = Signal(24)
        m.d.sync += [seq_next.eq(seg_seq + p_mss), id_next.eq(seg_id + ~p_fixed_id),
                     k_next.eq(seg_k + 1)]
        nb = Signal(shift + 1)
        m.d.comb += nb.eq(Mux(seg_end, nb_end, avail))
        last_seg = seg_end & last_r
        # The command's byte arithmetic a cycle later, from flip-flops (``pre``); only the
        # next lane is worked out in the planner's cycle.
        pre_layout = data.StructLayout({
            "f_lane": shift, "start": shift, "nb": shift + 1,
            "seg_end": 1, "last": 1, "first": 1, "len": 16, "seq": 32, "id": 16, "k": 24,
        })
        pre = Signal(pre_layout)
        pre_v = Signal()
        m.d.sync += [
            pre.f_lane.eq(f_lane), pre.start.eq(start), pre.nb.eq(nb),
            pre.seg_end.eq(seg_end), pre.last.eq(last_seg), pre.first.eq(seg_first),
            pre.len.eq(seg_len), pre.seq.eq(seg_seq), pre.id.eq(seg_id), pre.k.eq(seg_k),
            pre_v.eq(plan),
        ]
        # Then the sums in flip-flops, then the lane tests from them.
        sums_layout = data.StructLayout({
            "lane_sum": shift + 2, "thr": shift + 2, "start": shift, "end": shift + 2,
            "rot": shift, "seg_end": 1, "last": 1, "first": 1, "len": 16, "seq": 32,
            "id": 16, "k": 24,
        })
        sums = Signal(sums_layout)
        sums_v = Signal()
        m.d.sync += [
            sums.lane_sum.eq(pre.f_lane + pre.nb), sums.thr.eq(lanes + pre.start - pre.f_lane),
            sums.start.eq(pre.start), sums.end.eq(pre.start + pre.nb),
            sums.rot.eq(pre.f_lane - pre.start),
            sums.seg_end.eq(pre.seg_end), sums.last.eq(pre.last), sums.first.eq(pre.first),
            sums.len.eq(pre.len), sums.seq.eq(pre.seq), sums.id.eq(pre.id), sums.k.eq(pre.k),
            sums_v.eq(pre_v),
        ]
        command = Signal(cmd_layout)
        m.d.comb += [
            command.rot.eq(sums.rot),
            command.sel_hi.eq(Cat(*(j >= sums.thr for j in range(lanes)))),
            command.mask.eq(Cat(*((j >= sums.start) & (j < sums.end) for j in range(lanes)))),
            command.need_hi.eq(sums.lane_sum > lanes),
            command.advance.eq(sums.lane_sum >= lanes),
            command.seg_end.eq(sums.seg_end), command.last.eq(sums.last),
            command.first.eq(sums.first), command.len.eq(sums.len), command.seq.eq(sums.seq),
            command.id.eq(sums.id), command.k.eq(sums.k),
        ]
        # Written into the queue a cycle later again, from flip-flops (the lane tests above
        # would otherwise end at the queue's memory); the credits count it at ``plan``.
        command_r = Signal(cmd_layout)
        plan_r = Signal()
        m.d.sync += [command_r.eq(command), plan_r.eq(sums_v)]
        m.d.comb += [cmds.w_data.eq(command_r.as_value()), cmds.w_en.eq(plan_r)]
        with m.If(plan):
            m.d.sync += f_lane.eq((f_lane + nb)[:shift])
            with m.If(seg_end):
                m.d.sync += [
                    start.eq(hm), avail.eq(avail_first),
                    first.eq(1), seg_first.eq(0), seg_len.eq(n_take),
                    seg_end.eq(n_fits), last_r.eq(n_last),
                    nb_end.eq(Mux(n_fits, n_take[:shift + 1], n_nbl)), s1.eq(n_s1),
                    cn.eq(n_cn),
                    pay_after.eq(n_pay), pay_le.eq(n_pay_le), pay_small.eq(n_pay_small),
                    seg_k.eq(k_next),
                    seg_seq.eq(seq_next), seg_id.eq(id_next),
                ]
            with m.Else():
                m.d.sync += [first.eq(0), start.eq(0), avail.eq(lanes),
                             seg_end.eq(Mux(first, s1, cn[-1]))]
                with m.If(~first):
                    m.d.sync += cn.eq(cn - 1)

        # Mover: the oldest commands and the oldest source beats wait in flip-flops (lo is the
        # beat with the next byte needed, hi the one after), so that the emit decision feeds
        # the registers of the windows and of the gearbox output only.
        emit = Signal()
        emit_adv = Signal()
        sent_now = Signal()
        gear_ok = self.gear_ok
        emit_data = Signal()
        cwin, _ = _window(m, cmds, cmd_layout.size, emit, Const(0), "cmdw", 2,
                          consume_data=emit_data)
        cmd = data.View(cmd_layout, cwin[0][0])
        cmd_v = cwin[0][1]
        emit_adv_data = Signal()
        gear_ok_n = self.gear_ok_n
        dwin, src_pop_w = _window(m, source, width, emit_adv, sent_now, "srcw", 3,
                                  consume_data=emit_adv_data)
        (lo, lo_v), (hi, hi_v) = dwin[0], dwin[1]
        m.d.comb += [
            src_pop.eq(src_pop_w),
            emit.eq(cmd_v & lo_v & (hi_v | ~cmd.need_hi) & gear_ok),
            emit_data.eq(cmd_v & lo_v & (hi_v | ~cmd.need_hi) & ~gear_ok_n),
            emit_adv_data.eq(emit_data & cmd.advance),
            emit_adv.eq(emit & cmd.advance),
            sent_now.eq(emit & cmd.seg_end & cmd.last),
        ]
        m.d.sync += cmd_credits.eq(cmd_credits - plan + emit)
        self.frame_sent = sent_now
        # The rotation in two registered halves (the low bits of the amount first).
        bits = exact_log2(lanes)
        low = (bits + 1) // 2
        rot_lo = _rotate(m, lo, cmd.rot[:low], 1 << low, "lo", lanes)
        rot_hi = _rotate(m, hi, cmd.rot[:low], 1 << low, "hi", lanes)
        r_lo = Signal(width)
        r_hi = Signal(width)
        r_cmd = Signal(cmd_layout)
        r_emit = Signal()
        m.d.sync += [r_lo.eq(rot_lo), r_hi.eq(rot_hi), r_cmd.eq(cmd), r_emit.eq(emit)]
        rot_lo = _rotate(m, r_lo, r_cmd.rot[low:], lanes, "lo2", lanes, first_bit=low)
        rot_hi = _rotate(m, r_hi, r_cmd.rot[low:], lanes, "hi2", lanes, first_bit=low)
        out_data = Cat(*(Mux(r_cmd.sel_hi[j], rot_hi[8 * j:8 * j + 8], rot_lo[8 * j:8 * j + 8])
                         for j in range(lanes)))
        gb.update(emit=Signal(name="g_valid"), data=Signal(width, name="g_data"),
                  mask=Signal(lanes, name="g_mask"), seg_end=Signal(name="g_seg_end"),
                  first=Signal(name="g_first"), last=Signal(name="g_last"),
                  len=Signal(16, name="g_len"), seq=Signal(32, name="g_seq"),
                  id=Signal(16, name="g_id"), k=Signal(24, name="g_k"))
        m.d.sync += [
            gb["emit"].eq(r_emit), gb["data"].eq(out_data), gb["mask"].eq(r_cmd.mask),
            gb["seg_end"].eq(r_cmd.seg_end), gb["first"].eq(r_cmd.first),
            gb["last"].eq(r_cmd.last), gb["len"].eq(r_cmd.len), gb["seq"].eq(r_cmd.seq),
            gb["id"].eq(r_cmd.id), gb["k"].eq(r_cmd.k),
        ]

        # Drops counted a cycle later, from flip-flops.
        dropped = Signal()
        dropped_reason = Signal(4)
        m.d.sync += [dropped.eq(self.drop_push), dropped_reason.eq(self.drop_reason)]
        for name in REASONS[1:]:
            with m.If(dropped & (dropped_reason == _CODE[name])):
                self._count(m, f"drop_{name}")

        # ---- The sequence per frame: the header side reads, parses and sums a frame's header
        # while the payload side segments the frame before.
        with m.If(p_busy):
            with m.If(~p_draining):
                m.d.comb += src_issue.eq(src_more & (src_count < _SRC_DEPTH) & ~rd_issue)
                with m.If(src_issue):
                    m.d.sync += [src_idx.eq(src_idx + 1), s_raddr.eq(_ring_inc(s_raddr, depth)),
                                 src_more.eq(src_more1), src_more1.eq(src_idx < p_beats_m2)]
                # The beats read are free (the header's since the hand-over): the next frame
                # fills the ring behind the reads.
                m.d.sync += self.ring_rp.eq(s_raddr)
                with m.If(self.frame_sent):
                    m.d.sync += [p_draining.eq(1), p_step.eq(0)]
            with m.Else():
                m.d.sync += [p_step.eq(p_step + 1), p_free.eq(p_step + 1 == _PIPE_DRAIN)]
                with m.If(p_free):
                    m.d.sync += [self.ring_rp.eq(p_end), p_busy.eq(0),
                                 p_draining.eq(0)]
                    self._count(m, "frames_segmented")
        # The finisher's pipeline holds a descriptor for up to _FIN_DRAIN cycles after a
        # frame's last emit (a flip-flop: zero when empty).
        fin_wait = Signal(range(_FIN_DRAIN + 1))
        fin_idle = Signal(init=1)
        with m.If(self.frame_sent):
            m.d.sync += [fin_wait.eq(_FIN_DRAIN), fin_idle.eq(0)]
        with m.Elif(fin_wait != 0):
            m.d.sync += [fin_wait.eq(fin_wait - 1), fin_idle.eq(fin_wait == 1)]
        with m.FSM(name="segmenter"):
            with m.State("Idle"):
                with m.If(frames.r_rdy & bank_ok):
                    m.d.comb += [frames.r_en.eq(1), self.frame_popped.eq(1)]
                    m.d.sync += [
                        beats.eq(head.beats), flen.eq(head.length), hole.eq(head.hole),
                        mss.eq(head.command.mss), udp.eq(head.command.udp),
                        fixed_id.eq(head.command.fixed_id),
                        rd_index.eq(0), h_raddr.eq(h_base), rd_issue.eq(1),
                        n_hdr.eq(Mux(head.beats < hb, head.beats, hb)),
                        rd_last.eq(head.beats <= 1),
                    ]
                    m.next = "Read Header"
            with m.State("Read Header"):
                m.d.sync += [rd_index.eq(rd_index + 1), h_raddr.eq(_ring_inc(h_raddr, depth)),
                             rd_last.eq(rd_index + 2 >= n_hdr)]
                with m.If(rd_last):
                    m.d.sync += [step.eq(0), step_hit.eq(0), rd_issue.eq(0)]
                    m.next = "Parse"
            with m.State("Parse"):
                m.d.sync += [step.eq(step + 1), step_hit.eq(step + 1 == 15)]
                with m.If(step_hit):  # step 15: the parse registers above have settled
                    m.d.sync += [sum_beat.eq(0), sum_more.eq(1), step.eq(0), step_hit.eq(0)]
                    m.d.sync += gsel_load(Const(0, gsel_bits))
                    for k in acc:
                        m.d.sync += acc[k].eq(0)
                    with m.If(reason != 0):
                        m.next = "Drop"
                    with m.Else():
                        m.next = "Sum Header"
            with m.State("Drop"):
                # In frame order: once the frame before is segmented and its descriptors out.
                with m.If(self.desc_credit & ~p_busy & fin_idle):
                    m.d.comb += [self.drop_push.eq(1), self.drop_reason.eq(reason)]
                    m.d.sync += [self.ring_rp.eq(h_next), h_base.eq(h_next)]
                    m.next = "Idle"
            with m.State("Sum Header"):
                m.d.comb += sum_go.eq(sum_more)
                m.d.sync += [step.eq(step + 1), step_hit.eq(step + 1 == hdr_end)]
                with m.If(sum_go):
                    m.d.sync += [sum_beat.eq(sum_beat + 1), sum_more.eq(sum_beat < hdr_last)]
                    m.d.sync += gsel_load((sum_beat + 1)[2:2 + gsel_bits])
                with m.If(step_hit):  # step == hdr_end
                    m.d.comb += in_set.eq(1)
                    m.d.sync += in_start.eq(1)
                    m.next = "Start"
            with m.State("Start"):
                # Hand the frame to the payload side once it is free (below).
                with m.If(handover):
                    m.next = "Idle"
        # In Start (in_start, a flip-flop beside the state): the loads of the hand-over, on a
        # flip-flop worked out a cycle ahead from the next values of in_start and p_busy (it
        # enables the planner's registers: one LUT from flip-flops to their enables).
        m.d.sync += handover.eq(~handover & (in_start | in_set) & (~p_busy | p_free))
        with m.If(handover):
            m.d.sync += in_start.eq(0)
            m.d.sync += [
                fc["udp"].eq(udp), fc["v4"].eq(is_v4), fc["fixed_id"].eq(fixed_id),
                fc["l4_hdr"].eq(l4_hdr), fc["iphl"].eq(iphl), fc["hlen"].eq(hlen),
                fc["flags"].eq(flags), fc["bank"].eq(bank),
                fc["l4_fixed"].eq(l4_fixed_a + l4_fixed_b),
                fc["ip_base"].eq(acc["ip"]),
                hm.eq(hlen[:shift]), bh.eq(hlen[shift:]),
                f_lane.eq(hlen[:shift]), first.eq(1), seg_first.eq(1),
                start.eq(hlen[:shift]), avail.eq(avail0),
                avail_first.eq(avail0),
                seg_len.eq(mss), pay_after.eq(pay0), pay_le.eq(pay0_le),
                pay_small.eq(pay0_small), p_mss_a.eq(mss_a),
                seg_end.eq(first_fits), last_r.eq(first_last),
                nb_end.eq(Mux(first_fits, mss[:shift + 1], nbl_frame)),
                s1.eq(s1_frame), cn.eq(cn_frame),
                p_k.eq(k_frame), p_a_lanes.eq(a_lanes), p_cn.eq(cn_frame),
                p_nbl.eq(nbl_frame), p_s1.eq(s1_frame),
                seg_seq.eq(seq), seg_id.eq(ip_id), seg_k.eq(0),
                src_idx.eq(hlen[shift:]), src_more.eq(hb_more), src_more1.eq(hb_more1),
                s_raddr.eq(s_start), p_end.eq(h_next),
                bank_busy.eq((bank_busy & ~self.bank_free)
                             | (Const(1, _BANKS) << bank)),
                p_busy.eq(1), p_beats.eq(beats), p_beats_m2.eq(beats_m2), p_mss.eq(mss),
                p_mss2.eq(mss2),
                p_fixed_id.eq(fixed_id), p_first_fits.eq(first_fits),
                h_base.eq(h_next), bank.eq(bank + 1),
            ]
            for b in range(_BANKS):
                with m.If(bank == b):
                    info = self.finfo[b]
                    m.d.sync += [info.bh.eq(hlen[shift:]), info.hm.eq(hlen[:shift])]
                    for n, (en, pos) in enumerate(positions_r):
                        m.d.sync += [info.slots[n].en.eq(en),
                                     info.slots[n].beat.eq(pos[shift:]),
                                     info.slots[n].lane.eq(pos[:shift])]

    # ---- Finisher: payload sums, then header fields, then the descriptor. --------------------

    def _finisher(self, m):
        width, lanes, shift = self.width, self.width // 8, self._shift
        gb, fc = self.gb, self.fc
        depth = self.segment_depth
        seg_bits = exact_log2(depth)
        m.submodules.segments = segments = RegisteredMemory(width, depth, primitive=self.bram,
                                                            attrs=_NO_RW_CHECK)
        self.segments = segments
        seg_wp = Signal(seg_bits)
        m.d.comb += [segments.w_addr.eq(seg_wp), segments.w_data.eq(gb["data"]),
                     segments.w_en.eq(gb["emit"])]
        with m.If(gb["emit"]):
            m.d.sync += seg_wp.eq(seg_wp + 1)

        # Room in the segment ring and in the descriptor queue, counted at the gearbox.
        self.seg_used = seg_used = Signal(seg_bits + 1)
        self.seg_freed = Signal()
        self.desc_popped = Signal()
        desc_credits = Signal(range(self.queue_depth + 1), init=self.queue_depth)
        gear_emit = Signal()
        gear_end = Signal()
        self.gear_emit, self.gear_end = gear_emit, gear_end
        # A drop's descriptor is counted a cycle late, from a flip-flop (drops wait for an idle
        # payload side, so no gearbox descriptor is in flight beside it).
        drop_push_r = Signal()
        m.d.sync += [
            drop_push_r.eq(self.drop_push),
            seg_used.eq(seg_used + gear_emit - self.seg_freed),
            desc_credits.eq(desc_credits - ((gear_emit & gear_end) | drop_push_r)
                            + self.desc_popped),
        ]
        # Both flags are flip-flops, a cycle late: they leave room for the gearbox's writes and
        # descriptors not counted yet (emits of the last _GEAR_LAG + 1 cycles, one more for a
        # drop's descriptor).
        gear_ok_next = (seg_used < depth - _GEAR_LAG - 2) & (desc_credits > _GEAR_LAG + 2)
        m.d.sync += [self.gear_ok.eq(gear_ok_next), self.gear_ok_n.eq(~gear_ok_next),
                     self.desc_credit.eq(desc_credits > _GEAR_LAG + 2)]

        attrs = ("seg_end", "first", "last", "len", "seq", "id", "k")

        def carry(src, suffix):
            out = {n: Signal.like(src[n], name=f"{n}_{suffix}") for n in attrs + ("emit",)}
            m.d.sync += [out[n].eq(src[n]) for n in out]
            return out

        # S1: mask the bytes, sum pairs of words (one carry chain behind the masks).
        s1 = carry(gb, "s1")
        groups = []
        for g in range(0, lanes // 2, 2):
            terms = []
            for w in range(g, min(g + 2, lanes // 2)):
                hi_b = Mux(gb["mask"][2 * w], gb["data"][16 * w:16 * w + 8], 0)
                lo_b = Mux(gb["mask"][2 * w + 1], gb["data"][16 * w + 8:16 * w + 16], 0)
                terms.append(Cat(lo_b, hi_b))
            part = Signal(17, name=f"s1_part{g}")
            m.d.sync += part.eq(_tree(m, terms, "s1"))
            groups.append(part)
        # S2: sum the groups.
        s2 = carry(s1, "s2")
        s2_sum = Signal(24)
        m.d.sync += s2_sum.eq(_tree(m, groups, "s2"))
        # A: accumulate per segment.
        a = {n: Signal.like(s2[n], name=f"{n}_a") for n in attrs}
        a_valid = Signal()
        acc = Signal(30)  # 9000 bytes of 0xffff words need 29 bits
        paysum = Signal(30)
        total = acc + s2_sum
        m.d.sync += a_valid.eq(s2["emit"] & s2["seg_end"])
        # The frame's values go down the pipeline beside its segments (the next frame may
        # start once its last beat is in A).
        fa = {n: Signal.like(v, name=f"{n}_fa") for n, v in fc.items()}
        with m.If(s2["emit"]):
            m.d.sync += [a[n].eq(s2[n]) for n in attrs]
            m.d.sync += [acc.eq(Mux(s2["seg_end"], 0, total)), paysum.eq(total)]
            m.d.sync += [fa[n].eq(fc[n]) for n in fa]
        later = ("udp", "v4", "ip_base", "hlen", "bank")
        fcs = [fa]
        for stage in ("f1", "f2x", "f2", "f3"):
            copy = {n: Signal.like(fc[n], name=f"{n}_c{stage}") for n in later}
            m.d.sync += [copy[n].eq(fcs[-1][n]) for n in later]
            fcs.append(copy)
        fa, fc1, _, _, fc3 = fcs

        # F1: lengths, flags, first partial sums.
        f1_valid = Signal()
        l4_len = Signal(17)
        ip_len = Signal(17)
        end = Signal(17)
        flags = Signal(8)
        t_pay = Signal(31)
        t_seq = Signal(17)
        f1 = {n: Signal.like(a[n], name=f"{n}_f1") for n in ("first", "last", "seq", "id", "k")}
        keep_flags = Mux(a["last"], 0xFF, ~(_TCP_FIN | _TCP_PSH) & 0xFF) \
            & Mux(a["first"], 0xFF, ~_TCP_CWR & 0xFF)
        m.d.sync += [
            f1_valid.eq(a_valid),
            l4_len.eq(fa["l4_hdr"] + a["len"]),
            ip_len.eq(fa["iphl"] + fa["l4_hdr"] + a["len"]),
            end.eq(fa["hlen"] + a["len"] - 1),
            flags.eq(fa["flags"] & keep_flags),
            t_pay.eq(paysum + fa["l4_fixed"]),
            t_seq.eq(a["seq"][:16] + a["seq"][16:]),
        ]
        m.d.sync += [f1[n].eq(a[n]) for n in f1]
        # F2: whole sums.
        f2_valid = Signal()
        l4_tot = Signal(32)
        ip_tot = Signal(26)
        f2 = {n: Signal.like(v, name=f"{n.lstrip('_')}_f2") for n, v in
              (("first", f1["first"]), ("last", f1["last"]), ("seq", f1["seq"]),
               ("id", f1["id"]), ("k", f1["k"]), ("l4_len", l4_len), ("ip_len", ip_len),
               ("end", end), ("flags", flags))}
        # Two halves of the TCP/UDP sum first, then their sum.
        l4_x = Signal(32)
        l4_y = Signal(18)
        ip_tot_x = Signal(26)
        f2x_valid = Signal()
        f2x = {n: Signal.like(v, name=f"{n}_f2x") for n, v in
               (("first", f1["first"]), ("last", f1["last"]), ("seq", f1["seq"]),
                ("id", f1["id"]), ("k", f1["k"]), ("l4_len", l4_len), ("ip_len", ip_len),
                ("end", end), ("flags", flags))}
        m.d.sync += [
            f2x_valid.eq(f1_valid),
            l4_x.eq(t_pay + l4_len),
            l4_y.eq(Mux(fc1["udp"], l4_len, t_seq + flags)),
            ip_tot_x.eq(fc1["ip_base"] + ip_len + f1["id"]),
        ]
        m.d.sync += [f2x["first"].eq(f1["first"]), f2x["last"].eq(f1["last"]),
                     f2x["seq"].eq(f1["seq"]), f2x["id"].eq(f1["id"]), f2x["k"].eq(f1["k"]),
                     f2x["l4_len"].eq(l4_len),
                     f2x["ip_len"].eq(ip_len), f2x["end"].eq(end), f2x["flags"].eq(flags)]
        m.d.sync += [
            f2_valid.eq(f2x_valid),
            l4_tot.eq(l4_x + l4_y),
            ip_tot.eq(ip_tot_x),
        ]
        m.d.sync += [f2[n].eq(f2x[n]) for n in f2]
        # F3: first fold.
        f3_valid = Signal()
        l4_f = Signal(17)
        ip_f = Signal(17)
        f3 = {n: Signal.like(v, name=f"{n}_f3") for n, v in f2.items()}
        m.d.sync += [
            f3_valid.eq(f2_valid),
            l4_f.eq(l4_tot[:16] + l4_tot[16:]),
            ip_f.eq(ip_tot[:16] + ip_tot[16:]),
        ]
        m.d.sync += [f3[n].eq(f2[n]) for n in f2]
        # F4: second fold, complement, descriptor.
        l4_c = ~(l4_f[:16] + l4_f[16])[:16]
        ip_c = ~(ip_f[:16] + ip_f[16])[:16]
        # A UDP checksum of 0 goes as 0xffff (the folded sum is 0xffff: beside the adder).
        l4_zero = (l4_f == 0xFFFF) | (l4_f == 0x1FFFE)
        l4_c = Mux(fc3["udp"] & l4_zero, 0xFFFF, l4_c)
        self.desc_layout = desc_layout = data.StructLayout({
            "drop": 1, "reason": 4, "count": 24, "bank": exact_log2(_BANKS), "first": 1,
            "last": 1,
            "last_beat": 17 - shift, "last_bytes": shift + 1, "one_beat": 1, "two_beats": 1,
            "three_beats": 1,
            "bh": 8 - shift + 1, "hm": shift,
            "values": data.ArrayLayout(8, _SLOTS),
        })
        l3_len = Mux(fc3["v4"], f3["ip_len"], f3["l4_len"])[:16]
        values = [
            l3_len[8:16], l3_len[0:8], f3["id"][8:16], f3["id"][0:8], ip_c[8:16], ip_c[0:8],
            Mux(fc3["udp"], f3["l4_len"][8:16], f3["seq"][24:32]),
            Mux(fc3["udp"], f3["l4_len"][0:8], f3["seq"][16:24]),
            f3["seq"][8:16], f3["seq"][0:8], f3["flags"], l4_c[8:16], l4_c[0:8],
        ]
        desc = Signal(desc_layout)
        desc_push = Signal()
        m.d.sync += [
            desc_push.eq(f3_valid | self.drop_push),
            desc.drop.eq(self.drop_push), desc.reason.eq(self.drop_reason),
            desc.count.eq(f3["k"] + 1),
            desc.bank.eq(fc3["bank"]), desc.first.eq(f3["first"]), desc.last.eq(f3["last"]),
            desc.last_beat.eq(f3["end"][shift:]), desc.last_bytes.eq(f3["end"][:shift] + 1),
            desc.one_beat.eq(f3["end"][shift:] == 0),
            desc.two_beats.eq(f3["end"][shift:] == 1),
            desc.three_beats.eq(f3["end"][shift:] == 2),
            desc.bh.eq(fc3["hlen"][shift:]), desc.hm.eq(fc3["hlen"][:shift]),
        ]
        m.d.sync += [desc.values[n].eq(v) for n, v in enumerate(values)]
        m.submodules.descriptors = descs = CreditedFIFO(desc_layout.size, self.queue_depth,
                                                          thermometer=True)
        self.descs = descs
        m.d.comb += [descs.w_data.eq(desc.as_value()), descs.w_en.eq(desc_push)]

    # ---- Reader: template beats and payload beats out, fields rewritten. ---------------------

    def _reader(self, m):
        width, lanes, shift = self.width, self.width // 8, self._shift
        descs = self.descs
        # The oldest two descriptors wait in flip-flops (see _window).
        take = Signal()
        take_data = Signal()
        dwin, _ = _window(m, descs, self.desc_layout.size, take, Const(0), "descw", 2,
                          consume_data=take_data)
        head = data.View(self.desc_layout, dwin[0][0])
        head_v = dwin[0][1]
        seg_bits = exact_log2(self.segment_depth)
        seg_rp = Signal(seg_bits)
        beat = Signal(17 - shift)
        out_credits = Signal(range(_OUT_DEPTH + 1), init=_OUT_DEPTH)
        # Result words: a drop's once every earlier beat has left (frame order), a sent frame's
        # as its last beat leaves (credit taken when its last descriptor is read).
        m.submodules.results = results = CreditedFIFO(32, _RES_DEPTH, thermometer=True)
        res_credits = Signal(range(_RES_DEPTH + 1), init=_RES_DEPTH)
        res_push = Signal()
        res_word = Signal(TsoResultLayout)
        # Written a cycle later, from flip-flops (the push decision would otherwise end at the
        # queue's level counters); the credits count the word when its descriptor is taken.
        res_word_r = Signal(TsoResultLayout)
        res_push_r = Signal()
        m.d.sync += [res_word_r.eq(res_word), res_push_r.eq(res_push)]
        m.d.comb += [
            results.w_data.eq(res_word_r.as_value()),
            results.w_en.eq(res_push_r),
            self.result.payload.eq(results.r_data),
            self.result.valid.eq(results.r_rdy),
            results.r_en.eq(self.result.ready),
        ]
        res_out = self.result.valid & self.result.ready
        res_take = Signal()
        m.d.sync += res_credits.eq(res_credits - res_take + res_out)
        # Flip-flops, a cycle late: the output queue was empty and nothing was issued since; a
        # result word fits, counting the one taken in the cycle before.
        out_empty = Signal(init=1)
        res_ok = Signal(init=1)
        # Where the head is: beats left after this one (``left``) and its first values as
        # flip-flops, so that the issue decision does not wait for a comparison.
        left = Signal(17 - shift)
        is_last = Signal()  # left == 0
        left1 = Signal()  # left == 1
        left2 = Signal()  # left == 2
        drop_done = head_v & head.drop & out_empty & res_ok
        # Room for the head's next beat (and, for the last descriptor of a frame, for its
        # result word): a flip-flop set for the head of the next cycle, so that the issue
        # decision does not pick between two flags by the head's ``last`` first.
        can_issue = Signal(init=1)
        issue = head_v & ~head.drop & can_issue
        done = issue & is_last
        # The two ways to take the head, each a flip-flop set from the next cycle's values of
        # its parts: can_finish = can_issue & is_last, drop_ok = out_empty & res_ok. ``take``
        # is then one LUT of flip-flops (it reaches the window and the beat counters).
        can_finish = Signal()
        drop_ok = Signal(init=1)
        # Their complements, for the copy of ``take`` that loads the descriptor window's data.
        can_finish_n = Signal(init=1)
        drop_ok_n = Signal()
        m.d.comb += [res_take.eq(drop_done | (done & head.last)),
                     take.eq(head_v & Mux(head.drop, drop_ok, can_finish)),
                     take_data.eq(head_v & ~Mux(head.drop, drop_ok_n, can_finish_n))]
        out_empty_next = (out_credits == _OUT_DEPTH) & ~issue
        res_ok_next = res_credits > 1
        m.d.sync += [out_empty.eq(out_empty_next), res_ok.eq(res_ok_next),
                     drop_ok.eq(out_empty_next & res_ok_next),
                     drop_ok_n.eq(~(out_empty_next & res_ok_next))]
        # The credit tests for the next issue as flip-flops, a cycle late, with the margin of
        # the one beat (result word) that may be taken meanwhile.
        out_room = Signal(init=1)
        res_room = Signal(init=1)
        m.d.sync += [out_room.eq(out_credits > 2), res_room.eq(res_credits > 2)]
        # The next head's values are in its descriptor; this head's are counted down.
        nxt = data.View(self.desc_layout, Mux(dwin[1][1], dwin[1][0], descs.r_data))
        is_last_next = Signal()
        load = take | ~head_v
        m.d.comb += is_last_next.eq(Mux(load, nxt.one_beat, Mux(issue, left1, is_last)))
        m.d.sync += is_last.eq(is_last_next)
        with m.If(load):
            m.d.sync += [left.eq(nxt.last_beat), left1.eq(nxt.two_beats),
                         left2.eq(nxt.three_beats)]
        with m.Elif(issue):
            m.d.sync += [left.eq(left - 1), left1.eq(left2), left2.eq(left == 3)]
        payload_beat = beat >= head.bh
        # Credits back a cycle late (from flip-flops).
        m.d.sync += [self.desc_popped.eq(take), self.seg_freed.eq(issue & payload_beat)]
        m.d.comb += [
            self.template.r_addr.eq(Cat(beat[:self.tb_bits], head.bank)),
            self.template.r_en.eq(1),  # read every cycle, taken after an issue
            self.segments.r_addr.eq(seg_rp),
            self.segments.r_en.eq(1),
            self.bank_free.eq(Mux(done & head.last, Const(1, _BANKS) << head.bank, 0)),
        ]
        with m.If(issue & payload_beat):
            m.d.sync += seg_rp.eq(seg_rp + 1)
        with m.If(done):
            m.d.sync += beat.eq(0)
        with m.Elif(issue):
            m.d.sync += beat.eq(beat + 1)
        # Gearbox handshakes for the room counters.
        m.d.comb += [self.gear_emit.eq(self.gb["emit"]), self.gear_end.eq(self.gb["seg_end"])]

        issued = {
            "last": is_last,
            "keep": Mux(is_last, Cat(*(head.last_bytes > j for j in range(lanes))),
                        Const((1 << lanes) - 1, lanes)),
            "user": Cat(head.first, head.last),
            "count": head.count,
            "bh": head.bh, "hm": head.hm,  # which lanes are the template's: in stage 1a
        }
        for n in range(_SLOTS):
            issued[f"value{n}"] = head.values[n]
        issued["beat"] = beat
        stage0 = {n: Signal(len(v) if not isinstance(v, int) else 1, name=f"{n}_r0")
                  for n, v in issued.items()}
        m.d.sync += [stage0[n].eq(v) for n, v in issued.items()]
        # The slots of the head's bank, picked in the issue cycle (lanes one-hot).
        info = data.View(self.finfo_layout, Array(self.finfo)[head.bank])
        slot_beat = [Signal.like(info.slots[n].beat, name=f"slot{n}_beat")
                     for n in range(_SLOTS)]
        slot_en = [Signal(name=f"slot{n}_en") for n in range(_SLOTS)]
        slot_lane = [Signal.like(info.slots[n].lane, name=f"slot{n}_lane")
                     for n in range(_SLOTS)]
        for n in range(_SLOTS):
            slot = info.slots[n]
            m.d.sync += [slot_beat[n].eq(slot.beat), slot_en[n].eq(slot.en),
                         slot_lane[n].eq(slot.lane)]
        # Stage 1: whether each slot is in this beat. Stage 1b: which lanes it rewrites.
        stage1a = {n: Signal.like(stage0[n], name=f"{n}_r1a") for n in stage0
                   if n not in ("beat", "bh", "hm")}
        m.d.sync += [stage1a[n].eq(stage0[n]) for n in stage1a]
        stage1a["tmpl"] = Signal(lanes, name="tmpl_r1a")
        m.d.sync += stage1a["tmpl"].eq(
            Mux(stage0["beat"] < stage0["bh"], Const((1 << lanes) - 1, lanes),
                Mux(stage0["beat"] == stage0["bh"],
                    Cat(*(stage0["hm"] > j for j in range(lanes))), 0)))
        match = [Signal(name=f"match{n}") for n in range(_SLOTS)]
        match_lanes = [Signal(lanes, name=f"match{n}_lanes") for n in range(_SLOTS)]
        for n in range(_SLOTS):
            m.d.sync += [match[n].eq(slot_en[n] & (stage0["beat"] == slot_beat[n])),
                         match_lanes[n].eq((Const(1, lanes) << slot_lane[n])[:lanes])]
        stage1 = {n: Signal.like(stage1a[n], name=f"{n}_r1") for n in stage1a}
        m.d.sync += [stage1[n].eq(stage1a[n]) for n in stage1]
        for n in range(_SLOTS):
            stage1[f"hit{n}"] = hit = Signal(lanes, name=f"hit{n}_r1")
            m.d.sync += hit.eq(Mux(match[n], match_lanes[n], 0))
        # Stage 2: the one rewritten byte of each lane, if any (slots never share a byte).
        stage2 = {n: Signal.like(stage1[n], name=f"{n}_r2")
                  for n in ("last", "keep", "user", "count", "tmpl")}
        m.d.sync += [stage2[n].eq(stage1[n]) for n in stage2]
        patch_en = Signal(lanes)
        patch = Signal(width)
        for j in range(lanes):
            hits = [stage1[f"hit{n}"][j] for n in range(_SLOTS)]
            m.d.sync += [
                patch_en[j].eq(Cat(*hits).any()),
                patch[8 * j:8 * j + 8].eq(_or_tree([Mux(hit, stage1[f"value{n}"], 0)
                                                     for n, hit in enumerate(hits)])),
            ]
        # The block RAMs' data into flip-flops that feed nothing else, then on beside the
        # stages above.
        in_flight = Signal()
        in_flight2 = Signal()
        in_flight3 = Signal()
        ready = Signal()
        tmpl_q = Signal(width)
        seg_q = Signal(width)
        tmpl_q2 = Signal(width)
        seg_q2 = Signal(width)
        tmpl_data = Signal(width)
        seg_data = Signal(width)
        # (The first rank is the memories' output register.)
        m.d.comb += [tmpl_q.eq(self.template.r_data), seg_q.eq(self.segments.r_data)]
        m.d.sync += [in_flight.eq(issue), in_flight2.eq(in_flight), in_flight3.eq(in_flight2),
                     ready.eq(in_flight3),
                     tmpl_q2.eq(tmpl_q), seg_q2.eq(seg_q),
                     tmpl_data.eq(tmpl_q2), seg_data.eq(seg_q2)]
        out_bytes = []
        for j in range(lanes):
            b = Mux(stage2["tmpl"][j], tmpl_data[8 * j:8 * j + 8], seg_data[8 * j:8 * j + 8])
            out_bytes.append(Mux(patch_en[j], patch[8 * j:8 * j + 8], b))
        out_layout = data.StructLayout({"data": width, "keep": lanes, "last": 1, "user": 2,
                                        "count": 24})
        m.submodules.out_fifo = out_fifo = CreditedFIFO(out_layout.size, _OUT_DEPTH,
                                                        thermometer=True)
        out_beat = Signal(out_layout)
        m.d.comb += [
            out_beat.data.eq(Cat(*out_bytes)),
            out_beat.keep.eq(stage2["keep"]),
            out_beat.last.eq(stage2["last"]),
            out_beat.user.eq(stage2["user"]),
            out_beat.count.eq(stage2["count"]),
            out_fifo.w_data.eq(out_beat.as_value()),
            out_fifo.w_en.eq(ready),
        ]
        sent = data.View(out_layout, out_fifo.r_data)
        m.d.comb += [
            self.o.payload.data.eq(sent.data),
            self.o.payload.keep.eq(sent.keep),
            self.o.payload.last.eq(sent.last),
            self.o.payload.user.eq(sent.user),
            self.o.valid.eq(out_fifo.r_rdy),
            out_fifo.r_en.eq(self.o.ready),
        ]
        out = self.o.valid & self.o.ready
        next_last = Mux(load, nxt.last, head.last)  # the head's, a cycle on
        can_issue_next = out_room & (res_room | ~next_last)
        m.d.sync += [out_credits.eq(out_credits - issue + out), can_issue.eq(can_issue_next),
                     can_finish.eq(can_issue_next & is_last_next),
                     can_finish_n.eq(~(can_issue_next & is_last_next))]
        with m.If(out & self.o.payload.last):
            self._count(m, "segments_out")
        with m.If(drop_done):
            m.d.comb += [res_push.eq(1), res_word.reason.eq(head.reason)]
        with m.Elif(out & sent.last & sent.user[1]):
            m.d.comb += [res_push.eq(1), res_word.segments.eq(sent.count)]
