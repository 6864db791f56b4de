"""Helpers against the kernel where BPF_PROG_TEST_RUN shows their result, by hand elsewhere.

Packet edges (how far bpf_xdp_adjust_head/tail/meta may move them, tried on both sides of each
limit) and bpf_csum_diff's sum come from the kernel: each probe program returns what the helper
allowed or computed, and the kernel returns the frame with its metadata.
bpf_fib_lookup answers the kernel's routing table gives: a network namespace of the test's own
holds routes, neighbours and interfaces, and nicsim's FibTable the same routes; the whole
struct bpf_fib_lookup the helper leaves and the fwd example's verdicts and frames must be
equal; the same namespace's devices serve as ingress interfaces for the context fields. The
fallback of bpf_redirect_map is checked by hand and against the kernel.
"""

import random
import struct

import pytest

from nicsim.host.ebpf.build import compile_c, prog_path
from nicsim.host.ebpf.elf import load_object
from nicsim.host.ebpf.helpers import FibTable, csum_diff
from nicsim.host.ebpf.interp import Vm

from .cases import random_packets
from .kernel_oracle import KernelError, KernelProgram, NetNs, kernel_available

PROBES = r"""
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
/* The first 4 bytes of the frame are the offset to try, byte 4 picks the helper; the verdict
 * is 1 when the helper allowed the move, 2 when it refused. */
SEC("xdp") int edge(struct xdp_md *ctx) {
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	int offset, rc;
	__u8 which;
	if (data + 5 > end) return 99;
	offset = *(int *)data;
	which = *(__u8 *)(data + 4);
	if (which & 8) {  /* first 32 bytes of metadata */
		if (bpf_xdp_adjust_meta(ctx, -32)) return 98;
	}
	switch (which & 7) {
	case 0: rc = bpf_xdp_adjust_tail(ctx, offset); break;
	case 1: rc = bpf_xdp_adjust_head(ctx, offset); break;
	default: rc = bpf_xdp_adjust_meta(ctx, offset); break;
	}
	return rc == 0 ? 1 : 2;
}
char _license[] SEC("license") = "GPL";
"""

CSUM = r"""
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
SEC("xdp") int csum(struct xdp_md *ctx) {
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	__u32 from[5], to[5], seed;
	if (data + 44 > end) return 0;
	__builtin_memcpy(from, data, 20);
	__builtin_memcpy(to, data + 20, 20);
	__builtin_memcpy(&seed, data + 40, 4);
	return bpf_csum_diff(from, 20, to, 20, seed);
}
SEC("xdp") int csum_add(struct xdp_md *ctx) {
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	__u32 to[2];
	if (data + 8 > end) return 0;
	__builtin_memcpy(to, data, 8);
	return bpf_csum_diff(0, 0, to, 8, 0);
}
char _license[] SEC("license") = "GPL";
"""


def _build(tmp_path_factory, name, text):
    src = tmp_path_factory.mktemp(name) / f"{name}.c"
    src.write_text(text)
    path = compile_c(src)
    return path, load_object(path)


@pytest.fixture(scope="module")
def probes(tmp_path_factory):
    return _build(tmp_path_factory, "probes", PROBES)


def _kernel():
    ok, why = kernel_available()
    if not ok:
        pytest.skip(f"kernel oracle unavailable: {why}")


def _edge_cases():
    cases = []
    for length in (14, 15, 60, 1514, 3000):
        grow = 3520 - length   # a 4096-byte frame: 256 headroom, 320 for skb_shared_info
        for offset in (-(length - 14) - 1, -(length - 14), -1, 0, 1, grow, grow + 1):
            cases.append((length, 0, offset))                          # tail
        for offset in (-217, -216, -100, -1, 1, length - 14, length - 13):
            cases.append((length, 1, offset))                          # head
            cases.append((length, 1 | 8, offset))                      # head, with metadata
        for offset in (-256, -252, -220, -216, -212, -6, -4, 4):
            cases.append((length, 2, offset))                          # metadata
            cases.append((length, 2 | 8, offset))
    return cases


def test_packet_edges_match_kernel(probes):
    _kernel()
    path, obj = probes
    vm = Vm(obj.programs["edge"])
    pattern = bytes(range(256)) * 12
    with KernelProgram(path, "edge") as kp:
        for length, which, offset in _edge_cases():
            frame = struct.pack("<iB", offset, which) + pattern[5:length]
            k_ret, k_out = kp.run(frame)
            ours = vm.run(frame)
            assert (ours.verdict, ours.meta + ours.packet) == (k_ret, k_out), (
                length, which, offset)


