"""The RTL TCP session engine (rtl/toe/sessions.py, Amaranth's simulator) against the golden
model hw.ref.tcp.TcpEngine: the same scripted segments go into both, and every frame they send
must be the same, byte for byte (so every header field: sequence and acknowledgment numbers,
flags, window, options, IPv4 identification, checksums). The model is configured as the
gateware is built: out-of-order data dropped (``ooo_ranges=0``), the same buffers, ISN and
timers (in 10 ms ticks). Then the two run against each other over a lossy wire."""

import random

import pytest

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
    build_tcp_frame,
    cycles,
    parse_tcp_frame,
)
from nicsim.hw.toe.apps import AppHost, EchoApp, SendApp, SinkApp
from nicsim.hw.toe.impair import Impairment
from nicsim.hw.toe.loopback import Loopback
from nicsim.hw.toe.rtl_engine import RtlEngine

pytestmark = pytest.mark.filterwarnings("ignore:coroutine .* was never awaited")

E_MAC, P_MAC = bytes.fromhex("020000000002"), bytes.fromhex("020000000001")
E_IP, P_IP = bytes([10, 0, 0, 2]), bytes([10, 0, 0, 1])
TICK = cycles(0.01)  # one tick of the gateware's timers
MS = cycles(0.001)
ISN = 0xFFFF_F000  # wraps after 4 KiB: every test crosses 2**32
BUF_BITS = 14


def model_engine(**overrides):
    params = {"mss": 1460, "rx_buffer": 1 << BUF_BITS, "tx_buffer": 1 << BUF_BITS,
              "max_sessions": 4, "max_half_open": 2, "ooo_ranges": 0, "fixed_isn": ISN,
              "rto_initial": 1000 * MS, "rto_min": 200 * MS, "rto_max": 4000 * MS,
              "delack": 40 * MS, "time_wait": 300 * MS}
    params.update(overrides)
    return TcpEngine(E_MAC, E_IP, TcpConfig(**params))


@pytest.fixture(scope="module")
def gateware():
    """One elaborated engine for the module; each test resets it."""
    return RtlEngine(E_MAC, E_IP, sessions=4, buf_bits=BUF_BITS, tick_s=0.01, fixed_isn=ISN,
                     rto_initial=1.0, rto_min=0.2, rto_max=4.0, delack=0.04, time_wait=0.3,
                     max_half_open=2)


def describe(frame):
    seg = parse_tcp_frame(frame)
    if isinstance(seg, str):
        return frame.hex()
    return (f"{seg.src_port}->{seg.dst_port} seq={seg.seq} ack={seg.ack} flags={seg.flags:#x} "
            f"win={seg.window} mss={seg.mss} ws={seg.wscale} len={len(seg.payload)}")


class Twin:
    """The model and the gateware fed the same frames and calls at the same times."""

    def __init__(self, rtl, **overrides):
        rtl.reset()
        self.model = model_engine(**overrides)
        self.rtl = rtl
        self.now = 0

    def check(self):
        a, b = self.model.pop_tx(), self.rtl.pop_tx()
        assert [describe(f) for f in b] == [describe(f) for f in a]
        assert b == a
        return a

    def at(self, ms):
        self.now = ms * MS
        self.model.advance(self.now)
        self.rtl.advance(self.now)
        return self.check()

    def rx(self, frame):
        """Time passes to ``now`` (timers that fall due fire, on both), then the frame."""
        self.model.advance(self.now)
        self.rtl.advance(self.now)
        self.timer_out = self.check()
        self.model.receive(frame, self.now)
        self.rtl.receive(frame, self.now)
        return self.check()

    def call(self, name, *args):
        a = getattr(self.model, name)(*args)
        b = getattr(self.rtl, name)(*args)
        assert b == a, name
        self.check()
        return a

    def notes(self):
        a = [(n.kind, n.session, n.info) for n in self.model.notifications()]
        b = [(n.kind, n.session, n.info) for n in self.rtl.notifications()]
        assert b == a
        return a


def seg(flags, seq, ack=0, payload=b"", *, window=65535, sport=40000, dport=7, mss=None,
        wscale=None):
    return build_tcp_frame(P_MAC, E_MAC, P_IP, E_IP, sport, dport, seq % (1 << 32),
                           ack % (1 << 32), flags, window, payload, mss=mss, wscale=wscale)


