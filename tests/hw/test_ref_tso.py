"""Tests of the TSO/USO golden reference against scapy, hypothesis and the Linux kernel.

Oracles never call the code under test: every segment is parsed by scapy and checked field by
field against the super-frame (sequence numbers, IP IDs, flags, lengths), its checksums and
lengths are checked by letting scapy rebuild the packet with those fields deleted, and the
kernel oracle compares the segments byte for byte with what Linux's software GSO sends on a
veth pair whose TSO and checksum offload are off (a super-frame written with a
``virtio_net_hdr`` to a packet socket, captured on the peer).

The kernel harness (:class:`VethPair`, :func:`veth_pair_or_skip`, :func:`receive`) is shared
with ``test_ref_lro.py``.
"""

from __future__ import annotations

import ctypes
import fcntl
import itertools
import os
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP, UDP, IPOption_NOP, IPOption_RR
from scapy.layers.inet6 import IPv6, IPv6ExtHdrHopByHop
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.packet import Packet, Raw
from scapy.utils import checksum as scapy_checksum

from nicsim.hw.ref.tso import (
    DROP_BAD_MSS,
    DROP_FRAGMENT,
    DROP_IPV6_EXT_HEADERS,
    DROP_MALFORMED,
    DROP_NOT_IP,
    DROP_OVERSIZE,
    DROP_WRONG_PROTOCOL,
    TsoResult,
    segment,
)

__all__ = ["VNET_HDR", "VethPair", "receive", "veth_pair_or_skip"]

FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FUZZ_LONG = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TCP_OPTIONS = [("NOP", None), ("NOP", None), ("Timestamp", (123456, 654321))]


def eth(**fields) -> Packet:
    """Ethernet header with fixed addresses (scapy would otherwise resolve the MAC: slow)."""
    return Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02", **fields)


def super_frame(
    version: int = 4,
    kind: str = "tcp",
    payload_len: int = 4000,
    vlans: int = 0,
    ip_options: bool = False,
    tcp_options: bool = True,
    ip_kwargs: dict | None = None,
    l4_kwargs: dict | None = None,
    sport: int = 40000,
) -> bytes:
    """Build a super-frame with 0-2 VLAN tags (outer S-TAG), scapy filling every checksum."""
    ethertype = 0x0800 if version == 4 else 0x86DD
    tpids = (0x88A8, 0x8100)[2 - vlans:] if vlans else ()
    types = (*tpids, ethertype)
    pkt = eth(type=types[0])
    for i in range(vlans):
        pkt = pkt / Dot1Q(vlan=10 + i, prio=i, type=types[i + 1])
    ip_kwargs = dict(ip_kwargs or {})
    if version == 4:
        if ip_options:
            ip_kwargs.setdefault("options", [IPOption_NOP(), IPOption_RR(routers=["1.2.3.4"])])
        pkt = pkt / IP(src="192.0.2.1", dst="198.51.100.7", **ip_kwargs)
    else:
        pkt = pkt / IPv6(src="2001:db8::1", dst="2001:db8:1::ff", **ip_kwargs)
    l4_kwargs = dict(l4_kwargs or {})
    if kind == "tcp":
        l4_kwargs.setdefault("flags", "A")
        if tcp_options:
            l4_kwargs.setdefault("options", TCP_OPTIONS)
        l4_kwargs.setdefault("seq", 1000)
        l4_kwargs.setdefault("ack", 99)
        pkt = pkt / TCP(sport=sport, dport=80, **l4_kwargs)
    else:
        pkt = pkt / UDP(sport=sport, dport=4789, **l4_kwargs)
    payload = bytes((i * 7 + (i >> 8)) & 0xFF for i in range(payload_len))
    return bytes(pkt / Raw(payload)) if payload else bytes(pkt)


def jumbo_frame(version: int, kind: str) -> bytes:
    """A 70000-byte payload: more than an IP length field holds, which GSO ignores anyway."""
    return super_frame(version, kind, payload_len=60000, tcp_options=False) + bytes(10000)


