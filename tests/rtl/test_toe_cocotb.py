"""State-machine edges of the RTL TCP engine (design ``toe-tcp``) in cocotb on Verilator, frame
for frame against the golden model :class:`nicsim.hw.ref.tcp.TcpEngine`.

Each test scripts a peer (segments with chosen sequence and acknowledgment numbers, flags and
windows, at chosen times) and runs the same script, with the same application calls, against
the gateware (:class:`toe_cocotb_bench.ToeBench`: cocotbext-axi on the network ports, a Python
model of the buffer memory) and against the model configured as the gateware is built. Every
frame the two send must be the same, byte for byte; calls, states and notifications must agree.
On top of the comparison, each test asserts what RFC 9293, RFC 5961 and RFC 6298 ask for
(states, flags, sequence numbers, timer spacing), so a behaviour shared by a wrong model and a
wrong gateware still fails.

Engine time: the gateware's timers count the ``tick`` input (one tick is 10 ms here, as in the
other toe-tcp drivers); the bench gives the ticks due, all at once, before each frame or when
the script lets time pass, so seconds of backoff take a few hundred clock cycles.

The build (one for all the cases): 4 sessions, 4 KiB buffers (the window closes after three
segments), the engine's ISN 256 before 2**32 (``fixed_isn``), the RFC 6298 timers in 10 ms
ticks (RTO 1 s initial, 200 ms minimum, 4 s maximum so the cap shows after a few doublings),
delayed ACK 40 ms, TIME-WAIT 300 ms, 2 half-open sessions, 3 SYN and 6 data retries.
"""

import functools
import os
from pathlib import Path

import cocotb
import pytest
from toe_cocotb_bench import (
    ARP_REPLY,
    MS,
    CocotbTwin,
    ToeBench,
    model_config,
    seg,
)

from nicsim.hw.ref.tcp import ACK, FIN, PSH, RST, SYN, Notice, State, parse_tcp_frame
from nicsim.hw.verilator import run_cocotb
from tbutil import PAUSES, params

MOD = 1 << 32
PARAMS = {"width": 64, "sessions": 4, "buf_bits": 12, "fixed_isn": MOD - 256,
          "rto_initial": 100, "rto_min": 20, "rto_max": 400, "delack": 4, "time_wait": 30,
          "max_half_open": 2, "syn_retries": 3, "data_retries": 6, "rto_fallback": 300}
ISN = PARAMS["fixed_isn"]
CASE = os.environ.get("NICSIM_TOE_CASE", "")
# The cases of `make test` run one after the other in one simulator process, and so do the
# known gateware bugs (BUGS, each expected to fail); the TCB and session-table memories keep
# their contents across a reset, so every case releases its sessions when it ends. The others
# run in a process each under `-m long`.
FAST = ["close", "rst", "persist", "backoff", "wrap", "open", "peer_probe", "open_rst", "syn_rto",
        "persist_rto", "shrink"]
LONG = ["fuzz"]
# case -> what the gateware does wrong (and where, in rtl/toe/sessions.py); none known now
BUGS = {}
_CASE_TESTS = {}  # case -> the name of its cocotb test (for the results file)
_TWINS = []  # the twin of the running case, for the cleanup after a failure


def case(name):
    """Register a cocotb test that runs for the case ``name`` (``NICSIM_TOE_CASE``: one
    case, ``fast`` for :data:`FAST`, ``bugs`` for :data:`BUGS`, empty for all). When it
    fails, every session of the gateware is aborted so that the next case in the process
    starts clean."""

    def wrap(fn):
        @functools.wraps(fn)
        async def run(dut):
            _TWINS.clear()
            try:
                await fn(dut)
            except BaseException:
                if _TWINS:
                    await scrub(_TWINS[0])
                raise

        _CASE_TESTS[name] = fn.__name__
        chosen = (CASE in ("", name) or (CASE == "fast" and name in FAST)
                  or (CASE == "bugs" and name in BUGS))
        return cocotb.test(skip=not chosen)(run)

    return wrap


async def scrub(tw):
    """Abort every session of the gateware (after a failure; errors ignored)."""
    for sid in range(PARAMS["sessions"]):
        try:
            await tw.rtl.abort(sid)
        except Exception:  # noqa: BLE001 - a free session, or a gateware that hangs
            pass


async def start(dut, app_pause=0.0, idle="none", backpressure="none"):
    p = params()
    bench = ToeBench(dut, p, app_pause=app_pause)
    bench.tb.set_pauses(PAUSES[idle], PAUSES[backpressure])
    await bench.reset()
    tw = CocotbTwin(bench, model_config(p))
    _TWINS.append(tw)
    return tw


def tcp(frames):
    """Parse frames that must all be TCP segments."""
    out = [parse_tcp_frame(f) for f in frames]
    assert not any(isinstance(s, str) for s in out), out
    return out


