# Ref: Linux net/core/dev.c (napi_schedule(), net_rx_action(), napi_poll(), netdev_budget,
#      enqueue_to_backlog(), process_backlog(), get_rps_cpu()), net/core/gro.c (gro_normal_batch),
#      kernel/softirq.c (MAX_SOFTIRQ_RESTART, MAX_SOFTIRQ_TIME, ksoftirqd),
#      net/ipv4/udp.c (__udp_enqueue_schedule_skb(), udp_recvmsg()), net/ipv4/ip_output.c
#      (ip_select_ident_segs()), Documentation/networking/scaling.rst (RSS, RPS, RFS, XPS),
#      Documentation/networking/msg_zerocopy.rst, Documentation/networking/segmentation-offloads.rst
#      net/ipv4/tcp_input.c (tcp_rcv_established(), __tcp_ack_snd_check()),
#      net/ipv4/tcp_output.c (__tcp_send_ack(), tcp_v4_send_check()), net/ipv4/tcp_timer.c
#      (tcp_delack_timer())
"""The Linux network stack on the NIC driver: NAPI, GRO, RPS/RFS, sockets, application threads.

Receive. A queue's MSI-X interrupt lands on the core its affinity names (``host.irq_affinity``:
``pinned``, queue ``q``'s vector on core ``q % cores``; ``single``, all on core 0) and costs a
hard-IRQ entry; the handler masks the queue's interrupt and schedules its NAPI instance. The
core's NET_RX softirq (``net_rx_action``) polls each scheduled instance for up to ``host.budget``
(64) completions, at most 300 per run (``netdev_budget``). An instance that used its whole budget
stays scheduled with its interrupt masked; one that did not completes and re-arms it. Under load
a queue is thus polled with few interrupts per packet, at low load every packet brings its own:
nothing sets this, it follows from the costs and the arrivals. A softirq that still has work after
10 runs or 2 ms hands it to ksoftirqd, a thread that shares its core fairly with the application
threads.

Per packet the driver reads the completion, builds an skb, touches its header (DDIO: the frame
is in the LLC), refills the buffer and hands the skb to GRO (:class:`~nicsim.hw.ref.lro.LroEngine`
with Linux's rules, flushed at the end of every poll; a frame the NIC merged (LRO) is one skb for
several segments). Groups of 8 skbs (``gro_normal_batch``) go up the stack: IP, UDP or TCP
receive, and the receive queue of the socket, bounded by ``host.rmem_kib`` as
``__udp_enqueue_schedule_skb`` bounds it (``socket_buffer_full`` drops). With RPS (``host.rps``)
they go instead to the backlog of the core the flow hash picks (RFS, ``host.rfs``: the core of
the thread that reads the flow), which is kicked with an IPI at the end of the softirq run and
does the protocol work in its own softirq.

Checksums: an L4 checksum the NIC verified costs nothing. Otherwise TCP verifies it in GRO and UDP
while copying to the user (``skb_copy_and_csum_datagram``), where Linux does; a bad one is dropped
(``rx_bad_checksum``). The IPv4 header checksum is always checked in software, inside ``ip_rcv``.

Applications. One thread per application core (``host.app_cores``, default all), each with its
own socket (a SO_REUSEPORT group: flows are spread over them by hash). A thread blocked in
``recv()`` is woken by the socket enqueue (a context switch on its core; the waker pays for an IPI
when remote) and calls ``recv()`` until its queue is empty: per datagram a syscall, the queue lock,
the skb's cache lines (missed when another core queued it), the copy to the user, the skb free (a
TCP ``recv()`` takes up to 64 KiB of segments). Softirqs and threads share cores: softirqs go
first; threads run in steps of at most 16 ``recv()`` calls, or, against a busy ksoftirqd, for as
long as it ran.

Send (``udp_echo``, ``kv``): ``sendto()`` of an unconnected UDP socket, with the copy from the
user or ``MSG_ZEROCOPY`` (``host.zerocopy``: pinning the pages and a completion notification),
UDP and IP output, the qdisc, the driver's descriptor and the doorbell. A send larger than the
MTU uses ``UDP_SEGMENT``: one descriptor with USO when the NIC has it, else software GSO, per
segment. The UDP checksum goes to the NIC with ``tx_csum`` (``CHECKSUM_PARTIAL``), else it is
computed in software. Transmit completions are reaped in the NAPI poll and before sending.

TCP (:mod:`nicsim.host.tcp`). ``tcp_bulk``: the softirq runs TCP receive once per skb, so a GRO
or LRO skb of n segments pays ``ip_rcv`` and ``tcp_rcv`` once, not n times, and is acknowledged
as one: after each skb, ``__tcp_ack_snd_check()`` sends an ACK when more than one full-sized
segment is unacknowledged (one ACK per two segments without merging; one per merged skb of two
or more), else the delayed-ACK timer (40 ms) will. The ACK is a real segment built in the softirq
(``tcp_ack``, its skb freed when its transmission is reaped), through the qdisc and the driver
with its own doorbell, on the core's transmit queue (XPS); its TCP checksum goes to the NIC with
``tx_csum`` (``CHECKSUM_PARTIAL``), else it is summed in software. The reader's ``recv()`` takes up
to 64 KiB of one connection's skbs per call. ``tcp_rr``: each request is received as above (no
ACK: the reply carries it), the thread's ``recv()`` wakes and copies it, and ``send()`` answers on
the connection (``tcp_send``, the copy of the reply, qdisc, driver, doorbell; no GSO: the reply is
one segment), the ACK piggybacked. One thread per application core serves every connection the
reuseport hash gives it, as an epoll loop would.

Simulation: one step per group of 8 packets in a poll, per softirq run and per thread step, not
per packet.
"""

from __future__ import annotations

import struct
import zlib
from array import array
from collections import deque

