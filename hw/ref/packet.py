# Ref: IEEE 802.3 §3.2.6 (Length/Type), IEEE 802.1Q §9.6 (C-TAG TPID 0x8100,
#      S-TAG TPID 0x88a8), RFC 791 §3.1 (IPv4 header), RFC 8200 §3 (IPv6 header)
"""Shared layer-2 and layer-3 parsing helpers of the golden reference models.

Every reference model (checksum, RSS, ...) walks the Ethernet and VLAN headers the same way, so
the hardware parsers can share one front end. Frames are Ethernet frames without the FCS.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = [
    "ETHERTYPE_IPV4",
    "ETHERTYPE_IPV6",
    "ETH_HEADER_LEN",
    "ETHERTYPE_OFFSET",
    "IPPROTO_TCP",
    "IPPROTO_UDP",
    "IPV4_MIN_HEADER_LEN",
    "IPV6_HEADER_LEN",
    "IpHeader",
    "L2Header",
    "MAX_VLAN_TAGS",
    "TPID_CTAG",
    "TPID_STAG",
    "VLAN_TAG_LEN",
    "VLAN_TPIDS",
    "be16",
    "be32",
    "parse_ip",
    "parse_l2",
]

ETHERTYPE_OFFSET = 12  # after destination and source MAC addresses
ETH_HEADER_LEN = 14
VLAN_TAG_LEN = 4  # TPID + TCI; the next ethertype follows the tag
TPID_CTAG = 0x8100  # IEEE 802.1Q customer VLAN tag
TPID_STAG = 0x88A8  # IEEE 802.1ad service VLAN tag (QinQ outer tag)
VLAN_TPIDS = frozenset((TPID_CTAG, TPID_STAG))
MAX_VLAN_TAGS = 2  # the parsers walk at most one S-TAG plus one C-TAG (or two of either)

ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_IPV6 = 0x86DD
IPV4_MIN_HEADER_LEN = 20  # RFC 791 §3.1: IHL >= 5 words
IPV6_HEADER_LEN = 40  # RFC 8200 §3
IPPROTO_TCP = 6
IPPROTO_UDP = 17


def be16(data: bytes | bytearray | memoryview, offset: int) -> int:
    """Read an unsigned 16-bit big-endian (network byte order) field.

    Parameters
    ----------
    data : bytes-like
        Buffer to read from.
    offset : int
        Offset of the most significant byte; ``offset + 2 <= len(data)`` is the caller's duty.
    """
    return (data[offset] << 8) | data[offset + 1]


def be32(data: bytes | bytearray | memoryview, offset: int) -> int:
    """Read an unsigned 32-bit big-endian (network byte order) field.

    Parameters
    ----------
    data : bytes-like
        Buffer to read from.
    offset : int
        Offset of the most significant byte; ``offset + 4 <= len(data)`` is the caller's duty.
    """
    return int.from_bytes(data[offset:offset + 4], "big")


class L2Header(NamedTuple):
    """Result of :func:`parse_l2`.

    Members
    -------
    ethertype : int or None
        The ethertype after the VLAN tags, or ``None`` when the frame ends before an ethertype
        field could be read.
    l3_offset : int
        Offset of the first byte after the last ethertype field (14, 18 or 22). When
        ``ethertype`` is ``None`` it is the offset the layer-3 header would have had, clamped to
        ``len(frame)``.
    vlan_tags : int
        Number of VLAN tags walked, 0 to :data:`MAX_VLAN_TAGS`.
    """

    ethertype: int | None
    l3_offset: int
    vlan_tags: int


def parse_l2(frame: bytes | bytearray | memoryview) -> L2Header:
    """Walk the Ethernet header and up to two VLAN tags.

    The ethertype sits at byte 12. While fewer than :data:`MAX_VLAN_TAGS` tags have been walked
    and the ethertype is a TPID (0x8100 or 0x88a8, in any order), the tag takes 4 bytes and the
    next ethertype follows 4 bytes later. A TPID found after two tags is returned as the
    ethertype (an unknown layer 3 for every engine).

    Parameters
    ----------
    frame : bytes-like
        Ethernet frame without FCS.

    Returns
    -------
    L2Header
        Ethertype (``None`` if truncated), layer-3 offset and number of VLAN tags.
    """
    length = len(frame)
    offset = ETHERTYPE_OFFSET
    tags = 0
    while True:
        if length < offset + 2:
            return L2Header(None, min(offset + 2, length), tags)
        ethertype = (frame[offset] << 8) | frame[offset + 1]
        if tags == MAX_VLAN_TAGS or ethertype not in VLAN_TPIDS:
            return L2Header(ethertype, offset + 2, tags)
        offset += VLAN_TAG_LEN
        tags += 1


class IpHeader(NamedTuple):
    """Result of :func:`parse_ip`.

    Members
    -------
    version : int
        4 or 6.
    l2_len : int
        Offset of the IP header: the Ethernet header and VLAN tags before it (14, 18 or 22).
    header_len : int
        IPv4: IHL * 4 (20 to 60, options included). IPv6: 40; extension headers are not walked.
    protocol : int
        IPv4 protocol or IPv6 next header.
    """

    version: int
    l2_len: int
    header_len: int
    protocol: int


def parse_ip(frame: bytes | bytearray | memoryview) -> IpHeader | None:
    """Locate the IPv4 or IPv6 header after the Ethernet header and up to two VLAN tags.

    Parameters
    ----------
    frame : bytes-like
        Ethernet frame without FCS.

    Returns
    -------
    IpHeader or None
        ``None`` unless the ethertype (see :func:`parse_l2`) is IPv4 or IPv6 and the header is
        complete and well-formed as far as locating the next header goes: version matching the
        ethertype and, for IPv4, IHL >= 5. Length fields and checksums are not checked.
    """
    ethertype, l3, _ = parse_l2(frame)
    if ethertype == ETHERTYPE_IPV4:
        if len(frame) < l3 + IPV4_MIN_HEADER_LEN or frame[l3] >> 4 != 4:
            return None
        header_len = (frame[l3] & 0x0F) * 4
        if header_len < IPV4_MIN_HEADER_LEN or len(frame) < l3 + header_len:
            return None
        return IpHeader(4, l3, header_len, frame[l3 + 9])
    if ethertype == ETHERTYPE_IPV6:
        if len(frame) < l3 + IPV6_HEADER_LEN or frame[l3] >> 4 != 6:
            return None
        return IpHeader(6, l3, IPV6_HEADER_LEN, frame[l3 + 6])
    return None