async def handshake(tw, irs, sport, *, window=65535, wscale=None, rtt_ms=50):
    """Passive open from the peer's port ``sport``; return ``(sid, snd)``: the session and
    the engine's next sequence number. The ACK comes ``rtt_ms`` later (an RTT sample)."""
    (syn_ack,) = tcp(await tw.rx(seg(SYN, irs, sport=sport, mss=1460, wscale=wscale)))
    assert syn_ack.flags == SYN | ACK and syn_ack.ack == (irs + 1) % MOD
    assert syn_ack.seq == ISN
    tw.now += rtt_ms * MS
    assert await tw.rx(seg(ACK, irs + 1, ISN + 1, sport=sport, window=window)) == []
    notes = tw.notes()
    assert [(k, i) for k, _, i in notes] == [(Notice.CONNECTED, "")]
    return notes[0][1], (ISN + 1) % MOD


async def active_open(tw, port=8080, *, arp=True):
    """Active open to 10.0.0.1:``port``; return ``(sid, syn)`` with the SYN sent."""
    sid = await tw.call("open", "10.0.0.1", port)
    if arp:
        (syn,) = tcp(await tw.rx(ARP_REPLY))  # the SYN leaves once the peer's MAC is known
    else:
        (syn,) = tcp(tw.sent)
    assert syn.flags == SYN and syn.seq == ISN
    return sid, syn


async def next_timer(tw):
    """Let time run to the model's next timer: nothing may leave 10 ms (a tick) before it;
    return what leaves at it."""
    ms = tw.deadline_ms()
    assert ms is not None, "no timer armed"
    assert await tw.at(ms - 10) == [], f"a timer fired before {ms} ms"
    return await tw.at(ms)


async def finish(tw):
    """End a case: abort what is left (the same RSTs from both), so the next case in the same
    simulator starts with every session free; no memory access went beyond the memory."""
    for sid in tw.model.sessions():
        await tw.call("abort", sid)
    tw.notes()
    assert (await tw.rtl.counters())["half_open"] == 0
    assert tw.rtl.memory.out_of_range == 0


async def state(tw, sid):
    return await tw.call("state", sid)


# ---- simultaneous close and open ----------------------------------------------------------


@case("close")
async def simultaneous_close(dut):
    """Both FINs cross: FIN-WAIT-1, CLOSING (the peer's FIN does not ACK ours), the FIN sent
    again by the RTO, TIME-WAIT on the ACK, TIME-WAIT restarted by a retransmitted FIN, CLOSED
    after it (RFC 9293 §3.6 figure 13). Then FIN and ACK together: FIN-WAIT-1 to TIME-WAIT.
    Both sequence spaces wrap during the transfer before the close."""
    tw = await start(dut, app_pause=0.3, idle="random", backpressure="random")
    await tw.call("listen", 7)
    irs = MOD - 700  # the peer's data wraps after 699 bytes
    sid, snd = await handshake(tw, irs, 40001)
    rcv = (irs + 1) % MOD
    data = bytes(range(256)) * 4
    tw.now += 10 * MS
    assert await tw.rx(seg(ACK | PSH, rcv, snd, data, sport=40001)) == []  # delayed ACK
    (ack,) = tcp(await tw.at(tw.now / MS + 40))
    rcv = (rcv + len(data)) % MOD
    assert ack.ack == rcv < 1000  # wrapped
    tw.notes()
    assert await tw.call("recv", sid) == data
    assert await tw.call("send", sid, data[:600]) == 600
    (sent,) = tcp(tw.sent)
    assert sent.seq == snd and sent.payload == data[:600] and sent.ack == rcv
    tw.now += 10 * MS
    await tw.rx(seg(ACK, rcv, snd + 600, sport=40001))
    snd = (snd + 600) % MOD
    assert snd < 600  # the engine's sequence numbers wrapped too
    await tw.call("close", sid)
    (fin,) = tcp(tw.sent)
    assert fin.flags == FIN | ACK and fin.seq == snd
    assert await state(tw, sid) == State.FIN_WAIT_1
    # the peer's FIN crosses ours: it acknowledges our data, not our FIN
    tw.now += 10 * MS
    (ack,) = tcp(await tw.rx(seg(ACK | FIN, rcv, snd, sport=40001)))
    assert ack.flags == ACK and ack.ack == (rcv + 1) % MOD and ack.seq == (snd + 1) % MOD
    assert await state(tw, sid) == State.CLOSING
    assert tw.notes() == [(Notice.CLOSED, sid, "peer")]
    # our FIN was lost: the retransmission timer sends it again (RTO 200 ms after the sample)
    (again,) = tcp(await tw.at(tw.now / MS + 200))
    assert again.flags == FIN | ACK and again.seq == snd
    assert await state(tw, sid) == State.CLOSING
    tw.now += 10 * MS
    assert await tw.rx(seg(ACK, rcv + 1, snd + 1, sport=40001)) == []
    assert await state(tw, sid) == State.TIME_WAIT
    # the peer's FIN again (our ACK lost): ACK, TIME-WAIT restarted
    tw.now += 100 * MS
    (ack,) = tcp(await tw.rx(seg(ACK | FIN, rcv, snd + 1, sport=40001)))
    assert ack.flags == ACK and ack.ack == (rcv + 1) % MOD
    restart = tw.now / MS
    assert await tw.at(restart + 290) == []
    assert await state(tw, sid) == State.TIME_WAIT
    await tw.at(restart + 300)
    assert await state(tw, sid) == State.CLOSED
    assert tw.notes() == [(Notice.CLOSED, sid, "done")]

    # FIN crossing with an ACK of ours in the same segment: straight to TIME-WAIT
    sid, snd = await handshake(tw, 5000, 40002)
    await tw.call("close", sid)
    tw.now += 10 * MS
    (ack,) = tcp(await tw.rx(seg(ACK | FIN, 5001, snd + 1, sport=40002)))
    assert ack.flags == ACK and ack.ack == 5002
    assert await state(tw, sid) == State.TIME_WAIT
    assert tw.notes() == [(Notice.CLOSED, sid, "peer")]
    await tw.at(tw.now / MS + 300)
    assert await state(tw, sid) == State.CLOSED
    tw.notes()
    await finish(tw)


