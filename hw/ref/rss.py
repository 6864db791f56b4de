# Ref: Microsoft "RSS hashing functions" / "Verifying the RSS hash calculation" (Toeplitz hash,
#      40-byte default key, input order src ‖ dst ‖ sport ‖ dport), RFC 791 §3.1 (IPv4),
#      RFC 8200 §4 (IPv6 extension headers), Linux ethtool_rxfh_indir_default()
"""Golden reference of the receive-side scaling (RSS) unit.

This module is the bit-exact specification the RTL is tested against. The unit sees the first
:data:`PARSE_WINDOW` bytes of each frame, picks the most specific enabled hash type (TCP/UDP
4-tuple, else IP 2-tuple, else none), computes the Toeplitz hash of the selected fields and maps
it to a receive queue through the indirection table:
``queue = table[hash & (len(table) - 1)]``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from functools import lru_cache

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
    "ALL_TYPES_MASK",
    "DEFAULT_KEY",
    "DEFAULT_QUEUES",
    "DEFAULT_TABLE_SIZE",
    "HashType",
    "KEY_LEN",
    "MAX_EXT_HEADERS",
    "MAX_TABLE_SIZE",
    "PARSE_WINDOW",
    "RssConfig",
    "RssResult",
    "default_table",
    "rss_hash",
    "toeplitz",
]

# Microsoft RSS verification key, also used by Corundum's tests (see shared/REFERENCES.md).
DEFAULT_KEY = bytes.fromhex(
    "6d5a56da255b0ec24167253d43a38fb0d0ca2bcbae7b30b477cb2da38030f20c6a42b73bbeac01fa"
)
KEY_LEN = 40  # enough for the longest input, IPv6 4-tuple: 36 bytes + 4
PARSE_WINDOW = 128  # bytes of each frame the hardware parser sees
MAX_EXT_HEADERS = 4  # IPv6 extension headers walked before giving up on the 4-tuple
DEFAULT_TABLE_SIZE = 128
DEFAULT_QUEUES = 4
MAX_TABLE_SIZE = 512

# RFC 8200 §4.1 extension header numbers the parser walks.
_NEXTHDR_HOP_BY_HOP = 0
_NEXTHDR_ROUTING = 43
_NEXTHDR_FRAGMENT = 44
_NEXTHDR_DEST_OPTIONS = 60
_WALKED_EXT_HEADERS = frozenset(
    (_NEXTHDR_HOP_BY_HOP, _NEXTHDR_ROUTING, _NEXTHDR_FRAGMENT, _NEXTHDR_DEST_OPTIONS)
)
_FRAGMENT_HEADER_LEN = 8  # RFC 8200 §4.5
_IPV4_FRAGMENT_MASK = 0x3FFF  # MF flag (0x2000) and fragment offset (0x1fff); not DF


class HashType(enum.IntEnum):
    """Fields a hash was computed over; bit ``n`` of :attr:`RssConfig.enabled` enables type ``n``.

    Members
    -------
    NONE
        No hash (hash value 0).
    IPV4, IPV6
        Source and destination addresses.
    TCP_IPV4, UDP_IPV4, TCP_IPV6, UDP_IPV6
        Source and destination addresses, then source and destination ports.
    """

    NONE = 0
    IPV4 = 1
    TCP_IPV4 = 2
    UDP_IPV4 = 3
    IPV6 = 4
    TCP_IPV6 = 5
    UDP_IPV6 = 6


ALL_TYPES_MASK = 0b1111110  # every type but NONE


@lru_cache(maxsize=32)
def _byte_tables(key: bytes) -> tuple[tuple[int, ...], ...]:
    """For each input byte position, the hash contribution of each of the 256 byte values.

    Bit ``i`` of the input (MSB of byte 0 first) contributes the 32-bit window of the key that
    starts at key bit ``i``; a byte's contribution is the XOR of those of its set bits.
    """
    key_int = int.from_bytes(key, "big")
    key_bits = 8 * len(key)
    tables = []
    for position in range(len(key) - 4):  # inputs are at most len(key) - 4 bytes
        # Windows of this byte's 8 bits, index 0 = least significant bit of the byte.
        windows = [
            (key_int >> (key_bits - 32 - (8 * position + 7 - bit))) & 0xFFFFFFFF
            for bit in range(8)
        ]
        table = [0] * 256
        for value in range(1, 256):
            lowest = (value & -value).bit_length() - 1
            table[value] = table[value & (value - 1)] ^ windows[lowest]
        tables.append(tuple(table))
    return tuple(tables)


def toeplitz(key: bytes | bytearray | memoryview, data: bytes | bytearray | memoryview) -> int:
    """Compute the 32-bit Toeplitz hash of ``data`` under ``key``.

    For every set bit of ``data``, most significant bit of the first byte first, the 32-bit window
    of ``key`` that starts at the same bit position is XORed into the result.

    Parameters
    ----------
    key : bytes-like
        Secret key, at least ``len(data) + 4`` bytes long.
    data : bytes-like
        Hash input in network byte order.

    Returns
    -------
    int
        Hash value in 0..0xffffffff.

    Raises
    ------
    ValueError
        If the key is shorter than ``len(data) + 4`` bytes.
    """
    key = bytes(key)
    if len(key) < len(data) + 4:
        raise ValueError(
            f"Key must be at least {len(data) + 4} bytes for {len(data)} input bytes, "
            f"not {len(key)}"
        )
    result = 0
    for table, value in zip(_byte_tables(key), bytes(data), strict=False):
        result ^= table[value]
    return result


def default_table(size: int = DEFAULT_TABLE_SIZE, queues: int = DEFAULT_QUEUES) -> list[int]:
    """Return the Linux default indirection table, ``table[i] = i % queues``.

    Parameters
    ----------
    size : int
        Number of entries.
    queues : int
        Number of receive queues to spread over (Linux ``ethtool_rxfh_indir_default()``).
    """
    return [i % queues for i in range(size)]


@dataclass
class RssConfig:
    """Configuration registers of the RSS unit.

    The default table spreads flows over :data:`DEFAULT_QUEUES` (4) queues with
    ``table[i] = i % 4`` over 128 entries, as Linux ``ethtool_rxfh_indir_default()`` does.
    Construction validates the fields; call :meth:`validate` again after changing them.

    Members
    -------
    key : bytes
        40-byte Toeplitz key.
    enabled : int
        Bit ``n`` enables :class:`HashType` ``n``; bit 0 (``NONE``) must be clear.
    table : list of int
        Indirection table of queue numbers; its size is a power of two, 1 to 512.
    """

    key: bytes = DEFAULT_KEY
    enabled: int = ALL_TYPES_MASK
    table: list[int] = field(default_factory=default_table)

    def __post_init__(self) -> None:
        self.key = bytes(self.key)
        self.table = list(self.table)
        self.validate()

    def validate(self) -> None:
        """Check the configuration.

        Raises
        ------
        ValueError
            If the key is not 40 bytes, ``enabled`` has bits outside :data:`ALL_TYPES_MASK`,
            the table size is not a power of two from 1 to 512, or an entry is negative.
        """
        if len(self.key) != KEY_LEN:
            raise ValueError(f"Key must be {KEY_LEN} bytes, not {len(self.key)}")
        if self.enabled & ~ALL_TYPES_MASK:
            raise ValueError(
                f"Enabled mask must be a subset of {ALL_TYPES_MASK:#09b}, not {self.enabled:#b}"
            )
        size = len(self.table)
        if not 1 <= size <= MAX_TABLE_SIZE or size & (size - 1):
            raise ValueError(
                f"Table size must be a power of two from 1 to {MAX_TABLE_SIZE}, not {size}"
            )
        if any(not isinstance(q, int) or q < 0 for q in self.table):
            raise ValueError("Table entries must be non-negative queue numbers")


@dataclass(frozen=True)
class RssResult:
    """RSS result of one frame.

    Members
    -------
    hash : int
        32-bit Toeplitz hash, 0 for :attr:`HashType.NONE`.
    hash_type : HashType
        Fields the hash covers.
    queue : int
        ``table[hash & (len(table) - 1)]``, also for ``NONE`` (``table[0]``).
    """

    hash: int
    hash_type: HashType
    queue: int


def _ipv6_l4_offset(view: bytes, l3: int) -> tuple[int, int] | None:
    """Walk IPv6 extension headers; return (next header, offset) or ``None`` for a 2-tuple.

    ``view`` is the visible part of the frame; a header must be visible in full before the walk
    moves past it, and a non-first fragment or one with more to come has no usable ports.
    """
    visible = len(view)
    next_header = view[l3 + 6]
    offset = l3 + IPV6_HEADER_LEN
    walked = 0
    while next_header in _WALKED_EXT_HEADERS:
        if walked == MAX_EXT_HEADERS or offset + 2 > visible:
            return None
        walked += 1
        if next_header == _NEXTHDR_FRAGMENT:
            header_len = _FRAGMENT_HEADER_LEN
            if offset + header_len > visible:
                return None
            # RFC 8200 §4.5: offset in the top 13 bits, M flag in bit 0. An atomic fragment
            # (RFC 6946: offset 0, M 0) carries the whole datagram and keeps its ports.
            if be16(view, offset + 2) & 0xFFF9:
                return None
        else:
            # RFC 8200 §4.3/4.4/4.6: length in 8-octet units, not counting the first 8.
            header_len = (view[offset + 1] + 1) * 8
            if offset + header_len > visible:
                return None
        next_header = view[offset]
        offset += header_len
    return next_header, offset


def rss_hash(frame: bytes | bytearray | memoryview, config: RssConfig) -> RssResult:
    """Compute the RSS hash and receive queue of a frame.

    Parameters
    ----------
    frame : bytes-like
        Ethernet frame without FCS; only its first :data:`PARSE_WINDOW` bytes are looked at, and
        anything a rule needs beyond them counts as absent.
    config : RssConfig
        Key, enabled hash types and indirection table.

    Returns
    -------
    RssResult
        For a usable IPv4 header (version 4, IHL >= 5, header visible) or IPv6 header (version 6,
        40 bytes visible), after 0 to 2 VLAN tags: the TCP/UDP 4-tuple hash when that type is
        enabled, the packet is not a fragment and its ports are visible and inside the datagram
        (IPv6: after at most :data:`MAX_EXT_HEADERS` hop-by-hop, routing, destination-options
        or atomic-fragment headers); else the 2-tuple hash when enabled; else ``NONE``.
    """
    view = bytes(frame[:PARSE_WINDOW])
    visible = len(view)
    ethertype, l3, _ = parse_l2(view)
    enabled = config.enabled
    hash_type = HashType.NONE
    data = b""

    if ethertype == ETHERTYPE_IPV4:
        header_len = (view[l3] & 0x0F) * 4 if visible > l3 else 0
        if (
            visible >= l3 + IPV4_MIN_HEADER_LEN
            and view[l3] >> 4 == 4
            and header_len >= IPV4_MIN_HEADER_LEN
            and visible >= l3 + header_len
        ):
            addresses = view[l3 + 12:l3 + 20]
            protocol = view[l3 + 9]
            l4 = l3 + header_len
            if protocol == IPPROTO_TCP:
                four_tuple = HashType.TCP_IPV4
            elif protocol == IPPROTO_UDP:
                four_tuple = HashType.UDP_IPV4
            else:
                four_tuple = HashType.NONE
            if (
                four_tuple
                and enabled >> four_tuple & 1
                and not be16(view, l3 + 6) & _IPV4_FRAGMENT_MASK
                and l4 + 4 <= visible
                and l4 + 4 <= l3 + be16(view, l3 + 2)
            ):
                hash_type, data = four_tuple, addresses + view[l4:l4 + 4]
            elif enabled >> HashType.IPV4 & 1:
                hash_type, data = HashType.IPV4, addresses

    elif ethertype == ETHERTYPE_IPV6:
        if visible >= l3 + IPV6_HEADER_LEN and view[l3] >> 4 == 6:
            addresses = view[l3 + 8:l3 + 40]
            datagram_end = l3 + IPV6_HEADER_LEN + be16(view, l3 + 4)
            found = _ipv6_l4_offset(view, l3)
            four_tuple = HashType.NONE
            if found is not None:
                next_header, l4 = found
                if l4 + 4 <= visible and l4 + 4 <= datagram_end:
                    if next_header == IPPROTO_TCP:
                        four_tuple = HashType.TCP_IPV6
                    elif next_header == IPPROTO_UDP:
                        four_tuple = HashType.UDP_IPV6
            if four_tuple and enabled >> four_tuple & 1:
                hash_type, data = four_tuple, addresses + view[l4:l4 + 4]
            elif enabled >> HashType.IPV6 & 1:
                hash_type, data = HashType.IPV6, addresses

    value = toeplitz(config.key, data) if hash_type else 0
    table = config.table
    return RssResult(value, hash_type, table[value & (len(table) - 1)])
