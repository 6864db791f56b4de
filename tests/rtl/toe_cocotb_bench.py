"""cocotb bench of the TCP engine's exported top (design ``toe-tcp``, :class:`ToeTcpTop`).

Runs inside the simulator process (imported by ``test_toe_cocotb.py``). :class:`ToeBench` owns
the clock, the reset and the cocotbext-axi models of the network ports (``s_axis`` frames in,
``m_axis`` frames out, ``s_axil`` counters) through :class:`nicsim.hw.cocotb_tb.TB`, and drives
the other ports itself: the application streams (``cmd``/``resp``, ``note``, ``m_axis_rx``,
``s_axis_tx``), the timer input ``tick`` and the buffer-memory ports, served by
:class:`BufferMemory`. It offers the golden model's interface
(:class:`nicsim.hw.ref.tcp.TcpEngine`) as coroutines, with the driving rules of
:class:`nicsim.hw.toe.rtl_engine.RtlEngine` (a command waits while a frame goes in; the bytes a
``SEND`` was granted follow its response in the lanes ``align`` names; ticks are given in a
cycle after an idle one with nothing else driven). :class:`CocotbTwin` feeds the same frames,
times and calls to the bench and to a model and compares every frame they send.

Signals are sampled at the rising edge (before it takes effect, as cocotbext-axi does) and
driven for the next one.
"""

import random

from nicsim.hw.ref.tcp import (
    CLOCK_HZ,
    RST,
    Notice,
    State,
    TcpConfig,
    TcpEngine,
    TcpError,
    build_tcp_frame,
    cycles,
    ip_to_bytes,
    parse_tcp_frame,
)

__all__ = ["ARP_REPLY", "MS", "BufferMemory", "CocotbTwin", "ToeBench", "describe", "model_config",
           "seg"]

TICK_S = 0.01  # one unit of the ``tick`` input in engine time (as the other toe-tcp drivers)
TICK_HZ = round(1 / TICK_S)
MS = cycles(0.001)
E_MAC, P_MAC = bytes.fromhex("020000000002"), bytes.fromhex("020000000001")
E_IP, P_IP = bytes([10, 0, 0, 2]), bytes([10, 0, 0, 1])
MAX_RUN_CYCLES = 50_000  # one frame, command or tick batch: a few thousand at most


def model_config(params):
    """Return the :class:`TcpConfig` that matches the gateware built with ``params``.

    The model's clock is the gateware's timer tick (:data:`TICK_S`): its timers then fire on
    the ticks the gateware's fire on, and its RFC 6298 arithmetic (integer, in clock cycles)
    is the gateware's (integer, in ticks), so RTT samples round alike (RFC 6298 §4: the clock
    granularity is the tick).
    """
    return TcpConfig(
        mss=params.get("mss", 1460), rx_buffer=1 << params["buf_bits"],
        tx_buffer=1 << params["buf_bits"], max_sessions=params["sessions"],
        max_half_open=params["max_half_open"], ooo_ranges=0, fixed_isn=params["fixed_isn"],
        clock_hz=TICK_HZ, rto_initial=params["rto_initial"], rto_min=params["rto_min"],
        rto_max=params["rto_max"], delack=params["delack"], time_wait=params["time_wait"],
        syn_retries=params["syn_retries"], data_retries=params["data_retries"])


def describe(frame):
    """One line per frame: the TCP fields a reader compares (or the hex of another frame)."""
    seg = parse_tcp_frame(frame)
    if isinstance(seg, str):
        return frame.hex()
    return (f"{seg.src_port}->{seg.dst_port} seq={seg.seq} ack={seg.ack} flags={seg.flags:#x} "
            f"win={seg.window} mss={seg.mss} ws={seg.wscale} len={len(seg.payload)}")


