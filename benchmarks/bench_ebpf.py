"""Speed of the eBPF interpreter, and what each instruction and helper costs in the kernel.

Interpreter: eBPF instructions executed per wall second for the example programs over mixed
frames (the goal is at least one million per second), measured on one core.

Kernel calibration (root, bpftool and bpffs needed; skipped with the reason otherwise): small
XDP programs that loop over one kind of work run under BPF_PROG_TEST_RUN (``bpftool prog run
... repeat N``, JIT-compiled, average duration per run); nicsim's interpreter counts the
instructions and helper calls of the same object on the same input, so

    ns per instruction = (loop program ns - empty program ns) / instructions
    ns per helper call = (program ns - empty ns - instructions * ns per instruction) / calls

These figures are the source of the table in nicsim/host/ebpf/cost.py.

Prints a table and writes benchmarks/results/ebpf.json.
"""

import argparse
import json
import os
import platform
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from nicsim.host.ebpf.build import compile_c, prog_path
from nicsim.host.ebpf.elf import load_object
from nicsim.host.ebpf.interp import Vm

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results" / "ebpf.json"
sys.path.insert(0, str(ROOT / "tests" / "host" / "ebpf"))

CALIBRATION_C = r"""
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#define N 64
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY); __type(key, __u32); __type(value, __u64);
	__uint(max_entries, 16);
} arr SEC(".maps");
struct {
	__uint(type, BPF_MAP_TYPE_HASH); __type(key, __u32); __type(value, __u64);
	__uint(max_entries, 1024);
} hsh SEC(".maps");
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE); __type(key, __u64); __type(value, __u32);
	__uint(max_entries, 64); __uint(map_flags, BPF_F_NO_PREALLOC);
} lpm SEC(".maps");
struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP); __type(key, __u32); __type(value, __u32);
	__uint(max_entries, 4);
} dev SEC(".maps");
static volatile __u32 sink;

SEC("xdp") int empty(struct xdp_md *ctx) { return XDP_PASS; }

SEC("xdp") int alu(struct xdp_md *ctx) {
	__u32 x = ctx->data_end - ctx->data;
	for (int i = 0; i < 1000; i++) { x = x * 31 + i; x ^= x >> 7; }
	sink = x; return XDP_PASS;
}
SEC("xdp") int pkt_load(struct xdp_md *ctx) {
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	__u32 s = 0;
	for (int i = 0; i < 512; i++) {
		__u8 *p = data + i;
		if ((void *)(p + 1) > end) break;
		s += *p;
	}
	sink = s; return XDP_PASS;
}
SEC("xdp") int array_lookup(struct xdp_md *ctx) {
	__u32 s = 0;
	for (__u32 i = 0; i < N; i++) {
		__u32 k = i & 15; __u64 *v = bpf_map_lookup_elem(&arr, &k);
		if (v) s += *v;
	}
	sink = s; return XDP_PASS;
}
SEC("xdp") int hash_lookup(struct xdp_md *ctx) {
	__u32 s = 0;
	for (__u32 i = 0; i < N; i++) {
		__u32 k = i & 15; __u64 *v = bpf_map_lookup_elem(&hsh, &k);
		if (v) s += *v;
	}
	sink = s; return XDP_PASS;
}
SEC("xdp") int hash_update(struct xdp_md *ctx) {
	for (__u32 i = 0; i < N; i++) {
		__u32 k = i & 15; __u64 v = i;
		bpf_map_update_elem(&hsh, &k, &v, BPF_ANY);
	}
	return XDP_PASS;
}
SEC("xdp") int lpm_lookup(struct xdp_md *ctx) {
	__u32 s = 0;
	for (__u32 i = 0; i < N; i++) {
		__u64 k = 32 | ((__u64)(0x0a000000 + i) << 32);
		__u32 *v = bpf_map_lookup_elem(&lpm, &k);
		if (v) s += *v;
	}
	sink = s; return XDP_PASS;
}
SEC("xdp") int csum(struct xdp_md *ctx) {
	__u32 a[5] = {1, 2, 3, 4, 5}, b[5] = {6, 7, 8, 9, 10};
	__s64 s = 0;
	for (int i = 0; i < N; i++) { a[0] = i; s += bpf_csum_diff(a, 20, b, 20, 0); }
	sink = s; return XDP_PASS;
}
SEC("xdp") int ktime(struct xdp_md *ctx) {
	__u64 s = 0;
	for (int i = 0; i < N; i++) s += bpf_ktime_get_ns();
	sink = s; return XDP_PASS;
}
SEC("xdp") int adjust_head(struct xdp_md *ctx) {
	for (int i = 0; i < N / 2; i++) {
		if (bpf_xdp_adjust_head(ctx, -4)) return XDP_DROP;
		if (bpf_xdp_adjust_head(ctx, 4)) return XDP_DROP;
	}
	return XDP_PASS;
}
SEC("xdp") int redirect_map(struct xdp_md *ctx) {
	__u32 s = 0;
	for (int i = 0; i < N; i++) s += bpf_redirect_map(&dev, 0, XDP_PASS);
	sink = s; return XDP_PASS;
}
SEC("xdp") int fib(struct xdp_md *ctx) {
	__u32 s = 0;
	for (int i = 0; i < N; i++) {
		struct bpf_fib_lookup f = {};
		f.family = 2; f.ipv4_dst = 0x0100007f; f.ifindex = 1;
		s += bpf_fib_lookup(ctx, &f, sizeof(f), 0);
	}
	sink = s; return XDP_PASS;
}
char _license[] SEC("license") = "GPL";
"""

