"""The host CPU: per-operation costs and cores that account their time.

Every packet path charges its work as a sum of named operations (:data:`COSTS`): cache
hits and misses, atomics, locks, interrupt entry, syscalls, copies, allocations, ring
operations. Each has a unit and a source; a scenario may override any of them
(``host.costs``), and the CPU clock converts cycle counts to time. End-to-end figures (packet
rate, latency, CPU use) come out of the simulation built on these; nothing is fitted to them.

A :class:`Core` runs one piece of work at a time. Work has a kind (``irq``, ``softirq``,
``app``, ``syscall``, ``poll``) for the accounting; a polling core is busy all the time, an
interrupt-driven one only while it works.
"""

from __future__ import annotations

from dataclasses import dataclass

import simpy

__all__ = ["Cost", "COSTS", "CostModel", "Core", "KINDS"]


@dataclass(frozen=True)
class Cost:
    """One per-operation cost.

    Members
    -------
    value : float
        The cost, in ``unit``.
    unit : str
        ``"ns"``, ``"cycles"``, ``"ns/byte"`` or ``"ns/page"``.
    source : str
        Where the figure comes from (``"assumption: ..."`` when it is ours).
    """

    value: float
    unit: str
    source: str


_BROUER = "J. D. Brouer, kernel micro-benchmarks (REFERENCES.md)"

