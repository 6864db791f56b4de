# Ref: RFC 2698 (two-rate three-colour marker, colour-blind mode); P4_16 §14 (table lookup,
#      default action on a miss); bmv2 direct counters and meters
"""One stage of the pipeline: one table, its counters and meters, and its actions.

A stage is a pipeline that moves every cycle and never stalls: each phase of a lookup is a
step between registers, and every step holds an *item* of its own (:func:`item_layout`): a
frame's header vector, or a commit token that installs or deletes an entry. A new item enters
each cycle, so a stage takes a frame every cycle whatever its table; the pipeline around the
stages admits a frame only when the output queue has room for every frame in flight
(:class:`nicsim.rtl.match_action.MatchAction`), which is what lets the stages never stall.

Steps (see :meth:`Stage.elaborate`):

==========  ==============================  ===========================================
step        exact table                     ternary / LPM table
==========  ==============================  ===========================================
``look``    bucket read (CRC-32 of the key)  the TCAM's chunk memories read (key bits)
``fetch``   the ways' words reach the       the chunks' words reach the output
            output registers                registers
``ways`` /  the four ways compared, the     ``match``: the chunks' words ANDed with the
``match``   winner chosen (one-hot)         valid bits, a match bit per slot
``tree1``,  --                              the priority tree, in two registered parts
``tree2``                                   (three, ``tree3``, for 16-bit priorities over
                                            three levels or more, or six levels or more)
``pick``    --                              the winner's action data read; counters read
``read``    the winner's action data        --
            selected; counters and meter
            time read
``load``    the words read reach the memories' output registers
``act``     rewrites; counters added (written a cycle later); the meter's time step
``fill``    (metered) tokens earned (multipliers); buckets read
``bound``   (metered) the bounds and constants of the fill and the take; buckets reach the register
``mark``    (metered) buckets filled up to the bursts, colour; written from registers a
            cycle later
==========  ==============================  ===========================================

A frame that the stage does not apply to goes through the same steps and changes nothing, so
every item leaves a stage a fixed number of cycles after it entered (:attr:`Stage.latency`).

Lookup
------
Exact tables are hash tables of 4-way buckets (one memory per way; the bucket is the CRC-32 of
the key, :mod:`.hashing`). Ternary tables (and LPM tables, whose priority is the field's width
less the prefix length, as the control plane puts it into the entry) take the matching entry
of the smallest priority. Their match is a TCAM in block RAM: the key is cut into chunks of
:data:`TCAM_CHUNK` bits (:func:`tcam_chunks`), each chunk addresses a memory of its own whose
word has a bit per slot, set where the slot's value and mask match that address's bits, and
a key matches the valid slots whose bit is set in every chunk's word. Keys and masks are
kept nowhere else: a 64-entry IPv6 LPM stage is 13 chunk memories (52 DP16KD blocks) and a
2-level AND a slot, where keys and masks in flip-flops and a comparator an entry took some
17,000 LUT4 and 17,000 flip-flops and left the router unroutable on an ECP5-85k. An LPM stage
keeps and compares only the bits of priority its field's width needs (``max_priority`` of the
compiled table: 6 bits for an IPv4 field, against 16 for a ternary table).

Commits
-------
A commit (``COMMIT``) enters the first stage as a token in place of a frame and travels with
the frames, in order. In its own stage it writes each part of the entry as it passes the step
that reads that part (the valid bit at ``match`` in a ternary / LPM table, the priorities at
``tree1``, the action data at ``pick``, or everything at ``look`` for an exact table), and
clears the counters at ``act`` and the meter at ``act`` and ``mark`` (unless the commit keeps
them): the frames ahead of it saw the whole old entry and counted for it, the frames behind it
see the whole new one, and the token's place in the pipeline is the write ports' free cycle
for the clears. An install into a ternary / LPM table that does not keep the counters (not a
modify, which keeps the key and mask) first sweeps the entry's bits into the TCAM's memories
(:meth:`Stage._sweep`, :func:`sweep_cycles`: 2,053 cycles with chunks of 10 bits) with the
slot invalid, while frames go on; the register block answers the ``COMMIT`` write and sends
the token once the sweep is done, so the entry appears at once and whole for the frames
behind the token, as any other.

Counters and meters
-------------------
Each slot has packet and byte counters and, in a metered table, an RFC 2698 meter; the miss
counters are one more counter slot. Every memory is a
:class:`nicsim.rtl.bram.RegisteredMemory` (with ``bram="dp16kd"``, those of at least
:data:`BRAM_MIN_DEPTH` words are DP16KD blocks whose own output register holds the word
read): two cycles from the address to the word, and nothing between the block RAM and that
register. A loop that reads a memory and writes it back spans four steps: the read, the cycle
the word takes to reach the output register, the update, and the write, which reaches the
memory a cycle after the update from registers (``late`` in :meth:`elaborate`): block RAMs lie
far from the logic, and no path runs from one block RAM through an update into another. The
memory holds what the items four steps ahead and further wrote; the words of the three items
ahead of that replace the word read where their slot is the same, the nearest first. That
forwarding is settled in the cycle before the update into two registers, whether and which
word, so the output register drives one multiplexer, the loop from a frame's word to the next
frame's closes through the forwarding register alone, and a frame right behind another of the
same slot starts from the value that frame wrote. The counters are read at ``read``/``pick``
and updated at ``act``; a meter's last time (and whether it started) likewise (its new value,
the frame's time, does not depend on the word read), so the next frame's time step is taken
from this frame's time; its buckets are read at ``fill`` and computed at ``mark``, so the fill,
the colour and the take of back-to-back frames of one entry are done in one cycle each, with no
chain of additions in it (``bound`` computes what does not depend on the bucket, see
:meth:`_meter`); ``mark`` computes them on the word read and on the word forwarded side by side
and chooses after, so the forwarding's choice is not in front of the compares. The read-back
ports (counters and buckets) are copies of the memories with the same writes.
"""

