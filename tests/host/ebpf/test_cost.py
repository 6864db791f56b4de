"""The cost model adds up what a run did with the per-item costs of its table (worked by hand
from the table in nicsim/host/ebpf/cost.py), and orders programs by the work they do."""

import pytest

from nicsim.host.ebpf.build import compile_c, prog_path
from nicsim.host.ebpf.cost import DEFAULT_COST
from nicsim.host.ebpf.elf import load_object
from nicsim.host.ebpf.interp import Vm, XdpResult


def test_run_cost_by_hand():
    result = XdpResult(verdict=2, packet=b"", insns=100,
                       helpers={"csum_diff": 2, "map_lookup_elem": 4},
                       map_calls={"lookup:array": 3, "lookup:hash": 1})
    # 21 entry + 100 * 0.104 + 2 * 21.4 (csum_diff) + 3 * 0 (inlined) + 22.7 (hash lookup)
    assert DEFAULT_COST.run_ns(result) == pytest.approx(21 + 10.4 + 42.8 + 22.7)
    assert DEFAULT_COST.scaled(2).run_ns(result) == pytest.approx(2 * (21 + 10.4 + 42.8 + 22.7))


def test_longer_frames_cost_more_in_a_loop():
    obj = load_object(compile_c(prog_path("payload_sum")))
    vm = Vm(obj.programs["payload_sum"], map_specs=obj.maps)
    short, long_ = vm.run(bytes(64)), vm.run(bytes(1500))
    # One loop iteration per 16-bit word: 718 more words, several instructions each.
    assert long_.insns - short.insns >= 4 * (750 - 32)
    assert DEFAULT_COST.run_ns(long_) > DEFAULT_COST.run_ns(short)
