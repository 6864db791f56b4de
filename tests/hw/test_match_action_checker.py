"""The program checker rejects, in one sentence, what the gateware cannot run safely."""

import copy
from pathlib import Path

import pytest

from nicsim.hw.match_action.checker import CheckError, check_program
from nicsim.hw.match_action.program import (
    ProgramError,
    load_entries,
    load_program,
    make_entry,
    parse_program,
)
from nicsim.rtl.match_action import limits

PROGRAMS = Path(__file__).resolve().parents[2] / "hw" / "match_action" / "programs"


def base():
    return {
        "actions": {"fwd": {"params": {"port": 4}, "ops": ["forward $port"]}},
        "tables": [{"name": "t0", "keys": [{"field": "ipv4.dst", "match": "lpm"}], "size": 16,
                    "actions": ["fwd", "drop"], "if_valid": ["ipv4"], "next": "t1"},
                   {"name": "t1", "keys": [{"field": "ethernet.src"}], "size": 16,
                    "actions": ["fwd"]}],
    }


def check(doc, **kw):
    return check_program(parse_program(doc, "p.toml"), **kw)


def test_base_program_passes():
    check(base())


@pytest.mark.parametrize("name", ["ddos", "router", "acl", "lb"])
def test_examples_pass(name):
    check_program(load_program(PROGRAMS / f"{name}.toml"))


def reject(doc, pattern, **kw):
    with pytest.raises(CheckError, match=pattern) as info:
        check(doc, **kw)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("p.toml: ")


def test_table_over_capacity():
    doc = base()
    doc["tables"][0]["size"] = limits.MAX_ENTRIES["lpm"] + 1
    reject(doc, "holds at most 64")


def test_too_many_tables():
    doc = base()
    reject(doc, "pipeline has 1", stages=1)


def test_key_too_wide():
    doc = base()
    doc["tables"][1]["keys"] = [{"field": f"ipv6.{f}"} for f in ("src", "dst", "flow_label")] + [
        {"field": "ethernet.src"}]
    doc["tables"][1]["if_valid"] = ["ipv6"]
    reject(doc, "bit key")


def test_custom_field_outside_header():
    doc = base()
    doc["parser"] = {"custom": {"name": "tag", "after": "ethertype", "match": 0x88B5,
                                "length": 4, "fields": {"x": [24, 16]}}}
    reject(doc, "outside the 4-byte tag header")


def test_unknown_field_is_a_program_error():
    doc = base()
    doc["tables"][1]["keys"] = [{"field": "ipv4.nope"}]
    with pytest.raises(ProgramError, match="no field 'nope'"):
        check(doc)


def test_key_on_possibly_absent_header():
    doc = base()
    doc["tables"][1]["keys"] = [{"field": "tcp.dst_port"}]
    reject(doc, "tcp may be absent there")


def test_invalid_branch_loses_validity():
    doc = base()
    doc["tables"][0]["next"] = {"hit": "t1", "miss": "t1", "invalid": "t1"}
    doc["tables"][1]["keys"] = [{"field": "ipv4.src"}]
    reject(doc, "ipv4 may be absent")  # the invalid branch reaches t1 without IPv4
    doc["tables"][0]["next"] = {"hit": "t1", "miss": "t1"}
    check(doc)  # only the validated branches reach t1


def test_write_on_possibly_absent_header():
    doc = base()
    doc["actions"]["ttl"] = {"ops": ["dec_ttl"]}
    doc["tables"][1]["actions"] = ["ttl"]
    reject(doc, "action 'ttl' in table 't1' uses ipv4")
    doc["actions"]["pop"] = {"ops": ["pop_vlan", "set vlan.vid 3"]}
    doc["tables"][1]["actions"] = ["pop"]
    doc["tables"][1]["if_valid"] = ["vlan"]
    reject(doc, "uses vlan")  # the tag popped may have been the only one


@pytest.mark.parametrize("op,pattern", [
    ("set ipv4.checksum 0", "updates it itself"),
    ("set ipv4.dst 1", "TCP/UDP checksum"),
    ("set tcp.dst_port 80", "checksum over the payload"),
    ("set ethernet.dst 0x1000000000000", "49-bit value into 48-bit"),
    ("forward 16", "exceed port 15"),
    ("to_host $q", "make it at most 6 bits"),
])
def test_bad_writes(op, pattern):
    doc = base()
    doc["actions"]["bad"] = {"params": {"q": 8}, "ops": [op]}
    doc["tables"][0]["actions"].append("bad")
    reject(doc, pattern)


def test_cycles_and_backward_branches():
    doc = base()
    doc["tables"][1]["next"] = "t0"
    reject(doc, "t0 -> t1 -> t0 form a cycle")
    doc = base()
    doc["tables"][0]["next"] = "t9"
    reject(doc, "unknown table 't9'")
    doc = base()
    doc["tables"].reverse()
    reject(doc, "goes next to 't1', an earlier stage")
    doc["tables"][0]["next"] = "t1"
    reject(doc, "t1 -> t1 form a cycle")


