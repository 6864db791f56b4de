"""``nicsim ma serve``: a running pipeline changed while it runs, against the golden reference.

The server runs as its own process (``nicsim ma serve``) with each backend; the clients are the
``nicsim ma ... --live`` commands and :func:`nicsim.hw.match_action.live.request`. Routes are
added, modified and deleted between sends; every output frame and metadata record is checked
against a reference :class:`~nicsim.hw.ref.match_action.Pipeline` given the same changes in the
same order, and the counters read back live against the reference's. The rtl server uses the
harness build of ``tests/rtl/test_match_action.py::test_program_64[router]`` (router program,
64 bit, 4 stages): no build of its own.
"""

import json
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from scapy.all import IP, TCP, UDP, Dot1Q, Ether, IPv6, Raw
from typer.testing import CliRunner

from nicsim.hw.harness import HarnessBuild, HarnessSession
from nicsim.hw.match_action.control import entry_spec
from nicsim.hw.match_action.live import LiveError, request
from nicsim.hw.match_action.program import load_program, make_entry, make_key
from nicsim.hw.pcap import Packet, read_pcap, write_pcap
from nicsim.hw.ref.match_action import Pipeline
from nicsim.hw.verilator import VerilatorError
from nicsim.sim.cli import app

PROGRAMS = Path(__file__).resolve().parents[2] / "hw" / "match_action" / "programs"
ROUTER = PROGRAMS / "router.toml"
INTERVAL_NS = 100
ETH = Ether(dst="02:00:00:00:00:aa", src="02:00:00:00:00:bb")  # no ARP look-up by scapy
runner = CliRunner()


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def start_server(tmp_path, backend, wait=True):
    """Start ``nicsim ma serve`` as a process; return ``(process, socket path)`` once it answers
    (at once without ``wait``: see :func:`wait_server`)."""
    sock = tmp_path / f"{backend}.sock"
    with open(tmp_path / f"{backend}.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-c", "from nicsim.sim.cli import app; app()",
                                 "ma", "serve", "--program", str(ROUTER), "--backend", backend,
                                 "--width", "64", "--socket", str(sock)],
                                stdout=log, stderr=subprocess.STDOUT)
    return wait_server(tmp_path, backend, proc, sock) if wait else (proc, sock)


def wait_server(tmp_path, backend, proc, sock):
    deadline = time.monotonic() + 900  # a cold cache builds the harness first
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the server exited: {(tmp_path / f'{backend}.log').read_text()}")
        try:
            request(sock, {"cmd": "status"}, timeout_s=5)
            return proc, sock
        except LiveError:
            time.sleep(0.2)
    proc.kill()
    pytest.fail("the server did not answer")


def stop_server(proc, sock):
    try:
        request(sock, {"cmd": "stop"}, timeout_s=30)
        assert proc.wait(timeout=30) == 0
        assert not sock.exists()  # the socket is removed on the way out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def mac(rng):
    return ":".join(f"{rng.randrange(256):02x}" for _ in range(6))


def traffic(rng, n):
    """IPv4 towards the routes (and elsewhere), IPv6, tagged frames, ARP-like and runts."""
    frames = []
    for _ in range(n):
        roll = rng.random()
        l2 = Ether(src=mac(rng), dst=mac(rng))
        if roll < 0.15:
            l2 = l2 / Dot1Q(vlan=rng.choice([5, 6, 7]))
        if roll < 0.6:
            dst = rng.choice(["10.1.2.3", "10.1.200.9", "10.7.0.1", "192.0.2.1"])
            pkt = l2 / IP(dst=dst, ttl=rng.choice([1, 2, 64])) / rng.choice(
                [UDP(dport=53), TCP(dport=80)]) / Raw(bytes(rng.randrange(60)))
        elif roll < 0.8:
            pkt = l2 / IPv6(dst=rng.choice(["2001:db8::1", "2001:db8:1::5", "fe80::1"]),
                            hlim=rng.choice([1, 64])) / UDP()
        elif roll < 0.93:
            pkt = Ether(src=mac(rng), dst=mac(rng), type=0x0806) / Raw(bytes(28))
        else:
            pkt = Raw(bytes(rng.randrange(1, 14)))  # runt
        frames.append(bytes(pkt))
    return frames


