"""Register access: a simple register bus and its AXI4-Lite bridge.

Blocks expose registers through :class:`RegisterBusSignature`, a single-cycle bus: a write
happens in the cycle ``w_en`` is high; a read is requested with ``r_en`` and its data is
expected in ``r_data`` in the next cycle. ``err`` (combinational, same cycle as ``w_en`` or
``r_en``) rejects the access: an unmapped address, a read-only register, or a value out of
range. The AXI4-Lite bridge answers such accesses with SLVERR and leaves the block unchanged.
"""

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["RESP_OKAY", "RESP_SLVERR", "RegisterBusSignature", "AxiLiteBridge", "axil_members"]

RESP_OKAY = 0b00
RESP_SLVERR = 0b10


class RegisterBusSignature(wiring.Signature):
    """Signature of the register bus, from the initiator's side.

    Members
    -------
    addr : Out(addr_width)
        Byte address, 32-bit aligned.
    w_en : Out(1)
        Write strobe.
    w_data : Out(32)
        Write data.
    r_en : Out(1)
        Read strobe; ``r_data`` answers in the next cycle.
    r_data : In(32)
        Read data.
    err : In(1)
        The access in this cycle is rejected (combinational).
    """

    def __init__(self, addr_width):
        if not 4 <= addr_width <= 32:
            raise ValueError(f"Address width must be between 4 and 32, not {addr_width!r}")
        self.addr_width = addr_width
        super().__init__({
            "addr": Out(addr_width),
            "w_en": Out(1),
            "w_data": Out(32),
            "r_en": Out(1),
            "r_data": In(32),
            "err": In(1),
        })

    def __eq__(self, other):
        return isinstance(other, RegisterBusSignature) and other.addr_width == self.addr_width

    def __repr__(self):
        return f"RegisterBusSignature({self.addr_width})"


def axil_members(addr_width):
    """Return the AXI4-Lite slave ports (``s_axil_*``) as signature members."""
    return {
        "s_axil_awaddr": In(addr_width),
        "s_axil_awprot": In(3),
        "s_axil_awvalid": In(1),
        "s_axil_awready": Out(1),
        "s_axil_wdata": In(32),
        "s_axil_wstrb": In(4),
        "s_axil_wvalid": In(1),
        "s_axil_wready": Out(1),
        "s_axil_bresp": Out(2),
        "s_axil_bvalid": Out(1),
        "s_axil_bready": In(1),
        "s_axil_araddr": In(addr_width),
        "s_axil_arprot": In(3),
        "s_axil_arvalid": In(1),
        "s_axil_arready": Out(1),
        "s_axil_rdata": Out(32),
        "s_axil_rresp": Out(2),
        "s_axil_rvalid": Out(1),
        "s_axil_rready": In(1),
    }


class AxiLiteBridge(wiring.Component):
    """Turn AXI4-Lite slave transactions into register bus accesses.

    One access is in flight at a time; writes take priority over reads. Partial writes
    (``wstrb`` not all ones) are rejected with SLVERR: every register is 32 bits wide.

    Parameters
    ----------
    addr_width : int
        Width of the byte address.
    """

    def __init__(self, addr_width):
        self._addr_width = addr_width
        members = axil_members(addr_width)
        members["bus"] = Out(RegisterBusSignature(addr_width))
        self.axil_names = tuple(axil_members(addr_width))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        bus = self.bus
        # Requests are registered before they reach the block, so that address decode in the
        # block starts from flip-flops (this bridge must not limit the block's fmax).
        w_pending = Signal()
        w_addr = Signal.like(self.s_axil_awaddr)
        w_data = Signal(32)
        w_full = Signal()
        r_pending = Signal()
        r_addr = Signal.like(self.s_axil_araddr)
        r_wait = Signal()
        r_err = Signal()

        take_write = ~w_pending & ~self.s_axil_bvalid
        m.d.comb += [
            self.s_axil_awready.eq(take_write & self.s_axil_wvalid),
            self.s_axil_wready.eq(take_write & self.s_axil_awvalid),
        ]
        with m.If(take_write & self.s_axil_awvalid & self.s_axil_wvalid):
            m.d.sync += [
                w_pending.eq(1),
                w_addr.eq(self.s_axil_awaddr & ~3),
                w_data.eq(self.s_axil_wdata),
                w_full.eq(self.s_axil_wstrb == 0b1111),
            ]
        take_read = ~r_pending & ~r_wait & ~self.s_axil_rvalid
        m.d.comb += self.s_axil_arready.eq(take_read)
        with m.If(take_read & self.s_axil_arvalid):
            m.d.sync += [r_pending.eq(1), r_addr.eq(self.s_axil_araddr & ~3)]

        m.d.comb += bus.w_data.eq(w_data)
        with m.If(w_pending):
            m.d.comb += [bus.addr.eq(w_addr), bus.w_en.eq(w_full)]
            m.d.sync += [
                w_pending.eq(0),
                self.s_axil_bvalid.eq(1),
                self.s_axil_bresp.eq(Mux(bus.err | ~w_full, RESP_SLVERR, RESP_OKAY)),
            ]
        with m.Elif(r_pending):
            m.d.comb += [bus.addr.eq(r_addr), bus.r_en.eq(1)]
            m.d.sync += [r_pending.eq(0), r_wait.eq(1), r_err.eq(bus.err)]
        with m.If(self.s_axil_bvalid & self.s_axil_bready):
            m.d.sync += self.s_axil_bvalid.eq(0)
        with m.If(r_wait):
            m.d.sync += [
                r_wait.eq(0),
                self.s_axil_rvalid.eq(1),
                self.s_axil_rdata.eq(Mux(r_err, 0, bus.r_data)),
                self.s_axil_rresp.eq(Mux(r_err, RESP_SLVERR, RESP_OKAY)),
            ]
        with m.If(self.s_axil_rvalid & self.s_axil_rready):
            m.d.sync += self.s_axil_rvalid.eq(0)
        return m
