# Ref: Microsoft RSS Toeplitz hash (shared/REFERENCES.md); fpga-network-stack session lookup
#      (hash-based, fixed probing) as the anchor of the design
"""Hash-based session lookup of the TCP engine: connection key to session number.

The behaviour is that of :class:`nicsim.hw.ref.tcp.SessionTable`, request by request: a key
(peer IPv4 address, peer port, local port; 64 bits in network order) hashes (Toeplitz, key
``SESSION_HASH_KEY``) to a home bucket; the ``probes`` buckets from the home bucket are read in
one cycle from ``probes`` memory banks (bucket ``b`` lives in bank ``b mod probes``); each holds
a session number whose stored key is compared. Insertion takes the lowest free session number
and the first empty probed bucket.

Requests (``req``): ``op`` 0 lookup ``key``; 1 insert ``key`` (answers the existing session if
the key is there); 2 delete session ``sid``. Responses (``resp``), one per request, in order:
``hit`` (found / was in use), ``full`` (insert failed), ``sid``. A request takes 5 to 7 cycles.
"""

from amaranth.hdl import Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

__all__ = ["OP_DELETE", "OP_INSERT", "OP_LOOKUP", "SessionTable"]

OP_LOOKUP, OP_INSERT, OP_DELETE = 0, 1, 2
_HASH_KEY = bytes.fromhex("6d5a56da255b0ec24167253d")  # hw.ref.tcp.SESSION_HASH_KEY


def _toeplitz(key_signal):
    """Combinational Toeplitz hash of a 64-bit key (bit 63 is the first input bit)."""
    key_int = int.from_bytes(_HASH_KEY, "big")
    bits = 8 * len(_HASH_KEY)
    result = Const(0, 32)
    for j in range(64):
        window = (key_int >> (bits - 32 - j)) & 0xFFFFFFFF
        result = result ^ Mux(key_signal[63 - j], Const(window, 32), Const(0, 32))
    return result


