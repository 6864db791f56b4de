"""A pipeline register slice with one scratch register: the smallest design of the flow.

It checks the tool flow end to end (Amaranth -> Verilog -> Verilator -> cocotb, and synthesis)
without depending on an offload engine.
"""

from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .axil import RegisterBusSignature
from .stream import beat_signature, check_width

__all__ = ["Passthrough"]


class Passthrough(wiring.Component):
    """Forward a packet stream through one register stage.

    Parameters
    ----------
    width : int
        Data width in bits.

    Members
    -------
    i : In(beat stream)
        Frames in.
    o : Out(beat stream)
        The same frames, one cycle later.
    bus : In(RegisterBusSignature(8))
        Register 0x00: scratch (read/write); 0x04: beats forwarded (read-only).
    """

    def __init__(self, width=64):
        self.width = check_width(width)
        super().__init__({
            "i": In(beat_signature(width)),
            "o": Out(beat_signature(width)),
            "bus": In(RegisterBusSignature(8)),
        })

    def elaborate(self, platform):
        m = Module()
        scratch = Signal(32)
        beats = Signal(32)
        m.d.comb += self.i.ready.eq(~self.o.valid | self.o.ready)
        with m.If(self.i.ready):
            m.d.sync += [self.o.valid.eq(self.i.valid), self.o.payload.eq(self.i.payload)]
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += beats.eq(beats + 1)

        with m.Switch(self.bus.addr):
            with m.Case(0x00):
                with m.If(self.bus.w_en):
                    m.d.sync += scratch.eq(self.bus.w_data)
                with m.If(self.bus.r_en):
                    m.d.sync += self.bus.r_data.eq(scratch)
            with m.Case(0x04):
                m.d.comb += self.bus.err.eq(self.bus.w_en)
                with m.If(self.bus.r_en):
                    m.d.sync += self.bus.r_data.eq(beats)
            with m.Default():
                m.d.comb += self.bus.err.eq(self.bus.w_en | self.bus.r_en)
        return m
