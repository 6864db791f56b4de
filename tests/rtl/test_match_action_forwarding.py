# amaranth: UnusedElaboratable=no
"""Write forwarding in one match-action stage, in Amaranth's simulator (the fast tier).

A stage's counters and meters are read-modify-write loops over memories with two cycles of
read latency (:mod:`nicsim.rtl.match_action.stage`): the words the items one and two steps
ahead write (three for the counters and the meter's buckets, written a cycle late) are
forwarded behind the memory's register. At 64 bits frames reach the stages eight cycles apart,
so the Verilator runs of ``make test`` never exercise that forwarding; here one
:class:`~nicsim.rtl.match_action.stage.Stage` takes an item every cycle: runs of frames of one
entry (one ahead), two entries in alternation (two ahead), three in rotation
(three ahead), misses, frames the
stage skips, bubbles, and a commit that reinstalls an entry in the middle of the stream.

The expected counters are counted here, frame by frame; the expected colours and buckets come
from the golden reference's meter (:class:`nicsim.hw.ref.match_action.MeterState`). Entries
are placed and encoded by the control plane (:class:`nicsim.hw.match_action.control.
ControlPlane` over a :class:`~nicsim.hw.match_action.control.RegisterLog`), whose register
writes become the commit tokens the pipeline's register block would make.
"""

import random
from pathlib import Path

import pytest
from amaranth.sim import Simulator

from nicsim.hw.match_action.compile import entry_writes
from nicsim.hw.match_action.control import ControlPlane
from nicsim.hw.match_action.program import load_program, make_entry
from nicsim.hw.ref.match_action import MeterState
from nicsim.rtl.match_action import limits, regs
from nicsim.rtl.match_action.hv import COLORS, HEADERS, hv_layout
from nicsim.rtl.match_action.stage import (
    BURST_BITS,
    RATE_BITS,
    Stage,
    item_layout,
    token_layout,
)

PROGRAMS = Path(__file__).resolve().parents[2] / "hw" / "match_action" / "programs"
MISS = "miss"


def _pack(layout, fields):
    """The integer of a struct ``layout`` holding ``fields`` (a dict of ints)."""
    value = 0
    for name, f in layout:
        if name in fields:
            v = fields[name]
            assert 0 <= v < 1 << f.width, (name, v)
            value |= v << f.offset
    return value


def _field(layout, value, name):
    f = layout[name]
    return value >> f.offset & ((1 << f.width) - 1)