ROUTE_A = {"port": "3", "dmac": "02:00:00:00:00:01", "smac": "02:00:00:00:00:02"}
ROUTE_B = {"port": "5", "dmac": "02:00:00:00:00:03", "smac": "02:00:00:00:00:04"}
# (command, table, key, action, args) between the sends; applied to the server and the reference
CHANGES = [
    [("add", "ipv4_routes", "10.0.0.0/8", "route", ROUTE_A),
     ("add", "ipv4_routes", "10.1.0.0/16", "punt", {"queue": "9"}),
     ("add", "ipv6_routes", "2001:db8::/32", "route", ROUTE_B),
     ("add", "untag", "5", "strip", {}),
     ("add", "other", "0x0806", "punt", {"queue": "2"})],
    [("modify", "ipv4_routes", "10.1.0.0/16", "route", ROUTE_B),
     ("delete", "ipv4_routes", "10.0.0.0/8", None, None),
     ("add", "ipv4_routes", "10.1.200.0/24", "drop", {}),
     ("modify", "ipv6_routes", "2001:db8::/32", "drop", {})],
    [("delete", "ipv4_routes", "10.1.0.0/16", None, None),
     ("delete", "untag", "5", None, None),
     ("add", "ipv6_routes", "2001:db8:1::/48", "punt", {"queue": "1"})],
]


def apply_cli(sock, change):
    verb, table, key, action, args = change
    if verb == "delete":
        r = cli("ma", "delete", table, key, "--live", sock)
    else:
        r = cli("ma", verb, table, key, action, *(f"{k}={v}" for k, v in args.items()),
                "--live", sock)
    assert r.exit_code == 0, r.output
    assert "COMMIT" in r.output  # the AXI4-Lite writes that changed the pipeline


def apply_ref(pipe, program, change):
    verb, table, key, action, args = change
    if verb == "delete":
        items = make_key(program, table, key)
        pipe.delete(next(e for e in pipe.tables[table].entries if e.key == items))
    else:
        getattr(pipe, verb)(make_entry(program, table, key, action, args))


def drive(tmp_path, backend, proc, sock):
    """Run the scenario on a server; return what came out, checked against the reference."""
    program = load_program(ROUTER)
    pipe = Pipeline(program)
    rng = random.Random(7)
    wait_server(tmp_path, backend, proc, sock)
    outputs, sent = [], 0
    try:
        for step, changes in enumerate(CHANGES):
            for change in changes:
                apply_cli(sock, change)
                apply_ref(pipe, program, change)
            frames = traffic(rng, 12)
            pcap = tmp_path / f"{backend}-in{step}.pcap"
            write_pcap(pcap, [Packet(f, (1000 + i) * INTERVAL_NS) for i, f in enumerate(frames)])
            out = tmp_path / f"{backend}-out{step}.pcap"
            meta = tmp_path / f"{backend}-{step}.jsonl"
            r = cli("ma", "send", "--live", sock, "--in", pcap, "--out", out, "--meta", meta)
            assert r.exit_code == 0, r.output
            records = [json.loads(line) for line in meta.read_text().splitlines()]
            got_frames = [p.data for p in read_pcap(out)]
            want_frames, want_meta = [], []
            for i, f in enumerate(frames):  # the server's clock goes on from the last send
                result = pipe.process(f, (sent + i) * INTERVAL_NS)
                want_meta.append({"frame": i, **result.meta})
                if result.frame is not None:
                    want_frames.append(result.frame)
            sent += len(frames)
            assert records == want_meta, f"step {step}"
            assert got_frames == want_frames, f"step {step}"
            outputs.append((records, got_frames))
        # Counters read back live: every entry and every table's misses, as the reference counts.
        live = {(c["table"], json.dumps(c["key"])): (c["packets"], c["bytes"])
                for c in request(sock, {"cmd": "counters"})["counters"]}
        want = {}
        for name, state in pipe.tables.items():
            want[(name, "null")] = (state.miss.packets, state.miss.bytes)
            for e, c in zip(state.entries, state.counters, strict=True):
                want[(name, json.dumps(entry_spec(program, e)["key"]))] = (c.packets, c.bytes)
        assert live == want
        assert sum(p for p, _ in want.values()) > 0
        r = cli("ma", "counters", "ipv6_routes", "2001:db8::/32", "--live", sock)
        assert r.exit_code == 0 and "ipv6.dst=" in r.output
        show = cli("ma", "show", "--live", sock)
        assert show.exit_code == 0 and show.output.count("[[entries]]") == sum(
            len(s.entries) for s in pipe.tables.values())
        assert request(sock, {"cmd": "status"})["frames"] == sent
    finally:
        stop_server(proc, sock)
    actions = {m["action"] for records, _ in outputs for m in records}
    assert {"forward", "host", "drop"} <= actions
    return outputs


