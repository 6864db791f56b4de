"""The LRO engine on Verilator (C++ harness) against the golden reference.

Every expected frame and its ``{segs, gso_size}`` come from :class:`nicsim.hw.ref.lro.LroEngine`
(the reference checked against Linux GRO), run through the model backend of the same engine
adapter; the gateware runs with random idle cycles and backpressure. The builds use a compact
configuration (4 flow contexts, merged frames up to 6000 bytes, frames up to 8192 bytes) so
that context exhaustion and the size limit happen often; ``long`` tests run Linux's defaults.
"""

import json
import random

import pytest
from test_lro_traffic import Flow, traffic

from nicsim.hw.lro_engine import LroConfig, run_model, run_rtl
from nicsim.hw.ref.lro import lro_merge

COMPACT = LroConfig(flows=4, max_bytes=6000, max_frame=8192)


def check(frames, config, width, **kwargs):
    """Run both backends; assert identical frames, metadata and origins; return the RTL run."""
    model = run_model(frames, config)
    rtl, done = run_rtl(frames, config, width=width, return_outcome=True, **kwargs)
    assert len(rtl.frames) == len(model.frames)
    for n, (got, want) in enumerate(zip(rtl.frames, model.frames, strict=True)):
        assert got == want, f"output frame {n} differs"
    assert rtl.out_meta == model.out_meta
    assert rtl.origin == model.origin
    assert rtl.meta == model.meta
    return rtl, done


def counters(done):
    names = ("frames_in", "frames_out", "merged", "drop_oversize", "timeout")
    assert all(resp == 0 for _, resp in done.reads)
    return dict(zip(names, (value for value, _ in done.reads), strict=True))


@pytest.mark.parametrize("width", [64, 512])
def test_mixed_traffic_matches_reference(width):
    frames = traffic(seed=width, count=300, flows=7)
    frames.append(Flow(random.Random(1), 99).frame(bytes(9000)))  # longer than max_frame
    rtl, done = check(frames, COMPACT, width, idle_pct=20, backpressure_pct=30, seed=width)
    merged = sum(m["segs"] > 1 for m in rtl.out_meta)
    assert merged > 10  # the traffic really merges
    assert any(m["segs"] > 3 for m in rtl.out_meta)
    regs = counters(done)
    assert regs["frames_in"] == len(frames)
    assert regs["frames_out"] == len(rtl.frames)
    assert regs["merged"] == sum(m["segs"] - 1 for m in rtl.out_meta)
    assert regs["drop_oversize"] == 1
    assert rtl.meta[-1] == {"dropped": "oversize"}


