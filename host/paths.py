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

import random
from array import array
from dataclasses import dataclass, field

from nicsim.host.cpu import CostModel
from nicsim.host.driver import RX_FREE_THRESH
from nicsim.hw.nic.formats import CplFlags

__all__ = ["PathContext", "PATHS", "make_path", "PmdPath", "IrqPath", "APPS"]

_LEN = 2  # COMPLETION field positions used here
_FLAGS = 6
_SEGS = 7


@dataclass
class PathContext:
    """What a packet path needs of the host it runs on.

    Members
    -------
    env : simpy.Environment
    bus : object
        The host's view of the machine (see :mod:`nicsim.host.driver`).
    costs : nicsim.host.cpu.CostModel
    params : object
        The scenario's ``[host]`` section (path options, burst, budget, ...).
    features : frozenset of str
        NIC offloads present and on (``rx_csum``, ``tx_csum``, ``rss``, ``tso``, ``uso``,
        ``lro``).
    rng : random.Random
        Seeded randomness for the path.
    on_interrupt : callable
        ``on_interrupt(fn, vector, handler)``: call ``handler(vector, t_ps)`` when MSI-X
        ``vector`` of PCI function ``fn`` is delivered.
    """

    env: object
    bus: object
    costs: CostModel
    params: object
    features: frozenset = frozenset()
    rng: random.Random = field(default_factory=random.Random)
    on_interrupt: object = None


# Packet paths by scenario name (``host.path``), as "module:Class" so that each loads only
# when used. Every class is built as ``Class(ctx, driver, queues, cores)``.
PATHS = {
    "pmd": "nicsim.host.paths:PmdPath",
    "irq": "nicsim.host.paths:IrqPath",
    "linux": "nicsim.host.linux:LinuxPath",
    "netmap": "nicsim.host.bypass:NetmapPath",
}


def make_path(name, ctx, driver, queues, cores):
    """Build the packet path ``name`` of :data:`PATHS` on ``cores`` for ``queues``."""
    import importlib

    if name not in PATHS:
        raise ValueError(f"host.path must be one of {', '.join(PATHS)}, not {name!r}")
    module, cls = PATHS[name].split(":")
    return getattr(importlib.import_module(module), cls)(ctx, driver, list(queues), cores)


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
        return n * self.path.costs.l2_hit  # touch the buffer's metadata, free it

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
        costs = self.path.costs
        return n * costs.l2_hit * 2 + costs.copy(nbytes)

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
    """What the driver-level paths share: queues, buffers, the application, drops.

    Parameters
    ----------
    ctx : PathContext
    driver : nicsim.host.driver.NicDriver
    queues : list of int
        Receive queues this path serves.
    cores : list of nicsim.host.cpu.Core
        Cores it runs on (these paths use the first).

    Members
    -------
    app : object
        The application; ``app.frames``, ``app.bytes``, ``app.latency_ps``,
        ``app.first_ps``, ``app.last_ps`` and ``app.completions`` are what results read.
    drops : dict
        Frames the host dropped, by reason.
    """

    def __init__(self, ctx, driver, queues, cores):
        app = ctx.params.app
        if app not in APPS:
            raise ValueError(f"host.app {app!r} does not run on host.path "
                             f"{ctx.params.path!r}; it runs {', '.join(APPS)}")
        self.ctx = ctx
        self.env = ctx.env
        self.bus = ctx.bus
        self.driver = driver
        self.queues = [driver.rx[q] for q in queues]
        self.cores = cores
        self.core = cores[0]
        self.costs = ctx.costs
        self.burst = ctx.params.burst
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
            return got, self.costs.l3_hit  # looked at the next completion: not there
        nbytes = 0
        for entry, _ in got:
            nbytes += entry[_LEN]
            if entry[_FLAGS] & CplFlags.TRUNCATED:
                self.truncated += 1
        c = self.costs
        doorbells = 2 if self.flush or q.hold + len(got) >= RX_FREE_THRESH else 0
        cost = (len(got) * c.l3_hit  # read each completion (DDIO: in the LLC)
                + doorbells * c.mmio_write  # the receive doorbell and the completion head
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

    def __init__(self, ctx, driver, queues, cores):
        super().__init__(ctx, driver, queues, cores)
        for q in queues:
            self.driver.arm(q, False)
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
            core.charge(env.now - core.start_ps - core.busy_ps, "poll")  # always busy


class IrqPath(_Path):
    """An interrupt-driven driver (NAPI-style): the interrupt schedules a poll of up to
    ``budget`` (64) frames with the queue's interrupt disabled; polling continues while
    the budget is used up, and the interrupt is re-armed when the queue runs dry."""

    def __init__(self, ctx, driver, queues, cores):
        super().__init__(ctx, driver, queues, cores)
        self.budget = ctx.params.budget
        self.interrupts = 0
        self.polls = 0
        self.scheduled = False
        for q in queues:
            self.driver.arm(q, True)
            ctx.on_interrupt(driver.fn, q % driver.vectors, self.interrupt)

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
        yield env.timeout(c.irq_entry_exit)
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
        core.charge(env.now - start, "softirq")
