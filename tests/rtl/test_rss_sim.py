# amaranth: UnusedElaboratable=no
"""The RSS unit and its Toeplitz core in Amaranth's simulator (the fast tier).

(The comment above silences Amaranth's warning about the objects whose constructors are made to
raise in the parameter tests.)

Expected results come from the golden reference :mod:`nicsim.hw.ref.rss`; frames from the
scapy builders in ``test_rss.py``.
"""

import random

import pytest
from amaranth.hdl import ResetInserter, Signal
from amaranth.sim import Simulator
from test_rss import (
    IPV4_VECTORS,
    IPV6_VECTORS,
    catalogue_frames,
    decode,
    expected,
    keep_holes,
    min_size_frames,
    mixed_frames,
    random_config,
    sized_frames,
    vector_frames,
)

from nicsim.hw.ref.rss import (
    ALL_TYPES_MASK,
    DEFAULT_KEY,
    HashType,
    RssConfig,
    toeplitz,
)
from nicsim.rtl.rss import REG_HASH_TYPES, REG_KEY, REG_TABLE, RssUnit
from nicsim.rtl.toeplitz import ToeplitzCore

__all__: list[str] = []


# ---------------------------------------------------------------------------------------------
# Helpers


async def stream_put(ctx, port, frames, width, keeps=None, idle=None):
    """Drive ``frames`` (with optional per-byte keep lists) into a beat stream."""
    nbytes = width // 8
    keeps = keeps or [None] * len(frames)
    for frame, keep in zip(frames, keeps, strict=True):
        keep = keep or [1] * len(frame)
        for start in range(0, len(frame), nbytes):
            while idle is not None and idle.random() < 0.3:
                ctx.set(port.valid, 0)
                await ctx.tick()
            chunk = frame[start:start + nbytes]
            ctx.set(port.payload.data, int.from_bytes(chunk, "little"))
            ctx.set(port.payload.keep,
                    sum(bit << n for n, bit in enumerate(keep[start:start + nbytes])))
            ctx.set(port.payload.last, start + nbytes >= len(frame))
            ctx.set(port.valid, 1)
            await ctx.tick().until(port.ready)
    ctx.set(port.valid, 0)


async def stream_get(ctx, port, count, backpressure=None):
    """Collect ``count`` payloads from a stream."""
    words = []
    while len(words) < count:
        ready = backpressure is None or backpressure.random() >= 0.3
        ctx.set(port.ready, ready)
        _, _, valid, payload = await ctx.tick().sample(port.valid, port.payload)
        if valid and ready:
            words.append(payload)
    ctx.set(port.ready, 0)
    return words


async def bus_write(ctx, bus, addr, value):
    """Write a register; return True when the unit rejected it.

    The address and data are held a cycle before the strobe, as the bus requires.
    """
    ctx.set(bus.addr, addr)
    ctx.set(bus.w_data, value)
    await ctx.tick()
    ctx.set(bus.w_en, 1)
    err = ctx.get(bus.err)
    await ctx.tick()
    ctx.set(bus.w_en, 0)
    return bool(err)


async def bus_read(ctx, bus, addr, hold=True):
    """Read a register; return (value, rejected).

    With ``hold`` the address is held a cycle before the strobe; without, the strobe comes
    right after the previous access, which must have been at the same address.
    """
    ctx.set(bus.addr, addr)
    if hold:
        await ctx.tick()
    ctx.set(bus.r_en, 1)
    err = ctx.get(bus.err)
    await ctx.tick()
    ctx.set(bus.r_en, 0)
    return ctx.get(bus.r_data), bool(err)


async def configure(ctx, dut, config):
    for n in range(10):
        word = int.from_bytes(config.key[4 * n:4 * n + 4], "big")
        assert not await bus_write(ctx, dut.bus, REG_KEY + 4 * n, word)
    assert not await bus_write(ctx, dut.bus, REG_HASH_TYPES, config.enabled)
    for n, queue in enumerate(config.table):
        assert not await bus_write(ctx, dut.bus, REG_TABLE + 4 * n, queue)


def run_frames(dut, frames, config=None, keeps=None, seed=None, configure_first=None):
    """Simulate ``frames`` through ``dut`` and return the decoded results.

    ``configure_first`` (a config) is written over the register bus before the frames.
    """
    results = []
    rng = random.Random(seed) if seed is not None else None
    started = []

    async def producer(ctx):
        if configure_first is not None:
            await configure(ctx, dut, configure_first)
        started.append(True)
        await stream_put(ctx, dut.i, frames, dut.width, keeps, rng)

    async def consumer(ctx):
        results.extend(await stream_get(ctx, dut.result, len(frames),
                                        random.Random(seed + 1) if seed is not None else None))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run()
    return [decode(word) for word in results]


