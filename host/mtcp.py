# Ref: E. Jeong et al., "mTCP: a Highly Scalable User-level TCP Stack for Multicore Systems",
#      USENIX NSDI 2014 (§3: a stack per core on batched packet I/O, no locks, flow-level event
#      aggregation, batched transmission); mTCP src/tcp_in.c (ProcessTCPPayload(): in-order data
#      EnqueueACK(ACK_OPT_AGGREGATE), otherwise ACK_OPT_NOW), src/tcp_out.c (ACK_PIGGYBACK,
#      WriteTCPACKList(): one aggregated ACK per stream per loop)
"""mTCP-style user-level TCP on the poll-mode driver.

Each core runs one stack over its receive queues (queue ``i`` on core ``i % cores``, a transmit
queue per core) in a busy-polling loop, as DPDK lcores do: every core is busy all the time. A
loop iteration

1. takes a burst (``host.burst``, 32) from each queue, with the PMD's receive work
   (:class:`nicsim.host.paths.PmdPath`: completion, mbuf metadata, a fresh mbuf, descriptors and
   the doorbell every 32 buffers);
2. runs TCP on each segment at user level: the header line (``l3_hit``, DDIO), the 4-tuple's
   flow lookup (``hash_lookup``) and the protocol work (``mtcp_rcv``); no system call, no skb,
   no lock, no socket wake-up. The checksum the NIC did not verify is summed in software
   (``csum`` per byte); a frame that is not TCP has no socket (``rx_no_socket``). The payload
   stays in its mbuf: the receive is zero-copy up to the application's read;
3. hands the application one event per connection with new data (an event queue:
   ``ring_enqueue`` + ``ring_dequeue``), and runs it on them in the same loop:

   * ``tcp_bulk`` reads the data (``mtcp_read()``: the copy, ``memcpy`` per byte, then a look
     at it, ``l2_hit``); latency is the time of the read minus the segment's birth;
   * ``tcp_rr`` reads each request (the copy, ``l2_hit``) and writes the reply
     (``mtcp_write()``: the copy into the send buffer) of ``host.rr_reply_bytes`` (default:
     the request's size), sent with the ACK piggybacked (``mtcp_send``);

4. writes the ACK list: one ACK per connection that got in-order data in the loop (mTCP's
   ``ACK_OPT_AGGREGATE``: the ACK of a burst of a stream's segments acknowledges all of them);
   out-of-order or duplicate data was answered with an ACK each (``ACK_OPT_NOW``); each ACK is
   an ``mtcp_send``;
5. transmits everything the loop made in one burst: the copy into the transmit buffers, the
   descriptors (four to a line), one doorbell; checksums by the NIC with ``tx_csum`` (IPv4
   header and TCP, ``TxFlags.CSUM_AUTO``), else summed in software; then frees the mbufs.

Sequence numbers, ACKs and frames follow :mod:`nicsim.host.tcp` (connections taken as
established, the open-loop sender's holes gone past). Not modelled: the hand-off between
mTCP's stack thread and the application thread on the same core (under load the application
finds its events queued and neither thread sleeps; an idle application would be woken through
a condition variable), the copy mTCP makes into its receive ring buffer (``RBPut()``) besides
the application's, timers and retransmission.

CPU accounting: the application's share (reads, writes, looks) as ``app``, the rest
(receive, TCP, ACKs, transmit, idle polling) as ``poll``.
"""

from __future__ import annotations

from nicsim.host.apps import AppGroup
from nicsim.host.linux import SocketApp
from nicsim.host.paths import _Path
from nicsim.host.tcp import (
    ACK,
    EMPTY,
    IN_ORDER,
    OLD,
    PSH,
    TCP_APPS,
    Connection,
    parse_segment,
    payload_bytes,
)
from nicsim.hw.nic.formats import CplFlags, TxFlags
from nicsim.hw.ref.checksum import Status, rx_checksum

__all__ = ["MtcpPath", "RCVBUF_BYTES"]

