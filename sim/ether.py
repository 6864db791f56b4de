"""Ethernet wires, a learning switch and a measuring sink.

Every element follows the batch convention of :mod:`nicsim.sim.frame`: ``put(batch)`` takes a
time-ordered list of :class:`~nicsim.sim.frame.Frame`, works from each frame's ``t_ps`` and
hands one list on with one SimPy event, at the time of its last frame's arrival. Timing is
arithmetic (a ``free_at`` calendar per transmitter), so a wire costs one event per batch, not
per frame.

Byte counts used throughout:

* *frame bytes* (``len(frame.data)``): destination MAC to the end of the payload, no FCS;
* *L2 bytes*: frame bytes + 4-byte FCS, padded to the 64-byte minimum frame; counters named
  ``bytes`` and the sinks' Gb/s count these;
* *wire bytes* (:meth:`Frame.wire_bytes`): L2 bytes + 8-byte preamble/SFD + 12-byte
  inter-frame gap; they set the serialization time.
"""

# Ref: IEEE 802.3-2022 clause 3.2 (frame format), 3.5 (frame size), 4.4.2 (preamble, IFG);
# IEEE 802.1Q-2022 clause 9 (tag formats: C-tag 0x8100, S-tag 0x88a8).

from __future__ import annotations

import collections
from array import array
from fractions import Fraction

from nicsim.sim.frame import ETH_FCS_BYTES, ETH_MIN_FRAME_BYTES, Frame

__all__ = [
    "EthLink", "Switch", "SwitchPort", "Sink", "max_frame_bytes", "parse_mac",
    "LINK_LATENCY_PS", "LINK_QUEUE_BYTES", "SWITCH_LATENCY_PS", "SWITCH_BUFFER_BYTES",
    "ETH_HEADER_BYTES", "VLAN_TAG_BYTES", "VLAN_TPIDS",
]

LINK_LATENCY_PS = 500_000  # SimBricks' default Ethernet link latency (500 ns)
# Transmit backlog a link holds before it drops: an assumption (about 0.8 ms at 10 Gb/s, far
# more than a NIC's TX FIFO; the point is to count drops, not to model a particular MAC).
LINK_QUEUE_BYTES = 1 << 20
ETH_HEADER_BYTES = 14  # destination MAC, source MAC, EtherType
VLAN_TAG_BYTES = 4  # TPID + TCI, IEEE 802.1Q
VLAN_TPIDS = (0x8100, 0x88A8, 0x9100)  # C-tag, S-tag, and the pre-standard Q-in-Q TPID
_PREAMBLE_SFD_BYTES = 8
_IFG_BYTES = 12

# Port-to-port latency of a cut-through datacenter top-of-rack switch. Vendors quote roughly
# 300 ns (NVIDIA Spectrum-based) to 500 ns (Broadcom Tomahawk/Trident-based) for small frames;
# 400 ns is an assumption inside that range, not a measurement of one device.
SWITCH_LATENCY_PS = 400_000
# Packet buffer per output port: Broadcom Tomahawk has about 16 MB shared by 32 ports; we
# give each port a dedicated 512 KiB share (an assumption: no dynamic sharing is modeled).
SWITCH_BUFFER_BYTES = 512 * 1024


def max_frame_bytes(data, mtu):
    """Return the longest ``len(data)`` a link with ``mtu`` accepts for this frame.

    The limit is ``mtu + 14`` (Ethernet header; the FCS is not part of ``data``) plus 4 bytes
    per VLAN tag the frame carries (TPIDs 0x8100, 0x88a8, 0x9100 stacked after the source
    MAC). With ``mtu=1500`` that is the IEEE 802.3 maximum of 1518 bytes with FCS untagged,
    1522 with one tag, 1526 with two.
    """
    limit = mtu + ETH_HEADER_BYTES
    off = 12
    while off + 4 <= len(data) and int.from_bytes(data[off:off + 2], "big") in VLAN_TPIDS:
        limit += VLAN_TAG_BYTES
        off += VLAN_TAG_BYTES
    return limit


def parse_mac(mac):
    """Return a MAC address (``"aa:bb:cc:dd:ee:ff"``, ``"aa-bb-..."`` or 6 bytes) as bytes."""
    if isinstance(mac, bytes | bytearray) and len(mac) == 6:
        return bytes(mac)
    if isinstance(mac, str):
        try:
            raw = bytes.fromhex(mac.replace(":", "").replace("-", ""))
        except ValueError:
            raw = b""
        if len(raw) == 6:
            return raw
    raise ValueError(f"MAC address must look like 02:00:00:00:00:01, not {mac!r}")


