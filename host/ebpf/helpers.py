# Ref: net/core/filter.c (bpf_xdp_adjust_head/tail/meta, bpf_xdp_redirect(_map), bpf_csum_diff,
#      bpf_xdp_fib_lookup), kernel/bpf/helpers.c (map helpers, ktime, prandom) in Linux 6.x;
#      include/uapi/linux/bpf.h (struct bpf_fib_lookup, BPF_FIB_LKUP_RET_*)
"""The eBPF helper functions XDP programs call, as the kernel implements them.

Each helper takes the :class:`~nicsim.host.ebpf.interp.Vm`, the calling instruction's index
and r1..r5, and returns r0. ``bpf_ktime_get_ns`` reads the simulated time the caller passes to
:meth:`Vm.run`; ``bpf_fib_lookup`` looks the destination up in a :class:`FibTable`.
"""

from __future__ import annotations

import errno
import ipaddress
from dataclasses import dataclass, field

from nicsim.host.ebpf.interp import XDP_FRAME_STRUCT, ExecError
from nicsim.host.ebpf.protos import HelperId, MapType, XdpAction

__all__ = ["HELPERS", "FibTable", "Route", "csum_diff", "FIB_RESULTS", "ROUTE_KINDS"]

M64 = (1 << 64) - 1
ETH_HLEN = 14
XDP_META_MAX = 255          # type_max(skb_shared_info.meta_len), a u8
BPF_F_BROADCAST = 1 << 3
BPF_F_EXCLUDE_INGRESS = 1 << 4
ACTION_MASK = 0x3           # XDP_ABORTED | XDP_DROP | XDP_PASS | XDP_TX
BPF_FIB_LOOKUP_DIRECT = 1 << 0
BPF_FIB_LOOKUP_OUTPUT = 1 << 1
BPF_FIB_LOOKUP_SKIP_NEIGH = 1 << 2
FIB_FLAGS_KNOWN = 0x3F
AF_INET, AF_INET6 = 2, 10
FIB_RESULTS = {0: "SUCCESS", 1: "BLACKHOLE", 2: "UNREACHABLE", 3: "PROHIBIT", 4: "NOT_FWDED",
               5: "FWD_DISABLED", 6: "UNSUPP_LWT", 7: "NO_NEIGH", 8: "FRAG_NEEDED"}
FIB_SUCCESS, FIB_NOT_FWDED, FIB_FWD_DISABLED, FIB_NO_NEIGH, FIB_FRAG_NEEDED = 0, 4, 5, 7, 8
# bpf_ipv4_fib_lookup(): fib_lookup()'s errors of reject routes, and routes that are not
# unicast (a local address), which are not forwarded.
_FIB_KIND_RESULT = {"blackhole": 1, "unreachable": 2, "prohibit": 3, "local": FIB_NOT_FWDED}
ROUTE_KINDS = ("unicast", *_FIB_KIND_RESULT)
FIB_PARAMS_SIZE = 64        # sizeof(struct bpf_fib_lookup)


def _neg(err):
    return (-err) & M64


def _s32(value):
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >> 31 else value


# --- maps ----------------------------------------------------------------------------------

def _count_map(vm, op, m):
    key = f"{op}:{MapType(m.type).name}"
    vm.map_calls[key] = vm.map_calls.get(key, 0) + 1


def map_lookup_elem(vm, pc, r1, r2, *_):
    m = vm.map_arg(r1, pc)
    _count_map(vm, "lookup", m)
    value = m.lookup(vm.read(r2, m.key_size, pc), vm.cpu)
    return 0 if value is None else vm.value_ptr(value)


def map_update_elem(vm, pc, r1, r2, r3, r4, _r5):
    m = vm.map_arg(r1, pc)
    _count_map(vm, "update", m)
    key = vm.read(r2, m.key_size, pc)
    value = vm.read(r3, m.value_size, pc)
    return m.update(key, value, r4, cpu=vm.cpu) & M64


def map_delete_elem(vm, pc, r1, r2, *_):
    m = vm.map_arg(r1, pc)
    _count_map(vm, "delete", m)
    return m.delete(vm.read(r2, m.key_size, pc)) & M64


# --- time, random, cpu -----------------------------------------------------------------------

def ktime_get_ns(vm, pc, *_):
    return int(vm.now_ns) & M64


def get_prandom_u32(vm, pc, *_):
    return vm.rng.getrandbits(32)


def get_smp_processor_id(vm, pc, *_):
    return vm.cpu


def trace_printk(vm, pc, r1, r2, *_):
    fmt = vm.read(r1, r2, pc).split(b"\0")[0].decode(errors="replace")
    vm.trace.append(fmt)
    return len(fmt)


def tail_call(vm, pc, *_):
    # Program arrays stay empty in nicsim: a tail call to an empty slot falls through.
    return 0


# --- packet edges ----------------------------------------------------------------------------

def _moved(vm):
    vm._set_window()


