"""Output rate of the TSO gateware: segment beats sent per cycle for back-to-back super-frames.

For each width, super-frames (IPv4, TCP with timestamps) of a given payload go into the
gateware back to back with no idle cycles and no backpressure, all with one MSS; the C++
Verilator harness reports the cycles of the whole run. The segments carry more bytes than the
super-frames (a header each), so the output is the bottleneck: output beats per cycle of 1.0 is
line rate. A run's cycles include reset, the first frame's input and its first segment (store
and forward); the steady rate is taken from the difference between a run of ``count``
super-frames and a run of one.

Prints a table and writes benchmarks/results/tso.json.
"""

import argparse
import json
import platform
import random
import sys
from pathlib import Path

from nicsim.hw.harness import build_harness, run_harness
from nicsim.hw.tso_engine import encode_command

sys.path.insert(0, str(Path(__file__).parents[1] / "tests" / "rtl"))
from test_tso import super_frame  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "tso.json"
CASES = ((65536, 1448), (65536, 536), (65536, 8948), (65536, 64), (4000, 1448), (1448, 1448))


def measure(build, lanes, payload, mss, count):
    """Run ``count`` super-frames and one; the difference is the steady rate."""
    rng = random.Random(payload + mss)
    frame = super_frame(rng, payload, version=4, kind="tcp", vlans=0, ip_options=False,
                        tcp_options=True)[0]
    runs = []
    for n in (1, count):
        done = run_harness(build, [frame] * n, [encode_command(mss)] * n)
        runs.append((done, sum(-(-len(f) // lanes) for f, _ in done.frames)))
    (one, one_beats), (many, out_beats) = runs
    steady = (out_beats - one_beats) / (many.cycles - one.cycles)
    return {
        "width": lanes * 8, "payload": payload, "mss": mss, "super_frames": count,
        "segments": len(many.frames), "in_beats": many.in_beats, "out_beats": out_beats,
        "cycles": many.cycles, "out_beats_per_cycle": round(out_beats / many.cycles, 3),
        "steady_out_beats_per_cycle": round(steady, 3),
        "cycles_per_super_frame": round((many.cycles - one.cycles) / (count - 1), 1),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[64, 512])
    parser.add_argument("--count", type=int, default=8, help="super-frames per case")
    args = parser.parse_args()
    rows = []
    for width in args.widths:
        build = build_harness("tso", {"width": width})
        for payload, mss in CASES:
            count = args.count if payload > 10000 else args.count * 16
            rows.append(measure(build, width // 8, payload, mss, count))
    print(f"{'width':>5} {'payload':>7} {'mss':>5} {'segments':>8} {'out beats/cycle':>15} "
          f"{'steady':>7} {'cycles/super-frame':>18}")
    for row in rows:
        print(f"{row['width']:>5} {row['payload']:>7} {row['mss']:>5} {row['segments']:>8} "
              f"{row['out_beats_per_cycle']:>15} {row['steady_out_beats_per_cycle']:>7} "
              f"{row['cycles_per_super_frame']:>18}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"machine": platform.machine(), "results": rows}, indent=1)
                       + "\n")


if __name__ == "__main__":
    main()
