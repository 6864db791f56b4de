"""Build and run a scenario: hosts with PCIe, IOMMU, MSI-X and a NIC, wires, traffic, metrics.

:class:`HostSide` is where a NIC backend meets the host: it is the backend's
:class:`~nicsim.hw.nic.device.HostPort` (DMA through the link and the IOMMU, interrupts,
Ethernet out) and the driver's bus (CPU memory accesses, MMIO through the link). DMA writes
become visible to the CPU when they land: they wait in a time-ordered queue until the CPU
looks at memory at or after their landing time.
"""

from __future__ import annotations

import random
import time
from collections import deque
from functools import partial

import simpy

from nicsim.host.cpu import Core, CostModel
from nicsim.host.driver import NicDriver
from nicsim.host.paths import PathContext, make_path
from nicsim.hw.nic import regs
from nicsim.hw.nic.device import RegisterError
from nicsim.hw.nic.model import NicConfig, NicModel

from .dma import DmaPort
from .ether import EthLink, Sink, Switch
from .iommu import Iommu
from .memory import HostMemory
from .msix import Moderation, MsixTable
from .pcie import PcieConfig, PcieLink
from .traffic import ClosedLoopClient, TrafficSource
from .units import NS, US

__all__ = ["HostSide", "Host", "World", "run_scenario", "RESPONDING_APPS"]

# Applications that send every frame (or a reply) back out: measured where it arrives, at the
# sink behind the wire, so latency is the round trip.
RESPONDING_APPS = ("l2fwd", "l3fwd", "udp_echo", "kv", "tcp_rr")

BAR0 = 0xF000_0000  # where the BIOS placed the NIC's BAR (any address above RAM works)
MSI_ADDR = 0xFEE0_0000  # x86 MSI address window
_FEATURE_BITS = {
    "rx_csum": (regs.Feature.RX_CSUM, regs.Ctrl.RX_CSUM),
    "tx_csum": (regs.Feature.TX_CSUM, 0),
    "rss": (regs.Feature.RSS, regs.Ctrl.RSS),
    "tso": (regs.Feature.TSO, 0),
    "uso": (regs.Feature.USO, 0),
    "lro": (regs.Feature.LRO, regs.Ctrl.LRO),
}


class _LandingDmaPort(DmaPort):
    """A DMA port whose writes reach memory at their landing time, not at the call."""

    __slots__ = ("landing", "watch", "watched")

    def write(self, addr, data, ready_ps=None):
        size = len(data)
        t_ps = self.link.dma_write(addr, size, ready_ps)
        if self.iommu is None and 0 <= addr and addr + size <= self.memory.size:
            self.landing.append((t_ps, addr, data))
            for lo, hi in self.watch:
                if lo <= addr < hi:
                    self.watched.append(t_ps)
            self.writes += 1
            self.write_bytes += size
            return t_ps
        pieces = self._pieces(addr, size, True)
        if pieces.__class__ is not list:
            self._block(pieces, t_ps)
            return None
        for lo, hi in self.watch:
            if lo <= addr < hi:
                self.watched.append(t_ps)
        if len(pieces) == 1:
            self.landing.append((t_ps, pieces[0][0], data))
        else:
            pos = 0
            for phys, length in pieces:
                self.landing.append((t_ps, phys, data[pos:pos + length]))
                pos += length
        self.writes += 1
        self.write_bytes += size
        return t_ps


