"""Traffic: timed sources of frames for the SimPy world, and a seeded mix of test frames.

:class:`TrafficSource` feeds any element with ``put(batch)`` (a link, a switch port, the NIC)
with batches of :class:`~nicsim.sim.frame.Frame` at a constant rate, as a Poisson process, in
bursts, or replaying a capture. :func:`mixed_frames` returns a seeded mix of the frames NIC
offloads meet on real links (IPv4 with and without options, IPv6 with and without extension
headers, TCP and UDP, 0-2 VLAN tags, fragments, non-IP frames, deliberately broken checksums).

Frames are built with scapy, so their checksums come from an implementation independent of
nicsim's; a source builds each (flow, size) template once and reuses its bytes.
"""

from __future__ import annotations

import ipaddress
import math
import random
from fractions import Fraction

from nicsim.hw.ref.checksum import csum_adjust
from nicsim.sim.ether import parse_mac
from nicsim.sim.frame import ETH_OVERHEAD_BYTES, Frame

__all__ = ["TrafficSource", "ClosedLoopClient", "mixed_frames", "IMIX_SEQUENCE",
           "MIN_FRAME_BYTES",
           "MAX_FRAME_BYTES", "SPORT_BASE", "DPORT"]

MIN_FRAME_BYTES = 64  # IEEE 802.3 minimum frame, with FCS
MAX_FRAME_BYTES = 9018  # a 9000-byte-MTU jumbo frame with header and FCS (+4 per VLAN tag)
# Simple IMIX: 7:4:1 of 40-, 576- and 1500-byte IP packets (the classic "simple IMIX" of
# Agilent/Ixia test equipment, from Internet traffic studies), as Ethernet frames with FCS:
# 64 (40 B padded), 594 and 1518 bytes. The 12 sizes are interleaved so any 12 consecutive
# frames hold the exact mix; mean frame 353.83 bytes.
IMIX_SEQUENCE = (64, 594, 64, 64, 594, 64, 1518, 64, 594, 64, 64, 594)
SPORT_BASE = 1024  # flow i sends from source port SPORT_BASE + i (mod the port range)
DPORT = 5201  # destination port of every flow (iperf3's)
_NO_LIMIT = 1 << 62


def _check(ok, message):
    if not ok:
        raise ValueError(message)


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _positive(value):
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


