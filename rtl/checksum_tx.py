# Ref: RFC 1071, RFC 1624, RFC 791 §3.1, RFC 9293 §3.1, RFC 768, RFC 8200 §8.1; Linux
#      include/linux/skbuff.h (CHECKSUM_PARTIAL) and net/core/dev.c skb_checksum_help()
"""Transmit checksum offload: insert checksums into frames on their way out (store and forward).

Each frame carries a command on its first beat (:class:`~.checksum_common.TxCommandLayout`):
off, ``PARTIAL`` (the Linux ``csum_start``/``csum_offset`` contract) or automatic (fill the
IPv4 header checksum and the TCP/UDP checksum). The rules are those of
:func:`nicsim.hw.ref.checksum.tx_checksum`.

Frames are written into a circular buffer while :class:`~.checksum_common.ChecksumFront` sums
them; one decision per frame (send with these two 16-bit fields replaced, or drop and skip its
beats) enters a queue, and a reader streams the frames out of the buffer, replacing the bytes on
the fly. With frames of equal length, 256 bytes or more, both sides move one beat every cycle
without gaps between frames.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from .axil import RegisterBusSignature
from .checksum_common import (
    POS_BITS,
    TX_USER_WIDTH,
    ChecksumFront,
    CreditedFIFO,
    TxCommandLayout,
    counter_registers,
    swap16,
)
from .regs import Register
from .stream import beat_signature, check_width

__all__ = ["REGISTERS", "COUNTERS", "MODE_OFF", "MODE_PARTIAL", "MODE_AUTO", "ChecksumTx"]

#: Read-only 32-bit counters (wrapping), by byte address. Writes and other addresses: SLVERR.
COUNTERS = {
    "frames_in": 0x00,
    "frames_out": 0x04,
    "drop_oversize": 0x08,
    "drop_bad_command": 0x0C,
    "drop_malformed": 0x10,
}
_COUNTER_DOCS = {
    'frames_in': 'frames accepted',
    'frames_out': 'frames sent',
    'drop_oversize': 'frames dropped: longer than max_frame',
    'drop_bad_command': 'frames dropped: csum_start + csum_offset + 2 past the end, or mode 3',
    'drop_malformed': 'frames dropped: tkeep holes',
}

#: The register map (see :mod:`.regs`): every counter read-only, 32 bits, wrapping.
REGISTERS = tuple(
    Register(name.upper(), offset, 1, "ro", _COUNTER_DOCS[name])
    for name, offset in COUNTERS.items()
)

MODE_OFF = 0
MODE_PARTIAL = 1
MODE_AUTO = 2

_CSUM_MANGLED_0 = 0xFFFF  # RFC 768: a computed 0 is sent as -0
_OUT_DEPTH = 8  # beats between the buffer and ``o``; covers the credit loop at full rate


class ChecksumTx(wiring.Component):
    """Insert IPv4/TCP/UDP checksums into frames to transmit.

    Parameters
    ----------
    width : int
        Data width in bits (64, 128, 256 or 512).
    max_frame : int
        Longest frame sent, in bytes; longer frames are swallowed and counted.
    queue_depth : int
        Frames whose decision may wait for the reader; ``i.ready`` drops beyond.

    Members
    -------
    i : In(beat stream, user_width=34)
        Frames, with the command in ``user`` of the first beat: ``user[15:0]`` csum_start,
        ``user[31:16]`` csum_offset, ``user[33:32]`` mode (0 off, 1 partial, 2 auto; 3 is a bad
        command). A frame with a ``keep`` hole is dropped.
    o : Out(beat stream, user_width=2)
        Frames sent, ``keep`` all ones but on the last beat; ``user[0]`` the IPv4 header
        checksum was written, ``user[1]`` a TCP/UDP (or ``PARTIAL``) checksum was written, on
        every beat of the frame.
    bus : In(RegisterBusSignature(8))
        Counters, see :data:`REGISTERS`.
    """

    def __init__(self, width=64, *, max_frame=9018, queue_depth=16):
        self.width = check_width(width)
        if not 1 <= max_frame <= 1 << 16:
            raise ValueError(f"Maximum frame length must be between 1 and 65536 bytes, "
                             f"not {max_frame!r}")
        if queue_depth < 2:
            raise ValueError(f"Queue depth must be at least 2, not {queue_depth!r}")
        self.max_frame = max_frame
        self.queue_depth = queue_depth
        lanes = width // 8
        max_beats = -(-max_frame // lanes)
        self.buffer_depth = 1 << (2 * max_beats + 1).bit_length()  # over two frames
        super().__init__({
            "i": In(beat_signature(width, TX_USER_WIDTH)),
            "o": Out(beat_signature(width, 2)),
            "bus": In(RegisterBusSignature(8)),
        })

    def elaborate(self, platform):
        m = Module()
        width, lanes = self.width, self.width // 8
        shift = exact_log2(lanes)
        depth = self.buffer_depth
        addr_bits = exact_log2(depth)
        ptr_bits = addr_bits + 1  # one wrap bit tells full from empty
        last_kept = self.max_frame // lanes  # beats after this index are never stored

        byte_layout = data.StructLayout({  # one byte to replace
            "en": unsigned(1),
            "beat": unsigned(ptr_bits),
            "lane": unsigned(shift),
            "value": unsigned(8),
        })
        decision_layout = data.StructLayout({
            "drop": unsigned(1),
            "last_index": unsigned(ptr_bits),  # last beat stored in the buffer
            "last_index_m1": unsigned(ptr_bits),
            "single": unsigned(1),  # one beat
            "last_bytes": unsigned(shift + 1),
            "user": unsigned(2),
            "ip_hi": byte_layout, "ip_lo": byte_layout, "l4_hi": byte_layout, "l4_lo": byte_layout,
        })
        replaced = ("ip_hi", "ip_lo", "l4_hi", "l4_lo")
        out_layout = data.StructLayout({
            "data": unsigned(width),
            "keep": unsigned(lanes),
            "last": unsigned(1),
            "user": unsigned(2),
        })

        m.submodules.front = front = ChecksumFront(width, transmit=True)
        queue_depth = 1 << (self.queue_depth - 1).bit_length()
        m.submodules.commands = commands = CreditedFIFO(TX_USER_WIDTH, queue_depth)
        m.submodules.queue = queue = CreditedFIFO(decision_layout.size, queue_depth)
        m.submodules.out_fifo = out_fifo = CreditedFIFO(out_layout.size, _OUT_DEPTH)
        m.submodules.buffer = buffer = Memory(shape=unsigned(width), depth=depth, init=[])
        w_port = buffer.write_port()
        r_port = buffer.read_port()

        counters = {name: Signal(32, name=name) for name in COUNTERS}

        # ---- Write side: every frame enters the buffer, up to max_frame bytes' worth of beats.
        wp = Signal(ptr_bits)
        rp = Signal(ptr_bits)
        mid_frame = Signal()
        index = Signal(range(last_kept + 2))
        swallow = Signal()  # the rest of this frame is not stored
        room = Signal(init=1)  # a beat fits (from last cycle's pointers: one beat of margin)
        credit = Signal(init=1)  # a decision fits (likewise, one frame of margin)
        credits = Signal(range(self.queue_depth + 1), init=self.queue_depth)
        admit = credit & (room | swallow)
        m.d.comb += [
            front.i.payload.eq(self.i.payload),
            front.i.valid.eq(self.i.valid & admit),
            self.i.ready.eq(admit),
        ]
        beat = self.i.payload
        accept = self.i.valid & admit
        m.d.comb += [
            w_port.addr.eq(wp[:addr_bits]),
            w_port.data.eq(beat.data),
            w_port.en.eq(accept & ~swallow),
            commands.w_data.eq(beat.user),
            commands.w_en.eq(accept & ~mid_frame),  # credits guarantee room
        ]
        m.d.sync += room.eq((wp - rp)[:ptr_bits] < depth - 1)
        with m.If(accept):
            m.d.sync += mid_frame.eq(~beat.last)
            with m.If(~swallow):
                m.d.sync += wp.eq(wp + 1)
            with m.If(beat.last):
                m.d.sync += [index.eq(0), swallow.eq(0)]
                m.d.sync += counters["frames_in"].eq(counters["frames_in"] + 1)
            with m.Else():
                m.d.sync += [index.eq(index + ~swallow), swallow.eq(swallow | (index == last_kept))]

        # ---- Decide per frame from its summary, in three steps.
        summary = front.summary.payload
        command = TxCommandLayout(commands.r_data)
        m.d.comb += commands.r_en.eq(front.summary.valid)
        d1 = Signal()
        m.d.sync += d1.eq(front.summary.valid)
        s1 = Signal.like(summary, name="decide1")
        mode1 = Signal(2)
        odd1 = Signal()
        field1 = Signal(POS_BITS)
        with m.If(front.summary.valid):
            m.d.sync += [
                s1.eq(summary),
                mode1.eq(command.mode),
                odd1.eq(command.csum_start[0]),
                field1.eq(command.csum_start + command.csum_offset),
            ]

        d2 = Signal()
        m.d.sync += d2.eq(d1)
        partial = mode1 == MODE_PARTIAL
        auto = mode1 == MODE_AUTO
        last_pos = Cat((s1.last_bytes - 1)[:shift], s1.last_beat)  # length - 1 if well formed
        partial_value = ~Mux(odd1, swap16(s1.sum_a), s1.sum_a)
        l4_value = ~s1.l4_sum
        step2 = {
            "oversize": (s1.last_beat > last_kept)
                        | ((s1.last_beat == last_kept)
                           & (s1.last_bytes > self.max_frame % lanes)),
            "malformed": s1.malformed,
            "bad_command": (mode1 == 3) | (partial & (field1 >= last_pos)),
            "last_index": Mux(s1.last_beat > last_kept, last_kept, s1.last_beat),
            "last_bytes": s1.last_bytes,
            "ip_en": auto & s1.ip_header_ok,
            "ip_pos": s1.ip_pos,
            "ip_value": ~s1.ip_sum,
            "l4_en": partial | (auto & s1.seg_ok),
            "l4_pos": Mux(partial, field1, s1.l4_pos),
            "l4_value": Mux(partial, Mux(partial_value == 0, _CSUM_MANGLED_0, partial_value),
                            # RFC 768 / RFC 8200 §8.1: UDP 0 means none, TCP keeps 0.
                            Mux(s1.is_udp & (l4_value == 0), _CSUM_MANGLED_0, l4_value)),
        }
        r2 = {}
        for name, value in step2.items():
            r2[name] = Signal(value.shape(), name=f"{name}_decide2")
            with m.If(d1):
                m.d.sync += r2[name].eq(value)

        decision = Signal(decision_layout)
        push = Signal()
        m.d.sync += push.eq(d2)
        l4_lo_pos = r2["l4_pos"] + 1  # an odd PARTIAL field may straddle two beats
        with m.If(d2):
            m.d.sync += [
                decision.drop.eq(r2["oversize"] | r2["malformed"] | r2["bad_command"]),
                decision.last_index.eq(r2["last_index"]),
                decision.last_index_m1.eq(r2["last_index"] - 1),
                decision.single.eq(r2["last_index"] == 0),
                decision.last_bytes.eq(r2["last_bytes"]),
                decision.user.eq(Cat(r2["ip_en"], r2["l4_en"])),
            ]
            for name, en, pos, value in (
                    ("ip_hi", r2["ip_en"], r2["ip_pos"], r2["ip_value"][8:16]),
                    ("ip_lo", r2["ip_en"], r2["ip_pos"] + 1, r2["ip_value"][0:8]),
                    ("l4_hi", r2["l4_en"], r2["l4_pos"], r2["l4_value"][8:16]),
                    ("l4_lo", r2["l4_en"], l4_lo_pos, r2["l4_value"][0:8])):
                m.d.sync += [
                    decision[name].en.eq(en),
                    decision[name].beat.eq(pos[shift:]),
                    decision[name].lane.eq(pos[:shift]),
                    decision[name].value.eq(value),
                ]
            with m.If(r2["oversize"]):
                m.d.sync += counters["drop_oversize"].eq(counters["drop_oversize"] + 1)
            with m.Elif(r2["malformed"]):
                m.d.sync += counters["drop_malformed"].eq(counters["drop_malformed"] + 1)
            with m.Elif(r2["bad_command"]):
                m.d.sync += counters["drop_bad_command"].eq(counters["drop_bad_command"] + 1)
        m.d.comb += [
            queue.w_data.eq(decision.as_value()),
            queue.w_en.eq(push),  # credits guarantee room
        ]

        # ---- Reader: stream the buffer out, one frame after another.
        head = data.View(decision_layout, queue.r_data)
        beat_index = Signal(ptr_bits)  # of the head frame, to read next
        fresh = Signal(init=1)  # no beat of the head issued yet
        last_next = Signal()  # the next beat of the head is its last (once not fresh)
        can_issue = Signal(init=1)  # room in out_fifo (from last cycle's count)
        out_credits = Signal(range(_OUT_DEPTH + 1), init=_OUT_DEPTH)
        is_last = Mux(fresh, head.single, last_next)
        issue = queue.r_rdy & ~head.drop & can_issue
        done = queue.r_rdy & (head.drop | (issue & is_last))
        m.d.comb += [
            queue.r_en.eq(done),
            r_port.addr.eq(rp[:addr_bits]),
            r_port.en.eq(issue),
        ]
        m.d.sync += fresh.eq(done | ~queue.r_rdy | (fresh & ~issue))
        with m.If(done | ~queue.r_rdy):
            m.d.sync += beat_index.eq(0)
        with m.Elif(issue):
            m.d.sync += [beat_index.eq(beat_index + 1),
                         last_next.eq(beat_index == head.last_index_m1)]
        with m.If(queue.r_rdy & head.drop):
            m.d.sync += rp.eq(rp + head.last_index + 1)
        with m.Elif(issue):
            m.d.sync += rp.eq(rp + 1)
        frame_in = accept & beat.last
        m.d.sync += [credits.eq(credits - frame_in + done), credit.eq(credits > 1)]

        # What the beat read this cycle needs when its data arrives: the block RAM's data goes
        # straight into flip-flops (its clock-to-output time leaves no room for logic), and the
        # bytes are replaced in the cycle after.
        in_flight = Signal()
        read = Signal()
        read_data = Signal(width)
        meta_last = Signal()
        meta_keep = Signal(lanes)
        meta_user = Signal(2)
        hits = {name: Signal(lanes, name=f"hit_{name}") for name in replaced}
        values = {name: Signal(8, name=f"value_{name}") for name in replaced}
        m.d.sync += [in_flight.eq(issue), read.eq(in_flight), read_data.eq(r_port.data)]
        issued = {  # registered at issue, then again with the data
            "last": is_last,
            "keep": Mux(is_last, Cat(*(head.last_bytes > j for j in range(lanes))),
                        Const((1 << lanes) - 1, lanes)),
            "user": head.user,
        }
        for name in replaced:
            slot = head[name]
            issued[f"value_{name}"] = slot.value
            issued[f"hit_{name}"] = Mux(slot.en & (beat_index == slot.beat),
                                        (Const(1, lanes) << slot.lane)[:lanes], 0)
        first = {n: Signal.like(Value.cast(v), name=f"{n}_issued") for n, v in issued.items()}
        with m.If(issue):
            m.d.sync += [first[n].eq(v) for n, v in issued.items()]
        m.d.sync += [meta_last.eq(first["last"]), meta_keep.eq(first["keep"]),
                     meta_user.eq(first["user"])]
        for name in replaced:
            m.d.sync += [values[name].eq(first[f"value_{name}"]),
                         hits[name].eq(first[f"hit_{name}"])]

        # Replace the checksum bytes (network byte order: high byte first).
        out_beat = Signal(out_layout)
        lanes_out = []
        for j in range(lanes):
            byte = read_data.word_select(j, 8)
            for name in replaced:
                byte = Mux(hits[name][j], values[name], byte)
            lanes_out.append(byte)
        m.d.comb += [
            out_beat.data.eq(Cat(*lanes_out)),
            out_beat.keep.eq(meta_keep),
            out_beat.last.eq(meta_last),
            out_beat.user.eq(meta_user),
            out_fifo.w_data.eq(out_beat.as_value()),
            out_fifo.w_en.eq(read),  # credits guarantee room
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
        m.d.sync += [out_credits.eq(out_credits - issue + out), can_issue.eq(out_credits > 1)]
        with m.If(out & self.o.payload.last):
            m.d.sync += counters["frames_out"].eq(counters["frames_out"] + 1)

        counter_registers(m, self.bus, COUNTERS, counters)
        return m
