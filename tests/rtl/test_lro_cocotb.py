"""The LRO engine on Verilator with cocotb 2.x and cocotbext-axi, against the golden reference.

The gateware is driven through its AXI4-Stream ports (``AxiStreamSource``/``AxiStreamSink``)
and its registers through AXI4-Lite (``AxiLiteMaster``). Every expected frame, its
``{segs, gso_size}`` and the index of the input frame whose arrival delivered it come from
:class:`nicsim.hw.ref.lro.LroEngine` (the reference checked against Linux GRO), run through the
model backend of the engine adapter; the counters are derived from the same run. The traffic
(``test_lro_traffic``) interleaves flows with sequence gaps, retransmissions, reordering, pure
ACKs, flag combinations, timestamps, VLAN tags, IPv6, and malformed frames (bad checksums,
truncations, fragments, IPv4 options); idle cycles and backpressure are random. The build is
the compact configuration of the other LRO tests (4 contexts, 6000-byte merged frames, frames
up to 8192 bytes); a ``long`` run builds 16 contexts (the 64-context build takes more than an
hour to compile for cocotb on a loaded two-core machine: 64 contexts run in the C++ harness
test ``test_sixty_four_contexts_long`` of ``test_lro``).
"""

import random

import cocotb
import pytest
from test_lro_traffic import Flow, traffic

from nicsim.hw.lro_engine import LroConfig, run_model
from nicsim.hw.ref.lro import LroEngine as RefEngine
from nicsim.rtl.lro import REGISTERS
from nicsim.rtl.regs import offset_of
from tbutil import PAUSES, TB, Handshakes, params, rtl_test

COMPACT = LroConfig(flows=4, max_bytes=6000, max_frame=8192)
COUNTERS = ("FRAMES_IN", "FRAMES_OUT", "MERGED", "DROP_OVERSIZE")
REG = {r.name: offset_of(REGISTERS, r.name) for r in REGISTERS}
SLVERR = 2


def config():
    """The configuration the pytest side built the design with."""
    p = params()
    return LroConfig(flows=p["flows"], max_bytes=p["max_bytes"], max_frame=p["max_frame"])


def user_word(meta, origin):
    """The output ``tuser`` the gateware gives a frame: segs, gso_size, input index."""
    return meta["segs"] | (meta["gso_size"] << 16) | ((origin & 0xFFFF) << 32)


class LroTB(TB):
    """The shared TB with the LRO's counters and a reference check of a whole poll."""

    def __init__(self, dut):
        super().__init__(dut)
        self.sent = 0  # frames sent since reset: the gateware's input index goes on counting

    async def counters(self):
        values = {}
        for name in COUNTERS:
            value, resp = await self.read_reg(REG[name])
            assert resp == 0, f"reading {name}: response {resp}"
            values[name] = value
        return values

    async def send(self, frames, flush=True):
        """Queue ``frames``; with ``flush`` the last one carries the end-of-poll ``tuser``."""
        from cocotbext.axi import AxiStreamFrame

        for n, frame in enumerate(frames):
            last = flush and n == len(frames) - 1
            await self.source.send(AxiStreamFrame(frame, tuser=int(last)))

    async def expect(self, frames, users, where=""):
        """Receive one frame per entry of ``frames`` and compare data and ``tuser``."""
        for n, (want, user) in enumerate(zip(frames, users, strict=True)):
            got = await self.sink.recv()
            data = bytes(got.tdata)
            common = min(len(data), len(want))
            first = next((k for k in range(common) if data[k] != want[k]), common)
            assert data == want, (f"{where}output frame {n}: {len(data)} bytes, want "
                                  f"{len(want)}; first difference at byte {first}")
            # The sink gives one value when every beat had the same tuser.
            assert isinstance(got.tuser, int), f"{where}output frame {n}: tuser varies"
            assert got.tuser == user, \
                f"{where}output frame {n}: tuser {got.tuser:#x}, want {user:#x}"

    async def poll(self, frames, where=""):
        """One poll: send, compare with the model run, check the counters' deltas."""
        cfg = config()
        model = run_model(frames, cfg)
        before = await self.counters()
        send = cocotb.start_soon(self.send(frames))
        await self.expect(model.frames,
                          [user_word(m, self.sent + o)
                           for m, o in zip(model.out_meta, model.origin, strict=True)], where)
        await send
        self.sent += len(frames)
        await self.cycles(20)
        assert self.sink.empty(), f"{where}more frames than the reference delivers"
        after = await self.counters()
        deltas = {k: (after[k] - before[k]) % (1 << 32) for k in COUNTERS}
        assert deltas == {
            "FRAMES_IN": len(frames),
            "FRAMES_OUT": len(model.frames),
            "MERGED": sum(m["segs"] - 1 for m in model.out_meta),
            "DROP_OVERSIZE": sum(r == {"dropped": "oversize"} for r in model.meta),
        }, f"{where}counters"
        return model


