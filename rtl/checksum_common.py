# Ref: RFC 1071 (computing the Internet checksum), RFC 791 §3.1 (IPv4 header),
#      RFC 9293 §3.1 / RFC 768 (TCP and UDP pseudo-headers), RFC 8200 §3, §8.1 (IPv6)
"""Shared front end of the checksum offload engines: frame parsing and ones'-complement sums.

:class:`ChecksumFront` watches a packet stream and, one per frame and in frame order, reports a
:func:`summary_layout` record: the checks that decide whether a checksum applies and three
folded ones'-complement sums:

* ``sum_a``: bytes from ``l3`` (or from ``csum_start`` of a transmit ``PARTIAL`` command) to
  the end of the frame, paired at even frame offsets;
* ``ip_sum``: the IPv4 header;
* ``l4_sum``: the TCP/UDP bytes up to the end of the IP datagram plus the pseudo-header.

The rules are those of :mod:`nicsim.hw.ref.checksum`; :mod:`.checksum_rx` and
:mod:`.checksum_tx` turn a summary into verdicts or into checksum fields to insert.

Every field that decides whether byte ``p`` belongs to a sum lies before ``p`` in the frame
(the VLAN tags before ``l3``, the IHL at ``l3`` before the end of the header, the lengths before
the payload they measure...). The header is therefore parsed on the fly: each beat is parsed as
if the frame ended with it (the header bytes of earlier beats are held, later ones are not
looked at), and that is enough to tell which of its own bytes each sum takes. Beats never wait:
the parse runs in a pipeline beside the beat, then turns into per-byte-lane masks in front of
pipelined adder trees, a per-frame accumulator and the folds. Latency is cheap and the clock is
not: a stage holds one carry chain with at most a LUT in front of it, or a couple of LUT
levels (the candidates for each VLAN depth are computed a stage before the tags pick one, the
masks a stage before the adders, one adder level a stage).
"""

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from .stream import be_bytes, beat_signature, check_width

__all__ = [
    "POS_BITS",
    "HEADER_BYTES",
    "TX_USER_WIDTH",
    "TxCommandLayout",
    "summary_layout",
    "ChecksumFront",
    "CreditedFIFO",
    "swap16",
    "counter_registers",
]

POS_BITS = 17  # byte positions that decide a range: l3 + 40 + 65535 (IPv6), csum_start
HEADER_BYTES = 32  # every field that decides a byte range lies in bytes 12..31
TX_USER_WIDTH = 34  # the transmit command on the first beat of a frame

_TPID_CTAG = 0x8100  # IEEE 802.1Q
_TPID_STAG = 0x88A8  # IEEE 802.1ad
_ETHERTYPE_IPV4 = 0x0800
_ETHERTYPE_IPV6 = 0x86DD
_IPPROTO_TCP = 6
_IPPROTO_UDP = 17
_MODE_PARTIAL = 1
_L3_OFFSETS = (14, 18, 22)  # no, one or two VLAN tags
_MAX_SMALL = 22 + 60 + 16  # every bound but the end of the datagram and csum_start
_SMALL_BOUNDS = ("l3", "l3_m1", "c_end", "c_end_m1", "e0", "e1", "e2", "udp_len_pos",
                 "udp_check_pos")
_TX_BOUNDS = ("ip_pos", "l4_pos")
_BEAT_BIAS = 4  # see ChecksumFront._parse


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


