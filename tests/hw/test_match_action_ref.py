"""Golden reference of the match-action pipeline against scapy and hand-checked P4 semantics."""

from pathlib import Path

import pytest
from scapy.all import ICMP, IP, TCP, UDP, Dot1Q, Ether, IPv6, Raw

from nicsim.hw.match_action.checker import check_program
from nicsim.hw.match_action.program import (
    ProgramError,
    load_program,
    make_entry,
    parse_program,
)
from nicsim.hw.ref.match_action import Pipeline, meter_increment, parse

PROGRAMS = Path(__file__).resolve().parents[2] / "hw" / "match_action" / "programs"
MAC1, MAC2 = "02:00:00:00:00:01", "02:00:00:00:00:02"


def program(name):
    return check_program(load_program(PROGRAMS / f"{name}.toml"))


def scapy_fixed(pkt):
    """Let scapy recompute the IPv4 header checksum of a packet (the independent oracle)."""
    pkt = pkt.copy()
    if IP in pkt:
        del pkt[IP].chksum
    return bytes(pkt)


def router():
    p = program("router")
    route = {"port": 3, "dmac": MAC1, "smac": MAC2}
    return p, Pipeline(p, [
        make_entry(p, "ipv4_routes", "10.0.0.0/8", "route", route),
        make_entry(p, "ipv4_routes", "10.1.0.0/16", "route", {**route, "port": 5}),
        make_entry(p, "ipv4_routes", "10.1.2.0/24", "drop"),
        make_entry(p, "ipv6_routes", "2001:db8::/32", "route", {**route, "port": 7}),
        make_entry(p, "untag", 10, "strip"),
    ])


@pytest.mark.parametrize("ttl", [2, 64, 255])
def test_ttl_decrement_matches_scapy_checksum(ttl):
    _, pl = router()
    pkt = Ether(dst=MAC2, src=MAC1) / IP(dst="10.9.0.1", ttl=ttl, tos=0xB8) / TCP() / Raw(b"a" * 30)
    out = pl.process(bytes(pkt))
    assert out.meta["action"] == "forward" and out.meta["port"] == 3
    want = Ether(dst=MAC1, src=MAC2) / IP(dst="10.9.0.1", ttl=ttl - 1, tos=0xB8) / TCP() / Raw(
        b"a" * 30)
    assert out.frame == scapy_fixed(want)


def test_ttl_one_is_dropped():
    _, pl = router()
    out = pl.process(bytes(Ether() / IP(dst="10.9.0.1", ttl=1) / UDP()))
    assert out.frame is None and out.meta["dropped"] == "ttl_expired"


def test_lpm_longest_prefix_wins():
    _, pl = router()
    ports = [pl.process(bytes(Ether() / IP(dst=d) / UDP())).meta for d in
             ("10.200.0.1", "10.1.9.9", "10.1.2.3", "11.0.0.1")]
    assert [m["port"] for m in ports[:2]] == [3, 5]
    assert ports[2]["dropped"] == "drop"
    assert ports[3]["action"] == "host" and ports[3]["queue"] == 0  # default: punt 0


def test_ipv6_hop_limit_and_macs():
    _, pl = router()
    pkt = Ether() / IPv6(dst="2001:db8::5", hlim=7) / UDP(sport=1, dport=2) / Raw(b"z" * 8)
    out = pl.process(bytes(pkt))
    assert out.meta["port"] == 7
    assert out.frame == bytes(Ether(dst=MAC1, src=MAC2) / IPv6(dst="2001:db8::5", hlim=6)
                              / UDP(sport=1, dport=2, chksum=pkt[UDP].chksum) / Raw(b"z" * 8)) \
        or out.frame == bytes(Ether(dst=MAC1, src=MAC2)) + bytes(pkt)[14:21] + b"\x06" + bytes(
            pkt)[22:]
    assert out.frame[14 + 7] == 6


