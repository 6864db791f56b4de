"""The PCIe link: pcie-bench accounting by hand, the calendar model against it, credits, tags."""

import json
import math

import pytest
import simpy
import typer
from typer.testing import CliRunner

from nicsim.sim.pcie import (
    PcieConfig,
    PcieLink,
    completion_count,
    effective_bandwidth,
    raw_bandwidth,
    simulate_bandwidth,
    split_payload,
    tlp_bandwidth,
    transfer_cost,
    window_bandwidth,
)
from nicsim.sim.pcie_cli import register

GEN3_X8 = PcieConfig(gen=3, lanes=8)
# Gen3 x8 at MPS 256: ACK and UpdateFC every 203 B (spec tables, as in pcie-bench), SKIP 4 B in
# 1538 B: 1 - 8/203 - 8/203 - 4/1538 = 0.918581...
GEN3_X8_TLP = 8e9 * 128 / 130 * 8 / 8 * (1 - 8 / 203 - 8 / 203 - 4 / 1538)


def test_raw_bandwidth():
    # 8 GT/s * 128/130 * 8 lanes / 8 bit = 7.877 GB/s
    assert raw_bandwidth(GEN3_X8) == pytest.approx(7.8769e9, rel=1e-4)
    # 2.5 GT/s * 8/10 * 1 lane / 8 bit = 250 MB/s
    assert raw_bandwidth(PcieConfig(gen=1, lanes=1)) == pytest.approx(250e6)
    # 5 GT/s * 8/10 * 4 / 8 = 2 GB/s
    assert raw_bandwidth(PcieConfig(gen=2, lanes=4)) == pytest.approx(2e9)
    # 32 GT/s * 128/130 * 16 / 8 = 63.015 GB/s
    assert raw_bandwidth(PcieConfig(gen=5, lanes=16)) == pytest.approx(63.015e9, rel=1e-4)


def test_tlp_bandwidth():
    assert tlp_bandwidth(GEN3_X8) == pytest.approx(GEN3_X8_TLP)
    assert tlp_bandwidth(GEN3_X8) == pytest.approx(7.2356e9, rel=1e-4)
    # Gen1 x1 at MPS 128: intervals of 237 B.
    cfg = PcieConfig(gen=1, lanes=1, mps=128)
    assert tlp_bandwidth(cfg) == pytest.approx(250e6 * (1 - 16 / 237 - 4 / 1538))
    # Explicit intervals replace the spec's.
    cfg = PcieConfig(ack_interval_bytes=800, fc_update_interval_bytes=400)
    assert tlp_bandwidth(cfg) == pytest.approx(7.8769e9 * (1 - 8 / 800 - 8 / 400 - 4 / 1538),
                                               rel=1e-4)


def test_small_write_wire_bytes():
    # 64 B payload + 8 B framing/sequence/LCRC + 16 B 4-DW header = 88 B
    assert transfer_cost(GEN3_X8, "write", 64) == (1, 88, 0, 0, 64)
    # 32-bit addressing below 4 GiB: 3-DW header, 64 + 8 + 12 = 84 B
    addr32 = PcieConfig(addr64=False)
    assert transfer_cost(addr32, "write", 64).up_wire_bytes == 84
    # ... but an address above 4 GiB still needs 4 DW: 88 B
    assert transfer_cost(addr32, "write", 64, addr=5 << 30).up_wire_bytes == 88
    # ECRC adds 4 B: 92 B
    assert transfer_cost(PcieConfig(ecrc=True), "write", 64).up_wire_bytes == 92
    # 5.262 GB/s = 7.2356 GB/s * 64 / 88
    assert effective_bandwidth(GEN3_X8, "write", 64) == pytest.approx(GEN3_X8_TLP * 64 / 88)


def test_write_split_at_mps():
    # ceil(1500 / 256) = 6 TLPs, 1500 + 6 * 24 = 1644 wire bytes
    assert split_payload(0, 1500, 256) == [256] * 5 + [220]
    assert transfer_cost(GEN3_X8, "write", 1500) == (6, 1644, 0, 0, 1500)
    # 7.2356 GB/s * 1500 / 1644 = 6.602 GB/s
    assert effective_bandwidth(GEN3_X8, "write", 1500) == pytest.approx(6.602e9, rel=1e-3)


