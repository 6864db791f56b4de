"""Checksum engines in Amaranth's simulator: small cases, fast, against the golden reference."""

import random

import pytest
from amaranth.sim import Simulator
from test_checksum_rx import Frame, corpus, describe, frame_of_size, rx_expected, with_hole


def beats_of(frame, lanes, user=0):
    """Split a :class:`Frame` into beat payloads (``user`` on the first beat only)."""
    keep = frame.keep if frame.keep is not None else [1] * len(frame.data)
    beats = []
    for start in range(0, len(frame.data), lanes):
        chunk = frame.data[start:start + lanes]
        beat = {
            "data": int.from_bytes(chunk, "little"),
            "keep": sum(bit << j for j, bit in enumerate(keep[start:start + lanes])),
            "last": int(start + lanes >= len(frame.data)),
        }
        beats.append(beat)
    if user is not None:
        for n, beat in enumerate(beats):
            beat["user"] = user if n == 0 else 0
    return beats


async def stream_put(ctx, stream, payload, idle=0):
    """Offer one payload on ``stream`` and wait until it is taken."""
    for _ in range(idle):
        await ctx.tick()
    ctx.set(stream.valid, 1)
    ctx.set(stream.payload, payload)
    await ctx.tick().until(stream.ready)
    ctx.set(stream.valid, 0)


async def stream_get(ctx, stream, stall=0):
    """Take one payload from ``stream``."""
    for _ in range(stall):
        await ctx.tick()
    ctx.set(stream.ready, 1)
    (payload,) = await ctx.tick().sample(stream.payload).until(stream.valid)
    ctx.set(stream.ready, 0)
    return payload


def handshake_monitor(stream, cycles, done):
    """Return a testbench recording the cycles in which ``stream`` moves a payload.

    It ends once ``done()`` is true.
    """
    async def monitor(ctx):
        cycle = 0
        async for _, _, valid, ready in ctx.tick().sample(stream.valid, stream.ready):
            cycle += 1
            if valid and ready:
                cycles.append(cycle)
            if done():
                break
    return monitor


def assert_full_rate(cycles, what):
    assert cycles, f"{what}: nothing moved"
    span = cycles[-1] - cycles[0] + 1
    assert span == len(cycles), f"{what}: {len(cycles)} beats took {span} cycles"


def run_sim(dut, testbenches, deadline_cycles):
    """Run ``testbenches`` to completion; fail if they need more than ``deadline_cycles``."""
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    finished = []

    def counted(bench):
        async def run(ctx):
            await bench(ctx)
            finished.append(bench)
        return run

    async def watchdog(ctx):
        for _ in range(deadline_cycles):
            if len(finished) == len(testbenches):
                return
            await ctx.tick()
        raise AssertionError(f"testbenches still running after {deadline_cycles} cycles")

    for bench in testbenches:
        sim.add_testbench(counted(bench))
    sim.add_testbench(watchdog)
    sim.run()


def rx_frames(width, seed, long=False):
    rng = random.Random(seed)
    lanes = width // 8
    sizes = [60, 61, 64, 1, 2, 13, 14, 17, 18, 33, 41, 54, 59, 63, 65, 70, 90, 100, 128,
             129, 200, 300] + [rng.randrange(1, 400) for _ in range(25)]
    if long:
        sizes += [9018, 16000]
    frames = corpus(rng, sizes, lanes, hole_ratio=0.0)
    frames += [with_hole(rng, frame_of_size(rng, n), lanes) for n in (1, 9, 60, 77, 130)]
    rng.shuffle(frames)
    return frames


def check_rx(width, frames, pauses=True, seed=1, full_rate=False):
    from nicsim.rtl.checksum_rx import ChecksumRx

    dut = ChecksumRx(width)
    lanes = width // 8
    rng = random.Random(seed)
    got = []
    accepted = []

    async def producer(ctx):
        for frame in frames:
            for beat in beats_of(frame, lanes, user=None):
                await stream_put(ctx, dut.i, beat, idle=rng.choice([0, 0, 0, 1]) if pauses else 0)

    async def consumer(ctx):
        for _ in frames:
            got.append(int(await stream_get(ctx, dut.result,
                                            stall=rng.choice([0, 0, 2]) if pauses else 0)))

    beats = sum(len(beats_of(f, lanes)) for f in frames)
    monitor = handshake_monitor(dut.i, accepted, lambda: len(got) == len(frames))
    run_sim(dut, [producer, consumer, monitor], 4 * beats + 100 * len(frames) + 200)
    assert len(got) == len(frames), f"only {len(got)} of {len(frames)} results"
    if full_rate:
        assert_full_rate(accepted, "input")
    for n, (frame, word) in enumerate(zip(frames, got, strict=True)):
        want = rx_expected(frame, lanes)
        assert word == want, f"frame {n} {frame}: got {describe(word)}, want {describe(want)}"


@pytest.mark.parametrize("width", [64, 512])
def test_rx_mix(width):
    check_rx(width, rx_frames(width, seed=width, long=width == 512))


@pytest.mark.parametrize("width", [128, 256])
def test_rx_smoke(width):
    check_rx(width, rx_frames(width, seed=width)[:20])