from nicsim.host.driver import RX_BUFFER_BYTES
from nicsim.host.tcp import (
    ACK,
    DELACK_PS,
    EMPTY,
    HOLE,
    OLD,
    PSH,
    TCP_APPS,
    Connection,
    parse_segment,
    payload_bytes,
)
from nicsim.hw.nic.formats import DESC_BYTES, TX_DESC, CplFlags, TxFlags
from nicsim.hw.ref import tso as ref_tso
from nicsim.hw.ref.checksum import Status, ones_sum, rx_checksum
from nicsim.hw.ref.lro import LroEngine, Reason
from nicsim.hw.ref.packet import IPPROTO_TCP, IPPROTO_UDP, parse_ip

__all__ = ["LinuxPath", "SocketApp", "LINUX_APPS", "NETDEV_BUDGET", "GRO_NORMAL_BATCH",
           "RECV_BATCH"]

LINUX_APPS = ("drop", "udp_echo", "kv", "tcp_bulk", "tcp_rr")
NETDEV_BUDGET = 300  # net.core.netdev_budget: packets per net_rx_action run
MAX_SOFTIRQ_RESTART = 10  # kernel/softirq.c: softirq runs before handing over to ksoftirqd
MAX_SOFTIRQ_TIME_PS = 2_000_000_000  # kernel/softirq.c MAX_SOFTIRQ_TIME: 2 ms
GRO_NORMAL_BATCH = 8  # net.core.gro_normal_batch: skbs passed up the stack together
NETDEV_MAX_BACKLOG = 1000  # net.core.netdev_max_backlog: RPS backlog per core
SKB_OVERHEAD_BYTES = 256  # SKB_DATA_ALIGN(sizeof(struct sk_buff)) on x86-64, part of truesize
RECV_BATCH = 16  # recv() calls per thread step: bounds how long a softirq waits for a thread
TCP_RECV_BYTES = 65536  # a TCP recv() into a 64 KiB buffer
TX_REAP_THRESH = 32  # reap transmit completions before a send once this many are in flight
ETH_MTU = 1500  # the interface MTU the stack segments sends at
KV_VALUE_BYTES = 64  # kv: value bytes of every GET reply (memcached-like small values)
UDP_MAX_PAYLOAD = 65507  # 65535 - 20 (IPv4) - 8 (UDP)

# skb tuples: (born_ps, frame bytes, segments, payload bytes, frame data or None, checksum
# state, flow hash, truesize, protocol)
_BORN, _LEN, _SEGS, _PAYLOAD, _DATA, _CSUM, _HASH, _TRUE, _PROTO = range(9)
_CSUM_DONE, _CSUM_SOFT, _CSUM_BAD = 0, 1, 2  # verified (NIC or GRO) / to verify: good, bad
_TRUESIZE = RX_BUFFER_BYTES + SKB_OVERHEAD_BYTES
# Protocol of an RSS hash type (hw.ref.rss.HashType): TCP_IPV4 2, UDP_IPV4 3, TCP_IPV6 5,
# UDP_IPV6 6; the others say nothing about ports.
_PROTO_OF_HASH = (0, 0, IPPROTO_TCP, IPPROTO_UDP, 0, IPPROTO_TCP, IPPROTO_UDP) + (0,) * 249
_UDP_HEADERS_OF_HASH = (42, 42, 42, 42, 62, 62, 62) + (42,) * 249  # Ethernet + IP + UDP
_TRUNCATED = CplFlags.TRUNCATED
_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_IPV6 = struct.Struct("!IHBB16s16s")
_TX_PACK = TX_DESC.struct.pack
_KSOFTIRQD = "ksoftirqd"


class SocketApp:
    """What the application threads did; results read it as they read the drivers' apps.

    Members
    -------
    name : str
    frames : int
        ``drop``, ``tcp_bulk``: segments received (an LRO or GRO skb counts its segments);
        ``udp_echo``, ``kv``, ``tcp_rr``: requests answered.
    bytes : int
        Frame bytes (no FCS) of what ``frames`` counts.
    latency_ps : array.array
        ``drop``, ``tcp_bulk``: when the thread had the data minus when it was sent (one per
        skb); ``udp_echo``, ``kv``, ``tcp_rr``: when the reply was handed to the NIC minus the
        request's birth.
    first_ps, last_ps : int or None
        When the first and the last were finished.
    completions : int
        Receive completions the driver took (an LRO frame counts once).
    """

    needs_data = True  # the stack reads the frames (as :class:`nicsim.host.apps.App` says)

    def __init__(self, name):
        self.name = name
        self.frames = 0
        self.bytes = 0
        self.latency_ps = array("q")
        self.first_ps = None
        self.last_ps = None
        self.completions = 0

    def done(self, frames, nbytes, t_ps):
        """Count ``frames`` of ``nbytes`` finished at ``t_ps``."""
        if self.first_ps is None:
            self.first_ps = t_ps
        self.last_ps = t_ps
        self.frames += frames
        self.bytes += nbytes


class _Napi:
    """A NAPI instance: a receive queue's, or a core's RPS backlog (``q`` is None)."""

    __slots__ = ("num", "q", "cpu", "scheduled", "gro", "meta", "seq", "txq")

    def __init__(self, num, q, cpu, txq):
        self.num = num
        self.q = q
        self.cpu = cpu
        self.scheduled = False
        self.txq = txq
        self.seq = 0
        self.meta = {}  # GRO: sequence number -> (born, hash) of the segments held
        # What Linux 6.18 does (hw.ref.lro's docstring).
        self.gro = LroEngine(keep_order=False, cwr_rule="alone", fixed_id_needs_df=False)


