# Ref: RFC 2698 (two-rate three-colour marker, colour-blind mode); P4_16 §14 (table lookup,
#      default action on a miss); bmv2 direct counters and meters
"""One stage of the pipeline: one table, its counters and meters, and its actions.

A frame's header vector enters, the stage applies its table if the vector names it as the next
stage (and its ``if_valid`` headers are valid), and the vector leaves with the action's
rewrites, the egress decision, the hit bit and the next stage. One frame is in a stage at a
time and moves one phase a cycle, each phase a short step between registers (see
:meth:`Stage.elaborate`); the next frame enters as one leaves if the next stage is idle: an
exact stage takes 5 cycles per frame, a ternary or LPM stage 6, a metered one 3 more, and a
frame that the stage does not apply to 2.

Lookup
------
Exact tables are hash tables of 4-way buckets (one memory per way; the bucket is the CRC-32 of
the key, :mod:`.hashing`); ternary tables (and LPM tables, whose priority is the prefix length
the control plane puts into the entry) compare every entry at once and take the matching entry
of the smallest priority. An entry is installed in one cycle from the staging registers
(``COMMIT``), so a frame sees the whole old entry or the whole new one.

Counters and meters
-------------------
Each slot has packet and byte counters and, in a metered table, an RFC 2698 meter whose
buckets and last time live in a memory; the miss counters are one more counter slot. A frame
reads them after its lookup and writes them back when it leaves; a commit that clears a slot
in that cycle goes first and the frame's write waits a cycle. A frame whose slot is cleared
(deleted or re-installed) between the read and the write does not write: the new entry starts
from zero. A commit's clear reaches the counters as many cycles after the entry as a frame
takes from its lookup to its counter read, so the frames that saw the old entry count for it
and those that saw the new one count for the new one; in a ternary or LPM stage the
priorities and the action data are replaced that much later than the keys for the same
reason (a frame reads them after its compare).
"""

from amaranth.hdl import Cat, Const, Elaboratable, Module, Mux, Signal
from amaranth.lib.memory import Memory

from .actions import REASON_METER, apply_ops
from .hashing import hash_taps
from .hv import EGRESS_DROP, HEADERS, NEXT_END
from .limits import EXACT_WAYS, METER_FRAC_BITS, METER_MAX_GAP_NS

__all__ = ["Stage", "table_arg_bits", "METER_CFG_BITS"]

ACTION_BITS = 4
PRIO_BITS = 16
RATE_BITS, BURST_BITS = 20, 21
METER_CFG_BITS = 2 * RATE_BITS + 2 * BURST_BITS
TOKEN_BITS = BURST_BITS + METER_FRAC_BITS


def table_arg_bits(table):
    """Bits of action data the table's actions read (at least 1)."""
    bits = 1
    for a in table["actions"]:
        for op in a["ops"]:
            for src in op[1:]:
                if isinstance(src, list) and src and src[0] == "arg":
                    bits = max(bits, src[1] + src[2])
    return bits