@case("open")
async def simultaneous_open(dut):
    """Both ends send a SYN (RFC 9293 §3.5 figure 8): SYN-SENT to SYN-RECEIVED with a SYN-ACK;
    the peer's SYN-ACK (its SYN already counted, so outside the window: RFC 9293 §3.10.7.4
    answers it with an ACK) and then its ACK make the connection; data both ways."""
    tw = await start(dut)
    sid, syn = await active_open(tw)
    tw.now += 10 * MS
    peer = 9000
    (syn_ack,) = tcp(await tw.rx(seg(SYN, peer, sport=8080, dport=syn.src_port, mss=1200,
                                     wscale=2)))
    assert syn_ack.flags == SYN | ACK and syn_ack.seq == ISN and syn_ack.ack == peer + 1
    assert await state(tw, sid) == State.SYN_RECEIVED
    tw.now += 10 * MS
    (ack,) = tcp(await tw.rx(seg(SYN | ACK, peer, ISN + 1, sport=8080, dport=syn.src_port,
                                 mss=1200, wscale=2)))
    assert ack.flags == ACK and ack.ack == peer + 1
    tw.now += 10 * MS
    assert await tw.rx(seg(ACK, peer + 1, ISN + 1, sport=8080, dport=syn.src_port,
                           window=750)) == []
    assert await state(tw, sid) == State.ESTABLISHED
    assert tw.notes() == [(Notice.CONNECTED, sid, "")]
    # the peer's MSS (1200) and window (750 << 2) cut the data (the initial window, 10 MSS by
    # RFC 6928, would allow more); no short segment while data waits (RFC 9293 §3.8.6.2.1)
    assert await tw.call("send", sid, bytes(4000)) == 4000
    assert [len(s.payload) for s in tcp(tw.sent)] == [1200] * 2
    tw.now += 10 * MS
    out = tcp(await tw.rx(seg(ACK | PSH, peer + 1, ISN + 2401, b"hello", sport=8080,
                              dport=syn.src_port, window=1000)))
    assert [len(s.payload) for s in out] == [1200, 400] and out[-1].ack == peer + 6
    assert await tw.call("recv", sid) == b"hello"
    tw.notes()
    await finish(tw)


@case("open_rst")
async def simultaneous_open_rst(dut):
    """RST in SYN-RECEIVED reached by a simultaneous open: the connection was refused
    (RFC 9293 §3.10.7.4, SYN-RECEIVED: "signal the user 'connection refused'")."""
    tw = await start(dut)
    sid, syn = await active_open(tw)
    tw.now += 10 * MS
    await tw.rx(seg(SYN, 9000, sport=8080, dport=syn.src_port))
    assert await state(tw, sid) == State.SYN_RECEIVED
    tw.now += 10 * MS
    assert await tw.rx(seg(RST, 9001, sport=8080, dport=syn.src_port)) == []
    assert await state(tw, sid) == State.CLOSED
    assert tw.notes() == [(Notice.RESET, sid, "refused")]
    await finish(tw)


# ---- RST in each state --------------------------------------------------------------------


async def reach(tw, target, sport):
    """Bring a new passively opened session to ``target``; return ``(sid, rcv, snd)``: the
    session, the peer's next sequence number and the engine's."""
    irs = (MOD - 3 + 1000 * (sport % 7)) % MOD
    if target == State.SYN_RECEIVED:
        await tw.rx(seg(SYN, irs, sport=sport, mss=1460))
        return tw.model.sessions()[-1], (irs + 1) % MOD, (ISN + 1) % MOD
    sid, snd = await handshake(tw, irs, sport)
    rcv = (irs + 1) % MOD
    tw.now += 10 * MS
    if target in (State.CLOSE_WAIT, State.LAST_ACK):
        await tw.rx(seg(ACK | FIN, rcv, snd, sport=sport))
        rcv = (rcv + 1) % MOD
        if target == State.LAST_ACK:
            await tw.call("close", sid)
            snd = (snd + 1) % MOD
    elif target != State.ESTABLISHED:
        await tw.call("close", sid)
        if target == State.CLOSING:
            await tw.rx(seg(ACK | FIN, rcv, snd, sport=sport))
            rcv = (rcv + 1) % MOD
        elif target in (State.FIN_WAIT_2, State.TIME_WAIT):
            await tw.rx(seg(ACK, rcv, snd + 1, sport=sport))
            if target == State.TIME_WAIT:
                tw.now += 10 * MS
                await tw.rx(seg(ACK | FIN, rcv, snd + 1, sport=sport))
                rcv = (rcv + 1) % MOD
        snd = (snd + 1) % MOD
    tw.now += 10 * MS
    assert await state(tw, sid) == target
    tw.notes()
    return sid, rcv, snd


