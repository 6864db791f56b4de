"""Bad input to ``nicsim ma ...`` and ``nicsim rtl run match-action``: one line, exit status 2.

Each case is a file, a key, an argument or a setting a user can get wrong; the command must
answer with one sentence that names what is wrong (checked by a fragment of it), never a
traceback, and must leave no half-written state behind.
"""

import json
from pathlib import Path

import pytest
from scapy.all import IP, UDP, Ether, wrpcap
from typer.testing import CliRunner

from nicsim.sim.cli import app

PROGRAMS = Path(__file__).resolve().parents[2] / "hw" / "match_action" / "programs"
ROUTER = PROGRAMS / "router.toml"
DDOS = PROGRAMS / "ddos.toml"
runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_line_error(result, fragment):
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        repr(result.exception)
    text = result.output.strip()
    assert "Traceback" not in text and "\n" not in text, text
    assert text.startswith("nicsim: error:"), text
    assert fragment in text, text


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """Loaded router and ddos states, one entry each (made once)."""
    folder = tmp_path_factory.mktemp("ma")
    router, ddos = folder / "router.json", folder / "ddos.json"
    assert run("ma", "load", ROUTER, "--state", router).exit_code == 0
    assert run("ma", "add", "untag", "5", "strip", "--state", router).exit_code == 0
    assert run("ma", "load", DDOS, "--state", ddos).exit_code == 0
    r = run("ma", "add", "ratelimit", "192.0.2.1", "forward", "port=1", "--meter",
            "cir=1000000,cbs=3000", "--state", ddos)
    assert r.exit_code == 0, r.output
    return router.read_text(), ddos.read_text()


@pytest.fixture
def states(tmp_path, loaded):
    """Copies of the loaded states for one test to change."""
    router, ddos = tmp_path / "router.json", tmp_path / "ddos.json"
    router.write_text(loaded[0])
    ddos.write_text(loaded[1])
    return router, ddos


@pytest.mark.parametrize("args,fragment", [
    (("add", "ipv4_routes", "10.0.0.0/x", "drop"), "prefix length must be 0..32, not 'x'"),
    (("add", "ipv4_routes", "10.0.0.1/8", "drop"), "bits set beyond its prefix length"),
    (("add", "nosuch", "1", "drop"), "no table named 'nosuch'"),
    (("add", "untag", "5000", "strip"), "does not fit in 12 bits"),
    (("add", "untag", "1,2", "strip"), "takes 1 key value(s), not 2"),
    (("add", "ipv4_routes", "10.0.0.0/8", "route", "port=16", "dmac=1", "smac=2"),
     "does not fit in 4 bits"),
    (("add", "ipv4_routes", "10.0.0.0/8", "route", "port=3"), "missing ['dmac', 'smac']"),
    (("add", "ipv4_routes", "10.0.0.0/8", "route", "3"), "write NAME=VALUE"),
    (("add", "ipv4_routes", "10.0.0.0/8", "teleport"), "does not take action 'teleport'"),
    (("add", "ipv4_routes", "10.0.0.0/8", "drop", "--priority", "3"), "take no priority"),
    (("modify", "ipv4_routes", "10.0.0.0/8", "drop"), "has no entry with this key"),
])
def test_router_entry_errors(states, args, fragment):
    router, _ = states
    before = router.read_text()
    one_line_error(run("ma", *args, "--state", router), fragment)
    assert router.read_text() == before  # a refused change leaves the state as it was


@pytest.mark.parametrize("meter,fragment", [
    (None, "meters every entry"),
    ("cir=1000000,cbs=3000,burst=9", "unknown setting(s) ['burst']"),
    ("cir=10,cbs=3000", "cir 10 bit/s is out of range"),
    ("cir=1000000,cbs=3000,pir=500000", "pir 500000 bit/s is out of range"),
    ("cir=2000000,cbs=3000,pir=1500000", "PIR >= CIR"),
    ("cir=1000000,cbs=10", "cbs 10 bytes is out of range"),
    ("cir=x,cbs=3000", "must be integers"),
    ("5", "--meter takes cir="),
])
def test_meter_errors(states, meter, fragment):
    _, ddos = states
    extra = () if meter is None else ("--meter", meter)
    one_line_error(run("ma", "add", "ratelimit", "192.0.2.2", "forward", "port=1", *extra,
                       "--state", ddos), fragment)


