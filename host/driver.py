"""The NIC's driver: rings in host memory, doorbells, completions, buffers.

:class:`NicDriver` does what a kernel driver or a poll-mode driver does at the register level,
with the register map and layouts of :mod:`nicsim.hw.nic` (the same tables the device uses):
it allocates descriptor and completion rings, programs the queues, posts receive buffers,
reads completions by their phase bit, recycles buffers and rings doorbells, and places frames
to send. It works through a *bus*, the host's view of the machine, which the simulation
provides:

``bus.now`` (ps), ``bus.alloc(size, align, fn)`` (memory of function ``fn``'s driver),
``bus.mem_read(addr, size)``,
``bus.mem_write(addr, data)`` (CPU accesses; DMA writes become visible when they land),
``bus.mmio_write(fn, offset, value, at_ps=None)`` (a posted write through PCIe; errors raise
:class:`nicsim.hw.nic.device.RegisterError`), ``bus.dma_map(fn, addr, size)`` (the DMA API:
grants the device access through the IOMMU and returns the device address),
``bus.watch_range(addr, size)`` (the rings a poller watches: ``bus.next_landing()`` says when
the next DMA write into them lands), ``bus.tags``.

Paths (PMD, NAPI, ...) and their CPU costs are built on top of it in :mod:`nicsim.host.paths`.
"""

from __future__ import annotations

from nicsim.hw.nic import regs
from nicsim.hw.nic.formats import COMPLETION, CPL_BYTES, DESC_BYTES, RX_DESC, TX_DESC, CplFlags

__all__ = ["NicDriver", "RxQueue", "TxQueue", "RX_BUFFER_BYTES", "RX_FREE_THRESH"]

RX_BUFFER_BYTES = 2048  # one buffer per frame up to the standard MTU (as DPDK's default mbuf)
RX_FREE_THRESH = 32  # DPDK's default rx_free_thresh: buffers held before a doorbell
_CPL = COMPLETION.struct
_TX_PACK = TX_DESC.struct.pack


class _Ring:
    """Host side of one descriptor ring and its completion ring."""

    def __init__(self, driver, num, log2, transmit):
        bus = driver.bus
        self.driver = driver
        self.num = num
        self.log2 = log2
        self.size = 1 << log2
        self.mask = self.size - 1
        self.ring = bus.alloc(self.size * DESC_BYTES, 4096, driver.fn)
        self.cq = bus.alloc(self.size * CPL_BYTES, 4096, driver.fn)
        self.ring_dev = bus.dma_map(driver.fn, self.ring, self.size * DESC_BYTES)
        self.cq_dev = bus.dma_map(driver.fn, self.cq, self.size * CPL_BYTES)
        bus.watch_range(self.cq_dev, self.size * CPL_BYTES)
        self.tail = 0  # producer index (free running, 16 bit)
        self.cq_head = 0
        size = driver.buffer_bytes
        self.buffer_bytes = size
        self.buffers = [bus.alloc(size, 64, driver.fn) for _ in range(self.size)]
        self.buffers_dev = [bus.dma_map(driver.fn, b, size) for b in self.buffers]
        reg = regs.txq_reg if transmit else regs.rxq_reg
        fn = driver.fn
        self.tail_reg = reg(num, "TAIL")
        self.cq_head_reg = reg(num, "CQ_HEAD")
        self.vector_reg = reg(num, "VECTOR")
        for name, value in (("RING_LO", self.ring_dev & 0xFFFFFFFF),
                            ("RING_HI", self.ring_dev >> 32), ("RING_LOG2", log2),
                            ("CQ_LO", self.cq_dev & 0xFFFFFFFF), ("CQ_HI", self.cq_dev >> 32),
                            ("CQ_LOG2", log2), ("VECTOR", num % driver.vectors),
                            ("CTRL", regs.QueueCtrl.ENABLE)):
            bus.mmio_write(fn, reg(num, name), value)

    def completions(self, budget):
        """Return up to ``budget`` new completion entries (tuples of COMPLETION fields)."""
        bus = self.driver.bus
        head = self.cq_head
        log2 = self.log2
        out = []
        while len(out) < budget:
            slot = head & self.mask
            count = min(budget - len(out), self.size - slot, 8)  # a cache line pair
            raw = bus.mem_read(self.cq + slot * CPL_BYTES, count * CPL_BYTES)
            phase = ((head >> log2) & 1) ^ 1
            taken = 0
            for n in range(count):
                entry = _CPL.unpack_from(raw, n * CPL_BYTES)
                if entry[6] & CplFlags.PHASE != phase:
                    break
                out.append(entry)
                taken += 1
            head = (head + taken) & 0xFFFF
            if taken < count:
                break
        self.cq_head = head
        return out

    def release(self, at_ps=None):
        """Tell the device how far the completion ring was consumed."""
        self.driver.bus.mmio_write(self.driver.fn, self.cq_head_reg, self.cq_head, at_ps)


