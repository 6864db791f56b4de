# Ref: Linux net/ipv4/tcp_offload.c tcp_gso_segment(), net/ipv4/af_inet.c inet_gso_segment(),
#      net/ipv6/ip6_offload.c ipv6_gso_segment(), net/ipv4/udp_offload.c __udp_gso_segment()
#      (SKB_GSO_UDP_L4); QEMU hw/net/e1000.c xmit_seg(); RFC 9293 §3.1 (TCP header),
#      RFC 768 (UDP), RFC 791 §3.1 (IPv4 header), RFC 8200 §3 and §8.1 (IPv6), RFC 6864 §4.1
#      (IPv4 ID of atomic datagrams), RFC 3168 §6.1.2 (CWR)
"""Golden reference of the transmit segmentation engine: TCP (TSO) and UDP (USO).

The driver hands the engine one super-frame: Ethernet header, 0 to 2 VLAN tags, an IPv4 header
(options allowed) or an IPv6 header (no extension headers), a TCP header (options allowed) or a
UDP header, and a payload of any length. The engine cuts the payload into pieces of ``mss``
bytes (the last one shorter) and sends each behind a copy of the headers, fixed up as Linux's
software GSO does:

* IPv4 total length / IPv6 payload length of the segment; IPv4 ID ``id + i`` for segment ``i``
  (modulo 2**16) unless the descriptor asks for a fixed ID (Linux ``SKB_GSO_TCP_FIXEDID``, which
  the stack sets only for DF datagrams, RFC 6864); IPv4 header checksum recomputed.
* TCP: sequence number ``seq + i * mss``; FIN and PSH kept only on the last segment, CWR only
  on the first; checksum recomputed over the pseudo-header. Other fields (ack, window, urgent
  pointer, options) are copied.
* UDP (``SKB_GSO_UDP_L4``): every segment is a whole datagram with its own UDP length and
  checksum; a computed checksum of 0 is sent as 0xffff.

As in Linux GSO and NIC TSO engines, the length fields and checksums of the super-frame are not
checked: the payload is every byte after the TCP/UDP header up to the end of the frame. A payload
of at most ``mss`` bytes (or none) gives one frame with its lengths and checksums filled in.

Linux 6.18's software GSO on the development machine (``tests/hw/test_ref_tso.py``: a
super-frame with a ``virtio_net_hdr`` written to a veth without TSO and checksum offload) sends
the same bytes for TCP and UDP over IPv4 (options too) and IPv6, with 0 to 2 VLAN tags. Not
compared there: fixed IDs (``virtio_net_hdr`` cannot ask for them); AccECN super-frames
(``SKB_GSO_TCP_ACCECN`` keeps CWR on every segment) are not modelled; for a payload of at most
``mss`` bytes Linux only completes the L4 checksum and leaves the IP header as the stack wrote
it, which is the same frame when the stack wrote consistent lengths.

:func:`tso_segment` is the contract of the engine (``nicsim.rtl.tso``): :func:`segment` within
the engine's limits (MSS 1 to :data:`MAX_MSS`, payload up to :data:`MAX_PAYLOAD`), and a drop
(``"short"``) for a payload shorter than the MSS, which Linux would send as it is.
"""

from __future__ import annotations

from dataclasses import dataclass

from .checksum import csum_fold, ones_sum
from .packet import (
    ETHERTYPE_IPV4,
    ETHERTYPE_IPV6,
    IPPROTO_TCP,
    IPPROTO_UDP,
    be16,
    be32,
    parse_ip,
    parse_l2,
)

__all__ = [
    "DROP_BAD_MSS",
    "DROP_FRAGMENT",
    "DROP_IPV6_EXT_HEADERS",
    "DROP_MALFORMED",
    "DROP_NOT_IP",
    "DROP_OVERSIZE",
    "DROP_WRONG_PROTOCOL",
    "KINDS",
    "DROP_SHORT",
    "MAX_MSS",
    "MAX_PAYLOAD",
    "TsoResult",
    "segment",
    "tso_segment",
]

KINDS = ("tcp", "udp")

DROP_BAD_MSS = "bad_mss"  # mss is not a positive integer
DROP_NOT_IP = "not_ip"  # ethertype after the VLAN tags is neither IPv4 nor IPv6
DROP_MALFORMED = "malformed"  # truncated or invalid IP/TCP/UDP header
DROP_FRAGMENT = "fragment"  # IPv4 MF flag or fragment offset set
DROP_IPV6_EXT_HEADERS = "ipv6_ext_headers"  # IPv6 next header is an extension header
DROP_WRONG_PROTOCOL = "wrong_protocol"  # not TCP for kind "tcp", not UDP for kind "udp"
DROP_OVERSIZE = "oversize"  # a segment would not fit the 16-bit IP length field
DROP_SHORT = "short"  # tso_segment: the payload is shorter than the MSS

