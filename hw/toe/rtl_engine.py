"""The RTL TCP engine (``rtl/toe``) behind the engine interface the bridge and the apps drive.

:class:`RtlFrontEnd` runs the front end alone (:class:`nicsim.rtl.toe.engine.ToeEngine`): ARP,
ICMP echo, and a RST for every TCP connection attempt. It has no timers, so its clock is not
tied to the wall clock: each received frame runs the simulation until the frame is taken and
the answer, if any, is out.

:class:`RtlEngine` runs the front end with the TCP session engine
(:class:`nicsim.rtl.toe.engine.ToeTcpEngine`) and the buffer memory the simulation provides,
and offers the golden model's interface, so :mod:`nicsim.hw.toe.apps` and
:class:`~nicsim.hw.toe.bridge.TapBridge` (the Linux stack as the peer) run on the gateware.

Both run in Amaranth's simulator and offer the methods the bridge calls on an engine
(``receive``, ``advance``, ``pop_tx``, ``next_deadline``, ``config.clock_hz``, ``ip``).
"""
from __future__ import annotations

from collections import deque
from types import SimpleNamespace

from amaranth.hdl import Elaboratable

from nicsim.hw.ref.tcp import CLOCK_HZ, ip_to_bytes

__all__ = ["RtlEngine", "RtlFrontEnd", "note_event"]

_PERIOD_S = 1 / CLOCK_HZ