# Assumption: a connection's receive buffer; the application empties it in every loop, so each
# ACK advertises all of it.
RCVBUF_BYTES = 1 << 20
_LEN, _SEGS, _FLAGS, _CSUM = 2, 7, 6, 5  # COMPLETION field positions used here
_TRUNCATED = CplFlags.TRUNCATED


class _Lcore:
    """One core's stack: its receive queues, transmit queue, connections and results."""

    __slots__ = ("core", "queues", "txq", "conns", "app")

    def __init__(self, core, queues, txq, app):
        self.core = core
        self.queues = queues
        self.txq = txq
        self.conns = {}
        self.app = app


class MtcpPath(_Path):
    """mTCP on every core of the function (see the module documentation).

    Members
    -------
    app : nicsim.host.apps.AppGroup
        The cores' results (:class:`nicsim.host.linux.SocketApp` each): ``frames`` are the
        segments read (``tcp_bulk``) or the requests answered (``tcp_rr``).
    drops : dict
        Frames dropped by the host, by reason: ``rx_truncated``, ``rx_bad_checksum``,
        ``rx_no_socket``, ``tcp_old_data``, ``tcp_no_payload``, ``tx_ring_full``.
    lcores : list
        Each core's stack (``lcores[n].conns``: its connections by 4-tuple).

    Raises
    ------
    ValueError
        For an application that is not a TCP one.
    """

    flush = False

    def __init__(self, ctx, driver, queues, cores):
        params = ctx.params
        app = params.app
        if app not in TCP_APPS:
            raise ValueError(f"host.path \"mtcp\" is a TCP stack that runs the TCP applications "
                             f"{' and '.join(TCP_APPS)}, not host.app {app!r}")
        # What _Path sets up, without the raw-frame applications.
        self._attach(ctx, driver, queues, cores)
        c = self.costs
        self.rx_frame_ps = c.l3_hit + c.l2_hit + c.mbuf_alloc
        self.rr = app == "tcp_rr"
        self.rr_reply = getattr(params, "rr_reply_bytes", None)
        self.payloads = {}
        features = ctx.features
        self.rx_csum = "rx_csum" in features
        self.tx_csum = "tx_csum" in features
        self.csum_mode = "auto" if self.tx_csum else "soft"
        # Per segment: the header line, the flow lookup, the protocol work.
        self.tcp_ps = c.l3_hit + c.hash_lookup + c.mtcp_rcv
        self.lcores = []
        ntx = len(driver.tx)
        for n, core in enumerate(cores):
            mine = [q for i, q in enumerate(self.queues) if i % len(cores) == n]
            if not mine:
                continue
            txq = driver.tx[min(mine[0].num, ntx - 1)]
            self.lcores.append(_Lcore(core, mine, txq, SocketApp(app)))
        for q in self.queues:
            driver.arm(q.num, False)
        self.app = AppGroup([lc.app for lc in self.lcores])
        self.txq = self.lcores[0].txq if self.lcores else driver.tx[0]
        for lc in self.lcores:
            self.env.process(self._loop(lc))

    def _payload(self, size):
        payload = self.payloads.get(size)
        if payload is None:
            payload = self.payloads[size] = payload_bytes(size)
        return payload

    def _loop(self, lc):
        """The core's stack loop: receive, TCP, the application, ACKs, one transmit burst."""
        env = self.env
        c = self.costs
        core = lc.core
        app = lc.app
        conns = lc.conns
        burst = self.burst
        rr = self.rr
        look = c.l3_hit  # the next completion: not there
        free = c.mbuf_free
        event = c.ring_enqueue + c.ring_dequeue
        send = c.mtcp_send
        soft = not self.tx_csum
        csum_mode = self.csum_mode
        tags_pop = self.bus.tags.pop
        devs = self.dev_addr
        mem_read = self.bus.mem_read
        rx_csum = self.rx_csum
        lat = app.latency_ps
        while True:
            t = env.now
            app_ps = 0
            more = False
            taken = 0
            reads = []  # tcp_bulk: (born, segments, frame bytes, payload bytes)
            requests = []  # tcp_rr: (connection, segment, birth, frame bytes)
            ready = {}  # connections with in-order data in this loop (events, ACK list)
            out = []
            born_out = []
            for q in lc.queues:
                got = q.receive(burst)
                if not got:
                    t += look
                    continue
                n = len(got)
                more = more or n == burst
                taken += n
                t += self._rx_ps(q, n)
                q.refill(n, False, t)
                for entry, buf in got:
                    segs = entry[_SEGS] or 1
                    born = tags_pop(devs[buf], None)
                    if entry[_FLAGS] & _TRUNCATED:
                        self._drop("rx_truncated", segs)
                        continue
                    verdict = entry[_CSUM]
                    if verdict & 3 == Status.BAD:  # the IPv4 header checksum
                        self._drop("rx_bad_checksum", segs)
                        continue
                    length = entry[_LEN]
                    data = mem_read(buf, length)
                    t += self.tcp_ps
                    seg = parse_segment(data)
                    if seg is None:
                        self._drop("rx_no_socket", segs)
                        continue
                    if not (rx_csum and verdict >> 2 & 3 == Status.OK):
                        t += round(c.csum * (length - seg.l4))  # the TCP checksum in software
                        if rx_checksum(data).l4 == Status.BAD:
                            self._drop("rx_bad_checksum", segs)
                            continue
                    conn = conns.get(seg.key)
                    if conn is None:
                        conn = conns[seg.key] = Connection(data, seg)
                    if rr:
                        if seg.payload <= 0:
                            self._drop("tcp_no_payload", segs)
                            continue
                        requests.append((conn, seg, born, length))
                        ready[conn] = True
                        continue
                    verdict = conn.receive(seg.seq, seg.payload, -(-seg.payload // segs))
                    if verdict == IN_ORDER:
                        ready[conn] = True
                    elif verdict == EMPTY:
                        self._drop("tcp_no_payload", segs)
                        continue
                    else:  # ACK_OPT_NOW: a (duplicate) ACK of rcv_nxt at once
                        t += send + (round(c.csum * 40) if soft else 0)
                        frame, _, _ = conn.ack_frame(RCVBUF_BYTES, csum_mode)
                        out.append(frame)
                        born_out.append(t)
                        if verdict == OLD:
                            self._drop("tcp_old_data", segs)
                            continue
                        conn.skip(seg.seq, seg.payload)
                        ready[conn] = True
                    reads.append((born, segs, length, seg.payload))
            if taken:
                # The application's events: one per connection with new data.
                t += len(ready) * event
                if rr:
                    for conn, seg, born, length in requests:
                        size = self.rr_reply or seg.payload
                        work = c.copy(seg.payload) + c.l2_hit + c.copy(size)  # read, look, write
                        t += work
                        app_ps += work
                        t += send + (round(c.csum * (40 + size)) if soft else 0)
                        frame, _, _ = conn.frame(seg.ack, seg.seq + seg.payload, PSH | ACK,
                                                 self._payload(size), RCVBUF_BYTES, csum_mode)
                        out.append(frame)
                        born_out.append(t if born is None else born)
                        app.done(1, length, t)
                else:
                    for born, segs, length, payload in reads:
                        work = c.copy(payload) + c.l2_hit
                        t += work
                        app_ps += work
                        if born is not None:
                            lat.append(t - born)
                        app.done(segs, length, t)
                    # The ACK list: one ACK per connection that got in-order data.
                    for conn in ready:
                        if conn.unacked():
                            t += send + (round(c.csum * 40) if soft else 0)
                            frame, _, _ = conn.ack_frame(RCVBUF_BYTES, csum_mode)
                            out.append(frame)
                            born_out.append(t)
                app.completions += taken
            if out:
                t += self._tx_ps(out)
                yield env.timeout(t - env.now)
                flags = 0 if soft else TxFlags.CSUM_AUTO
                t += self._transmit(lc.txq, (out, born_out, flags))
            t += taken * free
            yield env.timeout(self._wake_time(t, more) - env.now)
            core.charge(app_ps, "app")
            core.charge(env.now - core.start_ps - core.busy_ps, "poll")  # always busy

    def _drop(self, reason, count):
        self.drops[reason] = self.drops.get(reason, 0) + count