class RxQueue(_Ring):
    """A receive queue with one buffer per ring slot (the slot's buffer never changes, so a
    recycled descriptor needs no rewrite, only a doorbell)."""

    def __init__(self, driver, num, log2):
        super().__init__(driver, num, log2, False)
        self.hold = 0  # buffers given back but not yet posted with a doorbell
        bus = driver.bus
        pack = RX_DESC.struct.pack
        for slot in range(self.size):
            bus.mem_write(self.ring + slot * DESC_BYTES,
                          pack(self.buffers_dev[slot], self.buffer_bytes))
        self.refill(self.size)

    def refill(self, count, flush=True, at_ps=None):
        """Give back ``count`` buffers (slots are recycled in order) and the completions
        consumed with them.

        The device hears of them (the completion-ring head and the doorbell, two MMIO writes)
        at once with ``flush``; otherwise once :data:`RX_FREE_THRESH` are held, as DPDK's
        ``rx_free_thresh`` does. ``at_ps`` is when the CPU writes (default now).
        """
        self.hold += count
        if self.hold and (flush or self.hold >= RX_FREE_THRESH):
            self.release(at_ps)
            self.tail = (self.tail + self.hold) & 0xFFFF
            self.hold = 0
            self.driver.bus.mmio_write(self.driver.fn, self.tail_reg, self.tail, at_ps)

    def receive(self, budget):
        """Return up to ``budget`` received frames as (completion entry, buffer address).

        The buffers stay the application's until :meth:`refill` posts them again.
        """
        entries = self.completions(budget)
        buffers = self.buffers
        mask = self.mask
        return [(e, buffers[e[1] & mask]) for e in entries]


class TxQueue(_Ring):
    """A transmit queue; frames are copied into the slot's buffer (or sent in place)."""

    def __init__(self, driver, num, log2):
        super().__init__(driver, num, log2, True)
        self.inflight = 0

    def room(self):
        """Return the free descriptors."""
        return self.size - self.inflight

    def send(self, frames, flags=0, param=0, born=None):
        """Place frames (bytes) in the ring and ring the doorbell; return how many fit."""
        bus = self.driver.bus
        count = min(len(frames), self.room())
        tags = bus.tags
        for n in range(count):
            slot = (self.tail + n) & self.mask
            data = frames[n]
            buf = self.buffers[slot]
            bus.mem_write(buf, data)
            dev = self.buffers_dev[slot]
            bus.mem_write(self.ring + slot * DESC_BYTES,
                          _TX_PACK(dev, len(data), flags, 0, param))
            if born is not None:
                tags[dev] = born[n]
        if count:
            self.tail = (self.tail + count) & 0xFFFF
            self.inflight += count
            bus.mmio_write(self.driver.fn, self.tail_reg, self.tail)
        return count

    def reap(self, budget=1 << 16):
        """Consume transmit completions; return how many frames finished."""
        done = len(self.completions(budget))
        self.inflight -= done
        return done


class NicDriver:
    """Bring up one PCI function of the NIC and own its queues.

    Parameters
    ----------
    bus : object
        The host's view of the machine (see the module documentation).
    fn : int
        PCI function (0: the physical function, n: virtual function n).
    rxqs, txqs : int
        Queues to bring up.
    ring_log2 : int
        log2 of every ring's entries.
    ctrl : int
        :class:`nicsim.hw.nic.regs.Ctrl` bits to set.
    buffer_bytes : int
        Bytes of every receive and transmit buffer (one per ring slot).
    mac : bytes
        Station MAC address.
    vectors : int
        MSI-X vectors to spread the queues over (queue n uses vector n % vectors).
    """

    def __init__(self, bus, fn=0, rxqs=1, txqs=1, ring_log2=10, ctrl=0, mac=None,
                 vectors=1, rss_table=None, buffer_bytes=RX_BUFFER_BYTES):
        if not 64 <= buffer_bytes <= 1 << 20:
            raise ValueError(f"nic.buffer_bytes must be 64..1048576, not {buffer_bytes}")
        self.buffer_bytes = buffer_bytes
        self.bus = bus
        self.fn = fn
        self.vectors = vectors
        write = bus.mmio_write
        if mac is not None:
            write(fn, regs.reg("MAC_LO"), int.from_bytes(mac[2:], "big"))
            write(fn, regs.reg("MAC_HI"), int.from_bytes(mac[:2], "big"))
        if rss_table is not None:
            for n, queue in enumerate(rss_table):
                write(fn, regs.reg("RSS_TABLE", n), queue)
        self.rx = [RxQueue(self, n, ring_log2) for n in range(rxqs)]
        self.tx = [TxQueue(self, n, ring_log2) for n in range(txqs)]
        write(fn, regs.reg("CTRL"), ctrl | regs.Ctrl.RX_ENABLE | regs.Ctrl.TX_ENABLE)

    def arm(self, queue, armed=True):
        """Enable (or disable) the interrupt of receive queue ``queue``."""
        q = self.rx[queue]
        value = (queue % self.vectors) | (regs.VECTOR_ARMED if armed else 0)
        self.bus.mmio_write(self.fn, q.vector_reg, value)