class _Cpu:
    """The per-core state of the stack: NAPI poll list, RPS backlog, softirq and task."""

    __slots__ = ("core", "num", "poll_list", "backlog", "backlog_napi", "irqs", "ipis", "idle",
                 "kick", "ksoftirqd", "slice_ps", "task", "t", "kicks", "need_resched",
                 "charged_ps", "irq_due_ps")

    def __init__(self, core):
        self.core = core
        self.num = core.num
        self.poll_list = deque()
        self.backlog = deque()
        self.backlog_napi = _Napi(-1, None, self, None)
        self.irqs = 0  # hard interrupts taken and not yet charged
        self.ipis = 0
        self.idle = False
        self.kick = None
        self.ksoftirqd = False  # the softirq work has been handed to ksoftirqd
        self.slice_ps = 0  # how long ksoftirqd ran last: what a thread may run against it
        self.task = None  # the thread (or ksoftirqd) the core last switched to
        self.t = 0  # the softirq's clock while it runs
        self.kicks = []  # cores to send an RPS IPI to at the end of the softirq run
        self.need_resched = False  # a thread of this core was woken and waits for it
        self.charged_ps = 0  # the softirq's time is accounted up to here
        self.irq_due_ps = 0  # ... but for this much hard-IRQ time, accounted as it passes


class _Socket:
    __slots__ = ("queue", "rmem", "rcvbuf")

    def __init__(self, rcvbuf):
        self.queue = deque()  # (skb, number of the core that queued it)
        self.rmem = 0
        self.rcvbuf = rcvbuf


class _Thread:
    __slots__ = ("num", "cpu", "core", "sock", "blocked", "wake", "txq")

    def __init__(self, num, cpu, sock, txq):
        self.num = num
        self.cpu = cpu
        self.core = cpu.core
        self.sock = sock
        self.blocked = False
        self.wake = None
        self.txq = txq