def test_pop_vlan_matches_scapy():
    _, pl = router()
    pkt = Ether(src=MAC1, dst=MAC2) / Dot1Q(vlan=10, prio=5) / IP(dst="10.200.0.1", ttl=5) / TCP()
    out = pl.process(bytes(pkt))
    assert out.meta["table_hits"] == ["untag", "ipv4_routes"]
    assert out.frame == scapy_fixed(Ether(dst=MAC1, src=MAC2) / IP(dst="10.200.0.1", ttl=4)
                                    / TCP())


def test_push_vlan_matches_scapy():
    p = program("lb")
    pl = Pipeline(p, [make_entry(p, "flows", ["10.0.0.1", "10.0.0.2", 6, 1234, 80], "backend",
                                 {"port": 2, "dmac": MAC1, "vid": 300})])
    pkt = Ether(src=MAC2) / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=1234, dport=80) / Raw(
        b"payload")
    out = pl.process(bytes(pkt))
    assert out.meta == {"action": "forward", "port": 2, "queue": None, "table_hits": ["flows"],
                        "mirror": None, "color": None}
    want = Ether(src=MAC2, dst=MAC1) / Dot1Q(vlan=300) / pkt[IP]
    assert out.frame == bytes(want)
    other = pl.process(bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=1235)))
    assert other.meta["action"] == "host" and other.meta["table_hits"] == []
    # A third tag does not fit the header vector: counted drop.
    two = Ether() / Dot1Q(vlan=1) / Dot1Q(vlan=2) / pkt[IP]
    assert pl.process(bytes(two)).meta["dropped"] == "vlan_overflow"


def test_dscp_rewrite_and_payload_untouched():
    p = program("ddos")
    pl = Pipeline(p, [make_entry(p, "ratelimit", "192.0.2.9", "police", {"port": 4, "dscp": 46},
                                 meter={"cir": 10**9, "cbs": 100000})])
    payload = bytes(range(256)) * 3
    pkt = Ether() / IP(dst="192.0.2.9", tos=0x01, options=b"\x01\x01\x01\x00") / UDP() / Raw(
        payload)
    out = pl.process(bytes(pkt))
    assert out.meta["port"] == 4 and out.meta["color"] == "green"
    want = pkt.copy()
    want[IP].tos = (46 << 2) | 1
    assert out.frame == scapy_fixed(want)
    assert out.frame.endswith(payload)


def test_blocklist_drop_ends_the_pipeline():
    p = program("ddos")
    pl = Pipeline(p, [make_entry(p, "blocklist", "198.51.100.0/24", "drop")])
    out = pl.process(bytes(Ether() / IP(src="198.51.100.7") / UDP()))
    assert out.meta["dropped"] == "drop" and out.meta["table_hits"] == ["blocklist"]
    ok = pl.process(bytes(Ether() / IP(src="198.51.101.7") / UDP()))
    assert ok.meta["port"] == 1  # ratelimit default


def test_meter_rfc2698_sequence():
    """1 Gb/s = 1/8 byte/ns, 2 Gb/s = 1/4 byte/ns: colours worked out by hand from RFC 2698."""
    assert meter_increment(10**9) == 8192 and meter_increment(2 * 10**9) == 16384
    p = program("ddos")
    pl = Pipeline(p, [make_entry(p, "ratelimit", "192.0.2.9", "forward", {"port": 2},
                                 meter={"cir": 10**9, "cbs": 1000, "pir": 2 * 10**9,
                                        "pbs": 2000})])
    frame = bytes(Ether() / IP(dst="192.0.2.9") / UDP() / Raw(b"\0" * (500 - 42)))
    assert len(frame) == 500
    times = [0, 0, 0, 0, 0, 2000, 2000, 10_000_000]
    # Tc/Tp: 1000/2000 -> G 500/1500 -> G 0/1000 -> Y 0/500 -> Y 0/0 -> R; +2000 ns: 250/500 ->
    # Y 250/0 -> R; long gap: both full -> G.
    want = ["green", "green", "yellow", "yellow", "red", "yellow", "red", "green"]
    got = [pl.process(frame, t).meta for t in times]
    assert [m["color"] for m in got] == want
    assert [m.get("dropped") for m in got] == [None if c != "red" else "meter_red" for c in want]
    entry = make_entry(p, "ratelimit", "192.0.2.9", "forward", {"port": 2},
                       meter={"cir": 10**9, "cbs": 1000, "pir": 2 * 10**9, "pbs": 2000})
    assert pl.counters(entry).packets == 8 and pl.counters(entry).bytes == 4000


