# amaranth: UnusedElaboratable=no
"""The match-action stages' memories in the synthesis variant with DP16KD output registers.

``nicsim synth match-action`` for ECP5 elaborates the pipeline with ``bram="dp16kd"``
(:class:`nicsim.rtl.bram.RegisteredMemory`): Verilator cannot run it, so this exports it and
checks the instances against the DP16KD description of Lattice's memory usage guide
(FPGA-TN-02204: ``REGMODE`` ``OUTREG`` is the output register, ``DATA_WIDTH`` 18 at 1024
entries); the behavioural variant, which the cocotb benches run, has the same two cycles of
read latency (tests/rtl/test_match_action.py checks its forwarding against the reference).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from nicsim.hw.designs import DESIGNS, elaborate
from nicsim.hw.match_action.compile import design_params
from nicsim.hw.verilator import export_verilog
from nicsim.rtl.match_action import MatchAction

PROGRAMS = Path(__file__).parents[2] / "hw" / "match_action" / "programs"


def _dp16kd(text):
    return [dict(re.findall(r"\.(\w+)\(([^()]*)\)", m.group(1)))
            for m in re.finditer(r"DP16KD #\((.*?)\) \w+ \(", text, re.S)]


@pytest.mark.long  # an export of the whole pipeline: seconds
def test_stage_memories_use_output_registers():
    params = design_params(PROGRAMS / "ddos.toml")
    text = export_verilog(elaborate("match-action", width=64, **params, bram="dp16kd"),
                          "match_action")
    blocks = _dp16kd(text)
    # ddos: the ratelimit table's 4 ways of 64 buckets, its counters (257 words) and their
    # read-back copy, its meter's time and buckets (256) and the buckets' copy; the
    # blocklist's counters (65) and copy and its LPM action data (64). 128-bit counters at
    # 1024 x 18 are 8 blocks each: at least 4 x 8 + 4 x 8 + 4 + 2 + 1 blocks. The blocklist's
    # TCAM: a 32-bit key in chunks of 10, 10, 10 and 2 bits; the three of 1024 words of 64
    # slots are 4 blocks each (the 2-bit chunk is LUT RAM), and only they read through port A.
    assert len(blocks) >= 71 + 12
    assert sum(p["REGMODE_A"] == '"OUTREG"' for p in blocks) == 12
    for p in blocks:
        assert p["REGMODE_B"] == '"OUTREG"' and p["REGMODE_A"] in ('"NOREG"', '"OUTREG"'), p
        assert p["DATA_WIDTH_B"] == p["DATA_WIDTH_A"] in ("18", "32'sd18", "32'd18"), p


def test_write_port_read_needs_one_layout():
    from nicsim.rtl.bram import RegisteredMemory

    with pytest.raises(ValueError, match="laid out whole"):
        RegisteredMemory(64, 9216, w_read=True)
    with pytest.raises(ValueError, match="laid out whole"):
        RegisteredMemory(64, 1024, granularity=8, w_read=True)


def test_synthesis_params_hook():
    """ECP5 synthesis adds ``bram="dp16kd"``; other families and Verilator do not."""
    assert DESIGNS["match-action"].synth_params == {"ecp5": {"bram": "dp16kd"}}


def test_bad_primitive_is_refused():
    with pytest.raises(ValueError, match="primitive"):
        MatchAction(64, bram="m10k")