def test_csum_diff_matches_kernel(tmp_path_factory):
    _kernel()
    path, obj = _build(tmp_path_factory, "csum", CSUM)
    rng = random.Random(5)
    specials = [bytes(44), b"\xff" * 44, b"\xff" * 40 + bytes(4)]
    frames = specials + [bytes(rng.randrange(256) for _ in range(44)) for _ in range(25)]
    for prog in ("csum", "csum_add"):
        vm = Vm(obj.programs[prog])
        with KernelProgram(path, prog) as kp:
            for frame in frames:
                k_ret, _ = kp.run(frame)
                assert vm.run(frame).verdict == k_ret, (prog, frame.hex())


def test_csum_diff_rfc1624_example():
    # RFC 1624 §4: header checksum 0xDD2F, a 16-bit field changes 0x5555 -> 0x3285: the new
    # checksum is 0x0000. As 32-bit words in host order with the other half zero.
    old = struct.pack("<I", 0x5555)
    new = struct.pack("<I", 0x3285)
    total = csum_diff(old, new, ~0xDD2F & 0xFFFF)
    total = (total & 0xFFFF) + (total >> 16)
    total = (total & 0xFFFF) + (total >> 16)
    assert ~total & 0xFFFF == 0x0000


FIB_C = r"""
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
struct { __uint(type, BPF_MAP_TYPE_ARRAY); __type(key, __u32);
         __type(value, struct bpf_fib_lookup); __uint(max_entries, 1); } out SEC(".maps");
SEC("xdp") int fib(struct xdp_md *ctx) {
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	struct bpf_fib_lookup f = {};
	__u32 k = 0;
	int rc;
	if (data + 6 > end) return 99;
	f.family = 2;
	__builtin_memcpy(&f.ipv4_dst, data, 4);
	__builtin_memcpy(&f.tot_len, data + 4, 2);
	f.ifindex = 1;
	rc = bpf_fib_lookup(ctx, &f, sizeof(f), 0);
	bpf_map_update_elem(&out, &k, &f, 0);
	return rc;
}
char _license[] SEC("license") = "GPL";
"""


def test_fib_lookup_answers_by_hand(tmp_path):
    src = tmp_path / "fib.c"
    src.write_text(FIB_C)
    obj = load_object(compile_c(src))
    fib = (FibTable()
           .add("10.0.0.0/8", 2, "02:00:00:00:00:02", "02:00:00:00:00:01", mtu=1500)
           .add("10.1.0.0/16", 3, "02:00:00:00:00:03", "02:00:00:00:00:01",
                gateway="10.1.0.254", mtu=9000)
           .add("10.2.0.0/16", 4, None, "02:00:00:00:00:01")
           .add("10.3.0.0/16", 0, kind="blackhole"))
    vm = Vm(obj.programs["fib"], map_specs=obj.maps, fib=fib)

    def ask(dst, tot_len=100):
        frame = bytes(map(int, dst.split("."))) + struct.pack("<H", tot_len) + bytes(8)
        verdict = vm.run(frame).verdict
        params = bytes(vm.maps[0].values[0])
        return verdict, params

    rc, p = ask("10.9.9.9")
    assert rc == 0                                                  # SUCCESS
    assert struct.unpack_from("<I", p, 8)[0] == 2                   # egress ifindex
    assert p[52:58] == bytes.fromhex("020000000001") and p[58:64] == bytes.fromhex("020000000002")
    rc, p = ask("10.1.2.3")
    assert rc == 0 and p[32:36] == bytes([10, 1, 0, 254])           # next hop: the gateway
    assert struct.unpack_from("<I", p, 8)[0] == 3                   # longest prefix wins
    assert ask("10.2.0.1")[0] == 7                                  # NO_NEIGH
    assert ask("10.3.0.1")[0] == 1                                  # BLACKHOLE
    assert ask("192.168.1.1")[0] == 4                               # no route: NOT_FWDED
    rc, p = ask("10.9.9.9", tot_len=1600)
    assert rc == 8 and struct.unpack_from("<H", p, 6)[0] == 1500    # FRAG_NEEDED, mtu_result
    vm.fib = FibTable(forwarding=False)
    assert ask("10.9.9.9")[0] == 5                                  # FWD_DISABLED


