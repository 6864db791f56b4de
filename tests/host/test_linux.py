"""The Linux stack path end to end: NAPI, checksums, RPS/RFS, sockets, threads, sends.

Each test checks a mechanism against an expectation worked out independently of the code: from
the per-operation costs of host/cpu.py, from the socket buffer's size, from scapy's reading of
the replies on the wire.
"""

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from nicsim.host.cpu import CostModel
from nicsim.host.driver import RX_BUFFER_BYTES
from nicsim.host.linux import SKB_OVERHEAD_BYTES
from nicsim.sim.scenario import load_scenario
from nicsim.sim.world import World

LINUX = "host.path=\"linux\""


def run(*overrides, duration_us=200, capture=()):
    world = World(load_scenario(text=f"duration_us = {duration_us}\n",
                                overrides=[LINUX, *overrides]), capture=capture)
    return world, world.run()


def path_of(world):
    return world.hosts[0].paths[0]


def kind_ps(world, kind, core=None):
    cores = world.hosts[0].cores
    return sum(c.by_kind[kind] for c in (cores if core is None else [cores[core]]))


def busy_ps(world):
    return sum(c.busy_ps for c in world.hosts[0].cores)


def test_napi_takes_an_interrupt_per_packet_at_low_load_and_few_at_high_load():
    low, r_low = run("traffic.0.rate_mpps=0.05", duration_us=400)
    high, r_high = run(duration_us=300)  # 14.88 Mpps of 64-byte frames into one core
    assert r_low["delivered_frames"] == 20
    # Frames 20 us apart, each alone in a poll that finds the queue empty afterwards.
    assert r_low["interrupts"] == path_of(low).interrupts == 20
    taken = path_of(high).app.completions
    assert taken > 500
    # Under load the budget is used up: the poll goes on with the interrupt masked.
    assert path_of(high).interrupts / taken < 0.01
    assert path_of(high).polls > taken / 64 * 0.9


def test_cpu_use_grows_with_load_while_a_pmd_core_polls_all_the_time():
    busy = [run(f"traffic.0.rate_mpps={rate}")[1]["cpu_busy"][0] for rate in (0.05, 0.3, 1.0)]
    assert busy[0] < busy[1] < busy[2]
    assert busy[0] < 0.25
    # The per-packet work at low load, from the costs: a hard IRQ, a softirq poll, a wake-up
    # and a recv() per frame; 10 frames in 250 us of simulated time.
    c = CostModel()
    floor = 10 * (c.irq_entry_exit + c.context_switch + 2 * c.syscall + c.skb_alloc) / 250e6
    assert busy[0] > floor
    _, pmd = run("host.path=\"pmd\"", "traffic.0.rate_mpps=0.05")
    assert pmd["cpu_busy"] == [pytest.approx(1.0, abs=0.01)]


def test_rx_checksum_offload_off_costs_the_software_sum_of_every_payload():
    frames = 40  # 1500-byte frames at 0.2 Mpps for 200 us
    on, r_on = run("traffic.0.size=1500", "traffic.0.rate_mpps=0.2")
    off, r_off = run("traffic.0.size=1500", "traffic.0.rate_mpps=0.2",
                     "nic.features=[\"tx_csum\", \"rss\"]")
    assert r_on["delivered_frames"] == r_off["delivered_frames"] == frames
    assert busy_ps(off) / frames > busy_ps(on) / frames
    # UDP verifies while copying to the user (recv), 1454 payload bytes at host.cpu's "csum".
    payload = 1500 - 4 - 14 - 20 - 8
    extra = (kind_ps(off, "syscall") - kind_ps(on, "syscall")) / frames
    assert extra == pytest.approx(CostModel().csum * payload, rel=0.01)
    assert kind_ps(off, "softirq") == kind_ps(on, "softirq")


def replay(tmp_path, packets, *overrides, gap_us=1.0):
    """Run ``packets`` (scapy, for host 0's NIC) from a capture, ``gap_us`` apart."""
    from scapy.utils import wrpcap

    for n, p in enumerate(packets):
        p.time = n * gap_us * 1e-6
    wrpcap(str(tmp_path / "in.pcap"), packets)
    return run("traffic.0.pattern=\"pcap\"", f"traffic.0.pcap=\"{tmp_path / 'in.pcap'}\"",
               *overrides, duration_us=100)


