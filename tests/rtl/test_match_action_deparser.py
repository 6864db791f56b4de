"""Which header bytes the deparser patches back from the header vector.

:func:`nicsim.rtl.match_action.deparser.written_bytes` names, for a compiled program, the bytes
of each header after layer 2 that some action may change; the deparser takes every other byte
from the parse window, and the output queue keeps only those bytes of the vector. The expected
bytes here come from the header formats (RFC 791 §3.1: the TTL is byte 8 and the header
checksum bytes 10 and 11 of the IPv4 header, the type of service byte 1; RFC 8200 §3: the hop
limit is byte 7 of the IPv6 header, the traffic class bits 4 to 11; RFC 9293 §3.1: the TCP
destination port is bytes 2 and 3), not from the operations' bit offsets.
"""

from pathlib import Path

from nicsim.hw.match_action.compile import compile_program
from nicsim.hw.match_action.program import load_program
from nicsim.rtl.match_action.deparser import written_bytes

PROGRAMS = Path(__file__).parents[2] / "hw" / "match_action" / "programs"


def _written(name):
    config = compile_program(load_program(PROGRAMS / f"{name}.toml"))
    custom = config.get("custom")
    return written_bytes(config["tables"], custom["length"] if custom else 1)


def test_router_writes_ttl_checksum_and_hop_limit_only():
    w = _written("router")
    assert w["ipv4"] == {8, 10, 11}
    assert w["ipv6"] == {7}
    assert not (w["tcp"] or w["udp"] or w["icmp"] or w["custom"])


def test_fields_set_by_value_and_dscp():
    tables = [{"actions": [
        {"ops": [["set", "tcp", 160 - 32, 16, ["const", 80]]]},  # bits 128..143: dst port
        {"ops": [["set_dscp", ["const", 46]]]},
    ]}]
    w = written_bytes(tables, 1)
    assert w["tcp"] == {2, 3}
    assert w["ipv4"] == {1, 10, 11}  # DSCP in the type of service byte, and the checksum
    assert w["ipv6"] == {0, 1}


def test_example_programs():
    lb = _written("lb")  # the MAC address and a pushed tag: layer 2 only
    assert not any(lb.values()), lb
    for name in ("acl", "ddos"):  # set_dscp
        w = _written(name)
        assert w["ipv4"] == {1, 10, 11} and w["ipv6"] == {0, 1}, (name, w)
        assert not (w["tcp"] or w["udp"] or w["icmp"]), (name, w)
