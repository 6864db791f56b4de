"""The ``nicsim toe`` commands: the TCP offload engine behind a TAP device.

``nicsim toe serve`` puts the engine's golden model on a TAP device in a network namespace, so
the Linux stack of that namespace (``ip netns exec <netns> nc 10.0.0.2 7``) talks to it. Errors
a user can cause end in one sentence on stderr and exit status 2.
"""

from __future__ import annotations

import json
import signal
import time
from typing import Annotated

import typer
from rich.console import Console

from nicsim.sim.clierr import err_console
from nicsim.sim.clierr import fail as _fail

__all__ = ["toe_app"]

console = Console()

toe_app = typer.Typer(help="TCP offload engine: serve it to the Linux stack through a TAP "
                           "device.", no_args_is_help=True)


@toe_app.command("serve")
def serve(
    ip: Annotated[str, typer.Option(help="IPv4 address of the engine.")] = "10.0.0.2",
    port: Annotated[list[int], typer.Option(help="TCP port to listen on (repeatable).")] = [7],  # noqa: B006
    echo: Annotated[bool, typer.Option("--echo/--discard", help="Send received bytes back "
                                       "(echo) or drop them (discard).")] = True,
    host_ip: Annotated[str | None, typer.Option(help="Address of the Linux side of the TAP "
                                                     "device (default: .1 of the engine's "
                                                     "/24, or .2 if the engine is .1).")] = None,
    netns: Annotated[str, typer.Option(help="Name of the network namespace to create.")]
    = "nicsim-toe",
    duration: Annotated[float | None, typer.Option(help="Stop after this many seconds "
                                                        "(default: until Ctrl-C).")] = None,
    backend: Annotated[str, typer.Option(help="model (golden reference) or rtl (the "
                                              "gateware, front end and session engine).")]
    = "model",
    rtl_sim: Annotated[str, typer.Option(help="Simulator of --backend rtl: verilator (the "
                                              "first run with new settings builds it, a few "
                                              "minutes) or amaranth (about a thousand cycles "
                                              "per second).")] = "verilator",
    sessions: Annotated[int, typer.Option(help="Session table size (1 to 1024).")] = 64,
    drop: Annotated[float, typer.Option(help="Probability to drop a frame (both "
                                             "directions).")] = 0.0,
    duplicate: Annotated[float, typer.Option(help="Probability to duplicate a frame.")] = 0.0,
    reorder: Annotated[float, typer.Option(help="Probability to swap a frame with the "
                                                "next.")] = 0.0,
    seed: Annotated[int, typer.Option(help="Seed of the impairments.")] = 1,
    stats_json: Annotated[bool, typer.Option("--json", help="Print the final counters as "
                                             "JSON.")] = False,
):
    """Run the TCP engine behind a TAP device until Ctrl-C (or --duration)."""
    from nicsim.hw.ref.tcp import TcpConfig, TcpEngine, TcpError, ip_to_bytes
    from nicsim.hw.toe.apps import AppHost, EchoApp, SinkApp
    from nicsim.hw.toe.bridge import BridgeError, TapBridge, missing_requirements
    from nicsim.hw.toe.impair import Impairment

    if backend not in ("model", "rtl"):
        _fail(f"--backend must be model or rtl, not {backend!r}.")
    if rtl_sim not in ("verilator", "amaranth"):
        _fail(f"--rtl-sim must be verilator or amaranth, not {rtl_sim!r}.")
    try:
        engine_ip = ip_to_bytes(ip)
        if host_ip is None:
            host_ip = ".".join(str(b) for b in engine_ip[:3]) + (".2" if engine_ip[3] == 1
                                                                   else ".1")
        host = ip_to_bytes(host_ip)
    except TcpError as e:
        _fail(f"{e}.")
    if host[:3] != engine_ip[:3] or host == engine_ip:
        _fail(f"--host-ip {host_ip} must be another address in the engine's /24 ({ip}).")
    for p in port:
        if not 1 <= p <= 65535:
            _fail(f"--port must be 1 to 65535, not {p}.")
    impairments = []
    for name, value in (("--drop", drop), ("--duplicate", duplicate), ("--reorder", reorder)):
        if not 0.0 <= value < 1.0:
            _fail(f"{name} must be a probability in [0, 1), not {value}.")
    if duration is not None and duration <= 0:
        _fail(f"--duration must be positive, not {duration}.")
    missing = missing_requirements()
    if missing:
        _fail(f"nicsim toe serve needs {missing}.")
    try:
        engine = TcpEngine(bytes.fromhex("020000000002"), engine_ip,
                           TcpConfig(max_sessions=sessions,
                                     max_half_open=max(1, min(16, sessions))))
    except TcpError as e:
        _fail(f"{e}.")
    if backend == "rtl":
        from nicsim.hw.toe.rtl_engine import RtlEngine
        from nicsim.hw.toe.verilator_engine import VerilatorEngine
        from nicsim.hw.verilator import VerilatorError

        if sessions > 64:
            _fail(f"--backend rtl simulates at most 64 sessions, not {sessions}.")
        if len(port) > 8:
            _fail(f"--backend rtl listens on at most 8 ports, not {len(port)}.")
        # buffers of 64 KiB per session in the simulated DRAM; engine time follows the wall
        # clock, at most 20 ms at a time while the simulation lags behind
        runner = VerilatorEngine if rtl_sim == "verilator" else RtlEngine
        try:
            with err_console.status(f"building the gateware for {rtl_sim}"):
                engine = runner(bytes.fromhex("020000000002"), engine_ip, sessions=sessions,
                                buf_bits=16, tick_s=0.01, catch_up_ticks=2)
        except (TcpError, VerilatorError) as e:
            _fail(f"{e}.")
    apps = [EchoApp(engine, p) if echo else SinkApp(engine, p) for p in port]
    impairments = [Impairment(drop, duplicate, reorder, seed),
                   Impairment(drop, duplicate, reorder, seed + 1)]
    bridge = TapBridge(engine, [AppHost(engine, apps)], host_ip=host_ip, name=netns,
                       to_engine=impairments[0], to_linux=impairments[1])
    stop = []
    previous = signal.signal(signal.SIGINT, lambda *_: stop.append(True))
    try:
        bridge.open()
    except BridgeError as e:
        signal.signal(signal.SIGINT, previous)
        _fail(f"{e}.")
    mode = "echo" if echo else "discard"
    if backend == "rtl":
        mode += f", RTL on {'Verilator' if rtl_sim == 'verilator' else 'Amaranth'},"
    err_console.print(f"TCP engine {ip} ({mode} on port {', '.join(map(str, port))}) on "
                      f"tap0 in network namespace {netns}; Linux side {host_ip}.\n"
                      f"Try: ip netns exec {netns} nc {ip} {port[0]}    (Ctrl-C stops)",
                      highlight=False)
    started = time.monotonic()
    try:
        while not stop and (duration is None or time.monotonic() - started < duration):
            bridge.pump(0.05)
    finally:
        bridge.close()
        signal.signal(signal.SIGINT, previous)
    if backend == "rtl":
        stats = engine.counters()
        drops = {k: v for k, v in stats.items() if k in engine.drop_reasons and v}
        stats = {k: v for k, v in stats.items() if k not in engine.drop_reasons}
    else:
        stats, drops = dict(engine.stats), dict(engine.drops)
    counters = {"frames_to_engine": bridge.frames_to_engine,
                "frames_to_linux": bridge.frames_to_linux, "stats": stats, "drops": drops}
    if stats_json:
        console.print_json(json.dumps(counters))
    else:
        console.print(f"frames to engine {bridge.frames_to_engine}, to Linux "
                      f"{bridge.frames_to_linux}; engine {stats}; drops {drops}",
                      highlight=False)
