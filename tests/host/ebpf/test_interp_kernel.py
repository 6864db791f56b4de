"""The interpreter against the Linux kernel: same program, same packets, same maps.

Each example program of host/ebpf/progs runs in the kernel through BPF_PROG_TEST_RUN
(``bpftool prog run``) and in nicsim's interpreter over the same random and damaged frames, in
the same order, starting from the same map contents. The verdict, the frame that comes out
(metadata included: the kernel returns data_meta..data_end) and the maps the program writes must
be equal. Without root, bpftool or bpffs the tests skip and say why.
"""

import zlib

import pytest

from nicsim.host.ebpf.build import compile_c, prog_path
from nicsim.host.ebpf.elf import load_object
from nicsim.host.ebpf.interp import Vm

from .cases import CASES, random_packets
from .kernel_oracle import KernelProgram, kernel_available


def _require_kernel():
    ok, why = kernel_available()
    if not ok:
        pytest.skip(f"kernel oracle unavailable: {why}")


def compare(case, packets):
    obj_path = compile_c(prog_path(case.source))
    obj = load_object(obj_path)
    vm = Vm(obj.programs[case.prog], map_specs=obj.maps)
    with KernelProgram(obj_path, case.prog) as kernel:
        for name, entries in case.maps.items():
            index = obj.map_index(name)
            for key, value in entries.items():
                kernel.map_update(name, key, value)
                assert vm.maps[index].update(key, value) == 0
        for n, frame in enumerate(packets):
            k_verdict, k_out = kernel.run(frame)
            ours = vm.run(frame)
            assert (ours.verdict, ours.meta + ours.packet) == (k_verdict, k_out), (
                f"{case.prog}: frame {n} ({frame.hex()}) differs")
        for name in case.compare_maps:
            theirs = kernel.map_dump(name)
            m = vm.maps[obj.map_index(name)]
            if isinstance(next(iter(theirs.values()), b""), list):  # per-CPU: compare sums
                theirs = {k: sum(int.from_bytes(v, "little") for v in vals)
                          for k, vals in theirs.items()}
                mine = {k: int.from_bytes(v, "little") for k, v in m.items()}
            else:
                mine = dict(m.items())
            assert mine == theirs, f"{case.prog}: map {name} differs"
    return obj


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_program_matches_kernel(case):
    _require_kernel()
    compare(case, random_packets(seed=zlib.crc32(case.prog.encode()), count=40))


@pytest.mark.long
@pytest.mark.parametrize("case", CASES, ids=repr)
def test_program_matches_kernel_long(case):
    _require_kernel()
    for seed in range(5):
        compare(case, random_packets(seed=1000 + seed, count=200))
