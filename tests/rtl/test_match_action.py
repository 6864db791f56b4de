"""The match-action gateware on Verilator against the golden reference, frame for frame.

Every example program runs with random entries (tables filled to what the hardware holds) and
random traffic (VLAN tags, IPv4 options, IPv6, fragments, VXLAN, truncated and malformed
headers, runts, oversize frames), through the C++ harness; output frames, per-frame metadata,
counters and meter buckets must equal the reference's. Updates while traffic flows run under
cocotb (``test_match_action_live.py``).
"""

import json
import random
import zlib
from pathlib import Path

import pytest
from scapy.all import ICMP, IP, TCP, UDP, Dot1AD, Dot1Q, Ether, IPv6, Raw

from nicsim.hw.match_action.control import ControlPlane
from nicsim.hw.match_action.engine import MaConfig, decode_result, run_model
from nicsim.hw.match_action.program import ProgramError, load_program, make_entry
from nicsim.hw.ref.match_action import Pipeline
from nicsim.rtl.match_action import regs

PROGRAMS = Path(__file__).resolve().parents[2] / "hw" / "match_action" / "programs"
INTERVAL_NS = 100
_BUILDS = {}


def mac(rng):
    return ":".join(f"{rng.randrange(256):02x}" for _ in range(6))


def ip4(rng, prefix=None):
    if prefix is not None and rng.random() < 0.7:
        return f"{prefix}.{rng.randrange(256)}.{rng.randrange(256)}"
    return ".".join(str(rng.randrange(256)) for _ in range(4))


def fill(cp, rng, table, make, tries):
    """Add entries from ``make(rng)`` until the table refuses ``tries`` of them in a row."""
    added, refused = [], 0
    while refused < tries:
        try:
            entry = make(rng)
            cp.add(entry)
            added.append(entry)
            refused = 0
        except ProgramError:
            refused += 1
    return added


def l2(rng, inner, tags=None):
    tags = rng.choice([0, 0, 0, 1, 2]) if tags is None else tags
    pkt = Ether(src=mac(rng), dst=mac(rng))
    if tags == 2:
        pkt = pkt / Dot1AD(vlan=rng.randrange(4096)) / Dot1Q(vlan=rng.randrange(1, 20))
    elif tags == 1:
        pkt = pkt / Dot1Q(vlan=rng.randrange(1, 20), prio=rng.randrange(8))
    return pkt / inner


def ip_packet(rng, src, dst, l4=None):
    l4 = l4 or rng.choice(["tcp", "udp", "icmp"])
    opts = {"options": b"\x01" * 4 * rng.randrange(1, 4)} if rng.random() < 0.2 else {}
    ip = IP(src=src, dst=dst, ttl=rng.choice([0, 1, 2, 64, 255]), tos=rng.randrange(256),
            frag=rng.choice([0, 0, 0, 0, 5]), **opts)
    layer = {"tcp": TCP(sport=rng.randrange(65536), dport=rng.choice([22, 23, 80, 443]),
                        flags=rng.randrange(256)),
             "udp": UDP(sport=rng.randrange(65536), dport=rng.choice([53, 4789, 4789])),
             "icmp": ICMP()}[l4]
    pkt = ip / layer
    if l4 == "udp" and pkt[UDP].dport == 4789:
        pkt = pkt / Raw(bytes([8, 0, 0, 0]) + rng.randrange(1 << 24).to_bytes(3, "big") + b"\0")
    return pkt


def payload(rng):
    return Raw(bytes(rng.randrange(256) for _ in range(rng.choice([0, 6, 40, 200, 1400]))))


def mangle(rng, frame):
    """Malformed variants: truncated, bad IP version or IHL, runt, oversize."""
    roll = rng.random()
    if roll < 0.06:
        return frame[:rng.randrange(1, max(len(frame), 2))]
    if roll < 0.09 and len(frame) > 15:
        b = bytearray(frame)
        b[14] = rng.choice([0x44, 0x65, 0x35])
        return bytes(b)
    if roll < 0.10:
        return frame + bytes(9100 - len(frame))
    return frame


