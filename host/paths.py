"""Host packet paths on the NIC driver: a poll-mode driver and an interrupt-driven one.

Each path is a SimPy process per core that takes bursts of completions from its receive queues,
charges the CPU work of each step as simulated time, hands the frames to an application and
recycles the buffers. Costs are named per operation with their source; the end-to-end figures
come out of the simulation, they are not fitted.

Where the modeled software batches (a PMD burst, a NAPI budget), a batch is one simulation
step. An idle poll-mode core does not spin event by event: it sleeps until the next DMA write
lands in host memory (or a short step passes), which is when a spinning core would have found
it — the core counts as busy all the while, as a PMD core is.
"""

from __future__ import annotations

from array import array

from nicsim.host.driver import RX_FREE_THRESH
from nicsim.hw.nic.formats import CplFlags

__all__ = ["Costs", "Core", "PmdPath", "IrqPath", "APPS"]

_LEN = 2  # COMPLETION field positions used here
_FLAGS = 6
_SEGS = 7


class Costs:
    """CPU cost per operation, in picoseconds (a scenario may override any of them).

    Sources: cache and IRQ figures from J. D. Brouer's kernel measurements (see
    REFERENCES.md); the rest are stated assumptions until the bottom-up host model replaces
    them.
    """

    L2_HIT_PS = 4_300  # Brouer: L2 hit 4.3 ns
    L3_HIT_PS = 7_900  # Brouer: L3 hit 7.9 ns; DDIO places DMA-written lines in the LLC
    CACHE_MISS_PS = 32_000  # Brouer: cache miss ~32 ns
    IRQ_SAVE_RESTORE_PS = 14_800  # Brouer: IRQ save/restore 14.8 ns
    MMIO_WRITE_PS = 50_000  # assumption: an uncached posted store as the CPU sees it
    IRQ_ENTRY_PS = 1_000_000  # assumption: interrupt entry, handler and exit, ~1 us
    COPY_PS_PER_BYTE = 100  # assumption: ~10 GB/s memcpy of cache-resident data

    def __init__(self, **overrides):
        for name, value in overrides.items():
            if not hasattr(Costs, name) or not name.endswith("_PS"):
                raise ValueError(f"unknown host cost {name!r}; costs are "
                                 + ", ".join(n for n in dir(Costs) if n.endswith("_PS")))
            setattr(self, name, int(value))


class Core:
    """A CPU core's time accounting.

    Members
    -------
    busy_ps : int
        Time spent working (a polling core counts its polling as work).
    """

    def __init__(self, env, num):
        self.env = env
        self.num = num
        self.busy_ps = 0
        self.start_ps = env.now

    def busy(self, end_ps=None):
        """Return the busy share 0..1 from the start to ``end_ps`` (default now)."""
        elapsed = (self.env.now if end_ps is None else end_ps) - self.start_ps
        return min(1.0, self.busy_ps / elapsed) if elapsed > 0 else 0.0


class _App:
    """What the application does with received frames; records latency and counts."""

    name = "drop"

    def __init__(self, path):
        self.path = path
        self.frames = 0
        self.bytes = 0
        self.latency_ps = array("q")
        self.first_ps = None  # first and last time frames were finished
        self.last_ps = None
        self.completions = 0  # frames as the host saw them (an LRO frame counts once)

    def cost(self, n, nbytes):
        """CPU time for ``n`` frames of ``nbytes`` in all."""
        return n * self.path.costs.L2_HIT_PS  # touch the buffer's metadata, free it

    def done(self, frames, nbytes, t_done):
        """Count ``frames`` finished at ``t_done``."""
        if self.first_ps is None:
            self.first_ps = t_done
        self.last_ps = t_done
        self.frames += frames
        self.bytes += nbytes

    def handle(self, frames, t_done):
        """Consume (entry, buffer) pairs that are finished at ``t_done``."""
        tags = self.path.bus.tags
        lat = self.latency_ps
        devs = self.path.dev_addr
        nbytes = 0
        segs = 0
        for entry, buf in frames:
            born = tags.pop(devs[buf], None)
            if born is not None:
                lat.append(t_done - born)
            nbytes += entry[_LEN]
            segs += entry[_SEGS]
        self.completions += len(frames)
        self.done(segs, nbytes, t_done)  # an LRO frame stands for its segments


class _Forward(_App):
    """Send every frame back out of the port it came in on, MAC addresses swapped (l2fwd)."""

    name = "l2fwd"

    def cost(self, n, nbytes):
        return n * (self.path.costs.L2_HIT_PS * 2) + nbytes * self.path.costs.COPY_PS_PER_BYTE

    def handle(self, frames, t_done):
        bus = self.path.bus
        tags = bus.tags
        devs = self.path.dev_addr
        out = []
        born = []
        for entry, buf in frames:
            length = entry[_LEN]
            data = bus.mem_read(buf, length)
            out.append(data[6:12] + data[0:6] + data[12:])
            born.append(tags.pop(devs[buf], t_done))
        self.done(len(frames), sum(len(d) for d in out), t_done)
        txq = self.path.driver.tx[0]
        txq.reap()
        sent = txq.send(out, born=born)
        if sent < len(out):
            self.path.drops["tx_ring_full"] = self.path.drops.get("tx_ring_full", 0) \
                + len(out) - sent


