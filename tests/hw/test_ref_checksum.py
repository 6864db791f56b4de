"""Tests of the checksum offload golden reference against scapy and independent oracles.

The oracles here never call the code under test: checksums come from scapy (its own
``checksum()``, and the fields it fills in when building a packet), and the receive verdicts
of arbitrary byte strings from :func:`oracle_rx`, a second, independently written reading of the
contract in ``hw/ref/checksum.py`` built on ``struct`` and scapy's ``checksum()``.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_NOP, IPOption_RR
from scapy.layers.inet6 import IPv6, IPv6ExtHdrHopByHop
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.packet import Packet, Raw
from scapy.utils import checksum as scapy_checksum

from nicsim.hw.ref.checksum import (
    DROP_BAD_COMMAND,
    DROP_EMPTY,
    DROP_OVERSIZE,
    MAX_FRAME_LEN,
    RxChecksum,
    Status,
    TxCommand,
    TxMode,
    TxResult,
    csum_fold,
    ones_sum,
    rx_checksum,
    tx_checksum,
)

__all__: list[str] = []

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
OK, BAD, NONE = Status.OK, Status.BAD, Status.NONE
TPIDS = (0x8100, 0x88A8)


def eth(**fields) -> Packet:
    """Ethernet header with fixed addresses (scapy would otherwise resolve the MAC: slow)."""
    return Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02", **fields)


# ---------------------------------------------------------------------------------------------
# Independent oracles


def naive_ones_sum(data: bytes, initial: int = 0) -> int:
    """RFC 1071 §4.1 word loop with end-around carry after every addition."""
    total = initial
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    padded = data + b"\x00" if len(data) % 2 else data
    for i in range(0, len(padded), 2):
        total += (padded[i] << 8) | padded[i + 1]
        if total > 0xFFFF:
            total -= 0xFFFF
    return total


def scapy_sum(data: bytes) -> int:
    """Folded, uncomplemented ones'-complement sum, via scapy's (complemented) checksum."""
    return ~scapy_checksum(data) & 0xFFFF


def checksum_verifies(data: bytes) -> bool:
    """True when the ones'-complement sum of ``data`` is 0xffff (scapy's checksum is 0)."""
    return scapy_checksum(data) == 0


def oracle_l3(frame: bytes) -> tuple[int | None, int]:
    """Return (ethertype or None, layer-3 offset) by the contract's L2 rule."""
    offset, tags = 12, 0
    while len(frame) >= offset + 2:
        (ethertype,) = struct.unpack_from("!H", frame, offset)
        if tags < 2 and ethertype in TPIDS:
            offset, tags = offset + 4, tags + 1
            continue
        return ethertype, offset + 2
    return None, min(offset + 2, len(frame))


def oracle_rx(frame: bytes) -> RxChecksum:
    """Second, independent implementation of the receive contract."""
    ethertype, l3 = oracle_l3(frame)
    complete = scapy_sum(frame[l3:]) if len(frame) > l3 else 0
    n = len(frame)
    if ethertype == 0x0800:
        if n < l3 + 20:
            return RxChecksum(BAD, NONE, complete)
        version_ihl, _tos, total, _id, frag, _ttl, proto, _ck = struct.unpack_from(
            "!BBHHHBBH", frame, l3
        )
        ihl = (version_ihl & 0xF) * 4
        if version_ihl >> 4 != 4 or ihl < 20 or n < l3 + ihl or total < ihl:
            return RxChecksum(BAD, NONE, complete)
        if not checksum_verifies(frame[l3:l3 + ihl]):
            return RxChecksum(BAD, NONE, complete)
        if frag & 0x2000 or frag & 0x1FFF or proto not in (6, 17):
            return RxChecksum(OK, NONE, complete)
        start, end = l3 + ihl, l3 + total
        pseudo = frame[l3 + 12:l3 + 20] + struct.pack("!xBH", proto, end - start)
        ip, zero_udp = OK, NONE
    elif ethertype == 0x86DD:
        if n < l3 + 40 or frame[l3] >> 4 != 6:
            return RxChecksum(NONE, NONE, complete)
        (payload_len,) = struct.unpack_from("!H", frame, l3 + 4)
        proto = frame[l3 + 6]
        if proto not in (6, 17) or payload_len == 0:
            return RxChecksum(NONE, NONE, complete)
        start, end = l3 + 40, l3 + 40 + payload_len
        pseudo = frame[l3 + 8:l3 + 40] + struct.pack("!IxxxB", end - start, proto)
        ip, zero_udp = NONE, BAD
    else:
        return RxChecksum(NONE, NONE, complete)
    if end > n or end - start < (20 if proto == 6 else 8):
        return RxChecksum(ip, NONE, complete)
    if proto == 17:
        udp_len, udp_check = struct.unpack_from("!HH", frame, start + 4)
        if udp_len != end - start:
            return RxChecksum(ip, NONE, complete)
        if udp_check == 0:
            return RxChecksum(ip, zero_udp, complete)
    l4 = OK if checksum_verifies(pseudo + frame[start:end]) else BAD
    return RxChecksum(ip, l4, complete)