def handshake(tw, irs=5000, sport=40000, mss=1460, wscale=7):
    out = tw.rx(seg(SYN, irs, sport=sport, mss=mss, wscale=wscale))
    assert len(out) == 1
    syn_ack = parse_tcp_frame(out[0])
    assert syn_ack.flags == SYN | ACK and syn_ack.ack == irs + 1
    tw.now += 50 * MS
    assert tw.rx(seg(ACK, irs + 1, syn_ack.seq + 1, sport=sport)) == []
    return syn_ack.seq + 1


def test_passive_open_data_both_ways_and_close(gateware):
    tw = Twin(gateware)
    tw.call("listen", 7)
    snd = handshake(tw)
    assert tw.notes() == [(Notice.CONNECTED, 0, "")]
    data = random.Random(1).randbytes(5000)
    rcv = 5001
    # delayed ACK: nothing after the first segment, an ACK after the second (RFC 1122)
    assert tw.rx(seg(ACK, rcv, snd, data[:1000])) == []
    assert len(tw.rx(seg(ACK | PSH, rcv + 1000, snd, data[1000:2500]))) == 1
    assert tw.call("recv", 0) == data[:2500]
    # the engine segments 5000 bytes to the MSS; its initial window (10 MSS, RFC 6928) and
    # the peer's window let them all go at once
    assert tw.model.send(0, data) == tw.rtl.send(0, data) == 5000
    sent = tw.check()
    assert [len(parse_tcp_frame(f).payload) for f in sent] == [1460, 1460, 1460, 620]
    tw.now += 30 * MS
    assert tw.rx(seg(ACK, rcv + 2500, snd + 2920)) == []
    assert tw.rx(seg(ACK, rcv + 2500, snd + 5000)) == []
    # FIN from the peer: ACK, CLOSE-WAIT; our close: FIN, LAST-ACK; its ACK releases
    out = tw.rx(seg(ACK | FIN, rcv + 2500, snd + 5000))
    assert [parse_tcp_frame(f).ack for f in out] == [rcv + 2501]
    assert tw.call("state", 0) == State.CLOSE_WAIT
    fin = tw.call("close", 0)
    assert fin is None
    tw.rx(seg(ACK, rcv + 2501, snd + 5001))
    tw.notes()
    assert tw.call("state", 0) == State.CLOSED


def test_listen_and_closed_port_edges(gateware):
    tw = Twin(gateware)
    out = tw.rx(seg(SYN, 100, dport=9))  # closed port: RST|ACK
    assert parse_tcp_frame(out[0]).flags == RST | ACK
    tw.call("listen", 7)
    assert parse_tcp_frame(tw.rx(seg(ACK, 100, 777))[0]).flags == RST  # ACK to LISTEN
    assert tw.rx(seg(RST, 100)) == []
    # no options: MSS 536 assumed, no window scale in the SYN-ACK (RFC 7323 §1.3)
    syn_ack = parse_tcp_frame(tw.rx(seg(SYN, 100))[0])
    assert syn_ack.wscale is None and syn_ack.mss == 1460
    # the SYN again (our SYN-ACK lost): the SYN-ACK again
    assert parse_tcp_frame(tw.rx(seg(SYN, 100))[0]).flags == SYN | ACK
    tw.notes()


def test_rst_syn_and_window_checks(gateware):
    tw = Twin(gateware)
    tw.call("listen", 7)
    snd = handshake(tw)
    tw.notes()
    rcv = 5001
    # RST inside the window but not at rcv_nxt: challenge ACK (RFC 5961 §3.2)
    out = tw.rx(seg(RST, rcv + 100))
    assert parse_tcp_frame(out[0]).flags == ACK
    # SYN in ESTABLISHED: challenge ACK (RFC 5961 §4)
    assert len(tw.rx(seg(SYN, rcv + 7))) == 1
    # out of window data: ACK, dropped; out of order: dropped with a duplicate ACK
    assert len(tw.rx(seg(ACK, rcv + 70000, snd, b"x" * 100))) == 1
    assert parse_tcp_frame(tw.rx(seg(ACK, rcv + 1000, snd, b"y" * 100))[0]).ack == rcv
    # an ACK for data never sent: ACK (RFC 9293 §3.10.7.4)
    assert len(tw.rx(seg(ACK, rcv, snd + 10))) == 1
    assert tw.call("readable", 0) == 0
    # RST at rcv_nxt: reset
    assert tw.rx(seg(RST, rcv)) == []
    assert tw.notes() == [(Notice.RESET, 0, "rst")]
    assert gateware.counters()["ooo_full"] == tw.model.drops["ooo_full"] == 1
    assert gateware.counters()["out_of_window"] == tw.model.drops["out_of_window"] == 1


