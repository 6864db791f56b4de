"""Read and write packet captures: classic pcap (all four magics) and pcapng.

The reader is strict: a capture that is not Ethernet, or that ends inside a record, raises
:class:`PcapError` with one sentence naming the file, the record and the byte offset — a
partial capture is never taken for a whole one. The writer produces classic pcap, or pcapng
with a comment on each packet (Wireshark shows it as ``frame.comment``) when the file name ends
in ``.pcapng``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PcapError", "Packet", "read_pcap", "write_pcap", "LINKTYPE_ETHERNET"]

LINKTYPE_ETHERNET = 1
# Ref: pcap file format (draft-ietf-opsawg-pcap) §4; pcapng (draft-ietf-opsawg-pcapng) §4.
_PCAP_MAGICS = {
    0xA1B2C3D4: ("<", 1_000_000),
    0xA1B23C4D: ("<", 1_000_000_000),
    0xD4C3B2A1: (">", 1_000_000),
    0x4D3CB2A1: (">", 1_000_000_000),
}
_PCAPNG_SHB = 0x0A0D0D0A
_PCAPNG_BOM = 0x1A2B3C4D
MAX_FRAME = 262_144


class PcapError(ValueError):
    """A capture file that cannot be read; the message is one sentence for the user."""


@dataclass
class Packet:
    """A captured Ethernet frame.

    Members
    -------
    data : bytes
        The frame as captured (no FCS unless the capture has one).
    time_ns : int
        Capture time in nanoseconds since the epoch.
    comment : str or None
        A pcapng packet comment.
    """

    data: bytes
    time_ns: int = 0
    comment: str | None = None


def read_pcap(path) -> list[Packet]:
    """Read every packet of a pcap or pcapng capture of Ethernet frames."""
    path = Path(path)
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise PcapError(f"{path}: cannot read the capture ({exc.strerror}).") from None
    if len(blob) < 4:
        raise PcapError(f"{path}: not a pcap/pcapng capture (file is {len(blob)} bytes long).")
    magic_le = struct.unpack_from("<I", blob)[0]
    if magic_le == _PCAPNG_SHB:
        return _read_pcapng(path, blob)
    if magic_le in _PCAP_MAGICS:
        return _read_classic(path, blob)
    raise PcapError(f"{path}: not a pcap/pcapng capture (unknown magic 0x{magic_le:08x}).")


def _read_classic(path, blob):
    endian, ticks = _PCAP_MAGICS[struct.unpack_from("<I", blob)[0]]
    if len(blob) < 24:
        raise PcapError(f"{path}: truncated pcap header ({len(blob)} of 24 bytes).")
    _, _, _, _, _, snaplen, linktype = struct.unpack_from(endian + "IHHiIII", blob)
    if linktype & 0xFFFF != LINKTYPE_ETHERNET:
        raise PcapError(f"{path}: link type {linktype} is not Ethernet (1); "
                        "capture on an Ethernet interface.")
    packets = []
    off = 24
    while off < len(blob):
        if off + 16 > len(blob):
            raise PcapError(f"{path}: truncated record header of packet {len(packets) + 1} "
                            f"at byte {off}.")
        sec, frac, incl, orig = struct.unpack_from(endian + "IIII", blob, off)
        if incl > MAX_FRAME:
            raise PcapError(f"{path}: packet {len(packets) + 1} at byte {off} claims "
                            f"{incl} bytes; the file is corrupt.")
        if off + 16 + incl > len(blob):
            raise PcapError(f"{path}: packet {len(packets) + 1} at byte {off} is truncated "
                            f"({len(blob) - off - 16} of {incl} bytes).")
        data = blob[off + 16:off + 16 + incl]
        packets.append(Packet(data, sec * 1_000_000_000 + frac * (1_000_000_000 // ticks)))
        off += 16 + incl
    return packets


def _read_pcapng(path, blob):
    packets = []
    endian = "<"
    interfaces = []  # (linktype, ticks per second)
    off = 0
    while off < len(blob):
        if off + 12 > len(blob):
            raise PcapError(f"{path}: truncated pcapng block at byte {off}.")
        btype = struct.unpack_from(endian + "I", blob, off)[0]
        if btype == _PCAPNG_SHB:
            bom = struct.unpack_from("<I", blob, off + 8)[0]
            if bom == _PCAPNG_BOM:
                endian = "<"
            elif bom == struct.unpack("<I", struct.pack(">I", _PCAPNG_BOM))[0]:
                endian = ">"
            else:
                raise PcapError(f"{path}: bad pcapng byte-order magic at byte {off}.")
            interfaces = []
        blen = struct.unpack_from(endian + "I", blob, off + 4)[0]
        if blen < 12 or blen % 4 or off + blen > len(blob):
            raise PcapError(f"{path}: pcapng block at byte {off} is truncated or corrupt "
                            f"(length {blen}, {len(blob) - off} bytes left).")
        body = blob[off + 8:off + blen - 4]
        if btype == 1:  # Interface Description Block
            linktype = struct.unpack_from(endian + "H", body)[0]
            interfaces.append((linktype, _if_ticks(body[8:], endian)))
        elif btype in (6, 3):  # Enhanced / Simple Packet Block
            if btype == 6:
                ifid, ts_hi, ts_lo, incl, _ = struct.unpack_from(endian + "IIIII", body)
                data_off = 20
            else:
                ifid, ts_hi, ts_lo = 0, 0, 0
                incl = min(struct.unpack_from(endian + "I", body)[0], len(body) - 4)
                data_off = 4
            if ifid >= len(interfaces):
                raise PcapError(f"{path}: packet at byte {off} names interface {ifid}, "
                                "which the capture does not describe.")
            linktype, ticks = interfaces[ifid]
            if linktype != LINKTYPE_ETHERNET:
                raise PcapError(f"{path}: interface {ifid} has link type {linktype}, "
                                "not Ethernet (1).")
            if data_off + incl > len(body):
                raise PcapError(f"{path}: packet {len(packets) + 1} at byte {off} is truncated.")
            ts = (ts_hi << 32) | ts_lo
            packets.append(Packet(body[data_off:data_off + incl],
                                  ts * 1_000_000_000 // ticks,
                                  _comment(body[data_off + ((incl + 3) & ~3):], endian)))
        off += blen
    return packets


def _options(raw, endian):
    off = 0
    while off + 4 <= len(raw):
        code, length = struct.unpack_from(endian + "HH", raw, off)
        if code == 0:
            return
        yield code, raw[off + 4:off + 4 + length]
        off += 4 + ((length + 3) & ~3)


def _if_ticks(raw, endian):
    for code, value in _options(raw, endian):
        if code == 9 and value:  # if_tsresol
            v = value[0]
            return 2 ** (v & 0x7F) if v & 0x80 else 10 ** v
    return 1_000_000


def _comment(raw, endian):
    for code, value in _options(raw, endian):
        if code == 1:
            return value.decode("utf-8", "replace")
    return None


def write_pcap(path, packets) -> None:
    """Write packets (``Packet`` or ``bytes``) as pcap, or pcapng when ``path`` ends .pcapng."""
    path = Path(path)
    packets = [p if isinstance(p, Packet) else Packet(bytes(p)) for p in packets]
    out = bytearray()
    if path.suffix == ".pcapng":
        shb_body = struct.pack("<IHHq", _PCAPNG_BOM, 1, 0, -1)
        out += _block(_PCAPNG_SHB, shb_body)
        tsresol = _opt(9, bytes([9])) + _opt(0, b"")
        out += _block(1, struct.pack("<HHI", LINKTYPE_ETHERNET, 0, MAX_FRAME) + tsresol)
        for p in packets:
            body = struct.pack("<IIIII", 0, p.time_ns >> 32, p.time_ns & 0xFFFFFFFF,
                               len(p.data), len(p.data))
            body += p.data + b"\0" * (-len(p.data) % 4)
            if p.comment:
                body += _opt(1, p.comment.encode()) + _opt(0, b"")
            out += _block(6, body)
    else:
        out += struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, MAX_FRAME, LINKTYPE_ETHERNET)
        for p in packets:
            out += struct.pack("<IIII", p.time_ns // 1_000_000_000, p.time_ns % 1_000_000_000,
                               len(p.data), len(p.data))
            out += p.data
    path.write_bytes(bytes(out))


def _opt(code, value):
    return struct.pack("<HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


def _block(btype, body):
    length = 12 + len(body)
    return struct.pack("<II", btype, length) + body + struct.pack("<I", length)
