# Ref: RFC 1624 §3 (incremental update of the IPv4 header checksum), RFC 791 §3.1 (TTL),
#      RFC 8200 §3 (hop limit), RFC 768 (UDP), memcached protocol.txt ("UDP protocol": the
#      8-byte frame header; "get"/"VALUE"/"END")
"""Applications on raw frames: what a poll-mode, interrupt-driven or netmap path runs.

An application gets a batch of received frames as *packets* ``(completion entry, frame bytes
or None, birth time or None)``: the bytes only when it reads them (:attr:`App.needs_data`),
the birth time (when the frame's first bit left its source) when the NIC model recorded one.
Each batch goes through two calls:

* :meth:`App.process` does the work and returns its CPU time in picoseconds, charged as a
  sum of named operations of :class:`nicsim.host.cpu.CostModel` (``app_work`` on top of them
  stands for a heavier application, 0 by default);
* :meth:`App.finish` stamps the batch done at the time the path's core got there and returns
  the frames to send back, with the birth times of the requests they answer, so the sink
  behind the wire measures round trips.

Receive-side driver work (completion reads, buffer metadata, allocation, freeing) and the
transmit copy, descriptors and doorbell are the path's, not the application's. Frames an
application refuses are counted in ``path.drops`` by reason.

Members every application keeps (what results read): ``frames``, ``bytes`` (frames handled
or sent back and their bytes without FCS), ``latency_ps`` (birth to done, for applications
that do not answer), ``first_ps``, ``last_ps``, ``completions`` (receive completions seen;
an LRO frame is one completion standing for several frames).
"""

from __future__ import annotations

import hashlib
import ipaddress
from array import array

from nicsim.hw.nic.formats import TxFlags
from nicsim.hw.ref.checksum import TxCommand, TxMode, csum_adjust, tx_checksum
from nicsim.hw.ref.packet import IPPROTO_UDP, be16, parse_ip

__all__ = ["App", "AppGroup", "DropApp", "L2Fwd", "L3Fwd", "UdpEcho", "KvStore", "Lpm", "APPS",
           "NEXT_HOP_MAC", "DEFAULT_ROUTES", "KV_VALUE_BYTES", "KV_MAX_VALUE_BYTES"]

_LEN = 2  # COMPLETION field positions used here
_SEGS = 7

# The gateway l3fwd sends everything to unless routes say otherwise (DPDK l3fwd's --eth-dest;
# an assumption of ours: any locally administered address works).
NEXT_HOP_MAC = bytes.fromhex("0200000000fe")
DEFAULT_ROUTES = (("0.0.0.0/0", NEXT_HOP_MAC), ("::/0", NEXT_HOP_MAC))
KV_VALUE_BYTES = 64  # default value size of the key-value store
# memcached splits UDP replies over datagrams of at most 1400 payload bytes
# (UDP_MAX_PAYLOAD_SIZE); this store answers in one: 8 (frame header) + 6 ("VALUE ") + 250
# (memcached's longest key) + 9 (" 0 1024\r\n") + 1024 + 7 ("\r\nEND\r\n") = 1304 bytes.
KV_MAX_VALUE_BYTES = 1024


def _ipv4_fragment(data, l3):
    return be16(data, l3 + 6) & 0x3FFF  # MF flag or a fragment offset


class App:
    """Drop every frame (DPDK ``rxonly``): count it and record its latency.

    Parameters
    ----------
    path : object
        The packet path: ``path.costs`` (:class:`nicsim.host.cpu.CostModel`),
        ``path.drops`` (dict), ``path.ctx`` (:class:`nicsim.host.paths.PathContext`).
    """

    name = "drop"
    needs_data = False

    def __init__(self, path):
        self.path = path
        self.costs = path.costs
        self.drops = path.drops
        self.frames = 0
        self.bytes = 0
        self.latency_ps = array("q")
        self.first_ps = None  # first and last time frames were finished
        self.last_ps = None
        self.completions = 0
        self._batch = ()
        self._out = None

    def process(self, pkts):
        """Work on the packets; return the CPU time (ps). Results wait for :meth:`finish`."""
        self._batch = pkts
        return len(pkts) * self.costs.app_work  # rxonly does not touch the frame

    def finish(self, t_done):
        """Stamp the processed batch done at ``t_done``; return ``(frames, births, tx
        flags)`` to send, or ``None``."""
        pkts = self._batch
        lat = self.latency_ps
        nbytes = segs = 0
        for entry, _, born in pkts:
            if born is not None:
                lat.append(t_done - born)
            nbytes += entry[_LEN]
            segs += entry[_SEGS]
        self.completions += len(pkts)
        self._done(segs, nbytes, t_done)  # an LRO frame stands for its segments
        self._batch = ()
        return None

    def _done(self, frames, nbytes, t_done):
        if self.first_ps is None:
            self.first_ps = t_done
        self.last_ps = t_done
        self.frames += frames
        self.bytes += nbytes

    def _drop(self, reason, count=1):
        self.drops[reason] = self.drops.get(reason, 0) + count