from amaranth.hdl import Cat, Const, Elaboratable, Module, Mux, Signal, unsigned
from amaranth.lib import data

from ..bram import PRIMITIVES, RegisteredMemory
from .actions import CSUM_PRE, REASON_METER, apply_ops, ipv4_csum_pre, op_fields
from .hashing import hash_taps
from .hv import EGRESS_DROP, HEADERS, NEXT_END
from .limits import EXACT_WAYS, METER_FRAC_BITS, METER_MAX_GAP_NS

__all__ = ["Stage", "table_arg_bits", "token_layout", "item_layout", "tcam_chunks",
           "sweep_cycles", "METER_CFG_BITS", "TCAM_CHUNK"]

ACTION_BITS = 4
PRIO_BITS = 16
RATE_BITS, BURST_BITS = 20, 21
METER_CFG_BITS = 2 * RATE_BITS + 2 * BURST_BITS
TOKEN_BITS = BURST_BITS + METER_FRAC_BITS
SLOT_BITS = 10
#: Key bits a TCAM chunk memory decodes: 1024 words, a DP16KD of 1024 x 18 for every 18 slots.
TCAM_CHUNK = 10
#: Memories at least this deep are DP16KD blocks with their output register under ``bram``;
#: shallower ones stay behavioural (LUT RAM and a fabric register: yosys maps them).
BRAM_MIN_DEPTH = 64


def tcam_chunks(key_bits):
    """The key's chunks in a ternary / LPM stage: ``(lowest bit, width)`` from the least
    significant bit, :data:`TCAM_CHUNK` bits each and the rest in the last."""
    return [(lo, min(TCAM_CHUNK, key_bits - lo)) for lo in range(0, key_bits, TCAM_CHUNK)]