def xdp_adjust_head(vm, pc, _r1, r2, *_):
    offset = _s32(r2)
    metalen = vm.data - vm.meta
    data = vm.data + offset
    if data < XDP_FRAME_STRUCT + metalen or data > vm.end - ETH_HLEN:
        return _neg(errno.EINVAL)
    if metalen:
        vm.frame[vm.meta + offset:vm.meta + offset + metalen] = vm.frame[vm.meta:vm.data]
    vm.meta += offset
    vm.data = data
    _moved(vm)
    return 0


def xdp_adjust_meta(vm, pc, _r1, r2, *_):
    offset = _s32(r2)
    meta = vm.meta + offset
    metalen = vm.data - meta
    if meta < XDP_FRAME_STRUCT or meta > vm.data:
        return _neg(errno.EINVAL)
    if metalen % 4 or metalen > XDP_META_MAX:
        return _neg(errno.EACCES)
    vm.meta = meta
    _moved(vm)
    return 0


def xdp_adjust_tail(vm, pc, _r1, r2, *_):
    offset = _s32(r2)
    end = vm.end + offset
    if end > vm.hard_end or end < vm.data + ETH_HLEN:
        return _neg(errno.EINVAL)
    if offset > 0:
        vm.frame[vm.end:end] = bytes(offset)  # the kernel clears grown space
    vm.end = end
    _moved(vm)
    return 0


def xdp_get_buff_len(vm, pc, *_):
    return vm.end - vm.data


# --- redirect --------------------------------------------------------------------------------

def redirect(vm, pc, r1, r2, *_):
    if r2:
        return XdpAction.ABORTED
    vm.redirect = {"kind": "ifindex", "ifindex": r1 & 0xFFFFFFFF}
    return XdpAction.REDIRECT


def redirect_map(vm, pc, r1, r2, r3, *_):
    m = vm.map_arg(r1, pc)
    if m.type not in (MapType.devmap, MapType.devmap_hash, MapType.cpumap, MapType.xskmap):
        raise ExecError(pc, f"bpf_redirect_map on map {m.name!r}, which is no devmap, cpumap "
                            f"or xskmap")
    allowed = ACTION_MASK
    if m.type in (MapType.devmap, MapType.devmap_hash):
        allowed |= BPF_F_BROADCAST | BPF_F_EXCLUDE_INGRESS
    if r3 & ~allowed:
        return XdpAction.ABORTED
    key = r2 & 0xFFFFFFFF
    if r3 & BPF_F_BROADCAST:
        vm.redirect = {"kind": MapType(m.type).name, "map": m.name, "key": None,
                       "target": "broadcast", "exclude_ingress": bool(r3 & BPF_F_EXCLUDE_INGRESS)}
        return XdpAction.REDIRECT
    target = m.target(key)
    if target is None:
        return r3 & ACTION_MASK
    vm.redirect = {"kind": MapType(m.type).name, "map": m.name, "key": key, "target": target}
    return XdpAction.REDIRECT


# --- checksum --------------------------------------------------------------------------------

def csum_diff(removed: bytes, added: bytes, seed: int) -> int:
    """Return ``bpf_csum_diff``: ``seed + sum(~removed) + sum(added)`` folded to 16 bits.

    Words are 32-bit in host (little-endian) order; carries are added back in (one's
    complement sum) and the result folded to 16 bits without complementing it, which is what
    Linux 6.18 returns on x86-64 (measured with BPF_PROG_TEST_RUN; kernels before the 2024
    change that made the helper fold returned the 32-bit partial sum).
    """
    total = seed & 0xFFFFFFFF
    for i in range(0, len(removed), 4):
        total += ~int.from_bytes(removed[i:i + 4], "little") & 0xFFFFFFFF
    for i in range(0, len(added), 4):
        total += int.from_bytes(added[i:i + 4], "little")
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def csum_diff_helper(vm, pc, r1, r2, r3, r4, r5):
    from_size, to_size = r2 & 0xFFFFFFFF, r4 & 0xFFFFFFFF
    if from_size % 4 or to_size % 4 or from_size + to_size > 512:
        return _neg(errno.EINVAL)
    removed = vm.read(r1, from_size, pc) if from_size else b""
    added = vm.read(r3, to_size, pc) if to_size else b""
    return csum_diff(removed, added, r5)


# --- FIB -------------------------------------------------------------------------------------

@dataclass
class Route:
    """One route: prefix -> egress interface, next-hop MAC, the interface's MAC."""

    prefix: ipaddress.IPv4Network | ipaddress.IPv6Network
    ifindex: int
    dmac: bytes | None
    smac: bytes
    gateway: str | None = None
    mtu: int = 1500
    kind: str = "unicast"    # unicast, blackhole, unreachable, prohibit, local
    metric: int = 0          # the route's priority, returned in rt_metric