def scenario(name, rng, n_frames):
    """Random entries (installed through a ControlPlane) and traffic for an example program."""
    program = load_program(PROGRAMS / f"{name}.toml")
    cp = ControlPlane(program)
    frames = []
    if name == "ddos":
        fill(cp, rng, "blocklist", lambda r: make_entry(
            program, "blocklist", f"10.{r.randrange(256)}.{r.randrange(256)}.0/24", "drop"), 8)
        dsts = [f"192.0.2.{i}" for i in range(1, 9)]
        for d in dsts[:6]:
            meter = {"cir": rng.choice([10**6, 10**8, 10**9]), "cbs": rng.choice([64, 3000]),
                     "pir": 2 * 10**9, "pbs": rng.choice([3000, 20000])}
            action = rng.choice([("police", {"port": 2, "dscp": 46}), ("forward", {"port": 3})])
            cp.add(make_entry(program, "ratelimit", d, *action, meter=meter))
        for _ in range(n_frames):
            src = ip4(rng, "10." + str(rng.randrange(256)))
            inner = ip_packet(rng, src, rng.choice(dsts + ["198.51.100.1"]))
            frames.append(bytes(l2(rng, inner / payload(rng))))
    elif name == "router":
        for _ in range(200):
            plen = rng.choice([8, 12, 16, 20, 24, 32])
            net = (10 << 24 | rng.randrange(1 << 22) << 2) >> (32 - plen) << (32 - plen)
            action = rng.choice(["route", "route", "drop", "punt"])
            args = {"route": {"port": rng.randrange(16), "dmac": mac(rng), "smac": mac(rng)},
                    "drop": {}, "punt": {"queue": rng.randrange(64)}}[action]
            try:
                cp.add(make_entry(program, "ipv4_routes", f"{net:#x}/{plen}", action, args))
            except ProgramError:
                pass
        for i in range(8):
            cp.add(make_entry(program, "ipv6_routes", f"2001:db8:{i:x}::/48", "route",
                              {"port": i, "dmac": mac(rng), "smac": mac(rng)}))
        # nested IPv6 prefixes: the longest must win over the /48s and each other
        for i, prefix in enumerate(("2001:db8::/32", "2001:db8:2::/64", "2001:db8:2::40/122",
                                    "2001:db8:3::7/128")):
            cp.add(make_entry(program, "ipv6_routes", prefix, "route",
                              {"port": 8 + i, "dmac": mac(rng), "smac": mac(rng)}))
        for vid in (1, 2, 3, 7):
            cp.add(make_entry(program, "untag", vid, "strip"))
        cp.add(make_entry(program, "other", 0x0806, "punt", {"queue": 5}))
        for _ in range(n_frames):
            if rng.random() < 0.25:
                inner = IPv6(dst=f"2001:db8:{rng.randrange(10):x}::{rng.randrange(99)}",
                             hlim=rng.choice([0, 1, 2, 64])) / UDP()
            elif rng.random() < 0.1:
                inner = Raw(b"\x00\x01\x08\x00" + bytes(30))
                pkt = Ether(type=0x0806) / inner
                frames.append(bytes(pkt))
                continue
            else:
                inner = ip_packet(rng, ip4(rng), ip4(rng, f"10.{rng.randrange(64)}"))
            frames.append(bytes(l2(rng, inner / payload(rng))))
    elif name == "acl":
        prios = rng.sample(range(1000), 64)
        for prio in prios:
            src = (10 << 24 | rng.randrange(1 << 24))
            m1 = rng.choice([0, 0xFF000000, 0xFFFF0000, 0xFFFFFFFF])
            proto = rng.choice([("0&&&0"), ("6&&&255"), ("17&&&255")])
            action = rng.choice(["permit", "permit_mark", "log", "drop"])
            args = {"permit": {"port": rng.randrange(16)},
                    "permit_mark": {"port": rng.randrange(16), "dscp": rng.randrange(64)},
                    "log": {"port": rng.randrange(16), "queue": rng.randrange(64)},
                    "drop": {}}[action]
            cp.add(make_entry(program, "acl", [f"{src & m1:#x}&&&{m1:#x}", "0&&&0", proto],
                              action, args, priority=prio))
        fill(cp, rng, "tenants", lambda r: make_entry(program, "tenants", r.randrange(64),
                                                      "tenant", {"queue": r.randrange(64)}), 20)
        for prio, port in enumerate((23, 25, 8080)):
            cp.add(make_entry(program, "ports", [f"{port}&&&65535", "0&&&0"], "drop",
                              priority=prio))
        for _ in range(n_frames):
            inner = ip_packet(rng, ip4(rng, "10." + str(rng.randrange(256))), ip4(rng))
            if UDP in inner and inner[UDP].dport == 4789 and len(inner[Raw].load) >= 8:
                load = bytearray(inner[Raw].load)
                load[4:7] = rng.randrange(80).to_bytes(3, "big")
                inner[Raw].load = bytes(load)
            frames.append(bytes(l2(rng, inner / payload(rng))))
    elif name == "lb":
        flows = []

        def flow(r):
            t = (ip4(r), f"10.0.0.{r.randrange(4)}", 6, r.randrange(65536), r.choice([80, 443]))
            flows.append(t)
            return make_entry(program, "flows", list(t), "backend",
                              {"port": r.randrange(16), "dmac": mac(r), "vid": r.randrange(4096)})
        added = fill(cp, rng, "flows", flow, 30)
        assert len(added) > 900  # 4-way buckets hold most of the 1024 slots before one refuses
        for _ in range(n_frames):
            src, dst, _, sport, dport = rng.choice(flows) if rng.random() < 0.7 else (
                ip4(rng), "10.0.0.1", 6, rng.randrange(65536), 80)
            inner = IP(src=src, dst=dst, ttl=64) / TCP(sport=sport, dport=dport)
            frames.append(bytes(l2(rng, inner / payload(rng))))
    frames = [mangle(rng, f) for f in frames]
    return cp, [f for f in frames if f]


