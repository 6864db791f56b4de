# Ref: S. Han, K. Jang, K. Park, S. Moon, "PacketShader: a GPU-accelerated software router",
#      SIGCOMM 2010 §4-5 (the CPU polls the NIC in batches, gathers what the GPU needs into one
#      input buffer, the GPU runs one kernel per batch, the CPU applies the results and sends);
#      GPU-Ether (peer-to-peer DMA from the NIC into GPU memory)
"""A host path that offloads per-packet work to a GPU in batches (``host.path = "gpu"``).

One poll-mode core does the I/O as the PMD path does (bursts of ``host.burst``, buffers
recycled, every moment busy). Received packets wait in a batch; when ``host.gpu_batch`` have
gathered, or the oldest has waited ``host.gpu_timeout_us``, the batch goes to the GPU
(:class:`nicsim.gpu.device.GpuDevice`): its input is copied over the GPU's PCIe link, the
kernel runs, the results come back. The core goes on polling meanwhile; when a batch's results
have landed it runs the application on the batch and sends the replies. So the batch size sets
the trade-off: larger batches pay the launch and copy costs over more packets (throughput) but
wait longer to fill (latency), and at low load a batch waits for its timeout, where the PMD
path would have answered at once.

``host.gpu_kernel`` names what the GPU does:

``lpm4``, ``lpm6``
    The route lookup (PacketShader's router): 4 or 16 address bytes in, a 2-byte next hop
    out, and the CPU no longer pays ``lpm_lookup`` (the ``l3fwd`` application's lookup).
``rss``, ``checksum``, ``ac``, ``aes``
    The first 128 bytes (RSS) or the whole frame in; 9 bytes, 4 bytes, the match count and a
    word of pattern bits, or the whole frame (encrypted) out. The application's own CPU
    work is unchanged (these model an IDS or IPsec stage added in front of it).

Per packet the core gathers the kernel's input into a pinned staging buffer (``l3_hit`` for
the header line and ``memcpy`` per byte; PacketShader's pre-shading), and per batch it issues
three commands (copy in, launch, copy out: one ``mmio_write`` each). With ``host.gpu_p2p``
the NIC has written the frames into GPU memory itself: no gather copy and no host-to-device
copy, the frames' bytes cross the GPU's link as peer writes instead.

A packet held in a batch holds its mbuf; when :attr:`GpuPath.MAX_HELD` are held the core
stops taking frames from the NIC (whose ring then fills and drops, counted by the NIC).
"""

from __future__ import annotations

from collections import deque

from nicsim.gpu.device import GpuDevice, load_profile
from nicsim.host.cpu import CostModel
from nicsim.host.paths import _Path
from nicsim.sim.pcie import PcieConfig

__all__ = ["GpuPath", "KERNEL_IO"]

_LEN = 2  # COMPLETION field position used here
_US = 1_000_000

# Per kernel: (input bytes of a frame of `n` bytes, result bytes, packet bytes the kernel
# reads, the CPU cost the GPU takes over).
KERNEL_IO = {
    "lpm4": (lambda n: 4, 2, lambda n: 0, "lpm_lookup"),
    "lpm6": (lambda n: 16, 2, lambda n: 0, "lpm_lookup"),
    "rss": (lambda n: min(n, 128), 9, lambda n: min(n, 128), None),
    "checksum": (lambda n: n, 4, lambda n: n, None),
    "ac": (lambda n: n, 8, lambda n: n, None),
    "aes": (lambda n: n, None, lambda n: n, None),  # results: the frame itself
}