MAC = "02:00:00:00:10:01"  # the NIC of host 0


@pytest.mark.parametrize("features", ["[\"rx_csum\", \"rss\"]", "[\"rss\"]", "[]"])
def test_bad_checksums_are_dropped_with_or_without_the_nic_checking(tmp_path, features):
    packets = []
    for n in range(30):
        udp = UDP(sport=1000 + n, dport=5201, chksum=0x1234 if n % 3 == 1 else None)
        ip = IP(src="10.0.0.2", dst="10.0.0.1", chksum=0x4321 if n % 3 == 2 else None)
        packets.append(Ether(dst=MAC) / ip / udp / (b"x" * 100))
    world, r = replay(tmp_path, packets, f"nic.features={features}")
    assert r["delivered_frames"] == 10
    assert r["drops"] == {"rx_bad_checksum": 20}


def test_gro_merges_a_poll_of_tcp_segments_into_one_skb(tmp_path):
    from scapy.layers.inet import TCP

    mss = 1000
    packets = [Ether(dst=MAC) / IP(src="10.0.0.2", dst="10.0.0.1", id=n)
               / TCP(sport=4000, dport=5201, flags="A", seq=1 + n * mss, ack=1)
               / (bytes([n]) * mss) for n in range(40)]
    world, r = replay(tmp_path, packets)
    app = path_of(world).app
    assert r["delivered_frames"] == app.frames == 40 and not r["drops"]
    assert app.bytes < 40 * (14 + 20 + 20 + mss)  # merged: the headers once per skb
    skbs = len(app.latency_ps)
    # Frames 1 us apart and 8 us of interrupt moderation: a poll finds several at once.
    assert skbs < 40 / 4
    c = CostModel()
    # One GRO step per segment; the TCP receive once per merged skb.
    protocol = kind_ps(world, "softirq")
    assert protocol > 40 * c.gro_segment + skbs * c.tcp_rcv


def test_rps_moves_protocol_work_from_the_irq_core_to_the_others():
    args = ("host.cores=4", "traffic.0.flows=64", "traffic.0.rate_mpps=1")
    plain, _ = run(*args)
    rps, _ = run(*args, "host.rps=true")
    assert all(kind_ps(plain, "softirq", n) == 0 for n in (1, 2, 3))
    assert all(kind_ps(rps, "softirq", n) > 0 for n in (1, 2, 3))
    assert kind_ps(rps, "softirq", 0) < kind_ps(plain, "softirq", 0)
    # The steered cores are kicked with IPIs, which they take as interrupts.
    assert all(kind_ps(rps, "irq", n) > 0 for n in (1, 2, 3))
    assert path_of(rps).app.frames == path_of(plain).app.frames == 200


def test_rfs_steers_to_the_core_the_reader_runs_on():
    world, r = run("host.cores=4", "host.app_cores=[2]", "traffic.0.flows=64",
                   "traffic.0.rate_mpps=1", "host.rfs=true")
    assert r["delivered_frames"] == 200
    assert kind_ps(world, "softirq", 2) > 0
    assert kind_ps(world, "softirq", 1) == kind_ps(world, "softirq", 3) == 0
    assert path_of(world).threads[0].core is world.hosts[0].cores[2]


def test_a_slow_reader_overflows_its_socket_buffer_and_every_frame_is_accounted_for():
    # 5 us per recv(): the reader takes 0.2 Mpps of the 1 Mpps offered.
    world, r = run("host.cores=2", "host.app_cores=[1]", "host.costs.syscall=5000",
                   "traffic.0.rate_mpps=1", "drain_us=1000")
    full = r["drops"]["socket_buffer_full"]
    assert full > 0
    assert r["delivered_frames"] + full == r["offered"]["frames"] == 200
    assert r["in_flight"] == {"rx_waiting_for_descriptor": 0, "elsewhere": 0}
    # The queue holds what fits in rmem (Linux drops once sk_rmem_alloc passes sk_rcvbuf):
    # 208 KiB of 2304-byte skbs, plus those the reader took meanwhile.
    fits = 208 * 1024 // (RX_BUFFER_BYTES + SKB_OVERHEAD_BYTES) + 1
    assert fits < r["delivered_frames"] < fits + 200 * 0.2 + 5


