"""Received TCP traffic for the LRO tests: interleaved flows with the events GRO must handle.

Frames are built with scapy. Each flow is a TCP byte stream cut into segments; the generator
mixes in sequence gaps, retransmissions, reordering, pure ACKs, flag combinations, timestamp
changes, IP ID patterns, TTL changes, bad checksums, IPv4 options, fragments, Ethernet padding,
VLAN tags, IPv6 (with and without extension headers), non-TCP and truncated frames.
"""

import random

from scapy.layers.inet import IP, TCP, UDP, IPOption_NOP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.packet import Raw

__all__ = ["Flow", "traffic", "eth"]


def eth(vlans=0, outer=0x8100):
    """Ethernet header with fixed addresses and ``vlans`` tags."""
    frame = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    for n in range(vlans):
        frame = frame / Dot1Q(vlan=10 + n)
    if vlans == 2:
        frame.type = outer
    return frame


class Flow:
    """One TCP byte stream cut into segments of at most ``mss`` bytes."""

    def __init__(self, rng, number):
        self.rng = rng
        self.v6 = rng.random() < 0.35
        self.vlans = rng.choice((0, 0, 0, 1, 2))
        self.outer = rng.choice((0x8100, 0x88A8))
        self.sport = 1000 + number
        self.dport = 80 + number % 3
        self.src = f"fd00::{number + 1}" if self.v6 else f"10.0.{number // 200}.{number % 200 + 1}"
        self.dst = "fd00::ffff" if self.v6 else "10.1.0.1"
        self.seq = rng.getrandbits(32)
        self.ack = rng.getrandbits(32)
        self.ip_id = rng.getrandbits(16)
        self.fixed_id = rng.random() < 0.2
        self.df = self.fixed_id or rng.random() < 0.7
        self.ttl = 64
        self.tsval = rng.getrandbits(32) if rng.random() < 0.5 else None
        self.mss = rng.choice((1, 7, 64, 100, 200, 536, 1000, 1448))
        self.window = 5000
        self.sent = []  # (seq, payload) of segments sent, for retransmissions

    def frame(self, payload, flags="A", seq=None, **tweak):
        if seq is None:
            seq = self.seq
        options = []
        if self.tsval is not None:
            options = [("NOP", None), ("NOP", None), ("Timestamp", (self.tsval, 7))]
        tcp = TCP(sport=self.sport, dport=self.dport, seq=seq % (1 << 32), ack=self.ack,
                  flags=flags, window=self.window, options=options)
        if self.v6:
            ip = IPv6(src=self.src, dst=self.dst, hlim=self.ttl)
        else:
            ip = IP(src=self.src, dst=self.dst, ttl=self.ttl, id=self.ip_id,
                    flags="DF" if self.df else 0)
            if not self.fixed_id:
                self.ip_id = (self.ip_id + 1) & 0xFFFF
        if "ip_flags" in tweak:
            ip.flags = tweak.pop("ip_flags")
        for key, value in tweak.items():
            setattr(ip, key, value)
        return bytes(eth(self.vlans, self.outer) / ip / tcp / Raw(payload))

    def data(self, length=None):
        if length is None:
            length = self.mss
        payload = self.rng.randbytes(length)
        frame = self.frame(payload)
        self.sent.append((self.seq, payload))
        self.seq += length
        return frame