def test_retransmission_timer_backoff(gateware):
    tw = Twin(gateware)
    tw.call("listen", 7)
    # SYN-ACK lost: again after 1 s, 2 s, 4 s (RFC 6298 §5.5, rto_max 4 s here)
    first = tw.rx(seg(SYN, 9000, mss=1000, wscale=2))
    for ms in (990, 1000, 2990, 3000, 6990, 7000):
        again = tw.at(ms)
        assert bool(again) == (ms in (1000, 3000, 7000))
        if again:
            assert again[0][18:20] != first[0][18:20]  # new IPv4 identification
            assert again[0][34:] .startswith(first[0][34:38])
    snd = ISN + 1
    tw.at(7050)
    tw.rx(seg(ACK, 9001, snd))  # Karn: no RTT sample from a retransmitted SYN-ACK
    tw.notes()
    assert tw.call("send", 0, bytes(range(256)) * 10) == 2560
    for ms in (11040, 11050):  # the backed-off RTO (4 s) stays
        assert bool(tw.at(ms)) == (ms == 11050), ms
    tw.at(11100)
    tw.rx(seg(ACK, 9001, snd + 2560))
    assert tw.call("send", 0, b"t" * 500) == 500  # timed
    tw.at(11150)
    tw.rx(seg(ACK, 9001, snd + 3060))  # an RTT sample (50 ms): RTO back to rto_min
    assert tw.call("send", 0, b"u" * 500) == 500
    for ms in (11340, 11350, 11740, 11750):
        assert bool(tw.at(ms)) == (ms in (11350, 11750)), ms
    tw.rx(seg(ACK, 9001, snd + 3560))
    assert tw.at(12500) == []
    assert gateware.counters()["timeouts"] == tw.model.stats["timeouts"] == 6


def test_active_open_with_arp(gateware):
    tw = Twin(gateware)
    sid = tw.call("open", "10.0.0.1", 8080)  # an ARP request, the same from both
    # the reply lets the SYN go
    reply = (E_MAC + P_MAC + b"\x08\x06" + bytes.fromhex("0001080006040002") + P_MAC + P_IP
             + E_MAC + E_IP)
    syn = parse_tcp_frame(tw.rx(reply)[0])
    assert syn.flags == SYN and syn.mss == 1460 and syn.wscale == 0
    tw.now += 20 * MS
    out = tw.rx(seg(SYN | ACK, 70000, syn.seq + 1, sport=8080, dport=syn.src_port, mss=1200,
                    wscale=3, window=1000))
    assert parse_tcp_frame(out[0]).ack == 70001
    assert tw.notes() == [(Notice.CONNECTED, sid, "")]
    # the peer's window (1000 << 3), MSS (1200) and the congestion window cut the data
    tw.model.send(sid, bytes(5000))
    out = tw.rtl.send(sid, bytes(5000))
    tw.model.close(sid)
    tw.rtl.close(sid)
    sent = tw.check()
    got = bytearray()
    for _ in range(20):
        segs = [parse_tcp_frame(f) for f in sent]
        got += b"".join(s.payload for s in segs)
        if any(s.flags & FIN for s in segs):
            break
        tw.now += 20 * MS
        end = syn.seq + 1 + len(got)
        sent = tw.rx(seg(ACK, 70001, end, sport=8080, dport=syn.src_port, window=2000))
    assert out == 5000 and got == bytes(5000)
    assert [len(s.payload) for s in segs][:1] in ([1200], [200], [])
    tw.rx(seg(ACK | FIN, 70001, syn.seq + 5002, sport=8080, dport=syn.src_port))
    assert tw.call("state", sid) == State.TIME_WAIT
    tw.at(1000)
    assert tw.call("state", sid) == State.CLOSED
    tw.notes()


def test_zero_window_probe(gateware):
    tw = Twin(gateware)
    tw.call("listen", 7)
    snd = handshake(tw)
    tw.notes()
    tw.rx(seg(ACK, 5001, snd, window=0))
    assert tw.call("send", 0, b"z" * 100) == 100
    # probes at the RTO, then backing off (200 ms, 400 ms, 800 ms)
    for ms in (240, 250, 640, 650, 1440, 1450):
        probe = tw.at(ms)
        if ms % 100 == 40:
            assert probe == []
        else:
            assert parse_tcp_frame(probe[0]).seq == snd - 1  # Linux tcp_xmit_probe_skb()
    # the window opens: the data goes
    out = tw.rx(seg(ACK, 5001, snd, window=500))
    assert parse_tcp_frame(out[0]).payload == b"z" * 100


