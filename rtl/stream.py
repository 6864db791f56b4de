"""Packet streams: beat layouts, network byte order, AXI4-Stream tops.

Inside nicsim's gateware a packet is a :class:`amaranth.lib.stream` of beats whose payload is
``{data, keep, last, user}``; byte ``i`` of a beat is ``data[8*i:8*i+8]`` and the first byte of a
frame is byte 0 of its first beat (AXI4-Stream byte order). The AXI4-Stream names
(``s_axis_tdata`` ...) appear only at exported tops, built by :class:`AxiStreamTop`.
"""

from amaranth.hdl import Cat, Module, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = [
    "WIDTHS",
    "check_width",
    "beat_layout",
    "beat_signature",
    "be_bytes",
    "keep_is_contiguous",
    "AxiStreamTop",
]

WIDTHS = (64, 128, 256, 512)


def check_width(width):
    """Raise ``ValueError`` unless ``width`` is a supported data width in bits."""
    if width not in WIDTHS:
        raise ValueError(f"Data width must be one of 64, 128, 256, 512, not {width!r}")
    return width


def beat_layout(width, user_width=0):
    """Return the layout of one beat of a ``width``-bit packet stream.

    Members
    -------
    data : unsigned(width)
        Bytes of the beat, first byte in ``data[0:8]``.
    keep : unsigned(width // 8)
        One bit a byte: set for bytes that belong to the frame.
    last : unsigned(1)
        Set on the final beat of a frame.
    user : unsigned(user_width)
        Sideband (present when ``user_width`` > 0).
    """
    fields = {"data": unsigned(width), "keep": unsigned(width // 8), "last": unsigned(1)}
    if user_width:
        fields["user"] = unsigned(user_width)
    return data.StructLayout(fields)


def beat_signature(width, user_width=0):
    """Return the stream signature for a ``width``-bit packet stream."""
    return stream.Signature(beat_layout(width, user_width))


def be_bytes(value, offset, count):
    """Return ``count`` bytes of a byte vector starting at byte ``offset`` in network byte order.

    Network order puts the first byte in the most significant position, while Amaranth values
    are LSB-first; this is the one place that swaps them. ``value`` is a byte vector with byte
    ``i`` at bits ``8*i .. 8*i+7`` (a beat's ``data``).
    """
    return Cat(*(value[8 * (offset + i):8 * (offset + i + 1)] for i in reversed(range(count))))


def keep_is_contiguous(keep, nbytes):
    """Return a combinational expression: ``keep`` is ``0..01..1`` with at least one bit set."""
    # A contiguous run from bit 0 is a value of the form 2**n - 1 (n >= 1).
    return (keep != 0) & ((keep & (keep + 1))[:nbytes] == 0)


class AxiStreamTop(wiring.Component):
    """Export a block with AXI4-Stream and AXI4-Lite port names.

    The wrapped ``block`` has ``i`` (packet stream in) and optionally ``o`` (packet stream out),
    ``result`` (one result word per frame) and ``bus`` (register bus, see
    :mod:`nicsim.rtl.axil`). Its ports appear as ``s_axis_t*``, ``m_axis_t*``,
    ``m_axis_<result_name>_t*`` and ``s_axil_*``.

    Parameters
    ----------
    block : wiring.Component
        The block to export.
    result_name : str
        Prefix of the result stream (``csum``, ``hash`` ...).
    """

    def __init__(self, block, result_name="result"):
        self._block = block
        self._result_name = result_name
        members = {}
        sig = block.signature.members
        i_layout = sig["i"].signature.members["payload"].shape
        members.update(self._axis_members("s_axis", In, i_layout))
        if "o" in sig:
            members.update(self._axis_members("m_axis", Out,
                                              sig["o"].signature.members["payload"].shape))
        if "result" in sig:
            shape = sig["result"].signature.members["payload"].shape
            prefix = f"m_axis_{result_name}"
            members[f"{prefix}_tdata"] = Out(shape)
            members[f"{prefix}_tvalid"] = Out(1)
            members[f"{prefix}_tready"] = In(1)
            members[f"{prefix}_tlast"] = Out(1)
        if "bus" in sig:
            from .axil import axil_members
            members.update(axil_members(sig["bus"].signature.addr_width))
        super().__init__(members)

    @staticmethod
    def _axis_members(prefix, direction, layout):
        flip = Out if direction is In else In
        members = {
            f"{prefix}_tdata": direction(layout["data"].shape),
            f"{prefix}_tkeep": direction(layout["keep"].shape),
            f"{prefix}_tvalid": direction(1),
            f"{prefix}_tready": flip(1),
            f"{prefix}_tlast": direction(1),
        }
        if "user" in layout._fields:
            members[f"{prefix}_tuser"] = direction(layout["user"].shape)
        return members

    def elaborate(self, platform):
        m = Module()
        m.submodules.block = block = self._block
        for prefix, port, is_input in (("s_axis", block.i, True),
                                       ("m_axis", getattr(block, "o", None), False)):
            if port is None:
                continue
            names = ("data", "keep", "last") + (("user",) if hasattr(port.payload, "user") else ())
            for name in names:
                ours = getattr(self, f"{prefix}_t{name}")
                if is_input:
                    m.d.comb += getattr(port.payload, name).eq(ours)
                else:
                    m.d.comb += ours.eq(getattr(port.payload, name))
            if is_input:
                m.d.comb += [port.valid.eq(self.s_axis_tvalid), self.s_axis_tready.eq(port.ready)]
            else:
                m.d.comb += [self.m_axis_tvalid.eq(port.valid), port.ready.eq(self.m_axis_tready)]
        if hasattr(block, "result"):
            prefix = f"m_axis_{self._result_name}"
            m.d.comb += [
                getattr(self, f"{prefix}_tdata").eq(block.result.payload),
                getattr(self, f"{prefix}_tvalid").eq(block.result.valid),
                getattr(self, f"{prefix}_tlast").eq(1),
                block.result.ready.eq(getattr(self, f"{prefix}_tready")),
            ]
        if hasattr(block, "bus"):
            from .axil import AxiLiteBridge
            m.submodules.axil = bridge = AxiLiteBridge(block.bus.signature.addr_width)
            wiring.connect(m, bridge.bus, block.bus)
            for name in bridge.axil_names:
                ours, theirs = getattr(self, name), getattr(bridge, name)
                if bridge.signature.members[name].flow == Out:
                    m.d.comb += ours.eq(theirs)
                else:
                    m.d.comb += theirs.eq(ours)
        return m

