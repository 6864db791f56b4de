"""Transmit checksum engine on Verilator: frames sent and drops, against the reference."""

import random

import cocotb
import pytest
from test_checksum_rx import Frame, corpus, frame_of_size, with_hole

from tbutil import FRAME_SIZES, PAUSES, TB, Handshakes, params, rtl_test

MODE_OFF, MODE_PARTIAL, MODE_AUTO, MODE_INVALID = 0, 1, 2, 3
MAX_FRAME = 9018


def encode_command(mode, start=0, offset=0):
    """Return the ``user`` bits of a first beat."""
    return start | offset << 16 | mode << 32


def command_for(rng, data):
    """Return ``(mode, csum_start, csum_offset)`` for a frame: mostly plausible, some not."""
    from nicsim.hw.ref.packet import parse_l2

    r = rng.random()
    if r < 0.2:
        return (MODE_OFF, rng.randrange(65536), rng.randrange(65536))
    if r < 0.55:
        return (MODE_AUTO, rng.randrange(65536), rng.randrange(65536))
    if r < 0.97:
        _, l3, _ = parse_l2(data)
        if rng.random() < 0.6 and len(data) > l3:
            # What a stack would ask for: TCP/UDP after an IPv4 or IPv6 header.
            header = (data[l3] & 0x0F) * 4 if data[l3] >> 4 == 4 else 40
            return (MODE_PARTIAL, l3 + header, rng.choice([16, 6]))
        start = rng.randrange(0, len(data) + 4)
        offset = rng.randrange(0, max(len(data) - start, 1) + 2)
        if rng.random() < 0.05:
            start, offset = rng.randrange(65536), rng.randrange(65536)
        return (MODE_PARTIAL, start, offset)
    return (MODE_INVALID, 0, 0)