def test_program_errors_keep_their_brackets(tmp_path):
    """Messages that name TOML tables print them (not eaten as console markup)."""
    prog = tmp_path / "p.toml"
    prog.write_text('[[tables]]\nname = "t"\nkeys = [{ field = "ethernet.type" }]\n'
                    'actions = ["foo"]\n')
    one_line_error(run("ma", "check", prog), "define [actions.foo]")
    prog.write_text('[parser.custom]\nname = "x"\n')
    one_line_error(run("ma", "check", prog), "[parser.custom] needs 'after'")
    one_line_error(run("ma", "check", tmp_path / "[/x].toml"), "[/x].toml: cannot read")
    one_line_error(run("ma", "load", tmp_path / "none.toml", "--state", tmp_path / "s.json"),
                   "cannot read the program")
    prog.write_text("tables = [")
    one_line_error(run("ma", "check", prog), "not valid TOML")


def test_entries_file_names_the_refused_entry(tmp_path):
    entries = tmp_path / "e.toml"
    entry = '[[entries]]\ntable = "untag"\nkey = { "vlan.vid" = 1 }\naction = "strip"\n'
    entries.write_text(entry + entry)
    one_line_error(run("ma", "check", ROUTER, "--entries", entries),
                   "e.toml: entry 1: table 'untag' already has an entry")
    one_line_error(run("ma", "load", ROUTER, "--entries", entries, "--state",
                       tmp_path / "s.json"), "e.toml: entry 1:")
    assert not (tmp_path / "s.json").exists()


@pytest.mark.parametrize("corrupt,fragment", [
    (lambda doc: doc["entries"][0].update(slot=[0, 99]), "do not fit the program"),
    (lambda doc: doc["entries"][0].update(slot=[2, 0]), "do not fit the program"),
    (lambda doc: doc["entries"][0].pop("slot"), "do not fit the program"),
    (lambda doc: doc["entries"][0].update(colour=1), "do not fit the program"),
    (lambda doc: doc["entries"][0].update(action="teleport"), "does not take action"),
    (lambda doc: doc.update(writes=[["a", 1]]), "do not fit the program"),
    (lambda doc: doc.update(program=5), "cannot read the program"),
    (lambda doc: doc.clear(), "not a state file"),
])
def test_corrupt_state(states, corrupt, fragment):
    router, _ = states
    doc = json.loads(router.read_text())
    corrupt(doc)
    router.write_text(json.dumps(doc))
    one_line_error(run("ma", "show", "--state", router), fragment)


def test_corrupt_state_every_command(states):
    router, _ = states
    doc = json.loads(router.read_text())
    doc["entries"][0]["slot"] = [0, 99]
    router.write_text(json.dumps(doc))
    for args in (("add", "untag", "6", "strip"), ("modify", "untag", "5", "nop"),
                 ("delete", "untag", "5")):
        one_line_error(run("ma", *args, "--state", router), "do not fit the program")


def test_rtl_run_settings(tmp_path):
    pcap = tmp_path / "in.pcap"
    wrpcap(str(pcap), [Ether() / IP(dst="10.0.0.1") / UDP()])
    base = ("rtl", "run", "match-action", "--backend", "model", "--in", pcap, "--out",
            tmp_path / "o.pcap", "--meta", tmp_path / "o.jsonl", "--program", ROUTER)
    for setting, fragment in (('stages = "x"', "stages must be a whole number"),
                              ("stages = 2", "the pipeline has 2"),
                              ('frame_interval_ns = "a"', "frame_interval_ns must be"),
                              ("frame_interval_ns = -1", "frame_interval_ns must be")):
        config = tmp_path / "c.toml"
        config.write_text(f"[match-action]\n{setting}\n")
        one_line_error(run(*base, "--config", config), fragment)
    entries = tmp_path / "e.toml"
    entry = '[[entries]]\ntable = "untag"\nkey = { "vlan.vid" = 1 }\naction = "strip"\n'
    entries.write_text(entry + entry)
    one_line_error(run(*base, "--entries", entries), "e.toml: entry 1: table 'untag'")
    entries.write_text(entry.replace("vlan.vid", "vlan.vid\" = 1, \"x"))
    one_line_error(run(*base, "--entries", entries), "keyed on vlan.vid")


def test_ternary_delete_needs_the_priority_when_keys_repeat(tmp_path):
    state = tmp_path / "acl.json"
    assert run("ma", "load", PROGRAMS / "acl.toml", "--state", state).exit_code == 0
    key = "10.0.0.0&&&255.0.0.0,0&&&0,6&&&255"
    for prio, action in ((5, "drop"), (9, "permit")):
        args = ["port=1"] if action == "permit" else []
        r = run("ma", "add", "acl", key, action, *args, "--priority", prio, "--state", state)
        assert r.exit_code == 0, r.output
    one_line_error(run("ma", "delete", "acl", key, "--state", state),
                   "has 2 entries with key")
    r = run("ma", "delete", "acl", key, "--priority", 9, "--state", state)
    assert r.exit_code == 0, r.output
    doc = json.loads(state.read_text())
    assert [(e["priority"], e["action"]) for e in doc["entries"]] == [(5, "drop")]