class Bench:
    """One stage of the ``ddos`` program with the control plane that places its entries."""

    def __init__(self, table_name):
        self.program = load_program(PROGRAMS / "ddos.toml")
        self.cp = ControlPlane(self.program)
        self.config = self.cp.config
        self.index = self.cp.stage[table_name]
        self.table = self.config["tables"][self.index]
        self.layout = hv_layout(self.config)
        self.tok_layout = token_layout(self.config)
        self.item = item_layout(self.layout, self.tok_layout)
        self.stage = Stage(self.index, self.table, self.layout, self.tok_layout)
        self.staged = {}  # the register block's staging registers, as the writes leave them

    def token(self, writes):
        """The commit token that ``writes`` (ending with a ``COMMIT``) put into the stages."""
        for addr, value in writes:
            self.staged[addr] = value
        r = self.staged

        def words(base, n):
            return sum(r.get(base + 4 * i, 0) << 32 * i for i in range(n))

        tl = self.tok_layout
        commit = r[regs.REG_COMMIT]
        meter = (r.get(regs.REG_METER_CIR, 0) | r.get(regs.REG_METER_PIR, 0) << RATE_BITS
                 | r.get(regs.REG_METER_CBS, 0) << 2 * RATE_BITS
                 | r.get(regs.REG_METER_PBS, 0) << (2 * RATE_BITS + BURST_BITS))
        fields = {
            "stage": commit >> 12 & 7, "slot": commit & 0x3FF,
            "install": int(bool(commit & regs.COMMIT_INSTALL)),
            "keep_counters": int(bool(commit & regs.COMMIT_KEEP_COUNTERS)),
            "keep_meter": int(bool(commit & regs.COMMIT_KEEP_METER)),
            "action": r.get(regs.REG_ACTION, 0), "prio": r.get(regs.REG_PRIORITY, 0),
            "key": words(regs.REG_KEY, regs.KEY_WORDS) & ((1 << tl["key"].width) - 1),
            "mask": words(regs.REG_MASK, regs.KEY_WORDS) & ((1 << tl["mask"].width) - 1),
            "args": words(regs.REG_ARGS, regs.ARG_WORDS) & ((1 << tl["args"].width) - 1),
            "meter": meter & ((1 << tl["meter"].width) - 1),
        }
        return _pack(self.item, {"v": 1, "tok": 1, "p": _pack(tl, fields)})

    def frame(self, key, length, ts, nxt=None):
        """A frame's item: the key fields of the table set from ``key``, IPv4 valid."""
        headers = {}
        shift = 0
        for h, sh, width in reversed(self.table["key"]):  # the last key field least significant
            headers[h] = headers.get(h, 0) | (key >> shift & ((1 << width) - 1)) << sh
            shift += width
        fields = dict(headers, valid=1 << HEADERS.index("ipv4") | 1 << HEADERS.index("ethernet"),
                      nxt=self.index if nxt is None else nxt, length=length)
        if "ts" in {n for n, _ in self.layout}:
            fields["ts"] = ts
        return _pack(self.item, {"v": 1, "tok": 0, "p": _pack(self.layout, fields)})

    def run(self, items, read_slots):
        """Drive ``items`` (ints, ``None`` a bubble) one a cycle; return the output items and
        the read-back ``(packets, bytes, tc, tp)`` of each slot of ``read_slots`` (``MISS``:
        the miss counters)."""
        sim = Simulator(self.stage)
        sim.add_clock(1e-8)
        out = []
        reads = {}
        s = self.stage

        tcam = self.table["kind"] != "exact"
        p_off, t_bits = self.item["p"].offset, self.tok_layout.size

        async def sweep(ctx, it):
            """What the register block does before the token of a new ternary / LPM entry:
            the sweep of its bits into the TCAM memories, the stage idle meanwhile."""
            tok = it >> p_off & ((1 << t_bits) - 1)
            if not (_field(self.tok_layout, tok, "install")
                    and not _field(self.tok_layout, tok, "keep_counters")):
                return
            ctx.set(s.i.as_value(), 0)
            ctx.set(s.sw_tok.as_value(), tok)
            ctx.set(s.sw_go, 1)
            await ctx.tick()
            ctx.set(s.sw_go, 0)
            while not ctx.get(s.sw_done):
                await ctx.tick()
                o = ctx.get(s.o.as_value())
                if o & 1:
                    out.append(o)

        async def bench(ctx):
            for it in items + [None] * (s.latency + 2):
                if tcam and it is not None and _field(self.item, it, "tok"):
                    await sweep(ctx, it)
                ctx.set(s.i.as_value(), 0 if it is None else it)
                await ctx.tick()
                o = ctx.get(s.o.as_value())
                if o & 1:
                    out.append(o)
            for slot in read_slots:
                ctx.set(s.sel_miss, slot == MISS)
                ctx.set(s.sel_slot, 0 if slot == MISS else slot)
                await ctx.tick().repeat(3)
                reads[slot] = (ctx.get(s.r_packets), ctx.get(s.r_bytes), ctx.get(s.r_tc),
                               ctx.get(s.r_tp))

        sim.add_testbench(bench)
        sim.run()
        return out, reads


def _hv(bench, item):
    return _field(bench.item, item, "p")


def _plan(rng, keys, n):
    """Which key each of ``n`` frames carries: runs of one key, alternations of two, rotations
    of three, misses, bubbles and frames for another stage."""
    seq = []
    while len(seq) < n:
        roll = rng.random()
        a, b = rng.sample(keys, 2)
        if roll < 0.35:
            seq += [a] * rng.randrange(2, 9)
        elif roll < 0.7:
            seq += [a, b] * rng.randrange(2, 6)
        elif roll < 0.8:
            seq += [a, b, a, a, b, b]
        elif roll < 0.86 and len(keys) > 2:
            seq += rng.sample(keys, 3) * rng.randrange(2, 4)
        elif roll < 0.88:
            seq.append(MISS)
        elif roll < 0.94:
            seq.append("skip")
        else:
            seq.append(None)
    return seq[:n]


def _entries(bench, table, specs):
    entries = []
    tokens = []
    for key, action, args, meter in specs:
        e = make_entry(bench.program, table, key, action, args, meter=meter)
        log_start = len(bench.cp.device.writes)
        stage, slot = bench.cp.add(e)
        assert stage == bench.index
        tokens.append(bench.token(bench.cp.device.writes[log_start:]))
        entries.append((e, slot))
    return entries, tokens


