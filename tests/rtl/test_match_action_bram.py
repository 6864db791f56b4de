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


def _modules(text):
    """``{module name: [DP16KD parameters]}`` of exported Verilog."""
    out = {}
    for part in re.split(r"^module ", text, flags=re.M)[1:]:
        name = part.split(" ", 1)[0].split("(", 1)[0].strip("\\")
        out[name] = _dp16kd(part)
    return out


@pytest.mark.long  # an export of the whole pipeline: seconds
def test_stage_memories_use_output_registers():
    params = design_params(PROGRAMS / "ddos.toml")
    text = export_verilog(elaborate("match-action", width=64, **params, bram="dp16kd"),
                          "match_action")
    blocks = _dp16kd(text)
    # ddos: the blocklist's TCAM, a 32-bit key in chunks of 10, 10, 10 and 2 bits: the three
    # of 1024 words of 64 slots are 4 blocks of 1024 x 18 each (the 2-bit chunk is LUT RAM),
    # and only they read through port A. Every other memory of the stages is read in every
    # cycle and is at most 512 words deep (the ratelimit table's 4 ways of 64 buckets, its
    # counters of 257 words, its meter's time and buckets of 256, the blocklist's counters of
    # 65 and action data of 64): 36-bit blocks where wider than 18 bits (the guide's 512 x 36
    # pseudo-dual-port configuration), both output registers on; 1024 x 18 otherwise.
    width = {"18": 18, "32'sd18": 18, "32'd18": 18, "36": 36, "32'sd36": 36, "32'd36": 36}
    wide = [p for p in blocks if width[p["DATA_WIDTH_A"]] == 36]
    assert sum(p["REGMODE_A"] == '"OUTREG"' and width[p["DATA_WIDTH_A"]] == 18
               for p in blocks) == 12
    assert len(wide) >= 2 * 2 * 4 + 4 + 2  # counters and copies, ways, time
    for p in blocks:
        assert p["REGMODE_B"] == '"OUTREG"' and p["REGMODE_A"] in ('"NOREG"', '"OUTREG"'), p
        assert width[p["DATA_WIDTH_B"]] == width[p["DATA_WIDTH_A"]], p
    for p in wide:
        assert p["REGMODE_A"] == '"OUTREG"', p
    # 128-bit counters in block RAM (the ratelimit's and the blocklist's, and their copies;
    # the third stage's 17 words are LUT RAM): 4 blocks of 36 bits each, not 8 of 18
    counters = {name: found for name, found in _modules(text).items()
                if name.endswith((".counters", ".counters_rb")) and found}
    assert len(counters) == 4, sorted(counters)
    for name, found in counters.items():
        assert len(found) == 4 and all(width[p["DATA_WIDTH_A"]] == 36 for p in found), name


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
