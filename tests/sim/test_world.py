"""End-to-end runs: traffic, wire, NIC model, PCIe, IOMMU, MSI-X, driver and host path.

Checks are mechanisms with independent expectations: conservation of frames, pcie-bench's
analytic accounting for a PCIe-bound run, interrupt counts worked out from moderation
thresholds, scapy's reading of forwarded frames.
"""

import json

import pytest
from scapy.layers.l2 import Ether
from scapy.utils import rdpcap
from typer.testing import CliRunner

from nicsim.sim import pcie
from nicsim.sim.cli import app
from nicsim.sim.scenario import ScenarioError, load_scenario
from nicsim.sim.world import World


def run(*overrides, text="duration_us = 200\n"):
    world = World(load_scenario(text=text, overrides=overrides))
    return world, world.run()


def conserved(r):
    """Every offered frame is delivered, dropped with a reason, or still in flight."""
    return r["offered"]["frames"] == (r["delivered_frames"] + sum(r["drops"].values())
                                      + sum(r["in_flight"].values()))


def test_same_scenario_and_seed_give_the_same_results():
    args = ("traffic.0.pattern=\"poisson\"", "traffic.0.rate_mpps=5", "host.path=\"irq\"")
    assert run(*args)[1] == run(*args)[1]
    assert run(*args)[1] != run(*args, "seed=2")[1]


def test_pmd_at_line_rate_delivers_everything_and_polls_at_full_cpu():
    _, r = run()
    assert r["offered"]["mpps"] == pytest.approx(14.88, rel=1e-3)  # 10 Gb/s, 64 B frames
    assert r["delivered_frames"] == r["offered"]["frames"] and not r["drops"]
    assert r["cpu_busy"] == [pytest.approx(1.0, abs=0.01)]
    assert r["interrupts"] == 0
    # Lower bound: wire (64 B + 20 B of preamble/gap at 10 Gb/s + 500 ns), the NIC pipeline
    # (100 ns) and a PCIe write (500 ns): nothing can be faster.
    assert r["latency_us"]["p50"] > 0.0672 + 0.5 + 0.1 + 0.5
    assert 0 < r["pcie"]["up_util"] < 1 and 0 < r["pcie"]["down_util"] < 1


def test_slow_host_runs_out_of_descriptors_and_drops_are_counted_as_such():
    _, r = run("host.costs.l3_hit=200", "nic.ring_size=64", "nic.rx_fifo_kib=16")
    assert r["drops"].get("rx_no_descriptor", 0) > 0
    assert r["throughput"]["mpps"] < r["offered"]["mpps"] / 2
    assert conserved(r)


@pytest.mark.parametrize("frames, usecs, low, high", [
    (1, 0, 40, 40),  # an interrupt per frame: frames come 5 us apart
    (4, 0, 10, 10),  # one per 4 frames
    # A window opens with the first frame after an interrupt and closes 20 us later, so
    # interrupts come 20 to 25 us apart over the 200 us: 200 / 25 = 8 to 200 / 20 = 10.
    (0, 20, 8, 10),
    (100, 20, 8, 10),  # the time threshold comes first
])
def test_interrupt_moderation_thresholds(frames, usecs, low, high):
    _, r = run("host.path=\"irq\"", "traffic.0.rate_mpps=0.2", f"interrupts.frames={frames}",
               f"interrupts.usecs={usecs}", "drain_us=100")
    assert r["delivered_frames"] == 40
    assert low <= r["interrupts"] <= high


def test_moderation_trades_latency_for_interrupts():
    _, fast = run("host.path=\"irq\"", "traffic.0.rate_mpps=0.2", "interrupts.frames=1",
                  "interrupts.usecs=0")
    _, slow = run("host.path=\"irq\"", "traffic.0.rate_mpps=0.2", "interrupts.frames=0",
                  "interrupts.usecs=50")
    assert slow["interrupts"] < fast["interrupts"]
    assert slow["latency_us"]["p50"] > fast["latency_us"]["p50"] + 10