def hw_length(frame, lanes):
    """Return the length the engine counts: full non-last beats plus the kept last bytes."""
    keep = frame.keep if frame.keep is not None else [1] * len(frame.data)
    beats = -(-len(keep) // lanes)
    return (beats - 1) * lanes + sum(keep[(beats - 1) * lanes:])


def tx_expected(frame, command, lanes, max_frame=MAX_FRAME):
    """Return ``(drop_reason, bytes, user)`` for a frame and its command, from the reference.

    The engine adds two drops the reference cannot see: a keep hole (``"malformed"``) and
    mode 3 (``"bad_command"``); a frame both too long and malformed counts as too long.
    """
    from nicsim.hw.ref.checksum import TxCommand, tx_checksum

    malformed, data = frame.resolve(lanes)
    if hw_length(frame, lanes) > max_frame:
        return "oversize", None, 0
    if malformed:
        return "malformed", None, 0
    mode, start, offset = command
    if mode == MODE_INVALID:
        return "bad_command", None, 0
    ref = tx_checksum(data, TxCommand(mode, start, offset), max_frame)
    if ref.frame is None:
        return ref.drop_reason, None, 0
    return None, ref.frame, int(ref.ip_inserted) | int(ref.l4_inserted) << 1


def tx_counters(expected):
    counts = {"frames_in": len(expected), "frames_out": 0, "drop_oversize": 0,
              "drop_bad_command": 0, "drop_malformed": 0}
    for reason, _, _ in expected:
        if reason is None:
            counts["frames_out"] += 1
        else:
            counts[f"drop_{reason}"] += 1
    return counts


def tx_cases(rng, sizes, lanes, hole_ratio=0.03):
    """Return ``[(Frame, command)]`` for ``sizes``."""
    frames = corpus(rng, sizes, lanes, hole_ratio)
    return [(frame, command_for(rng, frame.data)) for frame in frames]


# ---- cocotb side ---------------------------------------------------------------------------


def _axis_frame(frame, command, lanes, rng):
    from cocotbext.axi import AxiStreamFrame

    # The command counts on the first beat only: later beats carry junk.
    user = [encode_command(*command)] * lanes
    user += [rng.randrange(1 << 34) for _ in range(len(frame.data) - lanes)]
    user = user[:len(frame.data)]
    keep = list(frame.keep) if frame.keep is not None else None
    return AxiStreamFrame(frame.data, tkeep=keep, tuser=user)


def check_output(rx, lanes):
    """Return ``(bytes, user)`` of a received frame after checking its keep and user."""
    keep = list(rx.tkeep)
    beats = [keep[i:i + lanes] for i in range(0, len(keep), lanes)]
    assert all(all(beat) for beat in beats[:-1]), "keep hole in a non-last beat"
    last = beats[-1]
    run = last.index(0) if 0 in last else lanes
    assert run > 0 and not any(last[run:]), f"last beat keep {last}"
    users = set(rx.tuser)
    assert len(users) == 1, f"user changes within a frame: {users}"
    data = bytes(b for b, k in zip(rx.tdata, keep, strict=True) if k)
    return data, users.pop()


async def _run_cases(tb, cases, seed=0):
    from nicsim.rtl.checksum_tx import COUNTERS as REGISTERS

    lanes = params()["width"] // 8
    rng = random.Random(seed)
    expected = [tx_expected(frame, command, lanes) for frame, command in cases]
    for frame, command in cases:
        await tb.source.send(_axis_frame(frame, command, lanes, rng))
    sent = [(n, e) for n, e in enumerate(expected) if e[0] is None]
    for n, (_, want, want_user) in sent:
        rx = await tb.sink.recv(compact=False)
        data, user = check_output(rx, lanes)
        frame, command = cases[n]
        assert data == want, (f"frame {n} {frame} command {command}: got {data.hex()}, "
                              f"want {want.hex()}")
        assert user == want_user, f"frame {n} command {command}: user {user} != {want_user}"
    await tb.source.wait()  # dropped frames leave no trace at the output
    await tb.cycles(50)
    assert tb.sink.empty(), "extra frames sent"
    counts = tx_counters(expected)
    for name, addr in REGISTERS.items():
        value, resp = await tb.read_reg(addr)
        assert resp == 0 and value == counts[name], \
            f"register {name}: got {value}, want {counts[name]}"


@cocotb.test()
@cocotb.parametrize(pauses=[("none", "none"), ("random", "cycle"), ("cycle", "random")])
async def all_sizes(dut, pauses):
    """Every size 1..128, 512, 1500, 9000 with mixed commands, idle and backpressure."""
    tb = TB(dut)
    tb.set_pauses(PAUSES[pauses[0]], PAUSES[pauses[1]])
    await tb.reset()
    lanes = params()["width"] // 8
    rng = random.Random("/".join(pauses))
    await _run_cases(tb, tx_cases(rng, FRAME_SIZES, lanes, hole_ratio=0.05))


@cocotb.test()
async def random_mix(dut):
    """A fixed-seed random mix, including frames too long to send."""
    tb = TB(dut)
    tb.set_pauses(PAUSES["random"], PAUSES["random"])
    await tb.reset()
    lanes = params()["width"] // 8
    rng = random.Random(4242)
    sizes = [rng.choice([rng.randrange(1, 80), rng.randrange(60, 400), rng.randrange(400, 1600)])
             for _ in range(120)]
    sizes[10:10] = [9018, 9019, 9100, 12000, 9017]
    cases = tx_cases(rng, sizes, lanes, hole_ratio=0.05)
    cases.append((with_hole(rng, frame_of_size(rng, 9500), lanes), (MODE_AUTO, 0, 0)))
    await _run_cases(tb, cases, seed=1)


@cocotb.test()
async def registers(dut):
    """Writes and unmapped reads answer SLVERR and change nothing."""
    from nicsim.rtl.checksum_tx import COUNTERS as REGISTERS

    tb = TB(dut)
    await tb.reset()
    rng = random.Random(9)
    lanes = params()["width"] // 8
    cases = tx_cases(rng, [60, 70, 200, 9100], lanes)
    cases.append((with_hole(rng, frame_of_size(rng, 70), lanes), (MODE_AUTO, 0, 0)))
    await _run_cases(tb, cases)
    before = [await tb.read_reg(addr) for addr in REGISTERS.values()]
    for addr in (0x00, 0x10, 0x14, 0x40):
        assert await tb.write_reg(addr, 1) == 2
    for addr in (0x14, 0x18, 0x80, 0xFC):
        assert (await tb.read_reg(addr))[1] == 2
    assert [await tb.read_reg(addr) for addr in REGISTERS.values()] == before


@cocotb.test()
@cocotb.parametrize(size=[256, 1500])
async def full_rate(dut, size):
    """Equal frames of 256 bytes or more stream in and out one beat every cycle, no gaps."""
    tb = TB(dut)
    tb.set_pauses(None, None)
    await tb.reset()
    lanes = params()["width"] // 8
    rng = random.Random(size)
    count = 40 if size < 1000 else 8
    cases = [(Frame(frame_of_size(rng, size)), (rng.choice([MODE_AUTO, MODE_PARTIAL]), 34, 16))
             for _ in range(count)]
    watch = Handshakes(dut, "s_axis", "m_axis")
    await _run_cases(tb, cases)
    await watch.stop()
    beats = count * -(-size // lanes)
    for port in ("s_axis", "m_axis"):
        watch.assert_back_to_back(port, beats)


@pytest.mark.rtl
@pytest.mark.parametrize("width", [64, 512])
def test_checksum_tx(width):
    rtl_test("checksum-tx", {"width": width}, "test_checksum_tx")
