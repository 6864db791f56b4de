"""TSO/USO engine on Verilator (C++ harness) against the golden reference, widths 64 and 512.

Super-frames come from scapy (IPv4 with and without options, IPv6, 0 to 2 VLAN tags, TCP with
and without timestamps, every flag combination that matters, UDP), each with its own command
(MSS, TCP or UDP, fixed ID) in ``tuser``; the expected segments and drop reasons come from
:func:`nicsim.hw.ref.tso.tso_segment`. Runs go with and without random source idles and sink
backpressure. The counters are read back over AXI4-Lite and compared with the reasons.
"""

from __future__ import annotations

import random
from collections import Counter

import pytest
from scapy.layers.inet import IP, TCP, UDP, IPOption_NOP, IPOption_RR
from scapy.layers.inet6 import IPv6, IPv6ExtHdrHopByHop
from scapy.layers.l2 import ARP, Dot1Q, Ether

from nicsim.hw.ref.tso import MAX_MSS, MAX_PAYLOAD, tso_segment

WIDTHS = (64, 512)
FLAG_SETS = ["A", "PA", "FPA", "CEA", "CA", "SA", "FA", "UA", "R", "", "CEUAPRSF"]


def eth(**fields):
    return Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02", **fields)


def super_frame(rng, payload_len, *, version=None, kind=None, vlans=None, ip_options=None,
                tcp_options=None, flags=None):
    """Return ``(bytes, kind)``: a random super-frame, scapy filling lengths and checksums."""
    version = version or rng.choice((4, 6))
    kind = kind or rng.choice(("tcp", "tcp", "udp"))
    vlans = rng.choice((0, 0, 1, 2)) if vlans is None else vlans
    ethertype = 0x0800 if version == 4 else 0x86DD
    tpids = (0x88A8, 0x8100)[2 - vlans:] if vlans else ()
    types = (*tpids, ethertype)
    pkt = eth(type=types[0])
    for i in range(vlans):
        pkt = pkt / Dot1Q(vlan=10 + i, type=types[i + 1])
    if version == 4:
        options = []
        if ip_options if ip_options is not None else rng.random() < 0.3:
            options = [IPOption_NOP()] * rng.randrange(1, 4) + [
                IPOption_RR(routers=[f"10.0.0.{i}" for i in range(rng.randrange(1, 9))])]
        ip = IP(src="10.1.2.3", dst="10.9.8.7", id=rng.randrange(65536),
                flags=rng.choice(("DF", 0)), ttl=rng.randrange(1, 256), options=options)
    else:
        ip = IPv6(src="fd00::1", dst="fd00::2:3", fl=rng.randrange(1 << 20),
                  hlim=rng.randrange(1, 256))
    payload = rng.randbytes(payload_len)
    if kind == "tcp":
        opts = []
        if tcp_options if tcp_options is not None else rng.random() < 0.6:
            opts = [("NOP", None), ("NOP", None),
                    ("Timestamp", (rng.randrange(1 << 32), rng.randrange(1 << 32)))]
            if rng.random() < 0.3:
                opts += [("SAckOK", b""), ("NOP", None), ("NOP", None)]
        l4 = TCP(sport=rng.randrange(65536), dport=443, seq=rng.randrange(1 << 32),
                 ack=rng.randrange(1 << 32), window=rng.randrange(65536),
                 flags=flags if flags is not None else rng.choice(FLAG_SETS), options=opts)
    else:
        l4 = UDP(sport=rng.randrange(65536), dport=4789)
    if payload_len > 60000:
        # Past the 16-bit IP length: the header says less, which neither the reference nor
        # the engine reads (the payload is every byte after the TCP/UDP header).
        return bytes(pkt / ip / l4) + payload, kind
    return bytes(pkt / ip / l4 / payload), kind


def command(mss, kind="tcp", fixed_id=False):
    return mss | (kind == "udp") << 16 | int(fixed_id) << 17


def valid_cases(rng, count, lanes):
    """Return ``[(frame, mss, kind, fixed_id)]`` that segment, over many sizes and MSS."""
    cases = []
    for _ in range(count):
        mss = rng.choice((1, 2, 7, lanes - 1, lanes, lanes + 1, 100, 536, 1448, 1460,
                          rng.randrange(1, 3000)))
        segments = rng.choice((1, 1, 2, 3, rng.randrange(1, 8)))
        payload_len = mss * (segments - 1) + rng.randrange(1, mss + 1)
        payload_len = min(payload_len, 12000)
        if payload_len < mss:
            mss = payload_len
        frame, kind = super_frame(rng, payload_len)
        cases.append((frame, mss, kind, rng.random() < 0.3))
    return cases


