# Ref: Linux net/core/gro.c (dev_gro_receive(), skb_gro_receive(), MAX_GRO_SKBS,
#      napi_gro_complete()), net/ipv4/af_inet.c inet_gro_receive()/inet_gro_complete(),
#      net/ipv6/ip6_offload.c ipv6_gro_receive(), include/net/gro.h inet_gro_flush()/
#      ipv6_gro_flush(), net/ipv4/tcp_offload.c tcp_gro_receive()/tcp4_gro_complete();
#      RFC 9293 §3.1 (TCP header), RFC 791 §3.1 (IPv4), RFC 8200 §3 (IPv6), RFC 6864 §4.1
#      (IPv4 ID of atomic datagrams)
"""Golden reference of the receive segment coalescing engine (LRO, with Linux GRO's rules).

The engine holds at most ``max_flows`` TCP flows. Each arriving frame is either merged into the
held segment of its flow, starts a new held segment, or is delivered at once; a held segment
is delivered when a later frame ends it, when it is evicted, at a timeout, or at the end of a
poll (:meth:`LroEngine.flush`). Delivered frames are :class:`Merged` records.

Eligibility (``inet_gro_receive()``, ``ipv6_gro_receive()``, ``tcp4/6_gro_receive()``): TCP
directly after an IPv4 header with IHL 5 (``0x45``), not a fragment, with a valid header
checksum, or directly after an IPv6 header (extension headers are not walked here; Linux walks
some), after 0 to 2 VLAN tags; a TCP header with data offset >= 5 inside the frame; and a TCP
checksum that verifies over the pseudo-header. Other frames are delivered alone, unchanged.

Flow: same Ethernet header and VLAN tags, addresses, IPv6 flow label, ports (Linux
``gro_list_prepare()``, ``tcp_gro_lookup()``). A segment of a held flow is merged when all of
these hold (``tcp_gro_receive()``, ``inet_gro_flush()``, ``ipv6_gro_flush()``):

* the 32-bit word of data offset, flags and window equals the held one, CWR, FIN and PSH
  excepted, and CWR is clear (``cwr_rule`` "restart" or "alone"; with "compare" only FIN and
  PSH may differ);
  the ack number and the option bytes are equal (TCP timestamps included: Linux lets neither
  TSval nor TSecr change inside one merged segment);
* IPv4: TTL, TOS and DF equal; the IP ID equals ``first_id + count`` (``count`` = segments held
  so far), or, for a flow whose second segment repeated the first ID with DF set (RFC 6864
  atomic datagrams; any DF with ``fixed_id_needs_df=False``), equals ``first_id``; IPv6:
  traffic class and hop limit equal;
* the payload is 1 to ``mss`` bytes, ``mss`` being the payload length of the held flow's first
  segment; the sequence number continues the held payload;
* the frame has no Ethernet padding or other trailing bytes (the IP length fields match the
  frame), the IPv4 reserved flag is clear, and the merged frame stays within ``max_bytes``.

A segment that fails one of these ends the held segment (delivered first), then is delivered
alone when it has no payload or carries URG, PSH, RST, SYN or FIN (or trailing bytes, or CWR
under ``cwr_rule="alone"``), else it starts a new held segment. A merged segment shorter than
``mss`` or carrying URG, PSH, RST, SYN or FIN delivers the held segment. A new flow beyond
``max_flows`` evicts the oldest held one.

A merged frame keeps the headers of the first segment, including its IP ID and options, ORs in
FIN and PSH of later segments, and gets a correct IPv4 total length / IPv6 payload length,
IPv4 header checksum and TCP checksum (what a NIC delivers with ``CHECKSUM_UNNECESSARY``; Linux
itself leaves a ``CHECKSUM_PARTIAL`` pseudo-header sum in the TCP checksum field). A held
segment that merged nothing is delivered byte for byte as it arrived.

Order: with ``keep_order`` (the default, what a NIC does), a frame that is ineligible for a
reason Linux checks before the flow lookup (IPv4 options, fragment, bad IPv4 header or TCP
checksum, bad TCP header) but whose addresses and ports match a held flow delivers that flow
first. Linux GRO instead passes such frames up ahead of the held segments of their flow;
``keep_order=False`` does the same.

Linux 6.18 on the development machine (veth GRO, ``tests/hw/test_ref_lro.py``) delivers the
same frames, byte for byte once its ``CHECKSUM_PARTIAL`` TCP checksum is completed, as
``LroEngine(keep_order=False, cwr_rule="alone", fixed_id_needs_df=False)``. Known differences
from Linux whatever the options: Linux walks IPv6 hop-by-hop, routing and destination-options
headers and merges behind them; it merges VLAN-tagged frames only with the 8021q module; it
holds up to 8 flows per GRO hash bucket (one bucket for NICs without an RX hash); UDP GRO
(socket opt-in or forwarding) is not modelled.
"""