SYNCHRONIZED = [State.SYN_RECEIVED, State.ESTABLISHED, State.FIN_WAIT_1, State.FIN_WAIT_2,
                State.CLOSE_WAIT, State.CLOSING, State.LAST_ACK, State.TIME_WAIT]


@case("rst")
async def rst_in_each_state(dut):
    """In every synchronized state: a RST outside the window is dropped without an answer
    (RFC 9293 §3.10.7.4 first check), a RST in the window but not at ``rcv_nxt`` and a SYN get
    a challenge ACK (RFC 5961 §3.2, §4), a RST at ``rcv_nxt`` ends the connection: the application
    hears ``reset`` except for a passive SYN-RECEIVED (back to LISTEN, RFC 9293 §3.10.7.4) and
    TIME-WAIT (the gateware frees the number with ``closed``/``done``; the model says
    nothing)."""
    tw = await start(dut, app_pause=0.2, idle="random", backpressure="random")
    await tw.call("listen", 7)
    for k, target in enumerate(SYNCHRONIZED):
        sport = 41000 + k
        sid, rcv, snd = await reach(tw, target, sport)
        for flags, seq in ((RST, rcv + 5000), (RST | ACK, rcv - 3000)):
            assert await tw.rx(seg(flags, seq, snd, sport=sport)) == [], target
            assert await state(tw, sid) == target
        (ack,) = tcp(await tw.rx(seg(RST, rcv + 1, sport=sport)))
        assert (ack.flags, ack.seq, ack.ack) == (ACK, snd, rcv), target
        assert await state(tw, sid) == target
        # a SYN in a synchronized state: challenge ACK too (RFC 5961 §4)
        (ack,) = tcp(await tw.rx(seg(SYN, rcv + 7, sport=sport, mss=1460)))
        assert (ack.flags, ack.seq, ack.ack) == (ACK, snd, rcv), target
        assert await state(tw, sid) == target
        tw.now += 10 * MS
        assert await tw.rx(seg(RST | ACK, rcv, snd, sport=sport)) == []
        assert await state(tw, sid) == State.CLOSED
        notes = tw.notes()  # TIME-WAIT: the gateware's closed/done, the model's nothing
        if target == State.TIME_WAIT:
            assert notes == [(Notice.CLOSED, sid, "done")]
        elif target == State.SYN_RECEIVED:
            assert notes == []
        else:
            assert notes == [(Notice.RESET, sid, "rst")], target
        tw.now += 10 * MS
    counters = await tw.rtl.counters()
    assert counters["challenge_acks"] == tw.model.stats["challenge_acks"] \
        == 2 * len(SYNCHRONIZED)
    assert counters["out_of_window"] == tw.model.drops["out_of_window"] == 2 * len(SYNCHRONIZED)
    await finish(tw)


# in the process of "rst", after every session of rst_in_each_state was released
@case("rst")
async def rst_in_syn_sent(dut):
    """SYN-SENT (RFC 9293 §3.10.7.3): a RST without ACK is dropped; a RST with an ACK that does
    not acknowledge our SYN is dropped; a plain ACK like that gets a RST; a RST with the ACK
    of our SYN: connection refused."""
    tw = await start(dut)
    sid, syn = await active_open(tw)
    port = syn.src_port
    tw.now += 10 * MS
    for flags, ack in ((RST, 0), (RST | ACK, ISN), (RST | ACK, ISN + 2)):
        assert await tw.rx(seg(flags, 777, ack, sport=8080, dport=port)) == []
        assert await state(tw, sid) == State.SYN_SENT
    (rst,) = tcp(await tw.rx(seg(ACK, 777, ISN + 2, sport=8080, dport=port)))
    assert (rst.flags, rst.seq) == (RST, (ISN + 2) % MOD)
    assert await state(tw, sid) == State.SYN_SENT
    assert await tw.rx(seg(RST | ACK, 0, ISN + 1, sport=8080, dport=port)) == []
    assert await state(tw, sid) == State.CLOSED
    assert tw.notes() == [(Notice.RESET, sid, "refused")]
    counters = await tw.rtl.counters()
    assert counters["bad_ack"] == tw.model.drops["bad_ack"] == 3
    assert counters["bad_rst"] == tw.model.drops["bad_rst"] == 1
    # the SYN of a second open goes unanswered: 1 s, 2 s, 4 s, then given up (syn_retries 3)
    start_ms = tw.now / MS
    sid, syn = await active_open(tw, 8081, arp=False)
    times = []
    while not (notes := tw.notes()):
        out = tcp(await next_timer(tw))
        times.append(round(tw.now / MS - start_ms))
        assert [(s.flags, s.seq) for s in out] == ([(SYN, ISN)] if len(times) < 4 else [])
    assert times == [1000, 3000, 7000, 11000]  # the fourth timeout (4 s, the cap) gives up
    assert notes == [(Notice.RESET, sid, "timeout")]
    assert await state(tw, sid) == State.CLOSED
    await finish(tw)


