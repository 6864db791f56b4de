# Ref: RFC 9293 §3.1 (header), §3.3.2 (states), §3.4 (sequence numbers), §3.5 (open),
#      §3.6 (close), §3.8.6 (windows, SWS avoidance, delayed ACK), §3.10 (event processing);
#      RFC 6298 (retransmission timer), RFC 5681 (congestion control), RFC 6582 (NewReno),
#      RFC 7323 §2 (window scale), RFC 5961 §3-§5 (RST, SYN and ACK checks), RFC 6528 (ISN),
#      RFC 1122 §4.2.3.2 (delayed ACK), RFC 826 (ARP), RFC 792 (ICMP echo), RFC 791 (IPv4),
#      Linux net/ipv4/tcp_output.c tcp_xmit_probe_skb() (zero-window probe),
#      net/ipv4/tcp_timer.c tcp_retransmit_timer() (a window shrunk to zero with data in flight)
"""Golden reference of the TCP offload engine: ARP, ICMP echo, IPv4 and TCP sessions.

:class:`TcpEngine` is the behavioural specification the RTL engine (``rtl/toe``) is checked
against, and the engine the Linux bridge (:mod:`nicsim.hw.toe.bridge`) runs when no RTL is
asked for. It owns one IPv4 address and one MAC address, answers ARP requests and ICMP echo
requests for that address, and runs up to ``max_sessions`` TCP connections.

Time is an integer count of engine clock cycles (:data:`CLOCK_HZ` by default, the 156.25 MHz
of a 64-bit 10 Gb/s datapath). The caller passes the current cycle to every call; timers fire in
:meth:`TcpEngine.advance`.

What the engine does, and the choices where the RFCs leave room:

* IPv4 without options (a datagram with options is dropped, reason ``ip_options``) and
  without fragments (``fragment``); frames up to :data:`MAX_FRAME_LEN` bytes (``oversize``).
* Options: MSS and window scale (RFC 7323 §2) in SYN segments; no SACK, no timestamps (a peer
  that offers them gets a SYN-ACK without them and does without). Unknown options are skipped.
* Sending: no Nagle (segments leave as soon as window and congestion window allow), sender
  silly-window avoidance (RFC 9293 §3.8.6.2.1: a segment is full-sized, empties the send buffer,
  is at least half the largest window seen, or nothing is in flight).
* Retransmission timer per RFC 6298 with integer arithmetic in cycles (``srtt = (7 srtt + r) /
  8``, ``rttvar = (3 rttvar + |srtt - r|) / 4``), one timed segment at a time, Karn's rule,
  exponential backoff, ``rto_min`` 200 ms by default (Linux TCP_RTO_MIN; RFC 6298 §2.4 asks for
  1 s, which a configuration can set). On timeout: ``cwnd = 1 MSS``, go back to ``snd_una``.
  After a handshake whose SYN (or SYN-ACK) timed out and gave no RTT sample, the RTO is at
  least 3 s (RFC 6298 §5.7).
* Congestion control: NewReno (RFC 5681 slow start and congestion avoidance, the latter by
  counting acknowledged bytes as RFC 5681 §3.1 recommends (RFC 3465), initial window of
  RFC 6928 (10 segments of 1460 bytes, as Linux); RFC 6582 fast retransmit on the third
  duplicate ACK, fast recovery with partial ACKs, ``recover`` guarding against a second
  reduction).
* Receiving: cumulative ACKs, delayed ACK (every second data segment or after ``delack``), an
  immediate ACK for out-of-order data, for data that fills a hole and for a FIN; receiver
  silly-window avoidance (the right edge moves by at least ``min(buffer / 2, MSS)``); windows
  never shrink.
* Out-of-order segments are held: inside the receive window, in at most ``ooo_ranges`` disjoint
  byte ranges per session; a segment that would need one more range is dropped (reason
  ``ooo_full``) and recovered by the peer's retransmission. The bytes sit where they belong in
  the session's receive buffer, so holding them costs no memory beyond that buffer, only the
  range bookkeeping; without them one loss would cost every later segment of the window, which
  the peer (no SACK) recovers one per round trip.
* Zero window: with nothing in flight, the persist timer sends a probe with ``seq = snd_una -
  1`` and no data (as Linux does), backing off from the RTO up to ``rto_max``. With data in
  flight (the peer shrank its window to zero), the retransmission timer probes: each timeout
  sends the first unacknowledged segment again (as Linux does), with the RTO backing off, and
  counts no retry. Either way the connection never times out while the window is closed.
* RST and SYN checks of RFC 5961 (also RFC 9293 §3.10.7.4): a RST is accepted only at exactly
  ``rcv_nxt``; a RST elsewhere in the window or any SYN in a synchronized state gets a challenge
  ACK; an ACK older than ``snd_una - max window`` is dropped with a challenge ACK.
* Half-open connections (SYN-RECEIVED after a passive open) are bounded by ``max_half_open``;
  a new SYN beyond the bound evicts the oldest one, so a SYN flood cannot take the sessions of
  established connections.
* TIME-WAIT lasts ``time_wait`` cycles and is restarted by a retransmitted FIN.
* Sessions are found and allocated by :class:`SessionTable` (Toeplitz hash, bounded probing,
  lowest free session number), the lookup the RTL implements.

Application interface: :meth:`~TcpEngine.listen`, :meth:`~TcpEngine.open`,
:meth:`~TcpEngine.send`, :meth:`~TcpEngine.recv`, :meth:`~TcpEngine.close`,
:meth:`~TcpEngine.abort`, and :class:`Notification` records (connected, data available, space
available, closed, reset) taken with :meth:`~TcpEngine.notifications`. A session is named by
its slot number in the session table.

Every frame the engine does not use is counted in :attr:`TcpEngine.drops` under a reason.
"""

from __future__ import annotations

import enum
import hashlib
from collections import Counter, deque
from dataclasses import dataclass, field

from .checksum import ones_sum
from .packet import be16, be32
from .rss import DEFAULT_KEY, toeplitz

__all__ = [
    "CLOCK_HZ",
    "MAX_FRAME_LEN",
    "Notice",
    "Notification",
    "Segment",
    "SessionTable",
    "State",
    "TcpConfig",
    "TcpEngine",
    "TcpError",
    "build_tcp_frame",
    "cycles",
    "ip_to_bytes",
    "parse_options",
    "parse_tcp_frame",
    "seq_ge",
    "seq_gt",
    "seq_le",
    "seq_lt",
]

CLOCK_HZ = 156_250_000  # 64-bit datapath at 10 Gb/s: 10e9 / 64
MAX_FRAME_LEN = 9216  # frame buffer of the RTL engine: a 9000-byte MTU and headers
ETHERTYPE_ARP = 0x0806
ETHERTYPE_IPV4 = 0x0800
IPPROTO_ICMP = 1
IPPROTO_TCP = 6
BROADCAST = b"\xff" * 6

FIN, SYN, RST, PSH, ACK, URG = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20

_MOD = 1 << 32
_MAX_WSCALE = 14  # RFC 7323 §2.3
_EPHEMERAL_FIRST = 49152  # RFC 6335 §6 dynamic ports
_TCP_HEADER = 20
_IPV4_HEADER = 20
_ETH_HEADER = 14


def cycles(seconds: float, clock_hz: int = CLOCK_HZ) -> int:
    """Return ``seconds`` as a whole number of cycles of a ``clock_hz`` clock."""
    return int(round(seconds * clock_hz))


def seq_lt(a: int, b: int) -> bool:
    """Return whether sequence number ``a`` comes before ``b`` (RFC 9293 §3.4, modulo 2**32)."""
    return 0 < (b - a) % _MOD < 1 << 31


def seq_le(a: int, b: int) -> bool:
    """Return whether ``a`` comes before or equals ``b`` modulo 2**32."""
    return a == b or seq_lt(a, b)


def seq_gt(a: int, b: int) -> bool:
    """Return whether ``a`` comes after ``b`` modulo 2**32."""
    return seq_lt(b, a)


def seq_ge(a: int, b: int) -> bool:
    """Return whether ``a`` comes after or equals ``b`` modulo 2**32."""
    return a == b or seq_lt(b, a)


def _diff(a: int, b: int) -> int:
    """Return ``a - b`` modulo 2**32."""
    return (a - b) % _MOD


def ip_to_bytes(address: str | bytes) -> bytes:
    """Return a dotted-quad IPv4 address as 4 bytes (4 bytes are returned as they are)."""
    if isinstance(address, bytes | bytearray):
        if len(address) != 4:
            raise TcpError(f"An IPv4 address has 4 bytes, not {len(address)}")
        return bytes(address)
    parts = address.split(".")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != 4 or not all(0 <= v <= 255 for v in values):
        raise TcpError(f"Not an IPv4 address: {address!r}")
    return bytes(values)


class TcpError(Exception):
    """A call of the application interface the engine cannot carry out."""