async def start(dut, idle="none", backpressure="none"):
    tb = LroTB(dut)
    tb.set_pauses(PAUSES[idle], PAUSES[backpressure])
    await tb.reset()
    return tb


def malformed(rng, count):
    """Frames the engine must pass unchanged (or drop when too long), and a few good ones."""
    flow = Flow(rng, 40)
    flow.mss = 300
    frames = []
    for _ in range(count):
        good = flow.data()
        kind = rng.randrange(8)
        if kind == 0:  # truncated anywhere, down to one byte
            frames.append(good[:rng.randint(1, len(good) - 1)])
        elif kind == 1:  # random bytes
            frames.append(rng.randbytes(rng.randint(1, 200)))
        elif kind == 2:  # a byte of the headers flipped
            bad = bytearray(good)
            bad[rng.randrange(14, 14 + 4 * flow.vlans + 60)] ^= 1 << rng.randrange(8)
            frames.append(bytes(bad))
        elif kind == 3:  # IP length larger than the frame
            bad = bytearray(good)
            at = 14 + 4 * flow.vlans + (4 if flow.v6 else 2)
            bad[at] ^= 0x40
            frames.append(bytes(bad))
        elif kind == 4:  # longer than max_frame: dropped and counted
            frames.append(good + bytes(config().max_frame + 1 - len(good)))
        else:
            frames.append(good)
    return frames


# ---------------------------------------------------------------------------------------------
# cocotb tests


@cocotb.test()
@cocotb.parametrize(pauses=[("none", "none"), ("random", "random"), ("cycle", "random")])
async def interleaved_flows(dut, pauses):
    """Interleaved flows with every event of the traffic generator; one poll per batch."""
    tb = await start(dut, *pauses)
    rng = random.Random("/".join(pauses))
    for batch, count in enumerate((100, 40)):  # two polls: the input index goes on counting
        frames = [f for f in traffic(seed=rng.randrange(1 << 30), count=count, flows=6)
                  if 0 < len(f) <= config().max_frame]
        model = await tb.poll(frames, f"batch {batch}: ")
        assert any(m["segs"] > 2 for m in model.out_meta)  # the traffic really merges


@cocotb.test()
async def vlan_ipv6_timestamps(dut):
    """One flow of each kind (0-2 VLAN tags, IPv4 and IPv6, with and without timestamps),
    round-robin, with retransmissions and pure ACKs mixed in."""
    tb = await start(dut, "random", "random")
    rng = random.Random(6)
    flows = []
    for n, (v6, vlans, ts) in enumerate([(False, 0, False), (True, 1, True), (False, 2, True),
                                         (True, 0, False)]):
        flow = Flow(rng, 60 + n)
        flow.v6, flow.vlans, flow.mss = v6, vlans, 500
        flow.tsval = rng.getrandbits(32) if ts else None
        flow.src = f"fd00::{n + 1}" if v6 else f"10.2.0.{n + 1}"
        flow.dst = "fd00::ff" if v6 else "10.2.1.1"
        flows.append(flow)
    frames = []
    for n in range(56):
        flow = flows[n % 4]
        if n % 13 == 7 and flow.sent:
            seq, payload = flow.sent[-1]
            frames.append(flow.frame(payload, seq=seq))  # retransmission
        elif n % 11 == 5:
            frames.append(flow.frame(b""))  # pure ACK
        else:
            frames.append(flow.data())
    model = await tb.poll(frames)
    assert {m["gso_size"] for m in model.out_meta} >= {500}


@cocotb.test()
async def malformed_input(dut):
    """Truncated, corrupted, inconsistent and oversize frames between good segments."""
    tb = await start(dut, "random", "cycle")
    rng = random.Random(9)
    model = await tb.poll(malformed(rng, 40))
    assert any(r == {"dropped": "oversize"} for r in model.meta)