# ---------------------------------------------------------------------------------------------
# Packet builders


def build(
    version: int = 4,
    proto: str = "tcp",
    vlans: tuple[int, ...] = (),
    payload: bytes = b"hello, checksum",
    ip_kwargs: dict | None = None,
    l4_kwargs: dict | None = None,
    src: str | None = None,
    dst: str | None = None,
    sport: int = 1234,
    dport: int = 80,
) -> Packet:
    """Build an Ethernet frame with 0-2 VLAN tags (TPIDs given outer first) and IPv4/IPv6."""
    ethertype = 0x0800 if version == 4 else 0x86DD
    types = (*vlans, ethertype)
    pkt = eth(type=types[0])
    for i in range(len(vlans)):
        pkt = pkt / Dot1Q(vlan=100 + i, prio=i, type=types[i + 1])
    ip_kwargs = ip_kwargs or {}
    if version == 4:
        pkt = pkt / IP(src=src or "192.0.2.1", dst=dst or "198.51.100.7", **ip_kwargs)
    else:
        pkt = pkt / IPv6(src=src or "2001:db8::1", dst=dst or "2001:db8:1::ff", **ip_kwargs)
    l4_kwargs = l4_kwargs or {}
    if proto == "tcp":
        pkt = pkt / TCP(sport=sport, dport=dport, flags="PA", seq=1000, **l4_kwargs)
    elif proto == "udp":
        pkt = pkt / UDP(sport=sport, dport=dport, **l4_kwargs)
    return pkt / Raw(payload) if payload else pkt


def l3_of(vlans: tuple[int, ...]) -> int:
    return 14 + 4 * len(vlans)


def l4_of(frame: bytes, version: int, vlans: tuple[int, ...]) -> int:
    l3 = l3_of(vlans)
    return l3 + ((frame[l3] & 0xF) * 4 if version == 4 else 40)


def l4_field(proto: str) -> int:
    return 16 if proto == "tcp" else 6


def pseudo_seed(frame: bytes, version: int, vlans: tuple[int, ...], proto: str) -> int:
    """What the Linux stack leaves in the checksum field for CHECKSUM_PARTIAL.

    ``__tcp_v4_send_check()`` / ``udp4_hwcsum()`` write ``~csum_tcpudp_magic(..., 0)``: the
    folded, uncomplemented pseudo-header sum (IPv6 alike, ``__tcp_v6_send_check()``).
    """
    l3, l4 = l3_of(vlans), l4_of(frame, version, vlans)
    number = 6 if proto == "tcp" else 17
    if version == 4:
        (total,) = struct.unpack_from("!H", frame, l3 + 2)
        pseudo = frame[l3 + 12:l3 + 20] + struct.pack("!xBH", number, l3 + total - l4)
    else:
        (payload_len,) = struct.unpack_from("!H", frame, l3 + 4)
        pseudo = frame[l3 + 8:l3 + 40] + struct.pack("!IxxxB", payload_len, number)
    return scapy_sum(pseudo)


def put16(frame: bytes, offset: int, value: int) -> bytes:
    return frame[:offset] + struct.pack("!H", value) + frame[offset + 2:]


def get16(frame: bytes, offset: int) -> int:
    return struct.unpack_from("!H", frame, offset)[0]


VARIANTS = [
    (version, proto, vlans)
    for version in (4, 6)
    for proto in ("tcp", "udp")
    for vlans in ((), (0x8100,), (0x88A8,), (0x88A8, 0x8100), (0x8100, 0x8100))
]


