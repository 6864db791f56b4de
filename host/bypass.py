# Ref: L. Rizzo, "netmap: a novel framework for fast packet I/O", USENIX ATC 2012 (§3: rings
#      in shared memory, NIOCRXSYNC/NIOCTXSYNC, poll() and interrupts)
"""Kernel bypass with a kernel in the loop: netmap.

The NIC's rings are mapped into the application (netmap's rings and preallocated buffers): no
skb, no copy, no per-frame allocation. The application thread sleeps in ``poll()`` while its
ring is empty, the queue's interrupt wakes it, and it then takes every frame that has arrived
in one batch. Each ``poll()``/``ioctl(NIOCRXSYNC)`` is one system call (``poll_syscall``) that
hands the slots the application is done with back to the NIC and reports the new ones, so at
high load a call covers many frames and the thread stops sleeping; at low load each batch
costs an interrupt, a wake-up and two calls. CPU use follows the load.

The poll-mode driver (:class:`nicsim.host.paths.PmdPath`) is the other kernel-bypass path.
"""

from __future__ import annotations

from functools import partial

from nicsim.host.apps import APPS, AppGroup
from nicsim.host.paths import _Path

__all__ = ["NetmapPath"]


class _Ring:
    """One netmap ring: a receive queue, the thread that serves it, its transmit queue."""

    __slots__ = ("q", "core", "txq", "wake", "release", "reap_ps", "app")

    def __init__(self, q, core, txq):
        self.q = q
        self.core = core
        self.txq = txq
        self.wake = None  # the event a thread sleeping in poll() waits for
        self.release = 0  # slots done with, handed back at the next sync
        self.reap_ps = 0  # transmit completions read since the last sync
        self.app = None  # this ring's thread's application


class NetmapPath(_Path):
    """netmap: one application thread per receive ring, ring ``i`` on core ``i % cores``.

    A thread loops: a sync (``poll_syscall``; per slot handed back a descriptor rewrite, four
    to a line, and the doorbell and completion-head writes; per new frame its completion read
    from the LLC and its netmap slot written, ``l3_hit + l2_hit``), then the application on
    every new frame in place, then, if it answers, the copies into transmit slots and a
    ``NIOCTXSYNC`` (``poll_syscall`` and the descriptors and doorbell). A sync that finds
    nothing arms the queue's interrupt (an MMIO write) and sleeps; the interrupt
    (``irq_entry_exit`` on the thread's core) wakes it (``context_switch``) and it disarms
    the interrupt again.

    Members
    -------
    syscalls : int
        Sync calls made (receive and transmit).
    interrupts : int
        Interrupts taken.
    wakeups : int
        Times a sleeping thread was woken.
    batches : int
        Syncs that found frames.
    """

    def __init__(self, ctx, driver, queues, cores):
        super().__init__(ctx, driver, queues, cores)
        self.syscalls = 0
        self.interrupts = 0
        self.wakeups = 0
        self.batches = 0
        self.rings = []
        by_vector = {}
        for n, q in enumerate(self.queues):
            ring = _Ring(q, cores[n % len(cores)], driver.tx[min(q.num, len(driver.tx) - 1)])
            self.rings.append(ring)
            by_vector.setdefault(q.num % driver.vectors, []).append(ring)
            driver.arm(q.num, False)
        for vector, rings in by_vector.items():
            ctx.on_interrupt(driver.fn, vector, partial(self._interrupt, rings))
        # Each ring's thread has its own application state (they run concurrently).
        for ring in self.rings:
            ring.app = APPS[ctx.params.app](self)
        self.app = AppGroup([ring.app for ring in self.rings])
        for ring in self.rings:
            self.env.process(self._thread(ring))

    def _interrupt(self, rings, vector, t_ps):
        self.interrupts += 1
        self.env.process(self._irq(rings))

    def _irq(self, rings):
        """The interrupt handler (on the first ring's core): wake the sleeping threads."""
        yield from rings[0].core.work(self.costs.irq_entry_exit, "irq", priority=0)
        for ring in rings:
            if ring.wake is not None:
                wake, ring.wake = ring.wake, None
                self.wakeups += 1
                wake.succeed()

    def _run(self, core, parts):
        """Hold ``core`` for the ``[(ps, kind)]`` parts in one go and account each."""
        with core.resource.request(priority=2) as req:
            yield req
            yield self.env.timeout(sum(ps for ps, _ in parts))
            for ps, kind in parts:
                core.charge(ps, kind)

    def _thread(self, ring):
        env = self.env
        c = self.costs
        app = ring.app
        driver = self.driver
        q = ring.q
        core = ring.core
        per_frame = c.l3_hit + c.l2_hit  # completion read (DDIO), netmap slot written
        while True:
            # poll() / NIOCRXSYNC: hand back the slots done with, report the new frames.
            got = q.receive(q.size)
            n = len(got)
            self.syscalls += 1
            sync = c.poll_syscall + n * per_frame + ring.reap_ps
            ring.reap_ps = 0
            if ring.release:
                sync += -(-ring.release // 4) * c.l2_hit + 2 * c.mmio_write
                q.refill(ring.release, True)
                ring.release = 0
            if not n:
                yield from self._run(core, [(sync + c.mmio_write, "syscall")])
                driver.arm(q.num, True)  # completions already in interrupt at once
                ring.wake = env.event()
                yield ring.wake
                yield from self._run(core, [(c.context_switch + c.mmio_write, "syscall")])
                driver.arm(q.num, False)
                continue
            self.batches += 1
            pkts = self._packets(got)  # zero-copy: the frames stay in their slots
            work = app.process(pkts)
            yield from self._run(core, [(sync, "syscall"), (work, "app")])
            out = app.finish(env.now)
            if out is not None:
                # Copies into the transmit slots, then NIOCTXSYNC: descriptors and doorbell.
                copy = round(c.memcpy * sum(map(len, out[0])))
                txsync = c.poll_syscall + self._tx_ps(out[0]) - copy
                self.syscalls += 1
                yield from self._run(core, [(copy, "app"), (txsync, "syscall")])
                ring.reap_ps += self._transmit(ring.txq, out)
            ring.release = n
