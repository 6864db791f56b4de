# Ref: Linux Documentation/networking/af_xdp.rst (UMEM, fill/completion/RX/TX rings,
#      XDP_COPY and XDP_ZEROCOPY, XDP_USE_NEED_WAKEUP, XDP_STATISTICS), net/xdp/xsk.c
#      (xsk_rcv(), xsk_rcv_check(), __xsk_rcv_zc(), __xsk_rcv() copy, xsk_generic_xmit()),
#      net/core/filter.c (xdp_do_redirect(), __xdp_do_redirect_xsk()), tools/lib/bpf
#      xsk.h (XSK_RING_CONS__DEFAULT_NUM_DESCS = XSK_RING_PROD__DEFAULT_NUM_DESCS = 2048)
"""AF_XDP: an XDP program hands frames to user-space sockets through shared rings.

``host.path = "af_xdp"`` binds one AF_XDP socket to every receive queue and loads an XDP
program that redirects into an xskmap (by default the shipped ``redirect`` object's
``redirect_xsk``: ``bpf_redirect_map(&xsks, rx_queue_index, XDP_PASS)``); every xskmap of the
program gets entry ``q`` -> the socket of queue ``q``. Frames the program does not redirect
take the XDP path of :mod:`nicsim.host.xdp` (XDP_PASS into the Linux stack, XDP_DROP, ...).
A socket takes only the frames of the device and queue it is bound to, whatever slot of the
xskmap names it (``xsk_rcv_check()`` in ``net/xdp/xsk.c``): a program that redirects a frame
of queue 0 to the socket of queue 1 fails the redirect (``-EINVAL`` in the kernel, whose
driver then drops the frame as ``trace_xdp_exception`` reports it): the frame is dropped,
counted as ``xsk_queue_mismatch`` and as a ``redirect_failed`` exception. (The sockets of this
path are bound to the device the program runs on, so only the queue can differ.)

Each socket has a UMEM of ``host.xsk_frames`` frames and four rings of ``host.xsk_ring_size``
entries: *fill* (frames user space lends the kernel to receive into; filled with one ring's
worth at start), *RX* (received frames), *TX* (frames to send) and *completion* (sent frames
given back). In the XDP softirq, per frame redirected to a socket:

``host.xsk_mode = "zerocopy"``
    The frame is already in a UMEM frame (the driver received into it): an RX descriptor is
    written (``ring_enqueue``) and the slot takes the next frame of the fill ring
    (``ring_dequeue``) instead of a page-pool buffer.
``host.xsk_mode = "copy"``
    A UMEM frame is taken from the fill ring (``ring_dequeue``), the frame copied into it
    (``memcpy`` per byte), its RX descriptor written (``ring_enqueue``), and the driver's buffer
    recycled (``rx_refill``).

An empty fill ring drops the frame (``xsk_fill_ring_empty``), a full RX ring too
(``xsk_rx_ring_full``) — XDP_STATISTICS' ``rx_fill_ring_empty_descs`` and ``rx_ring_full``.
Either way ``xsk_rcv()`` fails (``__xsk_rcv()`` finds no UMEM frame to copy into: ``-ENOMEM``;
``__xsk_rcv_zc()`` no room for the descriptor: ``-ENOBUFS``), so the redirect fails and the
driver drops the frame as ``trace_xdp_exception`` reports it: each such frame is also a
``redirect_failed`` exception, as for a socket of another queue. (With zero copy the kernel's
driver would stop refilling instead and the NIC drop; the count lands on the socket here, as
in copy mode.) At the end of each batch a socket's thread asleep in ``poll()`` is
woken (``ipi_send`` when it runs on another core).

The consumer is a user-space thread per socket running a :mod:`nicsim.host.apps` application
(``host.app``) on its own core: ``host.app_cores`` if given, else the cores that take no
receive interrupts (core ``n`` for ``n >= nic.rxqs``), else all cores, socket ``q`` on the
``q``-th of them in turn. It sleeps in ``poll()`` while its RX ring is empty (the wake-up costs
a ``context_switch``, the call a ``syscall``) and otherwise takes up to ``host.burst`` frames
per step: their RX descriptors (``ring_dequeue``), the application's work, the frames back to
the fill ring (``ring_enqueue``). Replies (``l2fwd``, ``udp_echo``, ...) go through the TX ring:
zero copy, a TX descriptor per frame (``ring_enqueue``), one ``sendto()`` kick (``syscall``)
and the driver's descriptors and doorbell (``driver_tx``, ``mmio_write``), the frame sent from
the UMEM without a copy; copy mode, ``xsk_generic_xmit()`` per frame (an skb, the copy,
``driver_tx``, a doorbell, the skb freed).

UMEM frames go round: fill ring, RX ring, the thread; a frame the application is done with is
free again at once, a frame it sends is held by the transmit queue until the NIC has sent it.
The driver's NAPI poll of the queue reaps the NIC's transmit completions (``l3_hit`` each) and
writes them to the *completion* ring (``xsk_tx_completed()``); the thread reads the completion
ring at its next step (``ring_dequeue`` each), and puts free frames back into the fill ring
(``ring_enqueue`` each), as many as fit. A thread asleep with an empty fill ring is woken when
completions arrive. A UMEM too small for the frames in flight on transmit therefore empties
the fill ring and drops frames (``xsk_fill_ring_empty``).
"""