APPS = {"drop": _App, "l2fwd": _Forward}


class _Path:
    def __init__(self, env, bus, driver, queues, core, costs, app="drop", burst=32):
        if app not in APPS:
            raise ValueError(f"host.app must be one of {', '.join(APPS)}, not {app!r}")
        self.env = env
        self.bus = bus
        self.driver = driver
        self.queues = [driver.rx[q] for q in queues]
        self.core = core
        self.costs = costs
        self.burst = burst
        self.drops = {}
        self.truncated = 0
        self.dev_addr = {}
        for q in self.queues:
            self.dev_addr.update(zip(q.buffers, q.buffers_dev, strict=True))
        self.app = APPS[app](self)

    def _take(self, q, budget):
        """Take up to ``budget`` frames from queue ``q``; return them and their CPU cost."""
        got = q.receive(budget)
        if not got:
            return got, self.costs.L3_HIT_PS  # looked at the next completion: not there
        nbytes = 0
        for entry, _ in got:
            nbytes += entry[_LEN]
            if entry[_FLAGS] & CplFlags.TRUNCATED:
                self.truncated += 1
        c = self.costs
        doorbells = 2 if self.flush or q.hold + len(got) >= RX_FREE_THRESH else 0
        cost = (len(got) * c.L3_HIT_PS  # read each completion (DDIO: in the LLC)
                + doorbells * c.MMIO_WRITE_PS  # the receive doorbell and the completion head
                + self.app.cost(len(got), nbytes))
        return got, cost

    flush = True  # tell the device of every batch of recycled buffers at once

    def _finish(self, q, got):
        self.app.handle(got, self.env.now)
        q.refill(len(got), self.flush)


class PmdPath(_Path):
    """A DPDK-style poll-mode driver: one core busy-polls its queues in bursts (32) and rings
    the receive doorbell once 32 buffers are free (``rx_free_thresh``)."""

    IDLE_STEP_PS = 1_000_000  # longest sleep of an idle poll loop between looks
    flush = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for n in range(len(self.driver.rx)):
            self.driver.arm(n, False)
        self.env.process(self.run())

    def run(self):
        """Poll; one simulation step per loop over the queues.

        The loop's work is charged by moving the core's clock ``t`` on: frames are finished
        and doorbells rung at the time the work reaches them. Then the core sleeps until the
        next completion lands, which is when polling would have found it.
        """
        env = self.env
        bus = self.bus
        core = self.core
        app = self.app
        step = self.IDLE_STEP_PS
        while True:
            t = env.now
            for q in self.queues:
                got, cost = self._take(q, self.burst)
                t += cost
                if got:
                    app.handle(got, t)
                    q.refill(len(got), False, t)
            landing = bus.next_landing()
            wake = t + step
            if landing is not None and landing < wake:
                wake = max(landing, t)
            yield env.timeout(wake - env.now)
            core.busy_ps = env.now - core.start_ps  # a polling core is always busy


class IrqPath(_Path):
    """An interrupt-driven driver (NAPI-style): the interrupt schedules a poll of up to
    ``budget`` (64) frames with the queue's interrupt disabled; polling continues while
    the budget is used up, and the interrupt is re-armed when the queue runs dry."""

    def __init__(self, *args, budget=64, **kwargs):
        super().__init__(*args, **kwargs)
        self.budget = budget
        self.interrupts = 0
        self.polls = 0
        self.scheduled = False
        for n in range(len(self.queues)):
            self.driver.arm(n, True)

    def interrupt(self, vector, t_ps):
        """MSI-X delivery: run the poll unless one is scheduled."""
        self.interrupts += 1
        if not self.scheduled:
            self.scheduled = True
            self.env.process(self.poll())

    def poll(self):
        env = self.env
        core = self.core
        c = self.costs
        start = env.now
        yield env.timeout(c.IRQ_ENTRY_PS)
        for n in range(len(self.queues)):
            self.driver.arm(n, False)
        while True:
            self.polls += 1
            done = 0
            for q in self.queues:
                got, cost = self._take(q, self.budget)
                yield env.timeout(cost)
                if got:
                    self._finish(q, got)
                    done += len(got)
            if done < self.budget * len(self.queues):
                break
        self.scheduled = False
        for n in range(len(self.queues)):
            self.driver.arm(n, True)
        core.busy_ps += env.now - start
