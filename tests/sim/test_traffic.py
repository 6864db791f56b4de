"""Traffic sources: timing per pattern, determinism, pcap replay, and frame contents via scapy."""

from __future__ import annotations

import collections
import itertools
import statistics

import pytest
import simpy
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Raw
from scapy.utils import PcapWriter

from nicsim.hw.pcap import PcapError
from nicsim.sim.traffic import IMIX_SEQUENCE, TrafficSource, mixed_frames


class Recorder:
    def __init__(self, env):
        self.env = env
        self.batches = []

    def put(self, batch):
        self.batches.append((self.env.now, batch))

    @property
    def frames(self):
        return [f for _, batch in self.batches for f in batch]


def run(until=None, **kwargs):
    env = simpy.Environment()
    rec = Recorder(env)
    src = TrafficSource(env, rec, **kwargs)
    env.run(until=until)
    return src, rec


def times(rec):
    return [f.t_ps for f in rec.frames]


@pytest.mark.parametrize("duration_ps, expected", [(1_000_000, 15), (10_000_000, 149),
                                                   (67_200 * 100, 100)])
def test_constant_rate_sends_the_exact_count_over_a_duration(duration_ps, expected):
    # 10 Gb/s of 64-byte frames: one every 67.2 ns (84 wire bytes), first at 0, none at or
    # past the end: ceil(duration / 67.2 ns) frames.
    src, rec = run(rate_gbps=10, duration_ps=duration_ps)
    assert src.frames == len(rec.frames) == expected
    assert times(rec) == [k * 67_200 for k in range(expected)]
    assert src.bytes == 64 * expected