def test_iommu_blocks_dma_to_an_unmapped_buffer_and_memory_stays_untouched():
    world = World(load_scenario(text="duration_us = 50\n",
                                overrides=["iommu.mode=\"translate\"", "nic.ring_size=64"]))
    host = world.hosts[0]
    victim = host.driver.rx[0].buffers[5]  # slot 5's buffer (2 KiB, half a page)
    page = victim & ~0xFFF
    host.iommu.unmap(0, page, 4096)
    r = world.run()
    assert r["iommu_faults"].get("unmapped", 0) > 0
    assert r["drops"].get("rx_dma_error", 0) > 0
    assert host.memory.read(page, 4096) == bytes(4096)
    assert conserved(r)


def test_pci_passthrough_runs_inside_the_guest_memory():
    world, r = run("iommu.mode=\"passthrough\"", "iommu.guest_mib=64")
    assert r["delivered_frames"] == r["offered"]["frames"] and not r["iommu_faults"]
    base = world.hosts[0].side.guest_base[0]
    assert all(base <= b < base + (64 << 20) for b in world.hosts[0].driver.rx[0].buffers)


def test_pcie_bound_run_matches_pcie_bench_accounting():
    # Gen1 x1 cannot carry 10 Gb/s of 1500-byte frames: every frame costs a data write and a
    # 32-byte completion write upstream, so the packet rate is the TLP-layer bandwidth over
    # their wire bytes (pcie-bench accounting, computed here from the analytic functions).
    _, r = run("pcie.gen=1", "pcie.lanes=1", "traffic.0.size=1500", "duration_us=400")
    config = pcie.PcieConfig(gen=1, lanes=1)
    per_frame = (pcie.transfer_cost(config, "write", 1496).up_wire_bytes
                 + pcie.transfer_cost(config, "write", 32).up_wire_bytes)
    expected_mpps = pcie.tlp_bandwidth(config) / per_frame / 1e6
    assert r["throughput"]["mpps"] == pytest.approx(expected_mpps, rel=0.03)
    assert r["pcie"]["up_util"] > 0.95
    assert r["drops"]["rx_no_descriptor"] > 0
    assert conserved(r)


def test_few_posted_credits_stall_the_nic():
    _, r = run("pcie.posted_header_credits=2", "pcie.posted_data_credits=16")
    assert r["pcie_credit_stalls"] > 0
    # Two writes per frame, two header credits, each back after ~2 latencies (1 us):
    # about 1 Mpps instead of 14.88.
    assert r["throughput"]["mpps"] == pytest.approx(1.0, rel=0.15)
    assert conserved(r)


def test_l2fwd_sends_frames_back_with_macs_swapped(tmp_path):
    world = World(load_scenario(text="duration_us = 20\n",
                                overrides=["host.app=\"l2fwd\""]), capture=("tx_wire",))
    r = world.run()
    assert r["delivered_frames"] == r["offered"]["frames"] > 100
    world.sink.write_pcap(tmp_path / "tx.pcap")
    frames = rdpcap(str(tmp_path / "tx.pcap"))
    template = world.sources[0].template(0, 64)
    sent = Ether(template)
    for frame in frames:
        assert frame[Ether].dst == sent.src and frame[Ether].src == sent.dst
        assert bytes(frame)[12:] == template[12:]


def test_two_hosts_behind_a_switch_each_get_their_traffic():
    world, r = run("topology.hosts=2", "traffic.0.rate_gbps=4", "traffic.1.host=1",
                   "traffic.1.rate_gbps=4")
    per_host = [sum(p.app.frames for p in h.paths) for h in world.hosts]
    assert per_host == [s.frames for s in world.sources]
    assert len(r["cpu_busy"]) == 2


