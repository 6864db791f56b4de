"""Host packet paths on the NIC driver: a poll-mode driver and an interrupt-driven one.

Each path is a SimPy process per core that takes bursts of completions from its receive queues,
charges the CPU work of each step as simulated time, hands the frames to an application
(:mod:`nicsim.host.apps`) and recycles the buffers. Costs are named per operation
(:data:`nicsim.host.cpu.COSTS`) with their source; the end-to-end figures come out of the
simulation, they are not fitted.

The receive work is counted in DPDK's terms (``rte_eth_rx_burst`` of a vector-less PMD):
per frame, the completion read (DDIO put it in the LLC: ``l3_hit``), the mbuf's metadata
line (``l2_hit``: a recycled mbuf is warm) and a fresh mbuf from the per-lcore mempool cache
for the slot (``mbuf_alloc``); per four slots one descriptor line rewritten (``l2_hit``);
the doorbell and completion-head writes once ``rx_free_thresh`` buffers are held. After the
application, the mbufs go back to the cache (``mbuf_free``). Replies are copied into the
transmit ring (``memcpy`` per byte; the driver has no zero-copy send), four descriptors per
line and one doorbell per burst; each transmit completion reaped is an ``l3_hit``.

Where the modeled software batches (a PMD burst, a NAPI budget), a batch is one simulation
step. An idle poll-mode core does not spin event by event: it sleeps until the next DMA write
lands in host memory (or a short step passes), which is when a spinning core would have found
it — the core counts as busy all the while, as a PMD core is.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field

from nicsim.host.apps import APPS
from nicsim.host.cpu import CostModel
from nicsim.host.driver import RX_FREE_THRESH

__all__ = ["PathContext", "PATHS", "make_path", "PmdPath", "IrqPath", "MbufRing", "APPS"]

_LEN = 2  # COMPLETION field position used here


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
    "mtcp": "nicsim.host.mtcp:MtcpPath",
    "gpu": "nicsim.host.gpu_path:GpuPath",
    "xdp": "nicsim.host.xdp:XdpPath",
    "xdp_generic": "nicsim.host.xdp:XdpGenericPath",
    "af_xdp": "nicsim.host.afxdp:AfXdpPath",
}


def make_path(name, ctx, driver, queues, cores):
    """Build the packet path ``name`` of :data:`PATHS` on ``cores`` for ``queues``."""
    import importlib

    if name not in PATHS:
        raise ValueError(f"host.path must be one of {', '.join(PATHS)}, not {name!r}")
    module, cls = PATHS[name].split(":")
    return getattr(importlib.import_module(module), cls)(ctx, driver, list(queues), cores)


class _Path:
    """What the driver-level paths share: queues, buffers, the application, drops, and the
    receive and transmit work in per-operation costs.

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
    app : nicsim.host.apps.App
        The application; ``app.frames``, ``app.bytes``, ``app.latency_ps``,
        ``app.first_ps``, ``app.last_ps`` and ``app.completions`` are what results read.
    drops : dict
        Frames the host dropped, by reason.
    """

    flush = True  # tell the device of every batch of recycled buffers at once
    IDLE_STEP_PS = 1_000_000  # longest sleep of an idle poll loop between looks

    def __init__(self, ctx, driver, queues, cores):
        app = ctx.params.app
        if app not in APPS:
            raise ValueError(f"host.app {app!r} does not run on host.path "
                             f"{ctx.params.path!r}; it runs {', '.join(APPS)}")
        self._attach(ctx, driver, queues, cores)
        c = self.costs
        # Transmit on the queue of the first receive queue's number (one per core, as DPDK
        # gives each lcore its own), or the last there is.
        first = self.queues[0].num if self.queues else 0
        self.txq = driver.tx[min(first, len(driver.tx) - 1)]
        # Per received frame: read its completion (DDIO: in the LLC), fill in the mbuf's
        # metadata line, take a fresh mbuf for the slot from the per-lcore cache.
        self.rx_frame_ps = c.l3_hit + c.l2_hit + c.mbuf_alloc
        self.app = APPS[app](self)

    def _attach(self, ctx, driver, queues, cores):
        """Take the context, driver, receive queues and cores (what every path needs)."""
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
        self.dev_addr = {}  # host buffer address -> device (I/O virtual) address
        for q in self.queues:
            self.dev_addr.update(zip(q.buffers, q.buffers_dev, strict=True))

    def _rx_ps(self, q, n):
        """CPU time to take ``n`` frames from ``q`` and post fresh buffers (call before
        :meth:`RxQueue.refill`)."""
        c = self.costs
        doorbells = 2 if self.flush or q.hold + n >= RX_FREE_THRESH else 0
        return (n * self.rx_frame_ps + -(-n // 4) * c.l2_hit  # descriptors, 4 to a line
                + doorbells * c.mmio_write)  # the receive doorbell and the completion head

    def _packets(self, got):
        """Turn (completion, buffer) pairs into the applications' packets ``(completion,
        bytes or None, birth time or None)``; the buffers may be reused afterwards."""
        pop = self.bus.tags.pop
        devs = self.dev_addr
        if self.app.needs_data:
            read = self.bus.mem_read
            return [(e, read(buf, e[_LEN]), pop(devs[buf], None)) for e, buf in got]
        return [(e, None, pop(devs[buf], None)) for e, buf in got]

    def _tx_ps(self, frames):
        """CPU time to place ``frames`` in the transmit ring: copies, descriptors (4 to a
        cache line), the doorbell."""
        c = self.costs
        return (round(c.memcpy * sum(map(len, frames))) + -(-len(frames) // 4) * c.l2_hit
                + c.mmio_write)

    def _poll(self, q, count, t):
        """Take up to ``count`` frames from ``q`` with the core's clock at ``t`` and post fresh
        buffers: return the applications' packets (empty when the queue had none) and the
        clock after the work (a miss costs one look at the completion ring)."""
        got = q.receive(count)
        if not got:
            return [], t + self.costs.l3_hit
        n = len(got)
        pkts = self._packets(got)
        t += self._rx_ps(q, n)
        q.refill(n, False, t)
        return pkts, t

    def _send_finished(self, txq, t):
        """Generator: at ``t``, send what the application finished (its copies, descriptors and
        doorbell, then the transmission at that time); return the clock after the work."""
        out = self.app.finish(t)
        if out is not None:
            t += self._tx_ps(out[0])
            yield self.env.timeout(t - self.env.now)
            t += self._transmit(txq, out)
        return t

    def _transmit(self, txq, out):
        """Reap finished transmissions and send ``out`` (an application's ``(frames,
        births, flags)``) now; count what does not fit; return the reaping's CPU time."""
        frames, born, flags = out
        reaped = txq.reap()
        sent = txq.send(frames, flags, born=born)
        if sent < len(frames):
            self.drops["tx_ring_full"] = self.drops.get("tx_ring_full", 0) + len(frames) - sent
        return reaped * self.costs.l3_hit  # each transmit completion read from the LLC

    def _wake_time(self, t, more=False):
        """When a poll loop that finished its work at ``t`` looks again: at once when a burst
        came back full (``more`` may wait), else when the next completion lands (a spinning
        core finds it then), at most a step on."""
        if more:
            return t
        landing = self.bus.next_landing()
        wake = t + self.IDLE_STEP_PS
        if landing is not None and landing < wake:
            wake = max(landing, t)
        return wake