class _Responder(App):
    """An application that answers frames: :meth:`_answer` makes the reply of one frame."""

    needs_data = True
    flags = 0  # transmit descriptor flags of the replies

    def process(self, pkts):
        out = []
        born = []
        refused = {}
        answer = self._answer
        for entry, data, t_born in pkts:
            reply = answer(entry, data)
            if reply.__class__ is str:
                refused[reply] = refused.get(reply, 0) + 1
                continue
            out.append(reply)
            born.append(t_born)
        for reason, count in refused.items():
            self._drop(reason, count)
        self.completions += len(pkts)
        self._out = (out, born)
        return self._cost(pkts, out)

    def finish(self, t_done):
        out, born = self._out
        self._out = None
        self._done(len(out), sum(map(len, out)), t_done)
        return (out, born, self.flags) if out else None

    def _cost(self, pkts, out):
        raise NotImplementedError

    def _answer(self, entry, data):
        """Return the reply (bytes) to one frame, or the reason (str) it is dropped."""
        raise NotImplementedError


class L2Fwd(_Responder):
    """Send every frame back out of the port it came in on with its MAC addresses swapped
    (DPDK ``l2fwd`` with MAC updating)."""

    name = "l2fwd"

    def _cost(self, pkts, out):
        c = self.costs
        # The Ethernet header's cache line is in the LLC (DDIO); the swap is in registers.
        return len(pkts) * (c.l3_hit + c.app_work)

    def _answer(self, entry, data):
        return data[6:12] + data[0:6] + data[12:]


class Lpm:
    """A longest-prefix-match table of IPv4 or IPv6 routes (what DPDK's ``rte_lpm`` answers;
    its cost is ``lpm_lookup`` whatever the structure here).

    Parameters
    ----------
    routes : iterable of (str, object)
        ``("10.0.0.0/8", next_hop)``; prefixes of the other IP version are left out.
    version : int
        4 or 6.
    """

    def __init__(self, routes, version):
        self.bits = 32 if version == 4 else 128
        self.tables = {}
        for prefix, hop in routes:
            try:
                net = ipaddress.ip_network(prefix)
            except ValueError as exc:
                raise ValueError(f"l3fwd route {prefix!r} is not an IP prefix ({exc})") from None
            if net.version != version:
                continue
            shift = self.bits - net.prefixlen
            self.tables.setdefault(net.prefixlen, {})[int(net.network_address) >> shift] = hop
        self.lengths = sorted(self.tables, reverse=True)

    def lookup(self, addr):
        """Return the next hop of the longest prefix holding ``addr`` (int), or ``None``."""
        bits = self.bits
        for length in self.lengths:
            hop = self.tables[length].get(addr >> (bits - length))
            if hop is not None:
                return hop
        return None