from __future__ import annotations

import enum
from collections import Counter
from dataclasses import dataclass

from .checksum import csum_fold, ones_sum
from .packet import (
    ETH_HEADER_LEN,
    ETHERTYPE_IPV4,
    ETHERTYPE_IPV6,
    IPPROTO_TCP,
    IPV4_MIN_HEADER_LEN,
    IPV6_HEADER_LEN,
    be16,
    be32,
    parse_l2,
)

__all__ = [
    "CWR_RULES",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_FLOWS",
    "LroEngine",
    "Merged",
    "Reason",
    "lro_merge",
]

CWR_RULES = ("restart", "alone", "compare")
DEFAULT_MAX_FLOWS = 8  # Linux MAX_GRO_SKBS (per GRO hash bucket; one bucket without an RX hash)
# Linux skb_gro_receive(): refuse when p->len + len >= gro_max_size, GRO_LEGACY_MAX_SIZE = 65536
# by default; p->len counts the bytes after the 14-byte Ethernet header.
DEFAULT_MAX_BYTES = 65535

_TCP_MIN_HEADER_LEN = 20  # RFC 9293 §3.1
_IPV4_FRAGMENT_MASK = 0x3FFF  # MF flag and fragment offset
_IPV4_RESERVED_FLAG = 0x8000  # RFC 791 §3.1 bit 0 of the flags; Linux flushes on it
_IPV4_DF = 0x4000
_IPV6_FLOW_MASK = 0xF00FFFFF  # version and flow label: part of the flow (ipv6_gro_receive())
_IPV6_CLASS_MASK = 0x0FF00000  # traffic class: must match to merge
# Flags in the 32-bit TCP word of data offset, reserved bits, flags and window (offset 12).
_W_FIN = 0x01 << 16
_W_SYN = 0x02 << 16
_W_RST = 0x04 << 16
_W_PSH = 0x08 << 16
_W_URG = 0x20 << 16
_W_CWR = 0x80 << 16
_W_END = _W_URG | _W_PSH | _W_RST | _W_SYN | _W_FIN  # deliver once such a segment is in


