# Ref: include/uapi/linux/bpf.h (enum bpf_func_id via ___BPF_FUNC_MAPPER, enum bpf_map_type,
#      enum xdp_action), include/linux/bpf.h (enum bpf_arg_type, enum bpf_return_type), the
#      helpers' struct bpf_func_proto in kernel/bpf/helpers.c and net/core/filter.c,
#      xdp_func_proto and bpf_base_func_proto, check_map_func_compatibility in
#      kernel/bpf/verifier.c, in Linux 6.x
"""Numbers the kernel's eBPF ABI fixes: helper function IDs, map types, XDP actions.

Each helper nicsim knows has a :class:`HelperProto`: the kinds of its five argument registers
and of its result, which the verifier checks calls against; the interpreter implements the
helpers by these IDs.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["HelperId", "MapType", "XdpAction", "ArgType", "RetType", "HelperProto", "PROTOS",
           "XDP_HELPERS", "PKT_CHANGING_HELPERS", "map_helper_error"]


class HelperId(enum.IntEnum):
    """Helper function IDs (``BPF_FUNC_*``) nicsim knows."""

    map_lookup_elem = 1
    map_update_elem = 2
    map_delete_elem = 3
    ktime_get_ns = 5
    trace_printk = 6
    get_prandom_u32 = 7
    get_smp_processor_id = 8
    tail_call = 12
    redirect = 23
    csum_diff = 28
    xdp_adjust_head = 44
    redirect_map = 51
    xdp_adjust_meta = 54
    xdp_adjust_tail = 65
    fib_lookup = 69
    ktime_get_boot_ns = 125
    xdp_get_buff_len = 188


class MapType(enum.IntEnum):
    """Map types (``BPF_MAP_TYPE_*``)."""

    hash = 1
    array = 2
    prog_array = 3
    percpu_hash = 5
    percpu_array = 6
    lru_hash = 9
    lru_percpu_hash = 10
    lpm_trie = 11
    devmap = 14
    cpumap = 16
    xskmap = 17
    devmap_hash = 25


class XdpAction(enum.IntEnum):
    """XDP verdicts (``enum xdp_action``)."""

    ABORTED = 0
    DROP = 1
    PASS = 2
    TX = 3
    REDIRECT = 4


class ArgType(enum.Enum):
    """What a helper takes in one argument register (``enum bpf_arg_type``)."""

    DONTCARE = "dontcare"                # unused argument
    ANYTHING = "anything"                # any initialised value
    CONST_MAP_PTR = "const_map_ptr"      # a map (lddw of a map)
    PTR_TO_MAP_KEY = "map_key"           # key_size readable, initialised bytes
    PTR_TO_MAP_VALUE = "map_value"       # value_size readable, initialised bytes
    PTR_TO_CTX = "ctx"                   # the program's context, unmodified
    PTR_TO_MEM = "mem"                   # memory the helper reads and writes; size next
    PTR_TO_MEM_RDONLY = "mem_rdonly"     # memory the helper only reads; size next
    PTR_TO_MEM_OR_NULL = "mem_or_null"   # read-only memory or NULL; size next
    PTR_TO_UNINIT_MEM = "uninit_mem"     # memory the helper only writes; size next
    CONST_SIZE = "const_size"            # size of the previous memory argument, > 0
    CONST_SIZE_OR_ZERO = "const_size_or_zero"  # size of the previous memory argument, >= 0


class RetType(enum.Enum):
    """What a helper leaves in R0 (``enum bpf_return_type``)."""

    INTEGER = "integer"
    VOID = "void"
    PTR_TO_MAP_VALUE_OR_NULL = "map_value_or_null"


@dataclass(frozen=True)
class HelperProto:
    """A helper's prototype (the kernel's ``struct bpf_func_proto``).

    Members
    -------
    name : str
        Helper name without the ``bpf_`` prefix.
    ret : RetType
        Result kind.
    args : tuple of ArgType
        Kinds of R1..R5 (shorter tuples: the rest are DONTCARE).
    gpl_only : bool
        The kernel lets only GPL-compatible programs call it.
    """

    name: str
    ret: RetType
    args: tuple = ()
    gpl_only: bool = False


_A = ArgType
_R = RetType
PROTOS: dict[int, HelperProto] = {
    HelperId.map_lookup_elem: HelperProto(
        "map_lookup_elem", _R.PTR_TO_MAP_VALUE_OR_NULL, (_A.CONST_MAP_PTR, _A.PTR_TO_MAP_KEY)),
    HelperId.map_update_elem: HelperProto(
        "map_update_elem", _R.INTEGER,
        (_A.CONST_MAP_PTR, _A.PTR_TO_MAP_KEY, _A.PTR_TO_MAP_VALUE, _A.ANYTHING)),
    HelperId.map_delete_elem: HelperProto(
        "map_delete_elem", _R.INTEGER, (_A.CONST_MAP_PTR, _A.PTR_TO_MAP_KEY)),
    HelperId.ktime_get_ns: HelperProto("ktime_get_ns", _R.INTEGER),
    HelperId.trace_printk: HelperProto(
        "trace_printk", _R.INTEGER, (_A.PTR_TO_MEM_RDONLY, _A.CONST_SIZE), gpl_only=True),
    HelperId.get_prandom_u32: HelperProto("get_prandom_u32", _R.INTEGER),
    HelperId.get_smp_processor_id: HelperProto("get_smp_processor_id", _R.INTEGER),
    HelperId.tail_call: HelperProto(
        "tail_call", _R.VOID, (_A.PTR_TO_CTX, _A.CONST_MAP_PTR, _A.ANYTHING)),
    HelperId.redirect: HelperProto("redirect", _R.INTEGER, (_A.ANYTHING, _A.ANYTHING)),
    HelperId.csum_diff: HelperProto(
        "csum_diff", _R.INTEGER,
        (_A.PTR_TO_MEM_OR_NULL, _A.CONST_SIZE_OR_ZERO, _A.PTR_TO_MEM_OR_NULL,
         _A.CONST_SIZE_OR_ZERO, _A.ANYTHING)),
    HelperId.xdp_adjust_head: HelperProto(
        "xdp_adjust_head", _R.INTEGER, (_A.PTR_TO_CTX, _A.ANYTHING)),
    HelperId.redirect_map: HelperProto(
        "redirect_map", _R.INTEGER, (_A.CONST_MAP_PTR, _A.ANYTHING, _A.ANYTHING)),
    HelperId.xdp_adjust_meta: HelperProto(
        "xdp_adjust_meta", _R.INTEGER, (_A.PTR_TO_CTX, _A.ANYTHING)),
    HelperId.xdp_adjust_tail: HelperProto(
        "xdp_adjust_tail", _R.INTEGER, (_A.PTR_TO_CTX, _A.ANYTHING)),
    HelperId.fib_lookup: HelperProto(
        "fib_lookup", _R.INTEGER, (_A.PTR_TO_CTX, _A.PTR_TO_MEM, _A.CONST_SIZE, _A.ANYTHING)),
    HelperId.ktime_get_boot_ns: HelperProto("ktime_get_boot_ns", _R.INTEGER),
    HelperId.xdp_get_buff_len: HelperProto("xdp_get_buff_len", _R.INTEGER, (_A.PTR_TO_CTX,)),
}
del _A, _R

#: Helpers an XDP program may call (xdp_func_proto and bpf_base_func_proto, restricted to
#: the ones nicsim implements).
XDP_HELPERS = frozenset(PROTOS)

#: Helpers that move data/data_end (bpf_helper_changes_pkt_data): packet pointers held across
#: a call to them are no longer valid.
PKT_CHANGING_HELPERS = frozenset({HelperId.xdp_adjust_head, HelperId.xdp_adjust_meta,
                                  HelperId.xdp_adjust_tail})

# Map types that only some helpers accept, and the helpers that accept only some map types
# (check_map_func_compatibility).
_MAP_ONLY = {
    MapType.prog_array: {HelperId.tail_call},
    MapType.devmap: {HelperId.redirect_map, HelperId.map_lookup_elem},
    MapType.devmap_hash: {HelperId.redirect_map, HelperId.map_lookup_elem},
    MapType.cpumap: {HelperId.redirect_map},
    MapType.xskmap: {HelperId.redirect_map, HelperId.map_lookup_elem},
}
_HELPER_ONLY = {
    HelperId.tail_call: {MapType.prog_array},
    HelperId.redirect_map: {MapType.devmap, MapType.devmap_hash, MapType.cpumap,
                            MapType.xskmap},
}


def map_helper_error(map_type: int, helper: int) -> str | None:
    """Return why a map of ``map_type`` cannot be passed to ``helper``, or None if it can."""
    allowed = _MAP_ONLY.get(map_type)
    if allowed is not None and helper not in allowed:
        return f"map type {_map_name(map_type)} cannot be used with {_helper_name(helper)}"
    allowed_maps = _HELPER_ONLY.get(helper)
    if allowed_maps is not None and map_type not in allowed_maps:
        return f"{_helper_name(helper)} cannot take a map of type {_map_name(map_type)}"
    return None


def _map_name(map_type):
    try:
        return MapType(map_type).name
    except ValueError:
        return str(map_type)


def _helper_name(helper):
    try:
        return f"bpf_{HelperId(helper).name}#{int(helper)}"
    except ValueError:
        return f"helper#{helper}"
