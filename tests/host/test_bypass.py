"""Kernel-bypass paths (PMD run to completion and pipeline, netmap) and their applications.

Checks are mechanisms with independent expectations: a PMD core is busy whatever the load
while netmap's CPU follows it; a pipeline's application time lands on its workers and an
overflowing ring is counted; throughput scales with cores under RSS up to the wire; the
capacity of a saturated core is the sum of its named operations; scapy reads the frames the
applications send back (TTL, checksums, swapped addresses).
"""

import random
from types import SimpleNamespace

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Raw

from nicsim.host.apps import NEXT_HOP_MAC, L3Fwd
from nicsim.host.cpu import CostModel
from nicsim.host.driver import RX_FREE_THRESH
from nicsim.sim.scenario import load_scenario
from nicsim.sim.world import World

HOST_MAC = bytes([0x02, 0, 0, 0, 0x10, 0x01])  # host 0's station address (sim.world)


def run(*overrides, duration_us=200, capture=()):
    world = World(load_scenario(text=f"duration_us = {duration_us}\n", overrides=overrides),
                  capture=capture)
    return world, world.run()


def conserved(r):
    return r["offered"]["frames"] == (r["delivered_frames"] + sum(r["drops"].values())
                                      + sum(r["in_flight"].values()))


def checksums_valid(data):
    """Whether scapy, recomputing them, finds the IPv4 header and UDP checksums as sent."""
    sent = Ether(data)
    again = sent.copy()
    if IP in again:
        del again[IP].chksum
    if UDP in again:
        del again[UDP].chksum
    again = Ether(bytes(again))
    return ((IP not in sent or sent[IP].chksum == again[IP].chksum)
            and (UDP not in sent or sent[UDP].chksum == again[UDP].chksum))


# -- PMD -------------------------------------------------------------------------------------

@pytest.mark.parametrize("mpps", [0.5, 8.0])
def test_pmd_core_is_busy_at_any_load(mpps):
    _, r = run(f"traffic.0.rate_mpps={mpps}")
    assert r["delivered_frames"] == r["offered"]["frames"]
    assert r["cpu_busy"] == [pytest.approx(1.0, abs=0.01)]
    assert r["interrupts"] == 0


def test_saturated_pmd_core_runs_at_the_sum_of_its_operations():
    # One core, more offered than it can take: its rate is one frame per (receive work +
    # application + free), the receive work in the PMD's named operations.
    work_ns = 150
    _, r = run(f"host.costs.app_work={work_ns}", duration_us=400)
    c = CostModel()
    per_frame_ps = (c.l3_hit + c.l2_hit + c.mbuf_alloc + c.l2_hit / 4
                    + 2 * c.mmio_write / RX_FREE_THRESH + work_ns * 1000 + c.mbuf_free)
    assert r["throughput"]["mpps"] == pytest.approx(1e6 / per_frame_ps, rel=0.03)
    by_kind = r["cpu_by_kind"][0]
    assert by_kind["app"] / by_kind["poll"] == pytest.approx(
        work_ns * 1000 / (per_frame_ps - work_ns * 1000), rel=0.05)


def test_throughput_scales_with_cores_under_rss_until_the_wire():
    rates = {}
    for cores in (1, 2, 4):
        _, r = run(f"nic.rxqs={cores}", f"host.cores={cores}", "traffic.0.flows=256",
                   "host.costs.app_work=150")
        rates[cores] = r["throughput"]["mpps"]
        offered = r["offered"]["mpps"]
    assert rates[1] < offered / 2  # one core cannot keep up
    assert rates[2] == pytest.approx(2 * rates[1], rel=0.05)
    assert 4 * rates[1] > offered  # four would take more than the wire brings ...
    assert rates[4] == pytest.approx(offered, rel=0.02)  # ... so the wire is the limit


# -- PMD pipeline ----------------------------------------------------------------------------

def test_pipeline_moves_application_work_to_the_workers():
    overrides = ("host.cores=3", "nic.rxqs=3", "traffic.0.flows=64", "host.costs.app_work=100")
    world, r = run("host.pmd_mode=\"pipeline\"", *overrides)
    assert r["delivered_frames"] == r["offered"]["frames"] and not r["drops"]
    assert r["cpu_busy"] == [pytest.approx(1.0, abs=0.01)] * 3
    rx, *workers = r["cpu_by_kind"]
    assert "app" not in rx
    assert all(w["app"] > 0.3 for w in workers)
    (path,) = world.hosts[0].paths
    assert sum(ring.dequeued for ring in path.rings) == r["delivered_frames"]
    # Run to completion on the same three cores, the application runs where frames arrive.
    _, rtc = run(*overrides)
    assert all(k["app"] > 0.2 for k in rtc["cpu_by_kind"])