class Stage(Elaboratable):
    """One table stage (see the module docstring).

    Parameters
    ----------
    index : int
        Stage number (the header vector's ``nxt`` names it).
    table : dict
        The table's part of the compiled program.
    layout : StructLayout
        Header vector layout.

    Members
    -------
    i_valid, i_ready, i_hv / o_valid, o_ready, o_hv
        Header vectors in and out (valid/ready handshakes).
    o_take, idle
        ``o_take``: the consumer takes a vector offered in this cycle (a new one may then enter
        as the old one leaves); ``idle``: the stage takes a vector offered in this cycle.
    c_en, c_slot, c_install, c_keep_counters, c_keep_meter, c_key, c_mask, c_args, c_action,
    c_prio, c_meter
        Commit of the staged entry into a slot (``c_en`` for one cycle).
    sel_slot, sel_miss, r_packets, r_bytes, r_tc, r_tp
        Counter and meter read-back (a cycle after ``sel_*`` changes).
    """

    def __init__(self, index, table, layout):
        self.index = index
        self.table = table
        self.layout = layout
        self.kind = table["kind"]
        self.slots = table["slots"]
        self.key_bits = sum(k[2] for k in table["key"])
        self.arg_bits = table_arg_bits(table)
        self.metered = table["meter"] is not None
        self.i_valid, self.i_ready = Signal(), Signal()
        self.i_hv = Signal(layout)
        self.o_valid, self.o_ready = Signal(), Signal()
        self.o_hv = Signal(layout)
        self.o_take, self.idle = Signal(), Signal()
        self.c_en, self.c_install = Signal(), Signal()
        self.c_keep_counters, self.c_keep_meter = Signal(), Signal()
        self.c_slot = Signal(range(max(self.slots, 2)))
        self.c_key, self.c_mask = Signal(self.key_bits), Signal(self.key_bits)
        self.c_args = Signal(self.arg_bits)
        self.c_action = Signal(ACTION_BITS)
        self.c_prio = Signal(PRIO_BITS)
        self.c_meter = Signal(METER_CFG_BITS)
        self.sel_slot = Signal(range(max(self.slots, 2)))
        self.sel_miss = Signal()
        self.r_packets, self.r_bytes = Signal(64), Signal(64)
        self.r_tc, self.r_tp = Signal(32), Signal(32)

    def _key(self, hv):
        parts = [hv[h][shift:shift + width] for h, shift, width in self.table["key"]]
        return Cat(*reversed(parts))  # the first key field most significant

    def _hv_dict(self, sig):
        d = {name: sig[name] for name, _ in self.layout}
        del d["valid"]
        for i, h in enumerate(HEADERS):
            d["valid_" + h] = sig.valid[i]
        return d

    def elaborate(self, platform):
        m = Module()
        t = self.table
        cur = Signal(self.layout)
        hv = self._hv_dict(cur)
        key = Signal(self.key_bits)
        m.d.comb += key.eq(self._key(hv))

        hit = Signal()
        slot = Signal(range(max(self.slots, 2)))
        act = Signal(ACTION_BITS)
        args = Signal(self.arg_bits)
        mcfg = Signal(METER_CFG_BITS)
        entry_bits = 1 + self.key_bits + ACTION_BITS + self.arg_bits + \
            (METER_CFG_BITS if self.metered else 0)

        def pack_entry(valid):
            parts = [valid, self.c_key, self.c_action, self.c_args]
            if self.metered:
                parts.append(self.c_meter)
            return Cat(*parts)

        def unpack_entry(word):
            o = 0
            out = {}
            for name, n in (("valid", 1), ("key", self.key_bits), ("act", ACTION_BITS),
                            ("args", self.arg_bits)) + ((("meter", METER_CFG_BITS),)
                                                        if self.metered else ()):
                out[name] = word[o:o + n]
                o += n
            return out

        # The frame's journey, one phase a cycle: ``look`` (exact: the bucket is read; ternary:
        # every entry compared), ``ways`` (exact: the ways compared) or ``tree1``/``tree2``/
        # ``pick`` (ternary: the priority tree in two halves, then the entry's data), ``read``
        # (the counters and the meter read), ``act`` (the action's rewrites, the counters
        # added, the meter's time step), ``fill``/``clamp``/``mark`` (metered: the tokens
        # earned, the buckets filled up to their bursts, the colour), ``out`` (the counters and
        # the meter written, the vector handed on; the next frame may enter in that cycle).
        if self.kind == "exact":
            phases = ["idle", "look", "ways", "read", "act"]
        else:
            phases = ["idle", "look", "tree1", "tree2", "pick", "act"]
        phases += (["fill", "clamp", "mark"] if self.metered else []) + ["out"]
        ph = {name: i for i, name in enumerate(phases)}
        state = Signal(range(len(phases)))

        def at(name):
            return state == ph[name]

        applies = Signal()
        m.d.comb += applies.eq((cur.nxt == self.index)
                               & Cat(*(cur.valid[HEADERS.index(h)] == 1
                                       for h in t["if_valid"]), Const(1, 1)).all())
        # Commits, delayed: a lookup reads an entry over several cycles (ternary: keys and masks,
        # then the priorities a cycle later, then the action data), so each part of an entry is
        # replaced as many cycles after the keys; the counters and the meter are cleared when a
        # frame that saw the new entry reads them, no earlier.
        read_delay = ph["read"] - ph["look"] if "read" in ph else ph["pick"] - ph["look"]
        c_d = [{"en": self.c_en, "slot": self.c_slot, "install": self.c_install,
                "keep_counters": self.c_keep_counters, "keep_meter": self.c_keep_meter,
                "prio": self.c_prio, "action": self.c_action, "args": self.c_args,
                "meter": self.c_meter}]
        for k in range(read_delay):
            prev = c_d[-1]
            nxt = {name: Signal.like(v, name=f"c_d{k + 1}_{name}") for name, v in prev.items()}
            m.d.sync += [nxt[name].eq(v) for name, v in prev.items()]
            c_d.append(nxt)
        cc = c_d[read_delay]  # the commit as the counters and meters see it

        # Table storage and lookup --------------------------------------------------------------
        if self.kind == "exact":
            buckets = self.slots // EXACT_WAYS
            index_bits = max(buckets.bit_length() - 1, 0)
            taps = hash_taps(self.key_bits, index_bits)
            bucket = Signal(max(index_bits, 1))
            for j, bits in enumerate(taps):
                x = Const(0, 1)
                for b in bits:
                    x = x ^ key[b]
                m.d.comb += bucket[j].eq(x)
            way_data = []
            for w in range(EXACT_WAYS):
                mem = Memory(shape=entry_bits, depth=max(buckets, 2), init=[])
                m.submodules[f"way{w}"] = mem
                rd = mem.read_port()
                wr = mem.write_port()
                m.d.comb += [
                    rd.addr.eq(bucket),
                    wr.addr.eq(self.c_slot // EXACT_WAYS),
                    wr.data.eq(pack_entry(self.c_install)),
                    wr.en.eq(self.c_en & (self.c_slot % EXACT_WAYS == w)),
                ]
                way_data.append(unpack_entry(rd.data))
            bucket_q = Signal.like(bucket)
            key_q = Signal.like(key)
            with m.If(at("look")):
                m.d.sync += [bucket_q.eq(bucket), key_q.eq(key)]
            with m.If(at("ways")):
                m.d.sync += hit.eq(0)
                for w in reversed(range(EXACT_WAYS)):
                    e = way_data[w]
                    with m.If(e["valid"] & (e["key"] == key_q)):
                        m.d.sync += [hit.eq(1), slot.eq(bucket_q * EXACT_WAYS + w),
                                     act.eq(e["act"]), args.eq(e["args"])]
                        if self.metered:
                            m.d.sync += mcfg.eq(e["meter"])
        else:
            n = self.slots
            valid = Signal(n)
            values = [Signal(self.key_bits, name=f"value{i}") for i in range(n)]
            masks = [Signal(self.key_bits, name=f"mask{i}") for i in range(n)]
            prios = [Signal(PRIO_BITS, name=f"prio{i}") for i in range(n)]
            acts = [Signal(ACTION_BITS, name=f"act{i}") for i in range(n)]
            argss = [Signal(self.arg_bits, name=f"args{i}") for i in range(n)]
            meters = [Signal(METER_CFG_BITS, name=f"meter{i}") for i in range(n)] \
                if self.metered else []
            c1, c3 = c_d[1], c_d[3]
            for i in range(n):
                with m.If(self.c_en & (self.c_slot == i)):
                    m.d.sync += [valid[i].eq(self.c_install), values[i].eq(self.c_key),
                                 masks[i].eq(self.c_mask)]
                with m.If(c1["en"] & (c1["slot"] == i)):
                    m.d.sync += prios[i].eq(c1["prio"])
                with m.If(c3["en"] & (c3["slot"] == i)):
                    m.d.sync += [acts[i].eq(c3["action"]), argss[i].eq(c3["args"])]
                    if self.metered:
                        m.d.sync += meters[i].eq(c3["meter"])
            # Find the matching entry with the smallest priority (lowest slot on a tie): the
            # match of every entry registered, then a tree of comparisons in two registered
            # halves.
            matches = Signal(n)
            with m.If(at("look")):
                m.d.sync += matches.eq(Cat(*(valid[i] & ((key & masks[i]) == values[i])
                                             for i in range(n))))
            cands = [(matches[i], prios[i], Const(i, range(max(n, 2)))) for i in range(n)]
            levels = max((n - 1).bit_length(), 1)
            level = 0
            while len(cands) > 1:
                nxt = []
                for j, (a, b) in enumerate(zip(cands[0::2], cands[1::2], strict=False)):
                    take_b = b[0] & (~a[0] | (b[1] < a[1]))
                    node = (Signal(name=f"t{level}_{j}_match"), Signal(PRIO_BITS,
                                                                        name=f"t{level}_{j}_prio"),
                            Signal(range(max(n, 2)), name=f"t{level}_{j}_slot"))
                    stmts = [node[0].eq(a[0] | b[0]), node[1].eq(Mux(take_b, b[1], a[1])),
                             node[2].eq(Mux(take_b, b[2], a[2]))]
                    if level == (levels + 1) // 2 - 1:  # the first half's results registered
                        with m.If(at("tree1")):
                            m.d.sync += stmts
                    else:
                        m.d.comb += stmts
                    nxt.append(node)
                if len(cands) % 2:
                    odd = cands[-1]
                    if level == (levels + 1) // 2 - 1:
                        node = (Signal(name=f"t{level}_odd_match"),
                                Signal(PRIO_BITS, name=f"t{level}_odd_prio"),
                                Signal(range(max(n, 2)), name=f"t{level}_odd_slot"))
                        with m.If(at("tree1")):
                            m.d.sync += [node[0].eq(odd[0]), node[1].eq(odd[1]),
                                         node[2].eq(odd[2])]
                        odd = node
                    nxt.append(odd)
                cands = nxt
                level += 1
            any_match, _, best = cands[0]
            with m.If(at("tree2")):
                m.d.sync += [hit.eq(any_match), slot.eq(best)]
            with m.If(at("pick")):  # the slot as an index: a balanced multiplexer
                m.d.sync += [act.eq(Cat(*acts).word_select(slot, ACTION_BITS)),
                             args.eq(Cat(*argss).word_select(slot, self.arg_bits))]
                if self.metered:
                    m.d.sync += mcfg.eq(Cat(*meters).word_select(slot, METER_CFG_BITS))

        # Counters and meters -------------------------------------------------------------------
        ctr = Memory(shape=128, depth=self.slots + 1, init=[])
        m.submodules.counters = ctr
        ctr_rd = ctr.read_port()
        ctr_axi = ctr.read_port()
        ctr_wr = ctr.write_port()
        ctr_slot = Signal.like(slot, name="ctr_slot")
        m.d.comb += [
            ctr_slot.eq(Mux(hit, slot, self.slots)),
            ctr_rd.addr.eq(ctr_slot),
            ctr_axi.addr.eq(Mux(self.sel_miss, self.slots, self.sel_slot)),
            self.r_packets.eq(ctr_axi.data[:64]),
            self.r_bytes.eq(ctr_axi.data[64:]),
        ]
        clear_ctr = cc["en"] & ~(cc["install"] & cc["keep_counters"])
        new_ctr = Signal(128)
        if self.metered:
            state_bits = 2 * TOKEN_BITS + 64 + 1
            mst = Memory(shape=state_bits, depth=max(self.slots, 2), init=[])
            m.submodules.meters = mst
            mst_rd = mst.read_port()
            mst_axi = mst.read_port()
            mst_wr = mst.write_port()
            m.d.comb += [
                mst_rd.addr.eq(slot),
                mst_axi.addr.eq(self.sel_slot),
                self.r_tc.eq(mst_axi.data[METER_FRAC_BITS:TOKEN_BITS]),
                self.r_tp.eq(mst_axi.data[TOKEN_BITS + METER_FRAC_BITS:2 * TOKEN_BITS]),
            ]
            clear_mst = cc["en"] & ~(cc["install"] & cc["keep_meter"])
            new_mst = Signal(state_bits)
        else:
            clear_mst = Const(0, 1)

        # The write port is the commits' first: a frame's write waits while one clears a slot.
        pend = Signal()  # the frame's counters (and meter) are still to be written
        busy = clear_ctr | clear_mst
        do_write = at("out") & pend & ~busy
        # A frame enters an idle stage, or one whose frame leaves in this cycle for a consumer
        # that is sure to take it (``o_take``: the next stage is idle), so the handshakes of the
        # stages do not chain into one combinational path.
        m.d.comb += [self.i_ready.eq(at("idle") | (at("out") & ~(pend & busy) & self.o_take)),
                     self.o_valid.eq(at("out") & ~(pend & busy)), self.o_hv.eq(cur),
                     self.idle.eq(at("idle"))]
        with m.If(do_write):
            m.d.sync += pend.eq(0)
        with m.If(self.i_valid & self.i_ready):
            m.d.sync += [cur.eq(self.i_hv), state.eq(ph["look"])]
        with m.Elif(at("out")):
            with m.If(self.o_valid & self.o_ready):
                m.d.sync += state.eq(ph["idle"])
        with m.Elif(at("look")):
            with m.If(cur.nxt != self.index):
                m.d.sync += state.eq(ph["out"])
            with m.Elif(~applies):
                m.d.sync += [cur.nxt.eq(t["next_invalid"] & NEXT_END), state.eq(ph["out"])]
            with m.Else():
                m.d.sync += state.eq(state + 1)
        with m.Elif(~at("idle")):
            m.d.sync += state.eq(state + 1)
        with m.If(at("act")):
            m.d.sync += pend.eq(1)
            self._act(m, cur, hv, hit, act, args, new_ctr, ctr_rd.data)
        if self.metered:
            self._meter(m, ph, at, cur, hit, mcfg, new_mst, mst_rd.data)

        # Counter (and meter) write port: a commit's clear first, then the frame's update. A
        # frame whose slot was cleared after its counters were read (the entry was deleted or
        # replaced meanwhile) leaves the cleared values alone.
        stale_ctr, stale_mst = Signal(), Signal()
        first_read = ph["read"] if "read" in ph else ph["pick"]
        in_flight = (state >= first_read) & (state <= ph["out"])
        with m.If(at("look")):
            m.d.sync += [stale_ctr.eq(0), stale_mst.eq(0)]
        with m.If(in_flight & clear_ctr & (cc["slot"] == ctr_slot)):
            m.d.sync += stale_ctr.eq(1)
        with m.If(in_flight & cc["en"] & ~(cc["install"] & cc["keep_meter"])
                  & (cc["slot"] == slot)):
            m.d.sync += stale_mst.eq(1)
        m.d.comb += ctr_wr.addr.eq(Mux(clear_ctr, cc["slot"], ctr_slot))
        m.d.comb += ctr_wr.data.eq(Mux(clear_ctr, 0, new_ctr))
        m.d.comb += ctr_wr.en.eq(clear_ctr | (do_write & ~stale_ctr))
        if self.metered:
            m.d.comb += [
                mst_wr.addr.eq(Mux(clear_mst, cc["slot"], slot)),
                mst_wr.data.eq(Mux(clear_mst, 0, new_mst)),
                mst_wr.en.eq(clear_mst | (do_write & hit & ~stale_mst)),
            ]
        return m

    def _act(self, m, cur, hv, hit, act, args, new_ctr, ctr_data):
        """The action cycle: rewrite the vector, count, choose the next stage."""
        t = self.table
        names = [n for n, _ in self.layout]
        act_id = Signal(ACTION_BITS)
        act_args = Signal(self.arg_bits)
        m.d.comb += [act_id.eq(Mux(hit, act, t["default"])),
                     act_args.eq(Mux(hit, args, t["default_args"]))]
        m.d.sync += new_ctr.eq(Cat((ctr_data[:64] + 1)[:64], (ctr_data[64:] + cur.length)[:64]))
        results = [apply_ops(m, hv, a["ops"], act_args, f"s{self.index}_{a['name']}")
                   for a in t["actions"]]
        with m.Switch(act_id):
            for i, out in enumerate(results):
                with m.Case(i):
                    for name in names:
                        if name == "valid":
                            m.d.sync += cur.valid.eq(Cat(*(out["valid_" + h] for h in HEADERS)))
                        elif name in out and out[name] is not hv[name]:
                            m.d.sync += cur[name].eq(out[name])
                    nxt_hit = t["next_hit"][i] & NEXT_END
                    m.d.sync += cur.nxt.eq(Mux(hit, nxt_hit, t["next_miss"] & NEXT_END))
        with m.If(hit):
            m.d.sync += cur.hits[self.index].eq(1)

    def _meter(self, m, ph, at, cur, hit, mcfg, new_mst, mst_data):
        """RFC 2698 colour-blind marking, exactly as the reference counts tokens, in four
        cycles: the time step (``act``), the tokens earned (``fill``), the buckets filled up to
        their bursts (``clamp``), the colour (``mark``)."""
        cinc, pinc = mcfg[:RATE_BITS], mcfg[RATE_BITS:2 * RATE_BITS]
        cbs = mcfg[2 * RATE_BITS:2 * RATE_BITS + BURST_BITS]
        pbs = mcfg[2 * RATE_BITS + BURST_BITS:]
        tc = Signal(TOKEN_BITS)
        tp = Signal(TOKEN_BITS)
        started = Signal()
        dt = Signal(32)
        with m.If(at("act")):
            last = mst_data[2 * TOKEN_BITS:2 * TOKEN_BITS + 64]
            # One subtraction: its borrow says the time went backwards (no tokens), its high
            # word a gap over METER_MAX_GAP_NS (counted as that).
            diff = Signal(65)
            m.d.comb += diff.eq(Cat(cur.ts, Const(0, 1)) - Cat(last, Const(0, 1)))
            m.d.sync += [
                tc.eq(mst_data[:TOKEN_BITS]), tp.eq(mst_data[TOKEN_BITS:2 * TOKEN_BITS]),
                started.eq(mst_data[2 * TOKEN_BITS + 64]),
                dt.eq(Mux(diff[64], 0, Mux(diff[32:64].any(), METER_MAX_GAP_NS, diff[:32]))),
            ]
        inc_c = Signal(32 + RATE_BITS)
        inc_p = Signal(32 + RATE_BITS)
        with m.If(at("fill")):
            m.d.sync += [inc_c.eq(dt * cinc), inc_p.eq(dt * pinc)]
        cmax = Cat(Const(0, METER_FRAC_BITS), cbs)
        pmax = Cat(Const(0, METER_FRAC_BITS), pbs)
        tc1 = Signal(TOKEN_BITS)
        tp1 = Signal(TOKEN_BITS)
        with m.If(at("clamp")):
            fill_c = tc + inc_c
            fill_p = tp + inc_p
            m.d.sync += [tc1.eq(Mux(started, Mux(fill_c > cmax, cmax, fill_c), cmax)),
                         tp1.eq(Mux(started, Mux(fill_p > pmax, pmax, fill_p), pmax))]
        need = Cat(Const(0, METER_FRAC_BITS), cur.length)
        red = tp1 < need
        yellow = ~red & (tc1 < need)
        tp2 = Mux(red, tp1, tp1 - need)[:TOKEN_BITS]
        tc2 = Mux(red | yellow, tc1, tc1 - need)[:TOKEN_BITS]
        color = Mux(red, 3, Mux(yellow, 2, 1))
        with m.If(at("mark") & hit):
            m.d.sync += [new_mst.eq(Cat(tc2, tp2, cur.ts, Const(1, 1))), cur.color.eq(color)]
            if self.table["meter"] == "drop":
                with m.If(red & (cur.egress != EGRESS_DROP)):
                    m.d.sync += [cur.egress.eq(EGRESS_DROP), cur.reason.eq(REASON_METER)]