def test_a_small_socket_buffer_drops_more():
    args = ("host.cores=2", "host.app_cores=[1]", "host.costs.syscall=2000",
            "traffic.0.rate_mpps=1")
    _, big = run(*args)
    _, small = run(*args, "host.rmem_kib=16")
    assert small["drops"]["socket_buffer_full"] > big["drops"].get("socket_buffer_full", 0)


def test_softirq_and_reader_on_one_core_contend():
    shared, r_shared = run(duration_us=1000)  # line rate into one core
    apart, r_apart = run("host.cores=2", "host.app_cores=[1]", duration_us=1000)
    by_kind = shared.hosts[0].cores[0].by_kind
    assert by_kind["softirq"] > 0 and by_kind["syscall"] > 0
    assert r_shared["cpu_busy"][0] > 0.9
    # Alone on its core the reader takes several times more.
    assert r_apart["delivered_frames"] > 2 * r_shared["delivered_frames"]
    assert r_shared["drops"]["socket_buffer_full"] > 0


def overload(cores, *overrides, duration_us=300):
    """Line rate (14.88 Mpps of 64-byte frames) into ``cores`` queues, a reader per core."""
    return run(f"host.cores={cores}", f"nic.rxqs={cores}", f"nic.txqs={cores}",
               "traffic.0.flows=256", *overrides, duration_us=duration_us)[1]


def test_every_core_works_under_overload_and_two_cores_deliver_more_than_one():
    one, two = overload(1), overload(2)
    # Neither the softirq nor the reader leaves a core idle while the other has work, and the
    # core's time is counted as it is spent, not when a piece of work ends.
    assert all(busy >= 0.95 for busy in one["cpu_busy"] + two["cpu_busy"])
    # RSS spreads 256 flows over the two queues: about twice the frames of one core.
    assert two["delivered_frames"] > 1.5 * one["delivered_frames"]


def test_ksoftirqd_shares_its_core_with_a_reader_that_still_has_data():
    # 1 us per recv(): the readers never empty their sockets (each fed by both cores), so they
    # stay runnable and are not woken. ksoftirqd, a thread like them, gives the core up after a
    # softirq run; a fair share is about half the core each.
    r = overload(2, "host.costs.syscall=1000", duration_us=400)
    assert all(busy >= 0.95 for busy in r["cpu_busy"])
    assert all(kinds["syscall"] + kinds["app"] > 0.4 for kinds in r["cpu_by_kind"])


def udp_echo_replies(*overrides):
    world, r = run("host.app=\"udp_echo\"", "traffic.0.rate_mpps=0.5", "traffic.0.flows=4",
                   *overrides, duration_us=40, capture=("tx_wire",))
    return world, r, [Ether(data) for _, data in world.sink.capture]


@pytest.mark.parametrize("overrides", [
    (),
    ("nic.features=[\"rss\"]",),  # checksums in software
    ("traffic.0.ipv6=true", "traffic.0.size=200"),
    ("traffic.0.ipv6=true", "traffic.0.size=100", "nic.features=[\"rx_csum\"]"),
])
def test_udp_echo_replies_swap_addresses_and_carry_valid_checksums(overrides):
    world, r, replies = udp_echo_replies(*overrides)
    assert len(replies) == r["delivered_frames"] == r["offered"]["frames"] == 20
    source = world.sources[0]
    for reply in replies:
        ip = reply[IPv6] if IPv6 in reply else reply[IP]
        flow = ip.dst  # the request's source
        request = Ether(source.template(int(ip.dst.split(".")[-1]) - 1 if IP in reply else
                                        _flow_of_v6(source, flow), source.sizes[0]))
        req_ip = request[IPv6] if IPv6 in request else request[IP]
        assert (reply.src, reply.dst) == (request.dst, request.src)
        assert (ip.src, ip.dst) == (req_ip.dst, req_ip.src)
        assert (reply[UDP].sport, reply[UDP].dport) == (request[UDP].dport, request[UDP].sport)
        assert bytes(reply[UDP].payload) == bytes(request[UDP].payload)
        assert _checksums_valid(reply)
    assert r["latency_us"]["p50"] > 0


