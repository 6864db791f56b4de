# amaranth: UnusedElaboratable=no
"""The LRO engine in Amaranth's simulator (the fast tier): timeouts, registers, parameters.

Expected frames come from the golden reference :class:`nicsim.hw.ref.lro.LroEngine`, given the
arrival times the test controls (bursts far apart, each shorter than the timeout).
"""

import random

import pytest
from amaranth.sim import Simulator
from test_lro_traffic import Flow, traffic

from nicsim.hw.ref.lro import LroEngine as RefEngine
from nicsim.rtl.lro import REGISTERS, LroEngine
from nicsim.rtl.regs import offset_of

REG_TIMEOUT = offset_of(REGISTERS, "TIMEOUT")


async def bus_access(ctx, bus, addr, value=None):
    """Write ``value`` (or read when None); return (read data, rejected)."""
    ctx.set(bus.addr, addr)
    ctx.set(bus.w_data, value or 0)
    await ctx.tick()
    strobe = bus.r_en if value is None else bus.w_en
    ctx.set(strobe, 1)
    err = ctx.get(bus.err)
    await ctx.tick()
    ctx.set(strobe, 0)
    return (ctx.get(bus.r_data) if value is None else 0), bool(err)


def simulate(dut, frames, users=None, gaps=None, timeout=0, backpressure=None, quiet=3000,
             bus_ops=()):
    """Stream ``frames`` (``gaps[n]`` idle cycles before frame ``n``) and collect the output.

    Returns the (frame, user) pairs delivered and the results of ``bus_ops`` (address, value or
    None), done after the frames.
    """
    lanes = dut.width // 8
    users = users or [0] * len(frames)
    gaps = gaps or {}
    out, answers, done = [], [], []

    async def producer(ctx):
        if timeout:
            assert not (await bus_access(ctx, dut.bus, REG_TIMEOUT, timeout))[1]
        for n, frame in enumerate(frames):
            for _ in range(gaps.get(n, 0)):
                await ctx.tick()
            for start in range(0, len(frame), lanes):
                chunk = frame[start:start + lanes]
                ctx.set(dut.i.payload.data, int.from_bytes(chunk, "little"))
                ctx.set(dut.i.payload.keep, (1 << len(chunk)) - 1)
                ctx.set(dut.i.payload.last, start + lanes >= len(frame))
                ctx.set(dut.i.payload.user, users[n])
                ctx.set(dut.i.valid, 1)
                await ctx.tick().until(dut.i.ready)
            ctx.set(dut.i.valid, 0)
        done.append(True)
        for addr, value in bus_ops:
            answers.append(await bus_access(ctx, dut.bus, addr, value))

    async def consumer(ctx):
        rng = random.Random(5)
        data, idle = b"", 0
        while not done or idle < quiet:
            ready = backpressure is None or rng.random() >= backpressure
            ctx.set(dut.o.ready, ready)
            _, _, valid, beat = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            if valid and ready:
                idle = 0
                data += beat.data.to_bytes(lanes, "little")[:bin(beat.keep).count("1")]
                if beat.last:
                    out.append((data, beat.user))
                    data = b""
            else:
                idle += 1

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run()
    return out, answers


def small(width=64, **kwargs):
    kwargs.setdefault("buffer_bytes", 4096)
    kwargs.setdefault("max_frame", 2048)
    return LroEngine(width, **kwargs)


def bursts(seed, count, size):
    """``count`` bursts of ``size`` frames from three flows (IPv4, IPv6 with VLAN, options)."""
    rng = random.Random(seed)
    flows = [Flow(rng, n) for n in range(3)]
    for n, flow in enumerate(flows):
        flow.mss = 120
        flow.v6 = n == 1
        flow.vlans = n
        flow.src = "fd00::1" if flow.v6 else f"10.0.0.{n + 1}"
        flow.dst = "fd00::2" if flow.v6 else "10.0.1.1"
    return [[rng.choice(flows).data() for _ in range(size)] for _ in range(count)]


@pytest.mark.parametrize("width", [64, pytest.param(128, marks=pytest.mark.long)])
def test_timeout_flushes_between_bursts(width):
    groups = bursts(seed=width, count=3, size=5)
    frames = [f for group in groups for f in group]
    gaps = {}
    position = 0
    for group in groups:
        gaps[position] = 1500  # idle cycles before each burst, far beyond the timeout
        position += len(group)
    dut = small(width)
    out, _ = simulate(dut, frames, gaps=gaps, timeout=400)
    ref = RefEngine(max_flows=dut.flows, max_bytes=dut.max_bytes, timeout_ps=1)
    want = []
    for t, group in enumerate(groups):
        for frame in group:
            want += ref.push(frame, t_ps=10 * t)
    want += ref.expire(10 * len(groups))
    assert [f for f, _ in out] == [m.frame for m in want]
    assert [(u & 0xFFFF, (u >> 16) & 0xFFFF) for _, u in out] == \
        [(m.segs, m.gso_size) for m in want]
    assert any(m.segs > 1 for m in want)


def test_without_timeout_or_flush_flows_stay_held():
    frames = [f for group in bursts(seed=2, count=2, size=4) for f in group]
    dut = small()
    out, _ = simulate(dut, frames, gaps={4: 2000}, quiet=4000)
    ref = RefEngine(max_flows=dut.flows, max_bytes=dut.max_bytes)
    want = [m.frame for f in frames for m in ref.push(f)]
    assert [f for f, _ in out] == want
    assert ref.held > 0


