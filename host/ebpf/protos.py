# Ref: include/uapi/linux/bpf.h (enum bpf_func_id via ___BPF_FUNC_MAPPER, enum bpf_map_type,
#      enum xdp_action) in Linux 6.x
"""Numbers the kernel's eBPF ABI fixes: helper function IDs, map types, XDP actions.

The verifier adds each helper's argument and return types here; the interpreter implements
the helpers by these IDs.
"""

from __future__ import annotations

import enum

__all__ = ["HelperId", "MapType", "XdpAction"]


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
