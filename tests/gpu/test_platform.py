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