class HostSide:
    """One host: memory, IOMMU, the PCIe link to its NIC, MSI-X tables, and the device."""

    def __init__(self, env, link, memory, iommu, functions, vectors):
        self.env = env
        self.link = link
        self.memory = memory
        self.iommu = iommu
        self.landing = deque()
        self.watch = []  # (lo, hi) DMA address ranges software polls (completion rings)
        self.watched = deque()  # landing times of DMA writes into them, in order
        self.ports = []
        for fn in range(functions):
            port = _LandingDmaPort(link, memory, iommu, fn)
            port.landing = self.landing
            port.watch = self.watch
            port.watched = self.watched
            self.ports.append(port)
        self.msix = [MsixTable(env, link, vectors, partial(self._deliver, fn))
                     for fn in range(functions)]
        self.handlers = {}  # (fn, vector) -> callable(vector, t_ps)
        self.tags = {}
        self.device = None
        self.eth_links = {}
        self.dma_sent = 0
        self.guest_base = {}
        self.guest = {}  # fn -> [next, end) of its guest's memory under PCI passthrough
        self.mapped = {}

    # -- HostPort (what the device asks) ----------------------------------------------------

    def flush(self, t_ps):
        """Make every DMA write that landed by ``t_ps`` visible in memory."""
        landing = self.landing
        write = self.memory.write
        while landing and landing[0][0] <= t_ps:
            _, addr, data = landing.popleft()
            write(addr, data)

    def dma_read(self, fn, addr, size, ready_ps):
        self.flush(ready_ps)
        return self.ports[fn].read(addr, size, ready_ps)

    def dma_write(self, fn, addr, data, ready_ps):
        port = self.ports[fn]
        try:
            return self._dma_write(port, addr, data, ready_ps)
        finally:
            self.dma_sent = self.link.up.free_at

    def _dma_write(self, port, addr, data, ready_ps):
        if port.iommu is None:  # the common case, inlined: no IOMMU, no watched ring
            size = len(data)
            if 0 <= addr and addr + size <= self.memory.size and not self.watch_hit(addr):
                t_ps = self.link.dma_write(addr, size, ready_ps)
                self.landing.append((t_ps, addr, data))
                port.writes += 1
                port.write_bytes += size
                return t_ps
        return port.write(addr, data, ready_ps)

    def dma_write_pair(self, fn, addr, data, addr2, data2, ready_ps):
        """Two DMA writes in order (a frame and its completion); return both landing times
        (``None`` for a blocked one)."""
        port = self.ports[fn]
        size = len(data)
        size2 = len(data2)
        limit = self.memory.size
        if (port.iommu is None and 0 <= addr and addr + size <= limit and 0 <= addr2
                and addr2 + size2 <= limit):
            t, t2 = self.link.dma_write_pair(addr, size, addr2, size2, ready_ps)
            self.dma_sent = self.link.up.free_at
            landing = self.landing
            landing.append((t, addr, data))
            landing.append((t2, addr2, data2))
            for lo, hi in self.watch:
                if lo <= addr2 < hi:
                    self.watched.append(t2)
            port.writes += 2
            port.write_bytes += size + size2
            return t, t2
        first = self.dma_write(fn, addr, data, ready_ps)
        if first is None:
            return None, None  # the device learns of the fault before it sends the second
        return first, self.dma_write(fn, addr2, data2, ready_ps)

    def watch_hit(self, addr):
        for lo, hi in self.watch:
            if lo <= addr < hi:
                return True
        return False

    def irq(self, fn, vector, t_ps, count):
        self.msix[fn].event(vector, t_ps, count)

    def irq_setup(self, fn, vector, frames, usecs):
        self.msix[fn].set_moderation(vector, Moderation(frames, usecs))

    def irq_arm(self, fn, vector, armed, t_ps):
        if armed:
            self.msix[fn].enable(vector, t_ps, discard_outstanding=True)
        else:
            self.msix[fn].disable(vector)

    def eth_out(self, port, batch):
        self.eth_links[port].put(batch)

    def call_at(self, t_ps, callback):
        env = self.env
        env.timeout(max(0, t_ps - env.now)).callbacks.append(lambda _: callback(env.now))

    def on_interrupt(self, fn, vector, handler):
        """Call ``handler(vector, t_ps)`` when MSI-X ``vector`` of function ``fn`` arrives."""
        self.handlers[(fn, vector)] = handler

    def _deliver(self, fn, vector, t_ps):
        handler = self.handlers.get((fn, vector))
        if handler is not None:
            handler(vector, t_ps)

    # -- the bus (what the CPU and driver do) -----------------------------------------------

    @property
    def now(self):
        return self.env.now

    def watch_range(self, addr, size):
        """Note DMA writes into ``[addr, addr + size)`` (a completion ring software polls)."""
        self.watch.append((addr, addr + size))

    def next_landing(self):
        """Return when the next DMA write into a watched range lands (``None``: none in
        flight); a poller that found nothing sleeps until then."""
        watched = self.watched
        now = self.env.now
        while watched and watched[0] <= now:
            watched.popleft()
        return watched[0] if watched else None

    def alloc(self, size, align=64, fn=0):
        """Allocate memory for the driver of function ``fn`` (from its guest's memory when
        the function is passed through to a VM)."""
        guest = self.guest.get(fn)
        if guest is None:
            return self.memory.alloc(size, align)
        start = -(-guest[0] // align) * align
        if start + size > guest[1]:
            raise ValueError("the guest's memory (iommu.guest_mib) is too small for the "
                             "driver's rings and buffers")
        guest[0] = start + size
        return start

    def mem_read(self, addr, size):
        self.flush(self.env.now)
        return self.memory.read(addr, size)

    def mem_write(self, addr, data):
        self.memory.write(addr, data)

    def mmio_write(self, fn, offset, value, at_ps=None):
        """Write a device register from the CPU at ``at_ps`` (default now)."""
        t = self.link.mmio_write(BAR0 + offset, 4, self.env.now if at_ps is None else at_ps)
        self.device.mmio_write(fn, offset, value, t)

    def dma_map(self, fn, addr, size):
        """Grant function ``fn`` access to ``[addr, addr + size)``; return its device address."""
        mode = self.iommu.mode(fn)
        if mode == "translate":
            first = addr & ~0xFFF
            end = (addr + size + 0xFFF) & ~0xFFF
            mapped = self.mapped.setdefault(fn, set())
            for page in range(first, end, 4096):
                if page not in mapped:  # buffers share pages: map each page once
                    self.iommu.map(fn, page, page, 4096)
                    mapped.add(page)
            return addr
        if mode == "passthrough":
            return addr - self.guest_base[fn]
        return addr


class Host:
    """A host with its NIC, driver and packet path, as a scenario describes it."""

    def __init__(self, env, scenario, index):
        s = scenario
        self.index = index
        self.mac = bytes([0x02, 0, 0, 0, 0x10 + index, 0x01])
        p = s.pcie
        pcie_args = {k: getattr(p, k) for k in ("posted_header_credits", "posted_data_credits",
                                                 "nonposted_header_credits", "read_tags")
                     if getattr(p, k) is not None}
        self.link = PcieLink(env, PcieConfig(gen=p.gen, lanes=p.lanes, mps=p.mps, mrrs=p.mrrs,
                                             rcb=p.rcb, addr64=p.addr64, ecrc=p.ecrc,
                                             latency_ps=round(p.latency_ns * NS), **pcie_args))
        self.memory = HostMemory()
        self.iommu = Iommu()
        functions = 1 + s.nic.vfs
        self.side = HostSide(env, self.link, self.memory, self.iommu, functions, s.nic.vectors)
        features = 0
        ctrl = 0
        for name in s.nic.features:
            features |= _FEATURE_BITS[name][0]
            ctrl |= _FEATURE_BITS[name][1]
        if s.nic.promiscuous:
            ctrl |= regs.Ctrl.PROMISC
        config = NicConfig(txqs=s.nic.txqs, rxqs=s.nic.rxqs, vfs=s.nic.vfs,
                           vf_queues=s.nic.vf_queues, vectors=s.nic.vectors,
                           features=features,
                           rx_pipeline_ps=round(s.nic.rx_pipeline_ns * NS),
                           tx_pipeline_ps=round(s.nic.tx_pipeline_ns * NS),
                           desc_fetch_batch=s.nic.desc_fetch_batch,
                           rx_fifo_bytes=s.nic.rx_fifo_kib * 1024)
        self.nic = NicModel(config, self.side)
        self.side.device = self.nic
        if s.iommu.mode == "off":
            for port in self.side.ports:
                port.iommu = None  # addresses are physical: no lookups on the DMA path
        elif s.iommu.mode == "translate":
            for fn in range(functions):
                self.iommu.set_mode(fn, "translate")
        elif s.iommu.mode == "passthrough":
            guest = s.iommu.guest_mib << 20
            for fn in range(functions):
                base = self.memory.alloc(guest, 4096)
                self.iommu.set_mode(fn, "passthrough", host_base=base, guest_size=guest)
                self.side.guest_base[fn] = base
                self.side.guest[fn] = [base, base + guest]
        for v in range(s.nic.vectors):
            self.side.mmio_write(0, regs.irq_reg(v, "FRAMES"), s.interrupts.frames)
            self.side.mmio_write(0, regs.irq_reg(v, "USECS"), s.interrupts.usecs)
        rss_table = None
        if "rss" in s.nic.features:
            rss_table = [n % s.nic.rxqs for n in range(128)]
        self.driver = NicDriver(self.side, 0, rxqs=s.nic.rxqs, txqs=s.nic.txqs,
                                ring_log2=s.nic.ring_size.bit_length() - 1, ctrl=ctrl,
                                mac=self.mac, vectors=s.nic.vectors, rss_table=rss_table,
                                buffer_bytes=s.nic.buffer_bytes)
        self.ctx = PathContext(
            env=env, bus=self.side, costs=CostModel(s.host.clock_ghz, s.host.costs),
            params=s.host, features=frozenset(s.nic.features),
            rng=random.Random(s.seed * 7919 + index), on_interrupt=self.side.on_interrupt)
        self.cores = [Core(env, n) for n in range(s.host.cores)]
        self.paths = []
        per_core = s.host.path == "irq" or (s.host.path == "pmd"
                                              and s.host.pmd_mode == "run_to_completion")
        if per_core:  # one path per core, queues spread over them
            for n, core in enumerate(self.cores):
                queues = [q for q in range(s.nic.rxqs) if q % s.host.cores == n]
                self.paths.append(make_path(s.host.path, self.ctx, self.driver, queues,
                                            [core]))
        else:  # one path over every queue and core (a PMD pipeline among them)
            self.paths.append(make_path(s.host.path, self.ctx, self.driver,
                                        range(s.nic.rxqs), self.cores))
        # SR-IOV: each virtual function has its own driver (a VM's), queues, vectors, MAC,
        # IOMMU domain and one core.
        self.vf_drivers = []
        for fn in range(1, functions):
            driver = NicDriver(self.side, fn, rxqs=s.nic.vf_queues, txqs=s.nic.vf_queues,
                               ring_log2=s.nic.ring_size.bit_length() - 1,
                               ctrl=ctrl & ~regs.Ctrl.PROMISC, mac=self.function_mac(fn),
                               vectors=s.nic.vectors, buffer_bytes=s.nic.buffer_bytes,
                               rss_table=None if rss_table is None else
                               [n % s.nic.vf_queues for n in range(128)])
            self.vf_drivers.append(driver)
            core = Core(env, len(self.cores))
            self.cores.append(core)
            self.paths.append(make_path(s.host.path, self.ctx, driver, range(s.nic.vf_queues),
                                        [core]))

    def function_mac(self, fn):
        """Return the MAC address of PCI function ``fn`` of this host's NIC."""
        return self.mac if fn == 0 else bytes([0x02, 0, 0, fn, 0x10 + self.index, 0x01])


class _NicPort:
    """Adapts a NIC's Ethernet port to the ``put(batch)`` convention of the wires."""

    def __init__(self, nic, port=0):
        self.nic = nic
        self.port = port

    def put(self, batch):
        self.nic.eth_in(self.port, batch)


class World:
    """Everything one scenario simulates."""

    def __init__(self, scenario, capture=()):
        s = scenario
        self.scenario = s
        self.env = env = simpy.Environment()
        wire = s.wire
        latency = round(wire.latency_ns * NS)
        self.hosts = [Host(env, s, n) for n in range(s.topology.hosts)]
        self.sink = Sink(env, "sink", capture="tx_wire" in capture)
        self.rx_wires = []
        self.tx_wires = []
        self.switch = None
        if s.topology.hosts == 1:
            host = self.hosts[0]
            rx = EthLink(env, wire.rate_gbps, latency, wire.mtu, "rx_wire",
                         out=_NicPort(host.nic), capture="rx_wire" in capture)
            tx = EthLink(env, wire.rate_gbps, latency, wire.mtu, "tx_wire", out=self.sink,
                         capture="tx_wire" in capture)
            host.side.eth_links[0] = tx
            self.rx_wires.append(rx)
            self.tx_wires.append(tx)
            entries = [rx]
        else:
            ports = s.topology.hosts + 1
            sw = Switch(env, "switch", ports, wire.rate_gbps, link_latency_ps=latency,
                        mtu=wire.mtu, buffer_bytes=s.topology.switch_buffer_kib * 1024,
                        static={h.mac: n for n, h in enumerate(self.hosts)})
            self.switch = sw
            for n, host in enumerate(self.hosts):
                sw.connect(n, _NicPort(host.nic))
                uplink = EthLink(env, wire.rate_gbps, latency, wire.mtu, f"host{n}.tx",
                                 out=sw.port(n))
                host.side.eth_links[0] = uplink
                self.tx_wires.append(uplink)
            sw.connect(ports - 1, self.sink)
            feed = EthLink(env, wire.rate_gbps, latency, wire.mtu, "rx_wire",
                           out=sw.port(ports - 1), capture="rx_wire" in capture)
            self.rx_wires.append(feed)
            entries = [feed]
        self.duration_ps = round(s.duration_us * US)
        # The drivers' register writes reach the NICs before any traffic starts, as they
        # would on a machine configured before the experiment: run until they have landed,
        # then start the clocks of the measurement.
        settled = max(h.link.down.free_at for h in self.hosts) + round(s.pcie.latency_ns * NS)
        self.t0 = -(-int(settled) // US) * US + US
        self.env.run(until=self.t0)
        for host in self.hosts:
            host.link.restart_counters()
            for core in host.cores:
                core.reset()
        self.sources = []
        for n, t in enumerate(s.traffic):
            args = dict(pattern=t.pattern, rate_gbps=t.rate_gbps, rate_mpps=t.rate_mpps,
                        flows=t.flows, proto=t.proto, ipv6=t.ipv6, vlan=t.vlan, count=t.count,
                        duration_ps=self.duration_ps, start_ps=round(t.start_us * US),
                        seed=s.seed * 1000 + n, batch_frames=t.batch_frames,
                        burst_frames=t.burst_frames, burst_gap_ps=round(t.burst_gap_us * US),
                        dst_mac=":".join(f"{b:02x}" for b in
                                         self.hosts[t.host].function_mac(t.function)),
                        src_mac=f"02:00:00:00:00:{n + 1:02x}", name=f"traffic{n}",
                        stream=t.stream)
            if t.pattern == "pcap":
                args.update(pcap_path=t.pcap, pcap_speed=t.pcap_speed, pcap_loop=t.pcap_loop)
                args.pop("rate_gbps")
                args.pop("rate_mpps")
            elif t.rate_gbps is None and t.rate_mpps is None:
                args["rate_gbps"] = wire.rate_gbps
            if t.sizes is not None:
                args["sizes"] = t.sizes
            else:
                args["size"] = 64 if t.size is None else t.size
            if t.pattern == "closed_loop":
                client = ClosedLoopClient(
                    env, entries[0], concurrency=t.concurrency,
                    think_ps=round(t.think_us * US), duration_ps=self.duration_ps,
                    size=args.get("size", 64), proto=t.proto, ipv6=t.ipv6, vlan=t.vlan,
                    dst_mac=args["dst_mac"], src_mac=args["src_mac"], name=args["name"])
                self.sink.listeners.append(client.on_replies)
                self.sources.append(client)
                continue
            self.sources.append(TrafficSource(env, entries[0], **args))

    def run_until(self, t_ps):
        """Advance the simulation to ``t_ps`` (a part of :meth:`run`)."""
        self.env.run(until=t_ps)

    def run(self, progress=None):
        """Run to the end of the traffic plus the drain time; ``progress(done, total)``."""
        end = self.t0 + self.duration_ps + round(self.scenario.drain_us * US)
        step = max((end - self.t0) // 100, 1)
        t = self.env.now
        while t < end:
            t = min(t + step, end)
            self.env.run(until=t)
            if progress is not None:
                progress(t - self.t0, end - self.t0)
        for host in self.hosts:
            host.nic.finish(end)
        return self.results()

    def delivered(self):
        """Return (frames, bytes with FCS, latencies in ps, first and last delivery time) at
        the end of the path: the sink for forwarding applications, else the applications."""
        if self.scenario.host.app in RESPONDING_APPS:
            sink = self.sink
            lat = list(sink.latencies_ps)  # sink bytes include the FCS
            return sink.frames, sink.bytes, lat, sink.first_ps, sink.last_ps
        frames = nbytes = 0
        lat = []
        first = last = None
        for host in self.hosts:
            for path in host.paths:
                app = path.app
                frames += app.frames
                nbytes += app.bytes + 4 * app.frames
                lat.extend(app.latency_ps)
                if app.first_ps is not None:
                    first = app.first_ps if first is None else min(first, app.first_ps)
                    last = app.last_ps if last is None else max(last, app.last_ps)
        return frames, nbytes, lat, first, last

    def results(self):
        """Return the results dictionary (the contents of ``results.json``)."""
        import numpy as np

        s = self.scenario
        end = self.env.now
        frames, nbytes, lat, first, last = self.delivered()
        seconds = self.duration_ps / 1e12
        # The rate frames came out at, from when the traffic started to the last delivery:
        # the offered rate when the system keeps up (less a latency over the duration), its
        # capacity when a backlog drains after the traffic stops.
        begin = self.t0 + min(round(t.start_us * US) for t in s.traffic)
        span = (last - begin) / 1e12 if frames and last > begin else 0.0
        mpps = frames / span / 1e6 if span else 0.0
        gbps = nbytes * 8 / span / 1e9 if span else 0.0
        drops = {}

        def add(reason, count):
            if count:
                drops[reason] = drops.get(reason, 0) + count

        for host in self.hosts:
            for reason, count in host.nic.stats()["drops"].items():
                add(reason, count)
            for path in host.paths:
                for reason, count in path.drops.items():
                    add(reason, count)
        for link in self.rx_wires + self.tx_wires:
            for reason, count in link.drops.items():
                add(f"{link.name}_{reason}", count)
        if self.switch is not None:
            for reason, count in self.switch.drops.items():
                add(f"switch_{reason}", count)
        lat_us = np.asarray(lat, dtype=np.float64) / 1e6
        pct = {k: (round(float(np.percentile(lat_us, q)), 6) if len(lat_us) else None)
               for k, q in (("p50", 50), ("p99", 99), ("p999", 99.9))}
        offered = sum(src.frames for src in self.sources)
        offered_bytes = sum(src.bytes for src in self.sources)
        up = [h.link.utilisation(end)["up"] for h in self.hosts]
        down = [h.link.utilisation(end)["down"] for h in self.hosts]
        interrupts = sum(sum(t.fired) for h in self.hosts for t in h.side.msix)
        waiting = sum(h.nic.stats()["rx_waiting_for_descriptor"] for h in self.hosts)
        return {
            "scenario": s.name,
            "seed": s.seed,
            "duration_us": s.duration_us,
            "offered": {"frames": offered, "mpps": round(offered / seconds / 1e6, 6),
                        "gbps": round(offered_bytes * 8 / seconds / 1e9, 6)},
            "delivered_frames": frames,
            "throughput": {"mpps": round(mpps, 6), "gbps": round(gbps, 6)},
            "latency_us": pct,
            "drops": dict(sorted(drops.items())),
            "in_flight": {"rx_waiting_for_descriptor": waiting,
                          "elsewhere": offered - frames - sum(drops.values()) - waiting},
            "pcie": {"up_util": round(max(up), 6), "down_util": round(max(down), 6),
                     "per_host": [{"up_util": round(u, 6), "down_util": round(d, 6)}
                                  for u, d in zip(up, down, strict=True)]},
            "interrupts": interrupts,
            "iommu_faults": _merge(h.iommu.faults_by_reason() for h in self.hosts),
            "pcie_credit_stalls": sum(h.link.up.credit_stalls + h.link.down.credit_stalls
                                      for h in self.hosts),
            "cpu_busy": [round(c.busy(end), 6) for h in self.hosts for c in h.cores],
            "cpu_by_kind": [{k: round(v / max(1, end - c.start_ps), 6)
                             for k, v in c.by_kind.items() if v}
                            for h in self.hosts for c in h.cores],
        }


def _merge(dicts):
    total = {}
    for d in dicts:
        for key, value in d.items():
            total[key] = total.get(key, 0) + value
    return dict(sorted(total.items()))


def run_scenario(scenario, progress=None, capture=()):
    """Build the world of ``scenario``, run it; return (world, results, wall seconds)."""
    start = time.perf_counter()
    try:
        world = World(scenario, capture)
    except RegisterError as exc:
        raise ValueError(f"the driver's register setup was refused: {exc}") from None
    results = world.run(progress)
    return world, results, time.perf_counter() - start
