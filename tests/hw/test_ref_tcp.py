"""State-machine edges of the golden TCP engine (hw/ref/tcp.py).

A scripted peer feeds hand-built segments and reads the engine's answers; expected values come
from the RFCs (9293, 6298, 5681, 6582, 7323, 5961), worked out in each test, and frames are
checked with scapy. The claims that a Linux peer can check are checked against Linux in
test_toe_linux.py (close from either side, RST, zero window, wrap-around, window scale).
"""

import random

import pytest
from scapy.layers.inet import ICMP, IP, TCP
from scapy.layers.l2 import ARP, Ether

from nicsim.hw.ref.tcp import (
    ACK,
    FIN,
    PSH,
    RST,
    SYN,
    Notice,
    State,
    TcpConfig,
    TcpEngine,
    TcpError,
    build_tcp_frame,
    cycles,
    parse_tcp_frame,
    seq_ge,
    seq_gt,
    seq_lt,
)
from nicsim.hw.toe.apps import AppHost, EchoApp, SendApp
from nicsim.hw.toe.impair import Impairment
from nicsim.hw.toe.loopback import Loopback

MOD = 1 << 32
E_MAC, P_MAC = bytes.fromhex("020000000002"), bytes.fromhex("020000000001")
E_IP, P_IP = bytes([10, 0, 0, 2]), bytes([10, 0, 0, 1])
MS = cycles(0.001)
LATENCY = cycles(50e-6)


class Peer:
    """A scripted TCP peer talking to one engine."""

    def __init__(self, engine, port=40000, engine_port=80, iss=1000, window=65535):
        self.engine = engine
        self.port = port
        self.engine_port = engine_port
        self.snd_nxt = iss
        self.rcv_nxt = None
        self.window = window
        self.now = 0

    def frame(self, flags, payload=b"", seq=None, ack=None, window=None, **options):
        return build_tcp_frame(P_MAC, E_MAC, P_IP, E_IP, self.port, self.engine_port,
                               self.snd_nxt if seq is None else seq,
                               (self.rcv_nxt or 0) if ack is None else ack, flags,
                               self.window if window is None else window, payload, **options)

    def send(self, flags, payload=b"", advance=True, **kwargs):
        """Send a segment; move snd_nxt by its length unless ``seq`` is given."""
        frame = self.frame(flags, payload, **kwargs)
        if advance and "seq" not in kwargs:
            self.snd_nxt = (self.snd_nxt + len(payload) + bool(flags & SYN)
                            + bool(flags & FIN)) % MOD
        self.engine.receive(frame, self.now)
        return self.out()

    def out(self):
        segs = []
        for f in self.engine.pop_tx():
            seg = parse_tcp_frame(f)
            assert not isinstance(seg, str), seg
            segs.append(seg)
            if seg.flags & SYN:
                self.rcv_nxt = (seg.seq + 1) % MOD
        return segs

    def at(self, now):
        self.now = now
        self.engine.advance(now)
        return self.out()

    def connect(self, wscale=None, mss=1460):
        """Passive open on the engine: SYN, SYN-ACK, ACK; return the session number."""
        self.engine.listen(self.engine_port)
        (synack,) = self.send(SYN, mss=mss, wscale=wscale)
        assert synack.flags == SYN | ACK and synack.ack == self.snd_nxt
        assert self.send(ACK) == []
        (note,) = [n for n in self.engine.notifications() if n.kind == Notice.CONNECTED]
        return note.session


def engine(**overrides):
    return TcpEngine(E_MAC, E_IP, TcpConfig(**overrides))


def learn_peer_mac(e):
    arp = bytes(Ether(src=P_MAC, dst="ff:ff:ff:ff:ff:ff")
                / ARP(op=1, hwsrc=P_MAC, psrc="10.0.0.1", pdst="10.0.0.2"))
    e.receive(arp, 0)
    e.pop_tx()


# ----------------------------------------------------------------------------- ARP, ICMP, IP