class Reason(enum.StrEnum):
    """Why a :class:`Merged` frame was delivered.

    Members
    -------
    NOT_TCP
        Not TCP over IPv4/IPv6 (or an IPv6 header followed by another header first).
    IPV6_EXT_HEADERS
        IPv6 with extension headers before TCP.
    IP_OPTIONS, FRAGMENT, BAD_IP_CHECKSUM, BAD_TCP_CHECKSUM, MALFORMED
        Ineligible TCP frame: IPv4 IHL != 5, IPv4 fragment, IPv4 header checksum wrong, TCP
        checksum wrong, truncated header or TCP data offset < 5.
    LENGTH_MISMATCH, IP_RESERVED_FLAG
        The IP length fields disagree with the frame length (Ethernet padding, truncation), or
        the IPv4 reserved flag is set: the frame is never held.
    NO_PAYLOAD, FLAGS
        A segment that was not merged and is not held: no payload, or URG/PSH/RST/SYN/FIN set.
        ``FLAGS`` also ends a held segment that merged a segment with one of those flags.
        (``CWR`` is also the reason of a CWR segment delivered alone under ``cwr_rule="alone"``.)
    SHORT
        The held segment merged a segment shorter than its MSS.
    CWR, FLAGS_DIFFER, ACK_DIFFERS, OPTIONS_DIFFER, IP_DIFFERS, IP_ID, TOO_LONG, SEQ_GAP,
    MAX_BYTES, INELIGIBLE
        The held segment was ended by a segment of its flow that it could not merge: CWR set;
        data offset, flags (but CWR/FIN/PSH) or window differ; ack number differs; option
        bytes differ; IPv4 TTL/TOS/DF or IPv6 traffic class/hop limit differ; IPv4 ID out of
        sequence; payload empty or longer than the MSS; sequence number not contiguous; merged
        size would pass ``max_bytes``; the segment is ineligible or never held (see above).
    EVICTED, TIMEOUT, END_OF_POLL
        The held segment made room for a new flow, outlived ``timeout_ps``, or was flushed by
        :meth:`LroEngine.flush`.
    """

    NOT_TCP = "not_tcp"
    IPV6_EXT_HEADERS = "ipv6_ext_headers"
    IP_OPTIONS = "ip_options"
    FRAGMENT = "fragment"
    BAD_IP_CHECKSUM = "bad_ip_checksum"
    BAD_TCP_CHECKSUM = "bad_tcp_checksum"
    MALFORMED = "malformed"
    LENGTH_MISMATCH = "length_mismatch"
    IP_RESERVED_FLAG = "ip_reserved_flag"
    NO_PAYLOAD = "no_payload"
    FLAGS = "flags"
    SHORT = "short"
    CWR = "cwr"
    FLAGS_DIFFER = "flags_differ"
    ACK_DIFFERS = "ack_differs"
    OPTIONS_DIFFER = "options_differ"
    IP_DIFFERS = "ip_differs"
    IP_ID = "ip_id"
    TOO_LONG = "too_long"
    SEQ_GAP = "seq_gap"
    MAX_BYTES = "max_bytes"
    INELIGIBLE = "ineligible"
    EVICTED = "evicted"
    TIMEOUT = "timeout"
    END_OF_POLL = "end_of_poll"


# IPv6 next-header values that are extension headers (RFC 8200 §4, IANA registry).
_IPV6_EXT_HEADERS = frozenset((0, 43, 44, 50, 51, 60, 135, 139, 140, 253, 254))


@dataclass(frozen=True)
class Merged:
    """One frame delivered by the engine.

    Members
    -------
    frame : bytes
        The frame: a merged frame (``segs > 1``) or a single frame exactly as it arrived.
    segs : int
        Number of received frames it stands for (Linux ``gso_segs``).
    gso_size : int
        Payload length of the first segment when ``segs > 1`` (Linux ``gso_size``), else 0.
    reason : Reason
        Why it was delivered.
    t_ps : int or None
        Arrival time of its first frame, as given to :meth:`LroEngine.push`.
    """

    frame: bytes
    segs: int
    gso_size: int
    reason: Reason
    t_ps: int | None = None


class _Segment:
    """A parsed TCP frame that passed the eligibility checks."""

    __slots__ = (
        "frame", "key", "version", "l3", "l4", "payload", "flag_word", "ack", "options", "seq",
        "ip_word", "ip_id", "t_ps", "never_hold",
    )


class _Flow:
    """The held segment of one flow."""

    __slots__ = ("first", "header", "chunks", "payload_len", "count", "mss", "fixed_id",
                 "end_flags", "size")


def _store16(buf: bytearray, offset: int, value: int) -> None:
    buf[offset] = value >> 8
    buf[offset + 1] = value & 0xFF


def _flow_key(frame: bytes, l3: int, version: int, l4: int) -> bytes:
    """Ethernet header with VLAN tags, (IPv6: version and flow label), addresses and ports."""
    if version == 4:
        return frame[:l3] + frame[l3 + 12:l3 + 20] + frame[l4:l4 + 4]
    label = (be32(frame, l3) & _IPV6_FLOW_MASK).to_bytes(4, "big")
    return frame[:l3] + label + frame[l3 + 8:l3 + 40] + frame[l4:l4 + 4]


