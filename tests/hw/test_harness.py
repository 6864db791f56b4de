"""The C++ stream harness: frames survive idle and backpressure, registers work, hangs end."""

import random

import pytest

from nicsim.hw.harness import build_harness, run_harness
from nicsim.hw.verilator import VerilatorError


@pytest.fixture(scope="module", params=[64, 512])
def passthrough(request):
    return build_harness("passthrough", {"width": request.param})


def test_frames_survive_idle_and_backpressure(passthrough):
    rng = random.Random(5)
    frames = [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 2000)))
              for _ in range(300)]
    for idle, bp in ((0, 0), (30, 0), (0, 40), (25, 25)):
        out = run_harness(passthrough, frames, idle_pct=idle, backpressure_pct=bp, seed=idle + bp)
        assert [f for f, _ in out.frames] == frames
        beats = sum(-(-len(f) // passthrough.lanes) for f in frames)
        assert out.in_beats == beats
        if idle == 0 and bp == 0:
            assert out.in_span == beats  # a register slice takes a beat every cycle
        else:
            assert out.in_span > beats


def test_registers_and_rejected_write(passthrough):
    out = run_harness(passthrough, [b"\x01" * 65], writes=[(0x00, 0xCAFE)],
                      reads=[0x00, 0x04, 0x80])
    beats = -(-65 // passthrough.lanes)
    assert out.reads == [(0xCAFE, 0), (beats, 0), (0, 2)]
    with pytest.raises(VerilatorError, match="rejected"):
        run_harness(passthrough, [b"\x01"], writes=[(0x04, 1)])


def test_empty_frame_refused(passthrough):
    with pytest.raises(ValueError):
        run_harness(passthrough, [b""])


def test_waveform_recorded(tmp_path):
    build = build_harness("passthrough", {"width": 64}, waves=True)
    frames = [bytes(range(100))] * 3
    out = run_harness(build, frames, waves=tmp_path / "run.fst")
    assert [f for f, _ in out.frames] == frames
    blob = (tmp_path / "run.fst").read_bytes()
    assert blob[0] == 0 and len(blob) > 200  # FST files open with a header block (type 0)
