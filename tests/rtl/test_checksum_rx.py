"""Receive checksum engine on Verilator: every result against the golden reference.

The frame corpus built here (:func:`frame_of_size`, :func:`corpus`) also feeds the transmit and
Amaranth-simulator tests: Ethernet with 0/1/2 VLAN tags, IPv4 (with options) and IPv6, TCP, UDP
and other protocols, and the ways frames go wrong: bad IP/L4 checksums, fragments, UDP checksum
0, Ethernet padding, truncation, runts, IHL < 5, lengths that disagree with the frame, unknown
EtherTypes, keep holes.
"""

import random

import cocotb
import pytest

from tbutil import FRAME_SIZES, PAUSES, TB, Handshakes, params, rtl_test

MAC_DST = "02:00:00:00:00:01"
MAC_SRC = "02:00:00:00:00:02"
TPIDS = (0x8100, 0x88A8)


class Frame:
    """A frame to send: its bytes and, for a keep hole, the per-byte ``tkeep`` list.

    Members
    -------
    data : bytes
        Bytes on the wire (the bytes the hole hides included).
    keep : list of int or None
        One bit per byte; ``None`` means all ones.
    """

    def __init__(self, data, keep=None):
        self.data = bytes(data)
        self.keep = keep

    def resolve(self, lanes):
        """Return ``(malformed, bytes)`` as a ``lanes``-byte-wide stream carries the frame.

        A non-last beat must keep every byte and the last one a non-empty run from byte 0;
        a well-formed frame consists of its kept bytes.
        """
        if self.keep is None:
            return False, self.data
        beats = [self.keep[i:i + lanes] for i in range(0, len(self.keep), lanes)]
        last = beats[-1]
        run = last.index(0) if 0 in last else len(last)
        if any(0 in beat for beat in beats[:-1]) or run == 0 or 1 in last[run:]:
            return True, b""
        return False, self.data[:len(self.data) - len(last) + run]

    def __repr__(self):
        hole = "" if self.keep is None else ", hole"
        return f"Frame({len(self.data)} bytes{hole}: {self.data[:48].hex()}...)"


def _l2(rng, tags):
    from scapy.all import Dot1AD, Dot1Q, Ether

    pkt = Ether(dst=MAC_DST, src=MAC_SRC)
    for _ in range(tags):
        pkt = pkt / (Dot1AD(vlan=rng.randrange(4096)) if rng.random() < 0.4
                     else Dot1Q(vlan=rng.randrange(4096)))
    return pkt


def _l4(rng, proto, payload_len):
    from scapy.all import TCP, UDP, Raw

    payload = Raw(bytes(rng.randrange(256) for _ in range(max(payload_len, 0))))
    if proto == "tcp":
        return TCP(sport=rng.randrange(65536), dport=rng.randrange(65536),
                   seq=rng.randrange(1 << 32), flags="PA") / payload
    if proto == "udp":
        return UDP(sport=rng.randrange(65536), dport=rng.randrange(65536)) / payload
    return payload


def _ipv4(rng, proto, ip_kwargs):
    from scapy.all import IP, IPOption_NOP

    options = [IPOption_NOP()] * rng.choice([0, 0, 0, 1, 4, 7, 12, 40])
    number = {"tcp": 6, "udp": 17}.get(proto, rng.choice([1, 47, 132]))
    return IP(src=f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}",
              dst=f"192.168.{rng.randrange(256)}.{rng.randrange(256)}",
              ttl=rng.randrange(1, 256), id=rng.randrange(65536), proto=number,
              options=options, **ip_kwargs)


def _ipv6(rng, proto):
    from scapy.all import IPv6

    number = {"tcp": 6, "udp": 17}.get(proto, rng.choice([0, 43, 58, 59]))
    src = ":".join(f"{rng.randrange(65536):x}" for _ in range(8))
    dst = ":".join(f"{rng.randrange(65536):x}" for _ in range(8))
    return IPv6(src=src, dst=dst, nh=number, hlim=rng.randrange(256))


def _fix_size(rng, frame, size):
    if len(frame) >= size:
        return frame[:size]
    pad = bytes(size - len(frame)) if rng.random() < 0.7 else \
        bytes(rng.randrange(256) for _ in range(size - len(frame)))
    return frame + pad


