"""Seeded frame impairments for the links in front of the TCP engine: drop, duplicate, reorder."""

from __future__ import annotations

import random
from collections import Counter

__all__ = ["Impairment"]


class Impairment:
    """Drop, duplicate and reorder the frames of one direction of a link.

    Each frame is dropped with probability ``drop``; a frame that survives is sent twice with
    probability ``duplicate``, and held back with probability ``reorder`` until the next frame
    has gone out (so the two swap places). A held frame is released by :meth:`flush`.

    Parameters
    ----------
    drop, duplicate, reorder : float
        Probabilities, 0 to 1 (drop below 1).
    seed : int
        Seed of the private random generator.

    Members
    -------
    counts : collections.Counter
        ``frames``, ``dropped``, ``duplicated``, ``reordered``.
    """

    def __init__(self, drop: float = 0.0, duplicate: float = 0.0, reorder: float = 0.0,
                 seed: int = 0):
        for name, value in (("drop", drop), ("duplicate", duplicate), ("reorder", reorder)):
            if not 0.0 <= value <= 1.0 or (name == "drop" and value >= 1.0):
                raise ValueError(f"{name} probability must be in [0, 1), not {value!r}")
        self.drop = drop
        self.duplicate = duplicate
        self.reorder = reorder
        self._rng = random.Random(seed)
        self._held: bytes | None = None
        self.counts: Counter = Counter()

    @property
    def active(self) -> bool:
        """Whether any impairment is switched on."""
        return bool(self.drop or self.duplicate or self.reorder)

    def apply(self, frame: bytes) -> list[bytes]:
        """Return the frames to send, in order, when ``frame`` is offered."""
        self.counts["frames"] += 1
        if not self.active:
            return [frame]
        rng = self._rng
        if rng.random() < self.drop:
            self.counts["dropped"] += 1
            return self.flush()
        out = [frame]
        if rng.random() < self.duplicate:
            self.counts["duplicated"] += 1
            out.append(frame)
        if self._held is None and rng.random() < self.reorder:
            self.counts["reordered"] += 1
            self._held = out.pop(0)
            return out
        return out + self.flush()

    def flush(self) -> list[bytes]:
        """Release the held frame, if any."""
        held, self._held = self._held, None
        return [held] if held is not None else []
