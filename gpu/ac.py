# Ref: A. V. Aho, M. J. Corasick, CACM 18(6), 1975 (goto, failure and output functions; the
#      deterministic automaton of §6); G. Vasiliadis et al., Gnort, RAID 2008 (a DFA per
#      signature set on the GPU)
"""Multi-pattern payload matching for an IDS: the Aho-Corasick automaton and its kernel.

The automaton is built with numpy as a full deterministic table (256 next states per state,
failure transitions folded in), so the kernel reads one entry per byte. Each state lists the
patterns that end there, those of its failure chain included. Results equal
:func:`nicsim.hw.ref.ac.match` frame by frame.
"""

from __future__ import annotations

from collections import deque
from typing import NamedTuple

import numpy as np

from nicsim.hw.ref.ac import Signature

from .batch import Batch, empty_device, from_device, launch, pack, to_device

__all__ = ["MAX_STATES", "AhoCorasick", "AcKernel", "AcResult", "ac_numpy"]

MAX_STATES = 1 << 16  # 256 x 4 bytes each: a 64 MiB table at most


class AcResult(NamedTuple):
    """Per frame: occurrences of any pattern, and the patterns seen as a bit set
    (``seen[i, w]`` bit ``b`` is pattern ``32 w + b``)."""

    counts: np.ndarray
    seen: np.ndarray

    def patterns(self, i: int) -> list[int]:
        """Return the indices of the patterns seen in frame ``i``, ascending."""
        bits = np.unpackbits(self.seen[i].view(np.uint8), bitorder="little")
        return [int(x) for x in np.nonzero(bits)[0]]


class AhoCorasick:
    """The automaton of a set of patterns.

    Parameters
    ----------
    patterns : sequence of bytes or Signature
        Non-empty byte strings (a :class:`~nicsim.hw.ref.ac.Signature` gives its content);
        index ``i`` is pattern ``i``. The same bytes twice are two patterns.

    Members
    -------
    delta : numpy.ndarray of uint32, shape (states, 256)
    out_start : numpy.ndarray of uint32, ``states + 1`` entries
    out_ids : numpy.ndarray of uint32
        State ``s``'s patterns are ``out_ids[out_start[s]:out_start[s + 1]]``.

    Raises
    ------
    ValueError
        For no pattern, an empty one, or more than :data:`MAX_STATES` states.
    """

    def __init__(self, patterns):
        patterns = [p.content if isinstance(p, Signature) else bytes(p) for p in patterns]
        if not patterns:
            raise ValueError("an automaton needs at least one pattern")
        goto = [{}]
        own = [[]]
        for index, pattern in enumerate(patterns):
            if not pattern:
                raise ValueError(f"pattern {index} is empty")
            state = 0
            for byte in pattern:
                nxt = goto[state].get(byte)
                if nxt is None:
                    if len(goto) == MAX_STATES:
                        raise ValueError(f"the patterns need more than {MAX_STATES} automaton "
                                         f"states; use fewer or shorter signatures")
                    nxt = len(goto)
                    goto.append({})
                    own.append([])
                    goto[state][byte] = nxt
                state = nxt
            own[state].append(index)
        states = len(goto)
        delta = np.zeros((states, 256), dtype=np.uint32)
        fail = [0] * states
        outs = [None] * states
        outs[0] = own[0]
        order = deque()
        for byte, child in goto[0].items():
            delta[0, byte] = child
            order.append(child)
        while order:
            state = order.popleft()
            outs[state] = own[state] + outs[fail[state]]
            delta[state] = delta[fail[state]]
            for byte, child in goto[state].items():
                fail[child] = int(delta[fail[state], byte])
                delta[state, byte] = child
                order.append(child)
        counts = np.fromiter((len(o) for o in outs), dtype=np.int64, count=states)
        self.out_start = np.zeros(states + 1, dtype=np.uint32)
        self.out_start[1:] = np.cumsum(counts)
        self.out_ids = np.fromiter((i for o in outs for i in o), dtype=np.uint32,
                                   count=int(counts.sum()))
        self.delta = delta
        self.patterns = patterns
        self.words = (len(patterns) + 31) // 32


def _batch_starts(frames, starts):
    b = frames if isinstance(frames, Batch) else pack(frames)
    n = b.count
    lengths = np.diff(b.offsets.astype(np.int64))
    if starts is None:
        starts = np.zeros(n, dtype=np.uint32)
    else:
        starts = np.asarray(starts, dtype=np.int64)
        if starts.shape != (n,) or (starts < 0).any() or (starts > lengths).any():
            raise ValueError("starts must give, for every frame, an offset from 0 to its length")
        starts = starts.astype(np.uint32)
    return b, starts


def ac_numpy(automaton: AhoCorasick, frames, starts=None) -> AcResult:
    """Match with numpy: every frame's automaton steps one byte at a time together."""
    b, starts = _batch_starts(frames, starts)
    n = b.count
    counts = np.zeros(n, dtype=np.uint32)
    seen = np.zeros((n, automaton.words), dtype=np.uint32)
    if n == 0:
        return AcResult(counts, seen)
    pos = b.offsets[:-1].astype(np.int64) + starts
    end = b.offsets[1:].astype(np.int64)
    state = np.zeros(n, dtype=np.int64)
    delta = automaton.delta
    out_start = automaton.out_start.astype(np.int64)
    rows = np.arange(n)
    while True:
        live = np.nonzero(pos < end)[0]
        if not len(live):
            return AcResult(counts, seen)
        s = delta[state[live], b.data[pos[live]]].astype(np.int64)
        state[live] = s
        pos[live] += 1
        lo, hi = out_start[s], out_start[s + 1]
        hits = np.nonzero(hi > lo)[0]
        if len(hits):
            counts[live[hits]] += (hi[hits] - lo[hits]).astype(np.uint32)
            for h in hits:  # matches are rare next to bytes scanned
                ids = automaton.out_ids[lo[h]:hi[h]]
                np.bitwise_or.at(seen[rows[live[h]]], ids >> 5, np.uint32(1) << (ids & 31))


class AcKernel:
    """Aho-Corasick matching of batches on the OpenCL device (the automaton is copied there
    once)."""

    def __init__(self, platform, automaton: AhoCorasick):
        self.platform = platform
        self.automaton = automaton
        self.kernel = platform.kernel("ac_match", "ac")
        self.delta = to_device(platform, automaton.delta)
        self.out_start = to_device(platform, automaton.out_start)
        self.out_ids = to_device(platform, automaton.out_ids)
        self.last_event = None

    def run(self, frames, starts=None) -> AcResult:
        """Match every frame from ``starts[i]`` (default 0: the whole frame) to its end."""
        b, starts = _batch_starts(frames, starts)
        p = self.platform
        n = b.count
        words = self.automaton.words
        counts, seen = empty_device(p, 4 * n), empty_device(p, 4 * n * words)
        self.last_event = launch(p, self.kernel, n, to_device(p, b.data),
                                 to_device(p, b.offsets), to_device(p, starts), np.uint32(n),
                                 self.delta, self.out_start, self.out_ids, np.uint32(words),
                                 counts, seen)
        return AcResult(from_device(p, counts, n, np.uint32),
                        from_device(p, seen, (n, words), np.uint32))
