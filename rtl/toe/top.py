"""Exported top of the TCP engine with its session engine: flat port names for Verilog.

:class:`~nicsim.rtl.toe.engine.ToeTcpEngine` has, besides the network streams and the register
bus, the application streams, the buffer-memory port, the timer input and the idle output. The
common export top (:class:`nicsim.rtl.stream.AxiStreamTop`) names only the first ones; this
top keeps its AXI4-Stream and AXI4-Lite names for those and gives the others one port per
payload field:

* ``s_axis_*`` / ``m_axis_*``: frames from and to the network; ``s_axil_*``: the counters;
* ``cmd_<field>``, ``cmd_valid``, ``cmd_ready`` (``op``, ``sid``, ``ip``, ``port``,
  ``length``) and ``resp_<field>``, ``resp_valid``, ``resp_ready``; ``note_kind``,
  ``note_sid``, ``note_valid``, ``note_ready`` (:mod:`nicsim.rtl.toe.sessions`);
* ``m_axis_rx_tdata``/``tkeep``/``tlast``/``tvalid``/``tready``: received bytes for the
  application; ``s_axis_tx_tdata``/``tkeep``/``tvalid``/``tready``: bytes to send;
* ``mem_addr``, ``mem_wdata``, ``mem_wen`` (a byte enable per lane), ``mem_rdata`` (one
  cycle after ``mem_addr``): the external buffer memory, the stand-in for the NIC's DRAM;
  ``mem_app_addr``, ``mem_app_wdata``, ``mem_app_wen``, ``mem_app_rdata``: a second port of
  the same memory, through which the application's ``RECV`` transfers read the receive rings
  and its ``SEND`` transfers write the send rings; ``mem_app_wsum`` (with ``mem_app_wsum_en``)
  and ``mem_rsum``: the 16-bit sum kept beside each word (the send rings' running checksums,
  written with a ``SEND``'s words, read when a segment is built);
* ``tick`` (timer units that passed), ``idle``.
"""

from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..stream import AxiStreamTop

__all__ = ["ToeTcpTop"]

_STREAMS = {"rx_data": ("m_axis_rx", {"data": "tdata", "keep": "tkeep", "last": "tlast"}),
            "tx_data": ("s_axis_tx", {"data": "tdata", "keep": "tkeep"})}
_MEM = {"mem": {"addr": "mem_addr", "w_data": "mem_wdata", "w_en": "mem_wen",
                "r_data": "mem_rdata", "r_sum": "mem_rsum"},
        "mem_app": {"addr": "mem_app_addr", "w_data": "mem_app_wdata", "w_en": "mem_app_wen",
                    "r_data": "mem_app_rdata", "w_sum": "mem_app_wsum",
                    "w_sum_en": "mem_app_wsum_en"}}


class ToeTcpTop(wiring.Component):
    """Export a :class:`~nicsim.rtl.toe.engine.ToeTcpEngine` with flat port names.

    Parameters
    ----------
    block : ToeTcpEngine
        The engine to export.

    Members
    -------
    s_axis_*, m_axis_*, s_axil_*
        As :class:`nicsim.rtl.stream.AxiStreamTop`.
    cmd_*, resp_*, note_*, m_axis_rx_*, s_axis_tx_*, mem_*, mem_app_*, tick, idle
        The engine's other ports (see the module documentation).
    """

    def __init__(self, block):
        self._block = block
        self._axis = AxiStreamTop(block)
        self._map = []  # (our name, block value getter, is_input)
        members = dict(self._axis.signature.members)
        sig = block.signature.members
        for name in ("cmd", "resp", "note", "rx_data", "tx_data"):
            port = sig[name]
            is_in = port.flow == In
            prefix, fields = _STREAMS.get(name, (name, None))
            layout = port.signature.members["payload"].shape
            for field, _ in layout:
                ours = f"{prefix}_{fields[field]}" if fields else f"{prefix}_{field}"
                members[ours] = (In if is_in else Out)(layout[field].shape)
                self._map.append((ours, (name, "payload", field), is_in))
            valid = f"{prefix}_tvalid" if fields else f"{prefix}_valid"
            ready = f"{prefix}_tready" if fields else f"{prefix}_ready"
            members[valid] = (In if is_in else Out)(1)
            members[ready] = (Out if is_in else In)(1)
            self._map.append((valid, (name, "valid"), is_in))
            self._map.append((ready, (name, "ready"), not is_in))
        for port, fields in _MEM.items():
            for field, ours in fields.items():
                member = sig[port].signature.members[field]
                members[ours] = (In if member.flow == In else Out)(member.shape)
                self._map.append((ours, (port, field), member.flow == In))
        members["tick"] = In(sig["tick"].shape)
        members["idle"] = Out(1)
        self._map += [("tick", ("tick",), True), ("idle", ("idle",), False)]
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        m.submodules.axis = axis = self._axis
        for name in axis.signature.members:
            ours, theirs = getattr(self, name), getattr(axis, name)
            if axis.signature.members[name].flow == In:
                m.d.comb += theirs.eq(ours)
            else:
                m.d.comb += ours.eq(theirs)
        for ours, path, is_in in self._map:
            theirs = self._block
            for step in path:
                theirs = getattr(theirs, step)
            if is_in:
                m.d.comb += theirs.eq(getattr(self, ours))
            else:
                m.d.comb += getattr(self, ours).eq(theirs)
        return m
