"""Shared cocotb testbench pieces: clock and reset, AXI bus models, pause patterns.

Imported by the cocotb test modules in this folder (which run inside the simulator) and by
their pytest wrappers (which build the design and launch the simulator).
"""

import itertools
import json
import os
import random

__all__ = ["params", "TB", "PAUSES", "FRAME_SIZES", "cycle_pause", "random_pause", "rtl_test"]

# The sizes the STYLE guide asks every stream testbench to cover.
FRAME_SIZES = [*range(1, 129), 512, 1500, 9000]


def params():
    """Return the elaboration parameters the pytest side built the design with."""
    return json.loads(os.environ.get("NICSIM_PARAMS", "{}"))


def cycle_pause():
    """Pause one cycle in four (the classic ``cycle([1, 1, 1, 0])`` pattern)."""
    return itertools.cycle([1, 1, 1, 0])


def random_pause(seed=1, ratio=0.3):
    """Pause a random ``ratio`` of cycles, repeatably."""
    rng = random.Random(seed)

    def gen():
        while True:
            yield int(rng.random() < ratio)

    return gen()


PAUSES = {
    "none": None,
    "cycle": cycle_pause,
    "random": random_pause,
}


from nicsim.hw.cocotb_tb import TB  # noqa: E402  (re-exported for the tests)


def rtl_test(design, params, module, testcase=None, env=None):
    """Build ``design`` with ``params`` and run the cocotb tests of ``module`` (pytest side)."""
    from pathlib import Path

    from nicsim.hw.verilator import build, run_cocotb

    rtl = build(design, params)
    return run_cocotb(rtl, module, test_dir=Path(__file__).parent, testcase=testcase, env=env)
