# amaranth: UnusedElaboratable=no
"""The stages' delay line, in Amaranth's simulator, against a row of registers.

:meth:`nicsim.rtl.match_action.stage.Stage._delay` carries a header vector from ``look`` to
``act`` (and from ``act`` to ``mark``) through a LUT memory in place of the steps' registers.
Here a random value a cycle goes in, and what comes out must be the value of exactly
``cycles`` cycles before, for every delay the stages use and the limits, with widths that cut
the memory into one, two and three chunks (each with pointers of its own).
"""

import random

import pytest
from amaranth.hdl import Module, Signal
from amaranth.sim import Simulator

from nicsim.rtl.match_action.stage import DELAY_CHUNK, DELAY_DEPTH, Stage


@pytest.mark.parametrize("cycles,width", [
    (2, 7), (5, DELAY_CHUNK), (7, DELAY_CHUNK + 1), (8, 715), (DELAY_DEPTH, 33)])
def test_delay_line_is_a_row_of_registers(cycles, width):
    m = Module()
    value = Signal(width)
    out = Stage._delay(m, value, cycles, "dl")
    rng = random.Random(cycles * 1000 + width)
    sent = []

    async def bench(ctx):
        for t in range(4 * DELAY_DEPTH + 10):
            v = rng.getrandbits(width)
            ctx.set(value, v)
            sent.append(v)
            if t >= cycles:  # (the memory starts empty: earlier words are not compared)
                assert ctx.get(out) == sent[t - cycles], f"cycle {t}"
            await ctx.tick()

    sim = Simulator(m)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize("cycles", [1, DELAY_DEPTH + 1])
def test_delay_line_refuses_delays_it_cannot_hold(cycles):
    with pytest.raises(AssertionError):
        Stage._delay(Module(), Signal(8), cycles, "dl")