def test_pipeline_ring_overflows_when_workers_are_too_slow():
    world, r = run("host.pmd_mode=\"pipeline\"", "host.cores=2", "nic.rxqs=2",
                   "host.costs.app_work=1000")
    assert r["drops"]["ring_full"] > 0
    assert conserved(r)
    (path,) = world.hosts[0].paths
    (ring,) = path.rings
    assert ring.enqueued - ring.dequeued <= ring.capacity
    assert ring.dequeued == r["delivered_frames"]
    assert r["cpu_by_kind"][1]["app"] > 0.9  # the worker never waits


def test_pipeline_needs_workers():
    with pytest.raises(ValueError, match="needs at least 2 cores"):
        run("host.pmd_mode=\"pipeline\"")


# -- netmap ----------------------------------------------------------------------------------

def test_netmap_cpu_follows_the_load_and_batches_grow():
    busy, per_frame = [], []
    for mpps in (0.2, 2.0, 8.0):
        world, r = run("host.path=\"netmap\"", f"traffic.0.rate_mpps={mpps}")
        assert r["delivered_frames"] == r["offered"]["frames"]
        (path,) = world.hosts[0].paths
        busy.append(r["cpu_busy"][0])
        per_frame.append(path.syscalls / path.app.frames)
        assert path.interrupts > 0 and path.wakeups > 0
        assert set(r["cpu_by_kind"][0]) <= {"irq", "syscall", "app"}
    assert busy[0] < busy[1] < busy[2] < 1.0
    assert per_frame[0] > 2 * per_frame[2]


def test_netmap_is_zero_copy_and_allocation_free():
    # The same frames through netmap and the PMD: netmap spends no mempool operations per
    # frame, so raising their cost changes only the PMD's capacity.
    def capacity(path, *extra):
        _, r = run(f"host.path=\"{path}\"", "host.costs.app_work=200", *extra)
        return r["throughput"]["mpps"]

    dear = ("host.costs.mbuf_alloc=200", "host.costs.mbuf_free=200")
    assert capacity("netmap", *dear) == pytest.approx(capacity("netmap"), rel=1e-6)
    assert capacity("pmd", *dear) < 0.7 * capacity("pmd")


# -- applications ----------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["pmd", "irq", "netmap", "pipeline"])
def test_l2fwd_on_every_path_conserves_frames(path):
    extra = (("host.pmd_mode=\"pipeline\"", "host.cores=2", "nic.rxqs=2") if path == "pipeline"
             else (f"host.path=\"{path}\"",))
    world, r = run("host.app=\"l2fwd\"", "traffic.0.rate_mpps=5", *extra, duration_us=50,
                   capture=("tx_wire",))
    assert r["delivered_frames"] == r["offered"]["frames"] > 200 and not r["drops"]
    template = world.sources[0].template(0, 64)
    for _, data in world.sink.capture:
        assert data == template[6:12] + template[0:6] + template[12:]


def test_l3fwd_decrements_ttl_and_keeps_the_header_checksum_valid():
    world, r = run("host.app=\"l3fwd\"", "traffic.0.flows=8", "traffic.0.rate_mpps=5",
                   duration_us=50, capture=("tx_wire",))
    assert r["delivered_frames"] == r["offered"]["frames"] > 200 and not r["drops"]
    sent = {bytes(Ether(world.sources[0].template(f, 64))[IP].payload): f for f in range(8)}
    for _, data in world.sink.capture:
        frame = Ether(data)
        assert frame.dst == NEXT_HOP_MAC.hex(":") and frame.src == HOST_MAC.hex(":")
        assert frame[IP].ttl == 63 and checksums_valid(data)
        assert bytes(frame[IP].payload) in sent


def _fake_path(features=("tx_csum",)):
    return SimpleNamespace(costs=CostModel(), drops={},
                           ctx=SimpleNamespace(features=frozenset(features), params=None))


