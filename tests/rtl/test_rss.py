"""The RSS unit on Verilator (cocotb 2.x): vectors, mixed frames, registers, line rate.

Expected results always come from the golden reference :func:`nicsim.hw.ref.rss.rss_hash`
(a frame with tkeep holes: hash 0, type NONE, ``table[0]``). The frame builders at the top are
shared with the Amaranth-simulator tier (``test_rss_sim.py``).
"""

import random
import socket
import struct

import cocotb
import pytest

from nicsim.hw.ref.rss import (
    ALL_TYPES_MASK,
    DEFAULT_KEY,
    HashType,
    RssConfig,
    RssResult,
    rss_hash,
)
from tbutil import FRAME_SIZES, PAUSES, TB, params, rtl_test

__all__ = [
    "IPV4_VECTORS",
    "catalogue_frames",
    "IPV6_VECTORS",
    "MAC",
    "expected",
    "fit",
    "keep_holes",
    "min_size_frames",
    "mixed_frames",
    "random_config",
    "random_packet",
    "sized_frames",
    "vector_frames",
]

MAC = {"src": "02:00:00:00:00:01", "dst": "02:00:00:00:00:02"}
TPIDS = (0x8100, 0x88A8)
# shared/REFERENCES.md: Microsoft's RSS verification vectors (IPv4), key DEFAULT_KEY:
# (source, source port, destination, destination port, 2-tuple hash, 4-tuple hash).
IPV4_VECTORS = [
    ("66.9.149.187", 2794, "161.142.100.80", 1766, 0x323E8FC2, 0x51CCC178),
    ("199.92.111.2", 14230, "65.69.140.83", 4739, 0xD718262A, 0xC626B0EA),
    ("24.19.198.95", 12898, "12.22.207.184", 38024, 0xD2D0A5DE, 0x5C2B394A),
]
# The IPv6 vectors of the same Microsoft page ("Verifying the RSS Hash Calculation").
IPV6_VECTORS = [
    ("3ffe:2501:200:1fff::7", 2794, "3ffe:2501:200:3::1", 1766, 0x2CC18CD5, 0x40207D3D),
    ("3ffe:501:8::260:97ff:fe40:efab", 14230, "ff02::1", 4739, 0x0F0C461C, 0xDDE51BBF),
    ("3ffe:1900:4545:3:200:f8ff:fe21:67cf", 44251, "fe80::200:f8ff:fe21:67cf", 38024,
     0x4B61E985, 0x02D1FEEF),
]


# ---------------------------------------------------------------------------------------------
# Frames (scapy)


def _l2(rng, ethertype, tags=None):
    from scapy.layers.l2 import Dot1Q, Ether

    tags = rng.choice((0, 0, 1, 2)) if tags is None else tags
    types = [rng.choice(TPIDS) for _ in range(tags)] + [ethertype]
    packet = Ether(type=types[0], **MAC)
    for n in range(tags):
        packet = packet / Dot1Q(vlan=rng.randrange(4096), type=types[n + 1])
    return packet


def _ipv4(rng):
    return socket.inet_ntop(socket.AF_INET, rng.randbytes(4))


def _ipv6(rng):
    return socket.inet_ntop(socket.AF_INET6, rng.randbytes(16))


def _l4(rng, family):
    from scapy.layers.inet import ICMP, TCP, UDP
    from scapy.layers.inet6 import ICMPv6EchoRequest
    from scapy.packet import Raw

    kind = rng.choice(("tcp", "tcp", "udp", "udp", "other"))
    payload = Raw(rng.randbytes(rng.randrange(0, 48)))
    if kind == "tcp":
        return TCP(sport=rng.randrange(65536), dport=rng.randrange(65536)) / payload
    if kind == "udp":
        return UDP(sport=rng.randrange(65536), dport=rng.randrange(65536)) / payload
    return (ICMP() if family == 4 else ICMPv6EchoRequest()) / payload


def _ipv4_packet(rng):
    from scapy.layers.inet import IP, IPOption_NOP

    fields = {"src": _ipv4(rng), "dst": _ipv4(rng)}
    roll = rng.random()
    if roll < 0.15:
        fields["flags"] = "MF"
    elif roll < 0.3:
        fields["frag"] = rng.randrange(1, 8192)
    elif roll < 0.4:
        fields["flags"] = "DF"
    if rng.random() < 0.35:
        fields["options"] = [IPOption_NOP()] * rng.randrange(1, 41)  # IHL 6 .. 15
    if rng.random() < 0.1:
        return IP(proto=rng.choice((47, 132)), **fields) / rng.randbytes(rng.randrange(40))
    return IP(**fields) / _l4(rng, 4)


