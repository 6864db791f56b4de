"""cocotb testbench building blocks shared by the tests and by ``nicsim rtl run``.

A :class:`TB` owns the clock, the reset and the cocotbext-axi bus models of a design exported
by :class:`nicsim.rtl.stream.AxiStreamTop`. Imported inside the simulator process only.
"""

__all__ = ["TB"]


class TB:
    """Clock, reset and bus models around a DUT with ``s_axis``/``m_axis``/``s_axil`` ports.

    Parameters
    ----------
    dut : cocotb handle
        The toplevel.
    result : str, optional
        Name of a result stream ``m_axis_<result>_*`` to attach a sink to.
    """

    def __init__(self, dut, result=None):
        import cocotb
        from cocotb.clock import Clock
        from cocotbext.axi import (
            AxiLiteBus,
            AxiLiteMaster,
            AxiStreamBus,
            AxiStreamSink,
            AxiStreamSource,
        )

        self.dut = dut
        cocotb.start_soon(Clock(dut.clk, 4, unit="ns").start())
        self.source = AxiStreamSource(AxiStreamBus.from_prefix(dut, "s_axis"), dut.clk, dut.rst)
        self.sink = None
        if hasattr(dut, "m_axis_tdata"):
            self.sink = AxiStreamSink(AxiStreamBus.from_prefix(dut, "m_axis"), dut.clk, dut.rst)
        self.result = None
        if result is not None:
            self.result = AxiStreamSink(AxiStreamBus.from_prefix(dut, f"m_axis_{result}"),
                                        dut.clk, dut.rst)
        self.axil = None
        if hasattr(dut, "s_axil_awaddr"):
            self.axil = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil"), dut.clk, dut.rst)

    def set_pauses(self, idle=None, backpressure=None):
        """Set the source idle pattern and the sinks' backpressure pattern (callables)."""
        self.source.set_pause_generator(idle() if idle else None)
        for sink in (self.sink, self.result):
            if sink is not None:
                sink.set_pause_generator(backpressure() if backpressure else None)

    async def reset(self):
        from cocotb.triggers import RisingEdge

        self.dut.rst.value = 1
        for _ in range(4):
            await RisingEdge(self.dut.clk)
        self.dut.rst.value = 0
        for _ in range(2):
            await RisingEdge(self.dut.clk)

    async def read_reg(self, addr):
        data = await self.axil.read(addr, 4)
        return int.from_bytes(data.data, "little"), int(data.resp)

    async def write_reg(self, addr, value):
        resp = await self.axil.write(addr, int(value).to_bytes(4, "little"))
        return int(resp.resp)

    async def cycles(self, n):
        from cocotb.triggers import ClockCycles

        await ClockCycles(self.dut.clk, n)