def sweep_cycles(key_bits):
    """Cycles a sweep of a ternary / LPM stage takes from its start to its done pulse: six
    cycles for every three words of the deepest chunk memory, and one."""
    deepest = 1 << max(w for _, w in tcam_chunks(key_bits))
    return 6 * -(-deepest // 3) + 1


def table_arg_bits(table):
    """Bits of action data the table's actions read (at least 1)."""
    bits = 1
    for a in table["actions"]:
        for op in a["ops"]:
            for src in op[1:]:
                if isinstance(src, list) and src and src[0] == "arg":
                    bits = max(bits, src[1] + src[2])
    return bits


def token_layout(config):
    """Layout of a commit token: the staged entry, sized for the program's widest table."""
    tables = config["tables"]
    key_bits = max(sum(k[2] for k in t["key"]) for t in tables)
    return data.StructLayout({
        "stage": unsigned(3), "slot": unsigned(SLOT_BITS), "install": unsigned(1),
        "keep_counters": unsigned(1), "keep_meter": unsigned(1),
        "action": unsigned(ACTION_BITS), "prio": unsigned(PRIO_BITS),
        "key": unsigned(key_bits), "mask": unsigned(key_bits),
        "args": unsigned(max(table_arg_bits(t) for t in tables)),
        "meter": unsigned(METER_CFG_BITS if any(t["meter"] is not None for t in tables) else 1),
    })


def item_layout(hv_layout, tok_layout):
    """Layout of a pipeline item: ``v`` (an item is there), ``tok`` (a commit token, else a
    frame) and ``p``, the header vector or the token (they share the bits)."""
    return data.StructLayout({"v": unsigned(1), "tok": unsigned(1),
                              "p": unsigned(max(hv_layout.size, tok_layout.size))})


class Stage(Elaboratable):
    """One table stage (see the module docstring).

    Parameters
    ----------
    index : int
        Stage number (the header vector's ``nxt`` and a token's ``stage`` name it).
    table : dict
        The table's part of the compiled program.
    layout : StructLayout
        Header vector layout.
    tok_layout : StructLayout
        Commit token layout (:func:`token_layout`).
    bram : None or str
        Block RAM primitive of the memories at least :data:`BRAM_MIN_DEPTH` deep
        (:class:`nicsim.rtl.bram.RegisteredMemory`): ``None`` behavioural (simulation, any
        FPGA), ``"dp16kd"`` ECP5 blocks with their output register (synthesis only).

    Members
    -------
    i, o : Signal(item_layout)
        Items in (from the previous stage's last register) and out (this stage's last
        register), one a cycle.
    latency : int
        Cycles from ``i`` to ``o``.
    sel_slot, sel_miss, r_packets, r_bytes, r_tc, r_tp
        Counter and meter read-back (two cycles after ``sel_*`` changes).
    """

    def __init__(self, index, table, layout, tok_layout, bram=None):
        if bram not in PRIMITIVES:
            raise ValueError(f"Block RAM primitive must be one of {PRIMITIVES}, not {bram!r}")
        self.bram = bram
        self.index = index
        self.table = table
        self.layout = layout
        self.tok_layout = tok_layout
        self.item = item_layout(layout, tok_layout)
        self.kind = table["kind"]
        self.slots = table["slots"]
        self.key_bits = sum(k[2] for k in table["key"])
        self.arg_bits = table_arg_bits(table)
        self.metered = table["meter"] is not None
        # An LPM table's priority is its field's width less the prefix length (the compiler's
        # ``key_value``), at most ``max_priority``: the tree compares those few bits, not 16 (the
        # register block refuses a commit of a larger one to the stage).
        self.max_priority = table.get("max_priority")
        self.prio_bits = (PRIO_BITS if self.max_priority is None
                          else max(self.max_priority.bit_length(), 1))
        if self.kind == "exact":
            self.steps = ["look", "fetch", "ways", "read", "load", "act"]
        else:
            # The priority tree in two registered parts, or three where its compares are wide
            # (16-bit ternary priorities over three levels or more: three levels of those in
            # one cycle were the ACL program's critical path at rtl 779ba17) or its levels six
            # or more (three levels of 8-bit compares in one cycle, the IPv6 LPM stage's, were
            # the router program's at rtl 3c22723).
            levels = max((self.slots - 1).bit_length(), 1)
            parts = 3 if levels >= 3 and (self.prio_bits > 8 or levels >= 6) else 2
            self.tree_splits = [-(-k * levels // parts) - 1 for k in range(1, parts)]
            tree = [f"tree{k + 1}" for k in range(parts)]
            self.steps = ["look", "fetch", "match", *tree, "pick", "load", "act"]
        self.steps += ["fill", "bound", "mark"] if self.metered else []
        self.latency = len(self.steps)
        self.i = Signal(self.item)
        self.o = Signal(self.item)
        self.sel_slot = Signal(range(max(self.slots, 2)))
        self.sel_miss = Signal()
        self.r_packets, self.r_bytes = Signal(64), Signal(64)
        self.r_tc, self.r_tp = Signal(32), Signal(32)
        # A ternary / LPM stage's sweep (see :meth:`_sweep`): started by the register block for
        # the entry staged in ``sw_tok``, done a cycle after its last write.
        self.sw_go = Signal()
        self.sw_tok = Signal(tok_layout)
        self.sw_done = Signal()

    def _key(self, hv):
        parts = [hv[h][shift:shift + width] for h, shift, width in self.table["key"]]
        return Cat(*reversed(parts))  # the first key field most significant

    def _hv_dict(self, view):
        d = {name: view[name] for name, _ in self.layout}
        del d["valid"]
        for i, h in enumerate(HEADERS):
            d["valid_" + h] = view.valid[i]
        return d

    def elaborate(self, platform):
        m = Module()
        t = self.table
        steps = self.steps
        hv_bits, tok_bits = self.layout.size, self.tok_layout.size

        # The items: every step's register takes its input item each cycle; the steps that
        # rewrite the header vector override their part of it below.
        reg = {n: Signal(self.item, name=f"it_{n}") for n in steps}
        inp = {}
        prev = self.i
        for n in steps:
            inp[n] = prev
            m.d.sync += reg[n].eq(prev)
            prev = reg[n]
        m.d.comb += self.o.eq(prev)

        def hv_in(n):
            return data.View(self.layout, inp[n].p[:hv_bits])

        def hv_out(n):
            return data.View(self.layout, reg[n].p[:hv_bits])

        def tok_in(n):
            return data.View(self.tok_layout, inp[n].p[:tok_bits])

        def carry(value, a, b, name):
            """``value`` (registered at the end of step ``a``) as seen in step ``b``."""
            for k in range(steps.index(a) + 1, steps.index(b)):
                nxt = Signal.like(value, name=f"{name}_{steps[k]}")
                m.d.sync += nxt.eq(value)
                value = nxt
            return value

        def reg_at(value, n, name):
            r = Signal.like(value, name=f"{name}_{n}")
            m.d.sync += r.eq(value)
            return r

        def memory(width, depth, name, **kw):
            """A :class:`RegisteredMemory`: the address of step *s*, the word in step *s + 2*
            from a register (the block RAM's own under ``bram``). Every step reads in every
            cycle (``hold=False``), so memories of up to 512 words take 36-bit blocks."""
            depth = max(depth, 2)
            mem = RegisteredMemory(width, depth, hold=False,
                                   primitive=self.bram if depth >= BRAM_MIN_DEPTH else None, **kw)
            m.submodules[name] = mem
            return mem

        def shadow(mem, name):
            """A copy of ``mem`` (the same writes) with a read port of its own."""
            copy = memory(mem.width, mem.depth, name)
            m.d.comb += [copy.w_addr.eq(mem.w_addr), copy.w_data.eq(mem.w_data),
                         copy.w_en.eq(mem.w_en)]
            return copy

        def late(mem, addr, n, name):
            """A read-modify-write whose write reaches ``mem`` a cycle late, from registers.

            ``mem`` is read in the step before ``n`` (at ``addr``); its word leaves the output
            register in the step after ``n``, where the caller drives the write into the
            returned ``(en, addr, data)`` signals, which reach the memory (and its copies) in
            the next cycle: the block RAMs' inputs are far from the logic, so no path runs from
            a block RAM through the update into another. A read misses the writes of the three
            items ahead: the one three ahead writes in the cycle of the read, the one two ahead
            in step ``n`` (both from the registers), the one one ahead computes its write in
            step ``n``; their words (the nearest first) replace the memory's where their address
            is the same. The forwarding is settled at ``n`` into two registers (whether, and the
            word), so the memory's output register drives one multiplexer. Returns ``(same,
            ahead, word, write)``, the word being ``Mux(same, ahead, word)``, so a caller may
            compute on both and choose after.
            """
            k_en = Signal(name=f"{name}_k_en")
            k_addr = Signal.like(mem.w_addr, name=f"{name}_k_addr")
            k_data = Signal.like(mem.w_data, name=f"{name}_k_data")
            m.d.sync += [mem.w_en.eq(k_en), mem.w_addr.eq(k_addr), mem.w_data.eq(k_data)]
            r = steps[steps.index(n) - 1]
            hit3 = reg_at(mem.w_en & (mem.w_addr == addr), r, f"{name}_hit3")
            data3 = reg_at(mem.w_data, r, f"{name}_data3")
            hit2 = reg_at(k_en & (k_addr == addr), r, f"{name}_hit2")
            hit1 = k_en & (k_addr == reg_at(addr, r, f"{name}_addr"))
            same = reg_at(hit1 | hit2 | hit3, n, f"{name}_same")
            ahead = reg_at(Mux(hit1, k_data, Mux(hit2, mem.w_data, data3)), n, f"{name}_ahead")
            return same, ahead, mem.r_data, (k_en, k_addr, k_data)

        # Per item, from ``look`` on: a frame the table applies to, a frame that skips it for a
        # missing header, a token of this stage.
        hv0 = hv_in("look")
        v0, tok0 = inp["look"].v, inp["look"].tok
        mine0 = v0 & tok0 & (tok_in("look").stage == self.index)
        named = v0 & ~tok0 & (hv0.nxt == self.index)
        valid_ok = Cat(*(hv0.valid[HEADERS.index(h)] == 1 for h in t["if_valid"]),
                       Const(1, 1)).all()
        app_q = reg_at(named & valid_ok, "look", "app")
        inv_q = reg_at(named & ~valid_ok, "look", "inv")
        mine_q = reg_at(mine0, "look", "mine")

        seen = {}

        def flags(n):
            if n not in seen:
                seen[n] = (carry(app_q, "look", n, "app"), carry(inv_q, "look", n, "inv"),
                           carry(mine_q, "look", n, "mine"))
            return seen[n]

        key = Signal(self.key_bits)
        m.d.comb += key.eq(self._key(self._hv_dict(hv0)))
        entry_bits = 1 + self.key_bits + ACTION_BITS + self.arg_bits + \
            (METER_CFG_BITS if self.metered else 0)
        tk0 = tok_in("look")

        def unpack_entry(word):
            o = 0
            out = {}
            for name, n in (("valid", 1), ("key", self.key_bits), ("act", ACTION_BITS),
                            ("args", self.arg_bits)) + ((("meter", METER_CFG_BITS),)
                                                        if self.metered else ()):
                out[name] = word[o:o + n]
                o += n
            return out

        hit = Signal()
        slot = Signal(range(max(self.slots, 2)))
        act = Signal(ACTION_BITS)
        args = Signal(self.arg_bits)
        mcfg = Signal(METER_CFG_BITS)
        # Table storage and lookup: ``hit``, ``slot`` (and, in an exact table, the action data)
        # registered at ``ways`` / the last tree step; the counters are read in the next step.
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
                mem = memory(entry_bits, buckets, f"way{w}")
                parts = [tk0.install, tk0.key[:self.key_bits], tk0.action,
                         tk0.args[:self.arg_bits]]
                if self.metered:
                    parts.append(tk0.meter)
                m.d.comb += [
                    mem.r_addr.eq(bucket),
                    mem.w_addr.eq(tk0.slot // EXACT_WAYS),
                    mem.w_data.eq(Cat(*parts)),
                    mem.w_en.eq(mine0 & (tk0.slot % EXACT_WAYS == w)),
                ]
                # the ways' words leave the memories' output registers at ``fetch`` and are
                # compared in the next step
                way_data.append(unpack_entry(mem.r_data))
            bucket_q = carry(reg_at(bucket, "look", "bucket"), "look", "ways", "bucket")
            key_q = carry(reg_at(key, "look", "key"), "look", "ways", "key")
            # the lowest way that matches, selected by a one-hot AND-OR (no priority chain)
            matches = [e["valid"] & (e["key"] == key_q) for e in way_data]
            first = [matches[w] & ~Cat(*matches[:w]).any() if w else matches[0]
                     for w in range(EXACT_WAYS)]

            way = Const(0, 2)
            for w in range(1, EXACT_WAYS):
                way = way | Mux(first[w], w, 0)
            m.d.sync += [hit.eq(Cat(*matches).any()), slot.eq(Cat(way, bucket_q))]
            # The winner's action data is chosen in the next step (``read``, where it is
            # registered anyway) from registered copies of the ways' fields and the registered
            # one-hot ``first``: the compare and the wide selection are not one cycle.
            fields = [("act", ACTION_BITS), ("args", self.arg_bits)]
            fields += [("meter", METER_CFG_BITS)] if self.metered else []
            first_q = reg_at(Cat(*first), "ways", "first")
            held = [{f: reg_at(way_data[w][f], "ways", f"way{w}_{f}") for f, _ in fields}
                    for w in range(EXACT_WAYS)]

            def select(field, width):
                out = Const(0, width)
                for w in range(EXACT_WAYS):
                    out = out | Mux(first_q[w], held[w][field], 0)
                return out

            m.d.comb += [act.eq(select("act", ACTION_BITS)),
                         args.eq(select("args", self.arg_bits))]
            if self.metered:
                m.d.comb += mcfg.eq(select("meter", METER_CFG_BITS))
        else:
            n = self.slots
            valid = Signal(n)
            prios = [Signal(self.prio_bits, name=f"prio{i}") for i in range(n)]
            _, _, mine_m = flags("match")
            _, _, mine_t1 = flags("tree1")
            _, _, mine_pk = flags("pick")
            tkm, tk1, tk3 = tok_in("match"), tok_in("tree1"), tok_in("pick")
            # The TCAM: a memory per chunk of the key, addressed by the chunk's bits, whose word
            # has a bit per slot: whether the slot's entry matches those bits. A key matches a
            # valid entry when every chunk's word has the entry's bit. Read at ``look``, the
            # words leave their output registers at ``match``, where the bits are ANDed.
            chunk_mems = []
            for c, (lo, width) in enumerate(tcam_chunks(self.key_bits)):
                mem = memory(max(n, 2), 1 << width, f"tcam{c}", w_read=True)
                m.d.comb += mem.r_addr.eq(key[lo:lo + width])
                chunk_mems.append((lo, width, mem))
            matches = Signal(n)
            every = Const(-1, n)
            for _, _, mem in chunk_mems:
                every = every & mem.r_data[:n]
            m.d.sync += matches.eq(valid & every)
            self._sweep(m, chunk_mems, valid)
            for i in range(n):
                with m.If(mine_m & (tkm.slot == i)):
                    m.d.sync += valid[i].eq(tkm.install)
                with m.If(mine_t1 & (tk1.slot == i)):
                    m.d.sync += prios[i].eq(tk1.prio[:self.prio_bits])
            # The action data is read by the winner's slot only: a memory read at ``pick``
            # whose word leaves its output register at ``act``, written by a token at ``pick``
            # (the frame behind it reads a cycle later, after the write).
            data_parts = [tk3.action, tk3.args[:self.arg_bits]]
            if self.metered:
                data_parts.append(tk3.meter)
            act_mem = memory(len(Cat(*data_parts)), n, "action_data")
            m.d.comb += [act_mem.w_addr.eq(tk3.slot), act_mem.w_data.eq(Cat(*data_parts)),
                         act_mem.w_en.eq(mine_pk)]
            # The matching entry with the smallest priority (lowest slot on a tie): the match
            # of every entry registered, then a tree of comparisons in registered parts.
            cands = [(matches[i], prios[i], Const(i, range(max(n, 2)))) for i in range(n)]
            splits = self.tree_splits
            level = 0
            while len(cands) > 1:
                nxt = []
                for j, (a, b) in enumerate(zip(cands[0::2], cands[1::2], strict=False)):
                    take_b = b[0] & (~a[0] | (b[1] < a[1]))
                    node = (Signal(name=f"t{level}_{j}_match"),
                            Signal(self.prio_bits, name=f"t{level}_{j}_prio"),
                            Signal(range(max(n, 2)), name=f"t{level}_{j}_slot"))
                    stmts = [node[0].eq(a[0] | b[0]), node[1].eq(Mux(take_b, b[1], a[1])),
                             node[2].eq(Mux(take_b, b[2], a[2]))]
                    if level in splits:
                        m.d.sync += stmts
                    else:
                        m.d.comb += stmts
                    nxt.append(node)
                if len(cands) % 2:
                    odd = cands[-1]
                    if level in splits:
                        node = (Signal(name=f"t{level}_odd_match"),
                                Signal(self.prio_bits, name=f"t{level}_odd_prio"),
                                Signal(range(max(n, 2)), name=f"t{level}_odd_slot"))
                        m.d.sync += [node[0].eq(odd[0]), node[1].eq(odd[1]), node[2].eq(odd[2])]
                        odd = node
                    nxt.append(odd)
                cands = nxt
                level += 1
            any_match, _, best = cands[0]
            if n == 1:  # no tree: the match alone, registered in ``tree1``
                for k in range(len(splits)):
                    any_match = reg_at(any_match, f"tree{k + 1}", "match")
                best = Const(0, range(2))
            m.d.sync += [hit.eq(any_match), slot.eq(best)]
            # ``pick``: the winner's action data read (its word out of the register at ``act``)
            hit_pk, slot_pk = reg_at(hit, "pick", "hit"), reg_at(slot, "pick", "slot")
            m.d.comb += [act_mem.r_addr.eq(slot), act.eq(act_mem.r_data[:ACTION_BITS]),
                         args.eq(act_mem.r_data[ACTION_BITS:ACTION_BITS + self.arg_bits])]
            if self.metered:
                m.d.comb += mcfg.eq(act_mem.r_data[ACTION_BITS + self.arg_bits:])
        if self.kind == "exact":
            hit_rd, slot_rd = hit, slot  # registered at ``ways``: seen in ``read``
            hit_a = carry(reg_at(hit, "read", "hit"), "read", "act", "hit")
            slot_a = carry(reg_at(slot, "read", "slot"), "read", "act", "slot")
            act_a = carry(reg_at(act, "read", "act"), "read", "act", "act")
            args_a = carry(reg_at(args, "read", "args"), "read", "act", "args")
            mcfg_a = carry(reg_at(mcfg, "read", "mcfg"), "read", "act", "mcfg")
        else:
            hit_rd, slot_rd = hit, slot  # registered at the last tree step: seen in ``pick``
            hit_a = carry(hit_pk, "pick", "act", "hit")
            slot_a = carry(slot_pk, "pick", "act", "slot")
            act_a, args_a, mcfg_a = act, args, mcfg

        # Counters ------------------------------------------------------------------------------
        app_a, inv_a, mine_a = flags("act")
        tka = tok_in("act")
        # Two 64-bit counters a slot (block RAM from 63 entries; as LUT RAM they took over a
        # thousand cells in a table of 256 entries), and a copy for the read-back port
        ctr = memory(128, self.slots + 1, "counters")
        ctr_axi = shadow(ctr, "counters_rb")
        ctr_slot_a = Mux(hit_a, slot_a, self.slots)
        ctr_addr = Signal.like(ctr_slot_a)
        m.d.comb += [
            ctr_addr.eq(Mux(hit_rd, slot_rd, self.slots)),
            ctr.r_addr.eq(ctr_addr),
            ctr_axi.r_addr.eq(Mux(self.sel_miss, self.slots, self.sel_slot)),
            # the read-back out of the output register (two cycles after ``sel_*``)
            self.r_packets.eq(ctr_axi.r_data[:64]), self.r_bytes.eq(ctr_axi.r_data[64:]),
        ]
        hva = hv_in("act")
        same, ahead, read, (k_en, k_addr, k_data) = late(ctr, ctr_addr, "load", "ctr")
        ctr_word = Mux(same, ahead, read)
        new_ctr = Cat((ctr_word[:64] + 1)[:64], (ctr_word[64:] + hva.length)[:64])
        clear_ctr = mine_a & ~(tka.install & tka.keep_counters)
        m.d.comb += [
            k_addr.eq(Mux(mine_a, tka.slot, ctr_slot_a)),
            k_data.eq(Mux(mine_a, 0, new_ctr)),
            k_en.eq(app_a | clear_ctr),
        ]
        self._act(m, hva, hv_out("act"), app_a, inv_a, hit_a, act_a, args_a, hv_in("load"))
        if self.metered:
            self._meter(m, flags, carry, reg_at, late, memory, shadow, tok_in, hv_in,
                        hv_out, slot_rd, hit_a, slot_a, mcfg_a)
        else:
            m.d.comb += [self.r_tc.eq(0), self.r_tp.eq(0)]
        return m

    def _sweep(self, m, chunk_mems, valid):
        """Write the staged entry's bit into every word of the TCAM's chunk memories.

        Started by ``sw_go`` (the register block holds the ``COMMIT`` write's response until
        ``sw_done``; no token is in flight then), which clears the slot's valid bit and loads
        the entry's value, mask and one-hot slot into registers of the sweep's own. Each memory
        is read and written through its write port (``w_read``), so lookups go on: three words
        read, then the same three written, six cycles for three words. A word read at *t*
        leaves port A's output register at *t + 2*, where the slot's bit is replaced by whether
        the chunk's value matches the word's address (``(address & mask) == value``, so a value
        with bits outside its mask never matches, as the comparison it replaces) into a
        register, written at *t + 3*: no path runs from a block RAM through logic into another.
        An address past a shallower chunk's depth wraps, and its word is written again with the
        same bit.
        """
        n = max(self.slots, 2)
        deep = max(w for _, w, _ in chunk_mems)
        groups = -(-(1 << deep) // 3)
        tok = self.sw_tok
        run = Signal()
        ph = Signal(6)  # one-hot phase: three reads, three writes
        addr = [Signal(deep, name=f"sw_addr{k}") for k in range(3)]  # the group's three words
        onehot = Signal(n)
        value = Signal(self.key_bits)
        mask = Signal(self.key_bits)
        w_addr = Signal(deep)
        a_d1, a_d2 = Signal(deep), Signal(deep)
        m.d.comb += w_addr.eq(Mux(ph[0] | ph[3], addr[0], Mux(ph[1] | ph[4], addr[1], addr[2])))
        m.d.sync += [a_d1.eq(w_addr), a_d2.eq(a_d1), self.sw_done.eq(0)]
        for lo, width, mem in chunk_mems:
            q = Signal(mem.width, name=f"sw_word{lo}")
            x = a_d2[:width]
            hit = (x & mask[lo:lo + width]) == value[lo:lo + width]
            m.d.sync += q.eq(Mux(hit, mem.w_rdata | onehot, mem.w_rdata & ~onehot))
            m.d.comb += [mem.w_addr.eq(w_addr[:width]), mem.w_data.eq(q),
                         mem.w_en.eq(run & (ph[3] | ph[4] | ph[5]))]
        with m.If(self.sw_go):
            m.d.sync += [run.eq(1), ph.eq(1),
                         value.eq(tok.key[:self.key_bits]), mask.eq(tok.mask[:self.key_bits])]
            m.d.sync += [addr[k].eq(k) for k in range(3)]
            for i in range(self.slots):
                with m.If(tok.slot == i):
                    m.d.sync += [onehot.eq(1 << i), valid[i].eq(0)]
        with m.Elif(run):
            m.d.sync += ph.eq(Cat(ph[5], ph[:5]))
            with m.If(ph[5]):
                m.d.sync += [addr[k].eq(addr[k] + 3) for k in range(3)]
                with m.If(addr[0] == 3 * (groups - 1)):  # the last group (below the depth)
                    m.d.sync += [run.eq(0), self.sw_done.eq(1)]

    def _act(self, m, hv, out_hv, app, inv, hit, act, args, hv_load):
        """The action step: rewrite the vector, choose the next stage.

        The IPv4 checksum's part of the header alone for each field the actions write
        (``ipv4_csum_pre``) is computed at ``load`` from the same vector and registered, so
        that ``act`` adds the written values to it and folds once (the ACL program's critical
        path at rtl 5536e44 was that part's chain of additions, in ``act``)."""
        t = self.table
        names = [n for n, _ in self.layout]
        d = self._hv_dict(hv)
        if "ipv4" in d:
            pre = {}
            for key in sorted({(shift, width) for a in t["actions"] for op in a["ops"]
                               for h, shift, width in op_fields(op) if h == "ipv4"}):
                pre[key] = Signal(16, name=f"s{self.index}_csum_pre_{key[0]}_{key[1]}")
                m.d.sync += pre[key].eq(ipv4_csum_pre(hv_load.ipv4, *key))
            d[CSUM_PRE] = (d["ipv4"], pre)
        act_id = Signal(ACTION_BITS)
        act_args = Signal(self.arg_bits)
        m.d.comb += [act_id.eq(Mux(hit, act, t["default"])),
                     act_args.eq(Mux(hit, args, t["default_args"]))]
        results = [apply_ops(m, d, a["ops"], act_args, f"s{self.index}_{a['name']}")
                   for a in t["actions"]]
        with m.If(app):
            with m.Switch(act_id):
                for i, out in enumerate(results):
                    with m.Case(i):
                        for name in names:
                            if name == "valid":
                                m.d.sync += out_hv.valid.eq(
                                    Cat(*(out["valid_" + h] for h in HEADERS)))
                            elif name in out and out[name] is not d[name]:
                                m.d.sync += out_hv[name].eq(out[name])
                        nxt_hit = t["next_hit"][i] & NEXT_END
                        m.d.sync += out_hv.nxt.eq(Mux(hit, nxt_hit, t["next_miss"] & NEXT_END))
            with m.If(hit):
                m.d.sync += out_hv.hits[self.index].eq(1)
        with m.Elif(inv):
            m.d.sync += out_hv.nxt.eq(t["next_invalid"] & NEXT_END)

    def _meter(self, m, flags, carry, reg_at, late, memory, shadow, tok_in, hv_in,
               hv_out, slot_rd, hit_a, slot_a, mcfg_a):
        """RFC 2698 colour-blind marking, exactly as the reference counts tokens: the time step
        (``act``), the tokens earned (``fill``), the bounds of the fill and the take
        (``bound``), the buckets filled up to their bursts, the colour and the take (``mark``)."""
        # The last time and the start bit: read with the counters, written after ``act``.
        last = memory(65, self.slots, "meter_time")
        app_a, _, mine_a = flags("act")
        tka = tok_in("act")
        hva = hv_in("act")
        keep = tka.install & tka.keep_meter
        same, ahead, read, (k_en, k_addr, k_data) = late(last, slot_rd, "load", "time")
        m.d.comb += [
            last.r_addr.eq(slot_rd),
            k_addr.eq(Mux(mine_a, tka.slot, slot_a)),
            k_data.eq(Mux(mine_a, 0, Cat(hva.ts, Const(1, 1)))),
            k_en.eq((app_a & hit_a) | (mine_a & ~keep)),
        ]
        # One subtraction: its borrow says the time went backwards (no tokens), its high word
        # a gap over METER_MAX_GAP_NS (counted as that).
        last_word = Mux(same, ahead, read)
        diff = Signal(65)
        m.d.comb += diff.eq(Cat(hva.ts, Const(0, 1)) - Cat(last_word[:64], Const(0, 1)))
        dt = reg_at(Mux(diff[64], 0, Mux(diff[32:64].any(), METER_MAX_GAP_NS, diff[:32]))[:32],
                    "act", "dt")
        started = carry(reg_at(last_word[64], "act", "started"), "act", "mark", "started")
        mcfg_f = reg_at(mcfg_a, "act", "mcfg")
        slot_f = reg_at(slot_a, "act", "slot")
        hit_f = reg_at(hit_a, "act", "hit")
        # ``fill``: the tokens earned.
        cinc, pinc = mcfg_f[:RATE_BITS], mcfg_f[RATE_BITS:2 * RATE_BITS]
        inc_c = reg_at((dt * cinc)[:32 + RATE_BITS], "fill", "inc_c")
        inc_p = reg_at((dt * pinc)[:32 + RATE_BITS], "fill", "inc_p")
        mcfg_b = reg_at(mcfg_f, "fill", "mcfg")
        slot_b = reg_at(slot_f, "fill", "slot")
        hit_b = reg_at(hit_f, "fill", "hit")
        # ``bound``: everything of the fill and the take that does not depend on the bucket
        # (the bounds a bucket is compared with, the constants added to it); the buckets
        # registered.
        # With ``T`` the bucket, ``I`` the tokens earned, ``M`` the burst, ``N`` the frame's
        # length: the filled bucket is ``min(T + I, M)`` (``M`` before the first frame), so it
        # is clamped when ``I > M`` or ``T > M - I``; it is below ``N`` when clamped and
        # ``M < N``, or unclamped and ``I < N`` and ``T < N - I``; and taking ``N`` from it
        # leaves ``M - N`` or ``T + (I - N)`` (within the bucket's width: the result fits).
        hvb = hv_in("bound")
        need = Cat(Const(0, METER_FRAC_BITS), hvb.length)
        bounds = {}
        for name, inc, burst in (
                ("c", inc_c, mcfg_b[2 * RATE_BITS:2 * RATE_BITS + BURST_BITS]),
                ("p", inc_p, mcfg_b[2 * RATE_BITS + BURST_BITS:])):
            full = Cat(Const(0, METER_FRAC_BITS), burst)
            bounds[name] = {
                "full": reg_at(full, "bound", f"full_{name}"),
                "sat": reg_at(inc > full, "bound", f"sat_{name}"),
                "hi": reg_at((full - inc)[:TOKEN_BITS], "bound", f"hi_{name}"),
                "full_low": reg_at(full < need, "bound", f"full_low_{name}"),
                "full_take": reg_at((full - need)[:TOKEN_BITS], "bound", f"full_take_{name}"),
                "inc_big": reg_at(inc >= need, "bound", f"inc_big_{name}"),
                "lo": reg_at((need - inc)[:TOKEN_BITS], "bound", f"lo_{name}"),
                "inc": reg_at(inc[:TOKEN_BITS], "bound", f"inc_{name}"),
                "take": reg_at((inc - need)[:TOKEN_BITS], "bound", f"take_{name}"),
            }
        slot_k = reg_at(slot_b, "bound", "slot")
        hit_k = reg_at(hit_b, "bound", "hit")
        tb = memory(2 * TOKEN_BITS, self.slots, "meter_tokens")
        tb_axi = shadow(tb, "meter_tokens_rb")
        m.d.comb += [
            tb.r_addr.eq(slot_f),  # read at ``fill``, out of the register at ``mark``
            tb_axi.r_addr.eq(self.sel_slot),
            self.r_tc.eq(tb_axi.r_data[METER_FRAC_BITS:TOKEN_BITS]),
            self.r_tp.eq(tb_axi.r_data[TOKEN_BITS + METER_FRAC_BITS:2 * TOKEN_BITS]),
        ]
        # ``mark``: the loop a frame closes for the next one of its entry, one cycle: each
        # bucket compared with two bounds and added to two constants side by side, then the
        # colour chooses; the buckets written back. The compares and additions are made twice,
        # on the block RAM's word and on the word forwarded from the frames just ahead, and
        # their results chosen after: the forwarding's choice (a wide fan-out) is not in front
        # of the carry chains.
        app_k, _, mine_k = flags("mark")
        tkk = tok_in("mark")
        hvk = hv_in("mark")
        # The buckets ``mark`` computes reach the memory a cycle later, from registers
        # (``late``), so the loop to the next frame's bucket goes through ``ahead`` alone.
        same, ahead, read, (k_en, k_addr, k_data) = late(tb, slot_f, "bound", "tokens")

        def fill_take(name, tokens):
            b = bounds[name]
            clamp = ~started | b["sat"] | (tokens > b["hi"])
            return {
                "low": Mux(clamp, b["full_low"], ~b["inc_big"] & (tokens < b["lo"])),
                "filled": Mux(clamp, b["full"], (tokens + b["inc"])[:TOKEN_BITS]),
                "taken": Mux(clamp, b["full_take"], (tokens + b["take"])[:TOKEN_BITS]),
            }

        res = {}
        for name, lo in (("c", 0), ("p", TOKEN_BITS)):
            on_ahead = fill_take(name, ahead[lo:lo + TOKEN_BITS])
            on_read = fill_take(name, read[lo:lo + TOKEN_BITS])
            res[name] = {k: Mux(same, on_ahead[k], on_read[k]) for k in on_read}
        red = res["p"]["low"]
        yellow = ~red & res["c"]["low"]
        tp2 = Mux(red, res["p"]["filled"], res["p"]["taken"])
        tc2 = Mux(red | yellow, res["c"]["filled"], res["c"]["taken"])
        color = Mux(red, 3, Mux(yellow, 2, 1))
        m.d.comb += [
            k_addr.eq(Mux(mine_k, tkk.slot, slot_k)),
            k_data.eq(Mux(mine_k, 0, Cat(tc2, tp2))),
            k_en.eq((app_k & hit_k) | (mine_k & ~(tkk.install & tkk.keep_meter))),
        ]
        out = hv_out("mark")
        with m.If(app_k & hit_k):
            m.d.sync += out.color.eq(color)
            if self.table["meter"] == "drop":
                with m.If(red & (hvk.egress != EGRESS_DROP)):
                    m.d.sync += [out.egress.eq(EGRESS_DROP), out.reason.eq(REASON_METER)]
