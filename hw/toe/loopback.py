"""Two TCP engines on a simulated wire, in engine clock cycles.

The wire has a one-way latency and, optionally, a rate in bits per cycle (a frame occupies the
wire for ``8 * len / rate`` cycles, queued behind the frames before it) and an
:class:`~nicsim.hw.toe.impair.Impairment` per direction. Time jumps from event to event
(frame arrival or engine timer), so idle time costs nothing.

An engine with ``clocked`` set (the RTL drivers with ``clocked=True``) runs on the wire's
clock: it queues what it is given, and the wire runs it with ``run_to(cycle)`` in slices no
longer than the latency (a frame it sends cannot come back sooner, so nothing it could be
given arrives inside a slice) and no further than the next frame on the wire or its next
tick; its frames go on the wire at the cycle they left it (``pop_tx_timed``), and its next
deadline is its own clock while it has work.
"""

from __future__ import annotations

import heapq
import itertools

from .impair import Impairment

__all__ = ["Loopback"]


class Loopback:
    """Connect engine ``a`` and engine ``b`` back to back.

    Parameters
    ----------
    a, b
        Engines with ``receive(frame, now)``, ``advance(now)``, ``pop_tx()`` and
        ``next_deadline()``.
    latency : int
        One-way delay in cycles.
    bits_per_cycle : float or None
        Wire rate; ``None`` for an infinitely fast wire.
    impair_ab, impair_ba : Impairment or None
        Impairments of the two directions.
    tap : callable or None
        ``tap(now, direction, frame)`` sees every frame offered to the wire (``"ab"`` or
        ``"ba"``) and returns the frames to send instead (a list), or ``None`` to send it as it
        is. Tests use it to drop or inspect chosen segments.

    Members
    -------
    now : int
        Current cycle.
    frames : dict
        Frames delivered per direction.
    """

    def __init__(self, a, b, *, latency: int = 1000, bits_per_cycle: float | None = None,
                 impair_ab: Impairment | None = None, impair_ba: Impairment | None = None,
                 tap=None, hosts=()):
        self.engines = (a, b)
        self.latency = latency
        self.bits_per_cycle = bits_per_cycle
        self.impair = (impair_ab or Impairment(), impair_ba or Impairment())
        self.tap = tap
        self.hosts = list(hosts)
        self.now = 0
        self.frames = {"ab": 0, "ba": 0}
        self._queue: list = []
        self._order = itertools.count()
        self._wire_free = [0, 0]
        self._clocked = [bool(getattr(e, "clocked", False)) for e in self.engines]

    def _collect(self) -> None:
        for side, engine in enumerate(self.engines):
            direction = "ab" if side == 0 else "ba"
            timed = (engine.pop_tx_timed() if self._clocked[side]
                     else [(self.now, f) for f in engine.pop_tx()])
            for at, frame in timed:
                offered = [frame]
                if self.tap is not None:
                    replaced = self.tap(at, direction, frame)
                    if replaced is not None:
                        offered = replaced
                for f in offered:
                    for out in self.impair[side].apply(f):
                        self._schedule(side, out, at)

    def _schedule(self, side: int, frame: bytes, at: int | None = None) -> None:
        start = max(self.now if at is None else at, self._wire_free[side])
        if self.bits_per_cycle:
            start += max(1, int(len(frame) * 8 / self.bits_per_cycle))
        self._wire_free[side] = start
        heapq.heappush(self._queue, (start + self.latency, next(self._order), 1 - side, frame))

    def step(self) -> bool:
        """Move to the next event and handle it; return False when nothing is left to do."""
        for host in self.hosts:
            host.step()
        self._collect()
        times = [t for t in (e.next_deadline() for e in self.engines) if t is not None]
        if self._queue:
            times.append(self._queue[0][0])
        if not times:
            held = [f for f in self.impair[0].flush()]
            for f in held:
                self._schedule(0, f)
            held_ba = self.impair[1].flush()
            for f in held_ba:
                self._schedule(1, f)
            return bool(held or held_ba)
        self.now = max(self.now, min(times))
        due: tuple[list, list] = ([], [])
        while self._queue and self._queue[0][0] <= self.now:
            _, _, dst, frame = heapq.heappop(self._queue)
            self.frames["ab" if dst == 1 else "ba"] += 1
            due[dst].append(frame)
        for engine, frames in zip(self.engines, due, strict=True):
            # frames that arrive at the same cycle go in back to back where the engine can
            # take them so (a gateware takes the next one while it works on the one before)
            burst = getattr(engine, "receive_burst", None)
            if burst is not None and frames:
                burst(frames, self.now)
            else:
                for frame in frames:
                    engine.receive(frame, self.now)
        for engine in self.engines:
            engine.advance(self.now)
        for host in self.hosts:
            host.step()
        self._collect()
        if any(self._clocked):
            for side, engine in enumerate(self.engines):
                if not self._clocked[side]:
                    continue
                horizon = [self.now + max(1, self.latency)]
                if self._queue:
                    horizon.append(self._queue[0][0])
                tick = engine.next_tick()
                if tick is not None:
                    horizon.append(tick)
                engine.run_to(max(self.now + 1, min(horizon)))
            for host in self.hosts:
                host.step()
            self._collect()
        return True

    def run(self, until=None, *, max_cycles: int | None = None, max_steps: int = 10_000_000):
        """Step until ``until()`` is true, nothing is left, ``max_cycles`` pass or
        ``max_steps`` steps; return whether ``until()`` became true (True if no predicate)."""
        limit = None if max_cycles is None else self.now + max_cycles
        for _ in range(max_steps):
            if until is not None and until():
                return True
            if limit is not None and self.now >= limit:
                break
            if not self.step():
                break
        return until() if until is not None else True