#: Largest MSS of the engine (:func:`tso_segment`): a 9000-byte jumbo MTU fits.
MAX_MSS = 9000
#: Largest payload of a super-frame the engine takes (:func:`tso_segment`): 64 KiB, Linux's
#: ``GSO_LEGACY_MAX_SIZE`` (include/linux/netdevice.h).
MAX_PAYLOAD = 65536

_MAX_IP_LEN = 0xFFFF  # IPv4 total length / IPv6 payload length fields are 16 bits
_TCP_MIN_HEADER_LEN = 20  # RFC 9293 §3.1
_UDP_HEADER_LEN = 8  # RFC 768
_IPV4_FRAGMENT_MASK = 0x3FFF  # MF flag and fragment offset; not DF
# RFC 8200 §4 / IANA: hop-by-hop, routing, fragment, ESP, AH, destination options, mobility,
# HIP, shim6, and the two experimental numbers.
_IPV6_EXT_HEADERS = frozenset((0, 43, 44, 50, 51, 60, 135, 139, 140, 253, 254))
_TCP_FIN = 0x01
_TCP_PSH = 0x08
_TCP_CWR = 0x80


@dataclass(frozen=True)
class TsoResult:
    """Segmentation result of one super-frame.

    Members
    -------
    frames : tuple of bytes
        The segments in sending order; empty when the super-frame is dropped.
    drop_reason : str or None
        One of the ``DROP_*`` strings when dropped, else ``None``.
    """

    frames: tuple[bytes, ...]
    drop_reason: str | None


def _drop(reason: str) -> TsoResult:
    return TsoResult((), reason)


def _store16(buf: bytearray, offset: int, value: int) -> None:
    buf[offset] = value >> 8
    buf[offset + 1] = value & 0xFF


