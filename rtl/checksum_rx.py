# Ref: RFC 1071, RFC 791 §3.1, RFC 9293 §3.1, RFC 768, RFC 8200 §8.1; Linux
#      include/linux/skbuff.h (CHECKSUM_UNNECESSARY, CHECKSUM_COMPLETE)
"""Receive checksum offload: verify IPv4 header and TCP/UDP checksums, report CHECKSUM_COMPLETE.

A tap: the block watches a packet stream and reports one 32-bit result word per frame, in frame
order, with the rules of :func:`nicsim.hw.ref.checksum.rx_checksum`. It accepts one beat every
cycle at every width, back-to-back minimum-size frames included, as long as ``result`` is read.
"""

from amaranth.hdl import Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .axil import RegisterBusSignature
from .checksum_common import ChecksumFront, CreditedFIFO, counter_registers
from .regs import Register
from .stream import beat_signature, check_width

__all__ = [
    "REGISTERS", "COUNTERS", "STATUS_NONE", "STATUS_OK", "STATUS_BAD", "RxResultLayout",
    "ChecksumRx",
]

#: Read-only 32-bit counters (wrapping), by byte address. Writes and other addresses: SLVERR.
COUNTERS = {
    "frames": 0x00,
    "ip_ok": 0x04,
    "ip_bad": 0x08,
    "l4_ok": 0x0C,
    "l4_bad": 0x10,
    "malformed": 0x14,
}
_COUNTER_DOCS = {
    'frames': 'frames seen',
    'ip_ok': 'IPv4 header checksum verified',
    'ip_bad': 'IPv4 header bad (checksum, truncated, IHL < 5, length)',
    'l4_ok': 'TCP/UDP checksum verified',
    'l4_bad': 'TCP/UDP checksum wrong (or UDP checksum 0 over IPv6)',
    'malformed': 'frames with tkeep holes (reported NONE/NONE)',
}

#: The register map (see :mod:`.regs`): every counter read-only, 32 bits, wrapping.
REGISTERS = tuple(
    Register(name.upper(), offset, 1, "ro", _COUNTER_DOCS[name])
    for name, offset in COUNTERS.items()
)

STATUS_NONE = 0
STATUS_OK = 1
STATUS_BAD = 2


class RxResultLayout(data.Struct):
    """Result word of one received frame.

    Members
    -------
    csum_complete : unsigned(16)
        Folded ones'-complement sum of the bytes after the Ethernet/VLAN headers (0 for a
        malformed frame).
    ip : unsigned(2)
        IPv4 header checksum status: 0 none, 1 ok, 2 bad.
    l4 : unsigned(2)
        TCP/UDP checksum status: 0 none, 1 ok, 2 bad.
    """

    csum_complete: unsigned(16)
    ip: unsigned(2)
    l4: unsigned(2)
    reserved: unsigned(12)