@pytest.mark.parametrize("text, overrides, words", [
    ("pcie = 3\n", (), "pcie"),
    ("[pcie]\nlanes = 3\n", (), "pcie.lanes: must be 1, 2, 4, 8 or 16"),
    ("[nic]\nfeatures = [\"warp\"]\n", (), "unknown feature 'warp'"),
    ("[nic]\nring_size = 1000\n", (), "power of two"),
    ("[nic]\nrxqs = 2\nspeed = 1\n", (), "nic.speed: unknown key"),
    ("duration_us = -1\n", (), "duration_us"),
    ("[[traffic]]\nhost = 3\n", (), "traffic.0.host is 3"),
    ("x = [\n", (), "not valid TOML"),
    ("", ("pcie.lanes",), "KEY=VALUE"),
    ("", ("traffic.5.size=64",), "not an index"),
    ("", ("host.cores=2",), "needs a queue"),
])
def test_bad_scenarios_give_one_sentence(text, overrides, words):
    with pytest.raises(ScenarioError, match=words) as info:
        load_scenario(text=text, overrides=overrides)
    assert "\n" not in str(info.value)


def test_cli_run_writes_results_plots_and_pcaps(tmp_path):
    scenario = tmp_path / "s.toml"
    scenario.write_text("duration_us = 30\n[output]\npcap = [\"rx_wire\"]\n")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["run", str(scenario), "--out", str(out), "--set",
                                      "pcie.lanes=16", "--quiet"])
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    for key in ("throughput", "latency_us", "drops", "pcie", "interrupts", "cpu_busy"):
        assert key in results
    assert set(results["throughput"]) >= {"mpps", "gbps"}
    assert set(results["latency_us"]) == {"p50", "p99", "p999"}
    assert set(results["pcie"]) >= {"up_util", "down_util"}
    assert json.loads((out / "scenario.json").read_text())["pcie"]["lanes"] == 16
    assert (out / "latency_cdf.png").read_bytes()[:4] == b"\x89PNG"
    assert len(rdpcap(str(out / "rx_wire.pcap"))) == results["offered"]["frames"]