@dataclass
class FibTable:
    """The simulated host's routing table for ``bpf_fib_lookup``.

    ``forwarding`` False makes every lookup answer FWD_DISABLED, like
    ``net.ipv4.ip_forward = 0``.
    """

    routes: list = field(default_factory=list)
    forwarding: bool = True

    def add(self, prefix, ifindex, dmac=None, smac=b"\0" * 6, gateway=None, mtu=1500,
            kind="unicast", metric=0):
        """Add a route (``prefix`` like ``"10.0.0.0/8"``; MACs as bytes or ``aa:bb:..``).

        ``kind`` is ``unicast``, ``blackhole``, ``unreachable``, ``prohibit`` or ``local``
        (an address of the host itself: not forwarded)."""
        if kind not in ROUTE_KINDS:
            raise ValueError(f"route kind must be one of {', '.join(ROUTE_KINDS)}, not {kind!r}")
        self.routes.append(Route(ipaddress.ip_network(prefix, strict=False), ifindex,
                                 _mac(dmac), _mac(smac) or b"\0" * 6, gateway, mtu, kind,
                                 metric))
        return self

    def lookup(self, address):
        """Return the longest-prefix route for ``address`` or None."""
        addr = ipaddress.ip_address(address)
        best = None
        for route in self.routes:
            if route.prefix.version == addr.version and addr in route.prefix:
                if best is None or route.prefix.prefixlen > best.prefix.prefixlen:
                    best = route
        return best


def _mac(value):
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    return bytes.fromhex(value.replace(":", ""))


def fib_lookup(vm, pc, _r1, r2, r3, r4, _r5):
    plen, flags = r3 & 0xFFFFFFFF, r4
    if plen < FIB_PARAMS_SIZE:
        return _neg(errno.EINVAL)
    if flags & ~FIB_FLAGS_KNOWN:
        return _neg(errno.EINVAL)
    params = bytearray(vm.read(r2, FIB_PARAMS_SIZE, pc))
    family = params[0]
    if family == AF_INET:
        dst = ipaddress.IPv4Address(bytes(params[32:36]))
    elif family == AF_INET6:
        dst = ipaddress.IPv6Address(bytes(params[32:48]))
    else:
        return _neg(errno.EAFNOSUPPORT)
    fib = vm.fib
    if fib is None or not fib.forwarding:
        return FIB_FWD_DISABLED
    route = fib.lookup(dst)
    if route is None:  # fib_lookup() fails with -ENETUNREACH: not an error the helper maps
        return FIB_NOT_FWDED
    if route.kind != "unicast":
        return _FIB_KIND_RESULT[route.kind]
    tot_len = int.from_bytes(params[6:8], "little")
    if tot_len > route.mtu:
        params[6:8] = route.mtu.to_bytes(2, "little")  # mtu_result, nothing else written
        vm.write(r2, bytes(params), pc)
        return FIB_FRAG_NEEDED
    params[12:16] = route.metric.to_bytes(4, "little")  # rt_metric (over tos/flowinfo)
    params[8:12] = route.ifindex.to_bytes(4, "little")
    if route.gateway is not None:  # the next hop, also when the neighbour is not looked up
        gw = ipaddress.ip_address(route.gateway)
        if family == AF_INET:
            params[32:36] = gw.packed
        else:
            params[32:48] = gw.packed
    if not flags & BPF_FIB_LOOKUP_SKIP_NEIGH:
        if route.dmac is None:  # the MACs and the VLAN fields stay as the program set them
            vm.write(r2, bytes(params), pc)
            return FIB_NO_NEIGH
        params[58:64] = route.dmac
        params[52:58] = route.smac
    params[48:52] = bytes(4)  # no VLAN (h_vlan_proto, h_vlan_TCI)
    params[6:8] = route.mtu.to_bytes(2, "little")
    vm.write(r2, bytes(params), pc)
    return FIB_SUCCESS


HELPERS = {
    HelperId.map_lookup_elem: ("map_lookup_elem", map_lookup_elem),
    HelperId.map_update_elem: ("map_update_elem", map_update_elem),
    HelperId.map_delete_elem: ("map_delete_elem", map_delete_elem),
    HelperId.ktime_get_ns: ("ktime_get_ns", ktime_get_ns),
    HelperId.ktime_get_boot_ns: ("ktime_get_boot_ns", ktime_get_ns),
    HelperId.trace_printk: ("trace_printk", trace_printk),
    HelperId.get_prandom_u32: ("get_prandom_u32", get_prandom_u32),
    HelperId.get_smp_processor_id: ("get_smp_processor_id", get_smp_processor_id),
    HelperId.tail_call: ("tail_call", tail_call),
    HelperId.redirect: ("redirect", redirect),
    HelperId.csum_diff: ("csum_diff", csum_diff_helper),
    HelperId.xdp_adjust_head: ("xdp_adjust_head", xdp_adjust_head),
    HelperId.redirect_map: ("redirect_map", redirect_map),
    HelperId.xdp_adjust_meta: ("xdp_adjust_meta", xdp_adjust_meta),
    HelperId.xdp_adjust_tail: ("xdp_adjust_tail", xdp_adjust_tail),
    HelperId.fib_lookup: ("fib_lookup", fib_lookup),
    HelperId.xdp_get_buff_len: ("xdp_get_buff_len", xdp_get_buff_len),
}
HELPERS = {int(k): v for k, v in HELPERS.items()}
