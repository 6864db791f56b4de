# amaranth: UnusedElaboratable=no
"""The block RAMs of the TSO engine: the synthesis variant with DP16KD output registers.

``nicsim synth tso`` for ECP5 elaborates the engine with ``bram="dp16kd"``
(:class:`nicsim.rtl.bram.RegisteredMemory`): Verilator cannot run it, so these tests export it
and check the instances against the DP16KD description of Lattice's memory usage guide
(FPGA-TN-02204: address bits per data width, byte enables at 18 bits, ``REGMODE``), and check
the behavioural memory that simulation runs for the latency both variants share.
"""

from __future__ import annotations

import re

import pytest

from nicsim.hw.designs import DESIGNS
from nicsim.hw.verilator import export_verilog

# Lattice FPGA-TN-02204, DP16KD: data width -> (entries, address pins used).
_ADDRESS_PINS = {1: (16384, range(0, 14)), 2: (8192, range(1, 14)), 4: (4096, range(2, 14)),
                 9: (2048, range(3, 14)), 18: (1024, range(4, 14))}


def _instances(text, names=False):
    """Yield ``(parameters, connections)`` of each DP16KD instance of exported Verilog
    (``(name, parameters, connections)`` with ``names``)."""
    for match in re.finditer(r"DP16KD #\((.*?)\) (\w+) \((.*?)\);", text, re.S):
        params = dict(re.findall(r"\.(\w+)\(([^()]*)\)", match.group(1)))
        ports = dict(re.findall(r"\.(\w+)\(([^()]*)\)", match.group(3)))
        yield (match.group(2), params, ports) if names else (params, ports)


def _width(value):
    return int(value.split("'d")[-1])


@pytest.fixture(scope="module")
def tso64_dp16kd():
    from nicsim.hw.designs import elaborate

    return export_verilog(elaborate("tso", width=64, bram="dp16kd"), "tso")


def test_synthesis_variant_uses_output_registers(tso64_dp16kd):
    """Every memory of the 64-bit engine is DP16KD blocks with REGMODE_B OUTREG, wired as
    the guide lays out its address and data pins; no behavioural memory is left."""
    from nicsim.rtl.bram import dp16kd_geometry, dp16kd_sections
    from nicsim.rtl.tso import Tso

    tso = Tso(64)
    tmpl_depth = 4 << (tso.header_beats - 1).bit_length()
    # The ring (9216 words: the largest frame and some slack) in two sections, the segment
    # ring and the template whole.
    assert dp16kd_sections(64, tso.segment_depth) is dp16kd_sections(64, tmpl_depth) is None
    sections = dp16kd_sections(64, tso.ring_depth)
    assert tso.ring_depth == 9216 and sum(s[1] for s in sections) == tso.ring_depth
    expected = sum(s[3] for s in sections) + sum(
        bits_cols[1] * bits_cols[2] for bits_cols in (
            dp16kd_geometry(64, tso.segment_depth), dp16kd_geometry(64, tmpl_depth)))
    # Address bits of each block, by its name's prefix (a section or a whole memory) and the
    # data width of its blocks (one width each here).
    abits = {("s", k, bits): (entries - 1).bit_length()
             for k, (_, entries, bits, _) in enumerate(sections)}
    abits.update({("b", 0, dp16kd_geometry(64, d)[0]): (d - 1).bit_length()
                  for d in (tso.segment_depth, tmpl_depth)})
    found = list(_instances(tso64_dp16kd, names=True))
    # ring 32 x2 and 4 x18 (64 x1 at 16384 words), segments 16 x4, template 4 x18
    assert len(found) == expected == 56
    widths = set()
    for name, params, ports in found:
        assert params["REGMODE_B"] == '"OUTREG"' and params["REGMODE_A"] == '"NOREG"'
        bits = _width(params["DATA_WIDTH_A"])
        assert _width(params["DATA_WIDTH_B"]) == bits
        widths.add(bits)
        _, pins = _ADDRESS_PINS[bits]
        kind, index = re.match(r"bram_([sb])(\d+)_c\d+$", name).groups()
        # from the lowest pin up; a shallow memory leaves the top
        pins = pins[:abits[kind, int(index), bits]]
        for n in range(14):
            a, b = ports[f"ADA{n}"], ports[f"ADB{n}"]
            if n in pins:  # an address bit (a signal, not a constant)
                assert "'" not in a and "'" not in b and a != b, (n, a, b)
            elif bits == 18 and n < 2:
                assert a == "1'h1", (n, a)  # byte enables of the write port
            else:
                assert a == b == "1'h0", (n, a, b)
        assert ports["WEB"] == "1'h0" and ports["OCEB"] == "1'h1"
        assert "'" not in ports["WEA"] and ports["CLKA"] == ports["CLKB"] == "clk"
        assert [n for n in range(18) if ports.get(f"DOB{n}", "").strip()] == list(range(bits))
    assert widths == {2, 4, 18}
    # The memories are not left to yosys's mapping (which writes REGMODE NOREG): what stays
    # behavioural are the 16-entry queues (LUT RAM).
    depths = re.findall(r"reg \[\d+:0\] \S+ \[(\d+):0\];", tso64_dp16kd)
    assert depths and max(int(d) + 1 for d in depths) <= 16


