"""Table updates while traffic flows, counters read over AXI4-Lite, results held back, register
errors (cocotb).

The router program on Verilator: frames stream back to back while the control plane modifies
and then deletes a route over AXI4-Lite (at 512 bits, in ``make test-long``, the frames follow
one another a cycle or two apart, so the commit tokens travel right between frames of the slot
they clear). Each frame must come out as the golden reference says
under one of the three table states, the states in order (a frame never sees an older table
than the frame before it, nor half an entry); the counters read back at the end must equal the
reference's for the frames each state handled. A result stream that nobody reads for a long
while holds frames back without losing or reordering a result (``results_held_back``). A route
added while frames stream is swept into the TCAM memories beside their lookups, and its write
is answered only once it is in (``add_while_traffic_flows``).
"""

import json
import os
from pathlib import Path

import cocotb
import pytest
from scapy.all import IP, UDP, Ether, Raw

from nicsim.hw.match_action.control import ControlPlane, RegisterLog
from nicsim.hw.match_action.engine import MaConfig, decode_result
from nicsim.hw.match_action.program import load_program, make_entry
from nicsim.hw.ref.match_action import Pipeline
from nicsim.rtl.match_action import regs
from tbutil import TB, rtl_test

PROGRAM = Path(__file__).resolve().parents[2] / "hw" / "match_action" / "programs" / "router.toml"
MAC1, MAC2 = "02:00:00:00:00:01", "02:00:00:00:00:02"


def entries(program):
    route = {"port": 3, "dmac": MAC1, "smac": MAC2}
    return {
        "wide": make_entry(program, "ipv4_routes", "10.0.0.0/8", "route", route),
        "narrow": make_entry(program, "ipv4_routes", "10.1.0.0/16", "route",
                             {**route, "port": 5}),
        "narrow2": make_entry(program, "ipv4_routes", "10.1.0.0/16", "route",
                              {**route, "port": 9}),
        "narrow3": make_entry(program, "ipv4_routes", "10.1.0.0/16", "route",
                              {**route, "port": 11}),
    }


def states_seen(frames, metas, outs, states):
    """How many frames each table state (a reference :class:`Pipeline`, in the order the
    updates made them) handled: each frame's result and output must be those of the state of
    the frame before it or of a later one."""
    state, seen = 0, [0] * len(states)
    for i, f in enumerate(frames):
        while True:
            want = states[state].process(f, 100 * i)
            if want.meta == metas[i] and want.frame == outs[i]:
                break
            assert state < len(states) - 1, \
                f"frame {i}: {metas[i]} matches no table state at or after {state}"
            state += 1
        seen[state] += 1
    return seen


async def flush(tb, log, start):
    for addr, value in log.writes[start:]:
        assert await tb.write_reg(addr, value) == 0
    return len(log.writes)


async def start(dut, *routes):
    """Reset the design and install the named routes of :func:`entries` over AXI4-Lite;
    return the bench, the program, the routes, the register log, the control plane and the
    number of writes flushed."""
    tb = TB(dut, result="result")
    await tb.reset()
    program = load_program(PROGRAM)
    e = entries(program)
    log = RegisterLog()
    cp = ControlPlane(program, device=log)
    for name in routes:
        cp.add(e[name])
    return tb, program, e, log, cp, await flush(tb, log, 0)


@cocotb.test()
async def updates_while_traffic_flows(dut):
    from cocotb.triggers import with_timeout
    from cocotbext.axi import AxiStreamFrame

    tb, program, e, log, cp, done = await start(dut, "wide", "narrow")

    frames = [bytes(Ether(src=MAC2) / IP(dst=f"10.1.{i % 200}.1", ttl=9) / UDP()
                    / Raw(bytes(22 + i % 30))) for i in range(240)]
    for i, f in enumerate(frames):
        await tb.source.send(AxiStreamFrame(f, tuser=100 * i))
    # Waits that put the two updates mid-stream: 240 frames take ~2,000 cycles at 64 bits,
    # ~350 at 512.
    wide = json.loads(os.environ["NICSIM_PARAMS"])["width"] > 64
    await tb.cycles(60 if wide else 300)
    cp.modify(e["narrow2"])
    done = await flush(tb, log, done)
    await tb.cycles(40 if wide else 200)
    cp.delete(e["narrow2"])
    done = await flush(tb, log, done)

    metas, outs = [], []
    config = MaConfig(program, [])
    for _ in frames:
        res = await with_timeout(tb.result.recv(), 200, "us")
        metas.append(decode_result(int.from_bytes(res.tdata, "little"), config))
    for _ in frames:
        outs.append(bytes((await with_timeout(tb.sink.recv(), 200, "us")).tdata))

    states = [Pipeline(program, [e["wide"], e["narrow"]]), Pipeline(program, [e["wide"],
                                                                              e["narrow2"]]),
              Pipeline(program, [e["wide"]])]
    seen = states_seen(frames, metas, outs, states)
    assert all(seen), f"frames per table state {seen}: the updates did not land mid-stream"

    # Counters: the wide route counted every frame of the last state; the /16 slot was cleared.
    assert await tb.write_reg(regs.REG_SELECT, regs.select_word(1, 0)) == 0
    packets = (await tb.read_reg(regs.REG_PACKETS_LO))[0]
    assert packets == seen[2]
    assert await tb.write_reg(regs.REG_SELECT, regs.select_word(1, 1)) == 0
    assert (await tb.read_reg(regs.REG_PACKETS_LO))[0] == 0
    assert (await tb.read_reg(regs.REG_FRAMES))[0] == len(frames)


