"""The capture reader and writer against scapy, an independent pcap implementation."""

import struct

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.utils import PcapNgWriter, PcapWriter, rdpcap, wrpcap

from nicsim.hw.pcap import Packet, PcapError, read_pcap, write_pcap


def _frames(n=20):
    return [bytes(Ether() / IP(dst=f"10.0.0.{i}") / UDP(dport=i) / (b"x" * i)) for i in range(n)]


def test_read_what_scapy_writes(tmp_path):
    frames = _frames()
    wrpcap(str(tmp_path / "a.pcap"), [Ether(f) for f in frames])
    assert [p.data for p in read_pcap(tmp_path / "a.pcap")] == frames
    with PcapNgWriter(str(tmp_path / "a.pcapng")) as w:
        for f in frames:
            w.write(Ether(f))
    assert [p.data for p in read_pcap(tmp_path / "a.pcapng")] == frames


def test_read_nanosecond_and_big_endian(tmp_path):
    frames = _frames(3)
    with PcapWriter(str(tmp_path / "ns.pcap"), nano=True) as w:
        for f in frames:
            w.write(Ether(f))
    assert [p.data for p in read_pcap(tmp_path / "ns.pcap")] == frames
    big = struct.pack(">IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    for f in frames:
        big += struct.pack(">IIII", 1, 2, len(f), len(f)) + f
    (tmp_path / "be.pcap").write_bytes(big)
    got = read_pcap(tmp_path / "be.pcap")
    assert [p.data for p in got] == frames
    assert got[0].time_ns == 1_000_002_000


@pytest.mark.parametrize("suffix", [".pcap", ".pcapng"])
def test_scapy_reads_what_we_write(tmp_path, suffix):
    frames = _frames()
    path = tmp_path / f"out{suffix}"
    write_pcap(path, [Packet(f, i * 1000, comment='{"q": 1}') for i, f in enumerate(frames)])
    assert [bytes(p) for p in rdpcap(str(path))] == frames
    back = read_pcap(path)
    assert [p.data for p in back] == frames
    if suffix == ".pcapng":
        assert back[3].comment == '{"q": 1}'
        assert back[3].time_ns == 3000


def test_truncated_and_corrupt_captures_fail_in_one_sentence(tmp_path):
    frames = _frames(5)
    path = tmp_path / "a.pcap"
    write_pcap(path, frames)
    blob = path.read_bytes()
    for cut in (0, 3, 10, 30, len(blob) - 1):
        (tmp_path / "cut.pcap").write_bytes(blob[:cut])
        with pytest.raises(PcapError) as info:
            read_pcap(tmp_path / "cut.pcap")
        assert "\n" not in str(info.value)
    (tmp_path / "junk.pcap").write_bytes(b"this is not a capture at all")
    with pytest.raises(PcapError, match="unknown magic"):
        read_pcap(tmp_path / "junk.pcap")
    ng = tmp_path / "a.pcapng"
    write_pcap(ng, frames)
    (tmp_path / "cut.pcapng").write_bytes(ng.read_bytes()[:-7])
    with pytest.raises(PcapError, match="truncated"):
        read_pcap(tmp_path / "cut.pcapng")
    with pytest.raises(PcapError, match="cannot read"):
        read_pcap(tmp_path / "missing.pcap")


def test_non_ethernet_capture_is_refused(tmp_path):
    blob = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 101)  # LINKTYPE_RAW
    (tmp_path / "raw.pcap").write_bytes(blob)
    with pytest.raises(PcapError, match="not Ethernet"):
        read_pcap(tmp_path / "raw.pcap")