def test_write_split_at_4k_boundary():
    # 200 B at 4000 fit in one MPS but cross 4096: 96 B + 104 B, 200 + 2 * 24 = 248 wire bytes
    assert split_payload(4000, 200, 256) == [96, 104]
    assert transfer_cost(GEN3_X8, "write", 200, addr=4000) == (2, 248, 0, 0, 200)
    assert transfer_cost(GEN3_X8, "write", 200, addr=0) == (1, 224, 0, 0, 200)
    # 8 KiB from 4096 - 64 with MPS 4096: 64 | 4096 | 4032
    assert split_payload(4032, 8192, 4096) == [64, 4096, 4032]


def test_read_split():
    # 4096 B at MRRS 512: 8 requests (8 * 24 = 192 B up), each answered by 2 completions of
    # MPS 256: 16 completions, 4096 + 16 * 20 = 4416 B down
    assert transfer_cost(GEN3_X8, "read", 4096) == (8, 192, 16, 4416, 4096)
    # the downstream direction is the busier one: 7.2356 GB/s * 4096 / 4416
    assert effective_bandwidth(GEN3_X8, "read", 4096) == pytest.approx(GEN3_X8_TLP * 4096 / 4416)
    # 64 B: one 24 B request, one 84 B completion
    assert transfer_cost(GEN3_X8, "read", 64) == (1, 24, 1, 84, 64)
    # 1500 B: requests 512 + 512 + 476, completions 2 + 2 + 2
    assert transfer_cost(GEN3_X8, "read", 1500) == (3, 72, 6, 1500 + 6 * 20, 1500)
    # 32-bit addressing and ECRC: requests 20 B (+4), completions 20 B + 4
    cfg = PcieConfig(addr64=False, ecrc=True)
    assert transfer_cost(cfg, "read", 64) == (1, 24, 1, 64 + 24, 64)


def test_completion_boundaries():
    # A 512 B request 32 B past an RCB boundary: first completion ends at the boundary after
    # 256 - 32 = 224 B, then 256, then 32: ceil((512 + 32) / 256) = 3
    assert completion_count(GEN3_X8, 32, 512) == 3
    assert completion_count(GEN3_X8, 0, 512) == 2
    # a request within MPS needs no split at all
    assert completion_count(GEN3_X8, 32, 200) == 1
    # rcb_chunks: every 64 B boundary cuts: ceil((512 + 32) / 64) = 9
    assert completion_count(PcieConfig(rcb_chunks=True), 32, 512) == 9
    assert completion_count(PcieConfig(rcb_chunks=True, rcb=128), 0, 512) == 4


def link(config=GEN3_X8):
    env = simpy.Environment()
    return env, PcieLink(env, config)


def test_single_transfers_on_idle_link():
    env, pcie = link()
    ps_per_byte = 1e12 / GEN3_X8_TLP
    # 88 wire bytes, then 500 ns latency and 10 ns root-complex processing
    assert pcie.dma_write(0, 64) == math.ceil(88 * ps_per_byte + 500_000 + 10_000)
    assert pcie.up.tlps == 1 and pcie.up.wire_bytes == 88 and pcie.up.payload_bytes == 64
    env, pcie = link()
    # MMIO read: 24 B request down, latency, 4 + 20 B completion up, latency
    assert pcie.mmio_read(0x1000, 4) == math.ceil(2 * 500_000 + 48 * ps_per_byte)
    env, pcie = link()
    assert pcie.mmio_write(0x1000, 4) == math.ceil(28 * ps_per_byte + 500_000)
    env, pcie = link()
    # dma read: request 24 B up, latency, processing, completion 84 B down, latency
    assert pcie.dma_read(0, 64) == math.ceil(108 * ps_per_byte + 2 * 500_000 + 10_000)
    env, pcie = link()
    assert pcie.msi(0xFEE0_0000) == math.ceil(28 * ps_per_byte + 510_000)
    # ready_ps delays the start
    env, pcie = link()
    assert pcie.dma_write(0, 64, ready_ps=1_000_000) == math.ceil(
        1_000_000 + 88 * ps_per_byte + 510_000)