def frame_of_size(rng, size):
    """Return the bytes of one frame of exactly ``size`` bytes, of a randomly chosen kind."""
    if size < 14 or rng.random() < 0.04:
        return bytes(rng.randrange(256) for _ in range(size))
    tags = rng.choice([0, 0, 0, 1, 1, 2])
    kind = rng.choices(["ipv4", "ipv6", "other"], weights=[6, 3, 1])[0]
    proto = rng.choices(["tcp", "udp", "other"], weights=[4, 4, 1])[0]
    l2 = _l2(rng, tags)
    mutation = rng.choices(
        ["none", "bad_ip", "bad_l4", "fragment", "udp0", "pad", "truncate", "ihl",
         "length", "version", "plen0", "ethertype"],
        weights=[10, 2, 2, 1, 1, 2, 1, 1, 2, 1, 1, 1])[0]
    if kind == "other":
        from scapy.all import Raw

        ethertype = rng.choice([0x0806, 0x88CC, 0x0800, 0x86DD, 0x1234, 0x8100, 0x88A8])
        frame = bytes(l2 / Raw(bytes(rng.randrange(256) for _ in range(max(size, 64)))))
        off = 12 + 4 * tags
        frame = frame[:off] + ethertype.to_bytes(2, "big") + frame[off + 2:]
        return _fix_size(rng, frame, size)

    l3_off = 14 + 4 * tags
    ip_kwargs = {}
    if mutation == "fragment" and kind == "ipv4":
        ip_kwargs = rng.choice([{"flags": "MF"}, {"frag": rng.randrange(1, 8192)},
                                {"flags": "DF"}])
    if kind == "ipv4":
        l3 = _ipv4(rng, proto, ip_kwargs)
    else:
        l3 = _ipv6(rng, proto)
    header_len = len(bytes(l2 / l3 / _l4(rng, proto, 0)))
    target = size
    if mutation == "pad":
        target = rng.randrange(min(size, header_len), size + 1)
    elif mutation == "truncate":
        target = size + rng.randrange(1, 64)
    pkt = l2 / l3 / _l4(rng, proto, target - header_len)
    if mutation == "udp0" and proto == "udp":
        pkt[l3.__class__].payload.chksum = 0
    frame = bytearray(bytes(pkt))
    if mutation == "bad_ip" and kind == "ipv4":
        frame[l3_off + 10 + rng.randrange(2)] ^= 1 << rng.randrange(8)
    elif mutation == "bad_l4" and len(frame) > header_len:
        frame[rng.randrange(header_len - 8, len(frame))] ^= 1 << rng.randrange(8)
    elif mutation == "ihl" and kind == "ipv4":
        frame[l3_off] = 0x40 | rng.randrange(5)
    elif mutation == "version":
        frame[l3_off] = (rng.choice([4, 6, 5, 0]) << 4) | (frame[l3_off] & 0x0F)
    elif mutation == "length" and len(frame) > l3_off + 6:
        field = l3_off + (2 if kind == "ipv4" else 4)
        old = int.from_bytes(frame[field:field + 2], "big")
        new = max(0, min(0xFFFF, old + rng.choice([-9, -2, -1, 1, 2, 7, 300])))
        frame[field:field + 2] = new.to_bytes(2, "big")
        if kind == "ipv4" and rng.random() < 0.7:  # keep the header checksum right
            from nicsim.hw.ref.checksum import ones_sum

            ihl = (frame[l3_off] & 0x0F) * 4
            frame[l3_off + 10:l3_off + 12] = b"\0\0"
            value = ~ones_sum(frame[l3_off:l3_off + ihl]) & 0xFFFF
            frame[l3_off + 10:l3_off + 12] = value.to_bytes(2, "big")
    elif mutation == "plen0" and kind == "ipv6" and len(frame) > l3_off + 6:
        frame[l3_off + 4:l3_off + 6] = b"\0\0"
    elif mutation == "ethertype":
        frame[l3_off - 2] ^= 0x01
    return _fix_size(rng, bytes(frame), size)


def with_hole(rng, data, lanes):
    """Return a :class:`Frame` of ``data`` with a keep hole (mostly in the last beat)."""
    keep = [1] * len(data)
    if len(data) == 1 or rng.random() < 0.15:
        keep[-1] = 0  # last beat ends in a zero byte (or is all zero)
    elif rng.random() < 0.75:
        start = (len(data) - 1) // lanes * lanes
        keep[rng.randrange(start, len(data) - 1) if len(data) - 1 > start else start] = 0
    else:
        keep[rng.randrange(len(data) - 1)] = 0
    return Frame(data, keep)


def corpus(rng, sizes, lanes, hole_ratio=0.03):
    """Return a :class:`Frame` of each size in ``sizes``, some with keep holes."""
    frames = []
    for size in sizes:
        data = frame_of_size(rng, size)
        frames.append(with_hole(rng, data, lanes) if rng.random() < hole_ratio else Frame(data))
    return frames


def rx_expected(frame, lanes):
    """Return the expected result word of a :class:`Frame` from the golden reference."""
    from nicsim.hw.ref.checksum import rx_checksum

    malformed, data = frame.resolve(lanes)
    if malformed:
        return 0
    ref = rx_checksum(data)
    return ref.csum_complete | int(ref.ip) << 16 | int(ref.l4) << 18


