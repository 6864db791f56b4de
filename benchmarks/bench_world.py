"""Simulation speed of the end-to-end model: simulated packets per wall second.

Runs scenarios of the model backend on one core (the simulation is single-threaded) and
reports frames offered per wall second and per CPU second, excluding the one-time build of
the world (imports, scapy templates). The goal for the 64-byte, 1-queue, PMD-style scenario
is 100,000 simulated packets per wall second, and the Linux stack within 3x of the PMD.

Prints a table and writes benchmarks/results/world.json.
"""

import argparse
import json
import platform
import time
from pathlib import Path

from nicsim.sim.scenario import load_scenario
from nicsim.sim.world import World

RESULTS = Path(__file__).parent / "results" / "world.json"

CASES = {
    "pmd-drop-64": [],
    "pmd-drop-64-4q": ["nic.rxqs=4", "host.cores=4", "traffic.0.flows=64"],
    "irq-drop-64": ["host.path=\"irq\""],
    "pmd-l2fwd-64": ["host.app=\"l2fwd\""],
    "pmd-drop-1500": ["traffic.0.size=1500"],
    "pmd-drop-64-iommu": ["iommu.mode=\"translate\""],
    "pmd-l3fwd-64": ["host.app=\"l3fwd\""],
    "pmd-kv-64": ["host.app=\"kv\"", "traffic.0.rate_mpps=5", "traffic.0.flows=64"],
    "pmd-pipeline-64": ["host.pmd_mode=\"pipeline\"", "host.cores=3", "nic.rxqs=3",
                        "traffic.0.flows=64"],
    "netmap-drop-64": ["host.path=\"netmap\""],
    "netmap-l2fwd-64": ["host.path=\"netmap\"", "host.app=\"l2fwd\""],
    # The Linux stack at line rate drops most frames at the NIC (one core cannot keep up);
    # below its capacity, with the reader on its own core, every frame goes the whole way.
    "linux-drop-64": ["host.path=\"linux\""],
    "linux-drop-64-2mpps": ["host.path=\"linux\"", "host.cores=2", "host.app_cores=[1]",
                            "traffic.0.rate_mpps=2"],
    "pmd-drop-64-2mpps": ["traffic.0.rate_mpps=2"],
    "linux-udp-echo-64": ["host.path=\"linux\"", "host.app=\"udp_echo\"",
                          "traffic.0.rate_mpps=0.5"],
    # TCP: four streams of full-sized segments at line rate (GRO merges them, the host sends
    # ACKs), and closed-loop request/response clients on mTCP.
    "linux-tcp-bulk": ["host.path=\"linux\"", "host.app=\"tcp_bulk\"", "traffic.0.proto=\"tcp\"",
                       "traffic.0.stream=true", "traffic.0.size=1518", "traffic.0.flows=4"],
    "mtcp-tcp-rr": ["host.path=\"mtcp\"", "host.app=\"tcp_rr\"", "traffic.0.proto=\"tcp\"",
                    "traffic.0.pattern=\"closed_loop\"", "traffic.0.concurrency=16"],
}


def measure(name, overrides, duration_us):
    scenario = load_scenario(text=f"name = \"{name}\"\nduration_us = {duration_us}\n",
                             overrides=overrides)
    world = World(scenario)
    world.run_until(world.t0 + 1)  # builds the traffic templates before the clock starts
    wall0, cpu0 = time.perf_counter(), time.process_time()
    results = world.run()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    frames = results["offered"]["frames"]
    return {
        "scenario": name,
        "overrides": overrides,
        "simulated_us": duration_us,
        "frames": frames,
        "delivered": results["delivered_frames"],
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "frames_per_wall_s": round(frames / wall),
        "frames_per_cpu_s": round(frames / cpu),
        "simulated_mpps": results["throughput"]["mpps"],
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration-us", type=float, default=20_000,
                        help="simulated time per scenario (default 20 ms)")
    parser.add_argument("--only", help="comma-separated scenario names")
    args = parser.parse_args()
    names = args.only.split(",") if args.only else list(CASES)
    rows = []
    print(f"{'scenario':24} {'frames':>9} {'wall s':>8} {'frames/wall s':>14} "
          f"{'frames/CPU s':>13}")
    for name in names:
        row = measure(name, CASES[name], args.duration_us)
        rows.append(row)
        print(f"{name:24} {row['frames']:>9} {row['wall_s']:>8} "
              f"{row['frames_per_wall_s']:>14} {row['frames_per_cpu_s']:>13}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "machine": {"python": platform.python_version(), "processor": platform.processor(),
                    "cores_used": 1},
        "goal": "pmd-drop-64: >= 100000 simulated frames per wall second",
        "results": rows,
    }, indent=1) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
