"""Ethernet links, the learning switch and the sink, against hand-derived timings and scapy."""

from __future__ import annotations

import itertools
import math
import random
import statistics
from fractions import Fraction

import pytest
import simpy
from scapy.layers.l2 import Dot1AD, Dot1Q, Ether
from scapy.packet import Raw
from scapy.utils import rdpcap

from nicsim.sim.ether import EthLink, Sink, Switch, max_frame_bytes
from nicsim.sim.frame import Frame

MAC_A, MAC_B, MAC_C = "02:00:00:00:00:0a", "02:00:00:00:00:0b", "02:00:00:00:00:0c"


class Recorder:
    """Keep every batch with the simulation time it was delivered at."""

    def __init__(self, env):
        self.env = env
        self.batches = []

    def put(self, batch):
        self.batches.append((self.env.now, list(batch)))

    @property
    def frames(self):
        return [f for _, batch in self.batches for f in batch]


def frame(size=64, src=MAC_A, dst=MAC_B, t_ps=0, flow=0, tags=()):
    """Return a Frame of ``size`` bytes with FCS (``size - 4`` bytes of data)."""
    pkt = Ether(src=src, dst=dst)
    for tag in tags:
        pkt = pkt / tag
    data = bytes(pkt / Raw(bytes(max(0, size - 4 - len(pkt)))))
    assert len(data) == max(size - 4, len(pkt))
    return Frame(data, t_ps, flow=flow, source="test")


def feed(env, element, batches):
    """Put each batch into ``element`` at the ready time of its last frame."""
    def run():
        for batch in batches:
            yield env.timeout(batch[-1].t_ps - env.now)
            element.put(batch)
    env.process(run())


def test_back_to_back_minimum_frames_at_10g_are_67_2_ns_apart():
    # REFERENCES.md: a 10 Gb/s link at 64-byte frames is 14.88 Mpps, 67.2 ns per packet.
    env = simpy.Environment()
    rec = Recorder(env)
    link = EthLink(env, 10, out=rec)
    feed(env, link, [[frame(t_ps=0) for _ in range(32)], [frame(t_ps=0) for _ in range(32)]])
    env.run()
    times = [f.t_ps for f in rec.frames]
    assert len(times) == 64
    assert {b - a for a, b in itertools.pairwise(times)} == {67_200}
    # Last FCS bit: preamble (8) + 64 bytes at 0.8 ns a byte, then the 500 ns default latency.
    assert times[0] == 72 * 800 + 500_000
    assert link.frames == 64 and link.bytes == 64 * 64
    assert link.busy_ps == 64 * 67_200


def test_latency_is_added_and_batches_arrive_at_their_last_frame():
    env = simpy.Environment()
    rec = Recorder(env)
    link = EthLink(env, 100, latency_ps=1_234_567, out=rec)
    batch = [frame(1518, t_ps=t) for t in (0, 1_000_000, 5_000_000)]
    feed(env, link, [batch])
    env.run()
    ser = (8 + 1518) * 80  # 100 Gb/s: 80 ps a byte
    assert [f.t_ps for f in rec.frames] == [t + ser + 1_234_567 for t in (0, 1_000_000, 5_000_000)]
    assert len(rec.batches) == 1
    now, delivered = rec.batches[0]
    assert now == delivered[-1].t_ps


def test_fractional_rate_calendar_does_not_drift():
    env = simpy.Environment()
    rec = Recorder(env)
    link = EthLink(env, 3, latency_ps=0, out=rec)
    feed(env, link, [[frame(100, t_ps=0) for _ in range(1000)]])
    env.run()
    per_frame = Fraction(8000, 3) * 120  # 100 + 20 bytes of wire each, 8000/3 ps a byte
    last_bits = Fraction(8000, 3) * (8 + 100)
    expected = [math.ceil(k * per_frame + last_bits) for k in range(1000)]
    assert [f.t_ps for f in rec.frames] == expected


def test_mtu_drops_count_the_header_and_each_vlan_tag():
    env = simpy.Environment()
    rec = Recorder(env)
    link = EthLink(env, 10, out=rec)
    # Frame sizes with FCS: 1518 untagged, 1522 with one tag and 1526 with two are the largest.
    keep = [frame(1518), frame(1522, tags=[Dot1Q(vlan=5)]),
            frame(1526, tags=[Dot1AD(vlan=7), Dot1Q(vlan=5)])]
    drop = [frame(1519), frame(1523, tags=[Dot1Q(vlan=5)]),
            frame(1527, tags=[Dot1AD(vlan=7), Dot1Q(vlan=5)])]
    feed(env, link, [[keep[0], drop[0], keep[1], drop[1], keep[2], drop[2]]])
    env.run()
    assert [len(f.data) for f in rec.frames] == [1514, 1518, 1522]
    assert link.drops["mtu"] == 3
    assert max_frame_bytes(keep[2].data, 9000) == 9000 + 14 + 8


