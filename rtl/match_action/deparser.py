"""Write the header vector back in front of the untouched rest of the frame.

The frame's first :data:`~.limits.PARSE_WINDOW` bytes come from the parse window with the
rewritten headers patched in at their offsets and layer 2 rebuilt (tags pushed or popped move
everything after them by 4 bytes); the bytes after the window come from the data FIFO, shifted
by the same amount. Dropped frames only drain their bytes from the FIFO.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal

from .actions import IPV4_CSUM, op_fields
from .hv import HEADER_BYTES, HEADERS
from .limits import PARSE_WINDOW

__all__ = ["build_head", "byte_vector", "offset_flags", "unpack_flags", "written_bytes"]


def written_bytes(tables, custom_bytes):
    """The bytes (stream order within the header) of each header after layer 2 that some
    action of the program may change: the fields of its ``set`` operations, the TTL or hop
    limit (``dec_ttl``), DSCP (``set_dscp``), and the IPv4 checksum with any IPv4 field.

    The deparser patches only these into the window; every other byte of a header is the
    window's own (the parser read the header from it), so the header vector need not carry
    it to the end of the pipeline."""
    out = {h: set() for h in HEADERS[3:]}

    def mark(h, shift, width):
        n = custom_bytes if h == "custom" else HEADER_BYTES[h]
        out[h].update(n - 1 - i // 8 for i in range(shift, shift + width))
        if h == "ipv4" and (shift, width) != IPV4_CSUM:  # the checksum follows every field
            mark(h, *IPV4_CSUM)

    for t in tables:
        for a in t["actions"]:
            for op in a["ops"]:
                for h, shift, width in op_fields(op):
                    if h in out:
                        mark(h, shift, width)
    return out

#: The layer-2 header lengths (no tag, one, two).
L2_ENDS = (14, 18, 22)


def offset_choices():
    """The offsets each kind of header can start at, by where it is (``l3``, ``l4``,
    ``custom``)."""
    l4_choices = sorted({l3 + 4 * i for l3 in L2_ENDS for i in range(5, 16)}
                        | {l3 + 40 for l3 in L2_ENDS})
    return {"l3": L2_ENDS, "l4": l4_choices,
            "custom": sorted(set(l4_choices) | {c + 8 for c in l4_choices} | set(L2_ENDS))}


def _where(h):
    return "l3" if h in ("ipv4", "ipv6") else "custom" if h == "custom" else "l4"


def _wheres(headers):
    """The offsets the deparser reads for these headers (layer 2 aside)."""
    return [w for w in ("l3", "l4", "custom")
            if any(_where(h) == w for h in headers if h in HEADERS[3:])]


def offset_flags(l2_end, offsets, headers):
    """The offsets as one-hot flags, in the order :func:`unpack_flags` reads them.

    The deparser's byte multiplexers select with these flags as they leave a FIFO register,
    instead of comparing the offsets there. ``offsets`` maps ``l3``, ``l4`` and ``custom`` to
    the parser's offsets; ``headers`` names the headers the vector has.
    """
    choices = offset_choices()
    return Cat(*(l2_end == c for c in L2_ENDS),
               *(offsets[w] == c for w in _wheres(headers) for c in choices[w]))


def unpack_flags(word, headers):
    """Split :func:`offset_flags` into ``{"l2_end": {c: bit}, "l3": {c: bit} ...}``."""
    choices = offset_choices()
    out, o = {"l2_end": {c: word[i] for i, c in enumerate(L2_ENDS)}}, len(L2_ENDS)
    for w in _wheres(headers):
        out[w] = {c: word[o + i] for i, c in enumerate(choices[w])}
        o += len(choices[w])
    return out


def byte_vector(value, nbytes):
    """A big-endian header value as bytes in stream order (first byte in bits 0..7)."""
    return Cat(*(value[8 * (nbytes - 1 - k):8 * (nbytes - k)] for k in range(nbytes)))


def build_head(m: Module, hv, side, custom_bytes, written=None):
    """Return ``(head, head_len, out_len)``: the output's first bytes and the lengths.

    ``head`` is ``PARSE_WINDOW + 8`` bytes in stream order; ``head_len`` of them are the frame's.
    ``written`` (:func:`written_bytes`): the bytes of each header after layer 2 patched from
    ``hv``; the others are the window's (every byte where ``None``).
    """
    window = side["window"]
    flags = side["flags"]  # one-hot offsets (:func:`unpack_flags`)
    patched = window
    choices = offset_choices()
    for h in HEADERS[3:]:
        if h not in hv:
            continue
        n = custom_bytes if h == "custom" else HEADER_BYTES[h]
        vec = byte_vector(hv[h], n)
        where = _where(h)
        step = Signal(8 * PARSE_WINDOW, name=f"patched_{h}")
        # Each byte: an AND-OR of the header's bytes that can land on it (one flag is set at
        # most), or the byte as it was.
        for b in range(PARSE_WINDOW):
            old = patched[8 * b:8 * (b + 1)]
            starts = [c for c in choices[where] if c <= b < c + n and c + n <= PARSE_WINDOW
                      and (written is None or b - c in written[h])]
            if not starts:
                m.d.comb += step[8 * b:8 * (b + 1)].eq(old)
                continue
            new = Const(0, 8)
            for c in starts:
                new = new | Mux(flags[where][c], vec[8 * (b - c):8 * (b - c + 1)], 0)
            hit = hv["valid_" + h] & Cat(*(flags[where][c] for c in starts)).any()
            m.d.comb += step[8 * b:8 * (b + 1)].eq(Mux(hit, new, old))
        patched = step
    l2_out = Signal(8)
    m.d.comb += l2_out.eq(14 + 4 * hv["valid_vlan"] + 4 * hv["valid_vlan2"])
    eth = byte_vector(hv["ethernet"], 14)
    v1 = byte_vector(hv["vlan"], 4)
    v2 = byte_vector(hv["vlan2"], 4)
    l2s = {14: eth, 18: Cat(eth, v1), 22: Cat(eth, v1, v2)}
    head = Signal(8 * (PARSE_WINDOW + 8))
    picks = []
    for l2_in in L2_ENDS:  # an AND-OR over the layer-2 length in (one flag set at most)
        moved = Signal(len(head), name=f"head_from_{l2_in}")
        with m.Switch(l2_out):
            for out in L2_ENDS:
                with m.Case(out):
                    m.d.comb += moved.eq(Cat(l2s[out], patched[8 * l2_in:]))
        picks.append(Mux(flags["l2_end"][l2_in], moved, 0))
    m.d.comb += head.eq(picks[0] | picks[1] | picks[2])
    length = side["length"]
    in_head = Mux(length > PARSE_WINDOW, PARSE_WINDOW, length)
    head_len = Signal(9)
    out_len = Signal(15)
    m.d.comb += [head_len.eq(in_head - side["l2_end"] + l2_out),
                 out_len.eq(length - side["l2_end"] + l2_out)]
    return head, head_len, out_len