def test_arp_reply_checked_by_scapy():
    e = engine()
    request = Ether(src=P_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(
        op=1, hwsrc=P_MAC, psrc="10.0.0.1", pdst="10.0.0.2")
    e.receive(bytes(request), 0)
    (reply,) = e.pop_tx()
    pkt = Ether(reply)
    assert pkt.dst == "02:00:00:00:00:01" and pkt[ARP].op == 2
    assert pkt[ARP].hwsrc == "02:00:00:00:00:02" and pkt[ARP].psrc == "10.0.0.2"
    assert pkt[ARP].hwdst == "02:00:00:00:00:01" and pkt[ARP].pdst == "10.0.0.1"
    e.receive(bytes(Ether(src=P_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(
        op=1, hwsrc=P_MAC, psrc="10.0.0.1", pdst="10.0.0.9")), 0)
    assert e.pop_tx() == [] and e.drops["not_for_us"] == 1


def test_icmp_echo_reply_checked_by_scapy():
    e = engine()
    request = (Ether(src=P_MAC, dst=E_MAC) / IP(src="10.0.0.1", dst="10.0.0.2")
               / ICMP(type=8, id=0x1234, seq=7) / (b"ping" * 20))
    e.receive(bytes(request), 0)
    (reply,) = e.pop_tx()
    pkt = Ether(reply)
    icmp = pkt[ICMP]
    assert pkt[IP].src == "10.0.0.2" and pkt[IP].dst == "10.0.0.1"
    assert icmp.type == 0 and icmp.id == 0x1234 and icmp.seq == 7
    assert bytes(icmp.payload) == b"ping" * 20
    recomputed = Ether(bytes(pkt.copy().__class__(reply)))
    del recomputed[ICMP].chksum
    del recomputed[IP].chksum
    rebuilt = Ether(bytes(recomputed))
    assert rebuilt[ICMP].chksum == icmp.chksum and rebuilt[IP].chksum == pkt[IP].chksum


def test_tcp_frames_checked_by_scapy():
    e = engine()
    e.listen(80)
    p = Peer(e)
    (synack,) = p.send(SYN, mss=1000, wscale=7)
    frame = build_tcp_frame(E_MAC, P_MAC, E_IP, P_IP, 80, 40000, 5, 6, ACK | PSH, 100, b"xyz",
                            mss=1460, wscale=3)
    pkt = Ether(frame)
    rebuilt = Ether(frame)
    del rebuilt[TCP].chksum
    del rebuilt[IP].chksum
    rebuilt = Ether(bytes(rebuilt))
    assert rebuilt[TCP].chksum == pkt[TCP].chksum and rebuilt[IP].chksum == pkt[IP].chksum
    assert dict(pkt[TCP].options) == {"MSS": 1460, "WScale": 3, "NOP": None}
    assert synack.mss == 1460 and synack.wscale == e.config.rcv_wscale


def test_bad_input_is_dropped_and_counted():
    e = engine()
    e.listen(80)
    p = Peer(e)
    good = p.frame(SYN)
    bad_csum = bytearray(good)
    bad_csum[-1] ^= 0xFF  # a byte of the TCP header: its checksum no longer holds
    e.receive(bytes(bad_csum), 0)
    e.receive(good[:40], 0)
    bad_ip = bytearray(good)
    bad_ip[22] ^= 1  # TTL
    e.receive(bytes(bad_ip), 0)
    e.receive(p.frame(SYN | FIN), 0)
    e.receive(p.frame(0), 0)
    e.receive(b"\x00" * 10, 0)
    e.receive(bytes(Ether(src=P_MAC, dst=E_MAC, type=0x86DD) / (b"\x60" + b"\x00" * 50)), 0)
    assert e.pop_tx() == [] and e.sessions() == []
    assert e.drops == {"bad_tcp_checksum": 1, "truncated": 2, "bad_ip_checksum": 1,
                       "bad_flags": 2, "not_ipv4": 1}


def test_random_frames_never_raise():
    e = engine()
    e.listen(80)
    rng = random.Random(1)
    base = Peer(e).frame(SYN, b"data", mss=1460, wscale=2)
    for i in range(3000):
        frame = bytearray(base[:rng.randrange(len(base) + 1)])
        for _ in range(rng.randrange(4)):
            if frame:
                frame[rng.randrange(len(frame))] = rng.randrange(256)
        if rng.random() < 0.2:
            frame = bytearray(rng.randbytes(rng.randrange(80)))
        e.receive(bytes(frame), i)
        e.advance(i)
    assert sum(e.drops.values()) > 2500


# ------------------------------------------------------------------------------- handshakes

def test_window_scale_and_mss_negotiated():
    e = engine(rx_buffer=1 << 20)
    p = Peer(e)
    sid = p.connect(wscale=7, mss=536)
    info = e.session_info(sid)
    assert info["snd_wscale"] == 7 and info["rcv_wscale"] == 5 and info["snd_mss"] == 536
    p.send(ACK, window=100)  # 100 << 7
    assert e.session_info(sid)["snd_wnd"] == 12800
    segs = (e.send(sid, bytes(8000)), p.out())[1]
    assert [len(s.payload) for s in segs] == [536] * 10  # RFC 6928: IW = 10 * 536


def test_initial_window_rfc6928():
    # RFC 6928 §2: min(10 * MSS, max(2 * MSS, 14600)) bytes, sent as whole segments (a short
    # one would neither be full-sized nor empty the buffer: RFC 9293 §3.8.6.2.1)
    for mss, iw_segments in ((536, 10), (1460, 10), (4000, 3), (8000, 2)):
        e = engine(mss=9000)
        p = Peer(e)
        sid = p.connect(mss=mss)
        e.send(sid, bytes(100_000))
        segs = p.out()
        assert [len(s.payload) for s in segs] == [mss] * iw_segments


def test_no_window_scale_without_peer_option():
    e = engine(rx_buffer=1 << 20)
    e.listen(80)
    p = Peer(e)
    (synack,) = p.send(SYN, mss=1460)
    assert synack.wscale is None and synack.window == 0xFFFF
    p.send(ACK)
    sid = e.sessions()[0]
    assert e.session_info(sid)["snd_wscale"] == 0 and e.session_info(sid)["rcv_wscale"] == 0


def pair(latency=10_000, **overrides):
    a = TcpEngine(P_MAC, P_IP, TcpConfig(**overrides))
    b = TcpEngine(E_MAC, E_IP, TcpConfig(**overrides))
    return a, b


def test_simultaneous_open():
    """RFC 9293 §3.5 figure 8: SYNs cross, both go SYN-RECEIVED, then ESTABLISHED."""
    a, b = pair()
    states = []
    sa = a.open(E_IP, 7000, local_port=6000)
    sb = b.open(P_IP, 6000, local_port=7000)

    class Watch:
        def step(self):
            states.append((a.state(sa), b.state(sb)))

    link = Loopback(a, b, latency=10_000, hosts=[Watch()])
    assert link.run(lambda: states and states[-1] == (State.ESTABLISHED,) * 2,
                    max_cycles=cycles(1))
    assert (State.SYN_RECEIVED, State.SYN_RECEIVED) in states
    kinds_a = [n.kind for n in a.notifications()]
    kinds_b = [n.kind for n in b.notifications()]
    assert kinds_a == kinds_b == [Notice.CONNECTED]
    a.send(sa, b"from a")
    b.send(sb, b"from b")
    link.run(lambda: a.readable(sa) and b.readable(sb), max_cycles=cycles(1))
    assert a.recv(sa) == b"from b" and b.recv(sb) == b"from a"


def test_rst_in_syn_received_after_simultaneous_open_is_refused():
    """RFC 9293 §3.10.7.4, SYN-RECEIVED: a RST at rcv_nxt in a connection that came from
    SYN-SENT (our SYN crossed the peer's) means "connection refused"."""
    e = engine()
    learn_peer_mac(e)
    p = Peer(e, engine_port=6000, iss=9000)
    sid = e.open(P_IP, 40000, local_port=6000)
    (syn,) = p.out()
    assert syn.flags == SYN
    (syn_ack,) = p.send(SYN, mss=1460)
    assert syn_ack.flags == SYN | ACK and syn_ack.ack == 9001
    assert e.state(sid) == State.SYN_RECEIVED
    assert p.send(RST, seq=9002, advance=False)[0].flags == ACK  # not at rcv_nxt: challenge
    assert e.state(sid) == State.SYN_RECEIVED
    assert p.send(RST) == []
    assert e.state(sid) == State.CLOSED and e.sessions() == []
    assert [(n.kind, n.info) for n in e.notifications()] == [(Notice.RESET, "refused")]


@pytest.mark.parametrize("timeouts, rto_ms", [(0, 200), (1, 3000), (3, 8000)])
def test_rto_after_syn_ack_timeout(timeouts, rto_ms):
    """RFC 6298 §5.7: when the SYN-ACK timed out and the handshake gave no RTT sample (Karn),
    the RTO is re-initialized to 3 s once data flows (1 s doubled once is 2 s, less than 3 s);
    a larger backed-off RTO (1, 2, 4 s: 8 s) stays. Without a timeout the handshake's RTT
    sample (50 ms) gives rto_min (200 ms)."""
    e = engine()
    p = Peer(e)
    e.listen(80)
    (syn_ack,) = p.send(SYN, mss=1460)
    t = 0
    for k in range(timeouts):
        t += 1000 * MS << k
        (again,) = p.at(t)
        assert again.flags == SYN | ACK
    p.now = t + 50 * MS
    assert p.send(ACK) == []
    (note,) = e.notifications()
    assert note.kind == Notice.CONNECTED
    e.send(note.session, b"x" * 100)
    (data,) = p.out()
    sent = p.now
    assert p.at(sent + rto_ms * MS - 1) == []
    (again,) = p.at(sent + rto_ms * MS)
    assert again.seq == data.seq and again.payload == data.payload


def test_simultaneous_close():
    """RFC 9293 §3.6 figure 13: FINs cross, both CLOSING, then TIME-WAIT, then released."""
    a, b = pair(time_wait=cycles(0.01))
    sa = a.open(E_IP, 7000, local_port=6000)
    b.listen(7000)
    link = Loopback(a, b, latency=10_000)
    link.run(lambda: a.state(sa) == State.ESTABLISHED and b.sessions(), max_cycles=cycles(1))
    link.run(max_cycles=100_000)  # the handshake's last ACK reaches b
    (sb,) = b.sessions()
    assert b.state(sb) == State.ESTABLISHED
    a.close(sa)
    b.close(sb)
    seen = set()

    class Watch:
        def step(self):
            seen.add((a.state(sa), b.state(sb)))

    link.hosts.append(Watch())
    assert link.run(lambda: (State.TIME_WAIT, State.TIME_WAIT) in seen, max_cycles=cycles(1))
    assert (State.CLOSING, State.CLOSING) in seen
    entered = link.now
    link.run(lambda: not a.sessions() and not b.sessions(), max_cycles=cycles(1))
    assert cycles(0.01) <= link.now - entered <= cycles(0.01) + 20_000


# ------------------------------------------------------------------------------------ RST

def reach(state):
    """Return (engine, peer, session) with the session in ``state``."""
    e = engine(time_wait=cycles(1))
    learn_peer_mac(e)
    p = Peer(e)
    if state == State.SYN_SENT:
        sid = e.open(P_IP, 40000, local_port=80)
        p.out()
        return e, p, sid
    e.listen(80)
    if state == State.SYN_RECEIVED:
        p.send(SYN, mss=1460)
        return e, p, e.sessions()[0]
    sid = p.connect()
    if state == State.ESTABLISHED:
        return e, p, sid
    if state in (State.CLOSE_WAIT, State.LAST_ACK):
        p.send(FIN | ACK)
        if state == State.LAST_ACK:
            e.close(sid)
            p.out()
        return e, p, sid
    e.close(sid)
    (fin,) = p.out()
    assert fin.flags & FIN
    if state == State.FIN_WAIT_1:
        return e, p, sid
    if state == State.CLOSING:
        p.send(FIN | ACK, ack=fin.seq)  # our FIN crosses theirs, not acking it
        return e, p, sid
    p.rcv_nxt = (fin.seq + 1) % MOD
    p.send(ACK)
    if state == State.FIN_WAIT_2:
        return e, p, sid
    p.send(FIN | ACK)
    assert state == State.TIME_WAIT
    return e, p, sid


SYNCHRONIZED = [State.SYN_RECEIVED, State.ESTABLISHED, State.FIN_WAIT_1, State.FIN_WAIT_2,
                State.CLOSE_WAIT, State.CLOSING, State.LAST_ACK, State.TIME_WAIT]


@pytest.mark.parametrize("state", SYNCHRONIZED, ids=lambda s: s.value)
def test_rst_in_window_but_not_exact_gets_challenge_ack(state):
    """RFC 5961 §3.2: only RST at rcv_nxt resets; elsewhere in the window, a challenge ACK."""
    e, p, sid = reach(state)
    assert e.state(sid) == state
    e.notifications()
    segs = p.send(RST, seq=(p.snd_nxt + 1) % MOD, advance=False)
    assert e.state(sid) == state
    assert [(s.flags, s.ack) for s in segs] == [(ACK, p.snd_nxt)]
    assert e.stats["challenge_acks"] == 1


@pytest.mark.parametrize("state", SYNCHRONIZED, ids=lambda s: s.value)
def test_rst_at_rcv_nxt_resets(state):
    """RFC 9293 §3.10.7.4 second check, state by state."""
    e, p, sid = reach(state)
    e.notifications()
    assert p.send(RST) == []
    assert e.state(sid) == State.CLOSED and e.sessions() == []
    notes = [(n.kind, n.info) for n in e.notifications()]
    if state in (State.SYN_RECEIVED, State.TIME_WAIT):
        assert notes == []  # passive half-open back to LISTEN; TIME-WAIT just ends
    else:
        assert notes == [(Notice.RESET, "rst")]


def test_rst_in_syn_sent():
    """RFC 9293 §3.10.7.3: a RST is acceptable only with an ACK of our SYN."""
    e, p, sid = reach(State.SYN_SENT)
    iss = e.session_info(sid)["iss"]
    assert p.send(RST, seq=0, ack=0, advance=False) == []
    assert e.state(sid) == State.SYN_SENT
    out = p.send(RST | ACK, seq=0, ack=iss + 5, advance=False)
    assert out == [] and e.state(sid) == State.SYN_SENT
    p.send(RST | ACK, seq=0, ack=iss + 1, advance=False)
    assert e.state(sid) == State.CLOSED
    assert [(n.kind, n.info) for n in e.notifications()] == [(Notice.RESET, "refused")]


@pytest.mark.parametrize("state", [State.ESTABLISHED, State.FIN_WAIT_2, State.CLOSE_WAIT],
                         ids=lambda s: s.value)
def test_syn_in_synchronized_state_gets_challenge_ack(state):
    """RFC 5961 §4: a SYN (any sequence number) gets a challenge ACK, state unchanged."""
    e, p, sid = reach(state)
    segs = p.send(SYN, seq=12345, advance=False)
    assert e.state(sid) == state
    assert [(s.flags, s.ack) for s in segs] == [(ACK, p.snd_nxt)]


def test_segment_to_closed_port_gets_rst():
    """RFC 9293 §3.10.7.1."""
    e = engine()
    p = Peer(e, engine_port=81)
    (rst,) = p.send(SYN)
    assert rst.flags == RST | ACK and rst.seq == 0 and rst.ack == p.snd_nxt
    (rst,) = p.send(ACK, ack=777, advance=False)
    assert rst.flags == RST and rst.seq == 777
    assert p.send(RST, advance=False) == []


def test_time_wait_acks_retransmitted_fin_and_restarts():
    e, p, sid = reach(State.TIME_WAIT)
    fin_seq = (p.snd_nxt - 1) % MOD
    p.at(cycles(0.5))
    (ack,) = p.send(FIN | ACK, seq=fin_seq, advance=False)
    assert ack.flags == ACK and ack.ack == p.snd_nxt
    p.at(cycles(1.4))  # 1 s after the entry, 0.9 s after the restart
    assert e.state(sid) == State.TIME_WAIT
    p.at(cycles(1.5))
    assert e.state(sid) == State.CLOSED
    assert [(n.kind, n.info) for n in e.notifications()][-1] == (Notice.CLOSED, "done")


def test_out_of_window_data_dropped_and_acked():
    e = engine(rx_buffer=4096)
    p = Peer(e)
    p.connect()
    segs = p.send(ACK, bytes(100), seq=(p.snd_nxt + 5000) % MOD, advance=False)
    assert [(s.flags, s.ack) for s in segs] == [(ACK, p.snd_nxt)]
    assert e.drops["out_of_window"] == 1


# ------------------------------------------------------------------------- receiving, ACKs

def test_delayed_ack():
    """RFC 1122 §4.2.3.2 / RFC 9293 §3.8.6.3: ACK every second segment or after delack."""
    e = engine(delack=cycles(0.04))
    p = Peer(e)
    sid = p.connect()
    assert p.send(ACK, bytes(1460)) == []
    assert p.at(cycles(0.04) - 1) == []
    (ack,) = p.at(cycles(0.04))
    assert ack.ack == p.snd_nxt
    assert p.send(ACK, bytes(1460)) == []
    (ack,) = p.send(ACK, bytes(1460))
    assert ack.ack == p.snd_nxt
    assert e.recv(sid) == bytes(3 * 1460)


def test_out_of_order_held_and_ranges_bounded():
    e = engine(ooo_ranges=2)
    p = Peer(e)
    sid = p.connect()
    base = p.snd_nxt
    chunk = [bytes([i]) * 1000 for i in range(6)]
    send = lambda i: p.send(ACK, chunk[i], seq=(base + 1000 * i) % MOD, advance=False)  # noqa: E731
    assert [s.ack for s in send(2)] == [base]  # immediate duplicate ACK
    assert [s.ack for s in send(4)] == [base]
    assert [s.ack for s in send(5)] == [base]  # joins range 4, still two ranges
    assert e.drops["ooo_full"] == 0
    send(1)  # joins range 2
    assert e.session_info(sid)["ooo_ranges"] == 2
    e2 = engine(ooo_ranges=1)
    p2 = Peer(e2)
    p2.connect()
    p2.send(ACK, bytes(10), seq=(p2.snd_nxt + 1000) % MOD, advance=False)
    p2.send(ACK, bytes(10), seq=(p2.snd_nxt + 3000) % MOD, advance=False)
    assert e2.drops["ooo_full"] == 1
    (ack,) = send(0)  # fills the hole: ACK at once, up to the end of range 1-2
    assert ack.ack == (base + 3000) % MOD
    send(3)
    assert e.recv(sid) == b"".join(chunk)


def test_zero_window_probes_back_off():
    """Persist timer: probes at rto, then doubling (RFC 9293 §3.8.6.1), seq = snd_una - 1."""
    e = engine(rto_min=cycles(0.2), rto_max=cycles(1))
    p = Peer(e)
    sid = p.connect()
    p.send(ACK, window=0)
    e.send(sid, bytes(4000))
    assert p.out() == []
    rto = e.session_info(sid)["rto"]
    una = e.session_info(sid)["snd_una"]
    times = []
    t = 0
    while len(times) < 5:
        t += MS
        for s in p.at(t):
            assert s.seq == (una - 1) % MOD and not s.payload
            times.append(t)
    gaps = [b - a for a, b in zip([0] + times, times, strict=False)]
    expected = [rto, 2 * rto, 4 * rto, cycles(1), cycles(1)]
    assert all(abs(g - x) <= MS for g, x in zip(gaps, expected, strict=True)), (gaps, expected)
    segs = p.send(ACK, window=65535)
    assert sum(len(s.payload) for s in segs) > 0


def test_peer_window_closed_with_data_in_flight_keeps_connection():
    """The peer closes its window while data is in flight and answers every probe: each
    retransmission timeout sends the first unacknowledged segment again as the probe (Linux
    tcp_retransmit_timer(), __tcp_retransmit_skb()), the RTO doubling up to rto_max (RFC 6298
    §5.5), and the connection stays open however many timeouts pass (RFC 9293 §3.8.6.1,
    MUST-26); the persist timer stays off meanwhile; the data goes again from snd_una when the
    window opens."""
    e = engine(rto_min=cycles(0.2), rto_max=cycles(1), data_retries=3)
    p = Peer(e)
    sid = p.connect()
    data = bytes(range(250)) * 12
    e.send(sid, data)
    sent = p.out()
    assert [len(s.payload) for s in sent] == [1460, 1460, 80]
    una = (sent[0].seq + 1460) % MOD
    p.send(ACK, ack=una, window=0)
    rto = e.session_info(sid)["rto"]
    times = []
    t = 0
    while t < cycles(10):  # ten times rto_max, far beyond three retries
        t += MS
        for s in p.at(t):
            assert (s.flags, s.seq, s.payload) == (ACK, una, data[1460:2920])
            times.append(t)
            p.send(ACK, ack=una, window=0, advance=False)  # the peer answers: still closed
    gaps = [b - a for a, b in zip([0, *times], times, strict=False)]  # the ACK came at 0
    expected = [rto, 2 * rto, 4 * rto] + [cycles(1)] * (len(gaps) - 3)
    assert all(abs(g - x) <= MS for g, x in zip(gaps, expected, strict=True)), (gaps, expected)
    assert len(times) >= 8 and e.state(sid) == State.ESTABLISHED
    assert e.stats["window_probes"] == e.stats["timeouts"] == len(times)
    assert not [n for n in e.notifications() if n.kind == Notice.RESET]
    p.now = t + 10 * MS
    segs = p.send(ACK, ack=una, window=65535, advance=False)
    assert [(s.seq, len(s.payload)) for s in segs] == [(una, 1460)]  # cwnd: 1 MSS


@pytest.mark.parametrize("ooo_ranges", [8, 0])
def test_out_of_order_fin(ooo_ranges):
    """A FIN beyond rcv_nxt (its data lost): held with the out-of-order ranges, so the data
    that fills the hole closes the direction, DATA notified before CLOSED (the data came
    first); with ``ooo_ranges=0`` dropped like out-of-order data, and the FIN sent again
    closes it."""
    e = engine(ooo_ranges=ooo_ranges)
    p = Peer(e)
    sid = p.connect()
    base = p.snd_nxt
    (ack,) = p.send(FIN | ACK, seq=(base + 100) % MOD, advance=False)
    assert ack.ack == base  # an immediate duplicate ACK
    p.send(ACK | PSH, bytes(100))
    notes = [(n.kind, n.info) for n in e.notifications()]
    if ooo_ranges:
        assert notes == [(Notice.DATA, ""), (Notice.CLOSED, "peer")]
        assert e.state(sid) == State.CLOSE_WAIT
    else:
        assert notes == [(Notice.DATA, "")] and e.state(sid) == State.ESTABLISHED
        p.send(FIN | ACK)
        assert [(n.kind, n.info) for n in e.notifications()] == [(Notice.CLOSED, "peer")]
        assert e.state(sid) == State.CLOSE_WAIT


def test_receiver_window_shrinks_to_zero_then_updates():
    e = engine(rx_buffer=4096, mss=1460)
    p = Peer(e)
    sid = p.connect()
    for _ in range(3):
        p.send(ACK, bytes(1365))
    out = p.send(ACK, bytes(1))  # buffer full: 4096 bytes
    p.at(cycles(1))
    windows = [s.window for s in out + p.out()]
    assert windows and windows[-1] == 0
    (update,) = (e.recv(sid, 3000), p.out())[1]
    assert update.window == 3000


# -------------------------------------------------------------------------------- timers

def test_rto_from_rtt_sample_rfc6298():
    """First sample R: SRTT = R, RTTVAR = R/2, RTO = SRTT + 4 RTTVAR (RFC 6298 §2.2)."""
    e = engine(rto_min=1000)
    learn_peer_mac(e)
    p = Peer(e)
    sid = e.open(P_IP, 40000, local_port=80)
    (syn,) = p.out()
    r = 300_000
    p.at(r)
    p.send(SYN | ACK, ack=syn.seq + 1)
    assert e.session_info(sid)["srtt"] == r
    assert e.session_info(sid)["rto"] == r + 4 * (r // 2)
    e.send(sid, bytes(100))
    (data,) = p.out()
    r2 = 100_000
    p.at(r + r2)
    p.send(ACK, ack=(data.seq + 100) % MOD)
    rttvar = (3 * (r // 2) + abs(r - r2)) // 4
    srtt = (7 * r + r2) // 8
    assert e.session_info(sid)["rto"] == srtt + 4 * rttvar


def test_retransmission_backoff_and_give_up():
    """RFC 6298 §5.5: RTO doubles per expiry up to rto_max; after data_retries, RST."""
    e = engine(rto_min=cycles(0.2), rto_max=cycles(1), data_retries=5)
    p = Peer(e)
    sid = p.connect()
    e.send(sid, b"hello")
    (first,) = p.out()
    times = []
    t = 0
    while e.state(sid) != State.CLOSED:
        t += MS
        for s in p.at(t):
            times.append((t, s.flags, s.seq, s.payload))
    sends = [x for x in times if x[3] == b"hello"]
    assert all(x[2] == first.seq for x in sends)
    gaps = [b[0] - a for a, b in zip([0] + [s[0] for s in sends], sends, strict=False)]
    expected = [cycles(x) for x in (0.2, 0.4, 0.8, 1, 1)]
    assert all(abs(g - x) <= MS for g, x in zip(gaps, expected, strict=True)), gaps
    assert times[-1][1] & RST
    assert [(n.kind, n.info) for n in e.notifications()][-1] == (Notice.RESET, "timeout")


def test_syn_retransmission_backoff():
    e = engine(syn_retries=3)
    learn_peer_mac(e)
    p = Peer(e)
    sid = e.open(P_IP, 40000)
    p.out()
    syn_times = []
    t = 0
    while e.state(sid) != State.CLOSED:
        t += 10 * MS
        syn_times += [t for s in p.at(t) if s.flags == SYN]
    assert syn_times == [cycles(x) for x in (1, 3, 7)]  # 1 s initial RTO, doubling
    assert t == cycles(15)
    assert [(n.kind, n.info) for n in e.notifications()] == [(Notice.RESET, "timeout")]


# ----------------------------------------------------------------- congestion control, bulk

def bulk(a_cfg=None, drop=None, size=400_000, latency=LATENCY, **loopback):
    a = TcpEngine(P_MAC, P_IP, a_cfg or TcpConfig())
    b = TcpEngine(E_MAC, E_IP, a_cfg or TcpConfig())
    data = random.Random(size).randbytes(size)
    echo = EchoApp(b, 7)
    sender = SendApp(a, "10.0.0.2", 7, [data])
    data_segments = []

    def tap(now, direction, frame):
        seg = parse_tcp_frame(frame)
        if direction == "ab" and not isinstance(seg, str) and seg.payload:
            data_segments.append(seg.seq)
            if drop and len(data_segments) in drop:
                return []
        return None

    link = Loopback(a, b, latency=latency, tap=tap,
                    hosts=[AppHost(a, [sender]), AppHost(b, [echo])], **loopback)
    (sid,) = sender.opened
    ok = link.run(lambda: len(sender.received[sid]) == size and sid in sender.released,
                  max_cycles=cycles(30))
    assert ok
    assert bytes(sender.received[sid]) == data
    return a, b


def test_fast_retransmit_on_third_dup_ack():
    a, _ = bulk(drop={40})
    assert a.stats["fast_retransmits"] == 1
    assert a.stats["timeouts"] == 0 and a.stats["retransmits"] == 1


def test_newreno_partial_ack_retransmits_next_hole():
    """RFC 6582: two losses in a window, one fast retransmit, the second hole on the
    partial ACK, no timeout."""
    a, _ = bulk(drop={40, 44})
    assert a.stats["fast_retransmits"] == 1
    assert a.stats["retransmits"] == 2 and a.stats["timeouts"] == 0


def test_loss_at_the_tail_recovered_by_timeout():
    a, _ = bulk(drop={275}, size=400_000)
    assert a.stats["timeouts"] >= 1 or a.stats["fast_retransmits"] >= 1


def test_sequence_wraparound_bulk_with_loss():
    cfg = TcpConfig(fixed_isn=MOD - 200_000)
    a, b = bulk(cfg, size=1 << 20, impair_ab=Impairment(0.02, 0.01, 0.02, 1),
                impair_ba=Impairment(0.02, 0.01, 0.02, 2))
    assert a.stats["retransmits"] and b.stats["retransmits"]


def test_seq_arithmetic_wraps():
    assert seq_lt(MOD - 10, 5) and seq_gt(5, MOD - 10) and seq_ge(7, 7)
    assert not seq_lt(5, MOD - 10)


def test_congestion_window_grows_slow_start_then_linear():
    """RFC 5681 §3.1: +min(N, SMSS) per ACK below ssthresh, about +SMSS per RTT above."""
    e = engine(tx_buffer=1 << 20)
    p = Peer(e, window=65535)
    sid = p.connect(wscale=4)
    e.send(sid, bytes(1 << 20))
    segs = p.out()
    cwnd0 = e.session_info(sid)["cwnd"]
    assert cwnd0 == 10 * 1460
    p.send(ACK, ack=(segs[0].seq + 1460) % MOD)
    assert e.session_info(sid)["cwnd"] == cwnd0 + 1460



def test_congestion_avoidance_counts_acknowledged_bytes():
    """RFC 5681 §3.1 (recommended) and RFC 3465 §2.1: above ssthresh, cwnd grows by one SMSS
    when the bytes acknowledged reach cwnd, however they are split into ACKs (ACK division
    gains nothing)."""
    e = engine(tx_buffer=1 << 20)
    p = Peer(e, window=65535)
    sid = p.connect(wscale=4)
    s = e._sessions[sid]
    s.ssthresh = s.cwnd  # congestion avoidance from the start
    cwnd0 = s.cwnd
    e.send(sid, bytes(1 << 20))
    una = p.out()[0].seq
    for k in range(1, cwnd0 // 100 + 1):  # one ACK per 100 bytes: cwnd / 100 ACKs
        p.send(ACK, ack=(una + 100 * k) % MOD, advance=False)
        p.out()
        grown = e.session_info(sid)["cwnd"] - cwnd0
        assert grown == (1460 if 100 * k >= cwnd0 else 0), k


# ------------------------------------------------------------------------------ robustness

def test_syn_flood_keeps_established_sessions():
    e = engine(max_sessions=16, max_half_open=8)
    p = Peer(e)
    sid = p.connect()
    for i in range(100):
        Peer(e, port=20000 + i).send(SYN, mss=1460)
    assert e.stats["half_open_evicted"] == 92
    assert e.drops["session_table_full"] == 0
    half_open = [s for s in e.sessions() if e.state(s) == State.SYN_RECEIVED]
    assert len(half_open) == 8 and e.state(sid) == State.ESTABLISHED
    p.send(ACK | PSH, b"still here")
    assert e.recv(sid) == b"still here"
    late = Peer(e, port=30000)
    late.connect()
    assert len(e.sessions()) == 1 + 8


def test_session_table_full_is_counted():
    e = engine(max_sessions=2, max_half_open=2)
    for i in range(2):
        Peer(e, port=1000 + i).connect()
    Peer(e, port=2000).send(SYN)
    assert e.drops["session_table_full"] == 1
    with pytest.raises(TcpError, match="2 of 2 sessions in use"):
        e.open(P_IP, 1)


def test_config_errors():
    with pytest.raises(TcpError, match="Sessions must be 1 to 1024"):
        TcpConfig(max_sessions=2048)
    with pytest.raises(TcpError, match="MSS"):
        TcpConfig(mss=10)
    with pytest.raises(TcpError, match="Not an IPv4 address"):
        TcpEngine(E_MAC, "10.0.0.300")
