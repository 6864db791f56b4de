"""The TSO/USO engine on Verilator through cocotb 2.x, widths 64 and 512.

Bus models from cocotbext-axi: an AXI4-Stream source for the super-frames (the command in
``tuser`` of the first beat, junk in ``tuser`` of the later beats), sinks for the segments and
for the result words, and an AXI4-Lite master for the counters. Super-frames come from scapy
(TCP and UDP, IPv4 with and without options, IPv6, 0 to 2 VLAN tags, TCP options, fixed IDs,
MSS edge cases) and malformed ones; the expected segments and drop reasons come from
:func:`nicsim.hw.ref.tso.tso_segment`. A frame with a ``tkeep`` hole (which only a bus model can
send) is dropped as malformed. Every segment is checked byte for byte, with its ``tkeep`` (all
ones but a contiguous run on the last beat) and its ``tuser`` (first/last segment of its
super-frame, the same on every beat), and the counters' changes are checked against the
reasons. Runs go with and without random source idles and sink backpressure.

``test_tso_cocotb_long`` (``-m long``) runs a longer random mix.
"""

import os
import random
from collections import Counter

import cocotb
import pytest
from test_tso import _first_difference, bad_cases, command, super_frame, valid_cases

from nicsim.hw.ref.tso import MAX_MSS, MAX_PAYLOAD, tso_segment
from tbutil import PAUSES, TB, params, rtl_test

SLVERR = 2
_LONG = os.environ.get("NICSIM_TSO_LONG") == "1"


def edge_cases(rng, lanes):
    """Return cases at the MSS and size limits: ``[(frame, mss, kind, fixed_id)]``."""
    cases = []
    for kind in ("tcp", "udp"):
        for version in (4, 6):
            frame, _ = super_frame(rng, 3000, version=version, kind=kind)
            cases += [
                (frame, 3000, kind, False),  # payload of exactly one MSS: one segment
                (frame, 2999, kind, True),  # a last segment of one byte
                (frame, 1500, kind, False),  # two equal segments
                (frame, 1000, kind, True),
            ]
            small, _ = super_frame(rng, 5, version=version, kind=kind)
            cases.append((small, 1, kind, False))  # one byte a segment
            for mss in (lanes - 1, lanes, lanes + 1):  # segment ends on and off a beat
                frame, _ = super_frame(rng, 3 * mss + rng.randrange(1, mss), version=version,
                                       kind=kind)
                cases.append((frame, mss, kind, rng.random() < 0.5))
    frame, kind = super_frame(rng, 2 * MAX_MSS + 1, version=4, kind="tcp", vlans=2)
    cases.append((frame, MAX_MSS, kind, False))  # the largest MSS, a last segment of 1 byte
    cases.append((frame, MAX_MSS + 1, kind, False))  # over the largest MSS: dropped
    frame, kind = super_frame(rng, MAX_PAYLOAD, version=6, kind="udp", vlans=1)
    cases.append((frame, 8000, kind, False))  # the largest payload
    return cases


