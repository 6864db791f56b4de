"""Gateware features no example program uses, on Verilator against the golden reference.

The four example programs leave out a custom header announced by an EtherType (the ACL's comes
after a UDP port), meters that only colour (``meter = "color"``, on an exact and on an LPM
stage), an LPM table with a second, exact key, writes to a custom field and to an IPv4 field
other than TTL and DSCP, a tag pushed with a priority, a constant mirror queue and a table keyed
on a tag an earlier action pushed. This program has them all; random entries and traffic
(tagged, truncated, malformed frames among them) must give the reference's frames, metadata,
counters and meter buckets. A build of its own: ``make test-long``.
"""

import random
import tomllib

import pytest
from scapy.all import IP, TCP, UDP, Dot1AD, Dot1Q, Ether, IPv6, Raw
from test_match_action import INTERVAL_NS, fill, mac, mangle, run_both

from nicsim.hw.match_action.checker import check_program
from nicsim.hw.match_action.control import ControlPlane
from nicsim.hw.match_action.program import ProgramError, make_entry, parse_program
from nicsim.hw.ref.match_action import Pipeline
from nicsim.rtl.match_action import regs

PROGRAM = """
name = "features"

[parser.custom]
name = "tag"
after = "ethertype"
match = 0x88b5
length = 6
fields = { id = [0, 16], flags = [16, 8], data = [24, 24] }

[actions.mark]
params = { port = 4, id = 16 }
ops = ["set tag.id $id", "set tag.flags 0xa5", "forward $port"]

[actions.stamp]
params = { port = 4, ident = 16, pcp = 3 }
ops = ["set ipv4.id $ident", "push_vlan 100 $pcp", "mirror 7", "forward $port"]

[actions.requeue]
params = { queue = 6, pcp = 3 }
ops = ["set vlan.pcp $pcp", "to_host $queue"]

[[tables]]
name = "tags"
keys = [{ field = "tag.id", match = "exact" }]
size = 64
actions = ["mark", "drop"]
default = "nop"
if_valid = ["tag"]
meter = "color"
next = { invalid = "v4" }

[[tables]]
name = "v4"
keys = [{ field = "ipv4.dst", match = "lpm" }, { field = "ipv4.protocol", match = "exact" }]
size = 32
actions = ["stamp", "drop"]
default = "nop"
if_valid = ["ipv4"]
meter = "color"
next = "vlans"

[[tables]]
name = "vlans"
keys = [{ field = "vlan.vid", match = "ternary" }, { field = "vlan.pcp", match = "ternary" }]
size = 8
actions = ["requeue", "nop"]
default = "nop"
if_valid = ["vlan"]
"""


def meter(rng):
    cir = rng.choice([10**7, 10**8, 10**9])
    return {"cir": cir, "cbs": rng.choice([64, 1500, 4000]), "pir": 2 * cir,
            "pbs": rng.choice([3000, 9000])}


def scenario(rng, n_frames):
    program = check_program(parse_program(tomllib.loads(PROGRAM), "features.toml"))
    cp = ControlPlane(program)
    ids = list(range(40))
    fill(cp, rng, "tags", lambda r: _tag_entry(program, r, ids), 10)
    for _ in range(40):
        plen = rng.choice([8, 16, 24, 32])
        net = (10 << 24 | rng.randrange(1 << 24)) >> (32 - plen) << (32 - plen)
        action = rng.choice(["stamp", "stamp", "drop"])
        args = {"port": rng.randrange(16), "ident": rng.randrange(1 << 16),
                "pcp": rng.randrange(8)} if action == "stamp" else {}
        try:
            cp.add(make_entry(program, "v4", [f"{net:#x}/{plen}", rng.choice([6, 17])], action,
                              args, meter=meter(rng)))
        except ProgramError:
            pass  # a key twice, or the table full
    for prio, (vid, pcp) in enumerate(((100, "0&&&0"), ("0&&&0", "5&&&7"), ("7&&&4095", "0&&&0"))):
        vid = f"{vid}&&&4095" if isinstance(vid, int) else vid
        cp.add(make_entry(program, "vlans", [vid, pcp], "requeue",
                          {"queue": rng.randrange(64), "pcp": rng.randrange(8)},
                          priority=10 * prio + rng.randrange(10)))
    frames = []
    for _ in range(n_frames):
        roll = rng.random()
        body = Raw(bytes(rng.randrange(256) for _ in range(rng.choice([0, 10, 60, 300]))))
        if roll < 0.4:
            tag = rng.choice(ids + [999]).to_bytes(2, "big") + bytes(rng.randrange(256)
                                                                    for _ in range(4))
            pkt = l2(rng, 0x88B5) / Raw(tag) / body
        elif roll < 0.9:
            dst = f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}"
            opts = {"options": b"\x01" * 4 * rng.randrange(1, 4)} if rng.random() < 0.2 else {}
            l4 = rng.choice([TCP(dport=80), UDP(dport=53)])
            pkt = l2(rng, 0x0800) / IP(dst=dst, ttl=rng.choice([1, 64]),
                                       id=rng.randrange(1 << 16), **opts) / l4 / body
        else:
            pkt = l2(rng, 0x86DD) / IPv6(dst="2001:db8::1") / UDP() / body
        frames.append(mangle(rng, bytes(pkt)))
    return cp, [f for f in frames if f]