class BufferMemory:
    """The engine's buffer memory: the simulation's stand-in for the NIC's DRAM.

    ``width``-bit words with a byte enable per lane; the read data of the address presented in
    one cycle appears in the next, and a read of a word written in the same cycle returns the
    word before the write (as the Amaranth memory beside :class:`RtlEngine` and the C++ shim of
    the Verilator engine do). Beside each word a 16-bit sum (the send rings' running
    checksums), written on the second port and read on the first. Accesses beyond ``words``
    are counted, never served.

    Parameters
    ----------
    words : int
        Size in words.
    width : int
        Word width in bits.

    Members
    -------
    out_of_range : int
        Accesses beyond the memory (a gateware bug if ever non-zero).
    """

    def __init__(self, words, width=64):
        self.words = words
        self.lanes = width // 8
        self._mem = {}
        self._sums = {}
        self._masks = [sum(0xFF << (8 * k) for k in range(self.lanes) if en >> k & 1)
                       for en in range(1 << self.lanes)]
        self.out_of_range = 0

    def edge(self, addr, w_en, w_data, app=None, app_sum=None):
        """Apply one rising edge: return the word read at ``addr`` (before the writes); with
        ``app``, the second port's ``(addr, w_en, w_data)`` (``mem_app``), the pair of words
        read (the two ports never write the same word); with ``app_sum``, the second port's
        ``(sum_en, sum)``, the sum beside the first port's word as well (before the write)."""
        if app is None:
            return self._port(addr, w_en, w_data)
        before = self._mem.get(addr, 0) if addr < self.words else 0
        before_sum = self._sums.get(addr, 0)
        other = self._port(*app)  # its read, then its write
        self._port(addr, w_en, w_data)
        if app_sum is None:
            return before, other
        if app_sum[0] and app[0] < self.words:
            self._sums[app[0]] = app_sum[1]
        return before, other, before_sum

    def _port(self, addr, w_en, w_data):
        if addr >= self.words:
            self.out_of_range += 1
            return 0
        old = self._mem.get(addr, 0)
        if w_en:
            mask = self._masks[w_en]
            self._mem[addr] = (old & ~mask) | (w_data & mask)
        return old


RESP_FIELDS = ("ok", "sid", "value", "state", "port", "peer_ip", "peer_port", "eof", "align")
_OUTPUTS = ("mem_addr", "mem_wen", "mem_wdata", "mem_app_addr", "mem_app_wen", "mem_app_wdata",
            "mem_app_wsum", "mem_app_wsum_en",
            "idle", "cmd_ready", "s_axis_tx_tready",
            "resp_valid", *(f"resp_{name}" for name in RESP_FIELDS), "note_valid", "note_kind",
            "note_sid", "m_axis_rx_tvalid", "m_axis_rx_tkeep", "m_axis_rx_tdata")


def _reader(handle):
    """A function that returns the value of an output as an int, fast: the run loop reads a
    dozen outputs a cycle, and building a ``LogicArray`` for each costs more than the
    gateware's evaluation (Verilator's values have no X or Z bits)."""
    raw = handle._handle
    if len(handle) < 32:
        return raw.get_signal_val_long
    return lambda: int(raw.get_signal_val_binstr(), 2)


def _aligned_beats(data, align, lanes):
    """``(data, keep)`` beats of ``data`` with its first byte in lane ``align``."""
    padded = bytes(align) + data
    beats = []
    for start in range(0, len(padded), lanes):
        chunk = padded[start:start + lanes]
        keep = (1 << len(chunk)) - 1
        if start == 0:
            keep &= ~((1 << align) - 1)
        beats.append((int.from_bytes(chunk, "little"), keep))
    return beats