def test_acl_ternary_priority_and_custom_header():
    p = program("acl")
    pl = Pipeline(p, [
        make_entry(p, "acl", ["10.0.0.0&&&255.0.0.0", "0&&&0", "17&&&255"], "log",
                   {"port": 1, "queue": 9}, priority=20),
        make_entry(p, "acl", ["10.1.0.0&&&255.255.0.0", "0&&&0", "0&&&0"], "drop", priority=10),
        make_entry(p, "acl", [{"value": 0, "mask": 0}] * 3, "permit", {"port": 2}, priority=30),
        make_entry(p, "tenants", [5000], "tenant", {"queue": 12}),
        make_entry(p, "ports", ["23&&&65535", "0&&&0"], "drop", priority=1),
    ])
    m = pl.process(bytes(Ether() / IP(src="10.2.0.1") / UDP(dport=53))).meta
    assert (m["action"], m["port"], m["mirror"]) == ("forward", 1, 9)
    assert pl.process(bytes(Ether() / IP(src="10.1.0.1") / UDP())).meta["dropped"] == "drop"
    assert pl.process(bytes(Ether() / IP(src="11.0.0.1") / TCP(dport=80))).meta["port"] == 2
    assert pl.process(bytes(Ether() / IP(src="11.0.0.1") / TCP(dport=23))).meta["dropped"]
    vx = Ether() / IP(src="11.0.0.1") / UDP(dport=4789) / Raw(bytes.fromhex("0800000000138800"))
    m = pl.process(bytes(vx)).meta
    assert (m["action"], m["queue"], m["table_hits"]) == ("host", 12, ["acl", "tenants"])
    # A VXLAN header cut short is not valid: the tenant table is skipped.
    short = bytes(vx)[:-3]
    assert pl.process(short).meta["table_hits"] == ["acl"]
    # IPv4 with a non-IP protocol reaches no L4 header; non-IP frames skip the ACL.
    assert pl.process(bytes(Ether() / IP(src="11.0.0.1") / ICMP())).meta["port"] == 2
    assert pl.process(bytes(Ether(type=0x88B5) / Raw(b"x" * 50))).meta["port"] == 0


def test_parser_malformed_headers():
    p = program("router")
    frame = bytes(Ether() / IP(dst="10.0.0.1") / TCP())
    assert set(parse(frame, p).headers) == {"ethernet", "ipv4", "tcp"}
    assert set(parse(frame[:30], p).headers) == {"ethernet"}
    assert parse(frame[:30], p).error == "truncated"
    bad = bytearray(frame)
    bad[14] = 0x44  # IHL 4
    assert parse(bytes(bad), p).error == "bad_ipv4"
    frag = bytes(Ether() / IP(dst="10.0.0.1", frag=10) / TCP())
    assert set(parse(frag, p).headers) == {"ethernet", "ipv4"}
    three = bytes(Ether() / Dot1Q() / Dot1Q() / Dot1Q() / IP())
    assert parse(three, p).error == "vlan_depth"
    _, pl = router()
    runt = pl.process(b"\x00" * 13)
    assert runt.frame is None and runt.meta["dropped"] == "runt"
    # A truncated IPv4 header skips the routes: the frame goes to the host by table "other".
    assert pl.process(frame[:30]).meta["queue"] == 1


def test_counters_and_miss_counts():
    p, pl = router()
    e = make_entry(p, "ipv4_routes", "10.1.0.0/16", "route", {"port": 5, "dmac": MAC1,
                                                              "smac": MAC2})
    frames = [bytes(Ether() / IP(dst="10.1.0.1") / UDP() / Raw(b"x" * n)) for n in (10, 20, 30)]
    for f in frames:
        pl.process(f)
    assert (pl.counters(e).packets, pl.counters(e).bytes) == (3, sum(map(len, frames)))
    pl.process(bytes(Ether() / IP(dst="99.0.0.1") / UDP()))
    assert pl.tables["ipv4_routes"].miss.packets == 1