def variant_id(v: tuple) -> str:
    version, proto, vlans = v
    return f"ipv{version}-{proto}-" + ("+".join(f"{t:#06x}" for t in vlans) or "untagged")


# ---------------------------------------------------------------------------------------------
# ones_sum / csum_fold


def test_ones_sum_rfc1071_example():
    # RFC 1071 §3: the words 0001 f203 f4f5 f6f7 sum to 2ddf0, folded ddf2.
    assert ones_sum(bytes.fromhex("0001f203f4f5f6f7")) == 0xDDF2


@pytest.mark.parametrize(
    ("data", "initial", "expected"),
    [
        (b"", 0, 0),
        (b"\x00" * 7, 0, 0),
        (b"\xff\xff", 0, 0xFFFF),
        (b"\xff\xff\x00\x01", 0, 0x0001),  # end-around carry
        (b"\xab", 0, 0xAB00),  # odd byte padded with a zero low byte
        (b"\x12\x34\x56", 0, 0x6834),
        (b"", 0x1_0000, 0x0001),
        (b"\x00\x01", 0xFFFF, 0x0001),
    ],
)
def test_ones_sum_cases(data, initial, expected):
    assert ones_sum(data, initial) == expected
    assert ones_sum(memoryview(data), initial) == expected
    assert ones_sum(bytearray(data), initial) == expected


@FUZZ
@given(st.binary(max_size=3000), st.integers(0, 0xFFFF_FFFF))
def test_ones_sum_matches_word_loop(data, initial):
    assert ones_sum(data, initial) == naive_ones_sum(data, initial)
    if initial == 0:
        assert ones_sum(data) == scapy_sum(data)


@FUZZ
@given(st.integers(0, 1 << 200))
def test_csum_fold_matches_iterated_fold(x):
    folded = x
    while folded >> 16:
        folded = (folded & 0xFFFF) + (folded >> 16)
    assert csum_fold(x) == folded


def test_csum_fold_rejects_negative():
    with pytest.raises(ValueError, match="non-negative"):
        csum_fold(-1)


# ---------------------------------------------------------------------------------------------
# Receive: frames built by scapy


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
@pytest.mark.parametrize("payload_len", [0, 1, 2, 17, 1400])
def test_rx_scapy_frames_verify(variant, payload_len):
    version, proto, vlans = variant
    payload = bytes((i * 7 + 3) & 0xFF for i in range(payload_len))
    frame = bytes(build(version, proto, vlans, payload))
    expected_ip = OK if version == 4 else NONE
    assert rx_checksum(frame) == RxChecksum(expected_ip, OK, scapy_sum(frame[l3_of(vlans):]))
    assert rx_checksum(frame) == oracle_rx(frame)


@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_rx_ipv4_options(proto):
    options = [IPOption_NOP(), IPOption_RR(routers=["10.0.0.1", "10.0.0.2"])]
    frame = bytes(build(4, proto, (0x8100,), ip_kwargs={"options": options}))
    assert frame[18] & 0xF > 5
    assert rx_checksum(frame) == RxChecksum(OK, OK, scapy_sum(frame[18:]))


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_rx_corrupted_bytes(variant):
    version, proto, vlans = variant
    frame = bytes(build(version, proto, vlans))
    l3, l4 = l3_of(vlans), l4_of(frame, version, vlans)
    # Flip one payload bit: the L4 checksum fails, nothing else changes.
    bad_payload = frame[:-1] + bytes([frame[-1] ^ 0x10])
    result = rx_checksum(bad_payload)
    assert result.l4 == BAD
    assert result.ip == (OK if version == 4 else NONE)
    assert result.csum_complete == scapy_sum(bad_payload[l3:])
    # A wrong checksum field.
    wrong = put16(frame, l4 + l4_field(proto), get16(frame, l4 + l4_field(proto)) ^ 0x0101)
    assert rx_checksum(wrong).l4 == BAD
    if version == 4:
        # Corrupt the TTL: header checksum fails and the L4 check is not attempted.
        bad_header = frame[:l3 + 8] + bytes([frame[l3 + 8] ^ 0xFF]) + frame[l3 + 9:]
        assert rx_checksum(bad_header) == RxChecksum(BAD, NONE, scapy_sum(bad_header[l3:]))
        wrong_ip = bytes(build(version, proto, vlans, ip_kwargs={"chksum": 0x1234}))
        assert rx_checksum(wrong_ip).ip == BAD