def test_back_to_back_transfers_queue():
    env, pcie = link()
    ps_per_byte = 1e12 / GEN3_X8_TLP
    first = pcie.dma_write(0, 1500)
    second = pcie.dma_write(4096, 1500)
    # the second waits for the first's 1644 wire bytes
    assert second - first == pytest.approx(1644 * ps_per_byte, abs=1)
    assert pcie.up.tlps == 12


GRID = [(gen, lanes, op, size) for gen in (1, 2, 3, 4, 5) for lanes in (1, 4, 16)
        for op in ("write", "read") for size in (64, 1500, 4096)]


@pytest.mark.parametrize("gen, lanes, op, size", GRID)
def test_simulated_matches_analytic(gen, lanes, op, size):
    config = PcieConfig(gen=gen, lanes=lanes)
    analytic = effective_bandwidth(config, op, size)
    # with the defaults nothing but the link limits these
    assert window_bandwidth(config, op, size)[0] > analytic
    sim = simulate_bandwidth(config, op, size, transfers=1000)
    assert sim.bytes_per_s == pytest.approx(analytic, rel=0.01)
    assert sim.link.up.credit_stalls == 0


@pytest.mark.parametrize("gen, lanes, op, size", [
    (5, 16, "read", 8), (5, 16, "read", 33), (4, 16, "read", 1), (5, 16, "write", 1)])
def test_simulated_matches_window_when_limited(gen, lanes, op, size):
    # Tiny transfers on the fastest links outrun even the default tags and credits at 500 ns
    config = PcieConfig(gen=gen, lanes=lanes)
    window, _ = window_bandwidth(config, op, size)
    assert window < effective_bandwidth(config, op, size)
    sim = simulate_bandwidth(config, op, size, transfers=10_000)
    assert sim.bytes_per_s == pytest.approx(window, rel=0.01)


def test_link_rejects_empty_transfers():
    env, pcie = link()
    with pytest.raises(ValueError, match="size must be at least 1 byte, not 0"):
        pcie.dma_write(0, 0)
    with pytest.raises(ValueError, match="size must be at least 1 byte"):
        pcie.dma_read(0, -1)


def test_other_mps_mrrs_rcb_match():
    for config in (PcieConfig(mps=128, mrrs=4096), PcieConfig(mps=512, mrrs=128),
                   PcieConfig(rcb_chunks=True), PcieConfig(addr64=False, ecrc=True)):
        for op in ("read", "write"):
            sim = simulate_bandwidth(config, op, 1500, transfers=500)
            assert sim.bytes_per_s == pytest.approx(effective_bandwidth(config, op, 1500),
                                                    rel=0.01)


def test_posted_header_credits_stall():
    config = PcieConfig(posted_header_credits=8)
    sim = simulate_bandwidth(config, "write", 256, transfers=2000)
    # A credit comes back 38.7 ns (280 B) + 500 ns + 10 ns + 500 ns after it was taken:
    # 8 TLPs of 256 B per 1048.7 ns = 1.953 GB/s, far below the link's 6.6 GB/s
    rtt_s = 280 / GEN3_X8_TLP + 1010e-9
    expected = 8 * 256 / rtt_s
    assert expected == pytest.approx(1.953e9, rel=1e-3)
    assert sim.bytes_per_s == pytest.approx(expected, rel=0.02)
    assert window_bandwidth(config, "write", 256) == (pytest.approx(expected),
                                                      "posted header credits")
    up = sim.link.up
    # bursts of 8 TLPs, then the 9th waits for the first credit to come back
    assert up.credit_stalls >= 2000 // 8 - 1
    # the sender is always either sending or waiting for credits
    assert up.busy_ps + up.credit_stall_ps == pytest.approx(up.free_at, rel=1e-4)
    assert sim.link.utilisation(sim.last_done_ps)["up"] < 0.35


