# Ref: P4_16 v1.2.4 and bmv2 simple_switch (the pipeline model); see nicsim.hw.ref.match_action
"""SmartNIC match-action pipeline: parser, match stages, actions and deparser.

:class:`MatchAction` is elaborated for one compiled program
(:func:`nicsim.hw.match_action.compile.compile_program`): the parser, the key wiring and the
action logic of each table are fixed at elaboration; entries are installed at run time through
the registers of :mod:`.regs`. It follows the golden reference
:class:`nicsim.hw.ref.match_action.Pipeline` frame for frame.

Datapath
--------
Ingress: the first :data:`~.limits.PARSE_WINDOW` bytes of a frame go into a window register,
the rest into a data FIFO; at the last beat the window, the length and the timestamp (``user``
of the input, in nanoseconds: the meters' clock) become a job. The parser (:mod:`.parser`, three
register steps) turns a job into the header vector (:mod:`.hv`), which visits the stages in
order (:class:`.stage.Stage`, one table each: pipelines that move every cycle and never stall,
a frame or a commit token in every step). A frame enters the first stage only while the output
queue after the last stage has room for it and every frame in flight (credits, given back as a
frame leaves the queue), and a commit enters as a token in place of a frame
(:meth:`MatchAction._registers`); the parser's advance is a register computed a cycle ahead.
The deparser (:mod:`.deparser`) builds the queue's next frame (its rewritten head, its lengths,
its result word) into one of three slots whenever one is free, so that the queues are popped by
the slots' state alone; it emits a frame from its slot, or drains a dropped one, frees the slot
and starts the next frame with the last beat, and writes one result word per frame
(:data:`RESULT_FIELDS`) in the cycle after (a frame starts only with a place in the result
queue for its word).

Throughput (Verilator, back-to-back frames, ``benchmarks/bench_match_action.py``): 64-byte
frames at 64 bits take 8 cycles (10 Gb/s line rate); at 512 bits, where 100 Gb/s of 64-byte
frames is one every 1.68 cycles at 250 MHz, the stages take a frame every cycle (see
``docs/match-action.md`` for the measured figures).
"""

from amaranth.hdl import Cat, Const, Module, Mux, Shape, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from ..axil import RegisterBusSignature
from ..bram import PRIMITIVES
from ..stream import beat_signature, check_width
from . import limits, regs
from .actions import REASON_OVERSIZE, REASON_RUNT
from .deparser import build_head, offset_flags, unpack_flags, written_bytes
from .hv import DROP_REASONS, EGRESS_DROP, EGRESS_PORT, HEADERS, NEXT_END, hv_layout
from .parser import Parser
from .regs import REGISTERS
from .stage import Stage, item_layout, token_layout

__all__ = ["MatchAction", "REGISTERS", "DEFAULT_CONFIG", "RESULT_FIELDS", "DROP_REASONS",
           "result_fields", "MAX_FRAME_LEN"]

MAX_FRAME_LEN = 9018  # jumbo MTU + Ethernet header + one tag, as hw.ref.checksum
#: Result word: ``(name, low bit, width)``.
RESULT_FIELDS = (("egress", 0, 2), ("number", 2, 8), ("reason", 10, 3), ("mirror", 13, 1),
                 ("mirror_queue", 14, 6), ("color", 20, 2), ("hits", 22, 8))

#: The program of a build made without one: a single exact stage on the EtherType.
DEFAULT_CONFIG = {
    "name": "default", "stages": limits.DEFAULT_STAGES, "custom": None,
    "tables": [{
        "name": "ethertype", "kind": "exact", "slots": 16, "key": [["ethernet", 0, 16]],
        "if_valid": [], "meter": None,
        "actions": [{"name": "nop", "ops": []}, {"name": "drop", "ops": [["drop"]]}],
        "default": 0, "default_args": 0, "next_hit": [-1, -1], "next_miss": -1,
        "next_invalid": -1,
    }],
}


def result_fields(word):
    """Split a result word into its fields (a dict of ints)."""
    return {name: (word >> lo) & ((1 << n) - 1) for name, lo, n in RESULT_FIELDS}