def test_l3fwd_incremental_checksum_and_longest_prefix_against_scapy():
    rng = random.Random(7)
    app = L3Fwd(_fake_path())
    near, far = bytes.fromhex("020000000a01"), bytes.fromhex("020000000a02")
    app.set_routes([("10.0.0.0/8", far), ("10.9.0.0/16", near), ("2001:db8::/32", near)])
    pkts = []
    for n in range(200):
        dst = rng.choice(["10.9.1.2", "10.1.2.3", "192.0.2.1"])
        ip = IP(src="198.51.100.7", dst=dst, ttl=rng.randrange(0, 256), id=rng.randrange(65536),
                tos=rng.randrange(256), flags=rng.choice(["", "DF"]))
        l2 = Ether(dst="02:00:00:00:10:01", src="02:00:00:00:00:09")
        if n % 5 == 0:
            l2 = l2 / Dot1Q(vlan=7)
        pkts.append(bytes(l2 / ip / UDP(sport=1, dport=2) / Raw(b"x" * rng.randrange(40))))
    pkts.append(bytes(Ether() / IPv6(dst="2001:db8::1", hlim=9) / UDP() / Raw(b"v6")))
    app.process([((0, 0, len(p), 0, 0, 0, 0, 1), p, None) for p in pkts])
    out, _, _ = app.finish(0)
    expected_drops = {}
    want = []
    for p in pkts:
        frame = Ether(p)
        layer = frame[IP] if IP in frame else frame[IPv6]
        ttl = layer.ttl if IP in frame else layer.hlim
        dst = layer.dst
        if ttl <= 1:
            expected_drops["ttl_exceeded"] = expected_drops.get("ttl_exceeded", 0) + 1
            continue
        if not dst.startswith(("10.", "2001:db8:")):
            expected_drops["no_route"] = expected_drops.get("no_route", 0) + 1
            continue
        want.append((frame, near if dst.startswith(("10.9.", "2001:db8:")) else far))
    assert app.drops == expected_drops
    assert len(out) == len(want)
    for data, (frame, hop) in zip(out, want, strict=True):
        got = Ether(data)
        assert bytes.fromhex(got.dst.replace(":", "")) == hop and got.src == frame.dst
        if IP in frame:
            assert got[IP].ttl == frame[IP].ttl - 1 and checksums_valid(data)
            assert bytes(got[IP].payload) == bytes(frame[IP].payload)
        else:
            assert got[IPv6].hlim == frame[IPv6].hlim - 1


def test_udp_echo_swaps_addresses_and_ports_with_valid_checksums():
    world, r = run("host.app=\"udp_echo\"", "traffic.0.flows=4", "traffic.0.rate_mpps=5",
                   "host.path=\"netmap\"", duration_us=50, capture=("tx_wire",))
    assert r["delivered_frames"] == r["offered"]["frames"] > 200 and not r["drops"]
    requests = [Ether(world.sources[0].template(f, 64)) for f in range(4)]
    by_port = {q[UDP].sport: q for q in requests}
    for _, data in world.sink.capture:
        reply = Ether(data)
        request = by_port[reply[UDP].dport]
        assert (reply.src, reply.dst) == (request.dst, request.src)
        assert (reply[IP].src, reply[IP].dst) == (request[IP].dst, request[IP].src)
        assert reply[UDP].sport == request[UDP].dport
        assert bytes(reply[UDP].payload) == bytes(request[UDP].payload)
        assert checksums_valid(data)


@pytest.mark.parametrize("features", ["[\"rx_csum\", \"tx_csum\", \"rss\"]",
                                      "[\"rx_csum\", \"rss\"]"])
def test_kv_answers_every_get_with_a_valid_reply(features):
    world = World(load_scenario(
        text="duration_us = 50\n",
        overrides=["host.app=\"kv\"", "traffic.0.flows=4", "traffic.0.rate_mpps=3",
                   f"nic.features={features}"]), capture=("tx_wire",))
    (path,) = world.hosts[0].paths
    path.app.value_bytes = 100
    r = world.run()
    assert r["delivered_frames"] == r["offered"]["frames"] > 100 and not r["drops"]
    requests = {Ether(world.sources[0].template(f, 64))[UDP].sport:
                Ether(world.sources[0].template(f, 64)) for f in range(4)}
    for _, data in world.sink.capture:
        reply = Ether(data)
        request = requests[reply[UDP].dport]
        assert (reply[IP].src, reply[IP].dst) == (request[IP].dst, request[IP].src)
        payload = bytes(reply[UDP].payload)
        asked = bytes(request[UDP].payload)
        assert payload[:2] == asked[:2] and payload[2:8] == b"\0\0\0\1\0\0"
        assert payload[8:] == path.app.value(asked[8:]) and len(payload) == 8 + 100
        assert checksums_valid(data)


def test_a_transmit_ring_shorter_than_its_round_trip_overflows_and_counts():
    # A transmit slot comes back after the doorbell, descriptor fetch, frame read and
    # completion: four 2 us PCIe crossings. 64 slots over ~8 us carry ~8 Mpps, less than the
    # 14.88 Mpps l2fwd sends back: what does not fit is counted.
    _, r = run("host.app=\"l2fwd\"", "nic.ring_size=64", "pcie.latency_ns=2000")
    assert r["drops"]["tx_ring_full"] > 0
    assert conserved(r)