def check(dut, frames, config=None, keeps=None, seed=None, write_config=False):
    config = config or RssConfig(table=dut.default_table)
    got = run_frames(dut, frames, config, keeps, seed, config if write_config else None)
    keeps = keeps or [None] * len(frames)
    want = [expected(f, config, k is not None) for f, k in zip(frames, keeps, strict=True)]
    for n, (frame, g, w) in enumerate(zip(frames, got, want, strict=True)):
        assert g == w, f"frame {n} ({len(frame)} bytes) {frame[:64].hex()}"


# ---------------------------------------------------------------------------------------------
# Toeplitz core


@pytest.mark.parametrize(("steps", "group_bytes"), [(1, 4), (1, 1), (2, 2), (3, 1), (5, 1)])
def test_core_published_vectors(steps, group_bytes):
    """The published vectors (and random inputs and keys) through the core, whatever the
    depth of its reduction tree (one byte a group: 36, 12 or 8 partials a chunk)."""
    import socket
    import struct

    cases = []
    for vectors, family in ((IPV4_VECTORS, socket.AF_INET), (IPV6_VECTORS, socket.AF_INET6)):
        for src, sport, dst, dport, two_tuple, four_tuple in vectors:
            addresses = socket.inet_pton(family, src) + socket.inet_pton(family, dst)
            cases.append((addresses, DEFAULT_KEY, two_tuple))
            cases.append((addresses + struct.pack("!HH", sport, dport), DEFAULT_KEY, four_tuple))
    rng = random.Random(steps)
    for _ in range(10):
        data, key = rng.randbytes(36), rng.randbytes(40)
        cases.append((data, key, toeplitz(key, data)))
    for data, key, value in cases:
        assert toeplitz(key, data) == value

    dut = ToeplitzCore(36, 40, steps, group_bytes=group_bytes)
    hashes = []

    async def driver(ctx):
        for data, key, _ in cases:
            ctx.set(dut.start, 1)
            ctx.set(dut.data, int.from_bytes(data, "little"))
            ctx.set(dut.key, int.from_bytes(key, "little"))
            await ctx.tick()
            ctx.set(dut.start, 0)
            if steps > 1:
                await ctx.tick().repeat(steps - 1)
        await ctx.tick().repeat(dut.latency + 1)

    async def monitor(ctx):
        async for _, _, done, value in ctx.tick().sample(dut.done, dut.hash):
            if done:
                hashes.append(value)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(driver)
    sim.add_process(monitor)
    sim.run()
    assert hashes == [value for *_, value in cases]


def test_core_parameters():
    with pytest.raises(ValueError, match="Key size must be at least 40"):
        ToeplitzCore(36, 39)
    with pytest.raises(ValueError, match="Steps must be from 1 to 36"):
        ToeplitzCore(36, 40, steps=0)


# ---------------------------------------------------------------------------------------------
# RSS unit


@pytest.mark.parametrize("width", [64, 512])
def test_published_vectors(width):
    """TCP frames of the vectors give the published 4-tuple hash, then (types restricted over
    the register bus) the published 2-tuple hash."""
    cases = vector_frames()
    frames = [frame for frame, *_ in cases]
    got = run_frames(RssUnit(width), frames)
    assert [r.hash for r in got] == [four for *_, four in cases]
    assert [r.hash_type for r in got] == [
        HashType.TCP_IPV4 if v4 else HashType.TCP_IPV6 for _, v4, *_ in cases]

    config = RssConfig(enabled=(1 << HashType.IPV4) | (1 << HashType.IPV6))
    got = run_frames(RssUnit(width), frames, configure_first=config)
    assert [r.hash for r in got] == [two for _, _, two, _ in cases]
    assert [r.hash_type for r in got] == [
        HashType.IPV4 if v4 else HashType.IPV6 for _, v4, *_ in cases]


@pytest.mark.parametrize("width", [64, 512])
def test_frames(width):
    """Small sizes, a mix, idle cycles and backpressure."""
    rng = random.Random(width)
    frames = sized_frames(rng, range(1, 80)) + mixed_frames(rng, 60)
    check(RssUnit(width), frames, seed=width)


@pytest.mark.parametrize("width", [64, 512])
def test_every_parser_rule(width):
    check(RssUnit(width), catalogue_frames(), seed=width + 2)