COSTS = {
    # Memory hierarchy and synchronization.
    "cache_miss": Cost(32.0, "ns", _BROUER),
    "l2_hit": Cost(4.3, "ns", _BROUER),
    "l3_hit": Cost(7.9, "ns", _BROUER),
    "atomic": Cost(8.2, "ns", _BROUER),
    "spin_lock": Cost(13.9, "ns", _BROUER + ": lock + unlock"),
    "bh_disable_enable": Cost(7.4, "ns", _BROUER + ": local_bh_disable + enable"),
    "irq_save_restore": Cost(14.8, "ns", _BROUER),
    # Kernel entry and scheduling.
    "irq_entry_exit": Cost(1000, "cycles", "assumption: hard IRQ entry, handler and exit "
                                           "with the APIC EOI, ~0.3-0.5 us at 2-3 GHz"),
    "softirq_entry": Cost(200, "cycles", "assumption: raising and entering NET_RX softirq"),
    "ipi": Cost(1000, "cycles", "assumption: sending an inter-processor interrupt "
                                "(RPS backlog kick), like an IRQ on the target"),
    "ipi_send": Cost(300, "cycles", "assumption: the sender's side of an IPI or remote "
                                    "wake-up, csd/llist queueing + x2APIC ICR write (WRMSR)"),
    "flow_dissect": Cost(150, "cycles", "assumption: skb_flow_dissect + jhash of the 4-tuple "
                                        "when the NIC gave no RSS hash (RPS, reuseport)"),
    "rx_refill": Cost(20, "ns", "assumption: page_pool fast-path buffer get and RX "
                                "descriptor write, per buffer"),
    "syscall": Cost(100, "ns", "assumption: entry/exit of a fast syscall with the "
                               "mitigations of a current kernel (LEBench-class figure)"),
    "context_switch": Cost(2000, "ns", "assumption: wake-up of a blocked thread and switch "
                                       "to it, cache-warm; the survey's 39 us (cache-"
                                       "resident) / 203 us include cache refill, set "
                                       "host.costs.context_switch to model them"),
    "poll_syscall": Cost(250, "ns", "assumption: poll()/ioctl sync entry, netmap-style"),
    # Copies and pages.
    "memcpy": Cost(0.1, "ns/byte", "assumption: ~10 GB/s copy of cache-resident data"),
    "page_pin": Cost(150, "ns/page", "assumption: get_user_pages + completion notification "
                                     "bookkeeping of MSG_ZEROCOPY per 4 KiB page"),
    "zerocopy_notify": Cost(400, "ns", "assumption: MSG_ZEROCOPY completion via the error "
                                       "queue, per send"),
    "csum": Cost(0.25, "ns/byte", "assumption: software ones'-complement sum, ~4 GB/s"),
    # Buffers and rings.
    "skb_alloc": Cost(60, "ns", "assumption: build_skb/napi_alloc_skb with slab fast path "
                                "and init; the survey reports sk_buff init ~5% and "
                                "allocation management ~8% of receive cycles"),
    "skb_free": Cost(40, "ns", "assumption: kfree_skb/napi_consume_skb fast path"),
    "mbuf_alloc": Cost(10, "ns", "assumption: rte_mempool get from the per-lcore cache"),
    "mbuf_free": Cost(10, "ns", "assumption: rte_mempool put to the per-lcore cache"),
    "ring_enqueue": Cost(15, "ns", "assumption: rte_ring single-producer enqueue of a burst "
                                   "entry incl. the cache line transfer, amortized"),
    "ring_dequeue": Cost(15, "ns", "assumption: rte_ring dequeue, amortized"),
    "mmio_write": Cost(50, "ns", "assumption: an uncached posted store (doorbell) as the "
                                 "CPU sees it"),
    # Protocol work (per packet, on top of the memory accesses above).
    "ip_rcv": Cost(150, "cycles", "assumption: ip_rcv + routing decision (input)"),
    "udp_rcv": Cost(300, "cycles", "assumption: udp_rcv + socket lookup"),
    "tcp_rcv": Cost(800, "cycles", "assumption: tcp_v4_rcv fast path + ACK scheduling"),
    "gro_segment": Cost(100, "cycles", "assumption: dev_gro_receive per segment"),
    "socket_enqueue": Cost(100, "cycles", "assumption: sock_queue_rcv_skb + wake check"),
    "udp_send": Cost(600, "cycles", "assumption: udp_sendmsg + ip_output per datagram"),
    "tcp_send": Cost(1000, "cycles", "assumption: tcp_sendmsg + tcp_write_xmit per skb"),
    "tcp_ack": Cost(600, "cycles", "assumption: __tcp_send_ack(): alloc_skb, tcp_transmit_skb "
                                   "and ip_queue_xmit of a segment without data on the cached "
                                   "route; tcp_send less the send-buffer and data work (~60%)"),
    "gso_segment": Cost(250, "cycles", "assumption: software GSO per segment made"),
    "qdisc": Cost(150, "cycles", "assumption: pfifo_fast enqueue + dequeue"),
    "driver_tx": Cost(100, "cycles", "assumption: ndo_start_xmit descriptor write per frame"),
    "lpm_lookup": Cost(40, "ns", "assumption: DIR-24-8 LPM lookup, one or two L2/L3 hits"),
    "hash_lookup": Cost(60, "ns", "assumption: cuckoo hash table lookup, key-value store"),
    "mtcp_rcv": Cost(200, "cycles", "assumption: mTCP ProcessTCPPacket() per segment after the "
                                    "flow lookup (hash_lookup): header parse, sequence checks, "
                                    "receive-buffer bookkeeping without the copy, ACK and event "
                                    "lists; user level, no locks, no skb (mTCP, NSDI'14, gives "
                                    "no per-packet cycle count)"),
    "mtcp_send": Cost(200, "cycles", "assumption: mTCP SendTCPPacket() per segment: an mbuf from "
                                     "the mempool, TCP/IP headers written, send state updated; "
                                     "the payload copy is charged per byte"),
    "xdp_redirect": Cost(20, "ns", "assumption: xdp_do_redirect() per frame after the "
                                   "helper: the redirect target checked, the xdp_buff turned "
                                   "into an xdp_frame in its headroom, the per-CPU bulk queue "
                                   "(devmap, cpumap) written; a few L1/L2 lines"),
    "xdp_generic": Cost(30, "ns", "assumption: netif_receive_generic_xdp() per skb on top of "
                                  "the program: linearity and headroom checks, the xdp_buff "
                                  "set up from the skb, the skb's data and length fixed up "
                                  "after the run"),
    "app_work": Cost(0, "ns", "assumption: per-frame work of an application beyond the "
                              "named operations (0: none); set it to model a heavier one"),
}

