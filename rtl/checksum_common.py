# Ref: RFC 1071 (computing the Internet checksum), RFC 791 §3.1 (IPv4 header),
#      RFC 9293 §3.1 / RFC 768 (TCP and UDP pseudo-headers), RFC 8200 §3, §8.1 (IPv6)
"""Shared front end of the checksum offload engines: frame parsing and ones'-complement sums.

:class:`ChecksumFront` watches a packet stream and, one per frame and in frame order, reports a
:data:`SUMMARY_LAYOUT` record: the parsed Ethernet/VLAN/IP/TCP/UDP framing, the checks that
decide whether a checksum applies, and three folded ones'-complement sums:

* ``sum_a``: bytes from ``l3`` (or from ``csum_start`` of a transmit ``PARTIAL`` command) to
  the end of the frame, paired at even frame offsets;
* ``ip_sum``: the IPv4 header;
* ``l4_sum``: the TCP/UDP bytes up to the end of the IP datagram plus the pseudo-header.

The rules are those of :mod:`nicsim.hw.ref.checksum`; :mod:`.checksum_rx` and
:mod:`.checksum_tx` turn a summary into verdicts or into checksum fields to insert.

Every field that decides a byte range lies in the first 32 bytes of a frame, so a lookahead
window of ``D + 1`` beats (``D = ceil(32 / bytes_per_beat) - 1``) lets the first beat of a frame
leave with its parsed context; that context then travels down the pipeline with the frame's
beats and turns into per-byte-lane masks in front of pipelined adder trees.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .stream import be_bytes, beat_signature, check_width, keep_is_contiguous

__all__ = [
    "POS_BITS",
    "LEN_BITS",
    "HEADER_BYTES",
    "TX_USER_WIDTH",
    "TxCommandLayout",
    "SUMMARY_LAYOUT",
    "ChecksumFront",
    "fold16",
    "swap16",
    "tree_sum",
    "lane_ge",
    "counter_registers",
]

POS_BITS = 18  # byte positions that decide a range: l3 + 65535 + 40, csum_start + offset + 2
LEN_BITS = POS_BITS + 1  # frame length, saturating above every position
HEADER_BYTES = 32  # every field that decides a byte range lies in bytes 0..31
TX_USER_WIDTH = 34  # the transmit command on the first beat of a frame

_TPID_CTAG = 0x8100  # IEEE 802.1Q
_TPID_STAG = 0x88A8  # IEEE 802.1ad
_ETHERTYPE_IPV4 = 0x0800
_ETHERTYPE_IPV6 = 0x86DD
_IPPROTO_TCP = 6
_IPPROTO_UDP = 17
_MODE_PARTIAL = 1

_GROUP_WORDS = 8  # 16-bit words summed per adder-tree node in one pipeline stage


class TxCommandLayout(data.Struct):
    """Transmit checksum command, sampled on the first beat of a frame (``user`` bits).

    Members
    -------
    csum_start : unsigned(16)
        ``PARTIAL``: offset where summing starts.
    csum_offset : unsigned(16)
        ``PARTIAL``: offset of the checksum field from ``csum_start``.
    mode : unsigned(2)
        0 off, 1 partial, 2 auto (3 is rejected as a bad command).
    """

    csum_start: unsigned(16)
    csum_offset: unsigned(16)
    mode: unsigned(2)


SUMMARY_LAYOUT = data.StructLayout({
    "malformed": unsigned(1),  # a keep hole: non-last beat not full, last beat not 0..01..1
    "length": unsigned(LEN_BITS),  # bytes (saturating)
    "beats": unsigned(LEN_BITS),  # beats, the last one counted even when its keep is 0
    "sum_a": unsigned(16),  # folded sum of [a_start, end), paired at even frame offsets
    "a_odd": unsigned(1),  # a_start is odd (transmit PARTIAL): swap sum_a's bytes to use it
    "ip_present": unsigned(1),  # ethertype IPv4 and the frame holds the whole L2 header
    "ip_header_ok": unsigned(1),  # IPv4 header complete, version 4, IHL >= 5, total >= IHL*4
    "ip_sum": unsigned(16),  # folded sum of the IPv4 header
    "ip_field": unsigned(16),  # IPv4 header checksum field as received
    "seg_ok": unsigned(1),  # a TCP/UDP segment to check (IPv4 header checksum not required)
    "is_ipv6": unsigned(1),
    "is_udp": unsigned(1),
    "l4_sum": unsigned(16),  # folded sum of the segment and its pseudo-header
    "l4_field": unsigned(16),  # TCP/UDP checksum field as received
    "l3": unsigned(5),  # offset of the IP header: 14, 18 or 22
    "l4_start": unsigned(7),  # offset of the TCP/UDP header (when seg_ok)
    "user": unsigned(TX_USER_WIDTH),  # command of the first beat (transmit front only)
})


def fold16(value):
    """Return ``value`` folded to 16 bits with end-around carry (a combinational expression).

    The result is congruent to ``value`` modulo 0xffff and is 0 only when ``value`` is 0.
    """
    v = value
    while len(v) > 17:
        v = v[:16] + v[16:]
    if len(v) == 17:
        v = v[:16] + v[16]  # at most 0x10000, only when v was 0x1ffff
        v = (v[:16] + v[16])[:16]
    return v


def swap16(value):
    """Return the 16-bit ``value`` with its two bytes exchanged."""
    return Cat(value[8:16], value[0:8])


def tree_sum(values):
    """Return the sum of ``values`` as a balanced tree of adders (combinational)."""
    values = list(values)
    if not values:
        return Const(0, 1)
    while len(values) > 1:
        values = [values[i] + values[i + 1] if i + 1 < len(values) else values[i]
                  for i in range(0, len(values), 2)]
    return values[0]


def lane_ge(beat, bound, lanes):
    """Return a ``lanes``-bit mask: byte lane ``j`` of beat ``beat`` is at or after ``bound``.

    Byte position ``beat * lanes + j >= bound`` is ``beat > bound // lanes``, or
    ``beat == bound // lanes`` and ``j >= bound % lanes`` (a thermometer of a per-frame value).
    """
    shift = lanes.bit_length() - 1
    bound_beat, bound_lane = bound[shift:], bound[:shift]
    thermometer = Cat(*(bound_lane <= j for j in range(lanes)))
    return Mux(beat > bound_beat, Const((1 << lanes) - 1, lanes),
               Mux(beat == bound_beat, thermometer, 0))


def counter_registers(m, bus, registers, counters):
    """Decode read-only 32-bit counters on a register bus; anything else is rejected.

    Parameters
    ----------
    m : Module
    bus : RegisterBusSignature interface (block side)
    registers : dict
        Name to byte address.
    counters : dict
        Name to ``Signal(32)``.
    """
    with m.Switch(bus.addr):
        for name, addr in registers.items():
            with m.Case(addr):
                m.d.comb += bus.err.eq(bus.w_en)
                with m.If(bus.r_en):
                    m.d.sync += bus.r_data.eq(counters[name])
        with m.Default():
            m.d.comb += bus.err.eq(bus.w_en | bus.r_en)


def _beat_layout(width, transmit):
    """A beat in the lookahead window (``data`` keep-masked: bytes after the frame are zero)."""
    shift = (width // 8).bit_length() - 1
    return data.StructLayout({
        "data": unsigned(width),
        "nbytes": unsigned(shift + 1),
        "first": unsigned(1),
        "last": unsigned(1),
        "bad": unsigned(1),  # this beat makes the frame malformed
        "user": unsigned(TX_USER_WIDTH if transmit else 0),
    })


def _pipe_layout(width):
    """A beat in the summing pipeline, with its index ``k`` in the frame (saturating)."""
    shift = (width // 8).bit_length() - 1
    return data.StructLayout({
        "valid": unsigned(1),
        "data": unsigned(width),
        "nbytes": unsigned(shift + 1),
        "first": unsigned(1),
        "last": unsigned(1),
        "bad": unsigned(1),
        "k": unsigned(POS_BITS - shift),
    })


def _context_layout(transmit):
    """Per-frame fields parsed from the first 32 bytes."""
    return data.StructLayout({
        "ntags": unsigned(2),
        "is4": unsigned(1),
        "is6": unsigned(1),
        "version": unsigned(4),
        "ihl": unsigned(4),
        "total": unsigned(16),
        "fragment": unsigned(1),
        "proto": unsigned(8),
        "payload": unsigned(16),
        "a_start": unsigned(POS_BITS),
        "a_odd": unsigned(1),
        "user": unsigned(TX_USER_WIDTH if transmit else 0),
    })


def _ranges_layout(transmit):
    """Byte ranges and end-of-frame checks derived from the context.

    The sums cover ``A = [a0, end)``, ``C = [l3, c_end)`` and ``E = [e0, e1) | [e2, e3)``
    (pseudo-header addresses, then the segment up to the end of the IP datagram).
    """
    return data.StructLayout({
        "l3": unsigned(5),
        "c_end": unsigned(7),
        "e0": unsigned(POS_BITS),
        "e1": unsigned(POS_BITS),
        "e2": unsigned(POS_BITS),
        "e3": unsigned(POS_BITS),
        "a0": unsigned(POS_BITS),
        "cap_len": unsigned(POS_BITS),  # UDP length field
        "cap_l4": unsigned(POS_BITS),  # TCP/UDP checksum field
        "cap_ip": unsigned(POS_BITS),  # IPv4 header checksum field
        "l4_len": unsigned(16),
        "proto": unsigned(8),
        "is4": unsigned(1),
        "is6": unsigned(1),
        "is_udp": unsigned(1),
        "v4_static": unsigned(1),
        "seg_static": unsigned(1),
        "a_odd": unsigned(1),
        "user": unsigned(TX_USER_WIDTH if transmit else 0),
    })


_VERDICT_FIELDS = ("l3", "c_end", "e2", "e3", "l4_len", "proto", "is4", "is6", "is_udp",
                   "v4_static", "seg_static", "a_odd", "user")


def _verdict_layout(transmit):
    """The part of :func:`_ranges_layout` still needed once the byte masks are made."""
    ranges = _ranges_layout(transmit)
    fields = {name: ranges[name].shape for name in _VERDICT_FIELDS}
    fields["e2"] = unsigned(7)  # the TCP/UDP header starts within the first 82 bytes
    return data.StructLayout(fields)


class ChecksumFront(wiring.Component):
    """Parse every frame of a packet stream and sum it the way the checksum engines need.

    The front takes one beat every cycle (``i.ready`` stays high: a full window always holds the
    lookahead its oldest beat waits for, so it moves on) and never waits on its output. One
    ``summary`` record leaves per frame, in frame order, ``8 + D`` cycles after the frame's last
    beat went in (``D`` = 3, 1, 0, 0 at 64, 128, 256, 512 bits).

    Parameters
    ----------
    width : int
        Data width in bits (64, 128, 256 or 512).
    transmit : bool
        Expect a :class:`TxCommandLayout` in ``user`` on the first beat of a frame: ``sum_a``
        then starts at ``csum_start`` for ``PARTIAL`` frames, and the IPv4 header checksum field
        is captured.

    Members
    -------
    i : In(beat stream)
        Frames to watch.
    summary : Out(stream of SUMMARY_LAYOUT, always ready)
        One record per frame.
    """

    def __init__(self, width, *, transmit=False):
        self.width = check_width(width)
        self.lanes = width // 8
        self.transmit = transmit
        self.lookahead = -(-HEADER_BYTES // self.lanes) - 1
        user_width = TX_USER_WIDTH if transmit else 0
        super().__init__({
            "i": In(beat_signature(width, user_width)),
            "summary": Out(stream.Signature(SUMMARY_LAYOUT, always_ready=True)),
        })

    def elaborate(self, platform):
        m = Module()
        incoming = self._accept(m)
        entries, same_frame, pop = self._lookahead(m, incoming)
        parsed = self._parse(m, entries, same_frame)

        # Stage 1: the beat leaving the window; the context of its frame.
        s1 = Signal(_pipe_layout(self.width))
        ctx = Signal(_context_layout(self.transmit))
        k_prev = Signal.like(s1.k)
        k_max = (1 << len(s1.k)) - 1
        k_now = Mux(entries[0].first, 0, Mux(k_prev == k_max, k_prev, k_prev + 1))
        m.d.sync += s1.valid.eq(pop)
        with m.If(pop):
            m.d.sync += [
                s1.data.eq(entries[0].data),
                s1.nbytes.eq(entries[0].nbytes),
                s1.first.eq(entries[0].first),
                s1.last.eq(entries[0].last),
                s1.bad.eq(entries[0].bad),
                s1.k.eq(k_now),
                k_prev.eq(k_now),
            ]
            with m.If(entries[0].first):
                m.d.sync += ctx.eq(parsed)

        # Stage 2: the byte ranges of the frame travel on with each of its beats.
        s2 = Signal.like(s1)
        info2 = Signal(_ranges_layout(self.transmit))
        m.d.sync += [s2.eq(s1), info2.eq(self._ranges(m, ctx))]
        self._sum(m, s2, info2)
        return m

    def _accept(self, m):
        """Mask the bytes outside ``keep``, count the bytes and flag keep holes."""
        lanes = self.lanes
        mid_frame = Signal()
        incoming = Signal(_beat_layout(self.width, self.transmit))
        keep = self.i.payload.keep
        m.d.comb += [
            incoming.data.eq(Cat(*(Mux(keep[j], self.i.payload.data.word_select(j, 8), 0)
                                   for j in range(lanes)))),
            incoming.nbytes.eq(tree_sum(keep[j] for j in range(lanes))),
            incoming.first.eq(~mid_frame),
            incoming.last.eq(self.i.payload.last),
            incoming.bad.eq(Mux(self.i.payload.last, ~keep_is_contiguous(keep, lanes),
                                keep != (1 << lanes) - 1)),
        ]
        if self.transmit:
            m.d.comb += incoming.user.eq(self.i.payload.user)
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += mid_frame.eq(~self.i.payload.last)
        return incoming

    def _lookahead(self, m, incoming):
        """Hold up to ``D + 1`` beats; the oldest leaves once its frame's lookahead is in.

        Returns the entries (oldest first), for each entry whether it belongs to the frame of
        the oldest one, and the pop strobe.
        """
        depth = self.lookahead + 1
        entries = [Signal(_beat_layout(self.width, self.transmit), name=f"window{e}")
                   for e in range(depth)]
        count = Signal(range(depth + 1))
        same_frame = [Signal(name=f"window{e}_same") for e in range(depth)]
        for e in range(depth):
            prev = (count > e) if e == 0 else (same_frame[e - 1] & ~entries[e - 1].last)
            m.d.comb += same_frame[e].eq(prev & (count > e))
        complete = Signal()
        m.d.comb += complete.eq((count == depth)
                                | Cat(*(same_frame[e] & entries[e].last
                                        for e in range(depth))).any())
        pop = Signal()
        push = Signal()
        m.d.comb += [
            pop.eq((count != 0) & (~entries[0].first | complete)),
            self.i.ready.eq((count != depth) | pop),
            push.eq(self.i.valid & self.i.ready),
        ]
        for e in range(depth):
            following = entries[e + 1] if e + 1 < depth else entries[e]
            with m.If(pop):
                m.d.sync += entries[e].eq(Mux(push & (count == e + 1), incoming, following))
            with m.Elif(push & (count == e)):
                m.d.sync += entries[e].eq(incoming)
        m.d.sync += count.eq(count + push - pop)
        return entries, same_frame, pop

    def _parse(self, m, entries, same_frame):
        """Parse the first 32 bytes of the oldest frame in the window at fixed offsets."""
        lanes = self.lanes

        def header_byte(offset):
            e, lane = divmod(offset, lanes)
            return Mux(same_frame[e], entries[e].data.word_select(lane, 8), 0)

        hdr = Signal(8 * HEADER_BYTES)
        m.d.comb += hdr.eq(Cat(*(header_byte(b) for b in range(HEADER_BYTES))))
        parsed = Signal(_context_layout(self.transmit))
        et0, et1, et2 = (be_bytes(hdr, off, 2) for off in (12, 16, 20))
        tag0 = (et0 == _TPID_CTAG) | (et0 == _TPID_STAG)
        tag1 = tag0 & ((et1 == _TPID_CTAG) | (et1 == _TPID_STAG))
        ethertype = Mux(tag0, Mux(tag1, et2, et1), et0)

        def l3_field(offset, count):
            return Mux(tag0, Mux(tag1, be_bytes(hdr, 22 + offset, count),
                                 be_bytes(hdr, 18 + offset, count)),
                       be_bytes(hdr, 14 + offset, count))

        is6 = ethertype == _ETHERTYPE_IPV6
        m.d.comb += [
            parsed.ntags.eq(Mux(tag0, Mux(tag1, 2, 1), 0)),
            parsed.is4.eq(ethertype == _ETHERTYPE_IPV4),
            parsed.is6.eq(is6),
            parsed.version.eq(l3_field(0, 1)[4:8]),
            parsed.ihl.eq(l3_field(0, 1)[0:4]),
            parsed.total.eq(l3_field(2, 2)),
            parsed.fragment.eq(l3_field(6, 2)[0:14].any()),  # MF and offset, not DF
            parsed.proto.eq(Mux(is6, l3_field(6, 1), l3_field(9, 1))),
            parsed.payload.eq(l3_field(4, 2)),
        ]
        l3 = 14 + 4 * parsed.ntags
        if self.transmit:
            command = TxCommandLayout(entries[0].user)
            partial = command.mode == _MODE_PARTIAL
            m.d.comb += [
                parsed.user.eq(entries[0].user),
                parsed.a_start.eq(Mux(partial, command.csum_start, l3)),
                parsed.a_odd.eq(partial & command.csum_start[0]),
            ]
        else:
            m.d.comb += parsed.a_start.eq(l3)
        return parsed

    def _ranges(self, m, ctx):
        """Return the byte ranges and static checks of a frame context (combinational)."""
        info = Signal(_ranges_layout(self.transmit))
        l3 = Signal(5)
        hl = Signal(7)
        is_tcp = ctx.proto == _IPPROTO_TCP
        is_udp = ctx.proto == _IPPROTO_UDP
        l4_len = Signal(16)
        v4_static = ctx.is4 & (ctx.version == 4) & (ctx.ihl >= 5) & (ctx.total >= hl)
        m.d.comb += [
            l3.eq(14 + 4 * ctx.ntags),
            hl.eq(ctx.ihl * 4),
            l4_len.eq(Mux(ctx.is6, ctx.payload, ctx.total - hl)),
            info.l3.eq(l3),
            info.c_end.eq(l3 + hl),
            info.a0.eq(ctx.a_start),
            info.a_odd.eq(ctx.a_odd),
            info.user.eq(ctx.user),
            info.l4_len.eq(l4_len),
            info.proto.eq(ctx.proto),
            info.is4.eq(ctx.is4),
            info.is6.eq(ctx.is6),
            info.is_udp.eq(is_udp),
            info.v4_static.eq(v4_static),
            info.cap_ip.eq(l3 + 10),
        ]
        min_ok = l4_len >= Mux(is_tcp, 20, 8)
        v4_seg = v4_static & ~ctx.fragment
        v6_seg = ctx.is6 & (ctx.version == 6) & (ctx.payload != 0)
        m.d.comb += info.seg_static.eq((v4_seg | v6_seg) & (is_tcp | is_udp) & min_ok)
        with m.If(ctx.is6):
            m.d.comb += [
                info.e0.eq(l3 + 8),
                info.e1.eq(l3 + 40),
                info.e2.eq(l3 + 40),
                info.e3.eq(l3 + 40 + ctx.payload),
            ]
        with m.Else():
            m.d.comb += [
                info.e0.eq(l3 + 12),
                info.e1.eq(l3 + 20),
                info.e2.eq(l3 + hl),
                info.e3.eq(l3 + ctx.total),
            ]
        m.d.comb += [
            info.cap_len.eq(info.e2 + 4),
            info.cap_l4.eq(info.e2 + Mux(is_tcp, 16, 6)),
        ]
        return info

    def _sum(self, m, s2, info2):
        """Stages 3 to 8: masks, adder trees, per-frame accumulation, folding and checks."""
        lanes = self.lanes
        shift = lanes.bit_length() - 1

        # Stage 3: byte-lane masks of the three sums; where the captured fields sit.
        s3 = Signal.like(s2)
        info3 = Signal(_verdict_layout(self.transmit))
        mask_a, mask_c, mask_e = (Signal(lanes, name=f"mask_{x}") for x in "ace")
        captures = ("cap_len", "cap_l4") + (("cap_ip",) if self.transmit else ())
        cap_hit3 = {c: Signal(name=f"{c}_hit3") for c in captures}
        cap_word3 = {c: Signal(max(shift - 1, 1), name=f"{c}_word3") for c in captures}
        m.d.sync += s3.eq(s2)
        m.d.sync += [info3[name].eq(info2[name]) for name in _VERDICT_FIELDS]

        def ge(bound):
            return lane_ge(s2.k, bound, lanes)

        m.d.sync += [
            mask_a.eq(ge(info2.a0)),
            mask_c.eq(ge(info2.l3) & ~ge(info2.c_end)),
            mask_e.eq((ge(info2.e0) & ~ge(info2.e1)) | (ge(info2.e2) & ~ge(info2.e3))),
        ]
        for c in captures:
            pos = info2[c]  # always even
            m.d.sync += [
                cap_hit3[c].eq(s2.k == pos[shift:]),
                cap_word3[c].eq(pos[1:shift]),
            ]

        # Stage 4: masked big-endian words, summed in groups; captured fields.
        s4 = Signal.like(s2)
        info4 = Signal.like(info3)
        m.d.sync += [s4.eq(s3), info4.eq(info3)]
        words = lanes // 2
        groups = -(-words // _GROUP_WORDS)
        group_sums = {x: [Signal(16 + (_GROUP_WORDS - 1).bit_length(), name=f"sum_{x}_g{g}")
                          for g in range(groups)] for x in "ace"}
        for x, mask in (("a", mask_a), ("c", mask_c), ("e", mask_e)):
            masked = [Cat(Mux(mask[2 * w + 1], s3.data.word_select(2 * w + 1, 8), 0),
                          Mux(mask[2 * w], s3.data.word_select(2 * w, 8), 0))
                      for w in range(words)]
            for g in range(groups):
                m.d.sync += group_sums[x][g].eq(
                    tree_sum(masked[g * _GROUP_WORDS:(g + 1) * _GROUP_WORDS]))
        cap_hit4 = {c: Signal(name=f"{c}_hit4") for c in captures}
        cap_val4 = {c: Signal(16, name=f"{c}_val4") for c in captures}
        for c in captures:
            m.d.sync += [
                cap_hit4[c].eq(cap_hit3[c]),
                cap_val4[c].eq(swap16(s3.data.word_select(cap_word3[c], 16))),
            ]

        # Stage 5: one sum per beat.
        s5 = Signal.like(s2)
        info5 = Signal.like(info3)
        m.d.sync += [s5.eq(s4), info5.eq(info4)]
        beat_sum = {x: Signal(16 + (words - 1).bit_length() + 1, name=f"beat_sum_{x}")
                    for x in "ace"}
        for x in "ace":
            m.d.sync += beat_sum[x].eq(tree_sum(group_sums[x]))
        cap_hit5 = {c: Signal(name=f"{c}_hit5") for c in captures}
        cap_val5 = {c: Signal(16, name=f"{c}_val5") for c in captures}
        for c in captures:
            m.d.sync += [cap_hit5[c].eq(cap_hit4[c]), cap_val5[c].eq(cap_val4[c])]

        # Stage 6: accumulate per frame (32 bits with end-around carry: any length).
        acc = {x: Signal(32, name=f"acc_{x}") for x in "ace"}
        carry = {x: Signal(name=f"carry_{x}") for x in "ace"}
        total = {x: Signal(33, name=f"total_{x}") for x in "ace"}
        for x in "ace":
            m.d.comb += total[x].eq(Mux(s5.first, 0, acc[x]) + Mux(s5.first, 0, carry[x])
                                    + beat_sum[x])
        bad_acc = Signal()
        bad_now = Mux(s5.first, 0, bad_acc) | s5.bad
        cap_acc = {c: Signal(16, name=f"{c}_acc") for c in captures}
        cap_now = {c: Mux(cap_hit5[c], cap_val5[c], Mux(s5.first, 0, cap_acc[c]))
                   for c in captures}
        with m.If(s5.valid):
            for x in "ace":
                m.d.sync += [acc[x].eq(total[x][:32]), carry[x].eq(total[x][32])]
            m.d.sync += bad_acc.eq(bad_now)
            for c in captures:
                m.d.sync += cap_acc[c].eq(cap_now[c])

        # Stage 7: the frame's totals.
        done7 = Signal()
        info7 = Signal.like(info3)
        bad7 = Signal()
        len7 = Signal(LEN_BITS)
        beats7 = Signal(LEN_BITS)
        total7 = {x: Signal(33, name=f"total7_{x}") for x in "ace"}
        cap7 = {c: Signal(16, name=f"{c}7") for c in captures}
        m.d.sync += done7.eq(s5.valid & s5.last)
        with m.If(s5.valid & s5.last):
            m.d.sync += [
                info7.eq(info5),
                bad7.eq(bad_now),
                len7.eq(Cat(Const(0, shift), s5.k) + s5.nbytes),
                beats7.eq(s5.k + 1),
            ]
            for x in "ace":
                m.d.sync += total7[x].eq(total[x])
            for c in captures:
                m.d.sync += cap7[c].eq(cap_now[c])

        # Stage 8: fold and check.
        out = self.summary.payload
        ip_present = info7.is4 & (len7 >= info7.l3)
        udp_len_ok = ~info7.is_udp | (cap7["cap_len"] == info7.l4_len)
        seg_len_ok = (len7 >= info7.e3) & Mux(info7.is6, 1, len7 >= info7.c_end)
        l4_sum = fold16(fold16(total7["e"]) + info7.proto + info7.l4_len)
        m.d.sync += self.summary.valid.eq(done7)
        with m.If(done7):
            m.d.sync += [
                out.malformed.eq(bad7),
                out.length.eq(len7),
                out.beats.eq(beats7),
                out.sum_a.eq(fold16(total7["a"])),
                out.a_odd.eq(info7.a_odd),
                out.ip_present.eq(ip_present),
                out.ip_header_ok.eq(ip_present & info7.v4_static & (len7 >= info7.c_end)),
                out.ip_sum.eq(fold16(total7["c"])),
                out.seg_ok.eq(info7.seg_static & seg_len_ok & udp_len_ok),
                out.is_ipv6.eq(info7.is6),
                out.is_udp.eq(info7.is_udp),
                out.l4_sum.eq(l4_sum),
                out.l4_field.eq(cap7["cap_l4"]),
                out.l3.eq(info7.l3),
                out.l4_start.eq(info7.e2),
                out.user.eq(info7.user),
            ]
            if self.transmit:
                m.d.sync += out.ip_field.eq(cap7["cap_ip"])