def test_rx_both_encodings_of_zero_verify():
    # RFC 1624 §3: 0x0000 and 0xffff are the same ones'-complement value (+0 and -0), so a
    # TCP checksum that computes to 0 verifies whichever encoding the sender wrote.
    field = 14 + 20 + 16
    tcp_zero = make_zero_checksum_frame(4, "tcp")
    assert get16(tcp_zero, field) == 0
    assert rx_checksum(tcp_zero).l4 == OK
    assert rx_checksum(put16(tcp_zero, field, 0xFFFF)).l4 == OK


def make_zero_checksum_frame(version: int, proto: str) -> bytes:
    """A scapy-built frame whose computed TCP/UDP checksum is 0 (sent as 0 / 0xffff)."""
    frame = bytes(build(version, proto, payload=b"\x00\x00" + b"tuning"))
    l4 = l4_of(frame, version, ())
    word = l4 + (20 if proto == "tcp" else 8)
    field = l4 + l4_field(proto)
    # The checksum is ~sum; adding 0xffff - sum to the payload makes the sum 0xffff.
    current_sum = ~get16(frame, field) & 0xFFFF
    fixed = put16(frame, word, 0xFFFF - current_sum)
    pkt = Ether(fixed)
    del pkt[TCP if proto == "tcp" else UDP].chksum  # let scapy compute it again
    return bytes(pkt)


@pytest.mark.parametrize("version", [4, 6])
def test_rx_udp_computed_zero_is_sent_as_ffff(version):
    frame = make_zero_checksum_frame(version, "udp")
    l4 = l4_of(frame, version, ())
    assert get16(frame, l4 + 6) == 0xFFFF  # scapy, RFC 768
    assert rx_checksum(frame).l4 == OK


@pytest.mark.parametrize("ip_kwargs", [{"flags": "MF"}, {"frag": 10}, {"flags": "MF", "frag": 3}])
@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_rx_ipv4_fragments_skip_l4(ip_kwargs, proto):
    frame = bytes(build(4, proto, ip_kwargs=ip_kwargs))
    assert rx_checksum(frame) == RxChecksum(OK, NONE, scapy_sum(frame[14:]))


def test_rx_ipv4_dont_fragment_is_not_a_fragment():
    frame = bytes(build(4, "tcp", ip_kwargs={"flags": "DF"}))
    assert rx_checksum(frame).l4 == OK


@pytest.mark.parametrize(
    "layers",
    [
        lambda: IP(src="192.0.2.1", dst="192.0.2.2") / ICMP() / Raw(b"ping"),
        lambda: IP(src="192.0.2.1", dst="192.0.2.2", proto=47) / Raw(b"gre-ish payload"),
        lambda: IPv6(src="2001:db8::1", dst="2001:db8::2") / IPv6ExtHdrHopByHop() / UDP(),
        lambda: IPv6(src="2001:db8::1", dst="2001:db8::2", nh=59) / Raw(b"no next header"),
    ],
    ids=["icmp", "proto47", "ipv6-hop-by-hop-udp", "ipv6-no-next"],
)
def test_rx_unchecked_protocols(layers):
    frame = bytes(eth() / layers())
    expected_ip = OK if frame[12:14] == b"\x08\x00" else NONE
    assert rx_checksum(frame) == RxChecksum(expected_ip, NONE, scapy_sum(frame[14:]))


def test_rx_non_ip():
    frame = bytes(eth() / ARP(pdst="192.0.2.9"))
    assert rx_checksum(frame) == RxChecksum(NONE, NONE, scapy_sum(frame[14:]))
    # After two tags a third TPID is just an unknown ethertype.
    triple = bytes(eth(type=0x88A8) / Dot1Q(type=0x8100) / Dot1Q(type=0x8100) / IP())
    assert rx_checksum(triple) == RxChecksum(NONE, NONE, scapy_sum(triple[22:]))


