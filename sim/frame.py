"""The unit of traffic on simulated Ethernet links (defined in :mod:`nicsim.hw.frame`, where
device backends, which may not import the simulation, find it too)."""

from nicsim.hw.frame import (
    ETH_FCS_BYTES,
    ETH_MIN_FRAME_BYTES,
    ETH_OVERHEAD_BYTES,
    Frame,
)

__all__ = ["Frame", "ETH_OVERHEAD_BYTES", "ETH_FCS_BYTES", "ETH_MIN_FRAME_BYTES"]
