"""The RTL engine front end (``rtl/toe``) behind the engine interface the bridge drives.

:class:`RtlFrontEnd` runs :class:`nicsim.rtl.toe.engine.ToeEngine` in Amaranth's simulator and
offers the methods :class:`~nicsim.hw.toe.bridge.TapBridge` calls on an engine (``receive``,
``advance``, ``pop_tx``, ``next_deadline``, ``config.clock_hz``, ``ip``), so the Linux stack can
talk to the gateware: ARP, ICMP echo, and a RST for every TCP connection attempt (the session
engine is not in the gateware yet). The gateware has no timers yet, so its clock is not tied
to the wall clock: each received frame runs the simulation until the frame is taken and the
answer, if any, is out.
"""

from __future__ import annotations

from collections import deque
from types import SimpleNamespace

from nicsim.hw.ref.tcp import CLOCK_HZ, ip_to_bytes

__all__ = ["RtlFrontEnd"]

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