@pytest.mark.parametrize("width,flows", [(64, 2), pytest.param(256, 3, marks=pytest.mark.long)])
def test_mixed_traffic_small_configs(width, flows):
    frames = [f for f in traffic(seed=flows, count=40, flows=5) if 0 < len(f) <= 2048]
    dut = small(width, flows=flows, max_bytes=1500)
    users = [0] * (len(frames) - 1) + [1]
    out, _ = simulate(dut, frames, users=users, backpressure=0.3)
    ref = RefEngine(max_flows=flows, max_bytes=1500)
    want = [m for f in frames for m in ref.push(f)] + ref.flush()
    assert [f for f, _ in out] == [m.frame for m in want]
    assert [u >> 32 for _, u in out][-1] == len(frames) - 1


def test_registers():
    flow = Flow(random.Random(1), 1)
    frames = [flow.data() for _ in range(3)] + [bytes(3000)]  # the last: over max_frame
    dut = small()
    ops = [(REG_TIMEOUT, 1234), (REG_TIMEOUT, None), (0x00, None), (0x08, None), (0x0C, None),
           (0x00, 5), (0x40, None)]
    _, answers = simulate(dut, frames, users=[0, 0, 1, 0], bus_ops=ops)
    assert answers == [(0, False), (1234, False), (4, False), (2, False), (1, False),
                       (0, True), (0, True)]


@pytest.mark.parametrize("kwargs,message", [
    ({"width": 32}, "Data width"),
    ({"flows": 0}, "Flow contexts"),
    ({"flows": 65}, "Flow contexts"),
    ({"buffer_bytes": 3000}, "Buffer bytes"),
    ({"buffer_bytes": 4096, "max_bytes": 4090}, "Max bytes"),
    ({"max_frame": 20000}, "Max frame"),
])
def test_parameters_checked(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LroEngine(**kwargs)


@pytest.mark.parametrize("width,max_frame", [(64, 2050), (512, 2048)])
def test_oversize_boundary(width, max_frame):
    """Frames of lengths about ``max_frame`` (up to two beats past it): those that fit
    leave unchanged, the longer ones are dropped and counted; segments between them merge."""
    rng = random.Random(width)
    flow = Flow(rng, 7)
    lanes = width // 8
    lengths = sorted(max_frame + d for d in {-lanes - 1, *range(-3, 4), lanes - 1, lanes,
                                             lanes + 1, 2 * lanes + 1})
    frames = []
    for n in lengths:
        # EtherType 0x88B5 (local experimental): passed unchanged, never merged.
        frames += [flow.data(), bytes(12) + b"\x88\xb5" + rng.randbytes(n - 14)]
    frames.append(flow.data())
    dut = small(width, max_frame=max_frame)
    users = [0] * (len(frames) - 1) + [1]
    # (``quiet`` counts from the last frame out: the dropped frames at the end leave none.)
    out, answers = simulate(dut, frames, users=users, bus_ops=[(0x0C, None)], quiet=10000)
    kept = [f for f in frames if len(f) <= max_frame]
    ref = RefEngine(max_flows=dut.flows, max_bytes=dut.max_bytes)
    want = [m.frame for f in kept for m in ref.push(f)] + [m.frame for m in ref.flush()]
    assert [f for f, _ in out] == want
    assert answers == [(sum(len(f) > max_frame for f in frames), False)]
    assert sum(len(f) == max_frame for f, _ in out) == 1


@pytest.mark.parametrize("width", [64, 512])
def test_flush_after_a_frame_passed_on(width):
    """Frames passed unchanged that end a poll (``user`` bit 0), each followed at once by
    segments of the held flows, under output backpressure so that the frames wait in the
    FIFO: the next frame's lookup, which runs while a frame passes on, saw the flows held
    before the flush, and must not decide the frame once they have left."""
    from scapy.layers.inet import IP, UDP
    from scapy.packet import Raw
    from test_lro_traffic import eth

    rng = random.Random(width)
    flows = [Flow(rng, n) for n in range(3)]
    for n, flow in enumerate(flows):
        flow.mss, flow.v6, flow.vlans, flow.tsval = 10, n == 2, 0, None
        flow.src = "fd00::5" if flow.v6 else f"10.0.3.{n + 1}"
        flow.dst = "fd00::6" if flow.v6 else "10.0.4.1"
    frames, users = [], []
    for n in range(90):
        if n % 6 == 5:
            frames.append(bytes(eth() / IP(src="10.9.0.1", dst="10.9.0.2") / UDP(sport=7, dport=9)
                                / Raw(rng.randbytes(18))))
            users.append(rng.random() < 0.6)
        else:
            frames.append(rng.choice(flows).data())
            users.append(False)
    users[-1] = True
    dut = small(width)
    out, _ = simulate(dut, frames, users=[int(u) for u in users], backpressure=0.6)
    ref = RefEngine(max_flows=dut.flows, max_bytes=dut.max_bytes)
    want = []
    for frame, user in zip(frames, users, strict=True):
        want += ref.push(frame)
        if user:
            want += ref.flush()
    assert sum(m.segs > 1 for m in want) > 5
    assert [f for f, _ in out] == [m.frame for m in want]
    assert [(u & 0xFFFF, (u >> 16) & 0xFFFF) for _, u in out] == \
        [(m.segs, m.gso_size) for m in want]
