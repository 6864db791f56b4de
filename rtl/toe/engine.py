# Ref: RFC 826 (ARP), RFC 792 (ICMP echo), RFC 791 §3.1 (IPv4 header), RFC 1071 (checksum),
#      RFC 1624 eqn. 3 (incremental checksum update), RFC 9293 §3.1 (TCP header and pseudo-header),
#      §3.10.7.1 (segment arrives in CLOSED)
"""Front end of the TCP offload engine: ARP, ICMP echo, IPv4 and TCP checks, RST when closed.

The block stores frames in a frame buffer of two banks (``MAX_FRAME_LEN`` bytes each), checks
their headers and checksums while the beats arrive, and after the last beat either answers (an
ARP reply, an ICMP echo reply) or drops the frame and counts the reason. The receiver runs
beside the state machine: while the state machine works on one frame (its header in one bank
of header registers, its bytes in one bank of the buffer), the next frame comes into the other
bank; once that one is complete, the receiver waits until the state machine takes it. Every
verdict, reason and output byte is the one of the golden model
:class:`nicsim.hw.ref.tcp.TcpEngine`:

* ARP: a request for the engine's address gets a reply (42 bytes, no padding); other ARP frames
  are counted (``not_for_us``, ``bad_arp``, ``truncated``).
* IPv4: version, header length (no options), total length, header checksum, fragments,
  destination address, in the model's order.
* ICMP echo request: the reply keeps the request's data, gets a fresh IPv4 header (identification
  from the engine's counter, DF, TTL 64) and the request's checksum updated for the type change
  (RFC 1624 eqn. 3 gives the value a full recomputation gives).

* TCP: length, data offset, checksum over the pseudo-header and flags are checked as the model
  checks them (``truncated``, ``bad_tcp_header``, ``bad_tcp_checksum``, ``bad_flags``). Built
  with ``sessions`` > 0 (:class:`ToeTcpEngine`), the session engine of
  :mod:`nicsim.rtl.toe.sessions` takes every valid segment. Without it (``sessions=0``, the
  design ``toe``) every valid segment meets a closed engine: it is counted (``no_session``) and,
  unless it is a RST itself, answered with the RST of RFC 9293 §3.10.7.1, exactly the model's
  answer when no port listens.

Registers (32 bit, read-only): 0x00 frames in, 0x04 ARP replies, 0x08 echo replies, 0x0C RSTs
sent, 0x10 + 4 k drops for reason ``DROP_REASONS[k]``; with sessions, the session engine's
counters follow (:meth:`nicsim.rtl.toe.sessions.SessionLogic.registers`).
"""

from types import SimpleNamespace

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..axil import RegisterBusSignature
from ..stream import beat_signature, check_width

__all__ = ["DROP_REASONS", "MAX_FRAME_LEN", "ToeEngine", "ToeTcpEngine"]

MAX_FRAME_LEN = 9216  # hw.ref.tcp.MAX_FRAME_LEN
DROP_REASONS = ("truncated", "oversize", "not_ipv4", "bad_arp", "not_for_us", "bad_ip_header",
                "ip_options", "bad_ip_checksum", "fragment", "not_tcp", "bad_icmp_checksum",
                "icmp_not_echo", "bad_tcp_header", "bad_tcp_checksum", "bad_flags",
                "no_session")
_R = {name: i for i, name in enumerate(DROP_REASONS)}
_HEADER_BYTES = 48  # bytes kept in registers: Ethernet + ARP (42) or IPv4 + ICMP/TCP header
_REPLY_BYTES = 56  # built replies: ARP (42), echo header (38), TCP RST (54)


def _ip_int(ip):
    if isinstance(ip, int):
        return ip
    parts = [int(p) for p in ip.split(".")]
    if len(parts) != 4 or not all(0 <= p <= 255 for p in parts):
        raise ValueError(f"Not an IPv4 address: {ip!r}")
    return int.from_bytes(bytes(parts), "big")


def _fold(value):
    """Ones'-complement fold of a 32-bit sum to 16 bits (two end-around carries)."""
    once = value[:16] + value[16:]
    return (once[:16] + once[16:])[:16]