@pytest.mark.parametrize("seed", [1, 2])
def test_counters_and_meters_back_to_back(seed):
    """The metered exact table ``ratelimit``: per-entry counters, every frame's colour and the
    buckets, with a frame every cycle."""
    rng = random.Random(seed)
    bench = Bench("ratelimit")
    dsts = ["192.0.2.1", "192.0.2.2", "192.0.2.3"]
    meters = [{"cir": 10**9, "cbs": 3000, "pir": 2 * 10**9, "pbs": 6000},
              {"cir": 5 * 10**8, "cbs": 2000, "pir": 10**9, "pbs": 4000},
              {"cir": 2 * 10**9, "cbs": 5000, "pir": 4 * 10**9, "pbs": 9000}]
    specs = [(d, "police", {"port": 2, "dscp": 46}, m) for d, m in zip(dsts, meters, strict=True)]
    entries, tokens = _entries(bench, "ratelimit", specs)
    keys = [int.from_bytes(bytes(int(x) for x in d.split(".")), "big") for d in dsts]
    slots = [slot for _, slot in entries]
    miss_key = int.from_bytes(bytes([198, 51, 100, 1]), "big")

    state = {k: [0, 0, MeterState()] for k in keys + [MISS]}
    items = list(tokens)
    expect = []  # per frame through this table: its colour (None for a miss)
    ts = 1000
    reinstall_at = 60
    for n, k in enumerate(_plan(rng, keys, 140)):
        if n == reinstall_at:  # reinstall the first entry: counters and meter start again
            items.append(_reinstall(bench, entries[0][0], slots[0]))
            state[keys[0]] = [0, 0, MeterState()]
        if k is None:
            items.append(None)
            continue
        ts += rng.choice([0, 3, 10, 40, 120]) if rng.random() < 0.95 else 200_000
        length = rng.randrange(64, 1519)
        if k == "skip":
            items.append(bench.frame(keys[0], length, ts, nxt=bench.index + 1))
            continue
        key = miss_key if k == MISS else k
        items.append(bench.frame(key, length, ts))
        st = state[k]
        st[0] += 1
        st[1] += length
        if k == MISS:
            expect.append(None)
        else:
            cfg = entries[keys.index(k)][0].meter
            expect.append(st[2].colour(cfg, length, ts))

    out, reads = bench.run(items, slots + [MISS])
    # the colours of the frames that hit, in order (misses and skipped frames have no hit)
    colours = []
    for o in out:
        if _field(bench.item, o, "tok"):
            continue
        hv = _hv(bench, o)
        if _field(bench.layout, hv, "hits") >> bench.index & 1:
            colours.append(COLORS[_field(bench.layout, hv, "color")])
    assert colours == [c for c in expect if c is not None]
    assert "red" in colours and "yellow" in colours and "green" in colours
    frac = limits.METER_FRAC_BITS
    for k, slot in zip(keys, slots, strict=True):
        packets, nbytes, m = state[k]
        assert reads[slot] == (packets, nbytes, m.tc >> frac, m.tp >> frac), (k, slot)
    assert reads[MISS][:2] == tuple(state[MISS][:2])


def _reinstall(bench, entry, slot):
    """The token of a commit that installs ``entry`` again in ``slot`` (counters and meter
    cleared): the staging registers still hold some entry, so write them all again."""
    return bench.token(entry_writes(bench.program, entry, bench.index, slot))


def test_lpm_counters_back_to_back():
    """The LPM table ``blocklist`` (the ternary stage's read-modify-write at ``pick``)."""
    rng = random.Random(7)
    bench = Bench("blocklist")
    prefixes = ["10.1.0.0/16", "10.2.3.0/24", "10.0.0.0/8"]
    specs = [(p, "drop", {}, None) for p in prefixes]
    entries, tokens = _entries(bench, "blocklist", specs)
    # one source address per entry (the longest prefix wins: 10.9.9.9 only matches /8)
    srcs = ["10.1.7.7", "10.2.3.4", "10.9.9.9"]
    keys = [int.from_bytes(bytes(int(x) for x in s.split(".")), "big") for s in srcs]
    slots = [slot for _, slot in entries]
    miss_key = int.from_bytes(bytes([192, 168, 1, 1]), "big")
    counts = {k: [0, 0] for k in keys + [MISS]}
    items = list(tokens)
    for k in _plan(rng, keys, 160):
        if k is None:
            items.append(None)
            continue
        length = rng.randrange(64, 1519)
        if k == "skip":
            items.append(bench.frame(keys[0], length, 0, nxt=bench.index + 1))
            continue
        items.append(bench.frame(miss_key if k == MISS else k, length, 0))
        counts[k][0] += 1
        counts[k][1] += length
    _, reads = bench.run(items, slots + [MISS])
    for k, slot in zip(keys, slots, strict=True):
        assert reads[slot][:2] == tuple(counts[k]), (k, slot)
    assert reads[MISS][:2] == tuple(counts[MISS])