def test_constant_packet_rate_and_start_time():
    src, rec = run(rate_mpps=3, count=3_000, start_ps=5_000)
    # 1/3 us apart, kept exact: frame k at 5 ns + k * 333333.3 ps, rounded down.
    assert times(rec) == [5_000 + k * 1_000_000 // 3 for k in range(3_000)]
    assert rec.frames[-1].t_ps == 5_000 + 999_666_666


def test_batches_hold_batch_frames_or_batch_ps_and_arrive_at_their_last_frame():
    src, rec = run(rate_gbps=1, count=1_000, batch_frames=16, batch_ps=5_000_000)
    assert sum(len(b) for _, b in rec.batches) == 1_000
    for now, batch in rec.batches:
        assert now == batch[-1].t_ps
        assert len(batch) <= 16
        assert batch[-1].t_ps - batch[0].t_ps <= 5_000_000
        assert all(f.born_ps == f.t_ps for f in batch)
    # 672 ns a frame at 1 Gb/s: 5 us holds 8 frames, so time, not count, ends each batch.
    assert {len(b) for _, b in rec.batches} == {8}


def test_poisson_mean_rate_and_exponential_gaps():
    src, rec = run(pattern="poisson", rate_mpps=2, count=100_000, seed=7)
    gaps = [b - a for a, b in itertools.pairwise(times(rec))]
    mean = statistics.fmean(gaps)
    assert mean == pytest.approx(500_000, rel=0.01)  # 1/sqrt(1e5) = 0.3% standard error
    assert statistics.pstdev(gaps) / mean == pytest.approx(1.0, rel=0.02)


def test_poisson_is_deterministic_for_a_seed():
    kw = dict(pattern="poisson", rate_gbps=5, count=2_000, flows=8, flow_order="random",
              size="imix", size_order="random")
    a = run(seed=3, **kw)[1].frames
    b = run(seed=3, **kw)[1].frames
    c = run(seed=4, **kw)[1].frames
    assert [(f.t_ps, f.flow, f.data) for f in a] == [(f.t_ps, f.flow, f.data) for f in b]
    assert [f.t_ps for f in a] != [f.t_ps for f in c]
    assert [f.flow for f in a] != [f.flow for f in c]


def test_burst_pattern_timing():
    src, rec = run(pattern="burst", rate_gbps=10, burst_frames=4, burst_gap_ps=1_000_000,
                   count=10)
    burst = [0, 67_200, 134_400, 201_600]
    second = 201_600 + 67_200 + 1_000_000
    assert times(rec) == (burst + [second + t for t in burst]
                          + [2 * second + t for t in burst[:2]])


def write_capture(path, packets, stamps):
    with PcapWriter(str(path), nano=True, linktype=1) as writer:
        for pkt, stamp in zip(packets, stamps, strict=True):
            pkt.time = stamp
            writer.write(pkt)


def test_pcap_replay_keeps_relative_times_and_contents(tmp_path):
    packets = [Ether() / IP(dst="10.1.1.1") / UDP(dport=53) / Raw(bytes(n)) for n in (0, 100, 5)]
    write_capture(tmp_path / "in.pcap", packets, [1000.000000100, 1000.000010100, 1000.000035100])
    src, rec = run(pattern="pcap", pcap_path=tmp_path / "in.pcap", pcap_loop=2, pcap_speed=2.0,
                   start_ps=1_000)
    rel = [0, 5_000_000, 17_500_000]  # 0, 10 us and 35 us at twice the speed
    period = 17_500_000 + 8_750_000  # span plus the mean gap
    assert times(rec) == [1_000 + t for t in rel] + [1_000 + period + t for t in rel]
    assert [f.data for f in rec.frames] == [bytes(p) for p in packets] * 2
    assert src.bytes == 2 * sum(max(len(p) + 4, 64) for p in packets)


def test_pcap_replay_honours_count(tmp_path):
    packets = [Ether() / IP() / UDP() for _ in range(5)]
    write_capture(tmp_path / "in.pcap", packets, [1.0 + k * 1e-6 for k in range(5)])
    src, rec = run(pattern="pcap", pcap_path=tmp_path / "in.pcap", pcap_loop=3, count=12)
    assert times(rec) == [k * 1_000_000 for k in range(12)]


def test_bad_pcaps_raise_one_sentence(tmp_path):
    packets = [Ether() / IP() / UDP() for _ in range(3)]
    write_capture(tmp_path / "in.pcap", packets, [1.0, 2.0, 3.0])
    blob = (tmp_path / "in.pcap").read_bytes()
    (tmp_path / "cut.pcap").write_bytes(blob[:-5])
    with pytest.raises(PcapError, match="packet 3 at byte .* is truncated"):
        run(pattern="pcap", pcap_path=tmp_path / "cut.pcap")
    (tmp_path / "empty.pcap").write_bytes(blob[:24])
    with pytest.raises(PcapError, match="holds no packets"):
        run(pattern="pcap", pcap_path=tmp_path / "empty.pcap")


def test_imix_proportions():
    src, rec = run(rate_gbps=10, size="imix", count=1_200)
    sizes = collections.Counter(len(f.data) + 4 for f in rec.frames)
    assert sizes == {64: 700, 594: 400, 1518: 100}
    assert list(IMIX_SEQUENCE) == [len(f.data) + 4 for f in rec.frames[:12]]
    # With rate_gbps the gap follows each frame's size: 1518 B take (1518 + 20) * 0.8 ns.
    t = times(rec)
    k = [len(f.data) + 4 for f in rec.frames].index(1518)
    assert t[k + 1] - t[k] == 1538 * 800

    src, rec = run(rate_gbps=10, size="imix", size_order="random", count=24_000, seed=1)
    shares = collections.Counter(len(f.data) + 4 for f in rec.frames)
    for size, weight in ((64, 7), (594, 4), (1518, 1)):
        assert shares[size] / 24_000 == pytest.approx(weight / 12, abs=0.01)


def rebuilt(data):
    """Return ``data`` as scapy rebuilds it with every checksum recomputed."""
    pkt = Ether(data)
    for layer in (IP, TCP, UDP):
        if layer in pkt:
            del pkt[layer].chksum
    return bytes(pkt.__class__(bytes(pkt)))


@pytest.mark.parametrize("proto", ["udp", "tcp"])
@pytest.mark.parametrize("ipv6", [False, True])
@pytest.mark.parametrize("vlan", [None, 100])
def test_templates_have_valid_checksums(proto, ipv6, vlan):
    sizes = [128, 1518]
    if not (ipv6 or proto == "tcp"):
        sizes.append(64)
    src, rec = run(rate_gbps=10, sizes=sizes, flows=3, proto=proto, ipv6=ipv6, vlan=vlan,
                   count=len(sizes) * 3)
    seen = set()
    for f in rec.frames:
        assert len(f.data) + 4 in sizes
        assert rebuilt(f.data) == f.data
        pkt = Ether(f.data)
        assert (IPv6 if ipv6 else IP) in pkt and (TCP if proto == "tcp" else UDP) in pkt
        assert (Dot1Q in pkt) == (vlan is not None)
        if vlan is not None:
            assert pkt[Dot1Q].vlan == vlan
        seen.add((f.flow, len(f.data)))
    assert len(seen) == len(rec.frames)


def test_flows_have_distinct_five_tuples_and_templates_are_built_once(monkeypatch):
    calls = collections.Counter()
    build = TrafficSource._build

    def counting(self, flow, size):
        calls[flow, size] += 1
        return build(self, flow, size)
    monkeypatch.setattr(TrafficSource, "_build", counting)
    src, rec = run(rate_gbps=10, flows=50, count=1_000, proto="tcp")
    tuples = collections.defaultdict(set)
    for f in rec.frames:
        pkt = Ether(f.data)
        tuples[f.flow].add((pkt[IP].src, pkt[IP].dst, pkt[IP].proto, pkt[TCP].sport,
                            pkt[TCP].dport))
    assert all(len(t) == 1 for t in tuples.values())
    assert len({next(iter(t)) for t in tuples.values()}) == 50
    assert [f.flow for f in rec.frames[:100]] == list(range(50)) * 2
    assert set(calls.values()) == {1} and len(calls) == 50


def test_sources_through_a_link_fill_it_at_line_rate():
    from nicsim.sim.ether import EthLink, Sink

    env = simpy.Environment()
    sink = Sink(env)
    link = EthLink(env, 10, out=sink)
    TrafficSource(env, link, rate_gbps=10, count=10_000, flows=4)
    env.run()
    assert sink.frames == 10_000
    assert sink.mpps() == pytest.approx(14.880952, rel=1e-6)
    assert link.drops["link_queue_full"] == 0
    assert sum(sink.flows.values()) == 10_000 and len(sink.flows) == 4


@pytest.mark.parametrize("kwargs, message", [
    (dict(rate_gbps=10, size=20), "traffic.size must be 64..9018 bytes (frame with FCS), not 20"),
    (dict(rate_gbps=10, size=9022), "traffic.size must be 64..9018 bytes"),
    (dict(rate_gbps=10, rate_mpps=1), "give exactly one of rate_gbps and rate_mpps"),
    (dict(), "give exactly one of rate_gbps and rate_mpps for pattern 'constant', not neither"),
    (dict(rate_gbps=-1), "traffic.rate_gbps must be a positive number"),
    (dict(rate_gbps=10, pattern="sine"), "traffic.pattern must be one of"),
    (dict(rate_gbps=10, size=64, ipv6=True, proto="tcp", vlan=3),
     "too small for the Ethernet+VLAN+IPv6+TCP headers and FCS; use at least 82 bytes"),
    (dict(rate_gbps=10, size=64, sizes=[64]), "give size or sizes, not both"),
    (dict(rate_gbps=10, flows=0), "traffic.flows must be a whole number >= 1"),
    (dict(rate_gbps=10, vlan=4095), "traffic.vlan must be a VLAN ID"),
    (dict(rate_gbps=10, src_ip="fd00::1"), "traffic.src_ip must be an IPv4 address"),
    (dict(rate_gbps=10, src_ip="255.255.255.250", flows=10), "runs past the last IPv4"),
    (dict(rate_gbps=10, dst_mac="zz"), "MAC address must look like"),
    (dict(pattern="pcap", rate_gbps=10, pcap_path="x.pcap"), "do not apply to pattern 'pcap'"),
    (dict(pattern="pcap"), "traffic.pcap_path must name a capture"),
    (dict(rate_gbps=10, count=-1), "traffic.count must be a whole number >= 0"),
])
def test_arguments_are_checked_with_one_sentence(kwargs, message):
    with pytest.raises(ValueError) as info:
        TrafficSource(simpy.Environment(), None, **kwargs)
    assert message in str(info.value)


def test_a_source_without_out_says_so():
    env = simpy.Environment()
    TrafficSource(env, None, rate_gbps=10, count=1)
    with pytest.raises(ValueError, match="has no out element"):
        env.run()


def test_mixed_frames_still_seeded():
    assert mixed_frames(20, seed=2) == mixed_frames(20, seed=2)


def test_tcp_stream_segments_follow_each_other_with_valid_checksums():
    import simpy
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether

    from nicsim.sim.ether import Sink
    from nicsim.sim.traffic import TrafficSource

    env = simpy.Environment()
    sink = Sink(env, capture=True)
    TrafficSource(env, sink, rate_gbps=10, size=1000, flows=2, proto="tcp", stream=True,
                  count=10)
    env.run()
    seqs = {}
    for _, data in sink.capture:
        pkt = Ether(data)
        rebuilt = pkt.copy()
        del rebuilt[IP].chksum, rebuilt[TCP].chksum
        rebuilt = Ether(bytes(rebuilt))
        assert (rebuilt[IP].chksum, rebuilt[TCP].chksum) == (pkt[IP].chksum, pkt[TCP].chksum)
        assert pkt[IP].flags.DF and not pkt[TCP].flags.P
        seqs.setdefault(pkt[TCP].sport, []).append((pkt[TCP].seq, len(pkt[TCP].payload),
                                                    pkt[IP].id))
    for segs in seqs.values():
        assert len(segs) == 5
        for (seq, n, ip_id), (seq2, _, ip_id2) in zip(segs, segs[1:], strict=False):
            assert seq2 == seq + n and ip_id2 == ip_id + 1


def test_stream_needs_tcp():
    import simpy

    from nicsim.sim.traffic import TrafficSource

    with pytest.raises(ValueError, match="proto 'tcp'"):
        TrafficSource(simpy.Environment(), None, rate_gbps=1, stream=True)
