"""``nicsim demo``: a mixed capture through the RSS unit and the RX checksum engine on the RTL,
and a 64 KiB TCP send through the TSO and LRO engines.

The same capture also runs through the golden models; the demo says whether the gateware and
the models agree frame for frame.
"""

from __future__ import annotations

import collections
import json
import time
from pathlib import Path

from rich.table import Table

__all__ = ["run_demo"]


_TYPE_LABELS = {"tcp_ipv4": "TCP/IPv4", "udp_ipv4": "UDP/IPv4", "ipv4": "IPv4",
                "tcp_ipv6": "TCP/IPv6", "udp_ipv6": "UDP/IPv6", "ipv6": "IPv6", "none": "none"}


def _meaning(ip, l4):
    if ip == "bad":
        return "IPv4 header checksum wrong: the stack drops it"
    if l4 == "ok":
        return "CHECKSUM_UNNECESSARY (TCP/UDP verified)"
    if l4 == "bad":
        return "TCP/UDP checksum wrong: CHECKSUM_COMPLETE, the stack drops it"
    return "CHECKSUM_COMPLETE only (no TCP/UDP to verify)"


def run_demo(console, frames=300, width=64, outdir=Path("out/demo"), seed=1):
    """Run the demo and print its tables on ``console``."""
    from nicsim.hw.engines import load_config, run_model, run_rtl
    from nicsim.hw.pcap import Packet, write_pcap
    from nicsim.sim.traffic import mixed_frames

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    data, labels = mixed_frames(frames, seed=seed)
    capture = outdir / "mixed.pcap"
    write_pcap(capture, [Packet(f, i * 1000) for i, f in enumerate(data)])
    console.print(f"[bold]nicsim demo[/]: {len(data)} frames (IPv4/IPv6, TCP/UDP/ICMP, VLAN, "
                  f"fragments, corrupted checksums) -> {capture}")

    results = {}
    for engine in ("rss", "checksum-rx"):
        cfg = load_config(engine)
        start = time.monotonic()
        with console.status(f"{engine}: building the {width}-bit gateware (cached after the "
                            "first run) and simulating on Verilator"):
            rtl = run_rtl(engine, data, cfg, width=width)
        elapsed = time.monotonic() - start
        model = run_model(engine, data, cfg)
        agree = sum(a == b for a, b in zip(rtl.meta, model.meta, strict=True))
        results[engine] = rtl
        meta_file = outdir / f"{engine}.jsonl"
        with open(meta_file, "w") as handle:
            for i, m in enumerate(rtl.meta):
                handle.write(json.dumps({"frame": i, **m}) + "\n")
        write_pcap(outdir / f"{engine}.pcapng",
                   [Packet(f, i * 1000, json.dumps(m)) for i, (f, m) in
                    enumerate(zip(data, rtl.meta, strict=True))])
        verdict = "[green]agree[/]" if agree == len(data) else f"[red]DISAGREE on " \
                                                                f"{len(data) - agree}[/]"
        console.print(f"{engine}: RTL {elapsed:.1f} s; RTL and golden model {verdict} "
                      f"({agree}/{len(data)} frames) -> {meta_file}")

    queues = collections.defaultdict(collections.Counter)
    for m in results["rss"].meta:
        queues[m["queue"]][m["hash_type"]] += 1
    types = [t for t in _TYPE_LABELS if any(t in c for c in queues.values())]
    table = Table("queue", "frames", *(_TYPE_LABELS[t] for t in types),
                  title="RSS: frames per receive queue, by hash type (RTL)")
    for q in sorted(queues):
        c = queues[q]
        table.add_row(str(q), str(sum(c.values())), *(str(c.get(t, 0)) for t in types))
    console.print(table)

    verdicts = collections.Counter((m["ip"], m["l4"]) for m in results["checksum-rx"].meta)
    table = Table("ip", "l4", "frames", "what the driver tells Linux",
                  title="RX checksum verdicts (RTL)")
    for (ip, l4), n in sorted(verdicts.items()):
        table.add_row(ip, l4, str(n), _meaning(ip, l4))
    console.print(table)
    console.print("Open the annotated captures in Wireshark (each frame's verdict is its "
                  f"comment): wireshark {outdir}/checksum-rx.pcapng")
    return results


