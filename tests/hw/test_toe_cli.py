"""``nicsim toe serve``: one-line errors, and an echo served to the Linux stack."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nicsim.hw.toe.bridge import missing_requirements

NICSIM = [sys.executable, "-m", "nicsim.sim.cli"]
if (Path(sys.executable).parent / "nicsim").exists():
    NICSIM = [str(Path(sys.executable).parent / "nicsim")]


@pytest.mark.parametrize("args, message", [
    (["--ip", "10.0.0.300"], "Not an IPv4 address"),
    (["--port", "70000"], "--port must be 1 to 65535"),
    (["--drop", "1.5"], "--drop must be a probability"),
    (["--host-ip", "10.9.0.1"], "must be another address in the engine's /24"),
    (["--backend", "fpga"], "--backend must be model or rtl"),
    (["--backend", "rtl", "--rtl-sim", "gpu"], "--rtl-sim must be verilator or amaranth"),
    (["--sessions", "5000"], "Sessions must be 1 to 1024"),
])
def test_serve_errors_are_one_line(args, message):
    from typer.testing import CliRunner

    from nicsim.sim.cli import app

    result = CliRunner().invoke(app, ["toe", "serve", *args, "--duration", "1"],
                                env={"COLUMNS": "400"})
    assert result.exit_code == 2
    assert message in result.output and result.exception is None or \
        isinstance(result.exception, SystemExit)
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.skipif(missing_requirements() is not None,
                    reason=f"nicsim toe serve needs {missing_requirements()}")
def test_serve_echoes_to_linux():
    netns = f"nicsim-toe-{os.getpid()}-cli"
    server = subprocess.Popen([*NICSIM, "toe", "serve", "--duration", "30", "--netns", netns,
                               "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    try:
        deadline = time.monotonic() + 10
        while not Path("/run/netns", netns).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        client = ("import socket; s = socket.create_connection(('10.0.0.2', 7), timeout=5); "
                  "s.sendall(b'x' * 100000); s.shutdown(1); d = b''\n"
                  "while c := s.recv(65536): d += c\nprint(len(d), d == b'x' * 100000)")
        result = subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", client],
                                capture_output=True, text=True, timeout=15)
        assert result.stdout.split() == ["100000", "True"], result.stderr
        server.send_signal(signal.SIGINT)  # Ctrl-C: stop, print the counters, clean up
        out, err = server.communicate(timeout=15)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert server.returncode == 0, err
    assert '"echo_replies"' not in out and '"arp_replies": 1' in out
    assert not Path("/run/netns", netns).exists()


def test_missing_requirements_named(monkeypatch, tmp_path):
    """Without root, /dev/net/tun or iproute2 the Linux tests skip naming what is missing."""
    from nicsim.hw.toe import bridge

    monkeypatch.setattr(bridge.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(bridge.shutil, "which", lambda name: None)
    real_exists = bridge.os.path.exists
    monkeypatch.setattr(bridge.os.path, "exists",
                        lambda p: False if p == "/dev/net/tun" else real_exists(p))
    message = bridge.missing_requirements()
    assert "root (running as uid 1000)" in message
    assert "/dev/net/tun" in message and "`ip netns`" in message
