# Ref: Linux net/core/gro.c (dev_gro_receive(), skb_gro_receive(), MAX_GRO_SKBS),
#      net/ipv4/af_inet.c inet_gro_receive(), net/ipv6/ip6_offload.c ipv6_gro_receive(),
#      include/net/gro.h inet_gro_flush(), net/ipv4/tcp_offload.c tcp_gro_receive();
#      RFC 791 §3.1, RFC 8200 §3, RFC 9293 §3.1, RFC 1071 (ones'-complement sums)
"""Receive segment coalescing (LRO) with Linux GRO's rules.

The block merges in-order TCP segments of up to ``flows`` flows into one large frame each, with
the rules of the golden reference :class:`nicsim.hw.ref.lro.LroEngine` (its default options:
``keep_order``, ``cwr_rule="restart"``, ``fixed_id_needs_df``), and delivers every other frame
unchanged, in order.

Memory. Every flow context fills a region of ``buffer_bytes`` in one payload memory (which has
``flows + spare_regions`` of them, see "Throughput"): the first segment is stored whole at the
start of its region, later payloads are appended behind it, so a
merged frame leaves the region as it will go on the wire but for four header fields (IP length,
IPv4 header checksum, TCP flags, TCP checksum), which the read-out puts into its words as they
leave (the region itself is never patched). A flow is delivered before its merged
frame would pass ``max_bytes`` (counted after the Ethernet header, like the reference's
``max_bytes``; at most ``buffer_bytes - 14``), so the reference run with the same ``max_flows``
and ``max_bytes`` gives the same frames. Linux's 64 KiB (``max_bytes=65535``) needs
``buffer_bytes=131072``: 8 flows take 1 MiB (2 MiB with the default spare regions), which a
simulation holds but an ECP5-85k does not (208 blocks of 18 kbit); the default, 16 KiB regions
with ``max_bytes=16370``, fits (1 Mbit; 2 Mbit, 128 blocks, with 8 spare regions).
Received frames wait in a staging ring of two ``max_frame`` frames (kept twice, see
"Throughput") until their checksums are known; a frame longer than ``max_frame`` is dropped and
counted (its ``user`` bit still ends a poll).

Order of delivery: a frame that ends a held flow (a mismatch, an ineligible frame of the same
addresses and ports, an eviction) delivers that flow first. A held flow also leaves once its
first segment has waited ``TIMEOUT`` cycles (register; 0 disables), tested between frames (a
timed-out flow leaves before the next frame is looked at, a few cycles late at most); and all
held flows leave, oldest first, after a frame whose ``user`` bit 0 is set (end of a poll:
the reference's ``flush()``).

The merged frame's metadata (Linux ``gso_segs`` and ``gso_size``) travels in the ``user`` field
of its beats: ``segs`` in bits 0-15, ``gso_size`` in bits 16-31 (0 for a single frame), and in
bits 32-47 the low 16 bits of the index of the input frame whose processing delivered it
(counting every input frame, dropped ones too).

Throughput: a frame is written into the staging ring at one beat per cycle (its byte count
and word sums reduced over registered stages of two adder levels: one stage at 64 bit, three at
512); a pipelined parser (eight stages, never stalled: a frame enters it only while the FIFO
behind it has room for everything in flight) reads its headers, and compares each frame with
the one before it, while the merge engine works on the frames before. A frame the engine has
to look up after a hold or a delivery takes four cycles ("Wait" twice, as the lookup's two steps
must see the contexts after the last change, "Decide", "Act"), and a segment held in a new
context one more ("Hold", where its context is written). The lookup of the frame after the one
the engine works on runs while that one is in "Decide", in "Act" to be passed on or merged, and
in "Chain" (the lookahead: the lookup reads the FIFO's entry behind its head), and it stands
when the changes since are known not to touch what it compared: a frame passed unchanged
changes no context, so the next frame is decided in the cycle after it leaves (two cycles a
frame, four before); a merge changes only its own context, so a frame of another flow (the
parser's ``same_key`` verdict: another flow key than the frame before, so that it cannot hit
that context) is decided after one cycle in "Chain" (three cycles a frame, five before); a
frame of the same flow that does not chain takes the lookup in "Wait". A segment that follows the
frame held or merged just before it takes one ("Chain"): the parser found the two of the same flow
with equal header words, the next sequence number, an IP ID equal or one more and a payload no
longer, and the rest of what the lookup tests is known without it (the context's header words and
``mss`` are the previous frame's; its room, held bytes and fixed-ID bit are in registers), so the
segment merges in the cycle after the one before, with no hazard to resolve. The copy of a segment
into its context's region (the payload of a merged segment, the whole of a held one) goes on in the
background, through a queue of one command behind the running one, at one staging word per
cycle: each word is rotated once and written in two parts, into two region words that lie in
two banks (even and odd words), so that a payload that straddles a region word costs no extra
cycle and back-to-back one-word segments copy at one a cycle. A delivery is handed to its own
engine (header sums in registered steps; the new header fields then wait in a queue, ``dq``) and
the merge engine goes on with the next frames; no copy ever pauses (at 512 bit a segment's copy
takes as many cycles as its input, so each pause for a delivery was a loss for good). The
read-outs leave in the order the merge engine decides them, through a queue of 16 (``rq``:
frames that pass unchanged and deliveries), each starting in the cycle of the last read of the one
before (the values of a delivery's new header fields follow its reads through a register stage of
their own, so the next read-out may load its own): a frame that passes unchanged from a second copy
of the staging ring (``staging_out``, written a cycle later; one read port for the copies and these
read-outs together would be busy in almost every cycle), a delivery once its fields are in ``dq``
and the copies into its region have issued their reads or run at least three region words ahead of
it (the read-out replaces the four header fields as the words leave). So a frame that passes
unchanged never waits for the read-outs, copies or deliveries before it (it leaves after them all
the same), and a flow's held segments, delivered before a later frame of the flow that does not
merge, leave before it. The staging ring is freed in order: up to the end of the
last frame the engine took, once no copy runs or waits, but from ``pin_head`` on while frames
queued to pass unchanged wait for their last reads (``pins``; the head moves to the end of each
one read out, at or before the next one's start). A context's payload region is apart from the
context: the contexts fill ``flows + spare_regions`` regions, and a region stays in use from the
segment held in it to its delivery's last read, while the context is free as soon as it is
handed over; so a segment held after a delivery (of an evicted flow, or of its own flow when a
frame did not merge) takes a free region at once instead of waiting for a read-out of up to 94
words (at 512 bit for 6000 bytes).

``benchmarks/bench_lro.py`` measures the input rates (4 contexts, 6000-byte merged frames, 4 spare
regions), in beats per cycle: at 64 bit, 1.0 for one flow's 64-, 256- and 1500-byte segments; at
512 bit, 0.993, 1.0 and 1.0 at rtl 430df0f (0.988 for 1500 bytes at 4d6cd45; 0.992 for 64 bytes at
8434fe5; 0.983, 0.961 and 0.936 while the copies paused for header patches written into the
regions; 0.994 for 1500 bytes before the copy's write took a cycle more; 0.25, 0.64 and 0.85
before the chains, the banked copies and the delivery engine). The test traffic, many flows
interleaved, gets 0.928 at 512 bit and 0.971 at 64 at rtl 72002e2 (0.894 and 0.956 at b486bb2,
before the read-outs back to back, 0.899 and 0.958 with them, 0.920 at 512 bit with the lookahead
too, then the read-outs that start while the copies into their regions run; 0.504 and 0.609 at
ce6f08e, when a frame that passed unchanged waited in "Act" until the read-out, copy and delivery
engines were idle and a segment held after a delivery waited for its read-out; with the queue alone
0.508 and 0.600, with the spare regions too 0.81 and 0.772, and with no, two or four spare regions
0.507, 0.758 and 0.894 at 512 bit, 0.618, 0.823 and 0.956 at 64). Where the cycles go on that
traffic (counted in Amaranth's simulator): at 512 bit the copy engine, which needs nine cycles in
ten at line rate, is idle for 1,277 of 9,934 cycles, 877 of them while a segment to be held waits
for a free region (all eight in use, the read-out busy with the deliveries before), 146 in "Hold"
and 97 in "Wait"; the read-out is idle for 1,792, 1,215 of them with nothing queued, 377 waiting for
a delivery's header sums (``dq``) and 100 for copies. At 64 bit the copy engine is idle for 9,447 of
73,383 cycles, 8,056 of them while a segment waits for a region, and the input stalls for 2,114,
1,845 of them with the staging ring held by frames queued to pass unchanged behind the deliveries.
What is left, each a next step: the lookahead across a hold (which reads the head's ``keyq`` entry:
a read port of its own for the lookup) and across a delivery (whose valid bit the lookup tests); a
delivery's sums started as its last merge is decided; a region taken for a segment to be held while
its read-out still runs, once the read-out is far enough ahead of the copy (as a read-out now
follows a copy). The cost: the regions and the staging ring take twice the memory (with the defaults
at 64 bit, 160 DP16KD blocks of an ECP5-85k's 208, not 80).

Timing. Every decision of the merge engine comes from registers and drives few of them. Its state is
one-hot (a flip-flop a state, no decoding before the decisions). The lookup compares in two
registered steps, equality in 8-bit pieces (two LUT levels), and registers the hit vector (one-hot)
and index with its verdicts; "Decide" picks the hit context's fields by the hit vector (an AND-OR,
no index multiplexer) and its one-bit facts (a single segment, fixed IDs, an equal IP ID) from the
lookup's registers; the IP ID a context expects next is a field of its own (no subtraction). A
merge, in "Chain" or in "Act", is one enable (``go_merge``) over the few registers it must change at
once (the chained context's held bytes, room and ID bits, ``q_valid``, ``mu_en``): the copy command
and the context's changes load in every cycle in which they may, and count only when enabled; the
changes are written in the next cycle (a lookup waits for that write). The copy engine's readiness
(``c_free``) and the read-out's count tests and output room are registers. A segment held in a new
context is written in a cycle of its own ("Hold"), once what it waits for is free, by one-hot
enables registered as it enters that cycle (about 1,150 flip-flops a context, enabled straight from
four copies of the register, each for about 300 of them); "Chain" tests one-bit verdicts of the
parser and registers: the IP ID rule as three verdicts of the parser, one picked by the context's
fixed-ID and single-segment bits, and the room a cycle ahead against the previous payload, which is
no shorter (a last segment that fits only because it is shorter takes the lookup, with the same
result). The parser decides the VLAN tags and the EtherType as a descriptor enters it, from verdicts
the input stage worked out on the beats that carried bytes 12 to 21 (comparisons with constants,
carried in the descriptor), registered as one-hot selects of the first stage's header windows (an
AND-OR of each window bit, no multiplexer of a binary tag count) and adds at most four words a stage
(the TCP words, masked by a comparison with the data offset, in pairs: one adder after the mask).
Wide data waits in 16-entry LUT memories read combinationally rather than in flip-flops with an
enable: the descriptor FIFO (``pcur`` loads in every cycle), the flow key, options and header words
a merge compares (``keyq``, 947 bits, from stage 1 until the engine is done with the frame; the
frame before the one at stage 6 is compared from its own entry, not from 900 flip-flops enabled by
the stage's valid bit) and the wide fields of the parser's FIFO (``pqw``: offsets, sums, the frame's
staging words; taking a frame from the FIFO enables its narrow fields only). Each is cut into chunks
of at most 256 bits, each read with read pointers of its own: an entry is taken by every frame in
turn and frames never pass each other, so a pointer is a counter of the frames gone past its point,
and a counter per chunk (which synthesis cannot merge, as it merges copies of one register) keeps
every read address under about 64 LUT memory cells (240 before). The header capture register has no
enable, and the chunk a beat fills is selected by a one-hot shift register (not by a beat count
compared with each chunk's index). The copy engine never pauses (the read-out puts the new header
fields in); the read-out's word count and last lanes are computed ahead, and a read-out starts from
the registered heads of its queues (``rq``, ``dq``; before the queues, its registers loaded the
values of the read-out that could start next in every idle cycle, so that a start set one
flip-flop); delivery sums take one adder a step. The copy queue's readiness
(``q_free``), a merge and a single frame in "Act" (``act_merge``, ``act_single``), and the oldest
and first free contexts are registers of their own. The input stage tests a beat for ``max_frame``
against a registered bit ("room of two beats or more") and a few bits of ``room``, and writes the
staging ring a cycle later from registers, its write enable in eight copies (each for an eighth of
the byte lanes, each worked out from its own copy of ``dropping``, so that synthesis keeps them
apart). Block RAM read data leaves through a register: with ``bram="dp16kd"`` (ECP5 synthesis,
``Design.synth_params``) the staging ring and the regions are DP16KD blocks with their output
registers (:class:`.bram.RegisteredMemory`; a DP16KD without one takes 5.83 ns from clock to data in
nextpnr's ECP5 model); a copy works out its region words and lanes in the cycle after the read,
rotates in the next and writes from registers in the one after; the block RAMs read in every
cycle, with no read enable. The lookahead adds: the lookup reads ``keyq``'s chunks and ``pql`` at
the head's pointer or at a second pointer one entry on (both counting the frames popped), chosen
by the register ``ahead`` (one LUT level before each LUT memory's address), where ``ahead_nx``,
its next value, comes from the engine's transitions beside ``pop`` (in "Decide" from ``hit`` and
``holdable``, in "Chain" from ``ch_go`` and ``lk_chain``); the lookup's frame fields (payload
length, key-valid and rule bits) come from a LUT memory (``pql``, 23 bits) read at that address,
as the keys come from ``keyq``, rather than from the FIFO's output register, one LUT memory read
before the payload
length's comparisons in step A; the frame's bits step B tests are registered in step A (``la_*``)
and the one-bit facts "Decide" picks in step B (``b_*``); a frame passed on and a chain's end
choose "Decide" or "Wait" by registers (``lk_ok``, ``popped``, ``expired_r``, the FIFO head's
``same_key``), one more LUT level on those states' inputs. The read-out's start tests ``o_one``
and ``o_room`` (registers) beside ``o_nz``, one more input into its enable; ``copying`` tests
``c_near``, ``c_near1`` and ``c_near2`` in place of ``c_busy``, ``c_v1`` and ``c_v2``, registers
one for one.

Measured (yosys and nextpnr, ECP5-85k, 64 bit, 8 contexts of 16 KiB, HeAP timing weight 52
(``hw/synth.py``), seed 1 unless said; routing takes most of a run of 8 minutes alone on the machine
to 30 beside other runs). The history in short: 51.7 MHz before the parser's first stage and the
merges' registered updates; 59.0 at rtl 4be69c4; 70.8 at d38fb44 (the "Hold" cycle, the room tested
a cycle ahead); 85.5 at f5afc17 (the LUT memories, Hold's registered enables, the copy's registered
write); 95.1 at 4d6cd45 (the one-hot state, the LUT memories in chunks with read pointers of their
own, equality in 8-bit pieces); 99.7 at 85892fb (Decide's AND-OR picks, one-hot window selects);
89.8 at bd32801 and 99.1 at ce6f08e, whose critical paths lay in logic that had not changed: a
figure moves by some 10% with the placement of a netlist changed elsewhere. At ce6f08e (yosys 16,985
LUT4, 2,231 CCU2C, 18,570 flip-flops, 80 DP16KD, 1,066 DPR16X4; 21,447 LUT4 with carries) the
critical path (10.1 ns, 76% routing) was the input stage's oversize test, ``nbytes`` against the
20-bit ``room``, into the staging ring's write enable across its 16 DP16KD. At 3b3712f (that test
from a registered bit and the low bits of ``room``; the staging writes a cycle later, their enable
in eight copies): 96.3 MHz, its critical path (10.4 ns, 82% routing, five LUT levels) the start of a
delivery's read-out (``copying(e_ctx)``) into the read-out's value registers (4.6 ns of routing to
``o_user``). At bc97af8 (the read-out's values loaded while it is idle; ``q_free``, ``act_merge``
and the oldest and free contexts in registers; the drop counted a cycle later): 97.0 MHz (21,436
LUT4 with carries, 18,671 flip-flops), its critical path (10.3 ns, 81% routing, six LUT levels) a
merge's enable: the FIFO head's pair verdicts through ``go_merge`` into the clock enable of the
chain registers (``ch_fix``, ``ch_room``), with 1.4, 1.8 and 2.6 ns of routing between them. At
23f1a52 (Chain's tests in one register, ``ch_ok``; a frame passed on from ``act_single``; the oldest
and free contexts registered from the contexts as they are): yosys 17,039 LUT4, 2,231 CCU2C, 754
wide-mux cells, 18,674 flip-flops, 80 DP16KD, 1,066 DPR16X4; routed 96.3 MHz (21,501 LUT4 with
carries; 24 minutes beside other runs), its critical path (10.4 ns, 81% routing, five LUT levels)
"Decide": the registered ``hit`` vector, 2.8 ns of routing across the chip, the merge verdict and
the choice of the delivery's return state (``ret``), with 0.4 to 2.3 ns of routing between the
levels. Seed 2 of that netlist: 93.3 MHz, its critical path (10.7 ns, 84% routing, five LUT levels)
the lookup's second step, a context's registered key pieces through its hit bit (2.7 and 3.0 ns of
routing across the chip) into the priority encoder of ``hit_idx``; seed 3 is not routed. The merge
of the read-out queue after these runs (f9ae233; 160 DP16KD, 19,124 flip-flops): 96.6 MHz, its
critical path (10.4 ns, 85% routing, three LUT levels) the read-out's ``o_busy`` into the read
enable of a region bank's DP16KD (2.7 and 4.8 ns of routing across the chip). The lookahead,
back-to-back read-outs and read-outs during copies (72002e2): 83.0 MHz (21,632 LUT4 with carries,
19,231 flip-flops, 160 DP16KD, 1,130 LUT-RAM), its critical path (12.0 ns, 87% routing) the same
read enable, ``o_busy`` through the read-out's start into a region block's ``CEB`` (3.6 and 5.1 ns
of routing). With the block RAMs reading in every cycle (6392181): 83.9 MHz, its critical path
(11.9 ns, 78% routing, eight LUT levels) the lookahead, "Decide"'s ``hit`` through ``ahead_nx``
into the adder of the lookup's read pointers. With the pointers counting pops only and ``ahead``
choosing between two of them (a35f1aa): 89.2 MHz (21,591 LUT4, 19,251 flip-flops), its
critical path (11.2 ns, 85% routing) ``ahead`` itself, 3.5 ns of routing across the chip to the
address multiplexer of a ``keyq`` chunk, then 2.8 ns to its LUT memory and the key compare of
step A: one ``ahead`` for every chunk, each placed by its own, is the next cut. In every run some
1,500 to 2,000 endpoints take more than 6.67 ns (the slack histograms), among them the groups a
rough delay model over the yosys netlist ranks first: the parser FIFO's pop (``go_merge``, a hold or
a frame passed on) into the FIFO's output register and read pointers and the LUT memories' head
pointers; the merge enables; "Decide" from the lookup's ``hit`` and ``ok`` into ``d_ctx``, ``sel``
and the state; "Act" for a hold (the read-out's and the delivery's context compared with ``sel``)
into ``hold_we``; "Out" (the read-out's last read) into ``rd_ptr`` and the state; the parser's TCP
word sums in stage 2. Still to do for 150 MHz, each a group of paths: the parser FIFO's head with
the next entry's verdicts read ahead (so that a chain's decision and the pop come from registers, as
the read-out's start does now); "Decide"'s choice from registered one-hot terms, and the hit index
as an AND-OR of the one-hot hit vector rather than a priority encoder after the pieces; the hold's
and the read-out's waits from registered compares; more copies of the registers whose loads lie
across the chip (routing is three quarters of every critical path).
"""