class L3Fwd(_Responder):
    """Route IPv4 and IPv6 frames (DPDK ``l3fwd`` with LPM): look the destination up, drop a
    frame whose TTL (hop limit) would expire, decrement it, update the IPv4 header checksum
    incrementally, rewrite the MAC addresses to the next hop's and the port's own (the
    address the frame came to), and send the frame out of the port.

    Routes map a prefix to the next hop's MAC address (:data:`DEFAULT_ROUTES`: everything to
    :data:`NEXT_HOP_MAC`; change them with :meth:`set_routes`). Refused: ``not_ip``,
    ``ttl_exceeded`` (no ICMP is sent), ``no_route``.
    """

    name = "l3fwd"

    def __init__(self, path, routes=DEFAULT_ROUTES):
        super().__init__(path)
        self.set_routes(routes)

    def set_routes(self, routes):
        """Replace the routing table with ``[(prefix, next hop MAC bytes)]``."""
        routes = list(routes)
        self.lpm = {4: Lpm(routes, 4), 6: Lpm(routes, 6)}

    def _cost(self, pkts, out):
        c = self.costs
        # Header line from the LLC, one LPM lookup; the TTL, checksum and MAC updates are a
        # few instructions on that line.
        return len(pkts) * (c.l3_hit + c.lpm_lookup + c.app_work)

    def _answer(self, entry, data):
        ip = parse_ip(data)
        if ip is None:
            return "not_ip"
        l3 = ip.l2_len
        buf = bytearray(data)
        if ip.version == 4:
            ttl = buf[l3 + 8]
            if ttl <= 1:
                return "ttl_exceeded"
            hop = self.lpm[4].lookup(int.from_bytes(buf[l3 + 16:l3 + 20], "big"))
            if hop is None:
                return "no_route"
            # RFC 1624: only the 16-bit word holding the TTL changes.
            old = (ttl << 8) | buf[l3 + 9]
            check = csum_adjust(be16(buf, l3 + 10), (old,), (old - 0x100,))
            buf[l3 + 8] = ttl - 1
            buf[l3 + 10] = check >> 8
            buf[l3 + 11] = check & 0xFF
        else:
            hops = buf[l3 + 7]
            if hops <= 1:
                return "ttl_exceeded"
            hop = self.lpm[6].lookup(int.from_bytes(buf[l3 + 24:l3 + 40], "big"))
            if hop is None:
                return "no_route"
            buf[l3 + 7] = hops - 1
        buf[6:12] = data[0:6]
        buf[0:6] = hop
        return bytes(buf)


class UdpEcho(_Responder):
    """Send every UDP datagram back to where it came from: MAC addresses, IP addresses and
    ports swapped, payload unchanged.

    Swapping leaves both checksums valid (the ones'-complement sums, pseudo-header included,
    do not depend on the order of their words), so none is recomputed. Refused: ``not_udp``
    (other frames, IPv4 fragments).
    """

    name = "udp_echo"

    def _cost(self, pkts, out):
        c = self.costs
        return len(pkts) * (c.l3_hit + c.app_work)

    def _answer(self, entry, data):
        ip = parse_ip(data)
        if ip is None or ip.protocol != IPPROTO_UDP:
            return "not_udp"
        l3 = ip.l2_len
        if ip.version == 4:
            if _ipv4_fragment(data, l3):
                return "not_udp"
            src, dst, size = l3 + 12, l3 + 16, 4
        else:
            src, dst, size = l3 + 8, l3 + 24, 16
        l4 = l3 + ip.header_len
        if len(data) < l4 + 8:
            return "not_udp"
        buf = bytearray(data)
        buf[0:6], buf[6:12] = data[6:12], data[0:6]
        buf[src:src + size], buf[dst:dst + size] = data[dst:dst + size], data[src:src + size]
        buf[l4:l4 + 2], buf[l4 + 2:l4 + 4] = data[l4 + 2:l4 + 4], data[l4:l4 + 2]
        return bytes(buf)


