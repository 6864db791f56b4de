"""The GPU as a PCIe device and the batch-offload host path: the costs compose as the PCIe
model says, and the batch size trades latency for throughput, the CPU winning at low load."""

import pytest

from nicsim.gpu.device import GpuDevice, GpuProfile, KernelCost, load_profile
from nicsim.sim.pcie import PcieConfig, PcieLink


def _profile(launch_ps=5_000_000):
    return GpuProfile("test", launch_ps, {k: KernelCost(1_000_000, 500, 10) for k in
                                          ("lpm4", "lpm6", "rss", "checksum", "ac", "aes")})


def test_offload_is_copy_in_launch_kernel_copy_out():
    import simpy

    env = simpy.Environment()
    config = PcieConfig(gen=3, lanes=16)
    gpu = GpuDevice(env, _profile(), config)
    batch = gpu.offload("lpm4", 256, 1024, 512, kernel_bytes=0, ready_ps=1000)
    # The same transfers on a link of their own, and the kernel by its cost formula.
    link = PcieLink(env, config)
    there = link.dma_read(0x2_0000_0000, 1024, 1000)
    finished = there + 5_000_000 + 1_000_000 + 256 * 500
    assert batch.kernel_done_ps == finished
    assert batch.landed_ps is None  # the copy out is scheduled when the kernel ends
    env.run()
    assert batch.landed_ps == link.dma_write(0x2_0000_0000, 512, finished)
    assert (gpu.h2d_bytes, gpu.d2h_bytes, gpu.launches, gpu.items) == (1024, 512, 1, 256)


def test_next_copy_in_does_not_wait_for_the_last_copy_out():
    import simpy

    env = simpy.Environment()
    config = PcieConfig(gen=3, lanes=16)
    gpu = GpuDevice(env, _profile(launch_ps=50_000_000), config)
    first = gpu.offload("lpm4", 256, 1024, 512, ready_ps=0)
    env.run(until=1_000_000)
    second = gpu.offload("lpm4", 256, 1024, 512)
    env.run()
    # The second batch's copy in (at 1 us) goes before the first batch's results (after
    # 50 us of launch): its kernel starts 1 us after the first's, not after its copy out.
    link = PcieLink(simpy.Environment(), config)
    there = link.dma_read(0x2_0000_0000, 1024, 1_000_000)
    run = 1_000_000 + 256 * 500
    assert second.kernel_done_ps == max(there + 50_000_000, first.kernel_done_ps) + run
    assert first.landed_ps < second.landed_ps


def test_kernels_run_one_at_a_time():
    import simpy

    env = simpy.Environment()
    gpu = GpuDevice(env, _profile(launch_ps=0))
    first = gpu.run_kernel("aes", 10, 1000, ready_ps=0)
    second = gpu.run_kernel("aes", 10, 1000, ready_ps=0)
    assert first == 1_000_000 + 10 * 500 + 1000 * 10
    assert second == 2 * first
    with pytest.raises(ValueError, match="GPU kernel must be one of"):
        gpu.run_kernel("nope", 1)


def test_unknown_profile_is_one_sentence():
    with pytest.raises(ValueError, match="no GPU calibration 'no-such-gpu'") as info:
        load_profile("no-such-gpu")
    assert "\n" not in str(info.value)
    assert load_profile().launch_ps > 0


def _run(*sets):
    from nicsim.sim.scenario import load_scenario
    from nicsim.sim.world import run_scenario

    scenario = load_scenario(None, ["host.app=\"l3fwd\"", "traffic.0.flows=64",
                                    "duration_us=300", *sets])
    world, results, _ = run_scenario(scenario)
    return world.hosts[0].paths[0], results


def test_cpu_beats_gpu_at_low_load():
    # 50 kpps: a PMD answers each frame at once; the GPU path waits for a batch (here the
    # timeout), then pays the copies and the launch.
    _, cpu = _run("host.path=\"pmd\"", "traffic.0.rate_mpps=0.05")
    path, gpu = _run("host.path=\"gpu\"", "traffic.0.rate_mpps=0.05", "host.gpu_batch=256",
                     "host.gpu_timeout_us=20")
    assert cpu["delivered_frames"] == gpu["delivered_frames"] == 15
    assert path.flushed_by_timeout == path.batches > 0
    assert gpu["latency_us"]["p50"] > cpu["latency_us"]["p50"] + 20