def _parse(frame: bytes) -> _Segment | tuple[Reason, bytes | None]:
    """Check eligibility; return the segment, or (reason, flow key or None) for a lone frame."""
    ethertype, l3, _ = parse_l2(frame)
    size = len(frame)
    if ethertype == ETHERTYPE_IPV4:
        if size < l3 + IPV4_MIN_HEADER_LEN or frame[l3] >> 4 != 4:
            return Reason.MALFORMED, None
        header_len = (frame[l3] & 0x0F) * 4
        if frame[l3 + 9] != IPPROTO_TCP:
            return Reason.NOT_TCP, None
        l4 = l3 + header_len
        frag = be16(frame, l3 + 6)
        # A frame Linux rejects before its flow lookup still names its flow for keep_order.
        key = None
        if header_len >= IPV4_MIN_HEADER_LEN and not frag & 0x1FFF and size >= l4 + 4:
            key = _flow_key(frame, l3, 4, l4)
        if header_len != IPV4_MIN_HEADER_LEN:
            return Reason.IP_OPTIONS if header_len > IPV4_MIN_HEADER_LEN else Reason.MALFORMED, key
        if frag & _IPV4_FRAGMENT_MASK:
            return Reason.FRAGMENT, key
        if ones_sum(frame[l3:l4]) != 0xFFFF:
            return Reason.BAD_IP_CHECKSUM, key
        ip_len = be16(frame, l3 + 2)
        never_hold = None
        if ip_len != size - l3:
            never_hold = Reason.LENGTH_MISMATCH
        elif frag & _IPV4_RESERVED_FLAG:
            never_hold = Reason.IP_RESERVED_FLAG
        addresses = frame[l3 + 12:l3 + 20]
        version = 4
    elif ethertype == ETHERTYPE_IPV6:
        if size < l3 + IPV6_HEADER_LEN or frame[l3] >> 4 != 6:
            return Reason.MALFORMED, None
        next_header = frame[l3 + 6]
        if next_header != IPPROTO_TCP:
            if next_header in _IPV6_EXT_HEADERS:
                return Reason.IPV6_EXT_HEADERS, None
            return Reason.NOT_TCP, None
        l4 = l3 + IPV6_HEADER_LEN
        key = _flow_key(frame, l3, 6, l4) if size >= l4 + 4 else None
        never_hold = None
        if be16(frame, l3 + 4) != size - l4:
            never_hold = Reason.LENGTH_MISMATCH
        addresses = frame[l3 + 8:l3 + 40]
        version = 6
    else:
        return Reason.NOT_TCP, None

    # tcp4/6_gro_receive(): the checksum is verified only for a frame not already flushed, over
    # the bytes after the IP header; then the header must be there in full.
    if never_hold is None:
        tcp_len = size - l4
        if ones_sum(frame[l4:], ones_sum(addresses, IPPROTO_TCP + tcp_len)) != 0xFFFF:
            return Reason.BAD_TCP_CHECKSUM, key
    if size < l4 + _TCP_MIN_HEADER_LEN:
        return Reason.MALFORMED, key
    tcp_header_len = (frame[l4 + 12] >> 4) * 4
    if tcp_header_len < _TCP_MIN_HEADER_LEN or size < l4 + tcp_header_len:
        return Reason.MALFORMED, key

    seg = _Segment()
    seg.frame = frame
    seg.key = key
    seg.version = version
    seg.l3 = l3
    seg.l4 = l4
    seg.payload = l4 + tcp_header_len
    seg.flag_word = be32(frame, l4 + 12)
    seg.ack = frame[l4 + 8:l4 + 12]
    seg.options = frame[l4 + _TCP_MIN_HEADER_LEN:l4 + tcp_header_len]
    seg.seq = be32(frame, l4 + 4)
    # IPv4: TOS (byte 1) and TTL (byte 8); IPv6: traffic class and hop limit (byte 7).
    if version == 4:
        seg.ip_word = (frame[l3 + 1], frame[l3 + 8], frame[l3 + 6] & 0x40)
        seg.ip_id = be16(frame, l3 + 4)
    else:
        seg.ip_word = (be32(frame, l3) & _IPV6_CLASS_MASK, frame[l3 + 7])
        seg.ip_id = 0
    seg.never_hold = never_hold
    return seg


