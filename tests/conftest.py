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


def pytest_collection_modifyitems(config, items):
    """Run the Verilator suites first (a stable sort: modules stay whole and in order).

    They hold the longest tests and the builds; started last, a few of them would leave one
    xdist worker running alone at the end of ``make test``.
    """
    first = ("rtl", "hw")
    items.sort(key=lambda item: Path(str(item.fspath)).parent.name not in first)
