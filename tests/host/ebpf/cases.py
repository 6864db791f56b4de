"""Packets and map contents the interpreter and the kernel both get, for each example program.

Packets come from scapy (Ethernet, one or two VLAN tags, IPv4 with and without options or
fragments, IPv6, TCP, UDP, ICMP, ARP) and are then damaged at random (cut short, header length
or version garbled, bytes flipped), always at least 14 bytes long: BPF_PROG_TEST_RUN refuses
shorter XDP input.
"""

from __future__ import annotations

import random
import socket
import struct

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Dot1AD, Dot1Q, Ether

__all__ = ["CASES", "Case", "random_packets", "firewall_maps", "lb_maps", "VIP"]

VIP = "10.0.0.100"
SOURCES = ["192.0.2.1", "192.0.2.77", "198.51.100.9", "203.0.113.200", "10.1.2.3", "10.9.9.9"]
DESTS = ["10.0.0.1", VIP, VIP, "172.16.0.1"]
PORTS = [9, 53, 80, 443, 8080, 22, 1234]


def _ip4(rng):
    ip = IP(src=rng.choice(SOURCES), dst=rng.choice(DESTS), ttl=rng.choice([1, 2, 64, 255]),
            id=rng.randrange(65536))
    r = rng.random()
    if r < 0.1:
        ip.options = [b"\x01" * 4]        # four NOPs: IHL 6
    elif r < 0.2:
        ip.flags = "MF"
        ip.frag = rng.choice([0, 185])
    return ip


def _l4(rng):
    r = rng.random()
    sport = rng.randrange(1024, 65536)
    if r < 0.45:
        return TCP(sport=sport, dport=rng.choice(PORTS), flags="S", seq=rng.randrange(1 << 32))
    if r < 0.9:
        return UDP(sport=sport, dport=rng.choice(PORTS))
    return ICMP(id=rng.randrange(65536))


def _frame(rng):
    eth = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    r = rng.random()
    if r < 0.1:
        eth = eth / Dot1Q(vlan=rng.randrange(1, 4095))
    elif r < 0.15:
        eth = eth / Dot1AD(vlan=rng.randrange(1, 4095)) / Dot1Q(vlan=rng.randrange(1, 4095))
    r = rng.random()
    payload = bytes(rng.randrange(256) for _ in range(rng.choice([0, 6, 18, 100, 700])))
    if r < 0.65:
        pkt = eth / _ip4(rng) / _l4(rng) / payload
    elif r < 0.9:
        l4 = _l4(rng)
        if isinstance(l4, ICMP):
            l4 = UDP(sport=1, dport=rng.choice(PORTS))
        pkt = eth / IPv6(src="2001:db8::1", dst="2001:db8::2") / l4 / payload
    else:
        pkt = eth / ARP(psrc=rng.choice(SOURCES), pdst=rng.choice(DESTS))
    return bytes(pkt)


def _damage(rng, data):
    data = bytearray(data)
    r = rng.random()
    if r < 0.15:
        del data[rng.randrange(14, max(15, len(data))):]
    elif r < 0.22:
        # Garble the byte holding IPv4 version/IHL (after 0, 1 or 2 tags).
        for off in (14, 18, 22):
            if off < len(data):
                data[off] = rng.randrange(256)
                break
    elif r < 0.28 and len(data) > 20:
        for _ in range(rng.randrange(1, 6)):
            data[rng.randrange(12, len(data))] = rng.randrange(256)
    elif r < 0.31:
        data = bytearray(rng.randrange(256) for _ in range(rng.randrange(14, 80)))
    return bytes(data)


def random_packets(seed, count):
    """Return ``count`` frames (bytes), valid and damaged, from ``seed``."""
    rng = random.Random(seed)
    return [_damage(rng, _frame(rng)) for _ in range(count)]


def _u32(v):
    return struct.pack("<I", v)


def _lpm(prefix):
    addr, plen = prefix.split("/")
    return struct.pack("<I", int(plen)) + socket.inet_aton(addr)


def firewall_maps():
    return {
        "blocked_src": {_lpm("192.0.2.0/25"): _u32(1), _lpm("203.0.113.0/24"): _u32(2),
                        _lpm("10.9.0.0/16"): _u32(3)},
        "blocked_ports": {bytes([6, 0]) + struct.pack(">H", 22): _u32(4),
                          bytes([17, 0]) + struct.pack(">H", 53): _u32(5)},
    }


def lb_maps():
    backends = {}
    for i in range(4):
        addr = socket.inet_aton(f"10.0.1.{i + 1}")
        backends[_u32(i)] = addr + bytes([0x02, 0, 0, 0, 1, i + 1]) + bytes(2)
    return {"backends": backends}


class Case:
    """One program and the maps it starts with.

    Members
    -------
    source : str
        File in host/ebpf/progs.
    prog : str
        Program (function) name.
    maps : dict
        ``{map name: {key bytes: value bytes}}`` written before the packets.
    compare_maps : tuple of str
        Maps whose contents must equal the kernel's after the packets.
    """

    def __init__(self, source, prog, maps=None, compare_maps=()):
        self.source, self.prog = source, prog
        self.maps = maps or {}
        self.compare_maps = compare_maps

    def __repr__(self):
        return self.prog


CASES = [
    Case("parse_count", "parse_count", compare_maps=("counters",)),
    Case("drop_udp", "drop_udp"),
    Case("firewall", "firewall", firewall_maps(), ("hits", "verdicts")),
    Case("reflect", "reflect"),
    Case("redirect", "redirect_port", {"tx_port": {_u32(0): _u32(1)}}),
    Case("redirect", "redirect_cpu", {"cpus": {_u32(0): _u32(64), _u32(1): _u32(64)}}),
    Case("redirect", "redirect_xsk"),
    Case("redirect", "redirect_ifindex"),
    Case("vlan", "vlan_push"),
    Case("vlan", "vlan_pop"),
    Case("snap", "snap"),
    Case("snap", "pad"),
    Case("lb", "lb", lb_maps(), ("flows",)),
    Case("payload_sum", "payload_sum", compare_maps=("sums",)),
]
