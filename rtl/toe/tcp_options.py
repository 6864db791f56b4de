# Ref: RFC 9293 §3.2 (TCP options: end of list, NOP, kind-length-value), §3.7.1 (MSS),
#      RFC 7323 §2.2-§2.3 (window scale, capped at 14); Linux tcp_parse_options()
"""TCP option walker of the session engine: MSS and window scale of a SYN.

It does what :func:`nicsim.hw.ref.tcp.parse_options` does, option by option: end of list stops,
NOP takes one byte, any other option needs a length byte of at least 2 that fits in the option
bytes; a malformed option ends the walk and keeps what was found before; a later copy of an
option overrides an earlier one; the window scale is capped at 14. One option a cycle: a SYN's
options take at most 40 cycles.
"""

from amaranth.hdl import Array, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["MAX_OPTION_BYTES", "TcpOptionParser"]

MAX_OPTION_BYTES = 40  # data offset of 15 words minus the 20-byte header


class TcpOptionParser(wiring.Component):
    """Walk up to 40 option bytes; report MSS and window scale.

    Members
    -------
    i : In(stream)
        ``options`` (byte ``k`` at bits ``8k..8k+7``) and ``length`` (0 to 40).
    o : Out(stream)
        ``mss_present``, ``mss``, ``ws_present``, ``ws``.
    """

    def __init__(self):
        super().__init__({
            "i": In(stream.Signature(data.StructLayout({
                "options": 8 * MAX_OPTION_BYTES, "length": range(MAX_OPTION_BYTES + 1)}))),
            "o": Out(stream.Signature(data.StructLayout({
                "mss_present": 1, "mss": 16, "ws_present": 1, "ws": 4}))),
        })

    def elaborate(self, platform):
        m = Module()
        opts = Array(Signal(8, name=f"opt{k}") for k in range(MAX_OPTION_BYTES + 3))
        length = Signal(range(MAX_OPTION_BYTES + 1))
        ptr = Signal(range(MAX_OPTION_BYTES + 256))
        result = Signal.like(self.o.payload)

        kind = opts[ptr]
        size = opts[ptr + 1]
        value_hi = opts[ptr + 2]
        value_lo = opts[ptr + 3]

        with m.FSM():
            with m.State("Idle"):
                m.d.comb += self.i.ready.eq(1)
                with m.If(self.i.valid):
                    for k in range(MAX_OPTION_BYTES):
                        m.d.sync += opts[k].eq(self.i.payload.options[8 * k:8 * k + 8])
                    m.d.sync += [length.eq(self.i.payload.length), ptr.eq(0), result.eq(0)]
                    m.next = "Walk"
            with m.State("Walk"):
                with m.If((ptr >= length) | (kind == 0)):
                    m.next = "Done"
                with m.Elif(kind == 1):
                    m.d.sync += ptr.eq(ptr + 1)
                with m.Elif((ptr + 1 >= length) | (size < 2) | (ptr + size > length)):
                    m.next = "Done"
                with m.Else():
                    with m.If((kind == 2) & (size == 4)):
                        m.d.sync += [result.mss_present.eq(1),
                                     result.mss.eq((value_hi << 8) | value_lo)]
                    with m.Elif((kind == 3) & (size == 3)):
                        m.d.sync += [result.ws_present.eq(1),
                                     result.ws.eq(Mux(value_hi > 14, 14, value_hi))]
                    m.d.sync += ptr.eq(ptr + size)
            with m.State("Done"):
                m.d.comb += [self.o.valid.eq(1), self.o.payload.eq(result)]
                with m.If(self.o.ready):
                    m.next = "Idle"
        return m
