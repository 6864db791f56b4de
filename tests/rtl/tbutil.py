"""Shared cocotb testbench pieces: clock and reset, AXI bus models, pause patterns.

Imported by the cocotb test modules in this folder (which run inside the simulator) and by
their pytest wrappers (which build the design and launch the simulator).
"""

import itertools
import json
import os
import random

__all__ = ["params", "TB", "PAUSES", "FRAME_SIZES", "Handshakes", "cycle_pause", "random_pause",
           "rtl_test"]

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


from nicsim.hw.cocotb_tb import TB  # noqa: E402  (re-exported for the tests)


class Handshakes:
    """Record the clock cycles of the beats taken on AXI4-Stream ports (simulator side).

    ``Handshakes(dut, "s_axis", "m_axis")`` starts counting rising edges of ``dut.clk``; at each,
    a port whose ``tvalid`` and ``tready`` are both high adds the cycle to ``cycles[port]``.
    """

    def __init__(self, dut, *ports):
        import cocotb

        self.cycles = {port: [] for port in ports}
        self._run = True
        self._task = cocotb.start_soon(self._watch(dut))

    async def _watch(self, dut):
        from cocotb.triggers import RisingEdge

        ports = [(self.cycles[p], getattr(dut, f"{p}_tvalid"), getattr(dut, f"{p}_tready"))
                 for p in self.cycles]
        cycle = 0
        while self._run:
            await RisingEdge(dut.clk)
            cycle += 1
            for seen, valid, ready in ports:
                if valid.value == 1 and ready.value == 1:
                    seen.append(cycle)

    async def stop(self):
        """Stop counting (after the current cycle) and return ``cycles``."""
        self._run = False
        await self._task
        return self.cycles

    def assert_back_to_back(self, port, beats):
        """Assert that ``port`` took ``beats`` beats, one every cycle from the first."""
        seen = self.cycles[port]
        assert len(seen) == beats, f"{port}: {len(seen)} beats, expected {beats}"
        span = seen[-1] - seen[0] + 1
        assert span == beats, f"{port}: {beats} beats took {span} cycles"


def rtl_test(design, params, module, testcase=None, env=None):
    """Build ``design`` with ``params`` and run the cocotb tests of ``module`` (pytest side)."""
    from pathlib import Path

    from nicsim.hw.verilator import build, run_cocotb

    rtl = build(design, params)
    return run_cocotb(rtl, module, test_dir=Path(__file__).parent, testcase=testcase, env=env)