class State(enum.Enum):
    """Connection states of RFC 9293 §3.3.2 (LISTEN is a port, not a session here)."""

    SYN_SENT = "SYN-SENT"
    SYN_RECEIVED = "SYN-RECEIVED"
    ESTABLISHED = "ESTABLISHED"
    FIN_WAIT_1 = "FIN-WAIT-1"
    FIN_WAIT_2 = "FIN-WAIT-2"
    CLOSE_WAIT = "CLOSE-WAIT"
    CLOSING = "CLOSING"
    LAST_ACK = "LAST-ACK"
    TIME_WAIT = "TIME-WAIT"
    CLOSED = "CLOSED"


_SENDING_STATES = frozenset((State.ESTABLISHED, State.CLOSE_WAIT, State.FIN_WAIT_1,
                             State.CLOSING, State.LAST_ACK))
_RECEIVING_STATES = frozenset((State.ESTABLISHED, State.FIN_WAIT_1, State.FIN_WAIT_2))


class Notice(enum.Enum):
    """Kinds of notification to the application.

    Members
    -------
    CONNECTED
        The three-way handshake completed (active or passive open).
    DATA
        Received data is ready for :meth:`TcpEngine.recv`.
    SPACE
        Send buffer space was freed after a :meth:`TcpEngine.send` accepted less than offered.
    CLOSED
        ``info="peer"``: the peer sent FIN, no more data will come; ``info="done"``: the
        session is released and its number may be reused.
    RESET
        The connection was reset by the peer (``info="rst"``), by a retransmission timeout
        (``info="timeout"``) or refused (``info="refused"``); the session is released.
    """

    CONNECTED = "connected"
    DATA = "data"
    SPACE = "space"
    CLOSED = "closed"
    RESET = "reset"


@dataclass(frozen=True)
class Notification:
    """One notification to the application: its kind, session and detail."""

    kind: Notice
    session: int
    info: str = ""