def test_queue_overflow_drops_frames_that_would_wait_beyond_queue_bytes():
    # Ten 60-byte frames every 33.6 ns into a 10 Gb/s wire (67.2 ns each), room for two waiting
    # frames (120 bytes). By hand: f0 goes at once; f1..f4 find at most one frame waiting;
    # from then on every second frame finds two waiting and is dropped: f5, f7, f9.
    env = simpy.Environment()
    rec = Recorder(env)
    link = EthLink(env, 10, out=rec, queue_bytes=120)
    frames = [frame(64, t_ps=k * 33_600, flow=k) for k in range(10)]
    feed(env, link, [frames[:5], frames[5:]])
    env.run()
    assert [f.flow for f in rec.frames] == [0, 1, 2, 3, 4, 6, 8]
    assert link.drops["link_queue_full"] == 3
    assert {b.t_ps - a.t_ps for a, b in itertools.pairwise(rec.frames)} == {67_200}


def test_source_faster_than_link_loses_exactly_what_it_cannot_carry():
    from nicsim.sim.traffic import TrafficSource

    env = simpy.Environment()
    sink = Sink(env)
    link = EthLink(env, 10, out=sink, queue_bytes=6_000)
    src = TrafficSource(env, link, rate_gbps=20, size=1518, count=2_000)
    env.run()
    assert link.drops["link_queue_full"] > 900
    assert sink.frames + link.drops["link_queue_full"] == src.frames == 2_000
    assert sink.gbps(wire=True) == pytest.approx(10, rel=1e-3)


def test_batches_keep_their_order_and_each_is_one_delivery():
    env = simpy.Environment()
    rec = Recorder(env)
    link = EthLink(env, 10, out=rec)
    batches = [[frame(t_ps=0, flow=b * 10 + i) for i in range(5)] for b in range(4)]

    def run():
        for batch in batches:  # all at time 0: the wire serves them in the order given
            link.put(batch)
        yield env.timeout(0)
    env.process(run())
    env.run()
    assert len(rec.batches) == 4
    assert [f.flow for f in rec.frames] == [f.flow for b in batches for f in b]
    for now, batch in rec.batches:
        assert now == batch[-1].t_ps
        assert all(f.t_ps <= now for f in batch)


def test_utilisation_of_a_half_loaded_wire():
    env = simpy.Environment()
    link = EthLink(env, 10, out=Recorder(env))
    feed(env, link, [[frame(t_ps=k * 134_400) for k in range(100)]])
    env.run(until=100 * 134_400)
    assert link.utilisation() == pytest.approx(0.5)