def test_half_open_bound_keeps_established_sessions():
    """SYN flood: beyond max_half_open (2) SYNs are refused; the established session works."""
    gateware = RtlEngine(E_MAC, E_IP, sessions=4, buf_bits=10, tick_s=0.1, rto_initial=0.2,
                         syn_retries=1, max_half_open=2)
    gateware.listen(7)
    now = 0
    frames = []
    gateware.receive(seg(SYN, 1, sport=1000), now)
    syn_ack = parse_tcp_frame(gateware.pop_tx()[0])
    gateware.receive(seg(ACK, 2, syn_ack.seq + 1, sport=1000), now)
    for port in range(2000, 2010):
        gateware.receive(seg(SYN, port, sport=port), now)
        frames += gateware.pop_tx()
    assert len(frames) == 2  # two half-open sessions, eight SYNs refused
    counters = gateware.counters()
    assert counters["half_open_full"] == 8 and counters["half_open"] == 2
    gateware.receive(seg(ACK, 2, syn_ack.seq + 1, b"still here", sport=1000), now)
    gateware.notifications()
    assert gateware.recv(0) == b"still here"
    # the half-open sessions go after the SYN-ACK retries; then a SYN is taken again
    for k in range(1, 11):
        gateware.advance(cycles(0.1 * k))
    assert gateware.counters()["half_open"] == 0
    out = [parse_tcp_frame(f) for f in gateware.pop_tx()]
    assert [(s.dst_port, s.flags) for s in out if s.dst_port == 1000] == [(1000, ACK)]  # delack
    gateware.receive(seg(SYN, 7, sport=3000), cycles(1.0))
    assert parse_tcp_frame(gateware.pop_tx()[0]).flags == SYN | ACK


@pytest.mark.parametrize("loss, size", [(0.03, 8000),
                                        pytest.param(0.05, 16_000, marks=pytest.mark.long)])
def test_rtl_and_model_over_lossy_wire(gateware, loss, size):
    """The model echoes through the gateware and the gateware sends to the model's sink; drops,
    duplicates and reordering in both directions (retransmission timer, fast retransmit)."""
    gateware.reset()
    model = TcpEngine(P_MAC, P_IP, TcpConfig(rx_buffer=1 << BUF_BITS, tx_buffer=1 << BUF_BITS,
                                             time_wait=cycles(0.2)))
    echo = EchoApp(gateware, 7)
    sink = SinkApp(model, 9)
    rng = random.Random(7)
    data = rng.randbytes(size)
    bulk = rng.randbytes(size)
    client = SendApp(model, "10.0.0.2", 7, [data])
    sender = SendApp(gateware, "10.0.0.1", 9, [bulk])
    wire = Loopback(model, gateware, latency=cycles(0.0002),
                    impair_ab=Impairment(loss, loss / 2, loss / 2, 1),
                    impair_ba=Impairment(loss, loss / 2, loss / 2, 2),
                    hosts=[AppHost(gateware, [echo, sender]), AppHost(model, [client, sink])])
    sid = client.opened[0]
    assert wire.run(lambda: len(client.received[sid]) == len(data)
                    and any(len(v) == len(bulk) for v in sink.data.values()),
                    max_cycles=cycles(120))
    assert bytes(client.received[sid]) == data
    assert [bytes(v) for v in sink.data.values()] == [bulk]
    counters = gateware.counters()
    assert counters["bad_tcp_checksum"] == 0 and model.drops["bad_tcp_checksum"] == 0
    if loss:  # segments were lost and sent again (by the gateware, the model or both)
        assert counters["retransmits"] + model.stats["retransmits"] > 0


