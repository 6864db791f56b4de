# Ref: P. Gupta, S. Lin, N. McKeown, INFOCOM 1998 (DIR-24-8-BASIC); M. Waldvogel,
#      G. Varghese, J. Turner, B. Plattner, SIGCOMM 1997 (binary search on prefix lengths
#      with markers); S. Han et al., PacketShader, SIGCOMM 2010 §6.2.1 (both on a GPU)
"""Longest-prefix match on the GPU: the tables, built with numpy, and the kernels' wrappers.

IPv4 uses DIR-24-8: a 2^24-entry table indexed by the top 24 bits whose entry is a next hop
or points to a 256-entry chunk for the last byte (prefixes longer than /24). A lookup is one
or two memory reads. IPv6 uses a binary search over the prefix lengths present, each probe a
hash-table lookup of the address cut to that length; markers (cut-down prefixes carrying the
best match so far) steer the search towards longer prefixes. Both answer exactly what
:class:`nicsim.hw.ref.lpm.LpmTable` answers; next hops are integers below :data:`MISS`.
"""

from __future__ import annotations

import numpy as np

from nicsim.hw.ref.lpm import parse_prefix

from .batch import empty_device, from_device, launch, to_device

__all__ = ["MISS", "MAX_CHUNKS", "Dir24_8", "Lpm6Table", "Lpm4Kernel", "Lpm6Kernel",
           "lpm4_numpy", "lpm6_numpy", "v6_words"]

MISS = 0x7FFF  # next hop of an address no prefix holds; hops are 0..0x7FFE
_LONG = 0x8000  # tbl24 entry flag: the rest is a chunk number
MAX_CHUNKS = 0x8000  # chunk numbers fit in 15 bits
_M32 = 0xFFFFFFFF
_EMPTY = 0xFFFFFFFF


def _routes(routes, version):
    """Parse and deduplicate (last wins) the routes of one IP version; check the hops."""
    table = {}
    for prefix, hop in routes:
        v, network, length = parse_prefix(prefix)
        if isinstance(hop, bool) or not isinstance(hop, int | np.integer) \
                or not 0 <= hop < MISS:
            raise ValueError(f"next hop of {prefix!r} must be an integer 0..{MISS - 1}, "
                             f"not {hop!r}")
        if v == version:
            table[(network, length)] = int(hop)
    return table


class Dir24_8:
    """A DIR-24-8 table of IPv4 routes (IPv6 routes given are left out).

    Parameters
    ----------
    routes : iterable of (prefix, int)
        ``("10.0.0.0/8", 3)``; a prefix given twice keeps its last hop.

    Members
    -------
    tbl24 : numpy.ndarray of uint16, 2^24 entries
    tbllong : numpy.ndarray of uint16, 256 per chunk (at least one chunk, all misses)

    Raises
    ------
    ValueError
        For a bad prefix or hop, or more than :data:`MAX_CHUNKS` /24s holding longer prefixes.
    """

    def __init__(self, routes):
        table = _routes(routes, 4)
        tbl24 = np.full(1 << 24, MISS, dtype=np.uint16)
        chunks = []
        chunk_of = {}
        # Shorter prefixes first, so a longer one painted later overrides them; a chunk starts
        # as the /24 entry it replaces (the best match of length <= 24).
        for (network, length), hop in sorted(table.items(), key=lambda kv: kv[0][1]):
            if length <= 24:
                lo = network >> 8
                tbl24[lo:lo + (1 << (24 - length))] = hop
                continue
            index = network >> 8
            chunk = chunk_of.get(index)
            if chunk is None:
                if len(chunks) == MAX_CHUNKS:
                    raise ValueError(f"more than {MAX_CHUNKS} /24 blocks hold prefixes longer "
                                     f"than /24; DIR-24-8 with 15-bit chunk numbers cannot "
                                     f"hold them")
                chunk = len(chunks)
                chunks.append(np.full(256, tbl24[index], dtype=np.uint16))
                chunk_of[index] = chunk
                tbl24[index] = _LONG | chunk
            low = network & 0xFF
            chunks[chunk][low:low + (1 << (32 - length))] = hop
        self.tbl24 = tbl24
        self.tbllong = np.concatenate(chunks) if chunks else np.full(256, MISS, np.uint16)
        self.routes = len(table)