class TrafficSource:
    """Send frames into ``out`` in batches, at times set by a traffic pattern.

    Frames are made at their *ready time* (``t_ps = born_ps``, when the first bit may leave the
    source) and handed to ``out.put`` in batches of at most ``batch_frames`` frames spanning at
    most ``batch_ps``, each at the time of its last frame. The first frame is ready at
    ``start_ps``; the source stops after ``count`` frames or before ``start_ps +
    duration_ps`` (whichever comes first; neither: it runs as long as the simulation).

    Frame sizes are Ethernet frame bytes *with* the 4-byte FCS (64 is the minimum frame, the
    size packet-rate tables use); ``Frame.data`` holds them without the FCS. Each flow has its
    own 5-tuple: source address ``src_ip + i``, source port ``SPORT_BASE + i``, destination
    ``dst_ip``:``DPORT``. Contents come from scapy once per (flow, size); checksums are valid.

    Parameters
    ----------
    env : simpy.Environment
    out : element or None
        Receiver of the batches (``put(batch)``); may be set before the first batch is due.
    pattern : str
    rate_gbps, rate_mpps : float or None
        Exactly one, except for ``"pcap"`` (neither).
    size : int or "imix"
        Frame size with FCS, 64..9018 (+4 with a VLAN tag); ``"imix"``: :data:`IMIX_SEQUENCE`.
        Default 64.
    sizes : list of int or None
        Several sizes instead of ``size``.
    size_order : str
        ``"cycle"``: sizes in the given order; ``"random"``: a seeded uniform draw from them.
    stream : bool
        With ``proto="tcp"``: each flow is a TCP stream, its segments' sequence numbers
        advancing by the payload sent and IPv4 IDs by one (DF set, ACK without PSH), so
        LRO/GRO can merge them; checksums stay valid.
    flows : int
    flow_order : str
        ``"round_robin"`` or ``"random"`` (seeded). With several sizes cycled, the round robin
        shifts by one flow every ``lcm(flows, len(sizes))`` frames, so each flow gets every
        size.
    proto : str
        ``"udp"`` or ``"tcp"``.
    ipv6 : bool
    vlan : int or None
        VLAN ID (1..4094) of an 802.1Q tag on every frame.
    src_mac, dst_mac : str
    src_ip, dst_ip : str or None
        Address bases (defaults 10.0.0.1 / 10.0.1.1, or fd00::1:1 / fd00::2:1 with IPv6).
    count : int or None
    duration_ps : int or None
    start_ps : int
        Delay from the source's creation to its first frame.
    seed : int
    batch_frames : int
    batch_ps : int
    burst_frames : int
    burst_gap_ps : int
    pcap_path : str or Path or None
    pcap_speed : float
    pcap_loop : int
    name : str
        Stored in every frame's ``source``.

    Members
    -------
    frames, bytes : int
        Frames sent and their bytes (with FCS, padded to 64 bytes).
    process : simpy.Process
        The sending process; it ends when the source has sent everything.

    Notes
    -----
    Patterns:

    ``"constant"``
        Fixed spacing: with ``rate_gbps`` a frame of ``s`` bytes is followed ``(s + 20) * 8 /
        rate_gbps`` ns later (the rate counts wire bytes, preamble and gap included, so 10 Gb/s
        of 64-byte frames is 14.88 Mpps and fills a 10 Gb/s wire exactly); with
        ``rate_mpps`` every ``1 / rate_mpps`` us. Times are exact (no rounding drift).
    ``"poisson"``
        Exponential gaps with those means (a seeded ``random.Random``).
    ``"burst"``
        ``burst_frames`` frames spaced as ``"constant"`` (give the line rate), then
        ``burst_gap_ps`` of silence after the last frame's slot before the next burst.
    ``"pcap"``
        The frames of ``pcap_path`` at their capture times relative to the first, divided by
        ``pcap_speed``, ``pcap_loop`` times; each loop starts one mean capture gap after the
        previous one's last frame. Timestamps that go backwards are held at the previous one.
    """

    def __init__(self, env, out, *, pattern="constant", rate_gbps=None, rate_mpps=None,
                 size=None, sizes=None, size_order="cycle", flows=1, flow_order="round_robin",
                 proto="udp", ipv6=False, vlan=None, src_mac="02:00:00:00:00:01",
                 dst_mac="02:00:00:00:00:02", src_ip=None, dst_ip=None, count=None,
                 duration_ps=None, start_ps=0, seed=0, batch_frames=32, batch_ps=1_000_000,
                 burst_frames=32, burst_gap_ps=10_000_000, pcap_path=None, pcap_speed=1.0,
                 pcap_loop=1, name="src", stream=False):
        patterns = ("constant", "poisson", "burst", "pcap")
        _check(pattern in patterns,
               f"traffic.pattern must be one of {', '.join(patterns)}, not {pattern!r}")
        if pattern == "pcap":
            _check(rate_gbps is None and rate_mpps is None,
                   "traffic.rate_gbps and rate_mpps do not apply to pattern 'pcap' (the "
                   "capture's timestamps set the rate; use pcap_speed)")
            _check(pcap_path is not None, "traffic.pcap_path must name a capture for "
                   "pattern 'pcap'")
        else:
            _check((rate_gbps is None) != (rate_mpps is None),
                   f"traffic: give exactly one of rate_gbps and rate_mpps for pattern "
                   f"{pattern!r}, not {'both' if rate_gbps is not None else 'neither'}")
            for key, value in (("rate_gbps", rate_gbps), ("rate_mpps", rate_mpps)):
                _check(value is None or _positive(value),
                       f"traffic.{key} must be a positive number, not {value!r}")
        _check(proto in ("udp", "tcp"), f"traffic.proto must be 'udp' or 'tcp', not {proto!r}")
        _check(vlan is None or (_is_int(vlan) and 1 <= vlan <= 4094),
               f"traffic.vlan must be a VLAN ID 1..4094 or None, not {vlan!r}")
        _check(_is_int(flows) and flows >= 1,
               f"traffic.flows must be a whole number >= 1, not {flows!r}")
        _check(flow_order in ("round_robin", "random"),
               f"traffic.flow_order must be 'round_robin' or 'random', not {flow_order!r}")
        _check(size_order in ("cycle", "random"),
               f"traffic.size_order must be 'cycle' or 'random', not {size_order!r}")
        for key, value, low in (("count", count, 0), ("duration_ps", duration_ps, 1)):
            _check(value is None or (_is_int(value) and value >= low),
                   f"traffic.{key} must be a whole number >= {low} or None, not {value!r}")
        for key, value, low in (("start_ps", start_ps, 0), ("batch_frames", batch_frames, 1),
                                ("batch_ps", batch_ps, 0), ("burst_frames", burst_frames, 1),
                                ("burst_gap_ps", burst_gap_ps, 0), ("pcap_loop", pcap_loop, 1)):
            _check(_is_int(value) and value >= low,
                   f"traffic.{key} must be a whole number >= {low}, not {value!r}")
        _check(_is_int(seed), f"traffic.seed must be a whole number, not {seed!r}")
        _check(_positive(pcap_speed),
               f"traffic.pcap_speed must be a positive number, not {pcap_speed!r}")

        # Sizes.
        if sizes is not None:
            _check(size is None, "traffic: give size or sizes, not both")
            if isinstance(sizes, str):
                sizes = IMIX_SEQUENCE if sizes == "imix" else [sizes]
            sizes = list(sizes)
            _check(sizes, "traffic.sizes must list at least one frame size")
        elif size == "imix":
            sizes = list(IMIX_SEQUENCE)
        else:
            sizes = [MIN_FRAME_BYTES if size is None else size]
        headers = (14 + (4 if vlan is not None else 0) + (40 if ipv6 else 20)
                   + (20 if proto == "tcp" else 8) + 4)
        largest = MAX_FRAME_BYTES + (4 if vlan is not None else 0)
        for s in sizes:
            _check(_is_int(s) and MIN_FRAME_BYTES <= s <= largest,
                   f"traffic.size must be {MIN_FRAME_BYTES}..{largest} bytes (frame with "
                   f"FCS), not {s!r}")
            _check(s >= headers,
                   f"traffic.size {s} is too small for the Ethernet"
                   f"{'+VLAN' if vlan is not None else ''}+{'IPv6' if ipv6 else 'IPv4'}+"
                   f"{proto.upper()} headers and FCS; use at least {headers} bytes")
        distinct = sorted(set(sizes))
        self._sizes = distinct
        self._size_seq = [distinct.index(s) for s in sizes]

        # Addresses.
        family = 6 if ipv6 else 4
        defaults = ("fd00::1:1", "fd00::2:1") if ipv6 else ("10.0.0.1", "10.0.1.1")
        bases = []
        for key, value, default in (("src_ip", src_ip, defaults[0]),
                                    ("dst_ip", dst_ip, defaults[1])):
            value = default if value is None else value
            try:
                addr = ipaddress.ip_address(value)
            except ValueError:
                addr = None
            _check(addr is not None and addr.version == family,
                   f"traffic.{key} must be an IPv{family} address, not {value!r}")
            bases.append(addr)
        try:
            bases[0] + (flows - 1)
        except ipaddress.AddressValueError:
            raise ValueError(f"traffic.src_ip {bases[0]} + {flows - 1} flows runs past the "
                             f"last IPv{family} address; lower src_ip") from None
        self._src_ip, self._dst_ip = bases
        try:
            self._src_mac, self._dst_mac = parse_mac(src_mac), parse_mac(dst_mac)
        except ValueError as exc:
            raise ValueError(f"traffic: {exc}") from None

        self.env = env
        self.out = out
        self.name = name
        self.pattern = pattern
        self.rate_gbps = rate_gbps
        self.rate_mpps = rate_mpps
        self.flows = flows
        self.flow_order = flow_order
        self.size_order = size_order
        _check(not stream or proto == "tcp",
               "traffic.stream makes TCP streams: it needs proto 'tcp'")
        self.proto = proto
        self.stream = bool(stream)
        self._stream_state = {}  # flow -> (next sequence number, next IPv4 ID)
        self.ipv6 = ipv6
        self.vlan = vlan
        self.count = count
        self.duration_ps = duration_ps
        self.seed = seed
        self.batch_frames = batch_frames
        self.batch_ps = batch_ps
        self.burst_frames = burst_frames
        self.burst_gap_ps = burst_gap_ps
        self.pcap_speed = pcap_speed
        self.pcap_loop = pcap_loop
        self.frames = 0
        self.bytes = 0
        self._start_ps = env.now + start_ps
        self._templates = [None] * (flows * len(distinct))
        self._pcap = self._load_pcap(pcap_path) if pattern == "pcap" else None
        self.process = env.process(self._run())

    @property
    def sizes(self):
        """The distinct frame sizes (with FCS) the source sends."""
        return list(self._sizes)

    def template(self, flow, size):
        """Return the frame bytes (no FCS) of ``flow`` at ``size`` (with FCS), building once."""
        index = flow * len(self._sizes) + self._sizes.index(size)
        data = self._templates[index]
        if data is None:
            data = self._templates[index] = self._build(flow, size)
        return data

    def _build(self, flow, size):
        from scapy.layers.inet import IP, TCP, UDP
        from scapy.layers.inet6 import IPv6
        from scapy.layers.l2 import Dot1Q, Ether
        from scapy.packet import Raw

        pkt = Ether(src=self._src_mac.hex(":"), dst=self._dst_mac.hex(":"))
        if self.vlan is not None:
            pkt = pkt / Dot1Q(vlan=self.vlan)
        src, dst = str(self._src_ip + flow), str(self._dst_ip)
        pkt = pkt / (IPv6(src=src, dst=dst) if self.ipv6 else IP(src=src, dst=dst))
        sport = SPORT_BASE + flow % (65536 - SPORT_BASE)
        if self.proto == "tcp" and self.stream:
            if not self.ipv6:
                pkt[IP].flags = "DF"
            pkt = pkt / TCP(sport=sport, dport=DPORT, flags="A", seq=1, ack=1)
        elif self.proto == "tcp":
            pkt = pkt / TCP(sport=sport, dport=DPORT, flags="PA", seq=1, ack=1)
        else:
            pkt = pkt / UDP(sport=sport, dport=DPORT)
        room = size - 4 - len(pkt)
        pkt = pkt / Raw(bytes(i & 0xFF for i in range(room)))
        data = bytes(pkt)
        # A 64-byte UDP/IPv4 frame has room for 18 payload bytes; a frame below the Ethernet
        # minimum would be padded on the wire: never the case for the sizes accepted here.
        assert len(data) == size - 4, (len(data), size)
        return data

    def _next_segment(self, flow, data):
        """Return the template as the flow's next TCP segment: sequence number advanced by
        the bytes sent so far, IPv4 ID by one; checksums adjusted (RFC 1624)."""
        l3 = 18 if self.vlan is not None else 14
        l4 = l3 + (40 if self.ipv6 else (data[l3] & 0x0F) * 4)
        seq, ip_id = self._stream_state.get(flow, (1, 1))
        payload = len(data) - l4 - (data[l4 + 12] >> 4) * 4
        self._stream_state[flow] = ((seq + payload) & 0xFFFFFFFF, (ip_id + 1) & 0xFFFF)
        frame = bytearray(data)
        old_seq = int.from_bytes(data[l4 + 4:l4 + 8], "big")
        frame[l4 + 4:l4 + 8] = seq.to_bytes(4, "big")
        csum = int.from_bytes(data[l4 + 16:l4 + 18], "big")
        csum = csum_adjust(csum, (old_seq >> 16, old_seq & 0xFFFF), (seq >> 16, seq & 0xFFFF))
        frame[l4 + 16:l4 + 18] = csum.to_bytes(2, "big")
        if not self.ipv6:
            old_id = int.from_bytes(data[l3 + 4:l3 + 6], "big")
            frame[l3 + 4:l3 + 6] = ip_id.to_bytes(2, "big")
            hc = int.from_bytes(data[l3 + 10:l3 + 12], "big")
            frame[l3 + 10:l3 + 12] = csum_adjust(hc, (old_id,), (ip_id,)).to_bytes(2, "big")
        return bytes(frame)

    def _load_pcap(self, path):
        from nicsim.hw.pcap import PcapError, read_pcap

        packets = read_pcap(path)
        if not packets:
            raise PcapError(f"{path}: the capture holds no packets; replay needs at least one.")
        t0 = packets[0].time_ns
        speed = self.pcap_speed
        times, prev = [], 0
        for p in packets:
            rel = (p.time_ns - t0) * 1000
            rel = rel if speed == 1 else round(rel / speed)
            prev = max(prev, rel)
            times.append(prev)
        return times, [p.data for p in packets]

    def _check_out(self):
        if self.out is None or not hasattr(self.out, "put"):
            raise ValueError(f"traffic source {self.name!r} has no out element with put(batch); "
                             "set source.out before the simulation runs")

    def _run(self):
        if self._pcap is not None:
            yield from self._run_pcap()
            return
        env, name = self.env, self.name
        sizes = self._sizes
        nsizes = len(sizes)
        size_seq = self._size_seq
        nseq = len(size_seq)
        flows = self.flows
        templates = self._templates
        rng = random.Random(self.seed)
        rand = rng.random
        expo = rng.expovariate
        flow_random = self.flow_order == "random"
        # Shift the round robin by one flow every lcm(flows, sizes) frames, so that every flow
        # meets every size even when the two cycles share a period.
        rotate = math.lcm(flows, nseq) if flows > 1 and nseq > 1 else 0
        size_random = self.size_order == "random" and nseq > 1
        size_fixed = nseq == 1
        poisson = self.pattern == "poisson"
        burst = self.burst_frames if self.pattern == "burst" else 0
        # Gap after a frame of each size, exactly: gap_num[i] / den picoseconds.
        if self.rate_gbps is not None:
            ps_per_byte = Fraction(8000) / Fraction(str(self.rate_gbps))
            gaps = [ps_per_byte * (s + ETH_OVERHEAD_BYTES) for s in sizes]
        else:
            gaps = [Fraction(1_000_000) / Fraction(str(self.rate_mpps))] * nsizes
        den = math.lcm(*(g.denominator for g in gaps))
        gap_num = [int(g * den) for g in gaps]
        gap_float = [float(g) for g in gaps]
        burst_gap = self.burst_gap_ps * den
        t0 = self._start_ps
        limit_count = _NO_LIMIT if self.count is None else self.count
        limit_t = _NO_LIMIT if self.duration_ps is None else t0 + self.duration_ps
        batch_frames, batch_ps = self.batch_frames, self.batch_ps
        stream = self.stream
        k = 0
        cum = 0  # time of the next frame since t0, in 1/den ps
        cumf = 0.0  # the same for "poisson", in ps
        t = t0
        while k < limit_count and t < limit_t:
            batch = []
            append = batch.append
            batch_end = t + batch_ps
            nbytes = 0
            while True:
                if flow_random:
                    flow = int(rand() * flows)
                elif rotate:
                    flow = (k + k // rotate) % flows
                else:
                    flow = k % flows
                if size_fixed:
                    si = 0
                elif size_random:
                    si = size_seq[int(rand() * nseq)]
                else:
                    si = size_seq[k % nseq]
                index = flow * nsizes + si
                data = templates[index]
                if data is None:
                    data = templates[index] = self._build(flow, sizes[si])
                if stream:
                    data = self._next_segment(flow, data)
                append(Frame(data, t, t, flow, name))
                nbytes += sizes[si]
                k += 1
                if poisson:
                    cumf += gap_float[si] * expo(1.0)
                    t = t0 + int(cumf)
                else:
                    cum += gap_num[si]
                    if burst and k % burst == 0:
                        cum += burst_gap
                    t = t0 + cum // den
                if (len(batch) >= batch_frames or t > batch_end or k >= limit_count
                        or t >= limit_t):
                    break
            self.frames += len(batch)
            self.bytes += nbytes
            yield env.timeout(batch[-1].t_ps - env.now)
            self._check_out()
            self.out.put(batch)

    def _run_pcap(self):
        env, name = self.env, self.name
        times, datas = self._pcap
        n = len(times)
        span = times[-1]
        period = span + (span // (n - 1) if n > 1 else 0)
        t0 = self._start_ps
        total = n * self.pcap_loop
        if self.count is not None:
            total = min(total, self.count)
        limit_t = _NO_LIMIT if self.duration_ps is None else t0 + self.duration_ps
        k = 0
        while k < total:
            loop, i = divmod(k, n)
            t = t0 + loop * period + times[i]
            if t >= limit_t:
                break
            batch, nbytes = [], 0
            batch_end = t + self.batch_ps
            while k < total and len(batch) < self.batch_frames:
                loop, i = divmod(k, n)
                t = t0 + loop * period + times[i]
                if t > batch_end or t >= limit_t:
                    break
                data = datas[i]
                batch.append(Frame(data, t, t, -1, name))
                nbytes += max(len(data) + 4, 64)
                k += 1
            self.frames += len(batch)
            self.bytes += nbytes
            yield env.timeout(batch[-1].t_ps - env.now)
            self._check_out()
            self.out.put(batch)

    def __repr__(self):
        return f"TrafficSource({self.name!r}, {self.pattern}, {self.frames} frames)"


class ClosedLoopClient:
    """Clients that each keep one request in flight: request, wait for the reply, think, again.

    Each of ``concurrency`` clients is one flow of a UDP (or TCP) template (its own source
    port); a reply is recognised by its destination port (or, sent back unchanged apart from
    the MAC addresses, by its source port). The round trip is measured where the
    replies arrive (the sink: reply arrival minus request birth). This is the closed loop of
    netperf's ``*_RR`` tests and memcached benchmarks: the offered load follows the service.

    Parameters
    ----------
    env : simpy.Environment
    out : element
        Where requests go (``put(batch)``).
    concurrency : int
        Requests in flight (clients).
    think_ps : int
        Pause between a reply and the client's next request.
    duration_ps : int or None
        No new request after this (from now).
    **template
        Frame options of :class:`TrafficSource` (``size``, ``proto``, ``src_mac``, ...).

    Members
    -------
    frames, bytes : int
        Requests sent.
    replies : int
        Replies seen.
    """

    def __init__(self, env, out, *, concurrency=1, think_ps=0, duration_ps=None, name="rr",
                 **template):
        _check(_is_int(concurrency) and 1 <= concurrency <= 64511,
               f"traffic.concurrency must be 1..64511, not {concurrency!r}")
        _check(_is_int(think_ps) and think_ps >= 0,
               f"traffic.think must not be negative, not {think_ps!r}")
        self.env = env
        self.out = out
        self.name = name
        self.concurrency = concurrency
        self.think_ps = think_ps
        self.end_ps = None if duration_ps is None else env.now + duration_ps
        template.pop("pattern", None)
        self._maker = TrafficSource(env, None, rate_mpps=1, count=0, flows=concurrency,
                                    name=name, **template)
        self._size = template.get("size") or 64
        self.frames = 0
        self.bytes = 0
        self.replies = 0
        env.process(self._start())

    def _request(self, flow, t_ps):
        data = self._maker.template(flow, self._size)
        self.frames += 1
        self.bytes += self._size
        return Frame(data, t_ps, t_ps, flow, self.name)

    def _start(self):
        yield self.env.timeout(0)
        now = self.env.now
        self.out.put([self._request(flow, now) for flow in range(self.concurrency)])

    def on_replies(self, batch):
        """Sink listener: every reply to one of these clients starts its next request."""
        nxt = []
        base = SPORT_BASE
        end = self.end_ps
        think = self.think_ps
        for frame in batch:
            data = frame.data
            l3 = 18 if data[12:14] == b"\x81\x00" else 14
            version = data[l3] >> 4
            l4 = l3 + (40 if version == 6 else (data[l3] & 0x0F) * 4)
            # A reply to client i goes to its port (base + i); a request sent straight back
            # (l2fwd) still comes from it.
            dport = int.from_bytes(data[l4 + 2:l4 + 4], "big")
            port = int.from_bytes(data[l4:l4 + 2], "big") if dport == DPORT else dport
            flow = port - base
            if not 0 <= flow < self.concurrency:
                continue
            self.replies += 1
            t = frame.t_ps + think
            if end is None or t < end:
                nxt.append(self._request(flow, t))
        if nxt:
            nxt.sort(key=lambda f: f.t_ps)
            at = nxt[-1].t_ps
            self.env.timeout(max(0, at - self.env.now)).callbacks.append(
                lambda _, batch=nxt: self.out.put(batch))


def _addr4(rng):
    return ".".join(str(rng.randrange(1, 255)) for _ in range(4))


def _addr6(rng):
    return "2001:db8:" + ":".join(f"{rng.randrange(65536):x}" for _ in range(6))


def mixed_frames(count=200, seed=1, flows=16, bad_ratio=0.1):
    """Return ``count`` Ethernet frames (bytes) and a label for each.

    Parameters
    ----------
    count : int
        Number of frames.
    seed : int
        Seed of the random mix (same seed, same capture).
    flows : int
        Number of distinct TCP/UDP flows the L4 frames belong to.
    bad_ratio : float
        Share of frames whose IP or L4 checksum is corrupted.
    """
    from scapy.layers.inet import ICMP, IP, TCP, UDP
    from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop
    from scapy.layers.l2 import ARP, Dot1AD, Dot1Q, Ether
    from scapy.packet import Raw

    rng = random.Random(seed)
    flow_table = []
    for _ in range(flows):
        v6 = rng.random() < 0.35
        flow_table.append({
            "v6": v6,
            "src": _addr6(rng) if v6 else _addr4(rng),
            "dst": _addr6(rng) if v6 else _addr4(rng),
            "sport": rng.randrange(1024, 65536),
            "dport": rng.choice([80, 443, 53, 4789, 11211, rng.randrange(1024, 65536)]),
            "proto": rng.choice(["tcp", "udp"]),
        })
    frames, labels = [], []
    for _ in range(count):
        eth = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
        kind = rng.random()
        if kind < 0.05:
            pkt = eth / ARP(psrc=_addr4(rng), pdst=_addr4(rng))
            frames.append(bytes(pkt))
            labels.append("arp")
            continue
        flow = rng.choice(flow_table)
        vlans = rng.choice([0, 0, 0, 1, 2])
        l2 = eth
        if vlans == 2:
            l2 = eth / Dot1AD(vlan=100) / Dot1Q(vlan=rng.randrange(1, 4095))
        elif vlans == 1:
            l2 = eth / Dot1Q(vlan=rng.randrange(1, 4095))
        payload = Raw(bytes(rng.randrange(256) for _ in range(rng.choice(
            [0, 6, 18, 64, 200, 512, 1200, 1400]))))
        if flow["v6"]:
            l3 = IPv6(src=flow["src"], dst=flow["dst"])
            if rng.random() < 0.15:
                l3 = l3 / IPv6ExtHdrHopByHop()
            label = "ipv6"
        else:
            l3 = IP(src=flow["src"], dst=flow["dst"], id=rng.randrange(65536))
            if rng.random() < 0.1:
                l3.options = [b"\x01\x01\x01\x00"]  # NOP NOP NOP EOL: 4 bytes of options
            label = "ipv4"
        if kind < 0.08:
            l4 = ICMP()
            label += "/icmp"
        elif flow["proto"] == "tcp":
            l4 = TCP(sport=flow["sport"], dport=flow["dport"], flags="PA",
                     seq=rng.randrange(1 << 32))
            label += "/tcp"
        else:
            l4 = UDP(sport=flow["sport"], dport=flow["dport"])
            label += "/udp"
        pkt = l2 / l3 / l4 / payload
        raw = bytearray(bytes(pkt))
        if not flow["v6"] and rng.random() < 0.05:
            # A non-first fragment: ports are not in it, RSS falls back to the 2-tuple.
            frag = l2 / IP(src=flow["src"], dst=flow["dst"], frag=64, proto=17) / payload
            raw = bytearray(bytes(frag))
            label = "ipv4/fragment"
        elif flow["v6"] and rng.random() < 0.03:
            frag = l2 / IPv6(src=flow["src"], dst=flow["dst"]) / IPv6ExtHdrFragment(
                offset=8, m=1, nh=17) / payload
            raw = bytearray(bytes(frag))
            label = "ipv6/fragment"
        if rng.random() < bad_ratio and len(raw) > 40:
            # Flip a byte of the payload region: the L4 (or IP) checksum no longer verifies.
            pos = rng.randrange(len(raw) - 8, len(raw))
            raw[pos] ^= 0x5A
            label += "/corrupt"
        frames.append(bytes(raw))
        labels.append(label)
    return frames, labels