def test_capture_writes_arrivals_that_scapy_reads_back(tmp_path):
    env = simpy.Environment()
    link = EthLink(env, 10, out=Recorder(env), capture=True)
    frames = [frame(64 + k, t_ps=k * 1_000_000, flow=k) for k in range(5)]
    feed(env, link, [frames])
    env.run()
    link.write_pcap(tmp_path / "link.pcap")
    packets = rdpcap(str(tmp_path / "link.pcap"))
    assert [bytes(p) for p in packets] == [f.data for f in frames]
    assert [round(p.time * 10**9) for p in packets] == [f.t_ps // 1000 for f in frames]


def test_unconnected_link_counts_its_deliveries_as_drops():
    env = simpy.Environment()
    link = EthLink(env, 10)
    feed(env, link, [[frame(), frame()]])
    env.run()
    assert link.drops["no_receiver"] == 2


def test_link_rejects_bad_parameters():
    env = simpy.Environment()
    with pytest.raises(ValueError, match="rate_gbps must be a positive number"):
        EthLink(env, 0)
    with pytest.raises(ValueError, match="mtu must be 68..65535"):
        EthLink(env, 10, mtu=20)


def three_hosts(**kwargs):
    env = simpy.Environment()
    switch = Switch(env, "sw", 3, **kwargs)
    hosts = [Recorder(env) for _ in range(3)]
    for i, host in enumerate(hosts):
        switch.connect(i, host)
    return env, switch, hosts


def test_switch_floods_unknown_learns_sources_and_forwards():
    env, switch, hosts = three_hosts()
    feed(env, switch.port(0), [[frame(src=MAC_A, dst=MAC_B, t_ps=0, flow=1)]])
    feed(env, switch.port(1), [[frame(src=MAC_B, dst=MAC_A, t_ps=10_000_000, flow=2)]])
    feed(env, switch.port(0), [[frame(src=MAC_A, dst=MAC_B, t_ps=20_000_000, flow=3)]])
    feed(env, switch.port(2), [[frame(src=MAC_C, dst="ff:ff:ff:ff:ff:ff", t_ps=30_000_000,
                                      flow=4)]])
    env.run()
    assert [f.flow for f in hosts[0].frames] == [2, 4]
    assert [f.flow for f in hosts[1].frames] == [1, 3, 4]
    assert [f.flow for f in hosts[2].frames] == [1]
    assert switch.table == {bytes.fromhex("02000000000a"): 0, bytes.fromhex("02000000000b"): 1,
                            bytes.fromhex("02000000000c"): 2}
    # Flooded copies are distinct frames with the same bytes.
    assert hosts[1].frames[0] is not hosts[2].frames[0]
    assert hosts[1].frames[0].data == hosts[2].frames[0].data


def test_switch_static_entries_and_same_port_filtering():
    env, switch, hosts = three_hosts(static={MAC_B: 2})
    feed(env, switch.port(0), [[frame(src=MAC_A, dst=MAC_B, flow=1)]])
    feed(env, switch.port(2), [[frame(src=MAC_B, dst=MAC_A, t_ps=5_000_000, flow=2),
                                frame(src=MAC_C, dst=MAC_B, t_ps=6_000_000, flow=3)]])
    env.run()
    assert [f.flow for f in hosts[2].frames] == [1]
    assert [f.flow for f in hosts[0].frames] == [2]
    assert switch.drops["same_port"] == 1


@pytest.mark.parametrize("cut_through", [True, False])
def test_switch_latency(cut_through):
    env, switch, hosts = three_hosts(cut_through=cut_through, latency_ps=400_000,
                                     link_latency_ps=0, static={MAC_B: 1})
    f = frame(1518, t_ps=0)
    ser = (8 + 1518) * 800  # first preamble bit to last FCS bit at 10 Gb/s
    f.t_ps = ser  # it has just arrived whole
    feed(env, switch.port(0), [[f]])
    env.run()
    expected = ser + 400_000 + (0 if cut_through else ser)
    assert hosts[1].frames[0].t_ps == expected


def test_switch_buffer_overflow_from_two_ports_into_one():
    from nicsim.sim.traffic import TrafficSource

    env = simpy.Environment()
    switch = Switch(env, "sw", 3, buffer_bytes=20_000, static={MAC_C: 2})
    sink = Sink(env)
    switch.connect(2, sink)
    sources = []
    for port, mac in ((0, MAC_A), (1, MAC_B)):
        link = EthLink(env, 10, out=switch.port(port))
        sources.append(TrafficSource(env, link, rate_gbps=10, size=1000, count=3_000,
                                     src_mac=mac, dst_mac=MAC_C, name=mac))
    env.run()
    dropped = switch.drops["switch_buffer"]
    assert dropped > 2_000
    assert sink.frames + dropped == 6_000
    assert sink.gbps(wire=True) == pytest.approx(10, rel=1e-2)


def test_sink_percentiles_match_statistics_on_known_latencies():
    env = simpy.Environment()
    sink = Sink(env)
    rng = random.Random(5)
    latencies = [rng.randrange(1_000, 50_000_000) for _ in range(5_001)]
    frames = []
    for k, lat in enumerate(latencies):
        f = Frame(bytes(60), t_ps=10**9 + k, flow=k % 3, source="s")
        f.born_ps = f.t_ps - lat
        frames.append(f)
    sink.put(frames)
    cuts = statistics.quantiles(latencies, n=1000, method="inclusive")
    got = sink.percentiles_us()
    assert got["p50"] == pytest.approx(statistics.median(latencies) / 1e6)
    assert got["p99"] == pytest.approx(cuts[989] / 1e6)
    assert got["p999"] == pytest.approx(cuts[998] / 1e6)
    assert sink.mean_latency_us() == pytest.approx(statistics.fmean(latencies) / 1e6)
    assert sink.flows == {("s", 0): 1667, ("s", 1): 1667, ("s", 2): 1667}


def test_sink_throughput_over_the_measured_interval(tmp_path):
    env = simpy.Environment()
    sink = Sink(env, capture=True)
    # 1001 frames of 1000 bytes with FCS, one every microsecond: 1 Mpps, 8 Gb/s of L2 bytes.
    sink.put([Frame(bytes(996), t_ps=k * 1_000_000) for k in range(1001)])
    assert sink.mpps() == pytest.approx(1.0)
    assert sink.gbps() == pytest.approx(8.0)
    assert sink.gbps(wire=True) == pytest.approx(8.16)
    assert sink.bytes == 1001 * 1000
    sink.write_pcap(tmp_path / "sink.pcap")
    assert len(rdpcap(str(tmp_path / "sink.pcap"))) == 1001
    assert math.isnan(Sink(env).latency_us(50))