def run_segmentation_demo(console, width=64, outdir=Path("out/demo"), mss=1448, seed=1):
    """A 64 KiB TCP send cut by the TSO engine and merged back by the LRO engine, both RTL.

    Prints the segment table (sequence number, length, IPv4 ID, flags, checksums checked by
    scapy) and the merged frames with their {segs, gso_size}; checks that the merged payload is
    the byte stream that was sent.
    """
    import random

    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether

    from nicsim.hw.engines import load_config, run_rtl
    from nicsim.hw.pcap import Packet, write_pcap

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    # The largest IPv4 super-frame: total length 65535 with a 20-byte TCP header.
    payload = bytes(rng.randrange(256) for _ in range(65535 - 20 - 20))
    seq0 = 0xFFFF8000  # the sequence numbers wrap past 2**32 during the send
    send = (Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
            / IP(src="10.0.0.1", dst="10.0.0.2", id=0x1234, flags="DF")
            / TCP(sport=40000, dport=5201, seq=seq0, ack=1, flags="PA", window=512)
            / payload)
    frame = bytes(send)
    console.print(f"\n[bold]TSO -> LRO[/]: one {len(payload)}-byte TCP send "
                  f"({len(frame)}-byte super-frame), MSS {mss}, {width}-bit gateware")

    with console.status("tso: building the gateware (cached after the first run) and "
                        "segmenting on Verilator"):
        tso = run_rtl("tso", [frame], load_config("tso", None, {"mss": mss}), width=width)
    table = Table("segment", "seq", "payload", "IPv4 id", "flags", "IP csum", "TCP csum",
                  title=f"TSO: {len(tso.frames)} segments (RTL), checked with scapy")
    checks_ok = True
    for k, seg in enumerate(tso.frames):
        pkt = Ether(seg)
        ip, tcp = pkt[IP], pkt[TCP]
        ip_ok = IP(bytes(ip)).chksum == _recomputed(IP(bytes(ip)), "chksum")
        tcp_ok = tcp.chksum == _recomputed(pkt, "tcp")
        checks_ok &= ip_ok and tcp_ok
        if k < 4 or k >= len(tso.frames) - 2:
            table.add_row(str(k), f"{tcp.seq:#010x}", str(len(tcp.payload)), f"{ip.id:#06x}",
                          str(tcp.flags), "ok" if ip_ok else "BAD", "ok" if tcp_ok else "BAD")
        elif k == 4:
            table.add_row("...", "", "", "", "", "", "")
    console.print(table)
    write_pcap(outdir / "tso.pcap", [Packet(f, i * 1000) for i, f in enumerate(tso.frames)])

    with console.status("lro: building the gateware and merging on Verilator"):
        lro = run_rtl("lro", tso.frames, load_config("lro"), width=width)
    table = Table("merged frame", "bytes", "segs", "gso_size", "seq",
                  title="LRO: the segments merged again (RTL)")
    stream = b""
    for k, (merged, meta) in enumerate(zip(lro.frames, lro.out_meta, strict=True)):
        pkt = Ether(merged)
        stream += bytes(pkt[TCP].payload)
        table.add_row(str(k), str(len(merged)), str(meta.get("segs", 1)),
                      str(meta.get("gso_size", 0)), f"{pkt[TCP].seq:#010x}")
    console.print(table)
    write_pcap(outdir / "lro.pcap", [Packet(f, i * 1000) for i, f in enumerate(lro.frames)])
    same = stream == payload
    if lro.frames == [frame]:
        console.print("The merged frame is the super-frame that was sent, headers and all.")
    sums = "[green]ok[/]" if checks_ok else "[red]BAD[/]"
    merged = "[green]identical to the send[/]" if same else "[red]DIFFERS[/]"
    console.print(f"checksums of every segment {sums}; merged byte stream {merged} -> "
                  f"{outdir}/tso.pcap, {outdir}/lro.pcap")
    return same and checks_ok


def _recomputed(pkt, which):
    """The checksum scapy computes for ``pkt`` with the field cleared."""
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether

    if which == "chksum":
        fresh = IP(bytes(pkt))
        del fresh.chksum
        return IP(bytes(fresh)).chksum
    fresh = Ether(bytes(pkt))
    del fresh[TCP].chksum
    return Ether(bytes(fresh))[TCP].chksum
