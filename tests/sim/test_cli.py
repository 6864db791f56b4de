"""The command line: model-backend runs, and one-line errors for bad input."""

import json
import struct
import subprocess
import sys

import pytest

from nicsim.hw.pcap import read_pcap, write_pcap
from nicsim.hw.ref.checksum import rx_checksum
from nicsim.hw.ref.rss import RssConfig, rss_hash
from nicsim.sim.traffic import mixed_frames


def nicsim(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "nicsim.sim.cli", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def capture(tmp_path_factory):
    path = tmp_path_factory.mktemp("cap") / "mixed.pcap"
    frames, _ = mixed_frames(60, seed=3)
    write_pcap(path, frames)
    return path, frames


def test_model_run_rss_and_checksum(capture, tmp_path):
    path, frames = capture
    cfg = tmp_path / "rss.toml"
    cfg.write_text('[rss]\nqueues = 8\nhash_types = ["ipv4", "tcp_ipv4", "ipv6"]\n')
    r = nicsim("rtl", "run", "rss", "--in", path, "--out", tmp_path / "o.pcapng",
               "--meta", tmp_path / "o.jsonl", "--backend", "model", "--config", cfg)
    assert r.returncode == 0, r.stderr
    meta = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    config = RssConfig(enabled=0b10110, table=[i % 8 for i in range(128)])
    for m, f in zip(meta, frames, strict=True):
        ref = rss_hash(f, config)
        assert (m["hash"], m["hash_type"], m["queue"]) == (ref.hash, ref.hash_type.name.lower(),
                                                           ref.queue)
    assert [p.data for p in read_pcap(tmp_path / "o.pcapng")] == frames
    r = nicsim("rtl", "run", "checksum-rx", "--in", path, "--out", tmp_path / "c.pcap",
               "--meta", tmp_path / "c.jsonl", "--backend", "model")
    assert r.returncode == 0, r.stderr
    meta = [json.loads(line) for line in (tmp_path / "c.jsonl").read_text().splitlines()]
    assert [m["csum_complete"] for m in meta] == [rx_checksum(f).csum_complete for f in frames]


@pytest.mark.parametrize("setup, expect", [
    (lambda d: (d / "in.pcap").write_bytes(
        struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1) + b"\0" * 10), "truncated"),
    (lambda d: (d / "in.pcap").write_text("hello"), "not a pcap"),
    (lambda d: None, "cannot read"),
])
def test_bad_capture_one_line(tmp_path, setup, expect):
    setup(tmp_path)
    r = nicsim("rtl", "run", "rss", "--in", tmp_path / "in.pcap", "--out", tmp_path / "o.pcap",
               "--meta", tmp_path / "o.jsonl", "--backend", "model")
    assert r.returncode == 2
    assert expect in r.stderr
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_error_names_a_bracketed_path_verbatim(tmp_path):
    # "[/x]" and "[bold]" in a path are not console markup: printed as they are, no traceback
    missing = tmp_path / "cap[" / "x][bold]" / "in.pcap"
    r = nicsim("rtl", "run", "rss", "--in", missing, "--out", tmp_path / "o.pcap",
               "--meta", tmp_path / "o.jsonl", "--backend", "model")
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert str(missing) in r.stderr.replace("\n", "")
    assert len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("text, expect", [
    ('[rss]\nkey = "abcd"\n', "40 bytes"),
    ('[rss]\nhash_types = ["ipv5"]\n', "unknown hash type"),
    ('[rss]\ntable_size = 100\n', "power of two"),
    ("[rss\n", "not valid TOML"),
    ('[rss]\nspeed = 3\n', "unknown rss setting"),
])
def test_bad_config_one_line(capture, tmp_path, text, expect):
    path, _ = capture
    (tmp_path / "c.toml").write_text(text)
    r = nicsim("rtl", "run", "rss", "--in", path, "--out", tmp_path / "o.pcap",
               "--meta", tmp_path / "o.jsonl", "--backend", "model", "--config",
               tmp_path / "c.toml")
    assert r.returncode == 2, r.stdout
    assert expect in r.stderr
    assert "Traceback" not in r.stderr


def test_bad_arguments_one_line(capture, tmp_path):
    path, _ = capture
    for args, expect in ((["rtl", "run", "crc", "--in", path], "unknown engine"),
                         (["rtl", "run", "rss", "--in", path, "--width", "48"], "--width"),
                         (["rtl", "run", "rss", "--in", path, "--backend", "fpga"], "--backend"),
                         (["synth", "crc"], "unknown design"),
                         (["synth", "rss", "--router", "maze"], "unknown router"),
                         (["synth", "rss", "--placer", "sa2"], "unknown placer")):
        if "--out" not in args and args[0] == "rtl":
            args += ["--out", tmp_path / "o.pcap", "--meta", tmp_path / "o.jsonl"]
        r = nicsim(*args)
        assert r.returncode == 2
        assert expect in r.stderr, r.stderr


@pytest.mark.parametrize("engine, width", [("checksum-rx", 64), ("rss", 512),
                                           ("checksum-tx", 64)])
def test_rtl_and_model_backends_write_identical_files(capture, tmp_path, engine, width):
    path, _ = capture
    outputs = {}
    for backend in ("model", "rtl"):
        out, meta = tmp_path / f"{backend}.pcap", tmp_path / f"{backend}.jsonl"
        r = nicsim("rtl", "run", engine, "--in", path, "--out", out, "--meta", meta,
                   "--backend", backend, "--width", width)
        assert r.returncode == 0, r.stderr
        outputs[backend] = (out.read_bytes(), meta.read_text())
    assert outputs["rtl"] == outputs["model"]


def test_nic_regs_and_formats_print_the_tables():
    from typer.testing import CliRunner

    from nicsim.hw.nic import formats, regs
    from nicsim.sim.cli import app

    out = CliRunner().invoke(app, ["nic", "regs"], env={"COLUMNS": "200"}).output
    for reg in regs.REGISTERS + regs.QUEUE_REGISTERS:
        assert reg.name in out
    out = CliRunner().invoke(app, ["nic", "formats"], env={"COLUMNS": "200"}).output
    for layout in formats.LAYOUTS:
        assert f"{layout.name} ({layout.size} bytes)" in out
        assert all(f.name in out for f in layout.fields)
