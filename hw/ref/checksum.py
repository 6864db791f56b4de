# Ref: RFC 1071 (computing the Internet checksum), RFC 1624 (ones'-complement zero),
#      RFC 791 §3.1 (IPv4 header checksum), RFC 793 §3.1 / RFC 9293 §3.1 (TCP pseudo-header),
#      RFC 768 (UDP pseudo-header, checksum 0 = none), RFC 8200 §8.1 (IPv6 pseudo-header,
#      UDP checksum 0 forbidden), Linux include/linux/skbuff.h (CHECKSUM_UNNECESSARY,
#      CHECKSUM_COMPLETE, CHECKSUM_PARTIAL) and net/core/dev.c skb_checksum_help()
"""Golden reference of the checksum offload engine (receive verification, transmit insertion).

This module is the bit-exact specification the RTL is tested against. All sums are
16-bit ones'-complement sums of big-endian words (RFC 1071); a trailing odd byte is padded with
a zero low byte.

Receive (:func:`rx_checksum`) reports, per frame, a verdict for the IPv4 header checksum and for
the TCP/UDP checksum over the pseudo-header (what a driver turns into Linux
``CHECKSUM_UNNECESSARY``), plus the folded ones'-complement sum of everything after the
Ethernet/VLAN headers (what a driver turns into ``CHECKSUM_COMPLETE``).

Transmit (:func:`tx_checksum`) either follows the Linux ``CHECKSUM_PARTIAL`` contract (the
driver names ``csum_start`` and ``csum_offset``) or parses the frame itself and fills in the
IPv4 header checksum and the TCP/UDP checksum.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NamedTuple

from .packet import (
    ETHERTYPE_IPV4,
    ETHERTYPE_IPV6,
    IPPROTO_TCP,
    IPPROTO_UDP,
    IPV4_MIN_HEADER_LEN,
    IPV6_HEADER_LEN,
    be16,
    parse_l2,
)

__all__ = [
    "DROP_BAD_COMMAND",
    "DROP_EMPTY",
    "DROP_OVERSIZE",
    "MAX_FRAME_LEN",
    "RxChecksum",
    "Status",
    "TxCommand",
    "TxMode",
    "TxResult",
    "csum_adjust",
    "csum_fold",
    "ones_sum",
    "rx_checksum",
    "tx_checksum",
]

# 9000-byte jumbo MTU + 14-byte Ethernet header + one 4-byte VLAN tag; no FCS.
MAX_FRAME_LEN = 9018

DROP_EMPTY = "empty"
DROP_OVERSIZE = "oversize"
DROP_BAD_COMMAND = "bad_command"

_TCP_MIN_HEADER_LEN = 20  # RFC 9293 §3.1: data offset >= 5 words
_UDP_HEADER_LEN = 8  # RFC 768
_TCP_CHECKSUM_OFFSET = 16  # offsetof(struct tcphdr, check)
_UDP_CHECKSUM_OFFSET = 6  # offsetof(struct udphdr, check)
_IPV4_CHECKSUM_OFFSET = 10  # offsetof(struct iphdr, check)
_IPV4_FRAGMENT_MASK = 0x3FFF  # MF flag (0x2000) and fragment offset (0x1fff); not DF
_CSUM_MANGLED_0 = 0xFFFF  # Linux CSUM_MANGLED_0: a computed 0 is sent as -0 (RFC 768)


class Status(enum.IntEnum):
    """Verdict of one receive checksum check.

    Members
    -------
    NONE
        Not checked: the header is absent, not parsed, or carries no checksum.
    OK
        Checked and correct.
    BAD
        Checked and wrong, or the IPv4 header is malformed.
    """

    NONE = 0
    OK = 1
    BAD = 2


class TxMode(enum.IntEnum):
    """Transmit checksum offload mode of one descriptor.

    Members
    -------
    OFF
        Send the frame unchanged.
    PARTIAL
        Linux ``CHECKSUM_PARTIAL``: sum from ``csum_start`` to the end of the frame and store
        the complement at ``csum_start + csum_offset``.
    AUTO
        Parse the frame and fill in the IPv4 header checksum and the TCP/UDP checksum.
    """

    OFF = 0
    PARTIAL = 1
    AUTO = 2


@dataclass(frozen=True)
class RxChecksum:
    """Receive checksum result of one frame.

    Members
    -------
    ip : Status
        IPv4 header checksum verdict; always ``NONE`` for IPv6 and non-IP frames.
    l4 : Status
        TCP/UDP checksum verdict over the pseudo-header.
    csum_complete : int
        Folded (not complemented) 16-bit ones'-complement sum of every byte after the Ethernet
        and VLAN headers up to the end of the frame, Ethernet padding included; 0 if none.
    """

    ip: Status
    l4: Status
    csum_complete: int


@dataclass(frozen=True)
class TxCommand:
    """Checksum part of a transmit descriptor.

    Members
    -------
    mode : TxMode
        Offload mode.
    csum_start : int
        ``PARTIAL`` only: offset from the first byte of the frame where summing starts (the
        ``virtio_net_hdr`` convention; Linux keeps it relative to ``skb->head``).
    csum_offset : int
        ``PARTIAL`` only: offset of the 16-bit checksum field from ``csum_start``.

    Raises
    ------
    ValueError
        If ``mode`` is not a :class:`TxMode` value or an offset is negative (neither can be
        encoded in a descriptor).
    """

    mode: TxMode
    csum_start: int = 0
    csum_offset: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", TxMode(self.mode))
        if self.csum_start < 0 or self.csum_offset < 0:
            raise ValueError(
                f"csum_start and csum_offset must be non-negative, not "
                f"{self.csum_start!r} and {self.csum_offset!r}"
            )


@dataclass(frozen=True)
class TxResult:
    """Transmit checksum result of one frame.

    Members
    -------
    frame : bytes or None
        The frame to send, or ``None`` when it is dropped.
    drop_reason : str or None
        ``"empty"``, ``"oversize"`` or ``"bad_command"`` when dropped, else ``None``.
    ip_inserted : bool
        The IPv4 header checksum was written.
    l4_inserted : bool
        A TCP/UDP checksum was written (always, for a ``PARTIAL`` frame that is sent).
    """

    frame: bytes | None
    drop_reason: str | None
    ip_inserted: bool
    l4_inserted: bool


def csum_adjust(csum: int, old_words, new_words) -> int:
    """Update an Internet checksum for 16-bit words that changed (RFC 1624, eqn. 3).

    ``HC' = ~(~HC + ~m + m')`` summed over the changed words ``m`` -> ``m'``.
    """
    total = ~csum & 0xFFFF
    for old, new in zip(old_words, new_words, strict=True):
        total += (~old & 0xFFFF) + new
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def csum_fold(x: int) -> int:
    """Fold a wide non-negative sum into 16 bits with end-around carry; do not complement.

    Equivalent to repeating ``x = (x & 0xffff) + (x >> 16)`` until ``x < 0x10000``: the result is
    congruent to ``x`` modulo 0xffff (because 0x10000 = 1 modulo 0xffff) and is 0 only when
    ``x`` is 0 (a non-zero sum folds to 0xffff, ones'-complement "-0", never to +0).

    Parameters
    ----------
    x : int
        Non-negative sum of any width.

    Returns
    -------
    int
        Value in 0..0xffff.

    Raises
    ------
    ValueError
        If ``x`` is negative.
    """
    if x < 0:
        raise ValueError(f"Sum to fold must be non-negative, not {x!r}")
    if x == 0:
        return 0
    return (x - 1) % 0xFFFF + 1


def _wide_sum(data: bytes | bytearray | memoryview) -> int:
    """Return an integer congruent to the word sum of ``data`` modulo 0xffff, 0 iff all zero.

    Reading the whole buffer as one big-endian integer weighs word ``i`` from the end by
    ``0x10000 ** i``, which is 1 modulo 0xffff, so no per-word loop is needed (RFC 1071 §2(B):
    the sum is independent of grouping). An odd tail is padded with a zero low byte.
    """
    value = int.from_bytes(data, "big")
    return value << 8 if len(data) & 1 else value


def ones_sum(data: bytes | bytearray | memoryview, initial: int = 0) -> int:
    """Compute the folded 16-bit ones'-complement sum of big-endian words, not complemented.

    Parameters
    ----------
    data : bytes-like
        Bytes to sum; an odd trailing byte is padded with a zero low byte (RFC 1071 §4.1).
    initial : int
        Non-negative sum to add, of any width (e.g. a pseudo-header sum).

    Returns
    -------
    int
        Value in 0..0xffff; 0 only when ``data`` is all zero and ``initial`` is 0.
    """
    return csum_fold(_wide_sum(data) + initial)


class _Segment(NamedTuple):
    """TCP or UDP segment the engine checks or fills in."""

    protocol: int
    start: int  # offset of the TCP/UDP header in the frame
    end: int  # end of the IP datagram; later bytes are Ethernet padding
    pseudo_sum: int  # folded pseudo-header sum


def _ipv4_header_len(frame: bytes | bytearray | memoryview, l3: int) -> int | None:
    """Return IHL*4 when the IPv4 header is complete and well-formed, else ``None``."""
    if len(frame) < l3 + IPV4_MIN_HEADER_LEN:
        return None
    version_ihl = frame[l3]
    header_len = (version_ihl & 0x0F) * 4
    if version_ihl >> 4 != 4 or header_len < IPV4_MIN_HEADER_LEN:
        return None
    if len(frame) < l3 + header_len or be16(frame, l3 + 2) < header_len:
        return None
    return header_len


def _l4_segment(
    frame: bytes | bytearray | memoryview, protocol: int, start: int, end: int, pseudo_base: int
) -> _Segment | None:
    """Apply the checks common to IPv4 and IPv6 to a candidate TCP/UDP segment."""
    if protocol == IPPROTO_TCP:
        min_len = _TCP_MIN_HEADER_LEN
    elif protocol == IPPROTO_UDP:
        min_len = _UDP_HEADER_LEN
    else:
        return None
    # A datagram cut short by the end of the frame cannot be verified; bytes after `end` are
    # Ethernet padding (Linux pskb_trim_rcsum() drops them before checking).
    if end > len(frame):
        return None
    l4_len = end - start
    if l4_len < min_len:
        return None
    # Linux __udp4_lib_rcv()/udpv6_rcv() trim to, or drop on, the UDP length: either way the
    # hardware must not claim the checksum of a datagram whose length field disagrees.
    if protocol == IPPROTO_UDP and be16(frame, start + 4) != l4_len:
        return None
    pseudo = csum_fold(pseudo_base + protocol + (l4_len >> 16) + (l4_len & 0xFFFF))
    return _Segment(protocol, start, end, pseudo)


def _ipv4_segment(
    frame: bytes | bytearray | memoryview, l3: int, header_len: int
) -> _Segment | None:
    """Locate the TCP/UDP segment of a complete IPv4 header (see :func:`_ipv4_header_len`)."""
    if be16(frame, l3 + 6) & _IPV4_FRAGMENT_MASK:
        return None
    # RFC 793 §3.1 / RFC 768 pseudo-header: source, destination, zero, protocol, TCP/UDP length.
    addresses = _wide_sum(frame[l3 + 12:l3 + 20])
    end = l3 + be16(frame, l3 + 2)
    return _l4_segment(frame, frame[l3 + 9], l3 + header_len, end, addresses)


def _ipv6_segment(frame: bytes | bytearray | memoryview, l3: int) -> _Segment | None:
    """Locate the TCP/UDP segment directly after an IPv6 header; extension headers give none."""
    if len(frame) < l3 + IPV6_HEADER_LEN or frame[l3] >> 4 != 6:
        return None
    payload_len = be16(frame, l3 + 4)
    if payload_len == 0:  # RFC 2675 jumbogram: the length lives in a hop-by-hop option
        return None
    # RFC 8200 §8.1 pseudo-header: source, destination, 32-bit length, zero, next header.
    addresses = _wide_sum(frame[l3 + 8:l3 + 40])
    start = l3 + IPV6_HEADER_LEN
    return _l4_segment(frame, frame[l3 + 6], start, start + payload_len, addresses)


def rx_checksum(frame: bytes | bytearray | memoryview) -> RxChecksum:
    """Verify the checksums of a received frame.

    Parameters
    ----------
    frame : bytes-like
        Ethernet frame without FCS, possibly with one or two VLAN tags (0x8100/0x88a8).

    Returns
    -------
    RxChecksum
        ``ip``: IPv4 header verdict (``BAD`` also for a header that is truncated, not version 4,
        has IHL < 5, or a total length below IHL*4). ``l4``: ``OK``/``BAD`` only for TCP or UDP
        directly after an IPv4 header whose checksum is correct and that is not a fragment, or
        directly after an IPv6 header, whose datagram fits in the frame, has room for the
        TCP/UDP header and (UDP) whose length field matches; UDP checksum 0 is ``NONE`` over
        IPv4 (RFC 768) and ``BAD`` over IPv6 (RFC 8200 §8.1). ``csum_complete``: see
        :class:`RxChecksum`.
    """
    view = memoryview(frame)
    ethertype, l3, _ = parse_l2(view)
    csum_complete = ones_sum(view[l3:])
    ip = Status.NONE
    segment = None
    if ethertype == ETHERTYPE_IPV4:
        header_len = _ipv4_header_len(view, l3)
        if header_len is None or ones_sum(view[l3:l3 + header_len]) != 0xFFFF:
            ip = Status.BAD
        else:
            ip = Status.OK
            segment = _ipv4_segment(view, l3, header_len)
    elif ethertype == ETHERTYPE_IPV6:
        segment = _ipv6_segment(view, l3)

    l4 = Status.NONE
    if segment is not None:
        if segment.protocol == IPPROTO_UDP and be16(view, segment.start + 6) == 0:
            l4 = Status.BAD if ethertype == ETHERTYPE_IPV6 else Status.NONE
        elif ones_sum(view[segment.start:segment.end], segment.pseudo_sum) == 0xFFFF:
            l4 = Status.OK
        else:
            l4 = Status.BAD
    return RxChecksum(ip, l4, csum_complete)


def _store16(buf: bytearray, offset: int, value: int) -> None:
    buf[offset] = value >> 8
    buf[offset + 1] = value & 0xFF


def _tx_partial(frame: bytes | bytearray | memoryview, cmd: TxCommand) -> TxResult:
    field = cmd.csum_start + cmd.csum_offset
    if field + 2 > len(frame):
        return TxResult(None, DROP_BAD_COMMAND, False, False)
    buf = bytearray(frame)
    # skb_checksum_help(): csum_fold(skb_checksum(skb, csum_start, len - csum_start, 0)),
    # with the field's current content (the stack's pseudo-header seed) included. Summing from
    # csum_start pairs bytes relative to it, so an odd csum_start is summed as Linux would.
    value = ~ones_sum(buf[cmd.csum_start:]) & 0xFFFF
    _store16(buf, field, value or _CSUM_MANGLED_0)
    return TxResult(bytes(buf), None, False, True)


def _tx_auto(frame: bytes | bytearray | memoryview) -> TxResult:
    buf = bytearray(frame)
    ethertype, l3, _ = parse_l2(buf)
    ip_inserted = False
    segment = None
    if ethertype == ETHERTYPE_IPV4:
        header_len = _ipv4_header_len(buf, l3)
        if header_len is not None:
            # RFC 791 §3.1: the checksum field is taken as zero while computing.
            field = l3 + _IPV4_CHECKSUM_OFFSET
            _store16(buf, field, 0)
            _store16(buf, field, ~ones_sum(buf[l3:l3 + header_len]) & 0xFFFF)
            ip_inserted = True
            segment = _ipv4_segment(buf, l3, header_len)
    elif ethertype == ETHERTYPE_IPV6:
        segment = _ipv6_segment(buf, l3)

    if segment is None:
        return TxResult(bytes(buf), None, ip_inserted, False)
    if segment.protocol == IPPROTO_TCP:
        field = segment.start + _TCP_CHECKSUM_OFFSET
    else:
        field = segment.start + _UDP_CHECKSUM_OFFSET
    _store16(buf, field, 0)
    value = ~ones_sum(buf[segment.start:segment.end], segment.pseudo_sum) & 0xFFFF
    if value == 0 and segment.protocol == IPPROTO_UDP:
        value = _CSUM_MANGLED_0  # RFC 768 / RFC 8200 §8.1: 0 would mean "no checksum"
    _store16(buf, field, value)
    return TxResult(bytes(buf), None, ip_inserted, True)


def tx_checksum(
    frame: bytes | bytearray | memoryview, cmd: TxCommand, max_frame: int = MAX_FRAME_LEN
) -> TxResult:
    """Insert checksums into a frame to transmit.

    Parameters
    ----------
    frame : bytes-like
        Ethernet frame without FCS.
    cmd : TxCommand
        Offload command from the descriptor.
    max_frame : int
        Longest frame accepted; longer ones are dropped as ``"oversize"``.

    Returns
    -------
    TxResult
        Empty frames are dropped as ``"empty"``. ``OFF`` sends the frame unchanged. ``PARTIAL``
        drops the frame as ``"bad_command"`` unless ``csum_start + csum_offset + 2 <= len``;
        otherwise it stores ``~ones_sum(frame[csum_start:])`` (0 sent as 0xffff) big-endian at
        ``csum_start + csum_offset``. ``AUTO`` parses the frame as :func:`rx_checksum` does and
        writes the IPv4 header checksum of every complete IPv4 header, and the TCP/UDP checksum
        (fields taken as zero; a UDP result of 0 sent as 0xffff, TCP left 0) wherever
        :func:`rx_checksum` would check it, whatever the IPv4 header checksum held before.
    """
    if len(frame) == 0:
        return TxResult(None, DROP_EMPTY, False, False)
    if len(frame) > max_frame:
        return TxResult(None, DROP_OVERSIZE, False, False)
    if cmd.mode == TxMode.PARTIAL:
        return _tx_partial(frame, cmd)
    if cmd.mode == TxMode.AUTO:
        return _tx_auto(frame)
    return TxResult(bytes(frame), None, False, False)
