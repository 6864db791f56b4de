# Ref: IEEE 802.1Q §9.6 (TPIDs 0x8100, 0x88a8), RFC 791 §3.1, RFC 8200 §3, RFC 9293 §3.1,
#      RFC 768, RFC 792 / RFC 4443 (the headers and the fields that chain them)
"""Parse the first bytes of a frame into the header vector (combinational).

The rules are those of the golden reference :func:`nicsim.hw.ref.match_action.parse`: a header
is valid only if it lies whole inside the frame and the parse window; parsing stops at the
first header that does not.
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

    def elaborate_into(self, m, window, length):
        custom = self.config.get("custom")
        lim = Signal(8)
        m.d.comb += lim.eq(Mux(length > PARSE_WINDOW, PARSE_WINDOW, length))

        def fits(off, n):
            return (off + n) <= lim

        def be(off, n, choices=None):
            if isinstance(off, int):
                return be_bytes(window, off, n)
            # A variable offset takes one of a few values: a multiplexer over constant slices
            # (a shifter over the whole window is far larger).
            out = Signal(8 * n, name=f"at_{off.name}_{n}")
            with m.Switch(off):
                for c in choices:
                    if c + n <= PARSE_WINDOW:
                        with m.Case(c):
                            m.d.comb += out.eq(be_bytes(window, c, n))
            return out

        def is_tpid(v):
            return (v == TPIDS[0]) | (v == TPIDS[1])

        valid = {h: Signal(name=f"p_{h}_valid") for h in HEADERS}
        offset = {}
        eth_ok = length >= 14
        t0, t1, t2 = be(12, 2), be(16, 2), be(20, 2)
        m.d.comb += [
            valid["ethernet"].eq(eth_ok),
            valid["vlan"].eq(eth_ok & is_tpid(t0) & fits(14, 4)),
            valid["vlan2"].eq(valid["vlan"] & is_tpid(t1) & fits(18, 4)),
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
        self.l2_end = l3
        offset["ethernet"] = Const(0, 8)
        offset["vlan"] = Const(14, 8)
        offset["vlan2"] = Const(18, 8)
        custom_eth = Signal()
        if custom is not None and custom["after"] == "ethertype":
            m.d.comb += custom_eth.eq(~stop_l2 & (etype == custom["match"]))
        l3_ok = ~stop_l2 & ~custom_eth

        def at_l3(n):
            return Mux(ntags == 2, be(22, n), Mux(ntags == 1, be(18, n), be(14, n)))

        first = at_l3(1)
        ihl = Signal(4)
        m.d.comb += ihl.eq(first[0:4])
        is4 = l3_ok & (etype == 0x0800) & fits(l3, 20) & (first[4:8] == 4) & (ihl >= 5)
        is6 = l3_ok & (etype == 0x86DD) & fits(l3, 40) & (first[4:8] == 6)
        m.d.comb += [
            valid["ipv4"].eq(is4 & fits(l3, ihl * 4)),
            valid["ipv6"].eq(is6),
        ]
        v4 = at_l3(20)
        v6 = at_l3(40)
        offset["ipv4"] = offset["ipv6"] = l3
        frag = v4[96:109]  # fragment offset: 13 bits at bit 51 of 160
        proto4 = v4[80:88]
        nh6 = v6[264:272]  # next header: 8 bits at bit 48 of 320
        l4 = Signal(8)
        m.d.comb += l4.eq(Mux(valid["ipv4"], l3 + ihl * 4, l3 + 40))
        proto = Signal(8)
        has_l4 = Signal()
        m.d.comb += [
            proto.eq(Mux(valid["ipv4"], proto4, nh6)),
            has_l4.eq((valid["ipv4"] & (frag == 0)) | valid["ipv6"]),
        ]
        icmp_proto = Mux(valid["ipv4"], 1, 58)
        l4_choices = sorted({l3c + 4 * i for l3c in (14, 18, 22) for i in range(5, 16)}
                            | {l3c + 40 for l3c in (14, 18, 22)})
        l4_bytes = be(l4, 20, l4_choices)
        m.d.comb += [
            valid["tcp"].eq(has_l4 & (proto == 6) & fits(l4, 20)),
            valid["udp"].eq(has_l4 & (proto == 17) & fits(l4, 8)),
            valid["icmp"].eq(has_l4 & (proto == icmp_proto) & fits(l4, 4)),
        ]
        offset["tcp"] = offset["udp"] = offset["icmp"] = l4
        value = {
            "ethernet": be(0, 14), "vlan": be(14, 4), "vlan2": be(18, 4),
            "ipv4": v4, "ipv6": v6,
            "tcp": l4_bytes, "udp": l4_bytes[96:160], "icmp": l4_bytes[128:160],
        }
        if custom is not None:
            n = custom["length"]
            if custom["after"] == "ethertype":
                m.d.comb += valid["custom"].eq(custom_eth & fits(l3, n))
                offset["custom"] = l3
                value["custom"] = at_l3(n)
            else:
                c_off = Signal(8)
                m.d.comb += c_off.eq(l4 + 8)
                udp_dport = l4_bytes[128:144]  # bytes 2..3 of the UDP header
                m.d.comb += valid["custom"].eq(valid["udp"] & (udp_dport == custom["match"])
                                               & fits(c_off, n))
                offset["custom"] = c_off
                value["custom"] = be(c_off, n, [c + 8 for c in l4_choices])
        else:
            value["custom"] = Const(0, 8)
            offset["custom"] = Const(0, 8)
        assert all(len(value[h]) == 8 * HEADER_BYTES[h] for h in HEADER_BYTES)
        self.valid, self.value, self.offset = valid, value, offset
        self.ipv4_len = ihl * 4
        return self
