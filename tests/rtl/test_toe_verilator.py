"""The RTL TCP engine on Verilator (hw/toe/verilator_engine.py) against the golden model
hw.ref.tcp.TcpEngine, frame for frame, and over a lossy simulated wire.

The Verilated gateware is the one the Linux tests (tests/hw/test_toe_rtl_linux.py) and the
benchmark run: :func:`verilator_engine` is the one parameter set they share, so one Verilator
build serves them all (16 sessions, 64 KiB buffers, 10 ms ticks, the ISN 4 KiB before 2**32 so
every transfer wraps the sequence space). The model is configured as the gateware is built.
The Amaranth-simulator tests (test_toe_sessions.py) cover the state-machine edges with the same
comparison; these check that the C++ shim drives the gateware as the Amaranth driver does and
that larger transfers stay byte-exact.
"""

import random

import pytest
from test_toe_sessions import E_IP, E_MAC, ISN, MS, P_IP, P_MAC, Twin, handshake, seg

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
    cycles,
    parse_tcp_frame,
)
from nicsim.hw.toe.apps import AppHost, EchoApp, SendApp, SinkApp
from nicsim.hw.toe.impair import Impairment
from nicsim.hw.toe.loopback import Loopback

pytestmark = pytest.mark.filterwarnings("ignore:coroutine .* was never awaited")

SESSIONS = 16
BUF_BITS = 16
# the model as verilator_engine() builds the gateware
MODEL = {"mss": 1460, "rx_buffer": 1 << BUF_BITS, "tx_buffer": 1 << BUF_BITS,
         "max_sessions": SESSIONS, "max_half_open": 16, "ooo_ranges": 0, "fixed_isn": ISN,
         "rto_initial": 1000 * MS, "rto_min": 200 * MS, "rto_max": 60_000 * MS,
         "delack": 40 * MS, "time_wait": 200 * MS}


def verilator_engine(mac=E_MAC, ip=E_IP, catch_up_ticks=None):
    """The Verilated engine of the tests and the benchmark (one build for all of them)."""
    from nicsim.hw.toe.verilator_engine import VerilatorEngine

    return VerilatorEngine(mac, ip, sessions=SESSIONS, buf_bits=BUF_BITS, tick_s=0.01,
                           fixed_isn=ISN, time_wait=0.2, catch_up_ticks=catch_up_ticks)


@pytest.fixture(scope="module")
def gateware():
    return verilator_engine()


def test_handshake_data_both_ways_and_close(gateware):
    """Passive open, 40 KB in and out with delayed ACKs and MSS segmentation, FIN both ways:
    every frame the same as the model's."""
    tw = Twin(gateware, **MODEL)
    tw.call("listen", 7)
    snd = handshake(tw)
    assert tw.notes() == [(Notice.CONNECTED, 0, "")]
    data = random.Random(3).randbytes(40_000)
    rcv = 5001
    for start in range(0, len(data), 1460):
        tw.rx(seg(ACK | PSH, rcv + start, snd, data[start:start + 1460]))
    assert tw.call("recv", 0) == data
    tw.now += 1 * MS
    assert tw.model.send(0, data) == tw.rtl.send(0, data) == len(data)
    sent = tw.check()
    acked = 0
    for _ in range(200):
        ends = [(parse_tcp_frame(f).seq - snd) % (1 << 32) + len(parse_tcp_frame(f).payload)
                for f in sent]
        if not ends:
            break
        acked = max(ends)  # everything sent so far, acknowledged a millisecond later
        tw.now += 1 * MS
        sent = tw.rx(seg(ACK, rcv + len(data), snd + acked))
    assert acked == len(data)
    out = tw.rx(seg(ACK | FIN, rcv + len(data), snd + len(data)))
    assert len(out) == 1
    assert tw.call("state", 0) == State.CLOSE_WAIT
    tw.call("close", 0)
    tw.rx(seg(ACK, rcv + len(data) + 1, snd + len(data) + 1))
    tw.notes()
    assert tw.call("state", 0) == State.CLOSED


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_random_segments_match_model(gateware, seed):
    """Random flags, sequence and acknowledgment numbers near the window edges, lengths,
    windows and bad checksums into an established session: each answered (or dropped) as the
    model does."""
    rng = random.Random(seed)
    tw = Twin(gateware, **MODEL)
    tw.call("listen", 7)
    snd = handshake(tw)
    tw.notes()
    tw.call("send", 0, rng.randbytes(3000))
    rcv = 5001
    flag_sets = [ACK, ACK | PSH, ACK | FIN, RST, RST | ACK, SYN, SYN | ACK, FIN, 0, SYN | FIN]
    for step in range(60):
        tw.now += rng.choice([0, 1, 30]) * MS
        flags = rng.choice(flag_sets)
        seq = rcv + rng.choice([-70000, -1500, -1, 0, 0, 0, 1, 700, 65535, 65536, 70000])
        ack = snd + rng.choice([-70000, -1, 0, 0, 1460, 3000, 3001, 5000])
        payload = rng.randbytes(rng.choice([0, 0, 1, 100, 1460]))
        frame = bytearray(seg(flags, seq, ack, payload, window=rng.choice([0, 10, 65535])))
        if rng.random() < 0.1:
            frame[-1] ^= 0x5A
        for f in tw.rx(bytes(frame)):
            s = parse_tcp_frame(f)
            if s.flags & ACK and not s.flags & RST:
                rcv = s.ack
        if step % 8 == 7:
            tw.call("readable", 0) if tw.model.sessions() else None
            tw.notes()
    a, b = tw.model.drops, gateware.counters()
    for reason in ("out_of_window", "bad_tcp_checksum", "bad_flags", "ooo_full", "no_session"):
        assert b[reason] == a[reason], reason