@pytest.mark.parametrize("width", [64, 512])
def test_rx_back_to_back(width):
    """Without pauses every beat is taken in its cycle, runts and 1-byte frames included."""
    rng = random.Random(3)
    frames = [Frame(frame_of_size(rng, rng.choice([60, 64, 20, 8, 1, 100]))) for _ in range(40)]
    check_rx(width, frames, pauses=False, full_rate=True)


def check_tx(width, cases, pauses=True, seed=1, max_frame=9018, full_rate=False):
    from test_checksum_tx import encode_command, tx_expected

    from nicsim.rtl.checksum_tx import ChecksumTx

    dut = ChecksumTx(width, max_frame=max_frame)
    lanes = width // 8
    rng = random.Random(seed)
    expected = [tx_expected(frame, command, lanes, max_frame) for frame, command in cases]
    sent = [e for e in expected if e[0] is None]
    got = []

    async def producer(ctx):
        for frame, command in cases:
            for n, beat in enumerate(beats_of(frame, lanes, user=encode_command(*command))):
                if n:
                    beat["user"] = rng.randrange(1 << 34)  # only the first beat counts
                await stream_put(ctx, dut.i, beat, idle=rng.choice([0, 0, 0, 1]) if pauses else 0)

    async def consumer(ctx):
        for _ in sent:
            data, users = b"", set()
            while True:
                beat = await stream_get(ctx, dut.o, stall=rng.choice([0, 0, 2]) if pauses else 0)
                keep = int(beat.keep)
                if not beat.last:
                    assert keep == (1 << lanes) - 1, "keep hole in a non-last beat"
                run = (keep + 1).bit_length() - 1
                assert keep == (1 << run) - 1 and run > 0, f"last beat keep {keep:#x}"
                data += int(beat.data).to_bytes(lanes, "little")[:run]
                users.add(int(beat.user))
                if beat.last:
                    break
            assert len(users) == 1, f"user changes within a frame: {users}"
            got.append((data, users.pop()))

    beats = sum(len(beats_of(f, lanes)) for f, _ in cases)
    moved = {"in": [], "out": []}
    monitors = [handshake_monitor(port, moved[side], lambda: len(got) == len(sent))
                for side, port in (("in", dut.i), ("out", dut.o))]
    run_sim(dut, [producer, consumer, *monitors], 6 * beats + 100 * len(cases) + 400)
    assert len(got) == len(sent), f"only {len(got)} of {len(sent)} frames sent"
    if full_rate:
        assert_full_rate(moved["in"], "input")
        assert_full_rate(moved["out"], "output")
    pending = iter(n for n, e in enumerate(expected) if e[0] is None)
    for (data, user), (_, want, want_user) in zip(got, sent, strict=True):
        n = next(pending)
        frame, command = cases[n]
        assert data == want, f"frame {n} {frame} {command}: got {data.hex()}, want {want.hex()}"
        assert user == want_user, f"frame {n} {command}: user {user}, want {want_user}"


def tx_cases_small(width, seed, count=40):
    from test_checksum_tx import tx_cases

    rng = random.Random(seed)
    sizes = [60, 64, 1, 14, 34, 54, 61, 100] + [rng.randrange(1, 300) for _ in range(count)]
    cases = tx_cases(rng, sizes, width // 8, hole_ratio=0.05)
    cases.append((with_hole(rng, frame_of_size(rng, 90), width // 8), (2, 0, 0)))
    return cases


@pytest.mark.parametrize("width", [64, 512])
def test_tx_mix(width):
    check_tx(width, tx_cases_small(width, seed=width))


@pytest.mark.parametrize("width", [128, 256])
def test_tx_smoke(width):
    check_tx(width, tx_cases_small(width, seed=width, count=10))


@pytest.mark.parametrize("width", [64, 512])
def test_tx_oversize(width):
    """A small max_frame: frames around it are sent, swallowed or dropped, never mixed up."""
    from test_checksum_tx import MODE_AUTO, MODE_PARTIAL

    rng = random.Random(7)
    cases = []
    for size in (100, 127, 128, 129, 60, 200, 128, 64, 300, 90):
        mode = rng.choice([MODE_AUTO, MODE_PARTIAL])
        cases.append((Frame(frame_of_size(rng, size)), (mode, 20, 4)))
    cases.append((with_hole(rng, frame_of_size(rng, 140), width // 8), (MODE_AUTO, 0, 0)))
    cases.append((Frame(frame_of_size(rng, 80)), (MODE_AUTO, 0, 0)))
    check_tx(width, cases, max_frame=128)


@pytest.mark.parametrize("width", [64, 512])
def test_tx_full_rate(width):
    """Equal frames of 256 bytes move one beat every cycle in and, once started, out."""
    from test_checksum_tx import MODE_AUTO, MODE_OFF, MODE_PARTIAL

    rng = random.Random(11)
    cases = [(Frame(frame_of_size(rng, 256)), (rng.choice([MODE_AUTO, MODE_PARTIAL, MODE_OFF]),
                                               rng.randrange(14, 200), rng.randrange(40)))
             for _ in range(12)]
    check_tx(width, cases, pauses=False, full_rate=True)