REDIRECT_C = r"""
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
struct { __uint(type, BPF_MAP_TYPE_DEVMAP); __type(key, __u32); __type(value, __u32);
         __uint(max_entries, 4); } ports SEC(".maps");
SEC("xdp") int rd(struct xdp_md *ctx) {
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	__u8 *p = data;
	if (data + 2 > end) return 99;
	return bpf_redirect_map(&ports, p[0], p[1]);
}
char _license[] SEC("license") = "GPL";
"""


def test_redirect_map_falls_back_to_the_flags_action(tmp_path):
    src = tmp_path / "rd.c"
    src.write_text(REDIRECT_C)
    path = compile_c(src)
    obj = load_object(path)
    vm = Vm(obj.programs["rd"], map_specs=obj.maps)
    vm.maps[0].update(struct.pack("<I", 1), struct.pack("<I", 1))
    cases = [(1, 0, 4), (2, 0, 0), (2, 1, 1), (2, 2, 2), (2, 3, 3), (2, 0x40, 0)]
    for key, flags, expected in cases:
        res = vm.run(bytes([key, flags]) + bytes(20))
        assert res.verdict == expected, (key, flags)
        if expected == 4:
            assert res.redirect == {"kind": "devmap", "map": "ports", "key": 1, "target": 1}
    ok, _ = kernel_available()
    if ok:  # the kernel agrees (ifindex 1, the loopback, exists everywhere)
        with KernelProgram(path, "rd") as kp:
            kp.map_update("ports", struct.pack("<I", 1), struct.pack("<I", 1))
            for key, flags, expected in cases:
                assert kp.run(bytes([key, flags]) + bytes(20))[0] == expected, (key, flags)


# -- bpf_fib_lookup against the kernel's routing table ----------------------------------------

FIB_QUERY_C = r"""
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
/* Frame: destination (4), tot_len (2, host order), tos, flags, then 12 bytes that prefill
 * smac/dmac and 4 that prefill the VLAN fields (so that what the helper leaves shows). The
 * program writes the struct the helper left over the frame's start, then its return code. */
SEC("xdp") int fibq(struct xdp_md *ctx) {
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	struct bpf_fib_lookup f = {};
	__u8 *p = data;
	__u32 flags;
	int rc;
	if (data + 72 > end) return XDP_DROP;
	f.family = 2;
	__builtin_memcpy(&f.ipv4_dst, p, 4);
	__builtin_memcpy(&f.tot_len, p + 4, 2);
	f.tos = p[6];
	flags = p[7];
	__builtin_memcpy(f.smac, p + 8, 6);
	__builtin_memcpy(f.dmac, p + 14, 6);
	__builtin_memcpy(&f.h_vlan_proto, p + 20, 2);
	__builtin_memcpy(&f.h_vlan_TCI, p + 22, 2);
	f.ifindex = ctx->ingress_ifindex;
	rc = bpf_fib_lookup(ctx, &f, sizeof(f), flags);
	__builtin_memcpy(data, &f, sizeof(f));
	__builtin_memcpy(data + 64, &rc, 4);
	return XDP_PASS;
}
char _license[] SEC("license") = "GPL";
"""

D1_MAC, D2_MAC = "02:00:00:00:01:01", "02:00:00:00:02:01"
NEIGH_A, NEIGH_B, GW_MAC = "02:00:00:00:00:99", "02:00:00:00:00:55", "02:00:00:00:00:fe"
SKIP_NEIGH = 4  # BPF_FIB_LOOKUP_SKIP_NEIGH