@pytest.mark.parametrize("version", [4, 6])
def test_rx_udp_checksum_zero(version):
    frame = bytes(build(version, "udp", l4_kwargs={"chksum": 0}))
    # RFC 768: 0 means "not computed" over IPv4; RFC 8200 §8.1: never valid over IPv6.
    assert rx_checksum(frame).l4 == (NONE if version == 4 else BAD)


@pytest.mark.parametrize("version", [4, 6])
@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_jumbo_frames(version, proto):
    headers_len = len(build(version, proto, (0x8100,), payload=b""))
    payload = bytes((i * 31 + 7) & 0xFF for i in range(MAX_FRAME_LEN - headers_len))
    frame = bytes(build(version, proto, (0x8100,), payload=payload))
    assert len(frame) == MAX_FRAME_LEN
    assert rx_checksum(frame) == RxChecksum(
        OK if version == 4 else NONE, OK, scapy_sum(frame[18:]))
    l4 = l4_of(frame, version, (0x8100,))
    damaged = put16(frame, l4 + l4_field(proto), 0)
    assert tx_checksum(damaged, TxCommand(TxMode.AUTO)).frame == frame


@pytest.mark.parametrize("version", [4, 6])
@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_rx_ethernet_padding_ignored_by_l4_included_in_complete(version, proto):
    frame = bytes(build(version, proto, payload=b"x"))
    padded = frame + b"\xa5" * max(0, 60 - len(frame)) + b"\x5a\x01"
    result = rx_checksum(padded)
    assert result == RxChecksum(OK if version == 4 else NONE, OK, scapy_sum(padded[14:]))
    assert result.csum_complete != rx_checksum(frame).csum_complete


def test_rx_ipv4_ihl_below_5():
    frame = bytes(build(4, "tcp", ip_kwargs={"ihl": 4}))
    assert rx_checksum(frame) == RxChecksum(BAD, NONE, scapy_sum(frame[14:]))


def test_rx_ipv4_bad_version():
    frame = bytes(build(4, "tcp", ip_kwargs={"version": 6}))
    assert rx_checksum(frame).ip == BAD


def test_rx_ipv4_total_length_beyond_frame():
    frame = bytes(build(4, "tcp", ip_kwargs={"len": 200}))
    assert len(frame) < 14 + 200
    assert rx_checksum(frame) == RxChecksum(OK, NONE, scapy_sum(frame[14:]))


def test_rx_ipv4_total_length_below_header():
    frame = bytes(build(4, "tcp", ip_kwargs={"len": 19}))
    assert rx_checksum(frame).ip == BAD


@pytest.mark.parametrize(("proto", "l4_len"), [("tcp", 19), ("udp", 7)])
def test_rx_l4_shorter_than_header(proto, l4_len):
    frame = bytes(build(4, proto, ip_kwargs={"len": 20 + l4_len}))
    assert rx_checksum(frame) == RxChecksum(OK, NONE, scapy_sum(frame[14:]))


@pytest.mark.parametrize("version", [4, 6])
@pytest.mark.parametrize("delta", [-1, 1])
def test_rx_udp_length_mismatch(version, delta):
    frame = bytes(build(version, "udp", payload=b"abcdefgh"))
    l4 = l4_of(frame, version, ())
    wrong = bytes(build(version, "udp", payload=b"abcdefgh",
                        l4_kwargs={"len": get16(frame, l4 + 4) + delta}))
    assert rx_checksum(wrong).l4 == NONE


def test_rx_ipv6_jumbo_payload_length_zero():
    frame = bytes(build(6, "tcp", ip_kwargs={"plen": 0}))
    assert rx_checksum(frame) == RxChecksum(NONE, NONE, scapy_sum(frame[14:]))


def test_rx_ipv6_bad_version():
    frame = bytes(build(6, "tcp", ip_kwargs={"version": 4}))
    assert rx_checksum(frame) == RxChecksum(NONE, NONE, scapy_sum(frame[14:]))


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_rx_truncated_at_every_length(variant):
    version, proto, vlans = variant
    frame = bytes(build(version, proto, vlans, payload=bytes(range(37))))
    l3, l4 = l3_of(vlans), l4_of(frame, version, vlans)
    for n in range(len(frame) + 1):
        cut = frame[:n]
        result = rx_checksum(cut)
        assert result == oracle_rx(cut)
        assert result.csum_complete == (scapy_sum(cut[l3:]) if n > l3 else 0)
        if version == 6 or n < l3:
            assert result.ip == NONE
        else:
            assert result.ip == (OK if n >= l4 else BAD)
        assert result.l4 == (OK if n == len(frame) else NONE)