def with_hole(rng, frame, lanes):
    """Return a ``tkeep`` list for ``frame`` with one byte cleared in a beat before the last."""
    keep = [1] * len(frame)
    beats = -(-len(frame) // lanes)
    beat = rng.randrange(beats - 1)
    keep[beat * lanes + rng.randrange(lanes)] = 0
    return keep


class TsoTB(TB):
    """The shared TB with the ``tso`` result stream and the engine's checks."""

    def __init__(self, dut):
        super().__init__(dut, result="tso")
        self.lanes = params().get("width", 64) // 8

    async def counters(self):
        from nicsim.rtl.tso import COUNTERS

        values = {}
        for name, addr in COUNTERS.items():
            value, resp = await self.read_reg(addr)
            assert resp == 0, f"counter {name} read answered {resp}"
            values[name] = value
        return values

    def _axis(self, frame, mss, kind, fixed_id, keep, rng):
        from cocotbext.axi import AxiStreamFrame

        lanes = self.lanes
        user = [command(mss, kind, fixed_id)] * lanes  # the command counts on beat 0 only
        user += [rng.randrange(1 << 18) for _ in range(len(frame) - lanes)]
        return AxiStreamFrame(frame, tkeep=keep, tuser=user[:len(frame)])

    def _segment(self, rx):
        """Return ``(bytes, user)`` of a received segment after checking keep and user."""
        lanes = self.lanes
        keep = list(rx.tkeep)
        beats = [keep[i:i + lanes] for i in range(0, len(keep), lanes)]
        assert all(all(beat) for beat in beats[:-1]), "tkeep hole before the last beat"
        last = beats[-1]
        run = last.index(0) if 0 in last else lanes
        assert run > 0 and not any(last[run:]), f"last beat tkeep {last}"
        users = set(rx.tuser)
        assert len(users) == 1, f"tuser changes within a segment: {users}"
        return bytes(b for b, k in zip(rx.tdata, keep, strict=True) if k), users.pop()

    async def check(self, cases, keeps=None, seed=0):
        """Send ``cases``; compare segments, verdicts and counter changes with the reference."""
        from nicsim.rtl.tso import REASONS

        rng = random.Random(seed)
        keeps = keeps or [None] * len(cases)
        want = [tso_segment(f, mss, kind, fixed) for f, mss, kind, fixed in cases]
        reasons = [r.drop_reason or "sent" if k is None else "malformed"
                   for r, k in zip(want, keeps, strict=True)]
        before = await self.counters()
        sender = cocotb.start_soon(self._send(cases, keeps, rng))
        for index, (case, ref, reason) in enumerate(zip(cases, want, reasons, strict=True)):
            word = int.from_bytes(bytes((await self.result.recv()).tdata), "little")
            got = REASONS[word & 0xFF] if word & 0xFF < len(REASONS) else f"code {word & 0xFF}"
            where = f"frame {index} (mss {case[1]}, {case[2]}, fixed_id {case[3]})"
            assert got == reason, f"{where}: verdict {got}, want {reason}"
            count = len(ref.frames) if reason == "sent" else 0
            assert word >> 8 == count, f"{where}: {word >> 8} segments, want {count}"
            for k in range(count):
                data, user = self._segment(await self.sink.recv(compact=False))
                wanted = ref.frames[k]
                assert data == wanted, (
                    f"{where} segment {k} of {count}: first difference at byte "
                    f"{_first_difference(data, wanted)} ({len(data)} vs {len(wanted)} bytes)")
                assert user == int(k == 0) | int(k == count - 1) << 1, f"{where} segment {k}"
        await sender
        await self.cycles(20)
        assert self.sink.empty() and self.result.empty(), "output beyond the reference's"
        after = await self.counters()
        tally = Counter(reasons)
        deltas = {name: (after[name] - before[name]) % (1 << 32) for name in after}
        assert deltas == {
            "frames_in": len(cases),
            "frames_segmented": tally["sent"],
            "segments_out": sum(len(r.frames) for r, why in zip(want, reasons, strict=True)
                                if why == "sent"),
            **{f"drop_{name}": tally[name] for name in REASONS[1:]},
        }

    async def _send(self, cases, keeps, rng):
        for (frame, mss, kind, fixed_id), keep in zip(cases, keeps, strict=True):
            await self.source.send(self._axis(frame, mss, kind, fixed_id, keep, rng))
        await self.source.wait()


async def start(dut, idle="none", backpressure="none"):
    tb = TsoTB(dut)
    tb.set_pauses(PAUSES[idle], PAUSES[backpressure])
    await tb.reset()
    return tb


# ---- cocotb tests --------------------------------------------------------------------------


@cocotb.test(skip=_LONG)
@cocotb.parametrize(pauses=[("none", "none"), ("random", "random"), ("cycle", "random")])
async def random_super_frames(dut, pauses):
    """Random TCP/UDP super-frames over IPv4/IPv6 and VLANs, with idles and backpressure."""
    tb = await start(dut, *pauses)
    rng = random.Random("tso/" + "/".join(pauses))
    await tb.check(valid_cases(rng, 12, tb.lanes), seed=1)


@cocotb.test(skip=_LONG)
async def mss_edges(dut):
    """One-MSS payloads, one-byte last segments, beat-sized MSS, the largest MSS and payload."""
    tb = await start(dut, "random", "random")
    rng = random.Random(11)
    await tb.check(edge_cases(rng, tb.lanes), seed=2)


@cocotb.test(skip=_LONG)
async def malformed_counted_by_reason(dut):
    """Every drop reason, a tkeep hole, each between good frames; the counters by reason."""
    tb = await start(dut, "random", "cycle")
    rng = random.Random(12)
    bad = bad_cases(rng)
    hole, kind = super_frame(rng, 700, version=4, kind="tcp")
    bad.append((hole, 100, kind, False))
    good = valid_cases(rng, len(bad), tb.lanes)
    cases = [case for pair in zip(bad, good, strict=True) for case in pair]
    keeps = [None] * len(cases)
    keeps[2 * len(bad) - 2] = with_hole(rng, hole, tb.lanes)
    await tb.check(cases, keeps, seed=3)


@cocotb.test(skip=_LONG)
async def registers(dut):
    """Counter writes and unmapped reads answer SLVERR and change nothing."""
    from nicsim.rtl.tso import COUNTERS

    tb = await start(dut)
    rng = random.Random(13)
    await tb.check(valid_cases(rng, 3, tb.lanes) + bad_cases(rng)[:3])
    before = await tb.counters()
    for addr in COUNTERS.values():
        assert await tb.write_reg(addr, 0x1234) == SLVERR
    for addr in (0x2C, 0x40, 0xFC):
        assert (await tb.read_reg(addr))[1] == SLVERR
    assert await tb.counters() == before


@cocotb.test(skip=not _LONG)
async def long_random_mix(dut):
    """Many random and bad super-frames, shuffled, under changing idle and backpressure."""
    # One bench for all rounds: a second one would start a second clock and a second set of
    # sinks on the same ports, each taking some of the beats.
    tb = await start(dut)
    for seed, pauses in enumerate((("none", "none"), ("random", "random"), ("cycle", "random"),
                                   ("random", "cycle"))):
        tb.set_pauses(PAUSES[pauses[0]], PAUSES[pauses[1]])
        rng = random.Random(100 + seed)
        cases = valid_cases(rng, 60, tb.lanes) + bad_cases(rng) + edge_cases(rng, tb.lanes)
        rng.shuffle(cases)
        await tb.check(cases, seed=seed)


# ---- pytest --------------------------------------------------------------------------------


@pytest.mark.rtl
# 512 bit builds a second large model: `make test-long` runs it (the C++ harness tests of
# test_tso.py check 512 bit in `make test`).
@pytest.mark.parametrize("width", [64, pytest.param(512, marks=pytest.mark.long)])
def test_tso_cocotb(width):
    rtl_test("tso", {"width": width}, "test_tso_cocotb")


@pytest.mark.rtl
@pytest.mark.long
@pytest.mark.parametrize("width", [64, 512])
def test_tso_cocotb_long(width):
    rtl_test("tso", {"width": width}, "test_tso_cocotb", env={"NICSIM_TSO_LONG": "1"})