from contextlib import contextmanager

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .axil import RegisterBusSignature
from .bram import PRIMITIVES, RegisteredMemory
from .regs import Register
from .stream import be_bytes, beat_signature, check_width

__all__ = ["REGISTERS", "USER_WIDTH", "LroEngine"]

#: Register map (32-bit registers). Counters wrap; writes to read-only registers: SLVERR.
REGISTERS = (
    Register("FRAMES_IN", 0x00, 1, "ro", "frames received"),
    Register("FRAMES_OUT", 0x04, 1, "ro", "frames delivered (a merged frame counts once)"),
    Register("MERGED", 0x08, 1, "ro", "segments merged into a held segment"),
    Register("DROP_OVERSIZE", 0x0C, 1, "ro", "frames dropped: longer than max_frame"),
    Register("TIMEOUT", 0x10, 1, "rw", "cycles a held flow may wait from its first segment; "
                                       "0 (reset) disables the timeout"),
)
USER_WIDTH = 48  # segs[0:16], gso_size[16:32], input frame index[32:48]

_HDR = 128  # header bytes captured per frame: 14 + 2 VLAN tags + 40 (IPv6) + 60 (TCP) < 128
_ETH = 14
_KEY_BITS = 22 * 8 + 2 + 36 * 8 + 32
_FLAG_MASK = 0xFFFFFFFF & ~(0x89 << 16)  # the TCP word at offset 12 but CWR, PSH, FIN
# Wide equality tests are registered in pieces of 8 bits (two LUT levels each) and combined in
# the next cycle.
_PIECE = 8
_END = 0x20 | 0x08 | 0x04 | 0x02 | 0x01  # URG, PSH, RST, SYN, FIN
_CWR = 0x80
_HOLD_COPIES = 4  # copies of the enables of "Hold" (see there)
_STAGE_WE_COPIES = 8  # copies of the staging ring's write enable (see the input stage)


def _byte(value, i):
    return value[8 * i:8 * i + 8]


def _fold(value):
    """Fold a sum of 16-bit words to 16 bits with end-around carries (combinational)."""
    v = value
    while len(v) > 17:
        v = v[:16] + v[16:]
    for _ in range(2):
        v = v[:16] + v[16:]
    return v[:16]


def _tree_sum(terms):
    """Sum of ``terms`` as a balanced tree of adders (combinational)."""
    terms = list(terms)
    if not terms:
        return Const(0, 16)
    while len(terms) > 1:
        terms = [terms[k] + terms[k + 1] if k + 1 < len(terms) else terms[k]
                 for k in range(0, len(terms), 2)]
    return terms[0]


def _word_sum(vec, first, count):
    """Sum of the network-order 16-bit words ``first .. first+count-1`` of a byte vector."""
    return _tree_sum(be_bytes(vec, 2 * k, 2) for k in range(first, first + count))


def _chunks(size, cuts=(), most=256):
    """Bit ranges that cut ``size`` bits at ``cuts`` and into pieces of at most ``most``."""
    edges = sorted({0, size, *cuts})
    out = []
    for lo, hi in zip(edges, edges[1:], strict=False):
        parts = (hi - lo + most - 1) // most
        step = (hi - lo + parts - 1) // parts
        out += [(a, min(a + step, hi)) for a in range(lo, hi, step)]
    return out


def _and_or(onehot, values):
    """The value of ``values`` that the one-hot ``onehot`` selects, as an AND-OR (zero if
    no bit is set; combinational)."""
    terms = [Mux(onehot[k], v, 0) for k, v in enumerate(values)]
    out = terms[0]
    for t in terms[1:]:
        out = out | t
    return out


def _is_tpid(value):
    """A VLAN tag's TPID (802.1Q or 802.1ad)."""
    return (value == 0x8100) | (value == 0x88A8)


def _neg(value):
    return value[:16] ^ 0xFFFF


def _ctx_layout(width_ptr, region_bits):
    return data.StructLayout({
        "valid": 1,
        "region": region_bits,  # the payload region the context fills
        "key": _KEY_BITS,
        "flag_word": 32,
        "ack": 32,
        "opts": 320,
        "ip_word": 17,
        "ip_id": 16,
        "id_next": 16,  # ip_id + count: the IP ID of the next segment with incrementing IDs
        "fixed_id": 1,
        "count": 16,
        "mss": 16,
        "next_seq": 32,
        "held_len": 17,
        "end_flags": 8,
        "flags": 8,
        "v6": 1,
        "l3": 7,
        "l4": 7,
        "addr_sum": 16,
        "ip_base": 16,
        "tcp_base": 16,
        "pay_sum": 32,  # payload sums, added up without folding
        "room": 18,  # bytes the merged frame may still grow by (negative: none)
        "t_first": 32,
    })