def _l2_bytes(n):
    return n + ETH_FCS_BYTES if n + ETH_FCS_BYTES >= ETH_MIN_FRAME_BYTES else ETH_MIN_FRAME_BYTES


class EthLink:
    """Carry frames one way over an Ethernet wire: a transmitter queue, serialization, latency.

    Frames reach the transmitter at their ``t_ps`` (their ready time) and leave back to back
    at the line rate, each taking :meth:`Frame.wire_bytes` of wire time (padding, FCS,
    preamble and inter-frame gap). A frame *arrives* when its last FCS bit reaches the far end:
    end of its preamble and frame bytes on the wire plus ``latency_ps``; the inter-frame gap
    that follows delays only the next frame. Arriving frames get ``t_ps`` = arrival time and
    go to ``out`` as one batch per ``put``, at the last one's arrival, in the order received.

    The transmitter serves frames in the order ``put`` hands them over. Serialization times
    are exact rationals of picoseconds (the calendar does not drift at rates like 3 Gb/s);
    arrival times are rounded up to whole picoseconds.

    Parameters
    ----------
    env : simpy.Environment
    rate_gbps : float
        Line rate in Gb/s (10 Gb/s: 0.8 ns per byte).
    latency_ps : int
        Propagation and PHY latency added to every frame.
    mtu : int
        Largest IP packet (L3 bytes); longer frames are dropped as ``"mtu"``
        (see :func:`max_frame_bytes`).
    name : str
    out : element or None
        Receiver of the arriving batches (anything with ``put(batch)``); may be set later.
    queue_bytes : int or None
        Transmit backlog limit: a frame that has to wait for the wire is dropped
        (``"link_queue_full"``) when the frame bytes already waiting at its ready time plus
        its own would exceed this. The frame on the wire does not count. ``None``: no limit.
    capture : bool
        Keep ``(arrival t_ps, frame bytes)`` of every arriving frame for :meth:`write_pcap`.
    queue_drop : str
        The reason queue overflows are counted under (a switch port says ``"switch_buffer"``).

    Members
    -------
    frames, bytes : int
        Frames sent and their L2 bytes (with FCS and padding).
    drops : dict[str, int]
        Dropped frames by reason: ``"mtu"``, the queue reason, ``"no_receiver"``.
    capture : list of (int, bytes) or None
    """

    def __init__(self, env, rate_gbps, latency_ps=LINK_LATENCY_PS, mtu=1500, name="", out=None,
                 queue_bytes=LINK_QUEUE_BYTES, capture=False, *, queue_drop="link_queue_full"):
        label = f"link {name!r}" if name else "link"
        if not isinstance(rate_gbps, int | float) or not rate_gbps > 0:
            raise ValueError(f"{label}: rate_gbps must be a positive number, not {rate_gbps!r}")
        if not isinstance(latency_ps, int) or latency_ps < 0:
            raise ValueError(f"{label}: latency_ps must be a whole number of picoseconds >= 0, "
                             f"not {latency_ps!r}")
        if not isinstance(mtu, int) or not 68 <= mtu <= 65_535:
            raise ValueError(f"{label}: mtu must be 68..65535 bytes, not {mtu!r}")
        if queue_bytes is not None and (not isinstance(queue_bytes, int) or queue_bytes < 0):
            raise ValueError(f"{label}: queue_bytes must be a byte count >= 0 or None, "
                             f"not {queue_bytes!r}")
        self.env = env
        self.rate_gbps = rate_gbps
        self.latency_ps = latency_ps
        self.mtu = mtu
        self.name = name
        self.out = out
        self.queue_bytes = queue_bytes
        self.queue_drop = queue_drop
        # ps per byte = 8000 / rate_gbps, kept as _ppb / _den so the calendar stays exact.
        ps_per_byte = Fraction(8000) / Fraction(str(rate_gbps))
        self._ppb = ps_per_byte.numerator
        self._den = ps_per_byte.denominator
        self._free = 0  # when the wire is next free, in 1/_den ps
        self._busy = 0  # wire time used, in 1/_den ps
        self._waiting = collections.deque()  # (start, frame bytes) of frames not yet started
        self._backlog = 0
        self._max_untagged = mtu + ETH_HEADER_BYTES
        self.frames = 0
        self.bytes = 0
        self.drops = {"mtu": 0, queue_drop: 0}
        self.capture = [] if capture else None

    @property
    def busy_ps(self):
        """Wire time (serialization incl. preamble and gap) of every frame sent, in ps."""
        return self._busy // self._den

    @property
    def free_at_ps(self):
        """When the transmitter can start its next frame."""
        return -(-self._free // self._den)

    def serialization_ps(self, frame_bytes):
        """Return the wire time of a frame of ``frame_bytes`` (no FCS) with preamble and gap."""
        return -(-(_l2_bytes(frame_bytes) + 20) * self._ppb // self._den)

    def frame_ps(self, frame_bytes):
        """Return the time from a frame's first preamble bit to its last FCS bit (rounded down)."""
        return (_l2_bytes(frame_bytes) + _PREAMBLE_SFD_BYTES) * self._ppb // self._den

    def utilisation(self, now=None):
        """Return the share of ``[0, now]`` the wire was busy (``now`` defaults to env.now).

        Exact while frames are put no later than their ready time (the usual case): the
        calendar beyond ``now`` is then back to back and is not counted.
        """
        now = self.env.now if now is None else now
        if now <= 0:
            return 0.0
        busy = self._busy - max(0, self._free - now * self._den)
        return max(0, busy) / (now * self._den)

    def put(self, batch):
        """Hand a time-ordered batch of frames to the transmitter."""
        den, ppb, lat = self._den, self._ppb, self.latency_ps
        free, busy = self._free, self._busy
        waiting, backlog = self._waiting, self._backlog
        limit = self.queue_bytes
        max_untagged, mtu = self._max_untagged, self.mtu
        frame_gap = _PREAMBLE_SFD_BYTES * ppb  # preamble before the frame's bytes
        ifg = _IFG_BYTES * ppb
        capture = self.capture
        sent = []
        nbytes = 0
        dropped_mtu = dropped_queue = 0
        for frame in batch:
            data = frame.data
            n = len(data)
            if n > max_untagged and n > max_frame_bytes(data, mtu):
                dropped_mtu += 1
                continue
            t = frame.t_ps * den
            while waiting and waiting[0][0] <= t:
                backlog -= waiting.popleft()[1]
            if free > t:
                if limit is not None and backlog + n > limit:
                    dropped_queue += 1
                    continue
                waiting.append((free, n))
                backlog += n
                t = free
            l2 = n + 4 if n >= 60 else 64
            end = t + frame_gap + l2 * ppb
            free = end + ifg
            busy += free - t
            arrival = -(-end // den) + lat
            frame.t_ps = arrival
            nbytes += l2
            sent.append(frame)
            if capture is not None:
                capture.append((arrival, data))
        self._free, self._busy, self._backlog = free, busy, backlog
        if dropped_mtu:
            self.drops["mtu"] += dropped_mtu
        if dropped_queue:
            self.drops[self.queue_drop] += dropped_queue
        if not sent:
            return
        self.frames += len(sent)
        self.bytes += nbytes
        env = self.env
        event = env.timeout(max(0, sent[-1].t_ps - env.now), sent)
        event.callbacks.append(self._deliver)

    def _deliver(self, event):
        if self.out is None:
            self.drops["no_receiver"] = self.drops.get("no_receiver", 0) + len(event.value)
            return
        self.out.put(event.value)

    def write_pcap(self, path):
        """Write the captured arrivals as a nanosecond pcap (pcapng if ``path`` ends .pcapng)."""
        _write_capture(path, self.capture, f"link {self.name!r}")

    def __repr__(self):
        return f"EthLink({self.name!r}, {self.rate_gbps} Gb/s, {self.frames} frames)"


def _write_capture(path, capture, label):
    from nicsim.hw.pcap import Packet, write_pcap

    if capture is None:
        raise ValueError(f"{label} has no capture; create it with capture=True")
    write_pcap(path, [Packet(data, t_ps // 1000) for t_ps, data in capture])


class SwitchPort:
    """One port of a :class:`Switch`: ``put`` receives frames, ``out`` is where they leave.

    Members
    -------
    index : int
    link : EthLink
        The egress direction: the port's buffer, serialization and cable to ``out``.
    """

    def __init__(self, switch, index, link):
        self.switch = switch
        self.index = index
        self.link = link

    def put(self, batch):
        """Receive a time-ordered batch of frames on this port."""
        self.switch._ingress(self.index, batch)

    @property
    def out(self):
        """The element the port's egress link delivers to."""
        return self.link.out

    @out.setter
    def out(self, element):
        self.link.out = element


class Switch:
    """Forward frames between ports by destination MAC address, learning source addresses.

    A frame entering port *i* teaches the switch that its source MAC lives behind *i* (static
    entries are never overridden; entries do not age). It leaves on the port its destination
    was learned or configured on; broadcast, multicast and unknown unicast go to every other
    port (flooding), and a frame whose destination sits behind its own ingress port is
    filtered (``"same_port"``). Each output port has its own buffer of ``buffer_bytes`` frame
    bytes (overflow: ``"switch_buffer"``) and serializes at ``rate_gbps``.

    With ``cut_through`` a frame may start leaving ``latency_ps`` after its first bit came in
    (so with an idle output its last bit leaves ``latency_ps`` after it arrived, and ports are
    assumed to run at the rate of the links feeding them); without, ``latency_ps`` counts from
    its last bit (store and forward).

    Parameters
    ----------
    env : simpy.Environment
    name : str
    ports : int
        Number of ports.
    rate_gbps : float
        Rate of every port.
    latency_ps : int
        Forwarding latency (see :data:`SWITCH_LATENCY_PS`).
    buffer_bytes : int or None
        Buffer per output port, in frame bytes.
    link_latency_ps : int
        Latency of the cable leaving each port.
    mtu : int
    static : dict or None
        ``{mac: port}`` entries that learning never changes.
    cut_through : bool

    Members
    -------
    ports : list of SwitchPort
    table : dict[bytes, int]
        The forwarding table, MAC (6 bytes) to port.
    frames : int
        Frames received.
    """

    def __init__(self, env, name="switch", ports=4, rate_gbps=10.0, *,
                 latency_ps=SWITCH_LATENCY_PS, buffer_bytes=SWITCH_BUFFER_BYTES,
                 link_latency_ps=LINK_LATENCY_PS, mtu=1500, static=None, cut_through=True):
        if not isinstance(ports, int) or ports < 2:
            raise ValueError(f"switch {name!r}: ports must be a whole number >= 2, not {ports!r}")
        if not isinstance(latency_ps, int) or latency_ps < 0:
            raise ValueError(f"switch {name!r}: latency_ps must be a whole number of "
                             f"picoseconds >= 0, not {latency_ps!r}")
        self.env = env
        self.name = name
        self.latency_ps = latency_ps
        self.cut_through = cut_through
        self.ports = [
            SwitchPort(self, i, EthLink(env, rate_gbps, link_latency_ps, mtu, f"{name}.{i}",
                                        queue_bytes=buffer_bytes, queue_drop="switch_buffer"))
            for i in range(ports)]
        self.table = {}
        self._static = set()
        self.frames = 0
        self._drops = {"same_port": 0}
        for mac, port in (static or {}).items():
            self.add_static(mac, port)

    def add_static(self, mac, port):
        """Send frames for ``mac`` out of ``port`` whatever learning sees."""
        if not isinstance(port, int) or not 0 <= port < len(self.ports):
            raise ValueError(f"switch {self.name!r}: static entry port must be "
                             f"0..{len(self.ports) - 1}, not {port!r}")
        mac = parse_mac(mac)
        self.table[mac] = port
        self._static.add(mac)

    def port(self, index):
        """Return port ``index``."""
        return self.ports[index]

    def connect(self, index, out):
        """Deliver what leaves port ``index`` to ``out``."""
        self.ports[index].out = out

    @property
    def drops(self):
        """Dropped frames by reason, over forwarding and every port's buffer and wire."""
        total = dict(self._drops)
        for p in self.ports:
            for reason, n in p.link.drops.items():
                total[reason] = total.get(reason, 0) + n
        return total

    def _ingress(self, index, batch):
        table, static = self.table, self._static
        nports = len(self.ports)
        outputs = [[] for _ in range(nports)]
        latency = self.latency_ps
        cut_through = self.cut_through
        link = self.ports[index].link
        filtered = 0
        for frame in batch:
            data = frame.data
            src = data[6:12]
            if src not in static and table.get(src) != index and not src[0] & 1:
                table[src] = index
            ready = frame.t_ps + latency
            if cut_through:  # count from the first bit: back over the frame and its preamble
                ready -= link.frame_ps(len(data))
            dst = data[0:6]
            port = None if dst[0] & 1 else table.get(dst)
            if port is None:
                first = True
                for p in range(nports):
                    if p == index:
                        continue
                    if first:
                        copy = frame
                        first = False
                    else:
                        copy = Frame(data, frame.t_ps, frame.born_ps, frame.flow, frame.source,
                                     None if frame.meta is None else dict(frame.meta))
                    copy.t_ps = ready
                    outputs[p].append(copy)
            elif port == index:
                filtered += 1
            else:
                frame.t_ps = ready
                outputs[port].append(frame)
        self.frames += len(batch)
        if filtered:
            self._drops["same_port"] += filtered
        for p, frames in enumerate(outputs):
            if frames:
                self.ports[p].link.put(frames)

    def __repr__(self):
        return f"Switch({self.name!r}, {len(self.ports)} ports, {self.frames} frames)"


class Sink:
    """Absorb frames and measure them: counts, per-flow counts, latency, throughput.

    Latency is ``t_ps - born_ps`` of each frame (its arrival here minus its first bit leaving
    the source). Throughput is measured between the first and the last arrival and counts the
    frames after the first (``n - 1`` frames over ``last - first``), so back-to-back frames on
    a 10 Gb/s wire measure exactly 14.88 Mpps.

    Parameters
    ----------
    env : simpy.Environment
    name : str
    capture : bool
        Keep ``(t_ps, frame bytes)`` of every frame for :meth:`write_pcap`.

    Members
    -------
    frames, bytes : int
        Frames received and their L2 bytes (with FCS and padding to 64 bytes).
    wire_bytes : int
        The same plus preamble and inter-frame gap (20 bytes a frame).
    flows : dict[(str, int), int]
        Frames per ``(frame.source, frame.flow)``.
    latencies_ps : array.array of int64
        Latency of every frame, in arrival order.
    first_ps, last_ps : int or None
        First and last arrival.
    """

    def __init__(self, env, name="sink", capture=False):
        self.env = env
        self.name = name
        self.frames = 0
        self.bytes = 0
        self.wire_bytes = 0
        self.flows = {}
        self.latencies_ps = array("q")
        self.first_ps = None
        self.last_ps = None
        self._first_l2 = 0
        self.capture = [] if capture else None
        self.listeners = []  # callables given every batch (closed-loop clients)

    def put(self, batch):
        """Receive a time-ordered batch of frames."""
        if not batch:
            return
        flows = self.flows
        lat = []
        nbytes = 0
        for frame in batch:
            n = len(frame.data)
            nbytes += n + 4 if n >= 60 else 64
            lat.append(frame.t_ps - frame.born_ps)
            key = (frame.source, frame.flow)
            flows[key] = flows.get(key, 0) + 1
        self.latencies_ps.extend(lat)
        if self.first_ps is None:
            self.first_ps = batch[0].t_ps
            self._first_l2 = _l2_bytes(len(batch[0].data))
        self.last_ps = batch[-1].t_ps
        self.frames += len(batch)
        for listener in self.listeners:
            listener(batch)
        self.bytes += nbytes
        self.wire_bytes += nbytes + 20 * len(batch)
        if self.capture is not None:
            self.capture.extend((f.t_ps, f.data) for f in batch)

    def latency_us(self, q):
        """Return the ``q``-th percentile (0..100) of latency in microseconds.

        Percentiles interpolate linearly between the closest ranks (numpy's default, and
        ``statistics.quantiles(method="inclusive")``); ``nan`` when nothing arrived.
        """
        import numpy as np

        if not self.latencies_ps:
            return float("nan")
        lat = np.frombuffer(self.latencies_ps, dtype=np.int64)
        return float(np.percentile(lat, q)) / 1e6

    def percentiles_us(self):
        """Return ``{"p50": ..., "p99": ..., "p999": ...}`` latency in microseconds."""
        return {"p50": self.latency_us(50), "p99": self.latency_us(99),
                "p999": self.latency_us(99.9)}

    def mean_latency_us(self):
        """Return the mean latency in microseconds (``nan`` when nothing arrived)."""
        if not self.latencies_ps:
            return float("nan")
        return sum(self.latencies_ps) / len(self.latencies_ps) / 1e6

    def interval_ps(self):
        """Return the measured interval, last arrival minus first (0 before two frames)."""
        return 0 if self.first_ps is None else self.last_ps - self.first_ps

    def mpps(self):
        """Return the packet rate over the measured interval, in millions of frames a second."""
        span = self.interval_ps()
        return (self.frames - 1) * 1e6 / span if span > 0 else 0.0

    def gbps(self, wire=False):
        """Return the throughput over the measured interval in Gb/s.

        Counts L2 bytes (frame with FCS, padded to 64 bytes); with ``wire`` also the 20 bytes
        of preamble and gap each frame costs, so a saturated wire measures its line rate.
        """
        span = self.interval_ps()
        if span <= 0:
            return 0.0
        nbytes = self.bytes - self._first_l2
        if wire:
            nbytes += 20 * (self.frames - 1)
        return nbytes * 8 * 1000 / span

    def write_pcap(self, path):
        """Write the captured frames as a nanosecond pcap (pcapng if ``path`` ends .pcapng)."""
        _write_capture(path, self.capture, f"sink {self.name!r}")

    def __repr__(self):
        return f"Sink({self.name!r}, {self.frames} frames)"
