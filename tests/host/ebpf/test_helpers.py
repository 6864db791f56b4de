"""Helpers against the kernel where BPF_PROG_TEST_RUN shows their result, by hand elsewhere.

Packet edges (how far bpf_xdp_adjust_head/tail/meta may move them, tried on both sides of each
limit) and bpf_csum_diff's sum come from the kernel: each probe program returns what the helper
allowed or computed, and the kernel returns the frame with its metadata.
bpf_fib_lookup answers (which depend on the host's routes in the kernel) and the fallback of
bpf_redirect_map are checked against include/uapi/linux/bpf.h by hand.
"""

import random
import struct

import pytest

from nicsim.host.ebpf.build import compile_c
from nicsim.host.ebpf.elf import load_object
from nicsim.host.ebpf.helpers import FibTable, csum_diff
from nicsim.host.ebpf.interp import Vm

from .kernel_oracle import KernelProgram, kernel_available

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


def test_fib_lookup_answers(tmp_path):
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
    assert ask("192.168.1.1")[0] == 2                               # UNREACHABLE
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