@pytest.mark.long  # about 45 s in Amaranth's simulator; test_toe_verilator.py runs it fast
@pytest.mark.parametrize("loss", [0.03])
def test_rtl_auto_modes_over_lossy_wire(gateware, loss):
    """As :func:`test_rtl_and_model_over_lossy_wire`, with the application inside the
    simulation (``auto_receive``, ``auto_send``): the bytes of the ``RECV`` and ``SEND``
    commands move on the second memory port while frames come in, and every byte arrives in
    order; the sender's close waits until every byte it handed over is in the send buffer."""
    gateware.reset()
    gateware.auto_receive()
    gateware.auto_send()
    try:
        model = TcpEngine(P_MAC, P_IP, TcpConfig(rx_buffer=1 << BUF_BITS,
                                                 tx_buffer=1 << BUF_BITS, time_wait=cycles(0.2)))
        echo = EchoApp(gateware, 7)
        sink = SinkApp(model, 9)
        rng = random.Random(8)
        data, bulk = rng.randbytes(20_000), rng.randbytes(20_000)  # more than a ring each
        client = SendApp(model, "10.0.0.2", 7, [data])
        sender = SendApp(gateware, "10.0.0.1", 9, [bulk])
        wire = Loopback(model, gateware, latency=cycles(0.0002),
                        impair_ab=Impairment(loss, loss / 2, loss / 2, 5),
                        impair_ba=Impairment(loss, loss / 2, loss / 2, 6),
                        hosts=[AppHost(gateware, [echo, sender]),
                               AppHost(model, [client, sink])])
        sid = client.opened[0]
        assert wire.run(lambda: len(client.received[sid]) == len(data)
                        and any(len(v) == len(bulk) for v in sink.data.values())
                        and sender.released, max_cycles=cycles(120))
        assert bytes(client.received[sid]) == data
        assert [bytes(v) for v in sink.data.values()] == [bulk]
    finally:
        gateware.reset()