def test_meter_ranges(tmp_path):
    doc = base()
    doc["tables"][1]["meter"] = "drop"
    prog = check(copy.deepcopy(doc))
    ok = make_entry(prog, "t1", 1, "fwd", {"port": 1}, meter={"cir": 10**6, "cbs": 1500})
    assert ok.meter.pir == 10**6 and ok.meter.pbs == 1500
    for meter, pattern in ((({"cir": 10**5, "cbs": 1500}), "cir 100000 bit/s is out of range"),
                           ({"cir": 10**12, "cbs": 1500}, "out of range"),
                           ({"cir": 10**6, "cbs": 10}, "cbs 10 bytes is out of range"),
                           ({"cir": 10**7, "cbs": 1500, "pir": 10**6}, "PIR >= CIR")):
        with pytest.raises(CheckError, match=pattern):
            make_entry(prog, "t1", 1, "fwd", {"port": 1}, meter=meter)
    with pytest.raises(ProgramError, match="needs a value|meter ="):
        make_entry(prog, "t1", 1, "fwd", {"port": 1})
    bad = tmp_path / "e.toml"
    bad.write_text('[[entries]]\ntable = "t1"\nkey = { "ethernet.src" = 1 }\naction = "fwd"\n'
                   'args = { port = 1 }\nmeter = { cir = 1, cbs = 100 }\n')
    with pytest.raises(ProgramError, match="e.toml: entry 0: meter cir 1 bit/s"):
        load_entries(bad, prog)


def test_bad_files(tmp_path):
    with pytest.raises(ProgramError, match="cannot read"):
        load_program(tmp_path / "missing.toml")
    f = tmp_path / "x.toml"
    f.write_text("tables = [")
    with pytest.raises(ProgramError, match="not valid TOML"):
        load_program(f)
    f.write_text('[[tables]]\nname = "a"\nkeys = [{ field = "ipv4.src", match = "range" }]\n')
    with pytest.raises(ProgramError, match="match kind 'range'"):
        load_program(f)


def _too_many_actions(doc):
    for i in range(8):
        doc["actions"][f"a{i}"] = {"ops": ["forward 1"]}
    doc["tables"][0]["actions"] = [f"a{i}" for i in range(8)] + ["drop"]


def _too_many_ops(doc):
    doc["actions"]["busy"] = {"ops": ["forward 1"] * (limits.MAX_OPS + 1)}
    doc["tables"][0]["actions"].append("busy")


def _too_much_data(doc):
    doc["actions"]["wide"] = {"params": {"a": 64, "b": 65}, "ops": ["forward 1"]}
    doc["tables"][0]["actions"].append("wide")


def _wide_pcp(doc):
    doc["actions"]["tag"] = {"params": {"p": 4}, "ops": ["push_vlan 5 $p"]}
    doc["tables"][0]["actions"].append("tag")


def _branch_on_foreign_action(doc):
    doc["tables"][0]["next"] = {"actions": {"nop": "t1"}}


def _default_not_listed(doc):
    doc["tables"][1]["default"] = "drop"


def _wide_dscp_constant(doc):
    doc["actions"]["dscp"] = {"ops": ["set_dscp 64"]}
    doc["tables"][0]["actions"].append("dscp")


def _set_dscp_without_ip(doc):
    doc["actions"]["dscp"] = {"ops": ["set_dscp 3"]}
    doc["tables"][1]["actions"].append("dscp")


def _chaining_field(doc):
    doc["actions"]["retype"] = {"ops": ["set ethernet.type 0x0800"]}
    doc["tables"][0]["actions"].append("retype")


@pytest.mark.parametrize("change,pattern", [
    (_too_many_actions, "names 9 actions; a stage takes at most 8"),
    (_too_many_ops, "has 7 operations; a stage runs at most 6"),
    (_too_much_data, "takes 129 bits of parameters; an entry holds at most 128"),
    (_wide_pcp, "push_vlan priority must fit 3 bits"),
    (_branch_on_foreign_action, "branches on action 'nop', which it does not take"),
    (_default_not_listed, "default action 'drop' is not in its actions list"),
    (_wide_dscp_constant, "set_dscp 64 may exceed DSCP 63"),
    (_set_dscp_without_ip, "action 'dscp' in table 't1' uses ipv4, which may be absent"),
    (_chaining_field, "writes ethernet.type: it chains the headers"),
])
def test_more_refusals(change, pattern):
    """Every other limit of the checker, each refused in one sentence naming it."""
    doc = base()
    change(doc)
    reject(doc, pattern)
