"""The RTL session table against hw.ref.tcp.SessionTable, request by request (Amaranth sim)."""

import random

import pytest
from amaranth.sim import Simulator

from nicsim.hw.ref.tcp import SessionTable as Reference
from nicsim.rtl.toe.session_table import OP_DELETE, OP_INSERT, OP_LOOKUP, SessionTable


def run(sessions, requests, stall_seed=None):
    dut = SessionTable(sessions)
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    answers = []

    async def bench(ctx):
        rng = random.Random(stall_seed or 0)
        for op, key, sid in requests:
            ctx.set(dut.req.valid, 1)
            ctx.set(dut.req.payload, {"op": op, "key": int.from_bytes(key, "big"), "sid": sid})
            await ctx.tick().until(dut.req.ready)
            ctx.set(dut.req.valid, 0)
            if stall_seed is not None:
                for _ in range(rng.randrange(3)):
                    await ctx.tick()
            ctx.set(dut.resp.ready, 1)
            (payload,) = await ctx.tick().sample(dut.resp.payload).until(dut.resp.valid)
            ctx.set(dut.resp.ready, 0)
            answers.append((payload.hit, payload.full, payload.sid))

    sim.add_testbench(bench)
    sim.run()
    return answers


def expected(sessions, requests):
    ref = Reference(sessions)
    out = []
    for op, key, sid in requests:
        if op == OP_LOOKUP:
            found = ref.lookup(key)
            out.append((int(found is not None), 0, found or 0))
        elif op == OP_INSERT:
            before = ref.lookup(key)
            got = ref.insert(key)
            if before is not None:
                out.append((1, 0, before))
            elif got is None:
                out.append((0, 1, 0))
            else:
                out.append((0, 0, got))
        else:
            out.append((int(ref.delete(sid)), 0, sid))
    return out


def workload(sessions, count, seed, pool):
    rng = random.Random(seed)
    keys = [bytes([10, 0, rng.randrange(4), rng.randrange(256)]) + rng.randrange(65536)
            .to_bytes(2, "big") + (7).to_bytes(2, "big") for _ in range(pool)]
    requests = []
    for _ in range(count):
        op = rng.choice((OP_INSERT, OP_INSERT, OP_LOOKUP, OP_DELETE))
        requests.append((op, rng.choice(keys), rng.randrange(sessions)))
    return requests


@pytest.mark.parametrize("sessions, pool, seed", [(8, 12, 1), (64, 100, 2), (5, 40, 3)])
def test_matches_reference(sessions, pool, seed):
    requests = workload(sessions, 250, seed, pool)
    want = expected(sessions, requests)
    assert any(w[1] for w in want) or sessions == 64  # the small tables fill up
    assert run(sessions, requests, stall_seed=seed) == want


def test_full_table_then_free():
    keys = [i.to_bytes(8, "big") for i in range(6)]
    requests = [(OP_INSERT, k, 0) for k in keys] + [(OP_DELETE, b"\0" * 8, 2),
                                                    (OP_INSERT, keys[5], 0),
                                                    (OP_LOOKUP, keys[2], 0)]
    want = expected(4, requests)
    assert want[4] == (0, 1, 0) and want[7] == (0, 0, 2) and want[8] == (0, 0, 0)
    assert run(4, requests) == want


def test_parameters_checked():
    import gc
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the rejected objects are never elaborated
        with pytest.raises(ValueError, match="Sessions must be 1 to 1024"):
            SessionTable(2048)
        with pytest.raises(ValueError, match="Probes must be a power of two"):
            SessionTable(64, probes=3)
        gc.collect()


@pytest.mark.long
def test_1024_sessions_elaborate():
    from amaranth.back import rtlil

    assert "bank3" in rtlil.convert(SessionTable(1024))