class ChecksumRx(wiring.Component):
    """Verify the checksums of received frames.

    Parameters
    ----------
    width : int
        Data width in bits (64, 128, 256 or 512).
    result_depth : int
        Result words buffered while ``result`` is not ready; ``i.ready`` drops once that many
        frames wait for their result to be read.

    Members
    -------
    i : In(beat stream)
        Frames, byte 0 in ``data[0:8]``. A frame with a ``keep`` hole (a non-last beat not full,
        a last beat whose ``keep`` is not ``0..01..1``) is malformed: it reports ``ip`` and
        ``l4`` none and ``csum_complete`` 0.
    result : Out(stream of unsigned(32))
        One :class:`RxResultLayout` word per frame, in frame order.
    bus : In(RegisterBusSignature(8))
        Counters, see :data:`REGISTERS`.
    """

    def __init__(self, width=64, *, result_depth=32):
        self.width = check_width(width)
        if result_depth < 2:
            raise ValueError(f"Result depth must be at least 2, not {result_depth!r}")
        self.result_depth = result_depth
        super().__init__({
            "i": In(beat_signature(width)),
            "result": Out(stream.Signature(unsigned(32))),
            "bus": In(RegisterBusSignature(8)),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.front = front = ChecksumFront(self.width)
        m.submodules.results = results = CreditedFIFO(32, 1 << (self.result_depth - 1).bit_length())
        # (its memory and output register hold more than ``result_depth`` words)

        # Credits: room for the results of frames whose last beat has not gone in. ``admit``
        # looks at last cycle's count, so it keeps one frame of margin.
        credits = Signal(range(self.result_depth + 1), init=self.result_depth)
        admit = Signal(init=1)
        m.d.comb += [
            front.i.payload.eq(self.i.payload),
            front.i.valid.eq(self.i.valid & admit),
            self.i.ready.eq(front.i.ready & admit),
        ]
        frame_in = self.i.valid & self.i.ready & self.i.payload.last
        result_out = self.result.valid & self.result.ready
        m.d.sync += [
            credits.eq(credits + Mux(frame_in, Mux(result_out, 0, -1), result_out)),
            admit.eq(credits > 1),
        ]

        # Verdicts, in two steps: the sums' tests, then the rules that combine them.
        summary = front.summary.payload
        checked = Signal()
        malformed, ip_present, ip_header_ok, seg_ok, is_ipv6, is_udp, udp_zero = (
            Signal(name=n) for n in ("malformed", "ip_present", "ip_header_ok", "seg_ok",
                                     "is_ipv6", "is_udp", "udp_zero"))
        ip_sum_ok = Signal()
        l4_sum_ok = Signal()
        csum_complete = Signal(16)
        m.d.sync += checked.eq(front.summary.valid)
        with m.If(front.summary.valid):
            m.d.sync += [
                malformed.eq(summary.malformed),
                ip_present.eq(summary.ip_present),
                ip_header_ok.eq(summary.ip_header_ok),
                seg_ok.eq(summary.seg_ok),
                is_ipv6.eq(summary.is_ipv6),
                is_udp.eq(summary.is_udp),
                udp_zero.eq(summary.udp_check_zero),
                ip_sum_ok.eq(summary.ip_sum == 0xFFFF),
                l4_sum_ok.eq(summary.l4_sum == 0xFFFF),
                csum_complete.eq(Mux(summary.malformed, 0, summary.sum_a)),
            ]

        ip = Signal(2)
        l4 = Signal(2)
        with m.If(malformed | ~ip_present):
            m.d.comb += ip.eq(STATUS_NONE)
        with m.Elif(~ip_header_ok | ~ip_sum_ok):
            m.d.comb += ip.eq(STATUS_BAD)
        with m.Else():
            m.d.comb += ip.eq(STATUS_OK)
        with m.If(malformed | ~seg_ok | (~is_ipv6 & (ip != STATUS_OK))):
            m.d.comb += l4.eq(STATUS_NONE)
        with m.Elif(is_udp & udp_zero):
            # RFC 768: no checksum over IPv4; RFC 8200 §8.1: forbidden over IPv6.
            m.d.comb += l4.eq(Mux(is_ipv6, STATUS_BAD, STATUS_NONE))
        with m.Elif(l4_sum_ok):
            m.d.comb += l4.eq(STATUS_OK)
        with m.Else():
            m.d.comb += l4.eq(STATUS_BAD)

        word = Signal(RxResultLayout)
        push = Signal()
        counts = {name: Signal(name=f"count_{name}") for name in COUNTERS}
        m.d.sync += push.eq(checked)
        m.d.sync += [
            counts["frames"].eq(checked),
            counts["ip_ok"].eq(checked & (ip == STATUS_OK)),
            counts["ip_bad"].eq(checked & (ip == STATUS_BAD)),
            counts["l4_ok"].eq(checked & (l4 == STATUS_OK)),
            counts["l4_bad"].eq(checked & (l4 == STATUS_BAD)),
            counts["malformed"].eq(checked & malformed),
        ]
        with m.If(checked):
            m.d.sync += [word.csum_complete.eq(csum_complete), word.ip.eq(ip), word.l4.eq(l4)]
        m.d.comb += [
            results.w_data.eq(word.as_value()),
            results.w_en.eq(push),  # credits guarantee room
            self.result.payload.eq(results.r_data),
            self.result.valid.eq(results.r_rdy),
            results.r_en.eq(self.result.ready),
        ]

        counters = {name: Signal(32, name=name) for name in COUNTERS}
        m.d.sync += [counters[name].eq(counters[name] + counts[name]) for name in COUNTERS]
        counter_registers(m, self.bus, COUNTERS, counters)
        return m