@cocotb.test()
async def add_while_traffic_flows(dut):
    """An entry added while frames stream: its sweep into the LPM stage's TCAM memories runs
    beside the lookups of the frames (the other entries' bits must stay as they are), and its
    ``COMMIT`` write is answered only once the entry is in, so a frame sent right after that
    answer already sees it."""
    from cocotb.triggers import with_timeout
    from cocotbext.axi import AxiStreamFrame

    tb, program, e, log, cp, done = await start(dut, "wide")
    wide = json.loads(os.environ["NICSIM_PARAMS"])["width"] > 64
    pad = 700 if wide else 22  # about 12 beats at 512 bits, 9 at 64: some 5,000 cycles
    frames = [bytes(Ether(src=MAC2) / IP(dst=f"10.1.{i % 200}.1", ttl=9) / UDP()
                    / Raw(bytes(pad + i % 30))) for i in range(400 if wide else 600)]
    for i, f in enumerate(frames):
        await tb.source.send(AxiStreamFrame(f, tuser=100 * i))
    await tb.cycles(1500)
    stage, slot = cp.add(e["narrow"])
    done = await flush(tb, log, done)
    config = MaConfig(program, [])
    metas, outs = [], []
    for _ in frames:
        res = await with_timeout(tb.result.recv(), 400, "us")
        metas.append(decode_result(int.from_bytes(res.tdata, "little"), config))
        outs.append(bytes((await with_timeout(tb.sink.recv(), 400, "us")).tdata))
    states = [Pipeline(program, [e["wide"]]), Pipeline(program, [e["wide"], e["narrow"]])]
    seen = states_seen(frames, metas, outs, states)
    assert all(seen), f"frames per table state {seen}: the add did not land mid-stream"
    assert await tb.write_reg(regs.REG_SELECT, regs.select_word(stage, slot)) == 0
    assert (await tb.read_reg(regs.REG_PACKETS_LO))[0] == seen[1]

    # The answer to the COMMIT comes once the entry is in: a frame sent at once sees it.
    cp.delete(e["narrow"])
    cp.add(e["narrow3"])
    done = await flush(tb, log, done)
    probe = frames[0]
    await tb.source.send(AxiStreamFrame(probe, tuser=0))
    res = await with_timeout(tb.result.recv(), 400, "us")
    want = Pipeline(program, [e["wide"], e["narrow3"]]).process(probe, 0)
    assert decode_result(int.from_bytes(res.tdata, "little"), config) == want.meta
    assert bytes((await with_timeout(tb.sink.recv(), 400, "us")).tdata) == want.frame