from __future__ import annotations

from collections import deque

from nicsim.host.apps import APPS
from nicsim.host.linux import TX_REAP_THRESH
from nicsim.host.xdp import XdpPath

__all__ = ["AfXdpPath", "XskSocket", "XSK_RING_SIZE", "XSK_MODES"]

XSK_RING_SIZE = 2048  # libxdp's XSK_RING_{CONS,PROD}__DEFAULT_NUM_DESCS
XSK_MODES = ("zerocopy", "copy")


class XskSocket:
    """One AF_XDP socket bound to a receive queue, with its UMEM and rings.

    Parameters
    ----------
    env : simpy.Environment
    queue : int
        The receive queue it is bound to (its xskmap key).
    ring_size : int
        Entries of each of the four rings.
    frames : int
        UMEM frames; ``min(frames, ring_size)`` are put in the fill ring at start.
    core : nicsim.host.cpu.Core
        Where its thread runs.
    app : nicsim.host.apps.App

    Members
    -------
    fill : int
        Frames in the fill ring.
    rx : collections.deque
        Received frames ``(entry, data, born)`` not yet taken.
    free : int
        UMEM frames user space holds, in no ring.
    tx_out : int
        UMEM frames on the transmit queue, not yet completed by the NIC.
    completion : int
        Frames in the completion ring (sent, not yet read by the thread).
    received, transmitted, completed : int
        Frames that went into the RX ring, frames sent, frames completed.
    wakeups : int
        Times the thread was woken from ``poll()``.

    ``fill + len(rx) + free + tx_out + completion`` is always ``frames``.
    """

    def __init__(self, env, queue, ring_size, frames, core, app):
        self.env = env
        self.queue = queue
        self.ring_size = ring_size
        self.frames = frames
        self.fill = min(frames, ring_size)
        self.free = frames - self.fill
        self.tx_out = 0
        self.completion = 0
        self.completed = 0
        self.txq = None
        self.rx = deque()
        self.core = core
        self.app = app
        self.blocked = False
        self.wake = None
        self.received = 0
        self.transmitted = 0
        self.wakeups = 0