# ---- zero windows -------------------------------------------------------------------------


@case("persist")
async def zero_window_from_peer(dut):
    """The peer closes its window with data queued: the persist timer sends probes
    (``seq = snd_una - 1``, no data, as Linux) after an RTO, then at doubling intervals up to
    ``rto_max`` (RFC 9293 §3.8.6.1; RFC 1122 §4.2.2.17); answers with a zero window keep the
    backoff; the opening window lets the data go."""
    await persist(dut, check_rto=False)


@case("persist_rto")
async def rto_after_zero_window(dut):
    """As :func:`zero_window_from_peer`; then the first segment after the window opened is
    not acknowledged: the retransmission timer runs at the RTO (200 ms after the RTT sample
    of the handshake), not at the probes' backed-off interval. RFC 6298 §5.5 doubles the RTO
    when the retransmission timer expires, and a probe is no retransmission (Linux
    tcp_ack_probe() clears the probes' backoff when the window opens)."""
    await persist(dut, check_rto=True)


async def persist(dut, check_rto):
    tw = await start(dut)
    await tw.call("listen", 7)
    sid, snd = await handshake(tw, MOD - 40, 40100, wscale=3)
    rcv = MOD - 39
    tw.now += 10 * MS
    assert await tw.rx(seg(ACK, rcv, snd, sport=40100, window=0)) == []
    assert await tw.call("send", sid, b"z" * 3000) == 3000
    assert tw.sent == []  # nothing fits a zero window
    base = tw.now / MS
    times = []
    for k in range(8):
        (probe,) = tcp(await next_timer(tw))
        assert (probe.flags, probe.seq, probe.payload) == (ACK, (snd - 1) % MOD, b"")
        times.append(round(tw.now / MS - base))
        if k == 2:  # the peer answers a probe, its window still closed
            tw.now += 10 * MS
            assert await tw.rx(seg(ACK, rcv, snd, sport=40100, window=0)) == []
            base -= 10
    gaps = [b - a for a, b in zip([0, *times], times, strict=False)]
    assert gaps == [200, 400, 800, 1600 + 10, 3200, 4000, 4000, 4000], gaps
    counters = await tw.rtl.counters()
    assert counters["window_probes"] == tw.model.stats["window_probes"] == 8
    # the window opens (100 << 3 bytes): the data goes as the window allows
    tw.now += 10 * MS
    out = tcp(await tw.rx(seg(ACK, rcv, snd, sport=40100, window=100)))
    assert [(s.seq, len(s.payload)) for s in out] == [(snd, 800)]
    if check_rto:
        sent_at = tw.now / MS
        (again,) = tcp(await next_timer(tw))
        assert (again.seq, len(again.payload)) == (snd, 800)
        assert round(tw.now / MS - sent_at) == 200
    tw.now += 10 * MS
    out = tcp(await tw.rx(seg(ACK, rcv, snd + 800, sport=40100, window=4096 >> 3)))
    assert sum(len(s.payload) for s in out) == 2200
    await finish(tw)


@case("shrink")
async def zero_window_with_data_in_flight(dut):
    """The peer closes its window while three segments are in flight and answers every probe:
    each retransmission timeout sends the first unacknowledged segment again as the probe (as
    Linux does), the RTO doubling up to ``rto_max`` (RFC 6298 §5.5), and the connection stays
    open past ``data_retries`` timeouts (RFC 9293 §3.8.6.1, MUST-26); the data goes again from
    ``snd_una`` when the window opens."""
    tw = await start(dut)
    await tw.call("listen", 7)
    sid, snd = await handshake(tw, MOD - 500, 40600)
    rcv = MOD - 499
    await tw.at(tw.now / MS + 10)
    data = bytes(range(200)) * 15
    assert await tw.call("send", sid, data) == 3000
    assert [len(s.payload) for s in tcp(tw.sent)] == [1460, 1460, 80]
    una = (snd + 1460) % MOD
    tw.now += 10 * MS
    assert await tw.rx(seg(ACK, rcv, una, sport=40600, window=0)) == []
    last = tw.now / MS
    gaps = []
    while tw.now < 40_000 * MS:  # ten times rto_max: far beyond six retries
        (probe,) = tcp(await next_timer(tw))
        assert (probe.flags, probe.seq, probe.payload) == (ACK, una, data[1460:2920])
        gaps.append(round(tw.now / MS - last))
        last = tw.now / MS
        assert await tw.rx(seg(ACK, rcv, una, sport=40600, window=0)) == []  # still closed
        assert tw.notes() == []
    assert gaps[:7] == [200, 400, 800, 1600, 3200, 4000, 4000], gaps
    assert len(gaps) > PARAMS["data_retries"] + 1
    counters = await tw.rtl.counters()
    for name in ("window_probes", "timeouts", "retransmits"):
        assert counters[name] == tw.model.stats[name] == len(gaps), name
    assert await state(tw, sid) == State.ESTABLISHED
    tw.now += 10 * MS
    out = tcp(await tw.rx(seg(ACK, rcv, una, sport=40600, window=65535)))
    assert [(s.seq, len(s.payload)) for s in out] == [(una, 1460)]  # cwnd: 1 MSS
    await finish(tw)


