"""Throughput of the match-action gateware: cycles per frame for back-to-back frames.

For each example program and width, frames of one size (IPv4/UDP, IPv4/TCP for the load
balancer, addressed so that the program's tables hit; 64, 128 and 1500 bytes on the wire,
without the FCS) go into the gateware back to back with no idle cycles and no backpressure,
with the entries of a small table set installed; the C++ Verilator harness reports the cycles
from the first accepted input beat to the last (``in_span``). Every case is also checked
against the golden reference (results and frames), so the figures are those of exact runs:
back-to-back frames of one entry are what the counter and meter forwarding of the stages is
for. Cycles per frame is ``in_span / frames``; the steady rate is the slope between a run of
``frames`` and one of twice as many (``(in_span(2n) - in_span(n)) / n``), which leaves out
what the queues absorb at the start: where an output frame takes more beats than its input
frame (the load balancer's pushed VLAN tag), the input waits for the output and the slope is
the output's rate. Line rate at 64 bits is one 64-byte frame every 8 cycles (10 Gb/s at
156.25 MHz), at 512 bits one every 1.68 cycles at 250 MHz (100 Gb/s of 64-byte frames:
148.8 M frames/s, with 20 bytes of preamble and gap, IEEE 802.3 clause 4.4.2).

Prints a table and writes benchmarks/results/match_action.json.
"""

import argparse
import json
import platform
from pathlib import Path

from scapy.all import IP, TCP, UDP, Ether, Raw

from nicsim.hw.harness import build_harness, run_harness
from nicsim.hw.match_action.control import ControlPlane
from nicsim.hw.match_action.engine import MaConfig, decode_result, run_model
from nicsim.hw.match_action.program import load_program, make_entry

RESULTS = Path(__file__).parent / "results" / "match_action.json"
PROGRAMS = Path(__file__).parents[1] / "hw" / "match_action" / "programs"
SIZES = (64, 128, 1500)
MAC = "02:00:00:00:00:01"


def entries(name, program):
    """A few entries per program, and the addresses of the traffic that hits them."""
    cp = ControlPlane(program)
    src, dst, sport, dport, l4 = "10.9.9.9", "10.1.2.3", 1234, 80, UDP
    if name == "ddos":
        cp.add(make_entry(program, "blocklist", "10.200.0.0/24", "drop"))
        cp.add(make_entry(program, "ratelimit", dst, "forward", {"port": 3},
                          meter={"cir": 10**9, "cbs": 3000, "pir": 2 * 10**9, "pbs": 20000}))
    elif name == "router":
        cp.add(make_entry(program, "ipv4_routes", "10.1.0.0/16", "route",
                          {"port": 3, "dmac": MAC, "smac": MAC}))
    elif name == "acl":
        cp.add(make_entry(program, "acl", ["0x0a000000&&&0xff000000", "0&&&0", "17&&&255"],
                          "permit", {"port": 2}, priority=1))
    elif name == "lb":
        dst, l4 = "10.0.0.1", TCP
        cp.add(make_entry(program, "flows", [src, dst, 6, sport, dport], "backend",
                          {"port": 4, "dmac": MAC, "vid": 7}))
    return cp, (src, dst, sport, dport, l4)


def frame(addrs, size):
    src, dst, sport, dport, l4 = addrs
    pkt = Ether(src=MAC, dst=MAC) / IP(src=src, dst=dst, ttl=64) / l4(sport=sport, dport=dport)
    return bytes(pkt / Raw(bytes(max(size - len(pkt), 0))))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[64, 512])
    parser.add_argument("--programs", nargs="+", default=["ddos", "router", "acl", "lb"])
    parser.add_argument("--count", type=int, default=400, help="frames per case")
    args = parser.parse_args()
    rows = []
    for width in args.widths:
        for name in args.programs:
            program = load_program(PROGRAMS / f"{name}.toml")
            cp, addrs = entries(name, program)
            build = build_harness("match-action", {"width": width, "program": cp.config})
            for size in SIZES:
                f = frame(addrs, size)
                spans = []
                for count in (args.count, 2 * args.count):
                    done = run_harness(build, [f] * count, [100 * i for i in range(count)],
                                       cp.device.writes)
                    assert len(done.results) == count, "frames went missing"
                    config = MaConfig(program, cp.entries(), frame_interval_ns=100)
                    model = run_model([f] * count, config)
                    metas = [decode_result(w, config) for w in done.results]
                    if metas != model.meta or [o for o, _ in done.frames] != model.frames:
                        raise SystemExit(f"{name} at {width} bit, {len(f)} B: the gateware "
                                         "differs from the reference")
                    spans.append(done.in_span)
                out_len = len(model.frames[0]) if model.frames else len(f)
                rows.append({"width": width, "program": name, "frame_bytes": len(f),
                             "out_bytes": out_len, "frames": args.count, "in_span": spans[0],
                             "cycles_per_frame": round(spans[0] / args.count, 2),
                             "steady_cycles_per_frame": round((spans[1] - spans[0])
                                                              / args.count, 2),
                             "beats_per_frame": -(-len(f) // (width // 8)),
                             "out_beats_per_frame": -(-out_len // (width // 8))})
    print(f"{'width':>5} {'program':>7} {'bytes':>5} {'out':>5} {'cycles/frame':>12} "
          f"{'steady':>6} {'beats in/out':>12}")
    for row in rows:
        print(f"{row['width']:>5} {row['program']:>7} {row['frame_bytes']:>5} "
              f"{row['out_bytes']:>5} {row['cycles_per_frame']:>12} "
              f"{row['steady_cycles_per_frame']:>6} "
              f"{row['beats_per_frame']:>5}/{row['out_beats_per_frame']}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"machine": platform.machine(), "results": rows}, indent=1)
                       + "\n")


if __name__ == "__main__":
    main()
