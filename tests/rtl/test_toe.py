"""The TCP engine's front end on Verilator against the golden model hw.ref.tcp.TcpEngine.

Widths 64 and 512 on the C++ harness, 64 on cocotb (every width in Amaranth's simulator:
test_toe_sim.py).

ARP requests and replies, ICMP echo requests of every size class (odd lengths, Ethernet padding,
jumbo), and malformed frames (truncated, bad checksums, fragments, IPv4 options, other
protocols, oversize) go through the Verilated design, on the C++ harness with random source
idles and sink backpressure and on cocotb with the cocotbext-axi bus models. The output frames
must be the model's, byte for byte, and the counters read over AXI4-Lite the model's drop
reasons.
"""

import random

import cocotb
import pytest
from test_toe_sim import corpus, model_run

from nicsim.rtl.toe.engine import DROP_REASONS
from tbutil import TB, rtl_test

COUNTERS = {"frames_in": 0x00, "arp_replies": 0x04, "echo_replies": 0x08, "rst_sent": 0x0C,
            **{name: 0x10 + 4 * k for k, name in enumerate(DROP_REASONS)}}


def big_corpus(seed):
    frames = corpus(seed)
    rng = random.Random(seed)
    oversize = bytearray(9300)
    oversize[12:14] = b"\x08\x00"
    frames = frames + [bytes(oversize)]
    rng.shuffle(frames)
    return frames


def expected(frames):
    out, model = model_run(frames)
    drops = dict(model.drops)
    counts = {"frames_in": len(frames), "arp_replies": model.stats["arp_replies"],
              "echo_replies": model.stats["echo_replies"], "rst_sent": model.stats["rst_sent"]}
    for name in DROP_REASONS:
        counts[name] = drops.pop(name, 0)
    return out, counts, drops


@pytest.mark.parametrize("width, idle, backpressure", [(64, 0, 0), (64, 30, 40), (512, 30, 40)])
def test_harness_matches_model(width, idle, backpressure):
    from nicsim.hw.harness import build_harness, run_harness

    frames = big_corpus(11 + idle)
    out, counts, model_only = expected(frames)
    assert model_only == {}
    assert counts["rst_sent"] > 5 and counts["no_session"] > counts["rst_sent"]
    done = run_harness(build_harness("toe", {"width": width}), frames,
                       reads=list(COUNTERS.values()), idle_pct=idle,
                       backpressure_pct=backpressure, seed=idle + 1)
    assert [f for f, _ in done.frames] == out
    got = {name: value for name, (value, resp) in zip(COUNTERS, done.reads, strict=True)}
    assert got == counts
    assert all(resp == 0 for _, resp in done.reads)


@cocotb.test()
async def echo_and_arp(dut):
    from cocotbext.axi import AxiStreamFrame

    from tbutil import PAUSES

    tb = TB(dut)
    tb.set_pauses(PAUSES["random"], PAUSES["cycle"])
    await tb.reset()
    frames = corpus(21)[:16]
    out, counts, _ = expected(frames)
    for f in frames:
        await tb.source.send(AxiStreamFrame(f))
    for f in out:
        rx = await tb.sink.recv()
        assert bytes(rx.tdata) == f
    await tb.cycles(200)
    for name, addr in COUNTERS.items():
        assert await tb.read_reg(addr) == (counts[name], 0), name
    assert await tb.write_reg(0x00, 1) == 2  # read-only: SLVERR
    assert await tb.read_reg(0xFC) == (0, 2)  # unmapped


@pytest.mark.rtl
def test_cocotb_echo_and_arp():
    rtl_test("toe", {"width": 64}, "test_toe")