@case("peer_probe")
async def zero_window_to_peer(dut):
    """The application does not read: the receive buffer (4 KiB) fills, the engine announces a
    zero window; the peer's probes (Linux's ``seq = rcv_nxt - 1`` without data, and one byte at
    ``rcv_nxt`` as RFC 9293 §3.8.6.1 describes) get an ACK with the zero window and the byte is
    not taken; reading opens the window once the right edge can move by a useful amount
    (receiver SWS avoidance, RFC 9293 §3.8.6.2.2), then data flows again."""
    tw = await start(dut, app_pause=0.3)
    await tw.call("listen", 7)
    irs = MOD - 2000
    sid, snd = await handshake(tw, irs, 40200)
    rcv = (irs + 1) % MOD
    data = bytes((7 * k) & 0xFF for k in range(4096))
    windows = []
    for start_at in range(0, 4096, 1460):
        tw.now += 10 * MS
        for s in tcp(await tw.rx(seg(ACK, rcv + start_at, snd, data[start_at:start_at + 1460],
                                     sport=40200))):
            windows.append((s.ack, s.window))
    tw.now += 40 * MS
    for s in tcp(await tw.at(tw.now / MS)):
        windows.append((s.ack, s.window))
    rcv = (rcv + 4096) % MOD
    assert windows[-1] == (rcv, 0), windows
    tw.notes()
    for probe in (seg(ACK, rcv - 1, snd, sport=40200), seg(ACK, rcv, snd, b"!", sport=40200)):
        tw.now += 200 * MS
        (ack,) = tcp(await tw.rx(probe))
        assert (ack.ack, ack.window) == (rcv, 0)
    assert await tw.call("readable", sid) == 4096
    # reading 1000 bytes frees less than the threshold: no window update yet
    assert await tw.call("recv", sid, 1000) == data[:1000]
    assert tw.sent == []
    assert await tw.call("recv", sid, 2000) == data[1000:3000]
    (update,) = tcp(tw.sent)
    assert update.ack == rcv and update.window == 3000
    tw.now += 10 * MS
    more = bytes(range(200))
    assert await tw.rx(seg(ACK | PSH, rcv, snd, more, sport=40200)) == []
    assert await tw.call("recv", sid) == data[3000:] + more
    counters = await tw.rtl.counters()
    for name in ("out_of_window", "beyond_window"):
        assert counters[name] == tw.model.drops[name], name
    await finish(tw)


# ---- retransmission timeout ---------------------------------------------------------------


@case("backoff")
async def retransmission_backoff(dut):
    """RFC 6298: the RTO doubles on each timeout (§5.5) up to ``rto_max`` (§2.5, 4 s here);
    a new ACK restarts the timer with the backed-off RTO (§5.3; Karn: no RTT sample from
    retransmitted data), a new RTT sample brings the RTO back down (§5.7 note, §2.3); after
    ``data_retries`` timeouts the connection is reset."""
    tw = await start(dut)
    await tw.call("listen", 7)
    sid, snd = await handshake(tw, 100, 40300)
    await tw.at(tw.now / MS + 10)
    assert await tw.call("send", sid, bytes(range(250)) * 12) == 3000
    assert [len(s.payload) for s in tcp(tw.sent)] == [1460, 1460, 80]
    base = tw.now / MS
    times = []
    for _ in range(3):
        (again,) = tcp(await next_timer(tw))  # cwnd is one MSS after a timeout (RFC 5681)
        assert (again.seq, len(again.payload)) == (snd, 1460)
        times.append(round(tw.now / MS - base))
    assert times == [200, 600, 1400]
    # a new ACK (of the retransmitted first segment): the timer restarts with RTO 1.6 s
    tw.now += 10 * MS
    out = tcp(await tw.rx(seg(ACK, 101, snd + 1460, sport=40300)))
    assert [(s.seq - snd) % MOD for s in out] == [1460, 2920]  # slow start: 2 MSS
    acked_at = tw.now / MS
    (again,) = tcp(await next_timer(tw))
    assert (again.seq - snd) % MOD == 1460
    assert round(tw.now / MS - acked_at) == 1600
    tw.now += 10 * MS
    await tw.rx(seg(ACK, 101, snd + 3000, sport=40300))
    # new data, acknowledged after 40 ms: an RTT sample, the RTO back to 200 ms
    assert await tw.call("send", sid, b"s" * 500) == 500
    tw.now += 40 * MS
    await tw.rx(seg(ACK, 101, snd + 3500, sport=40300))
    assert await tw.call("send", sid, b"t" * 500) == 500
    sent_at = tw.now / MS
    times = []
    while not (notes := tw.notes()):
        out = tcp(await next_timer(tw))
        times.append(round(tw.now / MS - sent_at))
        if len(times) <= PARAMS["data_retries"]:
            assert [(s.flags, (s.seq - snd) % MOD, len(s.payload)) for s in out] == \
                [(ACK | PSH, 3500, 500)]
    # doubling to the 4 s cap; the seventh timeout gives up with RST (RFC 9293 §3.8.3, R2)
    assert times == [200, 600, 1400, 3000, 6200, 10200, 14200], times
    assert [(s.flags, (s.seq - snd) % MOD) for s in out] == [(RST | ACK, 4000)]
    assert notes == [(Notice.RESET, sid, "timeout")]
    counters = await tw.rtl.counters()
    for name in ("timeouts", "retransmits"):
        assert counters[name] == tw.model.stats[name], name
    await finish(tw)


