# Ref: Microsoft, "RSS hashing functions" and "Verifying the RSS hash calculation" (Toeplitz
#      hash: for every set input bit, MSB of the first byte first, XOR the 32-bit key window that
#      starts at that bit); shared/REFERENCES.md
"""Toeplitz hash core: a fixed-size input hashed ``chunk_bytes`` bytes a cycle.

The Toeplitz hash is linear over GF(2): the hash of an input is the XOR of the contributions of
its bytes, and the contribution of byte ``p`` depends only on its value and on key bits
``8*p .. 8*p + 39``. Zero bytes contribute nothing, so a short input (an IPv4 2-tuple) is hashed
as the full-size input with zeros after it. The core splits the input into ``steps`` chunks,
computes the contribution of one chunk a cycle and XORs them into an accumulator; with
``steps=1`` every input is hashed in one (pipelined) pass and a new input is accepted every
cycle.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["HASH_BITS", "ToeplitzCore"]

HASH_BITS = 32
_XOR_FANIN = 8  # registers XORed in one tree of the reduction


def _msb_first(vector, nbytes):
    """Return the bits of a byte vector (byte ``i`` at bits ``8*i..8*i+7``) in hash order.

    Hash order is network order: the most significant bit of byte 0 first.
    """
    return [vector[8 * (n // 8) + 7 - n % 8] for n in range(8 * nbytes)]


class ToeplitzCore(wiring.Component):
    """Compute the 32-bit Toeplitz hash of ``input_bytes`` bytes under a ``key_bytes`` key.

    ``start`` latches ``data`` and ``key``; the hash appears in ``hash`` with ``done`` high
    exactly :attr:`latency` cycles later and stays there until the next hash is done. With
    ``steps`` > 1 the core is iterative: a new ``start`` may come ``steps`` cycles after the
    previous one at the earliest. With ``steps`` = 1 it takes a new input every cycle.

    Pipeline: the start cycle latches the input and the key; in each of the next ``steps``
    cycles the contribution of every ``group_bytes`` bytes of one chunk is registered; these
    are XORed into the chunk's contribution through registered trees of up to 8 inputs (two
    LUT levels each), and a cycle after that it is XORed into the accumulator.

    Parameters
    ----------
    input_bytes : int
        Size of the hash input; shorter inputs are padded with zeros after their last byte.
    key_bytes : int
        Size of the key, at least ``input_bytes + 4``.
    steps : int
        Cycles the core spends on one input; it handles ``ceil(input_bytes / steps)`` bytes a
        cycle.
    group_bytes : int
        Bytes of a chunk whose contribution is computed in one tree before the pipeline register.
    start_copies : int
        Width of ``start``.

    Members
    -------
    start : In(start_copies)
        Latch ``data`` and ``key`` and begin a hash. Every bit is a copy of the same signal
        (the caller must keep them equal); each loads a share of the input and key registers,
        so that a caller can drive them from separate flip-flops.
    data : In(8 * input_bytes)
        Hash input, byte ``i`` at bits ``8*i .. 8*i+7``; byte 0 is the first in network order.
    key : In(8 * key_bytes)
        Key, byte ``i`` at bits ``8*i .. 8*i+7``.
    done : Out(1)
        ``hash`` holds the hash of the input latched :attr:`latency` cycles ago.
    hash : Out(32)
        The hash (bit 31 is the first bit of the key window, as in the reference).
    """

    def __init__(self, input_bytes=36, key_bytes=40, steps=1, group_bytes=4, start_copies=1):
        if not isinstance(input_bytes, int) or input_bytes < 1:
            raise ValueError(f"Input size must be a positive number of bytes, not {input_bytes!r}")
        if not isinstance(key_bytes, int) or key_bytes < input_bytes + 4:
            raise ValueError(f"Key size must be at least {input_bytes + 4} bytes for "
                             f"{input_bytes} input bytes, not {key_bytes!r}")
        if not isinstance(steps, int) or not 1 <= steps <= input_bytes:
            raise ValueError(f"Steps must be from 1 to {input_bytes}, not {steps!r}")
        if not isinstance(group_bytes, int) or group_bytes < 1:
            raise ValueError(f"Group size must be a positive number of bytes, not "
                             f"{group_bytes!r}")
        if not isinstance(start_copies, int) or start_copies < 1:
            raise ValueError(f"Start copies must be a positive integer, not {start_copies!r}")
        self.input_bytes = input_bytes
        self.key_bytes = key_bytes
        self.steps = steps
        self.chunk_bytes = -(-input_bytes // steps)
        self.group_bytes = group_bytes
        groups, levels = -(-self.chunk_bytes // group_bytes), 0
        while groups > 1:
            groups, levels = -(-groups // _XOR_FANIN), levels + 1
        #: Cycles from ``start`` to ``done``.
        self.latency = 2 + steps + levels
        super().__init__({
            "start": In(start_copies),
            "data": In(8 * input_bytes),
            "key": In(8 * key_bytes),
            "done": Out(1),
            "hash": Out(HASH_BITS),
        })

    def elaborate(self, platform):
        m = Module()
        chunk_bytes, steps = self.chunk_bytes, self.steps
        chunk_bits = 8 * chunk_bytes
        window_bits = chunk_bits + HASH_BITS - 1

        # phase[s] is high in the cycle the core works on chunk s.
        phase = Signal(steps)
        m.d.sync += phase.eq(Cat(self.start[0], phase[:-1]))
        zero = Const(0, 1)

        def padded(bits, count):
            return Cat(bits[n] if n < len(bits) else zero for n in range(count))

        if steps == 1:
            data = Signal(8 * self.input_bytes, reset_less=True)
            m.d.sync += data.eq(self.data)
            # Named signals, so that the many slices below share one expression.
            chunk_sel = Signal(chunk_bits, reset_less=True)
            m.d.comb += chunk_sel.eq(padded(_msb_first(data, self.input_bytes), chunk_bits))
            # Two copies of the key, one for the even groups and one for the odd, to halve the
            # fanout of each bit; the second has another initial value, so that synthesis keeps
            # it apart.
            windows = []
            for copy in range(2):
                key = Signal(8 * self.key_bytes, name=f"key{copy}", reset_less=True,
                             init=-copy)
                window = Signal(window_bits, name=f"window_sel{copy}", reset_less=True)
                m.d.sync += key.eq(self.key)
                m.d.comb += window.eq(padded(_msb_first(key, self.key_bytes), window_bits))
                windows.append(window)
        else:
            # Shift registers in hash order: start loads the input and the key, every other
            # cycle moves them on by a chunk, so the chunk and its key window are always at
            # the bottom (no multiplexer by step in front of the tree).
            # Each copy of start loads an equal share of the bits of both queues.
            data_queue = Signal(chunk_bits * steps, reset_less=True)
            key_queue = Signal(chunk_bits * (steps - 1) + window_bits, reset_less=True)
            copies = len(self.start)
            total = len(data_queue) + len(key_queue)
            bounds = [total * n // copies for n in range(copies + 1)]
            position = 0
            for queue, bits in ((data_queue, _msb_first(self.data, self.input_bytes)),
                                (key_queue, _msb_first(self.key, self.key_bytes))):
                loaded = padded(bits, len(queue))
                shifted = Cat(queue[chunk_bits:], Const(0, chunk_bits))
                for n in range(copies):
                    low = max(bounds[n] - position, 0)
                    high = min(bounds[n + 1] - position, len(queue))
                    if low < high:
                        m.d.sync += queue[low:high].eq(Mux(self.start[n], loaded[low:high],
                                                           shifted[low:high]))
                position += len(queue)
            chunk_sel = data_queue[:chunk_bits]
            windows = [key_queue[:window_bits]]
        sel_valid, sel_first, sel_last = phase.any(), phase[0], phase[-1]

        # Contribution of each group of bytes: hash bit 31-j is the XOR over the group's input
        # bits n of input[n] & key[n + j].
        group_bits = 8 * self.group_bytes
        partials = []
        for first in range(0, chunk_bits, group_bits):
            last = min(first + group_bits, chunk_bits)
            partial = Signal(HASH_BITS, name=f"partial_{first // group_bits}", reset_less=True)
            window_sel = windows[first // group_bits % len(windows)]
            bits = [(chunk_sel[first:last] & window_sel[first + j:last + j]).xor()
                    for j in range(HASH_BITS)]
            m.d.sync += partial.eq(Cat(reversed(bits)))
            partials.append(partial)
        flags = Cat(sel_valid, sel_first, sel_last)

        # The chunk's contribution: the partials XORed in registered trees, so that the
        # accumulator's input is one LUT deep.
        level = partials
        while True:
            delayed = Signal(3, reset_less=False)
            m.d.sync += delayed.eq(flags)
            flags = delayed
            if len(level) == 1:
                break
            summed = []
            for first in range(0, len(level), _XOR_FANIN):
                total = Signal(HASH_BITS, name=f"sum_{len(level)}_{first // _XOR_FANIN}",
                               reset_less=True)
                value = level[first]
                for partial in level[first + 1:first + _XOR_FANIN]:
                    value = value ^ partial
                m.d.sync += total.eq(value)
                summed.append(total)
            level = summed
        chunk = level[0]
        chunk_valid, chunk_first, chunk_last = flags
        with m.If(chunk_valid):
            m.d.sync += self.hash.eq(Mux(chunk_first, 0, self.hash) ^ chunk)
        m.d.sync += self.done.eq(chunk_valid & chunk_last)
        return m
