"""``nicsim ma`` and ``nicsim rtl run match-action --backend model`` from the command line."""

import json
from pathlib import Path

from scapy.all import IP, TCP, UDP, Dot1Q, Ether, Raw, wrpcap
from typer.testing import CliRunner

from nicsim.hw.match_action.control import ControlPlane
from nicsim.hw.match_action.program import load_program, make_entry
from nicsim.hw.pcap import read_pcap
from nicsim.rtl.match_action import regs
from nicsim.sim.cli import app

PROGRAMS = Path(__file__).resolve().parents[2] / "hw" / "match_action" / "programs"
runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_check_ok_and_rejects_in_one_line(tmp_path):
    r = run("ma", "check", PROGRAMS / "acl.toml")
    assert r.exit_code == 0 and "ok: 3 of 4 stages" in r.output
    bad = tmp_path / "bad.toml"
    bad.write_text((PROGRAMS / "lb.toml").read_text().replace("size = 1024", "size = 4096"))
    r = run("ma", "check", bad)
    assert r.exit_code == 2
    assert "asks for 4096 entries; an exact stage holds at most 1024" in r.output
    assert "Traceback" not in r.output


def test_load_add_modify_delete_state(tmp_path):
    state = tmp_path / "s.json"
    prog = PROGRAMS / "router.toml"
    assert run("ma", "load", prog, "--state", state).exit_code == 0
    r = run("ma", "add", "ipv4_routes", "10.0.0.0/8", "route", "port=3",
            "dmac=02:00:00:00:00:01", "smac=02:00:00:00:00:02", "--state", state)
    assert r.exit_code == 0, r.output
    assert "stage 1 slot 0" in r.output and "COMMIT" in r.output
    r = run("ma", "add", "ipv4_routes", "10.0.0.0/8", "drop", "--state", state)
    assert r.exit_code == 2 and "already has an entry" in r.output
    assert run("ma", "add", "untag", "10", "strip", "--state", state).exit_code == 0
    assert run("ma", "modify", "ipv4_routes", "10.0.0.0/8", "drop", "--state",
               state).exit_code == 0
    doc = json.loads(state.read_text())
    # The writes in the state file are what the control plane API emits for the same calls.
    p = load_program(prog)
    cp = ControlPlane(p)
    cp.add(make_entry(p, "ipv4_routes", "10.0.0.0/8", "route",
                      {"port": 3, "dmac": "02:00:00:00:00:01", "smac": "02:00:00:00:00:02"}))
    cp.add(make_entry(p, "untag", 10, "strip"))
    cp.modify(make_entry(p, "ipv4_routes", "10.0.0.0/8", "drop"))
    assert [tuple(w) for w in doc["writes"]] == cp.device.writes
    # Modify keeps the slot's counters: the commit word says so.
    assert doc["writes"][-1] == [regs.REG_COMMIT, regs.commit_word(1, 0, True, True, True)]
    show = run("ma", "show", "--state", state)
    assert show.exit_code == 0 and show.output.count("[[entries]]") == 2
    r = run("ma", "delete", "ipv4_routes", "10.0.0.0/8", "--state", state)
    assert r.exit_code == 0 and f"0x{regs.commit_word(1, 0, False):08x}" in r.output
    r = run("ma", "delete", "ipv4_routes", "10.0.0.0/8", "--state", state)
    assert r.exit_code == 2 and "no entry" in r.output
    r = run("ma", "add", "untag", "1", "strip", "--state", tmp_path / "none.json")
    assert r.exit_code == 2 and "ma load" in r.output


