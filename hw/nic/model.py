"""The NIC's model backend: the device interface implemented with the golden references.

Per PCI function (the physical function 0 and SR-IOV virtual functions 1..n) the model keeps
the registers of :mod:`nicsim.hw.nic.regs`, transmit and receive descriptor rings with
doorbells, a completion ring per queue and MSI-X vectors. Frames that arrive are steered to a
function by destination MAC address, checked (:func:`nicsim.hw.ref.checksum.rx_checksum`),
hashed to a queue (:func:`nicsim.hw.ref.rss.rss_hash`), written to the next posted buffer and
completed with a 32-byte :data:`~nicsim.hw.nic.formats.COMPLETION`; frames to send are read
from the transmit ring, given their checksums or segmented (:mod:`nicsim.hw.ref.tso`) and sent.
Every result is the golden reference's, so it is bit-exact with the RTL engines.

The model is a calendar (see :mod:`nicsim.hw.nic.device`): it handles a batch of frames or a
doorbell at once and computes when each DMA, completion and interrupt happens from the times
carried by the messages and the answers of the PCIe model, without a simulation event per
frame.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from functools import partial

from nicsim.hw.frame import Frame
from nicsim.hw.ref import checksum as ref_checksum
from nicsim.hw.ref import rss as ref_rss
from nicsim.hw.ref.packet import parse_l2

from . import regs
from .device import RegisterError
from .formats import COMPLETION, CPL_BYTES, DESC_BYTES, RX_DESC, TX_DESC, CplFlags, TxFlags

__all__ = ["NicConfig", "NicModel", "DROP_REASONS"]

# Assumptions of the model (named so scenarios can override them through NicConfig):
RX_PIPELINE_PS = 100_000  # MAC to DMA engine: ~25 stages at 250 MHz (Corundum's clock)
TX_PIPELINE_PS = 100_000  # DMA engine to MAC, same assumption
DESC_FETCH_BATCH = 8  # descriptors fetched per DMA read (ixgbe-style prefetch; assumption)
DESC_CACHE = 64  # receive descriptors held on the NIC per queue (assumption, ixgbe-like)
RX_FIFO_BYTES = 128 * 1024  # on-NIC receive buffer waiting for descriptors (assumption)
RX_CACHE_ENTRIES = 4096  # memoized offload results per function (same frame, same result)
LRO_BORN_RECORDS = 4096  # birth times kept for frames in LRO (8 flows x 45 segments fit)

DROP_REASONS = {
    "rx_no_descriptor": "no receive descriptor posted and the NIC's receive FIFO is full",
    "rx_fifo_full": "the receive FIFO is full of frames the PCIe link has not taken yet",
    "rx_cq_full": "the completion ring was full (driver not consuming completions)",
    "rx_not_for_us": "destination MAC of no function and promiscuous mode off",
    "rx_queue_disabled": "RSS picked a receive queue that is not enabled",
    "rx_oversize": "frame longer than the MTU",
    "rx_disabled": "receive not enabled in CTRL",
    "tx_bad_descriptor": "transmit descriptor the NIC cannot carry out",
    "tx_dma_error": "the IOMMU blocked the frame's DMA read",
    "rx_dma_error": "the IOMMU blocked the buffer's DMA write",
}

_CPL = COMPLETION.struct
_TX_DESC = TX_DESC.struct
_RX_DESC = RX_DESC.struct
_FEATURE_OF_CTRL = {
    regs.Ctrl.RX_CSUM: regs.Feature.RX_CSUM,
    regs.Ctrl.RSS: regs.Feature.RSS,
    regs.Ctrl.LRO: regs.Feature.LRO,
}
_QUEUE_REG_NAMES = {r.offset: r.name for r in regs.QUEUE_REGISTERS}
_QUEUE_CTRL = next(r.offset for r in regs.QUEUE_REGISTERS if r.name == "CTRL")
_CTRL_BITS = (regs.Ctrl.RX_ENABLE | regs.Ctrl.TX_ENABLE | regs.Ctrl.RX_CSUM | regs.Ctrl.RSS
              | regs.Ctrl.LRO | regs.Ctrl.PROMISC | regs.Ctrl.BROADCAST)


@dataclass
class NicConfig:
    """What a NIC instance has and how fast its internals are.

    Members
    -------
    txqs, rxqs : int
        Queues of the physical function (1..64 each).
    vfs : int
        SR-IOV virtual functions (0..63), each with ``vf_queues`` transmit and receive queues.
    vectors : int
        MSI-X vectors per function (1..64).
    features : int
        :class:`~nicsim.hw.nic.regs.Feature` bits.
    rx_pipeline_ps, tx_pipeline_ps : int
        Latency of the receive and transmit pipelines.
    desc_fetch_batch : int
        Descriptors fetched per DMA read.
    desc_cache : int
        Receive descriptors the NIC holds per queue (at least ``desc_fetch_batch``).
    rx_fifo_bytes : int
        Receive buffer for frames waiting for a descriptor.
    """

    txqs: int = 1
    rxqs: int = 1
    vfs: int = 0
    vf_queues: int = 1
    vectors: int = 8
    features: int = (regs.Feature.RX_CSUM | regs.Feature.TX_CSUM | regs.Feature.RSS
                     | regs.Feature.TSO | regs.Feature.USO | regs.Feature.LRO)
    rx_pipeline_ps: int = RX_PIPELINE_PS
    tx_pipeline_ps: int = TX_PIPELINE_PS
    desc_fetch_batch: int = DESC_FETCH_BATCH
    desc_cache: int = DESC_CACHE
    rx_fifo_bytes: int = RX_FIFO_BYTES
    stages: dict = field(default_factory=dict)
    """Optional processing stages, ``{"rx": [...], "tx": [...]}``: each a callable taking a
    frame (bytes) and returning ``(frame, None)`` to pass it on (possibly rewritten) or
    ``(None, reason)`` to drop it, counted under ``reason``. The match-action pipeline and
    the TCP offload engine plug in here, through their golden references."""

    def __post_init__(self):
        for name, low, high in (("txqs", 1, regs.MAX_QUEUES), ("rxqs", 1, regs.MAX_QUEUES),
                                ("vfs", 0, 63), ("vf_queues", 1, regs.MAX_QUEUES),
                                ("vectors", 1, regs.MAX_VECTORS), ("desc_fetch_batch", 1, 64)):
            value = getattr(self, name)
            if not isinstance(value, int) or not low <= value <= high:
                raise ValueError(f"nic.{name} must be an integer from {low} to {high}, "
                                 f"not {value!r}")
        if not self.desc_fetch_batch <= self.desc_cache <= 4096:
            raise ValueError(f"nic.desc_cache must be from desc_fetch_batch "
                             f"({self.desc_fetch_batch}) to 4096, not {self.desc_cache!r}")
        for name in ("rx_pipeline_ps", "tx_pipeline_ps", "rx_fifo_bytes"):
            if getattr(self, name) < 0:
                raise ValueError(f"nic.{name} must not be negative")


class _Queue:
    """A descriptor ring with its completion ring (device side)."""

    __slots__ = ("num", "ring", "log2", "enabled", "tail", "fetched", "head", "descs",
                 "cq", "cq_log2", "cq_tail", "cq_heads", "cq_head", "vector", "armed",
                 "pending", "last_cpl_t", "drain_at", "lro", "lro_born", "lro_timer")

    def __init__(self, num):
        self.num = num
        self.ring = 0
        self.log2 = 0
        self.enabled = False
        self.tail = 0  # producer index the driver rang (free-running, 16 bit)
        self.fetched = 0  # descriptors read from the ring so far
        self.head = 0  # descriptors consumed
        self.descs = deque()  # fetched, unused: (t_available, index, raw)
        self.cq = 0
        self.cq_log2 = 0
        self.cq_tail = 0
        self.cq_heads = deque()  # (t, value) CQ_HEAD writes not yet in effect
        self.cq_head = 0
        self.vector = 0
        self.armed = False
        self.pending = deque()  # receive frames waiting for a descriptor
        self.last_cpl_t = 0  # when the latest completion was issued
        self.drain_at = 0  # when a drain of pending frames is scheduled (0: none)
        self.lro = None  # hw.ref.lro.LroEngine while LRO is on
        self.lro_born = {}  # arrival time -> birth time of frames held in LRO
        self.lro_timer = False

    def cq_room(self, t):
        """Free completion slots at time ``t``."""
        heads = self.cq_heads
        while heads and heads[0][0] <= t:
            self.cq_head = heads.popleft()[1]
        return (1 << self.cq_log2) - ((self.cq_tail - self.cq_head) & 0xFFFF)


class _Function:
    """Registers and queues of one PCI function."""

    def __init__(self, num, txqs, rxqs, vectors):
        self.num = num
        self.txq = [_Queue(n) for n in range(txqs)]
        self.rxq = [_Queue(n) for n in range(rxqs)]
        self.vectors = vectors
        self.ctrl = 0
        self.mtu = 1514
        self.mac = bytes(6)
        self.lro_timeout_ns = 10_000
        self.rss = ref_rss.RssConfig(table=ref_rss.default_table(128, rxqs))
        self.rss_log2 = 7
        self.moderation = [[1, 0] for _ in range(vectors)]
        self.cache = {}
        self.counters = dict.fromkeys(regs.COUNTERS, 0)


class NicModel:
    """The NIC, model backend.

    Parameters
    ----------
    config : NicConfig
        Queues, functions, features and timing.
    host : HostPort
        The simulation around the device.
    """

    ports = 1

    def __init__(self, config, host):
        self.config = config
        self.host = host
        self.fns = [_Function(0, config.txqs, config.rxqs, config.vectors)]
        self.fns += [_Function(n, config.vf_queues, config.vf_queues, config.vectors)
                     for n in range(1, config.vfs + 1)]
        self.functions = len(self.fns)
        self.drops = dict.fromkeys(DROP_REASONS, 0)
        self.by_mac = {}
        self.fifo = deque()  # (t_leave, bytes) of frames whose DMA is under way, in order
        self.fifo_bytes = 0  # receive FIFO in use: those and the frames waiting in pending
        self.rx_frames = 0
        self.tx_frames = 0
        self.rx_stages = list(config.stages.get("rx", ()))
        self.tx_stages = list(config.stages.get("tx", ()))
        self.classified = {}  # frame -> (function, queue, offloads, drop reason)
        self._refill_level = config.desc_cache - config.desc_fetch_batch

    # -- registers --------------------------------------------------------------------------

    def _fn(self, fn):
        if not 0 <= fn < self.functions:
            raise RegisterError(f"PCI function {fn} does not exist (the NIC has "
                                f"{self.functions})")
        return self.fns[fn]

    def _error(self, f, message):
        f.counters["mmio_errors"] += 1
        raise RegisterError(message)

    def mmio_write(self, fn, offset, value, t_ps):
        """Write register ``offset`` of function ``fn`` (effective at ``t_ps``)."""
        f = self._fn(fn)
        if offset < regs.TXQ_BASE or offset & (regs.QUEUE_STRIDE - 1) == _QUEUE_CTRL:
            self.classified.clear()  # steering may change
        if not 0 <= value < 1 << 32:
            self._error(f, f"register values are 32 bits, not {value!r}")
        if offset % 4:
            self._error(f, f"register offset {offset:#x} is not 32-bit aligned")
        if offset >= regs.TXQ_BASE:
            return self._queue_write(f, offset, value, t_ps)
        if regs.IRQ_BASE <= offset < regs.IRQ_BASE + regs.IRQ_STRIDE * regs.MAX_VECTORS:
            vector, which = divmod(offset - regs.IRQ_BASE, regs.IRQ_STRIDE)
            if vector >= f.vectors or which > 4:
                self._error(f, f"offset {offset:#x} is not a moderation register of one of "
                               f"the {f.vectors} vectors")
            f.moderation[vector][which // 4] = value
            self.host.irq_setup(fn, vector, *f.moderation[vector])
            return None
        if offset == regs.reg("CTRL"):
            if value & ~_CTRL_BITS:
                self._error(f, f"CTRL bits {value & ~_CTRL_BITS:#x} are not defined")
            for bit, feature in _FEATURE_OF_CTRL.items():
                if value & bit and not self.config.features & feature:
                    self._error(f, f"CTRL enables an offload this NIC lacks (bit {bit:#x})")
            f.ctrl = value
            f.cache.clear()
            for q in f.rxq:
                self._set_lro(f, q, t_ps)
        elif offset == regs.reg("MTU"):
            if not 64 <= value <= 9600:
                self._error(f, f"MTU must be 64..9600 bytes, not {value}")
            f.mtu = value
        elif offset in (regs.reg("MAC_LO"), regs.reg("MAC_HI")):
            mac = bytearray(f.mac)
            if offset == regs.reg("MAC_LO"):
                mac[2:6] = value.to_bytes(4, "big")
            else:
                if value >> 16:
                    self._error(f, "MAC_HI holds 16 bits")
                mac[0:2] = value.to_bytes(2, "big")
            self.by_mac.pop(f.mac, None)
            f.mac = bytes(mac)
            self.by_mac[f.mac] = f
        elif offset == regs.reg("LRO_TIMEOUT_NS"):
            f.lro_timeout_ns = value
            for q in f.rxq:
                if q.lro is not None:
                    q.lro.timeout_ps = value * 1000
        elif offset == regs.reg("RSS_TYPES"):
            if value & ~ref_rss.ALL_TYPES_MASK:
                self._error(f, f"RSS_TYPES must be a subset of {ref_rss.ALL_TYPES_MASK:#x}")
            f.rss.enabled = value
            f.cache.clear()
        elif offset == regs.reg("RSS_TABLE_LOG2"):
            if value > 9:
                self._error(f, f"RSS_TABLE_LOG2 must be 0..9, not {value}")
            f.rss_log2 = value
            table = f.rss.table
            f.rss.table = (table * (1 + (1 << value) // len(table)))[:1 << value]
            f.cache.clear()
        elif regs.reg("RSS_KEY") <= offset < regs.reg("RSS_KEY", 9) + 4:
            n = (offset - regs.reg("RSS_KEY")) // 4
            key = bytearray(f.rss.key)
            key[4 * n:4 * n + 4] = value.to_bytes(4, "big")
            f.rss.key = bytes(key)
            f.cache.clear()
        elif regs.reg("RSS_TABLE") <= offset < regs.reg("RSS_TABLE", 511) + 4:
            n = (offset - regs.reg("RSS_TABLE")) // 4
            if n >= 1 << f.rss_log2:
                self._error(f, f"RSS_TABLE entry {n} is beyond the table of "
                               f"{1 << f.rss_log2} (RSS_TABLE_LOG2)")
            if value >= len(f.rxq):
                self._error(f, f"RSS_TABLE entries must be receive queues below "
                               f"{len(f.rxq)}, not {value}")
            f.rss.table[n] = value
            f.cache.clear()
        else:
            self._error(f, f"offset {offset:#x} is not a writable register")
        return None

    def _set_lro(self, f, q, t_ps):
        """Start (or stop, delivering what it holds) the LRO engine of receive queue ``q``."""
        if f.ctrl & regs.Ctrl.LRO:
            if q.lro is None:
                from nicsim.hw.ref.lro import LroEngine

                q.lro = LroEngine(timeout_ps=f.lro_timeout_ns * 1000)
        elif q.lro is not None:
            held, q.lro = q.lro, None
            self._lro_deliver(f, q, held.flush(), t_ps)

    def _queue_write(self, f, offset, value, t_ps):
        transmit = offset < regs.RXQ_BASE
        base = regs.TXQ_BASE if transmit else regs.RXQ_BASE
        num, reg = divmod(offset - base, regs.QUEUE_STRIDE)
        queues = f.txq if transmit else f.rxq
        kind = "transmit" if transmit else "receive"
        if num >= len(queues):
            self._error(f, f"{kind} queue {num} does not exist (function {f.num} has "
                           f"{len(queues)})")
        q = queues[num]
        name = _QUEUE_REG_NAMES.get(reg)
        if name == "TAIL":
            if not q.enabled:
                self._error(f, f"doorbell of {kind} queue {num}, which is not enabled")
            if (value - q.head) & 0xFFFF > 1 << q.log2 or value >> 16:
                self._error(f, f"doorbell of {kind} queue {num} posts more descriptors than "
                               f"its ring holds ({value} with head {q.head})")
            self.host.call_at(t_ps, partial(self._doorbell, f, q, transmit, value))
            return None
        if name == "CQ_HEAD":
            q.cq_heads.append((t_ps, value & 0xFFFF))
            return None
        if name == "VECTOR":
            vector = value & 0xFFFF
            if vector >= f.vectors:
                self._error(f, f"vector {vector} does not exist (function {f.num} has "
                               f"{f.vectors})")
            q.vector = vector
            q.armed = bool(value & regs.VECTOR_ARMED)
            self.host.irq_arm(f.num, vector, q.armed, t_ps)
            if q.armed and q.cq_room(t_ps) < 1 << q.cq_log2:
                # Completions the driver has not consumed: interrupt once they are all in.
                self.host.irq(f.num, vector, max(t_ps, q.last_cpl_t), 1)
            return None
        if name in (None, "HEAD", "CQ_TAIL"):
            self._error(f, f"offset {offset:#x} is not a writable register")
        if name == "CTRL":
            if value & ~regs.QueueCtrl.ENABLE:
                self._error(f, f"queue CTRL bits {value:#x} are not defined")
            if value and not q.enabled:
                if not 1 <= q.log2 <= regs.MAX_RING_LOG2 or not 1 <= q.cq_log2:
                    self._error(f, f"{kind} queue {num} enabled before RING_LOG2 and CQ_LOG2 "
                                   f"were set")
                if q.ring % DESC_BYTES or q.cq % CPL_BYTES:
                    self._error(f, f"{kind} queue {num}: rings must be 16/32-byte aligned")
            q.enabled = bool(value)
            return None
        if q.enabled:
            self._error(f, f"{kind} queue {num} must be disabled to change {name}")
        if name == "RING_LO":
            q.ring = (q.ring & ~0xFFFFFFFF) | value
        elif name == "RING_HI":
            q.ring = (q.ring & 0xFFFFFFFF) | value << 32
        elif name == "CQ_LO":
            q.cq = (q.cq & ~0xFFFFFFFF) | value
        elif name == "CQ_HI":
            q.cq = (q.cq & 0xFFFFFFFF) | value << 32
        elif name in ("RING_LOG2", "CQ_LOG2"):
            if not 1 <= value <= regs.MAX_RING_LOG2:
                self._error(f, f"{name} must be 1..{regs.MAX_RING_LOG2}, not {value}")
            if name == "RING_LOG2":
                q.log2 = value
            else:
                q.cq_log2 = value
        return None

    def mmio_read(self, fn, offset, t_ps):
        """Read register ``offset`` of function ``fn``."""
        f = self._fn(fn)
        if offset >= regs.TXQ_BASE:
            transmit = offset < regs.RXQ_BASE
            num, reg = divmod(offset - (regs.TXQ_BASE if transmit else regs.RXQ_BASE),
                              regs.QUEUE_STRIDE)
            queues = f.txq if transmit else f.rxq
            if num >= len(queues):
                self._error(f, f"queue {num} does not exist")
            q = queues[num]
            values = {0x00: q.ring & 0xFFFFFFFF, 0x04: q.ring >> 32, 0x08: q.log2,
                      0x0C: int(q.enabled), 0x10: q.tail, 0x14: q.head,
                      0x18: q.cq & 0xFFFFFFFF, 0x1C: q.cq >> 32, 0x20: q.cq_log2,
                      0x24: q.cq_head, 0x28: q.cq_tail,
                      0x2C: q.vector | (regs.VECTOR_ARMED if q.armed else 0)}
            if reg not in values:
                self._error(f, f"offset {offset:#x} is not a register")
            return values[reg]
        counter = regs.reg("COUNTER")
        if counter <= offset < counter + 4 * len(regs.COUNTERS):
            name = regs.COUNTERS[(offset - counter) // 4]
            return f.counters[name] & 0xFFFFFFFF
        table = regs.reg("RSS_TABLE")
        if table <= offset < table + 4 * len(f.rss.table):
            return f.rss.table[(offset - table) // 4]
        key = regs.reg("RSS_KEY")
        if key <= offset < key + 40:
            return int.from_bytes(f.rss.key[offset - key:offset - key + 4], "big")
        simple = {
            regs.reg("ID"): regs.NIC_ID, regs.reg("VERSION"): regs.NIC_VERSION,
            regs.reg("FEATURES"): self.config.features, regs.reg("CTRL"): f.ctrl,
            regs.reg("NUM_TXQ"): len(f.txq), regs.reg("NUM_RXQ"): len(f.rxq),
            regs.reg("NUM_VECTORS"): f.vectors, regs.reg("MTU"): f.mtu,
            regs.reg("MAC_LO"): int.from_bytes(f.mac[2:], "big"),
            regs.reg("MAC_HI"): int.from_bytes(f.mac[:2], "big"),
            regs.reg("LRO_TIMEOUT_NS"): f.lro_timeout_ns,
            regs.reg("RSS_TYPES"): f.rss.enabled, regs.reg("RSS_TABLE_LOG2"): f.rss_log2,
        }
        if offset in simple:
            return simple[offset]
        if regs.IRQ_BASE <= offset < regs.IRQ_BASE + regs.IRQ_STRIDE * f.vectors:
            vector, which = divmod(offset - regs.IRQ_BASE, regs.IRQ_STRIDE)
            if which <= 4:
                return f.moderation[vector][which // 4]
        self._error(f, f"offset {offset:#x} is not a register")
        return 0

    # -- descriptor fetch -------------------------------------------------------------------

    def _fetch(self, f, q, t_ps, transmit):
        """Read posted descriptors in batches with DMA issued at ``t_ps`` (not later than now).

        A receive queue keeps at most ``desc_cache`` descriptors on the NIC and fetches more
        as frames use them up; a transmit queue reads all that were posted and handles each
        batch when it arrives.
        """
        size = 1 << q.log2
        mask = size - 1
        batch = self.config.desc_fetch_batch
        host = self.host
        room = (1 << 16) if transmit else self.config.desc_cache - len(q.descs)
        while (q.tail - q.fetched) & 0xFFFF and room > 0:
            first = q.fetched & mask
            count = min((q.tail - q.fetched) & 0xFFFF, batch, size - first, room)
            room -= count
            data, t = host.dma_read(f.num, q.ring + first * DESC_BYTES, count * DESC_BYTES,
                                    t_ps)
            fresh = []
            for n in range(count):
                if data is None:
                    raw = None
                elif transmit:
                    raw = _TX_DESC.unpack_from(data, n * DESC_BYTES)
                else:
                    raw = _RX_DESC.unpack_from(data, n * DESC_BYTES)
                fresh.append((t, (q.fetched + n) & 0xFFFF, raw))
            q.fetched = (q.fetched + count) & 0xFFFF
            if transmit:
                host.call_at(t, partial(self._transmit, f, q, fresh))
            else:
                q.descs.extend(fresh)

    def _doorbell(self, f, q, transmit, value, t_ps):
        """A doorbell arrived (an event at its arrival time)."""
        q.tail = value
        self._fetch(f, q, t_ps, transmit)
        if not transmit and q.pending:
            self._schedule_drain(f, q)

    # -- receive ----------------------------------------------------------------------------

    def _offloads(self, f, data):
        """Return (csum byte, complete sum, hash, hash type, queue, LRO segments, gso_size)
        of a received frame (memoized per frame content)."""
        ctrl = f.ctrl
        if ctrl & regs.Ctrl.RX_CSUM:
            c = ref_checksum.rx_checksum(data)
            csum, complete = int(c.ip) | int(c.l4) << 2, c.csum_complete
        else:
            csum = complete = 0
        if ctrl & regs.Ctrl.RSS:
            r = ref_rss.rss_hash(data, f.rss)
            result = (csum, complete, r.hash, int(r.hash_type), r.queue, 1, 0)
        else:
            result = (csum, complete, 0, 0, 0, 1, 0)
        if len(f.cache) >= RX_CACHE_ENTRIES:
            f.cache.clear()
        f.cache[data] = result
        return result

    def _classify(self, data):
        """Return (function, queue, offload results, drop reason) for a received frame.

        The answer depends only on the frame and the configuration, so it is memoized per
        frame content until a register changes the steering.
        """
        pf = self.fns[0]
        f = self.by_mac.get(data[:6])
        reason = None
        q = None
        meta = None
        if f is None:
            if (data[0] & 1 and pf.ctrl & regs.Ctrl.BROADCAST) or pf.ctrl & regs.Ctrl.PROMISC:
                f = pf
            else:
                f, reason = pf, "rx_not_for_us"
        if reason is None and not f.ctrl & regs.Ctrl.RX_ENABLE:
            reason = "rx_disabled"
        if reason is None and len(data) > f.mtu + 4 * parse_l2(data).vlan_tags:
            reason = "rx_oversize"
        if reason is None:
            meta = f.cache.get(data) or self._offloads(f, data)
            q = f.rxq[meta[4]] if meta[4] < len(f.rxq) else None
            if q is None or not q.enabled:
                reason = "rx_queue_disabled"
        if len(self.classified) >= RX_CACHE_ENTRIES:
            self.classified.clear()
        result = self.classified[data] = (f, q, meta, reason)
        return result

    def eth_in(self, port, batch):
        """Receive a batch of frames from the wire."""
        pipeline = self.config.rx_pipeline_ps
        classified = self.classified
        drops = self.drops
        now = self.host.now
        stages = self.rx_stages
        for frame in batch:
            data = frame.data
            if stages:
                data, reason = self._run_stages(stages, data)
                if data is None:
                    drops[reason] = drops.get(reason, 0) + 1
                    continue
                frame.data = data
            c = classified.get(data)
            if c is None:
                c = self._classify(data)
            f, q, meta, reason = c
            if reason is not None:
                drops[reason] += 1
                if reason in f.counters:
                    f.counters[reason] += 1
                continue
            t = frame.t_ps + pipeline
            if q.lro is not None:
                self._lro_push(f, q, frame, t, now)
                continue
            self._receive(f, q, frame, meta, t, now)

    def _receive(self, f, q, frame, meta, t, now):
        """Take one (possibly merged) frame into the receive FIFO at time ``t`` for ``q``.

        A frame holds FIFO space from its arrival until its DMA has left the NIC: while it
        waits for a descriptor, and while the PCIe link is busy with the frames before it.
        A frame that finds the FIFO full is dropped: ``rx_no_descriptor`` when its queue has
        no descriptor for it, else ``rx_fifo_full`` (the link or host cannot keep up).
        """
        fifo = self.fifo
        while fifo and fifo[0][0] <= t:
            self.fifo_bytes -= fifo.popleft()[1]
        length = len(frame.data)
        descs = q.descs
        waiting = q.pending or not descs or descs[0][0] > now
        if self.fifo_bytes + length > self.config.rx_fifo_bytes:
            reason = "rx_no_descriptor" if waiting else "rx_fifo_full"
            self.drops[reason] += 1
            f.counters[reason] += 1
            return
        self.fifo_bytes += length
        if waiting:
            q.pending.append((t, frame, meta))
            self._schedule_drain(f, q)
            return
        self._deliver(f, q, t, frame, meta)

    # -- large receive offload --------------------------------------------------------------

    def _lro_push(self, f, q, frame, t, now):
        """Merge a TCP segment into the queue's held flows (hw.ref.lro); deliver what leaves."""
        q.lro_born[t] = frame.born_ps
        self._lro_deliver(f, q, q.lro.push(frame.data, t), now)
        if q.lro.held and not q.lro_timer:
            q.lro_timer = True
            self.host.call_at(t + q.lro.timeout_ps, partial(self._lro_expire, f, q))

    def _lro_expire(self, f, q, now):
        """The aggregation timer: deliver flows held for the timeout; look again in half."""
        q.lro_timer = False
        if q.lro is None:
            return
        self._lro_deliver(f, q, q.lro.expire(now), now)
        if q.lro.held:
            q.lro_timer = True
            self.host.call_at(now + max(1, q.lro.timeout_ps // 2),
                              partial(self._lro_expire, f, q))

    def _lro_deliver(self, f, q, merged, now):
        born_of = q.lro_born
        for m in merged:
            born = born_of.pop(m.t_ps, m.t_ps)
            if m.segs == 1:
                meta = f.cache.get(m.frame) or self._offloads(f, m.frame)
            else:  # a merged frame is new: its verdicts and sums are its own
                csum = complete = rss_hash = hash_type = 0
                if f.ctrl & regs.Ctrl.RX_CSUM:
                    c = ref_checksum.rx_checksum(m.frame)
                    csum, complete = int(c.ip) | int(c.l4) << 2, c.csum_complete
                if f.ctrl & regs.Ctrl.RSS:
                    r = ref_rss.rss_hash(m.frame, f.rss)
                    rss_hash, hash_type = r.hash, int(r.hash_type)
                meta = (csum, complete, rss_hash, hash_type, q.num, m.segs, m.gso_size)
            time = max(m.t_ps, now)
            self._receive(f, q, Frame(m.frame, time, born), meta, time, now)
        if len(born_of) > LRO_BORN_RECORDS:  # arrival records of segments merged away
            for key in list(born_of)[:len(born_of) - LRO_BORN_RECORDS // 4]:
                del born_of[key]

    @staticmethod
    def _run_stages(stages, data):
        """Pass a received frame through the optional stages (match-action, TOE, ...)."""
        for stage in stages:
            data, reason = stage(data)
            if data is None:
                return None, reason or "rx_stage_drop"
        return data, None

    def _schedule_drain(self, f, q):
        """Deliver waiting frames when the next fetched descriptor arrives."""
        if q.descs and not q.drain_at:
            q.drain_at = q.descs[0][0]
            self.host.call_at(q.drain_at, partial(self._drain_pending, f, q))

    def _drain_pending(self, f, q, now):
        q.drain_at = 0
        while q.pending and q.descs and q.descs[0][0] <= now:
            t, frame, meta = q.pending.popleft()
            self._deliver(f, q, t, frame, meta)
        if q.pending:
            self._schedule_drain(f, q)

    def _deliver(self, f, q, t, frame, meta):
        """Write a received frame to the next descriptor's buffer and complete it."""
        descs = q.descs
        t_desc, index, raw = descs[0]
        start = t_desc if t_desc > t else t
        log2 = q.cq_log2
        tail = q.cq_tail
        if (q.cq_heads and q.cq_heads[0][0] <= start) or ((tail - q.cq_head) & 0xFFFF) >> log2:
            if q.cq_room(start) <= 0:
                self.drops["rx_cq_full"] += 1
                f.counters["rx_cq_full"] += 1
                self.fifo.append((start, len(frame.data)))
                return
        descs.popleft()
        q.head = (q.head + 1) & 0xFFFF
        if len(descs) <= self._refill_level and q.tail != q.fetched:
            self._fetch(f, q, start, False)
        host = self.host
        data = frame.data
        length = len(data)
        flags = 0
        cq_addr = q.cq + (tail & ((1 << log2) - 1)) * CPL_BYTES
        phase = ((tail >> log2) & 1) ^ 1
        if raw is not None:
            addr, size = raw
            if length > size:
                data = data[:size]
                length = size
                flags = CplFlags.TRUNCATED
                f.counters["rx_truncated"] += 1
            host.tags[addr] = frame.born_ps
            entry = _CPL.pack(q.num, index, length, meta[2], meta[3], meta[0], flags | phase,
                              meta[5], meta[1], meta[6], start // 1000)
            written, t_cpl = host.dma_write_pair(f.num, addr, data, cq_addr, entry, start)
        if raw is None or written is None:
            # The descriptor or the buffer could not be reached: complete with no data.
            self.drops["rx_dma_error"] += 1
            f.counters["rx_dma_error"] += 1
            length = 0
            entry = _CPL.pack(q.num, index, 0, meta[2], meta[3], meta[0], flags | phase,
                              meta[5], meta[1], meta[6], start // 1000)
            t_cpl = host.dma_write(f.num, cq_addr, entry, start)
        self.fifo.append((host.dma_sent, len(frame.data)))  # its space frees as it leaves
        q.cq_tail = (tail + 1) & 0xFFFF
        q.last_cpl_t = start
        counters = f.counters
        counters["rx_frames"] += 1
        counters["rx_bytes"] += length
        self.rx_frames += 1
        if q.armed and t_cpl is not None:
            # The MSI-X write follows the completion on the link (posted writes stay in
            # order), so the message is issued with it, not when it lands.
            host.irq(f.num, q.vector, start, 1)

    # -- transmit ---------------------------------------------------------------------------

    def _transmit(self, f, q, descs, now):
        """Read the frames of a batch of transmit descriptors that arrived ``now``."""
        host = self.host
        pipeline = self.config.tx_pipeline_ps
        out = []
        done = []
        last = now
        for _, index, desc in descs:
            sent = 0
            t = now
            if desc is None:
                self.drops["tx_dma_error"] += 1
                f.counters["tx_dma_error"] += 1
            else:
                addr, length, flags, hdr_len, param = desc
                data, t = host.dma_read(f.num, addr, length, now)
                born = host.tags.pop(addr, now)
                if data is None:
                    self.drops["tx_dma_error"] += 1
                    f.counters["tx_dma_error"] += 1
                else:
                    frames, reason = self._tx_offload(data, flags, param)
                    if reason:
                        self.drops["tx_bad_descriptor"] += 1
                        f.counters["tx_bad_descriptor"] += 1
                    if self.tx_stages:
                        kept = []
                        for payload in frames:
                            payload, why = self._run_stages(self.tx_stages, payload)
                            if payload is None:
                                self.drops[why] = self.drops.get(why, 0) + 1
                            else:
                                kept.append(payload)
                        frames = kept
                    t_out = t + pipeline
                    for payload in frames:
                        out.append(Frame(payload, t_out, born))
                        sent += len(payload)
                    f.counters["tx_frames"] += len(frames)
                    f.counters["tx_bytes"] += sent
                    self.tx_frames += len(frames)
            done.append((index, sent, t))
            if t > last:
                last = t
        host.call_at(last, partial(self._tx_done, f, q, out, done))

    def _tx_done(self, f, q, out, done, now):
        """The frames of a transmit batch are read: send them and complete the descriptors."""
        host = self.host
        if out:
            host.eth_out(0, out)
        log2 = q.cq_log2
        mask = (1 << log2) - 1
        for index, sent, t in done:
            q.head = (q.head + 1) & 0xFFFF
            tail = q.cq_tail
            phase = ((tail >> log2) & 1) ^ 1
            entry = _CPL.pack(q.num, index, sent, 0, 0, 0, phase | CplFlags.TX, 0, 0, 0,
                              t // 1000)
            t_cpl = host.dma_write(f.num, q.cq + (tail & mask) * CPL_BYTES, entry, now)
            q.cq_tail = (tail + 1) & 0xFFFF
            q.last_cpl_t = now
            if q.armed and t_cpl is not None:
                host.irq(f.num, q.vector, now, 1)

    def _tx_offload(self, data, flags, param):
        """Return (frames to send, drop reason or None) for one transmit descriptor."""
        if flags & (TxFlags.TSO | TxFlags.USO):
            feature = regs.Feature.TSO if flags & TxFlags.TSO else regs.Feature.USO
            if not self.config.features & feature:
                return [], "segmentation offload not present"
            try:
                from nicsim.hw.ref import tso as ref_tso
            except ImportError:
                return [], "segmentation reference missing"
            kind = "tcp" if flags & TxFlags.TSO else "udp"
            result = ref_tso.segment(data, param, kind)
            frames = getattr(result, "frames", result)
            reason = getattr(result, "drop_reason", None)
            return (list(frames or []), reason)
        if flags & (TxFlags.CSUM_PARTIAL | TxFlags.CSUM_AUTO):
            if not self.config.features & regs.Feature.TX_CSUM:
                return [], "checksum offload not present"
            if flags & TxFlags.CSUM_PARTIAL:
                cmd = ref_checksum.TxCommand(ref_checksum.TxMode.PARTIAL, param & 0xFF,
                                             param >> 8)
            else:
                cmd = ref_checksum.TxCommand(ref_checksum.TxMode.AUTO)
            result = ref_checksum.tx_checksum(data, cmd)
            if result.frame is None:
                return [], result.drop_reason
            return [result.frame], None
        return [data], None

    # -- the rest of the interface ----------------------------------------------------------

    def finish(self, t_ps):
        """Deliver what LRO holds (the receive FIFO's frames are reported by :meth:`stats`)."""
        for f in self.fns:
            for q in f.rxq:
                if q.lro is not None and q.lro.held:
                    self._lro_deliver(f, q, q.lro.flush(), t_ps)

    def stats(self):
        """Return drop counts by reason and frames still waiting for descriptors."""
        waiting = sum(len(q.pending) for f in self.fns for q in f.rxq)
        return {
            "drops": {k: v for k, v in self.drops.items() if v},
            "rx_frames": self.rx_frames,
            "tx_frames": self.tx_frames,
            "rx_waiting_for_descriptor": waiting,
            "functions": [dict(f.counters) for f in self.fns],
        }