def _ipv6_packet(rng):
    from scapy.layers.inet6 import (
        IPv6,
        IPv6ExtHdrDestOpt,
        IPv6ExtHdrFragment,
        IPv6ExtHdrHopByHop,
        IPv6ExtHdrRouting,
        PadN,
    )

    packet = IPv6(src=_ipv6(rng), dst=_ipv6(rng))
    for _ in range(rng.choice((0, 0, 1, 1, 2, 3, 4, 5))):
        kind = rng.choice(("hop", "routing", "dest", "atomic", "fragment"))
        if kind == "hop":
            header = IPv6ExtHdrHopByHop(options=[PadN(optdata=bytes(rng.randrange(0, 28)))])
        elif kind == "dest":
            header = IPv6ExtHdrDestOpt(options=[PadN(optdata=bytes(rng.randrange(0, 28)))])
        elif kind == "routing":
            header = IPv6ExtHdrRouting(addresses=[_ipv6(rng) for _ in range(rng.randrange(3))])
        elif kind == "atomic":
            header = IPv6ExtHdrFragment(offset=0, m=0, id=rng.randrange(1 << 32))
        else:
            header = IPv6ExtHdrFragment(offset=rng.randrange(8192), m=rng.randrange(2))
        packet = packet / header
    if rng.random() < 0.1:
        packet.lastlayer().nh = 59  # no next header
        return packet / rng.randbytes(rng.randrange(16))
    return packet / _l4(rng, 6)


def _corrupt(rng, frame, l3):
    """Break one field the parser checks (for some frames), keeping the rest valid."""
    frame = bytearray(frame)
    roll = rng.random()
    if len(frame) <= l3 + 8 or roll > 0.35:
        return bytes(frame)
    version = frame[l3] >> 4
    if roll < 0.05:
        frame[l3] = (version << 4) | rng.randrange(5)  # IHL < 5 (IPv4)
    elif roll < 0.1:
        frame[l3] = (rng.choice((0, 4, 5, 6, 7, 15)) << 4) | (frame[l3] & 0x0F)
    elif roll < 0.2 and version == 4:
        ihl = frame[l3] & 0x0F
        frame[l3 + 2:l3 + 4] = struct.pack("!H", rng.randrange(4 * ihl + 8))  # short total length
    elif roll < 0.25 and version == 6:
        frame[l3 + 4:l3 + 6] = struct.pack("!H", rng.randrange(12))  # short payload length
    elif roll < 0.3:
        frame[l3 - 2:l3] = struct.pack("!H", rng.choice((0x0800, 0x86DD, 0x0806, 0x8100)))
    else:
        frame[rng.randrange(l3, min(len(frame), 128))] = rng.randrange(256)
    return bytes(frame)