@pytest.fixture(scope="module")
def fib_host():
    """A namespace whose routing table the kernel's bpf_fib_lookup reads, and nicsim's
    FibTable written from the same facts: ``(netns name, FibTable)``."""
    _kernel()
    try:
        ns = NetNs()
    except KernelError as exc:
        pytest.skip(f"no network namespace for the kernel's routing table: {exc}")
    try:
        for n, (mac, mtu) in enumerate(((D1_MAC, 1500), (D2_MAC, 9000)), start=1):
            ns.ip("link", "add", f"d{n}", "numrxqueues", 4, "numtxqueues", 4, "type", "veth",
                  "peer", "name", f"p{n}")
            ns.ip("link", "set", f"d{n}", "address", mac, "mtu", mtu, "up")
            ns.ip("link", "set", f"p{n}", "mtu", mtu, "up")
        ns.ip("link", "set", "lo", "up")
        ns.ip("addr", "add", "10.0.0.1/16", "dev", "d1")
        ns.ip("addr", "add", "172.16.0.1/16", "dev", "d2")
        ns.ip("route", "add", "10.1.0.0/16", "via", "172.16.0.254", "dev", "d2", "metric", 7)
        ns.ip("route", "add", "10.1.5.0/24", "dev", "d1")
        ns.ip("route", "add", "10.2.0.0/16", "via", "172.16.0.253", "dev", "d2")
        for kind, prefix in (("blackhole", "10.3.0.0/16"), ("unreachable", "10.4.0.0/16"),
                             ("prohibit", "10.5.0.0/16")):
            ns.ip("route", "add", kind, prefix)
        for addr, mac, dev in (("10.0.0.9", NEIGH_A, "d1"), ("10.1.5.5", NEIGH_B, "d1"),
                               ("172.16.0.254", GW_MAC, "d2")):
            ns.ip("neigh", "add", addr, "lladdr", mac, "dev", dev, "nud", "permanent")
        ns.sysctl("net.ipv4.conf.all.forwarding", 1)
        # IPv6: connected routes have metric 256, others 1024 (the kernel's defaults).
        ns.sysctl("net.ipv6.conf.all.forwarding", 1)
        ns.ip("addr", "add", "2001:db8:1::1/64", "dev", "d1", "nodad")
        ns.ip("addr", "add", "2001:db8:2::1/64", "dev", "d2", "nodad")
        ns.ip("route", "add", "2001:db8:10::/48", "via", "2001:db8:2::fe", "dev", "d2")
        for kind, prefix in (("blackhole", "2001:db8:30::/48"),
                             ("unreachable", "2001:db8:40::/48"),
                             ("prohibit", "2001:db8:50::/48")):
            ns.ip("route", "add", kind, prefix)
        for addr, mac, dev in (("2001:db8:1::9", NEIGH_A, "d1"), ("2001:db8:2::fe", GW_MAC, "d2")):
            ns.ip("neigh", "add", addr, "lladdr", mac, "dev", dev, "nud", "permanent")
        d1, d2 = ns.ifindex("d1"), ns.ifindex("d2")
    except KernelError as exc:
        ns.close()
        pytest.skip(f"cannot build the namespace's routes: {exc}")
    # The same table as nicsim's routes: a neighbour is a route with the next hop's MAC.
    fib = (FibTable()
           .add("10.0.0.1/32", 0, kind="local")
           .add("10.0.255.255/32", 0, kind="local")           # the subnet's broadcast
           .add("10.0.0.0/16", d1, None, D1_MAC)
           .add("10.0.0.9/32", d1, NEIGH_A, D1_MAC)
           .add("10.1.0.0/16", d2, GW_MAC, D2_MAC, gateway="172.16.0.254", mtu=9000, metric=7)
           .add("10.1.5.0/24", d1, None, D1_MAC)
           .add("10.1.5.5/32", d1, NEIGH_B, D1_MAC)
           .add("10.2.0.0/16", d2, None, D2_MAC, gateway="172.16.0.253", mtu=9000)
           .add("10.3.0.0/16", 0, kind="blackhole")
           .add("10.4.0.0/16", 0, kind="unreachable")
           .add("10.5.0.0/16", 0, kind="prohibit")
           .add("172.16.0.254/32", d2, GW_MAC, D2_MAC, mtu=9000)
           .add("172.16.0.0/16", d2, None, D2_MAC, mtu=9000)
           .add("2001:db8:1::1/128", 0, kind="local")
           .add("2001:db8:2::1/128", 0, kind="local")
           .add("2001:db8:1::/64", d1, None, D1_MAC, metric=256)
           .add("2001:db8:1::9/128", d1, NEIGH_A, D1_MAC, metric=256)
           .add("2001:db8:2::/64", d2, None, D2_MAC, mtu=9000, metric=256)
           .add("2001:db8:10::/48", d2, GW_MAC, D2_MAC, gateway="2001:db8:2::fe", mtu=9000,
                metric=1024)
           .add("2001:db8:30::/48", 0, kind="blackhole")
           .add("2001:db8:40::/48", 0, kind="unreachable")
           .add("2001:db8:50::/48", 0, kind="prohibit"))
    yield ns.name, fib, {"d1": d1, "d2": d2}
    ns.close()


