"""Tests of the RSS golden reference against published Toeplitz vectors and independent oracles.

Expected hashes come from the published vectors or from :func:`toeplitz_bitwise`, a bit-serial
Toeplitz written independently of the table-driven one under test, fed with fields read back
from scapy's packet objects (never from the parser under test).
"""

from __future__ import annotations

import socket
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_NOP, IPOption_RR
from scapy.layers.inet6 import (
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.packet import Packet, Raw

from nicsim.hw.ref.rss import (
    ALL_TYPES_MASK,
    DEFAULT_KEY,
    MAX_EXT_HEADERS,
    PARSE_WINDOW,
    HashType,
    RssConfig,
    RssResult,
    rss_hash,
    toeplitz,
)

__all__: list[str] = []

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TPIDS = (0x8100, 0x88A8)


def eth(**fields) -> Packet:
    """Ethernet header with fixed addresses (scapy would otherwise resolve the MAC: slow)."""
    return Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02", **fields)

# shared/REFERENCES.md: Microsoft's RSS verification vectors (IPv4), key DEFAULT_KEY.
IPV4_VECTORS = [
    ("66.9.149.187", 2794, "161.142.100.80", 1766, 0x323E8FC2, 0x51CCC178),
    ("199.92.111.2", 14230, "65.69.140.83", 4739, 0xD718262A, 0xC626B0EA),
    ("24.19.198.95", 12898, "12.22.207.184", 38024, 0xD2D0A5DE, 0x5C2B394A),
]
# The IPv6 vectors of the same Microsoft page ("Verifying the RSS Hash Calculation"); the
# bit-serial oracle below reproduces them too.
IPV6_VECTORS = [
    ("3ffe:2501:200:1fff::7", 2794, "3ffe:2501:200:3::1", 1766, 0x2CC18CD5, 0x40207D3D),
    ("3ffe:501:8::260:97ff:fe40:efab", 14230, "ff02::1", 4739, 0x0F0C461C, 0xDDE51BBF),
    ("3ffe:1900:4545:3:200:f8ff:fe21:67cf", 44251, "fe80::200:f8ff:fe21:67cf", 38024,
     0x4B61E985, 0x02D1FEEF),
]


def toeplitz_bitwise(key: bytes, data: bytes) -> int:
    """Bit-serial Toeplitz: slide a 32-bit key window one bit per input bit, MSB first."""
    key_bits = [(byte >> (7 - i)) & 1 for byte in key for i in range(8)]
    window = 0
    for bit in key_bits[:32]:
        window = (window << 1) | bit
    result = 0
    next_key_bit = 32
    for byte in data:
        for i in range(8):
            if (byte >> (7 - i)) & 1:
                result ^= window
            window = ((window << 1) | key_bits[next_key_bit]) & 0xFFFFFFFF
            next_key_bit += 1
    return result


def addr(text: str) -> bytes:
    family = socket.AF_INET6 if ":" in text else socket.AF_INET
    return socket.inet_pton(family, text)


def ports(sport: int, dport: int) -> bytes:
    return struct.pack("!HH", sport, dport)


def tagged(vlans: tuple[int, ...], ethertype: int) -> Packet:
    """Ethernet header with VLAN tags (TPIDs given outer first) in front of ``ethertype``."""
    types = (*vlans, ethertype)
    pkt = eth(type=types[0])
    for i in range(len(vlans)):
        pkt = pkt / Dot1Q(vlan=10 + i, type=types[i + 1])
    return pkt


def expect(frame: bytes, config: RssConfig, hash_type: HashType, data: bytes) -> None:
    """Assert rss_hash gives ``hash_type`` over ``data`` (hash 0 for NONE)."""
    value = toeplitz_bitwise(config.key, data) if hash_type else 0
    queue = config.table[value & (len(config.table) - 1)]
    assert rss_hash(frame, config) == RssResult(value, hash_type, queue)


def mask(*types: HashType) -> int:
    return sum(1 << t for t in types)


CONFIG = RssConfig()


# ---------------------------------------------------------------------------------------------
# Toeplitz


def test_default_key_is_the_published_one():
    assert DEFAULT_KEY.hex() == (
        "6d5a56da255b0ec24167253d43a38fb0d0ca2bcbae7b30b477cb2da38030f20c6a42b73bbeac01fa"
    )


@pytest.mark.parametrize("vector", IPV4_VECTORS + IPV6_VECTORS, ids=lambda v: v[0])
def test_toeplitz_published_vectors(vector):
    src, sport, dst, dport, two_tuple, four_tuple = vector
    addresses = addr(src) + addr(dst)
    assert toeplitz(DEFAULT_KEY, addresses) == two_tuple
    assert toeplitz(DEFAULT_KEY, addresses + ports(sport, dport)) == four_tuple
    # The oracle is checked against the same vectors, so it can vouch for the fuzz test.
    assert toeplitz_bitwise(DEFAULT_KEY, addresses + ports(sport, dport)) == four_tuple


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_toeplitz_matches_bitwise_oracle(draw):
    data = draw.draw(st.binary(max_size=60), label="data")
    key = draw.draw(st.binary(min_size=len(data) + 4, max_size=len(data) + 12), label="key")
    assert toeplitz(key, data) == toeplitz_bitwise(key, data)
    assert toeplitz(bytearray(key), memoryview(data)) == toeplitz_bitwise(key, data)


def test_toeplitz_is_linear_and_zero_on_empty():
    a, b = bytes(range(12)), bytes(range(100, 112))
    xored = bytes(x ^ y for x, y in zip(a, b, strict=True))
    assert toeplitz(DEFAULT_KEY, xored) == toeplitz(DEFAULT_KEY, a) ^ toeplitz(DEFAULT_KEY, b)
    assert toeplitz(DEFAULT_KEY, b"") == 0
    assert toeplitz(DEFAULT_KEY, bytes(36)) == 0


def test_toeplitz_rejects_short_key():
    with pytest.raises(ValueError, match="at least 41 bytes"):
        toeplitz(DEFAULT_KEY, bytes(37))
    with pytest.raises(ValueError):
        toeplitz(b"abc", b"")


# ---------------------------------------------------------------------------------------------
# Configuration


def test_default_config():
    config = RssConfig()
    assert config.key == DEFAULT_KEY
    assert config.enabled == ALL_TYPES_MASK == mask(*list(HashType)[1:])
    assert config.table == [i % 4 for i in range(128)]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"key": bytes(39)},
        {"key": bytes(41)},
        {"table": []},
        {"table": [0] * 3},
        {"table": [0] * 96},
        {"table": [0] * 1024},
        {"table": [0, -1]},
        {"enabled": 1},
        {"enabled": 1 << 7},
    ],
)
def test_config_validation(kwargs):
    with pytest.raises(ValueError):
        RssConfig(**kwargs)


