import os
import sys
from pathlib import Path

from hypothesis import settings

# cocotb test modules import their helpers by plain name, inside and outside the simulator.
sys.path.insert(0, str(Path(__file__).parent / "rtl"))

# `make test` (and CI) draws the same examples every run so that a red run is reproducible and
# not a matter of luck; `make test-long` keeps hypothesis's random search to find new cases.
settings.register_profile("ci", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("NICSIM_HYPOTHESIS", "explore"))