@cocotb.test()
async def timeout_register(dut):
    """Flows held without an end of poll leave once the TIMEOUT register's cycles pass."""
    tb = await start(dut)
    assert await tb.write_reg(REG["TIMEOUT"], 300) == 0
    assert await tb.read_reg(REG["TIMEOUT"]) == (300, 0)
    rng = random.Random(4)
    flows = [Flow(rng, 70 + n) for n in range(2)]
    for flow in flows:
        flow.mss = 100
    cfg = config()
    ref = RefEngine(max_flows=cfg.flows, max_bytes=cfg.max_bytes, timeout_ps=1)
    index = 0
    for burst in range(3):
        frames = [flows[n % 2].data() for n in range(6)]
        want = [m for f in frames for m in ref.push(f, t_ps=10 * burst)]
        await tb.send(frames, flush=False)
        await tb.cycles(1500)  # far beyond the timeout: the bursts' flows leave
        want += ref.expire(10 * burst + 5)
        await tb.expect([m.frame for m in want],
                        [m.segs | (m.gso_size << 16) | ((index + len(frames) - 1) << 32)
                         for m in want], f"burst {burst}: ")
        assert any(m.segs > 1 for m in want)
        index += len(frames)
    assert tb.sink.empty()
    assert await tb.write_reg(REG["TIMEOUT"], 0) == 0


@cocotb.test()
async def register_errors(dut):
    """Counters are read-only, unmapped addresses answer SLVERR, TIMEOUT reads back."""
    tb = await start(dut)
    before = await tb.counters()
    for name in COUNTERS:
        assert await tb.write_reg(REG[name], 5) == SLVERR
    for addr in (0x14, 0x40, 0xFC):
        assert await tb.write_reg(addr, 1) == SLVERR
        assert (await tb.read_reg(addr))[1] == SLVERR
    assert await tb.counters() == before
    for value in (1, 0xFFFFFFFF, 0):
        assert await tb.write_reg(REG["TIMEOUT"], value) == 0
        assert await tb.read_reg(REG["TIMEOUT"]) == (value, 0)


@cocotb.test()
async def back_to_back_segments(dut):
    """64-byte segments of one flow with no idle: every beat accepted in a cycle (at 512 bit
    a segment a cycle: each chains onto the one before), frames right."""
    tb = await start(dut)
    flow = Flow(random.Random(8), 80)
    flow.v6, flow.vlans, flow.tsval = False, 0, None
    flow.src, flow.dst, flow.mss = "10.3.0.1", "10.3.0.2", 10
    frames = [flow.data() for _ in range(120)]
    assert all(len(f) == 64 for f in frames)
    watch = Handshakes(dut, "s_axis")
    await tb.poll(frames)
    await watch.stop()
    watch.assert_back_to_back("s_axis", len(frames) * -(-64 // (params()["width"] // 8)))


@cocotb.test()
async def many_contexts(dut):
    """More flows than contexts, round-robin: every new flow evicts the oldest held one."""
    tb = await start(dut, "random", "random")
    cfg = config()
    rng = random.Random(12)
    flows = [Flow(rng, 90 + n) for n in range(cfg.flows + 3)]
    for flow in flows:
        flow.mss = 64
    frames = [flows[(n // 2) % len(flows)].data() for n in range(4 * len(flows))]
    frames += [f for f in traffic(seed=13, count=3 * cfg.flows, flows=cfg.flows + 2)
               if 0 < len(f) <= cfg.max_frame]
    await tb.poll(frames)


# ---------------------------------------------------------------------------------------------
# pytest


@pytest.mark.rtl
# 512 bit builds a second large model: `make test-long` runs it (the C++ harness tests of
# test_lro.py check 512 bit in `make test`).
@pytest.mark.parametrize("width", [64, pytest.param(512, marks=pytest.mark.long)])
def test_lro_cocotb(width):
    rtl_test("lro", COMPACT.rtl_params(width), "test_lro_cocotb")


@pytest.mark.rtl
@pytest.mark.long
def test_lro_cocotb_16_contexts_long():
    rtl_test("lro", LroConfig(flows=16, max_bytes=6000, max_frame=8192).rtl_params(64),
             "test_lro_cocotb", testcase="many_contexts")