class AfXdpPath(XdpPath):
    """AF_XDP sockets on every receive queue behind an XDP program (see the module
    documentation).

    Members
    -------
    sockets : list of XskSocket
        One per receive queue, in queue order.
    mode : str
        ``"zerocopy"`` or ``"copy"``.
    """

    path_name = "af_xdp"
    default_prog = "redirect"
    default_name = "redirect_xsk"

    def __init__(self, ctx, driver, queues, cores):
        params = ctx.params
        app = params.app
        if app not in APPS:
            raise ValueError(f"host.app {app!r} does not run on an AF_XDP socket; it runs "
                             f"{', '.join(APPS)}")
        self.mode = getattr(params, "xsk_mode", None) or "zerocopy"
        if self.mode not in XSK_MODES:
            raise ValueError(f"host.xsk_mode must be one of {', '.join(XSK_MODES)}, not "
                             f"{self.mode!r}")
        self.ring_size = getattr(params, "xsk_ring_size", None) or XSK_RING_SIZE
        if self.ring_size < 2 or self.ring_size & (self.ring_size - 1):
            raise ValueError(f"host.xsk_ring_size must be a power of two >= 2, not "
                             f"{self.ring_size!r}")
        self.umem_frames = getattr(params, "xsk_frames", None) or 2 * self.ring_size
        self.queue_nums = list(queues)
        super().__init__(ctx, driver, queues, cores)

    def _setup(self):
        params = self.ctx.params
        cores = self.cores
        n = len(cores)
        if self.driver.fn == 0 and params.app_cores:
            app_cores = [cores[i] for i in params.app_cores]
        else:
            irq = {(q % self.driver.vectors) % n for q in self.queue_nums}
            if params.irq_affinity == "single":
                irq = {0}
            app_cores = [core for i, core in enumerate(cores) if i not in irq] or list(cores)
        self.sockets = []
        self.by_queue = {}
        self.by_txq = {}  # id(transmit queue) -> the sockets sending on it
        txqs = self.driver.tx
        for i, q in enumerate(self.queue_nums):
            sock = XskSocket(self.env, q, self.ring_size, self.umem_frames,
                             app_cores[i % len(app_cores)], APPS[params.app](self))
            sock.txq = txqs[min(q, len(txqs) - 1)]
            self.sockets.append(sock)
            self.by_queue[q] = sock
            self.by_txq.setdefault(id(sock.txq), []).append(sock)
        # Bind: every xskmap of the program maps queue q to the socket of queue q.
        from nicsim.host.ebpf.protos import MapType

        for m in self.prog.maps:
            if m.type == MapType.xskmap:
                for q in self.queue_nums:
                    if q < m.max_entries:
                        m.update(q.to_bytes(4, "little"), q.to_bytes(4, "little"))
        self.pending = set()  # sockets given frames in the batch under way
        for sock in self.sockets:
            self.env.process(self._thread(sock))

    def extra_apps(self):
        return [sock.app for sock in self.sockets]

    # -- kernel side --------------------------------------------------------------------------

    def _to_xsk(self, stack, cpu, res, born, target, t, rxq):
        c = self.costs
        sock = self.by_queue.get(target.get("target"))
        if sock is None:
            self._fail_redirect("xsk_no_socket")
            return t
        if sock.queue != rxq:  # xsk_rcv_check(): bound to another queue, -EINVAL
            self._fail_redirect("xsk_queue_mismatch")
            return t
        # xsk_rcv() fails, and with it the redirect (an exception, as xdp_do_redirect()'s
        # callers report it): no UMEM frame in the fill ring (__xsk_rcv(): -ENOMEM), no room in
        # the RX ring (__xsk_rcv_zc(): -ENOBUFS).
        if not sock.fill:
            self._fail_redirect("xsk_fill_ring_empty")
            return t
        if len(sock.rx) >= sock.ring_size:
            self._fail_redirect("xsk_rx_ring_full")
            return t
        packet = res.packet
        if self.mode == "zerocopy" and not self.generic:
            t += c.ring_enqueue + c.ring_dequeue - c.rx_refill  # the fill ring's frame, no pool
        else:
            t += c.ring_dequeue + c.copy(len(packet)) + c.ring_enqueue
        sock.fill -= 1
        # The application sees a completion-like entry: length and one segment.
        sock.rx.append(((0, 0, len(packet), 0, 0, 0, 0, 1), packet, born))
        sock.received += 1
        self.pending.add(sock)
        return t

    def _flush(self, stack, cpu, sends):
        return super()._flush(stack, cpu, sends) + self._wake(cpu)

    def _reap(self, txq):
        """Reap ``txq``'s completions; the sockets' frames among them go to their completion
        rings (the oldest sends first, socket by socket)."""
        done = txq.reap()
        left = done
        for sock in self.by_txq.get(id(txq), ()):
            if not left:
                break
            got = min(left, sock.tx_out)
            if got:
                sock.tx_out -= got
                sock.completion += got
                sock.completed += got
                left -= got
                if sock.blocked and not sock.fill:  # starving: poll() returns
                    self.pending.add(sock)
        return done

    def _rx(self, stack, napi, cpu, got):
        sock = self.by_queue.get(napi.num)
        if sock is not None and sock.tx_out:  # the driver's TX clean-up in the same poll
            cpu.t += self._reap(sock.txq) * self.costs.l3_hit
        batch = super()._rx(stack, napi, cpu, got)
        if self.pending and batch.sends is None:
            batch.sends = {}  # a wake-up to do when the core's clock gets there
        return batch

    def _wake(self, cpu):
        """Wake the threads of the sockets given frames (sk_data_ready); return the cost."""
        cost = 0
        for sock in self.pending:
            if sock.blocked:
                sock.blocked = False
                sock.wakeups += 1
                sock.wake.succeed()
                if sock.core is not cpu.core:
                    cost += self.costs.ipi_send
        self.pending.clear()
        return cost

    # -- user space ---------------------------------------------------------------------------

    def _thread(self, sock):
        """The consumer: poll() while the RX ring is empty, else take a batch, run the
        application, refill, send."""
        env = self.env
        c = self.costs
        core = sock.core
        app = sock.app
        burst = self.ctx.params.burst
        zerocopy = self.mode == "zerocopy"
        txq = sock.txq
        while True:
            woke = False
            if not sock.rx and not (sock.completion and not sock.fill):
                sock.blocked = True
                sock.wake = env.event()
                yield sock.wake
                woke = True
            with core.resource.request(priority=2) as req:
                yield req
                start = env.now
                kernel = 0
                if woke:
                    kernel += c.context_switch + c.syscall  # back from poll()
                n = min(burst, len(sock.rx))
                pkts = [sock.rx.popleft() for _ in range(n)]
                work = n * c.ring_dequeue + app.process(pkts)
                out = app.finish(start + kernel + work)
                held = 0  # UMEM frames handed to the transmit queue
                if out is not None:
                    frames, born, flags = out
                    kernel += c.syscall  # sendto() kick
                    if txq.inflight >= TX_REAP_THRESH or txq.room() < len(frames):
                        kernel += self._reap(txq) * c.l3_hit
                    if zerocopy:
                        work += len(frames) * c.ring_enqueue
                        kernel += len(frames) * c.driver_tx + c.mmio_write
                    else:
                        kernel += sum(c.skb_alloc + c.copy(len(f)) + c.driver_tx + c.mmio_write
                                      + c.skb_free for f in frames)
                    work += self._refill_cost(sock, n)
                    yield env.timeout(kernel + work)
                    sent = txq.send(frames, flags, born=born)
                    sock.transmitted += sent
                    held = min(sent, n)
                    if sent < len(frames):
                        lost = len(frames) - sent
                        self.drops["tx_ring_full"] = self.drops.get("tx_ring_full", 0) + lost
                else:
                    if not sock.rx:
                        kernel += c.syscall  # the poll() that finds nothing and sleeps
                    work += self._refill_cost(sock, n)
                    yield env.timeout(kernel + work)
                # The kernel sees the thread's rings now: completions read, frames sent held
                # until their completion, the others free, free frames into the fill ring.
                sock.free += sock.completion + n - held
                sock.completion = 0
                sock.tx_out += held
                move = min(sock.free, sock.ring_size - sock.fill)
                sock.fill += move
                sock.free -= move
                core.charge(work, "app")
                core.charge(kernel, "syscall")

    def _refill_cost(self, sock, n):
        """The thread's ring work besides RX: read the completion ring, refill the fill ring
        (with the frames it read, at most what fits)."""
        c = self.costs
        back = min(sock.free + sock.completion + n, sock.ring_size - sock.fill)
        return sock.completion * c.ring_dequeue + back * c.ring_enqueue