def lpm4_numpy(table: Dir24_8, addrs) -> np.ndarray:
    """Look up IPv4 addresses (``uint32``, host order) in ``table`` with numpy."""
    addrs = np.asarray(addrs, dtype=np.uint32)
    e = table.tbl24[addrs >> 8]
    long = (e & _LONG) != 0
    if long.any():
        e = e.copy()
        e[long] = table.tbllong[((e[long] & 0x7FFF).astype(np.int64) << 8)
                                | (addrs[long] & 0xFF)]
    return e


def _v6_hash(w0, w1, w2, w3, length):
    """The kernel's v6_hash on Python ints or numpy uint32 arrays (lpm.cl: keep in step)."""
    def mul(a, b):
        return (a * b) & _M32 if isinstance(a, int) else a * np.uint32(b)

    h = mul(length, 0x9E3779B1)
    h = mul(h ^ w0, 0x85EBCA77)
    h = mul(h ^ (h >> 15) ^ w1, 0xC2B2AE3D)
    h = mul(h ^ (h >> 13) ^ w2, 0x27D4EB2F)
    h = mul(h ^ (h >> 16) ^ w3, 0x165667B1)
    return h ^ (h >> 15)


def v6_words(addresses) -> np.ndarray:
    """Turn IPv6 addresses (ints or ``ipaddress`` objects) into an ``(n, 4)`` uint32 array,
    most significant word first."""
    out = np.zeros((len(addresses), 4), dtype=np.uint32)
    for i, a in enumerate(addresses):
        a = int(a)
        out[i] = [(a >> 96) & _M32, (a >> 64) & _M32, (a >> 32) & _M32, a & _M32]
    return out


def _mask(length):
    return ((1 << 128) - 1) ^ ((1 << (128 - length)) - 1)


class Lpm6Table:
    """IPv6 routes as sorted prefix lengths and one hash table of prefixes and markers.

    Parameters
    ----------
    routes : iterable of (prefix, int)
        IPv4 routes given are left out.

    Members
    -------
    lengths : numpy.ndarray of uint32
        The prefix lengths present, ascending.
    table : numpy.ndarray of uint32, shape (size, 6)
        Entries ``(address words 0..3, length, best hop)``; empty slots have length
        0xffffffff. ``size`` is a power of two at least twice the entries.
    """

    def __init__(self, routes):
        real = {}
        for (network, length), hop in _routes(routes, 6).items():
            real[(length, network)] = hop
        lengths = sorted({length for length, _ in real})
        keys = set(real)
        for length, network in real:
            lo, hi = 0, len(lengths) - 1
            while lo <= hi:  # the search path towards `length`: markers where it goes right
                mid = (lo + hi) // 2
                if lengths[mid] == length:
                    break
                if lengths[mid] < length:
                    keys.add((lengths[mid], network & _mask(lengths[mid])))
                    lo = mid + 1
                else:
                    hi = mid - 1
        entries = []
        for length, value in keys:
            best = MISS
            for shorter in reversed(lengths):  # best real prefix of length <= this key's
                if shorter <= length:
                    hop = real.get((shorter, value & _mask(shorter)))
                    if hop is not None:
                        best = hop
                        break
            entries.append((length, value, best))
        size = 16
        while size < 2 * len(entries):
            size *= 2
        table = np.zeros((size, 6), dtype=np.uint32)
        table[:, 4] = _EMPTY
        for length, value, best in entries:
            words = [(value >> s) & _M32 for s in (96, 64, 32, 0)]
            slot = _v6_hash(*words, length) & (size - 1)
            while table[slot, 4] != _EMPTY:
                slot = (slot + 1) & (size - 1)
            table[slot] = (*words, length, best)
        self.lengths = np.asarray(lengths, dtype=np.uint32)
        self.table = table
        self.routes = len(real)
        self.markers = len(entries) - len(real)