class LinuxPath:
    """The Linux stack over every receive queue and core of one PCI function.

    Parameters
    ----------
    ctx : nicsim.host.paths.PathContext
    driver : nicsim.host.driver.NicDriver
    queues : list of int
        Receive queues (all of the function's).
    cores : list of nicsim.host.cpu.Core
        The host's cores (softirqs, RPS targets and application threads run on them).

    Members
    -------
    app : SocketApp
        What the application threads did (``frames``, ``bytes``, ``latency_ps``, ...).
    drops : dict
        Frames the host dropped, by reason: ``socket_buffer_full``, ``rx_bad_checksum``,
        ``rx_no_socket`` (no socket for the protocol), ``rx_truncated``, ``rps_backlog_full``,
        ``tx_ring_full``, ``tcp_old_data``, ``tcp_no_payload``.
    conns : dict
        TCP connections (:class:`nicsim.host.tcp.Connection`) by 4-tuple.
    interrupts : int
        Interrupts taken.
    polls : int
        NAPI polls of receive queues.
    threads : list
        The application threads (``threads[n].core``).

    Raises
    ------
    ValueError
        For an application the Linux path does not run, or ``host.app_cores`` naming a core the
        host does not have.
    """

    KV_VALUE_BYTES = KV_VALUE_BYTES

    def __init__(self, ctx, driver, queues, cores):
        params = ctx.params
        app = params.app
        if app not in LINUX_APPS:
            raise ValueError(f"host.app {app!r} forwards frames below the socket layer, which is "
                             f"not what host.path \"linux\" models; use host.path \"pmd\" or "
                             f"\"irq\" for it, or one of the socket applications "
                             f"{', '.join(LINUX_APPS)}")
        self.ctx = ctx
        self.env = ctx.env
        self.bus = ctx.bus
        self.driver = driver
        self.costs = c = ctx.costs
        self.cores = cores
        self.weight = params.budget
        self.drops = {}
        self.interrupts = 0
        self.polls = 0
        self.app = SocketApp(app)
        self.app_name = app
        self.responding = app in ("udp_echo", "kv", "tcp_rr")  # the thread sends a reply
        self.sends = app != "drop"  # replies or ACKs: transmit completions to reap
        self.udp_socket = app in ("drop", "udp_echo", "kv")
        self.tcp_socket = app in ("drop", *TCP_APPS)
        self.bulk = app == "tcp_bulk"
        self.rr = app == "tcp_rr"
        self.conns = {}  # TCP connections by 4-tuple (tcp_bulk in the softirq, tcp_rr's replies)
        features = ctx.features
        self.rx_csum = "rx_csum" in features
        self.tx_csum = "tx_csum" in features
        self.uso = "uso" in features
        self.zerocopy = bool(params.zerocopy)
        self.rps = bool(params.rps)
        self.rfs = bool(params.rfs)
        value = getattr(params, "kv_value_bytes", None) or self.KV_VALUE_BYTES
        if not 0 <= value <= UDP_MAX_PAYLOAD:
            raise ValueError(f"the kv value size must be 0 to {UDP_MAX_PAYLOAD} bytes (one UDP "
                             f"datagram), not {value}")
        self.kv_value = bytes(n & 0xFF for n in range(value))
        self.rr_reply = getattr(params, "rr_reply_bytes", None)
        self.payloads = {}  # reply payloads by size
        self.tcp_csum = "partial" if self.tx_csum else "soft"
        self.dev_addr = {}
        self.cpus = [_Cpu(core) for core in cores]
        ncores = len(cores)
        # Threads: one per application core; the host's app_cores apply to the physical function
        # (a virtual function's path has the one core of its VM).
        app_cores = params.app_cores if driver.fn == 0 and params.app_cores else range(ncores)
        for n in app_cores:
            if not isinstance(n, int) or not 0 <= n < ncores:
                raise ValueError(f"host.app_cores names core {n!r}, but the host has {ncores} "
                                 f"core(s), 0 to {ncores - 1} (host.cores)")
        rcvbuf = params.rmem_kib * 1024
        txqs = driver.tx
        self.threads = [_Thread(i, self.cpus[n], _Socket(rcvbuf),
                                txqs[cores[n].num % len(txqs)])  # XPS: a queue per core
                        for i, n in enumerate(dict.fromkeys(app_cores))]
        self.nthreads = len(self.threads)
        self.xps = {cpu.num: txqs[cpu.num % len(txqs)] for cpu in self.cpus}  # a queue per core
        # An ACK from the softirq: __tcp_send_ack(), the qdisc, the descriptor, the doorbell, and
        # the TCP checksum in software without tx_csum (the IPv4 header's is in tcp_ack).
        self.ack_ps = (c.tcp_ack + c.qdisc + c.driver_tx + c.mmio_write
                       + (0 if self.tx_csum else round(c.csum * 20)))
        self.need_hash = self.rps or self.rfs or self.nthreads > 1
        # Receive queues, their NAPI instances and interrupt vectors.
        self.napis = []
        self.by_vector = {}
        for q in queues:
            rxq = driver.rx[q]
            self.dev_addr.update(zip(rxq.buffers, rxq.buffers_dev, strict=True))
            vector = q % driver.vectors
            cpu = self.cpus[0 if params.irq_affinity == "single" else vector % ncores]
            napi = _Napi(q, rxq, cpu, txqs[q % len(txqs)])
            self.napis.append(napi)
            self.by_vector.setdefault(vector, []).append(napi)
        for vector in self.by_vector:
            ctx.on_interrupt(driver.fn, vector, self._interrupt)
        for napi in self.napis:
            driver.arm(napi.num, True)
        # Per-packet driver work before GRO: the completion, build_skb, the header line (DDIO:
        # an L3 hit), the buffer refill, dev_gro_receive.
        self.rx_packet_ps = c.l3_hit + c.skb_alloc + c.l3_hit + c.rx_refill + c.gro_segment
        self.big_buffers = {}  # (tx queue, slot) -> (address, device address) for super-frames
        for cpu in self.cpus:
            self.env.process(self._softirq(cpu))
        for th in self.threads:
            self.env.process(self._thread(th))

    # -- interrupts and the softirq ---------------------------------------------------------

    def _interrupt(self, vector, t_ps):
        """MSI-X delivery: mask the queues of ``vector`` and schedule their NAPI instances."""
        napis = self.by_vector[vector]
        cpu = napis[0].cpu  # the vector's affinity
        cpu.irqs += 1
        self.interrupts += 1
        for napi in napis:
            if not napi.scheduled:
                napi.scheduled = True
                self.driver.arm(napi.num, False)  # the handler masks the queue's interrupt
                cpu.poll_list.append(napi)
        self._kick(cpu)

    @staticmethod
    def _kick(cpu):
        if cpu.idle:
            cpu.idle = False
            cpu.kick.succeed()

    def _softirq(self, cpu):
        """The NET_RX softirq of one core: hard-IRQ time, then ``net_rx_action`` runs.

        Up to :data:`MAX_SOFTIRQ_RESTART` runs (or 2 ms, or until a thread of the core was woken:
        ``need_resched()``) hold the core as one piece of interrupt-context work; what is left
        then runs in ksoftirqd, which queues for the core like the application threads do and,
        like them, gives it up after a run when another thread waits for it: a reader that still
        has data is runnable, not woken, and would otherwise wait for ten runs.
        """
        env = self.env
        c = self.costs
        core = cpu.core
        resource = core.resource
        while True:
            if not (cpu.irqs or cpu.ipis or cpu.poll_list):
                cpu.ksoftirqd = False
                if cpu.task is _KSOFTIRQD:
                    cpu.task = None
                cpu.idle = True
                cpu.kick = env.event()
                yield cpu.kick
            prio = 2 if cpu.ksoftirqd else (0 if cpu.irqs or cpu.ipis else 1)
            with resource.request(priority=prio) as req:
                yield req
                start = cpu.t = cpu.charged_ps = env.now
                if cpu.ksoftirqd and cpu.task is not _KSOFTIRQD:
                    cpu.t += c.context_switch
                    cpu.task = _KSOFTIRQD
                restarts = 0
                while True:
                    if cpu.irqs or cpu.ipis:
                        # Hard IRQ entry, handler (with the mask write) and exit; an IPI alike.
                        d = cpu.irqs * (c.irq_entry_exit + c.mmio_write) + cpu.ipis * c.ipi
                        cpu.irqs = cpu.ipis = 0
                        cpu.t += d
                        cpu.irq_due_ps += d
                    cpu.t += c.softirq_entry
                    yield from self._net_rx_action(cpu)
                    restarts += 1
                    if (not cpu.poll_list or restarts >= MAX_SOFTIRQ_RESTART
                            or cpu.t - start >= MAX_SOFTIRQ_TIME_PS or cpu.need_resched
                            or cpu.ksoftirqd and resource.queue):
                        # ksoftirqd is a thread: it gives the core up after a run when another
                        # waits for it (CFS), as an application thread that still has data does.
                        break
                if cpu.t > env.now:
                    yield env.timeout(cpu.t - env.now)
                self._account(cpu)
            if cpu.poll_list:
                cpu.ksoftirqd = True
                cpu.slice_ps = env.now - start

    @staticmethod
    def _account(cpu):
        """Charge the softirq's time up to now to its core, hard-IRQ time first.

        A softirq holds its core for up to 2 ms; charged as it goes, the core's accounting is
        right at any instant (the end of the measurement, or its start: :meth:`Core.reset`).
        """
        core = cpu.core
        now = core.env.now
        spent = now - max(cpu.charged_ps, core.start_ps)
        cpu.charged_ps = now
        if spent > 0:
            irq = min(spent, cpu.irq_due_ps)
            cpu.irq_due_ps -= irq
            core.charge(irq, "irq")
            core.charge(spent - irq, "softirq")

    def _net_rx_action(self, cpu):
        """Poll the scheduled NAPI instances of ``cpu`` for up to :data:`NETDEV_BUDGET`."""
        env = self.env
        c = self.costs
        weight = self.weight
        budget = NETDEV_BUDGET
        poll_list = cpu.poll_list
        while budget > 0 and poll_list:
            napi = poll_list.popleft()
            if napi.q is None:
                work = yield from self._poll_backlog(cpu, weight)
            else:
                work = yield from self._poll_queue(napi, cpu, weight)
            budget -= work
            if work < weight:
                # napi_complete_done(): re-arm the queue's interrupt (the device interrupts at
                # once if completions came in meanwhile).
                napi.scheduled = False
                if napi.q is not None:
                    cpu.t += c.irq_save_restore + c.mmio_write
                    self.driver.arm(napi.num, True)
            else:
                poll_list.append(napi)
        if cpu.kicks:
            # net_rps_action_and_irq_enable(): an IPI to each core given backlog work.
            if cpu.t > env.now:
                yield env.timeout(cpu.t - env.now)
                self._account(cpu)
            for target in cpu.kicks:
                cpu.t += c.ipi_send
                target.ipis += 1
                self._kick(target)
            cpu.kicks.clear()

    # -- receive: driver, GRO, stack --------------------------------------------------------

    def _poll_queue(self, napi, cpu, weight):
        """One NAPI poll of a receive queue; return the completions taken."""
        env = self.env
        c = self.costs
        self.polls += 1
        if self.sends and napi.txq.inflight:
            cpu.t += napi.txq.reap() * (c.l3_hit + c.skb_free)  # napi_consume_skb()
        q = napi.q
        done = 0
        while done < weight:
            if cpu.t > env.now:
                yield env.timeout(cpu.t - env.now)
                self._account(cpu)
            got = q.receive(min(GRO_NORMAL_BATCH, weight - done))
            if not got:
                cpu.t += c.l3_hit  # looked at the next completion: not written yet
                break
            done += len(got)
            skbs = self._driver_rx(napi, cpu, got)
            if skbs:
                yield from self._up(cpu, skbs)
        if napi.gro.held:
            skbs = [self._merged(napi, m) for m in napi.gro.flush()]
            yield from self._up(cpu, skbs)
        napi.meta.clear()
        if done:
            cpu.t += 2 * c.mmio_write  # the completion head and the receive doorbell
        if cpu.t > env.now:
            yield env.timeout(cpu.t - env.now)
            self._account(cpu)
        if done:
            q.refill(done, True)
        return done

    def _driver_rx(self, napi, cpu, got):
        """Driver and GRO work on completions ``got``; return the skbs GRO passes up."""
        c = self.costs
        tags_pop = self.bus.tags.pop
        devs = self.dev_addr
        mem_read = self.bus.mem_read
        drops = self.drops
        rx_csum = self.rx_csum
        fast = not self.responding
        per_packet = self.rx_packet_ps
        t = cpu.t
        out = []
        self.app.completions += len(got)
        for entry, buf in got:
            t += per_packet
            length = entry[2]
            segs = entry[7] or 1
            born = tags_pop(devs[buf], None)
            if entry[6] & _TRUNCATED:
                drops["rx_truncated"] = drops.get("rx_truncated", 0) + segs
                continue
            htype = entry[4]
            verdict = entry[5]
            csum_ok = rx_csum and verdict >> 2 & 3 == Status.OK
            if verdict & 3 == Status.BAD:  # ip_rcv() checks the IPv4 header itself
                drops["rx_bad_checksum"] = drops.get("rx_bad_checksum", 0) + segs
                continue
            proto = _PROTO_OF_HASH[htype]
            if fast and csum_ok and proto == IPPROTO_UDP:
                out.append((born, length, segs, length - _UDP_HEADERS_OF_HASH[htype], None,
                            _CSUM_DONE, entry[3], _TRUESIZE, proto))
                continue
            data = mem_read(buf, length)
            ip = parse_ip(data)
            if ip is None:
                out.append((born, length, segs, 0, data, _CSUM_DONE, entry[3], _TRUESIZE, 0))
                continue
            version, l3, hlen, proto = ip
            l4 = l3 + hlen
            state = _CSUM_DONE
            if not csum_ok:
                verdicts = rx_checksum(data)
                if verdicts.ip == Status.BAD:
                    drops["rx_bad_checksum"] = drops.get("rx_bad_checksum", 0) + segs
                    continue
                if verdicts.l4 != Status.NONE:
                    state = _CSUM_BAD if verdicts.l4 == Status.BAD else _CSUM_SOFT
            flow_hash = entry[3]
            if not htype and self.need_hash:
                if self.rps or self.rfs:
                    t += c.flow_dissect  # skb_get_hash() without a hardware hash
                flow_hash = _soft_hash(data, version, l3, l4)
            if proto == IPPROTO_UDP:
                payload = max(0, length - l4 - 8)
                out.append((born, length, segs, payload, data, state, flow_hash, _TRUESIZE,
                            proto))
            elif proto == IPPROTO_TCP:
                if segs > 1:  # merged by the NIC (LRO): one skb, verified, past GRO
                    out.append((born, length, segs, _tcp_payload(data, l4), data, _CSUM_DONE,
                                flow_hash, _TRUESIZE, proto))
                    continue
                if state != _CSUM_DONE:
                    t += round(c.csum * (length - l4))  # skb_gro_checksum_validate()
                seq = napi.seq
                napi.seq = seq + 1
                napi.meta[seq] = (born, flow_hash)
                for m in napi.gro.push(data, seq):
                    out.append(self._merged(napi, m))
            else:
                out.append((born, length, segs, 0, data, _CSUM_DONE, flow_hash, _TRUESIZE,
                            proto))
        cpu.t = t
        return out

    def _merged(self, napi, m):
        """Return the skb of a frame GRO delivered (``m.t_ps`` is its first segment's number)."""
        born, flow_hash = napi.meta.pop(m.t_ps)
        data = m.frame
        ip = parse_ip(data)
        payload = _tcp_payload(data, ip.l2_len + ip.header_len)
        state = _CSUM_BAD if m.reason == Reason.BAD_TCP_CHECKSUM else _CSUM_DONE
        return (born, len(data), m.segs, payload, data, state, flow_hash,
                m.segs * RX_BUFFER_BYTES + SKB_OVERHEAD_BYTES, IPPROTO_TCP)

    def _up(self, cpu, skbs):
        """Pass skbs up: to the protocols here, or with RPS/RFS to another core's backlog."""
        if not (self.rps or self.rfs):
            yield from self._deliver(cpu, skbs)
            return
        c = self.costs
        cpus = self.cpus
        ncpus = len(cpus)
        threads = self.threads
        nthreads = self.nthreads
        t = cpu.t
        for skb in skbs:
            if self.rfs:  # the core the flow's reader last ran on
                target = threads[(skb[_HASH] * nthreads) >> 32].cpu
            else:
                target = cpus[(skb[_HASH] * ncpus) >> 32]
            backlog = target.backlog
            if len(backlog) >= NETDEV_MAX_BACKLOG:
                self._drop("rps_backlog_full", skb[_SEGS])
                continue
            t += c.spin_lock  # the target's backlog lock
            backlog.append((skb, cpu.num))
            napi = target.backlog_napi
            if not napi.scheduled:
                napi.scheduled = True
                target.poll_list.append(napi)
                if target is not cpu and target not in cpu.kicks:
                    cpu.kicks.append(target)
        cpu.t = t

    def _poll_backlog(self, cpu, weight):
        """process_backlog(): the protocol work of skbs other cores steered here."""
        c = self.costs
        backlog = cpu.backlog
        work = 0
        t = cpu.t + c.spin_lock
        while backlog and work < weight:
            skbs = []
            while backlog and len(skbs) < GRO_NORMAL_BATCH and work < weight:
                skb, source = backlog.popleft()
                if source != cpu.num:
                    t += c.cache_miss  # the skb's lines were written by the steering core
                skbs.append(skb)
                work += 1
            cpu.t = t
            yield from self._deliver(cpu, skbs)
            t = cpu.t
        return work

    def _deliver(self, cpu, skbs):
        """IP and UDP/TCP receive of ``skbs`` on ``cpu``, then the socket enqueue."""
        env = self.env
        c = self.costs
        t = cpu.t
        accepted = []  # (thread, skb, receive memory charged already)
        acks = []
        udp = c.ip_rcv + c.udp_rcv + c.socket_enqueue
        tcp = c.ip_rcv + c.tcp_rcv
        for skb in skbs:
            proto = skb[_PROTO]
            if proto == IPPROTO_UDP:
                if self.udp_socket:
                    t += udp
                    accepted.append((self._reader(skb[_HASH]), skb, False))
                else:
                    t += c.ip_rcv + c.udp_rcv
                    self._drop("rx_no_socket", skb[_SEGS])
            elif proto == IPPROTO_TCP:
                t += tcp
                if skb[_CSUM] == _CSUM_BAD:
                    self._drop("rx_bad_checksum", skb[_SEGS])
                elif not self.tcp_socket:  # (Linux would answer with a RST)
                    self._drop("rx_no_socket", skb[_SEGS])
                elif self.bulk:
                    t = self._tcp_data(cpu, skb, t, accepted, acks)
                else:
                    t += c.socket_enqueue
                    accepted.append((self._reader(skb[_HASH]), skb, False))
            else:
                t += c.ip_rcv
                self._drop("rx_no_socket", skb[_SEGS])
        if t > env.now:
            yield env.timeout(t - env.now)
            self._account(cpu)
        if acks:
            txq = self.xps[cpu.num]
            for frame, flags, param, made in acks:
                t += self._post(txq, [frame], flags, param, made)
        here = cpu.num
        for th, skb, charged in accepted:
            sock = th.sock
            if not charged:
                if sock.rmem > sock.rcvbuf:  # __udp_enqueue_schedule_skb(); TCP alike here
                    self._drop("socket_buffer_full", skb[_SEGS])
                    continue
                sock.rmem += skb[_TRUE]
            sock.queue.append((skb, here))
            if th.blocked:  # sk_data_ready(): wake the reader
                th.blocked = False
                th.wake.succeed()
                th.cpu.need_resched = True
                if th.cpu is not cpu:
                    t += c.ipi_send
        cpu.t = t

    def _reader(self, flow_hash):
        """Return the thread whose socket gets the flow (the reuseport group's hash)."""
        nthreads = self.nthreads
        return self.threads[(flow_hash * nthreads) >> 32] if nthreads > 1 else self.threads[0]

    def _tcp_data(self, cpu, skb, t, accepted, acks):
        """tcp_bulk: TCP receive of one skb in the softirq (``tcp_rcv_established()``): the
        socket's memory, the connection's sequence space, the ACK if one is due (appended to
        ``acks`` as ``(frame, flags, param, made at)``) or the delayed-ACK timer; return the
        softirq's clock."""
        data = skb[_DATA]
        segs = skb[_SEGS]
        seg = parse_segment(data)
        if seg is None:
            self._drop("rx_no_socket", segs)
            return t
        th = self._reader(skb[_HASH])
        sock = th.sock
        if sock.rmem > sock.rcvbuf:  # tcp_try_rmem_schedule() failed: dropped, not received
            self._drop("socket_buffer_full", segs)
            return t
        conn = self.conns.get(seg.key)
        if conn is None:
            conn = self.conns[seg.key] = Connection(data, seg)
        verdict = conn.receive(seg.seq, seg.payload, -(-seg.payload // segs))
        if verdict == EMPTY:
            self._drop("tcp_no_payload", segs)
            return t
        if verdict == OLD or verdict == HOLE:  # an immediate (duplicate) ACK of rcv_nxt
            t += self.ack_ps
            acks.append((*conn.ack_frame(sock.rcvbuf - sock.rmem, self.tcp_csum), t))
            if verdict == OLD:
                self._drop("tcp_old_data", segs)
                return t
            conn.skip(seg.seq, seg.payload)
        t += self.costs.socket_enqueue
        sock.rmem += skb[_TRUE]
        accepted.append((th, skb, True))
        if conn.ack_due():  # __tcp_ack_snd_check(): more than one full segment unacknowledged
            t += self.ack_ps
            acks.append((*conn.ack_frame(sock.rcvbuf - sock.rmem, self.tcp_csum), t))
        elif conn.delack is None:
            conn.delack = t + DELACK_PS
            if not conn.timer:
                conn.timer = True
                self.env.process(self._delack(conn, cpu, sock))
        return t

    def _delack(self, conn, cpu, sock):
        """The delayed-ACK timer of ``conn`` (``tcp_delack_timer()``): when it expires with
        data unacknowledged, the timer softirq of ``cpu`` sends the ACK."""
        env = self.env
        c = self.costs
        while conn.delack is not None:
            if env.now < conn.delack:
                yield env.timeout(conn.delack - env.now)
                continue
            conn.delack = None
            if not conn.unacked():
                break
            yield from cpu.core.work(c.softirq_entry + self.ack_ps, "softirq", priority=1)
            frame, flags, param = conn.ack_frame(sock.rcvbuf - sock.rmem, self.tcp_csum)
            reap = self._post(self.xps[cpu.num], [frame], flags, param, env.now)
            if reap:
                yield from cpu.core.work(reap, "softirq", priority=1)
        conn.timer = False

    def _drop(self, reason, count):
        self.drops[reason] = self.drops.get(reason, 0) + count

    # -- application threads ------------------------------------------------------------------

    def _thread(self, th):
        """An application thread: block in recv(), then recv() until the queue is empty."""
        env = self.env
        c = self.costs
        cpu = th.cpu
        core = th.core
        here = core.num
        queue = th.sock.queue
        sock = th.sock
        app = self.app
        lat = app.latency_ps
        responding = self.responding
        kv = self.app_name == "kv"
        rr = self.rr
        recv_fixed = c.spin_lock + c.skb_free
        while True:
            if not queue:
                th.blocked = True
                th.wake = env.event()
                yield th.wake
            with core.resource.request(priority=2) as req:
                yield req
                start = t = since = env.now
                app_ps = 0  # application time since ``since``, up to which the step is charged
                cpu.need_resched = False
                if cpu.task is not th:
                    t += c.context_switch
                    cpu.task = th
                slice_end = start + cpu.slice_ps if cpu.ksoftirqd else start
                n = 0
                tcp_bytes = 0  # bytes of the TCP recv() call under way
                tcp_conn = None  # ... and its connection
                while queue and (n < RECV_BATCH or t < slice_end):
                    if n and not n % RECV_BATCH and t > env.now:  # a slice against ksoftirqd:
                        # charged as it goes, and what other cores queue meanwhile is seen
                        yield env.timeout(t - env.now)
                        since = self._charge_thread(core, since, app_ps)
                        app_ps = 0
                    skb, source = queue.popleft()
                    sock.rmem -= skb[_TRUE]
                    n += 1
                    payload = skb[_PAYLOAD]
                    if skb[_PROTO] == IPPROTO_TCP:
                        conn = _tcp_flow(skb[_DATA])
                        if conn == tcp_conn and 0 < tcp_bytes <= TCP_RECV_BYTES - payload:
                            tcp_bytes += payload  # the same recv() call goes on
                        else:
                            t += c.syscall
                            tcp_bytes = payload
                            tcp_conn = conn
                    else:
                        t += c.syscall
                    t += (recv_fixed + (c.l2_hit if source == here else c.cache_miss)
                          + c.copy(payload))
                    if skb[_CSUM]:  # udp_recvmsg(): skb_copy_and_csum_datagram()
                        t += round(c.csum * payload)
                        if skb[_CSUM] == _CSUM_BAD:
                            self._drop("rx_bad_checksum", skb[_SEGS])
                            continue
                    born = skb[_BORN]
                    if not responding:
                        t += c.l2_hit  # the application looks at the data
                        app_ps += c.l2_hit
                        if born is not None:
                            lat.append(t - born)
                        app.done(skb[_SEGS], skb[_LEN], t)
                        continue
                    work = c.hash_lookup if kv else c.l2_hit  # a GET, or a look at the request
                    t += work
                    app_ps += work
                    if rr:
                        tcp_conn = None  # the next recv() is a call of its own
                        reply = self._tcp_reply(skb[_DATA], sock)
                        if reply is None:
                            self._drop("rx_no_socket", skb[_SEGS])
                            continue
                        frames, flags, param, cost = reply
                    else:
                        frames, flags, param, cost = self._reply(
                            skb[_DATA], self.kv_value if kv else None)
                    t += cost
                    yield env.timeout(t - env.now)
                    since = self._charge_thread(core, since, app_ps)
                    app_ps = 0
                    t += self._post(th.txq, frames, flags, param, born)
                    if born is not None:
                        lat.append(t - born)
                    app.done(1, skb[_LEN], t)
                if not queue:
                    t += c.syscall  # the recv() that finds nothing and sleeps
                    cpu.task = None
                if t > env.now:
                    yield env.timeout(t - env.now)
                self._charge_thread(core, since, app_ps)

    @staticmethod
    def _charge_thread(core, since, app_ps):
        """Charge a thread's time from ``since`` to now to ``core``: ``app_ps`` of it to the
        application, the rest to the kernel (``syscall``); return now."""
        now = core.env.now
        spent = now - max(since, core.start_ps)
        app = min(app_ps, spent)
        core.charge(app, "app")
        core.charge(spent - app, "syscall")
        return now

    # -- send ---------------------------------------------------------------------------------

    def _tcp_reply(self, data, sock):
        """tcp_rr: return (frames, flags, param, CPU time of the ``send()``) of the reply to the
        request segment ``data`` on its connection, or ``None`` when it is not one."""
        c = self.costs
        seg = parse_segment(data)
        if seg is None:
            return None
        conn = self.conns.get(seg.key)
        if conn is None:
            conn = self.conns[seg.key] = Connection(data, seg)
        size = self.rr_reply or seg.payload
        payload = self.payloads.get(size)
        if payload is None:
            payload = self.payloads[size] = payload_bytes(size)
        # The reply follows what the request acknowledges and acknowledges the request.
        frame, flags, param = conn.frame(seg.ack, seg.seq + seg.payload, PSH | ACK, payload,
                                         sock.rcvbuf - sock.rmem, self.tcp_csum)
        cost = (c.syscall + c.tcp_send + c.copy(size) + c.qdisc + c.driver_tx + c.mmio_write)
        if not self.tx_csum:
            cost += round(c.csum * (20 + size))
        return [frame], flags, param, cost

    def _reply(self, data, value):
        """Return (frames, flags, param, CPU time of the send) of the reply to the UDP datagram
        ``data``: its payload echoed, or ``value``."""
        c = self.costs
        version, l3, hlen, _ = parse_ip(data)
        l4 = l3 + hlen
        if value is None:
            ip_end = l3 + (int.from_bytes(data[l3 + 2:l3 + 4], "big") if version == 4
                           else 40 + int.from_bytes(data[l3 + 4:l3 + 6], "big"))
            value = data[l4 + 8:max(l4 + 8, ip_end)]  # without Ethernet padding
        nbytes = len(value)
        ulen = 8 + nbytes
        eth = data[6:12] + data[0:6] + data[12:l3]
        if version == 4:
            src, dst = data[l3 + 16:l3 + 20], data[l3 + 12:l3 + 16]
            # An unconnected socket's datagram with DF: IP ID 0 (ip_select_ident_segs()).
            iph = bytearray(_IPV4.pack(0x45, 0, 20 + ulen, 0, 0x4000, 64, IPPROTO_UDP, 0, src,
                                       dst))
            iph[10:12] = (~ones_sum(iph) & 0xFFFF).to_bytes(2, "big")
            mss = ETH_MTU - 20 - 8
        else:
            src, dst = data[l3 + 24:l3 + 40], data[l3 + 8:l3 + 24]
            iph = _IPV6.pack(0x60000000, ulen, IPPROTO_UDP, 64, src, dst)
            mss = ETH_MTU - 40 - 8
        ports = data[l4 + 2:l4 + 4] + data[l4:l4 + 2]
        cost = c.syscall + c.udp_send + c.qdisc + c.mmio_write
        if self.zerocopy:  # MSG_ZEROCOPY: pin the user pages, notify completion later
            cost += round(c.pages(nbytes) * c.page_pin) + c.zerocopy_notify
        else:
            cost += c.copy(nbytes)
        if nbytes <= mss:
            pseudo = ones_sum(src + dst, IPPROTO_UDP + ulen)
            if self.tx_csum:  # CHECKSUM_PARTIAL: the pseudo-header sum as the seed
                udp = ports + ulen.to_bytes(2, "big") + pseudo.to_bytes(2, "big")
                flags = TxFlags.CSUM_PARTIAL
                param = len(eth) + len(iph) | 6 << 8
            else:
                head = ports + ulen.to_bytes(2, "big")
                check = ~ones_sum(head + b"\0\0" + value, pseudo) & 0xFFFF or 0xFFFF
                udp = head + check.to_bytes(2, "big")
                flags = param = 0
                cost += round(c.csum * ulen)
            return [eth + bytes(iph) + udp + value], flags, param, cost + c.driver_tx
        # UDP_SEGMENT: one skb; the NIC (USO) or software GSO cuts it into datagrams.
        frame = eth + bytes(iph) + ports + ulen.to_bytes(2, "big") + b"\0\0" + value
        if self.uso:
            return [frame], TxFlags.USO, mss, cost + c.driver_tx
        segments = list(ref_tso.segment(frame, mss, "udp").frames)
        cost += len(segments) * (c.gso_segment + c.driver_tx)
        if not self.tx_csum:
            cost += round(c.csum * (nbytes + 8 * len(segments)))
        return segments, 0, 0, cost

    def _post(self, txq, frames, flags, param, born):
        """Place frames on transmit queue ``txq`` now; return the CPU time of reaping."""
        c = self.costs
        cost = 0
        if txq.inflight >= TX_REAP_THRESH or txq.room() < len(frames):
            cost = txq.reap() * (c.l3_hit + c.skb_free)
        if len(frames[0]) <= RX_BUFFER_BYTES:
            sent = txq.send(frames, flags, param, born=[born] * len(frames))
        else:
            sent = self._send_large(txq, frames[0], flags, param, born)
        if sent < len(frames):
            self._drop("tx_ring_full", len(frames) - sent)
        return cost

    def _send_large(self, txq, frame, flags, param, born):
        """Send a super-frame larger than the queue's slot buffers from a buffer of its own
        (the skb's pages, mapped for the device); return 1 if it fit the ring."""
        if txq.room() < 1:
            return 0
        bus = self.bus
        fn = self.driver.fn
        slot = txq.tail & txq.mask
        key = (txq.num, slot)
        if key not in self.big_buffers:
            size = UDP_MAX_PAYLOAD + 256
            addr = bus.alloc(size, 4096, fn)
            self.big_buffers[key] = (addr, bus.dma_map(fn, addr, size))
        addr, dev = self.big_buffers[key]
        bus.mem_write(addr, frame)
        bus.mem_write(txq.ring + slot * DESC_BYTES, _TX_PACK(dev, len(frame), flags, 0, param))
        if born is not None:
            bus.tags[dev] = born
        txq.tail = (txq.tail + 1) & 0xFFFF
        txq.inflight += 1
        bus.mmio_write(fn, txq.tail_reg, txq.tail)
        return 1


def _soft_hash(data, version, l3, l4):
    """Return a 32-bit hash of the addresses and ports (what the flow dissector hashes)."""
    if version == 4:
        return zlib.crc32(data[l3 + 12:l3 + 20] + data[l4:l4 + 4])
    return zlib.crc32(data[l3 + 8:l3 + 40] + data[l4:l4 + 4])


def _tcp_flow(data):
    """Return the addresses and ports of the TCP segment ``data``: its connection."""
    version, l3, hlen, _ = parse_ip(data)
    l4 = l3 + hlen
    if version == 4:
        return data[l3 + 12:l3 + 20] + data[l4:l4 + 4]
    return data[l3 + 8:l3 + 40] + data[l4:l4 + 4]


def _tcp_payload(data, l4):
    """Return the TCP payload bytes of ``data`` (TCP header at ``l4``)."""
    if len(data) < l4 + 13:
        return 0
    return max(0, len(data) - l4 - (data[l4 + 12] >> 4) * 4)
