"""Throughput of each engine: gateware line rate, RTL simulation speed and golden-model speed.

For every engine and width this measures, in one run:

* line rate: beats accepted per clock cycle with back-to-back 60-byte frames (the minimum
  Ethernet frame without FCS) and with 256-byte frames, no idle, no backpressure;
* RTL simulation speed through the C++ Verilator harness (frames/s, beats/s, cycles/s);
* RTL simulation speed through cocotb with the cocotbext-axi bus models (frames/s, beats/s);
* golden-model speed (frames/s) on the same frames.

Prints a table and writes benchmarks/results/engines.json.
"""

import argparse
import json
import platform
import time
from pathlib import Path

from nicsim.hw.engines import load_config, run_model
from nicsim.hw.harness import build_harness, run_harness
from nicsim.sim.traffic import mixed_frames

RESULTS = Path(__file__).parent / "results" / "engines.json"


def _inputs(engine, frames):
    cfg = load_config(engine)
    users = [0] * len(frames)
    params = {}
    writes = []
    if engine == "checksum-tx":
        from nicsim.hw.ref.checksum import TxMode

        users = [int(TxMode.AUTO) << 32] * len(frames)
    if engine == "rss":
        from nicsim.hw.engines import rss_register_writes

        writes = rss_register_writes(cfg.rss)
        params["table_size"] = len(cfg.rss.table)
    return cfg, users, params, writes


def _min_frames(size, count):
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether

    base = bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1, dport=2))
    pad = size - len(base)
    return [base[:-2] + i.to_bytes(2, "big") + bytes(pad) for i in range(count)]


def bench_cocotb(engine, width, frames, params):
    """Frames/s through cocotb + cocotbext-axi (small sample: it is slow)."""
    import tempfile

    from nicsim.hw.verilator import build, run_cocotb

    rtl = build(engine, {"width": width})  # the testbench build (default table size)
    with tempfile.TemporaryDirectory() as tmp:
        job = Path(tmp) / "frames.bin"
        job.write_bytes(b"".join(len(f).to_bytes(4, "little") + f for f in frames))
        out = Path(tmp) / "time.json"
        run_cocotb(rtl, "cocotb_stream", test_dir=Path(__file__).parent,
                   env={"BENCH_FRAMES": str(job), "BENCH_OUT": str(out),
                        "COCOTB_LOG_LEVEL": "WARNING"},
                   run_dir=Path(tmp) / "run")
        return json.loads(out.read_text())["seconds"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=3000)
    parser.add_argument("--cocotb-frames", type=int, default=150)
    parser.add_argument("--widths", default="64,128,256,512")
    parser.add_argument("--engines", default="checksum-rx,checksum-tx,rss")
    args = parser.parse_args()

    frames, _ = mixed_frames(args.frames, seed=11)
    rows = []
    for engine in args.engines.split(","):
        for width in (int(w) for w in args.widths.split(",")):
            cfg, users, params, writes = _inputs(engine, frames)
            try:
                build = build_harness(engine, {"width": width, **params})
            except Exception as exc:  # noqa: BLE001 - report and go on with the others
                print(f"{engine} {width}: not built ({exc})")
                continue
            row = {"engine": engine, "width": width}
            for size in (60, 256):
                burst = _min_frames(size, 2000)
                out = run_harness(build, burst, users[:1] * len(burst), writes)
                row[f"beats_per_cycle_{size}B"] = round(out.in_beats / out.in_span, 4)
            start = time.perf_counter()
            out = run_harness(build, frames, users, writes)
            seconds = time.perf_counter() - start
            row["harness_frames_per_s"] = round(len(frames) / seconds)
            row["harness_beats_per_s"] = round(out.in_beats / seconds)
            row["harness_cycles_per_s"] = round(out.cycles / seconds)
            sample = frames[:args.cocotb_frames]
            if width in (64, 512) and args.cocotb_frames:
                secs = bench_cocotb(engine, width, sample, params)
                beats = sum(-(-len(f) // (width // 8)) for f in sample)
                row["cocotb_frames_per_s"] = round(len(sample) / secs, 1)
                row["cocotb_beats_per_s"] = round(beats / secs)
            start = time.perf_counter()
            run_model(engine, frames, cfg)
            row["model_frames_per_s"] = round(len(frames) / (time.perf_counter() - start))
            rows.append(row)
            print(json.dumps(row))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "machine": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "frames": args.frames,
        "results": rows,
    }, indent=1) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