def test_rx_short_frames_never_raise():
    for n in range(30):
        for fill in (0x00, 0x08, 0x81, 0x88, 0xFF):
            result = rx_checksum(bytes([fill]) * n)
            assert result.l4 != OK


# ---------------------------------------------------------------------------------------------
# Transmit


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
@pytest.mark.parametrize("garbage", [0x0000, 0xFFFF, 0xBEEF])
def test_tx_auto_reproduces_scapy(variant, garbage):
    version, proto, vlans = variant
    frame = bytes(build(version, proto, vlans, payload=b"auto mode payload!"))
    l3, l4 = l3_of(vlans), l4_of(frame, version, vlans)
    damaged = put16(frame, l4 + l4_field(proto), garbage)
    if version == 4:
        damaged = put16(damaged, l3 + 10, garbage)
    result = tx_checksum(damaged, TxCommand(TxMode.AUTO))
    assert result == TxResult(frame, None, version == 4, True)


@pytest.mark.parametrize("version", [4, 6])
@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_tx_auto_computed_zero(version, proto):
    frame = make_zero_checksum_frame(version, proto)
    field = l4_of(frame, version, ()) + l4_field(proto)
    damaged = put16(frame, field, 0x5555)
    result = tx_checksum(damaged, TxCommand(TxMode.AUTO))
    # TCP keeps 0; UDP sends 0 as 0xffff (RFC 768), as scapy does.
    assert get16(result.frame, field) == (0 if proto == "tcp" else 0xFFFF)
    assert result.frame == frame
    # PARTIAL follows skb_checksum_help(): CSUM_MANGLED_0 for any protocol.
    l4 = l4_of(frame, version, ())
    seeded = put16(frame, field, pseudo_seed(frame, version, (), proto))
    partial = tx_checksum(seeded, TxCommand(TxMode.PARTIAL, l4, l4_field(proto)))
    assert get16(partial.frame, field) == 0xFFFF
    assert rx_checksum(partial.frame).l4 == OK


def test_tx_auto_ipv4_options():
    options = [IPOption_RR(routers=["10.1.1.1"])]
    frame = bytes(build(4, "udp", (0x88A8, 0x8100), ip_kwargs={"options": options}))
    assert frame[22] & 0xF == 7
    damaged = put16(put16(frame, 22 + 10, 0), l4_of(frame, 4, (0x88A8, 0x8100)) + 6, 0)
    assert tx_checksum(damaged, TxCommand(TxMode.AUTO)) == TxResult(frame, None, True, True)


@pytest.mark.parametrize(
    ("frame_fn", "ip_inserted"),
    [
        (lambda: build(4, "tcp", ip_kwargs={"flags": "MF"}), True),
        (lambda: build(4, "udp", ip_kwargs={"frag": 8}), True),
        (lambda: eth() / IP(dst="192.0.2.5") / ICMP(), True),
        (lambda: build(4, "tcp", ip_kwargs={"len": 300}), True),  # truncated datagram
        (lambda: build(4, "udp", l4_kwargs={"len": 9}), True),  # UDP length mismatch
        (lambda: eth() / IPv6() / IPv6ExtHdrHopByHop() / TCP(), False),
        (lambda: build(6, "udp", ip_kwargs={"plen": 0}), False),
        (lambda: eth() / ARP(), False),
        (lambda: build(4, "tcp", ip_kwargs={"ihl": 4}), False),
    ],
    ids=[
        "v4-more-fragments", "v4-offset", "icmp", "v4-truncated", "udp-len", "v6-ext",
        "v6-jumbo", "arp", "ihl4",
    ],
)
def test_tx_auto_without_l4(frame_fn, ip_inserted):
    frame = bytes(frame_fn())
    l4_field_garbage = frame[:-2] + b"\x12\x34"
    result = tx_checksum(l4_field_garbage, TxCommand(TxMode.AUTO))
    assert (result.ip_inserted, result.l4_inserted, result.drop_reason) == (
        ip_inserted, False, None)
    if ip_inserted:
        # Only the header checksum may differ: restore it and the frame is unchanged.
        assert put16(result.frame, 24, get16(l4_field_garbage, 24)) == l4_field_garbage
        assert rx_checksum(result.frame).ip == OK
    else:
        assert result.frame == l4_field_garbage


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_tx_partial_as_linux_sets_it(variant):
    version, proto, vlans = variant
    frame = bytes(build(version, proto, vlans, payload=b"partial, odd length"))
    l4 = l4_of(frame, version, vlans)
    field = l4 + l4_field(proto)
    seeded = put16(frame, field, pseudo_seed(frame, version, vlans, proto))
    result = tx_checksum(seeded, TxCommand(TxMode.PARTIAL, l4, l4_field(proto)))
    assert (result.drop_reason, result.ip_inserted, result.l4_inserted) == (None, False, True)
    if get16(frame, field) == 0:  # TCP computed 0: Linux sends CSUM_MANGLED_0 instead
        assert result.frame == put16(frame, field, 0xFFFF)
    else:
        assert result.frame == frame


