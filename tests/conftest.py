import sys
from pathlib import Path

# cocotb test modules import their helpers by plain name, inside and outside the simulator.
sys.path.insert(0, str(Path(__file__).parent / "rtl"))
