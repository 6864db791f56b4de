# amaranth: UnusedElaboratable=no
"""The TSO engine's queue levels kept as thermometer codes (for timing on ECP5).

:class:`nicsim.rtl.checksum_common.CreditedFIFO` with ``thermometer=True`` (every queue of the
TSO engine) and with the binary level it replaces, against a Python deque: entries out in the
order written, ``r_rdy`` only while one waits and at the latest two cycles after its write,
under random writes within the credits and random reads.
"""

from __future__ import annotations

import random
from collections import deque

import pytest
from amaranth.sim import Simulator


@pytest.mark.parametrize("thermometer", [False, True])
def test_credited_fifo_against_a_deque(thermometer):
    from nicsim.rtl.checksum_common import CreditedFIFO

    depth = 8
    dut = CreditedFIFO(12, depth, thermometer=thermometer)
    rng = random.Random(11)
    seen = []

    async def bench(ctx):
        model = deque()  # entries written and not yet taken, oldest first
        credits = depth + 1  # memory and the output register
        for cycle in range(1500):
            # Bursts of writes and of reads, so that the queue runs full and empty.
            phase = (cycle // 60) % 3
            w_en = credits > 0 and rng.random() < (0.9, 0.2, 0.5)[phase]
            r_en = rng.random() < (0.2, 0.9, 0.5)[phase]
            word = rng.randrange(1 << 12)
            ctx.set(dut.w_en, w_en)
            ctx.set(dut.w_data, word)
            ctx.set(dut.r_en, r_en)
            rdy = ctx.get(dut.r_rdy)
            data = ctx.get(dut.r_data)
            # An entry shows two cycles after its write (memory, then the output register),
            # or once the one before it is taken.
            assert not rdy or model, f"cycle {cycle}: r_rdy with nothing queued"
            if model and model[0][0] <= cycle - 2:
                assert rdy, f"cycle {cycle}: the entry of cycle {model[0][0]} is not out"
            if rdy and r_en:
                seen.append((data, model.popleft()))
                credits += 1
            if w_en:
                model.append((cycle, word))
                credits -= 1
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert len(seen) > 400
    assert [got for got, _ in seen] == [word for _, (_, word) in seen]

