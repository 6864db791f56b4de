"""``nicsim gpu info`` and ``nicsim gpu bench``: output files, and one-line errors."""

import json

import pytest
from typer.testing import CliRunner

from nicsim.sim.cli import app


@pytest.fixture
def runner():
    return CliRunner()


def test_info_lists_the_device(runner, platform):
    result = runner.invoke(app, ["gpu", "info", "--json"])
    assert result.exit_code == 0
    data = json.loads(result.output)
    assert data["chosen"] == platform.name
    assert any(d["usable"] for d in data["devices"])


def test_bench_writes_results_and_calibration(runner, platform, tmp_path, monkeypatch):
    from nicsim.gpu import device

    monkeypatch.setattr(device, "calibration_path", lambda slug: tmp_path / f"{slug}.json")
    out = tmp_path / "gpu.json"
    result = runner.invoke(app, ["gpu", "bench", "--scale", "0.01", "--reps", "1",
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["platform"] == platform.name
    kernels = {r["kernel"] for r in data["results"]}
    assert kernels == {"lpm4", "lpm6", "rss", "checksum", "ac", "aes"}
    assert all(r["agree"] for r in data["results"])  # numpy and the kernels give one answer
    for r in data["results"]:  # the table shows whole figures, also when not on a terminal
        assert f"{r['opencl_pps']:,}" in result.output and f"{r['numpy_pps']:,}" in result.output
    profile = device.GpuProfile.from_dict(
        json.loads((tmp_path / f"{platform.slug}.json").read_text()))
    assert set(profile.kernels) == kernels
    # The calibration is what a scenario naming the platform simulates.
    from nicsim.sim.scenario import load_scenario
    from nicsim.sim.world import run_scenario

    world, results, _ = run_scenario(load_scenario(None, [
        'host.path="gpu"', 'host.app="l3fwd"', f'host.gpu_profile="{platform.slug}"',
        "traffic.0.rate_mpps=1", "duration_us=100"]))
    gpu = world.hosts[0].paths[0].gpu
    assert gpu.profile.launch_ps == profile.launch_ps == data["profile"]["launch_ps"]
    assert gpu.profile.kernels["lpm4"] == profile.kernels["lpm4"]
    assert gpu.launches > 0


def test_bench_errors_are_one_line(runner, tmp_path, monkeypatch):
    from nicsim.gpu import platform as plat

    bad = tmp_path / "sigs.txt"
    bad.write_text("x: |zz|\n")
    result = runner.invoke(app, ["gpu", "bench", "--signatures", str(bad)])
    assert result.exit_code == 2 and "sigs.txt:1" in result.output
    result = runner.invoke(app, ["gpu", "bench", "--scale", "100"])
    assert result.exit_code == 2 and "--scale" in result.output
    plat.get_platform.cache_clear()
    monkeypatch.setenv(plat.ENV_VAR, "none")
    try:
        result = runner.invoke(app, ["gpu", "bench"])
    finally:
        plat.get_platform.cache_clear()
    assert result.exit_code == 2 and "turned off" in result.output
    assert "Traceback" not in result.output


def test_sweep_writes_pmd_and_gpu_runs(runner, tmp_path):
    out = tmp_path / "sweep.json"
    result = runner.invoke(app, ["gpu", "sweep", "--batches", "32", "--rates", "0.05",
                                 "--duration-us", "200", "--out", str(out)])
    assert result.exit_code == 0, result.output
    runs = json.loads(out.read_text())["runs"]
    assert [(r["path"], r["batch"]) for r in runs] == [("pmd", None), ("gpu", 32)]
    assert runs[1]["latency_p50_us"] > runs[0]["latency_p50_us"]  # the CPU wins at low load
    result = runner.invoke(app, ["gpu", "sweep", "--batches", "x"])
    assert result.exit_code == 2 and "--batches" in result.output
    result = runner.invoke(app, ["gpu", "sweep", "--profile", "nope", "--rates", "0.05",
                                 "--batches", "8", "--out", str(out)])
    assert result.exit_code == 2 and "no GPU calibration 'nope'" in result.output