SPEED_CASES = [
    # (source, program, map contents from tests/host/ebpf/cases.py or None, frame kind)
    ("payload_sum", "payload_sum", None, "1500"),
    ("parse_count", "parse_count", None, "mixed"),
    ("firewall", "firewall", "firewall_maps", "mixed"),
    ("lb", "lb", "lb_maps", "mixed"),
    ("vlan", "vlan_push", None, "mixed"),
    ("fwd", "fwd", None, "mixed"),
]


def interp_speed(seconds):
    import cases

    from nicsim.host.ebpf.helpers import FibTable

    mixed = cases.random_packets(7, 500)
    big = [bytes(range(256)) * 5 + bytes(220)] * 50
    rows = []
    for source, prog, maps, kind in SPEED_CASES:
        obj = load_object(compile_c(prog_path(source)))
        fib = FibTable().add("10.0.0.0/24", 3, "02:00:00:00:00:cc", "02:00:00:00:00:dd")
        vm = Vm(obj.programs[prog], map_specs=obj.maps, fib=fib)
        for name, entries in (getattr(cases, maps)() if maps else {}).items():
            for key, value in entries.items():
                vm.maps[obj.map_index(name)].update(key, value)
        frames = big if kind == "1500" else mixed
        insns = runs = 0
        start = time.perf_counter()
        cpu0 = time.process_time()
        while time.perf_counter() - start < seconds:
            for frame in frames:
                insns += vm.run(frame).insns
            runs += len(frames)
        wall = time.perf_counter() - start
        cpu = time.process_time() - cpu0
        rows.append({"program": prog, "frames": kind, "runs": runs, "insns": insns,
                     "insns_per_run": round(insns / runs, 1), "wall_s": round(wall, 3),
                     "insns_per_wall_s": round(insns / wall),
                     "insns_per_cpu_s": round(insns / cpu) if cpu else None,
                     "runs_per_wall_s": round(runs / wall)})
    return rows


def _bpftool_run(pin, data_path, repeat):
    import re

    out = subprocess.run(["bpftool", "prog", "run", "pinned", str(pin), "data_in",
                          str(data_path), "repeat", str(repeat)], capture_output=True,
                         text=True, check=True)
    match = re.search(r"duration \(average\): (\d+)ns", out.stdout + out.stderr)
    return int(match[1])


def kernel_calibration(repeat):
    from kernel_oracle import KernelProgram, kernel_available

    ok, why = kernel_available()
    if not ok:
        return {"skipped": why}
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "calibrate.c"
        src.write_text(CALIBRATION_C)
        obj_path = compile_c(src)
        obj = load_object(obj_path)
        data = Path(tmp) / "frame"
        frame = bytes(600)
        data.write_bytes(frame)
        measured = {}
        for name, program in obj.programs.items():
            vm = Vm(program, map_specs=obj.maps)
            with KernelProgram(obj_path, name) as kp:
                for i in range(16):
                    key = struct.pack("<I", i)
                    kp.map_update("hsh", key, bytes(8))
                    vm.maps[obj.map_index("hsh")].update(key, bytes(8))
                kp.map_update("dev", bytes(4), struct.pack("<I", 1))
                vm.maps[obj.map_index("dev")].update(bytes(4), struct.pack("<I", 1))
                ns = min(_bpftool_run(kp.dir / "prog" / name, data, repeat) for _ in range(3))
            res = vm.run(frame)
            measured[name] = {"ns": ns, "insns": res.insns, "helpers": res.helpers}
    empty = measured["empty"]["ns"]
    per_insn = {k: (measured[k]["ns"] - empty) / measured[k]["insns"] for k in ("alu", "pkt_load")}
    ns_insn = sum(per_insn.values()) / len(per_insn)
    helpers = {}
    for name, m in measured.items():
        if not m["helpers"]:
            continue
        (helper, calls), = m["helpers"].items()
        helpers[f"{helper} ({name})"] = round(
            max(0.0, (m["ns"] - empty - m["insns"] * ns_insn) / calls), 2)
    return {"repeat": repeat, "empty_run_ns": empty,
            "ns_per_insn": {k: round(v, 4) for k, v in per_insn.items()},
            "ns_per_insn_mean": round(ns_insn, 4), "ns_per_helper_call": helpers,
            "programs": measured}