class KvStore(_Responder):
    """A memcached-like key-value store over UDP: every request is a GET.

    A request's UDP payload starts with memcached's 8-byte UDP frame header (request ID,
    sequence number, datagram count, reserved); the rest is the key, or, when it reads
    ``get <key>\\r\\n`` (the ASCII protocol), ``<key>``. A payload without key bytes uses its
    source address and port as the key. The store holds every key (it was filled before the
    run): the value of a key is ``value_bytes`` bytes derived from it. One ``hash_lookup``
    per request.

    The reply goes back to the requester (addresses and ports swapped) with the request ID,
    sequence 0 of 1 datagram, then ``VALUE <key> 0 <bytes>\\r\\n<value>\\r\\nEND\\r\\n`` for an
    ASCII GET, or the bare value. Its IPv4 header and UDP checksums are left to the NIC when
    it offers ``tx_csum``, otherwise summed in software (``csum`` per byte). Refused:
    ``not_udp``.

    ``value_bytes`` comes from the scenario's ``host.kv_value_bytes`` when it has one, else
    :data:`KV_VALUE_BYTES`; set the attribute to change it.
    """

    name = "kv"

    def __init__(self, path):
        super().__init__(path)
        params = getattr(path.ctx, "params", None)
        self.value_bytes = getattr(params, "kv_value_bytes", KV_VALUE_BYTES)
        self.offload = "tx_csum" in getattr(path.ctx, "features", ())
        self.flags = TxFlags.CSUM_AUTO if self.offload else 0
        self.values = {}

    @property
    def value_bytes(self):
        """Bytes of every value."""
        return self._value_bytes

    @value_bytes.setter
    def value_bytes(self, size):
        if not isinstance(size, int) or not 0 <= size <= KV_MAX_VALUE_BYTES:
            raise ValueError(f"kv value_bytes must be 0..{KV_MAX_VALUE_BYTES} (one UDP "
                             f"datagram), not {size!r}")
        self._value_bytes = size
        self.values = {}

    def _cost(self, pkts, out):
        c = self.costs
        ps = len(pkts) * (c.l3_hit + c.hash_lookup + c.app_work)
        if not self.offload:
            # Software checksums: the IP header and the UDP datagram of every reply.
            ps += round(c.csum * sum(len(frame) - 14 for frame in out))
        return ps

    def value(self, key):
        """Return the value stored under ``key``."""
        value = self.values.get(key)
        if value is None:
            seed = hashlib.blake2b(key, digest_size=16).digest()
            value = (seed * (self._value_bytes // 16 + 1))[:self._value_bytes]
            self.values[key] = value
        return value

    def _answer(self, entry, data):
        ip = parse_ip(data)
        if ip is None or ip.protocol != IPPROTO_UDP:
            return "not_udp"
        l3 = ip.l2_len
        l4 = l3 + ip.header_len
        if ip.version == 4:
            if _ipv4_fragment(data, l3):
                return "not_udp"
            end = l3 + be16(data, l3 + 2)
            src, dst, size = l3 + 12, l3 + 16, 4
        else:
            end = l4 + be16(data, l3 + 4)
            src, dst, size = l3 + 8, l3 + 24, 16
        if len(data) < l4 + 8 or end > len(data):
            return "not_udp"
        payload = data[l4 + 8:end]
        ascii_get = payload[8:12] == b"get "
        if ascii_get:
            key = payload[12:].split(b"\r\n", 1)[0].strip()
        else:
            key = payload[8:] or data[src:src + size] + data[l4:l4 + 2]
        value = self.value(key)
        if ascii_get:
            body = b"VALUE %s 0 %d\r\n%s\r\nEND\r\n" % (key, len(value), value)
        else:
            body = value
        udp_len = 8 + 8 + len(body)
        header = bytearray(data[:l4])
        header[0:6], header[6:12] = data[6:12], data[0:6]
        header[src:src + size], header[dst:dst + size] = data[dst:dst + size], \
            data[src:src + size]
        if ip.version == 4:
            total = ip.header_len + udp_len
            header[l3 + 2] = total >> 8
            header[l3 + 3] = total & 0xFF
            header[l3 + 8] = 64  # a fresh datagram's TTL
            header[l3 + 10] = header[l3 + 11] = 0
        else:
            header[l3 + 4] = udp_len >> 8
            header[l3 + 5] = udp_len & 0xFF
            header[l3 + 7] = 64
        udp = (data[l4 + 2:l4 + 4] + data[l4:l4 + 2] + udp_len.to_bytes(2, "big") + b"\0\0"
               + (payload[:2] if len(payload) >= 2 else b"\0\0") + b"\0\0\0\1\0\0")
        reply = bytes(header) + udp + body
        if not self.offload:
            reply = tx_checksum(reply, TxCommand(TxMode.AUTO)).frame
        return reply


APPS = {cls.name: cls for cls in (App, L2Fwd, L3Fwd, UdpEcho, KvStore)}
DropApp = App


class AppGroup:
    """Several instances of one application (one per thread that works concurrently) seen as
    one for the results: counts add up, latencies join, first and last span them all."""

    def __init__(self, apps):
        self.apps = list(apps)
        self.needs_data = self.apps[0].needs_data if self.apps else False
        self.name = self.apps[0].name if self.apps else ""

    @property
    def frames(self):
        return sum(a.frames for a in self.apps)

    @property
    def bytes(self):
        return sum(a.bytes for a in self.apps)

    @property
    def completions(self):
        return sum(a.completions for a in self.apps)

    @property
    def latency_ps(self):
        joined = array("q")
        for a in self.apps:
            joined.extend(a.latency_ps)
        return joined

    @property
    def first_ps(self):
        times = [a.first_ps for a in self.apps if a.first_ps is not None]
        return min(times) if times else None

    @property
    def last_ps(self):
        times = [a.last_ps for a in self.apps if a.last_ps is not None]
        return max(times) if times else None