def rx_counters(frames, lanes):
    """Return the expected register values after ``frames``, from the golden reference."""
    from nicsim.hw.ref.checksum import Status, rx_checksum

    counts = dict.fromkeys(("frames", "ip_ok", "ip_bad", "l4_ok", "l4_bad", "malformed"), 0)
    for frame in frames:
        counts["frames"] += 1
        malformed, data = frame.resolve(lanes)
        if malformed:
            counts["malformed"] += 1
            continue
        ref = rx_checksum(data)
        counts["ip_ok"] += ref.ip == Status.OK
        counts["ip_bad"] += ref.ip == Status.BAD
        counts["l4_ok"] += ref.l4 == Status.OK
        counts["l4_bad"] += ref.l4 == Status.BAD
    return counts


def describe(word):
    return f"csum={word & 0xFFFF:04x} ip={(word >> 16) & 3} l4={(word >> 18) & 3}"


# ---- cocotb side ---------------------------------------------------------------------------


def _axis_frame(frame):
    from cocotbext.axi import AxiStreamFrame

    if frame.keep is None:
        return AxiStreamFrame(frame.data)
    return AxiStreamFrame(frame.data, tkeep=list(frame.keep))


async def _run_frames(tb, frames, counters_before=None):
    from nicsim.rtl.checksum_rx import COUNTERS as REGISTERS

    lanes = params()["width"] // 8
    for frame in frames:
        await tb.source.send(_axis_frame(frame))
    for n, frame in enumerate(frames):
        got = await tb.result.recv()
        word = int.from_bytes(bytes(got.tdata), "little")
        want = rx_expected(frame, lanes)
        assert word == want, f"frame {n} {frame}: got {describe(word)}, want {describe(want)}"
    counts = rx_counters(frames, lanes)
    for name, addr in REGISTERS.items():
        value, resp = await tb.read_reg(addr)
        base = 0 if counters_before is None else counters_before[name]
        assert resp == 0 and value == (base + counts[name]) & 0xFFFFFFFF, \
            f"register {name}: got {value}, want {base + counts[name]}"


async def _read_counters(tb):
    from nicsim.rtl.checksum_rx import COUNTERS as REGISTERS

    return {name: (await tb.read_reg(addr))[0] for name, addr in REGISTERS.items()}


@cocotb.test()
@cocotb.parametrize(pauses=[("none", "none"), ("random", "cycle"), ("cycle", "random")])
async def all_sizes(dut, pauses):
    """Every size 1..128, 512, 1500, 9000, under idle and backpressure patterns."""
    tb = TB(dut, result="csum")
    tb.set_pauses(PAUSES[pauses[0]], PAUSES[pauses[1]])
    await tb.reset()
    lanes = params()["width"] // 8
    rng = random.Random("/".join(pauses))
    frames = corpus(rng, FRAME_SIZES, lanes, hole_ratio=0.05)
    await _run_frames(tb, frames)


@cocotb.test()
async def random_mix(dut):
    """A fixed-seed random mix of sizes and kinds, with idle and backpressure."""
    tb = TB(dut, result="csum")
    tb.set_pauses(PAUSES["random"], PAUSES["random"])
    await tb.reset()
    lanes = params()["width"] // 8
    rng = random.Random(2024)
    sizes = [rng.choice([rng.randrange(1, 60), rng.randrange(60, 200), rng.randrange(200, 1600)])
             for _ in range(150)]
    sizes[20:20] = [9018, 12000, 66000]  # longer than any MTU: still one right result each
    await _run_frames(tb, corpus(rng, sizes, lanes, hole_ratio=0.05))


@cocotb.test()
async def registers(dut):
    """Counters wrap-free after traffic; writes and unmapped reads answer SLVERR."""
    tb = TB(dut, result="csum")
    await tb.reset()
    rng = random.Random(5)
    lanes = params()["width"] // 8
    frames = corpus(rng, [60, 64, 100, 1500, 3, 20, 90], lanes)
    frames.append(with_hole(rng, frame_of_size(rng, 70), lanes))
    await _run_frames(tb, frames)
    before = await _read_counters(tb)
    for addr in (0x00, 0x14, 0x18, 0x40):
        assert await tb.write_reg(addr, 1) == 2
    for addr in (0x18, 0x1C, 0x80, 0xFC):
        assert (await tb.read_reg(addr))[1] == 2
    assert await _read_counters(tb) == before


@cocotb.test()
@cocotb.parametrize(size=[60, 64])
async def line_rate(dut, size):
    """Back-to-back minimum-size frames are accepted one beat every cycle."""
    tb = TB(dut, result="csum")
    tb.set_pauses(None, None)
    await tb.reset()
    lanes = params()["width"] // 8
    rng = random.Random(size)
    frames = [Frame(frame_of_size(rng, size)) for _ in range(200)]
    watch = Handshakes(dut, "s_axis")
    await _run_frames(tb, frames)
    await watch.stop()
    watch.assert_back_to_back("s_axis", len(frames) * -(-size // lanes))


@pytest.mark.rtl
@pytest.mark.parametrize("width", [64, 512])
def test_checksum_rx(width):
    rtl_test("checksum-rx", {"width": width}, "test_checksum_rx")