def layers(frame: bytes) -> tuple[Packet, Packet, Packet]:
    """Return (whole packet, IP layer, L4 layer) of a frame scapy parses.

    The L4 payload is kept raw: scapy would otherwise read UDP port 4789 as VXLAN and rebuild a
    payload that is not a valid VXLAN header differently from the bytes it read.
    """
    pkt = Ether(frame)
    ip = pkt
    while not isinstance(ip, (IP, IPv6)):  # the outer IP header, not one inside a payload
        ip = ip.payload
    l4 = ip.payload
    while not isinstance(l4, (TCP, UDP)):
        l4 = l4.payload
    if l4.payload and not isinstance(l4.payload, Raw):
        l4.decode_payload_as(Raw)
    return pkt, ip, l4


def l4_payload(frame: bytes) -> bytes:
    _, _, l4 = layers(frame)
    return bytes(l4.payload)


def rebuilt_by_scapy(frame: bytes) -> bytes:
    """The frame with every length and checksum field recomputed by scapy."""
    pkt, ip, l4 = layers(frame)
    if isinstance(ip, IP):
        del ip.len, ip.chksum
    else:
        del ip.plen
    if isinstance(l4, UDP):
        del l4.len
    del l4.chksum
    return bytes(pkt)


def check_segments(result: TsoResult, frame: bytes, mss: int, fixed_id: bool = False) -> None:
    """Check the segments of ``frame`` against scapy's reading of the TSO/USO contract."""
    assert result.drop_reason is None
    frames = result.frames
    sup, sup_ip, sup_l4 = layers(frame)
    payload = bytes(sup_l4.payload)
    expected_count = max(1, -(-len(payload) // mss))
    assert len(frames) == expected_count
    assert b"".join(l4_payload(f) for f in frames) == payload
    l2_len = len(frame) - len(bytes(sup_ip))
    l4_header = bytes(sup_l4)[:len(bytes(sup_l4)) - len(payload)]
    for index, seg in enumerate(frames):
        pkt, ip, l4 = layers(seg)
        seg_payload = bytes(l4.payload)
        assert len(seg_payload) == (mss if index < expected_count - 1 else
                                    len(payload) - mss * (expected_count - 1))
        assert seg[:l2_len] == frame[:l2_len]
        assert rebuilt_by_scapy(seg) == seg  # lengths and checksums
        if isinstance(ip, IP):
            want_id = sup_ip.id if fixed_id else (sup_ip.id + index) & 0xFFFF
            assert ip.id == want_id
            for name in ("version", "ihl", "tos", "flags", "frag", "ttl", "proto", "src", "dst"):
                assert getattr(ip, name) == getattr(sup_ip, name)
            assert bytes(ip)[20:ip.ihl * 4] == bytes(sup_ip)[20:sup_ip.ihl * 4]
        else:
            for name in ("tc", "fl", "nh", "hlim", "src", "dst"):
                assert getattr(ip, name) == getattr(sup_ip, name)
        if isinstance(l4, TCP):
            assert l4.seq == (sup_l4.seq + index * mss) & 0xFFFFFFFF
            want = int(sup_l4.flags)
            if index != expected_count - 1:
                want &= ~0x09  # FIN, PSH
            if index != 0:
                want &= ~0x80  # CWR
            assert int(l4.flags) == want
            for name in ("sport", "dport", "ack", "dataofs", "reserved", "window", "urgptr"):
                assert getattr(l4, name) == getattr(sup_l4, name)
            assert bytes(l4)[20:l4.dataofs * 4] == l4_header[20:]
        else:
            assert (l4.sport, l4.dport) == (sup_l4.sport, sup_l4.dport)
            assert l4.chksum != 0  # USO always sends a checksum; 0 is sent as 0xffff


# ---------------------------------------------------------------------------------------------
# Segmentation against scapy


VARIANTS = [
    (version, kind, vlans, ip_options)
    for version in (4, 6)
    for kind in ("tcp", "udp")
    for vlans in (0, 1, 2)
    for ip_options in ((False, True) if version == 4 else (False,))
]


def variant_id(v: tuple) -> str:
    version, kind, vlans, ip_options = v
    return f"ipv{version}-{kind}-vlan{vlans}" + ("-ipopt" if ip_options else "")


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
@pytest.mark.parametrize(("payload_len", "mss"), [(4000, 1448), (2896, 1448), (1, 1448),
                                                  (0, 536), (1448, 1448), (1449, 1448),
                                                  (17, 1), (9000, 8948), (65000, 1460)])
def test_segments_match_scapy(variant, payload_len, mss):
    version, kind, vlans, ip_options = variant
    frame = super_frame(version, kind, payload_len, vlans, ip_options)
    check_segments(segment(frame, mss, kind), frame, mss)


@pytest.mark.parametrize("version", [4, 6])
def test_tcp_flags_fin_psh_last_cwr_first(version):
    frame = super_frame(version, payload_len=5000, l4_kwargs={"flags": "CEUAPRSF"})
    frames = segment(frame, 1000).frames
    flags = [str(layers(f)[2].flags) for f in frames]
    assert flags == ["SRAUEC"] + ["SRAUE"] * 3 + ["FSRPAUE"]


def test_tcp_single_segment_keeps_all_flags():
    frame = super_frame(payload_len=100, l4_kwargs={"flags": "FPAC"})
    (only,) = segment(frame, 1448).frames
    assert str(layers(only)[2].flags) == "FPAC"


def test_sequence_and_ip_id_wrap_around():
    frame = super_frame(payload_len=3000, ip_kwargs={"id": 0xFFFF},
                        l4_kwargs={"seq": 0xFFFFFFFF - 999})
    check_segments(segment(frame, 1000), frame, 1000)
    ids_seqs = [(layers(f)[1].id, layers(f)[2].seq) for f in segment(frame, 1000).frames]
    assert ids_seqs == [(0xFFFF, 0xFFFFFC18), (0, 0), (1, 1000)]


@pytest.mark.parametrize("kind", ["tcp", "udp"])
def test_fixed_id(kind):
    frame = super_frame(kind=kind, payload_len=5000, ip_kwargs={"id": 4242, "flags": "DF"})
    result = segment(frame, 1200, kind, fixed_id=True)
    check_segments(result, frame, 1200, fixed_id=True)
    assert {layers(f)[1].id for f in result.frames} == {4242}


@pytest.mark.parametrize("version", [4, 6])
@pytest.mark.parametrize("kind", ["tcp", "udp"])
def test_input_lengths_and_checksums_are_ignored(version, kind):
    """Like Linux GSO: the payload runs to the end of the frame, whatever the fields say."""
    frame = bytearray(super_frame(version, kind, payload_len=3000))
    good = segment(bytes(frame), 1000)
    l3 = 14
    if version == 4:
        frame[l3 + 2:l3 + 4] = b"\x12\x34"  # total length
        frame[l3 + 10:l3 + 12] = b"\xde\xad"  # header checksum
    else:
        frame[l3 + 4:l3 + 6] = b"\x00\x07"
    l4 = l3 + (20 if version == 4 else 40)
    check = l4 + (16 if kind == "tcp" else 6)
    frame[check:check + 2] = b"\xbe\xef"
    if kind == "udp":
        frame[l4 + 4:l4 + 6] = b"\x00\x09"
    assert segment(bytes(frame), 1000) == good


def test_udp_checksum_zero_is_sent_as_ffff():
    """Find a payload whose UDP checksum computes to 0; USO must send 0xffff (RFC 768)."""
    base = super_frame(kind="udp", payload_len=10)
    for value in range(0x10000):
        frame = base[:-2] + struct.pack("!H", value)
        (seg,) = segment(frame, 100, "udp").frames
        if struct.unpack_from("!H", seg, 14 + 20 + 6)[0] == 0xFFFF:
            assert scapy_checksum(pseudo_header(seg) + seg[34:]) == 0
            return
    pytest.fail("no payload gives a UDP checksum of 0")


def pseudo_header(frame: bytes) -> bytes:
    """IPv4 UDP/TCP pseudo-header of an untagged frame with a 20-byte IP header."""
    (total,) = struct.unpack_from("!H", frame, 16)
    return frame[26:34] + struct.pack("!xBH", frame[23], total - 20)


def test_vlan_tags_copied():
    frame = super_frame(vlans=2, payload_len=3000)
    for seg in segment(frame, 1000).frames:
        # S-TAG 0x88a8 with PCP 0 VID 10, then C-TAG 0x8100 with PCP 1 VID 11, then IPv4
        assert seg[12:22] == bytes.fromhex("88a8000a8100200b0800")


# ---------------------------------------------------------------------------------------------
# Drop reasons


@pytest.mark.parametrize(
    ("frame", "mss", "kind", "reason"),
    [
        (bytes(eth() / ARP()), 1000, "tcp", DROP_NOT_IP),
        (b"", 1000, "tcp", DROP_NOT_IP),
        (super_frame(), 0, "tcp", DROP_BAD_MSS),
        (super_frame(), -5, "tcp", DROP_BAD_MSS),
        (super_frame(kind="udp"), 1000, "tcp", DROP_WRONG_PROTOCOL),
        (super_frame(kind="tcp"), 1000, "udp", DROP_WRONG_PROTOCOL),
        (bytes(eth() / IP(dst="1.2.3.4") / Raw(b"x" * 100)), 10, "tcp", DROP_WRONG_PROTOCOL),
        (super_frame(ip_kwargs={"flags": "MF"}), 1000, "tcp", DROP_FRAGMENT),
        (super_frame(ip_kwargs={"frag": 100}), 1000, "tcp", DROP_FRAGMENT),
        (bytes(eth() / IPv6() / IPv6ExtHdrHopByHop() / TCP() / Raw(b"x" * 10)), 5, "tcp",
         DROP_IPV6_EXT_HEADERS),
        (super_frame()[:14 + 19], 1000, "tcp", DROP_MALFORMED),  # IPv4 header cut
        (super_frame(version=6)[:14 + 39], 1000, "tcp", DROP_MALFORMED),
        (super_frame()[:14 + 20 + 19], 1000, "tcp", DROP_MALFORMED),  # TCP header cut
        (super_frame()[:14 + 20 + 31], 1000, "tcp", DROP_MALFORMED),  # TCP options cut
        (super_frame(kind="udp")[:14 + 20 + 7], 1000, "udp", DROP_MALFORMED),
        (super_frame(ip_options=True)[:14 + 25], 1000, "tcp", DROP_MALFORMED),
        (jumbo_frame(4, "tcp"), 65516, "tcp", DROP_OVERSIZE),
        (jumbo_frame(6, "udp"), 65528, "udp", DROP_OVERSIZE),
    ],
    ids=[
        "arp", "empty", "mss0", "mss-negative", "udp-as-tcp", "tcp-as-udp", "raw-ip", "mf",
        "fragment-offset", "ipv6-hop-by-hop", "ipv4-cut", "ipv6-cut", "tcp-cut", "tcp-options-cut",
        "udp-cut", "ip-options-cut", "tcp-oversize", "udp6-oversize",
    ],
)
def test_drop_reasons(frame, mss, kind, reason):
    assert segment(frame, mss, kind) == TsoResult((), reason)


@pytest.mark.parametrize("first_byte", [0x44, 0x55, 0x65])
def test_bad_ipv4_header_is_malformed(first_byte):
    frame = bytearray(super_frame())
    frame[14] = first_byte
    assert segment(bytes(frame), 1000).drop_reason == DROP_MALFORMED


def test_tcp_data_offset_below_5_is_malformed():
    frame = bytearray(super_frame(tcp_options=False))
    frame[14 + 20 + 12] = 0x40
    assert segment(bytes(frame), 1000).drop_reason == DROP_MALFORMED


def test_largest_legal_segment():
    frame = jumbo_frame(4, "tcp")
    result = segment(frame, 65495)
    assert [len(f) - 14 for f in result.frames] == [65535, 70000 - 65495 + 40]
    assert segment(frame, 65496).drop_reason == DROP_OVERSIZE


def test_bad_kind_raises():
    with pytest.raises(ValueError, match="kind"):
        segment(super_frame(), 1000, "sctp")


# ---------------------------------------------------------------------------------------------
# Fuzzing


@st.composite
def tso_inputs(draw, max_payload: int = 20000, max_segments: int = 64):
    version = draw(st.sampled_from([4, 6]))
    kind = draw(st.sampled_from(["tcp", "udp"]))
    vlans = draw(st.integers(0, 2))
    ip_options = version == 4 and draw(st.booleans())
    tcp_options = draw(st.booleans())
    payload_len = draw(st.integers(0, max_payload))
    # Keep the segment count (and scapy's parsing time) bounded; small MSS values still come up.
    smallest = max(1, -(-payload_len // max_segments))
    mss = draw(st.one_of(st.integers(smallest, smallest + 64), st.integers(smallest, 9000)))
    ip_kwargs = {}
    if version == 4:
        ip_kwargs = {"id": draw(st.integers(0, 0xFFFF)), "flags": draw(st.sampled_from([0, 2])),
                     "tos": draw(st.integers(0, 255)), "ttl": draw(st.integers(1, 255))}
    else:
        ip_kwargs = {"tc": draw(st.integers(0, 255)), "fl": draw(st.integers(0, 0xFFFFF))}
    l4_kwargs = {}
    if kind == "tcp":
        l4_kwargs = {"seq": draw(st.integers(0, 0xFFFFFFFF)),
                     "flags": draw(st.integers(0, 0xFF)),
                     "window": draw(st.integers(0, 0xFFFF)),
                     "urgptr": draw(st.integers(0, 0xFFFF))}
    frame = super_frame(version, kind, payload_len, vlans, ip_options, tcp_options, ip_kwargs,
                        l4_kwargs)
    return frame, mss, kind, draw(st.booleans())


@FUZZ
@given(tso_inputs(max_payload=5000))
def test_fuzz_against_scapy(inputs):
    frame, mss, kind, fixed_id = inputs
    check_segments(segment(frame, mss, kind, fixed_id), frame, mss, fixed_id)


@pytest.mark.long
@FUZZ_LONG
@given(tso_inputs(max_payload=65000))
def test_fuzz_against_scapy_long(inputs):
    frame, mss, kind, fixed_id = inputs
    check_segments(segment(frame, mss, kind, fixed_id), frame, mss, fixed_id)


@FUZZ
@given(st.binary(max_size=120), st.integers(-2, 3000), st.sampled_from(["tcp", "udp"]))
def test_fuzz_arbitrary_bytes_never_raise(data, mss, kind):
    result = segment(data, mss, kind)
    assert (result.drop_reason is None) == bool(result.frames)


# ---------------------------------------------------------------------------------------------
# The Linux kernel as oracle

_CLONE_NEWNET = 0x40000000
_SIOCETHTOOL = 0x8946
# include/uapi/linux/ethtool.h legacy per-feature commands
_ETHTOOL_CMDS = {"tx": 0x17, "tso": 0x1F, "gso": 0x24, "gro": 0x2C}
_SOL_PACKET = 263
_PACKET_AUXDATA = 8
_PACKET_VNET_HDR = 15
_ETH_P_ALL = 0x0003
_TP_STATUS_VLAN_VALID = 1 << 4
_TP_STATUS_VLAN_TPID_VALID = 1 << 6
VNET_HDR = struct.Struct("<BBHHHH")  # flags, gso_type, hdr_len, gso_size, csum_start, csum_offset
VNET_F_NEEDS_CSUM = 1
VNET_GSO = {("tcp", 4): 1, ("tcp", 6): 4, ("udp", 4): 5, ("udp", 6): 5}  # TCPV4, TCPV6, UDP_L4

_names = itertools.count()


class VethPair:
    """A network namespace holding a veth pair ``a`` <-> ``b``, both up, IPv6 disabled.

    Sockets are opened inside the namespace by switching the calling thread into it with
    ``setns(2)``; a socket stays in the namespace it was created in. Features are set with the
    legacy ``SIOCETHTOOL`` per-feature ioctls (no ``ethtool`` binary needed).
    """

    def __init__(self) -> None:
        number = next(_names)
        pid = os.getpid()
        self.netns = f"nicsim-{pid}-{number}"
        self.a = f"ns{pid % 100000}a{number}"
        self.b = f"ns{pid % 100000}b{number}"
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._run("ip", "netns", "add", self.netns)
        try:
            self.exec("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
                      "net.ipv6.conf.default.disable_ipv6=1")
            self._run("ip", "-n", self.netns, "link", "add", self.a, "type", "veth", "peer",
                      "name", self.b)
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _run(*argv: str) -> None:
        subprocess.run(argv, check=True, capture_output=True, timeout=30)

    def exec(self, *argv: str) -> None:
        """Run a command inside the namespace (its own /sys, as ``ip netns exec`` mounts it)."""
        self._run("ip", "netns", "exec", self.netns, *argv)

    def up(self) -> None:
        for dev in (self.a, self.b):
            self._run("ip", "-n", self.netns, "link", "set", dev, "up")

    def close(self) -> None:
        subprocess.run(["ip", "netns", "del", self.netns], capture_output=True, timeout=30)

    def inside(self, fn: Callable[[], object]) -> object:
        """Call ``fn`` with the calling thread in the namespace."""
        with open("/proc/thread-self/ns/net") as own, open(f"/run/netns/{self.netns}") as ns:
            if self._libc.setns(ns.fileno(), _CLONE_NEWNET):
                raise OSError(ctypes.get_errno(), "setns into the test namespace failed")
            try:
                return fn()
            finally:
                if self._libc.setns(own.fileno(), _CLONE_NEWNET):
                    raise OSError(ctypes.get_errno(), "setns back failed")

    def feature(self, dev: str, name: str, on: bool) -> None:
        """Switch an offload on or off (``ethtool -K dev tx|tso|gso|gro on|off``)."""
        value = ctypes.create_string_buffer(struct.pack("=II", _ETHTOOL_CMDS[name], int(on)), 8)
        ifreq = struct.pack("16sP", dev.encode(), ctypes.addressof(value)) + bytes(16)

        def ioctl() -> None:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                fcntl.ioctl(sock.fileno(), _SIOCETHTOOL, ifreq)

        self.inside(ioctl)

    def packet_socket(self, dev: str, vnet_hdr: bool) -> socket.socket:
        """AF_PACKET raw socket bound to ``dev``, all protocols, VLAN tags in aux data."""
        def make() -> socket.socket:
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(_ETH_P_ALL))
            sock.setsockopt(_SOL_PACKET, _PACKET_AUXDATA, 1)
            if vnet_hdr:
                sock.setsockopt(_SOL_PACKET, _PACKET_VNET_HDR, 1)
            sock.bind((dev, _ETH_P_ALL))
            return sock

        return self.inside(make)


def receive(sock: socket.socket, vnet_hdr: bool, timeout: float) -> tuple[bytes, bytes] | None:
    """Receive one frame; return (virtio_net_hdr or b"", frame with its VLAN tag put back)."""
    sock.settimeout(timeout)
    try:
        data, ancillary, _, _ = sock.recvmsg(1 << 17, socket.CMSG_SPACE(20))
    except TimeoutError:
        return None
    header, frame = (data[:VNET_HDR.size], data[VNET_HDR.size:]) if vnet_hdr else (b"", data)
    for level, kind, value in ancillary:
        if level == _SOL_PACKET and kind == _PACKET_AUXDATA:
            status, _, _, _, _, tci, tpid = struct.unpack("=IIIHHHH", value[:20])
            if status & _TP_STATUS_VLAN_VALID:
                tpid = tpid if status & _TP_STATUS_VLAN_TPID_VALID else 0x8100
                frame = frame[:12] + struct.pack("!HH", tpid, tci) + frame[12:]
    return header, frame


def _kernel_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "the kernel oracle needs root (network namespaces, veth, packet sockets)"
    if shutil.which("ip") is None:
        return "the kernel oracle needs iproute2's ip (Debian package iproute2)"
    return None


@pytest.fixture
def veth_pair() -> Iterator[VethPair]:
    """A fresh namespace and veth pair for one test, deleted afterwards; skip if impossible."""
    yield from veth_pair_or_skip()


def veth_pair_or_skip() -> Iterator[VethPair]:
    """Body of a veth-pair fixture (shared with ``test_ref_lro.py``): yield one, then delete."""
    reason = _kernel_unavailable()
    if reason:
        pytest.skip(reason)
    try:
        pair = VethPair()
    except (subprocess.SubprocessError, OSError) as error:
        detail = getattr(error, "stderr", b"") or str(error)
        detail = detail.decode(errors="replace") if isinstance(detail, bytes) else detail
        pytest.skip(f"cannot create a network namespace with a veth pair: {detail.strip()}")
    try:
        yield pair
    finally:
        pair.close()


def seed_pseudo_header(frame: bytes, kind: str) -> tuple[bytes, int, int]:
    """Put the pseudo-header sum Linux expects for CHECKSUM_PARTIAL into the L4 checksum.

    Returns the frame, ``csum_start`` and ``csum_offset``. The sum covers the super-frame's L4
    length (``virtio_net_hdr`` contract; the kernel adjusts it per segment).
    """
    pkt, ip, l4 = layers(frame)
    start = len(frame) - len(bytes(l4))
    l4_len = len(frame) - start
    number = 6 if kind == "tcp" else 17
    if isinstance(ip, IP):
        pseudo = bytes(ip)[12:20] + struct.pack("!xBH", number, l4_len)
    else:
        pseudo = bytes(ip)[8:40] + struct.pack("!IxxxB", l4_len, number)
    seed = ~scapy_checksum(pseudo) & 0xFFFF
    offset = 16 if kind == "tcp" else 6
    field = start + offset
    return frame[:field] + struct.pack("!H", seed) + frame[field + 2:], start, offset


KERNEL_CASES = [
    # (name, version, kind, payload, vlans, ip options, mss, extra TCP/IP fields)
    ("tcp4", 4, "tcp", 5000, 0, False, 1448, {"flags": "PAFC"}),
    ("tcp4-id-wrap", 4, "tcp", 5000, 0, False, 1000, {"ip": {"id": 0xFFFE, "flags": "DF"}}),
    ("tcp4-vlan2-ipopt", 4, "tcp", 5000, 2, True, 1000, {}),
    ("tcp4-vlan1", 4, "tcp", 3001, 1, False, 1000, {"flags": "PA"}),
    ("tcp4-mss1", 4, "tcp", 13, 0, False, 1, {"flags": "PA"}),
    ("tcp4-one-segment", 4, "tcp", 100, 0, False, 1000, {"flags": "PA"}),
    ("tcp4-odd", 4, "tcp", 4001, 0, False, 333, {"flags": "FA", "seq": 0xFFFFFF00}),
    ("tcp6", 6, "tcp", 5000, 0, False, 1428, {"flags": "PAC"}),
    ("tcp6-vlan2", 6, "tcp", 4000, 2, False, 999, {}),
    ("udp4", 4, "udp", 5000, 0, False, 1400, {}),
    ("udp4-vlan1-ipopt", 4, "udp", 4321, 1, True, 1000, {}),
    ("udp4-one-datagram", 4, "udp", 100, 0, False, 1000, {}),
    ("udp6", 6, "udp", 5000, 0, False, 1232, {}),
    ("udp6-odd", 6, "udp", 3333, 0, False, 777, {}),
]


def _kernel_frame(case: tuple, sport: int) -> tuple[bytes, int, str]:
    _, version, kind, payload, vlans, ip_options, mss, extra = case
    extra = dict(extra)
    ip_kwargs = extra.pop("ip", {})
    if version == 4:
        ip_kwargs.setdefault("id", 1000 + sport)
    frame = super_frame(version, kind, payload, vlans, ip_options, ip_kwargs=ip_kwargs,
                        l4_kwargs=extra if kind == "tcp" else None, sport=sport)
    return frame, mss, kind


def test_kernel_gso_matches(veth_pair):
    """Linux software GSO (TSO/checksum off on the sender) sends the same bytes."""
    for name in ("tx", "tso"):
        veth_pair.feature(veth_pair.a, name, False)
    veth_pair.feature(veth_pair.a, "gso", True)
    veth_pair.feature(veth_pair.b, "gro", False)
    veth_pair.up()
    rx = veth_pair.packet_socket(veth_pair.b, vnet_hdr=False)
    tx = veth_pair.packet_socket(veth_pair.a, vnet_hdr=True)
    failures = []
    for number, case in enumerate(KERNEL_CASES):
        sport = 50000 + number
        frame, mss, kind = _kernel_frame(case, sport)
        seeded, csum_start, csum_offset = seed_pseudo_header(frame, kind)
        version = case[1]
        header = VNET_HDR.pack(VNET_F_NEEDS_CSUM, VNET_GSO[kind, version], 0, mss, csum_start,
                               csum_offset)
        tx.send(header + seeded)
        expected = list(segment(frame, mss, kind).frames)
        got: list[bytes] = []
        deadline = time.monotonic() + 2.0
        while len(got) < len(expected) and time.monotonic() < deadline:
            received = receive(rx, False, 0.5)
            if received is None:
                continue
            frame_in = received[1]
            try:
                if layers(frame_in)[2].sport == sport:
                    got.append(frame_in)
            except (IndexError, AttributeError):
                continue  # not one of ours
        if got != expected:
            differs = [i for i, (g, e) in enumerate(zip(got, expected, strict=False)) if g != e]
            failures.append(f"{case[0]}: kernel sent {len(got)} frames, reference "
                            f"{len(expected)}; frames that differ: {differs}")
    assert not failures, "; ".join(failures)
    assert receive(rx, False, 0.05) is None, "the kernel sent more frames than the reference"