@cocotb.test()
async def results_held_back(dut):
    """Nobody reads the result stream for a long while (far more frames than the result queue
    holds come in): the pipeline must hold frames back, not lose or reorder a result; once the
    results are read, every frame and every result is the reference's."""
    from cocotb.triggers import with_timeout
    from cocotbext.axi import AxiStreamFrame

    tb, program, e, _, _, _ = await start(dut, "wide")
    tb.result.pause = True
    # routed frames, frames to the host (no route) and frames dropped (TTL 1), interleaved
    frames = [bytes(Ether(src=MAC2) / IP(dst=f"{(10, 10, 11)[i % 3]}.1.{i}.1",
                                         ttl=(9, 9, 1)[i % 5 % 3]) / UDP() / Raw(bytes(22)))
              for i in range(60)]
    for i, f in enumerate(frames):
        await tb.source.send(AxiStreamFrame(f, tuser=100 * i))
    await tb.cycles(3000)
    held = tb.sink.count()
    assert held < len(frames), "every frame left while no result was read"
    tb.result.pause = False
    config = MaConfig(program, [])
    metas = [decode_result(int.from_bytes((await with_timeout(tb.result.recv(), 200, "us"))
                                          .tdata, "little"), config) for _ in frames]
    await tb.cycles(500)
    assert tb.result.empty(), "more results than frames"
    ref = Pipeline(program, [e["wide"]])
    want = [ref.process(f, 100 * i) for i, f in enumerate(frames)]
    assert metas == [w.meta for w in want]
    outs = []
    while not tb.sink.empty():
        outs.append(bytes(tb.sink.recv_nowait().tdata))
    assert outs == [w.frame for w in want if w.frame is not None]
    assert {m["action"] for m in metas} == {"forward", "host", "drop"}


@cocotb.test()
async def register_errors(dut):
    tb = TB(dut, result="result")
    await tb.reset()
    assert await tb.read_reg(regs.REG_ID) == (regs.MA_ID, 0)
    assert (await tb.read_reg(regs.REG_STAGES))[0] == 4
    assert await tb.write_reg(regs.REG_KEY, 0x1234) == 0
    assert await tb.read_reg(regs.REG_KEY) == (0x1234, 0)
    # A stage that does not exist, a slot past the table, an unmapped address: SLVERR.
    assert await tb.write_reg(regs.REG_COMMIT, regs.commit_word(5, 0)) == 2
    assert await tb.write_reg(regs.REG_COMMIT, regs.commit_word(1, 64)) == 2
    assert await tb.write_reg(0xFFC, 1) == 2
    assert (await tb.read_reg(0x800))[1] == 2
    assert await tb.write_reg(regs.REG_ID, 0) == 2
    # An install naming an action its stage does not have (ipv4_routes has three): SLVERR; a
    # clear ignores the action.
    assert await tb.write_reg(regs.REG_ACTION, 3) == 0
    assert await tb.write_reg(regs.REG_COMMIT, regs.commit_word(1, 0)) == 2
    assert await tb.write_reg(regs.REG_COMMIT, regs.commit_word(1, 0, install=False)) == 0
    # An LPM stage holds the priorities its field's width gives (``width - prefix length``:
    # ipv4_routes, 0 to 32): an install with a larger one is refused, a clear ignores it.
    assert await tb.write_reg(regs.REG_ACTION, 0) == 0
    assert await tb.write_reg(regs.REG_PRIORITY, 33) == 0
    assert await tb.write_reg(regs.REG_COMMIT, regs.commit_word(1, 0)) == 2
    assert await tb.write_reg(regs.REG_COMMIT, regs.commit_word(1, 0, install=False)) == 0
    assert await tb.write_reg(regs.REG_PRIORITY, 32) == 0
    assert await tb.write_reg(regs.REG_COMMIT, regs.commit_word(1, 0)) == 0
    assert await tb.write_reg(regs.REG_COMMIT, regs.commit_word(1, 0, install=False)) == 0
    # A value wider than its register: SLVERR, and the register keeps its value.
    for reg, bits in ((regs.REG_ACTION, 4), (regs.REG_PRIORITY, 16), (regs.REG_METER_CIR, 20),
                      (regs.REG_METER_PIR, 20), (regs.REG_METER_CBS, 21),
                      (regs.REG_METER_PBS, 21), (regs.REG_SELECT, 16)):
        assert await tb.write_reg(reg, (1 << bits) - 1) == 0
        assert await tb.write_reg(reg, 1 << bits) == 2
        assert await tb.read_reg(reg) == ((1 << bits) - 1, 0)


def test_match_action_live():
    from nicsim.hw.match_action.compile import design_params

    rtl_test("match-action", {"width": 64, **design_params(PROGRAM)}, "test_match_action_live")


@pytest.mark.long
def test_match_action_live_512():
    from nicsim.hw.match_action.compile import design_params

    rtl_test("match-action", {"width": 512, **design_params(PROGRAM)}, "test_match_action_live",
             testcase="updates_while_traffic_flows")


@pytest.mark.long
def test_match_action_live_add_512():
    from nicsim.hw.match_action.compile import design_params

    rtl_test("match-action", {"width": 512, **design_params(PROGRAM)}, "test_match_action_live",
             testcase="add_while_traffic_flows")