def test_synthesis_params_hook():
    """ECP5 synthesis adds ``bram="dp16kd"``; other families and Verilator do not."""
    assert DESIGNS["tso"].synth_params == {"ecp5": {"bram": "dp16kd"}}
    assert "ice40" not in DESIGNS["tso"].synth_params


def test_bad_primitive_is_refused():
    from nicsim.rtl.bram import RegisteredMemory
    from nicsim.rtl.tso import Tso

    with pytest.raises(ValueError, match="primitive"):
        Tso(64, bram="m10k")
    with pytest.raises(ValueError, match="primitive"):
        RegisteredMemory(8, 16, primitive="sb_ram40")


@pytest.mark.parametrize("depth, geometry", [(128, (18, 4, 1)), (2048, (9, 8, 1)),
                                             (4096, (4, 16, 1)), (16384, (1, 64, 1)),
                                             (32768, (1, 64, 2))])
def test_geometry_follows_the_guide(depth, geometry):
    """The widest DP16KD configuration that holds the depth (guide, table of widths)."""
    from nicsim.rtl.bram import dp16kd_geometry

    bits, columns, banks = dp16kd_geometry(64, depth)
    assert (bits, columns, banks) == geometry
    entries, _ = _ADDRESS_PINS[bits]
    assert entries * banks >= depth and bits * columns >= 64
    if bits < 18 and banks == 1:  # the next wider configuration would be too shallow
        wider = min(w for w in _ADDRESS_PINS if w > bits)
        assert _ADDRESS_PINS[wider][0] < depth


def test_pseudo_dual_port_blocks_of_36_bits():
    """``hold=False`` and at most 512 words of more than 18 bits: the guide's PDPW16KD as
    DP16KD (512 x 36; write data DIA/DIB, read data DOA/DOB, AD[13:5] the address, ADA[3:0]
    the byte enables), both output registers on, no read enable; half the blocks of x18. Not
    with ``hold`` (a read enable for both halves) or deeper than 512."""
    from nicsim.rtl.bram import RegisteredMemory, dp16kd_geometry

    assert dp16kd_geometry(128, 65, wide=True) == (36, 4, 1)
    assert dp16kd_geometry(128, 65) == (18, 8, 1)
    assert dp16kd_geometry(128, 513, wide=True) == (18, 8, 1)
    assert dp16kd_geometry(18, 512, wide=True) == (18, 1, 1)
    assert dp16kd_geometry(64, 512, 8, wide=True) == (18, 4, 1)
    mem = RegisteredMemory(100, 300, primitive="dp16kd", hold=False)
    assert not hasattr(mem, "r_en")
    text = export_verilog(mem, "mem")
    blocks = list(_instances(text))
    assert len(blocks) == 3  # 100 bits in 36-bit words
    for col, (params, ports) in enumerate(blocks):
        assert _width(params["DATA_WIDTH_A"]) == _width(params["DATA_WIDTH_B"]) == 36
        assert params["REGMODE_A"] == params["REGMODE_B"] == '"OUTREG"'
        for n in range(14):  # 300 words: 9 address bits from AD5, ADA0-3 the byte enables
            want_a = "w_en" if n < 4 else f"w_addr[{n - 5}]" if n >= 5 else "1'h0"
            want_b = f"r_addr[{n - 5}]" if n >= 5 else "1'h0"
            assert ports[f"ADA{n}"] == want_a, (n, ports[f"ADA{n}"])
            assert ports[f"ADB{n}"] == want_b, (n, ports[f"ADB{n}"])
        assert ports["WEA"] == "1'h1" and ports["WEB"] == "1'h0" and ports["CEB"] == "1'h1"
        for n in range(18):
            for side, base in (("A", 0), ("B", 18)):
                bit = 36 * col + base + n
                want = f"w_data[{bit}]" if bit < 100 else "1'h0"
                assert ports[f"DI{side}{n}"] == want, (side, n)


