"""Shared cocotb testbench pieces: clock and reset, AXI bus models, pause patterns.

Imported by the cocotb test modules in this folder (which run inside the simulator) and by
their pytest wrappers (which build the design and launch the simulator).
"""

import itertools
import json
import os
import random

__all__ = ["params", "TB", "PAUSES", "FRAME_SIZES", "cycle_pause", "random_pause", "rtl_test"]

# The sizes the STYLE guide asks every stream testbench to cover.
FRAME_SIZES = [*range(1, 129), 512, 1500, 9000]


def params():
    """Return the elaboration parameters the pytest side built the design with."""
    return json.loads(os.environ.get("NICSIM_PARAMS", "{}"))


def cycle_pause():
    """Pause one cycle in four (the classic ``cycle([1, 1, 1, 0])`` pattern)."""
    return itertools.cycle([1, 1, 1, 0])


def random_pause(seed=1, ratio=0.3):
    """Pause a random ``ratio`` of cycles, repeatably."""
    rng = random.Random(seed)

    def gen():
        while True:
            yield int(rng.random() < ratio)

    return gen()


PAUSES = {
    "none": None,
    "cycle": cycle_pause,
    "random": random_pause,
}


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


def rtl_test(design, params, module, testcase=None, env=None):
    """Build ``design`` with ``params`` and run the cocotb tests of ``module`` (pytest side)."""
    from pathlib import Path

    from nicsim.hw.verilator import build, run_cocotb

    rtl = build(design, params)
    return run_cocotb(rtl, module, test_dir=Path(__file__).parent, testcase=testcase, env=env)
