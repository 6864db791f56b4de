"""What the match-action gateware can hold: the capacities the program checker enforces.

One table of numbers, read by the gateware (memory and comparator sizes), by the program checker
(:mod:`nicsim.hw.match_action.checker`) and by the documentation.
"""

__all__ = [
    "DEFAULT_STAGES",
    "MAX_STAGES",
    "PARSE_WINDOW",
    "MAX_VLAN_TAGS",
    "MAX_KEY_BITS",
    "MAX_ACTIONS",
    "MAX_ARG_BITS",
    "MAX_OPS",
    "EXACT_WAYS",
    "MAX_ENTRIES",
    "PORTS",
    "HOST_QUEUES",
    "METER_FRAC_BITS",
    "METER_MIN_RATE_BPS",
    "METER_MAX_RATE_BPS",
    "METER_MIN_BURST",
    "METER_MAX_BURST",
    "METER_MAX_GAP_NS",
    "CUSTOM_MAX_BYTES",
]

DEFAULT_STAGES = 4  # one table a stage
MAX_STAGES = 8
PARSE_WINDOW = 128  # bytes of a frame the parser sees; headers must end inside it
MAX_VLAN_TAGS = 2  # tags the parser walks and the header vector holds
MAX_KEY_BITS = 320  # an IPv6 5-tuple is 296 bits
MAX_ACTIONS = 8  # actions a table may name (its action id is 3 bits)
MAX_ARG_BITS = 128  # action data of one entry
MAX_OPS = 6  # primitive operations in one action
EXACT_WAYS = 4  # an exact table is a hash table of 4-way buckets; a full bucket refuses an add
MAX_ENTRIES = {"exact": 1024, "lpm": 64, "ternary": 64}
PORTS = 16  # egress ports 0..15
HOST_QUEUES = 64  # host queues 0..63 (forward to host, mirror)
CUSTOM_MAX_BYTES = 16  # the one program-defined header

# Meters (RFC 2698 token buckets) count tokens in 1/2**16 byte and time in nanoseconds (the
# frame's ingress timestamp), so a rate is an integer number of 1/2**16 bytes per nanosecond.
METER_FRAC_BITS = 16
METER_MIN_RATE_BPS = 1_000_000  # 1 Mb/s: 8 units per ns, a 1.6% rounding step at most
METER_MAX_RATE_BPS = 100_000_000_000  # 100 Gb/s: 819200 units per ns (20 bits)
METER_MIN_BURST = 64  # bytes; a burst below one minimum frame colours everything red
METER_MAX_BURST = 1 << 20  # bytes
METER_MAX_GAP_NS = (1 << 32) - 1  # a longer gap between two frames counts as this long