@FUZZ
@given(st.binary(min_size=2, max_size=300), st.data())
def test_tx_partial_any_start(data, draw):
    start = draw.draw(st.integers(0, len(data) - 2), label="csum_start")
    offset = draw.draw(st.integers(0, len(data) - 2 - start), label="csum_offset")
    result = tx_checksum(data, TxCommand(TxMode.PARTIAL, start, offset))
    expected = ~naive_ones_sum(data[start:]) & 0xFFFF or 0xFFFF
    assert result == TxResult(put16(data, start + offset, expected), None, False, True)


def test_tx_partial_odd_start():
    data = bytes.fromhex("aa bb 01 02 03 00 00 04 05")
    result = tx_checksum(data, TxCommand(TxMode.PARTIAL, csum_start=1, csum_offset=4))
    # Words paired from byte 1: bb01 0203 0000 0405 -> sum c109 -> complement 3ef6.
    assert result.frame == bytes.fromhex("aa bb 01 02 03 3e f6 04 05")
    # Checked from the far side: the sum from csum_start now verifies.
    assert naive_ones_sum(result.frame[1:]) == 0xFFFF


@pytest.mark.parametrize(
    ("length", "start", "offset", "dropped"),
    [(10, 8, 0, False), (10, 8, 1, True), (10, 0, 8, False), (10, 10, 0, True), (10, 3, 7, True),
     (1, 0, 0, True)],
)
def test_tx_partial_bad_command(length, start, offset, dropped):
    result = tx_checksum(bytes(range(length)), TxCommand(TxMode.PARTIAL, start, offset))
    if dropped:
        assert result == TxResult(None, DROP_BAD_COMMAND, False, False)
    else:
        assert result.frame is not None and result.l4_inserted


def test_tx_command_validation():
    with pytest.raises(ValueError):
        TxCommand(TxMode.PARTIAL, csum_start=-1)
    with pytest.raises(ValueError):
        TxCommand(TxMode.PARTIAL, csum_offset=-2)
    with pytest.raises(ValueError):
        TxCommand(3)
    assert TxCommand(1).mode is TxMode.PARTIAL


@pytest.mark.parametrize("mode", list(TxMode))
def test_tx_size_limits(mode):
    cmd = TxCommand(mode)
    assert tx_checksum(b"", cmd) == TxResult(None, DROP_EMPTY, False, False)
    big = bytes(MAX_FRAME_LEN + 1)
    assert tx_checksum(big, cmd) == TxResult(None, DROP_OVERSIZE, False, False)
    assert tx_checksum(big[:-1], cmd).frame is not None
    assert tx_checksum(bytes(65), cmd, max_frame=64).drop_reason == DROP_OVERSIZE


def test_tx_off_leaves_frame_alone():
    frame = bytes(build(4, "tcp", ip_kwargs={"chksum": 1}, l4_kwargs={"chksum": 2}))
    assert tx_checksum(frame, TxCommand(TxMode.OFF)) == TxResult(frame, None, False, False)
    assert tx_checksum(bytearray(frame), TxCommand(TxMode.OFF)).frame == frame


# ---------------------------------------------------------------------------------------------
# Property-based fuzzing