@dataclass(frozen=True)
class TcpConfig:
    """Parameters of the engine; times in engine clock cycles.

    Members
    -------
    mss : int
        Largest segment payload to send and to announce (1460 for a 1500-byte MTU).
    rx_buffer, tx_buffer : int
        Receive and send buffer per session in bytes (1 KiB to 1 GiB).
    max_sessions : int
        Size of the session table (1 to 1024).
    max_half_open : int
        Most sessions in SYN-RECEIVED after a passive open; the oldest is evicted beyond.
    ooo_ranges : int
        Disjoint out-of-order byte ranges held per session (0: drop out-of-order data).
    clock_hz : int
        Engine clock, to turn the defaults below into cycles and to drive RFC 6528 ISNs.
    rto_initial, rto_min, rto_max : int
        RFC 6298 initial, lowest and highest retransmission timeouts.
    delack : int
        Delayed-ACK timeout (Linux TCP_DELACK_MIN, 40 ms).
    time_wait : int
        Length of TIME-WAIT (Linux TCP_TIMEWAIT_LEN, 60 s).
    syn_retries, data_retries : int
        Retransmissions of a SYN (SYN-ACK) and of data before the connection is given up
        (Linux tcp_syn_retries 6 and tcp_retries2 15).
    ttl : int
        IPv4 time to live of sent datagrams.
    fixed_isn : int or None
        Initial sequence number of every connection, for tests; ``None`` follows RFC 6528.
    isn_key : bytes
        Secret of the RFC 6528 ISN function.
    """

    mss: int = 1460
    rx_buffer: int = 65536
    tx_buffer: int = 65536
    max_sessions: int = 64
    max_half_open: int = 16
    ooo_ranges: int = 8
    clock_hz: int = CLOCK_HZ
    rto_initial: int | None = None
    rto_min: int | None = None
    rto_max: int | None = None
    delack: int | None = None
    time_wait: int | None = None
    syn_retries: int = 6
    data_retries: int = 15
    ttl: int = 64
    fixed_isn: int | None = None
    isn_key: bytes = b"nicsim-toe"

    def __post_init__(self):
        checks = [
            (88 <= self.mss <= 9000, f"MSS must be 88 to 9000 bytes, not {self.mss!r}"),
            (1024 <= self.rx_buffer <= 1 << 30,
             f"Receive buffer must be 1 KiB to 1 GiB, not {self.rx_buffer!r}"),
            (1024 <= self.tx_buffer <= 1 << 30,
             f"Send buffer must be 1 KiB to 1 GiB, not {self.tx_buffer!r}"),
            (1 <= self.max_sessions <= 1024,
             f"Sessions must be 1 to 1024, not {self.max_sessions!r}"),
            (1 <= self.max_half_open <= self.max_sessions,
             f"Half-open sessions must be 1 to max_sessions, not {self.max_half_open!r}"),
            (0 <= self.ooo_ranges <= 64,
             f"Out-of-order ranges must be 0 to 64, not {self.ooo_ranges!r}"),
            (self.clock_hz > 0, f"Clock must be positive, not {self.clock_hz!r}"),
            (1 <= self.ttl <= 255, f"TTL must be 1 to 255, not {self.ttl!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise TcpError(message)
        defaults = {"rto_initial": 1.0, "rto_min": 0.2, "rto_max": 60.0, "delack": 0.04,
                    "time_wait": 60.0}
        for name, seconds in defaults.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, cycles(seconds, self.clock_hz))
            elif getattr(self, name) < 1:
                raise TcpError(f"{name} must be at least 1 cycle, not {getattr(self, name)!r}")
        if not self.rto_min <= self.rto_max:
            raise TcpError("rto_min must not exceed rto_max")

    @property
    def rcv_wscale(self) -> int:
        """Window scale announced: the smallest shift that fits the buffer in 16 bits."""
        shift = 0
        while self.rx_buffer >> shift > 0xFFFF and shift < _MAX_WSCALE:
            shift += 1
        return shift


@dataclass(frozen=True)
class Segment:
    """A parsed TCP segment inside an Ethernet/IPv4 frame.

    Members
    -------
    src_mac, dst_mac : bytes
        Ethernet addresses.
    src_ip, dst_ip : bytes
        IPv4 addresses.
    src_port, dst_port, seq, ack, flags, window : int
        TCP header fields (window unscaled).
    mss, wscale : int or None
        MSS and window-scale options, when present.
    payload : bytes
        Segment data.
    """

    src_mac: bytes
    dst_mac: bytes
    src_ip: bytes
    dst_ip: bytes
    src_port: int
    dst_port: int
    seq: int
    ack: int
    flags: int
    window: int
    mss: int | None
    wscale: int | None
    payload: bytes

    @property
    def seg_len(self) -> int:
        """Sequence space the segment takes: data plus one each for SYN and FIN."""
        return len(self.payload) + (1 if self.flags & SYN else 0) + (1 if self.flags & FIN else 0)


def _ipv4_header(src: bytes, dst: bytes, proto: int, payload_len: int, ident: int,
                 ttl: int) -> bytes:
    header = bytearray(20)
    header[0] = 0x45
    header[2:4] = (20 + payload_len).to_bytes(2, "big")
    header[4:6] = (ident & 0xFFFF).to_bytes(2, "big")
    header[6] = 0x40  # DF: the engine segments to the MSS and never fragments
    header[8] = ttl
    header[9] = proto
    header[12:16] = src
    header[16:20] = dst
    header[10:12] = (~ones_sum(header) & 0xFFFF).to_bytes(2, "big")
    return bytes(header)


def build_tcp_frame(src_mac: bytes, dst_mac: bytes, src_ip: bytes, dst_ip: bytes,
                    src_port: int, dst_port: int, seq: int, ack: int, flags: int, window: int,
                    payload: bytes = b"", *, mss: int | None = None, wscale: int | None = None,
                    ident: int = 0, ttl: int = 64) -> bytes:
    """Build an Ethernet/IPv4/TCP frame with correct checksums (no Ethernet padding).

    Parameters
    ----------
    src_mac, dst_mac, src_ip, dst_ip : bytes
        Addresses (6 and 4 bytes).
    src_port, dst_port, seq, ack, flags, window : int
        TCP header fields; ``window`` is the 16-bit field as sent.
    payload : bytes
        Segment data.
    mss, wscale : int or None
        Options to include (MSS kind 2, window scale kind 3).
    ident, ttl : int
        IPv4 identification and time to live.
    """
    options = b""
    if mss is not None:
        options += b"\x02\x04" + mss.to_bytes(2, "big")
    if wscale is not None:
        options += b"\x01\x03\x03" + bytes([wscale])
    options += b"\x00" * (-len(options) % 4)
    header = bytearray(_TCP_HEADER + len(options))
    header[0:2] = src_port.to_bytes(2, "big")
    header[2:4] = dst_port.to_bytes(2, "big")
    header[4:8] = (seq % _MOD).to_bytes(4, "big")
    header[8:12] = (ack % _MOD).to_bytes(4, "big")
    header[12] = (len(header) // 4) << 4
    header[13] = flags
    header[14:16] = window.to_bytes(2, "big")
    header[20:] = options
    segment = bytes(header) + bytes(payload)
    pseudo = src_ip + dst_ip + bytes([0, IPPROTO_TCP]) + len(segment).to_bytes(2, "big")
    check = ~ones_sum(segment, ones_sum(pseudo)) & 0xFFFF
    segment = segment[:16] + check.to_bytes(2, "big") + segment[18:]
    ip = _ipv4_header(src_ip, dst_ip, IPPROTO_TCP, len(segment), ident, ttl)
    return dst_mac + src_mac + ETHERTYPE_IPV4.to_bytes(2, "big") + ip + segment


def _parse_ipv4(frame: bytes) -> tuple[str, int, int, int] | tuple[str]:
    """Check the IPv4 header; return ``("ok", header_len, end, proto)`` or ``(drop_reason,)``."""
    l3 = _ETH_HEADER
    if len(frame) < l3 + _IPV4_HEADER:
        return ("truncated",)
    if frame[l3] >> 4 != 4:
        return ("bad_ip_header",)
    header_len = (frame[l3] & 0x0F) * 4
    total = be16(frame, l3 + 2)
    if header_len < _IPV4_HEADER or total < header_len:
        return ("bad_ip_header",)
    if len(frame) < l3 + total:
        return ("truncated",)
    if header_len != _IPV4_HEADER:
        return ("ip_options",)  # like fpga-network-stack, no IPv4 options
    if ones_sum(frame[l3:l3 + header_len]) != 0xFFFF:
        return ("bad_ip_checksum",)
    if be16(frame, l3 + 6) & 0x3FFF:
        return ("fragment",)
    return ("ok", header_len, l3 + total, frame[l3 + 9])


def parse_tcp_frame(frame: bytes) -> Segment | str:
    """Parse and check an Ethernet/IPv4/TCP frame.

    Returns
    -------
    Segment or str
        The segment, or the reason to drop the frame: ``truncated``, ``not_ipv4``,
        ``bad_ip_header``, ``ip_options``, ``bad_ip_checksum``, ``fragment``, ``not_tcp``,
        ``bad_tcp_header``,
        ``bad_tcp_checksum``. Malformed options end the option walk and keep the segment, as
        Linux tcp_parse_options() does.
    """
    frame = bytes(frame)
    if len(frame) < _ETH_HEADER:
        return "truncated"
    if be16(frame, 12) != ETHERTYPE_IPV4:
        return "not_ipv4"
    ip = _parse_ipv4(frame)
    if ip[0] != "ok":
        return ip[0]
    _, header_len, end, proto = ip
    if proto != IPPROTO_TCP:
        return "not_tcp"
    return _parse_tcp(frame, _ETH_HEADER + header_len, end)


def parse_options(options: bytes) -> tuple[int | None, int | None]:
    """Walk TCP options (RFC 9293 §3.2); return the MSS and window-scale values found.

    End of list (kind 0) stops the walk, NOP (kind 1) is one byte, every other option has a
    length byte of at least 2 that must fit. A malformed option ends the walk and keeps what
    was found before (Linux tcp_parse_options()). A later copy of an option overrides an
    earlier one; the window scale is capped at 14 (RFC 7323 §2.3).
    """
    mss = wscale = None
    i = 0
    stop = len(options)
    while i < stop:
        kind = options[i]
        if kind == 0:
            break
        if kind == 1:
            i += 1
            continue
        if i + 1 >= stop or options[i + 1] < 2 or i + options[i + 1] > stop:
            break
        size = options[i + 1]
        if kind == 2 and size == 4:
            mss = be16(options, i + 2)
        elif kind == 3 and size == 3:
            wscale = min(options[i + 2], _MAX_WSCALE)
        i += size
    return mss, wscale


def _parse_tcp(frame: bytes, start: int, end: int) -> Segment | str:
    l3 = _ETH_HEADER
    length = end - start
    if length < _TCP_HEADER:
        return "truncated"
    offset = (frame[start + 12] >> 4) * 4
    if offset < _TCP_HEADER or offset > length:
        return "bad_tcp_header"
    src_ip = frame[l3 + 12:l3 + 16]
    dst_ip = frame[l3 + 16:l3 + 20]
    pseudo = src_ip + dst_ip + bytes([0, IPPROTO_TCP]) + length.to_bytes(2, "big")
    if ones_sum(frame[start:end], ones_sum(pseudo)) != 0xFFFF:
        return "bad_tcp_checksum"
    mss, wscale = parse_options(frame[start + _TCP_HEADER:start + offset])
    return Segment(
        src_mac=frame[6:12], dst_mac=frame[0:6], src_ip=src_ip, dst_ip=dst_ip,
        src_port=be16(frame, start), dst_port=be16(frame, start + 2),
        seq=be32(frame, start + 4), ack=be32(frame, start + 8), flags=frame[start + 13] & 0x3F,
        window=be16(frame, start + 14), mss=mss, wscale=wscale, payload=frame[start + offset:end])


SESSION_HASH_KEY = DEFAULT_KEY[:12]  # Toeplitz key of the session lookup (8 input bytes + 4)


class SessionTable:
    """Hash-based session lookup: which session a connection's addresses belong to.

    A connection's key is 8 bytes: peer IPv4 address, peer port, local port (network order).
    Its Toeplitz hash (key :data:`SESSION_HASH_KEY`) picks a home bucket among ``buckets``
    (``bucket_factor`` times the session count rounded up to a power of two); the connection is
    stored in the first empty bucket of the ``probes`` that follow the home bucket (linear
    probing, bounded). A bucket holds a session number; the key is stored per session. A new
    connection takes the lowest free session number. Insertion fails when every session is in
    use or when all ``probes`` buckets are taken (with 4 probes and 4 buckets a session, rare).
    The RTL session table (``rtl/toe/session_table.py``) does exactly this.

    Parameters
    ----------
    sessions : int
        Number of sessions, 1 to 1024.
    probes : int
        Buckets tried per key (a power of two, at most ``buckets``).
    bucket_factor : int
        Buckets per session (power of two).
    """

    def __init__(self, sessions: int, probes: int = 4, bucket_factor: int = 4):
        if not 1 <= sessions <= 1024:
            raise TcpError(f"Sessions must be 1 to 1024, not {sessions!r}")
        self.sessions = sessions
        self.probes = probes
        self.n_buckets = bucket_factor * (1 << max(0, (sessions - 1).bit_length()))
        self.n_buckets = max(self.n_buckets, probes)
        self.buckets: list[int | None] = [None] * self.n_buckets
        self.keys: list[bytes | None] = [None] * sessions

    @staticmethod
    def key(peer_ip: bytes, peer_port: int, local_port: int) -> bytes:
        """Return the 8-byte lookup key of a connection."""
        return bytes(peer_ip) + peer_port.to_bytes(2, "big") + local_port.to_bytes(2, "big")

    def home(self, key: bytes) -> int:
        """Return the home bucket of ``key``."""
        return toeplitz(SESSION_HASH_KEY, key) & (self.n_buckets - 1)

    def _probe(self, key: bytes):
        home = self.home(key)
        return [(home + i) % self.n_buckets for i in range(self.probes)]

    def lookup(self, key: bytes) -> int | None:
        """Return the session of ``key``, or ``None``."""
        for b in self._probe(key):
            sid = self.buckets[b]
            if sid is not None and self.keys[sid] == key:
                return sid
        return None

    def insert(self, key: bytes) -> int | None:
        """Store ``key`` in a new session; return its number, or ``None`` when full."""
        found = self.lookup(key)
        if found is not None:
            return found
        try:
            sid = self.keys.index(None)
        except ValueError:
            return None
        for b in self._probe(key):
            if self.buckets[b] is None:
                self.buckets[b] = sid
                self.keys[sid] = key
                return sid
        return None

    def delete(self, sid: int) -> bool:
        """Free session ``sid``; return whether it was in use."""
        key = self.keys[sid]
        if key is None:
            return False
        for b in self._probe(key):
            if self.buckets[b] == sid:
                self.buckets[b] = None
        self.keys[sid] = None
        return True


@dataclass(eq=False)
class _Session:
    """Transmission control block (RFC 9293 §3.3.1) plus buffers and timers."""

    sid: int
    peer_ip: bytes
    peer_port: int
    local_port: int
    state: State
    passive: bool
    created: int
    peer_mac: bytes | None = None
    # send side
    iss: int = 0
    snd_una: int = 0
    snd_nxt: int = 0
    snd_max: int = 0
    snd_wnd: int = 0
    max_snd_wnd: int = 0
    snd_wl1: int = 0
    snd_wl2: int = 0
    snd_wscale: int = 0
    snd_mss: int = 536  # RFC 9293 §3.7.1 default without the option
    sndbuf: bytearray = field(default_factory=bytearray)
    buf_seq: int = 0  # sequence number of sndbuf[0]
    fin_queued: bool = False
    send_blocked: bool = False  # a send() was cut short: notify SPACE when room appears
    # receive side
    irs: int = 0
    rcv_nxt: int = 0
    rcv_adv: int = 0  # right edge of the window last announced
    rcv_wscale: int = 0
    wscale_ok: bool = False
    ready: bytearray = field(default_factory=bytearray)
    ooo: list = field(default_factory=list)  # [seq, bytearray], disjoint, sorted from rcv_nxt
    ooo_fin: int | None = None
    peer_fin: bool = False
    ack_now: bool = False
    unacked_segments: int = 0
    # congestion control (RFC 5681, RFC 6582)
    cwnd: int = 0
    ssthresh: int = 1 << 30
    dupacks: int = 0
    ca_acc: int = 0  # bytes acknowledged in congestion avoidance, towards the next SMSS
    in_recovery: bool = False
    recover: int = 0
    # retransmission timer (RFC 6298)
    srtt: int | None = None
    rttvar: int = 0
    rto: int = 0
    retries: int = 0
    rtt_seq: int | None = None
    rtt_time: int = 0
    rtx_at: int | None = None
    persist_at: int | None = None
    persist_interval: int = 0
    delack_at: int | None = None
    tw_at: int | None = None

    @property
    def data_end(self) -> int:
        return (self.buf_seq + len(self.sndbuf)) % _MOD

    def fin_seq(self) -> int:
        return self.data_end


class TcpEngine:
    """Golden model of the TCP offload engine (see the module documentation).

    Parameters
    ----------
    mac : bytes
        The engine's Ethernet address (6 bytes).
    ip : str or bytes
        The engine's IPv4 address.
    config : TcpConfig, optional
        Parameters; defaults to ``TcpConfig()``.

    Members
    -------
    drops : collections.Counter
        Frames and segments not used, by reason.
    stats : collections.Counter
        Events: ``frames_in``, ``frames_out``, ``retransmits``, ``fast_retransmits``,
        ``timeouts``, ``challenge_acks``, ``window_probes``, ``rst_sent``, ``arp_replies``,
        ``echo_replies``, ``half_open_evicted``.
    """

    def __init__(self, mac: bytes, ip: str | bytes, config: TcpConfig | None = None):
        if len(mac) != 6:
            raise TcpError(f"A MAC address has 6 bytes, not {len(mac)}")
        self.mac = bytes(mac)
        self.ip = ip_to_bytes(ip)
        self.config = config or TcpConfig()
        self.now = 0
        self.drops: Counter = Counter()
        self.stats: Counter = Counter()
        self._tx: deque[bytes] = deque()
        self._notes: deque[Notification] = deque()
        self._sessions: list[_Session | None] = [None] * self.config.max_sessions
        self._lookup: dict[tuple[bytes, int, int], int] = {}  # mirrors self._table, for speed
        self._table = SessionTable(self.config.max_sessions)
        self._listening: set[int] = set()
        self._arp: dict[bytes, bytes] = {}
        self._ip_id = 0
        self._next_port = _EPHEMERAL_FIRST

    # ----------------------------------------------------------------- application interface

    def listen(self, port: int) -> None:
        """Accept connections to ``port`` (passive open, RFC 9293 §3.10.1)."""
        if not 1 <= port <= 0xFFFF:
            raise TcpError(f"Port must be 1 to 65535, not {port!r}")
        self._listening.add(port)

    def unlisten(self, port: int) -> None:
        """Stop accepting connections to ``port``; open sessions stay."""
        self._listening.discard(port)

    def open(self, ip: str | bytes, port: int, local_port: int | None = None) -> int:
        """Open a connection to ``ip:port`` (active open); return its session number.

        The SYN leaves at once when the peer's MAC address is known, else after an ARP reply.
        :data:`Notice.CONNECTED` follows the handshake, :data:`Notice.RESET` a refusal or
        ``syn_retries`` unanswered SYNs.
        """
        peer = ip_to_bytes(ip)
        if not 1 <= port <= 0xFFFF:
            raise TcpError(f"Port must be 1 to 65535, not {port!r}")
        if local_port is None:
            local_port = self._ephemeral_port(peer, port)
        elif (peer, port, local_port) in self._lookup:
            raise TcpError(f"Local port {local_port} already has a connection to that peer")
        s = self._new_session(peer, port, local_port, State.SYN_SENT, passive=False)
        if s is None:
            raise TcpError(f"No session free for this connection ({len(self.sessions())} of "
                           f"{self.config.max_sessions} sessions in use)")
        s.peer_mac = self._arp.get(peer)
        s.iss = self._isn(peer, port, local_port)
        s.snd_una = s.iss
        s.snd_nxt = s.snd_max = (s.iss + 1) % _MOD
        s.buf_seq = s.snd_nxt
        s.recover = s.iss
        s.rto = self.config.rto_initial
        if s.peer_mac is None:
            self._send_arp_request(peer)
        else:
            self._send_syn(s)
        s.rtt_seq, s.rtt_time = s.snd_nxt, self.now
        s.rtx_at = self.now + s.rto
        return s.sid

    def send(self, sid: int, data: bytes) -> int:
        """Queue data to send; return how many bytes the send buffer took (maybe fewer)."""
        s = self._session(sid)
        if s.fin_queued or s.state not in (State.SYN_SENT, State.SYN_RECEIVED,
                                           State.ESTABLISHED, State.CLOSE_WAIT):
            raise TcpError(f"Session {sid} is closing ({s.state.value}); it cannot send")
        room = self.config.tx_buffer - len(s.sndbuf)
        taken = min(room, len(data))
        s.sndbuf += data[:taken]
        s.send_blocked = taken < len(data)
        self._output(s)
        return taken

    def send_space(self, sid: int) -> int:
        """Return the free bytes of the session's send buffer."""
        s = self._session(sid)
        return self.config.tx_buffer - len(s.sndbuf)

    def recv(self, sid: int, max_bytes: int | None = None) -> bytes:
        """Take up to ``max_bytes`` (default: all) received bytes of a session, in order."""
        s = self._session(sid)
        n = len(s.ready) if max_bytes is None else min(max_bytes, len(s.ready))
        data = bytes(s.ready[:n])
        del s.ready[:n]
        if n and s.state in _RECEIVING_STATES:
            # Window update when the right edge can move by a useful amount (RFC 9293
            # §3.8.6.2.2): at least min(buffer / 2, 2 MSS) beyond what the peer was told.
            edge = _diff(s.rcv_nxt + self._free(s), s.rcv_adv)
            if edge >= min(self.config.rx_buffer // 2, 2 * self.config.mss):
                s.ack_now = True
                self._output(s)
        return data

    def readable(self, sid: int) -> int:
        """Return the received bytes waiting for :meth:`recv`."""
        return len(self._session(sid).ready)

    def at_eof(self, sid: int) -> bool:
        """Return whether the peer sent FIN and every byte before it has been read."""
        s = self._session(sid)
        return s.peer_fin and not s.ready

    def close(self, sid: int) -> None:
        """Close the sending direction: FIN after the queued data (RFC 9293 §3.10.4)."""
        s = self._session(sid)
        if s.state == State.SYN_SENT:
            self._release(s)
            self._notify(Notice.CLOSED, s, "done")
            return
        if s.fin_queued:
            return
        s.fin_queued = True
        if s.state in (State.SYN_RECEIVED, State.ESTABLISHED):
            s.state = State.FIN_WAIT_1 if s.state == State.ESTABLISHED else s.state
        elif s.state == State.CLOSE_WAIT:
            s.state = State.LAST_ACK
        self._output(s)

    def abort(self, sid: int) -> None:
        """Reset the connection (RFC 9293 §3.10.5) and release the session."""
        s = self._session(sid)
        if s.state not in (State.SYN_SENT, State.TIME_WAIT):
            self._send_segment(s, s.snd_nxt, RST | ACK)
            self.stats["rst_sent"] += 1
        self._release(s)

    def state(self, sid: int) -> State:
        """Return the connection state of a session (CLOSED when the number is free)."""
        s = self._sessions[sid] if 0 <= sid < len(self._sessions) else None
        return s.state if s is not None else State.CLOSED

    def session_info(self, sid: int) -> dict:
        """Return the addresses, state and main variables of a session, for tests and tools."""
        s = self._session(sid)
        return {"peer_ip": ".".join(str(b) for b in s.peer_ip), "peer_port": s.peer_port,
                "local_port": s.local_port, "state": s.state, "snd_una": s.snd_una,
                "snd_nxt": s.snd_nxt, "snd_wnd": s.snd_wnd, "rcv_nxt": s.rcv_nxt,
                "cwnd": s.cwnd, "ssthresh": s.ssthresh, "rto": s.rto, "srtt": s.srtt,
                "iss": s.iss, "irs": s.irs, "snd_wscale": s.snd_wscale,
                "rcv_wscale": s.rcv_wscale, "snd_mss": s.snd_mss, "queued": len(s.sndbuf),
                "readable": len(s.ready), "ooo_ranges": len(s.ooo)}

    def sessions(self) -> list[int]:
        """Return the numbers of the sessions in use."""
        return [s.sid for s in self._sessions if s is not None]

    def notifications(self) -> list[Notification]:
        """Take the notifications raised since the last call, oldest first."""
        notes = list(self._notes)
        self._notes.clear()
        return notes

    # ----------------------------------------------------------------------- frames and time

    def receive(self, frame: bytes, now: int) -> None:
        """Process one received Ethernet frame (without FCS) at cycle ``now``."""
        self._set_time(now)
        self.stats["frames_in"] += 1
        frame = bytes(frame)
        if len(frame) < _ETH_HEADER:
            self.drops["truncated"] += 1
            return
        if len(frame) > MAX_FRAME_LEN:
            self.drops["oversize"] += 1
            return
        ethertype = be16(frame, 12)
        if ethertype == ETHERTYPE_ARP:
            self._receive_arp(frame)
        elif ethertype == ETHERTYPE_IPV4:
            self._receive_ipv4(frame)
        else:
            self.drops["not_ipv4"] += 1

    def advance(self, now: int) -> None:
        """Let time pass up to cycle ``now`` and fire the timers that are due."""
        self._set_time(now)
        for s in list(self._sessions):
            if s is None:
                continue
            if s.tw_at is not None and s.tw_at <= now:
                self._release(s)
                self._notify(Notice.CLOSED, s, "done")
                continue
            if s.rtx_at is not None and s.rtx_at <= now:
                self._retransmit_timeout(s)
            if self._sessions[s.sid] is not s:
                continue
            if s.persist_at is not None and s.persist_at <= now:
                self._persist_timeout(s)
            if s.delack_at is not None and s.delack_at <= now:
                s.delack_at = None
                s.ack_now = True
                self._output(s)

    def next_deadline(self) -> int | None:
        """Return the cycle of the earliest armed timer, or ``None``."""
        times = [t for s in self._sessions if s is not None
                 for t in (s.rtx_at, s.persist_at, s.delack_at, s.tw_at) if t is not None]
        return min(times) if times else None

    def pop_tx(self) -> list[bytes]:
        """Take the frames the engine sent since the last call, oldest first."""
        frames = list(self._tx)
        self._tx.clear()
        return frames

    def _set_time(self, now: int) -> None:
        if now < self.now:
            raise TcpError(f"Time went backwards: cycle {now} after {self.now}")
        self.now = now

    # -------------------------------------------------------------------------- ARP and ICMP

    def _receive_arp(self, frame: bytes) -> None:
        if len(frame) < _ETH_HEADER + 28:
            self.drops["truncated"] += 1
            return
        a = frame[_ETH_HEADER:_ETH_HEADER + 28]
        if be16(a, 0) != 1 or be16(a, 2) != ETHERTYPE_IPV4 or a[4] != 6 or a[5] != 4:
            self.drops["bad_arp"] += 1
            return
        op = be16(a, 6)
        sha, spa, tpa = a[8:14], a[14:18], a[24:28]
        if tpa != self.ip:
            if spa in self._arp:
                self._arp[spa] = sha  # RFC 826: refresh an entry we hold
            self.drops["not_for_us"] += 1
            return
        self._arp[spa] = sha
        for s in self._sessions:
            if s is not None and s.peer_ip == spa and s.peer_mac is None:
                s.peer_mac = sha
                if s.state == State.SYN_SENT:
                    self._send_syn(s)
                    s.rtt_time = self.now
        if op == 1:
            reply = (sha + self.mac + ETHERTYPE_ARP.to_bytes(2, "big")
                     + a[0:6] + b"\x00\x02" + self.mac + self.ip + sha + spa)
            self._emit(reply)
            self.stats["arp_replies"] += 1
        elif op != 2:
            self.drops["bad_arp"] += 1

    def _send_arp_request(self, ip: bytes) -> None:
        request = (BROADCAST + self.mac + ETHERTYPE_ARP.to_bytes(2, "big")
                   + bytes.fromhex("0001080006040001") + self.mac + self.ip + b"\x00" * 6 + ip)
        self._emit(request)
        self.stats["arp_requests"] += 1

    def _receive_ipv4(self, frame: bytes) -> None:
        ip = _parse_ipv4(frame)
        if ip[0] != "ok":
            self.drops[ip[0]] += 1
            return
        _, header_len, end, proto = ip
        if frame[_ETH_HEADER + 16:_ETH_HEADER + 20] != self.ip:
            self.drops["not_for_us"] += 1
            return
        start = _ETH_HEADER + header_len
        if proto == IPPROTO_ICMP:
            self._receive_icmp(frame, start, end)
        elif proto == IPPROTO_TCP:
            seg = _parse_tcp(frame, start, end)
            if isinstance(seg, str):
                self.drops[seg] += 1
            else:
                self._receive_segment(seg)
        else:
            self.drops["not_tcp"] += 1

    def _receive_icmp(self, frame: bytes, start: int, end: int) -> None:
        message = frame[start:end]
        if len(message) < 8:
            self.drops["truncated"] += 1
            return
        if ones_sum(message) != 0xFFFF:
            self.drops["bad_icmp_checksum"] += 1
            return
        if message[0] != 8 or message[1] != 0:
            self.drops["icmp_not_echo"] += 1
            return
        reply = bytearray(message)
        reply[0] = 0
        reply[2:4] = b"\x00\x00"
        reply[2:4] = (~ones_sum(reply) & 0xFFFF).to_bytes(2, "big")
        src = frame[_ETH_HEADER + 12:_ETH_HEADER + 16]
        ip = _ipv4_header(self.ip, src, IPPROTO_ICMP, len(reply), self._next_id(),
                          self.config.ttl)
        self._emit(frame[6:12] + self.mac + ETHERTYPE_IPV4.to_bytes(2, "big") + ip + reply)
        self.stats["echo_replies"] += 1

    # ------------------------------------------------------------------------ segment arrival

    def _receive_segment(self, seg: Segment) -> None:
        flags = seg.flags
        if (flags & SYN and flags & (FIN | RST)) or not flags & (SYN | RST | ACK):
            self.drops["bad_flags"] += 1
            return
        sid = self._lookup.get((seg.src_ip, seg.src_port, seg.dst_port))
        if sid is not None:
            s = self._sessions[sid]
            if s.peer_mac is None or s.state == State.SYN_RECEIVED:
                s.peer_mac = seg.src_mac
            if s.state == State.SYN_SENT:
                self._segment_syn_sent(s, seg)
            else:
                self._segment_synchronized(s, seg)
            return
        if seg.dst_port in self._listening:
            self._segment_listen(seg)
            return
        # RFC 9293 §3.10.7.1: CLOSED
        if flags & RST:
            self.drops["no_session"] += 1
            return
        self.drops["no_session"] += 1
        self._reset_reply(seg)

    def _reset_reply(self, seg: Segment) -> None:
        if seg.flags & ACK:
            seq, ack, flags = seg.ack, 0, RST
        else:
            seq, ack, flags = 0, (seg.seq + seg.seg_len) % _MOD, RST | ACK
        self._emit(build_tcp_frame(self.mac, seg.src_mac, self.ip, seg.src_ip, seg.dst_port,
                                   seg.src_port, seq, ack, flags, 0, ident=self._next_id(),
                                   ttl=self.config.ttl))
        self.stats["rst_sent"] += 1

    def _segment_listen(self, seg: Segment) -> None:
        """RFC 9293 §3.10.7.2."""
        if seg.flags & RST:
            self.drops["no_session"] += 1
            return
        if seg.flags & ACK:
            self.drops["no_session"] += 1
            self._reset_reply(seg)
            return
        if not seg.flags & SYN:
            self.drops["no_session"] += 1
            return
        half_open = [s for s in self._sessions
                     if s is not None and s.state == State.SYN_RECEIVED and s.passive]
        if len(half_open) >= self.config.max_half_open:
            oldest = min(half_open, key=lambda s: (s.created, s.sid))
            self._release(oldest)
            self.stats["half_open_evicted"] += 1
        s = self._new_session(seg.src_ip, seg.src_port, seg.dst_port, State.SYN_RECEIVED,
                              passive=True)
        if s is None:
            self.drops["session_table_full"] += 1
            return
        s.peer_mac = seg.src_mac
        s.iss = self._isn(seg.src_ip, seg.src_port, seg.dst_port)
        s.snd_una = s.iss
        s.snd_nxt = s.snd_max = (s.iss + 1) % _MOD
        s.buf_seq = s.snd_nxt
        s.recover = s.iss
        self._accept_syn(s, seg)
        s.rto = self.config.rto_initial
        self._send_syn(s)
        s.rtt_seq, s.rtt_time = s.snd_nxt, self.now
        s.rtx_at = self.now + s.rto
        if seg.payload:
            self.drops["syn_data"] += 1  # not queued: the peer sends it again

    def _accept_syn(self, s: _Session, seg: Segment) -> None:
        s.irs = seg.seq
        s.rcv_nxt = (seg.seq + 1) % _MOD
        s.snd_mss = min(seg.mss if seg.mss is not None else 536, self.config.mss)
        s.snd_mss = max(s.snd_mss, 64)
        if seg.wscale is not None:
            s.wscale_ok = True
            s.snd_wscale = seg.wscale
            s.rcv_wscale = self.config.rcv_wscale
        s.rcv_adv = (s.rcv_nxt + min(self.config.rx_buffer, 0xFFFF << s.rcv_wscale)) % _MOD
        s.cwnd = self._initial_window(s.snd_mss)

    @staticmethod
    def _initial_window(mss: int) -> int:
        """RFC 6928 §2 initial window: min(10 * MSS, max(2 * MSS, 14600 bytes)), Linux's
        default (RFC 5681 §3.1's was 2 to 4 segments)."""
        return min(10 * mss, max(2 * mss, 14600))

    def _segment_syn_sent(self, s: _Session, seg: Segment) -> None:
        """RFC 9293 §3.10.7.3."""
        flags = seg.flags
        if flags & ACK and (seq_le(seg.ack, s.iss) or seq_gt(seg.ack, s.snd_max)):
            self.drops["bad_ack"] += 1
            if not flags & RST:
                self._reset_reply(seg)
            return
        if flags & RST:
            if flags & ACK:
                self._release(s)
                self._notify(Notice.RESET, s, "refused")
            else:
                self.drops["bad_rst"] += 1
            return
        if not flags & SYN:
            self.drops["no_syn"] += 1
            return
        self._accept_syn(s, seg)
        s.peer_mac = seg.src_mac
        if flags & ACK:
            s.snd_una = seg.ack
            self._established(s, seg)
            s.ack_now = True
            self._output(s)
        else:
            # Simultaneous open (RFC 9293 §3.5, figure 8).
            s.state = State.SYN_RECEIVED
            self._send_syn(s)

    def _established(self, s: _Session, seg: Segment) -> None:
        s.state = State.ESTABLISHED
        s.snd_wnd = seg.window << s.snd_wscale if not seg.flags & SYN else seg.window
        s.max_snd_wnd = max(s.max_snd_wnd, s.snd_wnd)
        s.snd_wl1, s.snd_wl2 = seg.seq, seg.ack
        syn_timed_out = s.retries > 0
        s.retries = 0
        s.rtx_at = None
        if s.rtt_seq is not None and seq_ge(seg.ack, s.rtt_seq):
            self._rtt_sample(s, self.now - s.rtt_time)  # the SYN was not sent again
            s.rtt_seq = None
        else:
            s.rto = max(self.config.rto_min, min(s.rto, self.config.rto_max))
            if syn_timed_out:
                # RFC 6298 §5.7: the timer expired awaiting the ACK of our SYN and no RTT
                # sample came from the handshake: the RTO is re-initialized to 3 s when data
                # transmission begins (a larger backed-off RTO stays; Linux tcp_init_metrics()
                # sets TCP_TIMEOUT_FALLBACK)
                fallback = cycles(3.0, self.config.clock_hz)
                s.rto = min(max(s.rto, fallback), self.config.rto_max)
        self._notify(Notice.CONNECTED, s)

    def _acceptable(self, s: _Session, seg: Segment) -> bool:
        """RFC 9293 §3.10.7.4 first check (the acceptance table), with two allowances.

        A segment without data is accepted up to and including the right edge of the window
        (as Linux tcp_sequence() does): a peer that filled the window behind a hole sends its
        ACKs with ``seq`` at the right edge, and the strict table would throw away the only
        segments that can acknowledge our data. With a zero window a segment at exactly
        ``rcv_nxt`` is accepted for its ACK, RST and FIN bits while its data is dropped (the
        "special allowance" the RFC asks for).
        """
        wnd = _diff(s.rcv_adv, s.rcv_nxt)
        if wnd >= 1 << 31:
            wnd = 0
        length = seg.seg_len
        if length == 0:
            return _diff(seg.seq, s.rcv_nxt) <= wnd
        if wnd == 0:
            return seg.seq == s.rcv_nxt
        last = (seg.seq + length - 1) % _MOD
        return _diff(seg.seq, s.rcv_nxt) < wnd or _diff(last, s.rcv_nxt) < wnd

    def _segment_synchronized(self, s: _Session, seg: Segment) -> None:
        flags = seg.flags
        # A SYN again after our SYN-ACK was lost: send the SYN-ACK again.
        if s.state == State.SYN_RECEIVED and flags & SYN and not flags & ACK \
                and seg.seq == s.irs:
            self._send_syn(s)
            s.rtt_seq = None
            self.stats["retransmits"] += 1
            return
        # first: sequence number
        if not self._acceptable(s, seg):
            if s.state == State.TIME_WAIT and flags & FIN:
                s.tw_at = self.now + self.config.time_wait
            self.drops["out_of_window"] += 1
            if not flags & RST:
                s.ack_now = True
                self._output(s)
            return
        # second: RST (RFC 5961 §3)
        if flags & RST:
            if seg.seq != s.rcv_nxt:
                self._challenge_ack(s)
                return
            state = s.state
            self._release(s)
            if state == State.SYN_RECEIVED and not s.passive:
                # after a simultaneous open: "the connection was refused" (RFC 9293 §3.10.7.4)
                self._notify(Notice.RESET, s, "refused")
            elif not (state == State.SYN_RECEIVED and s.passive) and state != State.TIME_WAIT:
                self._notify(Notice.RESET, s, "rst")
            else:
                self.stats["rst_received"] += 1
            return
        # fourth: SYN in a synchronized state (RFC 5961 §4)
        if flags & SYN:
            self._challenge_ack(s)
            return
        # fifth: ACK
        if not flags & ACK:
            self.drops["no_ack"] += 1
            return
        if s.state == State.SYN_RECEIVED:
            if not (seq_lt(s.snd_una, seg.ack) and seq_le(seg.ack, s.snd_max)):
                self.drops["bad_ack"] += 1
                self._reset_reply(seg)
                return
            fin_queued = s.fin_queued
            self._established(s, seg)
            if fin_queued:
                s.state = State.FIN_WAIT_1
        if not self._process_ack(s, seg):
            return
        if self._sessions[s.sid] is not s:
            return
        # seventh: segment text
        if seg.payload and s.state in _RECEIVING_STATES:
            self._receive_data(s, seg)
        elif seg.payload:
            self.drops["data_after_fin"] += 1
        # eighth: FIN
        if flags & FIN:
            fin_at = (seg.seq + len(seg.payload)) % _MOD
            if fin_at == s.rcv_nxt and not s.peer_fin:
                self._peer_fin(s)
            elif s.state == State.TIME_WAIT:
                s.tw_at = self.now + self.config.time_wait
                s.ack_now = True
            elif seq_gt(fin_at, s.rcv_nxt) and s.state in _RECEIVING_STATES:
                if self.config.ooo_ranges:  # held like out-of-order data, or not at all
                    s.ooo_fin = fin_at
                s.ack_now = True
        if self._sessions[s.sid] is s:
            self._output(s)

    def _challenge_ack(self, s: _Session) -> None:
        self.stats["challenge_acks"] += 1
        s.ack_now = True
        self._output(s)

    def _process_ack(self, s: _Session, seg: Segment) -> bool:
        """RFC 9293 §3.10.7.4 fifth check; return False when the segment is dropped."""
        ack = seg.ack
        if seq_gt(ack, s.snd_max):
            self.drops["ack_unsent"] += 1
            s.ack_now = True
            self._output(s)
            return False
        if seq_lt(ack, (s.snd_una - max(s.max_snd_wnd, 1)) % _MOD):
            self.drops["ack_too_old"] += 1  # RFC 5961 §5
            self._challenge_ack(s)
            return False
        window = seg.window << s.snd_wscale
        acked = _diff(ack, s.snd_una) if seq_gt(ack, s.snd_una) else 0
        window_changed = window != s.snd_wnd
        if seq_lt(s.snd_wl1, seg.seq) or (s.snd_wl1 == seg.seq and seq_le(s.snd_wl2, ack)):
            s.snd_wnd = window
            s.max_snd_wnd = max(s.max_snd_wnd, window)
            s.snd_wl1, s.snd_wl2 = seg.seq, ack
        if acked:
            self._new_ack(s, ack, acked)
        elif (ack == s.snd_una and not seg.payload and not seg.flags & (SYN | FIN)
              and not window_changed and s.snd_max != s.snd_una):
            self._dup_ack(s)
        if s.snd_wnd > 0 and s.persist_at is not None:
            s.persist_at = None
        # state changes on our FIN being acknowledged
        fin_acked = s.fin_queued and _diff(s.snd_una, s.buf_seq) == 1 and not s.sndbuf \
            and s.snd_una == s.snd_max
        if fin_acked:
            if s.state == State.FIN_WAIT_1:
                s.state = State.FIN_WAIT_2
            elif s.state == State.CLOSING:
                self._enter_time_wait(s)
            elif s.state == State.LAST_ACK:
                self._release(s)
                self._notify(Notice.CLOSED, s, "done")
                return False
        return True

    def _new_ack(self, s: _Session, ack: int, acked: int) -> None:
        mss = s.snd_mss
        if s.snd_una == s.iss:
            acked -= 1  # the SYN is no data for the congestion window
        s.snd_una = ack
        if seq_lt(s.snd_nxt, ack):
            s.snd_nxt = ack
        # drop acknowledged bytes from the send buffer (a FIN's sequence number is not data)
        data = min(_diff(ack, s.buf_seq), len(s.sndbuf)) if seq_gt(ack, s.buf_seq) else 0
        if data:
            del s.sndbuf[:data]
            s.buf_seq = (s.buf_seq + data) % _MOD
            if s.send_blocked:
                s.send_blocked = False
                self._notify(Notice.SPACE, s)
        # RTT sample (RFC 6298 §3, Karn)
        if s.rtt_seq is not None and seq_ge(ack, s.rtt_seq):
            self._rtt_sample(s, self.now - s.rtt_time)
            s.rtt_seq = None
        s.retries = 0
        # congestion control
        if s.in_recovery:
            if seq_ge(ack, s.recover):
                # full acknowledgment (RFC 6582 §3.2 step 3)
                flight = _diff(s.snd_max, s.snd_una)
                s.cwnd = min(s.ssthresh, max(flight, mss) + mss)
                s.in_recovery = False
                s.dupacks = 0
            else:
                # partial acknowledgment (RFC 6582 §3.2 step 4)
                self._retransmit_first(s)
                s.cwnd = max(s.cwnd - acked, mss)
                if acked >= mss:
                    s.cwnd += mss
                s.rtx_at = self.now + s.rto
        else:
            s.dupacks = 0
            if acked <= 0:
                pass
            elif s.cwnd < s.ssthresh:
                s.cwnd += min(acked, mss)
            else:
                # RFC 5681 §3.1's recommended congestion avoidance: count the bytes
                # acknowledged, one SMSS more each time they reach cwnd (RFC 3465 §2.1)
                s.ca_acc += acked
                if s.ca_acc >= s.cwnd:
                    s.ca_acc -= s.cwnd
                    s.cwnd += mss
        # retransmission timer (RFC 6298 §5.2, §5.3)
        if s.snd_una == s.snd_max:
            s.rtx_at = None
        elif not s.in_recovery:
            s.rtx_at = self.now + s.rto

    def _rtt_sample(self, s: _Session, r: int) -> None:
        if s.srtt is None:
            s.srtt = r
            s.rttvar = r // 2
        else:
            s.rttvar = (3 * s.rttvar + abs(s.srtt - r)) // 4
            s.srtt = (7 * s.srtt + r) // 8
        rto = s.srtt + max(1, 4 * s.rttvar)
        s.rto = max(self.config.rto_min, min(rto, self.config.rto_max))

    def _dup_ack(self, s: _Session) -> None:
        mss = s.snd_mss
        s.dupacks += 1
        if s.in_recovery:
            s.cwnd += mss
        elif s.dupacks == 3 and seq_ge(s.snd_una, s.recover):
            # fast retransmit (RFC 6582 §3.2 step 2, RFC 5681 §3.2)
            flight = _diff(s.snd_max, s.snd_una)
            s.ssthresh = max(flight // 2, 2 * mss)
            s.recover = s.snd_max
            s.in_recovery = True
            self._retransmit_first(s)
            self.stats["fast_retransmits"] += 1
            s.cwnd = s.ssthresh + 3 * mss
            s.rtx_at = self.now + s.rto

    def _retransmit_first(self, s: _Session) -> None:
        """Send again the first unacknowledged segment, leaving ``snd_nxt`` where it is."""
        offset = _diff(s.snd_una, s.buf_seq) if seq_ge(s.snd_una, s.buf_seq) else 0
        data = bytes(s.sndbuf[offset:offset + s.snd_mss])
        flags = ACK
        if s.fin_queued and offset + len(data) == len(s.sndbuf) \
                and seq_gt(s.snd_max, s.data_end):
            flags |= FIN
        if not data and not flags & FIN:
            return
        s.rtt_seq = None
        self._send_segment(s, s.snd_una, flags, data)
        self.stats["retransmits"] += 1

    def _receive_data(self, s: _Session, seg: Segment) -> None:
        data = seg.payload
        seq = seg.seq
        if seq_lt(seq, s.rcv_nxt):
            cut = _diff(s.rcv_nxt, seq)
            data = data[cut:]
            seq = s.rcv_nxt
        room = _diff(s.rcv_adv, seq) if seq_lt(seq, s.rcv_adv) else 0
        if len(data) > room:
            if room == 0:
                self.drops["beyond_window"] += 1
            else:
                self.stats["trimmed"] += 1
            data = data[:room]
        if not data:
            s.ack_now = True
            return
        if seq == s.rcv_nxt:
            had_ooo = bool(s.ooo)
            s.ready += data
            s.rcv_nxt = (s.rcv_nxt + len(data)) % _MOD
            while s.ooo and seq_le(s.ooo[0][0], s.rcv_nxt):
                start, chunk = s.ooo.pop(0)
                skip = _diff(s.rcv_nxt, start)
                if skip < len(chunk):
                    s.ready += chunk[skip:]
                    s.rcv_nxt = (s.rcv_nxt + len(chunk) - skip) % _MOD
            self._notify(Notice.DATA, s)  # before a held FIN's CLOSED: the data came first
            if s.ooo_fin is not None and s.ooo_fin == s.rcv_nxt:
                s.ooo_fin = None
                self._peer_fin(s)
            s.unacked_segments += 1
            if had_ooo or s.unacked_segments >= 2:
                s.ack_now = True
            elif s.delack_at is None:
                s.delack_at = self.now + self.config.delack
        else:
            self._hold_out_of_order(s, seq, data)
            s.ack_now = True

    def _hold_out_of_order(self, s: _Session, seq: int, data: bytes) -> None:
        """Keep an out-of-order piece in at most ``ooo_ranges`` ranges (module docstring)."""
        ranges = [[_diff(start, s.rcv_nxt), bytearray(chunk)] for start, chunk in s.ooo]
        offset = _diff(seq, s.rcv_nxt)
        new = [offset, bytearray(data)]
        merged = []
        for r in sorted(ranges + [new], key=lambda r: r[0]):
            if merged and r[0] <= merged[-1][0] + len(merged[-1][1]):
                last = merged[-1]
                end = last[0] + len(last[1])
                if r[0] + len(r[1]) > end:
                    last[1] += r[1][end - r[0]:]
            else:
                merged.append(r)
        if len(merged) > self.config.ooo_ranges:
            self.drops["ooo_full"] += 1
            return
        self.stats["ooo_segments"] += 1
        s.ooo = [[(s.rcv_nxt + off) % _MOD, chunk] for off, chunk in merged]

    def _peer_fin(self, s: _Session) -> None:
        s.rcv_nxt = (s.rcv_nxt + 1) % _MOD
        s.peer_fin = True
        s.ack_now = True
        s.ooo.clear()
        if s.state in (State.SYN_RECEIVED, State.ESTABLISHED):
            s.state = State.CLOSE_WAIT
        elif s.state == State.FIN_WAIT_1:
            s.state = State.CLOSING
        elif s.state == State.FIN_WAIT_2:
            self._enter_time_wait(s)
        self._notify(Notice.CLOSED, s, "peer")

    def _enter_time_wait(self, s: _Session) -> None:
        s.state = State.TIME_WAIT
        s.tw_at = self.now + self.config.time_wait
        s.rtx_at = s.persist_at = None

    # ------------------------------------------------------------------------------ sending

    def _free(self, s: _Session) -> int:
        return self.config.rx_buffer - len(s.ready)

    def _window_field(self, s: _Session) -> int:
        """Return the window to announce and move ``rcv_adv`` (receiver SWS avoidance)."""
        edge = (s.rcv_nxt + self._free(s)) % _MOD
        threshold = min(self.config.rx_buffer // 2, s.snd_mss)
        if seq_gt(edge, s.rcv_adv) and (_diff(edge, s.rcv_adv) >= threshold
                                        or _diff(s.rcv_adv, s.rcv_nxt) == 0 and
                                        _diff(edge, s.rcv_nxt) >= threshold):
            s.rcv_adv = edge
        window = _diff(s.rcv_adv, s.rcv_nxt) if seq_ge(s.rcv_adv, s.rcv_nxt) else 0
        return min(window >> s.rcv_wscale, 0xFFFF)

    def _send_segment(self, s: _Session, seq: int, flags: int, data: bytes = b"") -> None:
        if s.peer_mac is None:
            return
        window = self._window_field(s) if not flags & RST else 0
        if flags & ACK:
            s.ack_now = False
            s.unacked_segments = 0
            s.delack_at = None
        self._emit(build_tcp_frame(self.mac, s.peer_mac, self.ip, s.peer_ip, s.local_port,
                                   s.peer_port, seq, s.rcv_nxt if flags & ACK else 0, flags,
                                   window, data, ident=self._next_id(), ttl=self.config.ttl))

    def _send_syn(self, s: _Session) -> None:
        if s.peer_mac is None:
            return
        flags = SYN | ACK if s.state == State.SYN_RECEIVED else SYN
        window = min(self.config.rx_buffer, 0xFFFF)
        wscale = None
        if flags == SYN or s.wscale_ok:
            wscale = self.config.rcv_wscale
        self._emit(build_tcp_frame(self.mac, s.peer_mac, self.ip, s.peer_ip, s.local_port,
                                   s.peer_port, s.iss, s.rcv_nxt if flags & ACK else 0, flags,
                                   window, mss=self.config.mss, wscale=wscale,
                                   ident=self._next_id(), ttl=self.config.ttl))

    def _output(self, s: _Session) -> None:
        """Send what window and congestion window allow, then a pure ACK if one is owed."""
        if self._sessions[s.sid] is not s:
            return
        if s.state in _SENDING_STATES:
            while True:
                data_end = s.data_end
                pending = _diff(data_end, s.snd_nxt) if seq_lt(s.snd_nxt, data_end) else 0
                flight = _diff(s.snd_nxt, s.snd_una)
                usable = min(s.cwnd, s.snd_wnd) - flight
                n = min(s.snd_mss, pending, max(usable, 0))
                fin_due = s.fin_queued and s.snd_nxt == data_end
                if n > 0 and (n == s.snd_mss or n == pending or flight == 0
                              or 2 * n >= s.max_snd_wnd):
                    offset = _diff(s.snd_nxt, s.buf_seq)
                    data = bytes(s.sndbuf[offset:offset + n])
                    flags = ACK | (PSH if n == pending else 0)
                    if s.fin_queued and n == pending:
                        flags |= FIN
                    self._transmit(s, data, flags)
                elif fin_due:
                    self._transmit(s, b"", ACK | FIN)
                else:
                    break
            pending = s.fin_queued and seq_le(s.snd_nxt, s.data_end) or \
                seq_lt(s.snd_nxt, s.data_end)
            if s.snd_wnd == 0 and pending and s.snd_nxt == s.snd_una and s.rtx_at is None \
                    and s.persist_at is None:
                s.persist_interval = s.rto
                s.persist_at = self.now + s.persist_interval
        if s.ack_now and s.state != State.SYN_SENT:
            self._send_segment(s, s.snd_nxt, ACK)

    def _transmit(self, s: _Session, data: bytes, flags: int) -> None:
        seq = s.snd_nxt
        length = len(data) + (1 if flags & FIN else 0)
        retransmission = seq_lt(seq, s.snd_max)
        self._send_segment(s, seq, flags, data)
        s.snd_nxt = (seq + length) % _MOD
        if seq_gt(s.snd_nxt, s.snd_max):
            s.snd_max = s.snd_nxt
        if retransmission:
            self.stats["retransmits"] += 1
        elif s.rtt_seq is None:
            s.rtt_seq = s.snd_nxt
            s.rtt_time = self.now
        if s.rtx_at is None:
            s.rtx_at = self.now + s.rto
        s.persist_at = None

    # ------------------------------------------------------------------------------- timers

    def _retransmit_timeout(self, s: _Session) -> None:
        """RFC 6298 §5.4-§5.7 with RFC 5681 §3.1 (loss window) and RFC 6582 §4."""
        self.stats["timeouts"] += 1
        s.retries += 1
        if s.state in (State.SYN_SENT, State.SYN_RECEIVED):
            if s.retries > self.config.syn_retries:
                passive = s.passive and s.state == State.SYN_RECEIVED
                self._release(s)
                if not passive:
                    self._notify(Notice.RESET, s, "timeout")
                return
            if s.peer_mac is None:
                self._send_arp_request(s.peer_ip)
            else:
                self._send_syn(s)
                self.stats["retransmits"] += 1
            s.rtt_seq = None
            s.rto = min(2 * s.rto, self.config.rto_max)
            s.rtx_at = self.now + s.rto
            return
        zero_window = s.snd_wnd == 0
        if zero_window:
            # The peer closed its window with data in flight (a receiver may shrink it, RFC
            # 9293 §3.8.6.2.1): the timeout turns into probing. The connection stays open as
            # long as the peer answers (RFC 9293 §3.8.6.1, MUST-26), so no retry is counted;
            # Linux tcp_retransmit_timer() does not give up on such a connection either.
            s.retries = min(s.retries, self.config.data_retries)
        if s.retries > self.config.data_retries:
            self._send_segment(s, s.snd_nxt, RST | ACK)
            self.stats["rst_sent"] += 1
            self._release(s)
            self._notify(Notice.RESET, s, "timeout")
            return
        mss = s.snd_mss
        flight = _diff(s.snd_max, s.snd_una)
        if s.retries == 1:
            s.ssthresh = max(flight // 2, 2 * mss)
        s.cwnd = mss
        s.recover = s.snd_max
        s.in_recovery = False
        s.dupacks = 0
        s.rtt_seq = None
        s.snd_nxt = s.snd_una
        s.rto = min(2 * s.rto, self.config.rto_max)
        s.rtx_at = None
        if zero_window and seq_lt(s.snd_una, s.data_end):
            # The first segment sent again is the probe, the next one comes with the backed-off
            # RTO (Linux tcp_retransmit_timer(): "our retransmits become zero probes";
            # __tcp_retransmit_skb() sends one segment at snd_una into a zero window). The
            # persist timer stays off while data is in flight, as in Linux.
            self._retransmit_first(s)
            self.stats["window_probes"] += 1
            s.rtx_at = self.now + s.rto
        self._output(s)
        if s.rtx_at is None and s.snd_una != s.snd_max:
            s.rtx_at = self.now + s.rto

    def _persist_timeout(self, s: _Session) -> None:
        # Linux tcp_xmit_probe_skb(): an ACK with an old sequence number makes the peer answer
        # with its current window without taking any data.
        self._send_segment(s, (s.snd_una - 1) % _MOD, ACK)
        self.stats["window_probes"] += 1
        s.persist_interval = min(2 * s.persist_interval, self.config.rto_max)
        s.persist_at = self.now + s.persist_interval

    # ------------------------------------------------------------------------------ helpers

    def _session(self, sid: int) -> _Session:
        s = self._sessions[sid] if isinstance(sid, int) and 0 <= sid < len(self._sessions) \
            else None
        if s is None:
            raise TcpError(f"No session {sid!r}")
        return s

    def _new_session(self, ip: bytes, port: int, local_port: int, state: State,
                     passive: bool) -> _Session | None:
        sid = self._table.insert(SessionTable.key(ip, port, local_port))
        if sid is None:
            return None
        s = _Session(sid=sid, peer_ip=ip, peer_port=port, local_port=local_port, state=state,
                     passive=passive, created=self.now)
        self._sessions[sid] = s
        self._lookup[(ip, port, local_port)] = sid
        return s

    def _release(self, s: _Session) -> None:
        if self._sessions[s.sid] is s:
            self._sessions[s.sid] = None
            self._lookup.pop((s.peer_ip, s.peer_port, s.local_port), None)
            self._table.delete(s.sid)
        s.state = State.CLOSED

    def _notify(self, kind: Notice, s: _Session, info: str = "") -> None:
        self._notes.append(Notification(kind, s.sid, info))

    def _ephemeral_port(self, peer: bytes, port: int) -> int:
        for _ in range(0x10000 - _EPHEMERAL_FIRST):
            candidate = self._next_port
            self._next_port = candidate + 1 if candidate < 0xFFFF else _EPHEMERAL_FIRST
            if (peer, port, candidate) not in self._lookup:
                return candidate
        raise TcpError("No free local port")

    def _isn(self, peer: bytes, port: int, local_port: int) -> int:
        """RFC 6528: a 4-microsecond clock plus a keyed hash of the connection's addresses."""
        if self.config.fixed_isn is not None:
            return self.config.fixed_isn % _MOD
        digest = hashlib.blake2s(self.ip + peer + local_port.to_bytes(2, "big")
                                 + port.to_bytes(2, "big"), key=self.config.isn_key[:32],
                                 digest_size=4).digest()
        clock = self.now * 250_000 // self.config.clock_hz
        return (clock + int.from_bytes(digest, "big")) % _MOD

    def _next_id(self) -> int:
        self._ip_id = (self._ip_id + 1) & 0xFFFF
        return self._ip_id

    def _emit(self, frame: bytes) -> None:
        self._tx.append(frame)
        self.stats["frames_out"] += 1