class RtlFrontEnd:
    """ARP and ICMP echo by the RTL front end, in Amaranth's simulator.

    Parameters
    ----------
    mac : bytes
        Ethernet address of the engine.
    ip : str or bytes
        IPv4 address of the engine.

    Members
    -------
    cycles : int
        Clock cycles simulated.
    """

    def __init__(self, mac: bytes = bytes.fromhex("020000000002"), ip: str | bytes = "10.0.0.2"):
        from amaranth.sim import Simulator

        from nicsim.rtl.toe.engine import DROP_REASONS, ToeEngine

        self.mac = bytes(mac)
        self.ip = ip_to_bytes(ip)
        self.config = SimpleNamespace(clock_hz=CLOCK_HZ)
        self.drop_reasons = DROP_REASONS
        self._dut = dut = ToeEngine(64, mac=int.from_bytes(self.mac, "big"),
                                    ip=int.from_bytes(self.ip, "big"))
        self._sim = Simulator(dut)
        self._sim.add_clock(_PERIOD_S)
        self._in: deque[bytes] = deque()
        self._out: deque[bytes] = deque()
        self._reads: deque[int] = deque()
        self._read_values: list[int] = []
        self._busy = False
        self._sim.add_testbench(self._feeder, background=True)
        self._sim.add_testbench(self._collector, background=True)
        self.cycles = 0
        self._time = 0.0

    async def _feeder(self, ctx):
        dut = self._dut
        while True:
            if self._reads:
                ctx.set(dut.bus.addr, self._reads.popleft())
                ctx.set(dut.bus.r_en, 1)
                await ctx.tick()
                ctx.set(dut.bus.r_en, 0)
                await ctx.tick()
                self._read_values.append(ctx.get(dut.bus.r_data))
                continue
            if not self._in:
                await ctx.tick()
                continue
            frame = self._in.popleft()
            self._busy = True
            for start in range(0, len(frame), 8):
                chunk = frame[start:start + 8]
                ctx.set(dut.i.valid, 1)
                ctx.set(dut.i.payload, {"data": int.from_bytes(chunk, "little"),
                                        "keep": (1 << len(chunk)) - 1,
                                        "last": int(start + 8 >= len(frame))})
                await ctx.tick().until(dut.i.ready)
            ctx.set(dut.i.valid, 0)
            self._busy = False

    async def _collector(self, ctx):
        dut = self._dut
        ctx.set(dut.o.ready, 1)
        current = bytearray()
        async for _, _, valid, payload in ctx.tick().sample(dut.o.valid, dut.o.payload):
            if valid:
                n = bin(payload.keep).count("1")
                current += payload.data.to_bytes(8, "little")[:n]
                if payload.last:
                    self._out.append(bytes(current))
                    current = bytearray()

    def _run(self, cycles: int) -> None:
        self._time += cycles * _PERIOD_S
        self._sim.run_until(self._time)
        self.cycles += cycles

    def receive(self, frame: bytes, now: int) -> None:
        """Put one frame through the gateware and run until its answer is out."""
        if not frame:
            return
        self._in.append(bytes(frame))
        self._run(len(frame) // 8 + 2)
        while self._in or self._busy:
            self._run(16)
        self._run(len(frame) // 8 + 24)  # decide, build, send a reply as long as the request

    def advance(self, now: int) -> None:
        """Nothing to do: the front end has no timers."""

    def next_deadline(self) -> None:
        """The front end has no timers."""
        return None

    def pop_tx(self) -> list[bytes]:
        """Take the frames the gateware sent."""
        frames = list(self._out)
        self._out.clear()
        return frames

    def notifications(self) -> list:
        """No sessions, no notifications."""
        return []

    def counters(self) -> dict:
        """Read the counters over the register bus: frames, replies and drops by reason."""
        names = ["frames_in", "arp_replies", "echo_replies", "rst_sent"] + list(self.drop_reasons)
        addrs = [0x00, 0x04, 0x08, 0x0C] + [0x10 + 4 * k for k in range(len(self.drop_reasons))]
        self._read_values.clear()
        self._reads.extend(addrs)
        while len(self._read_values) < len(addrs):
            self._run(8)
        return dict(zip(names, self._read_values, strict=True))


def _aligned_beats(data: bytes, align: int) -> list[int]:
    """``tx_data`` beats (data | keep << 64) of ``data`` placed from lane ``align`` on, as the
    send buffer's words hold them."""
    padded = bytes(align) + data
    beats = []
    for start in range(0, len(padded), 8):
        chunk = padded[start:start + 8]
        keep = (1 << len(chunk)) - 1
        if start == 0:
            keep &= ~((1 << align) - 1)
        beats.append(int.from_bytes(chunk, "little") | keep << 64)
    return beats


class _Top(Elaboratable):
    """The session engine with the external buffer memory the simulation provides."""

    def __init__(self, engine, depth):
        self.engine = engine
        self.depth = depth

    def elaborate(self, platform):
        from amaranth.hdl import Module
        from amaranth.lib.memory import Memory

        m = Module()
        m.submodules.engine = e = self.engine
        m.submodules.dram = dram = Memory(shape=64, depth=self.depth, init=[])
        w = dram.write_port(granularity=8)
        r = dram.read_port()
        # the application mover's port (RECV and SEND transfers)
        app_w = dram.write_port(granularity=8)
        app = dram.read_port()
        # the 16-bit sum beside each word: written with a SEND's words, read on mem
        m.submodules.sums = sums = Memory(shape=16, depth=self.depth, init=[])
        sum_w = sums.write_port()
        sum_r = sums.read_port()
        m.d.comb += [w.addr.eq(e.mem.addr), w.data.eq(e.mem.w_data), w.en.eq(e.mem.w_en),
                     r.addr.eq(e.mem.addr), e.mem.r_data.eq(r.data),
                     app_w.addr.eq(e.mem_app.addr), app_w.data.eq(e.mem_app.w_data),
                     app_w.en.eq(e.mem_app.w_en),
                     app.addr.eq(e.mem_app.addr), e.mem_app.r_data.eq(app.data),
                     sum_w.addr.eq(e.mem_app.addr), sum_w.data.eq(e.mem_app.w_sum),
                     sum_w.en.eq(e.mem_app.w_sum_en),
                     sum_r.addr.eq(e.mem.addr), e.mem.r_sum.eq(sum_r.data)]
        return m


def note_event(kind: int, sid: int, live: set, maybe_data: set):
    """The model's :class:`~nicsim.hw.ref.tcp.Notification` for the gateware's note ``kind``
    (an index of :data:`nicsim.rtl.toe.sessions.NOTES`) of session ``sid``, keeping ``live``
    (sessions open) and ``maybe_data`` (sessions that may hold data) up to date."""
    from nicsim.hw.ref.tcp import Notice, Notification
    from nicsim.rtl.toe.sessions import NOTES

    name = NOTES[kind]
    if name == "connected":
        live.add(sid)
        return Notification(Notice.CONNECTED, sid)
    if name == "data":
        maybe_data.add(sid)
        return Notification(Notice.DATA, sid)
    if name == "space":
        return Notification(Notice.SPACE, sid)
    if name == "closed_peer":
        return Notification(Notice.CLOSED, sid, "peer")
    live.discard(sid)
    if name == "closed_done":
        return Notification(Notice.CLOSED, sid, "done")
    return Notification(Notice.RESET, sid, name.split("_")[1])


class RtlEngine:
    """The RTL TCP engine (front end and session engine) in Amaranth's simulator.

    It offers the golden model's interface (:class:`nicsim.hw.ref.tcp.TcpEngine`): the bridge's
    ``receive``, ``advance``, ``pop_tx``, ``next_deadline``, and the application calls
    ``listen``, ``open``, ``send``, ``recv``, ``close``, ``abort``, ``state``, ``session_info``,
    ``readable``, ``at_eof``, ``notifications``, so :mod:`nicsim.hw.toe.apps` runs on it. Every
    application call is a command on the gateware's ``cmd`` stream and its answer on ``resp``;
    data moves on ``tx_data`` and ``rx_data``. The buffer memory is an Amaranth memory beside
    the engine (the simulation's stand-in for the NIC's DRAM).

    Auto modes (:meth:`auto_receive`, :meth:`auto_send`) put the application inside the
    simulation, so that its transfers overlap the frames as beside real gateware; without
    them every application call is its own run, after the frames before it.

    Time: the gateware's timers count ticks; one tick is ``tick_s`` seconds of engine time
    (``now`` in cycles of ``clock_hz``). The timer parameters are given in seconds and turned
    into ticks. Simulated clock cycles are not engine time: the simulation runs only while there
    is work, until the gateware is idle again.

    On the wire's clock (``clocked=True``, for :class:`~nicsim.hw.toe.loopback.Loopback`): the
    gateware's cycles are the wire's while it has work. Frames, ticks and the auto modes'
    hand-overs are queued without running; the wire runs the gateware in slices up to its next
    event (:meth:`run_to`), so frames that arrive while the gateware still works go in at their
    cycle, and each frame sent carries the wire's cycle at which its last beat left
    (:meth:`pop_tx_timed`). Idle, the gateware's clock jumps to the wire's (those cycles are
    not simulated). An application call that needs an answer runs the gateware until the
    answer (and a ``RECV``'s bytes) is out, ahead of the wire if it must.

    Parameters
    ----------
    mac, ip
        Addresses of the engine.
    sessions : int
        Sessions of the gateware.
    buf_bits : int
        Per-session buffers of ``2**buf_bits`` bytes.
    tick_s : float
        Length of a tick.
    fixed_isn : int or None
        Initial sequence number of every connection (tests).
    rto_initial, rto_min, rto_max, delack, time_wait : float
        Timers in seconds (RFC 6298 defaults with Linux's 200 ms minimum).
    max_half_open : int or None
        Bound of passively opened sessions in SYN-RECEIVED (default: up to 16).
    syn_retries, data_retries : int
        Retransmissions before a connection is given up.
    catch_up_ticks : int or None
        Most ticks given at once when time jumps (``None``: all that are due).
    clocked : bool
        Run on the wire's clock (above) instead of until idle at each event.

    Members
    -------
    cycles : int
        Clock cycles simulated.
    clock : int
        With ``clocked``: the wire's cycle up to which the gateware has run.
    """

    def __init__(self, mac: bytes = bytes.fromhex("020000000002"), ip: str | bytes = "10.0.0.2",
                 *, sessions: int = 8, buf_bits: int = 16, mss: int = 1460,
                 tick_s: float = 0.01, fixed_isn: int | None = None, rto_initial: float = 1.0,
                 rto_min: float = 0.2, rto_max: float = 60.0, delack: float = 0.04,
                 time_wait: float = 60.0, max_half_open: int | None = None,
                 syn_retries: int = 6, data_retries: int = 15,
                 catch_up_ticks: int | None = None, clocked: bool = False):
        from nicsim.hw.ref.tcp import TcpError
        from nicsim.rtl.toe.engine import DROP_REASONS, ToeTcpEngine
        from nicsim.rtl.toe.sessions import SESSION_DROP_REASONS

        if tick_s <= 0:
            raise TcpError(f"tick_s must be positive, not {tick_s!r}")

        def ticks(seconds, name):
            value = max(1, round(seconds / tick_s))
            if value >= 1 << 16:
                raise TcpError(f"{name} of {seconds} s is over 65535 ticks of {tick_s} s")
            return value

        self.mac = bytes(mac)
        self.ip = ip_to_bytes(ip)
        self.config = SimpleNamespace(clock_hz=CLOCK_HZ, rx_buffer=1 << buf_bits,
                                      tx_buffer=1 << buf_bits, max_sessions=sessions, mss=mss)
        self.tick_cycles = max(1, round(tick_s * CLOCK_HZ))
        self.drop_reasons = DROP_REASONS
        self.session_reasons = SESSION_DROP_REASONS
        # the gateware's parameters (``ToeTcpEngine`` at 64 bit)
        self.params = dict(
            mac=int.from_bytes(self.mac, "big"), ip=".".join(str(b) for b in self.ip),
            sessions=sessions, buf_bits=buf_bits, mss=mss, fixed_isn=fixed_isn,
            max_half_open=max_half_open, rto_initial=ticks(rto_initial, "rto_initial"),
            rto_min=ticks(rto_min, "rto_min"), rto_max=ticks(rto_max, "rto_max"),
            delack=ticks(delack, "delack"), time_wait=ticks(time_wait, "time_wait"),
            syn_retries=syn_retries, data_retries=data_retries,
            rto_fallback=ticks(3.0, "rto_fallback"))
        try:
            self._dut = ToeTcpEngine(64, **self.params)
        except ValueError as e:
            raise TcpError(str(e)) from None
        self._catch_up_limit = catch_up_ticks
        self.clocked = bool(clocked)
        self._start()
        self._clear()

    def _start(self) -> None:
        """Build the simulation (Amaranth's simulator here; :mod:`.verilator_engine` overrides
        it)."""
        from amaranth.sim import Simulator

        words = self.params["sessions"] << (self.params["buf_bits"] + 1 - 3)
        self._sim = Simulator(_Top(self._dut, words))
        self._sim.add_clock(_PERIOD_S)
        self._sim.add_testbench(self._work, background=True)

    def reset(self) -> None:
        """Back to the state after construction (gateware, memories and driver), without
        elaborating again."""
        self._sim.reset()
        self._clear()

    def _clear(self) -> None:
        self._time = 0.0
        self._done = False
        self._frames: deque[bytes] = deque()
        self._cmds: deque[dict] = deque()
        self._tx_beats: deque[int] = deque()
        self._opened: set[int] = set()
        self._pending_send: deque[bytes] = deque()  # data of SEND commands not yet answered
        self._reads: deque[int] = deque()
        self._read_values: list[int] = []
        self._out: deque[bytes] = deque()
        self._resps: deque[dict] = deque()
        self._rx = bytearray()
        self._notes: deque = deque()
        self._ticks_owed = 0
        self._ticks_given = 0
        self._live: set[int] = set()
        self._maybe_data: set[int] = set()
        self._taken: deque[dict] = deque()  # commands taken, waiting for their response
        self._rx_owed: deque[list] = deque()  # RECVs answered: [session or None, bytes to come]
        self._auto_recv = False
        self._auto_send = False
        self._auto_rx: dict[int, bytearray] = {}  # bytes auto-receive read, per session
        self._auto_tx: dict[int, bytearray] = {}  # bytes waiting for an auto-send SEND
        self._auto_asked: set[int] = set()  # sessions with an auto-send SEND not answered
        self._close_later: set[int] = set()
        self.cycles = 0
        self.now = 0
        self._out_at: deque[int] = deque()  # the wire's cycle each frame of _out was sent
        self._offset = 0  # the wire's cycle minus the simulated cycles (clocked)
        self._work_left = False  # clocked: inputs queued or the last slice ended busy
        self._detached = 0  # clocked: closes issued whose answers nobody waits for
        self._data_notes = 0  # data notifications so far

    # ------------------------------------------------------------------------- simulation
    async def _work(self, ctx):
        """Drive the inputs and take the outputs; ``_done`` once all is done and the gateware
        is idle. Payloads go in and out as integers (the struct views cost more than the
        gateware's own evaluation)."""
        dut = self._dut
        for port in (dut.o, dut.note, dut.resp, dut.rx_data):
            ctx.set(port.ready, 1)
        resp_fields = [(name, f.offset, f.width) for name, f in dut.resp.payload.shape()]
        cmd_fields = {name: f.offset for name, f in dut.cmd.payload.shape()}
        note_sid = dut.note.payload.shape()["sid"].offset
        i_payload = dut.i.payload.as_value()
        cmd_payload = dut.cmd.payload.as_value()
        tx_byte = dut.tx_data.payload.as_value()
        last = {}

        def drive(signal, value):
            # `signal` is one of the objects above (stable identities)
            if last.get(id(signal), -1) != value:
                last[id(signal)] = value
                ctx.set(signal, value)

        beats: deque = deque()
        current = bytearray()
        quiet = 0
        was_idle = True
        sampled = (dut.o.valid, dut.o.payload.as_value(), dut.note.valid,
                   dut.note.payload.as_value(), dut.resp.valid, dut.resp.payload.as_value(),
                   dut.rx_data.valid, dut.rx_data.payload.as_value(), dut.i.ready,
                   dut.cmd.ready, dut.tx_data.ready, dut.idle)
        while True:
            if not beats and self._frames:
                frame = self._frames.popleft()
                for start in range(0, len(frame), 8):
                    chunk = frame[start:start + 8]
                    beats.append(int.from_bytes(chunk, "little")
                                 | ((1 << len(chunk)) - 1) << 64
                                 | int(start + 8 >= len(frame)) << 72)
            driving = False
            if beats:
                drive(dut.i.valid, 1)
                drive(i_payload, beats[0])
                driving = True
            else:
                drive(dut.i.valid, 0)
            # a command waits while a frame goes in; an auto command is offered beside the
            # frames (the gateware takes it once its state machine is free, before a frame
            # that has come in), and so is every command on the wire's clock (it comes at its
            # own cycle, not after the frames queued before it)
            cmd_on = bool(self._cmds) and (not beats or self._cmds[0].get("auto", False)
                                           or self.clocked)
            if cmd_on:
                c = self._cmds[0]
                drive(dut.cmd.valid, 1)
                drive(cmd_payload, sum(c[k] << off for k, off in cmd_fields.items()))
                driving = True
            else:
                drive(dut.cmd.valid, 0)
            if self._tx_beats:
                drive(dut.tx_data.valid, 1)
                drive(tx_byte, self._tx_beats[0])
                driving = True
            else:
                drive(dut.tx_data.valid, 0)
            # the ticks due at once (one timer scan), when the gateware is idle
            tick = self._ticks_owed > 0 and not driving and was_idle
            drive(dut.tick, min(self._ticks_owed, 0xFFFF) if tick else 0)
            read = None
            if self._reads and not driving and not tick:
                read = self._reads[0]
                drive(dut.bus.addr, read)
                drive(dut.bus.r_en, 1)
            else:
                drive(dut.bus.r_en, 0)
            (_, _, ov, op, nv, np_, rv, rp, xv, xp, i_ready, c_ready, t_ready,
             idle) = await ctx.tick().sample(*sampled)
            self.cycles += 1
            was_idle = bool(idle) and not tick and not driving
            if tick:
                self._ticks_owed -= min(self._ticks_owed, 0xFFFF)
            if read is not None:
                drive(dut.bus.r_en, 0)
                await ctx.tick()
                self.cycles += 1
                self._read_values.append(ctx.get(dut.bus.r_data))
                self._reads.popleft()
            if beats and i_ready:
                beats.popleft()
            if cmd_on and c_ready:
                self._taken.append(self._cmds.popleft())
            if self._tx_beats and t_ready:
                self._tx_beats.popleft()
            if ov:
                n = bin((op >> 64) & 0xFF).count("1")
                current += (op & ((1 << 64) - 1)).to_bytes(8, "little")[:n]
                if op >> 72 & 1:
                    self._out.append(bytes(current))
                    self._out_at.append(self.cycles + self._offset)
                    current = bytearray()
            if nv:
                self._note(np_ & 7, np_ >> note_sid)
                self._auto_note(np_ & 7, np_ >> note_sid)
            if rv:
                r = {name: (rp >> off) & ((1 << width) - 1) for name, off, width in resp_fields}
                self._answered(self._taken.popleft() if self._taken else {}, r)
            if xv:
                keep = (xp >> 64) & 0xFF
                word = (xp & ((1 << 64) - 1)).to_bytes(8, "little")
                self._received(bytes(word[k] for k in range(8) if keep >> k & 1))
            busy = (beats or self._frames or self._cmds or self._tx_beats or self._reads
                    or self._ticks_owed or current)
            quiet = quiet + 1 if (idle and not busy) else 0
            if quiet >= 2:
                self._done = True

    def _run(self) -> None:
        self._done = False
        while not self._done:
            self._time += 8 * _PERIOD_S
            self._sim.run_until(self._time)

    def _slice(self, limit: int) -> bool:
        """Run at most ``limit`` cycles (in steps of up to 8), less if the gateware goes idle
        with nothing queued; return whether it did."""
        self._done = False
        end = self.cycles + limit
        while not self._done and self.cycles < end:
            self._time += min(8, end - self.cycles) * _PERIOD_S
            self._sim.run_until(self._time)
        return self._done

    def _queue_command(self, op: str, sid: int = 0, ip: bytes = b"\0\0\0\0", port: int = 0,
                       length: int = 0, data: bytes | None = None) -> None:
        from nicsim.rtl.toe.sessions import CMD_OPS

        self._cmds.append({"op": CMD_OPS.index(op), "sid": sid,
                           "ip": int.from_bytes(ip, "big"), "port": port,
                           "length": min(length, 0xFFFFFFFF)})
        self._pending_send.append(data)

    def _command(self, op: str, sid: int = 0, ip: bytes = b"\0\0\0\0", port: int = 0,
                 length: int = 0, data: bytes | None = None) -> dict:
        self._queue_command(op, sid, ip, port, length, data)
        if not self.clocked:
            self._run()
            return self._resps.popleft()
        # on the wire's clock: until the answer is out and the bytes of the RECVs answered
        # (this one's, auto-receive's: what the gateware counts as read) are in, not until idle
        self._work_left = True
        while not self._resps or self._owed():
            if self._slice(16):
                break
        # whether it has more to do (two quiet cycles tell it is idle): an application that
        # polls must not keep the wire stepping a few cycles at a time
        self._work_left = not self._slice(2)
        return self._resps.popleft()

    def _owed(self) -> int:
        """Bytes of the RECVs answered still to come on ``rx_data``."""
        return sum(owed[1] for owed in self._rx_owed)

    def _note(self, kind: int, sid: int) -> None:
        note = note_event(kind, sid, self._live, self._maybe_data)
        self._notes.append(note)
        if note.kind.value == "data":
            self._data_notes += 1
            if self._auto_recv:
                # auto-receive's RECV for this notification reads everything readable (every
                # segment with data is notified), so recv need not ask the gateware
                self._maybe_data.discard(sid)

    # ---------------------------------------------------- the application inside (auto modes)
    def _auto_note(self, kind: int, sid: int) -> None:
        """Auto-receive's RECV for a ``data`` notification, auto-send's SEND for ``space``."""
        from nicsim.rtl.toe.sessions import CMD_OPS, NOTES

        name = NOTES[kind]
        if name == "data" and self._auto_recv:
            self._cmds.append({"op": CMD_OPS.index("recv"), "sid": sid, "ip": 0, "port": 0,
                               "length": 0x7FFFFFFF, "auto": True})
        elif name == "space":
            self._ask_send(sid)
        elif name == "closed_done" or name.startswith("reset"):
            self._auto_tx.pop(sid, None)  # released: what waited goes nowhere

    def _ask_send(self, sid: int) -> None:
        from nicsim.rtl.toe.sessions import CMD_OPS

        waiting = self._auto_tx.get(sid)
        if waiting and sid not in self._auto_asked:
            self._cmds.append({"op": CMD_OPS.index("send"), "sid": sid, "ip": 0, "port": 0,
                               "length": min(len(waiting), 0x7FFFFFFF), "auto": True})
            self._auto_asked.add(sid)

    def _answered(self, cmd: dict, r: dict) -> None:
        """The response ``r`` to the command ``cmd``: to the caller, or to the auto modes."""
        from nicsim.rtl.toe.sessions import CMD_OPS

        recv = cmd.get("op") == CMD_OPS.index("recv")
        if cmd.get("auto"):
            if recv:
                if r["value"]:
                    self._rx_owed.append([cmd["sid"], r["value"]])
                return
            waiting = self._auto_tx.get(cmd["sid"], bytearray())
            n = min(r["value"], len(waiting))
            data = bytes(waiting[:n])
            del waiting[:n]
            self._auto_asked.discard(cmd["sid"])
            if n:
                self._tx_beats.extend(_aligned_beats(data, r["align"]))
            if r["value"] >= cmd["length"]:
                # all it asked for was taken and more may have come meanwhile (a SEND cut
                # short waits for the space notification instead)
                self._ask_send(cmd["sid"])
            return
        data = self._pending_send.popleft() if self._pending_send else None
        if self._detached:  # the answer to a close nobody waits for (clocked)
            self._detached -= 1
            return
        self._resps.append(r)
        if data is not None and r["value"]:
            self._tx_beats.extend(_aligned_beats(data[:r["value"]], r["align"]))
        elif recv and r["value"]:
            self._rx_owed.append([None, r["value"]])

    def _received(self, data: bytes) -> None:
        """Bytes from ``rx_data``: to the RECV they answer, the caller's or auto-receive's."""
        while data:
            if not self._rx_owed:
                self._rx += data
                return
            owed = self._rx_owed[0]
            n = min(owed[1], len(data))
            if owed[0] is None:
                self._rx += data[:n]
            else:
                self._auto_rx.setdefault(owed[0], bytearray()).extend(data[:n])
            owed[1] -= n
            data = data[n:]
            if not owed[1]:
                self._rx_owed.popleft()

    def _auto_hand(self, sid: int, data: bytes) -> None:
        """Auto-send: keep ``data`` for session ``sid`` until the send buffer takes it."""
        self._auto_tx.setdefault(sid, bytearray()).extend(data)
        self._ask_send(sid)

    def _auto_waiting(self, sid: int) -> int:
        """Auto-send: bytes handed over for session ``sid`` not yet in the send buffer."""
        return len(self._auto_tx.get(sid, b""))

    def auto_receive(self, on: bool = True) -> None:
        """Read received data as it is notified, inside the simulation: every ``data``
        notification gets a ``RECV`` of everything readable, offered beside the frames (the
        gateware takes it once its state machine is free, before a frame that has come in),
        so its bytes leave through the application mover while the next frames come in;
        :meth:`recv` returns them first."""
        self._auto_recv = bool(on)

    def auto_send(self, on: bool = True) -> None:
        """Write data as the send buffer frees, inside the simulation: :meth:`send` keeps
        every byte (and returns their number) and a ``SEND`` for the bytes waiting goes with
        the next frames or ticks and at each ``space`` notification, so they go into the send
        ring while the gateware builds and sends segments; :meth:`close` waits until every
        byte handed over was taken."""
        self._auto_send = bool(on)

    def _close_waiting(self) -> None:
        for sid in sorted(self._close_later):
            if sid not in self._live and sid not in self._opened:
                self._close_later.discard(sid)  # released meanwhile
            elif not self._auto_waiting(sid):
                self._close_later.discard(sid)
                self.close(sid)

    # ------------------------------------------------------------------ the bridge's calls
    def receive(self, frame: bytes, now: int) -> None:
        """Put one frame through the gateware and run until it is idle again."""
        self.receive_burst([frame], now)

    def receive_burst(self, frames: list[bytes], now: int) -> None:
        """Put several frames in back to back (as a wire at line rate delivers them, the next
        one while the engine still works on the one before) and run until it is idle."""
        self.advance(now)
        self._frames.extend(bytes(f) for f in frames if f)
        if self.clocked:
            self._work_left = self._work_left or bool(self._frames)
            return
        self._run()
        self._close_waiting()

    def _catch_up(self, now: int) -> None:
        self.now = max(self.now, now)
        due = self.now // self.tick_cycles - self._ticks_given
        if due > 0:
            # with a limit (a simulation slower than the wall clock), the engine's clock runs
            # slow rather than firing every timer at once
            give = due if self._catch_up_limit is None else min(due, self._catch_up_limit)
            self._ticks_owed += give
            self._ticks_given += due

    def advance(self, now: int) -> None:
        """Give the gateware the timer ticks due by cycle ``now`` (clocked: run it up to
        ``now`` first and queue them)."""
        if self.clocked:
            if self.clock < now and self._work_left:
                self.run_to(now)
            if self.clock < now:  # idle: its clock jumps to the wire's
                self._offset += now - self.clock
            self._catch_up(now)
            self._work_left = self._work_left or bool(self._ticks_owed)
            return
        self._catch_up(now)
        if self._ticks_owed:
            self._run()
            self._close_waiting()

    def next_tick(self) -> int | None:
        """The next tick while a session exists (its timers count ticks)."""
        if not self._live and not self._opened:
            return None
        return (self._ticks_given + 1) * self.tick_cycles

    def next_deadline(self) -> int | None:
        """The next tick while a session exists; clocked, the gateware's clock while it
        has work."""
        if self.clocked and self._work_left:
            return self.clock
        return self.next_tick()

    @property
    def clock(self) -> int:
        return self.cycles + self._offset

    def run_to(self, horizon: int) -> None:
        """Clocked: run the gateware until the wire's cycle ``horizon`` or until it is idle
        with nothing queued."""
        while self._work_left and self.clock < horizon:
            self._work_left = not self._slice(horizon - self.clock)
        self._close_waiting()

    def pop_tx(self) -> list[bytes]:
        """Take the frames the gateware sent."""
        return [frame for _, frame in self.pop_tx_timed()]

    def pop_tx_timed(self) -> list[tuple[int, bytes]]:
        """Take the frames the gateware sent, each with the wire's cycle its last beat left
        (the simulated cycle itself when not ``clocked``)."""
        frames = list(zip(self._out_at, self._out, strict=True))
        self._out.clear()
        self._out_at.clear()
        return frames

    def notifications(self) -> list:
        """Take the notifications (as :class:`nicsim.hw.ref.tcp.Notification`)."""
        notes = list(self._notes)
        self._notes.clear()
        for note in notes:
            if note.kind.value in ("connected", "closed", "reset"):
                self._opened.discard(note.session)
        return notes

    # ----------------------------------------------------------------- application calls
    def listen(self, port: int) -> None:
        """Accept connections to ``port`` (a slot of the gateware's listen table)."""
        from nicsim.hw.ref.tcp import TcpError

        if not 1 <= port <= 0xFFFF:
            raise TcpError(f"Port must be 1 to 65535, not {port!r}")
        if not self._command("listen", port=port)["ok"]:
            raise TcpError("The listen table is full (8 ports)")

    def unlisten(self, port: int) -> None:
        """Stop accepting connections to ``port``."""
        self._command("unlisten", port=port)

    def open(self, ip: str | bytes, port: int) -> int:
        """Active open to ``ip:port``; return the session number."""
        from nicsim.hw.ref.tcp import TcpError

        if not 1 <= port <= 0xFFFF:
            raise TcpError(f"Port must be 1 to 65535, not {port!r}")
        r = self._command("open", ip=ip_to_bytes(ip), port=port)
        if not r["ok"]:
            raise TcpError("No session free for this connection")
        self._opened.add(r["sid"])
        return r["sid"]

    def send(self, sid: int, data: bytes) -> int:
        """Queue data; return how many bytes the send buffer took."""
        from nicsim.hw.ref.tcp import TcpError

        if not data:
            return 0
        if self._auto_send:
            if not 0 <= sid < self.params["sessions"] or sid in self._close_later:
                raise TcpError(f"Session {sid} cannot send")
            # no run here: the SEND goes with the next frames or ticks, as an application's
            # writer beside the engine would issue it while the engine works on them
            self._auto_hand(sid, bytes(data))
            self._work_left = True
            return len(data)
        r = self._command("send", sid=sid, length=len(data), data=bytes(data))
        if not r["ok"]:
            raise TcpError(f"Session {sid} cannot send")
        return r["value"]

    def recv(self, sid: int, max_bytes: int | None = None) -> bytes:
        """Take up to ``max_bytes`` received bytes of a session (those auto-receive read
        first)."""
        held = self._auto_rx.get(sid)
        if held:
            n = len(held) if max_bytes is None else min(max_bytes, len(held))
            data = bytes(held[:n])
            del held[:n]
            return data
        if sid not in self._maybe_data:
            return b""
        want = (1 << 31) if max_bytes is None else max_bytes
        notes = self._data_notes
        r = self._command("recv", sid=sid, length=want)
        data = bytes(self._rx)
        self._rx.clear()
        if r["value"] < want and self._data_notes == notes:
            # drained, and no data came meanwhile (on the wire's clock frames go on during
            # the command: a notification then may be for bytes after the RECV's)
            self._maybe_data.discard(sid)
        return data

    def _query(self, sid: int) -> dict:
        return self._command("query", sid=sid)

    def readable(self, sid: int) -> int:
        """Received bytes waiting for :meth:`recv`."""
        return self._query(sid)["value"]

    def at_eof(self, sid: int) -> bool:
        """The peer sent FIN and every byte before it has been read (auto-receive's bytes
        not yet taken by :meth:`recv` count as unread)."""
        eof = bool(self._query(sid)["eof"])
        return eof and not self._auto_rx.get(sid)

    def state(self, sid: int):
        """Connection state (a :class:`nicsim.hw.ref.tcp.State`)."""
        from nicsim.hw.ref.tcp import State
        from nicsim.rtl.toe.sessions import STATES

        return State(STATES[self._query(sid)["state"]])

    def session_info(self, sid: int) -> dict:
        """Addresses and state of a session."""
        from nicsim.hw.ref.tcp import State, TcpError
        from nicsim.rtl.toe.sessions import STATES

        r = self._query(sid)
        if not r["ok"]:
            raise TcpError(f"No session {sid!r}")
        return {"peer_ip": ".".join(str(b) for b in r["peer_ip"].to_bytes(4, "big")),
                "peer_port": r["peer_port"], "local_port": r["port"],
                "state": State(STATES[r["state"]]), "readable": r["value"]}

    def sessions(self) -> list[int]:
        """Sessions in use (as the notifications tell)."""
        return sorted(self._live | self._opened)

    def close(self, sid: int) -> None:
        """FIN after the queued data (with auto-send, once every byte handed over is in the
        send buffer)."""
        from nicsim.hw.ref.tcp import TcpError

        if self._auto_send and self._auto_waiting(sid):
            self._close_later.add(sid)
            return
        if self.clocked:
            # on the wire's clock the application does not wait for the answer: a CLOSE
            # waits for the transfers before it (those of other sessions too), and the wire
            # would stand still meanwhile. Every command before it was answered (each caller
            # waits), so the next answers that come are the closes'.
            if sid not in self._live and sid not in self._opened:
                raise TcpError(f"No session {sid!r}")
            self._queue_command("close", sid=sid)
            self._detached += 1
            self._work_left = True
            return
        if not self._command("close", sid=sid)["ok"]:
            raise TcpError(f"No session {sid!r}")

    def abort(self, sid: int) -> None:
        """RST and release."""
        from nicsim.hw.ref.tcp import TcpError

        if not self._command("abort", sid=sid)["ok"]:
            raise TcpError(f"No session {sid!r}")
        self._live.discard(sid)

    # ------------------------------------------------------------------------- counters
    def counters(self) -> dict:
        """Counters over the register bus: frames, replies, drops and session events."""
        names = (["frames_in", "arp_replies", "echo_replies", "rst_sent"]
                 + list(self.drop_reasons) + list(self.session_reasons) + ["half_open"])
        addrs = ([0x00, 0x04, 0x08, 0x0C]
                 + [0x10 + 4 * k for k in range(len(self.drop_reasons)
                                                + len(self.session_reasons))] + [0x200])
        self._read_values.clear()
        self._reads.extend(addrs)
        self._run()
        return dict(zip(names, self._read_values, strict=True))

    @property
    def drops(self) -> dict:
        """Frames and segments not used, by reason (the model's names)."""
        from collections import Counter

        events = {"challenge_acks", "retransmits", "timeouts", "fast_retransmits",
                  "window_probes", "segments_out"}
        c = self.counters()
        return Counter({k: v for k, v in c.items()
                        if v and (k in self.drop_reasons
                                  or (k in self.session_reasons and k not in events))})
