"""Table updates while traffic flows, for every example program (cocotb, ``make test-long``).

Each program gets the random entries and traffic of ``test_match_action.scenario``; frames that
hit two chosen entries are mixed into the stream so that the updates show. While the frames
stream back to back, the control plane modifies the busiest entry whose action takes a port or
a queue (that number plus one; counters and meter kept) and then deletes another busy entry,
over AXI4-Lite. Every frame must come out as the golden reference says with the updates applied
in order at some point of the stream (a frame never sees an older table than the frame before
it), both updates must land mid-stream, and the modified entry's counters (and meter buckets)
read back at the end must equal the reference's. ``test_match_action_live.py`` does the same
for the router with hand-made routes in ``make test``.
"""

import copy
import os
import random

import cocotb
import pytest

from nicsim.hw.match_action.control import entry_spec
from nicsim.hw.match_action.engine import MaConfig, decode_result
from nicsim.hw.match_action.program import make_entry
from nicsim.hw.ref.match_action import Pipeline
from nicsim.rtl.match_action import regs
from tbutil import TB, params, rtl_test

PROGRAMS_DIR = "hw/match_action/programs"
INTERVAL_NS = 100


def plan(name, seed, n_frames):
    """Entries, frames and the two updates: ``(cp, frames, modified, deleted)``."""
    from test_match_action import scenario

    rng = random.Random(seed)
    cp, frames = scenario(name, rng, n_frames)
    program = cp.program
    # Which frames hit which entry: the reference's counters, frame by frame.
    ref = Pipeline(program, cp.entries())
    hits = {}
    for i, f in enumerate(frames):
        before = {id(e): ref.tables[e.table].counters[k].packets
                  for t in ref.tables.values() for k, e in enumerate(t.entries)}
        ref.process(f, i * INTERVAL_NS)
        for t in ref.tables.values():
            for k, e in enumerate(t.entries):
                if t.counters[k].packets != before[id(e)]:
                    hits.setdefault(id(e), (e, []))[1].append(f)
    busy = sorted(hits.values(), key=lambda x: -len(x[1]))
    numbered = [(e, fs) for e, fs in busy
                if {"port", "queue"} & set(program.actions[e.action].params)]
    target, target_frames = numbered[0]
    other, other_frames = next((e, fs) for e, fs in busy if e is not target)
    spec = entry_spec(program, target)
    numbers = dict(spec["args"])
    for p in ("port", "queue"):
        if p in numbers:
            width = program.actions[target.action].params[p]
            numbers[p] = (numbers[p] + 1) % (1 << width)
    modified = make_entry(program, target.table, spec["key"], target.action, numbers,
                          spec.get("priority"), spec.get("meter"))
    # The stream: the scenario's frames with a frame of each chosen entry every third frame.
    mixed = []
    for i, f in enumerate(frames):
        mixed.append(f)
        if i % 3 == 0:
            mixed.append(rng.choice(target_frames if i % 2 else other_frames))
    return cp, mixed, modified, other


def replay(program, initial, frames, metas, outs, modified, deleted):
    """The reference with the updates applied where the gateware's frames say they landed.

    Returns the reference after the last frame (and both updates)."""
    updates = [lambda p: p.modify(modified), lambda p: p.delete(deleted)]
    ref, state, seen, out_i = Pipeline(program, initial), 0, [0, 0, 0], 0
    for i, f in enumerate(frames):
        while True:
            saved = copy.deepcopy(ref, {id(program): program})
            want = ref.process(f, INTERVAL_NS * i)
            got = outs[out_i] if "dropped" not in metas[i] else None
            if want.meta == metas[i] and want.frame == got:
                break
            assert state < 2, f"frame {i}: {metas[i]} matches no table state at or after {state}"
            ref = saved
            updates[state](ref)
            state += 1
        out_i += want.frame is not None
        seen[state] += 1
    assert all(seen), f"frames per table state {seen}: the updates did not land mid-stream"
    return ref


@cocotb.test()
async def updates_while_traffic_flows(dut):
    from cocotb.triggers import with_timeout
    from cocotbext.axi import AxiStreamFrame

    name = os.environ["MA_PROGRAM"]
    tb = TB(dut, result="result")
    await tb.reset()
    cp, frames, modified, deleted = plan(name, seed=31, n_frames=150)
    program = cp.program
    initial = cp.entries()
    start = 0

    async def flush():
        nonlocal start
        for addr, value in cp.device.writes[start:]:
            assert await tb.write_reg(addr, value) == 0
        start = len(cp.device.writes)

    await flush()
    for i, f in enumerate(frames):
        await tb.source.send(AxiStreamFrame(f, tuser=INTERVAL_NS * i))
    lanes = params()["width"] // 8
    beats = sum(-(-len(f) // lanes) for f in frames)
    await tb.cycles(beats // 3)
    cp.modify(modified)
    await flush()
    await tb.cycles(beats // 3)
    cp.delete(deleted)
    await flush()

    metas, outs = [], []
    config = MaConfig(program, [])
    for _ in frames:
        res = await with_timeout(tb.result.recv(), 2000, "us")
        metas.append(decode_result(int.from_bytes(res.tdata, "little"), config))
    for m in metas:
        if "dropped" not in m:
            outs.append(bytes((await with_timeout(tb.sink.recv(), 2000, "us")).tdata))

    ref = replay(program, initial, frames, metas, outs, modified, deleted)

    # The modified entry kept its counters (and meter) through the update.
    stage, slot = cp.stage[modified.table], cp._slot_of(modified)
    assert await tb.write_reg(regs.REG_SELECT, regs.select_word(stage, slot)) == 0
    lo = (await tb.read_reg(regs.REG_PACKETS_LO))[0]
    hi = (await tb.read_reg(regs.REG_PACKETS_HI))[0]
    counters = ref.counters(modified)
    assert lo | hi << 32 == counters.packets > 0
    assert (await tb.read_reg(regs.REG_BYTES_LO))[0] == counters.bytes & 0xFFFFFFFF
    if modified.meter is not None:
        index = ref._find(modified)
        meter = ref.tables[modified.table].meters[index]
        assert (await tb.read_reg(regs.REG_METER_TC))[0] == meter.tc >> 16
        assert (await tb.read_reg(regs.REG_METER_TP))[0] == meter.tp >> 16


@pytest.mark.long
@pytest.mark.parametrize("name", ["ddos", "acl", "lb", "router"])
def test_updates_while_traffic_flows(name):
    from pathlib import Path

    from nicsim.hw.match_action.compile import design_params

    path = Path(__file__).resolve().parents[2] / PROGRAMS_DIR / f"{name}.toml"
    rtl_test("match-action", {"width": 64, **design_params(path)},
             "test_match_action_updates", env={"MA_PROGRAM": name})