#: The registers :func:`run_both` reads after the frames (with ``select`` written first).
READS = (regs.REG_PACKETS_LO, regs.REG_PACKETS_HI, regs.REG_BYTES_LO, regs.REG_BYTES_HI,
         regs.REG_METER_TC, regs.REG_METER_TP, regs.REG_FRAMES, regs.REG_DROPS)


class Answers:
    """A device for :class:`ControlPlane` that answers reads with the values the gateware gave
    for those registers after a run, and records the writes."""

    def __init__(self, reads):
        self.values = dict(zip(READS, reads, strict=True))
        self.writes = []

    def write(self, addr, value):
        self.writes.append((addr, value))

    def read(self, addr):
        return self.values[addr]


def run_both(cp, frames, width, idle_pct=0, backpressure_pct=0, select=None):
    """Run the reference and the gateware; return ``(model run, rtl metas, rtl frames, reads)``."""
    from nicsim.hw.harness import build_harness, run_harness

    config = MaConfig(cp.program, cp.entries(), frame_interval_ns=INTERVAL_NS)
    model = run_model(frames, config)
    writes = list(cp.device.writes)
    reads = []
    if select is not None:
        writes.append((regs.REG_SELECT, select))
        reads = list(READS)
    key = json.dumps([width, cp.config], sort_keys=True)
    if key not in _BUILDS:  # elaborating takes seconds: once per program and width
        _BUILDS[key] = build_harness("match-action", {"width": width, "program": cp.config})
    build = _BUILDS[key]
    done = run_harness(build, frames, [i * INTERVAL_NS for i in range(len(frames))], writes,
                       reads, idle_pct=idle_pct, backpressure_pct=backpressure_pct, seed=7)
    metas = [decode_result(w, config) for w in done.results]
    return model, metas, [f for f, _ in done.frames], [v for v, _ in done.reads]


def check_against_model(name, width, seed, n_frames, miss=None, **pauses):
    """Run a scenario on both; read back the counters (and meter) of the busiest entry of the
    first table, or with ``miss`` the miss counters of that table."""
    rng = random.Random(seed)
    cp, frames = scenario(name, rng, n_frames)
    pipe = Pipeline(cp.program, cp.entries())
    for i, f in enumerate(frames):
        pipe.process(f, i * INTERVAL_NS)
    first = cp.program.tables[0].name if name != "ddos" else "ratelimit"
    state = pipe.tables[miss or first]
    if miss is None:
        best = max(range(len(state.entries)), key=lambda i: state.counters[i].packets)
        entry, counters = state.entries[best], state.counters[best]
        select = regs.select_word(cp.stage[first], cp._slot_of(entry))
    else:
        entry, counters = None, state.miss
        select = regs.select_word(cp.stage[miss], miss=True)
    model, metas, out, reads = run_both(cp, frames, width, select=select, **pauses)
    for i, (want, got) in enumerate(zip(model.meta, metas, strict=True)):
        assert got == want, f"frame {i} ({frames[i][:64].hex()}): rtl {got} != model {want}"
    assert len(out) == len(model.frames)
    for i, (want, got) in enumerate(zip(model.frames, out, strict=True)):
        assert got == want, f"output frame {i} differs"
    assert counters.packets > 0
    assert reads[0] | reads[1] << 32 == counters.packets
    assert reads[2] | reads[3] << 32 == counters.bytes
    # The control plane API reads the same registers into the reference's numbers.
    cp.device = Answers(reads)
    got = cp.miss_counters(miss) if miss else cp.counters(entry)
    assert cp.device.writes == [(regs.REG_SELECT, select)] and got == counters
    if entry is not None and entry.meter is not None:
        meter = state.meters[best]
        assert (reads[4], reads[5]) == (meter.tc >> 16, meter.tp >> 16)
        assert cp.meter(entry) == (meter.tc >> 16, meter.tp >> 16)
    assert reads[6] == len(frames)
    assert reads[7] == sum("dropped" in m for m in model.meta)
    return model