def test_context_exhaustion_evicts_oldest():
    # Eight flows sending round-robin through four contexts: every arrival of a new flow
    # evicts the oldest held one.
    rng = random.Random(7)
    flows = [Flow(rng, n) for n in range(8)]
    for flow in flows:
        flow.mss = 200
    frames = [flows[(n // 2) % 8].data() for n in range(96)]
    rtl, _ = check(frames, COMPACT, 64)
    assert [m["segs"] for m in rtl.out_meta] == [2] * 48


def test_size_limit_splits_a_long_stream():
    flow = Flow(random.Random(3), 1)
    flow.mss = 1448
    frames = [flow.data() for _ in range(40)]
    rtl, _ = check(frames, COMPACT, 512)
    assert all(len(f) - 14 <= COMPACT.max_bytes for f in rtl.frames)
    assert len(rtl.frames) >= 10


def _plain_segments(seed, n, host, mss, count):
    """``count`` full segments of one IPv4 flow without tags or options."""
    flow = Flow(random.Random(seed), n)
    flow.v6, flow.vlans, flow.tsval = False, 0, None
    flow.src, flow.dst = f"10.0.0.{host}", f"10.0.0.{host + 1}"
    flow.mss = mss
    return [flow.data() for _ in range(count)]


def test_minimum_segments_back_to_back():
    # 64-byte segments of one flow (10-byte payloads) with no pauses.
    frames = _plain_segments(4, 2, 9, 10, 200)
    assert all(len(f) == 64 for f in frames)
    rtl, done = check(frames, COMPACT, 64)
    assert done.in_beats == 200 * 8


def test_minimum_segments_at_line_rate_at_512_bit():
    # One beat a segment: the engine takes a frame a cycle (the segments chain without a
    # lookup); only the pipeline's start and the size limit's deliveries cost cycles.
    frames = _plain_segments(6, 4, 11, 10, 1000)
    rtl, done = check(frames, COMPACT, 512)
    assert done.in_beats == 1000
    assert done.in_span < 1000 * 1.05
    assert sum(m["segs"] for m in rtl.out_meta) == 1000


def test_full_segments_at_line_rate_at_512_bit():
    # 1500-byte segments: a segment's copy into its region takes as many cycles as its input
    # (24 words), so a copy that paused for a delivery would cost input beats for good.
    frames = _plain_segments(8, 5, 13, 1446, 120)
    assert all(len(f) == 1500 for f in frames)
    rtl, done = check(frames, COMPACT, 512)
    assert done.in_beats == 120 * 24
    assert done.in_span < 120 * 24 * 1.01
    assert len(rtl.frames) >= 120 // 4  # a delivery every four segments (6000-byte frames)


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_one_flow_back_to_back_with_events(seed):
    # Consecutive segments of one flow with no pauses, so that most frames chain onto the one
    # before: every event of the traffic generator (gaps, retransmissions, flags, IP ID
    # jumps, shorter and longer segments, bad checksums...) breaks or ends a chain.
    frames = traffic(seed=40 + seed, count=250, flows=1, odd=0.3)
    rtl, _ = check(frames, COMPACT, 512)
    assert any(m["segs"] > 3 for m in rtl.out_meta)


def test_order_is_kept_for_ineligible_frames_of_a_held_flow():
    rng = random.Random(11)
    flow = Flow(rng, 3)
    flow.v6, flow.vlans, flow.src, flow.dst = False, 0, "10.0.0.3", "10.0.0.4"
    frames = [flow.data(), flow.data()]
    bad = bytearray(flow.data())
    bad[-1] ^= 1  # TCP checksum wrong: ineligible, same flow
    frames += [bytes(bad), flow.data()]
    rtl, _ = check(frames, COMPACT, 64)
    assert [m["segs"] for m in rtl.out_meta] == [2, 1, 1]
    assert rtl.frames[1] == bytes(bad)


def test_lro_merge_is_the_model_run():
    frames = traffic(seed=5, count=120)
    model = run_model(frames, LroConfig())
    assert [m.frame for m in lro_merge(frames)] == model.frames


def test_cli_backends_identical(tmp_path):
    from typer.testing import CliRunner

    from nicsim.hw.pcap import Packet, write_pcap
    from nicsim.sim.cli import app

    frames = traffic(seed=21, count=80, flows=3)
    write_pcap(tmp_path / "in.pcap", [Packet(f, 1000 * n) for n, f in enumerate(frames)])
    (tmp_path / "lro.toml").write_text("[lro]\nflows = 4\nmax_bytes = 6000\nmax_frame = 8192\n")
    outputs = {}
    for backend in ("model", "rtl"):
        result = CliRunner().invoke(app, [
            "rtl", "run", "lro", "--in", str(tmp_path / "in.pcap"),
            "--out", str(tmp_path / f"{backend}.pcap"),
            "--meta", str(tmp_path / f"{backend}.jsonl"),
            "--config", str(tmp_path / "lro.toml"), "--backend", backend])
        assert result.exit_code == 0, result.output
        outputs[backend] = ((tmp_path / f"{backend}.pcap").read_bytes(),
                            (tmp_path / f"{backend}.jsonl").read_text())
    assert outputs["model"] == outputs["rtl"]
    records = [json.loads(line) for line in outputs["rtl"][1].splitlines()]
    assert records and all({"segs", "gso_size"} <= set(r) for r in records)


def test_cli_rejects_bad_config(tmp_path):
    from typer.testing import CliRunner

    from nicsim.hw.pcap import Packet, write_pcap
    from nicsim.sim.cli import app

    write_pcap(tmp_path / "in.pcap", [Packet(b"\x00" * 60, 0)])
    (tmp_path / "lro.toml").write_text("[lro]\nflows = 65\n")
    result = CliRunner().invoke(app, [
        "rtl", "run", "lro", "--in", str(tmp_path / "in.pcap"), "--out", str(tmp_path / "o.pcap"),
        "--meta", str(tmp_path / "o.jsonl"), "--config", str(tmp_path / "lro.toml"),
        "--backend", "model"])
    assert result.exit_code == 2
    assert "lro.flows must be an integer from 1 to 64" in result.output
    assert "Traceback" not in result.output


@pytest.mark.long
@pytest.mark.parametrize("width", [64, 512])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_linux_defaults_long(width, seed):
    frames = traffic(seed=seed * 100 + width, count=1500, flows=12)
    check(frames, LroConfig(), width, idle_pct=10 * seed, backpressure_pct=15 * seed, seed=seed)


@pytest.mark.long
def test_sixty_four_contexts_long():
    frames = traffic(seed=64, count=1500, flows=70, odd=0.05)
    check(frames, LroConfig(flows=64, max_bytes=6000, max_frame=8192), 64,
          backpressure_pct=20)


def _udp(seed, count, size):
    """``count`` UDP frames of ``size`` bytes: never held, they pass unchanged."""
    from scapy.layers.inet import IP, UDP
    from scapy.packet import Raw
    from test_lro_traffic import eth

    rng = random.Random(seed)
    return [bytes(eth() / IP(src="10.9.0.1", dst="10.9.0.2") / UDP(sport=7, dport=9)
                  / Raw(rng.randbytes(size - 42))) for _ in range(count)]


@pytest.mark.parametrize("backpressure", [0, 60])
def test_frames_passed_behind_long_deliveries_at_512_bit(backpressure):
    # Three flows of full segments fill 6000-byte merged frames (read-outs of 94 words) while
    # frames of other kinds pass between them: UDP, pure ACKs, bad checksums (a frame of a
    # held flow that is not merged delivers the flow first). The queued read-outs must leave in the
    # reference's order, each pass-through frame after the deliveries decided before it, and
    # the staging words of a queued frame must stay until its read-out (copies of later
    # segments end meanwhile).
    rng = random.Random(17)
    flows = _flows(3, 1448, host=20)
    udp = _udp(5, 200, 1200)
    frames = []
    for _ in range(240):
        flow = flows[rng.randrange(3)]
        kind = rng.random()
        if kind < 0.55:
            frames.append(flow.data())
        elif kind < 0.8:
            frames.append(udp.pop())
        elif kind < 0.9:
            frames.append(flow.frame(b""))  # a pure ACK of a held flow
        else:
            bad = bytearray(flow.data())
            bad[-1] ^= 0x33
            frames.append(bytes(bad))
    rtl, done = check(frames, COMPACT, 512, backpressure_pct=backpressure, seed=3)
    assert sum(m["segs"] == 4 for m in rtl.out_meta) > 5  # full 6000-byte frames
    assert sum(m["segs"] == 1 for m in rtl.out_meta) > 100
    regs = counters(done)
    assert regs["frames_out"] == len(rtl.frames)


def _flows(count, mss, host):
    out = []
    for n in range(count):
        flow = Flow(random.Random(100 + n), n)
        flow.v6, flow.vlans, flow.tsval = n % 2 == 1, 0, None
        flow.src = f"fd00::{host + n}" if flow.v6 else f"10.0.1.{host + n}"
        flow.dst = "fd00::1" if flow.v6 else "10.0.2.1"
        flow.mss = mss
        out.append(flow)
    return out


@pytest.mark.parametrize("width", [64, 512])
def test_region_not_reused_before_its_read_out_ends(width):
    # Six flows through four contexts: a new flow evicts the oldest held one and is held in a
    # free region while the evicted flow's 6000-byte merged frame is read out (slowly, under
    # backpressure); the regions run out, so that a region is taken again as soon as it is
    # free: a copy into it before its read-out's last read would overwrite the frame. Flows of
    # four segments each, in turns, so that every eviction delivers a long merged frame.
    flows = _flows(6, 1448, host=40)
    frames = []
    for turn in range(12):
        for k in range(2):
            flow = flows[(2 * turn + k) % 6]
            frames += [flow.data() for _ in range(4)]
    rtl, _ = check(frames, COMPACT, width, backpressure_pct=70, seed=width)
    assert sum(m["segs"] == 4 for m in rtl.out_meta) >= 20


def test_pinned_frames_hold_the_staging_ring_at_512_bit():
    # Pass-through frames wait for their read-outs while the output is mostly stalled and a
    # flow's segments merge behind them (their copies end and free words after the queued
    # frames): the ring must keep the queued frames' words until they are read out.
    flow = _flows(1, 1448, host=60)[0]
    udp = _udp(9, 120, 1500)
    frames = []
    for n in range(120):
        frames += [udp[n], flow.data(), flow.data()]
    rtl, _ = check(frames, COMPACT, 512, backpressure_pct=85, seed=5)
    assert sum(m["segs"] == 1 for m in rtl.out_meta) >= 120


def _interleaved(seed, count, mss):
    """Back-to-back frames of five flows (four contexts) and frames passed unchanged: after
    each frame, the next one is often of another flow (its lookup runs during the frame
    before), sometimes of the same flow but not chaining onto it (a sequence gap: it takes the
    lookup after the merge before it), a pure ACK or a bad checksum of a held flow (which
    delivers it), or a UDP frame (passed unchanged). Returns the frames and the count of each
    kind."""
    rng = random.Random(seed)
    flows = _flows(5, mss, host=80)
    udp = _udp(seed, count, 60)
    frames, kinds = [], {"segment": 0, "udp": 0, "gap": 0, "ack": 0, "bad": 0}
    last = flows[0]
    for _ in range(count):
        r = rng.random()
        flow = rng.choice(flows)
        if r < 0.45:
            kind, frame = "segment", flow.data()
        elif r < 0.7:
            kind, frame = "udp", udp.pop()
        elif r < 0.82:
            flow = last
            flow.seq += 3 * mss
            kind, frame = "gap", flow.data()
        elif r < 0.92:
            kind, frame = "ack", flow.frame(b"")
        else:
            bad = bytearray(flow.data())
            bad[-1] ^= 0x5A
            kind, frame = "bad", bytes(bad)
        kinds[kind] += 1
        frames.append(frame)
        last = flow
    return frames, kinds


@pytest.mark.parametrize("width,mss,backpressure", [(64, 10, 60), (512, 10, 0), (512, 10, 50),
                                                    (512, 200, 30)])
def test_lookups_overlap_the_frame_before(width, mss, backpressure):
    # The lookup of a frame runs while the frame before it is decided and passed on or merged
    # (it needs the FIFO to hold both: short frames, or a slow output that makes it wait), so
    # the frame is decided with the contexts as they are after the frame before: a merge
    # into one context while the next frame hits another or none, a frame passed on before a
    # frame that merges, is held, evicts the oldest flow or delivers its own.
    frames, kinds = _interleaved(width + mss + backpressure, 400, mss)
    assert all(n > 10 for n in kinds.values())
    rtl, done = check(frames, COMPACT, width, backpressure_pct=backpressure, seed=width)
    assert sum(m["segs"] > 1 for m in rtl.out_meta) > 20
    assert sum(m["segs"] == 1 for m in rtl.out_meta) >= kinds["udp"]
    assert counters(done)["frames_out"] == len(rtl.frames)


def test_last_segment_that_fits_only_because_it_is_shorter_after_a_chain():
    # One flow of 9-byte payloads at line rate (one beat a segment, merged in "Chain"), each
    # merged frame ending with a 2-byte segment that fits the 6000 bytes only because it is
    # shorter: the chain ends before it, and its lookup, which ran while the frames before
    # merged into the same context, must not decide it (it then takes the lookup in "Wait"
    # and merges).
    flow = Flow(random.Random(12), 6)
    flow.v6, flow.vlans, flow.tsval = False, 0, None
    flow.src, flow.dst, flow.mss = "10.0.0.70", "10.0.0.71", 9
    frames = []
    for _ in range(3):
        # After the Ethernet header: 40 header bytes and 9 payload bytes, then 9 a merge:
        # 6000 - 49 - 9 * 661 = 2 bytes of room.
        frames += [flow.data() for _ in range(662)] + [flow.data(2)]
    rtl, _ = check(frames, COMPACT, 512)
    assert [m["segs"] for m in rtl.out_meta] == [663] * 3
