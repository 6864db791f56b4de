# amaranth: UnusedElaboratable=no
"""The block RAMs of the LRO engine: byte-enabled :class:`nicsim.rtl.bram.RegisteredMemory`.

``nicsim synth lro`` for ECP5 elaborates the engine with ``bram="dp16kd"``: its staging ring and
its two region banks become DP16KD blocks with their output registers, the regions with a write
enable per byte. Verilator cannot run the primitive, so these tests check the blocks' wiring
against the DP16KD description of Lattice's memory usage guide (FPGA-TN-02204: data widths and
entries, the byte enables ``AD0``/``AD1`` of the x18 configuration), and the behavioural memory
that simulation runs against a dictionary of the bytes written.
"""

from __future__ import annotations

import random

import pytest
from amaranth.hdl import Fragment, Instance

from nicsim.hw.designs import DESIGNS
from nicsim.rtl.bram import RegisteredMemory, dp16kd_geometry

# Lattice FPGA-TN-02204, DP16KD: data width -> entries.
_ENTRIES = {1: 16384, 2: 8192, 4: 4096, 9: 2048, 18: 1024}


def _blocks(component):
    """The DP16KD instances of an elaborated component (any depth of submodules)."""
    def walk(fragment):
        for sub, _, _ in fragment.subfragments:
            if isinstance(sub, Instance):
                yield sub
            else:
                yield from walk(sub)
    return [inst for inst in walk(Fragment.get(component, None)) if inst.type == "DP16KD"]


def _bit(port):
    """``(signal name, bit)`` of a one-bit port connection (a slice of a signal)."""
    value = port[0]
    return value.value.name, value.start


@pytest.mark.parametrize("depth", [1024, 2048, 4096, 8192])
def test_byte_enabled_blocks_hold_whole_bytes(depth):
    """Every data bit is written by exactly one block pin and read back from the same pin,
    and the block's write enable (or, at 18 bits, the pin's byte enable) is the enable of
    that bit's byte."""
    mem = RegisteredMemory(64, depth, primitive="dp16kd", granularity=8)
    blocks = _blocks(mem)
    bits, columns, banks = dp16kd_geometry(64, depth, 8)
    assert _ENTRIES[bits] >= depth and banks == 1 and len(blocks) == columns
    written = {}
    for inst in blocks:
        assert inst.parameters["REGMODE_B"] == "OUTREG"
        assert inst.parameters["DATA_WIDTH_A"] == bits
        ports = inst.ports
        we = ports["WEA"][0]
        for pin in range(18):
            di = ports[f"DIA{pin}"][0]
            if not hasattr(di, "start"):
                assert di.value == 0 and f"DOB{pin}" not in ports
                continue
            assert di.value.name == "w_data"
            bit = di.start
            assert bit not in written
            written[bit] = pin
            assert _bit(ports[f"DOB{pin}"])[1] == bit  # read back from the same pin
            byte = bit // 8
            if bits == 18:  # the byte enable of the pin's half; WEA: either byte
                assert _bit(ports[f"ADA{pin // 9}"]) == ("w_en", byte)
                assert we.operator == "r|" and we.operands[0].start == byte & ~1
            else:
                assert bits < 9 or pin < 8
                assert _bit(ports["WEA"]) == ("w_en", byte)
    assert sorted(written) == list(range(64))


def test_without_granularity_nothing_changes():
    """The TSO engine's memories: one write enable, the widest blocks (ADA0/ADA1 tied high)."""
    assert dp16kd_geometry(64, 2048) == (9, 8, 1)
    assert dp16kd_geometry(64, 2048, 8) == (9, 8, 1)
    assert dp16kd_geometry(72, 2048) == (9, 8, 1)
    assert dp16kd_geometry(64, 1024) == (18, 4, 1)
    for inst in _blocks(RegisteredMemory(64, 1024, primitive="dp16kd")):
        assert inst.ports["ADA0"][0].value == 1 and inst.ports["ADA1"][0].value == 1
        assert inst.ports["WEA"][0].name == "w_en"


def test_bad_granularity_is_refused():
    with pytest.raises(ValueError, match="granularity"):
        RegisteredMemory(64, 16, granularity=16)
    with pytest.raises(ValueError, match="granularity"):
        RegisteredMemory(12, 16, granularity=8)


def test_lro_synthesis_variant():
    """The 64-bit engine (8 contexts of 16 KiB, 8 spare regions) for ECP5: two copies of the
    staging ring, 4096 x 64 in x4 blocks, two region banks of 16384 x 64 in x1 blocks (8192 x 64
    in x2 blocks without spare regions), all with output registers; every block takes its byte's
    enable (each ring's two blocks of a byte: a copy of the write enable of their own)."""
    from nicsim.rtl.lro import LroEngine

    assert DESIGNS["lro"].synth_params == {"ecp5": {"bram": "dp16kd"}}
    for spare, bits, count in ((None, 1, 128), (0, 2, 64)):
        blocks = _blocks(LroEngine(64, bram="dp16kd", spare_regions=spare))
        widths = sorted(inst.parameters["DATA_WIDTH_A"] for inst in blocks)
        assert widths == [bits] * count + [4] * 32
        assert all(inst.parameters["REGMODE_B"] == "OUTREG" for inst in blocks)
        region_enables = {_bit(inst.ports["WEA"]) for inst in blocks
                          if inst.parameters["DATA_WIDTH_A"] == bits}
        assert region_enables == {("w_en", byte) for byte in range(8)}
        staging_enables = sorted(_bit(inst.ports["WEA"]) for inst in blocks
                                 if inst.parameters["DATA_WIDTH_A"] == 4)
        assert staging_enables == sorted(("w_en", byte) for byte in range(8) for _ in range(4))
    with pytest.raises(ValueError, match="primitive"):
        LroEngine(64, bram="m20k")


def test_behavioural_byte_writes_two_cycles():
    """The simulated variant with byte enables: data two cycles after the address, each byte
    as last written, against a dictionary of bytes."""
    from amaranth.sim import Simulator

    dut = RegisteredMemory(32, 32, granularity=8)
    rng = random.Random(7)
    model = {}
    log = []

    async def bench(ctx):
        expected = []
        last = None
        for cycle in range(400):
            w_addr, r_addr = rng.randrange(32), rng.randrange(32)
            w_en = rng.randrange(16) if rng.random() < 0.6 else 0
            r_en = rng.random() < 0.7
            if w_addr == r_addr:
                w_en = 0  # never read where written in the same cycle
            data = rng.randrange(1 << 32)
            ctx.set(dut.w_addr, w_addr)
            ctx.set(dut.w_data, data)
            ctx.set(dut.w_en, w_en)
            ctx.set(dut.r_addr, r_addr)
            ctx.set(dut.r_en, r_en)
            if r_en:
                last = sum(model.get((r_addr, k), 0) << (8 * k) for k in range(4))
            expected.append(last)
            if cycle >= 2 and expected[cycle - 2] is not None:
                log.append((ctx.get(dut.r_data), expected[cycle - 2]))
            for k in range(4):
                if w_en >> k & 1:
                    model[(w_addr, k)] = data >> (8 * k) & 0xFF
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert len(log) > 300
    assert all(got == want for got, want in log)