class GpuPath(_Path):
    """PMD-style I/O on one core with batches offloaded to a GPU (see the module
    documentation).

    Members
    -------
    gpu : nicsim.gpu.device.GpuDevice
    batches : int
        Batches sent to the GPU.
    batch_sizes : list of int
        Packets in each batch, in order.
    flushed_by_timeout : int
        Batches sent before they were full.
    """

    flush = False
    MAX_HELD = 16384  # mbufs a batch and the batches in flight may hold (a DPDK mempool's
    # worth: l3fwd's default pool is 8192 per port and lcore; assumption for a GPU pipeline)
    COMMANDS_PER_BATCH = 3  # copy in, launch, copy out

    def __init__(self, ctx, driver, queues, cores):
        params = ctx.params
        self.kernel = getattr(params, "gpu_kernel", "lpm4")
        if self.kernel not in KERNEL_IO:
            raise ValueError(f"host.gpu_kernel must be one of {', '.join(KERNEL_IO)}, not "
                             f"{self.kernel!r}")
        super().__init__(ctx, driver, queues, cores)
        self.batch_max = getattr(params, "gpu_batch", 1024)
        self.timeout_ps = round(getattr(params, "gpu_timeout_us", 50.0) * _US)
        self.p2p = getattr(params, "gpu_p2p", False)
        pcie = PcieConfig(gen=getattr(params, "gpu_pcie_gen", 3),
                          lanes=getattr(params, "gpu_pcie_lanes", 16))
        self.gpu = GpuDevice(self.env, load_profile(getattr(params, "gpu_profile", "discrete")),
                             pcie, p2p=self.p2p)
        for q in queues:
            self.driver.arm(q, False)
        self.pending = []
        self.pending_since = None
        self.pending_ready = 0  # p2p: when the pending frames are all in GPU memory
        self.in_flight = deque()  # (Offload, packets), in launch order
        self.held = 0
        self.batches = 0
        self.batch_sizes = []
        self.flushed_by_timeout = 0
        self.env.process(self.run())

    def _attach(self, ctx, driver, queues, cores):
        super()._attach(ctx, driver, queues, cores)
        taken = KERNEL_IO[self.kernel][3]
        if taken is not None:  # the application's share of the work now runs on the GPU
            self.costs = CostModel(ctx.costs.clock_ghz, {**ctx.costs.values, taken: 0})

    def _gather_ps(self, pkts):
        """CPU time to put the kernel's input of ``pkts`` in the staging buffer, and the
        input bytes; with P2P the frames are in GPU memory already."""
        size_in = KERNEL_IO[self.kernel][0]
        nbytes = sum(size_in(e[_LEN]) for e, _, _ in pkts)
        if self.p2p:
            return 0, nbytes
        c = self.costs
        return len(pkts) * c.l3_hit + round(c.memcpy * nbytes), nbytes

    def _launch(self, t):
        """Send the pending batch to the GPU at ``t``; return the CPU time spent."""
        pkts = self.pending[:self.batch_max]
        del self.pending[:self.batch_max]
        size_in, out_each, read, _ = KERNEL_IO[self.kernel]
        lengths = [e[_LEN] for e, _, _ in pkts]
        in_bytes = sum(map(size_in, lengths))
        out_bytes = sum(lengths) if out_each is None else out_each * len(pkts)
        spent = self.COMMANDS_PER_BATCH * self.costs.mmio_write
        done = self.gpu.offload(self.kernel, len(pkts), 0 if self.p2p else in_bytes, out_bytes,
                                kernel_bytes=sum(map(read, lengths)),
                                kernel_longest=max(map(read, lengths), default=0),
                                ready_ps=t + spent,
                                input_ready_ps=self.pending_ready if self.p2p else None)
        self.in_flight.append((done, pkts))
        self.batches += 1
        self.batch_sizes.append(len(pkts))
        self.pending_since = t if self.pending else None
        return spent

    def run(self):
        """Poll, batch, launch, and finish the batches whose results have landed."""
        env = self.env
        core = self.core
        app = self.app
        txq = self.txq
        c = self.costs
        burst = self.burst
        in_flight = self.in_flight
        while True:
            t = env.now
            app_ps = 0
            more = False
            while in_flight and in_flight[0][0].landed_by(t):
                _, pkts = in_flight.popleft()
                n = len(pkts)
                work = app.process(pkts)
                app_ps += work
                t += work
                t = yield from self._send_finished(txq, t)
                t += n * c.mbuf_free
                self.held -= n
            for q in self.queues:
                room = self.MAX_HELD - self.held
                if room <= 0:
                    break
                pkts, t = self._poll(q, min(burst, room), t)
                if not pkts:
                    continue
                n = len(pkts)
                more = more or n == burst
                gather, nbytes = self._gather_ps(pkts)
                t += gather
                if self.p2p:
                    for e, _, _ in pkts:
                        self.pending_ready = max(self.pending_ready,
                                                 self.gpu.peer_write(e[_LEN], env.now))
                if self.pending_since is None:
                    self.pending_since = t
                self.pending.extend(pkts)
                self.held += n
                while len(self.pending) >= self.batch_max:
                    t += self._launch(t)
            if self.pending and t - self.pending_since >= self.timeout_ps:
                self.flushed_by_timeout += 1
                t += self._launch(t)
            wake = self._wake_time(t, more)
            if in_flight and in_flight[0][0].ready_by() < wake:
                wake = max(in_flight[0][0].ready_by(), t)
            if self.pending and self.pending_since + self.timeout_ps < wake:
                wake = max(self.pending_since + self.timeout_ps, t)
            yield env.timeout(max(wake, env.now) - env.now)
            core.charge(app_ps, "app")
            core.charge(env.now - core.start_ps - core.busy_ps, "poll")  # always busy