@pytest.mark.parametrize("w_read,hold", [(False, True), (True, True), (False, False)])
def test_behavioural_memory_two_cycles_and_hold(w_read, hold):
    """The simulated variant: data two cycles after the address, held while ``r_en`` is low
    (read in every cycle with ``hold=False``), against a dictionary of what was written; with
    ``w_read`` (the match-action TCAM's memories) port A's ``w_rdata`` too: the word at
    ``w_addr`` two cycles later, where that cycle wrote nothing."""
    import random

    from amaranth.sim import Simulator

    from nicsim.rtl.bram import RegisteredMemory

    dut = RegisteredMemory(16, 64, w_read=w_read, hold=hold)
    rng = random.Random(5)
    model = {}
    log = []

    async def bench(ctx):
        reads = []  # (cycle, expected) of the reads issued
        reads_a = []  # port A's, None where it wrote
        last = None
        for cycle in range(400):
            w_addr, r_addr = rng.randrange(64), rng.randrange(64)
            w_en, r_en = rng.random() < 0.5, rng.random() < 0.7 or not hold
            if w_en and w_addr == r_addr:
                w_en = False  # never read where written in the same cycle
            ctx.set(dut.w_addr, w_addr)
            ctx.set(dut.w_data, rng.randrange(1 << 16))
            ctx.set(dut.w_en, w_en)
            ctx.set(dut.r_addr, r_addr)
            if hold:
                ctx.set(dut.r_en, r_en)
            if r_en:
                last = model.get(r_addr, 0)
            reads.append(last)
            reads_a.append(None if w_en else model.get(w_addr, 0))
            if cycle >= 2 and reads[cycle - 2] is not None:
                log.append((ctx.get(dut.r_data), reads[cycle - 2]))
            if w_read and cycle >= 2 and reads_a[cycle - 2] is not None:
                log.append((ctx.get(dut.w_rdata), reads_a[cycle - 2]))
            if w_en:
                model[w_addr] = ctx.get(dut.w_data)
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert len(log) > (450 if w_read else 300)
    assert all(got == want for got, want in log)


def test_deep_memory_in_banks():
    """Deeper than one block: banks of 16384 x1 blocks, each written only at its own
    addresses (the write enable takes the top address bit)."""
    from amaranth.back import verilog

    from nicsim.rtl.bram import RegisteredMemory

    mem = RegisteredMemory(8, 32768, primitive="dp16kd")
    text = verilog.convert(mem, name="deep")
    found = list(_instances(text))
    assert len(found) == 16
    enables = {ports["WEA"] for _, ports in found}
    assert len(enables) == 2  # one per bank
    for params, ports in found:
        assert _width(params["DATA_WIDTH_A"]) == 1 and params["REGMODE_B"] == '"OUTREG"'
        assert all("'" not in ports[f"ADB{n}"] for n in range(14))


@pytest.mark.parametrize("width, depth, layout", [
    (64, 9216, [(0, 8192, 2, 32), (8192, 1024, 18, 4)]),
    (128, 5120, [(0, 4096, 4, 32), (4096, 1024, 18, 8)]),
    (256, 3072, [(0, 2048, 9, 29), (2048, 1024, 18, 15)]),
    (64, 9000, [(0, 8192, 2, 32), (8192, 1024, 18, 4)]),
    (64, 300, None), (64, 4096, None), (64, 32768, None)])
def test_sections_of_a_depth_not_a_power_of_two(width, depth, layout):
    """A depth that is not a power of two is cut into power-of-two sections when that takes
    fewer blocks (the guide's widths and entries); each section's blocks are written only at
    its own addresses and use only the address pins of its entries."""
    from amaranth.back import verilog

    from nicsim.rtl.bram import RegisteredMemory, dp16kd_geometry, dp16kd_sections

    assert dp16kd_sections(width, depth) == layout
    if layout is None:
        return
    whole = dp16kd_geometry(width, depth)
    assert sum(s[3] for s in layout) < whole[1] * whole[2]
    base = 0
    for start, entries, bits, columns in layout:
        assert start == base and start % entries == 0
        assert _ADDRESS_PINS[bits][0] >= entries and bits * columns >= width
        base += entries
    assert base >= depth
    text = verilog.convert(RegisteredMemory(width, depth, primitive="dp16kd"), name="mem")
    found = list(_instances(text, names=True))
    assert len(found) == sum(s[3] for s in layout)
    enables = {}
    for name, params, ports in found:
        k = int(re.match(r"bram_s(\d+)_c\d+$", name).group(1))
        _, entries, bits, _ = layout[k]
        assert _width(params["DATA_WIDTH_A"]) == bits and params["REGMODE_B"] == '"OUTREG"'
        pins = _ADDRESS_PINS[bits][1][:(entries - 1).bit_length()]
        assert all(("'" not in ports[f"ADB{n}"]) == (n in pins) for n in range(14)
                   if not (bits == 18 and n < 2))
        enables.setdefault(k, set()).add(ports["WEA"])
    assert all(len(e) == 1 for e in enables.values())  # one enable per section
    assert len(set.union(*enables.values())) == len(layout)