def catalogue_frames():
    """Frames that hit every rule of the reference parser once or more, behind 0, 1 and 2
    VLAN tags (C-TAG and S-TAG TPIDs), plus each truncated at the interesting boundaries."""
    from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_NOP
    from scapy.layers.inet6 import (
        IPv6,
        IPv6ExtHdrDestOpt,
        IPv6ExtHdrFragment,
        IPv6ExtHdrHopByHop,
        IPv6ExtHdrRouting,
        PadN,
    )
    from scapy.layers.l2 import ARP, Dot1Q, Ether

    src4, dst4, src6, dst6 = "10.1.2.3", "192.168.7.9", "2001:db8::1", "2001:db8:ffff::42"
    tcp, udp = TCP(sport=1234, dport=80), UDP(sport=5353, dport=53)
    hop = IPv6ExtHdrHopByHop(options=[PadN(optdata=bytes(12))])  # 16 bytes
    long_hop = IPv6ExtHdrHopByHop(options=[PadN(optdata=bytes(60))])  # 64 bytes
    ipv4 = [
        IP(src=src4, dst=dst4) / tcp, IP(src=src4, dst=dst4) / udp,
        IP(src=src4, dst=dst4) / ICMP(), IP(src=src4, dst=dst4, proto=47) / b"gre!",
        IP(src=src4, dst=dst4, options=[IPOption_NOP()] * 40) / tcp,  # IHL 15
        IP(src=src4, dst=dst4, options=[IPOption_NOP()] * 4) / udp,  # IHL 6
        IP(src=src4, dst=dst4, flags="MF") / tcp, IP(src=src4, dst=dst4, frag=100) / udp,
        IP(src=src4, dst=dst4, flags="DF") / tcp,
        IP(src=src4, dst=dst4, len=22) / tcp,  # ports outside the datagram
        IP(src=src4, dst=dst4, len=24) / tcp,  # ports end exactly at the datagram end
    ]
    ipv6 = [
        IPv6(src=src6, dst=dst6) / tcp, IPv6(src=src6, dst=dst6) / udp,
        IPv6(src=src6, dst=dst6, nh=59) / b"none",
        IPv6(src=src6, dst=dst6) / hop / tcp,
        IPv6(src=src6, dst=dst6) / IPv6ExtHdrRouting(addresses=[src6]) / udp,
        IPv6(src=src6, dst=dst6) / IPv6ExtHdrDestOpt() / tcp,
        IPv6(src=src6, dst=dst6) / IPv6ExtHdrFragment(offset=0, m=0) / udp,  # atomic
        IPv6(src=src6, dst=dst6) / IPv6ExtHdrFragment(offset=0, m=1) / udp,
        IPv6(src=src6, dst=dst6) / IPv6ExtHdrFragment(offset=3, m=0) / tcp,
        IPv6(src=src6, dst=dst6) / hop / IPv6ExtHdrDestOpt() / IPv6ExtHdrRouting()
        / IPv6ExtHdrFragment() / tcp,  # four headers: still the 4-tuple
        IPv6(src=src6, dst=dst6) / hop / IPv6ExtHdrDestOpt() / IPv6ExtHdrRouting()
        / IPv6ExtHdrDestOpt() / IPv6ExtHdrFragment() / tcp,  # five: 2-tuple
        IPv6(src=src6, dst=dst6) / long_hop / tcp,  # ports past byte 128 (with VLANs)
        IPv6(src=src6, dst=dst6, plen=3) / udp,  # ports outside the datagram
    ]
    frames = []
    for tags in ((), (0x8100,), (0x88A8, 0x8100)):
        for ethertype, packets in ((0x0800, ipv4), (0x86DD, ipv6)):
            for packet in packets:
                header = Ether(type=(*tags, ethertype)[0], **MAC)
                for n in range(len(tags)):
                    header = header / Dot1Q(vlan=n + 1, type=(*tags, ethertype)[n + 1])
                frame = bytes(header / packet)
                frames.append(frame)
                l3 = 14 + 4 * len(tags)
                if ethertype == 0x0800 and packet is ipv4[0]:
                    for ihl in (0, 4):  # IHL < 5
                        frames.append(frame[:l3] + bytes([0x40 | ihl]) + frame[l3 + 1:])
                    frames.append(frame[:l3] + b"\x65" + frame[l3 + 1:])  # version 6
                    for cut in (l3 + 19, l3 + 20, l3 + 23, l3 + 24):
                        frames.append(frame[:cut])  # header / ports cut off
                if ethertype == 0x86DD and packet is ipv6[0]:
                    frames.append(frame[:l3] + b"\x45" + frame[l3 + 1:])  # version 4
                    for cut in (l3 + 39, l3 + 40, l3 + 43, l3 + 44):
                        frames.append(frame[:cut])
    frames.append(bytes(Ether(**MAC) / ARP(psrc=src4, pdst=dst4)))
    frames.append(bytes(Ether(type=0x8100, **MAC) / Dot1Q(type=0x8100) / Dot1Q(type=0x8100)
                        / IP(src=src4, dst=dst4) / tcp))  # a third tag: not walked
    frames += [bytes(Ether(**MAC) / IP(src=src4, dst=dst4) / tcp)[:n] for n in range(1, 16)]
    return frames


def random_packet(rng):
    """Return a random frame: IPv4/IPv6 (TCP, UDP, other, options, fragments, extension
    headers) behind 0-2 VLAN tags, some with a broken field, or a non-IP frame."""
    from scapy.layers.l2 import ARP

    roll = rng.random()
    tags = rng.choice((0, 0, 1, 2))
    if roll < 0.42:
        frame = bytes(_l2(rng, 0x0800, tags) / _ipv4_packet(rng))
    elif roll < 0.84:
        frame = bytes(_l2(rng, 0x86DD, tags) / _ipv6_packet(rng))
    elif roll < 0.92:
        return bytes(_l2(rng, 0x0806, tags) / ARP(psrc=_ipv4(rng), pdst=_ipv4(rng)))
    else:
        return rng.randbytes(rng.randrange(1, 100))
    return _corrupt(rng, frame, 14 + 4 * tags)


