"""Choosing the OpenCL device: NICSIM_CL and the one-sentence error."""

import pytest

from nicsim.gpu import platform as plat


@pytest.fixture
def fresh(monkeypatch):
    plat.get_platform.cache_clear()
    yield monkeypatch
    plat.get_platform.cache_clear()


def test_none_turns_opencl_off(fresh):
    fresh.setenv(plat.ENV_VAR, "none")
    with pytest.raises(plat.GpuUnavailable, match="turned off"):
        plat.get_platform()


def test_unknown_name_is_one_sentence(fresh, platform):
    fresh.setenv(plat.ENV_VAR, "no-such-vendor-xyz")
    with pytest.raises(plat.GpuUnavailable) as info:
        plat.get_platform()
    message = str(info.value)
    assert "no-such-vendor-xyz" in message and "nicsim gpu info" in message
    assert "\n" not in message


def test_index_and_name_pick_the_same_device(fresh, platform):
    found = [d for d in plat.list_devices() if d["usable"]]
    first = found[0]
    fresh.setenv(plat.ENV_VAR, f"{first['platform']}:{first['device']}")
    by_index = plat.get_platform()
    plat.get_platform.cache_clear()
    fresh.setenv(plat.ENV_VAR, first["platform_name"].split()[0].lower())
    by_name = plat.get_platform()
    assert by_index.name == by_name.name == f"{first['platform_name']} / {first['device_name']}"


def test_slug_is_a_file_name():
    assert plat.platform_slug("Portable Computing Language / pthread-AMD EPYC") == \
        "portable-computing-language-pthread-amd-epyc"


def _cli(*args):
    from typer.testing import CliRunner

    from nicsim.sim.cli import app

    return CliRunner().invoke(app, ["gpu", *args])


def test_no_platform_at_all_is_one_sentence(fresh, tmp_path):
    import pyopencl as cl

    fresh.setattr(cl, "get_platforms", lambda: [])  # what an ICD loader with no vendor lists
    with pytest.raises(plat.GpuUnavailable, match="no OpenCL platform found; install one"):
        plat.get_platform()
    plat.get_platform.cache_clear()
    result = _cli("bench", "--out", str(tmp_path / "b.json"))
    assert result.exit_code == 2 and "Traceback" not in result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "pocl-opencl-icd" in lines[0], result.output
    assert not (tmp_path / "b.json").exists()


def test_no_device_that_builds_the_test_kernel_is_one_sentence(fresh, platform):
    fresh.setattr(plat, "_probe", lambda device: "clBuildProgram failed: BUILD_PROGRAM_FAILURE")
    with pytest.raises(plat.GpuUnavailable) as info:
        plat.get_platform()
    message = str(info.value)
    assert "no OpenCL device can build the test kernel" in message and "\n" not in message
    assert "BUILD_PROGRAM_FAILURE" in message
    plat.get_platform.cache_clear()
    fresh.setenv(plat.ENV_VAR, "0")  # named, but unusable
    with pytest.raises(plat.GpuUnavailable, match="cannot build the test kernel"):
        plat.get_platform()
    plat.get_platform.cache_clear()
    result = _cli("info")
    assert result.exit_code == 0 and "no usable OpenCL device" in result.output


@pytest.mark.long
def test_no_icd_vendor_in_a_fresh_process(tmp_path):
    # The real loader with an empty vendor folder: nothing to list.
    import os
    import subprocess
    import sys

    env = dict(os.environ, OCL_ICD_VENDORS=str(tmp_path), NICSIM_CL="")
    proc = subprocess.run([sys.executable, "-m", "nicsim.sim.cli", "gpu", "bench", "--out",
                           str(tmp_path / "b.json")], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "no OpenCL platform found" in proc.stderr