def segment(
    frame: bytes | bytearray | memoryview, mss: int, kind: str = "tcp", fixed_id: bool = False
) -> TsoResult:
    """Cut a TCP or UDP super-frame into frames of at most ``mss`` payload bytes.

    Parameters
    ----------
    frame : bytes-like
        Super-frame without FCS (see the module docstring).
    mss : int
        Payload bytes per segment (Linux ``gso_size``): TCP payload after the TCP header and its
        options, or UDP payload after the UDP header.
    kind : str
        ``"tcp"`` (TSO, Linux ``SKB_GSO_TCPV4``/``SKB_GSO_TCPV6``) or ``"udp"`` (USO,
        ``SKB_GSO_UDP_L4``).
    fixed_id : bool
        Keep the IPv4 ID of the super-frame in every segment instead of incrementing it.

    Returns
    -------
    TsoResult
        The segments, or a drop reason: ``"bad_mss"`` (mss not positive), ``"not_ip"``,
        ``"malformed"`` (IP header truncated, of the wrong version or with IHL < 5; TCP header
        truncated or with data offset < 5; UDP header truncated), ``"fragment"`` (IPv4),
        ``"ipv6_ext_headers"``, ``"wrong_protocol"`` (the IP header does not carry ``kind``),
        ``"oversize"`` (a segment's IP length would pass 65535).

    Raises
    ------
    ValueError
        If ``kind`` is not ``"tcp"`` or ``"udp"`` (a caller error, not a property of the frame).
    """
    if kind not in KINDS:
        raise ValueError(f"Segmentation kind must be one of {KINDS}, not {kind!r}")
    if not isinstance(mss, int) or mss <= 0:
        return _drop(DROP_BAD_MSS)
    data = bytes(frame)
    ip = parse_ip(data)
    if ip is None:
        ethertype = parse_l2(data).ethertype
        return _drop(DROP_MALFORMED if ethertype in (ETHERTYPE_IPV4, ETHERTYPE_IPV6) else
                     DROP_NOT_IP)
    version, l3, ip_header_len, protocol = ip
    if version == 4 and be16(data, l3 + 6) & _IPV4_FRAGMENT_MASK:
        return _drop(DROP_FRAGMENT)
    wanted = IPPROTO_TCP if kind == "tcp" else IPPROTO_UDP
    if protocol != wanted:
        if version == 6 and protocol in _IPV6_EXT_HEADERS:
            return _drop(DROP_IPV6_EXT_HEADERS)
        return _drop(DROP_WRONG_PROTOCOL)

    l4 = l3 + ip_header_len
    if kind == "tcp":
        if len(data) < l4 + _TCP_MIN_HEADER_LEN:
            return _drop(DROP_MALFORMED)
        l4_header_len = (data[l4 + 12] >> 4) * 4
        if l4_header_len < _TCP_MIN_HEADER_LEN or len(data) < l4 + l4_header_len:
            return _drop(DROP_MALFORMED)
        check_field = l4 + 16
    else:
        l4_header_len = _UDP_HEADER_LEN
        if len(data) < l4 + l4_header_len:
            return _drop(DROP_MALFORMED)
        check_field = l4 + 6
    payload_start = l4 + l4_header_len
    payload_len = len(data) - payload_start
    largest = min(mss, payload_len)
    ip_len_field = (ip_header_len if version == 4 else 0) + l4_header_len + largest
    if ip_len_field > _MAX_IP_LEN:
        return _drop(DROP_OVERSIZE)

    template = bytearray(data[:payload_start])
    _store16(template, check_field, 0)
    if version == 4:
        _store16(template, l3 + 10, 0)
        first_id = be16(data, l3 + 4)
        addresses = data[l3 + 12:l3 + 20]
    else:
        addresses = data[l3 + 8:l3 + 40]
    # Pseudo-header without its length word (RFC 9293 §3.1, RFC 768, RFC 8200 §8.1): the 32-bit
    # IPv6 length and the 16-bit IPv4 length add the same to a ones'-complement sum below 2**16.
    pseudo_base = ones_sum(addresses, protocol)
    first_seq = be32(data, l4 + 4) if kind == "tcp" else 0
    flags = data[l4 + 13] if kind == "tcp" else 0
    count = max(1, -(-payload_len // mss))

    frames = []
    for index in range(count):
        start = payload_start + index * mss
        chunk = data[start:start + mss]
        l4_len = l4_header_len + len(chunk)
        header = bytearray(template)
        if version == 4:
            _store16(header, l3 + 2, ip_header_len + l4_len)
            if not fixed_id:
                _store16(header, l3 + 4, (first_id + index) & 0xFFFF)
            _store16(header, l3 + 10, ~ones_sum(header[l3:l4]) & 0xFFFF)
        else:
            _store16(header, l3 + 4, l4_len)
        if kind == "tcp":
            header[l4 + 4:l4 + 8] = ((first_seq + index * mss) & 0xFFFFFFFF).to_bytes(4, "big")
            segment_flags = flags
            if index != count - 1:
                segment_flags &= ~(_TCP_FIN | _TCP_PSH)
            if index != 0:
                segment_flags &= ~_TCP_CWR
            header[l4 + 13] = segment_flags
        else:
            _store16(header, l4 + 4, l4_len)
        # The L4 header has an even length, so its sum and the payload's add without a swap.
        total = pseudo_base + l4_len + ones_sum(header[l4:]) + ones_sum(chunk)
        check = ~csum_fold(total) & 0xFFFF
        if check == 0 and kind == "udp":
            check = 0xFFFF  # RFC 768: 0 would mean "no checksum" (Linux CSUM_MANGLED_0)
        _store16(header, check_field, check)
        frames.append(bytes(header) + chunk)
    return TsoResult(tuple(frames), None)


def tso_segment(
    frame: bytes | bytearray | memoryview,
    mss: int,
    kind: str = "tcp",
    fixed_id: bool = False,
    *,
    max_mss: int = MAX_MSS,
    max_payload: int = MAX_PAYLOAD,
) -> TsoResult:
    """Segment a super-frame as the TSO/USO engine does: :func:`segment` with the engine's limits.

    The engine takes what a driver hands to segmentation and nothing else (issue 5): an MSS of
    1 to ``max_mss`` bytes and a payload of ``mss`` to ``max_payload`` bytes. A payload of
    exactly ``mss`` bytes leaves as one frame with its lengths and checksums filled in, like
    every segment. Unlike Linux's software GSO, which sends a payload of at most ``mss`` bytes
    as it is, a payload shorter than ``mss`` (an empty one too) is dropped: a driver sends such
    a frame without the segmentation command.

    Parameters
    ----------
    frame, mss, kind, fixed_id
        As for :func:`segment`.
    max_mss : int
        Largest MSS taken; a larger one is ``"bad_mss"``.
    max_payload : int
        Largest payload taken (bytes after the TCP/UDP header); a longer one is ``"oversize"``.

    Returns
    -------
    TsoResult
        As :func:`segment`, checked in this order: ``"bad_mss"`` (mss not in 1..max_mss), the
        header drops of :func:`segment`, ``"oversize"`` (payload over ``max_payload``),
        ``"short"`` (payload under ``mss``).
    """
    if kind not in KINDS:
        raise ValueError(f"Segmentation kind must be one of {KINDS}, not {kind!r}")
    if not isinstance(mss, int) or not 0 < mss <= max_mss:
        return _drop(DROP_BAD_MSS)
    result = segment(frame, mss, kind, fixed_id)
    if result.drop_reason is not None:
        return result
    payload_len = len(frame) - _header_len(result.frames[0], kind)
    if payload_len > max_payload:
        return _drop(DROP_OVERSIZE)
    if payload_len < mss:
        return _drop(DROP_SHORT)
    return result


def _header_len(frame: bytes, kind: str) -> int:
    """Return the bytes before the payload of a segment :func:`segment` produced."""
    _, l3, ip_header_len, _ = parse_ip(frame)
    l4 = l3 + ip_header_len
    return l4 + ((frame[l4 + 12] >> 4) * 4 if kind == "tcp" else _UDP_HEADER_LEN)