def fit(rng, frame, size):
    """Truncate ``frame`` to ``size`` bytes or pad it with random bytes."""
    return frame[:size] if len(frame) >= size else frame + rng.randbytes(size - len(frame))


def sized_frames(rng, sizes=FRAME_SIZES):
    """One random frame of each size (truncated headers at the small sizes)."""
    return [fit(rng, random_packet(rng), size) for size in sizes]


def mixed_frames(rng, count):
    """Random frames at their natural size, some truncated."""
    frames = []
    for _ in range(count):
        frame = random_packet(rng)
        if rng.random() < 0.15:
            frame = frame[:rng.randrange(1, len(frame) + 1)]
        frames.append(frame)
    return frames


def min_size_frames(rng, count):
    """60-byte frames (the Ethernet minimum without FCS) that hash, of every kind."""
    frames = []
    while len(frames) < count:
        frame = random_packet(rng)
        if len(frame) >= 34:
            frames.append(fit(rng, frame, 60))
    return frames


def vector_frames():
    """TCP frames of the published IPv4 and IPv6 vectors, with their published hashes."""
    from scapy.layers.inet import IP, TCP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Ether

    cases = []
    for family, vectors in ((IP, IPV4_VECTORS), (IPv6, IPV6_VECTORS)):
        for src, sport, dst, dport, two_tuple, four_tuple in vectors:
            frame = bytes(Ether(**MAC) / family(src=src, dst=dst) / TCP(sport=sport, dport=dport))
            cases.append((frame, family is IP, two_tuple, four_tuple))
    return cases


def keep_holes(rng, frame, width):
    """Return a tkeep list with a hole: in the last beat, or in an earlier one."""
    beat = width // 8
    keep = [1] * len(frame)
    last_start = (len(frame) - 1) // beat * beat
    if len(frame) - last_start > 1 and (last_start == 0 or rng.random() < 0.6):
        keep[rng.randrange(last_start, len(frame) - 1)] = 0  # last beat: not 0..01..1
    elif last_start:
        keep[rng.randrange(last_start)] = 0  # an earlier beat: not all ones
    else:
        keep = [0] * len(frame)  # a one-byte frame: keep 0
    return keep


def random_config(rng, table_size=128, queue_bits=8):
    """A random key, enabled mask and table."""
    table = [rng.randrange(1 << queue_bits) for _ in range(table_size)]
    return RssConfig(key=rng.randbytes(40), enabled=rng.randrange(128) & ALL_TYPES_MASK,
                     table=table)


def expected(frame, config, malformed=False):
    """The reference result of a frame (malformed: hash 0, NONE, ``table[0]``)."""
    if malformed:
        return RssResult(0, HashType.NONE, config.table[0])
    return rss_hash(frame, config)


def decode(word):
    """Split a result word into an :class:`RssResult`."""
    return RssResult(word & 0xFFFFFFFF, HashType((word >> 32) & 0xF), word >> 48)


# ---------------------------------------------------------------------------------------------
# Testbench

REG_ID, REG_TABLE_SIZE, REG_HASH_TYPES = 0x000, 0x004, 0x008
REG_FRAMES, REG_FRAMES_NONE, REG_FRAMES_MALFORMED = 0x010, 0x014, 0x018
REG_KEY, REG_TABLE = 0x040, 0x800
SLVERR = 2


