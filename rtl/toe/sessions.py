# Ref: RFC 9293 §3.3.1 (TCB), §3.5 (open), §3.6 (close), §3.8.6 (windows, delayed ACK),
#      §3.10 (event processing); RFC 6298 (retransmission timer); RFC 5681 (slow start,
#      congestion avoidance), RFC 6928 (initial window), RFC 6582 (NewReno fast retransmit
#      and recovery); RFC 7323 §2 (window scale); RFC 5961 §3-§5 (RST, SYN and ACK checks);
#      RFC 1122 §4.2.3.2 (delayed ACK); fpga-network-stack (shared/REFERENCES.md) for the
#      shape of the application streams
"""TCP session engine of the RTL TOE: TCBs, buffers in an external memory, timers, app streams.

:class:`SessionLogic` adds the session engine to :class:`nicsim.rtl.toe.engine.ToeEngine` when
it is built with ``sessions`` > 0 (:class:`nicsim.rtl.toe.engine.ToeTcpEngine`). It works on one
event at a time, inside the front end's state machine, after the front end has stored and
checked a frame:

* a TCP segment: :class:`~nicsim.rtl.toe.session_table.SessionTable` finds its session; the
  session's transmission control block (one memory row, :data:`TCB_LAYOUT`) is read, the
  segment is processed as RFC 9293 §3.10.7 says (the checks and their order are those of the
  golden model :class:`nicsim.hw.ref.tcp.TcpEngine`), the segments it calls for are built and
  sent, and the TCB is written back;
* a segment to a listening port without a session: passive open, SYN options through
  :class:`~nicsim.rtl.toe.tcp_options.TcpOptionParser`, SYN-ACK with MSS and window scale;
* an application command (``cmd`` stream, :data:`CMD_OPS`), answered on ``resp``;
* a timer tick (``tick`` input: the number of timer units that passed, a unit being 1 to
  10 ms in the drivers): the timers of every session are scanned, one session per idle cycle;
  a timer that fell due during a jump of several units fires at its end.

Three blocks run beside that state machine, so that one bulk connection keeps close to a beat
a cycle, with the application in the loop:

* the cut-through writer (:meth:`SessionLogic.cut_through`): while a segment arrives, its
  session is looked up and, when it starts at ``rcv_nxt``, its payload is written into the
  receive ring as the beats come in (free ring space only, so a segment that fails a later
  check leaves nothing behind; ``rcv_nxt`` advances after the checks). The copy after the
  checks remains for the other cases (overlap with ``rcv_nxt``, more than the free space).
  The checks start while the copy still trails the frame's last beat (``ct_tail``). The front
  end takes the next frame into its second bank while a segment is processed, and the writer
  works on it as soon as the segment's session is known (its ``rcv_nxt`` forwarded when both
  are for the same session): the processing, and the application's commands, hide behind the
  next frame's beats.
* the transmitter (:meth:`SessionLogic.transmitter`): a built segment (its header in
  registers) leaves a beat a cycle, its payload read from the send ring as it leaves, while
  the state machine builds the next one, takes the ACKs and commands in. The TCP checksum,
  which precedes the payload, is summed ahead: beside each send ring word the memory keeps
  the running sum of the stream's bytes before it, written by the application mover with
  the ``SEND``'s words, so a segment's payload sum takes three reads (``X Ring``), not a pass
  over its bytes; a retransmission reads the same sums.
* the application mover (:meth:`SessionLogic.app_mover`): the bytes of a ``RECV`` (from the
  receive ring to ``rx_data``) or a ``SEND`` (from ``tx_data`` into the send ring) move on
  the memory's second port, ``mem_app``, while the state machine goes on with frames and
  segments on ``mem``. ``rx_read`` or ``tx_end`` moves only when the transfer is done (``A
  Load``): until then the bytes being read are not free space a segment could be written
  into, and the bytes being written lie beyond what a segment reads (the fence). A session
  released meanwhile waits in ``Release`` for the transfer, so a new connection cannot take
  its number and write into the ring under it.

Choices (and where they differ from the golden model):

* Buffers: session ``s`` owns a receive buffer and a send buffer of ``2**buf_bits`` bytes each
  in the external memory (ports ``mem`` and ``mem_app``: ``width``-bit words with byte
  enables, one-cycle read latency, like a dual-port block RAM or a DRAM controller's queues;
  the two ports never write the same word; a 16-bit sum beside each word, the send rings'
  running checksums, written on ``mem_app`` and read on ``mem``), at word address
  ``(2 s + is_send) << (buf_bits - log2(width / 8))``. Bytes move a word a cycle; between the
  frame buffers and the rings a rotation realigns them (:meth:`SessionLogic.copy_state`).
* Out-of-order segments are dropped (counted ``ooo_full``) with an immediate duplicate ACK, and
  recovered by the peer's retransmission: holding them needs range bookkeeping per session that
  this engine does not have yet (the golden model holds them; ``TcpConfig(ooo_ranges=0)`` makes
  it behave as this engine does).
* Half-open sessions (SYN-RECEIVED after a passive open) are bounded by ``max_half_open``; a SYN
  beyond the bound is refused (dropped, counted ``half_open_full``) rather than evicting the
  oldest, so a SYN flood takes at most ``max_half_open`` sessions and never those of
  established connections. (The golden model evicts the oldest.)
* Timers count ticks: retransmission (RFC 6298 with Karn's rule and exponential backoff, the
  RTT sampled in ticks), delayed ACK, TIME-WAIT (same timer field), and the zero-window probe
  (``seq = snd_una - 1`` as Linux sends it) when the peer's window is closed with data queued
  and nothing in flight. With data in flight (a window shrunk to zero), the retransmission
  timeout probes instead: it sends the first segment again and counts no retry while the
  window stays closed, as Linux does (RFC 9293 §3.8.6.1, MUST-26).
* Congestion control is NewReno as in the model, except that congestion avoidance counts
  acknowledged bytes (RFC 3465; ``cwnd`` grows by one MSS per ``cwnd`` bytes acknowledged)
  instead of adding ``MSS * MSS / cwnd`` per ACK, which would need a divider. The initial
  window is RFC 6928's (ten segments of 1460 bytes, Linux's default), as in the model.
* The initial sequence number is the Toeplitz hash of the connection's addresses plus 256 per
  tick (RFC 6528's clock at about 4 us for 1 ms ticks), or ``fixed_isn`` for tests.
* A RST that ends TIME-WAIT (RFC 9293 §3.10.7.4) is reported as ``closed_done``, so the
  application learns that the session number is free (the model reports nothing).
* ARP: a four-entry cache learns from ARP frames addressed to the engine; an active open to an
  unknown peer sends an ARP request, and the SYN leaves when the answer arrives.

Application streams (after fpga-network-stack): ``cmd`` (``op``, ``sid``, ``ip``, ``port``,
``length``) gets one ``resp`` (``ok``, ``sid``, ``value``, ``state``, ``port``, ``peer_ip``,
``peer_port``, ``eof``) each; ``RECV`` answers with the number of bytes ``m`` in ``value`` and
then sends ``m`` bytes on ``rx_data``; ``SEND`` answers with the bytes it takes and then takes
that many bytes from ``tx_data``. ``note`` carries notifications (:data:`NOTES`). The engine
waits for the application on ``resp`` and ``note`` (frames wait meanwhile); the bytes of a
``RECV`` or ``SEND`` move beside the state machine, which goes on with frames, and the next
command waits until they have moved. A command that can be taken goes before a frame that
has come in completely (frames keep coming in meanwhile).
The byte streams are aligned as the buffers hold the bytes: the first byte of a transfer is in
lane ``align`` (``resp``), ``keep`` marks the bytes.
"""

from amaranth.hdl import Array, Cat, Const, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .session_table import OP_DELETE, OP_INSERT, OP_LOOKUP, SessionTable, _toeplitz
from .tcp_options import MAX_OPTION_BYTES, TcpOptionParser

__all__ = ["CMD_OPS", "NOTES", "SESSION_DROP_REASONS", "STATES", "TCB_LAYOUT", "SessionLogic",
           "app_signature"]

STATES = ("CLOSED", "SYN-SENT", "SYN-RECEIVED", "ESTABLISHED", "FIN-WAIT-1", "FIN-WAIT-2",
          "CLOSE-WAIT", "CLOSING", "LAST-ACK", "TIME-WAIT")
(CLOSED, SYN_SENT, SYN_RCVD, ESTAB, FIN_WAIT_1, FIN_WAIT_2, CLOSE_WAIT, CLOSING, LAST_ACK,
 TIME_WAIT) = range(10)
CMD_OPS = ("listen", "unlisten", "open", "send", "recv", "close", "abort", "query")
_OP = {name: i for i, name in enumerate(CMD_OPS)}
NOTES = ("connected", "data", "space", "closed_peer", "closed_done", "reset_rst",
         "reset_timeout", "reset_refused")
_N = {name: i for i, name in enumerate(NOTES)}
SESSION_DROP_REASONS = ("out_of_window", "bad_ack", "ack_unsent", "ack_too_old", "no_ack",
                        "data_after_fin", "ooo_full", "beyond_window", "syn_data",
                        "session_table_full", "half_open_full", "bad_rst", "no_syn",
                        "challenge_acks", "retransmits", "timeouts", "fast_retransmits",
                        "window_probes", "segments_out")
FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
_LISTEN_SLOTS = 8
_ARP_SLOTS = 4
_PUBLISH_BYTES = 2048  # a SEND's transfer publishes the bytes it has written every so many
_TX_AHEAD = 7  # ring words the transmitter reads ahead (X Ring waits until 6 are in hand)
_TX_HEADER = 62  # Ethernet, IPv4, TCP and at most 8 option bytes (MSS, NOP, window scale)
# phases of the cut-through writer (SessionLogic.cut_through)
_CT_IDLE, _CT_REQ, _CT_WAIT, _CT_TCB, _CT_SETUP, _CT_COPY, _CT_DONE = range(7)
_CT_PHASES = 7

# the TCB fields the cut-through writer reads, in a memory of their own (written with the TCB)
_CT_TCB_LAYOUT = data.StructLayout({"state": 4, "irs": 32, "rcv_nxt": 32, "rx_read": 32,
                                    "peer_fin": 1})

TCB_LAYOUT = data.StructLayout({
    "state": 4, "passive": 1, "mac_ok": 1, "ws_ok": 1,
    "peer_mac": 48, "peer_ip": 32, "peer_port": 16, "local_port": 16,
    "iss": 32, "snd_una": 32, "snd_nxt": 32, "snd_max": 32, "snd_wnd": 32, "max_snd_wnd": 32,
    "snd_wl1": 32, "snd_wl2": 32, "snd_wscale": 4, "rcv_wscale": 4, "snd_mss": 16,
    "tx_end": 32, "fin_queued": 1, "send_blocked": 1, "tx_q": 16, "tx_part": 16,
    "irs": 32, "rcv_nxt": 32, "rcv_adv": 32, "rx_read": 32, "peer_fin": 1,
    "ack_now": 1, "unacked": 1,
    "cwnd": 32, "ssthresh": 32, "ca_acc": 32, "dupacks": 2, "in_recovery": 1, "recover": 32,
    "rto": 17, "srtt_ok": 1, "srtt": 17, "rttvar": 17, "rtt_on": 1, "rtt_seq": 32,
    "rtt_time": 32, "retries": 5, "rtx_on": 1, "rtx_at": 32, "probing": 1,
    "delack_on": 1, "delack_at": 32,
})


def app_signature(width, sessions, buf_bits):
    """Return the signature members of the session engine's ports (added to the front end's)."""
    sid_bits = max(1, (sessions - 1).bit_length())
    nb = width // 8
    addr_bits = buf_bits - (nb - 1).bit_length() + 1 + sid_bits
    return {
        "cmd": In(stream.Signature(data.StructLayout({
            "op": 3, "sid": sid_bits, "ip": 32, "port": 16, "length": 32}))),
        "resp": Out(stream.Signature(data.StructLayout({
            "ok": 1, "sid": sid_bits, "value": 32, "state": 4, "port": 16, "peer_ip": 32,
            "peer_port": 16, "eof": 1, "align": 6}))),
        "note": Out(stream.Signature(data.StructLayout({"kind": 3, "sid": sid_bits}))),
        "rx_data": Out(stream.Signature(data.StructLayout({"data": width, "keep": nb,
                                                           "last": 1}))),
        "tx_data": In(stream.Signature(data.StructLayout({"data": width, "keep": nb}))),
        # each memory word carries a 16-bit sum beside it (``r_sum``, ``w_sum``): the send
        # rings' running checksums (SessionLogic.app_mover writes them, X Ring reads them)
        "mem": Out(wiring.Signature({"addr": Out(addr_bits), "w_data": Out(width),
                                     "w_en": Out(nb), "r_data": In(width), "r_sum": In(16)})),
        "mem_app": Out(wiring.Signature({"addr": Out(addr_bits), "w_data": Out(width),
                                         "w_en": Out(nb), "r_data": In(width),
                                         "w_sum": Out(16), "w_sum_en": Out(1)})),
        "tick": In(16),
        "idle": Out(1),
    }


def _sub(a, b):
    return (a - b)[:32]


def _lt(a, b):
    """Sequence number ``a`` before ``b`` (RFC 9293 §3.4, modulo 2**32)."""
    d = _sub(b, a)
    return (d != 0) & ~d[31]


def _le(a, b):
    return ~_sub(b, a)[31]


def _umin(a, b):
    return Mux(a < b, a, b)


def _umax(a, b):
    return Mux(a > b, a, b)


def _fold(value):
    once = value[:16] + value[16:]
    return (once[:16] + once[16:])[:16]


def _fold16(m, value, name="fold"):
    """``value`` (up to 32 bits) folded to 16 bits, end-around carry (RFC 1071)."""
    wide = Signal(32, name=f"{name}_in")
    m.d.comb += wide.eq(value)
    out = Signal(16, name=name)
    m.d.comb += out.eq(_fold(wide))
    return out