def _flow_of_v6(source, address):
    for flow in range(16):
        if Ether(source.template(flow, source.sizes[0]))[IPv6].src == address:
            return flow
    raise AssertionError(address)


def _checksums_valid(frame):
    """Let scapy recompute the checksums and compare."""
    again = frame.copy()
    if IP in again:
        del again[IP].chksum
    del again[UDP].chksum
    again = Ether(bytes(again))
    ok = again[UDP].chksum == frame[UDP].chksum
    if IP in frame:
        ok = ok and again[IP].chksum == frame[IP].chksum
    return ok


def test_l2fwd_is_refused_in_one_sentence():
    with pytest.raises(ValueError, match="host.app 'l2fwd'") as info:
        run("host.app=\"l2fwd\"")
    assert "\n" not in str(info.value)


def test_app_cores_outside_the_host_are_refused():
    with pytest.raises(ValueError, match="host.app_cores names core 3"):
        run("host.cores=2", "host.app_cores=[3]")


def kv_send_ps(monkeypatch, value, *overrides):
    world, r = run("host.app=\"kv\"", "traffic.0.rate_mpps=0.01", f"host.kv_value_bytes={value}",
                   *overrides, duration_us=500, capture=("tx_wire",))
    answered = path_of(world).app.frames
    assert answered == 5
    return kind_ps(world, "syscall") / answered, world, r


def test_zerocopy_saves_cpu_for_large_sends_and_costs_for_small_ones(monkeypatch):
    c = CostModel()
    large_copy, _, _ = kv_send_ps(monkeypatch, 60000)
    large_zc, _, _ = kv_send_ps(monkeypatch, 60000, "host.zerocopy=true")
    small_copy, _, _ = kv_send_ps(monkeypatch, 64)
    small_zc, _, _ = kv_send_ps(monkeypatch, 64, "host.zerocopy=true")
    assert large_zc < large_copy
    assert small_zc > small_copy
    # The differences are the copy against pinning the pages and the notification.
    for value, copy, zc in ((60000, large_copy, large_zc), (64, small_copy, small_zc)):
        expected = round(c.pages(value) * c.page_pin) + c.zerocopy_notify - c.copy(value)
        assert zc - copy == pytest.approx(expected, rel=0.02)


def test_large_sends_segment_in_software_or_on_the_nic_into_the_same_datagrams(monkeypatch):
    c = CostModel()
    soft_ps, soft, r_soft = kv_send_ps(monkeypatch, 6000)
    uso_ps, uso, r_uso = kv_send_ps(monkeypatch, 6000,
                                    "nic.features=[\"rx_csum\", \"tx_csum\", \"rss\", \"uso\"]")
    segments = -(-6000 // 1472)
    assert r_soft["delivered_frames"] == r_uso["delivered_frames"] == 5 * segments
    for world in (soft, uso):
        frames = [Ether(data) for _, data in world.sink.capture]
        assert sum(len(f[UDP].payload) for f in frames) == 5 * 6000
        assert all(_checksums_valid(f) for f in frames)
    # Software GSO costs a GSO step and a descriptor per segment; USO one descriptor.
    assert soft_ps - uso_ps == pytest.approx(segments * (c.gso_segment + c.driver_tx)
                                             - c.driver_tx, rel=0.02)


def test_irq_affinity_pins_each_queue_to_its_core_or_all_to_core_zero():
    args = ("nic.rxqs=4", "host.cores=4", "traffic.0.flows=32", "traffic.0.rate_mpps=2")
    pinned, _ = run(*args)
    single, _ = run(*args, "host.irq_affinity=\"single\"")
    assert all(kind_ps(pinned, "irq", n) > 0 and kind_ps(pinned, "softirq", n) > 0
               for n in range(4))
    assert all(kind_ps(single, "irq", n) == kind_ps(single, "softirq", n) == 0
               for n in (1, 2, 3))
    assert path_of(pinned).app.frames == path_of(single).app.frames == 400