def test_rtl_run_model_backend(tmp_path):
    entries = tmp_path / "e.toml"
    entries.write_text(
        '[[entries]]\ntable = "flows"\n'
        'key = { "ipv4.src" = "10.0.0.1", "ipv4.dst" = "10.0.0.2", "ipv4.protocol" = 6, '
        '"tcp.src_port" = 1000, "tcp.dst_port" = 80 }\n'
        'action = "backend"\nargs = { port = 5, dmac = "02:00:00:00:00:09", vid = 7 }\n')
    flow = Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=1000, dport=80) / Raw(b"x")
    frames = [flow, Ether() / IP() / UDP(), flow]
    pcap = tmp_path / "in.pcap"
    wrpcap(str(pcap), frames)
    out, meta = tmp_path / "out.pcap", tmp_path / "meta.jsonl"
    r = run("rtl", "run", "match-action", "--backend", "model", "--program",
            PROGRAMS / "lb.toml", "--entries", entries, "--in", pcap, "--out", out,
            "--meta", meta)
    assert r.exit_code == 0, r.output
    records = [json.loads(line) for line in meta.read_text().splitlines()]
    # UDP skips the flow table (if_valid tcp): v1model's egress_spec default, port 0.
    assert [(m["action"], m["port"]) for m in records] == [("forward", 5), ("forward", 0),
                                                            ("forward", 5)]
    assert records[0]["port"] == 5 and records[0]["table_hits"] == ["flows"]
    got = [p.data for p in read_pcap(out)]
    assert got[0] == bytes(Ether(dst="02:00:00:00:00:09") / Dot1Q(vlan=7) / flow[IP])
    r = run("rtl", "run", "match-action", "--backend", "model", "--in", pcap, "--out", out,
            "--meta", meta)
    assert r.exit_code == 2 and "needs a program" in r.output


def test_synth_program_errors(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text((PROGRAMS / "router.toml").read_text().replace('"forward $port"',
                                                                  '"forward 99"'))
    r = run("synth", "match-action", "--program", bad)
    assert r.exit_code == 2 and "exceed port 15" in r.output and "Traceback" not in r.output
    r = run("rtl", "regs", "match-action")
    assert r.exit_code == 0 and "COMMIT" in r.output


def test_rtl_run_meters_follow_capture_times(tmp_path):
    """Meters see each frame's capture time on both backends: the same 200-byte frames, 1 µs
    apart, exhaust a policed entry's buckets (yellow, then red drops); 10 ms apart they stay
    green. Expected colours come from the reference pipeline stamped with the times set in the
    capture."""
    from nicsim.hw.match_action.program import load_entries
    from nicsim.hw.ref.match_action import Pipeline

    entries = tmp_path / "e.toml"
    entries.write_text(
        '[[entries]]\ntable = "ratelimit"\nkey = { "ipv4.dst" = "192.0.2.1" }\n'
        'action = "police"\nargs = { port = 2, dscp = 46 }\n'
        'meter = { cir = 1000000, cbs = 500, pir = 2000000, pbs = 1000 }\n')
    program = load_program(PROGRAMS / "ddos.toml")
    frame = Ether() / IP(src="10.1.1.1", dst="192.0.2.1") / UDP() / Raw(b"x" * 158)
    colours = {}
    for gap_us in (1, 10_000):
        pkts = []
        for i in range(12):
            p = frame.copy()
            p.time = 1000 + i * gap_us / 1e6
            pkts.append(p)
        pcap = tmp_path / f"in{gap_us}.pcap"
        wrpcap(str(pcap), pkts)
        pipe = Pipeline(program, load_entries(entries, program))
        want = [pipe.process(bytes(p), i * gap_us * 1000).meta.get("color")
                for i, p in enumerate(pkts)]
        for backend in ("model", "rtl"):
            out, meta = tmp_path / "out.pcap", tmp_path / "meta.jsonl"
            r = run("rtl", "run", "match-action", "--backend", backend, "--program",
                    PROGRAMS / "ddos.toml", "--entries", entries, "--in", pcap, "--out", out,
                    "--meta", meta)
            assert r.exit_code == 0, r.output
            got = [json.loads(line).get("color") for line in meta.read_text().splitlines()]
            assert got == want, (backend, gap_us)
        colours[gap_us] = want
    assert set(colours[10_000]) == {"green"}
    assert "red" in colours[1] and "yellow" in colours[1]
