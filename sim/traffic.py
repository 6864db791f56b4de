"""Synthetic captures: a seeded mix of the frames NIC offloads meet on real links.

Frames are built with scapy, so their checksums come from an implementation independent of
nicsim's. The mix covers IPv4 (with and without options) and IPv6 (with and without extension
headers), TCP and UDP, 0-2 VLAN tags, fragments, non-IP frames and deliberately broken
checksums.
"""

from __future__ import annotations

import random

__all__ = ["mixed_frames"]


def _addr4(rng):
    return ".".join(str(rng.randrange(1, 255)) for _ in range(4))


def _addr6(rng):
    return "2001:db8:" + ":".join(f"{rng.randrange(65536):x}" for _ in range(6))


def mixed_frames(count=200, seed=1, flows=16, bad_ratio=0.1):
    """Return ``count`` Ethernet frames (bytes) and a label for each.

    Parameters
    ----------
    count : int
        Number of frames.
    seed : int
        Seed of the random mix (same seed, same capture).
    flows : int
        Number of distinct TCP/UDP flows the L4 frames belong to.
    bad_ratio : float
        Share of frames whose IP or L4 checksum is corrupted.
    """
    from scapy.layers.inet import ICMP, IP, TCP, UDP
    from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop
    from scapy.layers.l2 import ARP, Dot1AD, Dot1Q, Ether
    from scapy.packet import Raw

    rng = random.Random(seed)
    flow_table = []
    for _ in range(flows):
        v6 = rng.random() < 0.35
        flow_table.append({
            "v6": v6,
            "src": _addr6(rng) if v6 else _addr4(rng),
            "dst": _addr6(rng) if v6 else _addr4(rng),
            "sport": rng.randrange(1024, 65536),
            "dport": rng.choice([80, 443, 53, 4789, 11211, rng.randrange(1024, 65536)]),
            "proto": rng.choice(["tcp", "udp"]),
        })
    frames, labels = [], []
    for _ in range(count):
        eth = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
        kind = rng.random()
        if kind < 0.05:
            pkt = eth / ARP(psrc=_addr4(rng), pdst=_addr4(rng))
            frames.append(bytes(pkt))
            labels.append("arp")
            continue
        flow = rng.choice(flow_table)
        vlans = rng.choice([0, 0, 0, 1, 2])
        l2 = eth
        if vlans == 2:
            l2 = eth / Dot1AD(vlan=100) / Dot1Q(vlan=rng.randrange(1, 4095))
        elif vlans == 1:
            l2 = eth / Dot1Q(vlan=rng.randrange(1, 4095))
        payload = Raw(bytes(rng.randrange(256) for _ in range(rng.choice(
            [0, 6, 18, 64, 200, 512, 1200, 1400]))))
        if flow["v6"]:
            l3 = IPv6(src=flow["src"], dst=flow["dst"])
            if rng.random() < 0.15:
                l3 = l3 / IPv6ExtHdrHopByHop()
            label = "ipv6"
        else:
            l3 = IP(src=flow["src"], dst=flow["dst"], id=rng.randrange(65536))
            if rng.random() < 0.1:
                l3.options = [b"\x01\x01\x01\x00"]  # NOP NOP NOP EOL: 4 bytes of options
            label = "ipv4"
        if kind < 0.08:
            l4 = ICMP()
            label += "/icmp"
        elif flow["proto"] == "tcp":
            l4 = TCP(sport=flow["sport"], dport=flow["dport"], flags="PA",
                     seq=rng.randrange(1 << 32))
            label += "/tcp"
        else:
            l4 = UDP(sport=flow["sport"], dport=flow["dport"])
            label += "/udp"
        pkt = l2 / l3 / l4 / payload
        raw = bytearray(bytes(pkt))
        if not flow["v6"] and rng.random() < 0.05:
            # A non-first fragment: ports are not in it, RSS falls back to the 2-tuple.
            frag = l2 / IP(src=flow["src"], dst=flow["dst"], frag=64, proto=17) / payload
            raw = bytearray(bytes(frag))
            label = "ipv4/fragment"
        elif flow["v6"] and rng.random() < 0.03:
            frag = l2 / IPv6(src=flow["src"], dst=flow["dst"]) / IPv6ExtHdrFragment(
                offset=8, m=1, nh=17) / payload
            raw = bytearray(bytes(frag))
            label = "ipv6/fragment"
        if rng.random() < bad_ratio and len(raw) > 40:
            # Flip a byte of the payload region: the L4 (or IP) checksum no longer verifies.
            pos = rng.randrange(len(raw) - 8, len(raw))
            raw[pos] ^= 0x5A
            label += "/corrupt"
        frames.append(bytes(raw))
        labels.append(label)
    return frames, labels