@pytest.mark.parametrize("width", [64, 512])
def test_keep_holes_and_runtime_config(width):
    """tkeep holes hash NONE; a random key, mask and table written over the bus apply."""
    rng = random.Random(width + 1)
    frames = mixed_frames(rng, 50)
    keeps = [keep_holes(rng, f, width) if rng.random() < 0.3 else None for f in frames]
    config = random_config(rng)
    config.enabled = ALL_TYPES_MASK
    check(RssUnit(width), frames, config, keeps, seed=3, write_config=True)


@pytest.mark.parametrize("width", [128, 256])
def test_smoke_other_widths(width):
    rng = random.Random(width)
    frames = sized_frames(rng, [*range(1, 70, 3), 127, 128, 129, 300]) + mixed_frames(rng, 60)
    check(RssUnit(width), frames, seed=width)


@pytest.mark.parametrize("width", [64, 128, 256, 512])
def test_line_rate(width):
    """Back-to-back 60-byte frames: ``i.ready`` never drops while results are taken."""
    dut = RssUnit(width)
    frames = min_size_frames(random.Random(9), 40)
    stalls = []

    async def watch(ctx):
        async for _, _, valid, ready in ctx.tick().sample(dut.i.valid, dut.i.ready):
            if valid and not ready:
                stalls.append(True)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    results = []

    async def producer(ctx):
        await stream_put(ctx, dut.i, frames, width)

    async def consumer(ctx):
        results.extend(await stream_get(ctx, dut.result, len(frames)))

    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.add_process(watch)
    sim.run()
    assert not stalls
    config = RssConfig()
    assert [decode(w) for w in results] == [expected(f, config) for f in frames]


def test_stalled_consumer():
    """Results not taken: the unit stops taking beats with result_depth frames accepted (the
    results it can hold), loses none, and takes beats again as results go."""
    width = 512
    dut = RssUnit(width)
    frames = sized_frames(random.Random(11), [60, 1, 2, 64] * 20)  # one beat each
    accepted_while_stalled = []
    results = []

    async def producer(ctx):
        await stream_put(ctx, dut.i, frames, width)

    async def consumer(ctx):
        ctx.set(dut.result.ready, 0)
        # Long enough for every frame the unit would take to come through.
        for _ in range(len(frames) + dut.latency + 20):
            _, _, valid, ready, last = await ctx.tick().sample(
                dut.i.valid, dut.i.ready, dut.i.payload.last)
            if valid and ready and last:
                accepted_while_stalled.append(True)
        results.extend(await stream_get(ctx, dut.result, len(frames)))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run()
    assert len(accepted_while_stalled) == dut.result_depth
    assert [decode(w) for w in results] == [expected(f, RssConfig()) for f in frames]


@pytest.mark.parametrize("width", [64, 512])
def test_latency(width):
    """A result is valid ``dut.latency`` cycles after the cycle of the frame's last beat."""
    dut = RssUnit(width)
    frame = vector_frames()[0][0] + bytes(6)
    cycles = []

    async def testbench(ctx):
        ctx.set(dut.result.ready, 1)
        await stream_put(ctx, dut.i, [frame], width)
        count = 1
        while not ctx.get(dut.result.valid):
            await ctx.tick()
            count += 1
        cycles.append(count)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()
    assert cycles == [dut.latency]


@pytest.mark.parametrize("table_size,queue_bits", [(1, 1), (512, 16), (64, 3)])
def test_table_shapes(table_size, queue_bits):
    rng = random.Random(table_size)
    dut = RssUnit(64, table_size=table_size, queue_bits=queue_bits)
    assert dut.default_table == [i % min(4, 1 << queue_bits) for i in range(table_size)]
    frames = mixed_frames(rng, 30)
    check(dut, frames)
    config = random_config(rng, table_size, queue_bits)
    check(RssUnit(64, table_size=table_size, queue_bits=queue_bits), frames, config,
          write_config=True)