def lpm6_numpy(table: Lpm6Table, words) -> np.ndarray:
    """Look up IPv6 addresses (``(n, 4)`` uint32 words) in ``table`` with numpy, the
    binary search and the probing run for every address at once."""
    words = np.asarray(words, dtype=np.uint32).reshape(-1, 4)
    n = len(words)
    best = np.full(n, MISS, dtype=np.uint16)
    lo = np.zeros(n, dtype=np.int64)
    hi = np.full(n, len(table.lengths) - 1, dtype=np.int64)
    mask = np.uint32(len(table.table) - 1)
    ent = table.table
    while True:
        active = np.nonzero(lo <= hi)[0]
        if not len(active):
            return best
        mid = (lo[active] + hi[active]) >> 1
        length = table.lengths[mid].astype(np.int64)
        cut = []
        for w in range(4):
            keep = np.clip(length - 32 * w, 0, 32)
            m = np.where(keep == 0, 0, (0xFFFFFFFF << (32 - keep)) & 0xFFFFFFFF)
            cut.append(words[active, w] & m.astype(np.uint32))
        slot = _v6_hash(*cut, length.astype(np.uint32)) & mask
        found = np.zeros(len(active), dtype=bool)
        probing = np.ones(len(active), dtype=bool)
        while probing.any():
            e = ent[slot]
            empty = e[:, 4] == _EMPTY
            hit = probing & ~empty & (e[:, 4] == length) & (e[:, 0] == cut[0]) \
                & (e[:, 1] == cut[1]) & (e[:, 2] == cut[2]) & (e[:, 3] == cut[3])
            best[active[hit]] = e[hit, 5]
            found |= hit
            probing &= ~(hit | empty)
            slot = np.where(probing, (slot + 1) & mask, slot)
        lo[active] = np.where(found, mid + 1, lo[active])
        hi[active] = np.where(found, hi[active], mid - 1)


class Lpm4Kernel:
    """IPv4 lookups of a :class:`Dir24_8` table on the OpenCL device (the table is copied
    there once)."""

    def __init__(self, platform, table: Dir24_8):
        self.platform = platform
        self.kernel = platform.kernel("lpm4", "lpm")
        self.tbl24 = to_device(platform, table.tbl24)
        self.tbllong = to_device(platform, table.tbllong)
        self.last_event = None

    def lookup(self, addrs) -> np.ndarray:
        """Return the next hops (``uint16``, :data:`MISS` for none) of ``uint32`` addresses."""
        addrs = np.ascontiguousarray(addrs, dtype=np.uint32)
        n = len(addrs)
        out = empty_device(self.platform, 2 * n)
        self.last_event = launch(self.platform, self.kernel, n, to_device(self.platform, addrs),
                                 np.uint32(n), self.tbl24, self.tbllong, out)
        return from_device(self.platform, out, n, np.uint16)


class Lpm6Kernel:
    """IPv6 lookups of an :class:`Lpm6Table` on the OpenCL device."""

    def __init__(self, platform, table: Lpm6Table):
        self.platform = platform
        self.kernel = platform.kernel("lpm6", "lpm")
        self.lengths = to_device(platform, table.lengths)
        self.n_lengths = np.uint32(len(table.lengths))
        self.table = to_device(platform, table.table)
        self.mask = np.uint32(len(table.table) - 1)
        self.last_event = None

    def lookup(self, words) -> np.ndarray:
        """Return the next hops of addresses given as ``(n, 4)`` uint32 words."""
        words = np.ascontiguousarray(np.asarray(words, dtype=np.uint32).reshape(-1, 4))
        n = len(words)
        out = empty_device(self.platform, 2 * n)
        self.last_event = launch(self.platform, self.kernel, n, to_device(self.platform, words),
                                 np.uint32(n), self.lengths, self.n_lengths, self.table,
                                 self.mask, out)
        return from_device(self.platform, out, n, np.uint16)
