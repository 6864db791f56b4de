# Ref: IEEE 802.1Q §9.6 (TPIDs 0x8100, 0x88a8), RFC 791 §3.1, RFC 8200 §3, RFC 9293 §3.1,
#      RFC 768, RFC 792 / RFC 4443 (the headers and the fields that chain them)
"""Parse the first bytes of a frame into the header vector.

The rules are those of the golden reference :func:`nicsim.hw.ref.match_action.parse`: a header
is valid only if it lies whole inside the frame and the parse window; parsing stops at the
first header that does not. The work is cut in four steps by the caller's registers (``reg``):
layer 2 (tags, EtherType, the bytes at the layer-3 offset), layer 3 (IPv4 or IPv6, where layer 4
starts), layer 4 (the bytes at that variable offset, the custom header), the outputs.
"""

from amaranth.hdl import Const, Mux, Signal

from ..stream import be_bytes
from .hv import HEADER_BYTES, HEADERS
from .limits import PARSE_WINDOW

__all__ = ["Parser", "TPIDS"]

TPIDS = (0x8100, 0x88A8)


class Parser:
    """Header extraction from a window of ``PARSE_WINDOW`` bytes (byte ``i`` at bits 8i..).

    Members (combinational, after :meth:`elaborate_into`)
    -------
    valid : dict of str to Value
    value : dict of str to Value
        Each header as a big-endian number.
    offset : dict of str to Value
        Where each header starts in the frame.
    l2_end : Value
        End of the tags as received (where the first non-layer-2 byte is).
    """

    def __init__(self, config):
        self.config = config

    def elaborate_into(self, m, window, length, reg=None, carry=()):
        """Build the parser in ``m`` from a window and the frame's length.

        ``reg(value)`` returns ``value`` registered (the caller's pipeline step; without it the
        parser is combinational); the values of ``carry`` travel along and come out registered
        in ``self.carry``.
        """
        if reg is None:
            def reg(value):
                return value
        custom = self.config.get("custom")
        carry = list(carry)

        def cut(names):
            """Register window, lim, carry and the named locals of the step."""
            return [reg(v) for v in names]

        lim = Signal(8)
        m.d.comb += lim.eq(Mux(length > PARSE_WINDOW, PARSE_WINDOW, length))

        def fits(off, n, lim_):
            return (off + n) <= lim_

        def be(win, off, n, choices=None):
            if isinstance(off, int):
                return be_bytes(win, off, n)
            # A variable offset takes one of a few values: a multiplexer over constant slices
            # (a shifter over the whole window is far larger).
            out = Signal(8 * n, name=f"at_{off.name}_{n}")
            with m.Switch(off):
                for c in choices:
                    if c + n <= PARSE_WINDOW:
                        with m.Case(c):
                            m.d.comb += out.eq(be_bytes(win, c, n))
            return out

        def is_tpid(v):
            return (v == TPIDS[0]) | (v == TPIDS[1])

        # Layer 2 ---------------------------------------------------------------------------
        # The tags end at fixed offsets inside the window, so whether they fit is the length
        # compared with a constant (not with ``lim``, which waits for its own compare).
        valid = {h: Signal(name=f"p_{h}_valid") for h in ("ethernet", "vlan", "vlan2")}
        eth_ok = length >= 14
        t0, t1, t2 = be(window, 12, 2), be(window, 16, 2), be(window, 20, 2)
        m.d.comb += [
            valid["ethernet"].eq(eth_ok),
            valid["vlan"].eq(eth_ok & is_tpid(t0) & (length >= 18)),
            valid["vlan2"].eq(eth_ok & is_tpid(t0) & (length >= 22) & is_tpid(t1)),
        ]
        stop_l2 = Signal()
        ntags = Signal(2)
        etype = Signal(16)
        m.d.comb += [
            ntags.eq(Mux(valid["vlan2"], 2, Mux(valid["vlan"], 1, 0))),
            etype.eq(Mux(valid["vlan2"], t2, Mux(valid["vlan"], t1, t0))),
            stop_l2.eq(~eth_ok | (is_tpid(t0) & ~valid["vlan"])
                       | (valid["vlan"] & is_tpid(t1) & ~valid["vlan2"])
                       | (valid["vlan2"] & is_tpid(t2))),
        ]
        l3 = Signal(8)
        m.d.comb += l3.eq(14 + 4 * ntags)
        custom_eth = Signal()
        if custom is not None and custom["after"] == "ethertype":
            m.d.comb += custom_eth.eq(~stop_l2 & (etype == custom["match"]))
        l3_ok = ~stop_l2 & ~custom_eth
        at_l3 = Signal(8 * 40)  # the 40 bytes from layer 3 on, chosen by the tags' flags
        m.d.comb += at_l3.eq(Mux(valid["vlan2"], be(window, 22, 40),
                                 Mux(valid["vlan"], be(window, 18, 40), be(window, 14, 40))))
        # --- cut 1
        (window, lim, v_eth, v_vlan, v_vlan2, l3, etype, custom_eth, l3_ok, at_l3,
         *carry) = cut([window, lim, valid["ethernet"], valid["vlan"], valid["vlan2"], l3, etype,
                        custom_eth, l3_ok, at_l3, *carry])

        # Layer 3 ---------------------------------------------------------------------------
        first = at_l3[-8:]
        ihl = Signal(4)
        m.d.comb += ihl.eq(first[0:4])
        is4 = l3_ok & (etype == 0x0800) & fits(l3, 20, lim) & (first[4:8] == 4) & (ihl >= 5)
        is6 = l3_ok & (etype == 0x86DD) & fits(l3, 40, lim) & (first[4:8] == 6)
        v4_ok = Signal()
        m.d.comb += v4_ok.eq(is4 & fits(l3, ihl * 4, lim))
        v4 = at_l3[-160:]
        v6 = at_l3
        frag = v4[96:109]  # fragment offset: 13 bits at bit 51 of 160
        proto4 = v4[80:88]
        nh6 = v6[264:272]  # next header: 8 bits at bit 48 of 320
        l4 = Signal(8)
        m.d.comb += l4.eq(Mux(v4_ok, l3 + ihl * 4, l3 + 40))
        proto = Signal(8)
        has_l4 = Signal()
        m.d.comb += [
            proto.eq(Mux(v4_ok, proto4, nh6)),
            has_l4.eq((v4_ok & (frag == 0)) | is6),
        ]
        v_custom_eth = Const(0, 1)
        if custom is not None and custom["after"] == "ethertype":
            v_custom_eth = custom_eth & fits(l3, custom["length"], lim)
        # --- cut 2
        (window, lim, v_eth, v_vlan, v_vlan2, l3, at_l3, v4_ok, is6, l4, proto, has_l4,
         v_custom_eth, *carry) = cut([window, lim, v_eth, v_vlan, v_vlan2, l3, at_l3, v4_ok, is6,
                                     l4, proto, has_l4, v_custom_eth, *carry])

        # Layer 4 and the custom header ---------------------------------------------------------
        icmp_proto = Mux(v4_ok, 1, 58)
        l4_choices = sorted({l3c + 4 * i for l3c in (14, 18, 22) for i in range(5, 16)}
                            | {l3c + 40 for l3c in (14, 18, 22)})
        l4_bytes = be(window, l4, 20, l4_choices)
        v_tcp = has_l4 & (proto == 6) & fits(l4, 20, lim)
        v_udp = has_l4 & (proto == 17) & fits(l4, 8, lim)
        v_icmp = has_l4 & (proto == icmp_proto) & fits(l4, 4, lim)
        v_custom, c_value, c_off = v_custom_eth, Const(0, 8), Const(0, 8)
        if custom is not None:
            n = custom["length"]
            if custom["after"] == "ethertype":
                c_off = l3
                c_value = at_l3[-8 * n:]
            else:
                c_off = Signal(8)
                m.d.comb += c_off.eq(l4 + 8)
                udp_dport = l4_bytes[128:144]  # bytes 2..3 of the UDP header
                v_custom = v_udp & (udp_dport == custom["match"]) & fits(c_off, n, lim)
                c_value = be(window, c_off, n, [c + 8 for c in l4_choices])
        # --- cut 3
        (window, v_eth, v_vlan, v_vlan2, l3, at_l3, v4_ok, is6, l4, l4_bytes, v_tcp, v_udp,
         v_icmp, v_custom, c_value, c_off, *carry) = cut(
            [window, v_eth, v_vlan, v_vlan2, l3, at_l3, v4_ok, is6, l4, l4_bytes, v_tcp, v_udp,
             v_icmp, v_custom, c_value, c_off, *carry])

        valid_out = {h: Signal(name=f"p_{h}_valid_out") for h in HEADERS}
        for h, v in (("ethernet", v_eth), ("vlan", v_vlan), ("vlan2", v_vlan2), ("ipv4", v4_ok),
                     ("ipv6", is6), ("tcp", v_tcp), ("udp", v_udp), ("icmp", v_icmp),
                     ("custom", v_custom)):
            m.d.comb += valid_out[h].eq(v)
        self.l2_end = l3
        offset = {"ethernet": Const(0, 8), "vlan": Const(14, 8), "vlan2": Const(18, 8),
                  "ipv4": l3, "ipv6": l3, "tcp": l4, "udp": l4, "icmp": l4, "custom": c_off}
        value = {
            "ethernet": be(window, 0, 14), "vlan": be(window, 14, 4),
            "vlan2": be(window, 18, 4), "ipv4": at_l3[-160:], "ipv6": at_l3,
            "tcp": l4_bytes, "udp": l4_bytes[96:160], "icmp": l4_bytes[128:160],
            "custom": c_value,
        }
        assert all(len(value[h]) == 8 * HEADER_BYTES[h] for h in HEADER_BYTES)
        self.valid, self.value, self.offset = valid_out, value, offset
        self.window = window
        self.carry = carry
        return self