def l2(rng, ethertype):
    """Ethernet with no tag, an 802.1Q tag or 802.1ad + 802.1Q tags, then ``ethertype``."""
    tags = rng.choice([0, 0, 1, 2])
    eth = Ether(src=mac(rng), dst=mac(rng), **({"type": ethertype} if tags == 0 else {}))
    vid = rng.choice([7, 100, 9])
    if tags == 2:
        return eth / Dot1AD(vlan=rng.randrange(4096)) / Dot1Q(vlan=vid, type=ethertype)
    if tags == 1:
        return eth / Dot1Q(vlan=vid, prio=rng.randrange(8), type=ethertype)
    return eth


def _tag_entry(program, rng, ids):
    action = rng.choice(["mark", "mark", "drop"])
    args = {"port": rng.randrange(16), "id": rng.randrange(1 << 16)} if action == "mark" else {}
    return make_entry(program, "tags", rng.choice(ids), action, args, meter=meter(rng))


def check(width, seed, n_frames):
    rng = random.Random(seed)
    cp, frames = scenario(rng, n_frames)
    # The counters and meter of the busiest entry of the tag table are read back.
    pipe = Pipeline(cp.program, cp.entries())
    for i, f in enumerate(frames):
        pipe.process(f, i * INTERVAL_NS)
    state = pipe.tables["tags"]
    best = max(range(len(state.entries)), key=lambda i: state.counters[i].packets)
    entry = state.entries[best]
    model, metas, out, reads = run_both(cp, frames, width,
                                        select=regs.select_word(0, cp._slot_of(entry)))
    for i, (want, got) in enumerate(zip(model.meta, metas, strict=True)):
        assert got == want, f"frame {i} ({frames[i][:64].hex()}): rtl {got} != model {want}"
    assert len(out) == len(model.frames)
    for i, (want, got) in enumerate(zip(model.frames, out, strict=True)):
        assert got == want, f"output frame {i} differs"
    counters, buckets = state.counters[best], state.meters[best]
    assert counters.packets > 0
    assert reads[0] | reads[1] << 32 == counters.packets
    assert reads[2] | reads[3] << 32 == counters.bytes
    assert (reads[4], reads[5]) == (buckets.tc >> 16, buckets.tp >> 16)
    # What the traffic exercised: every table hit, the three colours, no drop by a meter
    # ("color"), a mirror, a host queue and a pushed tag dropped on a frame with two.
    hits = {t for m in model.meta for t in m["table_hits"]}
    assert hits == {"tags", "v4", "vlans"}
    assert {m["color"] for m in model.meta} >= {"green", "yellow", "red"}
    reasons = {m.get("dropped") for m in model.meta}
    assert "meter_red" not in reasons and "vlan_overflow" in reasons
    assert any(m["mirror"] == 7 for m in model.meta)
    assert any(m["action"] == "host" for m in model.meta)


@pytest.mark.long
def test_features_64():
    check(64, seed=21, n_frames=400)


@pytest.mark.long
def test_features_512():
    check(512, seed=22, n_frames=400)