class ToeBench:
    """The gateware behind the golden model's interface, in a cocotb simulation.

    Parameters
    ----------
    dut : cocotb handle
        The ``toe_tcp`` toplevel.
    params : dict
        The parameters it was built with (``sessions``, ``buf_bits``, timers in ticks ...).
    app_pause : float
        Share of cycles the application holds ``ready`` low on ``resp``, ``note`` and
        ``m_axis_rx`` and leaves a gap on ``s_axis_tx`` (0: always ready, no gaps).
    seed : int
        Seed of the pauses.

    Members
    -------
    memory : BufferMemory
        The buffer memory.
    cycles : int
        Clock cycles run by :meth:`run`.
    now : int
        Engine time in clock cycles of :data:`CLOCK_HZ`.
    """

    def __init__(self, dut, params, app_pause=0.0, seed=1):
        from tbutil import TB

        self.dut = dut
        self.params = params
        self.tb = TB(dut)
        self.lanes = params.get("width", 64) // 8
        words = params["sessions"] << (params["buf_bits"] + 1 - (self.lanes - 1).bit_length())
        self.memory = BufferMemory(words, 8 * self.lanes)
        self.tick_cycles = max(1, round(TICK_S * CLOCK_HZ))
        self.app_pause = app_pause
        self._rng = random.Random(seed)
        self.cycles = 0
        self.now = 0
        self._ticks_given = 0
        self._ticks_owed = 0
        self._cmds = []
        self._pending_send = []
        self._tx_beats = []
        self._resps = []
        self._notes = []
        self._rx = bytearray()
        self._frames = []
        self._live, self._opened, self._maybe_data = set(), set(), set()
        self._driven = {}
        self._read = {name: _reader(getattr(dut, name)) for name in _OUTPUTS}

    async def reset(self):
        """Reset the gateware and set every input to its resting value."""
        for name, value in (("cmd_valid", 0), ("s_axis_tx_tvalid", 0), ("tick", 0),
                            ("mem_rdata", 0), ("mem_app_rdata", 0), ("mem_rsum", 0),
                            ("resp_ready", 1),
                            ("note_ready", 1),
                            ("m_axis_rx_tready", 1)):
            self._drive(name, value)
        await self.tb.reset()

    # ------------------------------------------------------------------------ simulation
    def _ready(self):
        return int(self.app_pause == 0 or self._rng.random() >= self.app_pause)

    async def run(self):
        """Run the clock until the gateware is idle with nothing queued or in flight."""
        from cocotb.triggers import RisingEdge

        d, tb, r = self.dut, self.tb, self._read
        edge = RisingEdge(d.clk)
        for frame in self._frames:
            tb.source.send_nowait(frame)
        self._frames.clear()
        cmd_on = tx_on = tick_on = False
        readies = [1, 1, 1]  # resp, note, rx as driven for the coming edge
        was_idle = False
        quiet = 0
        for _ in range(MAX_RUN_CYCLES):
            await edge
            self.cycles += 1
            # -- what happened at this edge (values before it)
            w_en = r["mem_wen"]()
            app_en = r["mem_app_wen"]()
            sum_en = r["mem_app_wsum_en"]()
            word, app, word_sum = self.memory.edge(
                r["mem_addr"](), w_en, r["mem_wdata"]() if w_en else 0,
                (r["mem_app_addr"](), app_en, r["mem_app_wdata"]() if app_en else 0),
                (sum_en, r["mem_app_wsum"]() if sum_en else 0))
            self._drive("mem_rdata", word)
            self._drive("mem_app_rdata", app)
            self._drive("mem_rsum", word_sum)
            idle = r["idle"]()
            if cmd_on and r["cmd_ready"]():
                self._cmds.pop(0)
            if tx_on and r["s_axis_tx_tready"]():
                self._tx_beats.pop(0)
            if readies[0] and r["resp_valid"]():
                resp = {name: r[f"resp_{name}"]() for name in RESP_FIELDS}
                self._resps.append(resp)
                data = self._pending_send.pop(0) if self._pending_send else None
                if data is not None and resp["value"]:
                    self._tx_beats += _aligned_beats(data[:resp["value"]],
                                                     resp["align"] % self.lanes, self.lanes)
            if readies[1] and r["note_valid"]():
                self._note(r["note_kind"](), r["note_sid"]())
            if readies[2] and r["m_axis_rx_tvalid"]():
                keep = r["m_axis_rx_tkeep"]()
                word = r["m_axis_rx_tdata"]().to_bytes(self.lanes, "little")
                self._rx += bytes(word[k] for k in range(self.lanes) if keep >> k & 1)
            if tick_on:
                self._ticks_owed -= min(self._ticks_owed, 0xFFFF)
            # -- what to drive for the next edge
            frame_in = not tb.source.idle()
            cmd_on = bool(self._cmds) and not frame_in
            if cmd_on:
                for name, value in self._cmds[0].items():
                    self._drive(f"cmd_{name}", value)
            self._drive("cmd_valid", int(cmd_on))
            tx_on = bool(self._tx_beats) and self._ready()
            if tx_on:
                self._drive("s_axis_tx_tdata", self._tx_beats[0][0])
                self._drive("s_axis_tx_tkeep", self._tx_beats[0][1])
            self._drive("s_axis_tx_tvalid", int(tx_on))
            driving = frame_in or cmd_on or tx_on
            tick_on = self._ticks_owed > 0 and not driving and was_idle
            self._drive("tick", min(self._ticks_owed, 0xFFFF) if tick_on else 0)
            if self.app_pause:
                readies = [self._ready(), self._ready(), self._ready()]
                for name, value in zip(("resp_ready", "note_ready", "m_axis_rx_tready"),
                                       readies, strict=True):
                    self._drive(name, value)
            was_idle = idle and not tick_on and not driving
            busy = (frame_in or self._cmds or self._tx_beats or self._ticks_owed
                    or tb.sink.active or tick_on)
            quiet = quiet + 1 if idle and not busy else 0
            if quiet >= 2:
                return
        raise AssertionError(
            f"the gateware did not go idle within {MAX_RUN_CYCLES} cycles (commands "
            f"{len(self._cmds)}, send beats {len(self._tx_beats)}, ticks {self._ticks_owed}, "
            f"frame going in {not tb.source.idle()}, frame coming out {tb.sink.active})")

    def _drive(self, name, value):
        """Set an input for the next edge (written only when it changes)."""
        if self._driven.get(name) != value:
            self._driven[name] = value
            getattr(self.dut, name).value = value

    def _note(self, kind, sid):
        from nicsim.hw.toe.rtl_engine import note_event

        self._notes.append(note_event(kind, sid, self._live, self._maybe_data))

    async def _command(self, op, sid=0, ip=b"\0\0\0\0", port=0, length=0, data=None):
        from nicsim.rtl.toe.sessions import CMD_OPS

        self._cmds.append({"op": CMD_OPS.index(op), "sid": sid,
                           "ip": int.from_bytes(ip, "big"), "port": port,
                           "length": min(length, 0xFFFFFFFF)})
        self._pending_send.append(data)
        await self.run()
        assert self._resps, f"no response to {op}"
        return self._resps.pop(0)

    # ----------------------------------------------------------------- frames and time
    async def receive(self, frame, now):
        """Give the ticks due by ``now``, then one frame; run until idle."""
        await self.advance(now)
        from cocotbext.axi import AxiStreamFrame

        self._frames.append(AxiStreamFrame(bytes(frame)))
        await self.run()

    async def advance(self, now):
        """Give the gateware the timer ticks due by cycle ``now`` (all at once)."""
        self.now = max(self.now, now)
        due = self.now // self.tick_cycles - self._ticks_given
        if due > 0:
            self._ticks_owed += due
            self._ticks_given += due
            await self.run()

    def pop_tx(self):
        """Take the frames the gateware sent."""
        frames = []
        while not self.tb.sink.empty():
            frames.append(bytes(self.tb.sink.recv_nowait().tdata))
        return frames

    def notifications(self):
        """Take the notifications."""
        notes, self._notes = self._notes, []
        for note in notes:
            if note.kind.value in ("connected", "closed", "reset"):
                self._opened.discard(note.session)
        return notes

    # ----------------------------------------------------------------- application calls
    async def listen(self, port):
        if not (await self._command("listen", port=port))["ok"]:
            raise TcpError("The listen table is full")

    async def open(self, ip, port):
        r = await self._command("open", ip=ip_to_bytes(ip), port=port)
        if not r["ok"]:
            raise TcpError("No session free for this connection")
        self._opened.add(r["sid"])
        return r["sid"]

    async def send(self, sid, data):
        if not data:
            return 0
        r = await self._command("send", sid=sid, length=len(data), data=bytes(data))
        if not r["ok"]:
            raise TcpError(f"Session {sid} cannot send")
        return r["value"]

    async def recv(self, sid, max_bytes=None):
        if sid not in self._maybe_data:
            return b""
        want = (1 << 31) if max_bytes is None else max_bytes
        r = await self._command("recv", sid=sid, length=want)
        data = bytes(self._rx)
        self._rx.clear()
        if r["value"] < want:
            self._maybe_data.discard(sid)
        return data

    async def readable(self, sid):
        return (await self._command("query", sid=sid))["value"]

    async def state(self, sid):
        from nicsim.rtl.toe.sessions import STATES

        return State(STATES[(await self._command("query", sid=sid))["state"]])

    async def close(self, sid):
        if not (await self._command("close", sid=sid))["ok"]:
            raise TcpError(f"No session {sid!r}")

    async def abort(self, sid):
        if not (await self._command("abort", sid=sid))["ok"]:
            raise TcpError(f"No session {sid!r}")
        self._live.discard(sid)

    async def counters(self):
        """Counters over AXI4-Lite: the front end's drops and the session engine's."""
        from nicsim.rtl.toe.engine import DROP_REASONS
        from nicsim.rtl.toe.sessions import SESSION_DROP_REASONS

        names = (["frames_in", "arp_replies", "echo_replies", "rst_sent"] + list(DROP_REASONS)
                 + list(SESSION_DROP_REASONS))
        values = {}
        for k, name in enumerate(names):
            value, resp = await self.tb.read_reg(4 * k)
            assert resp == 0, f"counter {name} answered {resp}"
            values[name] = value
        values["half_open"] = (await self.tb.read_reg(0x200))[0]
        values["ticks"] = (await self.tb.read_reg(0x204))[0]
        return values


