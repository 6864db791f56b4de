"""Fixtures of the GPU tests: the OpenCL platform (the test is skipped, saying why, when
there is none) and frames built with scapy."""

import random

import pytest


@pytest.fixture(scope="session")
def platform():
    from nicsim.gpu.platform import GpuUnavailable, get_platform

    try:
        return get_platform()
    except GpuUnavailable as exc:
        pytest.skip(f"no usable OpenCL device: {exc}")


def _ether():
    from scapy.layers.l2 import Ether

    return Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:02")


def random_frames(rng: random.Random, count: int, max_payload: int = 120) -> list[bytes]:
    """IPv4/IPv6 TCP/UDP/other frames, some VLAN-tagged, fragmented, corrupted or cut short,
    with their checksums as scapy computes them (then perhaps broken)."""
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop
    from scapy.layers.l2 import Dot1Q
    from scapy.packet import Raw

    frames = []
    for _ in range(count):
        if rng.random() < 0.5:
            l3 = IP(src=f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
                    dst=f"192.168.{rng.randrange(256)}.{rng.randrange(1, 255)}",
                    flags=rng.choice([0, 2, 2, 1]), frag=rng.choice([0, 0, 0, 0, 7]),
                    ihl=rng.choice([None, None, None, 6]),
                    options=[] if rng.random() < 0.8 else b"\x01\x01\x01\x00")
            if l3.ihl == 6 and not l3.options:
                l3.ihl = None
        else:
            l3 = IPv6(src=f"2001:db8::{rng.randrange(1, 65535):x}",
                      dst=f"2001:db8:1::{rng.randrange(1, 65535):x}")
            if rng.random() < 0.2:
                l3 = l3 / rng.choice([IPv6ExtHdrHopByHop(),
                                      IPv6ExtHdrFragment(offset=rng.choice([0, 3]))])
        l4 = rng.choice([TCP(sport=rng.randrange(65536), dport=rng.randrange(65536)),
                         UDP(sport=rng.randrange(65536), dport=rng.randrange(65536)),
                         Raw(b"\x01\x02")])
        payload = Raw(bytes(rng.randrange(256) for _ in range(rng.randrange(max_payload))))
        pkt = _ether() / l3 / l4 / payload
        if rng.random() < 0.2:
            pkt = _ether() / Dot1Q(vlan=rng.randrange(1, 4095)) / l3 / l4 / payload
        frame = bytearray(bytes(pkt))
        roll = rng.random()
        if roll < 0.15:
            frame[rng.randrange(14, len(frame))] ^= 1 << rng.randrange(8)
        elif roll < 0.25:
            del frame[rng.randrange(len(frame) + 1):]
        elif roll < 0.3:
            frame += bytes(rng.randrange(1, 20))  # Ethernet padding
        frames.append(bytes(frame))
    return frames


def adversarial_frames() -> list[bytes]:
    """Frames at the edges: empty, shorter than a header, all zero, jumbo, UDP checksum 0."""
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.layers.inet6 import IPv6
    from scapy.packet import Raw

    jumbo_tcp = bytes(_ether() / IP(src="1.2.3.4", dst="5.6.7.8") / TCP()
                      / Raw(bytes(range(256)) * 35 + bytes(8960 - 35 * 256)))
    jumbo_udp6 = bytes(_ether() / IPv6() / UDP() / Raw(b"\xff" * 8950))
    udp_zero = bytearray(bytes(_ether() / IP() / UDP(chksum=0) / Raw(b"abc")))
    udp6_zero = bytes(_ether() / IPv6() / UDP(chksum=0) / Raw(b"abc"))
    return [b"", b"\x00", bytes(13), bytes(14), bytes(64), b"\xff" * 64, bytes(9018),
            jumbo_tcp, jumbo_udp6, bytes(udp_zero), udp6_zero,
            bytes(_ether() / IP(ihl=4, src="1.1.1.1")), bytes(_ether() / IP(len=10))]