class MbufRing:
    """A bounded ring of mbufs between two lcores (``rte_ring``, single producer and single
    consumer): what a pipeline's RX core hands its workers.

    Parameters
    ----------
    env : simpy.Environment
    size : int
        Ring size, a power of two; it holds ``size - 1`` mbufs, as an ``rte_ring`` made
        without ``RING_F_EXACT_SZ`` does.

    Members
    -------
    enqueued, dequeued : int
        Mbufs that went in and out.
    """

    def __init__(self, env, size):
        if size < 2 or size & (size - 1):
            raise ValueError(f"an rte_ring's size must be a power of two >= 2, not {size!r}")
        self.env = env
        self.capacity = size - 1
        self.items = deque()
        self.waiter = None
        self.enqueued = 0
        self.dequeued = 0

    def put(self, pkts):
        """Enqueue as many of ``pkts`` as fit (``rte_ring_enqueue_burst``); return how many
        did not."""
        room = self.capacity - len(self.items)
        if room < len(pkts):
            stored = pkts[:max(room, 0)]
        else:
            stored = pkts
        self.items.extend(stored)
        self.enqueued += len(stored)
        if stored and self.waiter is not None:
            waiter, self.waiter = self.waiter, None
            waiter.succeed()
        return len(pkts) - len(stored)

    def get(self, burst):
        """Dequeue up to ``burst`` mbufs (``rte_ring_dequeue_burst``)."""
        items = self.items
        count = min(burst, len(items))
        out = [items.popleft() for _ in range(count)]
        self.dequeued += count
        return out

    def wait(self, timeout_ps):
        """Return an event that fires at the next enqueue (a polling consumer finds it) or
        after ``timeout_ps``, whichever comes first."""
        env = self.env
        self.waiter = env.event()
        return env.any_of((self.waiter, env.timeout(timeout_ps)))