def test_register_bus():
    dut = RssUnit(64)
    rst = Signal()
    checks = []

    async def testbench(ctx):
        bus = dut.bus
        checks.append(await bus_read(ctx, bus, 0x000) == (0x52535301, False))
        checks.append(await bus_read(ctx, bus, 0x004) == (128, False))
        checks.append(await bus_write(ctx, bus, 0x000, 0))
        checks.append(await bus_write(ctx, bus, REG_HASH_TYPES, 1))
        checks.append(await bus_read(ctx, bus, REG_HASH_TYPES) == (ALL_TYPES_MASK, False))
        checks.append(await bus_read(ctx, bus, REG_KEY) == (0x6D5A56DA, False))
        checks.append(await bus_read(ctx, bus, REG_KEY + 36) == (0xBEAC01FA, False))
        checks.append(await bus_write(ctx, bus, REG_TABLE + 4 * 128, 0))
        checks.append((await bus_read(ctx, bus, REG_TABLE + 4 * 128))[1])
        checks.append(await bus_write(ctx, bus, REG_TABLE + 4 * 5, 256))
        checks.append(await bus_read(ctx, bus, REG_TABLE + 4 * 5) == (1, False))
        checks.append(not await bus_write(ctx, bus, REG_TABLE + 4 * 5, 200))
        checks.append(await bus_read(ctx, bus, REG_TABLE + 4 * 5) == (200, False))
        checks.append((await bus_read(ctx, bus, 0x00C))[1])
        # A read right after a write (strobe in the next cycle) returns the written value,
        # and so does one two cycles after.
        checks.append(not await bus_write(ctx, bus, REG_KEY + 8, 0x01234567))
        checks.append(await bus_read(ctx, bus, REG_KEY + 8, hold=False) == (0x01234567, False))
        checks.append(await bus_read(ctx, bus, REG_KEY + 8) == (0x01234567, False))
        checks.append(await bus_read(ctx, bus, REG_KEY + 4) == (0x255B0EC2, False))
        checks.append(not await bus_write(ctx, bus, REG_KEY + 12, 0x89ABCDEF))
        checks.append(await bus_read(ctx, bus, REG_KEY + 12) == (0x89ABCDEF, False))
        checks.append(not await bus_write(ctx, bus, REG_HASH_TYPES, 0b100))
        checks.append(await bus_read(ctx, bus, REG_HASH_TYPES, hold=False) == (0b100, False))
        checks.append(not await bus_write(ctx, bus, REG_HASH_TYPES, 0b1000))
        checks.append(await bus_read(ctx, bus, REG_HASH_TYPES) == (0b1000, False))
        checks.append(not await bus_write(ctx, bus, REG_TABLE + 4 * 9, 77))
        checks.append(await bus_read(ctx, bus, REG_TABLE + 4 * 9, hold=False) == (77, False))
        checks.append(not await bus_write(ctx, bus, REG_TABLE + 4 * 10, 78))
        checks.append(await bus_read(ctx, bus, REG_TABLE + 4 * 10) == (78, False))
        checks.append(await bus_read(ctx, bus, REG_TABLE + 4 * 8) == (0, False))
        # After rst the key reads back as its reset value, whatever was written.
        ctx.set(rst, 1)
        await ctx.tick()
        ctx.set(rst, 0)
        checks.append(await bus_read(ctx, bus, REG_KEY + 8) == (0x4167253D, False))
        checks.append(await bus_read(ctx, bus, REG_KEY + 12) == (0x43A38FB0, False))
        checks.append(not await bus_write(ctx, bus, REG_KEY + 12, 0x76543210))
        checks.append(await bus_read(ctx, bus, REG_KEY + 12) == (0x76543210, False))

    sim = Simulator(ResetInserter(rst)(dut))
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()
    assert all(checks), checks


@pytest.mark.parametrize("kwargs,message", [
    ({"width": 32}, "Data width must be one of 64, 128, 256, 512, not 32"),
    ({"table_size": 96}, "Table size must be a power of two from 1 to 512, not 96"),
    ({"table_size": 1024}, "Table size must be a power of two from 1 to 512, not 1024"),
    ({"queue_bits": 0}, "Queue bits must be from 1 to 16, not 0"),
    ({"queue_bits": 17}, "Queue bits must be from 1 to 16, not 17"),
])
def test_parameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RssUnit(**kwargs)


@pytest.mark.long
@pytest.mark.parametrize("width", [64, 128, 256, 512])
def test_fuzz(width):
    """Frames with random bytes overwritten in the parse window (next headers, lengths),
    random truncation and keep holes, back to back and with pauses, at every width."""
    rng = random.Random(f"fuzz-{width}")
    frames = []
    for frame in mixed_frames(rng, 1500):
        frame = bytearray(frame)
        for _ in range(rng.choice((0, 0, 1, 2, 3))):
            if len(frame) > 12:
                position = rng.randrange(12, min(len(frame), 130))
                frame[position] = rng.choice((0, 1, 6, 17, 43, 44, 59, 60, rng.randrange(256)))
        frames.append(bytes(frame))
    keeps = [keep_holes(rng, f, width) if rng.random() < 0.05 else None for f in frames]
    check(RssUnit(width), frames, keeps=keeps)
    config = random_config(rng)
    check(RssUnit(width), frames[:400], config, seed=width, write_config=True)