def _fib_query(dst, tot_len=100, tos=0, flags=0):
    prefill = bytes.fromhex("eeeeeeeeeeee" "dddddddddddd" "81001234")
    return (bytes(map(int, dst.split("."))) + struct.pack("<HBB", tot_len, tos, flags)
            + prefill + bytes(48))


FIB_QUERIES = [
    *[(dst, 100, 0, 0) for dst in (
        "10.0.0.9", "10.0.0.10", "10.0.0.1", "10.0.255.255", "10.1.2.3", "10.1.5.5",
        "10.1.5.6", "10.2.0.1", "10.3.0.1", "10.4.0.1", "10.5.0.1", "8.8.8.8",
        "172.16.0.254", "172.16.9.9")],
    ("10.0.0.9", 0, 0, 0), ("10.0.0.9", 1500, 0, 0), ("10.0.0.9", 1501, 0, 0),
    ("10.1.2.3", 9000, 0, 0), ("10.1.2.3", 9001, 0, 0), ("10.0.0.10", 1501, 0, 0),
    ("10.1.2.3", 100, 0x10, 0), ("10.0.0.10", 100, 0x10, 0),
    ("10.0.0.10", 100, 0, SKIP_NEIGH), ("10.2.0.1", 100, 0, SKIP_NEIGH),
    ("10.1.2.3", 100, 0, SKIP_NEIGH),
]


def test_fib_lookup_matches_the_kernel_s_routing_table(fib_host, tmp_path_factory):
    netns, fib, _ = fib_host
    path, obj = _build(tmp_path_factory, "fibq", FIB_QUERY_C)
    vm = Vm(obj.programs["fibq"], fib=fib)
    seen = set()
    with KernelProgram(path, "fibq", netns=netns) as kp:
        for dst, tot_len, tos, flags in FIB_QUERIES:
            frame = _fib_query(dst, tot_len, tos, flags)
            k_ret, k_out = kp.run(frame)
            ours = vm.run(frame, ifindex=1)   # test runs see the namespace's loopback, 1
            assert (ours.verdict, ours.packet) == (k_ret, k_out), (
                dst, tot_len, tos, flags, ours.packet[:68].hex(), k_out[:68].hex())
            seen.add(struct.unpack_from("<i", k_out, 64)[0])
    # Every answer the routes can give came up: SUCCESS, BLACKHOLE, UNREACHABLE, PROHIBIT,
    # NOT_FWDED (no route, local, broadcast), NO_NEIGH, FRAG_NEEDED.
    assert seen == {0, 1, 2, 3, 4, 7, 8}


def test_fib_forwarder_matches_the_kernel(fib_host):
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether

    netns, fib, _ = fib_host
    path = compile_c(prog_path("fwd"))
    vm = Vm(load_object(path).programs["fwd"], fib=fib)
    rng = random.Random(9)
    dests = ["10.0.0.9", "10.0.0.10", "10.0.0.1", "10.1.2.3", "10.1.5.5", "10.2.0.1",
             "10.3.0.1", "10.4.0.1", "10.5.0.1", "8.8.8.8", "172.16.0.254"]
    frames = [bytes(Ether(src="02:00:00:00:00:01", dst=D1_MAC)
                    / IP(src="192.0.2.1", dst=dst, ttl=rng.choice([1, 2, 64]), tos=0x10)
                    / UDP(sport=rng.randrange(1024, 65536), dport=53)
                    / bytes(rng.choice([10, 1480, 1500])))
              for dst in dests for _ in range(2)]
    frames += random_packets(seed=10, count=20)  # damaged and other protocols
    verdicts = set()
    with KernelProgram(path, "fwd", netns=netns) as kp:
        for n, frame in enumerate(frames):
            k_ret, k_out = kp.run(frame)
            ours = vm.run(frame, ifindex=1)
            assert (ours.verdict, ours.packet) == (k_ret, k_out), (n, frame[:48].hex())
            verdicts.add(k_ret)
    assert verdicts == {1, 2, 4}  # dropped (reject routes), passed, redirected