class RssTB(TB):
    """The shared TB with the ``hash`` result stream and RSS register helpers."""

    def __init__(self, dut):
        super().__init__(dut, result="hash")
        self.width = params().get("width", 64)
        self.table_size = params().get("table_size", 128)

    async def configure(self, config):
        """Write key, enabled mask and table; check every write is accepted."""
        for n in range(10):
            word = int.from_bytes(config.key[4 * n:4 * n + 4], "big")
            assert await self.write_reg(REG_KEY + 4 * n, word) == 0
        assert await self.write_reg(REG_HASH_TYPES, config.enabled) == 0
        for n, queue in enumerate(config.table):
            assert await self.write_reg(REG_TABLE + 4 * n, queue) == 0

    async def counters(self):
        return [(await self.read_reg(addr))[0]
                for addr in (REG_FRAMES, REG_FRAMES_NONE, REG_FRAMES_MALFORMED)]

    async def check_frames(self, frames, config, keeps=None):
        """Send frames, compare every result with the reference and the counters' deltas."""
        from cocotbext.axi import AxiStreamFrame

        keeps = keeps or [None] * len(frames)
        before = await self.counters()
        for frame, keep in zip(frames, keeps, strict=True):
            await self.source.send(AxiStreamFrame(frame, tkeep=keep))
        want = [expected(f, config, k is not None) for f, k in zip(frames, keeps, strict=True)]
        for n, (frame, result) in enumerate(zip(frames, want, strict=True)):
            word = int.from_bytes(bytes((await self.result.recv()).tdata), "little")
            assert decode(word) == result, (
                f"frame {n} ({len(frame)} bytes) {frame[:64].hex()}: got {decode(word)}, "
                f"want {result}")
        assert self.result.empty()
        after = await self.counters()
        none = sum(r.hash_type == HashType.NONE for r in want)
        bad = sum(k is not None for k in keeps)
        deltas = [(a - b) % (1 << 32) for a, b in zip(after, before, strict=True)]
        assert deltas == [len(frames), none, bad]


async def start(dut, idle=None, backpressure=None):
    """Reset, then write the default configuration: the table keeps its contents over a reset
    and every test runs in the same simulation."""
    tb = RssTB(dut)
    tb.set_pauses(idle and PAUSES[idle], backpressure and PAUSES[backpressure])
    await tb.reset()
    await tb.configure(RssConfig())
    return tb


# ---------------------------------------------------------------------------------------------
# cocotb tests


@cocotb.test()
async def published_vectors(dut):
    """The published IPv4/IPv6 vectors: 4-tuple with TCP, 2-tuple with only IP types on."""
    tb = await start(dut)
    config = RssConfig()
    cases = vector_frames()
    frames = [frame for frame, *_ in cases]
    await tb.check_frames(frames, config)
    for frame, _, _, four_tuple in cases:
        assert rss_hash(frame, config).hash == four_tuple
    # Restrict the enabled types to the IP 2-tuples: the same frames hash over addresses only.
    config.enabled = (1 << HashType.IPV4) | (1 << HashType.IPV6)
    assert await tb.write_reg(REG_HASH_TYPES, config.enabled) == 0
    await tb.check_frames(frames, config)
    for frame, _, two_tuple, _ in cases:
        assert rss_hash(frame, config).hash == two_tuple


@cocotb.test()
@cocotb.parametrize(idle=["none", "random"], backpressure=["none", "cycle", "random"])
async def frames_of_every_size(dut, idle, backpressure):
    """Sizes 1..128, 512, 1500, 9000 and a mix, under idle and backpressure patterns."""
    tb = await start(dut, idle, backpressure)
    rng = random.Random(f"{idle}-{backpressure}")
    frames = sized_frames(rng) + mixed_frames(rng, 150)
    await tb.check_frames(frames, RssConfig())


@cocotb.test()
async def every_parser_rule(dut):
    """The catalogue: each parser rule behind 0-2 VLAN tags, truncations at the boundaries."""
    tb = await start(dut, "random", "random")
    await tb.check_frames(catalogue_frames(), RssConfig())


@cocotb.test()
async def malformed_keep(dut):
    """tkeep holes (last beat not 0..01..1, earlier beat not all ones) hash NONE."""
    tb = await start(dut, "random", "random")
    rng = random.Random(11)
    frames = mixed_frames(rng, 120)
    keeps = [keep_holes(rng, f, tb.width) if rng.random() < 0.4 else None for f in frames]
    await tb.check_frames(frames, RssConfig(), keeps)


@cocotb.test()
async def runtime_config(dut):
    """Random keys and tables over AXI4-Lite, read back, then frames with that config."""
    tb = await start(dut, "random", "random")
    rng = random.Random(5)
    for _ in range(2):
        config = random_config(rng, tb.table_size)
        await tb.configure(config)
        for n in range(10):
            assert await tb.read_reg(REG_KEY + 4 * n) == (
                int.from_bytes(config.key[4 * n:4 * n + 4], "big"), 0)
        assert await tb.read_reg(REG_HASH_TYPES) == (config.enabled, 0)
        for n, queue in enumerate(config.table):
            assert await tb.read_reg(REG_TABLE + 4 * n) == (queue, 0)
        await tb.check_frames(mixed_frames(rng, 100), config)
    # Enabled-type masks one after the other, same key and table.
    for enabled in (0, 1 << HashType.IPV4, 1 << HashType.TCP_IPV6, ALL_TYPES_MASK,
                    rng.randrange(128) & ALL_TYPES_MASK):
        config.enabled = enabled
        assert await tb.write_reg(REG_HASH_TYPES, enabled) == 0
        await tb.check_frames(mixed_frames(rng, 60), config)