def test_posted_data_credits_stall():
    # 64 data credits = four 256 B TLPs in flight: about half of the header-limited case above
    config = PcieConfig(posted_data_credits=64)
    sim = simulate_bandwidth(config, "write", 256, transfers=2000)
    expected = 4 * 256 / (280 / GEN3_X8_TLP + 1010e-9)
    assert sim.bytes_per_s == pytest.approx(expected, rel=0.02)
    assert sim.link.up.credit_stalls >= 2000 // 4 - 1


def test_nonposted_credits_stall():
    config = PcieConfig(nonposted_header_credits=4)
    sim = simulate_bandwidth(config, "read", 512, transfers=2000)
    # a request holds its credit for 24 B + 1010 ns: 4 * 512 B per 1013.3 ns = 2.02 GB/s
    expected = 4 * 512 / (24 / GEN3_X8_TLP + 1010e-9)
    assert sim.bytes_per_s == pytest.approx(expected, rel=0.02)
    assert sim.link.up.credit_stalls >= 2000 // 4 - 1
    assert window_bandwidth(config, "read", 512) == (pytest.approx(expected),
                                                     "non-posted header credits")


def test_no_stalls_with_defaults_gen5():
    config = PcieConfig(gen=5, lanes=16)
    for op, size in (("write", 256), ("write", 64), ("read", 512)):
        sim = simulate_bandwidth(config, op, size, transfers=3000)
        assert sim.link.up.credit_stalls == 0
        assert sim.bytes_per_s == pytest.approx(effective_bandwidth(config, op, size), rel=0.01)


def test_tag_limited_reads_at_long_latency():
    config = PcieConfig(read_tags=32, latency_ps=2_000_000)
    sim = simulate_bandwidth(config, "read", 512, transfers=2000)
    # a tag is held for request (24 B) + 2 us + 10 ns + completions (2 x 276 B) + 2 us:
    # 32 x 512 B per 4089.6 ns = 4.006 GB/s, below the link's 6.711 GB/s
    hold_s = (24 + 552) / GEN3_X8_TLP + 4010e-9
    expected = 32 * 512 / hold_s
    assert expected == pytest.approx(4.006e9, rel=1e-3)
    assert expected < effective_bandwidth(config, "read", 512)
    assert sim.bytes_per_s == pytest.approx(expected, rel=0.02)
    assert window_bandwidth(config, "read", 512)[1] == "read tags"
    assert sim.link.up.tag_stalls > 1000


def test_one_tag_serializes_reads():
    env, pcie = link(PcieConfig(read_tags=1))
    first = pcie.dma_read(0, 64)
    second = pcie.dma_read(4096, 64)
    # the second request leaves only when the first completion is in (one full read later)
    assert second - first == pytest.approx(first, abs=2)
    assert pcie.up.tag_stalls == 1


def test_utilisation_at_saturation():
    sim = simulate_bandwidth(GEN3_X8, "write", 256, transfers=10_000)
    # 10,000 x 280 B take 387 us; only the first latency (0.5 us) is idle
    util = sim.link.utilisation(sim.last_done_ps)
    assert 0.995 < util["up"] <= 1 and util["down"] == 0


def test_utilisation_bounds():
    env, pcie = link()

    def traffic():
        for i in range(100):
            done = pcie.dma_write(i * 4096, 256)
            yield env.timeout(200_000)
        yield env.timeout(done - env.now)

    env.process(traffic())
    env.run()
    util = pcie.utilisation()
    # 100 x 280 B at 7.2356 GB/s = 3.87 us busy over 20.5 us
    assert util["up"] == pytest.approx(100 * 280 / GEN3_X8_TLP / (env.now * 1e-12), rel=1e-6)
    assert 0 < util["up"] < 1 and util["down"] == 0
    # before anything ran, and with work scheduled past "now"
    env, pcie = link()
    assert pcie.utilisation() == {"up": 0.0, "down": 0.0}
    for i in range(10):
        pcie.dma_write(i * 4096, 4096)
    assert 0 <= pcie.utilisation(1000)["up"] <= 1