class PmdPath(_Path):
    """A DPDK-style poll-mode driver: cores busy-poll in bursts (32) and ring the receive
    doorbell once 32 buffers are free (``rx_free_thresh``); every core is busy all the time.

    ``host.pmd_mode``:

    ``"run_to_completion"``
        The core polls its queues and runs the application on each burst (one path per core,
        queues spread over them by the world).
    ``"pipeline"``
        The first core polls every queue and hands each burst over an :class:`MbufRing`
        (``ring_enqueue`` per mbuf) to the next worker in turn; the other cores dequeue
        (``ring_dequeue`` per mbuf), run the application, send and free the mbufs. A full
        ring drops what does not fit as ``ring_full``. Worker ``w`` sends on transmit queue
        ``w`` (or the last there is).

    Members
    -------
    rings : list of MbufRing
        The workers' rings (pipeline only).
    """

    flush = False
    RING_SIZE = 1024  # entries per worker ring (DPDK examples use 1024..16384)

    def __init__(self, ctx, driver, queues, cores):
        super().__init__(ctx, driver, queues, cores)
        for q in queues:
            self.driver.arm(q, False)
        self.mode = getattr(ctx.params, "pmd_mode", "run_to_completion")
        self.rings = []
        if self.mode == "pipeline":
            if len(cores) < 2:
                raise ValueError(f"host.pmd_mode 'pipeline' needs at least 2 cores, an RX core "
                                 f"and workers, not {len(cores)}: raise host.cores (a virtual "
                                 f"function's path has one core; run those to completion)")
            self.workers = cores[1:]
            self.rings = [MbufRing(self.env, self.RING_SIZE) for _ in self.workers]
            self.env.process(self._rx_core())
            for w in range(len(self.workers)):
                self.env.process(self._worker(w))
        else:
            self.env.process(self.run())

    def run(self):
        """Poll and run to completion; one simulation step per loop over the queues.

        The loop's work is charged by moving the core's clock ``t`` on: frames are finished
        and doorbells rung at the time the work reaches them (replies are sent then). Then
        the core sleeps until the next completion lands, which is when polling would have
        found it.
        """
        env = self.env
        core = self.core
        app = self.app
        txq = self.txq
        burst = self.burst
        free = self.costs.mbuf_free
        while True:
            t = env.now
            app_ps = 0  # accounted once the time has passed
            more = False
            for q in self.queues:
                pkts, t = self._poll(q, burst, t)
                if not pkts:
                    continue
                n = len(pkts)
                more = more or n == burst
                work = app.process(pkts)
                app_ps += work
                t += work
                t = yield from self._send_finished(txq, t)
                t += n * free
            yield env.timeout(self._wake_time(t, more) - env.now)
            core.charge(app_ps, "app")
            core.charge(env.now - core.start_ps - core.busy_ps, "poll")  # always busy

    def _rx_core(self):
        """Pipeline: poll every queue, hand the bursts to the workers' rings in turn."""
        env = self.env
        core = self.core
        rings = self.rings
        burst = self.burst
        c = self.costs
        turn = 0
        while True:
            t = env.now
            more = False
            for q in self.queues:
                pkts, t = self._poll(q, burst, t)
                if not pkts:
                    continue
                n = len(pkts)
                more = more or n == burst
                t += n * c.ring_enqueue
                yield env.timeout(t - env.now)
                lost = rings[turn].put(pkts)
                turn = (turn + 1) % len(rings)
                if lost:
                    self.drops["ring_full"] = self.drops.get("ring_full", 0) + lost
                    t += lost * c.mbuf_free
            yield env.timeout(self._wake_time(t, more) - env.now)
            core.charge(env.now - core.start_ps - core.busy_ps, "poll")

    def _worker(self, w):
        """Pipeline: dequeue bursts from ring ``w``, run the application, send, free."""
        env = self.env
        core = self.workers[w]
        ring = self.rings[w]
        txq = self.driver.tx[min(w, len(self.driver.tx) - 1)]
        app = self.app
        burst = self.burst
        c = self.costs
        while True:
            pkts = ring.get(burst)
            if pkts:
                n = len(pkts)
                t = env.now + n * c.ring_dequeue
                work = app.process(pkts)
                t += work
                t = yield from self._send_finished(txq, t)
                yield env.timeout(t + n * c.mbuf_free - env.now)
                core.charge(work, "app")  # accounted once the time has passed
            else:
                # Spinning on the empty ring: found when the RX core enqueues (and the time
                # accounted at least every step).
                yield ring.wait(self.IDLE_STEP_PS)
            core.charge(env.now - core.start_ps - core.busy_ps, "poll")