@case("syn_rto")
async def rto_after_syn_ack_timeout(dut):
    """RFC 6298 §5.7: the SYN-ACK timed out once (RTO 1 s doubled to 2 s) and the handshake
    gave no RTT sample (Karn): when data flows the RTO is 3 s."""
    tw = await start(dut)
    await tw.call("listen", 7)
    await tw.rx(seg(SYN, 300, sport=40500, mss=1460))
    (again,) = tcp(await next_timer(tw))
    assert again.flags == SYN | ACK and round(tw.now / MS) == 1000
    tw.now += 50 * MS
    assert await tw.rx(seg(ACK, 301, ISN + 1, sport=40500)) == []
    (note,) = tw.notes()
    assert await tw.call("send", note[1], b"r" * 100) == 100
    sent_at = tw.now / MS
    (again,) = tcp(await next_timer(tw))
    assert again.payload == b"r" * 100 and round(tw.now / MS - sent_at) == 3000
    await finish(tw)

# ---- sequence numbers around 2**32 --------------------------------------------------------


@case("wrap")
async def sequence_wrap(dut):
    """Both sequence spaces cross 2**32 (the engine's ISN is 256 before it, the peer's 1000
    before it): data both ways with delayed ACKs, a duplicate segment from before the wrap
    (outside the window), out-of-order data, an ACK of unsent data, an ACK older than the
    window (RFC 5961 §5: challenge ACK), all across the wrap."""
    tw = await start(dut, app_pause=0.2, idle="cycle", backpressure="random")
    await tw.call("listen", 7)
    irs = MOD - 1000
    sid, snd = await handshake(tw, irs, 40400, wscale=1)
    rcv = (irs + 1) % MOD
    data = bytes((k * 13 + 5) & 0xFF for k in range(3000))
    for k, start_at in enumerate(range(0, 3000, 1000)):
        tw.now += 10 * MS
        out = tcp(await tw.rx(seg(ACK, rcv + start_at, snd, data[start_at:start_at + 1000],
                                  sport=40400)))
        assert len(out) == k % 2  # delayed ACK: every second segment
    rcv = (rcv + 3000) % MOD
    assert rcv == 2001  # wrapped
    assert await tw.call("recv", sid) == data
    tw.notes()
    tw.now += 10 * MS
    (dup,) = tcp(await tw.rx(seg(ACK, irs + 1, snd, data[:1000], sport=40400)))
    assert dup.ack == rcv  # from before the wrap: outside the window, ACKed
    (ooo,) = tcp(await tw.rx(seg(ACK, rcv + 100, snd, b"late", sport=40400)))
    assert ooo.ack == rcv  # out of order: dropped with an immediate duplicate ACK
    # the engine sends 3000 bytes: its sequence numbers cross 2**32 in the first segment
    assert await tw.call("send", sid, data) == 3000
    sent = tcp(tw.sent)
    assert [((s.seq - snd) % MOD, len(s.payload)) for s in sent] == \
        [(0, 1460), (1460, 1460), (2920, 80)]
    assert sent[1].seq < sent[0].seq  # wrapped
    tw.now += 10 * MS
    (ack,) = tcp(await tw.rx(seg(ACK, rcv, snd + 5000, sport=40400)))  # unsent: ACK, dropped
    assert ack.seq == (snd + 3000) % MOD
    assert await tw.rx(seg(ACK, rcv, snd - 70000, sport=40400)) == []  # old, in the window
    # older than the largest window the peer offered (65535 << 1): challenge ACK
    (ack,) = tcp(await tw.rx(seg(ACK, rcv, snd - 140000, sport=40400)))
    assert ack.ack == rcv
    assert await tw.rx(seg(ACK, rcv, snd + 1460, sport=40400)) == []
    tw.now += 10 * MS
    assert await tw.rx(seg(ACK, rcv, snd + 3000, sport=40400)) == []
    counters = await tw.rtl.counters()
    for name in ("out_of_window", "ooo_full", "ack_unsent", "ack_too_old"):
        assert counters[name] == tw.model.drops[name] == 1, name
    await finish(tw)


# ---- random segments in every state (-m long) ---------------------------------------------


