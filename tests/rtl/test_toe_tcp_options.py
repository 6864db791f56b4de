"""The RTL TCP option walker against hw.ref.tcp.parse_options (Amaranth sim)."""

import random

from amaranth.sim import Simulator

from nicsim.hw.ref.tcp import parse_options
from nicsim.rtl.toe.tcp_options import MAX_OPTION_BYTES, TcpOptionParser

LINUX_SYN = bytes.fromhex("020405b40402080a0001e2400000000001030307")  # MSS, SACK, TS, WS 7


def option_cases(seed=1, count=300):
    rng = random.Random(seed)
    parts = [b"\x01", b"\x00", b"\x02\x04\x05\xb4", b"\x02\x04\x23\x28", b"\x03\x03\x07",
             b"\x03\x03\x0f", b"\x03\x03\xff", b"\x04\x02", b"\x08\x0a" + bytes(8),
             b"\x02\x03\x01", b"\x03\x04\x01\x02", b"\x05\x01", b"\x06\x00", b"\x1e\x06abcd"]
    cases = [b"", LINUX_SYN, b"\x02\x04\x05\xb4\x01\x03\x03\x07", b"\x02", b"\x02\x04\x05",
             b"\x02\x04\x05\xb4" * 10, b"\x01" * 39 + b"\x03"]
    for _ in range(count):
        option = b"".join(rng.choice(parts) for _ in range(rng.randrange(8)))
        if rng.random() < 0.2:
            option = rng.randbytes(rng.randrange(MAX_OPTION_BYTES + 1))
        cases.append(option[:MAX_OPTION_BYTES])
    return cases


def run(cases):
    dut = TcpOptionParser()
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    got = []

    async def bench(ctx):
        for option in cases:
            ctx.set(dut.i.valid, 1)
            ctx.set(dut.i.payload, {"options": int.from_bytes(option, "little"),
                                    "length": len(option)})
            await ctx.tick().until(dut.i.ready)
            ctx.set(dut.i.valid, 0)
            ctx.set(dut.o.ready, 1)
            (p,) = await ctx.tick().sample(dut.o.payload).until(dut.o.valid)
            ctx.set(dut.o.ready, 0)
            got.append((p.mss if p.mss_present else None, p.ws if p.ws_present else None))

    sim.add_testbench(bench)
    sim.run()
    return got


def test_linux_syn_options():
    assert parse_options(LINUX_SYN) == (1460, 7)
    assert run([LINUX_SYN]) == [(1460, 7)]


def test_matches_reference():
    cases = option_cases()
    want = [parse_options(c) for c in cases]
    assert len(set(want)) >= 8  # found, missing, overridden, capped, cut short
    assert run(cases) == want