@pytest.mark.parametrize("kwargs, message", [
    ({"gen": 6}, "pcie.gen must be one of 1, 2, 3, 4, 5, not 6."),
    ({"lanes": 3}, "pcie.lanes must be one of 1, 2, 4, 8, 16, not 3."),
    ({"mps": 100}, "pcie.mps must be one of 128, 256, 512, 1024, 2048, 4096, not 100."),
    ({"mrrs": 8192}, "pcie.mrrs must be one of 128, 256, 512, 1024, 2048, 4096, not 8192."),
    ({"rcb": 32}, "pcie.rcb must be one of 64, 128, not 32."),
    ({"ecrc": 1}, "pcie.ecrc must be true or false, not 1."),
    ({"latency_ps": -1}, "pcie.latency_ps must be a whole number of picoseconds >= 0, not -1."),
    ({"posted_header_credits": 0}, "pcie.posted_header_credits must be at least 1"),
    ({"mps": 512, "posted_data_credits": 16},
     "pcie.posted_data_credits must be at least mps/16 = 32 (one maximum-size write), not 16."),
    ({"read_tags": 0}, "pcie.read_tags must be at least 1 outstanding read, not 0."),
    ({"ack_interval_bytes": 8}, "pcie.ack_interval_bytes must be a whole number of bytes"),
])
def test_config_validation(kwargs, message):
    with pytest.raises(ValueError) as info:
        PcieConfig(**kwargs)
    assert str(info.value).startswith(message)


def test_bad_op_and_size():
    with pytest.raises(ValueError, match="op must be read or write"):
        effective_bandwidth(GEN3_X8, "copy", 64)
    with pytest.raises(ValueError, match="size must be"):
        transfer_cost(GEN3_X8, "read", 0)


@pytest.fixture
def cli():
    app = typer.Typer(add_completion=False)

    @app.callback()
    def main():
        """Throwaway app."""

    register(app)
    runner = CliRunner()
    return lambda *args: runner.invoke(app, ["pcie", *map(str, args)])


def test_cli_table(cli):
    r = cli("--gen", 3, "--lanes", 8, "--op", "write", "--size", 1500)
    assert r.exit_code == 0, r.output
    assert "52.81" in r.output and "6.602" in r.output  # Gb/s and GB/s
    assert "1644" in r.output


def test_cli_simulate_json(cli):
    r = cli("--gen", 4, "--lanes", 16, "--op", "read", "--size", 256, "--simulate",
            "--transfers", 2000, "--json")
    assert r.exit_code == 0, r.output
    result = json.loads(r.stdout)
    assert result["effective_gbps"] == pytest.approx(
        effective_bandwidth(PcieConfig(gen=4, lanes=16), "read", 256) * 8e-9)
    assert abs(result["difference"]) < 0.01
    assert result["up_tlps"] == 1 and result["down_tlps"] == 1
    r = cli("--addr32", "--size", 64, "--json")
    assert json.loads(r.stdout)["up_wire_bytes"] == 84


@pytest.mark.parametrize("args, message", [
    (("--lanes", 3), "--lanes must be one of 1, 2, 4, 8, 16, not 3."),
    (("--op", "copy"), "--op must be read or write"),
    (("--size", 0), "--size must be at least 1 byte"),
    (("--latency-ns", -5), "--latency-ns must be between"),
])
def test_cli_bad_options(cli, args, message):
    r = cli(*args)
    assert r.exit_code == 2
    assert message in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert "Traceback" not in r.output


@pytest.mark.parametrize("sizes", [(64, 32), (1500, 32), (60, 4000), (256, 256)])
def test_write_pair_is_two_writes(sizes):
    """The per-frame shortcut gives the times and counters of two dma_write calls."""
    results = []
    for paired in (False, True):
        env = simpy.Environment()
        link = PcieLink(env, PcieConfig())
        times = []
        for n in range(50):
            addr, addr2 = 0x10000 + n * 8192 + 64, 0x900000 + n * 32
            if paired:
                times += link.dma_write_pair(addr, sizes[0], addr2, sizes[1], n * 10_000)
            else:
                times += [link.dma_write(addr, sizes[0], n * 10_000),
                          link.dma_write(addr2, sizes[1], n * 10_000)]
        results.append((times, link.up.tlps, link.up.wire_bytes, link.up.busy_ps))
    assert results[0][:3] == results[1][:3]
    assert results[0][3] == pytest.approx(results[1][3])
