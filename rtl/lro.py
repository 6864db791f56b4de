# Ref: Linux net/core/gro.c (dev_gro_receive(), skb_gro_receive(), MAX_GRO_SKBS),
#      net/ipv4/af_inet.c inet_gro_receive(), net/ipv6/ip6_offload.c ipv6_gro_receive(),
#      include/net/gro.h inet_gro_flush(), net/ipv4/tcp_offload.c tcp_gro_receive();
#      RFC 791 §3.1, RFC 8200 §3, RFC 9293 §3.1, RFC 1071 (ones'-complement sums)
"""Receive segment coalescing (LRO) with Linux GRO's rules.

The block merges in-order TCP segments of up to ``flows`` flows into one large frame each, with
the rules of the golden reference :class:`nicsim.hw.ref.lro.LroEngine` (its default options:
``keep_order``, ``cwr_rule="restart"``, ``fixed_id_needs_df``), and delivers every other frame
unchanged, in order.

Memory. Every flow context owns a region of ``buffer_bytes`` in one payload memory: the first
segment is stored whole at the start of its region, later payloads are appended behind it, so a
merged frame leaves the region as it will go on the wire once four header fields are patched
(IP length, IPv4 header checksum, TCP flags, TCP checksum). A flow is delivered before its merged
frame would pass ``max_bytes`` (counted after the Ethernet header, like the reference's
``max_bytes``; at most ``buffer_bytes - 14``), so the reference run with the same ``max_flows``
and ``max_bytes`` gives the same frames. Linux's 64 KiB (``max_bytes=65535``) needs
``buffer_bytes=131072``: 8 flows take 1 MiB, which a simulation holds but an ECP5-85k does not
(208 blocks of 18 kbit); the default, 16 KiB regions with ``max_bytes=16370``, fits (1 Mbit).
Received frames wait in a staging ring of two ``max_frame`` frames until their checksums are
known; a frame longer than ``max_frame`` is dropped and counted.

Order of delivery: a frame that ends a held flow (a mismatch, an ineligible frame of the same
addresses and ports, an eviction) delivers that flow first. A held flow also leaves when its
first segment has waited ``TIMEOUT`` cycles (register; 0 disables), and all held flows leave,
oldest first, after a frame whose ``user`` bit 0 is set (end of a poll: the reference's
``flush()``).

The merged frame's metadata (Linux ``gso_segs`` and ``gso_size``) travels in the ``user`` field
of its beats: ``segs`` in bits 0-15, ``gso_size`` in bits 16-31 (0 for a single frame), and in
bits 32-47 the low 16 bits of the index of the input frame whose processing delivered it
(counting every input frame, dropped ones too).

Throughput: a frame is written into the staging ring at one beat per cycle; the merge engine
then spends about eight cycles on its headers and one cycle per beat it copies (the payload of a
merged segment, the whole of other frames), so segments of a few hundred bytes and more go
through at the input's line rate and minimum-size segments at about half of it (64 bit).
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .axil import RegisterBusSignature
from .regs import Register
from .stream import be_bytes, beat_signature, check_width

__all__ = ["REGISTERS", "USER_WIDTH", "LroEngine"]

#: Register map (32-bit registers). Counters wrap; writes to read-only registers: SLVERR.
REGISTERS = (
    Register("FRAMES_IN", 0x00, 1, "ro", "frames received"),
    Register("FRAMES_OUT", 0x04, 1, "ro", "frames delivered (a merged frame counts once)"),
    Register("MERGED", 0x08, 1, "ro", "segments merged into a held segment"),
    Register("DROP_OVERSIZE", 0x0C, 1, "ro", "frames dropped: longer than max_frame"),
    Register("TIMEOUT", 0x10, 1, "rw", "cycles a held flow may wait from its first segment; "
                                       "0 (reset) disables the timeout"),
)
USER_WIDTH = 48  # segs[0:16], gso_size[16:32], input frame index[32:48]

_HDR = 128  # header bytes captured per frame: 14 + 2 VLAN tags + 40 (IPv6) + 60 (TCP) < 128
_ETH = 14
_KEY_BITS = 22 * 8 + 2 + 36 * 8 + 32
_FLAG_MASK = 0xFFFFFFFF & ~(0x89 << 16)  # the TCP word at offset 12 but CWR, PSH, FIN
_END = 0x20 | 0x08 | 0x04 | 0x02 | 0x01  # URG, PSH, RST, SYN, FIN
_CWR = 0x80


def _byte(value, i):
    return value[8 * i:8 * i + 8]


def _fold(value):
    """Fold a sum of 16-bit words to 16 bits with end-around carries (combinational)."""
    v = value
    while len(v) > 17:
        v = v[:16] + v[16:]
    for _ in range(2):
        v = v[:16] + v[16:]
    return v[:16]


def _word_sum(vec, first, count):
    """Sum of the network-order 16-bit words ``first .. first+count-1`` of a byte vector."""
    total = Const(0, 16)
    for k in range(first, first + count):
        total = total + be_bytes(vec, 2 * k, 2)
    return total


def _neg(value):
    return value[:16] ^ 0xFFFF


def _ctx_layout(width_ptr):
    return data.StructLayout({
        "valid": 1,
        "key": _KEY_BITS,
        "flag_word": 32,
        "ack": 32,
        "opts": 320,
        "ip_word": 17,
        "ip_id": 16,
        "fixed_id": 1,
        "count": 16,
        "mss": 16,
        "next_seq": 32,
        "held_len": 17,
        "end_flags": 8,
        "flags": 8,
        "v6": 1,
        "l3": 7,
        "l4": 7,
        "addr_sum": 16,
        "ip_base": 16,
        "tcp_base": 16,
        "pay_sum": 16,
        "t_first": 32,
    })


class LroEngine(wiring.Component):
    """Coalesce received TCP segments (see the module docstring for the contract).

    Parameters
    ----------
    width : int
        Data width in bits (64, 128, 256 or 512).
    flows : int
        Flow contexts (1 to 64; Linux ``MAX_GRO_SKBS`` = 8).
    buffer_bytes : int
        Bytes of payload memory per flow context (a power of two, 2048 to 131072).
    max_bytes : int or None
        Largest merged frame counted after the Ethernet header (reference ``max_bytes``);
        default and limit ``min(65535, buffer_bytes - 14)``.
    max_frame : int
        Longest frame accepted (64 to 65535, at most ``buffer_bytes``); longer ones are dropped
        and counted.

    Members
    -------
    i : In(beat stream with 1-bit user)
        Received frames; ``user`` bit 0 on a frame flushes every held flow after it.
    o : Out(beat stream with 48-bit user)
        Delivered frames; ``user``: see the module docstring.
    bus : In(RegisterBusSignature(8))
        Registers, see :data:`REGISTERS`.
    """

    def __init__(self, width=64, *, flows=8, buffer_bytes=16384, max_bytes=None,
                 max_frame=9216):
        self.width = check_width(width)
        if not isinstance(flows, int) or not 1 <= flows <= 64:
            raise ValueError(f"Flow contexts must be 1 to 64, not {flows!r}")
        if (not isinstance(buffer_bytes, int) or buffer_bytes & (buffer_bytes - 1)
                or not 2048 <= buffer_bytes <= 131072):
            raise ValueError(f"Buffer bytes must be a power of two from 2048 to 131072, "
                             f"not {buffer_bytes!r}")
        limit = min(65535, buffer_bytes - _ETH)
        if max_bytes is None:
            max_bytes = limit
        if not isinstance(max_bytes, int) or not 1 <= max_bytes <= limit:
            raise ValueError(f"Max bytes must be 1 to {limit} with {buffer_bytes}-byte "
                             f"buffers, not {max_bytes!r}")
        if not isinstance(max_frame, int) or not 64 <= max_frame <= min(65535, buffer_bytes):
            raise ValueError(f"Max frame must be 64 to {min(65535, buffer_bytes)}, "
                             f"not {max_frame!r}")
        self.flows = flows
        self.buffer_bytes = buffer_bytes
        self.max_bytes = max_bytes
        self.max_frame = max_frame
        super().__init__({
            "i": In(beat_signature(width, 1)),
            "o": Out(beat_signature(width, USER_WIDTH)),
            "bus": In(RegisterBusSignature(8)),
        })

    def elaborate(self, platform):
        m = Module()
        W = self.width
        B = W // 8
        LB = (B - 1).bit_length()
        N = self.flows

        # Staging ring: two longest frames, in whole words.
        stage_words = 1 << ((2 * self.max_frame + B - 1) // B - 1).bit_length()
        SP = (stage_words - 1).bit_length()  # address bits
        region_words = self.buffer_bytes // B
        RP = (region_words - 1).bit_length()
        CP = max(1, (N - 1).bit_length())

        m.submodules.staging = staging = Memory(shape=unsigned(W), depth=stage_words, init=[])
        st_w = staging.write_port()
        st_r = staging.read_port()
        m.submodules.region = region = Memory(shape=unsigned(W), depth=N * region_words,
                                              init=[])
        rg_w = region.write_port(granularity=8)
        rg_r = region.read_port()

        now = Signal(32)
        m.d.sync += now.eq(now + 1)
        timeout = Signal(32)
        cnt = {r.name: Signal(32, name=f"cnt_{r.name.lower()}") for r in REGISTERS
               if r.access == "ro"}

        # ------------------------------------------------------------------ input stage
        desc_layout = data.StructLayout({
            "hdr": 8 * _HDR, "len": 16, "total": 32, "start": SP + 1, "eop": 1, "idx": 16,
        })
        desc_depth = 8
        m.submodules.desc = desc = SyncFIFOBuffered(width=desc_layout.size, depth=desc_depth)

        wr_start = Signal(SP + 1)  # first word of the frame being received
        rd_ptr = Signal(SP + 1)  # first word still needed by the merge engine
        admit = Signal()
        s1 = Signal(beat_signature(W, 1).members["payload"].shape)
        s1_valid = Signal()
        s2 = Signal.like(s1)
        s2_valid = Signal()
        s2_sum = Signal(16 + LB)
        beat_idx = Signal(16)
        off = Signal(20)
        dropping = Signal()
        acc = Signal(32)
        capture = Signal(8 * _HDR)
        in_idx = Signal(16)

        fire = self.i.valid & self.i.ready
        m.d.comb += self.i.ready.eq(admit)
        m.d.sync += [s1_valid.eq(fire), s2_valid.eq(s1_valid), s2.eq(s1)]
        with m.If(fire):
            m.d.sync += s1.eq(self.i.payload)
        masked = Cat(*(Mux(s1.keep[k], _byte(s1.data, k), 0) for k in range(B)))
        m.d.sync += s2_sum.eq(_word_sum(masked, 0, B // 2))

        used = Signal(SP + 1)
        m.d.comb += used.eq(wr_start + beat_idx - rd_ptr)
        m.d.sync += admit.eq((used + 4 < stage_words) & (desc.level + 4 < desc_depth))

        nbytes = Signal(range(B + 1))
        m.d.comb += nbytes.eq(sum(s2.keep[k] for k in range(B)))
        over = Signal()
        m.d.comb += over.eq(dropping | (off + nbytes > self.max_frame))
        hdr_now = Signal(8 * _HDR)
        chunks = []
        for c in range(max(1, _HDR // B)):
            lo, hi = c * B * 8, min((c + 1) * B, _HDR) * 8
            chunks.append(Mux(beat_idx == c, s2.data[:hi - lo], capture[lo:hi]))
        m.d.comb += hdr_now.eq(Cat(*chunks))
        d_in = Signal(desc_layout)
        m.d.comb += [
            d_in.hdr.eq(hdr_now),
            d_in.len.eq(off + nbytes),
            d_in.total.eq(acc + s2_sum),
            d_in.start.eq(wr_start),
            d_in.eop.eq(s2.user[0]),
            d_in.idx.eq(in_idx),
            desc.w_data.eq(d_in.as_value()),
            st_w.addr.eq((wr_start + beat_idx)[:SP]),
            st_w.data.eq(s2.data),
        ]
        with m.If(s2_valid):
            m.d.comb += st_w.en.eq(~over)
            m.d.sync += capture.eq(hdr_now)
            with m.If(s2.last):
                m.d.sync += [off.eq(0), beat_idx.eq(0), dropping.eq(0), acc.eq(0),
                             in_idx.eq(in_idx + 1), cnt["FRAMES_IN"].eq(cnt["FRAMES_IN"] + 1)]
                with m.If(over):
                    m.d.sync += cnt["DROP_OVERSIZE"].eq(cnt["DROP_OVERSIZE"] + 1)
                with m.Else():
                    m.d.comb += desc.w_en.eq(1)
                    m.d.sync += wr_start.eq(wr_start + beat_idx + 1)
            with m.Else():
                m.d.sync += [off.eq(off + nbytes), dropping.eq(over), acc.eq(acc + s2_sum)]
                with m.If(~over):
                    m.d.sync += beat_idx.eq(beat_idx + 1)

        # ------------------------------------------------------------------ parse stages
        cur = Signal(desc_layout)
        h = cur.hdr
        size = cur.len

        # P1: layer 2, the IP header and the TCP header at their offsets, Ethernet sums.
        et0, et1, et2 = be_bytes(h, 12, 2), be_bytes(h, 16, 2), be_bytes(h, 20, 2)

        def is_tpid(v):
            return (v == 0x8100) | (v == 0x88A8)

        p1_ntags = Signal(2)
        p1_et = Signal(16)
        p1_ip = Signal(8 * 40)
        p1_tcp = Signal(8 * 60)
        p1_ports = Signal(32)
        p1_eth_sum = Signal(16)
        p1_total = Signal(16)
        p1_l4any = Signal(7)
        ntags = Signal(2)
        m.d.comb += ntags.eq(Mux(is_tpid(et0), Mux(is_tpid(et1), 2, 1), 0))
        ip_at = [h[8 * (14 + 4 * t):8 * (14 + 4 * t + 40)] for t in range(3)]
        ipv = Signal(8 * 40)
        m.d.comb += ipv.eq(Mux(ntags == 0, ip_at[0], Mux(ntags == 1, ip_at[1], ip_at[2])))
        et = Mux(ntags == 0, et0, Mux(ntags == 1, et1, et2))
        is6_et = et == 0x86DD
        l3c = Signal(7)
        m.d.comb += l3c.eq(14 + 4 * ntags)
        l4any = Signal(7)
        m.d.comb += l4any.eq(l3c + Mux(is6_et, 40, Cat(Const(0, 2), ipv[0:4])))
        ports_any = Signal(32)
        with m.Switch(l4any):
            for pos in range(14, _HDR - 3):
                with m.Case(pos):
                    m.d.comb += ports_any.eq(h[8 * pos:8 * (pos + 4)])
        tcp_at = {}
        for t in range(3):
            for ip_len in (20, 40):
                lo = 14 + 4 * t + ip_len
                tcp_at[t, ip_len] = h[8 * lo:8 * min(lo + 60, _HDR)]
        tcp_sel = Signal(8 * 60)
        with m.Switch(Cat(ntags, is6_et)):
            for t in range(3):
                for v6 in (0, 1):
                    with m.Case(t | (v6 << 2)):
                        m.d.comb += tcp_sel.eq(tcp_at[t, 40 if v6 else 20])
        eth_sums = [_word_sum(h, 0, 7 + 2 * t) for t in range(3)]

        # P2: fields, header sums, checks that need no sum.
        p2 = {name: Signal(w, name=f"p2_{name}") for name, w in (
            ("ip_sum", 16 + 5), ("addr_sum", 16 + 5), ("tcp_sum", 16 + 5), ("ihl", 4),
            ("ver", 4), ("proto", 8), ("frag", 16), ("ip_len", 16), ("ip_csum", 16),
            ("ip_id", 16), ("ip_word", 17), ("doff", 4), ("tcp_csum", 16), ("seq", 32),
            ("ack", 32), ("flag_word", 32), ("opts", 320), ("key", _KEY_BITS))}
        ip_fields = {
            "v4_sum": _word_sum(p1_ip, 0, 10), "v6_sum": _word_sum(p1_ip, 0, 20),
            "v4_addr": _word_sum(p1_ip, 6, 4), "v6_addr": _word_sum(p1_ip, 4, 16),
        }
        p1_is6 = p1_et == 0x86DD
        doff = p1_tcp[8 * 12 + 4:8 * 12 + 8]
        tcp_sum = Const(0, 16)
        for k in range(30):
            tcp_sum = tcp_sum + Mux(k < Cat(Const(0, 1), doff), be_bytes(p1_tcp, 2 * k, 2), 0)
        opt_bytes = [Mux(20 + k < Cat(Const(0, 2), doff), _byte(p1_tcp, 20 + k), 0)
                     for k in range(40)]
        p1_eth = Signal(22 * 8)
        label = Cat(p1_ip[0:8] & 0xF0, p1_ip[8:16] & 0x0F, p1_ip[16:32])
        ip_key = Mux(p1_is6, Cat(label, p1_ip[8 * 8:8 * 40]),
                     Cat(p1_ip[8 * 12:8 * 20], Const(0, 8 * 28)))

        # P3: verdicts and the sums a context keeps.
        f = {name: Signal(w, name=f"f_{name}") for name, w in (
            ("seg", 1), ("key_valid", 1), ("never_hold", 1), ("v6", 1), ("l3", 7), ("l4", 7),
            ("pay_off", 7), ("pay_len", 17), ("flags", 8), ("df", 1), ("addr_sum", 16),
            ("ip_base", 16), ("tcp_base", 16), ("pay_sum", 16), ("seq", 32), ("ack", 32),
            ("flag_word", 32), ("opts", 320), ("ip_word", 17), ("ip_id", 16),
            ("key", _KEY_BITS))}
        p2_l3 = Signal(7)
        p2_ntags = Signal(2)
        p2_is6 = Signal()
        p2_et_ip = Signal()
        p2_eth_sum = Signal(16)
        p2_total = Signal(16)
        p2_l4any = Signal(7)

        # ------------------------------------------------------------------ contexts
        Ctx = _ctx_layout(SP)
        ctx = [Signal(Ctx, name=f"ctx{i}") for i in range(N)]
        older = [[Signal(name=f"older_{i}_{j}") if i != j else None for j in range(N)]
                 for i in range(N)]
        valid = Cat(*(c.valid for c in ctx))
        oldest_oh = Cat(*(ctx[i].valid & Cat(*(~ctx[j].valid | older[i][j]
                                               for j in range(N) if j != i)).all()
                          if N > 1 else ctx[i].valid for i in range(N)))
        oldest = Signal(CP)
        free_idx = Signal(CP)
        for i in reversed(range(N)):
            with m.If(oldest_oh[i]):
                m.d.comb += oldest.eq(i)
            with m.If(~ctx[i].valid):
                m.d.comb += free_idx.eq(i)
        any_free = Signal()
        m.d.comb += any_free.eq(~valid.all())

        def pick(field, index):
            """Field of context ``index`` (combinational multiplexer)."""
            result = getattr(ctx[0], field)
            for i in range(1, N):
                result = Mux(index == i, getattr(ctx[i], field), result)
            return result

        hit = Signal(N)
        ok = Signal(N)
        max_held = self.max_bytes + _ETH

        # ------------------------------------------------------------------ engines
        # Output: reads of staging or region words into a FIFO towards ``o``.
        out_layout = data.StructLayout({"data": W, "keep": B, "last": 1, "user": USER_WIDTH})
        m.submodules.outq = outq = SyncFIFOBuffered(width=out_layout.size, depth=8)
        o_region = Signal()
        o_addr = Signal(max(SP, RP + CP))
        o_j = Signal(16)
        o_n = Signal(16)
        o_keep_last = Signal(B)
        o_user = Signal(USER_WIDTH)
        o_busy = Signal()
        o_v1 = Signal()
        o_src1 = Signal()
        o_last1 = Signal()
        o_keep1 = Signal(B)
        o_user1 = Signal(USER_WIDTH)
        issue = Signal()
        m.d.comb += issue.eq(o_busy & (o_j != o_n) & (outq.level < 6))
        with m.If(issue):
            m.d.sync += [o_j.eq(o_j + 1), o_addr.eq(o_addr + 1)]
        m.d.sync += [o_v1.eq(issue), o_src1.eq(o_region), o_last1.eq(o_j + 1 == o_n),
                     o_keep1.eq(Mux(o_j + 1 == o_n, o_keep_last, (1 << B) - 1)),
                     o_user1.eq(o_user)]
        o_word = Signal(out_layout)
        m.d.comb += [
            o_word.data.eq(Mux(o_src1, rg_r.data, st_r.data)),
            o_word.keep.eq(o_keep1),
            o_word.last.eq(o_last1),
            o_word.user.eq(o_user1),
            outq.w_data.eq(o_word.as_value()),
            outq.w_en.eq(o_v1),
        ]
        o_view = data.View(out_layout, outq.r_data)
        m.d.comb += [
            self.o.payload.data.eq(o_view.data),
            self.o.payload.keep.eq(o_view.keep),
            self.o.payload.last.eq(o_view.last),
            self.o.payload.user.eq(o_view.user),
            self.o.valid.eq(outq.r_rdy),
            outq.r_en.eq(self.o.ready),
        ]
        with m.If(self.o.valid & self.o.ready & self.o.payload.last):
            m.d.sync += cnt["FRAMES_OUT"].eq(cnt["FRAMES_OUT"] + 1)

        # Copy: staging words into a context region, shifted by ``c_r`` bytes.
        c_busy = Signal()
        c_src = Signal(SP + 1)
        c_j = Signal(16)
        c_n = Signal(16)
        c_r = Signal(LB + 1)
        c_base = Signal(17)  # region word of source word 0 (unshifted lanes)
        c_lo = Signal(17)  # first region byte written
        c_hi = Signal(17)  # one past the last
        c_ctx = Signal(CP)
        c_v1 = Signal()
        c_w1 = Signal(17)
        prev = Signal(W)
        c_issue = Signal()
        m.d.comb += c_issue.eq(c_busy & (c_j != c_n))
        with m.If(c_issue):
            m.d.sync += c_j.eq(c_j + 1)
        m.d.sync += [c_v1.eq(c_issue), c_w1.eq(c_base + c_j)]
        with m.If(c_v1):
            m.d.sync += prev.eq(st_r.data)
        both = Cat(prev, st_r.data)
        shifted = Signal(W)
        with m.Switch(c_r):
            for r in range(B):
                with m.Case(r):
                    m.d.comb += shifted.eq(both[8 * (B - r):8 * (B - r) + W])
        lanes = Signal(B)
        for k in range(B):
            byte_pos = Cat(Const(k, LB), c_w1) if LB else c_w1
            m.d.comb += lanes[k].eq((byte_pos >= c_lo) & (byte_pos < c_hi))

        # Patch: one header field written into a region (deliver).
        p_en = Signal()
        p_pos = Signal(7)
        p_val = Signal(16)
        p_two = Signal()
        p_ctx = Signal(CP)
        lane_of = p_pos[:LB] if LB else Const(0, 1)
        patch_data = Signal(W)
        patch_en = Signal(B)
        with m.Switch(lane_of):
            for k in range(0, B):
                with m.Case(k):
                    if k + 1 < B:
                        m.d.comb += patch_data.eq(
                            Mux(p_two, Cat(p_val[8:16], p_val[0:8]), Cat(p_val[0:8], Const(0, 8)))
                            << (8 * k))
                        m.d.comb += patch_en.eq(Mux(p_two, 0b11, 0b01) << k)
                    else:
                        m.d.comb += patch_data.eq(p_val[0:8] << (8 * k))
                        m.d.comb += patch_en.eq(1 << k)
        p_word = Signal(RP)
        m.d.comb += p_word.eq(p_pos >> LB)
        with m.If(p_en):
            m.d.comb += [
                rg_w.addr.eq(Cat(p_word, p_ctx) if N > 1 else p_word),
                rg_w.data.eq(patch_data),
                rg_w.en.eq(patch_en),
            ]
        with m.Elif(c_v1):
            m.d.comb += [
                rg_w.addr.eq(Cat(c_w1[:RP], c_ctx) if N > 1 else c_w1[:RP]),
                rg_w.data.eq(shifted),
                rg_w.en.eq(lanes),
            ]
        m.d.comb += [
            st_r.addr.eq(Mux(c_busy, (c_src + c_j)[:SP], o_addr[:SP])),
            st_r.en.eq(Mux(c_busy, c_issue, issue & ~o_region)),
            rg_r.addr.eq(o_addr[:RP + CP] if N > 1 else o_addr[:RP]),
            rg_r.en.eq(issue & o_region),
        ]

        # ------------------------------------------------------------------ merge engine
        act = Signal(2)  # 0 single, 1 hold, 2 merge
        A_SINGLE, A_HOLD, A_MERGE = 0, 1, 2
        sel = Signal(CP)
        post = Signal()
        d_ctx = Signal(CP)
        ret = Signal(2)  # where a delivery returns: 0 act, 1 release, 2 flush, 3 wait
        R_ACT, R_RELEASE, R_FLUSH, R_WAIT = 0, 1, 2, 3
        dsel = {name: Signal(len(getattr(ctx[0], name)), name=f"d_{name}")
                for name in ("count", "mss", "held_len", "end_flags", "flags", "v6", "l3", "l4",
                             "addr_sum", "ip_base", "tcp_base", "pay_sum")}
        d_ip_len = Signal(16)
        d_tcp_len = Signal(16)
        d_ip_csum = Signal(16)
        d_tcp_csum = Signal(16)
        d_step = Signal(2)
        idx_now = Signal(16)

        expired = Signal()
        m.d.comb += expired.eq(valid.any() & (timeout != 0)
                               & (now - pick("t_first", oldest) >= timeout))

        def start_out(region_src, addr, nbytes_, user):
            nb = Signal(17, name="nb")
            m.d.comb += nb.eq(nbytes_)
            m.d.sync += [
                o_busy.eq(1), o_region.eq(region_src), o_addr.eq(addr), o_j.eq(0),
                o_n.eq((nb + B - 1) >> LB),
                o_keep_last.eq(((2 << (nb - 1)[:LB]) - 1) if LB else 1),
                o_user.eq(user),
            ]

        with m.FSM(name="lro"):
            with m.State("Wait"):
                with m.If(expired):
                    m.d.sync += [d_ctx.eq(oldest), ret.eq(R_WAIT)]
                    m.next = "Deliver"
                with m.Elif(desc.r_rdy):
                    m.d.comb += desc.r_en.eq(1)
                    m.d.sync += cur.eq(desc.r_data)
                    m.next = "Parse 1"
            with m.State("Parse 1"):
                m.d.sync += [
                    p1_ntags.eq(ntags), p1_et.eq(et), p1_ip.eq(ipv), p1_tcp.eq(tcp_sel),
                    p1_ports.eq(ports_any), p1_l4any.eq(l4any),
                    p1_eth_sum.eq(_fold(Mux(ntags == 0, eth_sums[0],
                                            Mux(ntags == 1, eth_sums[1], eth_sums[2])))),
                    p1_total.eq(_fold(cur.total)),
                    p1_eth.eq(Cat(*(Mux(k < l3c, _byte(h, k), 0) for k in range(22)))),
                    idx_now.eq(cur.idx),
                ]
                m.next = "Parse 2"
            with m.State("Parse 2"):
                is4 = ~p1_is6
                m.d.sync += [
                    p2["ip_sum"].eq(Mux(is4, ip_fields["v4_sum"], ip_fields["v6_sum"])),
                    p2["addr_sum"].eq(Mux(is4, ip_fields["v4_addr"], ip_fields["v6_addr"])),
                    p2["tcp_sum"].eq(tcp_sum),
                    p2["ihl"].eq(p1_ip[0:4]), p2["ver"].eq(p1_ip[4:8]),
                    p2["proto"].eq(Mux(is4, _byte(p1_ip, 9), _byte(p1_ip, 6))),
                    p2["frag"].eq(be_bytes(p1_ip, 6, 2)),
                    p2["ip_len"].eq(Mux(is4, be_bytes(p1_ip, 2, 2), be_bytes(p1_ip, 4, 2))),
                    p2["ip_csum"].eq(be_bytes(p1_ip, 10, 2)),
                    p2["ip_id"].eq(be_bytes(p1_ip, 4, 2)),
                    p2["ip_word"].eq(Mux(is4, Cat(_byte(p1_ip, 1), _byte(p1_ip, 8),
                                                  p1_ip[8 * 6 + 6]),
                                         Cat(p1_ip[12:16], p1_ip[0:4], _byte(p1_ip, 7),
                                             Const(0, 1)))),
                    p2["doff"].eq(doff),
                    p2["tcp_csum"].eq(be_bytes(p1_tcp, 16, 2)),
                    p2["seq"].eq(be_bytes(p1_tcp, 4, 4)),
                    p2["ack"].eq(be_bytes(p1_tcp, 8, 4)),
                    p2["flag_word"].eq(be_bytes(p1_tcp, 12, 4)),
                    p2["opts"].eq(Cat(*opt_bytes)),
                    p2["key"].eq(Cat(p1_eth, p1_ntags, ip_key, p1_ports)),
                    p2_l3.eq(14 + 4 * p1_ntags), p2_ntags.eq(p1_ntags), p2_is6.eq(p1_is6),
                    p2_et_ip.eq((p1_et == 0x0800) | p1_is6),
                    p2_eth_sum.eq(p1_eth_sum), p2_total.eq(p1_total), p2_l4any.eq(p1_l4any),
                ]
                m.next = "Parse 3"
            with m.State("Parse 3"):
                is6 = p2_is6
                l3 = p2_l3
                ip_len_fixed = Mux(is6, 40, 20)
                l4 = l3 + ip_len_fixed
                base4 = (~is6 & p2_et_ip & (size >= l3 + 20) & (p2["ver"] == 4)
                         & (p2["proto"] == 6))
                base6 = is6 & (size >= l3 + 40) & (p2["ver"] == 6) & (p2["proto"] == 6)
                ip_sum = _fold(p2["ip_sum"])
                elig4 = (base4 & (p2["ihl"] == 5) & ((p2["frag"] & 0x3FFF) == 0)
                         & (ip_sum == 0xFFFF))
                key4 = (base4 & (p2["ihl"] >= 5) & ((p2["frag"] & 0x1FFF) == 0)
                        & (size >= p2_l4any + 4))
                key6 = base6 & (size >= l4 + 4)
                never4 = (p2["ip_len"] != size - l3) | p2["frag"][15]
                never6 = p2["ip_len"] != size - l4  # IPv6 payload length sits at bytes 4-5
                never = Mux(is6, never6, never4)
                tcp_len = size - l4
                addr_sum = _fold(p2["addr_sum"])
                tcp_part = _fold(p2_total + _neg(p2_eth_sum) + _neg(ip_sum))
                csum_ok = _fold(tcp_part + addr_sum + 6 + tcp_len[:16]) == 0xFFFF
                hdr_len = Cat(Const(0, 2), p2["doff"])
                size_ok = ((size >= l4 + 20) & (p2["doff"] >= 5)
                           & (size >= l4 + hdr_len))
                seg = (elig4 | base6) & (never | csum_ok) & size_ok
                tcp_hdr_sum = _fold(p2["tcp_sum"])
                m.d.sync += [
                    f["seg"].eq(seg),
                    f["key_valid"].eq(key4 | key6),
                    f["never_hold"].eq(never),
                    f["v6"].eq(is6), f["l3"].eq(l3), f["l4"].eq(l4),
                    f["pay_off"].eq(l4 + hdr_len),
                    f["pay_len"].eq(size - l4 - hdr_len),
                    f["flags"].eq(p2["flag_word"][16:24]),
                    f["df"].eq(p2["frag"][14]),
                    f["addr_sum"].eq(addr_sum),
                    f["ip_base"].eq(_fold(ip_sum + _neg(p2["ip_len"]) + _neg(p2["ip_csum"]))),
                    f["tcp_base"].eq(_fold(tcp_hdr_sum + _neg(p2["tcp_csum"]))),
                    f["pay_sum"].eq(_fold(tcp_part + _neg(tcp_hdr_sum))),
                    f["seq"].eq(p2["seq"]), f["ack"].eq(p2["ack"]),
                    f["flag_word"].eq(p2["flag_word"]), f["opts"].eq(p2["opts"]),
                    f["ip_word"].eq(p2["ip_word"]), f["ip_id"].eq(p2["ip_id"]),
                    f["key"].eq(p2["key"]),
                ]
                m.next = "Lookup"
            with m.State("Lookup"):
                for i, c in enumerate(ctx):
                    id_off = Signal(16, name=f"id_off{i}")
                    m.d.comb += id_off.eq(f["ip_id"] - c.ip_id)
                    fixed = c.fixed_id | ((c.count == 1) & (id_off == 0) & f["df"])
                    id_ok = f["v6"] | Mux(fixed, id_off == 0, id_off == c.count)
                    rules = Cat(
                        ~f["flags"][7],
                        ((f["flag_word"] ^ c.flag_word) & _FLAG_MASK) == 0,
                        f["ack"] == c.ack,
                        f["opts"] == c.opts,
                        f["ip_word"] == c.ip_word,
                        id_ok,
                        (f["pay_len"] != 0) & (f["pay_len"] <= c.mss),
                        f["seq"] == c.next_seq,
                        ~f["never_hold"],
                        c.held_len + f["pay_len"] <= max_held,
                    )
                    m.d.sync += [hit[i].eq(c.valid & f["key_valid"] & (f["key"] == c.key)),
                                 ok[i].eq(rules.all())]
                m.next = "Decide"
            with m.State("Decide"):
                hit_idx = Signal(CP)
                for i in range(N):
                    with m.If(hit[i]):
                        m.d.comb += hit_idx.eq(i)
                merge_ok = f["seg"] & hit.any() & (ok & hit).any()
                holdable = (f["seg"] & ~f["never_hold"] & (f["pay_len"] != 0)
                            & ((f["flags"] & _END) == 0))
                m.d.sync += [sel.eq(hit_idx), post.eq(0)]
                with m.If(merge_ok):
                    m.d.sync += [
                        act.eq(A_MERGE),
                        post.eq((f["pay_len"] < pick("mss", hit_idx))
                                | ((f["flags"] & _END) != 0)),
                    ]
                    m.next = "Act"
                with m.Else():
                    m.d.sync += act.eq(Mux(holdable, A_HOLD, A_SINGLE))
                    with m.If(hit.any()):
                        m.d.sync += [d_ctx.eq(hit_idx), ret.eq(R_ACT)]
                        m.next = "Deliver"
                    with m.Elif(holdable & ~any_free):
                        m.d.sync += [sel.eq(oldest), d_ctx.eq(oldest), ret.eq(R_ACT)]
                        m.next = "Deliver"
                    with m.Else():
                        m.d.sync += sel.eq(free_idx)
                        m.next = "Act"
            with m.State("Act"):
                user1 = Cat(Const(1, 16), Const(0, 16), idx_now)
                with m.Switch(act):
                    with m.Case(A_SINGLE):
                        start_out(0, cur.start, size, user1)
                        m.next = "Out"
                    with m.Case(A_HOLD):
                        for i, c in enumerate(ctx):
                            with m.If(sel == i):
                                m.d.sync += [
                                    c.valid.eq(1), c.key.eq(f["key"]),
                                    c.flag_word.eq(f["flag_word"]), c.ack.eq(f["ack"]),
                                    c.opts.eq(f["opts"]), c.ip_word.eq(f["ip_word"]),
                                    c.ip_id.eq(f["ip_id"]), c.fixed_id.eq(0), c.count.eq(1),
                                    c.mss.eq(f["pay_len"]),
                                    c.next_seq.eq(f["seq"] + f["pay_len"]),
                                    c.held_len.eq(size), c.end_flags.eq(0),
                                    c.flags.eq(f["flags"]), c.v6.eq(f["v6"]),
                                    c.l3.eq(f["l3"]), c.l4.eq(f["l4"]),
                                    c.addr_sum.eq(f["addr_sum"]), c.ip_base.eq(f["ip_base"]),
                                    c.tcp_base.eq(f["tcp_base"]), c.pay_sum.eq(f["pay_sum"]),
                                    c.t_first.eq(now),
                                ]
                                for j in range(N):
                                    if j != i:
                                        m.d.sync += [older[i][j].eq(0), older[j][i].eq(1)]
                        m.d.sync += [
                            c_busy.eq(1), c_src.eq(cur.start), c_j.eq(0),
                            c_n.eq((size + B - 1) >> LB), c_r.eq(0), c_base.eq(0),
                            c_lo.eq(0), c_hi.eq(size), c_ctx.eq(sel),
                        ]
                        m.next = "Copy"
                    with m.Case(A_MERGE):
                        held = Signal(17)
                        m.d.comb += held.eq(pick("held_len", sel))
                        s_off = f["pay_off"]
                        diff = Signal(17)
                        m.d.comb += diff.eq(held - s_off)
                        base = Signal(17)
                        m.d.comb += base.eq((s_off >> LB) + (diff >> LB))
                        hi = Signal(17)
                        m.d.comb += hi.eq(held + f["pay_len"])
                        m.d.sync += [
                            c_busy.eq(1), c_src.eq(cur.start + (s_off >> LB)), c_j.eq(0),
                            c_n.eq(((hi - 1) >> LB) - base + 1),
                            c_r.eq(diff[:LB] if LB else 0), c_base.eq(base),
                            c_lo.eq(held), c_hi.eq(hi), c_ctx.eq(sel),
                        ]
                        seg_sum = f["pay_sum"]
                        swapped = Mux(held[0], Cat(seg_sum[8:16], seg_sum[0:8]), seg_sum)
                        for i, c in enumerate(ctx):
                            with m.If(sel == i):
                                m.d.sync += [
                                    c.count.eq(c.count + 1),
                                    c.next_seq.eq(c.next_seq + f["pay_len"]),
                                    c.held_len.eq(hi),
                                    c.end_flags.eq(c.end_flags | (f["flags"] & 0x09)),
                                    c.pay_sum.eq(_fold(c.pay_sum + swapped)),
                                ]
                                with m.If((c.count == 1) & ~f["v6"] & (f["ip_id"] == c.ip_id)):
                                    m.d.sync += c.fixed_id.eq(1)
                        m.d.sync += cnt["MERGED"].eq(cnt["MERGED"] + 1)
                        m.next = "Copy"
            with m.State("Copy"):
                with m.If(c_j == c_n):
                    m.d.sync += c_busy.eq(0)
                with m.If(~c_busy & ~c_v1):
                    with m.If((act == A_MERGE) & post):
                        m.d.sync += [d_ctx.eq(sel), ret.eq(R_RELEASE)]
                        m.next = "Deliver"
                    with m.Else():
                        m.next = "Release"
            with m.State("Out"):
                with m.If(o_j == o_n):
                    m.d.sync += o_busy.eq(0)
                    m.next = "Release"
            with m.State("Release"):
                m.d.sync += rd_ptr.eq(cur.start + ((size + B - 1) >> LB))
                with m.If(cur.eop):
                    m.next = "Flush"
                with m.Else():
                    m.next = "Wait"
            with m.State("Flush"):
                with m.If(valid.any()):
                    m.d.sync += [d_ctx.eq(oldest), ret.eq(R_FLUSH)]
                    m.next = "Deliver"
                with m.Else():
                    m.next = "Wait"

            # Delivery of context ``d_ctx``: patch the header fields, then read it out.
            with m.State("Deliver"):
                for name, sig in dsel.items():
                    m.d.sync += sig.eq(pick(name, d_ctx))
                for i, c in enumerate(ctx):
                    with m.If(d_ctx == i):
                        m.d.sync += c.valid.eq(0)
                m.next = "Deliver Sums"
            with m.State("Deliver Sums"):
                tcp_len = (dsel["held_len"] - dsel["l4"])[:16]
                flags_add = dsel["end_flags"] & ~dsel["flags"]
                m.d.sync += [
                    d_ip_len.eq(Mux(dsel["v6"], tcp_len, dsel["held_len"] - dsel["l3"])),
                    d_tcp_len.eq(tcp_len),
                    d_ip_csum.eq(~_fold(dsel["ip_base"] + (dsel["held_len"] - dsel["l3"])[:16])),
                    d_tcp_csum.eq(~_fold(dsel["addr_sum"] + 6 + tcp_len + dsel["tcp_base"]
                                         + flags_add + dsel["pay_sum"])),
                    d_step.eq(0),
                ]
                with m.If(dsel["count"] == 1):
                    m.next = "Read Out"
                with m.Else():
                    m.next = "Patch"
            with m.State("Patch"):
                m.d.comb += [p_en.eq(1), p_ctx.eq(d_ctx)]
                with m.Switch(d_step):
                    with m.Case(0):
                        m.d.comb += [p_pos.eq(dsel["l3"] + Mux(dsel["v6"], 4, 2)),
                                     p_val.eq(d_ip_len), p_two.eq(1)]
                    with m.Case(1):
                        m.d.comb += [p_pos.eq(dsel["l3"] + 10), p_val.eq(d_ip_csum),
                                     p_two.eq(1), p_en.eq(~dsel["v6"])]
                    with m.Case(2):
                        m.d.comb += [p_pos.eq(dsel["l4"] + 13),
                                     p_val.eq(dsel["flags"] | dsel["end_flags"]), p_two.eq(0)]
                    with m.Case(3):
                        m.d.comb += [p_pos.eq(dsel["l4"] + 16), p_val.eq(d_tcp_csum),
                                     p_two.eq(1)]
                m.d.sync += d_step.eq(d_step + 1)
                with m.If(d_step == 3):
                    m.next = "Read Out"
            with m.State("Read Out"):
                segs = dsel["count"]
                gso = Mux(segs == 1, 0, dsel["mss"])
                start_out(1, d_ctx << RP if N > 1 else 0, dsel["held_len"],
                          Cat(segs, gso, idx_now))
                m.next = "Reading"
            with m.State("Reading"):
                with m.If(o_j == o_n):
                    m.d.sync += o_busy.eq(0)
                    with m.Switch(ret):
                        with m.Case(R_ACT):
                            m.next = "Act"
                        with m.Case(R_RELEASE):
                            m.next = "Release"
                        with m.Case(R_FLUSH):
                            m.next = "Flush"
                        with m.Case(R_WAIT):
                            m.next = "Wait"

        # ------------------------------------------------------------------ registers
        names = [r.name for r in REGISTERS]
        addr_sel = Signal(len(names))
        m.d.sync += addr_sel.eq(Cat(*(self.bus.addr == r.offset for r in REGISTERS)))
        values = {**cnt, "TIMEOUT": timeout}
        m.d.comb += self.bus.r_data.eq(
            Cat(*(Cat(*(addr_sel[n] & values[name][bit] for n, name in enumerate(names))).any()
                  for bit in range(32))))
        with m.Switch(self.bus.addr):
            for r in REGISTERS:
                with m.Case(r.offset):
                    if r.access == "ro":
                        m.d.comb += self.bus.err.eq(self.bus.w_en)
                    else:
                        with m.If(self.bus.w_en):
                            m.d.sync += timeout.eq(self.bus.w_data)
            with m.Default():
                m.d.comb += self.bus.err.eq(self.bus.w_en | self.bus.r_en)
        return m