def test_cli_run_bad_scenario_is_one_line_exit_2(tmp_path):
    scenario = tmp_path / "s.toml"
    scenario.write_text("[pcie]\ngen = 9\n")
    result = CliRunner().invoke(app, ["run", str(scenario), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "pcie.gen" in result.output and "Traceback" not in result.output


def test_virtual_functions_get_their_own_traffic_queues_and_cores():
    world, r = run("nic.vfs=2", "traffic.0.rate_gbps=3", "traffic.1.function=1",
                   "traffic.1.rate_gbps=3", "traffic.2.function=2", "traffic.2.rate_gbps=3")
    host = world.hosts[0]
    per_function = [f["rx_frames"] for f in host.nic.stats()["functions"]]
    assert per_function == [s.frames for s in world.sources]
    assert len(r["cpu_busy"]) == 3 and r["delivered_frames"] == r["offered"]["frames"]


def test_a_virtual_function_cannot_dma_into_another_ones_memory():
    from nicsim.hw.nic.formats import DESC_BYTES, RX_DESC

    world = World(load_scenario(text="duration_us = 20\n", overrides=[
        "nic.vfs=2", "iommu.mode=\"translate\"", "traffic.0.function=1", "nic.ring_size=64"]))
    host = world.hosts[0]
    vf1, vf2 = host.vf_drivers
    victim = vf2.rx[0].buffers[0]
    before = host.memory.read(victim, 2048)
    # A misbehaving VF 1 driver points its descriptors at VF 2's buffer (the NIC has
    # fetched its first descriptors already; the later ones are poisoned).
    ring = vf1.rx[0]
    for slot in range(ring.size):
        host.memory.write(ring.ring + slot * DESC_BYTES, RX_DESC.pack(addr=victim, len=2048))
    r = world.run()
    assert r["iommu_faults"].get("unmapped", 0) > 0
    assert host.memory.read(victim, 2048) == before
    assert r["drops"].get("rx_dma_error", 0) > r["offered"]["frames"] // 2
    assert conserved(r)


def test_pcap_replay_traffic(tmp_path):
    from scapy.layers.inet import IP, UDP
    from scapy.utils import wrpcap

    mac = "02:00:00:00:10:01"  # the NIC of host 0
    packets = [Ether(dst=mac) / IP(dst="10.0.0.1") / UDP(dport=n) for n in range(50)]
    for n, p in enumerate(packets):
        p.time = n * 1e-6
    wrpcap(str(tmp_path / "in.pcap"), packets)
    _, r = run("traffic.0.pattern=\"pcap\"", f"traffic.0.pcap=\"{tmp_path / 'in.pcap'}\"",
               "nic.promiscuous=true")
    assert r["offered"]["frames"] == 50 == r["delivered_frames"]


def test_every_scenario_key_is_documented():
    from pathlib import Path

    from nicsim.sim.scenario import Scenario

    doc = (Path(__file__).parents[2] / "docs" / "scenarios.md").read_text()
    for name, field in Scenario.model_fields.items():
        section = field.annotation
        inner = getattr(section, "model_fields", None)
        if inner is None and hasattr(section, "__args__"):  # list[TrafficSection]
            inner = getattr(section.__args__[0], "model_fields", None)
        for key in (inner or {name: None}):
            assert f"`{key}`" in doc, f"docs/scenarios.md does not describe {name}.{key}"


def test_example_scenarios_are_valid():
    from pathlib import Path

    for path in (Path(__file__).parents[2] / "scenarios").glob("*.toml"):
        load_scenario(path)


def test_lro_merges_a_tcp_stream_end_to_end(tmp_path):
    from scapy.layers.inet import IP, TCP
    from scapy.utils import wrpcap

    mac = "02:00:00:00:10:01"
    packets = []
    for n in range(40):  # one flow, PSH on every 8th segment: Linux merges 8 at a time
        flags = "PA" if n % 8 == 7 else "A"
        p = (Ether(dst=mac) / IP(src="10.0.0.1", dst="10.0.0.2", flags="DF", id=n)
             / TCP(sport=5000, dport=80, seq=n * 1000, ack=1, flags=flags) / (b"d" * 1000))
        p.time = n * 1e-6
        packets.append(p)
    wrpcap(str(tmp_path / "stream.pcap"), packets)
    world, r = run("traffic.0.pattern=\"pcap\"", f"traffic.0.pcap=\"{tmp_path / 'stream.pcap'}\"",
                   "nic.features=[\"rx_csum\", \"rss\", \"lro\"]")
    app = world.hosts[0].paths[0].app
    assert r["delivered_frames"] == 40 and app.completions == 5


def test_lro_on_tcp_streams_cuts_completions_not_segments():
    world, r = run("traffic.0.proto=\"tcp\"", "traffic.0.stream=true", "traffic.0.size=1518",
                   "traffic.0.flows=4", "nic.features=[\"rx_csum\", \"rss\", \"lro\"]")
    app = world.hosts[0].paths[0].app
    assert r["delivered_frames"] == r["offered"]["frames"]
    # Four flows share the 10 Gb/s wire: each gets a segment every ~4.9 us, and the 10 us
    # aggregation timer closes a merge after 2-3 of them.
    assert app.completions < r["delivered_frames"] / 2


def test_closed_loop_clients_keep_their_requests_in_flight():
    world, r = run("host.app=\"l2fwd\"", "traffic.0.pattern=\"closed_loop\"",
                   "traffic.0.concurrency=4", "duration_us=100")
    client = world.sources[0]
    # Each client has one request out at a time: requests = replies + those in flight.
    assert client.frames - client.replies <= 4
    assert client.replies == r["delivered_frames"] > 40
    # The round trip bounds the rate: 4 requests per round trip.
    rtt_us = r["latency_us"]["p50"]
    assert r["throughput"]["mpps"] == pytest.approx(4 / rtt_us, rel=0.2)


def test_closed_loop_needs_a_replying_app():
    with pytest.raises(ScenarioError, match="sends none"):
        load_scenario(text="", overrides=["traffic.0.pattern=\"closed_loop\""])