@pytest.mark.parametrize("name", ["ddos", "router", "acl", "lb"])
def test_program_64(name):
    # a seed of the name that is the same every run (str hashes are salted per process)
    model = check_against_model(name, 64, seed=zlib.crc32(name.encode()) & 0xFFFF, n_frames=250)
    actions = {m["action"] for m in model.meta}
    assert {"forward", "drop"} <= actions  # the traffic exercises more than one outcome


def test_pauses_and_meters_64():
    """Idle source and backpressure; the meters' colours depend only on the timestamps. The
    blocklist's miss counters are read back."""
    model = check_against_model("ddos", 64, seed=3, n_frames=200, miss="blocklist",
                                idle_pct=30, backpressure_pct=40)
    assert {"green", "red"} <= {m["color"] for m in model.meta}


@pytest.mark.long
@pytest.mark.parametrize("name", ["ddos", "router", "acl", "lb"])
def test_program_512(name):
    check_against_model(name, 512, seed=11, n_frames=300)


@pytest.mark.long
@pytest.mark.parametrize("seed", range(4))
def test_fuzz_64(seed):
    for name in ("ddos", "router", "acl", "lb"):
        check_against_model(name, 64, seed=100 + seed, n_frames=600, idle_pct=10,
                            backpressure_pct=10)


@pytest.mark.parametrize("name", ["router", *(pytest.param(n, marks=pytest.mark.long)
                                              for n in ("ddos", "acl", "lb"))])
def test_cli_backends_identical(tmp_path, name):
    """``nicsim rtl run match-action``: --backend rtl and model write the same pcap and meta
    (the router in ``make test``, the other programs in ``make test-long``)."""
    from typer.testing import CliRunner

    from nicsim.hw.match_action.control import entry_spec
    from nicsim.hw.pcap import Packet, write_pcap
    from nicsim.sim.cli import app

    rng = random.Random(5)
    cp, frames = scenario(name, rng, 60)
    lines = []
    for e in cp.entries():
        spec = entry_spec(cp.program, e)
        lines.append("[[entries]]")
        for k, v in spec.items():
            if isinstance(v, dict):
                v = "{ " + ", ".join(f'"{a}" = "{b}"' if isinstance(b, str) else f'"{a}" = {b}'
                                     for a, b in v.items()) + " }"
            elif isinstance(v, str):
                v = f'"{v}"'
            lines.append(f"{k} = {v}")
    (tmp_path / "e.toml").write_text("\n".join(lines) + "\n")
    write_pcap(tmp_path / "in.pcap", [Packet(f, 1000 * i) for i, f in enumerate(frames)])
    outs = {}
    for backend in ("model", "rtl"):
        r = CliRunner().invoke(app, [
            "rtl", "run", "match-action", "--backend", backend, "--program",
            str(PROGRAMS / f"{name}.toml"), "--entries", str(tmp_path / "e.toml"), "--in",
            str(tmp_path / "in.pcap"), "--out", str(tmp_path / f"{backend}.pcap"), "--meta",
            str(tmp_path / f"{backend}.jsonl")])
        assert r.exit_code == 0, r.output
        outs[backend] = ((tmp_path / f"{backend}.pcap").read_bytes(),
                         (tmp_path / f"{backend}.jsonl").read_text())
    assert outs["rtl"] == outs["model"]
    assert outs["model"][1].count("\n") == len(frames)