def test_live_model_and_rtl_identical(tmp_path):
    rtl_proc, rtl_sock = start_server(tmp_path, "rtl", wait=False)  # elaborates meanwhile
    try:
        model = drive(tmp_path, "model", *start_server(tmp_path, "model", wait=False))
        rtl = drive(tmp_path, "rtl", rtl_proc, rtl_sock)
    finally:
        if rtl_proc.poll() is None:
            rtl_proc.kill()
            rtl_proc.wait()
    assert rtl == model


def test_live_bad_input(tmp_path):
    """Refusals come back in one line; none of them stops the server."""
    r = cli("ma", "counters", "--live", tmp_path / "none.sock")
    assert r.exit_code == 2 and "no server at" in r.output and "Traceback" not in r.output
    assert cli("ma", "counters").exit_code == 2
    proc, sock = start_server(tmp_path, "model")
    try:
        # A second server on the same socket is refused.
        r = cli("ma", "serve", "--program", ROUTER, "--backend", "model", "--socket", sock)
        assert r.exit_code == 2 and "already listens" in r.output
        r = cli("ma", "add", "ipv4_routes", "10.0.0.0/8", "drop", "--live", sock)
        assert r.exit_code == 0, r.output
        r = cli("ma", "add", "ipv4_routes", "10.0.0.0/8", "drop", "--live", sock)
        assert r.exit_code == 2 and "already has an entry" in r.output
        r = cli("ma", "add", "nope", "1", "drop", "--live", sock)
        assert r.exit_code == 2 and "nope" in r.output and "Traceback" not in r.output
        r = cli("ma", "delete", "ipv4_routes", "11.0.0.0/8", "--live", sock)
        assert r.exit_code == 2 and "no entry" in r.output
        r = cli("ma", "counters", "nope", "--live", sock)
        assert r.exit_code == 2 and "no table 'nope'" in r.output
        for bad, says in [({"cmd": "fly"}, "unknown command"), ([1, 2], "JSON object"),
                          ({"cmd": "send", "frames": ["zz"]}, "hex"),
                          ({"cmd": "send", "frames": ["00" * 60], "times_ns": [1, 2]},
                           "capture times"),
                          ({"cmd": "add", "table": "untag", "key": 1, "action": "strip",
                            "args": 5}, "bad entry"),
                          ({"cmd": "delete", "table": "untag"}, "vlan.vid: None is not"),
                          ({"cmd": "counters", "table": "untag", "key": {"vlan.vid": []}},
                           "vlan.vid|bad key")]:
            with pytest.raises(LiveError, match=says):
                request(sock, bad)
        # Garbage that is not JSON, and a client that leaves without a full line.
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(sock))
            s.sendall(b"{not json\n")
            assert json.loads(s.makefile().readline()) == {
                "ok": False, "error": "a request is one JSON object on one line."}
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(sock))
            s.sendall(b'{"cmd": "sta')
        # A truncated capture is refused by the client; the server never sees it.
        bad = tmp_path / "bad.pcap"
        bad.write_bytes(b"\xd4\xc3\xb2\xa1" + bytes(10))
        r = cli("ma", "send", "--live", sock, "--in", bad, "--out", tmp_path / "o.pcap",
                "--meta", tmp_path / "o.jsonl")
        assert r.exit_code == 2 and "Traceback" not in r.output
        status = request(sock, {"cmd": "status"})
        assert status["entries"] == 1 and status["frames"] == 0
    finally:
        stop_server(proc, sock)
    r = cli("ma", "serve", "--program", tmp_path / "none.toml", "--backend", "model",
            "--socket", tmp_path / "x.sock")
    assert r.exit_code == 2 and "none.toml" in r.output and "Traceback" not in r.output


def test_session_errors(tmp_path):
    """A harness that dies or hangs ends a session's job in one line."""
    died = tmp_path / "died"
    died.write_text("#!/bin/sh\necho broken >&2\nexit 4\n")
    died.chmod(0o755)
    with HarnessSession(HarnessBuild(died, set(), 8)) as session:
        with pytest.raises(VerilatorError, match=r"exited \(status 4\).*broken"):
            session.run([b"x" * 20])
        with pytest.raises(VerilatorError, match=r"has ended \(.*status 4"):
            session.run([b"x" * 20])
    hung = tmp_path / "hung"
    hung.write_text("#!/bin/sh\nexec sleep 30\n")
    hung.chmod(0o755)
    with HarnessSession(HarnessBuild(hung, set(), 8), timeout_s=0.5) as session:
        with pytest.raises(VerilatorError, match="took longer than 0.5 s"):
            session.run([b"x" * 20])