def cost_check(repeat):
    """Kernel duration of example programs on one frame against the cost model.

    Only programs that leave the frame as it is: with ``repeat`` the kernel runs the program
    again on the frame the previous run left (a rewritten address, one more VLAN tag), so a
    rewriting program would be timed on a different path than the one nicsim counted.
    """
    import cases
    from kernel_oracle import KernelProgram, kernel_available

    from nicsim.host.ebpf.cost import DEFAULT_COST

    ok, why = kernel_available()
    if not ok:
        return {"skipped": why}
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether

    frame = bytes(Ether() / IP(src="192.0.2.200", dst=cases.VIP) / TCP(dport=80) / bytes(64))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "frame"
        data.write_bytes(frame)
        for source, prog, maps in (("parse_count", "parse_count", None),
                                   ("drop_udp", "drop_udp", None),
                                   ("firewall", "firewall", "firewall_maps")):
            obj_path = compile_c(prog_path(source))
            obj = load_object(obj_path)
            vm = Vm(obj.programs[prog], map_specs=obj.maps)
            with KernelProgram(obj_path, prog) as kp:
                for name, entries in (getattr(cases, maps)() if maps else {}).items():
                    for key, value in entries.items():
                        kp.map_update(name, key, value)
                        vm.maps[obj.map_index(name)].update(key, value)
                res = vm.run(frame)
                ns = min(_bpftool_run(kp.dir / "prog" / prog, data, repeat) for _ in range(3))
            rows.append({"program": prog, "insns": res.insns, "helpers": res.helpers,
                         "kernel_ns": ns, "model_ns": round(DEFAULT_COST.run_ns(res), 1)})
    return {"frame": "Ether/IPv4/TCP to the VIP, 118 bytes", "rows": rows}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0,
                        help="wall time per program for the interpreter speed (default 2)")
    parser.add_argument("--repeat", type=int, default=20000,
                        help="BPF_PROG_TEST_RUN repetitions per calibration program")
    parser.add_argument("--no-kernel", action="store_true", help="skip the kernel calibration")
    args = parser.parse_args()
    rows = interp_speed(args.seconds)
    print(f"{'program':14} {'frames':>7} {'insns/run':>10} {'insns/wall s':>13} "
          f"{'insns/CPU s':>12} {'runs/wall s':>12}")
    for r in rows:
        print(f"{r['program']:14} {r['frames']:>7} {r['insns_per_run']:>10} "
              f"{r['insns_per_wall_s']:>13} {r['insns_per_cpu_s']:>12} "
              f"{r['runs_per_wall_s']:>12}")
    total = sum(r["insns"] for r in rows) / sum(r["wall_s"] for r in rows)
    print(f"all programs: {total:,.0f} instructions per wall second (goal >= 1,000,000)")
    kernel = {"skipped": "--no-kernel"} if args.no_kernel else kernel_calibration(args.repeat)
    if "skipped" in kernel:
        print(f"kernel calibration skipped: {kernel['skipped']}")
    else:
        print(f"kernel: empty run {kernel['empty_run_ns']} ns, "
              f"{kernel['ns_per_insn_mean']} ns per instruction")
        for name, ns in kernel["ns_per_helper_call"].items():
            print(f"  {name:34} {ns:8.2f} ns per call")
    check = {"skipped": "--no-kernel"} if args.no_kernel else cost_check(args.repeat)
    for row in check.get("rows", []):
        print(f"  cost model {row['program']:12} kernel {row['kernel_ns']:6} ns, "
              f"model {row['model_ns']:8} ns")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "machine": {"python": platform.python_version(), "processor": platform.processor(),
                    "kernel": platform.release(), "cpus": os.cpu_count(), "cores_used": 1,
                    "load_average_1min": round(os.getloadavg()[0], 2)},
        "goal": "interpreter: >= 1000000 eBPF instructions per wall second",
        "interpreter_insns_per_wall_s": round(total),
        "interpreter": rows,
        "kernel_calibration": kernel,
        "cost_model_check": check,
    }, indent=1) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
