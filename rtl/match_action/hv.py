"""The header vector: what the parser extracts, the stages rewrite and the deparser writes back.

Each header is held as one big-endian number (its first byte most significant), so a field at
bit offset ``o`` and width ``w`` of an ``n``-byte header is bits ``[8n - o - w, 8n - o)``: the
``[header, shift, width]`` references of the compiled program. The vector also carries the
frame's control state through the stages: the next stage to apply, egress, drop reason,
mirror, meter colour, table hits, length and (for metered programs) timestamp.
"""

from amaranth.hdl import unsigned
from amaranth.lib import data

__all__ = ["HEADERS", "HEADER_BYTES", "CARRIED_ALWAYS", "hv_layout", "carried_headers",
           "EGRESS_PORT", "EGRESS_HOST", "EGRESS_DROP", "DROP_REASONS", "COLORS", "NEXT_END"]

HEADERS = ("ethernet", "vlan", "vlan2", "ipv4", "ipv6", "tcp", "udp", "icmp", "custom")
HEADER_BYTES = {"ethernet": 14, "vlan": 4, "vlan2": 4, "ipv4": 20, "ipv6": 40, "tcp": 20,
                "udp": 8, "icmp": 4}
CARRIED_ALWAYS = ("ethernet", "vlan", "vlan2")  # the deparser rebuilds layer 2 from these

EGRESS_PORT, EGRESS_HOST, EGRESS_DROP = 0, 1, 2
#: Drop reasons by number, as the golden reference names them.
DROP_REASONS = (None, "runt", "drop", "ttl_expired", "meter_red", "vlan_overflow", "oversize")
COLORS = (None, "green", "yellow", "red")
NEXT_END = 0xF


def carried_headers(config):
    """Headers the stages read or write: only these travel through the stages."""
    used = set(CARRIED_ALWAYS)
    for t in config["tables"]:
        used.update(k[0] for k in t["key"])
        for a in t["actions"]:
            for op in a["ops"]:
                if op[0] == "set":
                    used.add(op[1])
                elif op[0] in ("dec_ttl", "set_dscp"):
                    # The parser takes one layer-3 header, so a table that requires one of
                    # them never rewrites the other.
                    used.update(h for h, other in (("ipv4", "ipv6"), ("ipv6", "ipv4"))
                                if other not in t["if_valid"])
    return [h for h in HEADERS if h in used]


def hv_layout(config):
    """Return the struct layout of the header vector for a compiled program."""
    custom_bytes = config["custom"]["length"] if config.get("custom") else 1
    sizes = dict(HEADER_BYTES, custom=custom_bytes)
    fields = {"valid": unsigned(len(HEADERS))}
    for h in carried_headers(config):
        fields[h] = unsigned(8 * sizes[h])
    fields.update({
        "nxt": unsigned(4),  # stage to apply next (NEXT_END: none)
        "egress": unsigned(2),
        "number": unsigned(8),  # port or host queue
        "reason": unsigned(3),
        "mirror": unsigned(1),
        "mirror_queue": unsigned(6),
        "color": unsigned(2),
        "hits": unsigned(8),
        "length": unsigned(14),
    })
    if any(t["meter"] is not None for t in config["tables"]):
        fields["ts"] = unsigned(64)  # the meters' clock: absent when no table is metered
    return data.StructLayout(fields)