def _pair_sum(m, word, en, nb, name="pairs"):
    """One's complement sum terms of the bytes of ``word`` whose lanes ``en`` has: lane
    ``2 p`` the high byte, ``2 p + 1`` the low byte of a 16-bit word (the lanes' parity is
    that of the bytes' ring offset); a plain sum, to be folded."""
    total = Signal(32, name=name)
    pairs = []
    for p in range(nb // 2):
        hi = Mux(en[2 * p], word[16 * p:16 * p + 8], 0)
        lo = Mux(en[2 * p + 1], word[16 * p + 8:16 * p + 16], 0)
        pairs.append(Cat(lo, hi))
    m.d.comb += total.eq(sum(pairs))
    return total


def _bytes(value, count):
    """Bytes of ``value`` in network order."""
    return [value[8 * (count - 1 - k):8 * (count - k)] for k in range(count)]


class SessionLogic:
    """The session engine's signals and states, built inside the front end's ``elaborate``.

    Parameters
    ----------
    engine : ToeEngine
        The component (its ports and parameters).
    m : Module
        The module being elaborated.
    fe : SimpleNamespace
        Front-end signals: ``hdr``, ``be``, ``rd`` (frame buffer read port), ``ip_id``,
        ``drops`` and the reply machinery (``reply``, ``is_arp_out``, ``out_last_beat``,
        ``out_last_keep``, the RST registers).
    """

    def __init__(self, engine, m, fe):
        self.e = e = engine
        self.m = m
        self.fe = fe
        N = e.sessions
        self.sid_bits = max(1, (N - 1).bit_length())
        self.buf = 1 << e.buf_bits
        ws = 0
        while self.buf >> ws > 0xFFFF and ws < 14:
            ws += 1
        self.rcv_wscale = ws
        m.submodules.table = self.table = SessionTable(N)
        m.submodules.options = self.opts = TcpOptionParser()
        m.submodules.tcbs = tcbs = Memory(shape=TCB_LAYOUT, depth=N, init=[])
        self.tcb_r = tcbs.read_port()
        self.tcb_w = tcbs.write_port()
        m.submodules.ct_tcbs = ct_tcbs = Memory(shape=_CT_TCB_LAYOUT, depth=N, init=[])
        self.ctt_w = ct_tcbs.write_port()
        self.ctt_r = ct_tcbs.read_port(transparent_for=(self.ctt_w,))
        nb = e.width // 8
        self.nb = nb
        self.log_nb = (nb - 1).bit_length()
        self.sdrops = Array(Signal(32, name=f"sdrop_{n}") for n in SESSION_DROP_REASONS)
        self.t = Signal(TCB_LAYOUT)
        self.sid = Signal(self.sid_bits)
        self.old_state = Signal(4)
        self.old_passive = Signal()
        self.now = Signal(32)
        self.scan_pending = Signal()
        self.scan_sid = Signal(self.sid_bits)
        self.half_open = Signal(range(N + 2))
        self.notes = Signal(len(NOTES))

    def count(self, name):
        k = SESSION_DROP_REASONS.index(name)
        return self.sdrops[k].eq(self.sdrops[k] + 1)

    # ------------------------------------------------------------------------------ the rest
    def registers(self):
        """Counter registers: name, address, signal (after the front end's)."""
        base = 0x10 + 4 * len(self.fe.drop_names)
        return {base + 4 * k: self.sdrops[k] for k in range(len(SESSION_DROP_REASONS))}

    def elaborate(self):
        """Add everything outside the state machine (tick counter, tables, comb helpers)."""
        m, e, fe = self.m, self.e, self.fe
        t = self.t
        with m.If(e.tick != 0):
            m.d.sync += [self.now.eq(self.now + e.tick), self.scan_pending.eq(1)]
        # listen table
        self.l_valid = Array(Signal(name=f"listen_valid{k}") for k in range(_LISTEN_SLOTS))
        self.l_port = Array(Signal(16, name=f"listen_port{k}") for k in range(_LISTEN_SLOTS))
        # ARP cache
        self.a_valid = Array(Signal(name=f"arp_valid{k}") for k in range(_ARP_SLOTS))
        self.a_ip = Array(Signal(32, name=f"arp_ip{k}") for k in range(_ARP_SLOTS))
        self.a_mac = Array(Signal(48, name=f"arp_mac{k}") for k in range(_ARP_SLOTS))
        self.a_next = Signal(range(_ARP_SLOTS))
        self.arp_wait = Signal()

        hdr, be = fe.hdr, fe.be
        self.seg_seq = be(38, 4)
        self.seg_ack = be(42, 4)
        self.seg_flags = hdr[47][:6]
        self.seg_wnd = be(48, 2)
        self.src_ip = be(26, 4)
        self.src_port = be(34, 2)
        self.dst_port = be(36, 2)
        self.src_mac = Cat(*(hdr[11 - k] for k in range(6)))
        doff = Cat(Const(0, 2), hdr[46][4:])
        self.doff = doff
        tcp_len = Signal(16)
        m.d.comb += tcp_len.eq(be(16, 2) - 20)
        self.plen = Signal(16)
        m.d.comb += self.plen.eq(tcp_len - doff)
        f = self.seg_flags
        self.f_fin, self.f_syn, self.f_rst, self.f_ack = f[0], f[1], f[2], f[4]
        self.seg_len = Signal(17)
        m.d.comb += self.seg_len.eq(self.plen + self.f_syn + self.f_fin)
        self.key = Cat(self.dst_port, self.src_port, self.src_ip)  # network order, 64 bits

        listening = Signal()
        for k in range(_LISTEN_SLOTS):
            with m.If(self.l_valid[k] & (self.l_port[k] == self.dst_port)):
                m.d.comb += listening.eq(1)
        self.listening = listening
        # ARP cache lookup of the TCB's peer
        self.arp_hit = Signal()
        self.arp_mac = Signal(48)
        for k in reversed(range(_ARP_SLOTS)):
            with m.If(self.a_valid[k] & (self.a_ip[k] == t.peer_ip)):
                m.d.comb += [self.arp_hit.eq(1), self.arp_mac.eq(self.a_mac[k])]

        # state classes
        st = t.state
        self.sending = (st == ESTAB) | (st == CLOSE_WAIT) | (st == FIN_WAIT_1) \
            | (st == CLOSING) | (st == LAST_ACK)
        self.receiving = (st == ESTAB) | (st == FIN_WAIT_1) | (st == FIN_WAIT_2)

        # receive side helpers
        self.ready_bytes = Signal(32)
        m.d.comb += self.ready_bytes.eq(_sub(_sub(t.rcv_nxt, t.rx_read), t.peer_fin))
        self.free = Signal(32)
        m.d.comb += self.free.eq(Mux((t.state == CLOSED) | (t.state == SYN_SENT), self.buf,
                                     self.buf - self.ready_bytes))
        self.edge = Signal(32)
        m.d.comb += self.edge.eq(t.rcv_nxt + self.free)
        self.rcv_wnd = Signal(32)  # acceptance window (0 when rcv_adv is behind)
        wnd = _sub(t.rcv_adv, t.rcv_nxt)
        m.d.comb += self.rcv_wnd.eq(Mux(wnd[31], 0, wnd))

        # the TX frame: registers for the header, the buffer for the payload
        self.txh_bits = Signal(8 * _TX_HEADER)
        self.txh = [self.txh_bits[8 * i:8 * i + 8] for i in range(_TX_HEADER)]
        self.x_seq = Signal(32)
        self.x_n = Signal(16)
        self.x_flags = Signal(6)
        self.x_kind = Signal(2)  # 0 control, 1 new data at snd_nxt, 2 SYN, 3 retransmission
        self.x_ws = Signal()  # window scale option (SYN segments)
        self.x_hlen = Signal(7)
        self.x_sum = Signal(32)
        self.x_win = Signal(16)
        self.x_ret = Signal(3)
        self.p_valid = Signal()
        self.o_last = Signal(range(9216 // self.nb + 2))
        self.o_keep = Signal(self.nb)
        self.p_ret = Signal()  # option parse return: 0 listen, 1 SYN-SENT
        # X Ring: the payload's checksum from the ring's running sums
        self.xr_a = Signal(32)  # the first word's bytes of the segment
        self.xr_q1 = Signal(16)  # the running sum at the second word
        self.xr_rest = Signal(16)  # the rest, folded
        self.xr_s = Signal(32)  # stream offsets of the segment's first and last bytes
        self.xr_e = Signal(32)
        self.xr_one = Signal()  # both in one word
        self.xr_go = Signal()  # X Ring may issue its first read this cycle
        # the transmitter (transmitter): sends a built segment, its payload read from the
        # send ring as it leaves, while the next one is built
        self.st_busy = Signal()
        self.st_sid = Signal(self.sid_bits)
        self.st_pay = Signal()  # it has payload
        self.st_w0 = Signal(26)  # ring word of the first payload beat's first half
        self.st_r = Signal(max(1, self.log_nb))  # the rotation
        self.st_dw0 = Signal(range(_TX_HEADER // self.nb + 2))  # the first payload beat
        self.st_k = Signal(16)  # ring words to read: 0 .. st_k
        self.st_j = Signal(16)  # the next ring word to read
        self.st_infl = Signal()  # a read was issued in the cycle before (its word is here)
        # ring words read ahead: enough that X Ring's three cycles on mem leave no bubble
        self.st_f = [Signal(e.width, name=f"st_f{k}") for k in range(_TX_AHEAD)]
        self.st_fn = Signal(range(_TX_AHEAD + 1))
        self.st_free = Signal()  # the transmitter takes a segment this cycle (X Hand)
        # X Ring may take mem for its three reads: the transmitter has read all its words,
        # holds enough ahead (_TX_AHEAD - 1) that three cycles without a read leave no stall,
        # or its header has left (its read-ahead grows no more)
        self.st_room = Signal()
        self.st_load = Signal()  # X Hand hands one over
        self.st_hlen = Signal(7)
        self.st_beat = Signal(range(9216 // self.nb + 2))
        self.st_last = Signal(range(9216 // self.nb + 2))
        self.st_keep = Signal(self.nb)
        self.sth_bits = Signal(8 * _TX_HEADER)
        self.sth = [self.sth_bits[8 * i:8 * i + 8] for i in range(_TX_HEADER)]
        # command registers
        self.c_op = Signal(3)
        self.c_ip = Signal(32)
        self.c_port = Signal(16)
        self.c_len = Signal(32)
        self.r = Signal.like(e.resp.payload)
        self.c_i = Signal(32)
        self.c_n = Signal(32)
        self.c_k = Signal(32)
        self.next_port = Signal(16, init=49152)
        self.arp_req = Signal()  # send an ARP request for t.peer_ip after the store
        self.m_r = Signal(17)  # RTT sample
        self.acked = Signal(32)
        self.win_changed = Signal()
        self.rtt_ret = Signal()  # after an RTT sample: 0 establishment, 1 new ACK
        # the realigning copy (copy_setup, copy_state)
        self.cp_w0 = Signal(26)
        self.cp_r = Signal(max(1, self.log_nb))
        self.cp_dmod = Signal(max(1, self.log_nb))
        self.cp_n = Signal(16)
        self.cp_dw0 = Signal(26)
        self.cp_k = Signal(16)
        self.cp_i = Signal(16)
        self.cp_idx = Signal(16)
        self.cp_a = Signal(e.width)
        self.c_base = Signal(max(1, e.buf_bits))  # byte offset of a stream transfer
        self.fast = Signal()  # a retransmission of snd_una is owed (fast retransmit, NewReno)
        # S Data's byte count and tests, computed in S Fin Acked (timing)
        self.sd_cut = Signal(32)
        self.sd_n = Signal(32)
        self.sd_old = Signal()
        self.sd_beyond = Signal()
        self.sd_in_order = Signal()
        self.sd_written = Signal()
        # the cut-through writer (cut_through): lookup and payload write while a frame arrives
        self.ct_phase = Signal(range(_CT_PHASES))
        self.ct_idle = Signal()
        m.d.comb += self.ct_idle.eq(self.ct_phase == _CT_IDLE)
        self.ct_started = Signal()  # a lookup was started for the frame coming in
        self.ct_abort = Signal()
        self.ct_hit = Signal()
        self.ct_sid = Signal(self.sid_bits)
        self.ct_ok = Signal()  # the payload of this frame is in the ring from rcv_nxt on
        # the state machine went on with the frame while the writer still copies its payload
        # (T Lookup); the states that could leave the checks' main path wait for it
        self.ct_tail = Signal()
        self.ct_take = Signal()  # T Lookup takes the lookup while the copy goes on
        self.ct_n = Signal(17)  # ... that many bytes of it
        self.ct_rcv_nxt = Signal(32)
        self.ct_irs = Signal(32)
        self.ct_free = Signal(32)
        self.ct_recv = Signal()  # the session's state takes data
        self.ct_w0 = Signal(26)
        self.ct_r = Signal(max(1, self.log_nb))
        self.ct_dmod = Signal(max(1, self.log_nb))
        self.ct_dw0 = Signal(26)
        self.ct_k = Signal(16)
        self.ct_i = Signal(16)
        self.ct_idx = Signal(16)
        self.ct_valid = Signal()
        self.ct_a = Signal(e.width)
        # the copy runs beside the lookup of the next frame (its session, bank and length)
        self.cw_busy = Signal()
        self.cw_sid = Signal(self.sid_bits)
        self.cw_bank = Signal()
        self.cw_n = Signal(17)
        self.ct_bank = Signal()  # the frame buffer bank of the frame the writer works on
        self.ct_stale = Signal()  # the session table changed after its lookup
        # the segment the state machine works on (from T Lookup to the TCB's write-back):
        # its session and what the writer did with it (f_ok: its payload is in the ring);
        # the writer's lookup of the next frame for the same session takes rcv_nxt and the
        # free space from here (forwarded), not from the TCB not yet written back
        self.seg_active = Signal()
        self.f_ok = Signal()
        self.f_go = Signal()  # its payload is being copied (f_ok once it is done)
        self.f_n = Signal(17)
        self.f_rcv_nxt = Signal(32)
        self.f_irs = Signal(32)
        self.f_free = Signal(32)
        self.f_recv = Signal()
        # the application mover (app_mover): a RECV's bytes from the receive ring to rx_data,
        # or a SEND's from tx_data into the send ring, on the mem_app port while the state
        # machine goes on; rx_read or tx_end moves when it is done
        self.ax_busy = Signal()
        self.ax_write = Signal()  # a SEND
        self.ax_primed = Signal()
        self.ax_fin = Signal()  # done, rx_read still to move (A Load)
        self.ax_cancel = Signal()  # the session was released meanwhile: nothing to move
        self.ax_sid = Signal(self.sid_bits)
        self.ax_base = Signal(max(1, e.buf_bits))
        self.ax_n = Signal(32)
        self.ax_i = Signal(32)
        self.ax_k = Signal(32)
        # ... and a SEND's running checksum (X Ring): the sum of the stream's bytes before the
        # word being written (``ax_q``, written beside it) and of its bytes before the transfer
        # (``ax_part``); the TCB keeps them for the word of tx_end (``tx_q``, ``tx_part``)
        self.ax_q = Signal(16)
        self.ax_part = Signal(16)
        self.ax_whole = Signal()  # the transfer ends at a word's end
        # a SEND's bytes are published as they are written (tx_end moves every
        # _PUBLISH_BYTES, A Load), so that segments leave while the rest comes in
        self.ax_prog = Signal()  # bytes written and not published yet (A Load)
        self.ax_pub = Signal(32)  # bytes of the transfer published
        self.ax_snap_n = Signal(32)  # bytes written at the last word boundary noted
        self.ax_snap_q = Signal(16)  # the running sum there
        self.a_q = Signal(16)  # A Load -> A Done: the running sums tx_end gets
        self.a_part = Signal(16)
        # the end of a RECV transfer and a command that can be taken go before a frame
        # waiting at a frame boundary (they are short; frames would hold them off for a burst)
        self.cmd_first = Signal()
        m.d.comb += self.cmd_first.eq(~self.scan_pending
                                      & (self.ax_fin | self.ax_prog
                                         | (e.cmd.valid & ~self.ax_busy)))
        # the writer is in the session table (the state machine's requests wait for it)
        self.ct_tbl = Signal()
        self.ct_write = Signal()  # the writer writes into a receive ring on mem this cycle
        m.d.comb += self.ct_tbl.eq((self.ct_phase == _CT_REQ) | (self.ct_phase == _CT_WAIT))

    # ----------------------------------------------------------------------------- helpers
    def rx_off(self, seq):
        """Byte offset of sequence number ``seq`` in the session's receive buffer."""
        return _sub(seq, self.t.irs + 1)[:self.e.buf_bits]

    def tx_off(self, seq):
        return _sub(seq, self.t.iss + 1)[:self.e.buf_bits]

    def word_addr(self, word, is_tx):
        """External memory address of word ``word`` (wrapping) of a session buffer."""
        return Cat(word[:self.e.buf_bits - self.log_nb], Const(is_tx, 1), self.sid)

    def lanes(self, k, start, n):
        """Byte enables of word ``k`` of a transfer of ``n`` bytes starting at lane ``start``
        of word 0."""
        m = self.m
        en = Signal(self.nb, name="lanes")
        for lane in range(self.nb):
            rel = Signal(range(-64, 1 << 25), name=f"rel{lane}")
            m.d.comb += [rel.eq(k * self.nb + lane - start),
                         en[lane].eq((rel >= 0) & (rel < n))]
        return en

    def copy_setup(self, sa, da, n):
        """Statements that prepare :meth:`copy_state` to move ``n`` bytes from source byte
        address ``sa`` to destination byte address ``da`` (realigned by a rotation)."""
        lb = self.log_nb
        dmod = da[:lb] if lb else Const(0, 1)
        base = (sa - dmod)[:26]
        return [self.cp_w0.eq(base >> lb), self.cp_r.eq(base[:lb] if lb else 0),
                self.cp_dmod.eq(dmod), self.cp_n.eq(n), self.cp_dw0.eq(da >> lb),
                self.cp_k.eq((dmod + n + self.nb - 1) >> lb), self.cp_i.eq(0),
                self.p_valid.eq(0)]

    def copy_state(self, name, read, src_data, write, done, stall=None):
        """A state that copies words: source word ``w0 + i`` is read (``read(addr)``: comb
        statements; ``src_data`` one cycle later), destination word ``k`` is bytes
        ``r .. r + nb - 1`` of source words ``k`` and ``k + 1`` (``write(addr, data, en)``);
        ``done()`` runs once all are written. One word a cycle, none in a cycle with
        ``stall``."""
        m = self.m
        with m.State(name):
            left = self.cp_i <= self.cp_k
            issue = left if stall is None else left & ~stall
            m.d.comb += read(self.cp_w0 + self.cp_i)
            m.d.sync += [self.p_valid.eq(issue), self.cp_idx.eq(self.cp_i)]
            with m.If(issue):
                m.d.sync += self.cp_i.eq(self.cp_i + 1)
            with m.If(self.p_valid):
                word = src_data
                m.d.sync += self.cp_a.eq(word)
                with m.If(self.cp_idx != 0):
                    k = (self.cp_idx - 1)[:20]
                    out = Signal(self.e.width, name="copy_out")
                    m.d.comb += out.eq((Cat(self.cp_a, word) >> (self.cp_r * 8))[:self.e.width])
                    write(self.cp_dw0 + k, out, self.lanes(k, self.cp_dmod, self.cp_n))
            with m.If(~left & ~self.p_valid):
                done()

    def transmit(self, seq, n, flags, kind, ret, ws=0):
        """Start building a segment (state "X Start"); ``ret`` is where to go after it."""
        return [self.x_seq.eq(seq), self.x_n.eq(n), self.x_flags.eq(flags),
                self.x_kind.eq(kind), self.x_ret.eq(ret), self.x_ws.eq(ws)]

    def idle_dispatch(self):
        """In the front end's Receive state with no frame coming in: other work."""
        m, e = self.m, self.e
        with m.If(self.scan_pending):
            m.d.comb += self.tcb_r.addr.eq(self.scan_sid)
            m.next = "M Load"
        with m.Elif(self.ax_fin | self.ax_prog):
            m.d.comb += self.tcb_r.addr.eq(self.ax_sid)
            m.next = "A Load"
        with m.Elif(e.cmd.valid & ~self.ax_busy):
            m.d.comb += e.cmd.ready.eq(1)
            p = e.cmd.payload
            m.d.sync += [self.c_op.eq(p.op), self.sid.eq(p.sid), self.c_ip.eq(p.ip),
                         self.c_port.eq(p.port), self.c_len.eq(p.length), self.r.eq(0)]
            m.d.comb += self.tcb_r.addr.eq(p.sid)
            m.next = "C Load"

    def cut_through_abort(self):
        """Statements for the front end's ``Act`` state when the frame is not a segment for
        the session engine: its payload stays where it was written (in free ring space, past
        ``rcv_nxt``, so nothing is lost); a lookup in flight finishes before the writer idles.
        The writer is stopped only when it works on this frame."""
        m, fe = self.m, self.fe
        with m.If(~self.ct_idle & (self.ct_bank == fe.bank_p)):
            m.d.sync += self.ct_abort.eq(1)

    def cut_through(self, in_receive, fsm_rd, fsm_tbl):
        """The cut-through writer, beside the state machine (elaborated after it, so that its
        use of the frame buffer's read port and of the memory port takes precedence).

        While a frame arrives, once its addresses and ports are in (beat 5 at 64 bits), the
        session is looked up and its receive fields read (from their own copy of the TCB
        memory, so the state machine keeps its port); if the segment starts at ``rcv_nxt`` of
        a session that takes data, its payload is copied from the frame buffer into the
        receive ring as the beats arrive (a beat is read once it has been written), a word a
        cycle through the realigning rotation. Only free ring space is written (``rcv_nxt``
        to ``rcv_nxt + free``), so a segment that fails a check later leaves no trace;
        ``rcv_nxt`` advances in ``S Data`` only, after every check passed, and the copy there
        is skipped. The state machine's ``T Lookup`` takes the writer's lookup result once it
        is there; while the copy still trails the last beat (by the lookup's latency, about 8
        cycles), the checks go on (``ct_tail``): ``S Check`` and ``S Ack`` wait for the copy
        only to leave their main path (a drop, a RST, a challenge ACK), ``S Data`` waits for
        its outcome (``ct_ok``).

        The frame it works on is the incoming one: it may be the next frame while the state
        machine still works on a segment, once that segment's session is known
        (``seg_active``), and its lookup runs while the copy of the segment before still
        trails (the copy has registers of its own, ``cw_*``; the next copy starts once it is
        done). When both are for the same session, the next one's ``rcv_nxt`` and free space
        are those the segment leaves if it passes (forwarded: ``f_rcv_nxt``, ``f_free``); if it
        does not, the next one is out of order in ``S Data`` and its bytes lie in free space.
        A segment the writer did not copy is written back before the next one's fields are
        read. A session table change after its lookup (an insert or a delete by
        the state machine) makes its result stale: ``T Lookup`` stops it and looks again.
        The state machine's states that use the frame buffer's read port or the memory port
        (``fsm_rd``) go first: the writer issues no read in them (``X Ring`` waits a cycle
        for a write still due); it starts no lookup while the state machine uses the session
        table (``fsm_tbl``), and the state machine's requests wait for its lookup.
        """
        m, e, fe = self.m, self.e, self.fe
        lb = self.log_nb
        ph = self.ct_phase
        hb = fe.hdr_banks

        def cbyte(i):
            return Mux(self.ct_bank, hb[1][8 * i:8 * i + 8], hb[0][8 * i:8 * i + 8])

        def cbe(offset, count):
            return Cat(*(cbyte(offset + k) for k in reversed(range(count))))

        c_seq = Signal(32)
        c_doff = Signal(8)
        c_plen = Signal(16)
        c_key = Signal(64)
        m.d.comb += [c_seq.eq(cbe(38, 4)), c_doff.eq(Cat(Const(0, 2), cbyte(46)[4:])),
                     c_plen.eq(cbe(16, 2) - 20 - c_doff),
                     c_key.eq(Cat(cbe(36, 2), cbe(34, 2), cbe(26, 4)))]
        with m.If(fe.accept & (fe.beat == 0)):
            m.d.sync += self.ct_started.eq(0)
        with m.If(in_receive):
            m.d.sync += self.seg_active.eq(0)
        req = self.table.req
        with m.If(req.valid & req.ready & (req.payload.op != OP_LOOKUP)):
            m.d.sync += self.ct_stale.eq(1)
        rhdr, rbe = fe.rhdr, fe.rbe
        plausible = (rbe(12, 2) == 0x0800) & (rhdr[23] == 6) & (rbe(30, 4) == e.ip)
        with m.Switch(ph):
            with m.Case(_CT_IDLE):
                m.d.sync += self.ct_abort.eq(0)
                # once bytes 0 to 39 are in (addresses, ports, sequence number), and the state
                # machine's segment (if any) has its session
                with m.If((fe.beat >= -(-40 // self.nb)) & ~self.ct_started & plausible
                          & ~(fe.accept & (fe.beat == 0)) & ~fsm_tbl
                          & (~fe.frame_busy | self.seg_active)):
                    m.d.sync += [ph.eq(_CT_REQ), self.ct_started.eq(1), self.ct_ok.eq(0),
                                 self.ct_bank.eq(fe.bank_r), self.ct_stale.eq(0)]
            with m.Case(_CT_REQ):
                m.d.comb += [req.valid.eq(1), req.payload.op.eq(OP_LOOKUP),
                             req.payload.key.eq(c_key)]
                with m.If(req.ready):
                    m.d.sync += ph.eq(_CT_WAIT)
            with m.Case(_CT_WAIT):
                resp = self.table.resp
                m.d.comb += resp.ready.eq(1)
                with m.If(resp.valid):
                    m.d.sync += [self.ct_hit.eq(resp.payload.hit),
                                 self.ct_sid.eq(resp.payload.sid)]
                    m.d.comb += self.ctt_r.addr.eq(resp.payload.sid)
                    with m.If(self.ct_abort):
                        m.d.sync += ph.eq(_CT_IDLE)
                    with m.Elif(resp.payload.hit):
                        m.d.sync += ph.eq(_CT_TCB)
                    with m.Else():
                        m.d.sync += ph.eq(_CT_DONE)
            with m.Case(_CT_TCB):
                d = self.ctt_r.data
                st = d.state
                ready = _sub(_sub(d.rcv_nxt, d.rx_read), d.peer_fin)
                fwd = self.seg_active & (self.sid == self.ct_sid)
                m.d.comb += self.ctt_r.addr.eq(self.ct_sid)  # (read again while it waits)
                with m.If(fwd & ~self.f_go):
                    pass  # the segment before was not copied here: its write-back first
                with m.Elif(fwd):
                    # the segment before, same session, not written back yet: forwarded
                    m.d.sync += [self.ct_rcv_nxt.eq(self.f_rcv_nxt), self.ct_irs.eq(self.f_irs),
                                 self.ct_free.eq(self.f_free), self.ct_recv.eq(self.f_recv),
                                 ph.eq(_CT_SETUP)]
                with m.Else():
                    m.d.sync += [self.ct_rcv_nxt.eq(d.rcv_nxt), self.ct_irs.eq(d.irs),
                                 self.ct_free.eq(self.buf - ready),
                                 self.ct_recv.eq((st == ESTAB) | (st == FIN_WAIT_1)
                                                 | (st == FIN_WAIT_2)),
                                 ph.eq(_CT_SETUP)]
            with m.Case(_CT_SETUP):
                # in order only, and no more than the free space after rcv_nxt
                n = _umin(c_plen, self.ct_free)
                da = _sub(self.ct_rcv_nxt, self.ct_irs + 1)[:e.buf_bits]
                sa = 34 + c_doff
                dmod = da[:lb] if lb else Const(0, 1)
                base = (sa - dmod)[:26]
                go = (self.ct_recv & (c_seq == self.ct_rcv_nxt) & (c_plen != 0)
                      & (c_plen <= self.ct_free) & ~self.ct_abort)
                m.d.sync += self.ct_n.eq(n)
                # (the data offset, byte 46, may still be on its way)
                hdr_in = (self.ct_bank != fe.bank_r) | (fe.beat > 46 // self.nb)
                with m.If(self.ct_abort):
                    m.d.sync += ph.eq(_CT_IDLE)
                with m.Elif(~hdr_in):
                    pass
                with m.Elif(go):
                    # to the copy once the one before is done
                    with m.If(~self.cw_busy):
                        m.d.sync += [self.ct_w0.eq(base >> lb),
                                     self.ct_r.eq(base[:lb] if lb else 0),
                                     self.ct_dmod.eq(dmod), self.cw_n.eq(n),
                                     self.ct_dw0.eq(da >> lb),
                                     self.ct_k.eq((dmod + n + self.nb - 1) >> lb),
                                     self.ct_i.eq(0), self.ct_valid.eq(0),
                                     self.cw_sid.eq(self.ct_sid), self.cw_bank.eq(self.ct_bank),
                                     self.cw_busy.eq(1), ph.eq(_CT_COPY)]
                with m.Else():
                    m.d.sync += ph.eq(_CT_DONE)
            with m.Case(_CT_COPY):
                # being copied (below): the state machine takes it (the lookup of the next
                # frame can start) or it is done first (_CT_DONE)
                with m.If(self.ct_take | self.ct_abort):
                    m.d.sync += ph.eq(_CT_IDLE)
            with m.Case(_CT_DONE):
                with m.If(self.ct_abort):
                    m.d.sync += ph.eq(_CT_IDLE)
        # the copy, beside the lookup of the next frame
        with m.If(self.cw_busy):
            base_c = Mux(self.cw_bank, fe.depth, 0)
            stop = (ph == _CT_COPY) & self.ct_abort
            word_in = self.ct_w0 + self.ct_i
            # a beat can be read once it is in the frame buffer
            avail = (self.cw_bank != fe.bank_r) | (word_in < fe.beat)
            issue = (self.ct_i <= self.ct_k) & avail & ~stop & ~fsm_rd
            with m.If(issue):
                m.d.comb += fe.rd.addr.eq(base_c + word_in)
                m.d.sync += self.ct_i.eq(self.ct_i + 1)
            m.d.sync += [self.ct_valid.eq(issue), self.ct_idx.eq(self.ct_i)]
            with m.If(self.ct_valid):
                word = fe.rd.data
                m.d.sync += self.ct_a.eq(word)
                with m.If((self.ct_idx != 0) & ~stop):
                    m.d.comb += self.ct_write.eq(1)
                    k = (self.ct_idx - 1)[:20]
                    out = Signal(e.width, name="ct_out")
                    m.d.comb += [
                        out.eq((Cat(self.ct_a, word) >> (self.ct_r * 8))[:e.width]),
                        e.mem.addr.eq(Cat((self.ct_dw0 + k)[:e.buf_bits - lb], Const(0, 1),
                                          self.cw_sid)),
                        e.mem.w_data.eq(out),
                        e.mem.w_en.eq(self.lanes(k, self.ct_dmod, self.cw_n))]
            with m.If(stop):
                m.d.sync += self.cw_busy.eq(0)
            with m.Elif((self.ct_i > self.ct_k) & ~self.ct_valid):
                m.d.sync += self.cw_busy.eq(0)
                with m.If((ph == _CT_COPY) & ~self.ct_take):
                    m.d.sync += [ph.eq(_CT_DONE), self.ct_ok.eq(1)]
                with m.Else():
                    # taken by the state machine (ct_tail): nothing else waits for it
                    m.d.sync += [self.ct_tail.eq(0), self.f_ok.eq(1)]

    def transmitter(self, mem_other):
        """The transmitter, beside the state machine: sends the segment handed over in ``X
        Hand`` a beat a cycle, the header from its registers and the payload read from the
        session's send ring as it leaves (on ``mem``, up to ``_TX_AHEAD`` words ahead, through
        the realigning rotation), while the state machine goes on (the next segment built, the
        next frame and the ACKs received, commands answered). Its checksum was summed ahead
        (``X Ring``). The port goes to the others first (``mem_other``: the cut-through
        writer's writes, ``S Copy``, ``X Ring``'s reads); a beat whose ring words are not in
        yet waits (valid low). ``X Ring`` starts its reads once the transmitter holds enough
        words ahead that they cost no beat (``st_room``). The next segment is taken in the
        cycle the last beat leaves. The front end's replies wait until it is free."""
        m, e = self.m, self.e
        lb = self.log_nb
        f, fn = self.st_f, self.st_fn
        # reads: ring words w0 + j, j = 0 .. k, up to _TX_AHEAD ahead
        want = (self.st_busy & self.st_pay & (self.st_j <= self.st_k)
                & (fn + self.st_infl < len(f)))
        issue = Signal()
        m.d.comb += issue.eq(want & ~mem_other)
        with m.If(issue):
            m.d.comb += e.mem.addr.eq(Cat((self.st_w0 + self.st_j)[:e.buf_bits - lb],
                                          Const(1, 1), self.st_sid))
            m.d.sync += self.st_j.eq(self.st_j + 1)
        m.d.sync += self.st_infl.eq(issue)
        # a payload beat leaves with two words in hand; reads and beats go one a cycle, so
        # the read-ahead grows only while the header leaves (or a beat waits): three reads
        # of X Ring need six words in hand or in flight, or a beat of the frame would wait.
        # X Ring waits for them while the header leaves (six beats at 64 bits), not after:
        # with a shorter header (wider words) the read-ahead cannot reach six then.
        m.d.comb += self.st_room.eq(~(self.st_busy & self.st_pay & (self.st_j <= self.st_k))
                                    | (fn + self.st_infl >= len(f) - 1)
                                    | (self.st_beat >= self.st_dw0))
        m.d.comb += self.xr_go.eq(~self.ct_write & self.st_room)
        pop = Signal()
        with m.If(self.st_busy):
            word = Signal(e.width, name="st_word")
            m.d.comb += word.eq((Cat(f[0], f[1]) >> (self.st_r * 8))[:e.width])
            for k in range(self.nb):
                for b in range(-(-_TX_HEADER // self.nb)):
                    idx = self.nb * b + k
                    if idx >= _TX_HEADER:
                        continue
                    with m.If((self.st_beat == b) & (idx < self.st_hlen)):
                        m.d.comb += word[8 * k:8 * k + 8].eq(self.sth[idx])
            is_last = self.st_beat == self.st_last
            in_pay = self.st_pay & (self.st_beat >= self.st_dw0)
            valid = ~in_pay | (fn >= 2)
            m.d.comb += [e.o.valid.eq(valid), e.o.payload.data.eq(word),
                         e.o.payload.keep.eq(Mux(is_last, self.st_keep, (1 << self.nb) - 1)),
                         e.o.payload.last.eq(is_last),
                         pop.eq(in_pay & valid & e.o.ready)]
            with m.If(valid & e.o.ready):
                m.d.sync += self.st_beat.eq(self.st_beat + 1)
                with m.If(is_last):
                    m.d.sync += self.st_busy.eq(0)
            # the next segment is taken in the cycle the last beat leaves
            m.d.comb += self.st_free.eq(valid & e.o.ready & is_last)
            # the words read: in at the tail, out at the head a payload beat at a time
            at = Signal(range(-1, len(f) + 1))
            m.d.comb += at.eq(fn - pop)
            for k in range(len(f)):
                with m.If(self.st_infl & (at == k)):
                    m.d.sync += f[k].eq(e.mem.r_data)
                with m.Elif(pop):
                    m.d.sync += f[k].eq(f[k + 1] if k + 1 < len(f) else 0)
            m.d.sync += fn.eq(fn - pop + self.st_infl)
        with m.Else():
            m.d.comb += self.st_free.eq(1)
        with m.If(self.st_load):
            # the segment X Hand hands over (after the above: these assignments win)
            m.d.sync += [self.sth_bits.eq(self.txh_bits), self.st_hlen.eq(self.x_hlen),
                         self.st_last.eq(self.o_last), self.st_keep.eq(self.o_keep),
                         self.st_beat.eq(0), self.st_busy.eq(1), fn.eq(0),
                         self.st_sid.eq(self.sid), self.st_pay.eq(self.x_n != 0),
                         self.st_w0.eq(self.cp_w0), self.st_r.eq(self.cp_r),
                         self.st_dw0.eq(self.cp_dw0), self.st_k.eq(self.cp_k),
                         self.st_j.eq(0)]

    def app_mover(self):
        """The application mover, beside the state machine: sends the bytes of a ``RECV``
        (handed over in ``C Rx Prime``) from the receive ring on ``rx_data``, or writes those
        of a ``SEND`` (``C Tx Prime``) from ``tx_data`` into the send ring, a word a cycle on
        the ``mem_app`` port, while the state machine takes frames and commands and builds
        segments (the transmitter reads them on the other port). When it is done, ``A Load``
        moves the session's ``rx_read`` or ``tx_end``.

        A ``SEND``'s words carry their running checksum: the 16-bit one's complement sum
        (RFC 1071) of the stream's bytes before the word, byte pairs at even ring offsets,
        written beside the word (``w_sum``); the TCB keeps it for the word of ``tx_end`` with
        the sum of that word's bytes before ``tx_end`` (``tx_q``, ``tx_part``). A word whose
        bytes the transmitter has still to read is not written (bytes an ACK freed while
        their segment leaves)."""
        m, e = self.m, self.e
        lb = self.log_nb
        rx, tx = e.rx_data, e.tx_data
        more = self.ax_i < self.ax_k

        def addr(k, is_tx):
            return Cat(((self.ax_base >> lb) + k)[:e.buf_bits - lb], Const(is_tx, 1),
                       self.ax_sid)

        with m.If(self.ax_busy & self.ax_write):
            en = Signal(self.nb, name="ax_en")
            m.d.comb += en.eq(tx.payload.keep & self.lanes(self.ax_i, self.ax_base[:lb],
                                                           self.ax_n))
            # the running sum: the word's own (its bytes before the transfer, ax_part, and
            # those it gets now) is added once the word is complete
            total = _pair_sum(m, tx.payload.data, en, self.nb, "ax_pairs") + self.ax_part
            whole = (self.ax_i + 1 < self.ax_k) | self.ax_whole
            # the ring word's bytes still to send (the transmitter reads them) are not
            # overwritten: bytes an ACK freed while their segment leaves
            ahead = ((self.ax_base >> lb) + self.ax_i - (self.st_w0 + self.st_j))[
                :e.buf_bits - lb]
            hold = (self.st_busy & self.st_pay & (self.st_sid == self.ax_sid)
                    & (self.st_j <= self.st_k) & (ahead <= self.st_k - self.st_j))
            go = tx.valid & more & ~hold
            m.d.comb += [tx.ready.eq(more & ~hold), e.mem_app.addr.eq(addr(self.ax_i, 1)),
                         e.mem_app.w_data.eq(tx.payload.data),
                         e.mem_app.w_en.eq(Mux(go, en, 0)),
                         e.mem_app.w_sum.eq(self.ax_q), e.mem_app.w_sum_en.eq(go)]
            q_next = _fold16(m, self.ax_q + total, "ax_q_next")
            chunk_bits = (max(1, _PUBLISH_BYTES // self.nb) - 1).bit_length()
            with m.If(go):
                m.d.sync += self.ax_i.eq(self.ax_i + 1)
                with m.If(whole):
                    m.d.sync += [self.ax_q.eq(q_next), self.ax_part.eq(0)]
                with m.Else():
                    m.d.sync += self.ax_part.eq(_fold16(m, total, "ax_part_next"))
                # every _PUBLISH_BYTES, before the last word: the bytes so far, for A Load
                with m.If(((self.ax_i + 1)[:chunk_bits] == 0) & (self.ax_i + 1 < self.ax_k)):
                    m.d.sync += [self.ax_prog.eq(1), self.ax_snap_q.eq(q_next),
                                 self.ax_snap_n.eq(((self.ax_i + 1) << lb)
                                                   - self.ax_base[:lb])]
            with m.If(~more):
                m.d.sync += [self.ax_busy.eq(0), self.ax_fin.eq(1), self.ax_prog.eq(0)]
        with m.Elif(self.ax_busy):
            with m.If(~self.ax_primed):
                m.d.comb += e.mem_app.addr.eq(addr(self.ax_i, 0))
                m.d.sync += self.ax_primed.eq(1)
            with m.Else():
                m.d.comb += [rx.valid.eq(more), rx.payload.data.eq(e.mem_app.r_data),
                             rx.payload.keep.eq(self.lanes(self.ax_i, self.ax_base[:lb],
                                                           self.ax_n)),
                             rx.payload.last.eq(self.ax_i + 1 == self.ax_k),
                             e.mem_app.addr.eq(addr(self.ax_i + Mux(rx.ready, 1, 0), 0))]
                with m.If(more & rx.ready):
                    m.d.sync += self.ax_i.eq(self.ax_i + 1)
                with m.If(~more):
                    m.d.sync += [self.ax_busy.eq(0), self.ax_fin.eq(1)]

    def arp_learn(self, ip, mac):
        """Statements that put ``ip -> mac`` into the ARP cache (replace or round robin)."""
        m = self.m
        hit = Signal()
        for k in range(_ARP_SLOTS):
            with m.If(self.a_valid[k] & (self.a_ip[k] == ip)):
                m.d.comb += hit.eq(1)
                m.d.sync += self.a_mac[k].eq(mac)
        with m.If(~hit):
            m.d.sync += [self.a_valid[self.a_next].eq(1), self.a_ip[self.a_next].eq(ip),
                         self.a_mac[self.a_next].eq(mac), self.a_next.eq(self.a_next + 1)]
        with m.If(self.arp_wait):
            m.d.sync += [self.scan_pending.eq(1), self.arp_wait.eq(0)]

    # ------------------------------------------------------------------------------ states
    def states(self):  # noqa: C901 (one state machine)
        m, e, fe, t = self.m, self.e, self.fe, self.t
        N = e.sessions
        mss_cfg = e.mss
        ret_output, ret_store, ret_release = 0, 1, 2
        sdrop = self.count

        def ack_now():
            return t.ack_now.eq(1)

        def note(name):
            return self.notes[_N[name]].eq(1)

        # ------------------------------------------------------------ segment: session lookup
        with m.State("T Lookup"):
            # the cut-through writer looked the session up while the frame came in (and
            # wrote its payload); without it (not started), the lookup is done here
            m.d.sync += self.notes.eq(0)
            mine = ~self.ct_idle & (self.ct_bank == fe.bank_p)  # the writer works on it
            # what the writer did with this segment (f_ok once its copy is done)
            took = [self.f_ok.eq(0), self.f_go.eq(0), self.f_n.eq(self.ct_n),
                    self.f_rcv_nxt.eq(self.ct_rcv_nxt + self.ct_n), self.f_irs.eq(self.ct_irs),
                    self.f_free.eq(self.ct_free - self.ct_n), self.f_recv.eq(self.ct_recv)]
            with m.If(mine & self.ct_stale):
                # the session table changed after the writer's lookup: stop it, look again
                m.d.sync += self.ct_abort.eq(1)
            with m.Elif(mine & (self.ct_phase == _CT_COPY)):
                # the payload is still being copied (the copy trails the last beat by the
                # lookup's latency): the checks go on meanwhile (ct_tail), up to the first
                # state that leaves their main path or needs the copy's outcome
                m.d.sync += [self.sid.eq(self.ct_sid), self.ct_tail.eq(1), self.seg_active.eq(1),
                             *took, self.f_go.eq(1)]
                m.d.comb += [self.tcb_r.addr.eq(self.ct_sid), self.ct_take.eq(1)]
                m.next = "T Load"
            with m.Elif(mine & (self.ct_phase == _CT_DONE)):
                m.d.sync += [self.ct_phase.eq(_CT_IDLE), *took, self.f_ok.eq(self.ct_ok),
                             self.f_go.eq(self.ct_ok)]
                with m.If(self.ct_hit):
                    m.d.sync += [self.sid.eq(self.ct_sid), self.seg_active.eq(1)]
                    m.d.comb += self.tcb_r.addr.eq(self.ct_sid)
                    m.next = "T Load"
                with m.Else():
                    m.next = "L Listen"
            with m.Elif(~mine):
                m.d.sync += [self.f_ok.eq(0), self.f_go.eq(0), self.f_n.eq(0)]
                m.next = "T Lookup Req"
        with m.State("T Lookup Req"):
            req = self.table.req
            with m.If(~self.ct_tbl):
                m.d.comb += [req.valid.eq(1), req.payload.op.eq(OP_LOOKUP),
                             req.payload.key.eq(self.key)]
                with m.If(req.ready):
                    m.next = "T Lookup Wait"
        with m.State("T Lookup Wait"):
            resp = self.table.resp
            m.d.comb += resp.ready.eq(1)
            with m.If(resp.valid):
                with m.If(resp.payload.hit):
                    m.d.sync += [self.sid.eq(resp.payload.sid), self.seg_active.eq(1)]
                    m.d.comb += self.tcb_r.addr.eq(resp.payload.sid)
                    m.next = "T Load"
                with m.Else():
                    m.next = "L Listen"
        with m.State("T Load"):
            m.d.sync += [t.eq(self.tcb_r.data), self.old_state.eq(self.tcb_r.data.state),
                         self.old_passive.eq(self.tcb_r.data.passive)]
            m.next = "S Check"

        # ----------------------------------------------------------- RST reply from the header
        def reset_reply(reason_stmt):
            """Count, then answer with the RST of RFC 9293 §3.10.7.1 built from the header."""
            stmts = [reason_stmt] if reason_stmt is not None else []
            with m.If(~self.f_rst):
                m.d.sync += [fe.ip_id.eq(fe.ip_id + 1), fe.rst_seq.eq(fe.rst_seq_c),
                             fe.rst_ack.eq(fe.rst_ack_c), fe.rst_flags.eq(fe.rst_flags_c)]
                m.next = "Build Reset"
            with m.Else():
                m.next = "Receive"
            m.d.sync += stmts

        # ------------------------------------------------------- LISTEN (RFC 9293 §3.10.7.2)
        with m.State("L Listen"):
            no_session = fe.drops[fe.R["no_session"]]
            with m.If(~self.listening | self.f_rst | self.f_ack | ~self.f_syn):
                m.d.sync += no_session.eq(no_session + 1)
                with m.If(self.listening & ~self.f_ack):
                    m.next = "Receive"  # RST or no SYN: dropped
                with m.Else():
                    reset_reply(None)
            with m.Elif(self.half_open >= e.max_half_open):
                m.d.sync += sdrop("half_open_full")
                m.next = "Receive"
            with m.Else():
                m.next = "L Insert"
        with m.State("L Insert"):
            req = self.table.req
            with m.If(~self.ct_tbl):
                m.d.comb += [req.valid.eq(1), req.payload.op.eq(OP_INSERT),
                             req.payload.key.eq(self.key)]
                with m.If(req.ready):
                    m.next = "L Insert Wait"
        with m.State("L Insert Wait"):
            resp = self.table.resp
            m.d.comb += resp.ready.eq(1)
            with m.If(resp.valid):
                with m.If(resp.payload.full):
                    m.d.sync += sdrop("session_table_full")
                    m.next = "Receive"
                with m.Else():
                    isn = (Const(e.fixed_isn, 32) if e.fixed_isn is not None
                           else (_toeplitz(self.key) + (self.now << 8))[:32])
                    m.d.sync += [self.sid.eq(resp.payload.sid), t.eq(0), self.seg_active.eq(1),
                                 self.old_state.eq(CLOSED), self.old_passive.eq(0),
                                 t.state.eq(SYN_RCVD), t.passive.eq(1), t.mac_ok.eq(1),
                                 t.peer_mac.eq(self.src_mac), t.peer_ip.eq(self.src_ip),
                                 t.peer_port.eq(self.src_port), t.local_port.eq(self.dst_port),
                                 t.iss.eq(isn), t.snd_una.eq(isn), t.snd_nxt.eq(isn + 1),
                                 t.snd_max.eq(isn + 1), t.tx_end.eq(isn + 1),
                                 t.recover.eq(isn), t.ssthresh.eq(1 << 30),
                                 self.p_ret.eq(0)]
                    m.next = "P Options"
        # ------------------------------------------------------------ SYN option parsing
        with m.State("P Options"):
            oi = self.opts.i
            opt_bytes = [fe.hdr[54 + k] for k in range(MAX_OPTION_BYTES)]
            m.d.comb += [oi.valid.eq(1), oi.payload.options.eq(Cat(*opt_bytes)),
                         oi.payload.length.eq(self.doff - 20)]
            with m.If(oi.ready):
                m.next = "P Wait"
        with m.State("P Wait"):
            o = self.opts.o
            m.d.comb += o.ready.eq(1)
            with m.If(o.valid):
                # RFC 9293 §3.7.1 (536 without the option), the model's floor of 64
                mss = Mux(o.payload.mss_present, o.payload.mss, 536)
                mss = _umax(_umin(mss, mss_cfg), 64)
                shift = Mux(o.payload.ws_present, self.rcv_wscale, 0)
                seq1 = self.seg_seq + 1
                m.d.sync += [t.irs.eq(self.seg_seq), t.rcv_nxt.eq(seq1), t.rx_read.eq(seq1),
                             t.snd_mss.eq(mss), t.ws_ok.eq(o.payload.ws_present),
                             t.snd_wscale.eq(Mux(o.payload.ws_present, o.payload.ws, 0)),
                             t.rcv_wscale.eq(shift),
                             t.rcv_adv.eq(seq1 + _umin(self.buf, Const(0xFFFF, 32) << shift))]
                m.next = "P Window"
        with m.State("P Window"):
            # RFC 6928 §2: min(10 * MSS, max(2 * MSS, 14600)), as Linux's default
            iw = Mux(t.snd_mss > 7300, 2 * t.snd_mss,
                     Mux(t.snd_mss > 1460, 14600, 10 * t.snd_mss))
            m.d.sync += t.cwnd.eq(iw)
            with m.If(self.p_ret == 0):
                # passive open: SYN-ACK, retransmission timer (RFC 6298 §2.1)
                m.d.sync += [t.rto.eq(e.rto_initial), t.rtt_on.eq(1),
                             t.rtt_seq.eq(t.snd_nxt), t.rtt_time.eq(self.now),
                             t.rtx_on.eq(1), t.rtx_at.eq(self.now + e.rto_initial)]
                with m.If(self.plen != 0):
                    m.d.sync += sdrop("syn_data")
                m.d.sync += self.transmit(t.iss, 0, SYN | ACK, 2, ret_store, t.ws_ok)
                m.next = "X Start"
            with m.Else():
                m.next = "SS Accept"

        # --------------------------------------------------- SYN-SENT (RFC 9293 §3.10.7.3)
        with m.State("SS Check"):
            bad_ack = self.f_ack & (_le(self.seg_ack, t.iss) | _lt(t.snd_max, self.seg_ack))
            with m.If(bad_ack):
                reset_reply(sdrop("bad_ack"))
            with m.Elif(self.f_rst):
                with m.If(self.f_ack):
                    m.d.sync += note("reset_refused")
                    m.next = "Release"
                with m.Else():
                    m.d.sync += sdrop("bad_rst")
                    m.next = "Receive"
            with m.Elif(~self.f_syn):
                m.d.sync += sdrop("no_syn")
                m.next = "Receive"
            with m.Else():
                m.d.sync += [self.p_ret.eq(1), t.peer_mac.eq(self.src_mac), t.mac_ok.eq(1)]
                m.next = "P Options"
        with m.State("SS Accept"):
            with m.If(self.f_ack):
                m.d.sync += [t.snd_una.eq(self.seg_ack), ack_now()]
                m.next = "S Established"
            with m.Else():
                # simultaneous open (RFC 9293 §3.5 figure 8)
                m.d.sync += [t.state.eq(SYN_RCVD),
                             self.transmit(t.iss, 0, SYN | ACK, 2, ret_store, t.ws_ok)]
                m.next = "X Start"

        # ---------------------------------------------- synchronized states (§3.10.7.4)
        with m.State("S Check"):
            acceptable = Signal()
            wnd = self.rcv_wnd
            off = _sub(self.seg_seq, t.rcv_nxt)
            last_off = _sub(self.seg_seq + self.seg_len - 1, t.rcv_nxt)
            with m.If(self.seg_len == 0):
                m.d.comb += acceptable.eq(off <= wnd)
            with m.Elif(wnd == 0):
                m.d.comb += acceptable.eq(self.seg_seq == t.rcv_nxt)
            with m.Else():
                m.d.comb += acceptable.eq((off < wnd) | (last_off < wnd))
            # with the payload still being copied (ct_tail), only the main path goes on
            main = (acceptable & ~self.f_rst & ~self.f_syn & self.f_ack
                    & ((t.state == ESTAB) | (t.state == FIN_WAIT_1) | (t.state == FIN_WAIT_2)))
            with m.If(~self.ct_tail | main):
                with m.If(t.state == SYN_SENT):
                    m.next = "SS Check"
                with m.Elif((t.state == SYN_RCVD) & self.f_syn & ~self.f_ack
                            & (self.seg_seq == t.irs)):
                    m.d.sync += [t.rtt_on.eq(0), sdrop("retransmits"),
                                 self.transmit(t.iss, 0, SYN | ACK, 2, ret_store, t.ws_ok)]
                    m.next = "X Start"
                with m.Elif(~acceptable):
                    with m.If((t.state == TIME_WAIT) & self.f_fin):
                        m.d.sync += t.rtx_at.eq(self.now + e.time_wait)
                    m.d.sync += sdrop("out_of_window")
                    with m.If(~self.f_rst):
                        m.d.sync += ack_now()
                        m.next = "Notify"
                    with m.Else():
                        m.next = "Store"
                with m.Elif(self.f_rst):
                    with m.If(self.seg_seq != t.rcv_nxt):
                        m.d.sync += [ack_now(), sdrop("challenge_acks")]
                        m.next = "Notify"
                    with m.Else():
                        with m.If(t.state == TIME_WAIT):
                            # the application saw the close already: the session is done (the
                            # model tells it nothing here, and the number would seem in use)
                            m.d.sync += note("closed_done")
                        with m.Elif(t.state == SYN_RCVD):
                            # RFC 9293 §3.10.7.4: a passive open goes back to listening unseen;
                            # after an active (simultaneous) open the connection was refused
                            with m.If(~t.passive):
                                m.d.sync += note("reset_refused")
                        with m.Else():
                            m.d.sync += note("reset_rst")
                        m.next = "Release"
                with m.Elif(self.f_syn):
                    m.d.sync += [ack_now(), sdrop("challenge_acks")]
                    m.next = "Notify"
                with m.Elif(~self.f_ack):
                    m.d.sync += sdrop("no_ack")
                    m.next = "Store"
                with m.Elif(t.state == SYN_RCVD):
                    with m.If(~(_lt(t.snd_una, self.seg_ack) & _le(self.seg_ack, t.snd_max))):
                        reset_reply(sdrop("bad_ack"))
                    with m.Else():
                        m.next = "S Established"
                with m.Else():
                    m.next = "S Ack"
        with m.State("S Established"):
            fin_q = t.fin_queued & (t.state == SYN_RCVD)
            snd_wnd = Mux(self.f_syn, self.seg_wnd, self.seg_wnd << t.snd_wscale)
            m.d.sync += [t.state.eq(Mux(fin_q, FIN_WAIT_1, ESTAB)), t.snd_wnd.eq(snd_wnd),
                         t.max_snd_wnd.eq(_umax(t.max_snd_wnd, snd_wnd)),
                         t.snd_wl1.eq(self.seg_seq), t.snd_wl2.eq(self.seg_ack),
                         t.retries.eq(0), t.rtx_on.eq(0), note("connected")]
            with m.If(t.rtt_on & _le(t.rtt_seq, self.seg_ack)):
                m.d.sync += [self.m_r.eq(self.now - t.rtt_time), t.rtt_on.eq(0),
                             self.rtt_ret.eq(0)]
                m.next = "R Sample"
            with m.Else():
                rto = _umax(e.rto_min, _umin(t.rto, e.rto_max))
                with m.If(t.retries != 0):
                    # RFC 6298 §5.7: the SYN or SYN-ACK timed out and no sample came from the
                    # handshake: the RTO is at least 3 s when data transmission begins
                    m.d.sync += t.rto.eq(_umin(_umax(rto, e.rto_fallback), e.rto_max))
                with m.Else():
                    m.d.sync += t.rto.eq(rto)
                m.next = "S Est Done"
        with m.State("S Est Done"):
            # after SYN-SENT: ACK the SYN-ACK; after SYN-RECEIVED: the ACK goes on
            with m.If(self.old_state == SYN_SENT):
                m.next = "Notify"
            with m.Else():
                m.next = "S Ack"

        # RTT sample (RFC 6298 §2.2, §2.3), then back to where it was taken
        with m.State("R Sample"):
            r = self.m_r
            diff = Mux(t.srtt > r, t.srtt - r, r - t.srtt)
            with m.If(~t.srtt_ok):
                m.d.sync += [t.srtt.eq(r), t.rttvar.eq(r >> 1), t.srtt_ok.eq(1)]
            with m.Else():
                m.d.sync += [t.rttvar.eq((3 * t.rttvar + diff) >> 2),
                             t.srtt.eq((7 * t.srtt + r) >> 3)]
            m.next = "R Rto"
        with m.State("R Rto"):
            rto = t.srtt + _umax(1, t.rttvar << 2)
            m.d.sync += t.rto.eq(_umax(e.rto_min, _umin(rto, e.rto_max)))
            with m.If(self.rtt_ret):
                m.next = "S Cc"
            with m.Else():
                m.next = "S Est Done"

        # fifth check: ACK (RFC 9293 §3.10.7.4, RFC 5961 §5)
        with m.State("S Ack"):
            ack = self.seg_ack
            window = (self.seg_wnd << t.snd_wscale)[:32]
            unsent = _lt(t.snd_max, ack)
            too_old = _lt(ack, _sub(t.snd_una, _umax(t.max_snd_wnd, 1)))
            # these two leave the main path: not while the payload is copied
            with m.If(~self.ct_tail | ~(unsent | too_old)):
                with m.If(unsent):
                    m.d.sync += [sdrop("ack_unsent"), ack_now()]
                    m.next = "Notify"
                with m.Elif(too_old):
                    m.d.sync += [sdrop("ack_too_old"), sdrop("challenge_acks"), ack_now()]
                    m.next = "Notify"
                with m.Else():
                    m.d.sync += self.win_changed.eq(window != t.snd_wnd)
                    with m.If(_lt(t.snd_wl1, self.seg_seq)
                              | ((t.snd_wl1 == self.seg_seq) & _le(t.snd_wl2, ack))):
                        m.d.sync += [t.snd_wnd.eq(window),
                                     t.max_snd_wnd.eq(_umax(t.max_snd_wnd, window)),
                                     t.snd_wl1.eq(self.seg_seq), t.snd_wl2.eq(ack)]
                    m.d.sync += self.acked.eq(Mux(_lt(t.snd_una, ack), _sub(ack, t.snd_una), 0))
                    m.next = "S Ack2"
        with m.State("S Ack2"):
            ack = self.seg_ack
            with m.If(self.acked != 0):
                data_acked = self.acked - (t.snd_una == t.iss)  # the SYN is no data
                m.d.sync += [t.snd_una.eq(ack), t.retries.eq(0),
                             self.acked.eq(data_acked)]
                with m.If(_lt(t.snd_nxt, ack)):
                    m.d.sync += t.snd_nxt.eq(ack)
                with m.If(t.send_blocked & (data_acked != 0)):
                    m.d.sync += [t.send_blocked.eq(0), note("space")]
                # the RTT sample's test here, not a state later (nothing it reads changes)
                with m.If(t.rtt_on & _le(t.rtt_seq, ack)):
                    m.d.sync += [self.m_r.eq(self.now - t.rtt_time), t.rtt_on.eq(0),
                                 self.rtt_ret.eq(1)]
                    m.next = "R Sample"
                with m.Else():
                    m.next = "S Cc"
            with m.Elif((ack == t.snd_una) & (self.plen == 0) & ~self.f_syn & ~self.f_fin
                        & ~self.win_changed & (t.snd_max != t.snd_una)):
                m.next = "S Dup"
            with m.Else():
                m.next = "S Fin Acked"
        with m.State("S Cc"):
            # congestion control: RFC 5681 §3.1 (congestion avoidance by byte counting,
            # RFC 3465), RFC 6582 §3.2 steps 3 and 4
            mss = t.snd_mss
            acked = self.acked
            flight = _sub(t.snd_max, t.snd_una)
            full = Signal()
            m.d.comb += full.eq(_le(t.recover, self.seg_ack))
            with m.If(t.in_recovery):
                with m.If(full):
                    m.d.sync += [t.cwnd.eq(_umin(t.ssthresh, _umax(flight, mss) + mss)),
                                 t.in_recovery.eq(0), t.dupacks.eq(0)]
                with m.Else():
                    cut = Mux(t.cwnd > acked + mss, t.cwnd - acked, mss)
                    m.d.sync += [self.fast.eq(1),
                                 t.cwnd.eq(cut + Mux(acked >= mss, mss, 0)),
                                 t.rtx_on.eq(1), t.rtx_at.eq(self.now + t.rto)]
            with m.Else():
                m.d.sync += t.dupacks.eq(0)
                with m.If(acked != 0):
                    with m.If(t.cwnd < t.ssthresh):
                        m.d.sync += t.cwnd.eq(t.cwnd + _umin(acked, mss))
                    with m.Elif(t.ca_acc + acked >= t.cwnd):
                        m.d.sync += [t.cwnd.eq(t.cwnd + mss),
                                     t.ca_acc.eq(t.ca_acc + acked - t.cwnd)]
                    with m.Else():
                        m.d.sync += t.ca_acc.eq(t.ca_acc + acked)
            # retransmission timer (RFC 6298 §5.2, §5.3)
            with m.If(t.snd_una == t.snd_max):
                m.d.sync += [t.rtx_on.eq(0), t.probing.eq(0)]
            with m.Elif(~t.in_recovery | full):
                m.d.sync += [t.rtx_on.eq(1), t.rtx_at.eq(self.now + t.rto), t.probing.eq(0)]
            m.next = "S Fin Acked"
        with m.State("S Dup"):
            mss = t.snd_mss
            flight = _sub(t.snd_max, t.snd_una)
            m.d.sync += t.dupacks.eq(Mux(t.dupacks == 3, 3, t.dupacks + 1))
            with m.If(t.in_recovery):
                m.d.sync += t.cwnd.eq(t.cwnd + mss)
            with m.Elif((t.dupacks == 2) & _le(t.recover, t.snd_una)):
                # fast retransmit (RFC 6582 §3.2 step 2, RFC 5681 §3.2)
                ssthresh = _umax(flight >> 1, 2 * mss)
                m.d.sync += [t.ssthresh.eq(ssthresh), t.recover.eq(t.snd_max),
                             t.in_recovery.eq(1), self.fast.eq(1), sdrop("fast_retransmits"),
                             t.cwnd.eq(ssthresh + 3 * mss), t.rtx_on.eq(1),
                             t.rtx_at.eq(self.now + t.rto)]
            m.next = "S Fin Acked"
        with m.State("S Fin Acked"):
            # S Data's arithmetic, a state ahead (rcv_nxt and rcv_adv do not change here)
            seq = self.seg_seq
            plen = self.plen
            cut = Signal(32)
            m.d.comb += cut.eq(Mux(_lt(seq, t.rcv_nxt), _sub(t.rcv_nxt, seq), 0))
            off = (seq + cut)[:32]
            room = Signal(32)
            m.d.comb += room.eq(Mux(_lt(off, t.rcv_adv), _sub(t.rcv_adv, off), 0))
            rest = Signal(32)
            m.d.comb += rest.eq(plen - cut)
            n = Signal(32)
            m.d.comb += n.eq(_umin(rest, room))
            m.d.sync += [self.sd_cut.eq(cut), self.sd_n.eq(n), self.sd_old.eq(cut >= plen),
                         self.sd_beyond.eq((rest > room) & (room == 0)),
                         self.sd_in_order.eq(off == t.rcv_nxt),
                         self.sd_written.eq((cut == 0) & (n <= self.f_n))]
            with m.If((t.snd_wnd != 0) & t.probing):
                m.d.sync += [t.probing.eq(0), t.rtx_on.eq(0)]
            fin_acked = t.fin_queued & (t.snd_una == t.tx_end + 1) & (t.snd_una == t.snd_max)
            with m.If(fin_acked & (t.state == FIN_WAIT_1)):
                m.d.sync += t.state.eq(FIN_WAIT_2)
                m.next = "S Data"
            with m.Elif(fin_acked & (t.state == CLOSING)):
                m.d.sync += [t.state.eq(TIME_WAIT), t.rtx_on.eq(1), t.probing.eq(0),
                             t.rtx_at.eq(self.now + e.time_wait)]
                m.next = "S Data"
            with m.Elif(fin_acked & (t.state == LAST_ACK)):
                with m.If(~self.ct_tail):  # (not in a state that takes data: no copy)
                    m.d.sync += note("closed_done")
                    m.next = "Release"
            with m.Else():
                # a segment without text or FIN (a pure ACK): S Data and S Fin would do
                # nothing, and Notify nothing without notifications (none is set here)
                bare = (self.plen == 0) & ~self.f_fin & ~self.ct_tail
                with m.If(bare & (self.notes == 0)):
                    m.next = "O Decide"
                with m.Elif(bare):
                    m.next = "Notify"
                with m.Else():
                    m.next = "S Data"

        def rx_write(addr, word, en):
            m.d.comb += [e.mem.addr.eq(self.word_addr(addr, 0)), e.mem.w_data.eq(word),
                         e.mem.w_en.eq(en)]

        def rx_done(count=None):
            count = self.c_n if count is None else count
            m.d.sync += [t.rcv_nxt.eq(t.rcv_nxt + count), note("data")]
            with m.If(t.unacked):
                m.d.sync += ack_now()
            with m.Else():
                m.d.sync += t.unacked.eq(1)
                with m.If(~t.delack_on):
                    m.d.sync += [t.delack_on.eq(1), t.delack_at.eq(self.now + e.delack)]
            m.next = "S Fin"

        # seventh: segment text, in order only (out-of-order segments are dropped)
        with m.State("S Data"):
            plen = self.plen
            cut = self.sd_cut
            n = self.sd_n
            with m.If(~self.ct_tail):  # the copy's outcome (ct_ok) first
                with m.If((plen != 0) & self.receiving):
                    with m.If(self.sd_old):
                        m.d.sync += ack_now()
                        m.next = "S Fin"
                    with m.Else():
                        with m.If(self.sd_beyond):
                            m.d.sync += sdrop("beyond_window")
                        with m.If(n == 0):
                            m.d.sync += ack_now()
                            m.next = "S Fin"
                        with m.Elif(self.sd_in_order & self.sd_written & self.f_ok):
                            # written into the ring while it arrived (cut_through)
                            rx_done(n)
                        with m.Elif(self.sd_in_order):
                            m.d.sync += [self.c_n.eq(n),
                                         *self.copy_setup(34 + self.doff + cut,
                                                          self.rx_off(t.rcv_nxt), n)]
                            m.next = "S Copy"
                        with m.Else():
                            m.d.sync += [sdrop("ooo_full"), ack_now()]
                            m.next = "S Fin"
                with m.Elif(plen != 0):
                    m.d.sync += sdrop("data_after_fin")
                    m.next = "S Fin"
                with m.Else():
                    m.next = "S Fin"
        self.copy_state("S Copy", lambda a: fe.rd.addr.eq(fe.base_p + a), fe.rd.data, rx_write,
                        rx_done)
        # eighth: FIN
        with m.State("S Fin"):
            fin_at = (self.seg_seq + self.plen)[:32]
            with m.If(self.f_fin):
                with m.If((fin_at == t.rcv_nxt) & ~t.peer_fin):
                    m.d.sync += [t.rcv_nxt.eq(t.rcv_nxt + 1), t.peer_fin.eq(1), ack_now(),
                                 note("closed_peer")]
                    with m.If((t.state == SYN_RCVD) | (t.state == ESTAB)):
                        m.d.sync += t.state.eq(CLOSE_WAIT)
                    with m.Elif(t.state == FIN_WAIT_1):
                        m.d.sync += t.state.eq(CLOSING)
                    with m.Elif(t.state == FIN_WAIT_2):
                        m.d.sync += [t.state.eq(TIME_WAIT), t.rtx_on.eq(1), t.probing.eq(0),
                                     t.rtx_at.eq(self.now + e.time_wait)]
                with m.Elif(t.state == TIME_WAIT):
                    m.d.sync += [t.rtx_at.eq(self.now + e.time_wait), ack_now()]
                with m.Elif(_lt(t.rcv_nxt, fin_at) & self.receiving):
                    m.d.sync += ack_now()
            m.next = "Notify"

        # ------------------------------------------------------------------ notifications
        with m.State("Notify"):
            pending = self.notes != 0
            kind = Signal(3)
            for k in reversed(range(len(NOTES))):
                with m.If(self.notes[k]):
                    m.d.comb += kind.eq(k)
            m.d.comb += [e.note.valid.eq(pending), e.note.payload.kind.eq(kind),
                         e.note.payload.sid.eq(self.sid)]
            rest = Signal.like(self.notes)
            m.d.comb += rest.eq(self.notes & ~(1 << kind))
            with m.If(pending & e.note.ready):
                m.d.sync += self.notes.bit_select(kind, 1).eq(0)
            # on with the last one taken (not a cycle later)
            with m.If(~pending | (e.note.ready & (rest == 0))):
                m.next = "O Decide"

        # --------------------------------------------------------------------------- output
        with m.State("O Decide"):
            mss = t.snd_mss
            pend = Mux(_lt(t.snd_nxt, t.tx_end), _sub(t.tx_end, t.snd_nxt), 0)
            flight = _sub(t.snd_nxt, t.snd_una)
            lim = _umin(t.cwnd, t.snd_wnd)
            usable = Mux(lim > flight, lim - flight, 0)
            n = Signal(32)
            m.d.comb += n.eq(_umin(_umin(mss, pend), usable))
            fin_due = t.fin_queued & (t.snd_nxt == t.tx_end)
            rem = Mux(_lt(t.snd_una, t.tx_end), _sub(t.tx_end, t.snd_una), 0)
            n1 = _umin(mss, rem)
            fin1 = t.fin_queued & (n1 == rem) & _lt(t.tx_end, t.snd_max)
            # a SEND for this session waits, or its bytes are in the ring with tx_end not moved
            # yet: back to Receive, where the command or the transfer's end (A Load) goes
            # first and comes back here (C Tx Prime, A Done), rather than sending all the rest
            # first while they wait (the transfer then overlaps the segments)
            c = e.cmd.payload
            send_waits = (e.cmd.valid & (c.op == _OP["send"]) & (c.sid == self.sid)
                          & ~self.ax_busy & ~self.ax_fin & ~self.scan_pending)
            yield_ = ~self.fast & (((self.ax_fin | self.ax_prog) & self.ax_write
                                    & (self.ax_sid == self.sid) & ~self.ax_cancel) | send_waits)
            # a SEND of this session is still coming in (its bytes published as they are
            # written): no segment shorter than the MSS and the window allow, and no PSH, for
            # the bytes so far (those that follow would make it longer)
            more_coming = self.ax_busy & self.ax_write & (self.ax_sid == self.sid)
            short = more_coming & (pend < _umin(mss, usable))
            with m.If(yield_):
                m.next = "Store"
            with m.Elif(self.fast & self.sending & ((n1 != 0) | fin1)):
                m.d.sync += [self.fast.eq(0), sdrop("retransmits"),
                             self.transmit(t.snd_una, n1, ACK | Mux(fin1, FIN, 0), 3,
                                           ret_output)]
                m.next = "X Start"
            with m.Elif(self.sending & (n != 0) & ~short
                        & ((n == mss) | (n == pend) | (flight == 0)
                           | (2 * n >= t.max_snd_wnd))):
                last = (n == pend) & ~more_coming
                flags = ACK | Mux(last, PSH, 0) | Mux(last & t.fin_queued, FIN, 0)
                m.d.sync += [self.fast.eq(0), self.transmit(t.snd_nxt, n, flags, 1, ret_output)]
                m.next = "X Start"
            with m.Elif(self.sending & fin_due):
                m.d.sync += [self.fast.eq(0), self.transmit(t.snd_nxt, 0, ACK | FIN, 1,
                                                            ret_output)]
                m.next = "X Start"
            with m.Elif(t.ack_now & (t.state != SYN_SENT) & (t.state != CLOSED)):
                m.d.sync += [self.fast.eq(0), self.transmit(t.snd_nxt, 0, ACK, 0, ret_store)]
                m.next = "X Start"
            with m.Else():
                m.d.sync += self.fast.eq(0)
                m.next = "Store"

        # ---------------------------------------------------------------- write the TCB back
        with m.State("Store"):
            st = t.state
            synced = (st >= ESTAB) & (st != TIME_WAIT)
            pend = _lt(t.snd_nxt, t.tx_end) | (t.fin_queued & (t.snd_nxt == t.tx_end))
            with m.If(synced & ~t.rtx_on & (t.snd_una != t.snd_max)):
                m.d.sync += [t.rtx_on.eq(1), t.rtx_at.eq(self.now + t.rto)]
            with m.Elif(self.sending & ~t.rtx_on & (t.snd_wnd == 0) & pend
                        & (t.snd_nxt == t.snd_una)):
                # persist timer: probe the closed window. Nothing is in flight, so no RTT is
                # timed: rtt_time holds the probe interval, which backs off on its own and
                # leaves the RTO as it was (RFC 9293 §3.8.6.1)
                m.d.sync += [t.rtx_on.eq(1), t.probing.eq(1), t.rtx_at.eq(self.now + t.rto),
                             t.rtt_on.eq(0), t.rtt_time.eq(t.rto)]
            was = (self.old_state == SYN_RCVD) & self.old_passive
            now_half = (t.state == SYN_RCVD) & t.passive
            with m.If(was & ~now_half):
                m.d.sync += self.half_open.eq(self.half_open - 1)
            with m.Elif(~was & now_half):
                m.d.sync += self.half_open.eq(self.half_open + 1)
            m.next = "Store Write"
        with m.State("Store Write"):
            m.d.comb += [self.tcb_w.addr.eq(self.sid), self.tcb_w.data.eq(t),
                         self.tcb_w.en.eq(1), self.ctt_w.addr.eq(self.sid),
                         self.ctt_w.data.state.eq(t.state), self.ctt_w.data.irs.eq(t.irs),
                         self.ctt_w.data.rcv_nxt.eq(t.rcv_nxt),
                         self.ctt_w.data.rx_read.eq(t.rx_read),
                         self.ctt_w.data.peer_fin.eq(t.peer_fin), self.ctt_w.en.eq(1)]
            m.d.sync += self.seg_active.eq(0)
            with m.If(self.arp_req):
                m.d.sync += self.arp_req.eq(0)
                m.next = "ARP Request"
            with m.Else():
                m.next = "Receive"
        with m.State("ARP Request"):
            mac = [Const(b, 8) for b in e.mac.to_bytes(6, "big")]
            ip = [Const(b, 8) for b in e.ip.to_bytes(4, "big")]
            request = ([Const(0xFF, 8)] * 6 + mac + [Const(0x08, 8), Const(0x06, 8)]
                       + [Const(b, 8) for b in bytes.fromhex("0001080006040001")] + mac + ip
                       + [Const(0, 8)] * 6 + _bytes(t.peer_ip, 4))
            for k in range(42):
                m.d.sync += fe.reply[k].eq(request[k])
            m.d.sync += [fe.is_arp_out.eq(1), fe.out_last_beat.eq(41 // self.nb),
                         fe.out_last_keep.eq((1 << (41 % self.nb + 1)) - 1), fe.out_beat.eq(0),
                         self.arp_wait.eq(1)]
            m.d.comb += fe.rd.addr.eq(fe.base_p)
            m.next = "Send"

        # ------------------------------------------------------------------------ release
        with m.State("Release"):
            # the ring stays the session's until the application reader has read its bytes
            # (a new session could take the number and write into it)
            mine = self.ax_sid == self.sid
            req = self.table.req
            with m.If(~(self.ax_busy & mine) & ~self.ct_tbl):
                m.d.comb += [req.valid.eq(1), req.payload.op.eq(OP_DELETE),
                             req.payload.sid.eq(self.sid)]
                with m.If(req.ready):
                    with m.If(self.ax_fin & mine):
                        m.d.sync += self.ax_cancel.eq(1)
                    m.next = "Release Wait"
        with m.State("Release Wait"):
            m.d.comb += self.table.resp.ready.eq(1)
            with m.If(self.table.resp.valid):
                m.d.sync += [t.state.eq(CLOSED), t.rtx_on.eq(0), t.delack_on.eq(0),
                             t.ack_now.eq(0), self.fast.eq(0)]
                m.next = "Notify"

        # ---------------------------------------------------------------------- timer scan
        with m.State("M Load"):
            m.d.sync += [t.eq(self.tcb_r.data), self.old_state.eq(self.tcb_r.data.state),
                         self.old_passive.eq(self.tcb_r.data.passive), self.sid.eq(self.scan_sid),
                         self.notes.eq(0), self.fast.eq(0)]
            with m.If(self.scan_sid == N - 1):
                m.d.sync += [self.scan_sid.eq(0), self.scan_pending.eq(0)]
            with m.Else():
                m.d.sync += self.scan_sid.eq(self.scan_sid + 1)
            m.next = "M Check"
        with m.State("M Check"):
            rtx_due = t.rtx_on & ~_sub(self.now, t.rtx_at)[31]
            del_due = t.delack_on & ~_sub(self.now, t.delack_at)[31]
            with m.If(t.state == CLOSED):
                m.next = "Receive"
            with m.Elif((t.state == SYN_SENT) & ~t.mac_ok & self.arp_hit):
                m.d.sync += [t.mac_ok.eq(1), t.peer_mac.eq(self.arp_mac),
                             t.rtt_time.eq(self.now),
                             self.transmit(t.iss, 0, SYN, 2, ret_store, 1)]
                m.next = "X Start"
            with m.Elif((t.state == TIME_WAIT) & rtx_due):
                m.d.sync += note("closed_done")
                m.next = "Release"
            with m.Elif(rtx_due):
                m.d.sync += sdrop("timeouts")
                m.next = "M Timeout"
            with m.Elif(del_due):
                m.d.sync += [t.delack_on.eq(0), ack_now()]
                m.next = "O Decide"
            with m.Elif(self.scan_pending & ~self.e.i.valid & ~e.cmd.valid):
                # next session at once
                m.d.comb += self.tcb_r.addr.eq(self.scan_sid)
                m.next = "M Load"
            with m.Else():
                m.next = "Receive"
        with m.State("M Timeout"):
            # RFC 6298 §5.4-§5.7, RFC 5681 §3.1 (loss window), RFC 6582 §4
            mss = t.snd_mss
            flight = _sub(t.snd_max, t.snd_una)
            rto2 = _umin(t.rto << 1, e.rto_max)
            retries = t.retries + 1
            syn_state = (t.state == SYN_SENT) | (t.state == SYN_RCVD)
            probe2 = _umin(t.rtt_time[:16] << 1, e.rto_max)
            with m.If(t.probing & (t.snd_una == t.snd_max) & self.sending):
                m.d.sync += [sdrop("window_probes"), t.rtt_time.eq(probe2),
                             t.rtx_at.eq(self.now + probe2),
                             self.transmit(t.snd_una - 1, 0, ACK, 0, ret_store)]
                m.next = "X Start"
            with m.Elif(syn_state):
                m.d.sync += t.retries.eq(retries)
                with m.If(retries > e.syn_retries):
                    with m.If(~(t.passive & (t.state == SYN_RCVD))):
                        m.d.sync += note("reset_timeout")
                    m.next = "Release"
                with m.Else():
                    m.d.sync += [t.rtt_on.eq(0), t.rto.eq(rto2), t.rtx_at.eq(self.now + rto2)]
                    with m.If(~t.mac_ok):
                        m.d.sync += self.arp_req.eq(1)
                        m.next = "Store"
                    with m.Else():
                        flags = Mux(t.state == SYN_SENT, SYN, SYN | ACK)
                        m.d.sync += [sdrop("retransmits"),
                                     self.transmit(t.iss, 0, flags, 2, ret_store,
                                                   (t.state == SYN_SENT) | t.ws_ok)]
                        m.next = "X Start"
            with m.Else():
                # a window shrunk to zero with data in flight: the timeout probes (the first
                # segment again, by O Decide's retransmission of snd_una) and counts no retry
                # while the window stays closed (RFC 9293 §3.8.6.1, MUST-26; Linux
                # tcp_retransmit_timer())
                zero = t.snd_wnd == 0
                m.d.sync += t.retries.eq(Mux(zero & (retries > e.data_retries),
                                             e.data_retries, retries))
                with m.If(~zero & (retries > e.data_retries)):
                    m.d.sync += [note("reset_timeout"),
                                 self.transmit(t.snd_nxt, 0, RST | ACK, 0, ret_release)]
                    m.next = "X Start"
                with m.Else():
                    with m.If(retries == 1):
                        m.d.sync += t.ssthresh.eq(_umax(flight >> 1, 2 * mss))
                    m.d.sync += [t.cwnd.eq(mss), t.recover.eq(t.snd_max), t.in_recovery.eq(0),
                                 t.dupacks.eq(0), t.rtt_on.eq(0), t.snd_nxt.eq(t.snd_una),
                                 t.rto.eq(rto2), t.rtx_on.eq(0), t.probing.eq(0)]
                    with m.If(zero & _lt(t.snd_una, t.tx_end)):
                        m.d.sync += [self.fast.eq(1), sdrop("window_probes")]
                    m.next = "O Decide"

        # ------------------------------------------------------------------------ commands
        with m.State("C Load"):
            m.d.sync += [t.eq(self.tcb_r.data), self.old_state.eq(self.tcb_r.data.state),
                         self.old_passive.eq(self.tcb_r.data.passive), self.notes.eq(0),
                         self.fast.eq(0)]
            m.next = "C Exec"
        self.c_after = c_after = Signal(3)
        after_receive, after_output, after_rx, after_tx, after_release, after_xmit, \
            after_store = range(7)
        lb = self.log_nb
        with m.State("C Exec"):
            op = self.c_op
            valid = (self.sid < N) & (t.state != CLOSED)
            m.d.sync += [self.r.sid.eq(self.sid), c_after.eq(after_receive)]
            with m.If(op == _OP["listen"]):
                free = Signal()
                slot = Signal(range(_LISTEN_SLOTS))
                for k in reversed(range(_LISTEN_SLOTS)):
                    with m.If(~self.l_valid[k] | (self.l_port[k] == self.c_port)):
                        m.d.comb += [free.eq(1), slot.eq(k)]
                with m.If(free & (self.c_port != 0)):
                    m.d.sync += [self.l_valid[slot].eq(1), self.l_port[slot].eq(self.c_port),
                                 self.r.ok.eq(1)]
                m.next = "C Resp"
            with m.Elif(op == _OP["unlisten"]):
                for k in range(_LISTEN_SLOTS):
                    with m.If(self.l_port[k] == self.c_port):
                        m.d.sync += self.l_valid[k].eq(0)
                m.d.sync += self.r.ok.eq(1)
                m.next = "C Resp"
            with m.Elif(op == _OP["open"]):
                m.next = "C Open"
            with m.Elif(op == _OP["query"]):
                m.d.sync += [self.r.ok.eq(valid), self.r.state.eq(t.state),
                             self.r.value.eq(Mux(valid, self.ready_bytes, 0)),
                             self.r.port.eq(t.local_port), self.r.peer_ip.eq(t.peer_ip),
                             self.r.peer_port.eq(t.peer_port),
                             self.r.eof.eq(valid & t.peer_fin & (self.ready_bytes == 0))]
                m.next = "C Resp"
            with m.Elif(op == _OP["recv"]):
                has = valid & (t.state != SYN_SENT)
                got = Mux(has, _umin(self.c_len, self.ready_bytes), 0)
                m.d.sync += [self.r.ok.eq(valid), self.r.value.eq(got), self.c_n.eq(got),
                             self.c_i.eq(0), c_after.eq(Mux(got != 0, after_rx, after_receive)),
                             self.c_base.eq(self.rx_off(t.rx_read)),
                             self.r.align.eq(self.rx_off(t.rx_read)[:lb] if lb else 0)]
                m.next = "C Resp"
            with m.Elif(op == _OP["send"]):
                st = t.state
                ok = valid & ~t.fin_queued & ((st == SYN_SENT) | (st == SYN_RCVD)
                                              | (st == ESTAB) | (st == CLOSE_WAIT))
                una = Mux(t.snd_una == t.iss, t.iss + 1, t.snd_una)
                space = self.buf - _sub(t.tx_end, una)
                taken = Mux(ok, _umin(self.c_len, space), 0)
                m.d.sync += [self.r.ok.eq(ok), self.r.value.eq(taken), self.c_n.eq(taken),
                             self.c_i.eq(0), c_after.eq(Mux(ok, after_tx, after_receive)),
                             self.c_base.eq(self.tx_off(t.tx_end)),
                             self.r.align.eq(self.tx_off(t.tx_end)[:lb] if lb else 0)]
                with m.If(ok):
                    m.d.sync += t.send_blocked.eq(taken < self.c_len)
                m.next = "C Resp"
            with m.Elif(op == _OP["close"]):
                m.d.sync += self.r.ok.eq(valid)
                with m.If(~valid):
                    pass
                with m.Elif(t.state == SYN_SENT):
                    m.d.sync += [note("closed_done"), c_after.eq(after_release)]
                with m.Elif(~t.fin_queued):
                    m.d.sync += [t.fin_queued.eq(1), c_after.eq(after_output)]
                    with m.If(t.state == ESTAB):
                        m.d.sync += t.state.eq(FIN_WAIT_1)
                    with m.Elif(t.state == CLOSE_WAIT):
                        m.d.sync += t.state.eq(LAST_ACK)
                m.next = "C Resp"
            with m.Elif(op == _OP["abort"]):
                m.d.sync += self.r.ok.eq(valid)
                with m.If(valid & (t.state != SYN_SENT) & (t.state != TIME_WAIT)):
                    m.d.sync += [c_after.eq(after_xmit),
                                 self.transmit(t.snd_nxt, 0, RST | ACK, 0, ret_release)]
                with m.Elif(valid):
                    m.d.sync += c_after.eq(after_release)
                m.next = "C Resp"
            with m.Else():
                m.next = "C Resp"
        with m.State("C Open"):
            req = self.table.req
            with m.If(~self.ct_tbl):
                m.d.comb += [req.valid.eq(1), req.payload.op.eq(OP_INSERT),
                             req.payload.key.eq(Cat(self.next_port, self.c_port, self.c_ip))]
                with m.If(req.ready):
                    m.next = "C Open Wait"
        with m.State("C Open Wait"):
            resp = self.table.resp
            m.d.comb += resp.ready.eq(1)
            key = Cat(self.next_port, self.c_port, self.c_ip)
            isn = (Const(e.fixed_isn, 32) if e.fixed_isn is not None
                   else (_toeplitz(key) + (self.now << 8))[:32])
            with m.If(resp.valid):
                with m.If(resp.payload.full | resp.payload.hit | (self.c_port == 0)):
                    with m.If(resp.payload.hit):
                        m.d.sync += self.next_port.eq(Mux(self.next_port == 0xFFFF, 49152,
                                                          self.next_port + 1))
                    m.next = "C Resp"
                with m.Else():
                    m.d.sync += [self.sid.eq(resp.payload.sid), self.r.sid.eq(resp.payload.sid),
                                 self.r.ok.eq(1), t.eq(0), self.old_state.eq(CLOSED),
                                 self.old_passive.eq(0), t.state.eq(SYN_SENT),
                                 t.peer_ip.eq(self.c_ip), t.peer_port.eq(self.c_port),
                                 t.local_port.eq(self.next_port), t.iss.eq(isn),
                                 t.snd_una.eq(isn), t.snd_nxt.eq(isn + 1),
                                 t.snd_max.eq(isn + 1), t.tx_end.eq(isn + 1), t.recover.eq(isn),
                                 t.ssthresh.eq(1 << 30), t.snd_mss.eq(536),
                                 t.rto.eq(e.rto_initial), t.rtt_on.eq(1),
                                 t.rtt_seq.eq(isn + 1), t.rtt_time.eq(self.now),
                                 t.rtx_on.eq(1), t.rtx_at.eq(self.now + e.rto_initial),
                                 self.next_port.eq(Mux(self.next_port == 0xFFFF, 49152,
                                                       self.next_port + 1))]
                    m.next = "C Open Arp"
        with m.State("C Open Arp"):
            with m.If(self.arp_hit):
                m.d.sync += [t.mac_ok.eq(1), t.peer_mac.eq(self.arp_mac),
                             c_after.eq(after_xmit),
                             self.transmit(t.iss, 0, SYN, 2, ret_store, 1)]
            with m.Else():
                m.d.sync += [self.arp_req.eq(1), c_after.eq(after_store)]
            m.next = "C Resp"
        with m.State("C Resp"):
            m.d.comb += [e.resp.valid.eq(1), e.resp.payload.eq(self.r)]
            with m.If(e.resp.ready):
                with m.Switch(c_after):
                    with m.Case(after_receive):
                        m.next = "Receive"
                    with m.Case(after_output):
                        m.next = "Notify"
                    with m.Case(after_rx):
                        m.next = "C Rx Prime"
                    with m.Case(after_tx):
                        m.next = "C Tx Prime"
                    with m.Case(after_release):
                        m.next = "Release"
                    with m.Case(after_xmit):
                        m.next = "X Start"
                    with m.Default():
                        m.next = "Store"
        lb = self.log_nb
        with m.State("C Rx Prime"):
            # the bytes go out through the application reader; rx_read moves when it is done
            # (A Load), so until then the ring bytes it reads are not free space that a
            # segment could be written into
            m.d.sync += [self.ax_busy.eq(1), self.ax_write.eq(0), self.ax_primed.eq(0),
                         self.ax_pub.eq(0),
                         self.ax_sid.eq(self.sid), self.ax_base.eq(self.c_base),
                         self.ax_n.eq(self.c_n), self.ax_i.eq(0), self.ax_cancel.eq(0),
                         self.ax_k.eq((self.c_base[:lb] + self.c_n + self.nb - 1) >> lb)]
            m.next = "Receive"
        with m.State("A Load"):
            m.d.sync += [t.eq(self.tcb_r.data), self.old_state.eq(self.tcb_r.data.state),
                         self.old_passive.eq(self.tcb_r.data.passive), self.notes.eq(0),
                         self.fast.eq(0), self.sid.eq(self.ax_sid)]
            with m.If(self.ax_fin):
                # the transfer's end: the rest of its bytes
                m.d.sync += [self.ax_fin.eq(0), self.c_n.eq(self.ax_n - self.ax_pub),
                             self.a_q.eq(self.ax_q), self.a_part.eq(self.ax_part)]
            with m.Else():
                # a SEND's bytes so far (ax_prog; the transfer goes on)
                m.d.sync += [self.ax_prog.eq(0), self.c_n.eq(self.ax_snap_n - self.ax_pub),
                             self.ax_pub.eq(self.ax_snap_n), self.a_q.eq(self.ax_snap_q),
                             self.a_part.eq(0)]
            m.next = "A Done"
        with m.State("A Done"):
            with m.If(self.ax_cancel | (t.state == CLOSED)):
                m.d.sync += self.ax_cancel.eq(0)
                m.next = "Receive"
            with m.Elif(self.ax_write):
                m.d.sync += [t.tx_end.eq(t.tx_end + self.c_n), t.tx_q.eq(self.a_q),
                             t.tx_part.eq(self.a_part)]
                m.next = "O Decide"
            with m.Else():
                m.d.sync += t.rx_read.eq(t.rx_read + self.c_n)
                m.next = "C Rx Window"
        with m.State("C Rx Window"):
            # window update when the right edge moves by min(buffer / 2, 2 MSS) (§3.8.6.2.2)
            moved = _sub(self.edge, t.rcv_adv)
            with m.If(self.receiving & (moved >= min(self.buf // 2, 2 * mss_cfg))):
                m.d.sync += ack_now()
                m.next = "O Decide"
            with m.Else():
                m.next = "Store"
        with m.State("C Tx Prime"):
            # the bytes come in through the application mover, into the send ring after
            # tx_end, which moves when it is done (A Load): segments read only before tx_end.
            # A SEND granted nothing (full buffer) takes no beat, whatever its lane.
            # (O Decide goes on with the segments before tx_end while they come in)
            m.next = "O Decide"
            with m.If(self.c_n != 0):
                m.d.sync += [self.ax_busy.eq(1), self.ax_write.eq(1), self.ax_primed.eq(1),
                             self.ax_sid.eq(self.sid), self.ax_base.eq(self.c_base),
                             self.ax_n.eq(self.c_n), self.ax_i.eq(0), self.ax_cancel.eq(0),
                             self.ax_k.eq((self.c_base[:lb] + self.c_n + self.nb - 1) >> lb),
                             self.ax_q.eq(t.tx_q), self.ax_part.eq(t.tx_part),
                             self.ax_pub.eq(0),
                             self.ax_whole.eq(((self.c_base + self.c_n)[:lb] == 0) if lb
                                              else 1)]

        # ------------------------------------------------------------- build and send a segment
        with m.State("X Start"):
            is_syn = self.x_flags[1]
            is_rst = self.x_flags[2]
            m.d.sync += [fe.ip_id.eq(fe.ip_id + 1), self.x_sum.eq(0),
                         self.p_valid.eq(0), sdrop("segments_out"),
                         self.x_hlen.eq(Mux(is_syn, Mux(self.x_ws, 62, 58), 54))]
            with m.If(self.x_flags[4] & ~is_syn):
                m.d.sync += [t.ack_now.eq(0), t.unacked.eq(0), t.delack_on.eq(0)]
            with m.If(~is_syn & ~is_rst):
                # receiver silly-window avoidance (RFC 9293 §3.8.6.2.2)
                edge = self.edge
                thr = _umin(self.buf // 2, t.snd_mss)
                grow = _lt(t.rcv_adv, edge) & ((_sub(edge, t.rcv_adv) >= thr)
                                              | ((t.rcv_adv == t.rcv_nxt)
                                                 & (_sub(edge, t.rcv_nxt) >= thr)))
                with m.If(grow):
                    m.d.sync += t.rcv_adv.eq(edge)
            m.next = "X Window"
        with m.State("X Window"):
            adv = _sub(t.rcv_adv, t.rcv_nxt)
            wnd = Mux(adv[31], 0, adv) >> t.rcv_wscale
            m.d.sync += [self.x_win.eq(Mux(self.x_flags[1], min(self.buf, 0xFFFF),
                                           Mux(self.x_flags[2], 0, _umin(wnd, 0xFFFF)))),
                         *self.copy_setup(self.tx_off(self.x_seq), self.x_hlen, self.x_n),
                         self.xr_s.eq(_sub(self.x_seq, t.iss + 1))]
            with m.If(self.x_n == 0):
                m.next = "X Sum"
            with m.Else():
                m.next = "X Ring"
        # The payload's checksum from the send ring's running sums (app_mover): beside each
        # ring word the sum of the stream's bytes before it. The segment's bytes s .. e are
        # those of its first word from s on, plus the running sum at its last word less the
        # one at its second word, plus its last word's bytes up to e: three reads, not a pass
        # over the payload. (Not "at e less at s": the first word's bytes before s may already
        # be the next lap's, written into space the bytes before snd_una left.)
        # (the offsets registered a state ahead, the sums folded over two states: timing)
        s_off, e_off = self.xr_s, self.xr_e
        lb = self.log_nb
        ws = s_off >> lb
        we = e_off >> lb
        s_lane = s_off[:lb] if lb else Const(0, 1)
        e_lane = e_off[:lb] if lb else Const(0, 1)
        with m.State("X Ring"):
            m.d.sync += self.xr_e.eq(s_off + self.x_n - 1)
            # (a cycle's wait for a write of the cut-through writer still due on mem, and
            # for the transmitter's read-ahead: its beats go first, st_room)
            with m.If(self.xr_go):
                m.d.comb += e.mem.addr.eq(self.word_addr(ws, 1))
                m.next = "X Ring 1"
        with m.State("X Ring 1"):
            m.d.comb += e.mem.addr.eq(self.word_addr(ws + 1, 1))
            one_word = Signal(name="xr_one_word")
            m.d.comb += one_word.eq(ws == we)
            head = Cat(*((lane >= s_lane) & (~one_word | (lane <= e_lane))
                         for lane in range(self.nb)))
            m.d.sync += [self.xr_a.eq(_pair_sum(m, e.mem.r_data, head, self.nb, "xr_head")),
                         self.xr_one.eq(one_word)]
            m.next = "X Ring 2"
        with m.State("X Ring 2"):
            m.d.comb += e.mem.addr.eq(self.word_addr(we, 1))
            m.d.sync += self.xr_q1.eq(e.mem.r_sum)
            m.next = "X Ring 3"
        with m.State("X Ring 3"):
            tail = Cat(*(lane <= e_lane for lane in range(self.nb)))
            rest = (_pair_sum(m, e.mem.r_data, tail, self.nb, "xr_tail") + e.mem.r_sum
                    + ~self.xr_q1)
            m.d.sync += self.xr_rest.eq(_fold16(m, rest, "xr_rest_next"))
            m.next = "X Ring 4"
        with m.State("X Ring 4"):
            total = _fold16(m, self.xr_a + Mux(self.xr_one, 0, self.xr_rest), "xr_total")
            # the ring's byte pairs start at even offsets, the segment's at s: an odd s swaps
            # the sum's bytes (RFC 1071 §2 (B))
            m.d.sync += self.x_sum.eq(Mux(s_off[0], Cat(total[8:], total[:8]), total))
            m.next = "X Sum"
        with m.State("X Sum"):
            ip = e.ip
            tcp_len = self.x_hlen - 34 + self.x_n
            words_flags = Cat(self.x_flags, Const(0, 6), ((self.x_hlen - 34) >> 2)[:4])
            opt_sum = Mux(self.x_flags[1], 0x0204 + e.mss + Mux(self.x_ws, 0x0103 + 0x0300
                                                                + self.rcv_wscale, 0), 0)
            ack = Mux(self.x_flags[4], t.rcv_nxt, 0)
            seq = self.x_seq
            tsum = (Const((ip >> 16) + (ip & 0xFFFF) + 6, 32) + t.peer_ip[16:] + t.peer_ip[:16]
                    + tcp_len + t.local_port + t.peer_port + seq[16:] + seq[:16] + ack[16:]
                    + ack[:16] + words_flags + self.x_win + opt_sum + self.x_sum)
            check = Signal(16)
            m.d.comb += check.eq(~_fold(tsum))
            total = Signal(16)
            m.d.comb += total.eq(20 + tcp_len)
            hc = Signal(16)
            m.d.comb += hc.eq(~_fold(Const(0x4500 + 0x4000 + ((e.ttl << 8) | 6)
                                           + (ip >> 16) + (ip & 0xFFFF), 32)
                                     + total + fe.ip_id + t.peer_ip[16:] + t.peer_ip[:16]))
            mac = [Const(b, 8) for b in e.mac.to_bytes(6, "big")]
            ipb = [Const(b, 8) for b in ip.to_bytes(4, "big")]
            head = (_bytes(t.peer_mac, 6) + mac + [Const(0x08, 8), Const(0x00, 8)]
                    + [Const(0x45, 8), Const(0, 8)] + _bytes(total, 2) + _bytes(fe.ip_id, 2)
                    + [Const(0x40, 8), Const(0, 8), Const(e.ttl, 8), Const(6, 8)]
                    + _bytes(hc, 2) + ipb + _bytes(t.peer_ip, 4) + _bytes(t.local_port, 2)
                    + _bytes(t.peer_port, 2) + _bytes(seq, 4) + _bytes(ack, 4)
                    + _bytes(words_flags, 2) + _bytes(self.x_win, 2) + _bytes(check, 2)
                    + [Const(0, 8), Const(0, 8)]
                    + [Const(2, 8), Const(4, 8)] + _bytes(Const(e.mss, 16), 2)
                    + [Const(1, 8), Const(3, 8), Const(3, 8), Const(self.rcv_wscale, 8)])
            assert len(head) == _TX_HEADER
            for k in range(_TX_HEADER):
                m.d.sync += self.txh[k].eq(head[k])
            last = self.x_hlen + self.x_n - 1
            m.d.sync += [self.o_last.eq(last >> self.log_nb),
                         self.o_keep.eq(Const((1 << self.nb) - 1, self.nb)
                                        >> (~last[:self.log_nb] if self.log_nb else 0))]
            m.next = "X Hand"
        with m.State("X Hand"):
            # to the transmitter once it is free (frames leave in the order they were built);
            # the segment counts as sent from here on
            with m.If(self.st_free):
                m.d.comb += self.st_load.eq(1)
                fin = self.x_flags[0]
                nxt = (self.x_seq + self.x_n + fin)[:32]
                with m.If(self.x_kind == 1):
                    m.d.sync += [t.snd_nxt.eq(nxt), t.probing.eq(0)]
                    with m.If(_lt(t.snd_max, nxt)):
                        m.d.sync += t.snd_max.eq(nxt)
                    with m.If(_lt(self.x_seq, t.snd_max)):
                        m.d.sync += sdrop("retransmits")
                    with m.Elif(~t.rtt_on):
                        m.d.sync += [t.rtt_on.eq(1), t.rtt_seq.eq(nxt),
                                     t.rtt_time.eq(self.now)]
                    with m.If(~t.rtx_on | t.probing):
                        m.d.sync += [t.rtx_on.eq(1), t.rtx_at.eq(self.now + t.rto)]
                with m.Elif(self.x_kind == 3):
                    m.d.sync += t.rtt_on.eq(0)
                with m.Switch(self.x_ret):
                    with m.Case(ret_output):
                        m.next = "O Decide"
                    with m.Case(ret_release):
                        m.next = "Release"
                    with m.Default():
                        m.next = "Store"
