"""The IPv4 checksum update of a field write (``ipv4_csum_set``), in Amaranth's simulator.

The gateware splits RFC 1624's sum into a part of the old header and the written field's
pieces, folded separately; the expected checksums here are RFC 1624 eqn. 3 over all ten words
(the golden reference's ``csum_adjust``) and, for headers whose checksum was right, scapy's
checksum of the new header computed from scratch (RFC 791 §3.1). Fields are placed by RFC 791's
header format: the type of service byte 1 (DSCP its upper six bits, RFC 2474 §3), the
identification bytes 4-5, the TTL byte 8, the source address bytes 12-15.
"""

import random

from amaranth.hdl import Module, Signal
from amaranth.sim import Simulator
from scapy.layers.inet import IP

from nicsim.hw.ref.checksum import csum_adjust
from nicsim.rtl.match_action.actions import ipv4_csum_set

# (name, first byte, bit in that byte's LSB-first numbering of the field's low end, width)
FIELDS = [
    ("dscp", 1, 2, 6),
    ("identification", 4, 0, 16),
    ("ttl", 8, 0, 8),
    ("src", 12, 0, 32),  # two words: the field's pieces in two sums
]


def _shift(first_byte, low_bit, width):
    """The field's lowest bit in the 160-bit vector, whose first byte is the most significant."""
    last_byte = first_byte + (low_bit + width + 7) // 8 - 1
    return 8 * (19 - last_byte) + low_bit


def _set_bytes(raw, first_byte, low_bit, width, value):
    nbytes = (low_bit + width + 7) // 8
    word = int.from_bytes(raw[first_byte:first_byte + nbytes], "big")
    mask = ((1 << width) - 1) << low_bit
    word = (word & ~mask) | (value << low_bit)
    out = bytearray(raw)
    out[first_byte:first_byte + nbytes] = word.to_bytes(nbytes, "big")
    return bytes(out)


def _words(raw):
    return [int.from_bytes(raw[i:i + 2], "big") for i in range(0, 20, 2)]


def _run(cases, field):
    _, first, low, width = field
    m = Module()
    old = Signal(160)
    value = Signal(width)
    out = Signal(160)
    m.d.comb += out.eq(ipv4_csum_set(old, _shift(first, low, width), width, value))
    got = []

    async def bench(ctx):
        for raw, v in cases:
            ctx.set(old, int.from_bytes(raw, "big"))
            ctx.set(value, v)
            got.append(ctx.get(out).to_bytes(20, "big"))

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    return got


def _headers(rng, n):
    """Valid headers from scapy, then headers with any checksum (the edges 0, 0xFFFF too)."""
    valid = []
    for _ in range(n):
        ip = IP(src=f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
                dst=f"192.168.{rng.randrange(256)}.{rng.randrange(256)}", ttl=rng.randrange(256),
                tos=rng.randrange(256), id=rng.randrange(65536), proto=rng.choice([1, 6, 17]),
                len=rng.randrange(20, 1500))
        valid.append(bytes(ip)[:20])
    anything = []
    for k in range(n):
        raw = bytearray(rng.randbytes(20))
        raw[0] = 0x45
        raw[10:12] = [b"\x00\x00", b"\xff\xff", rng.randbytes(2)][k % 3]
        anything.append(bytes(raw))
    return valid, anything


def test_ipv4_checksum_of_a_field_write_matches_rfc1624_and_a_recomputation():
    rng = random.Random(1624)
    valid, anything = _headers(rng, 60)
    for field in FIELDS:
        name, first, low, width = field
        edges = [0, (1 << width) - 1]
        cases = [(raw, edges[i] if i < 2 else rng.randrange(1 << width))
                 for i, raw in enumerate(valid + anything)]
        got = _run(cases, field)
        for k, ((raw, v), out) in enumerate(zip(cases, got, strict=True)):
            want = bytearray(_set_bytes(raw, first, low, width, v))
            csum = csum_adjust(int.from_bytes(raw[10:12], "big"), _words(raw), _words(want))
            want[10:12] = csum.to_bytes(2, "big")
            assert out == bytes(want), (name, raw.hex(), v, out.hex(), bytes(want).hex())
            if k < len(valid):  # a right checksum stays right: scapy computes it anew
                fresh = IP(out)
                del fresh.chksum
                assert bytes(fresh)[10:12] == out[10:12], (name, raw.hex(), v)