class ToeEngine(wiring.Component):
    """ARP and ICMP echo responder with the IPv4 checks of the TCP engine.

    Parameters
    ----------
    width : int
        Data width in bits (64, 128, 256 or 512).
    mac : int
        The engine's Ethernet address (48 bits).
    ip : str or int
        The engine's IPv4 address.
    ttl : int
        Time to live of the replies.
    sessions : int
        0: the front end alone (TCP segments get the closed engine's RST); 1 to 1024: with the
        session engine (:class:`ToeTcpEngine` documents it and its other parameters).

    Members
    -------
    i : In(beat stream)
        Frames from the network.
    o : Out(beat stream)
        Frames to the network.
    bus : In(RegisterBusSignature(8))
        Counters (see the module documentation).
    """

    def __init__(self, width=64, mac=0x020000000002, ip="10.0.0.2", ttl=64, *, sessions=0,
                 buf_bits=16, mss=1460, max_half_open=None, fixed_isn=None, rto_initial=1000,
                 rto_min=200, rto_max=60000, delack=40, time_wait=60000, syn_retries=6,
                 data_retries=15, rto_fallback=3000):
        check_width(width)
        if not 0 <= mac < 1 << 48:
            raise ValueError(f"MAC address must fit 48 bits, not {mac!r}")
        if not 0 <= sessions <= 1024:
            raise ValueError(f"Sessions must be 0 (front end only) to 1024, not {sessions!r}")
        if not 10 <= buf_bits <= 24:
            raise ValueError(f"buf_bits must be 10 to 24 (1 KiB to 16 MiB), not {buf_bits!r}")
        if not 88 <= mss <= 9000:
            raise ValueError(f"MSS must be 88 to 9000 bytes, not {mss!r}")
        if max_half_open is None:
            max_half_open = max(1, min(16, sessions))
        if sessions and not 1 <= max_half_open <= sessions:
            raise ValueError(f"max_half_open must be 1 to sessions, not {max_half_open!r}")
        for name, value in (("rto_initial", rto_initial), ("rto_min", rto_min),
                            ("rto_max", rto_max), ("delack", delack), ("time_wait", time_wait),
                            ("rto_fallback", rto_fallback)):
            if not 1 <= value < 1 << 16:
                raise ValueError(f"{name} must be 1 to 65535 ticks, not {value!r}")
        if rto_min > rto_max:
            raise ValueError("rto_min must not exceed rto_max")
        if fixed_isn is not None and not 0 <= fixed_isn < 1 << 32:
            raise ValueError(f"fixed_isn must fit 32 bits, not {fixed_isn!r}")
        self.width = width
        self.mac = mac
        self.ip = _ip_int(ip)
        self.ttl = ttl
        self.sessions = sessions
        self.buf_bits = buf_bits
        self.mss = mss
        self.max_half_open = max_half_open
        self.fixed_isn = fixed_isn
        self.rto_initial, self.rto_min, self.rto_max = rto_initial, rto_min, rto_max
        self.rto_fallback = rto_fallback
        self.delack, self.time_wait = delack, time_wait
        self.syn_retries, self.data_retries = syn_retries, data_retries
        members = {
            "i": In(beat_signature(width)),
            "o": Out(beat_signature(width)),
            "bus": In(RegisterBusSignature(8 if not sessions else 10)),
        }
        if sessions:
            from .sessions import app_signature

            members.update(app_signature(width, sessions, buf_bits))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        nb = self.width // 8  # bytes a beat
        log_nb = (nb - 1).bit_length()
        depth = MAX_FRAME_LEN // nb
        # two banks: the frame being processed (bank_p) and the one coming in (bank_r)
        m.submodules.buf = buf = Memory(shape=self.width, depth=2 * depth, init=[])
        wr = buf.write_port()
        rd = buf.read_port()
        bank_r = Signal()  # the bank the receiver writes
        bank_p = Signal()  # the bank of the frame the state machine works on
        pending = Signal()  # the frame in bank_r is complete and waits for the state machine
        take = Signal()  # the state machine takes the frame in bank_r (this cycle)
        frame_busy = Signal()  # the state machine works on a frame (from take to Receive)
        base_r = Mux(bank_r, depth, 0)
        base_p = Signal(range(2 * depth))
        m.d.comb += base_p.eq(Mux(bank_p, depth, 0))

        header_bytes = 94 if self.sessions else _HEADER_BYTES  # with the TCP options
        # byte views of one wide register per bank (a register per byte costs the simulator
        # more): hdr is the processed frame's, rhdr the incoming one's
        hdr_banks = [Signal(8 * header_bytes, name=f"hdr_bank{k}") for k in range(2)]
        hdr_bits = Signal(8 * header_bytes)
        rhdr_bits = Signal(8 * header_bytes)
        m.d.comb += [hdr_bits.eq(Mux(bank_p, hdr_banks[1], hdr_banks[0])),
                     rhdr_bits.eq(Mux(bank_r, hdr_banks[1], hdr_banks[0]))]
        hdr = [hdr_bits[8 * i:8 * i + 8] for i in range(header_bytes)]
        rhdr = [rhdr_bits[8 * i:8 * i + 8] for i in range(header_bytes)]

        def be(offset, count):
            return Cat(*(hdr[offset + k] for k in reversed(range(count))))

        def rbe(offset, count):
            return Cat(*(rhdr[offset + k] for k in reversed(range(count))))

        beat = Signal(range(depth + 2))  # beats of the incoming frame
        length = Signal(range(MAX_FRAME_LEN + 65))
        oversize = Signal()
        p_length = Signal.like(length)  # the processed frame's, taken in Fold
        p_oversize = Signal()
        ip_sum = Signal(32)
        icmp_sum = Signal(32)
        ip_id = Signal(16)

        frames_in = Signal(32)
        arp_replies = Signal(32)
        echo_replies = Signal(32)
        drops = Array(Signal(32, name=f"drop_{n}") for n in DROP_REASONS)

        # Fields (valid once the header bytes have arrived)
        ethertype = be(12, 2)
        total = be(16, 2)
        data = self.i.payload.data
        keep = self.i.payload.keep
        accept = self.i.valid & self.i.ready
        end = Signal(17)  # 14 + IPv4 total length: end of the datagram (once received)
        m.d.comb += end.eq(14 + total)
        lane_end = Signal(17)  # the same for the incoming frame while its beats arrive
        if nb >= 18:
            # the total length arrives in the same beat as the first bytes it bounds
            live_total = Cat(data[8 * 17:8 * 18], data[8 * 16:8 * 17])
            m.d.comb += lane_end.eq(14 + Mux(beat == 0, live_total, rbe(16, 2)))
        else:
            m.d.comb += lane_end.eq(14 + rbe(16, 2))

        # Ones'-complement sums over 16-bit lanes, masked by absolute byte offsets.
        ip_add = Signal(32)
        icmp_add = Signal(32)
        ip_terms, icmp_terms = [], []
        for lane in range(nb // 2):
            offset = beat * nb + 2 * lane
            hi = data[16 * lane:16 * lane + 8]
            lo = data[16 * lane + 8:16 * lane + 16]
            in_ip = (offset >= 14) & (offset < 34)
            ip_terms.append(Mux(in_ip, Cat(lo, hi), 0))
            # `end` is only known once bytes 16-17 are in: from beat 3 on
            in_icmp = (offset >= 34) & (offset < lane_end)
            lo_in = (offset + 1) < lane_end
            icmp_terms.append(Mux(in_icmp, Cat(Mux(lo_in, lo, 0), hi), 0))
        m.d.comb += [ip_add.eq(sum(ip_terms)), icmp_add.eq(sum(icmp_terms))]

        verdict_reason = Signal(range(len(DROP_REASONS)))
        verdict_drop = Signal()
        verdict_arp = Signal()
        verdict_echo = Signal()
        verdict_rst = Signal()
        verdict_tcp = Signal()
        verdict_learn = Signal()
        rst_sent = Signal(32)
        # the verdict and the checksum results, registered
        ip_ok_r, icmp_ok_r, tcp_ok_r = Signal(), Signal(), Signal()
        v_drop, v_rst, v_arp, v_echo = Signal(), Signal(), Signal(), Signal()
        v_reason = Signal(range(len(DROP_REASONS)))
        v_tcp, v_learn = Signal(), Signal()

        out_beat = Signal(range(depth + 1))
        out_last_beat = Signal(range(depth + 1))
        out_last_keep = Signal(nb)

        # ---------------------------------------------------------------- header for replies
        our_mac = Const(self.mac, 48)
        our_ip = Const(self.ip, 32)
        reply_bits = Signal(8 * _REPLY_BYTES)
        reply = [reply_bits[8 * i:8 * i + 8] for i in range(_REPLY_BYTES)]

        def mac_bytes(value):
            return [value[8 * (5 - k):8 * (6 - k)] for k in range(6)]

        def ip_bytes(value):
            return [value[8 * (3 - k):8 * (4 - k)] for k in range(4)]

        src_mac = [hdr[6 + k] for k in range(6)]
        arp_reply = (src_mac + mac_bytes(our_mac) + [Const(0x08, 8), Const(0x06, 8)]
                     + [hdr[14 + k] for k in range(6)] + [Const(0, 8), Const(2, 8)]
                     + mac_bytes(our_mac) + ip_bytes(our_ip)
                     + [hdr[22 + k] for k in range(6)] + [hdr[28 + k] for k in range(4)])
        assert len(arp_reply) == 42

        hc = Signal(16)  # IPv4 header checksum of the reply
        ttl_proto = Const((self.ttl << 8) | 1, 16)
        src_ip = be(26, 4)
        m.d.comb += hc.eq(~_fold(Const(0x4500, 32) + total + ip_id + 0x4000 + ttl_proto
                                 + (self.ip >> 16) + (self.ip & 0xFFFF)
                                 + src_ip[16:] + src_ip[:16]))
        icmp_old = be(36, 2)
        icmp_new = Signal(16)
        m.d.comb += icmp_new.eq(~_fold(Cat(~icmp_old, Const(0, 16)) + 0xF7FF))
        echo_reply = (src_mac + mac_bytes(our_mac) + [Const(0x08, 8), Const(0x00, 8)]
                      + [Const(0x45, 8), Const(0, 8), hdr[16], hdr[17], ip_id[8:], ip_id[:8],
                         Const(0x40, 8), Const(0, 8), Const(self.ttl, 8), Const(1, 8),
                         hc[8:], hc[:8]] + ip_bytes(our_ip) + [hdr[26 + k] for k in range(4)]
                      + [Const(0, 8), hdr[35], icmp_new[8:], icmp_new[:8]])
        assert len(echo_reply) == 38

        # TCP: checks and the RST of RFC 9293 §3.10.7.1 for a segment nobody takes
        tcp_len = Signal(16)
        m.d.comb += tcp_len.eq(total - 20)
        tcp_offset = Cat(Const(0, 2), hdr[46][4:])
        tcp_flags = hdr[47][:6]
        tcp_ok = _fold(icmp_sum + src_ip[16:] + src_ip[:16] + (self.ip >> 16)
                       + (self.ip & 0xFFFF) + 6 + tcp_len) == 0xFFFF
        seg_seq, seg_ack = be(38, 4), be(42, 4)
        seg_len = Signal(32)
        m.d.comb += seg_len.eq(tcp_len - tcp_offset + tcp_flags[0] + tcp_flags[1])
        rst_seq_c, rst_ack_c, rst_flags_c = Signal(32), Signal(32), Signal(8)
        with m.If(tcp_flags[4]):
            m.d.comb += [rst_seq_c.eq(seg_ack), rst_ack_c.eq(0), rst_flags_c.eq(0x04)]
        with m.Else():
            m.d.comb += [rst_seq_c.eq(0), rst_ack_c.eq(seg_seq + seg_len), rst_flags_c.eq(0x14)]
        # registered a cycle before the RST is built (timing)
        rst_seq, rst_ack, rst_flags = Signal(32), Signal(32), Signal(8)
        hc_rst = Signal(16)
        m.d.comb += hc_rst.eq(~_fold(Const(0x4500 + 40 + 0x4000 + ((self.ttl << 8) | 6)
                                           + (self.ip >> 16) + (self.ip & 0xFFFF), 32)
                                     + ip_id + src_ip[16:] + src_ip[:16]))
        tcp_check = Signal(16)
        m.d.comb += tcp_check.eq(~_fold(Const((self.ip >> 16) + (self.ip & 0xFFFF) + 6 + 20
                                              + 0x5000, 32)
                                        + src_ip[16:] + src_ip[:16] + be(36, 2) + be(34, 2)
                                        + rst_seq[16:] + rst_seq[:16] + rst_ack[16:]
                                        + rst_ack[:16] + rst_flags))
        rst_reply = (src_mac + mac_bytes(our_mac) + [Const(0x08, 8), Const(0x00, 8)]
                     + [Const(0x45, 8), Const(0, 8), Const(0, 8), Const(40, 8), ip_id[8:],
                        ip_id[:8], Const(0x40, 8), Const(0, 8), Const(self.ttl, 8), Const(6, 8),
                        hc_rst[8:], hc_rst[:8]] + ip_bytes(our_ip)
                     + [hdr[26 + k] for k in range(4)]
                     + [hdr[36], hdr[37], hdr[34], hdr[35]] + ip_bytes(rst_seq)
                     + ip_bytes(rst_ack) + [Const(0x50, 8), rst_flags, Const(0, 8), Const(0, 8),
                                            tcp_check[8:], tcp_check[:8], Const(0, 8),
                                            Const(0, 8)])
        assert len(rst_reply) == 54
        is_arp_out = Signal()

        ses = None
        if self.sessions:
            from .sessions import SessionLogic

            ses = SessionLogic(self, m, SimpleNamespace(
                hdr=hdr, be=be, rd=rd, ip_id=ip_id, drops=drops, R=_R, drop_names=DROP_REASONS,
                reply=reply, is_arp_out=is_arp_out, out_last_beat=out_last_beat,
                out_last_keep=out_last_keep, out_beat=out_beat, rst_seq=rst_seq,
                rst_ack=rst_ack, rst_flags=rst_flags, rst_seq_c=rst_seq_c, rst_ack_c=rst_ack_c,
                rst_flags_c=rst_flags_c, beat=beat, accept=accept, hdr_banks=hdr_banks,
                rhdr=rhdr, rbe=rbe, bank_r=bank_r, bank_p=bank_p, base_p=base_p, depth=depth,
                frame_busy=frame_busy))
            ses.elaborate()

        # ------------------------------------------------------------------------ receiver
        # beside the state machine: the incoming frame goes into bank_r while the state machine
        # works on the one before; a complete frame waits (pending) until it is taken
        m.d.comb += self.i.ready.eq(~pending)
        with m.If(accept):
            first_beat = beat == 0
            with m.If(beat < depth):
                m.d.comb += [wr.addr.eq(base_r + beat), wr.data.eq(data), wr.en.eq(1)]
            with m.Else():
                m.d.sync += oversize.eq(1)
            with m.If(first_beat):
                m.d.sync += oversize.eq(0)
            for k in range(nb):
                for b in range(-(-header_bytes // nb)):
                    i = nb * b + k
                    if i < header_bytes:
                        with m.If((beat == b) & keep[k]):
                            for bank in range(2):
                                with m.If(bank_r == bank):
                                    m.d.sync += hdr_banks[bank][8 * i:8 * i + 8].eq(
                                        data[8 * k:8 * k + 8])
            nbytes = Signal(range(nb + 1))
            m.d.comb += nbytes.eq(sum(keep[k] for k in range(nb)))
            so_far = Mux(first_beat, 0, length)
            m.d.sync += [
                length.eq(Mux(so_far + nbytes > MAX_FRAME_LEN + nb, MAX_FRAME_LEN + nb,
                              so_far + nbytes)),
                beat.eq(Mux(beat < depth + 1, beat + 1, beat)),
                ip_sum.eq(Mux(first_beat, 0, ip_sum) + ip_add),
                icmp_sum.eq(Mux(first_beat, 0, icmp_sum) + icmp_add),
            ]
            with m.If(self.i.payload.last):
                m.d.sync += [frames_in.eq(frames_in + 1), pending.eq(1)]
        with m.If(take):
            # (the processed frame's length and sums are read in Fold, before the next
            # frame's first beat replaces them)
            m.d.sync += [pending.eq(0), beat.eq(0), bank_p.eq(bank_r), bank_r.eq(~bank_r)]

        with m.FSM() as fsm:
            with m.State("Receive"):
                m.d.sync += frame_busy.eq(take)
                done = accept & self.i.payload.last  # the incoming frame is complete now
                if ses is None:
                    with m.If(pending | done):
                        m.d.comb += take.eq(1)
                        m.next = "Fold"
                else:
                    # a command that can be taken (and a RECV's end) goes before a complete
                    # frame; other work (timers) while none is complete
                    with m.If(ses.cmd_first):
                        ses.idle_dispatch()
                    with m.Elif(pending | done):
                        m.d.comb += take.eq(1)
                        m.next = "Fold"
                    with m.Else():
                        ses.idle_dispatch()
            with m.State("Fold"):
                # checksums folded a cycle ahead of the verdict (timing)
                m.d.sync += [ip_ok_r.eq(_fold(ip_sum) == 0xFFFF),
                             icmp_ok_r.eq(_fold(icmp_sum) == 0xFFFF), tcp_ok_r.eq(tcp_ok),
                             p_length.eq(length), p_oversize.eq(oversize)]
                m.next = "Decide"
            with m.State("Decide"):
                ip_ok = ip_ok_r
                icmp_ok = icmp_ok_r
                ihl = hdr[14][:4]
                version = hdr[14][4:]
                with m.If(p_length < 14):
                    m.d.comb += [verdict_drop.eq(1), verdict_reason.eq(_R["truncated"])]
                with m.Elif(p_oversize | (p_length > MAX_FRAME_LEN)):
                    m.d.comb += [verdict_drop.eq(1), verdict_reason.eq(_R["oversize"])]
                with m.Elif(ethertype == 0x0806):
                    with m.If(p_length < 42):
                        m.d.comb += [verdict_drop.eq(1), verdict_reason.eq(_R["truncated"])]
                    with m.Elif((be(14, 2) != 1) | (be(16, 2) != 0x0800) | (hdr[18] != 6)
                                | (hdr[19] != 4)):
                        m.d.comb += [verdict_drop.eq(1), verdict_reason.eq(_R["bad_arp"])]
                    with m.Elif(be(38, 4) != self.ip):
                        m.d.comb += [verdict_drop.eq(1), verdict_reason.eq(_R["not_for_us"])]
                    with m.Elif(be(20, 2) == 1):
                        m.d.comb += [verdict_arp.eq(1), verdict_learn.eq(1)]
                    with m.Elif(be(20, 2) != 2):
                        m.d.comb += [verdict_drop.eq(1), verdict_reason.eq(_R["bad_arp"])]
                    with m.Else():
                        m.d.comb += verdict_learn.eq(1)
                with m.Elif(ethertype == 0x0800):
                    with m.If(p_length < 34):
                        m.d.comb += [verdict_drop.eq(1), verdict_reason.eq(_R["truncated"])]
                    with m.Elif((version != 4) | (ihl < 5) | (total < Cat(Const(0, 2), ihl))):
                        m.d.comb += [verdict_drop.eq(1), verdict_reason.eq(_R["bad_ip_header"])]
                    with m.Elif(p_length < end):
                        m.d.comb += [verdict_drop.eq(1), verdict_reason.eq(_R["truncated"])]
                    with m.Elif(ihl != 5):
                        m.d.comb += [verdict_drop.eq(1), verdict_reason.eq(_R["ip_options"])]
                    with m.Elif(~ip_ok):
                        m.d.comb += [verdict_drop.eq(1),
                                     verdict_reason.eq(_R["bad_ip_checksum"])]
                    with m.Elif(be(20, 2)[:14] != 0):
                        m.d.comb += [verdict_drop.eq(1), verdict_reason.eq(_R["fragment"])]
                    with m.Elif(be(30, 4) != self.ip):
                        m.d.comb += [verdict_drop.eq(1), verdict_reason.eq(_R["not_for_us"])]
                    with m.Elif(hdr[23] == 1):
                        with m.If(total < 28):
                            m.d.comb += [verdict_drop.eq(1),
                                         verdict_reason.eq(_R["truncated"])]
                        with m.Elif(~icmp_ok):
                            m.d.comb += [verdict_drop.eq(1),
                                         verdict_reason.eq(_R["bad_icmp_checksum"])]
                        with m.Elif((hdr[34] != 8) | (hdr[35] != 0)):
                            m.d.comb += [verdict_drop.eq(1),
                                         verdict_reason.eq(_R["icmp_not_echo"])]
                        with m.Else():
                            m.d.comb += verdict_echo.eq(1)
                    with m.Elif(hdr[23] == 6):
                        with m.If(tcp_len < 20):
                            m.d.comb += [verdict_drop.eq(1),
                                         verdict_reason.eq(_R["truncated"])]
                        with m.Elif((tcp_offset < 20) | (tcp_offset > tcp_len)):
                            m.d.comb += [verdict_drop.eq(1),
                                         verdict_reason.eq(_R["bad_tcp_header"])]
                        with m.Elif(~tcp_ok_r):
                            m.d.comb += [verdict_drop.eq(1),
                                         verdict_reason.eq(_R["bad_tcp_checksum"])]
                        with m.Elif((tcp_flags[1] & (tcp_flags[0] | tcp_flags[2]))
                                    | ~(tcp_flags[1] | tcp_flags[2] | tcp_flags[4])):
                            m.d.comb += [verdict_drop.eq(1),
                                         verdict_reason.eq(_R["bad_flags"])]
                        # (chosen at elaboration: a constant condition in the chain leaves
                        # a dead branch that yosys' Verilog reader rejects)
                        with m.Else():
                            if self.sessions:
                                m.d.comb += verdict_tcp.eq(1)  # to the session engine
                            else:
                                # no session and no listener: RFC 9293 §3.10.7.1 (CLOSED)
                                m.d.comb += [verdict_drop.eq(1),
                                             verdict_reason.eq(_R["no_session"]),
                                             verdict_rst.eq(~tcp_flags[2])]
                    with m.Else():
                        m.d.comb += [verdict_drop.eq(1), verdict_reason.eq(_R["not_tcp"])]
                with m.Else():
                    m.d.comb += [verdict_drop.eq(1), verdict_reason.eq(_R["not_ipv4"])]

                m.d.sync += [out_beat.eq(0), v_drop.eq(verdict_drop),
                             v_reason.eq(verdict_reason), v_rst.eq(verdict_rst),
                             v_arp.eq(verdict_arp), v_echo.eq(verdict_echo),
                             v_tcp.eq(verdict_tcp), v_learn.eq(verdict_learn)]
                m.next = "Act"
            with m.State("Act"):
                m.d.comb += rd.addr.eq(base_p)
                if ses is not None:
                    with m.If(v_learn):
                        ses.arp_learn(be(28, 4), Cat(*(hdr[27 - k] for k in range(6))))
                with m.If(v_tcp):
                    if ses is not None:
                        m.next = "T Lookup"
                with m.Elif(v_drop):
                    for k in range(len(DROP_REASONS)):
                        with m.If(v_reason == k):
                            m.d.sync += drops[k].eq(drops[k] + 1)
                    with m.If(v_rst):
                        m.d.sync += [ip_id.eq(ip_id + 1), rst_seq.eq(rst_seq_c),
                                     rst_ack.eq(rst_ack_c), rst_flags.eq(rst_flags_c)]
                        m.next = "Build Reset"
                    with m.Else():
                        m.next = "Receive"
                with m.Elif(v_arp):
                    for k in range(42):
                        m.d.sync += reply[k].eq(arp_reply[k])
                    m.d.sync += [is_arp_out.eq(1), out_last_beat.eq(41 // nb),
                                 out_last_keep.eq((1 << (41 % nb + 1)) - 1),
                                 arp_replies.eq(arp_replies + 1)]
                    m.next = "Send"
                with m.Elif(v_echo):
                    next_id = ip_id + 1
                    m.d.sync += ip_id.eq(next_id)
                    m.next = "Build Echo"
                with m.Else():
                    m.next = "Receive"  # an ARP reply to us: nothing to send
                if ses is not None:
                    with m.If(~v_tcp):
                        ses.cut_through_abort()
            with m.State("Build Echo"):
                # ip_id now holds this reply's identification; the header sum uses it
                m.d.comb += rd.addr.eq(base_p)
                for k in range(38):
                    m.d.sync += reply[k].eq(echo_reply[k])
                last = end - 1
                m.d.sync += [is_arp_out.eq(0), out_last_beat.eq(last[log_nb:]),
                             out_last_keep.eq(Const((1 << nb) - 1, nb) >> (~last[:log_nb])),
                             echo_replies.eq(echo_replies + 1)]
                m.next = "Send"
            with m.State("Build Reset"):
                m.d.comb += rd.addr.eq(base_p)
                for k in range(54):
                    m.d.sync += reply[k].eq(rst_reply[k])
                m.d.sync += [is_arp_out.eq(1), out_last_beat.eq(53 // nb),
                             out_last_keep.eq((1 << (53 % nb + 1)) - 1),
                             rst_sent.eq(rst_sent + 1)]
                m.next = "Send"
            with m.State("Send"):
                word = Signal(self.width)
                m.d.comb += word.eq(rd.data)
                for k in range(nb):
                    for b in range(-(-_REPLY_BYTES // nb)):
                        idx = nb * b + k
                        if idx >= _REPLY_BYTES:
                            continue
                        # an ARP reply is all header (bytes past 42 are not kept); an echo
                        # reply takes its first 38 bytes from the header, the rest from the
                        # frame buffer
                        with m.If((out_beat == b) & (is_arp_out | (idx < 38))):
                            m.d.comb += word[8 * k:8 * k + 8].eq(reply[idx])
                is_last = out_beat == out_last_beat
                # after the segment the session engine's transmitter is sending
                free = ~ses.st_busy if ses is not None else Const(1, 1)
                m.d.comb += [
                    self.o.valid.eq(free),
                    self.o.payload.data.eq(word),
                    self.o.payload.keep.eq(Mux(is_last, out_last_keep, (1 << nb) - 1)),
                    self.o.payload.last.eq(is_last),
                    rd.addr.eq(base_p + Mux(self.o.ready & free, out_beat + 1, out_beat)),
                ]
                with m.If(self.o.ready & free):
                    m.d.sync += out_beat.eq(out_beat + 1)
                    with m.If(is_last):
                        m.next = "Receive"
            if ses is not None:
                ses.states()
        # the state machine of the last elaboration (its ``state`` signal and ``decoding``),
        # for cycle profiles (benchmarks/bench_toe.py)
        self.state_machine = fsm
        self.session_logic = ses
        if ses is not None:
            # after the state machine: the cut-through writer's port use takes precedence, but
            # it issues no read while the state machine is in a state that uses the frame
            # buffer's read port or the memory port (fsm_rd), and starts no lookup while the
            # state machine uses the session table (fsm_tbl)
            fsm_rd = Signal()
            fsm_tbl = Signal()

            def ongoing(*states):
                return Cat(*(fsm.ongoing(s) for s in states)).any()

            mem_states = ("S Copy", "X Ring", "X Ring 1", "X Ring 2")  # reads on ``mem``
            m.d.comb += [
                fsm_rd.eq(ongoing("Act", "Build Echo", "Build Reset", "Send", "ARP Request",
                                  *mem_states)),
                fsm_tbl.eq(ongoing("T Lookup Req", "T Lookup Wait", "L Insert", "L Insert Wait",
                                   "Release", "Release Wait", "C Open", "C Open Wait"))]
            ses.cut_through(fsm.ongoing("Receive"), fsm_rd, fsm_tbl)
            # the transmitter's ring reads wait for the others' use of the memory port
            # (X Ring's first read only once it may go: it waits for the transmitter's)
            mem_other = Signal()
            m.d.comb += mem_other.eq(ses.ct_write | ongoing("S Copy", "X Ring 1", "X Ring 2")
                                     | (fsm.ongoing("X Ring") & ses.xr_go))
            ses.transmitter(mem_other)
            ses.app_mover()
            m.d.comb += self.idle.eq(fsm.ongoing("Receive") & (beat == 0) & ~pending
                                     & ~ses.scan_pending & ses.ct_idle & ~ses.cw_busy
                                     & ~ses.st_busy
                                     & ~ses.ax_busy & ~ses.ax_fin)

        # ------------------------------------------------------------------------ registers
        counters = {0x00: frames_in, 0x04: arp_replies, 0x08: echo_replies, 0x0C: rst_sent}
        for k in range(len(DROP_REASONS)):
            counters[0x10 + 4 * k] = drops[k]
        if ses is not None:
            counters.update(ses.registers())
            counters[0x200] = ses.half_open
            counters[0x204] = ses.now
        with m.Switch(self.bus.addr):
            for addr, counter in counters.items():
                with m.Case(addr):
                    m.d.comb += self.bus.err.eq(self.bus.w_en)
                    with m.If(self.bus.r_en):
                        m.d.sync += self.bus.r_data.eq(counter)
            with m.Default():
                m.d.comb += self.bus.err.eq(self.bus.w_en | self.bus.r_en)
        return m


class ToeTcpEngine(ToeEngine):
    """The front end with the TCP session engine (:mod:`nicsim.rtl.toe.sessions`).

    Parameters
    ----------
    width, mac, ip, ttl
        As :class:`ToeEngine`.
    sessions : int
        Sessions (TCBs, session table size), 1 to 1024.
    buf_bits : int
        Receive and send buffer per session: ``2**buf_bits`` bytes each, in the external memory.
    mss : int
        MSS announced and the largest segment sent.
    max_half_open : int
        Most passively opened sessions in SYN-RECEIVED; further SYNs are refused.
    fixed_isn : int or None
        Initial sequence number of every connection (tests); ``None``: hash plus clock.
    rto_initial, rto_min, rto_max, delack, time_wait : int
        Timers in ticks of the ``tick`` input (1 ms in the drivers).
    syn_retries, data_retries : int
        Retransmissions before a connection is given up.
    rto_fallback : int
        The least RTO, in ticks, once a connection is established after its SYN or SYN-ACK
        timed out with no RTT sample (RFC 6298 §5.7: 3 s).

    Members
    -------
    i, o, bus
        As :class:`ToeEngine`; the register bus has 10 address bits.
    cmd, resp, note, rx_data, tx_data : streams
        The application interface (:mod:`nicsim.rtl.toe.sessions`).
    mem : Out
        Byte-wide port of the external buffer memory (``addr``, ``w_data``, ``w_en``,
        ``r_data`` one cycle after ``addr``; ``r_sum``, the 16-bit sum kept beside the word:
        a send ring's running checksum).
    mem_app : Out
        A second port of the same memory (``addr``, ``w_data``, ``w_en``, ``r_data`` one cycle
        after ``addr``; ``w_sum`` and ``w_sum_en`` write the sum beside the word): the
        application mover reads a ``RECV``'s bytes and writes a ``SEND``'s (with their
        running checksums) through it while frames come in and segments leave. The two ports
        never write the same word (the first writes receive rings, the second send rings).
    tick : In(16)
        Timer units that passed (usually 0 or 1).
    idle : Out(1)
        Nothing in progress (no frame, command, timer scan or ``RECV`` transfer).
    """

    def __init__(self, width=64, mac=0x020000000002, ip="10.0.0.2", ttl=64, *, sessions=64,
                 **params):
        if sessions < 1:
            raise ValueError(f"Sessions must be 1 to 1024, not {sessions!r}")
        super().__init__(width, mac, ip, ttl, sessions=sessions, **params)