def _registered_output(m, fifo, name):
    """A register after ``fifo``'s output: ``(data, rdy, take)``, ``take`` driven by the reader
    (the entry in ``data`` is taken while ``rdy``). A queue in block RAM gives its word 5.6 ns
    after the clock (yosys folds the queue's own output register into the DP16KD's read, which
    has no output register then), so a reader that computes on the word reads it from here: the
    queue refills the register in the cycle it is taken, one entry a cycle as before."""
    data = Signal(fifo.width, name=f"{name}_q")
    rdy = Signal(name=f"{name}_q_rdy")
    take = Signal(name=f"{name}_q_take")
    m.d.comb += fifo.r_en.eq(fifo.r_rdy & (~rdy | take))
    with m.If(fifo.r_en):
        m.d.sync += [data.eq(fifo.r_data), rdy.eq(1)]
    with m.Elif(take):
        m.d.sync += rdy.eq(0)
    return data, rdy, take


class MatchAction(wiring.Component):
    """The match-action pipeline for one compiled program.

    Parameters
    ----------
    width : int
        Data width in bits (64 .. 512).
    program : dict, optional
        Compiled program (:data:`DEFAULT_CONFIG` when absent).
    bram : None or str
        Block RAM primitive of the stages' memories (:class:`.stage.Stage`): ``None``
        behavioural, ``"dp16kd"`` ECP5 blocks with their output register (``nicsim synth``).

    Members
    -------
    i : In(stream)
        Frames in; ``user`` is the frame's ingress time in nanoseconds.
    o : Out(stream)
        Frames out (dropped frames do not appear).
    result : Out(stream)
        One word per frame in, in order (:data:`RESULT_FIELDS`).
    bus : In(RegisterBusSignature)
        Registers (:mod:`.regs`).
    """

    def __init__(self, width=64, program=None, bram=None):
        if bram not in PRIMITIVES:
            raise ValueError(f"Block RAM primitive must be one of {PRIMITIVES}, not {bram!r}")
        self.bram = bram
        self.width = check_width(width)
        self.config = program if program is not None else DEFAULT_CONFIG
        tables = self.config["tables"]
        if not 1 <= len(tables) <= limits.MAX_STAGES:
            raise ValueError(f"A program has 1 to {limits.MAX_STAGES} tables, not {len(tables)}")
        self.layout = hv_layout(self.config)
        super().__init__({
            "i": In(beat_signature(width, 64)),
            "o": Out(beat_signature(width)),
            "result": Out(stream.Signature(64)),
            "bus": In(RegisterBusSignature(12)),
        })

    def elaborate(self, platform):
        m = Module()
        W = self.width // 8
        win_beats = limits.PARSE_WINDOW // W if W <= limits.PARSE_WINDOW else 1
        custom = self.config.get("custom")
        custom_bytes = custom["length"] if custom else 1

        # Ingress: window, data FIFO, jobs -------------------------------------------------------
        depth = -(-(MAX_FRAME_LEN - limits.PARSE_WINDOW) // W) + 4
        m.submodules.data = data_fifo = SyncFIFOBuffered(width=self.width, depth=depth)
        # (The deparser reads the beats through a register after the block RAM: the ACL
        # program's critical path at rtl f3df672 ran from it across the chip into ``carry``.)
        d_data, d_rdy, d_take = _registered_output(m, data_fifo, "data")
        job_w = 8 * limits.PARSE_WINDOW + 14 + 64 + 12 + 1
        m.submodules.jobs = jobs = SyncFIFOBuffered(width=job_w, depth=4)
        window = Signal(8 * limits.PARSE_WINDOW)
        # The window's lane the next beat fills, one-hot (none once past the window): each
        # lane's enable is a flip-flop, not a compare of a beat count, fanned out to its bits.
        lane = Signal(win_beats, init=1)
        length = Signal(15)
        r_beats = Signal(12)
        beat_bytes = Signal(range(W + 1))
        keep = self.i.payload.keep
        m.d.comb += beat_bytes.eq(sum(keep[i] for i in range(W)))
        new_len = length + beat_bytes
        # Whether a beat goes to the data FIFO, from registers and a compare of a few bits: past
        # the window (``past_win``), and the frame's bytes so far leave room for a whole beat
        # (``room_big``) or for this one (``room_lo``: the room under a beat; ``room_neg``: the
        # frame is already over the limit). All are worked out a beat ahead from ``new_len``.
        past_win = Signal()
        room_big = Signal(init=1)
        room_neg = Signal()
        room_lo = Signal(range(W))
        room_next = Signal(range(-(W + 1), MAX_FRAME_LEN + 1))
        m.d.comb += room_next.eq(MAX_FRAME_LEN - new_len)
        to_fifo = past_win & (room_big | (~room_neg & (beat_bytes <= room_lo)))
        win_next = Signal.like(window)
        m.d.comb += win_next.eq(window)
        for b in range(win_beats):
            with m.If(lane[b]):
                m.d.comb += win_next[b * self.width:(b + 1) * self.width].eq(
                    self.i.payload.data[:min(self.width, 8 * limits.PARSE_WINDOW)])
        # ``ready`` is a register, not the FIFOs' ``w_rdy`` (their levels through compares into
        # the window's enable, over a thousand flip-flops, and the job FIFO's write): both
        # FIFOs have room for a beat in the next cycle if they had room for two in this one.
        in_ready = Signal()
        m.d.sync += in_ready.eq((data_fifo.level < data_fifo.depth - 1)
                                & (jobs.level < jobs.depth - 1))
        m.d.comb += self.i.ready.eq(in_ready)
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [window.eq(win_next), lane.eq(lane << 1),
                         length.eq(Mux(new_len > MAX_FRAME_LEN + 1, MAX_FRAME_LEN + 1, new_len)),
                         past_win.eq(past_win | lane[win_beats - 1]),
                         room_big.eq(room_next >= W), room_neg.eq(room_next < 0),
                         room_lo.eq(room_next[:len(room_lo)])]
            m.d.comb += [data_fifo.w_en.eq(to_fifo), data_fifo.w_data.eq(self.i.payload.data)]
            with m.If(to_fifo):
                m.d.sync += r_beats.eq(r_beats + 1)
            with m.If(self.i.payload.last):
                m.d.sync += [lane.eq(1), length.eq(0), r_beats.eq(0),
                             past_win.eq(0), room_big.eq(1), room_neg.eq(0)]
                m.d.comb += [
                    jobs.w_en.eq(1),
                    jobs.w_data.eq(Cat(win_next, Mux(new_len > MAX_FRAME_LEN, MAX_FRAME_LEN + 1,
                                                     new_len)[:14],
                                       self.i.payload.user, (r_beats + to_fifo)[:12], Const(0, 1))),
                ]

        # Parser: a pipeline of three register steps (all move together when the vector is
        # admitted into the stages or the last step is empty) -----------------------------------
        j_window = jobs.r_data[:8 * limits.PARSE_WINDOW]
        o = 8 * limits.PARSE_WINDOW
        j_len = jobs.r_data[o:o + 14]
        j_ts = jobs.r_data[o + 14:o + 78]
        j_rbeats = jobs.r_data[o + 78:o + 90]
        p_adv = Signal(init=1)  # a register: see the admission below
        p_valid = [Signal(name=f"parse_valid{i}") for i in range(3)]
        # The window goes to the side FIFO as the job enters the parser (the parser's last step
        # keeps only the layer-2 bytes it reads): it waits there for the deparser while the
        # frame's vector is parsed and goes through the stages.
        side_w = 8 * limits.PARSE_WINDOW
        side_in = Signal()
        with m.If(p_adv):
            m.d.sync += [p_valid[0].eq(side_in), p_valid[1].eq(p_valid[0]),
                         p_valid[2].eq(p_valid[1])]

        def p_reg(value):
            q = Signal(len(value))
            with m.If(p_adv):
                m.d.sync += q.eq(value)
            return q

        parser = Parser(self.config).elaborate_into(m, j_window, j_len, p_reg,
                                                    carry=(j_len, j_ts, j_rbeats))
        p_len, p_ts, p_rbeats = parser.carry
        tok_layout = token_layout(self.config)
        item = item_layout(self.layout, tok_layout)
        stages = [Stage(i, t, self.layout, tok_layout, bram=self.bram)
                  for i, t in enumerate(self.config["tables"])]
        for i, s in enumerate(stages):
            m.submodules[f"stage{i}"] = s
        # Admission: the stages never stall, so a frame enters only while the output queue has
        # room for it and every frame in flight (``credit``); a commit enters as a token in
        # place of a frame (the parser waits a cycle).
        latency = 1 + sum(s.latency for s in stages)
        depth = latency + 4  # the admission-to-take loop: frames in flight at one a cycle
        # ``side``: the frames past the jobs FIFO and not yet taken by the deparser (at most
        # ``depth`` admitted and the parser's three); ``offsets``: the admitted frames' header
        # offsets, which the parser finds.
        m.submodules.side = side = SyncFIFOBuffered(width=side_w, depth=depth + 3)
        headers = [h for h in HEADERS if h in {name for name, _ in self.layout}]
        flags = offset_flags(parser.l2_end, {"l3": parser.offset["ipv4"],
                                             "l4": parser.offset["tcp"],
                                             "custom": parser.offset["custom"]}, headers)
        # (The offsets queue, in LUT memory, carries the frame's length and input beats as
        # well: the deparser's length arithmetic starts from its fast output, not from the
        # side queue's block RAM, 5.8 ns from clock to data without an output register: the
        # router program's critical path with nextpnr's static placer.)
        off_w = 8 + len(flags)
        m.submodules.offsets = offsets = SyncFIFOBuffered(width=off_w + 14 + 12, depth=depth)
        # The output queue keeps what the deparser reads: the control fields, the valid bits,
        # layer 2 and the bytes of the other headers that some action may write (the rest of a
        # header is the window's, :func:`.deparser.written_bytes`). So the bits no later step
        # reads leave the pipeline after the last stage that reads them: synthesis removes
        # their registers, and the wires that carried them through the stages.
        written = written_bytes(self.config["tables"], custom_bytes)
        kept = []  # bit ranges of the header vector in the queue
        for name, field in self.layout:
            lo = field.offset
            if name in written:
                n = Shape.cast(field.shape).width // 8
                kept += [(lo + 8 * (n - 1 - k), lo + 8 * (n - k)) for k in sorted(written[name])]
            else:
                kept.append((lo, lo + Shape.cast(field.shape).width))
        q_width = sum(hi - lo for lo, hi in kept)
        m.submodules.out = out_q = SyncFIFOBuffered(width=q_width, depth=depth)
        frames_in, drops = Signal(32), Signal(32)
        c_en, c_en_next, token = self._registers(m, stages, latency, frames_in, drops,
                                                 tok_layout)
        hv0 = Signal(self.layout)
        runt = p_len < 14
        big = p_len > MAX_FRAME_LEN
        m.d.comb += [
            hv0.valid.eq(Cat(*(parser.valid[h] for h in HEADERS))),
            hv0.nxt.eq(Mux(runt | big, NEXT_END, 0)),
            hv0.egress.eq(Mux(runt | big, EGRESS_DROP, EGRESS_PORT)),
            hv0.reason.eq(Mux(runt, REASON_RUNT, Mux(big, REASON_OVERSIZE, 0))),
            hv0.length.eq(p_len),
        ]
        if "ts" in {name for name, _ in self.layout}:
            m.d.comb += hv0.ts.eq(p_ts)
        for name, _ in self.layout:
            if name in parser.value:
                m.d.comb += hv0[name].eq(parser.value[name])
        in_flight = Signal(range(depth + 1))
        room = Signal(init=1)  # ``in_flight < depth``, kept as a register
        admit = Signal()
        taken = Signal()
        # The parser's advance (``~p_valid[2] | admit``) enables its registers, the jobs FIFO's
        # pop and the side FIFO's push, well over a thousand flip-flops: it is a register,
        # computed a cycle ahead from the next values of the commit strobe, of the credit and of
        # the parser's last step, so that nothing but its own net lies between it and them.
        room_next = Signal()
        p_valid2_next = Signal()
        m.d.comb += [
            room_next.eq(Mux(admit & ~taken, in_flight < depth - 1, (taken & ~admit) | room)),
            p_valid2_next.eq(Mux(p_adv, p_valid[1], p_valid[2])),
        ]
        m.d.sync += [room.eq(room_next), p_adv.eq(~p_valid2_next | (~c_en_next & room_next))]
        m.d.comb += [
            admit.eq(p_valid[2] & ~c_en & room),
            side_in.eq(jobs.r_rdy & side.w_rdy),
            jobs.r_en.eq(p_adv & side.w_rdy),
            side.w_en.eq(p_adv & side_in),
            side.w_data.eq(j_window),
            offsets.w_en.eq(admit),
            offsets.w_data.eq(Cat(parser.l2_end, flags, p_len, p_rbeats)),
        ]
        m.d.sync += in_flight.eq(in_flight + admit - taken)
        head_item = Signal(item)
        m.d.sync += head_item.v.eq(c_en | admit)
        m.d.sync += head_item.tok.eq(c_en)
        with m.If(c_en):
            m.d.sync += head_item.p.eq(token)
        with m.Else():
            m.d.sync += head_item.p.eq(hv0)
        prev = head_item
        for s in stages:
            m.d.comb += s.i.eq(prev)
            prev = s.o
        last = stages[-1]
        m.d.comb += [out_q.w_en.eq(last.o.v & ~last.o.tok),
                     out_q.w_data.eq(Cat(*(last.o.p[lo:hi] for lo, hi in kept)))]
        # (The bytes not kept are zero: the deparser takes the window's.)
        # (The queues grow with the stages' latency; past 32 entries yosys puts them into block
        # RAM too: the output queue was the router's critical path at rtl 811d69c.)
        oq, oq_rdy, oq_take = _registered_output(m, out_q, "out")
        out_hv = Signal(self.layout)
        pos = 0
        for lo, hi in kept:
            m.d.comb += out_hv.as_value()[lo:hi].eq(oq[pos:pos + hi - lo])
            pos += hi - lo

        # Deparser: the head of the next frame is built from the queues' outputs into one of three
        # slots; the deparser sends a frame from its slot and frees it with the last beat ------
        # The side and offsets queues' words go through registers of their own after the block
        # RAM before the head is built from them: the router program's critical path at rtl
        # f3df672 ran from the side queue's block RAM through the head's byte choice into a
        # slot.
        sd, sd_rdy, sd_take = _registered_output(m, side, "side")
        od, od_rdy, od_take = _registered_output(m, offsets, "offsets")
        sq = {"window": sd[:o], "length": od[off_w:off_w + 14],
              "r_beats": od[off_w + 14:off_w + 26], "l2_end": od[:8],
              "flags": unpack_flags(od[8:off_w], headers)}
        hvd = {name: out_hv[name] for name, _ in self.layout if name != "valid"}
        for i, h in enumerate(HEADERS):
            hvd["valid_" + h] = out_hv.valid[i]
        head_raw, head_len_c, out_len_c = build_head(m, hvd, sq, custom_bytes, written)
        pad = -len(head_raw) % self.width
        head_c = Cat(head_raw, Const(0, pad)) if pad else head_raw
        res_depth = 16
        m.submodules.results = res_fifo = SyncFIFOBuffered(width=64, depth=res_depth)
        wiring.connect(m, wiring.flipped(self.result), res_fifo.r_stream)
        result_word = Cat(out_hv.egress, out_hv.number, out_hv.reason, out_hv.mirror,
                          out_hv.mirror_queue, out_hv.color, out_hv.hits)

        # The slots: a free slot takes the queues' next frame every cycle (its enable is the
        # slot's own flag), and the queues are popped when a slot is free; so neither the pops
        # nor the slots' enables wait on the last beat of the frame being sent. Three slots keep
        # a frame a cycle (one-beat frames at 512 bits): one is sent, the next waits, the third
        # is filled. The slot pointers are one-hot rings.
        n_slots = 3
        slot_layout = data.StructLayout({
            "head": len(head_c), "head_len": 9, "out_len": 15, "result": 64, "r_beats": 12,
            "drop": 1, "last": 1, "short": 1})
        slots = [Signal(slot_layout, name=f"slot{i}") for i in range(n_slots)]
        occupied = Signal(n_slots)  # the slot holds a frame not yet sent
        wp = Signal(n_slots, init=1)  # the slot the next frame goes to
        rp = Signal(n_slots, init=1)  # the slot of the frame being sent (or next to, when idle)
        sp = Signal(n_slots, init=1)  # the slot of the next frame to start
        prepared = Signal(slot_layout)
        m.d.comb += [
            prepared.head.eq(head_c), prepared.head_len.eq(head_len_c),
            prepared.out_len.eq(out_len_c), prepared.result.eq(result_word),
            prepared.r_beats.eq(sq["r_beats"]), prepared.drop.eq(out_hv.egress == EGRESS_DROP),
            prepared.last.eq(out_len_c <= W), prepared.short.eq(head_len_c >= out_len_c),
        ]
        for i in range(n_slots):
            with m.If(~occupied[i]):
                m.d.sync += slots[i].eq(prepared)
        pop = Signal()
        done = Signal()  # the last beat of a frame (or the end of a drained one): its slot freed
        m.d.comb += [
            pop.eq(oq_rdy & sd_rdy & od_rdy & ~occupied.all()),
            sd_take.eq(pop), od_take.eq(pop), oq_take.eq(pop), taken.eq(pop),
        ]
        m.d.sync += [wp.eq(Mux(pop, wp.rotate_left(1), wp)),
                     rp.eq(Mux(done, rp.rotate_left(1), rp))]
        for i in range(n_slots):
            m.d.sync += occupied[i].eq((occupied[i] & ~(done & rp[i])) | (pop & wp[i]))

        def pick(sel, field, part=None):
            """The field of the slot ``sel`` (one-hot) names: an AND-OR."""
            out = 0
            for i in range(n_slots):
                value = slots[i][field] if part is None else part(slots[i][field])
                out = out | Mux(sel[i], value, 0)
            return out

        # The result of a frame enters its FIFO in the cycle after the frame's last beat (or
        # after a dropped frame is drained), from a register, so a frame is out before its
        # result. A frame starts only with a place in that FIFO for its result (``res_credit``,
        # a place taken as a frame starts and given back as a result is read), so the write
        # needs no ready.
        res_w = Signal()
        m.d.sync += res_w.eq(done)
        with m.If(done):
            m.d.sync += res_fifo.w_data.eq(pick(rp, "result"))
        m.d.comb += res_fifo.w_en.eq(res_w)
        res_credit = Signal(range(res_depth + 1), init=res_depth)
        res_room = Signal(init=1)  # ``res_credit != 0``, kept as a register
        started = Signal()
        res_read = res_fifo.r_rdy & res_fifo.r_en
        res_credit_next = Signal.like(res_credit)
        m.d.comb += res_credit_next.eq(res_credit - started + res_read)
        m.d.sync += [res_credit.eq(res_credit_next), res_room.eq(res_credit_next != 0)]
        m.d.sync += sp.eq(Mux(started, sp.rotate_left(1), sp))
        k = Signal(range(limits.PARSE_WINDOW // W + 3))
        r_left = Signal(12)
        carry = Signal(self.width)
        p = Signal(range(W + 1))  # bytes waiting in carry
        # The bytes of the frame and of its head still to send, and whether the next beat is
        # the last, are registers counted down by a beat's bytes (no subtraction or compare
        # of the lengths in the beat's cycle).
        remaining = Signal(15)
        head_left = Signal(9)
        is_last = Signal()
        short_head = Signal()  # the head holds the whole frame
        last_keep = Signal(W)  # bytes of the last beat: byte i kept if i < remaining
        m.d.comb += last_keep.eq(Cat(*(remaining > i for i in range(W))))

        def beat_sent():
            m.d.sync += [remaining.eq(remaining - W), head_left.eq(head_left - W),
                         is_last.eq(remaining <= 2 * W)]

        def start(fsm_idle):
            """Start the frame of the next slot (or go idle): in Idle, or with a last beat."""
            with m.If((occupied & sp).any() & res_room):
                m.d.comb += started.eq(1)
                m.d.sync += [k.eq(0), remaining.eq(pick(sp, "out_len")),
                             head_left.eq(pick(sp, "head_len")), is_last.eq(pick(sp, "last")),
                             short_head.eq(pick(sp, "short")), r_left.eq(pick(sp, "r_beats")),
                             frames_in.eq(frames_in + 1)]
                with m.If(pick(sp, "drop")):
                    m.d.sync += drops.eq(drops + 1)
                    m.next = "Drain"
                with m.Else():
                    m.next = "Head"
            if not fsm_idle:
                with m.Else():
                    m.next = "Idle"

        with m.FSM(name="deparse"):
            with m.State("Idle"):
                start(True)
            with m.State("Drain"):
                with m.If(r_left == 0):
                    m.d.comb += done.eq(1)
                    start(False)
                with m.Else():
                    m.d.comb += d_take.eq(1)
                    with m.If(d_rdy):
                        m.d.sync += r_left.eq(r_left - 1)
            with m.State("Head"):
                beat_data = Signal(self.width)
                m.d.comb += beat_data.eq(
                    pick(rp, "head", lambda h: h.word_select(k, self.width)))
                full = head_left >= W
                with m.If(full | is_last & short_head):
                    m.d.comb += [self.o.valid.eq(1), self.o.payload.data.eq(beat_data),
                                 self.o.payload.last.eq(is_last),
                                 self.o.payload.keep.eq(Mux(is_last, last_keep, (1 << W) - 1))]
                    with m.If(self.o.ready):
                        m.d.sync += k.eq(k + 1)
                        beat_sent()
                        with m.If(is_last):
                            m.d.comb += done.eq(1)
                            start(False)
                with m.Else():
                    m.d.sync += [carry.eq(beat_data), p.eq(head_left)]
                    m.next = "Body"
            with m.State("Body"):
                need_beat = r_left != 0
                word = Signal(self.width)
                carry_next = Signal(self.width)
                with m.Switch(p):
                    for c in sorted({(limits.PARSE_WINDOW + d) % W for d in (-8, -4, 0, 4, 8)}):
                        with m.Case(c):
                            m.d.comb += [
                                word.eq(Cat(carry[:8 * c], d_data)[:self.width]),
                                carry_next.eq(d_data[8 * (W - c):]),
                            ]
                ok = ~need_beat | d_rdy
                m.d.comb += [self.o.valid.eq(ok), self.o.payload.data.eq(word),
                             self.o.payload.last.eq(is_last),
                             self.o.payload.keep.eq(Mux(is_last, last_keep, (1 << W) - 1))]
                with m.If(ok & self.o.ready):
                    m.d.comb += d_take.eq(need_beat)
                    m.d.sync += [r_left.eq(r_left - need_beat), carry.eq(carry_next)]
                    beat_sent()
                    with m.If(is_last):
                        m.d.comb += done.eq(1)
                        start(False)

        return m

    def _registers(self, m, stages, latency, frames_in, drops, tok_layout):
        """The register block (``latency``: the stages' cycles from admission to the output
        queue); returns the commit strobe, its next value (combinational) and the token it
        makes."""
        bus = self.bus
        key = Signal(32 * regs.KEY_WORDS)
        mask = Signal(32 * regs.KEY_WORDS)
        args = Signal(32 * regs.ARG_WORDS)
        action, prio = Signal(4), Signal(16)
        cir, pir, cbs, pbs = Signal(20), Signal(20), Signal(21), Signal(21)
        select = Signal(16)
        commit = Signal(32)
        c_en = Signal()
        c_en_next = Signal()  # what ``c_en`` is in the next cycle
        r_data = Signal(32)
        m.d.comb += bus.r_data.eq(r_data)
        stage_sel = commit[12:15]
        slot_sel = commit[0:10]
        ok_commit = Signal()
        checks = []
        for i, s in enumerate(stages):
            # an install names one of the stage's actions (and, in an LPM stage, a priority
            # its tree holds); a clear ignores both
            n_actions = len(self.config["tables"][i]["actions"])
            fits = action < n_actions
            if s.max_priority is not None:
                fits = fits & (prio <= s.max_priority)
            checks.append((bus.w_data[12:15] == i) & (bus.w_data[0:10] < s.slots)
                          & (~bus.w_data[16] | fits))
        m.d.comb += ok_commit.eq(Cat(*checks).any())
        writable = {regs.REG_ACTION: action, regs.REG_PRIORITY: prio, regs.REG_METER_CIR: cir,
                    regs.REG_METER_PIR: pir, regs.REG_METER_CBS: cbs, regs.REG_METER_PBS: pbs,
                    regs.REG_SELECT: select}
        # A value wider than its register holds is refused (SLVERR), not cut short.
        narrow = {addr: len(sig) for addr, sig in writable.items() if len(sig) < 32}
        for i in range(regs.KEY_WORDS):
            writable[regs.REG_KEY + 4 * i] = key[32 * i:32 * i + 32]
            writable[regs.REG_MASK + 4 * i] = mask[32 * i:32 * i + 32]
        for i in range(regs.ARG_WORDS):
            writable[regs.REG_ARGS + 4 * i] = args[32 * i:32 * i + 32]
        m.d.sync += c_en.eq(c_en_next)
        # An install (not a modify, which keeps its key and mask) into a ternary or LPM stage
        # first sweeps the entry into the stage's TCAM memories (:meth:`Stage._sweep`): the
        # ``COMMIT`` write is held (``stall``) until the sweep is done and its token goes in. A
        # sweep starts once every token before it has left the pipeline (``quiet``), so no
        # token changes the slot's valid bit under it.
        tcam = [i for i, s in enumerate(stages) if s.kind != "exact"]
        sweeps = Const(0, 1)
        for i in tcam:
            sweeps = sweeps | (bus.w_data[12:15] == i)
        sweeps = sweeps & bus.w_data[16] & ~bus.w_data[17]
        pending = Signal()  # a sweep's COMMIT taken, its token not yet in
        stall_start = Signal()  # the strobe of such a COMMIT
        running = Signal()
        quiet = Signal(range(latency + 1), init=latency)  # cycles since the last token, to latency
        with m.If(c_en):
            m.d.sync += quiet.eq(0)
        with m.Elif(quiet != latency):
            m.d.sync += quiet.eq(quiet + 1)
        with m.If(bus.w_en):
            with m.Switch(bus.addr):
                for addr, sig in writable.items():
                    with m.Case(addr):
                        if addr in narrow:
                            with m.If(bus.w_data[narrow[addr]:].any()):
                                m.d.comb += bus.err.eq(1)
                            with m.Else():
                                m.d.sync += sig.eq(bus.w_data)
                        else:
                            m.d.sync += sig.eq(bus.w_data)
                with m.Case(regs.REG_COMMIT):
                    with m.If(ok_commit):
                        m.d.sync += commit.eq(bus.w_data)
                        with m.If(sweeps):
                            m.d.sync += pending.eq(1)
                            m.d.comb += stall_start.eq(1)
                        with m.Else():
                            m.d.comb += c_en_next.eq(1)
                    with m.Else():
                        m.d.comb += bus.err.eq(1)
                with m.Default():
                    m.d.comb += bus.err.eq(1)
        token = Signal(tok_layout)
        m.d.comb += [
            token.stage.eq(stage_sel), token.slot.eq(slot_sel), token.install.eq(commit[16]),
            token.keep_counters.eq(commit[17]), token.keep_meter.eq(commit[18]),
            token.action.eq(action), token.prio.eq(prio),
            token.key.eq(key[:len(token.key)]), token.mask.eq(mask[:len(token.mask)]),
            token.args.eq(args[:len(token.args)]),
            token.meter.eq(Cat(cir, pir, cbs, pbs)[:len(token.meter)]),
        ]
        go = pending & ~running & (quiet == latency)
        done = Const(0, 1)
        for i in tcam:
            m.d.comb += [stages[i].sw_go.eq(go & (stage_sel == i)), stages[i].sw_tok.eq(token)]
            done = done | stages[i].sw_done
        with m.If(go):
            m.d.sync += running.eq(1)
        with m.If(done):
            m.d.sync += [running.eq(0), pending.eq(0)]
            m.d.comb += c_en_next.eq(1)
        m.d.comb += bus.stall.eq(stall_start | pending)
        for s in stages:
            m.d.comb += [s.sel_slot.eq(select[0:10]), s.sel_miss.eq(select[15])]
        sel_stage = select[12:15]
        readback = {
            regs.REG_PACKETS_LO: lambda s: s.r_packets[:32],
            regs.REG_BYTES_LO: lambda s: s.r_bytes[:32],
            regs.REG_METER_TC: lambda s: s.r_tc,
            regs.REG_METER_TP: lambda s: s.r_tp,
        }

        def selected(fn, name):
            """The selected stage's read-back word, in a register of its own (every cycle), so
            the read data's multiplexer takes registers: the stages' read-back reaches the bus
            three cycles after ``select`` changes, which the bridge's four cycles from a
            write's strobe to the next read's strobe cover."""
            value = Const(0, 32)
            for i, s in reversed(list(enumerate(stages))):
                value = Mux(sel_stage == i, fn(s), value)
            q = Signal(32, name=name)
            m.d.sync += q.eq(value)
            return q

        readback = {addr: selected(fn, f"rb_{addr:x}") for addr, fn in readback.items()}
        # A 64-bit counter is read low word first: the high word is latched with it, so the
        # two halves are of one value even if the counter carries between the reads (the
        # registered words of both halves are taken in the same cycle).
        packets_hi, bytes_hi = Signal(32), Signal(32)
        packets_hi_q = selected(lambda s: s.r_packets[32:], "rb_packets_hi")
        bytes_hi_q = selected(lambda s: s.r_bytes[32:], "rb_bytes_hi")
        with m.If(bus.r_en & (bus.addr == regs.REG_PACKETS_LO)):
            m.d.sync += packets_hi.eq(packets_hi_q)
        with m.If(bus.r_en & (bus.addr == regs.REG_BYTES_LO)):
            m.d.sync += bytes_hi.eq(bytes_hi_q)
        with m.If(bus.r_en):
            with m.Switch(bus.addr):
                with m.Case(regs.REG_ID):
                    m.d.sync += r_data.eq(regs.MA_ID)
                with m.Case(regs.REG_STAGES):
                    m.d.sync += r_data.eq(self.config.get("stages", len(stages)))
                with m.Case(regs.REG_FRAMES):
                    m.d.sync += r_data.eq(frames_in)
                with m.Case(regs.REG_DROPS):
                    m.d.sync += r_data.eq(drops)
                for addr, sig in writable.items():
                    with m.Case(addr):
                        m.d.sync += r_data.eq(sig)
                with m.Case(regs.REG_COMMIT):
                    m.d.sync += r_data.eq(commit)
                for addr, word in readback.items():
                    with m.Case(addr):
                        m.d.sync += r_data.eq(word)
                with m.Case(regs.REG_PACKETS_HI):
                    m.d.sync += r_data.eq(packets_hi)
                with m.Case(regs.REG_BYTES_HI):
                    m.d.sync += r_data.eq(bytes_hi)
                with m.Default():
                    m.d.comb += bus.err.eq(1)
        return c_en, c_en_next, token