def test_rtl_on_the_wires_clock(gateware):
    """The Amaranth driver on the wire's clock (``clocked``), the application inside the
    simulation: the model echoes through the gateware while the gateware sends to the model's
    sink, every byte arrives, and each frame of the gateware leaves no sooner than its beats
    allow after the one before (8 bytes a cycle)."""
    gateware.reset()
    gateware.auto_receive()
    gateware.auto_send()
    gateware.clocked = True
    try:
        model = TcpEngine(P_MAC, P_IP, TcpConfig(rx_buffer=1 << BUF_BITS,
                                                 tx_buffer=1 << BUF_BITS, time_wait=cycles(0.2)))
        echo = EchoApp(gateware, 7)
        sink = SinkApp(model, 9)
        rng = random.Random(9)
        data, bulk = rng.randbytes(5000), rng.randbytes(7000)
        client = SendApp(model, "10.0.0.2", 7, [data])
        sender = SendApp(gateware, "10.0.0.1", 9, [bulk])
        sent_at = []

        def tap(at, direction, frame):
            if direction == "ba":
                sent_at.append((at, len(frame)))

        wire = Loopback(model, gateware, latency=cycles(0.000001), tap=tap,
                        hosts=[AppHost(gateware, [echo, sender]),
                               AppHost(model, [client, sink])])
        sid = client.opened[0]
        assert wire.run(lambda: len(client.received[sid]) == len(data)
                        and any(len(v) == len(bulk) for v in sink.data.values()),
                        max_cycles=cycles(10))
        assert bytes(client.received[sid]) == data
        assert [bytes(v) for v in sink.data.values()] == [bulk]
        for (t0, _), (t1, n1) in zip(sent_at, sent_at[1:], strict=False):
            assert t1 - t0 >= -(-n1 // 8)
    finally:
        gateware.clocked = False
        gateware.reset()


@pytest.mark.parametrize("seed", [1, 2])
def test_random_segments_match_model(gateware, seed):
    """Segments with random flags, sequence and acknowledgment numbers near the window edges,
    data lengths and windows, and bad checksums, into an established session: the gateware
    answers (or drops) each exactly as the model does; no input stalls it."""
    rng = random.Random(seed)
    tw = Twin(gateware)
    tw.call("listen", 7)
    snd = handshake(tw)
    tw.notes()
    tw.call("send", 0, rng.randbytes(3000))
    rcv = 5001
    flag_sets = [ACK, ACK | PSH, ACK | FIN, RST, RST | ACK, SYN, SYN | ACK, FIN, 0, SYN | FIN]
    for step in range(40):
        tw.now += rng.choice([0, 1, 30]) * MS
        flags = rng.choice(flag_sets)
        seq = rcv + rng.choice([-70000, -1500, -1, 0, 0, 0, 1, 700, 16000, 16384, 70000])
        ack = snd + rng.choice([-70000, -1, 0, 0, 1460, 3000, 3001, 5000])
        payload = rng.randbytes(rng.choice([0, 0, 1, 100, 1460]))
        frame = bytearray(seg(flags, seq, ack, payload, window=rng.choice([0, 10, 65535])))
        if rng.random() < 0.1:
            frame[-1] ^= 0x5A  # bad TCP checksum (or a changed byte of the header)
        out = tw.rx(bytes(frame))
        for f in out:
            s = parse_tcp_frame(f)
            if s.flags & ACK and not s.flags & RST:
                rcv = s.ack  # follow what the engine acknowledges
        if step % 8 == 7:
            tw.call("readable", 0) if tw.model.sessions() else None
            tw.notes()
    a = tw.model.drops
    b = gateware.counters()
    for reason in ("out_of_window", "bad_tcp_checksum", "bad_flags", "ooo_full", "no_session"):
        assert b[reason] == a[reason], reason


def test_pure_acks_move_snd_una_and_the_window(gateware):
    """Pure ACKs (no text, no flags but ACK) in ESTABLISHED take the engine's short path:
    each moves ``snd_una`` and the send window as RFC 9293 §3.10.7.4 says, and what the
    engine sends next stays inside the window the last ACK offered, frame for frame as the
    model sends it. The ACKs that need more (duplicates that count for fast retransmit, an
    ACK of unsent data, one with a FIN) take the full path, as the model does."""
    tw = Twin(gateware)
    tw.call("listen", 7)
    snd = handshake(tw, wscale=7)  # the peer's window field counts 128-byte units
    tw.notes()
    rcv = 5001
    data = random.Random(8).randbytes(16000)
    assert tw.model.send(0, data) == tw.rtl.send(0, data) == 16000
    first = tw.check()
    assert sum(len(parse_tcp_frame(f).payload) for f in first) == 14600  # 10 MSS (RFC 6928)
    una = snd
    sent_end = snd + 14600

    def ack(to, units, expect_una, expect_wnd):
        tw.now += MS
        out = tw.rx(seg(ACK, rcv, to, window=units))
        info = tw.model.session_info(0)
        assert (info["snd_una"], info["snd_wnd"]) == (expect_una % (1 << 32), expect_wnd)
        for f in out:
            s = parse_tcp_frame(f)
            if s.payload:  # inside [snd_una, snd_una + window)
                assert 0 <= (s.seq - expect_una) % (1 << 32) <= expect_wnd - len(s.payload)
        return [parse_tcp_frame(f) for f in out]

    # part acknowledged, the window shrunk below the bytes in flight: nothing may go
    assert ack(una + 2920, 50, una + 2920, 50 << 7) == []
    # all acknowledged, a window of 2560 bytes: the 1400 bytes left go
    out = ack(sent_end, 20, sent_end, 20 << 7)
    assert [(s.seq, len(s.payload)) for s in out] == [(sent_end % (1 << 32), 1400)]
    una = sent_end + 1400
    more = random.Random(9).randbytes(3000)
    assert tw.model.send(0, more) == tw.rtl.send(0, more) == 3000
    assert tw.check() == []  # 1160 usable bytes: too few to send yet (RFC 9293 §3.8.6.2.1)
    # the window opens: the 3000 bytes go in segments inside it
    out = ack(una, 40, una, 40 << 7)
    assert sum(len(s.payload) for s in out) == 3000
    # the same ACK twice more, the same window, data in flight: duplicates (full path);
    # the third duplicate retransmits from snd_una (RFC 5681 §3.2)
    assert ack(una, 40, una, 40 << 7) == []
    assert ack(una, 40, una, 40 << 7) == []
    out = ack(una, 40, una, 40 << 7)
    assert [s.seq for s in out] == [una % (1 << 32)]
    assert tw.rtl.counters()["fast_retransmits"] == 1
    # an ACK of bytes never sent: dropped, answered with an ACK (RFC 9293 §3.10.7.4)
    out = ack(una + 5000, 40, una, 40 << 7)
    assert [(s.flags, s.ack, len(s.payload)) for s in out] == [(ACK, rcv, 0)]
    # everything acknowledged, then the peer's FIN with a pure ACK's numbers
    ack(una + 3000, 60, una + 3000, 60 << 7)
    out = tw.rx(seg(ACK | FIN, rcv, una + 3000, window=60))
    assert [s.ack for s in map(parse_tcp_frame, out)] == [rcv + 1]
    assert tw.call("state", 0) == State.CLOSE_WAIT
    tw.notes()