KINDS = ("irq", "softirq", "app", "syscall", "poll")


class CostModel:
    """Costs of one host, in picoseconds.

    Parameters
    ----------
    clock_ghz : float
        Core clock; cycle counts convert at it.
    overrides : dict
        ``{name: value}`` in each cost's own unit.

    Members
    -------
    <name> : int
        Every cost of :data:`COSTS` as an attribute, in ps (per byte or per page for those
        units): ``costs.l3_hit``.
    """

    def __init__(self, clock_ghz=3.0, overrides=None):
        if not clock_ghz > 0:
            raise ValueError(f"host.clock_ghz must be positive, not {clock_ghz!r}")
        self.clock_ghz = clock_ghz
        overrides = dict(overrides or {})
        unknown = sorted(set(overrides) - set(COSTS))
        if unknown:
            raise ValueError(f"unknown host cost {unknown[0]!r}; the costs are "
                             + ", ".join(sorted(COSTS)))
        self.values = {}
        for name, cost in COSTS.items():
            value = float(overrides.get(name, cost.value))
            if value < 0:
                raise ValueError(f"host.costs.{name} must not be negative, not {value}")
            self.values[name] = value
            per_ps = value * 1000 / clock_ghz if cost.unit == "cycles" else value * 1000
            setattr(self, name, round(per_ps) if cost.unit in ("ns", "cycles") else per_ps)

    def copy(self, nbytes):
        """Return the time to copy ``nbytes`` (ps)."""
        return round(self.memcpy * nbytes)

    def pages(self, nbytes):
        """Return the number of 4 KiB pages ``nbytes`` touch at most."""
        return -(-nbytes // 4096) + (1 if nbytes % 4096 else 0)

    def table(self):
        """Return ``[(name, value, unit, source)]`` for documentation."""
        return [(n, self.values[n], c.unit, c.source) for n, c in COSTS.items()]


class Core:
    """A CPU core: a SimPy resource that runs one piece of work at a time, with accounting.

    Parameters
    ----------
    env : simpy.Environment
    num : int
        Core number.

    Members
    -------
    busy_ps : int
        Time spent working (``poll`` time included).
    by_kind : dict
        Busy time per kind of work (:data:`KINDS`).
    """

    def __init__(self, env, num):
        self.env = env
        self.num = num
        self.resource = simpy.PriorityResource(env, capacity=1)
        self.busy_ps = 0
        self.by_kind = dict.fromkeys(KINDS, 0)
        self.start_ps = env.now

    def reset(self):
        """Start the accounting afresh from now (the measurement starts)."""
        self.busy_ps = 0
        self.by_kind = dict.fromkeys(KINDS, 0)
        self.start_ps = self.env.now

    def charge(self, ps, kind="app"):
        """Account ``ps`` of work of ``kind`` (the caller spends the time itself)."""
        self.busy_ps += ps
        self.by_kind[kind] += ps

    def work(self, ps, kind="app", priority=2):
        """Hold the core for ``ps`` of work (a SimPy generator: ``yield from core.work()``).

        Lower ``priority`` goes first among waiting work (0: hard IRQ, 1: softirq, 2: threads).
        """
        with self.resource.request(priority=priority) as req:
            yield req
            yield self.env.timeout(ps)
            self.charge(ps, kind)

    def busy(self, end_ps=None):
        """Return the busy share 0..1 from the start to ``end_ps`` (default now)."""
        elapsed = (self.env.now if end_ps is None else end_ps) - self.start_ps
        return min(1.0, self.busy_ps / elapsed) if elapsed > 0 else 0.0
