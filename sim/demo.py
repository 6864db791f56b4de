"""``nicsim demo``: a mixed capture through the RSS unit and the RX checksum engine on the RTL.

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