@case("fuzz")
async def random_segments_in_every_state(dut):
    """Sessions driven through their states by random segments (flags, sequence and
    acknowledgment numbers at and around the window edges, data, windows), application calls
    (send, recv, close, abort) and time steps, with bus idles and backpressure: every frame
    and notification as the model's. The peer's window is never zero and no session opens
    simultaneously (zero windows are :func:`zero_window_from_peer`'s, and two of the known
    gateware bugs would show in every run)."""
    import random

    tw = await start(dut, app_pause=0.2, idle="random", backpressure="random")
    await tw.call("listen", 7)
    rng = random.Random(int(os.environ.get("NICSIM_TOE_SEED", "1")))
    flag_sets = [ACK, ACK, ACK | PSH, ACK | FIN, RST, RST | ACK, SYN, SYN | ACK, FIN, 0]
    for round_ in range(int(os.environ.get("NICSIM_TOE_ROUNDS", "12"))):
        sport = 42000 + round_
        irs = rng.choice([MOD - 1, MOD - 700, 5000, rng.randrange(MOD)])
        sid, snd = await handshake(tw, irs, sport, wscale=rng.choice([None, 0, 2]))
        rcv = (irs + 1) % MOD
        for _ in range(40):
            if sid not in tw.model.sessions():
                break
            tw.now += rng.choice([0, 0, 10, 40, 200]) * MS
            roll = rng.random()
            if roll < 0.1:
                if tw.model.state(sid) in (State.ESTABLISHED, State.CLOSE_WAIT):
                    await tw.call("send", sid, rng.randbytes(rng.choice([1, 100, 1460, 3000])))
                continue
            if roll < 0.15:
                await tw.call("recv", sid)
                continue
            if roll < 0.19:
                await tw.call("close", sid)
                continue
            if roll < 0.2:
                await tw.call("abort", sid)
                break
            info = tw.model.session_info(sid)
            una, nxt = info["snd_una"], info["snd_nxt"]
            flags = rng.choice(flag_sets)
            seq = (rcv + rng.choice([-5000, -1, 0, 0, 0, 1, 1000, 4095, 4096, 70000])) % MOD
            ack = (una + rng.choice([-70000, -1, 0, 0, (nxt - una) % MOD, 1, 5000])) % MOD
            payload = rng.randbytes(rng.choice([0, 0, 0, 1, 100, 1460]))
            window = rng.choice([10, 1000, 65535])
            frame = bytearray(seg(flags, seq, ack, payload, sport=sport, window=window))
            if rng.random() < 0.05:
                frame[-1] ^= 0x5A  # bad checksum (or a changed byte of the header)
            for s in tcp(await tw.rx(bytes(frame))):
                if s.flags & ACK and not s.flags & RST:
                    rcv = s.ack  # follow what the engine acknowledges
            tw.notes()
        for k in tw.model.sessions():
            await tw.call("abort", k)
        tw.notes()
    counters = await tw.rtl.counters()
    for reason in ("out_of_window", "bad_tcp_checksum", "bad_flags", "ooo_full", "no_session",
                   "challenge_acks"):
        have = tw.model.drops[reason] + tw.model.stats[reason]
        assert counters[reason] == have, reason
    await finish(tw)

# ---- pytest ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def rtl():
    """The build (elaborating it to find the cached build takes seconds: once a module)."""
    from nicsim.hw.verilator import build

    return build("toe-tcp", PARAMS)


def _run_dir(rtl, case):
    return rtl.build_dir / "runs" / f"{case}_{os.getpid()}"


def _run(rtl, case):
    """Run the cocotb tests of ``case`` in one simulator process (raise if one fails)."""
    run_cocotb(rtl, "test_toe_cocotb", test_dir=Path(__file__).parent,
               env={"NICSIM_TOE_CASE": case}, run_dir=_run_dir(rtl, case))


@pytest.mark.rtl
@pytest.mark.parametrize("case", ["fast", *(pytest.param(c, marks=pytest.mark.long)
                                           for c in LONG)])
def test_toe_cocotb(rtl, case):
    """One simulator run: the cases of :data:`FAST` (``fast``), or one of :data:`LONG`."""
    _run(rtl, case)


def _failed_tests(results):
    """``{test name: failure message}`` of a cocotb results file."""
    import xml.etree.ElementTree as ET

    failed = {}
    for t in ET.parse(results).iter("testcase"):
        for tag in ("failure", "error"):
            if (node := t.find(tag)) is not None:
                failed[t.get("name")] = node.get("message") or ""
    return failed


@pytest.mark.rtl
def test_toe_cocotb_known_bugs(rtl):
    """The cases of :data:`BUGS` in one run: each must still fail (the test says which one
    passes once its bug is fixed, to be moved to :data:`FAST`); then it is an xfail."""
    if not BUGS:
        pytest.skip("no known gateware bugs (BUGS is empty)")
    names = {case: _CASE_TESTS[case] for case in BUGS}
    try:
        _run(rtl, "bugs")
        failed = {}
    except AssertionError:
        failed = _failed_tests(_run_dir(rtl, "bugs") / "results.xml")
    fixed = [c for c in BUGS if names[c] not in failed]
    assert not fixed, f"fixed in the gateware (move them from BUGS to FAST): {fixed}"
    assert set(failed) == set(names.values()), f"unexpected failures: {failed}"
    # each fails where the gateware and the model part, not by a hang or a bench error
    other = {name: message for name, message in failed.items()
             if "gateware" not in message or "did not go idle" in message}
    assert not other, f"known bugs failing otherwise: {other}"
    pytest.xfail("; ".join(BUGS.values()))