def bad_cases(rng):
    """Return cases every one of which the engine must drop, with a known reason each."""
    ok, kind = super_frame(rng, 3000, version=4, kind="tcp", vlans=1)
    cases = [
        (ok, 0, kind, False),  # mss 0
        (ok, MAX_MSS + 1, kind, False),  # mss over the engine's limit
        (ok, 3001, kind, False),  # payload shorter than mss
        (super_frame(rng, 0, kind="tcp")[0], 100, "tcp", False),  # no payload
        (ok, 1000, "udp", False),  # wrong protocol
        (super_frame(rng, 500, kind="udp")[0], 100, "tcp", False),
        (bytes(eth() / ARP()), 100, "tcp", False),  # not IP
        (bytes(eth(type=0x0800))[:13], 100, "tcp", False),  # truncated Ethernet header
        (bytes(eth(type=0x8100) / Dot1Q(type=0x8100))[:20], 100, "tcp", False),
        (ok[:30], 100, "tcp", False),  # truncated IP header
        (ok[:18 + 20 + 10], 100, "tcp", False),  # truncated TCP header
        (bytes(eth() / IP(flags="MF") / TCP() / (b"x" * 300)), 100, "tcp", False),
        (bytes(eth() / IP(frag=3) / UDP() / (b"x" * 300)), 100, "udp", False),
        (bytes(eth() / IPv6() / IPv6ExtHdrHopByHop() / TCP() / (b"x" * 300)), 100, "tcp",
         False),
        (bytes(eth() / IP(ihl=4) / TCP() / (b"x" * 300)), 100, "tcp", False),
        (bytes(eth() / IP() / TCP(dataofs=4) / (b"x" * 300)), 100, "tcp", False),
        (bytes(eth() / IP(version=6) / TCP() / (b"x" * 300)), 100, "tcp", False),
    ]
    over, kind = super_frame(rng, MAX_PAYLOAD + 1, version=6, kind="udp")
    cases.append((over, 1400, kind, False))  # payload over 64 KiB
    huge, kind = super_frame(rng, MAX_PAYLOAD + 300, version=4, kind="tcp", vlans=2)
    cases.append((huge, 1400, kind, False))  # longer than the frame ring's frame limit
    return cases


def _first_difference(got, want):
    return next((i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b),
                min(len(got), len(want)))


_BUILDS = {}


def harness(width):
    """Return the harness build of the engine at ``width`` (elaborated once per session)."""
    from nicsim.hw.harness import build_harness

    if width not in _BUILDS:
        _BUILDS[width] = build_harness("tso", {"width": width})
    return _BUILDS[width]


def run_cases(cases, width, idle_pct=0, backpressure_pct=0, seed=1):
    """Run cases through the gateware; compare segments, verdicts and counters."""
    from nicsim.hw.harness import run_harness
    from nicsim.rtl.tso import COUNTERS, REASONS

    build = harness(width)
    frames = [c[0] for c in cases]
    users = [command(mss, kind, fixed) for _, mss, kind, fixed in cases]
    done = run_harness(build, frames, users, (), list(COUNTERS.values()), idle_pct=idle_pct,
                       backpressure_pct=backpressure_pct, seed=seed)
    expected = [tso_segment(f, mss, kind, fixed) for f, mss, kind, fixed in cases]
    assert len(done.results) == len(cases)
    outputs = iter(done.frames)
    for index, (ref, word) in enumerate(zip(expected, done.results, strict=True)):
        reason = REASONS[word & 0xFF]
        segments = word >> 8
        assert reason == (ref.drop_reason or "sent"), f"frame {index}: {cases[index][1:]}"
        assert segments == len(ref.frames), f"frame {index}"
        for k, want in enumerate(ref.frames):
            got, user = next(outputs)
            assert got == want, (f"frame {index} ({cases[index][1:]}) segment {k} of "
                                 f"{len(ref.frames)}: first difference at byte "
                                 f"{_first_difference(got, want)}")
            assert user == int(k == 0) | int(k == len(ref.frames) - 1) << 1
    assert next(outputs, None) is None, "segments beyond the reference's"
    reasons = Counter(r.drop_reason for r in expected if r.drop_reason)
    counters = dict(zip(COUNTERS, ((value, resp) for value, resp in done.reads), strict=True))
    want = {
        "frames_in": len(cases),
        "frames_segmented": sum(1 for r in expected if r.drop_reason is None),
        "segments_out": sum(len(r.frames) for r in expected),
        **{f"drop_{name}": reasons.get(name, 0) for name in REASONS[1:]},
    }
    assert {name: value for name, (value, _) in counters.items()} == want
    assert all(resp == 0 for _, resp in counters.values())
    return done