def test_config_revalidate_after_change():
    config = RssConfig()
    config.table = [0] * 5
    with pytest.raises(ValueError, match="power of two"):
        config.validate()


@pytest.mark.parametrize("size", [1, 2, 64, 512])
def test_indirection_table_sizes(size):
    table = [(i * 37 + 5) % 61 for i in range(size)]
    config = RssConfig(table=table)
    for vector in IPV4_VECTORS:
        src, sport, dst, dport, _, four_tuple = vector
        frame = bytes(eth() / IP(src=src, dst=dst) / TCP(sport=sport, dport=dport))
        assert rss_hash(frame, config).queue == table[four_tuple % size]


# ---------------------------------------------------------------------------------------------
# rss_hash on scapy frames


@pytest.mark.parametrize("vector", IPV4_VECTORS, ids=lambda v: v[0])
def test_rss_ipv4_published_vectors(vector):
    src, sport, dst, dport, two_tuple, four_tuple = vector
    tcp = bytes(eth() / IP(src=src, dst=dst) / TCP(sport=sport, dport=dport) / Raw(b"x" * 30))
    udp = bytes(eth() / IP(src=src, dst=dst) / UDP(sport=sport, dport=dport))
    icmp = bytes(eth() / IP(src=src, dst=dst) / ICMP())
    assert rss_hash(tcp, CONFIG) == RssResult(four_tuple, HashType.TCP_IPV4, four_tuple % 4)
    assert rss_hash(udp, CONFIG) == RssResult(four_tuple, HashType.UDP_IPV4, four_tuple % 4)
    assert rss_hash(icmp, CONFIG) == RssResult(two_tuple, HashType.IPV4, two_tuple % 4)


