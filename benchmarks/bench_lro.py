"""Input rate of the LRO gateware: beats accepted per cycle for back-to-back TCP segments.

For each width, one flow's in-order segments of a given frame size (64 bytes: 10-byte payloads;
256; 1500) go into the gateware with no idle cycles and no backpressure; the C++ Verilator
harness reports the beats accepted and the cycles from the first to the last accepted beat.
A rate of 1.0 is line rate. Also measured: a mix of flows (the LRO test traffic). The
configuration is the compact one of the tests (4 flow contexts and, by default, 4 spare regions;
6000-byte merged frames).

Prints a table and writes benchmarks/results/lro.json.
"""

import argparse
import json
import platform
import random
import sys
from pathlib import Path

from nicsim.hw.lro_engine import LroConfig, run_rtl

sys.path.insert(0, str(Path(__file__).parents[1] / "tests" / "rtl"))
from test_lro_traffic import Flow, traffic  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "lro.json"
CONFIG = LroConfig(flows=4, max_bytes=6000, max_frame=8192)


def segments(frame_size, count):
    flow = Flow(random.Random(frame_size), 1)
    flow.v6, flow.vlans, flow.tsval = False, 0, None
    flow.src, flow.dst = "10.0.0.1", "10.0.0.2"
    flow.mss = frame_size - 54
    return [flow.data() for _ in range(count)]


def measure(width, name, frames):
    run, done = run_rtl(frames, CONFIG, width=width, return_outcome=True)
    return {
        "width": width, "traffic": name, "frames_in": len(frames), "frames_out": len(run.frames),
        "in_beats": done.in_beats, "in_span": done.in_span,
        "beats_per_cycle": round(done.in_beats / done.in_span, 3),
        "cycles_per_frame": round(done.in_span / len(frames), 2),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[64, 512])
    parser.add_argument("--count", type=int, default=2000)
    args = parser.parse_args()
    rows = []
    for width in args.widths:
        for size in (64, 256, 1500):
            rows.append(measure(width, f"one flow, {size}-byte segments",
                                segments(size, args.count)))
        rows.append(measure(width, "mixed flows (test traffic)",
                            [f for f in traffic(1, args.count // 2) if 0 < len(f) <= 8192]))
    print(f"{'width':>5} {'traffic':<32} {'beats/cycle':>11} {'cycles/frame':>12}")
    for row in rows:
        print(f"{row['width']:>5} {row['traffic']:<32} {row['beats_per_cycle']:>11} "
              f"{row['cycles_per_frame']:>12}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"machine": platform.machine(), "config": CONFIG.__dict__,
                                   "results": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