def test_syn_to_closed_port_and_many_sessions(gateware):
    """RST for a closed port; 16 passive opens fill the session table, the 17th SYN is refused
    as the model refuses it (its table is full too)."""
    tw = Twin(gateware, **MODEL)
    out = tw.rx(seg(SYN, 100, dport=9))
    assert len(out) == 1
    tw.call("listen", 7)
    for k in range(SESSIONS):
        handshake(tw, irs=1000 * k, sport=30000 + k)
    assert len(tw.notes()) == SESSIONS
    tw.rx(seg(SYN, 99, sport=31000))
    assert gateware.counters()["session_table_full"] == tw.model.drops["session_table_full"] == 1


@pytest.mark.parametrize("loss, size", [(0.0, 256 * 1024), (0.03, 128 * 1024),
                                        pytest.param(0.0, 1 << 20, marks=pytest.mark.long),
                                        pytest.param(0.05, 1 << 20, marks=pytest.mark.long)])
def test_verilator_and_model_over_lossy_wire(loss, size):
    """The model echoes ``size`` bytes through the gateware while the gateware sends ``size``
    bytes to the model's sink; drops, duplicates and reordering both ways."""
    gateware = verilator_engine()
    model = TcpEngine(P_MAC, P_IP, TcpConfig(time_wait=cycles(0.2)))
    echo = EchoApp(gateware, 7)
    sink = SinkApp(model, 9)
    rng = random.Random(7)
    data, bulk = rng.randbytes(size), rng.randbytes(size)
    client = SendApp(model, "10.0.0.2", 7, [data])
    sender = SendApp(gateware, "10.0.0.1", 9, [bulk])
    wire = Loopback(model, gateware, latency=cycles(0.0002),
                    impair_ab=Impairment(loss, loss / 2, loss / 2, 1),
                    impair_ba=Impairment(loss, loss / 2, loss / 2, 2),
                    hosts=[AppHost(gateware, [echo, sender]), AppHost(model, [client, sink])])
    sid = client.opened[0]
    assert wire.run(lambda: len(client.received[sid]) == len(data)
                    and any(len(v) == len(bulk) for v in sink.data.values()),
                    max_cycles=cycles(600))
    assert bytes(client.received[sid]) == data
    assert [bytes(v) for v in sink.data.values()] == [bulk]
    counters = gateware.counters()
    assert counters["bad_tcp_checksum"] == 0 and model.drops["bad_tcp_checksum"] == 0
    if loss:
        assert counters["retransmits"] + model.stats["retransmits"] > 0