def _oddity(rng, flow):
    """One frame that is not a plain in-order data segment."""
    kind = rng.randrange(22)
    if kind == 0:  # sequence gap
        flow.seq += rng.randint(1, 3000)
        return flow.data()
    if kind == 1 and flow.sent:  # retransmission
        seq, payload = rng.choice(flow.sent)
        return flow.frame(payload, seq=seq)
    if kind == 2:  # pure ACK
        flow.ack += rng.randint(0, 3000)
        return flow.frame(b"")
    if kind == 3:  # flags
        flags = rng.choice(("AP", "AF", "AU", "AR", "S", "AC", "AE", "APC", "APE", "AFP"))
        payload = rng.randbytes(rng.randint(0, flow.mss))
        frame = flow.frame(payload, flags=flags)
        flow.seq += len(payload)
        return frame
    if kind == 4 and flow.tsval is not None:  # timestamp advances
        flow.tsval += 1
        return flow.data()
    if kind == 5:  # short segment
        return flow.data(rng.randint(1, max(1, flow.mss - 1)))
    if kind == 6:  # bad TCP checksum
        frame = bytearray(flow.data())
        frame[-1] ^= 0x5A
        return bytes(frame)
    if kind == 7 and not flow.v6:  # bad IPv4 header checksum
        frame = bytearray(flow.data())
        frame[14 + 4 * flow.vlans + 10] ^= 0x01
        return bytes(frame)
    if kind == 8 and not flow.v6:  # IPv4 options
        return flow.frame(rng.randbytes(flow.mss), options=[IPOption_NOP()] * 4)
    if kind == 9 and not flow.v6:  # fragment
        return flow.frame(rng.randbytes(flow.mss), frag=rng.choice((0, 10)),
                          ip_flags=rng.choice(("MF", 0)))
    if kind == 10:  # TTL / hop limit change
        flow.ttl = rng.choice((63, 64))
        return flow.data()
    if kind == 11:  # small segment padded to the Ethernet minimum
        payload = rng.randbytes(rng.randint(0, 5))
        frame = flow.frame(payload)
        flow.seq += len(payload)
        return frame + bytes(max(0, 60 - len(frame)))
    if kind == 12:  # ack number advances
        flow.ack += 1000
        return flow.data()
    if kind == 13:  # window change
        flow.window += 1
        return flow.data()
    if kind == 14 and not flow.v6:  # IP ID jump
        flow.ip_id = (flow.ip_id + 7) & 0xFFFF
        return flow.data()
    if kind == 15:  # truncated frame
        frame = flow.data()
        return frame[:rng.randint(1, min(len(frame), 70))]
    if kind == 16:  # UDP from the same hosts
        ip = IPv6(src=flow.src, dst=flow.dst) if flow.v6 else IP(src=flow.src, dst=flow.dst)
        return bytes(eth(flow.vlans) / ip / UDP(sport=flow.sport, dport=flow.dport)
                     / Raw(rng.randbytes(40)))
    if kind == 17 and flow.v6:  # IPv6 extension header
        return bytes(eth(flow.vlans) / IPv6(src=flow.src, dst=flow.dst) / IPv6ExtHdrDestOpt()
                     / TCP(sport=flow.sport, dport=flow.dport, seq=flow.seq, flags="A")
                     / Raw(rng.randbytes(flow.mss)))
    if kind == 18:  # ARP
        return bytes(Ether(src="02:00:00:00:00:01", dst="ff:ff:ff:ff:ff:ff") / ARP())
    if kind == 19:  # reserved IPv4 flag or TOS change
        if flow.v6:
            return flow.frame(rng.randbytes(flow.mss), tc=4)
        return flow.frame(rng.randbytes(flow.mss), ip_flags="evil")
    if kind == 20:  # a burst of nothing special: in-order data
        return flow.data()
    return flow.data()


def traffic(seed, count, flows=6, odd=0.15):
    """Return ``count`` frames of ``flows`` interleaved flows, ``odd`` of them unusual."""
    rng = random.Random(seed)
    pool = [Flow(rng, n) for n in range(flows)]
    frames = []
    pending = None
    while len(frames) < count:
        flow = rng.choice(pool[:max(1, min(flows, 1 + len(frames) // 4))])
        if rng.random() < odd:
            frame = _oddity(rng, flow)
        else:
            frame = flow.data()
        if pending is not None:  # reordering: the held-back frame goes after this one
            frames += [frame, pending]
            pending = None
        elif rng.random() < 0.02:
            pending = frame
        else:
            frames.append(frame)
    return frames[:count]