def test_control_plane_errors():
    p, pl = router()
    e = make_entry(p, "ipv4_routes", "10.0.0.0/8", "drop")
    with pytest.raises(ProgramError, match="already has"):
        pl.add(e)
    pl.modify(e)
    assert pl.process(bytes(Ether() / IP(dst="10.200.0.1", ttl=5) / UDP())).meta["dropped"]
    pl.delete(e)
    with pytest.raises(ProgramError, match="no entry"):
        pl.delete(e)
    with pytest.raises(ProgramError, match="beyond its prefix"):
        make_entry(p, "ipv4_routes", "10.0.0.1/8", "drop")
    with pytest.raises(ProgramError, match="does not take action"):
        make_entry(p, "untag", 1, "route")
    small = check_program(parse_program({
        "tables": [{"name": "t", "keys": [{"field": "ethernet.type"}], "size": 1,
                    "actions": ["drop"]}]}))
    tp = Pipeline(small, [make_entry(small, "t", 1, "drop")])
    with pytest.raises(ProgramError, match="full"):
        tp.add(make_entry(small, "t", 2, "drop"))


def _bitrev(value, bits):
    return int(f"{value:0{bits}b}"[::-1], 2)


def test_bucket_hash_is_crc32_and_its_taps():
    """The exact tables' bucket hash is CRC-32 (0x04C11DB7, MSB first, zero initial value, no
    final XOR), checked against zlib's reflected CRC-32 (the same polynomial: the message's bits
    and the result reversed, zlib's initial and final inversions undone); the gateware's XOR
    taps give the same index for any key width."""
    import random
    import zlib

    from nicsim.rtl.match_action.hashing import hash_taps, key_hash

    rng = random.Random(4)
    for nbytes in (1, 4, 13, 37, 40):
        for _ in range(20):
            key = rng.getrandbits(8 * nbytes)
            data = bytes(_bitrev(b, 8) for b in key.to_bytes(nbytes, "big"))
            want = _bitrev(~zlib.crc32(data, 0xFFFFFFFF) & 0xFFFFFFFF, 32)
            assert key_hash(key, 8 * nbytes, 32) == want
    for key_bits, index_bits in ((12, 2), (104, 8), (296, 8)):
        taps = hash_taps(key_bits, index_bits)
        for _ in range(20):
            key = rng.getrandbits(key_bits)
            got = sum((sum(key >> b & 1 for b in bits) & 1) << j for j, bits in enumerate(taps))
            assert got == key_hash(key, key_bits, index_bits)


def test_full_bucket_refuses_an_add():
    """Collision handling: a bucket holds four keys; a fifth key of that bucket is refused in
    one sentence while the table still has room, and fits once one of the four is deleted."""
    from nicsim.hw.match_action.control import ControlPlane
    from nicsim.hw.match_action.program import ProgramError as PE
    from nicsim.rtl.match_action.hashing import key_hash

    p = program("router")  # untag: exact on a 12-bit VLAN ID, 16 slots = 4 buckets of 4
    cp = ControlPlane(p)
    same = [v for v in range(4096) if key_hash(v, 12, 2) == key_hash(1, 12, 2)][:5]
    placed = [cp.add(make_entry(p, "untag", v, "strip")) for v in same[:4]]
    assert sorted(slot for _, slot in placed) == [placed[0][1] // 4 * 4 + w for w in range(4)]
    with pytest.raises(PE, match=r"bucket \d+ already holds 4 entries") as info:
        cp.add(make_entry(p, "untag", same[4], "strip"))
    assert "\n" not in str(info.value)
    other = next(v for v in range(4096) if key_hash(v, 12, 2) != key_hash(1, 12, 2))
    cp.add(make_entry(p, "untag", other, "strip"))  # other buckets still take keys
    cp.delete(make_entry(p, "untag", same[1], "strip"))
    assert cp.add(make_entry(p, "untag", same[4], "strip")) == placed[1]
