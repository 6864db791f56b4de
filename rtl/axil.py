"""Register access: a simple register bus and its AXI4-Lite bridge.

Blocks expose registers through :class:`RegisterBusSignature`, a single-cycle bus: a write
happens in the cycle ``w_en`` is high; a read is requested with ``r_en`` and its data is
expected in ``r_data`` in the next cycle. ``err`` (combinational, same cycle as ``w_en`` or
``r_en``) rejects the access: an unmapped address, a read-only register, or a value out of
range. The AXI4-Lite bridge answers such accesses with SLVERR and leaves the block unchanged.
``stall`` (combinational in the cycle of ``w_en``, then as long as the block needs) holds a
write's response back: the write is taken, and the bridge answers it in the first cycle that
``stall`` is low, so a write that starts a long operation (the match-action TCAM's sweep)
completes only when the operation has. No other access starts meanwhile.

``addr`` and ``w_data`` hold their values from the cycle before a strobe (``w_en`` or
``r_en``) to the strobe, so a block may decode them a cycle ahead into registers. Two strobes
are then either in consecutive cycles at one address or two cycles apart at least.
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
        Byte address, 32-bit aligned; held from the cycle before the strobe.
    w_en : Out(1)
        Write strobe.
    w_data : Out(32)
        Write data; like ``addr``, held from the cycle before the strobe.
    r_en : Out(1)
        Read strobe; ``r_data`` answers in the next cycle.
    r_data : In(32)
        Read data.
    err : In(1)
        The access in this cycle is rejected (combinational).
    stall : In(1)
        The write of this cycle is taken but not yet answered (combinational with ``w_en``,
        then held until the block is done).
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
            "stall": In(1),
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

    The response comes three cycles after the handshake for a write (``bvalid``), four for a
    read (``rvalid``): the request is registered, held a cycle for the block to decode, strobed
    and, for reads, the data registered. A write the block stalls is answered in the first
    cycle after the strobe in which ``stall`` is low.

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
        # One access at a time, in three cycles: accept it into registers; hold the address
        # (the block decodes it); strobe. Everything the block sees comes straight from
        # flip-flops, with no multiplexer between reads and writes.
        addr = Signal.like(bus.addr)
        w_data = Signal(32)
        w_full = Signal()
        is_write = Signal()
        decode = Signal()  # the cycle after acceptance
        w_en, r_en = Signal(), Signal()  # the strobe cycle
        w_skip = Signal()  # the strobe cycle of a partial write: rejected, no w_en
        r_wait = Signal()  # the cycle after a read strobe
        r_err = Signal()
        w_hold = Signal()  # a write taken, its response held back by ``stall``
        busy = Signal()  # from the handshake of an access to the handshake of its response

        write = self.s_axil_awvalid & self.s_axil_wvalid
        m.d.comb += [
            self.s_axil_awready.eq(~busy & write),
            self.s_axil_wready.eq(~busy & write),
            self.s_axil_arready.eq(~busy & ~write),
            bus.addr.eq(addr),
            bus.w_data.eq(w_data),
            bus.w_en.eq(w_en),
            bus.r_en.eq(r_en),
        ]
        # While idle the request registers follow the inputs (the enable is one flip-flop);
        # the handshake freezes them.
        with m.If(~busy):
            m.d.sync += [
                addr.eq(Mux(write, self.s_axil_awaddr, self.s_axil_araddr) & ~3),
                w_data.eq(self.s_axil_wdata),
                w_full.eq(self.s_axil_wstrb == 0b1111),
                is_write.eq(write),
            ]
            with m.If(write | self.s_axil_arvalid):
                m.d.sync += [busy.eq(1), decode.eq(1)]

        with m.If(decode):
            m.d.sync += [
                decode.eq(0),
                w_en.eq(is_write & w_full),
                w_skip.eq(is_write & ~w_full),
                r_en.eq(~is_write),
            ]
        with m.If(w_en | w_skip):
            m.d.sync += [
                w_en.eq(0),
                w_skip.eq(0),
                self.s_axil_bresp.eq(Mux(w_skip | bus.err, RESP_SLVERR, RESP_OKAY)),
            ]
            with m.If(w_skip | ~bus.stall):
                m.d.sync += self.s_axil_bvalid.eq(1)
            with m.Else():
                m.d.sync += w_hold.eq(1)
        with m.If(w_hold & ~bus.stall):
            m.d.sync += [w_hold.eq(0), self.s_axil_bvalid.eq(1)]
        with m.If(r_en):
            m.d.sync += [r_en.eq(0), r_wait.eq(1), r_err.eq(bus.err)]
        with m.If(self.s_axil_bvalid & self.s_axil_bready):
            m.d.sync += [self.s_axil_bvalid.eq(0), busy.eq(0)]
        with m.If(r_wait):
            m.d.sync += [
                r_wait.eq(0),
                self.s_axil_rvalid.eq(1),
                self.s_axil_rdata.eq(Mux(r_err, 0, bus.r_data)),
                self.s_axil_rresp.eq(Mux(r_err, RESP_SLVERR, RESP_OKAY)),
            ]
        with m.If(self.s_axil_rvalid & self.s_axil_rready):
            m.d.sync += [self.s_axil_rvalid.eq(0), busy.eq(0)]
        return m