@cocotb.test()
async def register_errors(dut):
    """Constants, read-only and unmapped registers, out-of-range table writes: SLVERR."""
    tb = await start(dut)
    assert await tb.read_reg(REG_ID) == (0x52535301, 0)
    assert await tb.read_reg(REG_TABLE_SIZE) == (tb.table_size, 0)
    for addr in (REG_ID, REG_TABLE_SIZE, REG_FRAMES, REG_FRAMES_NONE, REG_FRAMES_MALFORMED):
        value = await tb.read_reg(addr)
        assert await tb.write_reg(addr, 0x1234) == SLVERR
        assert await tb.read_reg(addr) == value
    for addr in (0x00C, 0x01C, 0x020, 0x03C, 0x068, 0x7FC):
        assert await tb.write_reg(addr, 1) == SLVERR
        assert (await tb.read_reg(addr))[1] == SLVERR
    # Hash-type bits outside 1..6.
    for bad in (1, 1 << 7, 0x80000000, ALL_TYPES_MASK | 1):
        assert await tb.write_reg(REG_HASH_TYPES, bad) == SLVERR
        assert await tb.read_reg(REG_HASH_TYPES) == (ALL_TYPES_MASK, 0)
    # Table index past the table, queue number too wide.
    default = RssConfig().table
    assert await tb.write_reg(REG_TABLE + 4 * tb.table_size, 1) == SLVERR
    assert (await tb.read_reg(REG_TABLE + 4 * tb.table_size))[1] == SLVERR
    assert await tb.write_reg(REG_TABLE + 4 * 511, 1) == SLVERR
    for value in (256, 0xFFFFFFFF):
        assert await tb.write_reg(REG_TABLE + 4 * 3, value) == SLVERR
        assert await tb.read_reg(REG_TABLE + 4 * 3) == (default[3], 0)
    assert await tb.write_reg(REG_TABLE + 4 * 3, 255) == 0
    assert await tb.read_reg(REG_TABLE + 4 * 3) == (255, 0)
    assert await tb.write_reg(REG_TABLE + 4 * 3, default[3]) == 0
    # The key after all of this is still the default one.
    for n in range(10):
        assert await tb.read_reg(REG_KEY + 4 * n) == (
            int.from_bytes(DEFAULT_KEY[4 * n:4 * n + 4], "big"), 0)


@cocotb.test()
async def line_rate(dut):
    """Back-to-back 60-byte frames: a beat is accepted in every cycle, results all right."""
    from cocotb.triggers import RisingEdge
    from cocotbext.axi import AxiStreamFrame

    tb = await start(dut)
    rng = random.Random(3)
    frames = min_size_frames(rng, 300)
    config = RssConfig()
    beats = sum(-(-len(f) // (tb.width // 8)) for f in frames)
    accepted = cycles = 0
    done = False

    async def sample():
        nonlocal accepted, cycles
        while not done:
            await RisingEdge(dut.clk)
            valid = int(dut.s_axis_tvalid.value)
            ready = int(dut.s_axis_tready.value)
            if accepted or valid:
                if accepted < beats:
                    cycles += 1
                accepted += valid & ready

    monitor = cocotb.start_soon(sample())
    for frame in frames:
        tb.source.send_nowait(AxiStreamFrame(frame))
    for n, frame in enumerate(frames):
        word = int.from_bytes(bytes((await tb.result.recv()).tdata), "little")
        assert decode(word) == rss_hash(frame, config), f"frame {n}"
    done = True
    await monitor
    assert accepted == beats
    assert cycles == beats, f"{beats} beats took {cycles} cycles"


# ---------------------------------------------------------------------------------------------
# pytest


@pytest.mark.rtl
@pytest.mark.parametrize("width", [64, 512])
def test_rss(width):
    rtl_test("rss", {"width": width}, "test_rss")