@pytest.mark.parametrize("vector", IPV6_VECTORS, ids=lambda v: v[0])
def test_rss_ipv6_published_vectors(vector):
    src, sport, dst, dport, two_tuple, four_tuple = vector
    tcp = bytes(eth() / IPv6(src=src, dst=dst) / TCP(sport=sport, dport=dport))
    udp = bytes(eth() / IPv6(src=src, dst=dst) / UDP(sport=sport, dport=dport))
    other = bytes(eth() / IPv6(src=src, dst=dst, nh=59))
    assert rss_hash(tcp, CONFIG) == RssResult(four_tuple, HashType.TCP_IPV6, four_tuple % 4)
    assert rss_hash(udp, CONFIG) == RssResult(four_tuple, HashType.UDP_IPV6, four_tuple % 4)
    assert rss_hash(other, CONFIG) == RssResult(two_tuple, HashType.IPV6, two_tuple % 4)


@pytest.mark.parametrize("vlans", [(0x8100,), (0x88A8,), (0x88A8, 0x8100), (0x8100, 0x8100)])
@pytest.mark.parametrize("version", [4, 6])
def test_rss_vlan_and_qinq(vlans, version):
    src, sport, dst, dport, two_tuple, four_tuple = (IPV4_VECTORS if version == 4
                                                     else IPV6_VECTORS)[1]
    ip = IP(src=src, dst=dst) if version == 4 else IPv6(src=src, dst=dst)
    frame = bytes(tagged(vlans, 0x0800 if version == 4 else 0x86DD) / ip / UDP(
        sport=sport, dport=dport))
    result = rss_hash(frame, CONFIG)
    assert result.hash == four_tuple
    assert result.hash_type == (HashType.UDP_IPV4 if version == 4 else HashType.UDP_IPV6)


def test_rss_three_tags_is_not_ip():
    frame = bytes(tagged((0x88A8, 0x8100, 0x8100), 0x0800) / IP() / TCP())
    assert rss_hash(frame, CONFIG) == RssResult(0, HashType.NONE, 0)


@pytest.mark.parametrize(
    "options",
    [[IPOption_NOP()] * 4, [IPOption_RR(routers=["10.0.0.1"] * 9)]],
    ids=["nops", "record-route-40-bytes"],
)
@pytest.mark.parametrize("vlans", [(), (0x88A8, 0x8100)])
def test_rss_ipv4_options_shift_ports(options, vlans):
    src, sport, dst, dport, _, four_tuple = IPV4_VECTORS[0]
    frame = bytes(tagged(vlans, 0x0800) / IP(src=src, dst=dst, options=options) / TCP(
        sport=sport, dport=dport))
    assert frame[14 + 4 * len(vlans)] & 0xF > 5
    assert rss_hash(frame, CONFIG) == RssResult(four_tuple, HashType.TCP_IPV4, four_tuple % 4)


@pytest.mark.parametrize("ip_kwargs", [{"flags": "MF"}, {"frag": 1}, {"frag": 185, "flags": 1}])
@pytest.mark.parametrize("l4", [TCP, UDP])
def test_rss_ipv4_fragments_use_two_tuple(ip_kwargs, l4):
    src, sport, dst, dport, two_tuple, _ = IPV4_VECTORS[2]
    frame = bytes(eth() / IP(src=src, dst=dst, **ip_kwargs) / l4(sport=sport, dport=dport))
    assert rss_hash(frame, CONFIG) == RssResult(two_tuple, HashType.IPV4, two_tuple % 4)


def test_rss_ipv4_dont_fragment_keeps_ports():
    src, sport, dst, dport, _, four_tuple = IPV4_VECTORS[2]
    frame = bytes(eth() / IP(src=src, dst=dst, flags="DF") / TCP(sport=sport, dport=dport))
    assert rss_hash(frame, CONFIG).hash == four_tuple