@pytest.mark.parametrize("width", WIDTHS)
def test_segments_match_reference(width):
    rng = random.Random(width)
    run_cases(valid_cases(rng, 40, width // 8), width)


@pytest.mark.parametrize("width", WIDTHS)
def test_idle_and_backpressure(width):
    rng = random.Random(100 + width)
    cases = valid_cases(rng, 25, width // 8)
    run_cases(cases, width, idle_pct=30, backpressure_pct=40, seed=width)


@pytest.mark.parametrize("width", WIDTHS)
def test_drops_counted_with_reason(width):
    rng = random.Random(200 + width)
    bad = bad_cases(rng)
    good = valid_cases(rng, len(bad), width // 8)
    mixed = [case for pair in zip(bad, good, strict=True) for case in pair]
    run_cases(mixed, width, idle_pct=10, backpressure_pct=20, seed=3)


@pytest.mark.parametrize("width", WIDTHS)
def test_flags_vlans_versions(width):
    rng = random.Random(300 + width)
    cases = []
    for flags in FLAG_SETS:
        for version in (4, 6):
            for vlans in (0, 1, 2):
                mss = rng.choice((536, 1000, 1448))
                frame, kind = super_frame(rng, mss * 2 + rng.randrange(1, mss), version=version,
                                          kind="tcp", vlans=vlans, flags=flags)
                cases.append((frame, mss, kind, False))
    run_cases(cases, width)


@pytest.mark.parametrize("width", WIDTHS)
def test_64k_super_frame_at_line_rate(width):
    """A 64 KiB send: every segment right, and the output busy every cycle once it starts."""
    rng = random.Random(400 + width)
    lanes = width // 8
    frame, kind = super_frame(rng, MAX_PAYLOAD, version=4, kind="tcp", vlans=0,
                              ip_options=False, tcp_options=True)
    from nicsim.hw.harness import run_harness

    done = run_harness(harness(width), [frame], [command(1448)])
    assert [f for f, _ in done.frames] == list(tso_segment(frame, 1448).frames)
    out_beats = sum(-(-len(f) // lanes) for f, _ in done.frames)
    in_beats = -(-len(frame) // lanes)
    first_segment = -(-len(done.frames[0][0]) // lanes)
    # Store and forward: the frame goes in at one beat a cycle, its first segment is buffered
    # (to sum its payload before its header leaves), then the output sends a beat every cycle.
    # 80 cycles cover reset, the header work of the frame and the pipelines; an idle output
    # cycle per segment would not fit.
    assert len(done.frames) == 46
    assert done.cycles <= in_beats + first_segment + out_beats + 80, (
        done.cycles, in_beats, first_segment, out_beats)


@pytest.mark.parametrize("width", WIDTHS)
def test_64k_super_frames_back_to_back_with_a_full_ring(width):
    """64 KiB sends back to back at MSS 64: the output is twice the input, so the frame ring
    stays full (its room flag stops the input) while the next frames wait; no stored beat is
    overwritten before it is read (every segment of every send right), and the next send
    fills the ring behind the reads of the current one (the output never waits for it)."""
    rng = random.Random(500 + width)
    frames = [super_frame(rng, MAX_PAYLOAD, version=4, kind="tcp", vlans=0, ip_options=False,
                          tcp_options=True)[0] for _ in range(3)]
    from nicsim.hw.harness import run_harness

    done = run_harness(harness(width), frames, [command(64)] * len(frames))
    want = [seg for frame in frames for seg in tso_segment(frame, 64).frames]
    assert len(want) == 3 * 1024
    got = [f for f, _ in done.frames]
    assert len(got) == len(want) and got == want
    lanes = width // 8
    out_beats = sum(-(-len(f) // lanes) for f in got)
    first = -(-len(frames[0]) // lanes) + -(-len(got[0]) // lanes)
    assert done.cycles <= first + out_beats + 80 * len(frames), (done.cycles, first, out_beats)


@pytest.mark.parametrize("udp, fixed_id", [(False, True)])
def test_engine_backends_identical(udp, fixed_id):
    """``nicsim rtl run tso``'s two backends give the same frames, origins and metadata."""
    from nicsim.hw.engines import load_config, run_model, run_rtl

    rng = random.Random(500 + udp)
    kind = "udp" if udp else "tcp"
    frames = [super_frame(rng, rng.randrange(900, 6000), kind=kind)[0] for _ in range(6)]
    frames += [b"", bytes(eth() / ARP()), super_frame(rng, 200, kind=kind)[0]]
    config = load_config("tso", None, {"mss": 1000, "udp": udp, "fixed_id": fixed_id})
    model = run_model("tso", frames, config)
    rtl = run_rtl("tso", frames, config, width=64, idle_pct=20, backpressure_pct=30, seed=7)
    assert rtl.frames == model.frames
    assert rtl.out_meta == model.out_meta and rtl.origin == model.origin
    assert rtl.meta == model.meta
    assert [m.get("dropped") for m in model.meta[6:]] == ["not_ip", "not_ip", "short"]


def test_engine_config_errors():
    from nicsim.hw.engines import ConfigError, load_config

    assert load_config("tso", None, {}).mss == 1448
    with pytest.raises(ConfigError, match="mss must be an integer"):
        load_config("tso", None, {"mss": 70000})
    with pytest.raises(ConfigError, match="does not apply"):
        load_config("tso", None, {"program": "x.toml"})


def test_tso_segment_limits():
    """``tso_segment`` is Linux's ``segment`` inside the engine's limits, a drop outside."""
    from nicsim.hw.ref.tso import segment

    rng = random.Random(600)
    frame, _ = super_frame(rng, 3000, version=4, kind="tcp", vlans=0, tcp_options=False)
    assert tso_segment(frame, 1000) == segment(frame, 1000)
    assert len(tso_segment(frame, 3000).frames) == 1  # payload of exactly one MSS
    assert tso_segment(frame, 3001).drop_reason == "short"
    assert segment(frame, 3001).drop_reason is None  # Linux sends it as it is
    assert tso_segment(frame, 0).drop_reason == "bad_mss"
    assert tso_segment(frame, MAX_MSS + 1).drop_reason == "bad_mss"
    assert tso_segment(frame, 100, max_payload=2999).drop_reason == "oversize"
    assert tso_segment(frame[:40], 100).drop_reason == "malformed"  # header drops first


def test_keep_hole_dropped_as_malformed():
    """A ``tkeep`` hole (which the C++ harness cannot send) drops the frame as malformed.

    Amaranth's simulator, with a small frame ring: a good frame, the same frame with a hole in
    its third beat, the good frame again.
    """
    from amaranth.sim import Simulator

    from nicsim.rtl.tso import COUNTERS, REASONS, Tso

    rng = random.Random(700)
    frame, _ = super_frame(rng, 300, version=4, kind="tcp", vlans=0)
    expected = tso_segment(frame, 100).frames
    dut = Tso(64, max_mss=512, max_payload=1024)
    beats = [frame[i:i + 8] for i in range(0, len(frame), 8)]
    outputs, results, counters = [], [], {}

    async def source(ctx):
        for hole in (False, True, False):
            for n, beat in enumerate(beats):
                keep = (1 << len(beat)) - 1
                if hole and n == 2:
                    keep &= ~0x10
                ctx.set(dut.i.payload.data, int.from_bytes(beat, "little"))
                ctx.set(dut.i.payload.keep, keep)
                ctx.set(dut.i.payload.last, n == len(beats) - 1)
                ctx.set(dut.i.payload.user, command(100))
                ctx.set(dut.i.valid, 1)
                await ctx.tick().until(dut.i.ready)
        ctx.set(dut.i.valid, 0)

    async def sink(ctx):
        ctx.set(dut.o.ready, 1)
        ctx.set(dut.result.ready, 1)
        current = b""
        while len(results) < 3:
            await ctx.tick()
            if ctx.get(dut.o.valid):
                keep = ctx.get(dut.o.payload.keep)
                data = ctx.get(dut.o.payload.data).to_bytes(8, "little")
                current += data[:bin(keep).count("1")]
                if ctx.get(dut.o.payload.last):
                    outputs.append(current)
                    current = b""
            if ctx.get(dut.result.valid):
                results.append(ctx.get(dut.result.payload))
        for name, addr in COUNTERS.items():
            ctx.set(dut.bus.addr, addr)
            ctx.set(dut.bus.r_en, 1)
            await ctx.tick()
            ctx.set(dut.bus.r_en, 0)
            await ctx.tick()
            counters[name] = ctx.get(dut.bus.r_data)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(source)
    sim.add_testbench(sink)
    sim.run()
    assert [REASONS[w & 0xFF] for w in results] == ["sent", "malformed", "sent"]
    assert outputs == list(expected) * 2
    assert counters["drop_malformed"] == 1 and counters["frames_in"] == 3
    assert counters["segments_out"] == 2 * len(expected)


@pytest.mark.long
@pytest.mark.parametrize("width", WIDTHS)
def test_fuzz_long(width):
    """Many random super-frames and bad frames, mixed, with idles and backpressure."""
    for seed in range(4):
        rng = random.Random(1000 * width + seed)
        cases = valid_cases(rng, 150, width // 8) + bad_cases(rng)
        rng.shuffle(cases)
        run_cases(cases, width, idle_pct=rng.choice((0, 20, 50)),
                  backpressure_pct=rng.choice((0, 30, 70)), seed=seed)
