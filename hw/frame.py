"""The unit of traffic on simulated Ethernet links.

Wires, switches, sources, sinks and the NIC pass *batches* of frames (plain lists of
:class:`Frame`, in time order): one SimPy event per batch, not per frame. Each frame carries
its own exact times, so a batch is delivered at the time of its last frame's arrival and the
receiver works from ``frame.t_ps``, never from ``env.now``; nothing is delivered early.
"""

from __future__ import annotations

__all__ = ["Frame", "ETH_OVERHEAD_BYTES", "ETH_FCS_BYTES", "ETH_MIN_FRAME_BYTES"]

ETH_FCS_BYTES = 4  # IEEE 802.3 frame check sequence
# Preamble + start-of-frame delimiter (8 B) and the minimum inter-frame gap (12 B): what a frame
# costs on the wire beyond its own bytes (IEEE 802.3 clause 4.4.2).
ETH_OVERHEAD_BYTES = 8 + 12
ETH_MIN_FRAME_BYTES = 64  # with FCS; shorter frames are padded on the wire


class Frame:
    """One Ethernet frame in flight.

    Members
    -------
    data : bytes
        The frame from the destination MAC address to the end of the payload, without the FCS.
    t_ps : int
        When the frame's last bit reached the element now holding it (picoseconds).
    born_ps : int
        When the frame's first bit left its source; latency is measured from here.
    flow : int
        Index of the source's flow the frame belongs to (``-1`` if none).
    source : str
        Name of the source that made it.
    meta : dict or None
        Metadata elements attach on the way (for example the NIC's completion fields).
    """

    __slots__ = ("data", "t_ps", "born_ps", "flow", "source", "meta")

    def __init__(self, data, t_ps=0, born_ps=None, flow=-1, source="", meta=None):
        self.data = data
        self.t_ps = t_ps
        self.born_ps = t_ps if born_ps is None else born_ps
        self.flow = flow
        self.source = source
        self.meta = meta

    def wire_bytes(self):
        """Return the bytes the frame occupies on a wire: padding, FCS, preamble and gap."""
        return max(len(self.data) + ETH_FCS_BYTES, ETH_MIN_FRAME_BYTES) + ETH_OVERHEAD_BYTES

    def __repr__(self):
        return (f"Frame({len(self.data)} B, t_ps={self.t_ps}, born_ps={self.born_ps}, "
                f"flow={self.flow})")