FIB6_QUERY_C = r"""
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
/* As fibq for IPv6: destination (16), tot_len (2), flags, a pad byte, 12 bytes of MACs. */
SEC("xdp") int fibq6(struct xdp_md *ctx) {
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	struct bpf_fib_lookup f = {};
	__u8 *p = data;
	__u32 flags;
	int rc;
	if (data + 72 > end) return XDP_DROP;
	f.family = 10;
	__builtin_memcpy(f.ipv6_dst, p, 16);
	__builtin_memcpy(&f.tot_len, p + 16, 2);
	flags = p[18];
	__builtin_memcpy(f.smac, p + 20, 6);
	__builtin_memcpy(f.dmac, p + 26, 6);
	f.ifindex = ctx->ingress_ifindex;
	rc = bpf_fib_lookup(ctx, &f, sizeof(f), flags);
	__builtin_memcpy(data, &f, sizeof(f));
	__builtin_memcpy(data + 64, &rc, 4);
	return XDP_PASS;
}
char _license[] SEC("license") = "GPL";
"""


def test_fib_lookup_ipv6_matches_the_kernel_s_routing_table(fib_host, tmp_path_factory):
    import ipaddress

    netns, fib, _ = fib_host
    path, obj = _build(tmp_path_factory, "fibq6", FIB6_QUERY_C)
    vm = Vm(obj.programs["fibq6"], fib=fib)
    seen = set()
    queries = [("2001:db8:1::9", 100, 0), ("2001:db8:1::8", 100, 0), ("2001:db8:1::1", 100, 0),
               ("2001:db8:10::5", 100, 0), ("2001:db8:10::5", 9001, 0),
               ("2001:db8:30::1", 100, 0), ("2001:db8:40::1", 100, 0),
               ("2001:db8:50::1", 100, 0), ("2001:db9::1", 100, 0), ("2001:db8:1::9", 1501, 0),
               ("2001:db8:1::8", 100, SKIP_NEIGH), ("fe80::1", 100, 0)]
    with KernelProgram(path, "fibq6", netns=netns) as kp:
        for dst, tot_len, flags in queries:
            frame = (ipaddress.IPv6Address(dst).packed + struct.pack("<HBB", tot_len, flags, 0)
                     + bytes.fromhex("eeeeeeeeeeee" "dddddddddddd") + bytes(48))
            k_ret, k_out = kp.run(frame)
            ours = vm.run(frame, ifindex=1)
            assert (ours.verdict, ours.packet) == (k_ret, k_out), (
                dst, tot_len, flags, ours.packet[:68].hex(), k_out[:68].hex())
            seen.add(struct.unpack_from("<i", k_out, 64)[0])
    assert seen == {0, 1, 2, 3, 4, 7, 8}


CTX_C = r"""
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
/* Writes what the context says over the frame: ingress ifindex, RX queue, metadata length and
 * the first metadata word. */
SEC("xdp") int ctxq(struct xdp_md *ctx) {
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	void *meta = (void *)(long)ctx->data_meta;
	__u32 *p = data;
	if (data + 16 > end) return XDP_DROP;
	p[0] = ctx->ingress_ifindex;
	p[1] = ctx->rx_queue_index;
	p[2] = (__u32)(data - meta);
	p[3] = meta + 4 <= data ? *(__u32 *)meta : 0xffffffff;
	return XDP_PASS;
}
char _license[] SEC("license") = "GPL";
"""


def test_context_fields_match_the_kernel(fib_host, tmp_path_factory):
    # BPF_PROG_TEST_RUN takes the context (struct xdp_md) from the caller: ingress device,
    # its RX queue, and metadata in front of the frame (ctx.data = its length).
    netns, _, devs = fib_host
    path, obj = _build(tmp_path_factory, "ctxq", CTX_C)
    vm = Vm(obj.programs["ctxq"])
    frame = bytes(range(64))
    with KernelProgram(path, "ctxq", netns=netns) as kp:
        for ifindex, queue, meta in ((1, 0, b""), (devs["d1"], 0, b"\x11\x22\x33\x44"),
                                     (devs["d1"], 3, bytes(range(100, 108))),
                                     (devs["d2"], 2, b"")):
            data = meta + frame
            ctx = struct.pack("<6I", len(meta), len(data), 0, ifindex, queue, 0)
            k_ret, k_out = kp.run(data, ctx=ctx)
            ours = vm.run(frame, ifindex=ifindex, rx_queue=queue, meta=meta)
            assert (ours.verdict, ours.meta + ours.packet) == (k_ret, k_out), (ifindex, queue)
            assert struct.unpack_from("<3I", k_out, len(meta)) == (ifindex, queue, len(meta))