class LroEngine:
    """Coalesce received TCP segments of up to ``max_flows`` flows (see the module docstring).

    Parameters
    ----------
    max_flows : int
        Flows held at once (Linux ``MAX_GRO_SKBS`` = 8); a new flow beyond it evicts the
        oldest held one.
    max_bytes : int
        Largest merged frame, counted after the 14-byte Ethernet header (VLAN tags and IP
        datagram; Linux ``gro_max_size`` - 1). 65535 at most.
    timeout_ps : int or None
        When set, a :meth:`push` with a time first delivers the held segments whose first frame
        arrived ``timeout_ps`` or more earlier (the hardware's aggregation timer).
    keep_order : bool
        Let an ineligible frame of a held flow deliver that flow first (see the module
        docstring); ``False`` reproduces Linux GRO, which passes it up ahead.
    cwr_rule : str
        What a segment with CWR set does (RFC 3168 §6.1.2: the sender's first segment after a
        window reduction). ``"restart"`` (default): it is never merged into a held segment; it
        ends the held segment of its flow and may start a new one (Linux ``tcp_gro_receive()``
        source up to 6.17). ``"alone"``: it ends the held segment and is delivered alone, never
        held (what Linux 6.18 on the development machine does). ``"compare"``: CWR is compared
        like the other flags, so segments merge with segments of the same CWR value (Linux
        after the AccECN change "gro: flushing when CWR is set negatively affects AccECN").
    fixed_id_needs_df : bool
        A flow may keep one IPv4 ID for all its segments only when DF is set (RFC 6864 atomic
        datagrams; Linux 6.10 to 6.17 ``inet_gro_flush()``). ``False``: also without DF, as
        later kernels do.

    Members
    -------
    held : int
        Number of flows held now.
    delivered : collections.Counter
        Number of :class:`Merged` frames delivered so far, by :class:`Reason`.
    frames_in, frames_out : int
        Frames pushed, and frames delivered (a merged frame counts once).

    Raises
    ------
    ValueError
        If ``max_flows`` < 1, ``max_bytes`` is not in 1..65535, ``timeout_ps`` < 0, or
        ``cwr_rule`` is not one of :data:`CWR_RULES`.
    """

    def __init__(
        self,
        max_flows: int = DEFAULT_MAX_FLOWS,
        max_bytes: int = DEFAULT_MAX_BYTES,
        timeout_ps: int | None = None,
        keep_order: bool = True,
        cwr_rule: str = "restart",
        fixed_id_needs_df: bool = True,
    ) -> None:
        if not isinstance(max_flows, int) or max_flows < 1:
            raise ValueError(f"max_flows must be a positive integer, not {max_flows!r}")
        if not isinstance(max_bytes, int) or not 1 <= max_bytes <= 0xFFFF:
            raise ValueError(f"max_bytes must be an integer from 1 to 65535, not {max_bytes!r}")
        if timeout_ps is not None and (not isinstance(timeout_ps, int) or timeout_ps < 0):
            raise ValueError(f"timeout_ps must be a non-negative integer, not {timeout_ps!r}")
        self.max_flows = max_flows
        self.max_bytes = max_bytes
        self.timeout_ps = timeout_ps
        self.keep_order = keep_order
        if cwr_rule not in CWR_RULES:
            raise ValueError(f"cwr_rule must be one of {CWR_RULES}, not {cwr_rule!r}")
        self.cwr_rule = cwr_rule
        self.fixed_id_needs_df = fixed_id_needs_df
        self.delivered: Counter[Reason] = Counter()
        self.frames_in = 0
        self.frames_out = 0
        self._flows: dict[bytes, _Flow] = {}  # insertion order: oldest first

    @property
    def held(self) -> int:
        return len(self._flows)

    def push(self, frame: bytes | bytearray | memoryview, t_ps: int | None = None) -> list[Merged]:
        """Receive one frame.

        Parameters
        ----------
        frame : bytes-like
            Ethernet frame without FCS.
        t_ps : int or None
            Arrival time in picoseconds, kept in :attr:`Merged.t_ps` and used for timeouts.

        Returns
        -------
        list of Merged
            The frames this arrival delivers, in delivery order (possibly none).
        """
        out: list[Merged] = []
        if t_ps is not None and self.timeout_ps is not None:
            out += self.expire(t_ps)
        data = bytes(frame)
        self.frames_in += 1
        seg = _parse(data)
        if isinstance(seg, tuple):
            reason, key = seg
            if self.keep_order and key is not None and key in self._flows:
                out.append(self._deliver(key, Reason.INELIGIBLE))
            out.append(self._single(data, reason, t_ps))
            return out

        seg.t_ps = t_ps
        payload_len = len(data) - seg.payload
        flow = self._flows.get(seg.key)
        if flow is not None:
            reason = self._mismatch(flow, seg, payload_len)
            if reason is None:
                self._merge(flow, seg, payload_len)
                if payload_len < flow.mss:
                    out.append(self._deliver(seg.key, Reason.SHORT))
                elif seg.flag_word & _W_END:
                    out.append(self._deliver(seg.key, Reason.FLAGS))
                return out
            out.append(self._deliver(seg.key, reason))

        if seg.never_hold is not None:
            out.append(self._single(data, seg.never_hold, t_ps))
        elif payload_len == 0:
            out.append(self._single(data, Reason.NO_PAYLOAD, t_ps))
        elif seg.flag_word & _W_END:
            out.append(self._single(data, Reason.FLAGS, t_ps))
        elif seg.flag_word & _W_CWR and self.cwr_rule == "alone":
            out.append(self._single(data, Reason.CWR, t_ps))
        else:
            if len(self._flows) >= self.max_flows:
                out.append(self._deliver(next(iter(self._flows)), Reason.EVICTED))
            self._hold(seg, payload_len)
        return out

    def expire(self, t_ps: int) -> list[Merged]:
        """Deliver the held segments whose first frame arrived ``timeout_ps`` or more before.

        Parameters
        ----------
        t_ps : int
            Current time in picoseconds.

        Returns
        -------
        list of Merged
            Oldest first; none when ``timeout_ps`` is ``None`` or frames carried no time.
        """
        if self.timeout_ps is None:
            return []
        old = [
            key for key, flow in self._flows.items()
            if flow.first.t_ps is not None and t_ps - flow.first.t_ps >= self.timeout_ps
        ]
        return [self._deliver(key, Reason.TIMEOUT) for key in old]

    def flush(self) -> list[Merged]:
        """Deliver every held segment, oldest first (end of a poll, Linux ``napi_gro_flush()``).

        Returns
        -------
        list of Merged
        """
        return [self._deliver(key, Reason.END_OF_POLL) for key in list(self._flows)]

    # -----------------------------------------------------------------------------------------

    def _mismatch(self, flow: _Flow, seg: _Segment, payload_len: int) -> Reason | None:
        """Return why ``seg`` cannot be merged into ``flow`` (first failing rule), or None."""
        first = flow.first
        if self.cwr_rule == "compare":
            may_differ = _W_FIN | _W_PSH
        else:
            if seg.flag_word & _W_CWR:
                return Reason.CWR
            may_differ = _W_CWR | _W_FIN | _W_PSH
        if (seg.flag_word ^ first.flag_word) & ~may_differ:
            return Reason.FLAGS_DIFFER
        if seg.ack != first.ack:
            return Reason.ACK_DIFFERS
        if seg.options != first.options:
            return Reason.OPTIONS_DIFFER
        if seg.ip_word != first.ip_word:
            return Reason.IP_DIFFERS
        if seg.version == 4:
            id_offset = (seg.ip_id - first.ip_id) & 0xFFFF
            # inet_gro_flush(): the second segment decides between an incrementing and a fixed
            # ID; a fixed ID needs DF (RFC 6864: only atomic datagrams may repeat an ID).
            df_ok = seg.ip_word[2] or not self.fixed_id_needs_df
            fixed = flow.fixed_id or (flow.count == 1 and id_offset == 0 and df_ok)
            if id_offset != (0 if fixed else flow.count & 0xFFFF):
                return Reason.IP_ID
        if payload_len == 0 or payload_len > flow.mss:
            return Reason.TOO_LONG
        if seg.seq != (first.seq + flow.payload_len) & 0xFFFFFFFF:
            return Reason.SEQ_GAP
        if seg.never_hold is not None:
            return Reason.INELIGIBLE
        if flow.size + payload_len > self.max_bytes:
            return Reason.MAX_BYTES
        return None

    def _hold(self, seg: _Segment, payload_len: int) -> None:
        flow = _Flow()
        flow.first = seg
        flow.header = seg.frame[:seg.payload]
        flow.chunks = [seg.frame[seg.payload:]]
        flow.payload_len = payload_len
        flow.count = 1
        flow.mss = payload_len
        flow.fixed_id = False
        flow.end_flags = 0
        flow.size = len(seg.frame) - ETH_HEADER_LEN
        self._flows[seg.key] = flow

    def _merge(self, flow: _Flow, seg: _Segment, payload_len: int) -> None:
        if flow.count == 1 and seg.version == 4 and seg.ip_id == flow.first.ip_id:
            flow.fixed_id = True  # _mismatch() let it through: DF is set or not required
        flow.chunks.append(seg.frame[seg.payload:])
        flow.payload_len += payload_len
        flow.count += 1
        flow.end_flags |= (seg.flag_word >> 16) & 0x09  # FIN, PSH
        flow.size += payload_len

    def _single(self, frame: bytes, reason: Reason, t_ps: int | None) -> Merged:
        self.delivered[reason] += 1
        self.frames_out += 1
        return Merged(frame, 1, 0, reason, t_ps)

    def _deliver(self, key: bytes, reason: Reason) -> Merged:
        flow = self._flows.pop(key)
        first = flow.first
        self.delivered[reason] += 1
        self.frames_out += 1
        if flow.count == 1:
            return Merged(first.frame, 1, 0, reason, first.t_ps)
        l3, l4 = first.l3, first.l4
        header = bytearray(flow.header)
        header[l4 + 13] |= flow.end_flags
        tcp_len = len(header) - l4 + flow.payload_len
        if first.version == 4:
            _store16(header, l3 + 2, l4 - l3 + tcp_len)
            _store16(header, l3 + 10, 0)
            _store16(header, l3 + 10, ~ones_sum(header[l3:l4]) & 0xFFFF)
            addresses = header[l3 + 12:l3 + 20]
        else:
            _store16(header, l3 + 4, tcp_len)
            addresses = header[l3 + 8:l3 + 40]
        _store16(header, l4 + 16, 0)
        payload = b"".join(flow.chunks)
        # The TCP header has an even length: its sum and the payload's add without a swap.
        total = ones_sum(addresses, IPPROTO_TCP + tcp_len) + ones_sum(header[l4:])
        _store16(header, l4 + 16, ~csum_fold(total + ones_sum(payload)) & 0xFFFF)
        return Merged(bytes(header) + payload, flow.count, flow.mss, reason, first.t_ps)


def lro_merge(
    frames,
    *,
    max_flows: int = DEFAULT_MAX_FLOWS,
    max_bytes: int = DEFAULT_MAX_BYTES,
    keep_order: bool = True,
    cwr_rule: str = "restart",
    fixed_id_needs_df: bool = True,
) -> list[Merged]:
    """Coalesce a sequence of received frames as one poll: push them all, then flush.

    The hardware engine (:mod:`nicsim.rtl.lro`) gives the same frames for the same
    ``max_flows`` and ``max_bytes`` when the last frame of the sequence asks for a flush.

    Parameters
    ----------
    frames : iterable of bytes-like
        Ethernet frames without FCS, in arrival order.
    max_flows, max_bytes, keep_order, cwr_rule, fixed_id_needs_df
        As for :class:`LroEngine`.

    Returns
    -------
    list of Merged
        Delivered frames in delivery order, each with ``segs`` and ``gso_size``.
    """
    engine = LroEngine(max_flows=max_flows, max_bytes=max_bytes, keep_order=keep_order,
                       cwr_rule=cwr_rule, fixed_id_needs_df=fixed_id_needs_df)
    out: list[Merged] = []
    for frame in frames:
        out += engine.push(frame)
    return out + engine.flush()