class CocotbTwin:
    """The golden model and the gateware fed the same frames and calls at the same times.

    Every step compares the frames both sent, in order and byte for byte; :meth:`call`
    compares the results of an application call, :meth:`notes` the notifications.

    Notifications are compared step by step (a frame, a timer step, a call), each step's in
    the order of :data:`nicsim.rtl.toe.sessions.NOTES`: the gateware raises the notifications
    of one event together, in that order, while the model raises them as it processes the
    segment (the ACK's ``SPACE`` before the data's ``DATA``). One documented difference is
    accounted for: a RST that ends TIME-WAIT is reported by the gateware as ``CLOSED``
    ``done`` (the session number is free again), by the model not at all.

    Parameters
    ----------
    bench : ToeBench
        The gateware.
    config : TcpConfig
        The model's configuration (:func:`model_config` of the build's parameters: its clock
        is the tick; ``now`` is in cycles of :data:`CLOCK_HZ` as the bench's).
    """

    def __init__(self, bench, config):
        self.rtl = bench
        self.model = TcpEngine(E_MAC, E_IP, config)
        self.now = 0
        self.timer_out = []  # frames the timers sent before the last :meth:`rx`
        self.sent = []  # frames the last :meth:`call` made the engines send
        self._notes_model, self._notes_rtl = [], []

    def check(self):
        a, b = self.model.pop_tx(), self.rtl.pop_tx()
        assert [describe(f) for f in b] == [describe(f) for f in a], \
            f"at {self.now / MS:.0f} ms: gateware sent the first list, the model the second"
        assert b == a
        self._step_notes()
        return a

    def _step_notes(self, extra=()):
        order = _note_order()
        for notes, engine in ((self._notes_model, self.model), (self._notes_rtl, self.rtl)):
            step = [(n.kind, n.session, n.info) for n in engine.notifications()]
            if engine is self.model:
                step += extra
            notes += sorted(step, key=lambda n: order[n[0], n[2]])

    def model_now(self):
        """Engine time in the model's clock (ticks)."""
        return self.now // self.rtl.tick_cycles

    def deadline_ms(self):
        """The model's next timer in milliseconds of engine time, or ``None``."""
        deadline = self.model.next_deadline()
        return None if deadline is None else deadline * 1000 // TICK_HZ

    async def at(self, ms):
        """Let engine time reach ``ms`` milliseconds; return the frames the timers sent."""
        self.now = round(ms * MS)
        self.model.advance(self.model_now())
        await self.rtl.advance(self.now)
        return self.check()

    async def rx(self, frame):
        """Time passes to ``now`` (timers fire on both), then the frame; return the replies."""
        self.model.advance(self.model_now())
        await self.rtl.advance(self.now)
        self.timer_out = self.check()
        time_wait = [sid for sid in self.model.sessions()
                     if self.model.state(sid) == State.TIME_WAIT]
        self.model.receive(frame, self.model_now())
        await self.rtl.receive(frame, self.now)
        segment = parse_tcp_frame(frame)
        ended = [(Notice.CLOSED, sid, "done") for sid in time_wait
                 if sid not in self.model.sessions()
                 and not isinstance(segment, str) and segment.flags & RST]
        out = self.check()
        self._step_notes(ended)
        return out

    async def call(self, name, *args):
        """The same application call on both; return the model's result (equal to the
        gateware's)."""
        if name == "state":
            a = self.model.state(*args)
        else:
            a = getattr(self.model, name)(*args)
        b = await getattr(self.rtl, name)(*args)
        assert b == a, f"{name}{args}: gateware {b!r}, model {a!r}"
        self.sent = self.check()
        return a

    def notes(self):
        """Take the notifications of both since the last call; they must be the same."""
        a, b = self._notes_model, self._notes_rtl
        self._notes_model, self._notes_rtl = [], []
        assert b == a, f"notifications: gateware {b}, model {a}"
        return a


def _note_order():
    """``(kind, info) -> position`` in the gateware's notification order."""
    from nicsim.rtl.toe.sessions import NOTES

    names = {"connected": (Notice.CONNECTED, ""), "data": (Notice.DATA, ""),
             "space": (Notice.SPACE, ""), "closed_peer": (Notice.CLOSED, "peer"),
             "closed_done": (Notice.CLOSED, "done"), "reset_rst": (Notice.RESET, "rst"),
             "reset_timeout": (Notice.RESET, "timeout"),
             "reset_refused": (Notice.RESET, "refused")}
    return {names[name]: k for k, name in enumerate(NOTES)}


def seg(flags, seq, ack=0, payload=b"", *, window=65535, sport=40000, dport=7, mss=None,
        wscale=None):
    """A segment from the peer (10.0.0.1) to the engine (10.0.0.2)."""
    return build_tcp_frame(P_MAC, E_MAC, P_IP, E_IP, sport, dport, seq % (1 << 32),
                           ack % (1 << 32), flags, window, payload, mss=mss, wscale=wscale)


ARP_REPLY = (E_MAC + P_MAC + b"\x08\x06" + bytes.fromhex("0001080006040002") + P_MAC + P_IP
             + E_MAC + E_IP)
