"""``nicsim compare``: rows per point, and the mechanisms the comparison exists to show."""

import json

import pytest
from typer.testing import CliRunner

from nicsim.sim.cli import app
from nicsim.sim.compare_cli import compare_points, parse_cores, parse_loads


def test_parse_ranges_and_lists():
    assert parse_cores("1..4") == [1, 2, 3, 4]
    assert parse_cores("1,2,8") == [1, 2, 8]
    assert parse_loads("0.5,2") == [0.5, 2.0]
    for bad in ("0..2", "3..1", "x", ""):
        with pytest.raises(ValueError):
            parse_cores(bad)
    with pytest.raises(ValueError):
        parse_loads("1,-2")


def test_polling_burns_a_core_at_any_load_while_interrupts_scale_with_it():
    rows = compare_points(["pmd", "irq"], "drop", [1], 64, [0.5, 8.0], (), 200, 16)
    by = {(r["path"], r["offered_mpps"]): r for r in rows}
    assert by[("pmd", 0.5)]["cpu_busy"] == [pytest.approx(1.0, abs=0.01)]
    assert by[("pmd", 8.0)]["cpu_busy"] == [pytest.approx(1.0, abs=0.01)]
    low, high = by[("irq", 0.5)]["cpu_busy"][0], by[("irq", 8.0)]["cpu_busy"][0]
    assert low < high < 1.0
    for r in rows:
        assert r["mpps"] == pytest.approx(r["offered_mpps"], rel=0.05)


def test_cli_writes_rows_and_a_plot(tmp_path):
    out = tmp_path / "cmp.json"
    result = CliRunner().invoke(app, ["compare", "pmd", "--cores", "1..2", "--duration-us",
                                      "100", "--json", str(out), "--set",
                                      "wire.rate_gbps=25"])
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())
    assert [r["cores"] for r in rows] == [1, 2]
    for r in rows:
        assert set(r) >= {"path", "app", "cores", "frame_size", "offered_mpps", "mpps",
                          "cpu_busy", "latency_us"}
        assert len(r["cpu_busy"]) == r["cores"]
        assert r["offered_mpps"] == pytest.approx(25e9 / 8 / 84 / 1e6, rel=1e-3)
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"


def test_cli_bad_input_is_one_line():
    for args in (["compare", "warp"], ["compare", "pmd", "--load", "x"],
                 ["compare", "pmd", "--set", "host.burst=0"]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2, args
        assert "Traceback" not in result.output
