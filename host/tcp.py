# Ref: RFC 9293 §3.1 (header format), §3.4 (sequence numbers), §3.8.6.3 (delayed ACKs: an ACK
#      for at least every second full-sized segment), §3.10.7.4 (segment arrives: ESTABLISHED);
#      Linux net/ipv4/tcp_input.c (__tcp_ack_snd_check(), tcp_measure_rcv_mss(),
#      tcp_data_queue()), net/ipv4/tcp_output.c (tcp_select_window(): rcv_wup),
#      include/net/tcp.h (TCP_DELACK_MIN); mTCP src/tcp_in.c (ProcessTCPPayload(),
#      EnqueueACK() with ACK_OPT_AGGREGATE for in-order data, ACK_OPT_NOW otherwise)
"""TCP for the host paths that run one: segments, connections, ACK rules, frames to send.

The TCP applications (:data:`TCP_APPS`) run on the paths with a TCP stack (:data:`TCP_PATHS`):

``tcp_bulk``
    The traffic is one or more TCP streams from a remote sender that is *open loop*: it sends
    at its configured rate whatever the host acknowledges (no congestion or flow control, no
    retransmission). The host receives, delivers the data to the application in order, and
    acknowledges with real ACK segments through the NIC's transmit path.
``tcp_rr``
    netperf ``TCP_RR``: closed-loop clients each send a request segment and wait for the
    reply; the server answers each request on its connection with one segment of
    ``host.rr_reply_bytes`` (default: the request's payload size), the ACK piggybacked.

Connections have no handshake here: a connection is taken as established at the first segment
of its 4-tuple, which sets the next expected sequence number (``rcv_nxt``), and what the host
sends starts at the sequence number that segment acknowledges. The receive MSS (``rcv_mss``,
what the delayed-ACK rule compares with) is learned from the segments as
``tcp_measure_rcv_mss()`` learns it from full-sized ones: the largest payload seen, or a merged
skb's ``gso_size``.

Out of order. A segment past ``rcv_nxt`` means the NIC or the host dropped one before it.
Linux and mTCP answer out-of-order data with an immediate (duplicate) ACK of ``rcv_nxt``, and
the data would wait for the retransmission; the open-loop sender never retransmits, so the
stream would stall for good. The model sends that duplicate ACK, counts the hole
(:attr:`Connection.holes`), and then goes on as if the hole had been filled: later data is
delivered and acknowledged. Data wholly before ``rcv_nxt`` (a duplicate) is answered with an
immediate ACK and dropped (``tcp_old_data``); a segment without payload is consumed by the
stack (``tcp_no_payload``).

Frames the host sends (:meth:`Connection.frame`) swap the addresses and ports of the
connection's segments, keep their VLAN tags, carry IPv4 with DF, TTL 64 and an ID counting up
per connection (IPv6: hop limit 64), a 20-byte TCP header (the stream's segments carry no
options, so none were negotiated) and a window of the free receive buffer at window scale 7
(what Linux negotiates with its default ``tcp_rmem``). Checksums: ``"partial"`` leaves the TCP
checksum to the NIC as Linux's ``CHECKSUM_PARTIAL`` does (the pseudo-header sum as the seed;
the IPv4 header checksum computed by the stack), ``"auto"`` leaves both to the NIC (DPDK's
``PKT_TX_IP_CKSUM | PKT_TX_TCP_CKSUM``, what mTCP asks for), ``"soft"`` computes both.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from nicsim.hw.nic.formats import TxFlags
from nicsim.hw.ref.checksum import ones_sum
from nicsim.hw.ref.packet import IPPROTO_TCP, be16, be32, parse_ip

__all__ = ["TCP_APPS", "TCP_PATHS", "Segment", "parse_segment", "Connection", "IN_ORDER",
           "HOLE", "OLD", "EMPTY", "DELACK_PS", "WSCALE", "FIN", "SYN", "RST", "PSH", "ACK",
           "MSS_IPV4", "MSS_IPV6", "payload_bytes"]

TCP_APPS = ("tcp_bulk", "tcp_rr")
TCP_PATHS = ("linux", "mtcp")  # host paths with a TCP stack
DELACK_PS = 40_000_000_000  # Linux TCP_DELACK_MIN (HZ / 25): 40 ms
WSCALE = 7  # window scale Linux offers with tcp_rmem's default maximum (6 MiB)
TTL = 64  # Linux net.ipv4.ip_default_ttl
MSS_IPV4 = 1460  # 1500-byte MTU less IPv4 and TCP headers
MSS_IPV6 = 1440
FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
IN_ORDER, HOLE, OLD, EMPTY = range(4)  # Connection.receive() verdicts
_SEQ_MASK = 0xFFFFFFFF
_HALF = 1 << 31
_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_IPV6 = struct.Struct("!IHBB16s16s")
_TCP = struct.Struct("!HHIIBBHHH")
_TCP_HEADER = 20


class Segment(NamedTuple):
    """A TCP segment as the receiver reads it (:func:`parse_segment`).

    Members
    -------
    key : bytes
        Source and destination address and ports as sent: the connection's identity.
    version : int
        IP version.
    l3, l4 : int
        Offsets of the IP and TCP headers.
    seq, ack : int
        Sequence and acknowledgment numbers.
    flags : int
        TCP flags (``FIN`` .. ``ACK``, and ``URG``, ``ECE``, ``CWR`` above them).
    payload : int
        Payload bytes (Ethernet padding excluded).
    """

    key: bytes
    version: int
    l3: int
    l4: int
    seq: int
    ack: int
    flags: int
    payload: int


def parse_segment(data):
    """Return the :class:`Segment` of an Ethernet frame, or ``None`` when it is not a complete
    TCP segment over IPv4 (not a fragment) or IPv6 (no extension headers)."""
    ip = parse_ip(data)
    if ip is None or ip.protocol != IPPROTO_TCP:
        return None
    version, l3, hlen, _ = ip
    l4 = l3 + hlen
    if version == 4:
        if be16(data, l3 + 6) & 0x3FFF:  # MF or a fragment offset
            return None
        end = l3 + be16(data, l3 + 2)
        key = data[l3 + 12:l3 + 20] + data[l4:l4 + 4]
    else:
        end = l4 + be16(data, l3 + 4)
        key = data[l3 + 8:l3 + 40] + data[l4:l4 + 4]
    if end > len(data) or end < l4 + _TCP_HEADER:
        return None
    doff = (data[l4 + 12] >> 4) * 4
    if doff < _TCP_HEADER or l4 + doff > end:
        return None
    return Segment(bytes(key), version, l3, l4, be32(data, l4 + 4), be32(data, l4 + 8),
                   data[l4 + 13], end - l4 - doff)


def payload_bytes(size):
    """Return ``size`` bytes of reply payload (a fixed pattern)."""
    return bytes(n & 0xFF for n in range(size))


def _after(a, b):
    """Whether sequence number ``a`` is after ``b`` (RFC 9293 §3.4, modulo 2**32)."""
    return 0 < ((a - b) & _SEQ_MASK) < _HALF


class Connection:
    """One TCP connection as the host sees it: receive state and what it sends back.

    Parameters
    ----------
    data : bytes
        A frame of the connection as received (its first).
    seg : Segment
        That frame's segment.

    Members
    -------
    rcv_nxt : int
        The next sequence number expected: everything before it was received (in order).
    rcv_wup : int
        ``rcv_nxt`` as the last ACK sent acknowledged it.
    rcv_mss : int
        The receive MSS learned from the segments (0 until one with payload came).
    snd_nxt : int
        The host's next sequence number (what the peer acknowledges; the host sends no data
        in ``tcp_bulk``).
    holes : int
        Out-of-order arrivals: segments after a gap the model went on past.
    acks : int
        ACK segments sent without data.
    delack : int or None
        When the pending delayed ACK is due (ps), or ``None`` (Linux; an ACK sent clears it).
    timer : bool
        A timer process watches ``delack``.
    """

    __slots__ = ("rcv_nxt", "rcv_wup", "rcv_mss", "snd_nxt", "holes", "acks", "delack",
                 "timer", "ip_id", "version", "_eth", "_src", "_dst", "_ports", "_l4")

    def __init__(self, data, seg):
        self.rcv_nxt = self.rcv_wup = seg.seq
        self.rcv_mss = 0
        self.snd_nxt = seg.ack
        self.holes = 0
        self.acks = 0
        self.delack = None
        self.timer = False
        self.ip_id = 0
        self.version = seg.version
        l3, l4 = seg.l3, seg.l4
        self._eth = bytes(data[6:12] + data[0:6] + data[12:l3])
        if seg.version == 4:
            self._src, self._dst = bytes(data[l3 + 16:l3 + 20]), bytes(data[l3 + 12:l3 + 16])
            self._l4 = l3 + 20
        else:
            self._src, self._dst = bytes(data[l3 + 24:l3 + 40]), bytes(data[l3 + 8:l3 + 24])
            self._l4 = l3 + 40
        self._ports = bytes(data[l4 + 2:l4 + 4] + data[l4:l4 + 2])

    def receive(self, seq, length, gso=None):
        """Take ``length`` payload bytes at ``seq`` (a merged skb: ``gso`` bytes a segment);
        return :data:`IN_ORDER`, :data:`HOLE` (after a gap: acknowledge ``rcv_nxt`` at once,
        then :meth:`skip`), :data:`OLD` (nothing new: acknowledge at once, drop) or
        :data:`EMPTY` (no payload)."""
        if length <= 0:
            return EMPTY
        size = gso or length
        if size > self.rcv_mss:  # tcp_measure_rcv_mss()
            self.rcv_mss = size
        end = (seq + length) & _SEQ_MASK
        if _after(seq, self.rcv_nxt):
            self.holes += 1
            return HOLE
        if not _after(end, self.rcv_nxt):
            return OLD
        self.rcv_nxt = end  # in order (or overlapping: the new part)
        return IN_ORDER

    def skip(self, seq, length):
        """Go on past a hole before ``seq`` as if it had been filled (the open-loop sender
        never retransmits it)."""
        self.rcv_wup = seq
        self.rcv_nxt = (seq + length) & _SEQ_MASK

    def ack_due(self):
        """Linux's ``__tcp_ack_snd_check()``: acknowledge now when more than one full-sized
        segment is unacknowledged (``rcv_nxt - rcv_wup > rcv_mss``)."""
        return ((self.rcv_nxt - self.rcv_wup) & _SEQ_MASK) > self.rcv_mss

    def unacked(self):
        """Whether data was received that no ACK has acknowledged yet."""
        return self.rcv_nxt != self.rcv_wup

    def ack_frame(self, window_bytes, csum):
        """Return ``(frame, tx flags, param)`` of an ACK of ``rcv_nxt`` (and note it sent)."""
        self.rcv_wup = self.rcv_nxt
        self.acks += 1
        self.delack = None
        return self.frame(self.snd_nxt, self.rcv_nxt, ACK, b"", window_bytes, csum)

    def frame(self, seq, ack, flags, payload, window_bytes, csum):
        """Return ``(frame, tx flags, param)``: a segment of this connection towards the peer.

        ``csum`` is ``"partial"``, ``"auto"`` or ``"soft"`` (see the module documentation);
        ``param`` is the descriptor's ``csum_start | csum_offset << 8`` for ``"partial"``.
        """
        tcp_len = _TCP_HEADER + len(payload)
        window = min(0xFFFF, max(0, window_bytes) >> WSCALE)
        src, dst = self._src, self._dst
        pseudo = ones_sum(src + dst, IPPROTO_TCP + tcp_len)
        if self.version == 4:
            ident = self.ip_id
            self.ip_id = (ident + 1) & 0xFFFF
            iph = bytearray(_IPV4.pack(0x45, 0, 20 + tcp_len, ident, 0x4000, TTL, IPPROTO_TCP,
                                       0, src, dst))
            if csum != "auto":  # ip_send_check(): the stack sums the IPv4 header itself
                iph[10:12] = (~ones_sum(iph) & 0xFFFF).to_bytes(2, "big")
            iph = bytes(iph)
        else:
            iph = _IPV6.pack(0x60000000, tcp_len, IPPROTO_TCP, TTL, src, dst)
        head = self._ports + _TCP.pack(0, 0, seq & _SEQ_MASK, ack & _SEQ_MASK, 5 << 4, flags,
                                       window, 0, 0)[4:]
        if csum == "partial":  # CHECKSUM_PARTIAL: the pseudo-header sum as the seed
            tcp = head[:16] + pseudo.to_bytes(2, "big") + head[18:]
            return (self._eth + iph + tcp + payload, TxFlags.CSUM_PARTIAL,
                    self._l4 | 16 << 8)
        if csum == "auto":
            return self._eth + iph + head + payload, TxFlags.CSUM_AUTO, 0
        check = ~ones_sum(head + payload, pseudo) & 0xFFFF
        tcp = head[:16] + check.to_bytes(2, "big") + head[18:]
        return self._eth + iph + tcp + payload, 0, 0