def summary_layout(width):
    """Return the layout of the per-frame summary of a ``width``-bit :class:`ChecksumFront`.

    Members
    -------
    malformed : unsigned(1)
        A keep hole: a non-last beat not full, or a last beat whose keep is not ``0..01..1``.
    last_beat : unsigned
        Index of the last beat in the frame (saturating at ``2**POS_BITS`` bytes).
    last_bytes : unsigned
        Bytes kept in the last beat (the number of ``keep`` bits set).
    sum_a : unsigned(16)
        Folded sum of ``[a_start, end)``, paired at even frame offsets.
    ip_present : unsigned(1)
        EtherType IPv4 and the frame holds the whole L2 header.
    ip_header_ok : unsigned(1)
        IPv4 header complete, version 4, IHL >= 5, total length >= IHL * 4.
    ip_sum : unsigned(16)
        Folded sum of the IPv4 header (transmit: its checksum field taken as zero).
    seg_ok : unsigned(1)
        A TCP/UDP segment to check (the IPv4 header checksum not required).
    is_ipv6, is_udp : unsigned(1)
    l4_sum : unsigned(16)
        Folded sum of the segment and its pseudo-header (transmit: checksum field as zero).
    udp_check_zero : unsigned(1)
        The UDP checksum field is zero (receive).
    ip_pos, l4_pos : unsigned(7)
        Offsets of the IPv4 header checksum and of the TCP/UDP checksum fields (transmit).
    """
    shift = exact_log2(width // 8)
    return data.StructLayout({
        "malformed": unsigned(1),
        "last_beat": unsigned(POS_BITS - shift + 1),
        "last_bytes": unsigned(shift + 1),
        "sum_a": unsigned(16),
        "ip_present": unsigned(1),
        "ip_header_ok": unsigned(1),
        "ip_sum": unsigned(16),
        "seg_ok": unsigned(1),
        "is_ipv6": unsigned(1),
        "is_udp": unsigned(1),
        "l4_sum": unsigned(16),
        "udp_check_zero": unsigned(1),
        "ip_pos": unsigned(7),
        "l4_pos": unsigned(7),
    })


def swap16(value):
    """Return the 16-bit ``value`` with its two bytes exchanged."""
    return Cat(value[8:16], value[0:8])


def counter_registers(m, bus, registers, counters):
    """Decode read-only 32-bit counters on a register bus; anything else is rejected.

    Parameters
    ----------
    m : Module
    bus : RegisterBusSignature interface (block side)
    registers : dict
        Name to byte address: 0, 4, 8 ... in order.
    counters : dict
        Name to ``Signal(32)``.
    """
    names = list(registers)
    assert [registers[name] for name in names] == [4 * n for n in range(len(names))]
    with m.Switch(bus.addr):
        for addr in registers.values():
            with m.Case(addr):
                m.d.comb += bus.err.eq(bus.w_en)
        with m.Default():
            m.d.comb += bus.err.eq(bus.w_en | bus.r_en)
    # The address is registered and the counter picked in the next cycle, when ``r_data`` is
    # due: the bridge's own address selection and the counter selection share no cycle.
    selected = Signal(len(names))
    m.d.sync += selected.eq(Cat(*(bus.addr == registers[name] for name in names)))
    m.d.comb += bus.r_data.eq(Cat(*(Cat(*(selected[n] & counters[name][bit]
                                          for n, name in enumerate(names))).any()
                                    for bit in range(32))))


class CreditedFIFO(wiring.Component):
    """Queue entries in order for a writer that counts the room left (credits).

    Like :class:`amaranth.lib.fifo.SyncFIFOBuffered`, but a write is never refused: the write
    enable drives the memory without a test of the level in between, which keeps this queue off
    the critical path of the wide engines. Writing to a full queue loses data.

    Parameters
    ----------
    width : int
        Bits of an entry.
    depth : int
        Entries in memory (a power of two); one more waits in the output register.
    thermometer : bool
        Keep the level as a thermometer code (``depth`` flip-flops, bit ``i`` set while more
        than ``i`` entries are stored) instead of a binary counter: each bit follows the read
        decision through one level of LUTs, with no carry chain (a few more flip-flops).

    Members
    -------
    w_data, w_en : In
        Entry to write, and its strobe.
    r_data, r_rdy : Out
        The oldest entry, valid while ``r_rdy``.
    r_en : In
        Take ``r_data`` (when ``r_rdy``).
    """

    def __init__(self, width, depth, *, thermometer=False):
        self.width = width
        self.depth = depth
        self.thermometer = thermometer
        exact_log2(depth)
        super().__init__({
            "w_data": In(width), "w_en": In(1),
            "r_data": Out(width), "r_rdy": Out(1), "r_en": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        bits = exact_log2(self.depth)
        m.submodules.storage = storage = Memory(shape=self.width, depth=self.depth, init=[])
        w_port = storage.write_port()
        r_port = storage.read_port()
        produce = Signal(bits)
        consume = Signal(bits)
        nonempty = Signal()  # entries in memory, kept as a flip-flop for the read enable
        fetch = nonempty & (~self.r_rdy | self.r_en)
        m.d.comb += [
            w_port.addr.eq(produce),
            w_port.data.eq(self.w_data),
            w_port.en.eq(self.w_en),
            r_port.addr.eq(consume),
            r_port.en.eq(fetch),
            self.r_data.eq(r_port.data),
        ]
        if self.thermometer:
            level = Signal(self.depth)  # bit i: more than i entries in memory
            up = self.w_en & ~fetch
            down = fetch & ~self.w_en
            m.d.sync += level.eq(Mux(up, Cat(Const(1, 1), level[:-1]),
                                     Mux(down, level[1:], level)))
            m.d.comb += nonempty.eq(level[0])
        else:
            stored = Signal(bits + 1)  # entries in memory
            m.d.sync += [
                stored.eq(stored + Mux(self.w_en, Mux(fetch, 0, 1), Mux(fetch, -1, 0))),
                nonempty.eq(self.w_en | (stored >= 2) | ((stored == 1) & ~fetch)),
            ]
        with m.If(self.w_en):
            m.d.sync += produce.eq(produce + 1)
        with m.If(fetch):
            m.d.sync += [consume.eq(consume + 1), self.r_rdy.eq(1)]
        with m.Elif(self.r_en):
            m.d.sync += self.r_rdy.eq(0)
        return m


def _stage(m, suffix, values):
    """Register a dict of values (one pipeline stage) and return the registers by name.

    The stage is one register without reset (a struct of its fields), but for ``valid``. A list
    value is registered element by element.
    """
    flat = {}
    for name, value in values.items():
        for n, item in enumerate(value) if isinstance(value, list) else [(None, value)]:
            flat[name if n is None else f"{name}{n}"] = Value.cast(item)
    valid = flat.pop("valid", None)
    stage = Signal(data.StructLayout({name: v.shape() for name, v in flat.items()}),
                   name=suffix, reset_less=True)
    m.d.sync += stage.as_value().eq(Cat(*flat.values()))
    regs = {name: stage[name] for name in flat}
    for name, value in values.items():
        if isinstance(value, list):
            regs[name] = [regs.pop(f"{name}{n}") for n in range(len(value))]
    if valid is not None:
        regs["valid"] = Signal(name=f"valid_{suffix}")
        m.d.sync += regs["valid"].eq(valid)
    return regs


def _pairs(values, levels=1):
    """Add neighbours ``levels`` times: the first levels of a balanced adder tree."""
    for _ in range(levels):
        if len(values) > 1:
            values = [values[n] + values[n + 1] if n + 1 < len(values) else values[n]
                      for n in range(0, len(values), 2)]
    return values


def _pass(stage, *names):
    return {name: stage[name] for name in names}


def _small(value, table):
    """Return ``table[value]`` as a lookup (a few LUTs, no carry chain)."""
    return Array(Const(entry, 8) for entry in table)[value]


def _decode(after, here, lane, lanes, strict=False):
    """Describe the lanes at or after a bound (after it if ``strict``) in a few signals.

    ``after``: the bound lies before the beat; ``here``: in it, at ``lane``. The lanes split
    into groups by their high bits: ``all`` marks the groups wholly at or after the bound,
    ``part`` the group that holds it, and ``low`` the low bits that reach it. Each lane is
    then a function of three signals (:func:`_lanes_from`), however wide the beat.
    """
    bits = exact_log2(lanes)
    low_bits = bits // 2
    high, low = lane[low_bits:bits], lane[:low_bits]
    return {
        "all": Cat(*(after | (here & (high < h)) for h in range(1 << (bits - low_bits)))),
        "part": Cat(*(here & (high == h) for h in range(1 << (bits - low_bits)))),
        "low": Cat(*((low < n) if strict else (low <= n) for n in range(1 << low_bits))),
    }


def _lanes_from(decoded, lanes):
    """Return the ``lanes``-bit thermometer that :func:`_decode` describes."""
    low_bits = exact_log2(lanes) // 2
    groups = lanes >> low_bits

    def spread(bits):  # each group's bit over the lanes of the group
        return Cat(*(bits[h].replicate(1 << low_bits) for h in range(groups)))

    return spread(decoded["all"]) | (spread(decoded["part"]) & decoded["low"].replicate(groups))


def _fold_in(value, width):
    """Return ``value[0:16] + value[16]`` where ``value[16]`` implies ``value[0:16] < 2**width``.

    The increment only touches the low ``width`` bits, so it stays in LUTs.
    """
    low, carry = value[:16], value[16]
    bits = []
    for n in range(width):
        bits.append(low[n] ^ (carry & (low[:n].all() if n else 1)))
    return Cat(*bits, low[width:])


class ChecksumFront(wiring.Component):
    """Parse every frame of a packet stream and sum it the way the checksum engines need.

    The front takes one beat every cycle (``i.ready`` stays high) and never waits on its output.
    One ``summary`` record leaves per frame, in frame order, a fixed number of cycles after the
    frame's last beat went in.

    Parameters
    ----------
    width : int
        Data width in bits (64, 128, 256 or 512).
    transmit : bool
        Expect a :class:`TxCommandLayout` in ``user`` on the first beat of a frame: ``sum_a``
        then starts at ``csum_start`` for ``PARTIAL`` frames, the IPv4 and TCP/UDP checksum
        fields are left out of ``ip_sum`` and ``l4_sum``, and their offsets are reported.

    Members
    -------
    i : In(beat stream)
        Frames to watch.
    summary : Out(stream of summary_layout(width), always ready)
        One record per frame.
    """

    def __init__(self, width, *, transmit=False):
        self.width = check_width(width)
        self.lanes = width // 8
        self.shift = exact_log2(self.lanes)
        self.transmit = transmit
        self.small_bits = ((_MAX_SMALL >> self.shift) + 1).bit_length()
        user_width = TX_USER_WIDTH if transmit else 0
        super().__init__({
            "i": In(beat_signature(width, user_width)),
            "summary": Out(stream.Signature(summary_layout(width), always_ready=True)),
        })

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.i.ready.eq(1)
        s0 = self._receive(m)
        s1 = self._capture(m, s0)
        s1c = self._candidates(m, s1)
        s2 = self._parse(m, s1c)
        s2b = self._offsets(m, s2)
        s3 = self._bounds(m, s2b)
        s4 = self._compare(m, s3)
        s5 = self._masks(m, s4)
        self._sums(m, s5)
        return m

    # ---- S0: the beat, its index in the frame and the header beat it is (one-hot).

    def _receive(self, m):
        beat = self.i.payload
        k_bits = POS_BITS - self.shift + 1
        header_beats = HEADER_BYTES // self.lanes or 1
        mid_frame = Signal()
        k_next = Signal(k_bits)  # saturates at 2**(k_bits - 1) beats, past every position
        phase = Signal(header_beats, init=1)
        values = {
            "valid": self.i.valid, "last": beat.last, "k": k_next,
            "phase": phase, "keep": beat.keep, "data": beat.data,
        }
        with m.If(self.i.valid):
            m.d.sync += [
                mid_frame.eq(~beat.last),
                phase.eq(Mux(beat.last, 1, phase << 1)),
            ]
        with m.If(self.i.valid & beat.last):  # a reset over the enable, then a plain counter
            m.d.sync += k_next.eq(0)
        with m.Elif(self.i.valid & ~k_next[-1]):
            m.d.sync += k_next.eq(k_next + 1)
        if self.transmit:
            command = TxCommandLayout(beat.user)
            partial, start = Signal(), Signal(16)
            with m.If(self.i.valid & ~mid_frame):
                m.d.sync += [partial.eq(command.mode == _MODE_PARTIAL),
                             start.eq(command.csum_start)]
            s0 = _stage(m, "s0", values)
            s0.update(partial=partial, start=start)  # of the frame of the beat in S0
            return s0
        return _stage(m, "s0", values)

    # ---- S1: header bytes and field tests held as their beats pass; keep checks.

    def _capture(self, m, s0):
        lanes = self.lanes

        def held(value, pos, name):
            reg = Signal(Value.cast(value).shape(), name=name, reset_less=True)
            with m.If(s0["valid"] & s0["phase"][pos // lanes]):
                m.d.sync += reg.eq(value)
            return reg

        def at(pos, count):
            return be_bytes(s0["data"], pos % lanes, count)

        hdr = {b: held(at(b, 1), b, f"hdr{b}") for b in range(14, 30)}
        tests = []  # (name, position, test of the bytes there)
        for pos in (12, 16):
            et = at(pos, 2)
            tests.append((f"tpid{pos}", pos, (et == _TPID_CTAG) | (et == _TPID_STAG)))
        for pos in (12, 16, 20):
            tests.append((f"ip4_{pos}", pos, at(pos, 2) == _ETHERTYPE_IPV4))
            tests.append((f"ip6_{pos}", pos, at(pos, 2) == _ETHERTYPE_IPV6))
        for l3 in _L3_OFFSETS:
            for version, offset in ((4, 9), (6, 6)):  # protocol, next header
                proto = at(l3 + offset, 1)
                tests.append((f"tcp{version}_{l3}", l3 + offset, proto == _IPPROTO_TCP))
                tests.append((f"udp{version}_{l3}", l3 + offset, proto == _IPPROTO_UDP))
        flags = {name: held(test, pos, f"{name}_s1") for name, pos, test in tests}

        keep, last = s0["keep"], s0["last"]
        following = Cat(keep[1:], Const(0, 1))
        top = keep & ~following  # one-hot on the last kept byte of a well-formed last beat
        contiguous = keep[0] & ~(~keep & following).any()
        values = _pass(s0, "valid", "last", "k", "keep", "data")
        values.update(
            bad=Mux(last, ~contiguous, ~keep.all()),
            last_pos=Cat(*(Cat(*(top[j] for j in range(lanes) if j >> b & 1)).any()
                           for b in range(self.shift))),
            # the beat index, saturated past the beats of the bounds below 128
            k_small=s0["k"][:self.small_bits] | s0["k"][self.small_bits:].any().replicate(
                self.small_bits),
            minus_beats=_BEAT_BIAS - s0["k"],
        )
        if self.transmit:
            values.update(_pass(s0, "partial", "start"))
            counts = [bin(n).count("1") for n in range(16)]
            values["counts"] = [_small(keep[j:j + 4], counts)[:3] for j in range(0, lanes, 4)]
        s1 = _stage(m, "s1", values)
        s1["hdr"] = hdr
        s1.update(flags)
        return s1

    # ---- S1C: the candidate fields and positions for each l3, apart from the pick by tags.

    def _candidates(self, m, s1):
        hdr = s1["hdr"]
        values = {name: value for name, value in s1.items() if name != "hdr"}
        values["hdr"] = [hdr[b] for b in sorted(hdr)]

        def field_at(l3, offset, count):  # big-endian
            return Cat(*(hdr[l3 + offset + count - 1 - n] for n in range(count)))

        for l3 in _L3_OFFSETS:
            ip6 = s1[f"ip6_{l3 - 2}"]

            def table(entries, l3=l3):  # of the IHL
                return _small(hdr[l3][0:4], entries)

            def by_ihl(offset4, offset6, l3=l3, ip6=ip6):  # l3 + IHL * 4 + offset4 or offset6
                return Mux(ip6, l3 + offset6, table([l3 + 4 * n + offset4 for n in range(16)]))

            values.update({
                f"c_end_{l3}": table([l3 + 4 * n for n in range(16)]),
                f"c_end_m1_{l3}": table([l3 + 4 * n - 1 for n in range(16)]),
                f"e2_{l3}": by_ihl(0, 40),
                f"udp_len_pos_{l3}": by_ihl(4, 44),
                f"udp_check_pos_{l3}": by_ihl(6, 46),
                # the shortest IPv4 total length with a TCP or UDP header: IHL * 4 + 20 or 8
                f"min_total_tcp_{l3}": table([4 * n + 20 for n in range(16)])[:7],
                f"min_total_udp_{l3}": table([4 * n + 8 for n in range(16)])[:7],
                f"fragment_{l3}": Cat(hdr[l3 + 6][0:6], hdr[l3 + 7]).any(),
                # the length field that ends the datagram: IPv6 payload or IPv4 total length
                f"length_{l3}": Mux(ip6, field_at(l3, 4, 2), field_at(l3, 2, 2)),
                **{f"is_{proto}_{l3}": Mux(ip6, s1[f"{proto}6_{l3}"], s1[f"{proto}4_{l3}"])
                   for proto in ("tcp", "udp")},
            })
            if self.transmit:
                is_tcp = values[f"is_tcp_{l3}"]
                values[f"l4_pos_{l3}"] = Mux(is_tcp, by_ihl(16, 56), by_ihl(6, 46))
        s1c = _stage(m, "s1c", values)
        s1c["hdr"] = dict(zip(sorted(hdr), s1c["hdr"], strict=True))
        return s1c

    # ---- S2: the fields at the offsets the VLAN tags give.

    def _parse(self, m, s1):
        hdr = s1["hdr"]
        tag0 = s1["tpid12"]
        tag1 = s1["tpid16"]

        def pick(values):  # by l3 = 14, 18, 22
            return Mux(tag0, Mux(tag1, values[2], values[1]), values[0])

        def field(offset, count):
            return pick([Cat(*(hdr[l3 + offset + count - 1 - n] for n in range(count)))
                         for l3 in _L3_OFFSETS])

        def by_tags(offset):  # l3 + offset
            return pick([Const(l3 + offset, 8) for l3 in _L3_OFFSETS])

        def by_l3(name):
            return pick([s1[f"{name}_{l3}"] for l3 in _L3_OFFSETS])

        values = _pass(s1, "valid", "last", "k", "k_small", "data", "bad",
                       "last_pos")
        # The bounds below 128: the header checksum [l3, c_end), the pseudo-header addresses
        # [e0, e1), the start of the segment e2 and the UDP fields after it.
        values.update(
            l3=by_tags(0),
            l3_m1=by_tags(-1),
            c_end=by_l3("c_end"),
            c_end_m1=by_l3("c_end_m1"),
            e0=pick([Mux(s1[f"ip6_{l3 - 2}"], l3 + 8, l3 + 12) for l3 in _L3_OFFSETS]),
            e1=pick([Mux(s1[f"ip6_{l3 - 2}"], l3 + 40, l3 + 20) for l3 in _L3_OFFSETS]),
            e2=by_l3("e2"),
            udp_len_pos=by_l3("udp_len_pos"),
            udp_check_pos=by_l3("udp_check_pos"),
        )
        if self.transmit:
            values.update(ip_pos=by_tags(10), l4_pos=by_l3("l4_pos"))
        values.update(
            is4=pick([s1[f"ip4_{p}"] for p in (12, 16, 20)]),
            is6=pick([s1[f"ip6_{p}"] for p in (12, 16, 20)]),
            version=field(0, 1)[4:8],
            ihl=field(0, 1)[0:4],
            total=field(2, 2),
            payload=field(4, 2),
            fragment=by_l3("fragment"),
            is_tcp=by_l3("is_tcp"),
            min_total_tcp=by_l3("min_total_tcp"),
            min_total_udp=by_l3("min_total_udp"),
            is_udp=by_l3("is_udp"),
            length=by_l3("length"),
        )
        # The position of the last byte of an empty datagram, ``base``, split into its low bits
        # and its high bits less a bias (see :meth:`_offsets`): constants, picked by the tags
        # and the version.
        def base_by_l3(less, part):  # IPv6: l3 + 40 - 1 - less, IPv4: l3 - 1 - less
            return pick([Mux(s1[f"ip6_{l3 - 2}"], Const(part(l3 + 39 - less), signed(8)),
                             Const(part(l3 - 1 - less), signed(8))) for l3 in _L3_OFFSETS])

        for suffix, less in (("", 0), ("_next", self.lanes)):
            values[f"base_low{suffix}"] = base_by_l3(less, lambda v: v % self.lanes)[:self.shift]
            values[f"base_high{suffix}"] = base_by_l3(less,
                                                      lambda v: (v >> self.shift) - _BEAT_BIAS)
        values["minus_beats"] = s1["minus_beats"]
        if self.transmit:
            values.update(_pass(s1, "partial", "start"))
            values["counts"] = _pairs(s1["counts"])
        return _stage(m, "s2", values)

    # ---- S2B: positions relative to the beat (the parse's picks and these adders apart).

    def _offsets(self, m, s2):
        values = {name: value for name, value in s2.items()
                  if not name.startswith(("base_", "minus_beats", "start"))}
        # The end of the datagram relative to this beat, ``lengths + base - k * lanes``: the
        # part that does not depend on the length fields is subtracted here.
        # Each comes twice, the second one lanes lower: the signs of the two tell whether the
        # bound is before, in or after the beat, without a test of the sum's high bits.
        shift = self.shift
        # bias - k: -k * lanes has no low bits, so only the high bits of an offset wait for the
        # carry chain; with the bias taken off, their sign varies, and the chain (rather than
        # LUTs after it) carries into the top bits
        minus_beats = s2["minus_beats"].as_signed()
        width = len(minus_beats) + shift + 2

        def minus_position(offset):  # offset - k * lanes, signed
            offset = offset.as_signed()
            high = (offset[shift:].as_signed() - _BEAT_BIAS)
            return Cat(offset[:shift], minus_beats + high)[:width].as_signed()

        for suffix, less in (("", 0), ("_next", self.lanes)):
            values[f"base{suffix}"] = Cat(
                s2[f"base_low{suffix}"],
                minus_beats + s2[f"base_high{suffix}"].as_signed())[:width].as_signed()
            if self.transmit:
                values[f"start{suffix}"] = minus_position(s2["start"] - less)
        return _stage(m, "s2b", values)

    # ---- S3: byte ranges and the checks that do not depend on the frame length.

    def _bounds(self, m, s2):
        is6, ihl = s2["is6"], s2["ihl"]
        hl = Cat(Const(0, 2), ihl)

        values = _pass(s2, "valid", "last", "k", "data", "bad", "last_pos", "is4",
                       "is6", "is_tcp", "is_udp")
        shift = self.shift
        for name in _SMALL_BOUNDS + (_TX_BOUNDS if self.transmit else ()):
            bound, index = s2[name], s2["k_small"]
            beat = bound[shift:shift + self.small_bits]
            after = index > beat
            values.update({f"{name}_after": after, f"{name}_here": (index >= beat) & ~after,
                           f"{name}_lane": bound[:shift]})
        values.update(
            e3_m1=s2["length"] + s2["base"],
            e3_m1_next=s2["length"] + s2["base_next"],
            v4_version=s2["is4"] & (s2["version"] == 4) & (ihl >= 5),
            # total >= hl, total - hl >= 20 (TCP) or 8 (UDP): the low bits are compared here
            # and the high bits tested apart, so that no gate follows the carry chains
            total_high=s2["total"][7:] != 0,
            v4_length=s2["total"][:7] >= hl,
            min_len4_tcp=s2["total"][:7] >= s2["min_total_tcp"],
            min_len4_udp=s2["total"][:7] >= s2["min_total_udp"],
            min_len6_tcp=s2["payload"] >= 20,
            min_len6_udp=s2["payload"] >= 8,
            fragment=s2["fragment"],
            v6_static=is6 & (s2["version"] == 6) & (s2["payload"] != 0),
            l4_len=Mux(is6, s2["payload"], s2["total"] - hl),

        )
        if self.transmit:
            values.update(
                partial=s2["partial"],
                start=s2["start"],
                start_next=s2["start_next"],
                l4_pos=s2["l4_pos"],  # reported
                ip_pos=s2["ip_pos"],
                counts=_pairs(s2["counts"]),
            )
        return _stage(m, "s3", values)

    # ---- S4: where each bound falls relative to the beat; length-independent verdicts.

    def _compare(self, m, s3):
        shift = self.shift

        def decoded(name, strict=False):
            return {f"{name}_{key}": v for key, v in _decode(
                s3[f"{name}_after"], s3[f"{name}_here"], s3[f"{name}_lane"], self.lanes,
                strict).items()}

        values = _pass(s3, "valid", "last", "data", "bad", "last_pos",
                       "is6", "is_udp", "l4_len")
        v4_header = s3["v4_version"] & (s3["total_high"] | s3["v4_length"])
        values["v4_header"] = v4_header
        for name in _SMALL_BOUNDS + (_TX_BOUNDS if self.transmit else ()):
            values.update(_pass(s3, f"{name}_after", f"{name}_here", f"{name}_lane"))
        for name in ("l3", "c_end", "e0", "e1", "e2"):
            values.update(decoded(name))
        for name in ("e3_m1",) + (("start",) if self.transmit else ()):
            relative = s3[name]  # bound - k * lanes
            after = relative[-1]
            here = ~relative[-1] & s3[f"{name}_next"][-1]
            strict = name == "e3_m1"  # the lanes after the last byte of the datagram
            values.update({f"{name}_after": after, f"{name}_here": here,
                           f"{name}_lane": relative[:shift],
                           **{f"{name}_{key}": v for key, v in _decode(
                               after, here, relative[:shift], self.lanes, strict).items()}})
        values.update({f"end_{key}": v for key, v in _decode(  # bytes after the frame
            Const(0), s3["last"], s3["last_pos"], self.lanes, strict=True).items()})
        values.update(
            ip_ok=s3["is4"],
            seg_static=((v4_header & ~s3["fragment"] | s3["v6_static"])
                        & (s3["is_tcp"] | s3["is_udp"])
                        & Mux(s3["is6"], Mux(s3["is_tcp"], s3["min_len6_tcp"], s3["min_len6_udp"]),
                              s3["total_high"] | Mux(s3["is_tcp"], s3["min_len4_tcp"],
                                                     s3["min_len4_udp"]))),
        )
        if self.transmit:
            values.update(_pass(s3, "partial", "k", "ip_pos", "l4_pos"))
            values["last_bytes"] = _pairs(s3["counts"], levels=2)[0]
        return _stage(m, "s4", values)

    # ---- S5: per-byte-lane vectors, one per bound; the end-of-frame length checks.

    def _masks(self, m, s4):
        lanes = self.lanes

        def ge(name):  # lanes at or after the bound (after it, for e3_m1 and end)
            return _lanes_from({key: s4[f"{name}_{key}"] for key in ("all", "part", "low")},
                               lanes)

        def reaches(name):  # the last byte of this beat is at or after the bound
            return s4[f"{name}_after"] | (s4[f"{name}_here"] & (s4["last_pos"]
                                                                 >= s4[f"{name}_lane"]))

        def field_at(name):  # the two bytes of a 16-bit field at an even bound
            words = lanes // 2
            word = Mux(s4[f"{name}_here"], (Const(1, words) << s4[f"{name}_lane"][1:])[:words], 0)
            return Cat(*(Cat(word[w], word[w]) for w in range(words)))

        values = _pass(s4, "valid", "last", "data", "bad", "is6", "is_udp", "l4_len")
        # Each vector tests one bound, so that a lane's logic stays shallow; the sums combine
        # them in front of their adders. A byte at p is in [e2, e3) when p >= e2 and not
        # p > e3 - 1; bytes after the end of a well-formed frame are in no sum.
        values.update(
            v_l3=ge("l3"),
            v_c_end=ge("c_end"),
            v_e0=ge("e0"),
            v_e1=ge("e1"),
            v_e2=ge("e2"),
            v_e3=ge("e3_m1"),
            v_end=~ge("end"),
            ip_present=s4["ip_ok"] & reaches("l3_m1"),
            ip_header=s4["ip_ok"] & s4["v4_header"] & reaches("l3_m1") & reaches("c_end_m1"),
            seg_ok=(s4["seg_static"] & reaches("e3_m1")
                    & (s4["is6"] | reaches("c_end_m1"))),
            udp_len_hit=s4["udp_len_pos_here"],
            udp_len_word=s4["udp_len_pos_lane"][1:],
            udp_check_hit=s4["udp_check_pos_here"],
            udp_check_word=s4["udp_check_pos_lane"][1:],
        )
        if self.transmit:
            values.update(_pass(s4, "k", "ip_pos", "l4_pos", "last_bytes", "partial"))
            values.update(v_start=ge("start"), v_ip_field=field_at("ip_pos"),
                          v_l4_field=field_at("l4_pos"))
        vectors = [name for name in values if name.startswith("v_")]
        values.update(self._combine(values))
        for name in vectors + ["partial"]:
            values.pop(name, None)
        return _stage(m, "s5", values)

    def _combine(self, v):
        """Return the byte-lane masks of the three sums from the vectors of their bounds."""
        start = Mux(v["partial"], v["v_start"], v["v_l3"]) if self.transmit else v["v_l3"]
        masks = {
            "mask_a": start & v["v_end"],
            "mask_c": v["v_l3"] & ~v["v_c_end"],
            "mask_e": (v["v_e0"] & ~v["v_e1"]) | (v["v_e2"] & ~v["v_e3"]),
        }
        if self.transmit:
            masks["mask_c"] = masks["mask_c"] & ~v["v_ip_field"]
            masks["mask_e"] = masks["mask_e"] & ~v["v_l4_field"]
        return masks

    # ---- S6 on: adder trees, the per-frame accumulators, folds and the summary.

    def _sums(self, m, s5):
        lanes = self.lanes
        words = lanes // 2
        data = s5["data"]

        # Big-endian 16-bit words: the bytes of each pair swapped, then masked.
        swapped = Signal(self.width)
        m.d.comb += swapped.eq(Cat(*(data.word_select(j ^ 1, 8) for j in range(lanes))))

        def masked_words(mask):
            bits = Signal(self.width, name=f"{mask.name}_words")
            m.d.comb += bits.eq(swapped & Cat(*(mask[j ^ 1].replicate(8) for j in range(lanes))))
            return [bits.word_select(w, 16) for w in range(words)]

        # The masked words, and the words of the captured UDP fields; then level 1 of the
        # trees, from registers.
        masks = {}
        for x in "ace":
            masks[x] = Signal(lanes, name=f"mask_{x}")
            m.d.comb += masks[x].eq(s5[f"mask_{x}"])
        ctrl = _pass(s5, "valid", "last", "bad", "is6", "is_udp", "l4_len",
                     "ip_present", "ip_header", "seg_ok", "udp_len_hit", "udp_check_hit")
        if self.transmit:
            ctrl.update(_pass(s5, "k", "ip_pos", "l4_pos", "last_bytes"))
        # The UDP length lies at e2 + 4 (an odd word: e2 is 2 mod 4), the checksum at e2 + 6.
        odd_words = Cat(*(data.word_select(w, 16) for w in range(1, words, 2)))
        even_words = Cat(*(data.word_select(w, 16) for w in range(0, words, 2)))
        ctrl["udp_len"] = odd_words.word_select(s5["udp_len_word"][1:], 16)
        ctrl["udp_check"] = even_words.word_select(s5["udp_check_word"][1:], 16)
        stage = _stage(m, "s5w", {**ctrl, **{f"w_{x}": masked_words(masks[x]) for x in "ace"}})
        ctrl = _pass(stage, *ctrl)
        sums = {x: _pairs(stage[f"w_{x}"]) for x in "ace"}
        level = 1
        stage = _stage(m, f"s{5 + level}", {**ctrl, **{f"t_{x}{n}": v for x in "ace"
                                                        for n, v in enumerate(sums[x])}})

        # The UDP length and checksum fields, tested by halves in the next stage (the TCP/UDP
        # length is known when they pass) and held to the frame's last beat in the fold stage.
        udp_len = swap16(stage["udp_len"])
        ctrl = _pass(stage, *(n for n in ctrl if n not in ("udp_len", "udp_check")))
        ctrl.update(
            udp_len_lo=udp_len[:8] == stage["l4_len"][:8],
            udp_len_hi=udp_len[8:] == stage["l4_len"][8:16],
            udp_check_lo=stage["udp_check"][:8] == 0,
            udp_check_hi=stage["udp_check"][8:] == 0,
        )

        # The rest of the trees, one level a stage.
        nodes = {x: [stage[f"t_{x}{n}"] for n in range(len(sums[x]))] for x in "ace"}
        while len(nodes["a"]) > 1:
            level += 1
            nodes = {x: _pairs(v) for x, v in nodes.items()}
            stage = _stage(m, f"s{5 + level}", {**ctrl, **{f"t_{x}{n}": v for x in "ace"
                                                            for n, v in enumerate(nodes[x])}})
            nodes = {x: [stage[f"t_{x}{n}"] for n in range(len(nodes[x]))] for x in "ace"}
            ctrl = _pass(stage, *ctrl)
        beat_sum = {x: nodes[x][0] for x in "ace"}

        udp_len_ok = Signal()
        udp_check_zero = Signal()
        udp_len_ok_now = Mux(ctrl["udp_len_hit"], ctrl["udp_len_lo"] & ctrl["udp_len_hi"],
                             udp_len_ok)
        udp_check_zero_now = Mux(ctrl["udp_check_hit"], ctrl["udp_check_lo"] & ctrl["udp_check_hi"],
                                 udp_check_zero)
        with m.If(ctrl["valid"]):
            m.d.sync += [udp_len_ok.eq(udp_len_ok_now), udp_check_zero.eq(udp_check_zero_now)]
        for name in ("udp_len_hit", "udp_check_hit", "udp_len_lo", "udp_len_hi", "udp_check_lo",
                     "udp_check_hi"):
            del ctrl[name]
        ctrl["udp_len_ok"] = ~ctrl["is_udp"] | udp_len_ok_now
        ctrl["udp_check_zero"] = udp_check_zero_now

        # Fold each beat's sum to 16 bits (the last carry goes in with LUTs).
        level += 1
        carries = len(beat_sum["a"]) - 16
        # the last beat of a frame, straight from a flip-flop: it clears the accumulators
        done = Signal(name=f"done_s{5 + level}")
        m.d.sync += done.eq(ctrl["valid"] & ctrl["last"])
        stage = _stage(m, f"s{5 + level}", {**ctrl, **{f"f_{x}": _fold_in(v[:16] + v[16:], carries)
                                                        for x, v in beat_sum.items()}})
        ctrl = _pass(stage, *ctrl)

        # Accumulate per frame: 16 bits and a deferred end-around carry (any frame length).
        # Cleared after the last beat of a frame, so that no gate sits before the adder.
        acc = {x: Signal(17, name=f"acc_{x}") for x in "ace"}
        new = {x: acc[x][:16] + stage[f"f_{x}"] + acc[x][16] for x in "ace"}
        bad = Signal()
        bad_now = bad | stage["bad"]
        with m.If(done):  # a reset over the enable: no LUT
            m.d.sync += [acc[x].eq(0) for x in "ace"]
            m.d.sync += bad.eq(0)
        with m.Elif(stage["valid"]):
            m.d.sync += [acc[x].eq(new[x]) for x in "ace"]
            m.d.sync += bad.eq(bad_now)

        # The frame's totals, on its last beat.
        keep_names = [n for n in ctrl if n not in ("valid", "last", "bad", "l4_len")]
        total = {x: Signal(17, name=f"total_{x}") for x in "ace"}
        held = {n: Signal.like(ctrl[n], name=f"{n}_end") for n in keep_names}
        pseudo = Signal(17)  # protocol and TCP/UDP length of the pseudo-header
        keep_names.append("pseudo")
        held["pseudo"] = pseudo
        bad_end = Signal()
        done_end = Signal()
        m.d.sync += done_end.eq(done)
        with m.If(done):
            m.d.sync += [total[x].eq(new[x]) for x in "ace"]
            m.d.sync += [held[n].eq(ctrl[n]) for n in keep_names if n != "pseudo"]
            m.d.sync += pseudo.eq(ctrl["l4_len"]
                                  + Mux(ctrl["is_udp"], _IPPROTO_UDP, _IPPROTO_TCP))
            m.d.sync += bad_end.eq(bad_now)

        # Fold: the 16-bit part plus the deferred carry (0x10000 only from 0xffff + 1).
        def fold(value):
            folded = value[:16] + value[16]
            return Cat(folded[0] | folded[16], folded[1:16])

        l4_total = total["e"][:16] + held["pseudo"] + total["e"][16]
        fin = _stage(m, "fin", {
            "valid": done_end, "bad": bad_end, "sum_a": fold(total["a"]),
            "ip_sum": fold(total["c"]), "l4_total": l4_total,
            **{n: held[n] for n in keep_names if n != "pseudo"},
        })
        out = self.summary.payload
        m.d.sync += self.summary.valid.eq(fin["valid"])
        with m.If(fin["valid"]):
            m.d.sync += [
                out.malformed.eq(fin["bad"]),
                out.sum_a.eq(fin["sum_a"]),
                out.ip_present.eq(fin["ip_present"]),
                out.ip_header_ok.eq(fin["ip_header"]),
                out.ip_sum.eq(fin["ip_sum"]),
                out.seg_ok.eq(fin["seg_ok"] & fin["udp_len_ok"]),
                out.is_ipv6.eq(fin["is6"]),
                out.is_udp.eq(fin["is_udp"]),
                out.l4_sum.eq(_fold_in(fin["l4_total"][:16] + fin["l4_total"][16:], 2)),
                out.udp_check_zero.eq(fin["udp_check_zero"]),
            ]
            if self.transmit:
                m.d.sync += [
                    out.last_beat.eq(fin["k"]),
                    out.last_bytes.eq(fin["last_bytes"]),
                    out.ip_pos.eq(fin["ip_pos"]),
                    out.l4_pos.eq(fin["l4_pos"]),
                ]