class LroEngine(wiring.Component):
    """Coalesce received TCP segments (see the module docstring for the contract).

    Parameters
    ----------
    width : int
        Data width in bits (64, 128, 256 or 512).
    flows : int
        Flow contexts (1 to 64; Linux ``MAX_GRO_SKBS`` = 8).
    buffer_bytes : int
        Bytes of payload memory per flow context (a power of two, 2048 to 131072).
    max_bytes : int or None
        Largest merged frame counted after the Ethernet header (reference ``max_bytes``);
        default and limit ``min(65535, buffer_bytes - 14)``.
    max_frame : int
        Longest frame accepted (64 to 65535, at most ``buffer_bytes``); longer ones are dropped
        and counted.
    spare_regions : int or None
        Payload regions beyond the ``flows`` contexts (0 to 64; default ``flows``): a context
        delivered takes a new segment at once, in a free region, while the read-out of its
        merged frame goes on (each region is ``buffer_bytes``).
    bram : None or str
        Block RAM primitive of the staging ring and the regions
        (:class:`.bram.RegisteredMemory`): ``None`` (simulation) or ``"dp16kd"`` (ECP5
        synthesis: DP16KD blocks with their output registers; same behaviour cycle for cycle).

    Members
    -------
    i : In(beat stream with 1-bit user)
        Received frames; ``user`` bit 0 on a frame flushes every held flow after it.
    o : Out(beat stream with 48-bit user)
        Delivered frames; ``user``: see the module docstring.
    bus : In(RegisterBusSignature(8))
        Registers, see :data:`REGISTERS`.
    """

    def __init__(self, width=64, *, flows=8, buffer_bytes=16384, max_bytes=None,
                 max_frame=9216, spare_regions=None, bram=None):
        self.width = check_width(width)
        if not isinstance(flows, int) or not 1 <= flows <= 64:
            raise ValueError(f"Flow contexts must be 1 to 64, not {flows!r}")
        if (not isinstance(buffer_bytes, int) or buffer_bytes & (buffer_bytes - 1)
                or not 2048 <= buffer_bytes <= 131072):
            raise ValueError(f"Buffer bytes must be a power of two from 2048 to 131072, "
                             f"not {buffer_bytes!r}")
        limit = min(65535, buffer_bytes - _ETH)
        if max_bytes is None:
            max_bytes = limit
        if not isinstance(max_bytes, int) or not 1 <= max_bytes <= limit:
            raise ValueError(f"Max bytes must be 1 to {limit} with {buffer_bytes}-byte "
                             f"buffers, not {max_bytes!r}")
        if not isinstance(max_frame, int) or not 64 <= max_frame <= min(65535, buffer_bytes):
            raise ValueError(f"Max frame must be 64 to {min(65535, buffer_bytes)}, "
                             f"not {max_frame!r}")
        self.flows = flows
        self.buffer_bytes = buffer_bytes
        self.max_bytes = max_bytes
        self.max_frame = max_frame
        if spare_regions is None:
            spare_regions = flows
        if not isinstance(spare_regions, int) or not 0 <= spare_regions <= 64:
            raise ValueError(f"Spare regions must be 0 to 64, not {spare_regions!r}")
        self.spare_regions = spare_regions
        if bram not in PRIMITIVES:
            raise ValueError(f"Block RAM primitive must be one of {PRIMITIVES}, not {bram!r}")
        self.bram = bram
        super().__init__({
            "i": In(beat_signature(width, 1)),
            "o": Out(beat_signature(width, USER_WIDTH)),
            "bus": In(RegisterBusSignature(8)),
        })

    def elaborate(self, platform):
        m = Module()
        W = self.width
        B = W // 8
        LB = (B - 1).bit_length()
        N = self.flows

        # Staging ring: two longest frames, in whole words.
        stage_words = 1 << ((2 * self.max_frame + B - 1) // B - 1).bit_length()
        SP = (stage_words - 1).bit_length()  # address bits
        region_words = self.buffer_bytes // B
        RP = (region_words - 1).bit_length()
        CP = max(1, (N - 1).bit_length())
        RC = N + self.spare_regions
        RCP = max(1, (RC - 1).bit_length())

        # The block RAMs' read data leaves through a register (with ``bram="dp16kd"``, the
        # DP16KD's own output register: a block RAM without it is slow from clock to data):
        # every word read in cycle t is in ``st_q`` / ``rg_q`` in cycle t + 2, and no logic
        # lies between the memory and that register.
        # (Byte enables: each takes a copy of the write enable of its own, see the input stage.)
        m.submodules.staging = staging = RegisteredMemory(W, stage_words, primitive=self.bram,
                                                          granularity=8, hold=False)
        # A second copy of the ring for the read-outs of frames that pass unchanged, so that
        # they never wait for the copies (between them, every word is read once: one read port
        # would be busy in almost every cycle). It is written a cycle later, from registers of
        # its own (no fan-out added to the first ring's write enables); its words are read many
        # cycles after that.
        m.submodules.staging_out = staging_out = RegisteredMemory(W, stage_words,
                                                                  primitive=self.bram,
                                                                  granularity=8, hold=False)
        m.d.sync += [staging_out.w_addr.eq(staging.w_addr), staging_out.w_data.eq(staging.w_data),
                     staging_out.w_en.eq(staging.w_en)]
        # The regions in two banks: even words and odd words.
        banks = [RegisteredMemory(W, RC * region_words // 2, primitive=self.bram, granularity=8,
                                  hold=False) for _ in range(2)]
        m.submodules.region0, m.submodules.region1 = banks

        def bank_addr(word, index):
            """Address in its bank of region word ``word`` of region ``index``."""
            return Cat(word[1:RP], index) if RC > 1 else word[1:RP]

        st_q = staging.r_data
        rg_q = [bank.r_data for bank in banks]

        now = Signal(32)
        m.d.sync += now.eq(now + 1)
        timeout = Signal(32)
        cnt = {r.name: Signal(32, name=f"cnt_{r.name.lower()}") for r in REGISTERS
               if r.access == "ro"}

        # ------------------------------------------------------------------ input stage
        # The beat is registered (``s1``), then its byte count and word sums are reduced over
        # ``sum_stages`` registered stages (two adder levels each) before it is written.
        sum_stages = max(1, ((B // 2 - 1).bit_length() + 1) // 2)
        margin = sum_stages + 3  # beats that may still arrive once ``admit`` falls
        # ``et``: the EtherType verdicts of the header (see ``et_of``).
        desc_layout = data.StructLayout({
            "hdr": 8 * _HDR, "len": 16, "total": 32, "start": SP + 1, "eop": 1, "idx": 16,
            "et": 8,
        })
        desc_depth = 16
        desc_w_data = Signal(desc_layout.size)
        # The descriptor FIFO: a 16-entry LUT memory read combinationally into ``pcur``, which
        # loads in every cycle (no enable on its ~1,100 flip-flops). The memory is cut into
        # chunks, each read with its own copy of the read pointer (a counter of its own, so
        # that synthesis keeps the copies apart), so that no pointer drives more than about 64
        # LUT memory cells; the EtherType verdicts have a chunk of their own.
        d_w_en = Signal()
        d_level = Signal(range(desc_depth + 1))
        d_w_ptr = Signal(4)
        d_r_en = Signal()
        desc_r = Signal(desc_layout)
        et_at = desc_layout["et"].offset
        d_bounds = _chunks(desc_layout.size, (et_at, et_at + 8))
        for n, (lo, hi) in enumerate(d_bounds):
            mem = Memory(shape=hi - lo, depth=desc_depth, init=[])
            m.submodules[f"desc{n}"] = mem
            w_port = mem.write_port()
            r_port = mem.read_port(domain="comb")
            r_ptr = Signal(4, name=f"desc_rptr{n}")
            m.d.sync += r_ptr.eq(r_ptr + d_r_en)
            m.d.comb += [w_port.addr.eq(d_w_ptr), w_port.en.eq(d_w_en),
                         w_port.data.eq(desc_w_data[lo:hi]), r_port.addr.eq(r_ptr),
                         desc_r.as_value()[lo:hi].eq(r_port.data)]
        m.d.sync += [d_w_ptr.eq(d_w_ptr + d_w_en), d_level.eq(d_level + d_w_en - d_r_en)]

        wr_start = Signal(SP + 1)  # first word of the frame being received
        wr_cur = Signal(SP + 1)  # word the next beat goes to (wr_start + beats written)
        rd_ptr = Signal(SP + 1)  # first word still needed by the merge engine and the copies
        # Frames queued to pass unchanged (``pins`` of them, not yet read out) keep their words
        # from ``pin_head`` on (at or before the oldest one's first word).
        rq_depth = 16  # read-outs queued (see ``rq``)
        pins = Signal(range(rq_depth + 2))
        pin_head = Signal(SP + 1)
        admit = Signal()
        beat_shape = beat_signature(W, 1).members["payload"].shape
        s1 = Signal(beat_shape)
        s1_valid = Signal()
        # The header chunk the next beat fills, one-hot (zero past the header): a shift
        # register rather than a beat count compared with each chunk's index, so that each
        # chunk's multiplexer into ``capture`` and the descriptor FIFO is selected by a
        # flip-flop.
        cap_at = Signal(max(1, _HDR // B), init=1)
        off = Signal(20)
        room = Signal(20, init=self.max_frame)  # max_frame - off
        # ``room`` is at least ``2 B`` (no beat can pass it), kept in a register so that the
        # oversize test compares a few bits of ``room`` (``nbytes`` is at most ``B``).
        room_lo = LB + 1
        room_big = Signal(init=self.max_frame >= 1 << room_lo)
        dropping = Signal()
        acc = Signal(32)
        capture = Signal(8 * _HDR)
        in_idx = Signal(16)

        fire = self.i.valid & self.i.ready
        m.d.comb += self.i.ready.eq(admit)
        m.d.sync += s1_valid.eq(fire)
        with m.If(fire):
            m.d.sync += s1.eq(self.i.payload)
        # The EtherType verdicts (``et_of``) are worked out on the beat as it enters the sum
        # stages and travel with it; for bytes 12 + 4 t, 13 + 4 t (the EtherType or TPID after
        # ``t`` tags) they are taken from the beat that carries them, like the header bytes,
        # so that the parser's entry decides the tags and the family from registered bits.
        et_pos = [12 + 4 * t for t in range(3)]

        def et_of(beat_data):
            """TPID after 0 and 1 tags, IPv6 and IPv4 EtherTypes after 0, 1 and 2 tags (bits of
            the lanes of bytes 12 + 4 t in a beat)."""
            v = [be_bytes(beat_data, p % B, 2) for p in et_pos]
            return Cat(*(_is_tpid(v[t]) for t in range(2)), *(v[t] == 0x86DD for t in range(3)),
                       *(v[t] == 0x0800 for t in range(3)))

        et_bit_pos = [0, 1, 0, 1, 2, 0, 1, 2]  # the ``t`` of each bit of ``et_of``
        masked = Cat(*(Mux(s1.keep[k], _byte(s1.data, k), 0) for k in range(B)))
        terms = [be_bytes(masked, 2 * k, 2) for k in range(B // 2)]
        pipe_beat, pipe_valid = s1, s1_valid
        pipe_nb = None
        pipe_et = et_of(s1.data)
        for n in range(sum_stages):
            groups = [_tree_sum(terms[k:k + 4]) for k in range(0, len(terms), 4)]
            regs_ = [Signal(16 + LB, name=f"in_sum{n}_{k}") for k in range(len(groups))]
            beat_n = Signal(beat_shape, name=f"in_beat{n}")
            valid_n = Signal(name=f"in_valid{n}")
            nb_n = Signal(range(B + 1), name=f"in_nbytes{n}")
            et_n = Signal(8, name=f"in_et{n}")
            m.d.sync += [*(r.eq(g) for r, g in zip(regs_, groups, strict=True)),
                         beat_n.eq(pipe_beat), valid_n.eq(pipe_valid), et_n.eq(pipe_et),
                         nb_n.eq(sum(s1.keep[k] for k in range(B)) if pipe_nb is None
                                 else pipe_nb)]
            terms, pipe_beat, pipe_valid, pipe_nb, pipe_et = regs_, beat_n, valid_n, nb_n, et_n
        s2, s2_valid, nbytes, s2_et = pipe_beat, pipe_valid, pipe_nb, pipe_et
        s2_sum = Signal(16 + LB)
        m.d.comb += s2_sum.eq(_tree_sum(terms))

        used = Signal(SP + 1)
        m.d.comb += used.eq(wr_cur - rd_ptr)
        pinned = Signal(SP + 1)
        m.d.comb += pinned.eq(wr_cur - pin_head)
        m.d.sync += admit.eq((used < stage_words - margin) & (d_level < desc_depth - margin)
                             & ((pins == 0) | (pinned < stage_words - margin)))

        over_now = Signal()  # this beat passes ``max_frame``
        m.d.comb += over_now.eq(~room_big & (nbytes > room[:room_lo]))
        over = Signal()
        m.d.comb += over.eq(dropping | over_now)
        hdr_now = Signal(8 * _HDR)
        chunks = []
        for c in range(max(1, _HDR // B)):
            lo, hi = c * B * 8, min((c + 1) * B, _HDR) * 8
            chunks.append(Mux(cap_at[c], s2.data[:hi - lo], capture[lo:hi]))
        m.d.comb += hdr_now.eq(Cat(*chunks))
        # (``capture_et`` follows ``capture`` as ``et_now`` follows ``hdr_now``: each bit is the
        # verdict of the bytes captured in the same place.)
        capture_et = Signal(8)
        et_now = Signal(8)
        m.d.comb += et_now.eq(Cat(*(Mux(cap_at[et_pos[t] // B], s2_et[k], capture_et[k])
                                    for k, t in enumerate(et_bit_pos))))
        m.d.sync += capture_et.eq(et_now)
        d_in = Signal(desc_layout)
        m.d.comb += [
            d_in.hdr.eq(hdr_now),
            d_in.et.eq(et_now),
            d_in.len.eq(Mux(over, 0, off + nbytes)),  # a dropped frame: no bytes, still ends a poll
            d_in.total.eq(acc + s2_sum),
            d_in.start.eq(wr_start),
            d_in.eop.eq(s2.user[0]),
            d_in.idx.eq(in_idx),
            desc_w_data.eq(d_in.as_value()),
        ]
        # The beat is written into the staging ring a cycle later, from registers: the write
        # enable in ``_STAGE_WE_COPIES`` copies, each for a group of byte lanes (the blocks of a
        # few bytes), so that each is placed near its blocks (the enable reaches 16 DP16KD at 64
        # bit, across the chip). Each copy is worked out from its own copy of ``dropping``,
        # which also holds itself, so that synthesis keeps the copies apart (it merges
        # registers of equal inputs). No reader looks at a word in the cycle after its beat:
        # the frame's descriptor has the parser's stages before it.
        copies = min(B, _STAGE_WE_COPIES)
        st_we = Signal(copies)
        st_drop = Signal(copies)
        st_w_addr = Signal(SP)
        st_w_data = Signal(W)
        m.d.sync += [st_w_addr.eq(wr_cur[:SP]), st_w_data.eq(s2.data),
                     st_we.eq(Cat(*(s2_valid & ~st_drop[k] & ~over_now for k in range(copies))))]
        with m.If(s2_valid):
            m.d.sync += st_drop.eq(Mux(s2.last, 0,
                                       Cat(*(st_drop[k] | over_now for k in range(copies)))))
        m.d.comb += [
            staging.w_addr.eq(st_w_addr),
            staging.w_data.eq(st_w_data),
            staging.w_en.eq(Cat(*(st_we[k * copies // B] for k in range(B)))),
        ]
        # (``capture`` takes ``hdr_now`` in every cycle: without a beat, it writes the chunk of
        # the beat still to come, which that beat overwrites, so it needs no enable.)
        m.d.sync += capture.eq(hdr_now)
        room_next = Signal(20)
        m.d.comb += room_next.eq(room - nbytes)
        with m.If(s2_valid):
            with m.If(s2.last):
                m.d.sync += [off.eq(0), room.eq(self.max_frame), cap_at.eq(1),
                             room_big.eq(self.max_frame >= 1 << room_lo),
                             dropping.eq(0), acc.eq(0),
                             in_idx.eq(in_idx + 1), cnt["FRAMES_IN"].eq(cnt["FRAMES_IN"] + 1)]
                m.d.comb += d_w_en.eq(1)
                with m.If(over):
                    m.d.sync += wr_cur.eq(wr_start)
                with m.Else():
                    m.d.sync += [wr_start.eq(wr_cur + 1), wr_cur.eq(wr_cur + 1)]
            with m.Else():
                m.d.sync += [off.eq(off + nbytes), room.eq(room_next), dropping.eq(over),
                             room_big.eq(room_next[room_lo:] != 0),
                             acc.eq(acc + s2_sum)]
                # (The header of a frame being dropped is of no use: ``cap_at`` need not
                # wait for ``over``.)
                m.d.sync += cap_at.eq(Cat(Const(0, 1), cap_at[:-1]))
                with m.If(over):
                    m.d.sync += wr_cur.eq(wr_start)
                with m.Else():
                    m.d.sync += wr_cur.eq(wr_cur + 1)
        # (A drop is counted a cycle later, from a register: the counter's 32 enables do not
        # wait for ``over``.)
        dropped = Signal()
        m.d.sync += [dropped.eq(s2_valid & s2.last & over),
                     cnt["DROP_OVERSIZE"].eq(cnt["DROP_OVERSIZE"] + dropped)]

        # ------------------------------------------------------------------ parse stages
        pcur = Signal(desc_layout)  # the frame the parser works on
        h = pcur.hdr
        # ``end``: one past the frame's last staging word.
        # ``words`` and ``keep``: the frame's staging words and the lanes of its last one.
        cur_layout = data.StructLayout({"len": 16, "start": SP + 1, "end": SP + 1, "eop": 1,
                                        "idx": 16, "words": 16, "keep": B})
        cur = Signal(cur_layout)  # frame the merge engine works on
        size = cur.len

        # Parser: a pipeline of seven stages from a descriptor to the fields, sums and verdicts
        # the merge engine needs, which wait in a FIFO (``pq``) until the engine is done with
        # the frame before. The pipeline never stalls: a descriptor enters it only while the
        # FIFO has room for everything in flight. Sums stay wide until their last stage and are
        # negated as ``C - sum`` (``C`` a multiple of 0xFFFF), so that each stage has at most
        # three adders in series.
        f_fields = (
            ("seg", 1), ("key_valid", 1), ("never_hold", 1), ("v6", 1), ("l3", 7), ("l4", 7),
            ("pay_off", 7), ("pay_len", 17), ("flags", 8), ("df", 1), ("addr_sum", 16),
            ("ip_base", 16), ("tcp_base", 16), ("pay_sum", 16),
            # For a merge: the staging word of the payload and the staging words it spans.
            ("c_src", SP + 1), ("src_words", 17),
            # Compared with the frame before (see "Chain"): it may follow it in its flow with
            # an IP ID that fits the context (``pair_fix``: the context has fixed IDs;
            # ``pair_held``: it holds that one frame; ``pair_inc``: else); its IP ID equals
            # that frame's; its payload is shorter.
            ("pair_fix", 1), ("pair_held", 1), ("pair_inc", 1), ("id_same", 1), ("lt_prev", 1),
            # Its flow key equals that frame's (so it may hit the context that frame went to).
            ("same_key", 1),
            # Verdicts the engine takes as they are: a payload; URG, PSH, RST, SYN or FIN
            # (the segment ends its flow's merge); the segment may be held.
            ("pl_nz", 1), ("ends", 1), ("holdable", 1),
            # The frame and its payload again fit into a merged frame (``max_bytes``).
            ("fits2", 1))
        pq_layout = data.StructLayout({**dict(f_fields), "meta": cur_layout})
        # The FIFO carries the fields the engine decides with; the wide ones it only loads
        # into registers (offsets, sums, the frame's staging words) wait in a LUT memory
        # (``pqw``, written as the frame enters the FIFO, read at its head like ``keyq``), so
        # that taking a frame from the FIFO enables few flip-flops.
        wide = ("l3", "l4", "pay_off", "addr_sum", "ip_base", "tcp_base", "pay_sum", "c_src",
                "src_words")
        pqn_layout = data.StructLayout({k: w for k, w in f_fields if k not in wide})
        pqw_layout = data.StructLayout({**{k: w for k, w in f_fields if k in wide},
                                        "meta": cur_layout})
        pq_depth = 16
        m.submodules.pq = pq = SyncFIFOBuffered(width=pqn_layout.size, depth=pq_depth)
        pq_out = data.View(pqn_layout, pq.r_data)
        pqw_out = Signal(pqw_layout)
        fn = {name: (pqw_out if name in wide else pq_out)[name] for name, _ in f_fields}
        nxt = pqw_out.meta
        slot = Signal()  # the FIFO holds a parsed frame for the engine
        m.d.comb += slot.eq(pq.r_rdy)
        pop = Signal()  # the engine is done with the frame's fields
        m.d.comb += pq.r_en.eq(pop)
        # The lookup reads the FIFO's head (``ahead`` clear) or the frame after it (set: the
        # engine works on the head, see "Lookahead" at the merge engine); ``ahead_nx`` is its
        # next value. The lookup's LUT memories are read at the head's pointer or at a second
        # pointer one entry on, both counting the frames popped, chosen by the register
        # ``ahead``: the engine's late decisions reach the one flip-flop ``ahead``, not the
        # pointers (they stepped by ``pop + ahead_nx - ahead``, an adder after those
        # decisions: the critical path at rtl 6392181, 11.9 ns).
        ahead = Signal()
        ahead_nx = Signal()
        m.d.comb += ahead_nx.eq(ahead)
        m.d.sync += ahead.eq(ahead_nx)

        def lookup_addr(name):
            """The read address of a LUT memory the lookup reads (the FIFO's head or, with
            ``ahead``, the entry after it), from pointers of its own."""
            ptr0 = Signal(4, name=f"{name}_ptr0")
            ptr1 = Signal(4, name=f"{name}_ptr1", init=1)
            m.d.sync += [ptr0.eq(ptr0 + (pop & slot)), ptr1.eq(ptr1 + (pop & slot))]
            return Mux(ahead, ptr1, ptr0)
        stages = 8
        inflight = Signal(range(pq_depth + 1))  # frames in the pipeline and the FIFO
        enter = Signal()
        m.d.comb += [enter.eq((d_level != 0) & (inflight < pq_depth)), d_r_en.eq(enter)]
        m.d.sync += inflight.eq(inflight + enter - (pop & slot))
        valid_at = [Signal(name=f"pv{k}") for k in range(stages)]
        meta_at = [Signal(cur_layout, name=f"pmeta{k}") for k in range(stages)]
        m.d.sync += [pcur.eq(desc_r), valid_at[0].eq(enter)]
        view = desc_r

        # The VLAN tags and the EtherType behind them are decided as the descriptor enters
        # (registered with ``pcur``), so that the first stage only selects by them.
        ntags = Signal(2)
        is6_et = Signal()
        is4_et = Signal()
        # The header windows of the first stage are selected by one-hot registers (an AND-OR
        # of each window bit with its select, no decoding of ``ntags`` before some 800
        # multiplexers): ``tag_oh``, the tag count; ``win_oh``, the tag count and the family
        # (bit ``t + 3 * v6``), which place the TCP header.
        tag_oh = Signal(3)
        win_oh = Signal(6)
        # (From the verdicts the input stage worked out: a sum of terms of registered bits.)
        tp = [view.et[0], view.et[1]]
        at = [~tp[0], tp[0] & ~tp[1], tp[0] & tp[1]]  # the EtherType after 0, 1, 2 tags
        et6 = [view.et[2 + t] for t in range(3)]
        et4 = [view.et[5 + t] for t in range(3)]
        m.d.sync += [ntags.eq(Mux(tp[0], Mux(tp[1], 2, 1), 0)),
                     is6_et.eq(Cat(*(at[t] & et6[t] for t in range(3))).any()),
                     is4_et.eq(Cat(*(at[t] & et4[t] for t in range(3))).any()),
                     tag_oh.eq(Cat(*at)),
                     win_oh.eq(Cat(*(at[t] & ~et6[t] for t in range(3)),
                                   *(at[t] & et6[t] for t in range(3))))]
        m.d.sync += [meta_at[0].len.eq(view.len), meta_at[0].start.eq(view.start),
                     meta_at[0].eop.eq(view.eop), meta_at[0].idx.eq(view.idx)]
        for k in range(1, stages):
            m.d.sync += [valid_at[k].eq(valid_at[k - 1]), meta_at[k].eq(meta_at[k - 1])]
        # The frame's staging words (in stage 1), then its end (in stage 2).
        m.d.sync += [meta_at[1].words.eq((meta_at[0].len + B - 1) >> LB),
                     meta_at[1].keep.eq(((2 << (meta_at[0].len - 1)[:LB]) - 1) if LB else 1),
                     meta_at[2].end.eq(meta_at[1].start + meta_at[1].words)]

        def stage(k, pairs):
            """Registers of stage ``k``: (signal, value) pairs."""
            m.d.sync += [sig.eq(value) for sig, value in pairs]

        def regs(prefix, **widths):
            return {name: Signal(w, name=f"{prefix}_{name}") for name, w in widths.items()}

        # S1: layer 2, the IP header and the TCP header at their offsets.
        ip_at = [h[8 * (14 + 4 * t):8 * (14 + 4 * t + 40)] for t in range(3)]
        ipv = Signal(8 * 40)
        m.d.comb += ipv.eq(_and_or(tag_oh, ip_at))
        l3c = Signal(7)
        m.d.comb += l3c.eq(14 + 4 * ntags)
        l4any = Signal(7)
        m.d.comb += l4any.eq(l3c + Mux(is6_et, 40, Cat(Const(0, 2), ipv[0:4])))
        tcp_sel = Signal(8 * 60)
        tcp_at = []
        for v6 in (0, 1):
            for t in range(3):
                lo = 14 + 4 * t + (40 if v6 else 20)
                tcp_at.append(h[8 * lo:8 * min(lo + 60, _HDR)])
        m.d.comb += tcp_sel.eq(_and_or(win_oh, tcp_at))
        # Layer 2 ends at byte 14 + 4 * ntags: bytes 14 to 17 are a tag's with one or two,
        # bytes 18 to 21 with two.
        eth_keep = [Const(1, 1)] * 14 + [~tag_oh[0]] * 4 + [tag_oh[2]] * 4
        s1 = regs("s1", ntags=2, is6=1, is4=1, ip=320, tcp=480, l4any=7, eth=176, total=32)
        stage(1, [(s1["ntags"], ntags), (s1["is6"], is6_et), (s1["is4"], is4_et),
                  (s1["ip"], ipv), (s1["tcp"], tcp_sel),
                  (s1["l4any"], l4any), (s1["total"], pcur.total),
                  (s1["eth"], Cat(*(Mux(eth_keep[k], _byte(h, k), 0) for k in range(22))))])

        # S2: header fields; partial sums of at most eight words.
        ip, tcp = s1["ip"], s1["tcp"]
        is6 = s1["is6"]
        is4 = ~is6
        doff = tcp[8 * 12 + 4:8 * 12 + 8]

        def masked_groups(count, word, keep, size=4):
            return [_tree_sum(Mux(keep(k), word(k), 0)
                              for k in range(lo, min(lo + size, count)))
                    for lo in range(0, count, size)]

        # The ports behind an IPv4 header of ``ihl`` words lie ``4 * (ihl - 5)`` bytes into
        # the TCP window (taken at 20 bytes); IPv6 and shorter IPv4 headers: at its start
        # (a header under 5 words gives no key).
        ports = Signal(32)
        m.d.comb += ports.eq(tcp[0:32])
        with m.If(is4):
            with m.Switch(ip[0:4]):
                for ihl in range(6, 16):
                    with m.Case(ihl):
                        lo = 32 * (ihl - 5)
                        m.d.comb += ports.eq(tcp[lo:lo + 32])

        ip_words = masked_groups(20, lambda k: be_bytes(ip, 2 * k, 2),
                                 lambda k: is6 | (k < 10))
        addr_words = masked_groups(20, lambda k: be_bytes(ip, 2 * k, 2),
                                   lambda k: Mux(is6, k >= 4, (k >= 6) & (k < 10)))
        # (The TCP words in pairs: their mask is a comparison with the data offset, so one
        # adder after it.)
        tcp_words = masked_groups(30, lambda k: be_bytes(tcp, 2 * k, 2),
                                  lambda k: k < Cat(Const(0, 1), doff), size=2)
        eth_words = masked_groups(11, lambda k: be_bytes(s1["eth"], 2 * k, 2), lambda k: 1)
        label = Cat(ip[0:8] & 0xF0, ip[8:16] & 0x0F, ip[16:32])
        ip_key = Mux(is6, Cat(label, ip[8 * 8:8 * 40]), Cat(ip[8 * 12:8 * 20], Const(0, 8 * 28)))
        s2 = regs("s2", ihl=4, ver=4, proto=8, frag=16, ip_len=16, ip_csum=16, ip_id=16,
                  doff=4, tcp_csum=16, l3=7, is6=1, et_ip=1, l4any=7, total=17)
        sg = {f"ip{k}": Signal(18, name=f"s2_ip{k}") for k in range(5)}
        sg.update({f"addr{k}": Signal(18, name=f"s2_addr{k}") for k in range(5)})
        sg.update({f"tcp{k}": Signal(17, name=f"s2_tcp{k}") for k in range(15)})
        sg.update({f"eth{k}": Signal(18, name=f"s2_eth{k}") for k in range(3)})
        stage(2, [
            *((sg[f"ip{k}"], v) for k, v in enumerate(ip_words)),
            *((sg[f"addr{k}"], v) for k, v in enumerate(addr_words)),
            *((sg[f"tcp{k}"], v) for k, v in enumerate(tcp_words)),
            *((sg[f"eth{k}"], v) for k, v in enumerate(eth_words)),
            (s2["ihl"], ip[0:4]), (s2["ver"], ip[4:8]),
            (s2["proto"], Mux(is4, _byte(ip, 9), _byte(ip, 6))),
            (s2["frag"], be_bytes(ip, 6, 2)),
            (s2["ip_len"], Mux(is4, be_bytes(ip, 2, 2), be_bytes(ip, 4, 2))),
            (s2["ip_csum"], be_bytes(ip, 10, 2)),
            (s2["doff"], doff), (s2["tcp_csum"], be_bytes(tcp, 16, 2)),
            (s2["l3"], 14 + 4 * s1["ntags"]), (s2["is6"], is6),
            (s2["et_ip"], s1["is4"] | is6), (s2["l4any"], s1["l4any"]),
            (s2["total"], s1["total"][:16] + s1["total"][16:]),
        ])

        # The flow key, the options and the header words a merge compares are not needed
        # before stage 6: they wait in a small LUT memory (``keyq``, one entry per frame in
        # flight, written now) instead of flip-flops of every stage, and stay there until the
        # engine is done with the frame: stage 6 reads them to compare the frame with the one
        # before, the engine reads them at the FIFO's head by the entry's index, which the FIFO
        # carries instead (so that taking a frame from the FIFO enables a few hundred
        # flip-flops, not a thousand). An entry lives from stage 1 to the frame's pop: at most
        # ``pq_depth`` frames are in flight, so sixteen entries written in turn are enough.
        kv = {
            "ip_id": be_bytes(ip, 4, 2),
            "ip_word": Mux(is4, Cat(_byte(ip, 1), _byte(ip, 8), ip[8 * 6 + 6]),
                           Cat(ip[12:16], ip[0:4], _byte(ip, 7), Const(0, 1))),
            "seq": be_bytes(tcp, 4, 4), "ack": be_bytes(tcp, 8, 4),
            "flag_word": be_bytes(tcp, 12, 4),
            "opts": Cat(*(Mux(20 + k < Cat(Const(0, 2), doff), _byte(tcp, 20 + k), 0)
                          for k in range(40))),
            "key": Cat(s1["eth"], s1["ntags"], ip_key, ports),
        }
        kq_layout = data.StructLayout({"ip_id": 16, "ip_word": 17, "seq": 32, "ack": 32,
                                       "flag_word": 32, "opts": 320, "key": _KEY_BITS})
        # The memory is cut into chunks of at most 256 bits, each with its own two read
        # pointers (stage 6 and the FIFO's head), counters of their own rather than copies of
        # one register (synthesis would merge those): an entry is taken in turn by every frame
        # at stage 1 and frames never pass each other, so the frame at stage 6 and the one at
        # the FIFO's head hold the entries that the frames through stage 6 and the frames
        # popped count up to. Each pointer drives about 64 LUT memory cells, not 240.
        kq_w_data = Signal(kq_layout)
        kq_r_data = Signal(kq_layout)  # the entry of the frame at stage 6
        kq_h_data = Signal(kq_layout)  # the entry of the frame at the FIFO's head
        kq_p_data = Signal(kq_layout)  # the entry of the frame before the one at stage 6
        kq_next = Signal(4)
        m.d.comb += [getattr(kq_w_data, k).eq(v) for k, v in kv.items()]
        m.d.sync += kq_next.eq(kq_next + valid_at[1])
        for n, (lo, hi) in enumerate(_chunks(kq_layout.size)):
            mem = Memory(shape=hi - lo, depth=16, init=[])
            m.submodules[f"keyq{n}"] = mem
            w_port = mem.write_port()
            m.d.comb += [w_port.addr.eq(kq_next), w_port.en.eq(valid_at[1]),
                         w_port.data.eq(kq_w_data.as_value()[lo:hi])]
            for tag, step, out, first in (("s6", valid_at[6], kq_r_data, 0),
                                          ("prev", valid_at[6], kq_p_data, 15),
                                          ("head", None, kq_h_data, 0)):
                r_port = mem.read_port(domain="comb")
                if step is None:
                    m.d.comb += r_port.addr.eq(lookup_addr(f"kq_head{n}"))
                else:
                    r_ptr = Signal(4, name=f"kq_{tag}_ptr{n}", init=first)
                    m.d.sync += r_ptr.eq(r_ptr + step)
                    m.d.comb += r_port.addr.eq(r_ptr)
                m.d.comb += out.as_value()[lo:hi].eq(r_port.data)
        # (``kq_h_data`` is the lookup's entry: the FIFO's head whenever "Hold" reads it.)
        fn.update({k: getattr(kq_h_data, k) for k in kv})

        # S2b: sums of up to four groups; the header offsets the checks compare with.
        s2_fields = s2
        s2 = {k: Signal.like(v, name=f"s2b_{k}") for k, v in s2_fields.items()}
        stage(2, [(s2[k], s2_fields[k]) for k in s2])
        l4_of = Mux(s2_fields["is6"], 40, 20)
        hdr_of = Cat(Const(0, 2), s2_fields["doff"])
        sb = regs("s2b", ip0=20, ip1=20, addr0=20, addr1=20, tcp0=19, tcp1=19, tcp2=19,
                  tcp3=19, eth=20,
                  l4=7, l3_20=8, l3_40=8, l4_4=8, l4_20=8, l4any_4=8, pay_off=8)
        stage(2, [
            (sb["ip0"], sg["ip0"] + sg["ip1"] + sg["ip2"]), (sb["ip1"], sg["ip3"] + sg["ip4"]),
            (sb["addr0"], sg["addr0"] + sg["addr1"] + sg["addr2"]),
            (sb["addr1"], sg["addr3"] + sg["addr4"]),
            *((sb[f"tcp{k}"], _tree_sum(sg[f"tcp{j}"] for j in range(4 * k, min(4 * k + 4, 15))))
              for k in range(4)),
            (sb["eth"], sg["eth0"] + sg["eth1"] + sg["eth2"]),
            (sb["l4"], s2_fields["l3"] + l4_of),
            (sb["l3_20"], s2_fields["l3"] + 20), (sb["l3_40"], s2_fields["l3"] + 40),
            (sb["l4_4"], s2_fields["l3"] + Mux(s2_fields["is6"], 44, 24)),
            (sb["l4_20"], s2_fields["l3"] + Mux(s2_fields["is6"], 60, 40)),
            (sb["l4any_4"], s2_fields["l4any"] + 4),
            (sb["pay_off"], s2_fields["l3"] + l4_of + hdr_of),
        ])

        # S3: whole sums (wide); the checks that need no sum.
        psize = meta_at[3].len
        l3 = s2["l3"]
        l4 = sb["l4"]
        base4 = (~s2["is6"] & s2["et_ip"] & (psize >= sb["l3_20"]) & (s2["ver"] == 4)
                 & (s2["proto"] == 6))
        base6 = s2["is6"] & (psize >= sb["l3_40"]) & (s2["ver"] == 6) & (s2["proto"] == 6)
        s3 = regs("s3", ip=21, addr=21, tcp=21, eth=20, base4=1, base6=1, elig4=1,
                  key_valid=1, never=1, size_ok=1, l4=7, pay_off=7, pay_len=17, tcp_len=16)
        stage(3, [
            (s3["ip"], sb["ip0"] + sb["ip1"]),
            (s3["addr"], sb["addr0"] + sb["addr1"]),
            (s3["tcp"], (sb["tcp0"] + sb["tcp1"]) + (sb["tcp2"] + sb["tcp3"])),
            (s3["eth"], sb["eth"]),
            (s3["base4"], base4), (s3["base6"], base6),
            (s3["elig4"], base4 & (s2["ihl"] == 5) & ((s2["frag"] & 0x3FFF) == 0)),
            (s3["key_valid"], (base4 & (s2["ihl"] >= 5) & ((s2["frag"] & 0x1FFF) == 0)
                               & (psize >= sb["l4any_4"])) | (base6 & (psize >= sb["l4_4"]))),
            (s3["never"], Mux(s2["is6"], s2["ip_len"] != psize - l4,
                              (s2["ip_len"] != psize - l3) | s2["frag"][15])),
            (s3["size_ok"], (psize >= sb["l4_20"]) & (s2["doff"] >= 5)
             & (psize >= sb["pay_off"])),
            (s3["l4"], l4), (s3["pay_off"], sb["pay_off"]),
            (s3["pay_len"], psize - sb["pay_off"]), (s3["tcp_len"], psize - l4),
        ])
        s2_late = regs("s3x", total=17, ip_len=16, ip_csum=16, tcp_csum=16)
        stage(3, [(s2_late[k], s2[k]) for k in s2_late])

        # S4: the TCP segment's sum with the pseudo-header parts; header checksum bases.
        wide = 0xFFFF * 32  # a multiple of 0xFFFF above every wide sum here

        def minus(value):
            return (Const(wide, 22) - value)[:22]

        s4 = regs("s4", tseg=24, ip_base=19, tcp_base=18, ip1=17, addr1=17, tcp=21)
        stage(4, [
            (s4["tseg"], s2_late["total"] + minus(s3["eth"]) + minus(s3["ip"])),
            (s4["ip_base"], s3["ip"][:16] + s3["ip"][16:] + (0xFFFF - s2_late["ip_len"])
             + (0xFFFF - s2_late["ip_csum"])),
            (s4["tcp_base"], s3["tcp"][:16] + s3["tcp"][16:] + (0xFFFF - s2_late["tcp_csum"])),
            (s4["ip1"], s3["ip"][:16] + s3["ip"][16:]),
            (s4["addr1"], s3["addr"][:16] + s3["addr"][16:]),
            (s4["tcp"], s3["tcp"]),
        ])
        s3_late = {k: Signal.like(v, name=f"s4x_{k}") for k, v in s3.items()
                   if k not in ("ip", "addr", "tcp", "eth")}
        stage(4, [(s3_late[k], s3[k]) for k in s3_late])

        # S5: checksum test sum and payload sum (wide); header checksum test; fold steps.
        s5 = regs("s5", verify=25, pay=25, ip_ok=1, ip_base=17, tcp_base=17, addr=17)
        # ``ip1`` is a 16-bit sum plus at most 31: it folds to 0xFFFF only if it is 0xFFFF.
        stage(5, [
            (s5["verify"], s4["tseg"] + s4["addr1"] + (s3_late["tcp_len"] + 6)),
            (s5["pay"], s4["tseg"] + minus(s4["tcp"])),
            (s5["ip_ok"], s4["ip1"] == 0xFFFF),
            (s5["ip_base"], s4["ip_base"][:16] + s4["ip_base"][16:]),
            (s5["tcp_base"], s4["tcp_base"][:16] + s4["tcp_base"][16:]),
            (s5["addr"], s4["addr1"][:16] + s4["addr1"][16]),
        ])
        s4_late = {k: Signal.like(v, name=f"s5x_{k}") for k, v in s3_late.items()}
        stage(5, [(s4_late[k], s3_late[k]) for k in s4_late])

        # S6: fold steps.
        def finish(v17):
            """The last fold of a 17-bit sum that is a 16-bit sum plus at most 0x1FF: its
            carry, added back, cannot carry again."""
            return (v17[:16] + v17[16])[:16]

        s6 = regs("s6", verify=17, pay=17, ip_ok=1, ip_base=16, tcp_base=16, addr=16)
        stage(6, [
            (s6["verify"], s5["verify"][:16] + s5["verify"][16:]),
            (s6["pay"], s5["pay"][:16] + s5["pay"][16:]),
            (s6["ip_ok"], s5["ip_ok"]),
            (s6["ip_base"], finish(s5["ip_base"])),
            (s6["tcp_base"], finish(s5["tcp_base"])),
            (s6["addr"], s5["addr"][:16]),
        ])
        s5_late = {k: Signal.like(v, name=f"s6x_{k}") for k, v in s4_late.items()}
        stage(6, [(s5_late[k], s4_late[k]) for k in s5_late])

        # Into the slot: verdicts, and the stage-2 fields copied along the pipeline.
        s2_hold = {}
        s2_at6 = {}
        for k in ("frag", "l3", "is6"):
            chain = s2[k]
            for n in range(4, 8):
                nxt_sig = Signal.like(s2[k], name=f"s{n}c_{k}")
                stage(n, [(nxt_sig, chain)])
                chain = nxt_sig
                if n == 6:
                    s2_at6[k] = nxt_sig
            s2_hold[k] = chain
        for k in kv:
            s2_at6[k] = getattr(kq_r_data, k)
        # Of those, stage 7 needs the TCP flags only.
        s7_flags = Signal(8)
        stage(7, [(s7_flags, s2_at6["flag_word"][16:24])])

        # Stage 6 to 7: the frame compared with the frame before it (registered in ``last``
        # when it passed): flow key and the header words a merge needs equal (8-bit pieces),
        # sequence number, IP ID and payload length.
        def hdr_of6(f):
            return Cat(f["flag_word"] & _FLAG_MASK, f["ack"], f["opts"], f["ip_word"])

        pl6 = s4_late["pay_len"]
        # (The frame before's flow key and header words are its ``keyq`` entry, still there:
        # the frames behind it take the entries after it. At reset, the entry before the
        # first is zero, as these registers are.)
        last = regs("last", next=32, id=16, id1=16, pl=17)
        last["key"] = kq_p_data.key
        last["hdr"] = hdr_of6({k: getattr(kq_p_data, k) for k in kv})
        with m.If(valid_at[6]):
            m.d.sync += [
                last["next"].eq(s2_at6["seq"] + pl6), last["id"].eq(s2_at6["ip_id"]),
                last["id1"].eq(s2_at6["ip_id"] + 1), last["pl"].eq(pl6),
            ]

        def eq_pieces(a, b, tag):
            reg = Signal((len(a) + _PIECE - 1) // _PIECE, name=tag)
            m.d.sync += reg.eq(Cat(*((a[lo:lo + _PIECE] == b[lo:lo + _PIECE])
                                     for lo in range(0, len(a), _PIECE))))
            return reg

        pr_key = eq_pieces(s2_at6["key"], last["key"], "pair_key")
        pr_hdr = eq_pieces(hdr_of6(s2_at6), last["hdr"], "pair_hdr")
        pr = regs("pair", seq=1, id_same=1, id_inc=1, le=1, lt=1)
        stage(7, [
            (pr["seq"], s2_at6["seq"] == last["next"]),
            (pr["id_same"], s2_at6["ip_id"] == last["id"]),
            (pr["id_inc"], s2_at6["ip_id"] == last["id1"]),
            (pr["le"], pl6 <= last["pl"]), (pr["lt"], pl6 < last["pl"]),
        ])
        v = s5_late
        csum_ok = s6["verify"] == 0xFFFF  # (folds to 0xFFFF only if it is 0xFFFF)
        seg = (((v["elig4"] & s6["ip_ok"]) | v["base6"]) & (v["never"] | csum_ok)
               & v["size_ok"])
        # Stage 7: verdicts and the merge's offsets, registered on their way into the FIFO.
        pair = (pr_key.all() & pr_hdr.all() & pr["seq"] & pr["le"] & seg & v["key_valid"]
                & ~v["never"] & ~s7_flags[7] & (v["pay_len"] != 0))
        pw = Signal(pq_layout)
        pw_valid = Signal()
        m.d.sync += [
            pw_valid.eq(valid_at[7]), pw.meta.eq(meta_at[7]),
            pw.seg.eq(seg), pw.key_valid.eq(v["key_valid"]),
            pw.never_hold.eq(v["never"]), pw.v6.eq(s2_hold["is6"]),
            pw.pl_nz.eq(v["pay_len"] != 0),
            pw.fits2.eq(meta_at[7].len + v["pay_len"] <= self.max_bytes + _ETH),
            pw.ends.eq((s7_flags & _END) != 0),
            pw.holdable.eq(seg & ~v["never"] & (v["pay_len"] != 0)
                           & ((s7_flags & _END) == 0)),
            pw.l3.eq(s2_hold["l3"]), pw.l4.eq(v["l4"]),
            pw.pay_off.eq(v["pay_off"]), pw.pay_len.eq(v["pay_len"]),
            pw.flags.eq(s7_flags), pw.df.eq(s2_hold["frag"][14]),
            pw.addr_sum.eq(s6["addr"]), pw.ip_base.eq(s6["ip_base"]),
            pw.tcp_base.eq(s6["tcp_base"]), pw.pay_sum.eq(finish(s6["pay"])),
            pw.c_src.eq(meta_at[7].start + (v["pay_off"] >> LB)),
            pw.src_words.eq(((v["pay_off"][:LB] if LB else 0) + v["pay_len"] + (B - 1)) >> LB),
            pw.pair_fix.eq(pair & (s2_hold["is6"] | pr["id_same"])),
            pw.pair_held.eq(pair & (s2_hold["is6"] | (pr["id_same"] & s2_hold["frag"][14])
                                    | pr["id_inc"])),
            pw.pair_inc.eq(pair & (s2_hold["is6"] | pr["id_inc"])),
            pw.id_same.eq(pr["id_same"]), pw.lt_prev.eq(pr["lt"]),
            pw.same_key.eq(pr_key.all()),
        ]
        m.d.comb += [pq.w_data.eq(Cat(*(pw[k] for k, _ in pqn_layout))), pq.w_en.eq(pw_valid)]
        pqw_w = Signal(pqw_layout)
        pqw_next = Signal(4)
        m.d.comb += [pqw_w[k].eq(pw[k]) for k, _ in pqw_layout]
        m.d.sync += pqw_next.eq(pqw_next + pw_valid)
        for n, (lo, hi) in enumerate(_chunks(pqw_layout.size)):
            mem = Memory(shape=hi - lo, depth=pq_depth, init=[])
            m.submodules[f"pqw{n}"] = mem
            w_port = mem.write_port()
            r_port = mem.read_port(domain="comb")
            r_ptr = Signal(4, name=f"pqw_ptr{n}")
            m.d.sync += r_ptr.eq(r_ptr + (pop & slot))
            m.d.comb += [w_port.addr.eq(pqw_next), w_port.en.eq(pw_valid),
                         w_port.data.eq(pqw_w.as_value()[lo:hi]), r_port.addr.eq(r_ptr),
                         pqw_out.as_value()[lo:hi].eq(r_port.data)]
        # The FIFO's fields the lookup tests, again in a LUT memory of their own read at the
        # lookup's entry (``lk``), like ``keyq``'s ``kq_h_data``.
        lk_layout = data.StructLayout({"key_valid": 1, "pay_len": 17, "df": 1, "v6": 1,
                                       "never_hold": 1, "pl_nz": 1, "cwr": 1})
        lk_w = Signal(lk_layout)
        lk = Signal(lk_layout)
        m.d.comb += [lk_w.key_valid.eq(pw.key_valid), lk_w.pay_len.eq(pw.pay_len),
                     lk_w.df.eq(pw.df), lk_w.v6.eq(pw.v6), lk_w.never_hold.eq(pw.never_hold),
                     lk_w.pl_nz.eq(pw.pl_nz), lk_w.cwr.eq(pw.flags[7])]
        m.submodules.pql = lk_mem = Memory(shape=lk_layout.size, depth=pq_depth, init=[])
        lk_w_port = lk_mem.write_port()
        lk_r_port = lk_mem.read_port(domain="comb")
        m.d.comb += [lk_w_port.addr.eq(pqw_next), lk_w_port.en.eq(pw_valid),
                     lk_w_port.data.eq(lk_w.as_value()), lk_r_port.addr.eq(lookup_addr("lk")),
                     lk.as_value().eq(lk_r_port.data)]

        # ------------------------------------------------------------------ contexts
        Ctx = _ctx_layout(SP, RCP)
        ctx = [Signal(Ctx, name=f"ctx{i}") for i in range(N)]
        older = [[Signal(name=f"older_{i}_{j}") if i != j else None for j in range(N)]
                 for i in range(N)]
        valid = Cat(*(c.valid for c in ctx))
        # (A signal: an expression sliced once per context would be copied N times.)
        oldest_oh = Signal(N)
        m.d.comb += oldest_oh.eq(Cat(*(ctx[i].valid & Cat(*(~ctx[j].valid | older[i][j]
                                                          for j in range(N) if j != i)).all()
                                     if N > 1 else ctx[i].valid for i in range(N))))
        # The oldest and the first free context, for the merge engine's decisions, registered
        # (see there).
        oldest_r = Signal(CP)
        free_idx_r = Signal(CP)
        any_free_r = Signal()
        any_valid_r = Signal()
        ctx_moved = Signal()  # a delivery freed a context in the cycle before
        # A region is in use from the segment held in it to the last read of its delivery's
        # read-out (``rused``): a context delivered is free at once, and the next segment held
        # takes a free region (``free_reg``, registered: it is taken in "Hold", which comes
        # back to "Act" three cycles later at the earliest).
        rused = Signal(RC)
        free_reg = Signal(RCP)
        any_reg = Signal()
        for r in reversed(range(RC)):
            with m.If(~rused[r]):
                m.d.sync += free_reg.eq(r)
        m.d.sync += any_reg.eq(~rused.all())

        def pick(field, index):
            """Field of context ``index`` (combinational multiplexer)."""
            return Array(getattr(c, field) for c in ctx)[index]

        hit = Signal(N)
        ok = Signal(N)
        fsm_act = Signal()
        fsm_deliver = Signal()
        max_held = self.max_bytes + _ETH

        # ------------------------------------------------------------------ engines
        # Output: reads of staging or region words into a FIFO towards ``o``.
        out_layout = data.StructLayout({"data": W, "keep": B, "last": 1, "user": USER_WIDTH})
        m.submodules.outq = outq = SyncFIFOBuffered(width=out_layout.size, depth=8)
        o_region = Signal()
        o_addr = Signal(max(SP, RP + RCP))
        o_j = Signal(16)
        o_keep_last = Signal(B)
        o_user = Signal(USER_WIDTH)
        o_busy = Signal()
        o_v1 = Signal()
        o_src1 = Signal()
        o_bank1 = Signal()
        o_last1 = Signal()
        o_keep1 = Signal(B)
        o_user1 = Signal(USER_WIDTH)
        o_v2 = Signal()
        o_src2 = Signal()
        o_bank2 = Signal()
        o_last2 = Signal()
        o_keep2 = Signal(B)
        o_user2 = Signal(USER_WIDTH)
        o_rem = Signal(16)  # reads still to issue
        o_nz = Signal()  # o_rem != 0 and o_rem == 1, kept in registers
        o_one = Signal()
        o_room = Signal()  # the output FIFO held fewer than four words in the cycle before
        # A merged frame's four new header fields replace the region's bytes as the words
        # leave (the region is not written): per field its value, word, lane and enable,
        # loaded with the read-out; which fields the word read holds (stage 1); the lanes
        # and bytes that replace the memory's (stage 2). Two-byte fields lie at even
        # offsets, so never across a word.
        o_pv = [Signal(16, name=f"o_pv{f}") for f in range(4)]
        o_pw = [Signal(7, name=f"o_pw{f}") for f in range(4)]
        o_pl = [Signal(max(1, LB), name=f"o_pl{f}") for f in range(4)]
        o_pe = Signal(4)
        o_hit1 = Signal(4)
        o_pm2 = Signal(B)
        o_pd2 = Signal(W)
        two = (1, 1, 0, 1)  # IP length, IPv4 header checksum, TCP flags (a byte), TCP checksum
        issue = Signal()
        # (Two reads in flight: a read issued below level 5 finds room when it lands; the
        # level grows by one a cycle at most, so a level under 4 in the cycle before will do.)
        m.d.sync += o_room.eq(outq.level < 4)
        m.d.comb += issue.eq(o_busy & o_nz & o_room)
        with m.If(issue):
            m.d.sync += [o_j.eq(o_j + 1), o_addr.eq(o_addr + 1), o_rem.eq(o_rem - 1),
                         o_nz.eq(o_rem != 1), o_one.eq(o_rem == 2)]
        with m.If(o_busy & ~o_nz):
            m.d.sync += o_busy.eq(0)  # (a new start later in this cycle wins)
        o_rctx = Signal(RCP)  # the region a read-out reads
        m.d.sync += [o_v1.eq(issue), o_src1.eq(o_region), o_bank1.eq(o_addr[0]),
                     o_last1.eq(o_one),  # (the read issued is the last one)
                     o_keep1.eq(Mux(o_one, o_keep_last, (1 << B) - 1)),
                     o_user1.eq(o_user)]
        m.d.sync += [o_v2.eq(o_v1), o_src2.eq(o_src1), o_bank2.eq(o_bank1), o_last2.eq(o_last1),
                     o_keep2.eq(o_keep1), o_user2.eq(o_user1)]
        m.d.sync += o_hit1.eq(Cat(*(o_pe[f] & (o_j == o_pw[f]) for f in range(4))))
        # (The fields' values and lanes go along with ``o_hit1``: the next read-out may load
        # its own in the cycle of this one's last read.)
        o_pv1 = [Signal(16, name=f"o_pv1_{f}") for f in range(4)]
        o_pl1 = [Signal(max(1, LB), name=f"o_pl1_{f}") for f in range(4)]
        m.d.sync += [*(o_pv1[f].eq(o_pv[f]) for f in range(4)),
                     *(o_pl1[f].eq(o_pl[f]) for f in range(4))]
        pm, pd = [], []
        for k in range(B):
            hi = [o_hit1[f] & (o_pl1[f] == k) for f in range(4)]
            lo = [o_hit1[f] & (o_pl1[f] == k - 1) for f in range(4) if two[f] and k > 0]
            lo_val = [o_pv1[f][0:8] for f in range(4) if two[f] and k > 0]
            hi_val = [o_pv1[f][8:16] if two[f] else o_pv1[f][0:8] for f in range(4)]
            pm.append(Cat(*hi, *lo).any())
            byte = Const(0, 8)
            for c, v in zip(hi + lo, hi_val + lo_val, strict=True):
                byte = byte | Mux(c, v, 0)
            pd.append(byte)
        m.d.sync += [o_pm2.eq(Cat(*pm)), o_pd2.eq(Cat(*pd))]
        o_mem2 = Signal(W)
        m.d.comb += o_mem2.eq(Mux(o_src2, Mux(o_bank2, rg_q[1], rg_q[0]), staging_out.r_data))
        o_word = Signal(out_layout)
        m.d.comb += [
            o_word.data.eq(Cat(*(Mux(o_pm2[k], _byte(o_pd2, k), _byte(o_mem2, k))
                                 for k in range(B)))),
            o_word.keep.eq(o_keep2),
            o_word.last.eq(o_last2),
            o_word.user.eq(o_user2),
            outq.w_data.eq(o_word.as_value()),
            outq.w_en.eq(o_v2),
        ]
        o_view = data.View(out_layout, outq.r_data)
        # The read-outs in the order the merge engine decides them (``rq``): a frame that passes
        # unchanged (from the staging ring) or a delivery, whose fields the delivery engine
        # queues in ``dq`` once its sums are done (deliveries keep their order in both).
        rq_layout = data.StructLayout({"single": 1, "start": SP + 1, "end": SP + 1, "words": 16,
                                       "keep": B, "idx": 16})
        m.submodules.rq = rq = SyncFIFOBuffered(width=rq_layout.size, depth=rq_depth)
        rq_head = data.View(rq_layout, rq.r_data)
        rq_in = Signal(rq_layout)
        m.d.comb += rq.w_data.eq(rq_in.as_value())
        dq_layout = data.StructLayout({
            "ctx": RCP, "words": 16, "keep": B, "user": USER_WIDTH, "pe": 4,
            **{f"v{f}": 16 for f in range(4)}, **{f"p{f}": 7 for f in range(4)}})
        m.submodules.dq = dq = SyncFIFOBuffered(width=dq_layout.size, depth=4)
        dq_head = data.View(dq_layout, dq.r_data)
        dq_in = Signal(dq_layout)
        m.d.comb += dq.w_data.eq(dq_in.as_value())
        m.d.comb += [
            self.o.payload.data.eq(o_view.data),
            self.o.payload.keep.eq(o_view.keep),
            self.o.payload.last.eq(o_view.last),
            self.o.payload.user.eq(o_view.user),
            self.o.valid.eq(outq.r_rdy),
            outq.r_en.eq(self.o.ready),
        ]
        with m.If(self.o.valid & self.o.ready & self.o.payload.last):
            m.d.sync += cnt["FRAMES_OUT"].eq(cnt["FRAMES_OUT"] + 1)

        # Copy: staging words into a context region, a word a cycle. Source word ``j`` is read;
        # in the next cycle its region words and lanes are worked out, in the cycle after it
        # is rotated by ``c_r`` bytes (as it leaves the staging ring's output register), and in
        # the next it is written in two parts (from registers, so that no logic lies between
        # the two memories, which lie far apart): its lanes from ``c_r`` up into region word
        # ``base + j``, the lanes below into the next word, which lies in the other bank (both
        # writes limited to the bytes ``lo`` to ``hi``).
        # One command runs (``c_*``) and one waits (``q_*``); the waiting one starts in the
        # cycle of the running one's last read, so that copies of one-word segments follow
        # each other every cycle.
        copy_layout = data.StructLayout({
            "addr": SP + 1, "rem": 16, "end": SP + 1, "r": LB + 1, "base": 17, "lo": 17,
            "hi": 17, "ctx": RCP,
        })
        c_busy = Signal()
        c_addr = Signal(SP + 1)  # staging word read next
        c_j = Signal(16)
        c_rem = Signal(16)  # reads still to issue
        c_end = Signal(SP + 1)  # the frame's end in the staging ring, freed after the last read
        c_r = Signal(LB + 1)
        c_base = Signal(17)  # region word of source word 0 (unshifted lanes)
        c_lo = Signal(17)  # first region byte written
        c_hi = Signal(17)  # one past the last
        c_ctx = Signal(RCP)
        q_valid = Signal()
        q_cmd = Signal(copy_layout)
        c_nz = Signal()  # c_rem != 0 and c_rem == 1, kept in registers
        c_one = Signal()
        # The copy engine takes a new command in this cycle if it has one (``~c_busy | c_one``,
        # kept in a register: it decides whether a merge may go on).
        c_free = Signal(init=1)
        c_v1 = Signal()
        c_w1 = Signal(17)
        c_lo1 = Signal(17)
        c_hi1 = Signal(17)
        c_r1 = Signal(LB + 1)
        c_ctx1 = Signal(RCP)
        c_ctx2 = Signal(RCP)
        c_v2 = Signal()
        c_r2 = Signal(LB + 1)
        c_waddr2 = [Signal(RP - 1 + (RCP if RC > 1 else 0), name=f"c_waddr2_{n}")
                    for n in range(2)]
        c_wen2 = [Signal(B, name=f"c_wen2_{n}") for n in range(2)]
        c_issue = Signal()
        m.d.comb += c_issue.eq(c_busy & c_nz)
        # A read-out of the region may start while a copy into it runs once the copy is three
        # region words ahead of it: ``c_lead`` is ``c_j + c_base`` up to 3, and ``c_near``
        # (``c_busy`` while ``c_lead`` is under 3) and ``c_near1``, ``c_near2`` (its reads
        # whose writes are two or three cycles away) are registers of their own, so that the
        # read-out's start tests them as it tested ``c_busy`` and ``c_v1``, ``c_v2`` (see
        # ``copying``).
        c_lead = Signal(2)
        c_near = Signal()
        c_near1 = Signal()
        c_near2 = Signal()
        m.d.sync += [c_near1.eq(c_issue & c_near), c_near2.eq(c_near1)]
        with m.If(c_issue):
            m.d.sync += [c_j.eq(c_j + 1), c_addr.eq(c_addr + 1), c_rem.eq(c_rem - 1),
                         c_nz.eq(c_rem != 1), c_one.eq(c_rem == 2),
                         c_lead.eq(Mux(c_lead == 3, 3, c_lead + 1))]
            with m.If(c_one | (c_lead == 2)):
                m.d.sync += c_near.eq(0)
            with m.If(c_one):
                # The last read: the copy goes on in the background for one more write; the
                # frame's staging words are free.
                m.d.sync += [c_busy.eq(0), rd_ptr.eq(c_end)]
        c_load = Signal()
        m.d.comb += c_load.eq(q_valid & c_free)
        # ``q_free``: a command may be queued in this cycle (``~q_valid | c_free``), kept in a
        # register of its own, worked out from the next values of the two (it enables
        # ``q_cmd``'s hundred flip-flops and every merge).
        q_queue = Signal()  # a command is queued in this cycle ("Hold" or a merge)
        q_valid_nx = Signal()
        c_free_nx = Signal()
        q_free = Signal(init=1)
        m.d.comb += [
            q_valid_nx.eq(q_queue | (q_valid & ~c_load)),
            c_free_nx.eq(Mux(c_load, q_cmd.rem == 1,
                             Mux(c_issue, c_one | (c_rem == 2), c_free))),
        ]
        m.d.sync += [q_valid.eq(q_valid_nx), c_free.eq(c_free_nx),
                     q_free.eq(~q_valid_nx | c_free_nx)]
        cp_idle = Signal()  # no copy running or waiting
        m.d.comb += cp_idle.eq(~c_busy & ~q_valid)
        # (A negative base, which a merge's never is, counts as 0.)
        lead0 = Signal(2)
        m.d.comb += lead0.eq(Mux(q_cmd.base[-1], 0,
                                 Mux(q_cmd.base[2:-1].any(), 3, q_cmd.base[:2])))
        with m.If(c_load):
            m.d.sync += [
                c_busy.eq(1), c_j.eq(0), c_addr.eq(q_cmd.addr),
                c_rem.eq(q_cmd.rem), c_end.eq(q_cmd.end), c_r.eq(q_cmd.r),
                c_nz.eq(q_cmd.rem != 0), c_one.eq(q_cmd.rem == 1),
                c_base.eq(q_cmd.base), c_lo.eq(q_cmd.lo), c_hi.eq(q_cmd.hi),
                c_ctx.eq(q_cmd.ctx),
                c_lead.eq(lead0), c_near.eq(lead0 != 3),
            ]

        # ``q_cmd`` loads in every cycle in which a command may be queued, from the command
        # "Hold" or a merge would queue (``hold_cmd``, ``merge_cmd``): only ``q_valid`` depends
        # on whether one is queued.
        hold_cmd = Signal(copy_layout)
        merge_cmd = Signal(copy_layout)


        def copying(index):
            """A copy into region ``index`` waits, or runs less than three region words ahead
            of a read-out of the region started now, or has such a read whose write is two or
            three cycles away: once this is false, every write of the copies into the region
            lands before the read of its word (the copy reads a word every cycle, a read-out
            at most one: the copy's write of region words ``c_base + j`` and the next, three
            cycles after its read ``j``, comes before the read-out's read of word ``c_base +
            j``, issued ``c_base + j + 1`` cycles after its start or later, when ``c_j +
            c_base`` was 3 or more at its start)."""
            return ((c_near & (c_ctx == index)) | (q_valid & (q_cmd.ctx == index))
                    | (c_near1 & (c_ctx1 == index)) | (c_near2 & (c_ctx2 == index)))

        m.d.sync += [c_v1.eq(c_issue), c_w1.eq(c_base + c_j), c_lo1.eq(c_lo), c_hi1.eq(c_hi),
                     c_r1.eq(c_r), c_ctx1.eq(c_ctx)]
        both = Cat(st_q, st_q)
        rotated = Signal(W)
        with m.Switch(c_r2):
            for r in range(B):
                with m.Case(r):
                    m.d.comb += rotated.eq(both[8 * (B - r):8 * (B - r) + W])
        c_w2 = Signal(17)
        m.d.comb += c_w2.eq(c_w1 + 1)
        lanes_lo = Signal(B)  # lanes of word ``c_w1``
        lanes_hi = Signal(B)  # lanes of word ``c_w1 + 1``
        for k in range(B):
            pos1 = Cat(Const(k, LB), c_w1)
            pos2 = Cat(Const(k, LB), c_w2)
            m.d.comb += [
                lanes_lo[k].eq((c_r1 <= k) & (pos1 >= c_lo1) & (pos1 < c_hi1)),
                lanes_hi[k].eq((c_r1 > k) & (pos2 >= c_lo1) & (pos2 < c_hi1)),
            ]
        m.d.sync += [c_v2.eq(c_v1), c_r2.eq(c_r1), c_ctx2.eq(c_ctx1)]
        for n in range(2):
            c_first = c_w1[0] == n  # the word ``c_w1`` lies in this bank
            m.d.sync += [
                c_waddr2[n].eq(bank_addr(Mux(c_first, c_w1, c_w2)[:RP], c_ctx1)),
                c_wen2[n].eq(Mux(c_first, lanes_lo, lanes_hi)),
            ]
        c_v3 = Signal()
        c_data3 = Signal(W)
        c_waddr3 = [Signal.like(c_waddr2[n], name=f"c_waddr3_{n}") for n in range(2)]
        c_wen3 = [Signal(B, name=f"c_wen3_{n}") for n in range(2)]
        m.d.sync += [c_v3.eq(c_v2), c_data3.eq(rotated),
                     *(c_waddr3[n].eq(c_waddr2[n]) for n in range(2)),
                     *(c_wen3[n].eq(c_wen2[n]) for n in range(2))]

        for n, bank in enumerate(banks):
            m.d.comb += [
                bank.w_addr.eq(c_waddr3[n]),
                bank.w_data.eq(c_data3),
                bank.w_en.eq(Mux(c_v3, c_wen3[n], 0)),
            ]
            # The block RAMs read in every cycle (``hold=False``): the read-out and the copy
            # take a word two cycles after its read, always, so nothing needs a word held, and
            # no read enable runs from the engines' state across the chip to the blocks (the
            # read-out's ``o_busy`` into a region block's ``CEB`` was the critical path at rtl
            # 72002e2, 12.0 ns with 10.5 of routing).
            m.d.comb += bank.r_addr.eq(bank_addr(o_addr[:RP], o_addr[RP:RP + RCP]))
        m.d.comb += [
            staging.r_addr.eq(c_addr[:SP]),
            staging_out.r_addr.eq(o_addr[:SP]),
        ]

        # ------------------------------------------------------------------ merge engine
        act = Signal(2)  # 0 single, 1 hold, 2 merge
        pin_add = Signal()  # a frame is queued to pass unchanged
        act_m = Signal()  # act == A_MERGE, kept in a register
        act_merge = Signal()  # in "Act" with a merge to do (``st["Act"] & act_m``, a register)
        act_single = Signal()  # in "Act" with a single frame to pass on (a register likewise)
        A_SINGLE, A_HOLD, A_MERGE = 0, 1, 2
        sel = Signal(CP)
        post = Signal()
        d_ctx = Signal(CP)  # the context the merge engine delivers next
        e_idx = Signal(16)
        d_busy = Signal()  # the delivery engine works
        d_start = Signal()
        ret = Signal(2)  # where a delivery returns: 0 act, 1 release, 2 flush, 3 wait
        R_ACT, R_RELEASE, R_FLUSH, R_WAIT = 0, 1, 2, 3
        dsel = {name: Signal(len(getattr(ctx[0], name)), name=f"d_{name}")
                for name in ("region", "count", "mss", "held_len", "end_flags", "flags", "v6", "l3",
                             "l4", "addr_sum", "ip_base", "tcp_base", "pay_sum")}
        d_ip_len = Signal(16)
        d_tcp_len = Signal(16)
        d_ip_csum = Signal(16)
        d_tcp_csum = Signal(16)
        d_pay = Signal(17)
        d_t1 = Signal(18)
        d_a = Signal(18)
        d_b = Signal(19)
        d_ip_raw = Signal(17)
        d_tcp_raw = Signal(20)
        d_ip_f1 = Signal(17)
        d_tcp_f1 = Signal(17)
        d_pos = [Signal(7, name=f"d_pos{k}") for k in range(4)]
        d_words = Signal(16)  # the merged frame's region words, the lanes of the last one
        d_keep = Signal(B)
        d_gso = Signal(16)
        idx_now = Signal(16)
        m_held = Signal(17)  # held bytes of the context a merge goes to
        m_reg = Signal(RCP)  # the region of that context
        h_reg = Signal(RCP)  # the region a segment held is copied to
        ch_room = Signal(18)  # room of that context (its ``room`` field, kept in step)
        ch_fit = Signal()  # that room, less the last frame's payload, holds the payload again
        ch_held = Signal()  # the last frame was held (the context has one segment)
        ch_fix = Signal()  # that context's fixed-ID bit
        ch_id0 = Signal()  # a frame looked up: its IP ID equals the hit context's

        # Timeout: each context's age tested in its own cycle, then the oldest one's; the
        # merge engine acts on it after two cycles in "Wait" (contexts unchanged since).
        aged = Signal(N)
        for i, c in enumerate(ctx):
            age = Signal(32, name=f"age{i}")
            m.d.sync += age.eq(now - c.t_first)
            m.d.comb += aged[i].eq(c.valid & (age >= timeout) & (timeout != 0))
        expired_r = Signal()
        expired_nx = Signal()
        m.d.comb += expired_nx.eq((aged & oldest_oh).any())
        m.d.sync += expired_r.eq(expired_nx)
        settled = Signal(2)
        expired = Signal()
        m.d.comb += expired.eq(expired_r & (settled == 3))

        def start_out(region_src, addr, words, keep, user, patches=None):
            """Start a read-out of ``words`` words (``keep``: lanes of the last one);
            ``patches``: the enables of the four header fields and their (value, byte offset)
            pairs."""
            m.d.sync += [
                o_busy.eq(1),
                o_region.eq(region_src), o_addr.eq(addr), o_j.eq(0),
                o_rem.eq(words), o_keep_last.eq(keep), o_user.eq(user),
                o_nz.eq(words != 0), o_one.eq(words == 1),
                o_pe.eq(0),
            ]
            if patches is not None:
                enables, fields = patches
                m.d.sync += o_pe.eq(enables)
                for f, (value, pos) in enumerate(fields):
                    m.d.sync += [o_pv[f].eq(value), o_pw[f].eq(pos >> LB),
                                 o_pl[f].eq(pos[:LB] if LB else 0)]

        # Lookup of the frame at the head of the FIFO, in two registered steps: every context
        # compares its fields with the frame's in 8-bit pieces and tests its counters (step
        # A), then the results are combined (step B, into ``hit``, ``ok`` and ``short``). The
        # engine takes a frame only when neither the contexts nor the FIFO's head changed in
        # the cycle before (``quiet``; a head that just arrived counts as a change): "Decide"
        # then sees the lookup of the contexts as they are.
        def pieces(a, b, tag):
            eq = [(a[lo:lo + _PIECE] == b[lo:lo + _PIECE]) for lo in range(0, len(a), _PIECE)]
            reg = Signal(len(eq), name=tag)
            m.d.sync += reg.eq(Cat(*eq))
            return reg

        # A merge updates its context in the cycle after it is decided, from registers
        # (``mu_*``: the context one-hot and the changes), so that the decision drives a few
        # registers only. The lookup waits for the update (``changed``); a delivery comes at
        # least a cycle after the merge. ``ch_fix`` and ``ch_held`` follow the context's
        # fixed-ID bit and single segment as ``ch_room`` follows its room.
        mu_en = Signal(N)
        mu_len = Signal(17)
        mu_hi = Signal(17)
        mu_end = Signal(8)
        mu_fix = Signal()
        mu_sum = Signal(16)
        m.d.sync += mu_en.eq(0)
        for i, c in enumerate(ctx):
            with m.If(mu_en[i]):
                m.d.sync += [
                    c.count.eq(c.count + 1),
                    c.id_next.eq(c.id_next + 1),
                    c.next_seq.eq(c.next_seq + mu_len),
                    c.held_len.eq(mu_hi),
                    c.room.eq(c.room - mu_len),
                    c.end_flags.eq(c.end_flags | mu_end),
                    c.pay_sum.eq(c.pay_sum + mu_sum),
                    c.fixed_id.eq(mu_fix),
                ]

        short = Signal(N)
        # (The frame's bits that step B tests are registered in step A with the contexts'
        # tests, and the one-bit facts "Decide" reads in step B with ``hit``: everything
        # "Decide" takes from the lookup comes from one look at the frame and the contexts.)
        la = {name: Signal(name=f"la_{name}") for name in ("df", "v6", "cwr", "pl_nz",
                                                           "never_hold")}
        m.d.sync += [la[name].eq(lk[name]) for name in la]
        b_id0 = Signal(N)
        b_cnt1 = Signal(N)
        b_fixed = Signal(N)
        hit_idx = Signal(CP)  # the hit context (the last one of ``hit``), registered with it
        hit_idx_next = Signal(CP)
        fn_rules = Cat(fn["flag_word"] & _FLAG_MASK, fn["ack"], fn["opts"], fn["ip_word"],
                       fn["seq"])
        for i, c in enumerate(ctx):
            a_key = pieces(fn["key"], c.key, f"a_key{i}")
            a_rule = pieces(fn_rules, Cat(c.flag_word & _FLAG_MASK, c.ack, c.opts, c.ip_word,
                                          c.next_seq), f"a_rule{i}")
            a = {name: Signal(name=f"a_{name}{i}") for name in (
                "valid", "id0", "idc", "cnt1", "fixed", "mss", "short", "room")}
            m.d.sync += [
                a["valid"].eq(c.valid & lk.key_valid),
                a["id0"].eq(fn["ip_id"] == c.ip_id),
                a["idc"].eq(fn["ip_id"] == c.id_next),
                a["cnt1"].eq(c.count == 1),
                a["fixed"].eq(c.fixed_id),
                a["mss"].eq(lk.pay_len <= c.mss),
                a["short"].eq(lk.pay_len < c.mss),
                a["room"].eq(~c.room[17] & (lk.pay_len <= c.room[:17])),
            ]
            fixed = a["fixed"] | (a["cnt1"] & a["id0"] & la["df"])
            id_ok = la["v6"] | Mux(fixed, a["id0"], a["idc"])
            rules = Cat(~la["cwr"], a_rule.all(), id_ok, la["pl_nz"], a["mss"],
                        ~la["never_hold"], a["room"])
            hit_next = a["valid"] & a_key.all()
            with m.If(hit_next):
                m.d.comb += hit_idx_next.eq(i)
            m.d.sync += [hit[i].eq(hit_next), ok[i].eq(rules.all()), short[i].eq(a["short"]),
                         b_id0[i].eq(a["id0"]), b_cnt1[i].eq(a["cnt1"]),
                         b_fixed[i].eq(a["fixed"])]
        m.d.sync += hit_idx.eq(hit_idx_next)
        changed = Signal()
        quiet = Signal()
        m.d.comb += changed.eq(fsm_act | fsm_deliver | pop | ~slot | mu_en.any() | ahead)
        m.d.sync += quiet.eq(~changed)

        # Lookahead: while the engine works on the frame at the FIFO's head in "Decide", in
        # "Act" for a frame passed on or a merge, and in "Chain", the lookup compares the frame
        # after it (``ahead``), so that the frame can be decided in the cycle after its
        # predecessor is done, with no cycles in "Wait", when the lookup saw the contexts as
        # they are then: a frame passed on changes no context, and a merge (in "Act" or
        # "Chain") changes only the context it goes to, which the next frame, looked up during
        # the merge, hits only if it has the same flow key (``same_key``; it then takes the
        # lookup in "Wait", as does a frame after a hold or a delivery). ``lk_ok``: the lookup
        # registered in this cycle's ``hit`` and ``ok`` (step B) compared the frame after the
        # head, which was in the FIFO, in the cycle before the one before (step A).
        lk_ok = Signal()
        popped = Signal()  # a frame left the FIFO in the cycle before
        m.d.sync += [lk_ok.eq(ahead & (pq.level >= 2)), popped.eq(pop & slot)]
        lk_single = Signal()  # a frame passed on in "Act": the next one's lookup is done
        lk_chain = Signal()  # a chain ends: the lookup of the frame at the head is done
        m.d.comb += [
            # (No frame left since the lookup: the head is still the frame before.)
            lk_single.eq(lk_ok & ~popped & ~expired_r),
            # (The frame chained or merged before left in the cycle before; the merges since
            # the lookup went to the context of the frame's predecessor.)
            lk_chain.eq(lk_ok & popped & slot & ~fn["same_key"] & ~expired_r),
        ]

        # The engine's state, one-hot: each state is a flip-flop of its own, so that the
        # decisions below are enabled by one flip-flop each, with no decoding before them.
        # ``state(name)`` opens a state's statements; ``goto(name)`` leaves it (within a state,
        # at most one ``goto`` applies in a cycle).
        e_states = ("Wait", "Chain", "Decide", "Act", "Hold", "Copy", "Release", "Flush",
                    "Deliver")
        st = {name: Signal(name=f"lro_{name.lower()}", init=int(name == "Wait"))
              for name in e_states}
        here = []

        @contextmanager
        def state(name):
            here.append(name)
            with m.If(st[name]):
                yield
            here.pop()

        def goto(name):
            if name != here[-1]:
                m.d.sync += [st[here[-1]].eq(0), st[name].eq(1)]

        def release():
            """End the poll or wait for the next frame (the frame's staging words are freed
            below, once no copy runs)."""
            with m.If(cur.eop):
                goto("Flush")
            with m.Else():
                goto("Wait")

        # Chain: the frame after a held or merged one merges into the same context in the
        # next cycle without a lookup, when it follows that frame (the parser compared the
        # two: same flow and header words, the next sequence number, an IP ID that fits,
        # a payload no longer) and fits the context's room. Everything the lookup would test
        # is then known: the context's header words and ``mss`` are the previous frame's.
        # The room is tested a cycle ahead, against the previous frame's payload, which is
        # no shorter (``ch_fit``): a last segment that fits only because it is shorter takes
        # the lookup, which merges it all the same.
        # (The IP ID rule, ``fixed_id`` as the lookup has it, is one of three verdicts of the
        # parser, picked by the context's two bits.)
        # (``ch_ok``: in "Chain", ``ch_fit`` and no timeout pending, in a register of its own:
        # see below.)
        ch_ok0 = Signal()  # st["Chain"] & ch_fit, kept in step with them
        ch_ok = Signal()  # ch_ok0 & ~expired_r
        ch_ok_nx = Signal()
        ch_go = Signal()
        # ("Hold" and a merge set it, leaving "Chain" for "Wait" clears it; see below.)
        m.d.comb += ch_ok_nx.eq(ch_ok0 & ~(st["Chain"] & ~ch_go))
        m.d.sync += [ch_ok0.eq(ch_ok_nx), ch_ok.eq(ch_ok_nx & ~expired_nx)]
        m.d.comb += ch_go.eq(slot & Mux(ch_fix, fn["pair_fix"],
                                        Mux(ch_held, fn["pair_held"], fn["pair_inc"]))
                             & ch_ok)

        # "Hold" writes the context ``sel`` in one cycle, enabled by a register set as the
        # engine enters it (one-hot: each context's fields are enabled straight from a
        # flip-flop, with no logic of the engine's state before them). The enable is kept in
        # ``_HOLD_COPIES`` copies, each for a part of the context's 1,150 bits (the key in two
        # halves, the options, the rest). Each copy's next value is also cleared by its own
        # value (always clear in "Act": "Hold" never leads back to "Act" at once), so that the
        # copies differ to synthesis, which would merge copies of one register.
        hold_we = [Signal(N, name=f"hold_we{k}") for k in range(_HOLD_COPIES)]
        m.d.sync += [we.eq(0) for we in hold_we]
        half = _KEY_BITS // 2
        for i, c in enumerate(ctx):
            parts = (
                [c.key[:half].eq(fn["key"][:half])],
                [c.key[half:].eq(fn["key"][half:])],
                [c.opts.eq(fn["opts"])],
                [c.valid.eq(1),
                 c.flag_word.eq(fn["flag_word"]), c.ack.eq(fn["ack"]),
                 c.ip_word.eq(fn["ip_word"]), c.ip_id.eq(fn["ip_id"]),
                 c.id_next.eq(fn["ip_id"] + 1),
                 c.mss.eq(fn["pay_len"]), c.flags.eq(fn["flags"]),
                 c.v6.eq(fn["v6"]), c.l3.eq(fn["l3"]), c.l4.eq(fn["l4"]),
                 c.fixed_id.eq(0), c.count.eq(1),
                 c.next_seq.eq(fn["seq"] + fn["pay_len"]),
                 c.held_len.eq(size), c.room.eq(max_held - size), c.end_flags.eq(0),
                 c.addr_sum.eq(fn["addr_sum"]), c.ip_base.eq(fn["ip_base"]),
                 c.tcp_base.eq(fn["tcp_base"]), c.pay_sum.eq(fn["pay_sum"]),
                 c.t_first.eq(now), c.region.eq(h_reg),
                 *(s_ for j in range(N) if j != i
                   for s_ in (older[i][j].eq(0), older[j][i].eq(1)))],
            )
            for we, part in zip(hold_we, parts, strict=True):
                with m.If(we[i]):
                    m.d.sync += part

        with state("Chain"):
            # (A merge: see below.)
            with m.If(~ch_go):
                with m.If(lk_chain):
                    m.d.comb += ahead_nx.eq(1)
                    goto("Decide")
                with m.Else():
                    m.d.comb += ahead_nx.eq(0)
                    goto("Wait")
        with state("Wait"):
            with m.If(settled != 3):
                m.d.sync += settled.eq(settled + 1)
            with m.If(expired):
                m.d.sync += [d_ctx.eq(oldest_r), ret.eq(R_WAIT)]
                goto("Deliver")
            with m.Elif(slot & ~expired_r & quiet):
                m.d.comb += ahead_nx.eq(1)
                goto("Decide")
        with state("Decide"):
            # The hit context's fields are picked by the one-hot ``hit`` (an AND-OR; at most
            # one context holds a flow: a segment of a held flow that is not merged delivers
            # it before it is held), and its one-bit facts from step A's registers (its
            # single segment, fixed IDs, equal IP ID), with no index multiplexer before them.
            # (With no hit they are zero; only a merge, which needs one, reads them.)
            merge_ok = fn["seg"] & hit.any() & (ok & hit).any()
            holdable = fn["holdable"]
            m.d.sync += [sel.eq(hit_idx), post.eq(0),
                         m_held.eq(_and_or(hit, [c.held_len for c in ctx])),
                         m_reg.eq(_and_or(hit, [c.region for c in ctx])),
                         ch_room.eq(_and_or(hit, [c.room for c in ctx])),
                         ch_fix.eq((hit & b_fixed).any()),
                         ch_held.eq((hit & b_cnt1).any()),
                         ch_id0.eq((hit & b_id0).any()),
                         cur.eq(nxt), idx_now.eq(nxt.idx)]
            with m.If(merge_ok):
                m.d.sync += [
                    act.eq(A_MERGE), act_m.eq(1), act_merge.eq(1),
                    post.eq((hit & short).any() | fn["ends"]),
                ]
                goto("Act")
            with m.Else():
                m.d.sync += [act.eq(Mux(holdable, A_HOLD, A_SINGLE)), act_m.eq(0)]
                # (Only a frame passed on leaves the lookahead running: "Hold" reads the
                # head's entry.)
                m.d.comb += ahead_nx.eq(~hit.any() & ~holdable)
                with m.If(hit.any()):
                    # A new segment of the flow goes to another free context if there is
                    # one, so that it need not wait for the read-out of the delivered one.
                    m.d.sync += [d_ctx.eq(hit_idx), ret.eq(R_ACT),
                                 sel.eq(Mux(any_free_r, free_idx_r, hit_idx))]
                    goto("Deliver")
                with m.Elif(holdable & ~any_free_r):
                    m.d.sync += [sel.eq(oldest_r), d_ctx.eq(oldest_r), ret.eq(R_ACT)]
                    goto("Deliver")
                with m.Else():
                    m.d.sync += [sel.eq(free_idx_r), act_single.eq(~holdable)]
                    goto("Act")
        with state("Act"):
            with m.Switch(act):
                # (A_SINGLE: see ``act_single`` below.)
                with m.Case(A_HOLD):
                    # The hold goes on in the next cycle ("Hold"): what it waits for
                    # cannot change back meanwhile (only this engine queues copies and
                    # starts deliveries), and the context's writes then depend on registers
                    # only.
                    with m.If(any_reg & q_free):
                        m.d.sync += h_reg.eq(free_reg)
                        m.d.sync += [we.eq(Cat(*(sel == i for i in range(N))) & ~we)
                                     for we in hold_we]
                        goto("Hold")
                # (A_MERGE: see below.)
        with state("Hold"):
            # (The context is written below, by ``hold_we``.)
            m.d.comb += q_queue.eq(1)  # (the command: ``hold_cmd``)
            m.d.sync += [m_held.eq(size), m_reg.eq(h_reg), ch_room.eq(max_held - size),
                         ch_fit.eq(fn["fits2"]),
                         ch_held.eq(1), ch_fix.eq(0)]
            m.d.comb += ch_ok_nx.eq(~cur.eop & fn["fits2"])
            m.d.comb += pop.eq(1)
            with m.If(~cur.eop):
                goto("Chain")  # the copy goes on in the background
            with m.Else():
                goto("Copy")
        with state("Copy"):
            # Leave with the last read (the copy engine frees the staging words); the last
            # write lands three cycles later, before any read of the region (``copying``).
            with m.If(~q_valid & c_free):
                with m.If((act == A_MERGE) & post):
                    m.d.sync += [d_ctx.eq(sel), ret.eq(R_RELEASE)]
                    goto("Deliver")
                with m.Else():
                    release()
        with state("Release"):
            release()
        with state("Flush"):
            with m.If(ctx_moved):
                pass  # (the registered choice is a cycle old: see ``oldest_r``)
            with m.Elif(any_valid_r):
                m.d.sync += [d_ctx.eq(oldest_r), ret.eq(R_FLUSH)]
                goto("Deliver")
            with m.Else():
                goto("Wait")

        # Delivery of context ``d_ctx``: handed to the delivery engine once it is free;
        # the merge engine goes on with the next frames meanwhile.
        with state("Deliver"):
            with m.If(~d_busy & rq.w_rdy):
                m.d.comb += [d_start.eq(1), rq.w_en.eq(1)]
                m.d.sync += [d_busy.eq(1), e_idx.eq(idx_now)]
                for name, sig in dsel.items():
                    m.d.sync += sig.eq(pick(name, d_ctx))
                for i, c in enumerate(ctx):
                    with m.If(d_ctx == i):
                        m.d.sync += c.valid.eq(0)
                with m.Switch(ret):
                    with m.Case(R_ACT):
                        m.d.sync += act_single.eq(act == A_SINGLE)
                        m.d.comb += ahead_nx.eq(act == A_SINGLE)
                        goto("Act")
                    with m.Case(R_RELEASE):
                        goto("Release")
                    with m.Case(R_FLUSH):
                        goto("Flush")
                    with m.Case(R_WAIT):
                        goto("Wait")

        # The oldest and the first free context and whether any is free or held, registered
        # for the decisions that read them. The contexts' valid bits and ages change only in
        # "Hold" (never followed at once by a state that reads these) and "Deliver"; "Decide"
        # and a timeout come after cycles in "Wait" without changes (see ``quiet`` and
        # ``settled``), and "Flush" waits a cycle after a delivery (``ctx_moved``; the delivery
        # engine is busy for longer, so the flush loses no time).
        m.d.sync += ctx_moved.eq(d_start)
        oldest_nx = Signal(CP)
        free_nx = Signal(CP)
        for i in reversed(range(N)):
            with m.If(oldest_oh[i]):
                m.d.comb += oldest_nx.eq(i)
            with m.If(~valid[i]):
                m.d.comb += free_nx.eq(i)
        m.d.sync += [oldest_r.eq(oldest_nx), free_idx_r.eq(free_nx),
                     any_free_r.eq(~valid.all()), any_valid_r.eq(valid.any())]

        # A merge, in "Chain" (the frame at the FIFO's head) or in "Act" (the frame looked
        # up): the same registers are written in both, from the same sources but for the
        # frame's staging words and its verdicts, so that a merge is one enable (``go_merge``)
        # and its values do not depend on the engine's state.
        ch_post = fn["lt_prev"] | fn["ends"]
        go_chain = Signal()
        go_merge = Signal()
        m.d.comb += [go_chain.eq(ch_go & q_free),
                     go_merge.eq(q_free & (ch_go | act_merge))]
        with m.If(go_chain):
            m.d.sync += [cur.eq(nxt), idx_now.eq(nxt.idx), post.eq(ch_post), act.eq(A_MERGE),
                         act_m.eq(1)]
        # (Computed in every cycle; only what the merge changes is enabled by it.)
        in_chain = st["Chain"]
        # The payload starts at byte ``pay_off`` of its staging words and goes to byte
        # ``m_held`` of the region: lanes shift by the difference of the two offsets within a
        # word.
        s_off = fn["pay_off"]
        h_lane = m_held[:LB] if LB else Const(0, 1)
        s_lane = s_off[:LB] if LB else Const(0, 1)
        borrow = Signal()
        m.d.comb += borrow.eq(h_lane < s_lane)
        hi = Signal(17)
        m.d.comb += hi.eq(m_held + fn["pay_len"])
        m.d.comb += [
            merge_cmd.addr.eq(fn["c_src"]), merge_cmd.rem.eq(fn["src_words"]),
            merge_cmd.end.eq(Mux(in_chain, nxt.end, cur.end)),
            merge_cmd.r.eq((h_lane - s_lane)[:LB] if LB else 0),
            merge_cmd.base.eq((m_held >> LB) - borrow), merge_cmd.lo.eq(m_held),
            merge_cmd.hi.eq(hi), merge_cmd.ctx.eq(m_reg),
            # "Hold" copies the whole frame to the start of the region.
            hold_cmd.addr.eq(cur.start), hold_cmd.rem.eq(cur.words), hold_cmd.end.eq(cur.end),
            hold_cmd.hi.eq(size), hold_cmd.ctx.eq(h_reg),
        ]
        id_eq = Mux(in_chain, fn["id_same"], ch_id0)  # its IP ID equals the context's
        new_fix = ch_fix | (ch_held & ~fn["v6"] & id_eq)
        seg_sum = fn["pay_sum"]
        m.d.sync += [
            mu_len.eq(fn["pay_len"]), mu_hi.eq(hi), mu_end.eq(fn["flags"] & 0x09),
            mu_fix.eq(new_fix),
            mu_sum.eq(Mux(m_held[0], Cat(seg_sum[8:16], seg_sum[0:8]), seg_sum)),
            cnt["MERGED"].eq(cnt["MERGED"] + mu_en.any()),  # (counted a cycle late)
        ]
        with m.If(q_free):
            m.d.sync += q_cmd.eq(Mux(st["Hold"], hold_cmd, merge_cmd))
        new_fit = ~ch_room[17] & (Cat(Const(0, 1), fn["pay_len"]) <= ch_room[:17])
        stay = ~Mux(in_chain, ch_post, post) & ~Mux(in_chain, nxt.eop, cur.eop)
        with m.If(go_merge):
            m.d.comb += [q_queue.eq(1), ch_ok_nx.eq(stay & new_fit)]
            m.d.sync += [m_held.eq(hi), ch_room.eq(ch_room - fn["pay_len"]), ch_held.eq(0),
                         ch_fit.eq(new_fit), ch_fix.eq(new_fix)]
            m.d.sync += mu_en.eq(Cat(*(sel == i for i in range(N))))
            m.d.comb += pop.eq(1)
            m.d.sync += [st["Act"].eq(0), act_merge.eq(0)]
            m.d.comb += ahead_nx.eq(stay)
            with m.If(stay):
                m.d.sync += st["Chain"].eq(1)  # the copy goes on in the background
            with m.Else():
                m.d.sync += [st["Chain"].eq(0), st["Copy"].eq(1)]
        m.d.comb += [fsm_act.eq(st["Act"]), fsm_deliver.eq(st["Deliver"])]
        # A frame passed on unchanged, from "Act" (``act_single`` is set only there): queued
        # behind the read-outs before it, its words pinned until its last read.
        with m.If(act_single & rq.w_rdy):
            m.d.comb += [rq.w_en.eq(1), pop.eq(1), pin_add.eq(1)]
            m.d.sync += [act_single.eq(0), st["Act"].eq(0)]
            with m.If(cur.eop):
                m.d.comb += ahead_nx.eq(0)
                m.d.sync += st["Flush"].eq(1)  # (as ``release`` goes on from a state)
            with m.Elif(lk_single):
                m.d.sync += st["Decide"].eq(1)  # (the next frame's lookup is done)
            with m.Else():
                m.d.comb += ahead_nx.eq(0)
                m.d.sync += st["Wait"].eq(1)

        # Delivery engine: the new header fields of the context handed over (``dsel``: its
        # fields as it was handed over; the context is free at once, its region stays in use
        # until the read-out's last read) in registered steps of one adder each, then into
        # ``dq`` for the read-out, which puts them into the frame's words as they leave. The
        # checksums are ones'-complement sums of everything; they are folded to 16 bits at the
        # end only.
        d_merged = Signal()  # the context holds more than one segment: its header changes
        with m.FSM(init="Idle", name="deliver"):
            with m.State("Idle"):
                with m.If(d_start):
                    m.next = "Deliver Sums"
            with m.State("Deliver Sums"):
                tcp_len = (dsel["held_len"] - dsel["l4"])[:16]
                ip_len = (dsel["held_len"] - dsel["l3"])[:16]
                # end_flags has PSH and FIN only: adding 6 (the pseudo-header's protocol) is
                # an OR.
                flags_add6 = (dsel["end_flags"] & ~dsel["flags"] & 0x09) | 6
                m.d.sync += [
                    d_ip_len.eq(Mux(dsel["v6"], tcp_len, ip_len)),
                    d_tcp_len.eq(tcp_len),
                    d_pay.eq(dsel["pay_sum"][:16] + dsel["pay_sum"][16:]),
                    d_t1.eq(dsel["tcp_base"] + flags_add6),
                    d_pos[0].eq(dsel["l3"] + Mux(dsel["v6"], 4, 2)),
                    d_pos[1].eq(dsel["l3"] + 10),
                    d_pos[2].eq(dsel["l4"] + 13),
                    d_pos[3].eq(dsel["l4"] + 16),
                    d_words.eq((dsel["held_len"] + B - 1) >> LB),
                    d_keep.eq(((2 << (dsel["held_len"] - 1)[:LB]) - 1) if LB else 1),
                    d_gso.eq(Mux(dsel["count"] == 1, 0, dsel["mss"])),
                    d_merged.eq(dsel["count"] != 1),
                ]
                with m.If(dsel["count"] == 1):
                    m.next = "Read Out"
                with m.Else():
                    m.next = "Deliver Sums 2"
            with m.State("Deliver Sums 2"):
                m.d.sync += [
                    d_a.eq(dsel["addr_sum"] + d_tcp_len),
                    d_b.eq(d_t1 + d_pay),
                    d_ip_raw.eq(dsel["ip_base"] + d_ip_len),
                ]
                m.next = "Deliver Sums 3"
            with m.State("Deliver Sums 3"):
                m.d.sync += [
                    d_tcp_raw.eq(d_a + d_b),
                    d_ip_f1.eq(d_ip_raw[:16] + d_ip_raw[16]),
                ]
                m.next = "Deliver Fold"
            with m.State("Deliver Fold"):
                m.d.sync += [
                    d_tcp_f1.eq(d_tcp_raw[:16] + d_tcp_raw[16:]),
                    d_ip_csum.eq(~(d_ip_f1[:16] + d_ip_f1[16])),
                ]
                m.next = "Deliver Fold 2"
            with m.State("Deliver Fold 2"):
                m.d.sync += d_tcp_csum.eq(~(d_tcp_f1[:16] + d_tcp_f1[16]))
                m.next = "Read Out"
            with m.State("Read Out"):
                # Into ``dq``: the read-out starts when it is the head of ``rq`` (below).
                with m.If(dq.w_rdy):
                    m.d.comb += dq.w_en.eq(1)
                    m.d.sync += d_busy.eq(0)
                    m.next = "Idle"
        # (A single segment leaves as it came: no field is replaced.)
        m.d.comb += [
            dq_in.ctx.eq(dsel["region"]), dq_in.words.eq(d_words), dq_in.keep.eq(d_keep),
            dq_in.user.eq(Cat(dsel["count"], d_gso, e_idx)),
            dq_in.pe.eq(Mux(d_merged, Cat(Const(1, 1), ~dsel["v6"], Const(0b11, 2)), 0)),
            dq_in.v0.eq(d_ip_len), dq_in.v1.eq(d_ip_csum),
            dq_in.v2.eq(dsel["flags"] | dsel["end_flags"]), dq_in.v3.eq(d_tcp_csum),
            *(dq_in[f"p{f}"].eq(d_pos[f]) for f in range(4)),
            rq_in.single.eq(~st["Deliver"]), rq_in.start.eq(cur.start), rq_in.end.eq(cur.end),
            rq_in.words.eq(cur.words), rq_in.keep.eq(cur.keep), rq_in.idx.eq(idx_now),
        ]

        # Read-outs start in the order of ``rq`` once the one before has issued its last read
        # (the reads go on in the background): a frame that passes unchanged at once (from
        # ``staging_out``), a delivery once its fields are in ``dq``
        # and the copies into its context have issued their reads (they come later than their
        # last writes; copies into other contexts go on).
        start_single = Signal()
        start_deliv = Signal()
        # (The read-out is free in the cycle of its last read: ``o_one`` and ``o_room``.)
        o_free = Signal()
        m.d.comb += [
            o_free.eq(~o_nz | (o_one & o_room)),
            start_single.eq(rq.r_rdy & rq_head.single & o_free),
            start_deliv.eq(rq.r_rdy & ~rq_head.single & dq.r_rdy & o_free
                           & ~copying(dq_head.ctx)),
            rq.r_en.eq(start_single | start_deliv), dq.r_en.eq(start_deliv),
        ]
        o_end = Signal(SP + 1)  # the end of the frame read out of the staging ring
        with m.If(start_single):
            start_out(0, rq_head.start, rq_head.words, rq_head.keep,
                      Cat(Const(1, 16), Const(0, 16), rq_head.idx))
            m.d.sync += o_end.eq(rq_head.end)
        with m.If(start_deliv):
            start_out(1, dq_head.ctx << RP if RC > 1 else 0, dq_head.words, dq_head.keep,
                      dq_head.user,
                      patches=(dq_head.pe, [(dq_head[f"v{f}"], dq_head[f"p{f}"])
                                            for f in range(4)]))
            m.d.sync += o_rctx.eq(dq_head.ctx)
        # A region is free again with its read-out's last read.
        for r in range(RC):
            with m.If(issue & o_one & o_region & (o_rctx == r)):
                m.d.sync += rused[r].eq(0)
            with m.If(st["Hold"] & (h_reg == r)):
                m.d.sync += rused[r].eq(1)

        # The staging ring's words are freed in order: up to the end of the last frame the
        # merge engine took from the FIFO once no copy runs or waits (the copy engine frees
        # its frame's words with its last read), except from ``pin_head`` on while frames
        # queued to pass unchanged wait for their last reads (``pins``; a frame of no words
        # has none).
        done_end = Signal(SP + 1)
        with m.If(pop):
            m.d.sync += done_end.eq(Mux(st["Chain"], nxt.end, cur.end))
        with m.If(cp_idle):
            m.d.sync += rd_ptr.eq(done_end)
        # (In one cycle, the last read of a frame read out and the start of a frame of no
        # words may both drop a pin.)
        pin_last = Signal()
        pin_none = Signal()
        m.d.comb += [pin_last.eq(issue & o_one & ~o_region),
                     pin_none.eq(start_single & (rq_head.words == 0))]
        m.d.sync += pins.eq(pins + pin_add - pin_last - pin_none)
        with m.If(pin_none):
            m.d.sync += pin_head.eq(rq_head.end)
        with m.Elif(pin_last):
            m.d.sync += pin_head.eq(o_end)
        with m.If(pin_add & (pins == 0)):
            m.d.sync += pin_head.eq(cur.start)

        with m.If(~st["Wait"]):
            m.d.sync += settled.eq(0)

        # ------------------------------------------------------------------ registers
        names = [r.name for r in REGISTERS]
        addr_sel = Signal(len(names))
        m.d.sync += addr_sel.eq(Cat(*(self.bus.addr == r.offset for r in REGISTERS)))
        values = {**cnt, "TIMEOUT": timeout}
        m.d.comb += self.bus.r_data.eq(
            Cat(*(Cat(*(addr_sel[n] & values[name][bit] for n, name in enumerate(names))).any()
                  for bit in range(32))))
        with m.Switch(self.bus.addr):
            for r in REGISTERS:
                with m.Case(r.offset):
                    if r.access == "ro":
                        m.d.comb += self.bus.err.eq(self.bus.w_en)
                    else:
                        with m.If(self.bus.w_en):
                            m.d.sync += timeout.eq(self.bus.w_data)
            with m.Default():
                m.d.comb += self.bus.err.eq(self.bus.w_en | self.bus.r_en)
        return m