class SessionTable(wiring.Component):
    """Session lookup with bounded linear probing over banked buckets.

    Parameters
    ----------
    sessions : int
        Number of sessions, 1 to 1024.
    probes : int
        Buckets probed per key (power of two).
    bucket_factor : int
        Buckets per session, rounded as in the reference (power of two).

    Members
    -------
    req : In(stream)
        ``op``, ``key``, ``sid``.
    resp : Out(stream)
        ``hit``, ``full``, ``sid``.
    """

    def __init__(self, sessions=64, probes=4, bucket_factor=4):
        if not 1 <= sessions <= 1024:
            raise ValueError(f"Sessions must be 1 to 1024, not {sessions!r}")
        if probes & (probes - 1) or not 1 <= probes <= 16:
            raise ValueError(f"Probes must be a power of two up to 16, not {probes!r}")
        self.sessions = sessions
        self.probes = probes
        self.n_buckets = max(bucket_factor * (1 << max(0, (sessions - 1).bit_length())), probes)
        sid_shape = unsigned(max(1, (sessions - 1).bit_length()))
        self.sid_shape = sid_shape
        super().__init__({
            "req": In(stream.Signature(data.StructLayout({
                "op": 2, "key": 64, "sid": sid_shape}))),
            "resp": Out(stream.Signature(data.StructLayout({
                "hit": 1, "full": 1, "sid": sid_shape}))),
        })

    def elaborate(self, platform):
        m = Module()
        P, N = self.probes, self.sessions
        rows = self.n_buckets // P
        row_bits = max(1, (rows - 1).bit_length())
        bucket_bits = (self.n_buckets - 1).bit_length()
        entry = data.StructLayout({"valid": 1, "sid": self.sid_shape})

        m.submodules.keys = keys = Memory(shape=64, depth=N, init=[])
        key_w = keys.write_port()
        key_r = [keys.read_port() for _ in range(P)]
        banks, bank_w, bank_r = [], [], []
        for k in range(P):
            bank = Memory(shape=entry, depth=rows, init=[])
            m.submodules[f"bank{k}"] = bank
            banks.append(bank)
            bank_w.append(bank.write_port())
            bank_r.append(bank.read_port())

        used = Signal(N)
        op = Signal(2)
        key = Signal(64)
        sid = Signal(self.sid_shape)
        home = Signal(max(1, bucket_bits))
        entries = [Signal(entry, name=f"entry{k}") for k in range(P)]
        resp_hit, resp_full, resp_sid = Signal(), Signal(), Signal(self.sid_shape)

        free_sid = Signal(self.sid_shape)
        any_free = Signal()
        for i in reversed(range(N)):
            with m.If(~used[i]):
                m.d.comb += [free_sid.eq(i), any_free.eq(1)]

        # probe p lands in bank (home + p) mod P; bank k holds probe (k - home) mod P
        lp = (P - 1).bit_length()

        def probe_of_bank(k):
            if P == 1:
                return Const(0, 1)
            return (Const(k + P, lp + 2) - home[:lp])[:lp]

        def row_of_bank(k):
            p = probe_of_bank(k)
            bucket = (home + p)[:max(1, bucket_bits)] if bucket_bits else Const(0, 1)
            return (bucket >> lp)[:row_bits] if rows > 1 else Const(0, 1)

        with m.FSM():
            with m.State("Idle"):
                m.d.comb += self.req.ready.eq(1)
                with m.If(self.req.valid):
                    m.d.sync += [op.eq(self.req.payload.op), key.eq(self.req.payload.key),
                                 sid.eq(self.req.payload.sid)]
                    with m.If(self.req.payload.op == OP_DELETE):
                        m.d.comb += key_r[0].addr.eq(self.req.payload.sid)
                        m.next = "Delete Key"
                    with m.Else():
                        m.next = "Hash"
            with m.State("Delete Key"):
                m.d.sync += key.eq(key_r[0].data)
                with m.If(~used.bit_select(sid, 1)):
                    m.d.sync += [resp_hit.eq(0), resp_full.eq(0), resp_sid.eq(sid)]
                    m.next = "Respond"
                with m.Else():
                    m.next = "Hash"
            with m.State("Hash"):
                m.d.sync += home.eq(_toeplitz(key)[:max(1, bucket_bits)])
                m.next = "Read Buckets"
            with m.State("Read Buckets"):
                for k in range(P):
                    m.d.comb += bank_r[k].addr.eq(row_of_bank(k))
                m.next = "Read Keys"
            with m.State("Read Keys"):
                for k in range(P):
                    m.d.comb += bank_r[k].addr.eq(row_of_bank(k))
                    m.d.comb += key_r[k].addr.eq(bank_r[k].data.sid)
                    m.d.sync += entries[k].eq(bank_r[k].data)
                m.next = "Compare"
            with m.State("Compare"):
                match = [Signal(name=f"match{k}") for k in range(P)]
                empty = [Signal(name=f"empty{k}") for k in range(P)]
                mine = [Signal(name=f"mine{k}") for k in range(P)]
                for k in range(P):
                    e = entries[k]
                    m.d.comb += [
                        match[k].eq(e.valid & used.bit_select(e.sid, 1) & (key_r[k].data == key)),
                        empty[k].eq(~e.valid),
                        mine[k].eq(e.valid & (e.sid == sid)),
                    ]
                # first match / first empty / own bucket, in probe order
                hit, hit_sid = Signal(), Signal(self.sid_shape)
                has_empty, empty_bank = Signal(), Signal(range(P))
                own, own_bank = Signal(), Signal(range(P))
                for p in reversed(range(P)):
                    for k in range(P):
                        with m.If(probe_of_bank(k) == p):
                            with m.If(match[k]):
                                m.d.comb += [hit.eq(1), hit_sid.eq(entries[k].sid)]
                            with m.If(empty[k]):
                                m.d.comb += [has_empty.eq(1), empty_bank.eq(k)]
                            with m.If(mine[k]):
                                m.d.comb += [own.eq(1), own_bank.eq(k)]
                m.d.sync += [resp_hit.eq(0), resp_full.eq(0), resp_sid.eq(0)]
                with m.Switch(op):
                    with m.Case(OP_LOOKUP):
                        m.d.sync += [resp_hit.eq(hit), resp_sid.eq(hit_sid)]
                    with m.Case(OP_INSERT):
                        with m.If(hit):
                            m.d.sync += [resp_hit.eq(1), resp_sid.eq(hit_sid)]
                        with m.Elif(~any_free | ~has_empty):
                            m.d.sync += resp_full.eq(1)
                        with m.Else():
                            for k in range(P):
                                with m.If(empty_bank == k):
                                    m.d.comb += [bank_w[k].addr.eq(row_of_bank(k)),
                                                 bank_w[k].data.valid.eq(1),
                                                 bank_w[k].data.sid.eq(free_sid),
                                                 bank_w[k].en.eq(1)]
                            m.d.comb += [key_w.addr.eq(free_sid), key_w.data.eq(key),
                                         key_w.en.eq(1)]
                            m.d.sync += [used.bit_select(free_sid, 1).eq(1),
                                         resp_sid.eq(free_sid)]
                    with m.Case(OP_DELETE):
                        with m.If(own):
                            for k in range(P):
                                with m.If(own_bank == k):
                                    m.d.comb += [bank_w[k].addr.eq(row_of_bank(k)),
                                                 bank_w[k].data.eq(0), bank_w[k].en.eq(1)]
                        m.d.sync += [used.bit_select(sid, 1).eq(0), resp_hit.eq(1),
                                     resp_sid.eq(sid)]
                m.next = "Respond"
            with m.State("Respond"):
                m.d.comb += [self.resp.valid.eq(1), self.resp.payload.hit.eq(resp_hit),
                             self.resp.payload.full.eq(resp_full),
                             self.resp.payload.sid.eq(resp_sid)]
                with m.If(self.resp.ready):
                    m.next = "Idle"
        return m