class IrqPath(_Path):
    """An interrupt-driven driver (NAPI-style) delivering raw frames: the interrupt schedules
    a poll of up to ``budget`` (64) frames per queue with the queues' interrupts disabled;
    polling continues while the budget is used up, and the interrupts are re-armed when the
    queues run dry. Buffers are recycled as the PMD's are (a per-CPU cache, page_pool-like)
    and handed back to the device after every batch."""

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
        app = self.app
        c = self.costs
        start = env.now
        app_ps = 0
        yield env.timeout(c.irq_entry_exit)
        for q in self.queues:
            self.driver.arm(q.num, False)
        while True:
            self.polls += 1
            done = 0
            for q in self.queues:
                got = q.receive(self.budget)
                if not got:
                    yield env.timeout(c.l3_hit)
                    continue
                n = len(got)
                pkts = self._packets(got)
                rx = self._rx_ps(q, n)
                work = app.process(pkts)
                app_ps += work
                out = app.finish(env.now + rx + work)
                if out is None:
                    yield env.timeout(rx + work + n * c.mbuf_free)
                else:
                    yield env.timeout(rx + work + self._tx_ps(out[0]))
                    yield env.timeout(self._transmit(self.txq, out) + n * c.mbuf_free)
                q.refill(n, True)
                done += n
            if done < self.budget * len(self.queues):
                break
        self.scheduled = False
        for q in self.queues:
            self.driver.arm(q.num, True)
        core.charge(c.irq_entry_exit, "irq")
        core.charge(app_ps, "app")
        core.charge(env.now - start - c.irq_entry_exit - app_ps, "softirq")
