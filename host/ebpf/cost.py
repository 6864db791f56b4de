# Ref: benchmarks/bench_ebpf.py (kernel calibration: BPF_PROG_TEST_RUN with repeat=20000,
#      x86-64 JIT, Linux 6.18.44, the figures in benchmarks/results/ebpf.json
#      "kernel_calibration"); kernel/bpf/arraymap.c array_map_gen_lookup (array lookups
#      inlined by the verifier, no call)
"""What an XDP program run costs the CPU, from what the interpreter counted.

The simulation charges a program by the instructions it executed and the helpers it called
(:class:`~nicsim.host.ebpf.interp.XdpResult`), never by the wall time the interpreter took.
Each figure below was measured in the running kernel by ``benchmarks/bench_ebpf.py``: a program
that loops over one kind of work runs under BPF_PROG_TEST_RUN, JIT-compiled, and nicsim's
interpreter counts the instructions and calls of the same object on the same frame. They hold
for the machine of that run (a virtual x86-64 server, 2 vCPUs); scale them with
:meth:`CostModel.scaled` for a faster or slower core.

=========================  ===========  ===================================================
Item                       Cost (ns)    Measured as
=========================  ===========  ===================================================
instruction                0.104        (loop ns - empty ns) / instructions, mean of an ALU
                                        loop (0.146) and a packet byte loop (0.062)
program entry and exit     21           empty program (return XDP_PASS) per run
map_lookup_elem, array     0            inlined by the verifier into instructions
map_lookup_elem, hash      22.7         per call, after the loop's instructions
map_update_elem, hash      82.8         per call (existing keys, BPF_ANY)
map_lookup_elem, LPM trie  6.8          per call, one /8 prefix stored
csum_diff (20 + 20 bytes)  21.4         per call
ktime_get_ns               29.3         per call (a virtual machine's clock source)
xdp_adjust_head            7.1          per call
redirect_map (devmap)      6.6          per call
fib_lookup                 24.6         per call (host routing table, local address)
=========================  ===========  ===================================================

Helpers not measured (adjust_tail, adjust_meta, redirect, get_prandom_u32 ...) take the cost
of ``xdp_adjust_head``, the cheapest measured helper that touches the frame descriptor.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["CostModel", "DEFAULT_COST", "NS_PER_INSN", "PROGRAM_ENTRY_NS", "HELPER_NS",
           "MAP_OP_NS"]

NS_PER_INSN = 0.104            # ns per JIT-compiled eBPF instruction (bench_ebpf)
PROGRAM_ENTRY_NS = 21.0        # ns to enter and leave an empty XDP program (bench_ebpf)
OTHER_HELPER_NS = 7.1          # ns, helpers not calibrated (as xdp_adjust_head)

HELPER_NS = {                  # ns per call, helpers other than the map ones (bench_ebpf)
    "csum_diff": 21.4,
    "ktime_get_ns": 29.3,
    "ktime_get_boot_ns": 29.3,
    "xdp_adjust_head": 7.1,
    "xdp_adjust_tail": OTHER_HELPER_NS,
    "xdp_adjust_meta": OTHER_HELPER_NS,
    "redirect": OTHER_HELPER_NS,
    "redirect_map": 6.6,
    "fib_lookup": 24.6,
}

MAP_OP_NS = {                  # ns per map helper call by operation and map type (bench_ebpf)
    "lookup:array": 0.0,       # inlined (array_map_gen_lookup)
    "lookup:percpu_array": 0.0,
    "lookup:hash": 22.7,
    "lookup:percpu_hash": 22.7,
    "lookup:lru_hash": 22.7,
    "lookup:lru_percpu_hash": 22.7,
    "lookup:lpm_trie": 6.8,
    "update:hash": 82.8,
    "update:percpu_hash": 82.8,
    "update:lru_hash": 82.8,
    "update:lru_percpu_hash": 82.8,
    "delete:hash": 82.8,       # not measured: as an update (both take the bucket lock)
}
MAP_LOOKUP_DEFAULT_NS = 22.7
MAP_WRITE_DEFAULT_NS = 82.8


@dataclass(frozen=True)
class CostModel:
    """Per-instruction and per-helper costs in nanoseconds of one core.

    Members
    -------
    ns_per_insn : float
    entry_ns : float
        Entering and leaving the program once.
    helper_ns : dict
        Helper name -> ns per call (map helpers excluded).
    map_ns : dict
        ``"lookup:hash"``-style map operation -> ns per call.
    """

    ns_per_insn: float = NS_PER_INSN
    entry_ns: float = PROGRAM_ENTRY_NS
    helper_ns: dict = field(default_factory=lambda: dict(HELPER_NS))
    map_ns: dict = field(default_factory=lambda: dict(MAP_OP_NS))

    def run_ns(self, result) -> float:
        """Return the CPU time in ns of the run ``result`` (an ``XdpResult``)."""
        total = self.entry_ns + result.insns * self.ns_per_insn
        for name, calls in result.helpers.items():
            if name.startswith("map_"):
                continue
            total += calls * self.helper_ns.get(name, OTHER_HELPER_NS)
        for op, calls in result.map_calls.items():
            default = MAP_LOOKUP_DEFAULT_NS if op.startswith("lookup") else MAP_WRITE_DEFAULT_NS
            total += calls * self.map_ns.get(op, default)
        return total

    def scaled(self, factor: float) -> CostModel:
        """Return the model with every cost multiplied by ``factor`` (2.0: a core half as
        fast)."""
        return CostModel(self.ns_per_insn * factor, self.entry_ns * factor,
                         {k: v * factor for k, v in self.helper_ns.items()},
                         {k: v * factor for k, v in self.map_ns.items()})


DEFAULT_COST = CostModel()
