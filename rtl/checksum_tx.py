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

from amaranth.hdl import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, fifo, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .axil import RegisterBusSignature
from .checksum_common import (
    POS_BITS,
    TX_USER_WIDTH,
    ChecksumFront,
    TxCommandLayout,
    counter_registers,
    fold16,
    swap16,
    tree_sum,
)
from .stream import beat_signature, check_width

__all__ = ["REGISTERS", "MODE_OFF", "MODE_PARTIAL", "MODE_AUTO", "ChecksumTx"]

#: Read-only 32-bit counters (wrapping), by byte address. Writes and other addresses: SLVERR.
REGISTERS = {
    "frames_in": 0x00,
    "frames_out": 0x04,
    "drop_oversize": 0x08,
    "drop_bad_command": 0x0C,
    "drop_malformed": 0x10,
}

MODE_OFF = 0
MODE_PARTIAL = 1
MODE_AUTO = 2

_CSUM_MANGLED_0 = 0xFFFF  # RFC 768: a computed 0 is sent as -0
_IPV4_CHECKSUM_OFFSET = 10
_TCP_CHECKSUM_OFFSET = 16
_UDP_CHECKSUM_OFFSET = 6
_OUT_CREDITS = 4  # beats in flight from the buffer to ``o``


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
        self.buffer_depth = 1 << (2 * max_beats - 1).bit_length()  # at least two frames
        super().__init__({
            "i": In(beat_signature(width, TX_USER_WIDTH)),
            "o": Out(beat_signature(width, 2)),
            "bus": In(RegisterBusSignature(8)),
        })

    def elaborate(self, platform):
        m = Module()
        width, lanes = self.width, self.width // 8
        shift = lanes.bit_length() - 1
        depth = self.buffer_depth
        addr_bits = depth.bit_length() - 1
        ptr_bits = addr_bits + 1  # one wrap bit tells full from empty

        slot_layout = data.StructLayout({
            "en": unsigned(1),
            "pos": unsigned(POS_BITS),
            "value": unsigned(16),
        })
        decision_layout = data.StructLayout({
            "drop": unsigned(1),
            "beats": unsigned(ptr_bits),  # in the buffer (0 for a swallowed frame)
            "last_bytes": unsigned(shift + 1),
            "ip_inserted": unsigned(1),
            "l4_inserted": unsigned(1),
            "slot0": slot_layout,
            "slot1": slot_layout,
        })
        out_layout = data.StructLayout({
            "data": unsigned(width),
            "keep": unsigned(lanes),
            "last": unsigned(1),
            "user": unsigned(2),
        })

        m.submodules.front = front = ChecksumFront(width, transmit=True)
        m.submodules.queue = queue = fifo.SyncFIFOBuffered(width=decision_layout.size,
                                                           depth=self.queue_depth)
        m.submodules.out_fifo = out_fifo = fifo.SyncFIFOBuffered(width=out_layout.size,
                                                                 depth=_OUT_CREDITS + 1)
        m.submodules.buffer = buffer = Memory(shape=unsigned(width), depth=depth, init=[])
        w_port = buffer.write_port()
        r_port = buffer.read_port()

        counters = {name: Signal(32, name=name) for name in REGISTERS}

        # ---- Write side: every frame enters the buffer, but frames longer than max_frame.
        wp = Signal(ptr_bits)
        rp = Signal(ptr_bits)
        frame_start = Signal(ptr_bits)
        mid_frame = Signal()
        swallow = Signal()
        seen = Signal(range(self.max_frame + 2 * lanes + 1))  # bytes of earlier beats
        credits = Signal(range(self.queue_depth + 1), init=self.queue_depth)
        space = (wp - rp)[:ptr_bits] != depth
        admit = (credits != 0) & (space | swallow)
        m.d.comb += [
            front.i.payload.eq(self.i.payload),
            front.i.valid.eq(self.i.valid & admit),
            self.i.ready.eq(front.i.ready & admit),
        ]
        beat = self.i.payload
        accept = self.i.valid & self.i.ready
        first = ~mid_frame
        keep_bytes = tree_sum(beat.keep[j] for j in range(lanes))
        seen_now = Mux(first, 0, seen)
        grown = seen_now + Mux(beat.last, keep_bytes, lanes)
        over = grown > self.max_frame
        start_now = Mux(first, wp, frame_start)
        m.d.comb += [
            w_port.addr.eq(wp[:addr_bits]),
            w_port.data.eq(Cat(*(Mux(beat.keep[j], beat.data.word_select(j, 8), 0)
                                 for j in range(lanes)))),
            w_port.en.eq(accept & ~swallow & ~over),
        ]
        with m.If(accept):
            m.d.sync += [
                mid_frame.eq(~beat.last),
                frame_start.eq(start_now),
                seen.eq(Mux(over, seen_now, grown)),
            ]
            with m.If(beat.last):
                m.d.sync += swallow.eq(0)
                with m.If(swallow | over):
                    m.d.sync += wp.eq(start_now)  # rewind: the frame was never complete
                with m.Else():
                    m.d.sync += wp.eq(wp + 1)
                m.d.sync += counters["frames_in"].eq(counters["frames_in"] + 1)
            with m.Elif(swallow | over):
                m.d.sync += swallow.eq(1)
            with m.Else():
                m.d.sync += wp.eq(wp + 1)

        # ---- Decide per frame from its summary: drop, or the fields to replace.
        summary = front.summary.payload
        command = TxCommandLayout(summary.user)
        length = summary.length
        oversize = length > self.max_frame
        partial = command.mode == MODE_PARTIAL
        auto = command.mode == MODE_AUTO
        field = command.csum_start + command.csum_offset
        bad_command = (command.mode == 3) | (partial & (field + 2 > length))
        partial_sum = Mux(summary.a_odd, swap16(summary.sum_a), summary.sum_a)
        partial_value = ~partial_sum
        ip_value = ~fold16(summary.ip_sum + ~summary.ip_field)
        l4_value = ~fold16(summary.l4_sum + ~summary.l4_field)
        l4_offset = Mux(summary.is_udp, _UDP_CHECKSUM_OFFSET, _TCP_CHECKSUM_OFFSET)

        decision = Signal(decision_layout)
        push = Signal()
        m.d.sync += push.eq(front.summary.valid)
        with m.If(front.summary.valid):
            ip_inserted = auto & summary.ip_header_ok
            l4_auto = auto & summary.seg_ok
            m.d.sync += [
                decision.drop.eq(oversize | summary.malformed | bad_command),
                decision.beats.eq(Mux(oversize, 0, summary.beats)),
                decision.last_bytes.eq((length - 1)[:shift] + 1),
                decision.ip_inserted.eq(ip_inserted),
                decision.l4_inserted.eq(partial | l4_auto),
                decision.slot0.en.eq(ip_inserted),
                decision.slot0.pos.eq(summary.l3 + _IPV4_CHECKSUM_OFFSET),
                decision.slot0.value.eq(ip_value),
                decision.slot1.en.eq(partial | l4_auto),
                decision.slot1.pos.eq(Mux(partial, field, summary.l4_start + l4_offset)),
            ]
            with m.If(partial):
                m.d.sync += decision.slot1.value.eq(
                    Mux(partial_value == 0, _CSUM_MANGLED_0, partial_value))
            with m.Else():
                # RFC 768 / RFC 8200 §8.1: a UDP checksum of 0 means none; TCP keeps 0.
                m.d.sync += decision.slot1.value.eq(
                    Mux(summary.is_udp & (l4_value == 0), _CSUM_MANGLED_0, l4_value))
            with m.If(oversize):
                m.d.sync += counters["drop_oversize"].eq(counters["drop_oversize"] + 1)
            with m.Elif(summary.malformed):
                m.d.sync += counters["drop_malformed"].eq(counters["drop_malformed"] + 1)
            with m.Elif(bad_command):
                m.d.sync += counters["drop_bad_command"].eq(counters["drop_bad_command"] + 1)
        m.d.comb += [
            queue.w_data.eq(decision.as_value()),
            queue.w_en.eq(push),  # credits guarantee room
        ]

        # ---- Reader: stream the buffer out, one frame after another.
        head = data.View(decision_layout, queue.r_data)
        index = Signal(ptr_bits)  # beat of the head frame to read next
        in_flight = Signal()
        can_issue = out_fifo.level + in_flight < _OUT_CREDITS
        issue = Signal()
        pop = Signal()
        is_last = index == head.beats - 1
        with m.If(queue.r_rdy):
            with m.If(head.drop):
                m.d.comb += pop.eq(1)
                m.d.sync += rp.eq(rp + head.beats)
            with m.Elif(can_issue):
                m.d.comb += [issue.eq(1), pop.eq(is_last)]
                m.d.sync += [rp.eq(rp + 1), index.eq(Mux(is_last, 0, index + 1))]
        m.d.comb += [
            queue.r_en.eq(pop),
            r_port.addr.eq(rp[:addr_bits]),
            r_port.en.eq(issue),
        ]
        frame_in = accept & beat.last
        m.d.sync += credits.eq(credits - frame_in + pop)

        # What the beat read this cycle needs next cycle, when its data arrives.
        meta_last = Signal()
        meta_keep = Signal(lanes)
        meta_user = Signal(2)
        hits = [Signal(lanes, name=f"hit{n}_{half}") for n in range(2) for half in ("hi", "lo")]
        values = [Signal(16, name=f"value{n}") for n in range(2)]
        m.d.sync += in_flight.eq(issue)
        with m.If(issue):
            thermometer = Cat(*(head.last_bytes > j for j in range(lanes)))
            m.d.sync += [
                meta_last.eq(is_last),
                meta_keep.eq(Mux(is_last, thermometer, Const((1 << lanes) - 1, lanes))),
                meta_user.eq(Cat(head.ip_inserted, head.l4_inserted)),
            ]
            for n, slot in enumerate((head.slot0, head.slot1)):
                m.d.sync += values[n].eq(slot.value)
                for half, pos in enumerate((slot.pos, slot.pos + 1)):
                    here = slot.en & (index == pos[shift:])
                    m.d.sync += hits[2 * n + half].eq(
                        Cat(*(here & (pos[:shift] == j) for j in range(lanes))))

        # Replace the checksum bytes (network byte order: high byte first).
        out_beat = Signal(out_layout)
        lanes_out = []
        for j in range(lanes):
            byte = r_port.data.word_select(j, 8)
            for n in range(2):
                byte = Mux(hits[2 * n][j], values[n][8:16],
                           Mux(hits[2 * n + 1][j], values[n][0:8], byte))
            lanes_out.append(byte)
        m.d.comb += [
            out_beat.data.eq(Cat(*lanes_out)),
            out_beat.keep.eq(meta_keep),
            out_beat.last.eq(meta_last),
            out_beat.user.eq(meta_user),
            out_fifo.w_data.eq(out_beat.as_value()),
            out_fifo.w_en.eq(in_flight),  # credits guarantee room
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
        with m.If(self.o.valid & self.o.ready & self.o.payload.last):
            m.d.sync += counters["frames_out"].eq(counters["frames_out"] + 1)

        counter_registers(m, self.bus, REGISTERS, counters)
        return m
