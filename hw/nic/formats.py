"""Descriptor and completion layouts of the NIC, defined once.

Rings live in host memory and are little-endian, as Corundum's and most NICs' are. Each layout
is one table of fields; the same table packs and unpacks in the model backend and the drivers,
prints the documentation (``nicsim nic formats``) and gives the RTL its bit offsets.

Descriptors are 16 bytes and completions 32 bytes, in the spirit of Corundum (its
``tx_desc``/``rx_desc`` are 16 bytes, its completions 32 bytes with length, queue, index,
timestamp, receive checksum and hash): here a completion also carries the checksum verdicts,
the hash type, LRO segment count and ``gso_size``, and a match-action mark.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = [
    "Field", "Layout", "TX_DESC", "RX_DESC", "COMPLETION",
    "TxFlags", "CplFlags", "DESC_BYTES", "CPL_BYTES", "LAYOUTS",
]

_CODES = {8: "B", 16: "H", 32: "I", 64: "Q"}


@dataclass(frozen=True)
class Field:
    """One field of a layout.

    Members
    -------
    name : str
        Field name.
    bits : int
        Width: 8, 16, 32 or 64; fields follow each other without gaps.
    doc : str
        Meaning and unit.
    """

    name: str
    bits: int
    doc: str


class Layout:
    """A fixed-size little-endian record made of :class:`Field` s.

    Parameters
    ----------
    name : str
        Name for messages and documentation.
    fields : sequence of Field
        The fields in address order.
    size : int
        Total bytes; what the fields leave free at the end is reserved (written as zero).
    """

    def __init__(self, name, fields, size):
        self.name = name
        self.fields = tuple(fields)
        self.size = size
        used = sum(f.bits for f in self.fields) // 8
        if used > size:
            raise ValueError(f"{name}: fields take {used} bytes, more than {size}")
        self.names = tuple(f.name for f in self.fields)
        self.struct = struct.Struct("<" + "".join(_CODES[f.bits] for f in self.fields)
                                    + (f"{size - used}x" if size > used else ""))
        self.offsets = {}
        offset = 0
        for f in self.fields:
            self.offsets[f.name] = offset
            offset += f.bits // 8
        self._index = {n: i for i, n in enumerate(self.names)}

    def pack(self, **values):
        """Return the record with the named fields set (the others zero)."""
        unknown = set(values) - set(self.names)
        if unknown:
            raise KeyError(f"{self.name} has no field {sorted(unknown)[0]!r}")
        return self.struct.pack(*(values.get(n, 0) for n in self.names))

    def unpack(self, data, offset=0):
        """Return the fields of the record at ``offset`` of ``data`` as a dict."""
        return dict(zip(self.names, self.struct.unpack_from(data, offset), strict=True))

    def index(self, name):
        """Return the position of field ``name`` in :meth:`struct.unpack` 's tuple."""
        return self._index[name]


class TxFlags:
    """Bits of a transmit descriptor's ``flags``."""

    CSUM_PARTIAL = 1 << 0  # Linux CHECKSUM_PARTIAL at csum_start/csum_offset
    CSUM_AUTO = 1 << 1  # parse the frame and fill in IPv4 header and TCP/UDP checksums
    TSO = 1 << 2  # segment TCP at mss
    USO = 1 << 3  # segment UDP (SKB_GSO_UDP_L4) at mss
    REPORT = 1 << 7  # write a completion for this descriptor (always done here)


class CplFlags:
    """Bits of a completion's ``flags``."""

    PHASE = 1 << 0  # flips on every pass over the ring: a new entry has the current phase
    TX = 1 << 1  # a transmit completion
    TRUNCATED = 1 << 2  # the frame did not fit the receive buffer and was cut


TX_DESC = Layout("tx descriptor", [
    Field("addr", 64, "host (I/O virtual) address of the frame"),
    Field("len", 32, "frame bytes without FCS (a TSO/USO super-frame may pass the MTU)"),
    Field("flags", 8, "TxFlags"),
    Field("hdr_len", 8, "TSO/USO: header bytes repeated in every segment (0: parse them)"),
    Field("param", 16, "CSUM_PARTIAL: csum_start | csum_offset << 8; TSO/USO: mss"),
], 16)

RX_DESC = Layout("rx descriptor", [
    Field("addr", 64, "host (I/O virtual) address of the buffer"),
    Field("len", 32, "buffer bytes"),
], 16)

COMPLETION = Layout("completion", [
    Field("queue", 16, "queue the entry belongs to"),
    Field("index", 16, "descriptor ring index it completes"),
    Field("len", 32, "frame bytes written (receive) or sent (transmit)"),
    Field("rss_hash", 32, "receive: Toeplitz hash"),
    Field("hash_type", 8, "receive: hw.ref.rss.HashType"),
    Field("csum", 8, "receive: IPv4 header verdict in bits 0-1, TCP/UDP in bits 2-3 "
                     "(hw.ref.checksum.Status)"),
    Field("flags", 8, "CplFlags"),
    Field("lro_segs", 8, "receive: TCP segments merged into this frame (1: none)"),
    Field("csum_complete", 16, "receive: CHECKSUM_COMPLETE sum after the Ethernet header"),
    Field("gso_size", 16, "receive: payload bytes of the first merged segment (LRO)"),
    Field("timestamp", 64, "NIC clock in nanoseconds when the frame passed the MAC"),
], 32)

DESC_BYTES = 16
CPL_BYTES = 32
LAYOUTS = (TX_DESC, RX_DESC, COMPLETION)