@pytest.mark.parametrize("total_length", [20, 23, 24])
def test_rss_ipv4_ports_outside_datagram(total_length):
    src, sport, dst, dport, two_tuple, four_tuple = IPV4_VECTORS[0]
    frame = bytes(eth() / IP(src=src, dst=dst, len=total_length) / TCP(sport=sport, dport=dport))
    result = rss_hash(frame, CONFIG)
    if total_length >= 24:  # both ports inside the datagram
        assert (result.hash, result.hash_type) == (four_tuple, HashType.TCP_IPV4)
    else:
        assert (result.hash, result.hash_type) == (two_tuple, HashType.IPV4)


@pytest.mark.parametrize(
    "ip_kwargs", [{"version": 5}, {"ihl": 4}, {"ihl": 15}], ids=["version", "ihl4", "ihl15"]
)
def test_rss_ipv4_unusable_header(ip_kwargs):
    # IHL 15 claims 60 header bytes the 54-byte frame does not have.
    frame = bytes(eth() / IP(**ip_kwargs) / TCP())
    assert rss_hash(frame, CONFIG) == RssResult(0, HashType.NONE, 0)


def test_rss_non_ip():
    assert rss_hash(bytes(eth() / ARP()), CONFIG) == RssResult(0, HashType.NONE, 0)
    assert rss_hash(b"", CONFIG) == RssResult(0, HashType.NONE, 0)


def test_rss_ipv6_bad_version():
    frame = bytes(eth(type=0x86DD) / IPv6(version=4) / TCP())
    assert rss_hash(frame, CONFIG) == RssResult(0, HashType.NONE, 0)


def ipv6_frame(ext: list[Packet], l4=TCP, vlans=(), plen=None) -> tuple[bytes, bytes]:
    """Return (frame, 4-tuple hash input) for an IPv6 packet with extension headers."""
    src, sport, dst, dport, _, _ = IPV6_VECTORS[0]
    pkt = IPv6(src=src, dst=dst, plen=plen)
    for header in ext:
        pkt = pkt / header
    pkt = pkt / l4(sport=sport, dport=dport) / Raw(b"payload")
    frame = bytes(tagged(vlans, 0x86DD) / pkt)
    return frame, addr(src) + addr(dst) + ports(sport, dport)


EXT_HEADERS = {
    "hop-by-hop": lambda: IPv6ExtHdrHopByHop(),
    "routing": lambda: IPv6ExtHdrRouting(addresses=["2001:db8::1", "2001:db8::2"]),
    "destination": lambda: IPv6ExtHdrDestOpt(),
    "atomic-fragment": lambda: IPv6ExtHdrFragment(offset=0, m=0, id=7),
    "fragment-reserved-bits": lambda: IPv6ExtHdrFragment(res1=0xFF, res2=3, id=7),
}


@pytest.mark.parametrize("kind", sorted(EXT_HEADERS))
@pytest.mark.parametrize("l4", [TCP, UDP])
def test_rss_ipv6_each_extension_header(kind, l4):
    frame, data = ipv6_frame([EXT_HEADERS[kind]()], l4)
    expect(frame, CONFIG, HashType.TCP_IPV6 if l4 is TCP else HashType.UDP_IPV6, data)


@pytest.mark.parametrize("fragment", [{"m": 1}, {"offset": 1}, {"offset": 100, "m": 1}])
def test_rss_ipv6_fragments_use_two_tuple(fragment):
    frame, data = ipv6_frame([IPv6ExtHdrHopByHop(), IPv6ExtHdrFragment(id=1, **fragment)])
    expect(frame, CONFIG, HashType.IPV6, data[:32])


def test_rss_ipv6_extension_header_limit():
    chain = [
        IPv6ExtHdrHopByHop(), IPv6ExtHdrDestOpt(), IPv6ExtHdrRouting(), IPv6ExtHdrFragment(),
        IPv6ExtHdrDestOpt(),
    ]
    assert MAX_EXT_HEADERS == 4
    frame, data = ipv6_frame(chain[:4])
    expect(frame, CONFIG, HashType.TCP_IPV6, data)
    frame, data = ipv6_frame(chain)
    expect(frame, CONFIG, HashType.IPV6, data[:32])