@st.composite
def scapy_frames(draw) -> tuple[Packet, int, str, tuple[int, ...]]:
    version = draw(st.sampled_from([4, 6]), label="version")
    proto = draw(st.sampled_from(["tcp", "udp"]), label="proto")
    vlans = tuple(draw(st.lists(st.sampled_from(TPIDS), max_size=2), label="vlans"))
    src = str(draw(st.ip_addresses(v=version), label="src"))
    dst = str(draw(st.ip_addresses(v=version), label="dst"))
    ip_kwargs = {}
    if version == 4 and draw(st.booleans(), label="options"):
        ip_kwargs["options"] = [IPOption_NOP()] * draw(st.integers(1, 40), label="nops")
    pkt = build(
        version, proto, vlans,
        payload=draw(st.binary(max_size=1500), label="payload"),
        ip_kwargs=ip_kwargs, src=src, dst=dst,
        sport=draw(st.integers(0, 0xFFFF), label="sport"),
        dport=draw(st.integers(0, 0xFFFF), label="dport"),
    )
    return pkt, version, proto, vlans


@FUZZ
@given(scapy_frames())
def test_fuzz_scapy_round_trip(case):
    pkt, version, proto, vlans = case
    frame = bytes(pkt)
    l3, l4 = l3_of(vlans), l4_of(frame, version, vlans)
    field = l4 + l4_field(proto)
    assert rx_checksum(frame) == RxChecksum(
        OK if version == 4 else NONE, OK, scapy_sum(frame[l3:]))
    damaged = put16(frame, field, 0xDEAD)
    if version == 4:
        damaged = put16(damaged, l3 + 10, 0)
    assert tx_checksum(damaged, TxCommand(TxMode.AUTO)) == TxResult(frame, None, version == 4, True)
    seeded = put16(frame, field, pseudo_seed(frame, version, vlans, proto))
    partial = tx_checksum(seeded, TxCommand(TxMode.PARTIAL, l4, l4_field(proto))).frame
    if get16(frame, field) == 0:
        assert partial == put16(frame, field, 0xFFFF)
    else:
        assert partial == frame


@st.composite
def mutated_frames(draw) -> bytes:
    """Valid frames with random byte overwrites, cuts and appended junk, or plain random bytes."""
    if draw(st.integers(0, 4), label="random") == 0:
        ethertype = draw(st.sampled_from([b"\x08\x00", b"\x86\xdd", b"\x81\x00", b"\x88\xa8"]))
        return draw(st.binary(max_size=12)) + ethertype + draw(st.binary(max_size=120))
    pkt, _version, _proto, _vlans = draw(scapy_frames())
    frame = bytearray(bytes(pkt))
    header_span = min(len(frame), 90)  # most mutations land in the headers
    for _ in range(draw(st.integers(0, 3), label="mutations")):
        limit = header_span if draw(st.booleans()) else len(frame)
        position = draw(st.integers(0, limit - 1), label="position")
        frame[position] = draw(st.integers(0, 255), label="value")
    if draw(st.booleans(), label="cut"):
        frame = frame[:draw(st.integers(0, len(frame)), label="length")]
    if draw(st.booleans(), label="junk"):
        frame += draw(st.binary(max_size=40), label="junk bytes")
    return bytes(frame)


@FUZZ
@given(mutated_frames())
def test_fuzz_rx_matches_independent_oracle(frame):
    assert rx_checksum(frame) == oracle_rx(frame)


@FUZZ
@given(mutated_frames())
def test_fuzz_tx_auto_then_rx(frame):
    result = tx_checksum(frame, TxCommand(TxMode.AUTO))
    if not frame:
        assert result.drop_reason == DROP_EMPTY
        return
    assert result.drop_reason is None
    fixed = result.frame
    assert len(fixed) == len(frame)
    rx = rx_checksum(fixed)
    assert rx == oracle_rx(fixed)
    assert (rx.l4 == OK) == result.l4_inserted
    if result.ip_inserted:
        assert rx.ip == OK
    # AUTO is idempotent, and changes nothing but checksum fields (at most 4 bytes).
    assert tx_checksum(fixed, TxCommand(TxMode.AUTO)) == result
    assert sum(a != b for a, b in zip(frame, fixed, strict=True)) <= 4