@pytest.mark.long
def test_live_meters_rtl():
    """The DDoS program on a live rtl pipeline (the harness build of test_program_64[ddos]):
    metered entries added and re-rated between sends, each frame and the meters' buckets read
    back against the reference; a register write the gateware rejects leaves the session
    running."""
    from nicsim.hw.match_action.live import LivePipeline
    from nicsim.rtl.match_action import limits, regs

    path = PROGRAMS / "ddos.toml"
    program = load_program(path)
    pipe = Pipeline(program)
    live = LivePipeline(path, backend="rtl")
    rng = random.Random(5)
    dsts = [f"192.0.2.{i}" for i in range(1, 5)]
    steps = [[("add", "blocklist", "10.66.0.0/16", "drop", {}, None)]
             + [("add", "ratelimit", d, "police", {"port": 2, "dscp": 46},
                 {"cir": 10**8, "cbs": 3000, "pir": 10**9, "pbs": 6000}) for d in dsts],
             [("modify", "ratelimit", dsts[0], "forward", {"port": 3},
               {"cir": 10**7, "cbs": 1500, "pir": 10**8, "pbs": 3000}),
              ("modify", "ratelimit", dsts[1], "forward", {"port": 3},
               {"cir": 10**8, "cbs": 3000, "pir": 10**9, "pbs": 6000})],
             [("delete", "blocklist", "10.66.0.0/16", None, None, None)]]
    sent, colours = 0, set()
    try:
        for step in steps:
            for verb, table, key, action, args, meter in step:
                req = {"cmd": verb, "table": table, "key": key}
                if verb == "delete":
                    live.handle(req)
                    items = make_key(program, table, key)
                    pipe.delete(next(e for e in pipe.tables[table].entries if e.key == items))
                    continue
                live.handle(dict(req, action=action, args=args, meter=meter))
                getattr(pipe, verb)(make_entry(program, table, key, action, args, meter=meter))
            frames = [bytes(ETH / IP(src=rng.choice(["10.66.1.1", "10.1.1.1"]),
                                     dst=rng.choice(dsts + ["198.51.100.1"]))
                            / UDP() / Raw(bytes(rng.choice([100, 600, 1400]))))
                      for _ in range(40)]
            got = live.handle({"cmd": "send", "frames": [f.hex() for f in frames]})
            want = [pipe.process(f, (sent + i) * INTERVAL_NS) for i, f in enumerate(frames)]
            sent += len(frames)
            assert got["meta"] == [w.meta for w in want]
            colours |= {m["color"] for m in got["meta"]}
            assert got["frames"] == [w.frame.hex() for w in want if w.frame is not None]
        assert {"green", "red"} <= colours  # the meters limit this traffic
        rows = live.handle({"cmd": "counters", "table": "ratelimit"})["counters"]  # misses
        assert (rows[0]["packets"], rows[0]["bytes"]) == (pipe.tables["ratelimit"].miss.packets,
                                                          pipe.tables["ratelimit"].miss.bytes)
        state = pipe.tables["ratelimit"]
        frac = limits.METER_FRAC_BITS
        for e, c, m in zip(state.entries, state.counters, state.meters, strict=True):
            row = live.handle({"cmd": "counters", "table": "ratelimit",
                               "key": entry_spec(program, e)["key"]})["counters"][0]
            assert (row["packets"], row["bytes"]) == (c.packets, c.bytes)
            assert row["meter"] == [m.tc >> frac, m.tp >> frac]
        with pytest.raises(VerilatorError, match="rejected"):
            live.session.run(writes=[(regs.REG_ACTION, 1 << 8)])
        assert live.handle({"cmd": "status"})["frames"] == sent
        frame = bytes(ETH / IP(src="10.1.1.1", dst=dsts[2]) / UDP())
        got = live.handle({"cmd": "send", "frames": [frame.hex()]})
        assert got["meta"] == [pipe.process(frame, sent * INTERVAL_NS).meta]
    finally:
        live.close()
