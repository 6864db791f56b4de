"""Time and rate units of the simulation.

Simulation time is an integer number of picoseconds (``env.now``); every constant carries its
unit in its name.
"""

from __future__ import annotations

__all__ = ["NS", "US", "MS", "S", "ps_for_bytes", "to_us"]

NS = 1_000  # ps
US = 1_000_000  # ps
MS = 1_000_000_000  # ps
S = 1_000_000_000_000  # ps


def ps_for_bytes(nbytes, bytes_per_s):
    """Return the whole picoseconds ``nbytes`` take at ``bytes_per_s`` (rounded up)."""
    return -(-nbytes * S // int(bytes_per_s)) if nbytes else 0


def to_us(ps):
    """Return ``ps`` in microseconds as a float."""
    return ps / US