def test_send_into_full_buffer_at_unaligned_offset(gateware):
    """A SEND that the full send buffer grants nothing, while the ring position is not on a
    word boundary: answered with 0 (no data beat expected), later a SPACE notification."""
    tw = Twin(gateware, **MODEL)
    tw.call("listen", 7)
    snd = handshake(tw)
    tw.notes()
    assert tw.call("send", 0, b"abc") == 3
    tw.now += 1 * MS
    tw.rx(seg(ACK, 5001, snd + 3))
    assert tw.model.send(0, bytes(70_000)) == tw.rtl.send(0, bytes(70_000)) == 1 << BUF_BITS
    tw.check()
    assert tw.call("send", 0, b"more") == 0
    tw.now += 1 * MS
    tw.rx(seg(ACK, 5001, snd + 3 + 1460))
    assert (Notice.SPACE, 0, "") in tw.notes()


def test_retransmissions_from_a_ring_word_shared_by_two_laps(gateware):
    """The send ring filled to the byte with ``snd_una`` inside a ring word, so that the next
    lap's first bytes share that word with the first unacknowledged ones: the segments built
    from there (retransmission timeout, fast retransmit, then new data across the wrap) carry
    the model's bytes and checksum (the running sums beside the ring words, X Ring), frame
    for frame; SENDs start and end inside words."""
    rng = random.Random(21)
    tw = Twin(gateware, **MODEL)
    tw.call("listen", 7)
    snd = handshake(tw)
    tw.notes()
    ring = 1 << BUF_BITS
    data = rng.randbytes(3 * ring)
    sent = 0
    first = []
    for piece in (1001, 3, ring - 1004):  # the ring full, in SENDs that start mid-word
        chunk = data[sent:sent + piece]
        assert tw.model.send(0, chunk) == tw.rtl.send(0, chunk) == piece
        first += [parse_tcp_frame(f) for f in tw.check()]
        sent += piece
    assert first and all(f.payload for f in first)
    rcv = 5001
    acked = 1461  # snd_una in the middle of a word (and of a segment)
    tw.now += 5 * MS
    tw.rx(seg(ACK, rcv, snd + acked))
    tw.notes()
    # the freed bytes refilled at once: the next lap now starts inside snd_una's word
    assert tw.call("send", 0, data[sent:sent + acked]) == acked
    sent += acked
    una = (snd + acked) % (1 << 32)
    # three duplicate ACKs: fast retransmit from snd_una
    pending = []
    for _ in range(3):
        tw.now += 1 * MS
        pending += tw.rx(seg(ACK, rcv, snd + acked))
    assert una in [parse_tcp_frame(f).seq for f in pending]
    # no more ACKs: the retransmission timeout sends the segment at snd_una again
    out = []
    for _ in range(400):
        tw.now += 10 * MS
        out = tw.at(tw.now // MS)
        if out:
            break
    assert [parse_tcp_frame(f).seq for f in out][:1] == [una]
    pending += out
    # then everything sent is acknowledged a millisecond later, the ring refilled as it frees
    for _ in range(400):
        ends = [(parse_tcp_frame(f).seq - snd) % (1 << 32) + len(parse_tcp_frame(f).payload)
                for f in pending]
        acked = max([acked, *ends])
        if acked >= len(data):
            break
        tw.now += 1 * MS
        pending = tw.rx(seg(ACK, rcv, snd + acked))
        tw.notes()
        if sent < len(data):
            free = tw.model.send(0, data[sent:sent + ring])
            assert tw.rtl.send(0, data[sent:sent + ring]) == free
            sent += free
            pending += tw.check()
    assert acked == len(data) and sent == len(data)


def test_cut_through_receive_edges(gateware):
    """The payload of an in-order segment is written into the receive ring while it arrives,
    before its checks: segments that fail them (TCP checksum, IPv4 checksum, truncated) must
    leave no trace, and the data that follows at the same sequence number is what the
    application reads. Segments the writer leaves to the copy after the checks (overlapping
    ``rcv_nxt``, larger than the free space) keep their content too. Frame for frame against
    the model, and the bytes read against the bytes sent."""
    tw = Twin(gateware, **MODEL)
    tw.call("listen", 7)
    snd = handshake(tw)
    tw.notes()
    rng = random.Random(11)
    rcv = 5001
    sent = bytearray()

    def deliver(data, flags=ACK | PSH):
        nonlocal rcv
        tw.rx(seg(flags, rcv, snd, data))
        sent.extend(data)
        rcv += len(data)

    # a bad TCP checksum (one payload byte changed), a bad IPv4 checksum, a truncated frame:
    # dropped, and the good segment at the same sequence number is the one kept
    for damage in ("tcp", "ip", "truncated"):
        good = rng.randbytes(1000 + len(sent) % 7)
        frame = bytearray(seg(ACK | PSH, rcv, snd, bytes(len(good))))
        if damage == "tcp":
            frame[-3] ^= 0xFF
        elif damage == "ip":
            frame[24] ^= 0x01
        else:
            frame = frame[:-200]
        tw.rx(bytes(frame))
        deliver(good)
        tw.now += 1 * MS
    reasons = gateware.counters()
    assert reasons["bad_tcp_checksum"] == reasons["bad_ip_checksum"] == 1
    assert reasons["truncated"] == 1
    # a retransmission that overlaps rcv_nxt and brings new bytes after it
    part = rng.randbytes(1200)
    tw.rx(seg(ACK | PSH, rcv - 500, snd, bytes(sent[-500:]) + part))
    sent.extend(part)
    rcv += len(part)
    assert tw.call("recv", 0) == bytes(sent)
    tw.notes()
    # fill the ring without reading: the last segment is larger than the free space and is
    # taken in part (up to the advertised window) by the copy after the checks
    fill = bytearray()
    while True:
        chunk = rng.randbytes(1460)
        tw.now += 1 * MS
        out = tw.rx(seg(ACK | PSH, rcv + len(fill), snd, chunk))
        acks = [parse_tcp_frame(f).ack for f in out]
        taken = (max(acks) - rcv) % (1 << 32) if acks else None
        fill.extend(chunk)
        if taken is not None and taken < len(fill):
            break
        assert len(fill) < 2 * (1 << BUF_BITS), "the window never closed"
    assert tw.call("recv", 0) == bytes(fill[:taken])


def _burst(tw, gateware, frames):
    """Give the model and the gateware ``frames`` back to back (the next frame arriving while
    the one before is processed); return what both answered (checked equal)."""
    tw.model.advance(tw.now)
    gateware.advance(tw.now)
    tw.check()
    for frame in frames:
        tw.model.receive(frame, tw.now)
    gateware.receive_burst(frames, tw.now)
    return tw.check()


def test_checks_while_the_copy_trails(gateware):
    """The state machine starts a segment's checks while the cut-through writer still copies
    its payload (the copy trails the last beat by the session lookup's latency). Full-size
    in-order segments whose checks leave the main path then (an ACK of unsent data, one too
    old, a SYN, a RST at ``rcv_nxt``) must answer as the model does and leave nothing behind:
    the good segment at the same sequence number is what the application reads. Frame for
    frame against the model, the bytes read against the bytes sent, the drops counted."""
    tw = Twin(gateware, **MODEL)
    tw.call("listen", 7)
    snd = handshake(tw)
    tw.notes()
    rng = random.Random(12)
    rcv = 5001
    sent = bytearray()
    def burst(frames):
        return _burst(tw, gateware, frames)

    before = gateware.counters()
    for flags, ack in ((ACK | PSH, snd + 5000), (ACK | PSH, snd - (1 << 30)), (SYN | ACK, snd)):
        tw.now += 1 * MS
        good = rng.randbytes(2 * 1460)
        out = burst([seg(flags, rcv, ack, rng.randbytes(1460)),  # dropped, answered with an ACK
                     seg(ACK | PSH, rcv, snd, good[:1460]),
                     seg(ACK | PSH, rcv + 1460, snd, good[1460:])])
        assert parse_tcp_frame(out[-1]).ack == (rcv + len(good)) % (1 << 32)
        sent.extend(good)
        rcv += len(good)
    after = gateware.counters()
    assert after["ack_unsent"] - before["ack_unsent"] == 1
    assert after["ack_too_old"] - before["ack_too_old"] == 1
    assert after["challenge_acks"] - before["challenge_acks"] == 2
    tw.now += 1 * MS
    assert tw.call("recv", 0) == bytes(sent)
    tw.notes()
    # a RST at rcv_nxt carrying a full payload, then data: the connection is reset, the data
    # after it answered with a RST
    burst([seg(RST | ACK, rcv, snd, rng.randbytes(1460)),
           seg(ACK | PSH, rcv, snd, rng.randbytes(1460))])
    assert [(kind, info) for kind, _, info in tw.notes()] == [(Notice.RESET, "rst")]
    assert tw.model.sessions() == gateware.sessions() == []


def test_session_table_change_behind_a_lookup(gateware):
    """The front end takes the next frame while a segment is processed, and the cut-through
    writer looks it up meanwhile: a RST that releases one session (a delete in the session
    table) and a SYN that opens another (an insert, taking the released number) between the
    lookup of a data segment for a third session and its processing, all back to back, must
    answer as the model does, frame for frame, and the third session's bytes arrive whole."""
    tw = Twin(gateware, **MODEL)
    tw.call("listen", 7)
    snd_a = handshake(tw, irs=5000, sport=40000)
    snd_b = handshake(tw, irs=9000, sport=40001)
    tw.notes()
    rng = random.Random(13)
    data = rng.randbytes(4 * 1460)
    b = 9001

    def burst(frames):
        return _burst(tw, gateware, frames)

    tw.now += 1 * MS
    burst([seg(ACK | PSH, b, snd_b, data[:1460], sport=40001),
           seg(RST | ACK, 5001, snd_a, sport=40000),
           seg(ACK | PSH, b + 1460, snd_b, data[1460:2920], sport=40001),
           seg(SYN, 7000, sport=40002, mss=1460, wscale=7),
           seg(ACK | PSH, b + 2920, snd_b, data[2920:], sport=40001)])
    # the released number went to the new connection (model and gateware agree)
    assert tw.call("state", 0) == State.SYN_RECEIVED
    assert tw.call("state", 1) == State.ESTABLISHED
    tw.now += 1 * MS
    assert tw.call("recv", 1) == data
    tw.notes()


def test_replies_wait_for_the_transmitter(gateware):
    """An ACK that opens the window and an ICMP echo request right behind it, back to back in
    one run: the segments the ACK releases leave while the request arrives, and the echo
    reply waits for them; the frames and their order are the model's."""
    from scapy.layers.inet import ICMP, IP
    from scapy.layers.l2 import Ether

    tw = Twin(gateware, **MODEL)
    tw.call("listen", 7)
    snd = handshake(tw, wscale=None)
    tw.notes()
    data = random.Random(12).randbytes(20_000)
    assert tw.model.send(0, data) == tw.rtl.send(0, data) == len(data)
    first = tw.check()
    acked = sum(len(parse_tcp_frame(f).payload) for f in first)
    ping = bytes(Ether(src=P_MAC.hex(":"), dst=E_MAC.hex(":"))
                 / IP(src=".".join(map(str, P_IP)), dst=".".join(map(str, E_IP)))
                 / ICMP(type=8, id=7, seq=1) / bytes(300))
    tw.now += 1 * MS
    ack = seg(ACK, 5001, snd + acked)
    tw.model.advance(tw.now)
    tw.model.receive(ack, tw.now)
    tw.model.receive(ping, tw.now)
    gateware.receive_burst([ack, ping], tw.now)
    out = tw.check()
    kinds = [isinstance(parse_tcp_frame(f), str) for f in out]
    assert kinds[-1] and not any(kinds[:-1]) and len(out) >= 3, kinds
    reply = Ether(out[-1])
    assert reply[ICMP].type == 0 and bytes(reply[ICMP].payload) == bytes(300)


def _both_ways(model, gateware, model_apps, gateware_apps, payloads, bulk, loss, seeds,
               **wire_args):
    """Run the model's and the gateware's applications over an impaired wire until the
    gateware's readers have ``payloads`` and the model's ``bulk`` and the gateware's two sending
    sessions are released; every byte arrives, in its session."""
    sink, gateware_sender = gateware_apps
    model_sink = model_apps[1]
    wire = Loopback(model, gateware,
                    impair_ab=Impairment(loss, loss / 2, loss / 2, seeds[0]),
                    impair_ba=Impairment(loss, loss / 2, loss / 2, seeds[1]),
                    hosts=[AppHost(model, list(model_apps)),
                           AppHost(gateware, list(gateware_apps))], **wire_args)
    total, total_bulk = sum(map(len, payloads)), sum(map(len, bulk))
    assert wire.run(lambda: sum(len(v) for v in sink.data.values()) == total
                    and sum(len(v) for v in model_sink.data.values()) == total_bulk
                    and len(gateware_sender.released) == 2, max_cycles=cycles(600))
    assert sorted(bytes(v) for v in sink.data.values()) == sorted(payloads)
    assert sorted(bytes(v) for v in model_sink.data.values()) == sorted(bulk)
    assert gateware._lib.toe_out_of_range(gateware._handle) == 0


@pytest.mark.parametrize("loss", [pytest.param(0.0, marks=pytest.mark.long), 0.03])
def test_auto_receive_and_send_while_frames_arrive(loss):
    """The application reads as the data is notified and writes as the send buffer frees,
    inside the simulation (``RECV`` and ``SEND`` taken at frame boundaries, their bytes moved
    on the second memory port while frames come in and segments leave): the model sends
    to four sessions of the gateware and the gateware to two of the model at once (more than
    a ring each way, so the transfers wrap around the rings), with drops, duplicates and
    reordering, and every byte arrives in order in its session; the sending sessions close
    once all their bytes are in."""
    gateware = verilator_engine()
    gateware.auto_receive()
    gateware.auto_send()
    model = TcpEngine(P_MAC, P_IP, TcpConfig(time_wait=cycles(0.2)))
    sink = SinkApp(gateware, 9)
    model_sink = SinkApp(model, 9)
    rng = random.Random(11)
    # one payload larger than a receive ring, so the reader's addresses wrap around it
    payloads = [rng.randbytes(48 * 1024 + 777 * k) for k in range(3)] + [rng.randbytes(90_001)]
    bulk = [rng.randbytes(150_000 + 5 * k) for k in range(2)]
    sender = SendApp(model, "10.0.0.2", 9, payloads)
    gateware_sender = SendApp(gateware, "10.0.0.1", 9, bulk)
    _both_ways(model, gateware, (sender, model_sink), (sink, gateware_sender), payloads, bulk,
               loss, (3, 4), latency=cycles(0.0002))
    # every segment the gateware sent (retransmissions of acknowledged bytes among them)
    # carried its payload's checksum: the impairment drops, duplicates and reorders only
    assert model.drops["bad_tcp_checksum"] == 0


def test_auto_receive_reset_during_transfer(gateware):
    """A RST at ``rcv_nxt`` right behind three segments, while the application reader still
    sends bytes: the session is released after the transfer (the ring stays its own until
    then), the bytes of the ``RECV`` calls taken before the RST arrive whole (the frames come
    in while the segments before them are processed, so the RST may come before the last
    segment's ``RECV``: the bytes not read are flushed, RFC 9293 §3.10.7.4), and the next
    connection gets the session number with a clean ring."""
    gateware.reset()
    gateware.auto_receive()
    try:
        gateware.listen(7)
        now = cycles(0.001)
        rcv = 5001
        for round_ in range(2):
            gateware.receive(seg(SYN, rcv - 1, mss=1460), now)
            (syn_ack,) = [parse_tcp_frame(f) for f in gateware.pop_tx()]
            snd = (syn_ack.seq + 1) % (1 << 32)
            gateware.receive(seg(ACK, rcv, snd), now)
            (note,) = gateware.notifications()
            assert note.kind == Notice.CONNECTED
            data = random.Random(round_).randbytes(1460 * 3)
            frames = [seg(ACK | PSH, rcv + k, snd, data[k:k + 1460])
                      for k in range(0, len(data), 1460)]
            gateware.receive_burst(frames + [seg(RST, rcv + len(data), snd)], now)
            kinds = [(n.kind, n.info) for n in gateware.notifications()]
            assert (Notice.RESET, "rst") in kinds, kinds
            got = gateware.recv(note.session)
            assert len(got) >= 1460 and got == data[:len(got)], (len(got), len(data))
            assert gateware.sessions() == []
            gateware.pop_tx()
    finally:
        gateware.reset()


@pytest.mark.parametrize("loss", [0.0, 0.02])
def test_on_the_wires_clock(loss):
    """The gateware on the wire's clock (``clocked=True``), the application inside the
    simulation: the model sends to two sessions of the gateware and the gateware to two of the
    model at once, every byte arrives in order (with drops, duplicates and reordering too),
    and the sending sessions close and are released. The wire's timing holds: a frame of the
    gateware leaves no sooner than its beats allow after the one before (a beat of 8 bytes a
    cycle), and the model acknowledges a byte no sooner than the latency after the segment
    that carried it left the gateware."""
    from nicsim.hw.toe.verilator_engine import VerilatorEngine

    latency = cycles(2e-6)
    gateware = VerilatorEngine(E_MAC, E_IP, sessions=SESSIONS, buf_bits=BUF_BITS, tick_s=0.01,
                               fixed_isn=ISN, time_wait=0.2, clocked=True)
    gateware.auto_receive()
    gateware.auto_send()
    model = TcpEngine(P_MAC, P_IP, TcpConfig(time_wait=cycles(0.2), rx_buffer=1 << 15))
    sink, model_sink = SinkApp(gateware, 9), SinkApp(model, 9)
    rng = random.Random(21)
    payloads = [rng.randbytes(70_000 + 11 * k) for k in range(2)]
    bulk = [rng.randbytes(200_000 + 7 * k) for k in range(2)]
    sender = SendApp(model, "10.0.0.2", 9, payloads)
    gateware_sender = SendApp(gateware, "10.0.0.1", 9, bulk)
    sent_at = []  # (cycle its last beat left, frame) of every frame of the gateware
    acks = []  # (cycle, port, ack) of the model's ACKs to the gateware's sending sessions
    ports = set()

    def tap(at, direction, frame):
        s = parse_tcp_frame(frame)
        if direction == "ba":
            sent_at.append((at, frame))
        if isinstance(s, str):  # ARP
            return None
        if direction == "ba":
            if s.dst_port == 9:
                ports.add(s.src_port)
        elif s.src_port == 9 and s.flags & ACK:
            acks.append((at, s.dst_port, s.ack))
        return None

    _both_ways(model, gateware, (sender, model_sink), (sink, gateware_sender), payloads, bulk,
               loss, (5, 6), latency=latency, tap=tap)
    for (t0, _), (t1, f1) in zip(sent_at, sent_at[1:], strict=False):
        assert t1 - t0 >= -(-len(f1) // 8)
    # the first time each (port, sequence end) left the gateware
    left = {}
    for at, frame in sent_at:
        s = parse_tcp_frame(frame)
        if not isinstance(s, str) and s.payload:
            left.setdefault((s.src_port, (s.seq + len(s.payload)) % (1 << 32)), at)
    checked = 0
    for at, port, ack in acks:
        if (port, ack) in left and port in ports:
            assert at >= left[(port, ack)] + latency
            checked += 1
    assert checked > 100


def test_bulk_send_frames_back_to_back_on_the_wires_clock():
    """One bulk connection sending on the wire's clock, the application inside the
    simulation, the model the peer with a 32 KiB window: every byte arrives in order, and
    past slow start each full segment leaves right after the one before, its beats back to
    back (the wire's cycle its last beat left is the one before's plus its length in 8-byte
    beats): the state machine's reads of the send ring's sums for the next segment take no
    beat from the segment leaving."""
    from nicsim.hw.toe.verilator_engine import VerilatorEngine

    gateware = VerilatorEngine(E_MAC, E_IP, sessions=SESSIONS, buf_bits=BUF_BITS, tick_s=0.01,
                               fixed_isn=ISN, time_wait=0.2, clocked=True)
    gateware.auto_receive()
    gateware.auto_send()
    model = TcpEngine(P_MAC, P_IP, TcpConfig(rx_buffer=1 << 15, tx_buffer=1 << 16))
    data = random.Random(8).randbytes(256 << 10)
    sink = SinkApp(model, 9)
    sender = SendApp(gateware, "10.0.0.1", 9, [data])
    sent_at = []

    def tap(at, direction, frame):
        if direction == "ba":
            sent_at.append((at, frame))
        return None

    wire = Loopback(model, gateware, latency=cycles(1e-6), tap=tap,
                    hosts=[AppHost(gateware, [sender]), AppHost(model, [sink])])
    assert wire.run(lambda: sum(len(v) for v in sink.data.values()) == len(data),
                    max_cycles=cycles(120))
    assert [bytes(v) for v in sink.data.values()] == [data]
    gaps = []  # cycles between two full segments beyond the later one's beats
    for (t0, _), (t1, f1) in zip(sent_at, sent_at[1:], strict=False):
        s = parse_tcp_frame(f1)
        if not isinstance(s, str) and len(s.payload) == 1460:
            gaps.append(t1 - t0 - -(-len(f1) // 8))
    assert len(gaps) > 170 and min(gaps) >= 0
    steady = gaps[60:]  # past slow start and the first fill of the send ring
    assert steady.count(0) == len(steady), sorted(set(steady))
