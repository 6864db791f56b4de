"""Gateware against golden model on thousands of frames, at every width, through the C++ harness.

The cocotb testbenches in tests/rtl/ check the engines with the standard bus models; these
tests push far more traffic (mixed captures, malformed frames, min-size bursts) through the
same Verilated designs quickly, with random idle and backpressure, and require the RTL's
output to equal the golden reference frame for frame.
"""

import random

import pytest

from nicsim.hw.engines import EngineConfig, run_model, run_rtl
from nicsim.hw.ref.checksum import TxCommand, TxMode
from nicsim.hw.ref.rss import DEFAULT_KEY, RssConfig
from nicsim.sim.traffic import mixed_frames

WIDTHS = [64, 128, 256, 512]


def _damaged(frames, seed):
    """Truncations, runts and random byte flips of real frames: malformed input."""
    rng = random.Random(seed)
    out = []
    for f in frames:
        choice = rng.random()
        if choice < 0.3:
            out.append(f[:rng.randrange(1, len(f) + 1)])
        elif choice < 0.5:
            g = bytearray(f)
            for _ in range(rng.randrange(1, 4)):
                g[rng.randrange(len(g))] = rng.randrange(256)
            out.append(bytes(g))
        else:
            out.append(f)
    out += [bytes(rng.randrange(256) for _ in range(n)) for n in range(1, 70)]
    return out


@pytest.fixture(scope="module")
def traffic():
    frames, _ = mixed_frames(600, seed=21)
    return frames + _damaged(frames[:300], seed=22)


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("engine", ["checksum-rx", "rss"])
def test_tap_engines_match_model(engine, width, traffic):
    rng = random.Random(width)
    config = EngineConfig(rss=RssConfig(
        key=bytes(rng.randrange(256) for _ in range(40)) if width != 64 else DEFAULT_KEY,
        enabled=rng.choice([0b1111110, 0b0010110, 0b1101000]),
        table=[rng.randrange(16) for _ in range(128)]))
    model = run_model(engine, traffic, config)
    for idle, bp in ((0, 0), (20, 35)):
        rtl = run_rtl(engine, traffic, config, width=width, idle_pct=idle,
                      backpressure_pct=bp, seed=width + idle)
        mismatches = [(i, r, m) for i, (r, m) in enumerate(zip(rtl.meta, model.meta,
                                                                strict=True)) if r != m]
        assert not mismatches, f"{len(mismatches)} frames differ, first: {mismatches[:3]}"


# The TX engine's goals are set at no particular width: 64 and 512 run in make test, the
# widths between in make test-long.
TX_WIDTHS = [64, pytest.param(128, marks=pytest.mark.long),
             pytest.param(256, marks=pytest.mark.long), 512]


@pytest.mark.parametrize("width", TX_WIDTHS)
@pytest.mark.parametrize("mode", [TxMode.AUTO, TxMode.PARTIAL, TxMode.OFF])
def test_tx_engine_matches_model(mode, width, traffic):
    config = EngineConfig(tx=TxCommand(mode, 34, 6) if mode == TxMode.PARTIAL else
                          TxCommand(mode))
    frames = traffic + [bytes(range(256)) * 40]  # one oversize frame (10240 bytes)
    model = run_model("checksum-tx", frames, config)
    for idle, bp in ((0, 0), (25, 30)):
        rtl = run_rtl("checksum-tx", frames, config, width=width, idle_pct=idle,
                      backpressure_pct=bp, seed=width)
        assert rtl.meta == model.meta
        assert rtl.frames == model.frames