def test_batch_size_trades_latency_for_throughput():
    # At 2 Mpps small batches fill fast: lower latency than large ones, which wait.
    small, lat_small = _run("host.path=\"gpu\"", "traffic.0.rate_mpps=2", "host.gpu_batch=32")
    large, lat_large = _run("host.path=\"gpu\"", "traffic.0.rate_mpps=2",
                            "host.gpu_batch=512")
    assert lat_small["latency_us"]["p50"] < lat_large["latency_us"]["p50"]
    # Every frame received went to the GPU in some batch (the last may still be in flight).
    assert sum(small.batch_sizes) == sum(large.batch_sizes) >= lat_small["delivered_frames"]
    assert max(small.batch_sizes) == 32 and large.flushed_by_timeout == large.batches
    # At line rate (64-byte frames on 10 Gb/s) batches of 16 arrive every 1.1 us, faster than
    # the GPU runs kernels one after the other (2 us of fixed cost each): the GPU caps them.
    # Larger batches amortize that cost, and the core, relieved of the lookups, outruns the
    # PMD doing them itself. (Launches overlap: their overhead adds latency, not a cap.)
    line = ("traffic.0.rate_mpps=14.88",)
    _, cpu = _run("host.path=\"pmd\"", *line)
    tiny_path, tiny = _run("host.path=\"gpu\"", "host.gpu_batch=16", *line)
    assert tiny_path.gpu.busy_ps > 0.9 * 300 * 1_000_000  # the GPU never idles
    _, big = _run("host.path=\"gpu\"", "host.gpu_batch=256", *line)
    assert tiny["throughput"]["mpps"] < cpu["throughput"]["mpps"] < big["throughput"]["mpps"]


def test_p2p_skips_the_host_copy():
    sets = ("host.path=\"gpu\"", "host.gpu_kernel=\"aes\"", "traffic.0.rate_mpps=0.5",
            "traffic.0.size=1500", "host.gpu_batch=64")
    copy, with_copy = _run(*sets, "host.gpu_p2p=false")
    peer, with_peer = _run(*sets, "host.gpu_p2p=true")
    assert copy.gpu.h2d_bytes == peer.gpu.p2p_bytes > 0 == peer.gpu.h2d_bytes
    assert with_peer["latency_us"]["p50"] < with_copy["latency_us"]["p50"]


def test_span_bounds_a_batch_of_long_frames():
    import simpy

    env = simpy.Environment()
    cost = KernelCost(1_000, 10, 1, span_ps=300)
    gpu = GpuDevice(env, GpuProfile("test", 0, {k: cost for k in
                                                ("lpm4", "lpm6", "rss", "checksum", "ac", "aes")}))
    # Two 1500-byte frames: the work in total is small, one frame's walk is not.
    assert gpu.run_kernel("ac", 2, 3000, ready_ps=0, longest=1500) == 1_000 + 1500 * 300
    # Many short frames: throughput decides.
    start = gpu.free_at
    assert gpu.run_kernel("ac", 100_000, 6_400_000, ready_ps=0, longest=64) - start == \
        1_000 + 100_000 * 10 + 6_400_000


@pytest.mark.parametrize("truth", [
    KernelCost(8_000_000, 10.7, 0.0),                  # a lookup kernel: items only
    KernelCost(2_000_000, 0.0, 0.8),                   # streaming bytes
    KernelCost(5_000_000, 0.0, 3.0, span_ps=340_000),  # a frame per work-item, long chains
])
def test_fit_recovers_a_known_cost(truth):
    from nicsim.gpu.bench import _fit

    # The bench's shapes: two batch sizes, short and long frames (or lookups).
    if truth.byte_ps == 0 and truth.span_ps == 0:
        shapes = [(131_072, 0, 0), (1_048_576, 0, 0), (4_194_304, 0, 0)]
    else:
        shapes = [(8192, 8192 * 10, 10), (65_536, 65_536 * 10, 10),
                  (1024, 1024 * 1446, 1446), (8192, 8192 * 1446, 1446)]
    points = [(i, b, longest, truth.time_ps(i, b, longest)) for i, b, longest in shapes]
    fitted = _fit(points)
    for i, b, longest, ps in points:
        assert fitted.time_ps(i, b, longest) == pytest.approx(ps, rel=0.02)
    # And a shape it was not fitted on: a small batch of long frames.
    assert fitted.time_ps(16, 16 * 1446, 1446) == pytest.approx(
        truth.time_ps(16, 16 * 1446, 1446), rel=0.1)


def test_measured_calibrations_load():
    from nicsim.gpu.device import calibration_path

    for path in sorted(calibration_path("x").parent.glob("*.json")):
        profile = load_profile(path.stem)
        assert profile.launch_ps > 0
        assert all(c.time_ps(1024, 65_536, 64) > 0 for c in profile.kernels.values())