@pytest.mark.parametrize("nh", [51, 50, 135, 59], ids=["ah", "esp", "mobility", "no-next"])
def test_rss_ipv6_unwalked_headers_use_two_tuple(nh):
    frame, data = ipv6_frame([])
    frame = frame[:20] + bytes([nh]) + frame[21:]  # next header of the fixed header
    expect(frame, CONFIG, HashType.IPV6, data[:32])


def destination_options(total_len: int) -> bytes:
    """Raw destination-options header of ``total_len`` bytes (multiple of 8), next header TCP."""
    return bytes([6, total_len // 8 - 1]) + bytes([1, total_len - 4]) + bytes(total_len - 4)


@pytest.mark.parametrize(
    ("vlans", "ext_len", "four_tuple_expected"),
    [
        ((), 56, True),  # ports at 110..114
        ((), 64, True),  # ports at 118..122
        ((), 72, False),  # header ends at 126, ports would end at 130
        ((), 80, False),  # header ends at 134, past the window
        ((0x88A8, 0x8100), 56, True),  # ports at 118..122
        ((0x88A8, 0x8100), 64, False),  # header ends at 126, ports would end at 130
        ((0x88A8, 0x8100), 72, False),  # header ends at 134
    ],
)
def test_rss_ipv6_parse_window_edge(vlans, ext_len, four_tuple_expected):
    """Extension headers and ports must lie within the first PARSE_WINDOW bytes."""
    src, sport, dst, dport, two_tuple, four_tuple = IPV6_VECTORS[0]
    pkt = IPv6(src=src, dst=dst, nh=60) / Raw(destination_options(ext_len)) / Raw(
        ports(sport, dport) + bytes(60))
    frame = bytes(tagged(vlans, 0x86DD) / pkt)
    assert len(frame) > PARSE_WINDOW + 16
    if four_tuple_expected:
        assert rss_hash(frame, CONFIG) == RssResult(four_tuple, HashType.TCP_IPV6, four_tuple % 4)
    else:
        assert rss_hash(frame, CONFIG) == RssResult(two_tuple, HashType.IPV6, two_tuple % 4)


def test_rss_ipv6_second_header_cut_by_window():
    # Hop-by-hop at 54..126, then a destination-options header whose next-header and length
    # bytes (126, 127) are visible but whose body ends at 134: stop walking, 2-tuple.
    src, _, dst, _, two_tuple, _ = IPV6_VECTORS[0]
    hop_by_hop = bytes([60, 8]) + bytes([1, 68]) + bytes(68)
    pkt = IPv6(src=src, dst=dst, nh=0) / Raw(hop_by_hop + destination_options(8) + bytes(40))
    frame = bytes(eth() / pkt)
    assert frame[127] == 0 and frame[126] == 6
    assert rss_hash(frame, CONFIG) == RssResult(two_tuple, HashType.IPV6, two_tuple % 4)


@pytest.mark.parametrize("plen", [0, 3, 4])
def test_rss_ipv6_ports_outside_datagram(plen):
    frame, data = ipv6_frame([], TCP, plen=plen)
    if plen >= 4:  # both ports inside the datagram; plen 0 (jumbogram) has none
        expect(frame, CONFIG, HashType.TCP_IPV6, data)
    else:
        expect(frame, CONFIG, HashType.IPV6, data[:32])


# ---------------------------------------------------------------------------------------------
# Enabled hash types


@pytest.mark.parametrize("version", [4, 6])
def test_rss_disabled_types(version):
    if version == 4:
        src, sport, dst, dport, _, _ = IPV4_VECTORS[0]
        ip = IP(src=src, dst=dst)
        two, tcp_type, udp_type = HashType.IPV4, HashType.TCP_IPV4, HashType.UDP_IPV4
        other_family = mask(HashType.IPV6, HashType.TCP_IPV6, HashType.UDP_IPV6)
    else:
        src, sport, dst, dport, _, _ = IPV6_VECTORS[0]
        ip = IPv6(src=src, dst=dst)
        two, tcp_type, udp_type = HashType.IPV6, HashType.TCP_IPV6, HashType.UDP_IPV6
        other_family = mask(HashType.IPV4, HashType.TCP_IPV4, HashType.UDP_IPV4)
    frame = bytes(eth() / ip / TCP(sport=sport, dport=dport))
    addresses = addr(src) + addr(dst)
    four = addresses + ports(sport, dport)
    table = list(range(128))
    cases = [
        (ALL_TYPES_MASK, tcp_type, four),
        (mask(tcp_type), tcp_type, four),
        (ALL_TYPES_MASK & ~mask(tcp_type), two, addresses),
        (mask(two, udp_type), two, addresses),
        (mask(udp_type), HashType.NONE, b""),
        (other_family, HashType.NONE, b""),
        (0, HashType.NONE, b""),
    ]
    for enabled, hash_type, data in cases:
        expect(frame, RssConfig(enabled=enabled, table=table), hash_type, data)


def test_rss_none_goes_to_table_entry_0():
    config = RssConfig(enabled=0, table=[9, 8, 7, 6])
    frame = bytes(eth() / IP() / TCP())
    assert rss_hash(frame, config) == RssResult(0, HashType.NONE, 9)


def test_rss_custom_key():
    key = bytes(range(1, 41))
    config = RssConfig(key=key)
    src, sport, dst, dport, _, _ = IPV4_VECTORS[1]
    frame = bytes(eth() / IP(src=src, dst=dst) / UDP(sport=sport, dport=dport))
    expect(frame, config, HashType.UDP_IPV4, addr(src) + addr(dst) + ports(sport, dport))


# ---------------------------------------------------------------------------------------------
# Truncation and robustness


TRUNCATION_CASES = {
    "ipv4-options": (4, [], 24),
    "ipv6": (6, [], 40),
    "ipv6-ext": (6, ["hop-by-hop", "atomic-fragment", "destination"], 40 + 8 + 8 + 8),
}


@pytest.mark.parametrize("case", sorted(TRUNCATION_CASES))
@pytest.mark.parametrize("vlans", [(), (0x88A8, 0x8100)])
def test_rss_truncated_at_every_length(case, vlans):
    version, ext_kinds, l4_from_l3 = TRUNCATION_CASES[case]
    src, sport, dst, dport, two_tuple, four_tuple = (IPV4_VECTORS if version == 4
                                                     else IPV6_VECTORS)[0]
    if version == 4:
        pkt = IP(src=src, dst=dst, options=[IPOption_NOP()] * 4)
        two, four = HashType.IPV4, HashType.TCP_IPV4
    else:
        pkt = IPv6(src=src, dst=dst)
        for kind in ext_kinds:
            pkt = pkt / EXT_HEADERS[kind]()
        two, four = HashType.IPV6, HashType.TCP_IPV6
    pkt = pkt / TCP(sport=sport, dport=dport) / Raw(bytes(100))
    frame = bytes(tagged(vlans, 0x0800 if version == 4 else 0x86DD) / pkt)
    l3 = 14 + 4 * len(vlans)
    header_end = l3 + (24 if version == 4 else 40)
    ports_end = l3 + l4_from_l3 + 4
    for n in range(len(frame) + 1):
        result = rss_hash(frame[:n], CONFIG)
        if n < header_end:
            assert result == RssResult(0, HashType.NONE, 0)
        elif n < ports_end:
            assert result == RssResult(two_tuple, two, two_tuple % 4)
        else:
            assert result == RssResult(four_tuple, four, four_tuple % 4)


@FUZZ
@given(st.binary(max_size=12), st.sampled_from([b"\x08\x00", b"\x86\xdd", b"\x81\x00",
                                               b"\x88\xa8"]), st.binary(max_size=200))
def test_rss_random_bytes_never_raise(prefix, ethertype, rest):
    frame = prefix + ethertype + rest
    result = rss_hash(frame, CONFIG)
    assert 0 <= result.hash <= 0xFFFFFFFF
    assert result.queue == CONFIG.table[result.hash & 127]
    if result.hash_type == HashType.NONE:
        assert result.hash == 0
    assert rss_hash(frame[:PARSE_WINDOW], CONFIG) == result


@st.composite
def rss_packets(draw) -> tuple[bytes, HashType, bytes, int]:
    """Random frame with the hash type and input an independent reading of scapy's fields gives.

    Returns (frame, expected type, expected hash input, enabled mask).
    """
    version = draw(st.sampled_from([4, 6]), label="version")
    proto = draw(st.sampled_from(["tcp", "udp", "other"]), label="proto")
    vlans = tuple(draw(st.lists(st.sampled_from(TPIDS), max_size=2), label="vlans"))
    enabled = draw(st.one_of(st.just(ALL_TYPES_MASK), st.integers(0, 63).map(lambda m: m << 1)),
                   label="enabled")
    src = str(draw(st.ip_addresses(v=version), label="src"))
    dst = str(draw(st.ip_addresses(v=version), label="dst"))
    sport = draw(st.integers(0, 0xFFFF), label="sport")
    dport = draw(st.integers(0, 0xFFFF), label="dport")
    fragment = draw(st.booleans(), label="fragment")
    if version == 4:
        ip = IP(src=src, dst=dst)
        if draw(st.booleans(), label="options"):
            ip.options = [IPOption_NOP()] * draw(st.integers(1, 40), label="nops")
        if fragment:
            ip.flags, ip.frag = draw(st.sampled_from([(1, 0), (0, 9), (1, 1000)]))
        ext: list[Packet] = []
    else:
        ip = IPv6(src=src, dst=dst)
        kinds = draw(st.lists(st.sampled_from(sorted(EXT_HEADERS)), max_size=6), label="ext")
        ext = [EXT_HEADERS[k]() for k in kinds]
        if fragment:
            ext.append(IPv6ExtHdrFragment(m=1, id=5))
    pkt = ip
    for header in ext:
        pkt = pkt / header
    if proto == "tcp":
        pkt = pkt / TCP(sport=sport, dport=dport)
    elif proto == "udp":
        pkt = pkt / UDP(sport=sport, dport=dport)
    else:
        # scapy's IPv6 headers default to next header 59 (none) in front of raw bytes.
        pkt = pkt / ICMP() if version == 4 else pkt / Raw(b"\x00" * 8)
    pkt = pkt / Raw(draw(st.binary(max_size=200), label="payload"))
    frame = bytes(tagged(vlans, 0x0800 if version == 4 else 0x86DD) / pkt)

    # Expected result, from scapy's view of the packet.
    addresses = addr(src) + addr(dst)
    l3 = 14 + 4 * len(vlans)
    if version == 4:
        l4_offset = l3 + len(bytes(pkt[IP])) - len(bytes(pkt[IP].payload))
        two = HashType.IPV4
        candidate = {"tcp": HashType.TCP_IPV4, "udp": HashType.UDP_IPV4}.get(proto)
        possible = not fragment
    else:
        l4_offset = l3 + 40 + sum(len(raw_header(e)) for e in ext)
        two = HashType.IPV6
        candidate = {"tcp": HashType.TCP_IPV6, "udp": HashType.UDP_IPV6}.get(proto)
        possible = not fragment and len(ext) <= MAX_EXT_HEADERS
    possible = possible and candidate is not None and l4_offset + 4 <= PARSE_WINDOW
    if possible and enabled >> candidate & 1:
        return frame, candidate, addresses + ports(sport, dport), enabled
    if enabled >> two & 1:
        return frame, two, addresses, enabled
    return frame, HashType.NONE, b"", enabled


def raw_header(header: Packet) -> bytes:
    """Bytes of one extension header alone (scapy pads options to whole 8-octet units)."""
    alone = header.copy()
    alone.remove_payload()
    return bytes(alone)


@FUZZ
@given(rss_packets())
def test_fuzz_rss_against_oracle(case):
    frame, hash_type, data, enabled = case
    table = [(i * 13) % 16 for i in range(64)]
    expect(frame, RssConfig(enabled=enabled, table=table), hash_type, data)
