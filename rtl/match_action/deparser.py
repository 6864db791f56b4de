"""Write the header vector back in front of the untouched rest of the frame.

The frame's first :data:`~.limits.PARSE_WINDOW` bytes come from the parse window with the
rewritten headers patched in at their offsets and layer 2 rebuilt (tags pushed or popped move
everything after them by 4 bytes); the bytes after the window come from the data FIFO, shifted
by the same amount. Dropped frames only drain their bytes from the FIFO.
"""

from amaranth.hdl import Cat, Module, Mux, Signal

from .hv import HEADER_BYTES, HEADERS
from .limits import PARSE_WINDOW

__all__ = ["build_head", "byte_vector"]


def byte_vector(value, nbytes):
    """A big-endian header value as bytes in stream order (first byte in bits 0..7)."""
    return Cat(*(value[8 * (nbytes - 1 - k):8 * (nbytes - k)] for k in range(nbytes)))


def build_head(m: Module, hv, side, custom_bytes):
    """Return ``(head, head_len, out_len)``: the output's first bytes and the lengths.

    ``head`` is ``PARSE_WINDOW + 8`` bytes in stream order; ``head_len`` of them are the frame's.
    """
    window = side["window"]
    patched = window
    l4_choices = sorted({l3 + 4 * i for l3 in (14, 18, 22) for i in range(5, 16)}
                        | {l3 + 40 for l3 in (14, 18, 22)})
    choices = {"l3": (14, 18, 22), "l4": l4_choices, "custom": sorted(
        set(l4_choices) | {c + 8 for c in l4_choices} | {14, 18, 22})}
    for h in HEADERS[3:]:
        if h not in hv:
            continue
        n = custom_bytes if h == "custom" else HEADER_BYTES[h]
        vec = byte_vector(hv[h], n)
        where = "l3" if h in ("ipv4", "ipv6") else "custom" if h == "custom" else "l4"
        step = Signal(8 * PARSE_WINDOW, name=f"patched_{h}")
        m.d.comb += step.eq(patched)
        with m.If(hv["valid_" + h]):
            with m.Switch(side["off_" + where]):
                for c in choices[where]:
                    if c + n <= PARSE_WINDOW:
                        with m.Case(c):
                            m.d.comb += step[8 * c:8 * (c + n)].eq(vec)
        patched = step
    l2_out = Signal(8)
    m.d.comb += l2_out.eq(14 + 4 * hv["valid_vlan"] + 4 * hv["valid_vlan2"])
    eth = byte_vector(hv["ethernet"], 14)
    v1 = byte_vector(hv["vlan"], 4)
    v2 = byte_vector(hv["vlan2"], 4)
    l2s = {14: eth, 18: Cat(eth, v1), 22: Cat(eth, v1, v2)}
    head = Signal(8 * (PARSE_WINDOW + 8))
    with m.Switch(side["l2_end"]):
        for l2_in in (14, 18, 22):
            with m.Case(l2_in):
                with m.Switch(l2_out):
                    for out in (14, 18, 22):
                        with m.Case(out):
                            m.d.comb += head.eq(Cat(l2s[out], patched[8 * l2_in:]))
    length = side["length"]
    in_head = Mux(length > PARSE_WINDOW, PARSE_WINDOW, length)
    head_len = Signal(9)
    out_len = Signal(15)
    m.d.comb += [head_len.eq(in_head - side["l2_end"] + l2_out),
                 out_len.eq(length - side["l2_end"] + l2_out)]
    return head, head_len, out_len
