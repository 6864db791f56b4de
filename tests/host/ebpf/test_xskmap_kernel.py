"""The xskmap against the kernel's, with real AF_XDP sockets.

A kernel xskmap entry holds an AF_XDP socket, so a network namespace of the test's own gets a
veth pair and AF_XDP sockets made from Python (UMEM, fill/completion/RX/TX rings, bound in copy
mode to queues 0 and 1 of one end; one more left unbound), beside a UDP socket and a pipe. The
same random updates (socket fds, a dup of one, fds of no socket, of another family, of
nothing; keys past max_entries; every flag), deletes and user-space lookups go to a kernel
xskmap (bpf(2) on the map a loaded object pinned) and to nicsim's, told the same fds; every
return code must be equal, and after each step what XDP programs see: ``bpf_map_lookup_elem``
(NULL, or the socket's ``queue_id``) and ``bpf_redirect_map`` (with present, empty and
out-of-range keys, 64-bit keys, the XDP_PASS/XDP_DROP fallback in the flags' low bits and
flags an xskmap refuses) run by BPF_PROG_TEST_RUN. With BPF_F_TEST_XDP_LIVE_FRAMES the kernel
carries the redirect out: the frame lands in the RX ring of the socket bound to the queue it
came in on, where it must equal the frame nicsim's run leaves (a socket of another queue gets
nothing). Closing a socket's last fd empties its slots in both. nicsim's verifier and the
kernel's on what a program may do with the socket pointer a lookup returns (a 4-byte read of
``queue_id``; no narrower read, write or use as helper memory) end the file.
"""

import errno
import os
import random
import socket
import struct
from types import SimpleNamespace

import pytest

from nicsim.host.ebpf.build import compile_c, prog_path
from nicsim.host.ebpf.elf import load_object
from nicsim.host.ebpf.interp import Vm
from nicsim.host.ebpf.maps import FileDesc, MapError, create_map
from nicsim.host.ebpf.protos import MapType

from .kernel_oracle import (
    InNetNs,
    KernelError,
    KernelProgram,
    NetNs,
    RawMap,
    XdpSocket,
    kernel_available,
    obj_get,
    pinned_map,
    prog_run,
    run_live,
)

XSK_C = r"""
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
struct { __uint(type, BPF_MAP_TYPE_XSKMAP); __uint(key_size, 4); __uint(value_size, 4);
         __uint(max_entries, 4); } xsks SEC(".maps");
/* Frame: the key (u64), the flags (u64), then how many bytes to strip in front. */
SEC("xdp") int rd(struct xdp_md *ctx) {
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	__u64 key, flags;
	__u8 strip;
	if (data + 17 > end) return 99;
	__builtin_memcpy(&key, data, 8);
	__builtin_memcpy(&flags, data + 8, 8);
	strip = *(__u8 *)(data + 16);
	if (strip && bpf_xdp_adjust_head(ctx, strip)) return 98;
	return bpf_redirect_map(&xsks, key, flags);
}
/* Frame: the key (u32). 50 for NULL, else 100 + the socket's queue. */
SEC("xdp") int lk(struct xdp_md *ctx) {
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	struct bpf_xdp_sock *xsk;
	__u32 key;
	if (data + 4 > end) return 99;
	__builtin_memcpy(&key, data, 4);
	xsk = bpf_map_lookup_elem(&xsks, &key);
	if (!xsk) return 50;
	return 100 + xsk->queue_id;
}
char _license[] SEC("license") = "GPL";
"""

MAX_ENTRIES = 4
BAD_FD = 999_999  # no process here has a million files open


def _u32(n):
    return struct.pack("<I", n & 0xFFFFFFFF)


def _rd_frame(key, flags, strip=0):
    return struct.pack("<QQB", key, flags, strip) + bytes(range(17, 64))


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    ok, why = kernel_available()
    if not ok:
        pytest.skip(f"kernel oracle unavailable: {why}")
    src = tmp_path_factory.mktemp("xsk") / "xsk.c"
    src.write_text(XSK_C)
    path = compile_c(src)
    h = SimpleNamespace()  # the namespace, its sockets and fds, the object
    h.obj = load_object(path)
    closers = []
    try:
        try:
            ns = NetNs()
        except KernelError as exc:
            pytest.skip(f"no network namespace for AF_XDP sockets: {exc}")
        closers.append(ns.close)
        try:
            ns.ip("link", "add", "d1", "numrxqueues", 2, "numtxqueues", 2, "type", "veth",
                  "peer", "name", "p1")
            for dev in ("d1", "p1", "lo"):
                ns.ip("link", "set", dev, "up")
            h.ifindex = ns.ifindex("d1")
        except KernelError as exc:
            pytest.skip(f"cannot make a veth pair in the namespace: {exc}")
        h.ns = ns
        try:
            with InNetNs(ns.name):
                h.xs0, h.xs1, h.unbound = XdpSocket(), XdpSocket(), XdpSocket()
                h.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        except KernelError as exc:
            pytest.skip(f"AF_XDP unavailable: {exc}")
        for s in (h.xs0, h.xs1, h.unbound, h.udp):
            closers.append(s.close)
        try:
            h.xs0.bind(h.ifindex, 0)
            h.xs1.bind(h.ifindex, 1)
        except KernelError as exc:
            pytest.skip(f"AF_XDP copy mode unavailable: {exc}")
        h.xs0.fill()
        h.dup0 = os.dup(h.xs0.fileno())
        closers.append(lambda: os.close(h.dup0))
        h.pipe = os.pipe()
        closers += [lambda: os.close(h.pipe[0]), lambda: os.close(h.pipe[1])]
        # The same open files as nicsim sees them: the dup names the same socket.
        sock0 = FileDesc("xsk", 0)
        h.fds = {h.xs0.fileno(): sock0, h.dup0: sock0, h.xs1.fileno(): FileDesc("xsk", 1),
                 h.unbound.fileno(): FileDesc("xsk", 0), h.udp.fileno(): FileDesc("socket"),
                 h.pipe[0]: FileDesc("file")}
        h.values = [h.xs0.fileno(), h.dup0, h.xs1.fileno(), h.unbound.fileno(),
                    h.udp.fileno(), h.pipe[0], BAD_FD, 0xFFFFFFFF]
        h.path = path
        yield h
    finally:
        for close in reversed(closers):
            close()


class Pair:
    """One kernel load of the object and one nicsim twin with the same fds."""

    def __init__(self, h):
        self.kp = KernelProgram(h.path, "rd").__enter__()
        self.kfd = {}
        try:
            self.kmap = pinned_map(self.kp, "xsks")
            for name in ("rd", "lk"):
                self.kfd[name] = obj_get(self.kp.dir / "prog" / name)
        except KernelError:
            self.close()
            raise
        self.maps = [create_map(spec) for spec in h.obj.maps]
        self.ours = next(m for m in self.maps if m.name == "xsks")
        self.ours.fds = dict(h.fds)
        self.vm = {name: Vm(h.obj.programs[name], maps=self.maps) for name in ("rd", "lk")}

    def close(self):
        for fd in self.kfd.values():
            os.close(fd)
        if getattr(self, "kmap", None) is not None:
            self.kmap.close()
        self.kp.close()

    def compare_programs(self, where):
        """The programs' view of every slot (and one past the end) must be the kernel's."""
        for key in range(MAX_ENTRIES + 1):
            k_ret, _ = prog_run(self.kfd["lk"], _u32(key) + bytes(16))
            assert self.vm["lk"].run(_u32(key) + bytes(16)).verdict == k_ret, (where, key)
            frame = _rd_frame(key, 2)  # XDP_PASS when the slot is empty
            k_ret, _ = prog_run(self.kfd["rd"], frame)
            assert self.vm["rd"].run(frame).verdict == k_ret, (where, "redirect", key)


@pytest.fixture
def pair(host):
    p = Pair(host)
    yield p
    p.close()


def test_xskmap_operations_match_kernel(host, pair):
    rng = random.Random("xskmap")
    kmap, ours = pair.kmap, pair.ours
    for step in range(150):
        key = _u32(rng.randrange(MAX_ENTRIES + 2))
        op = rng.random()
        if op < 0.6:
            value = _u32(rng.choice(host.values))
            flags = rng.choice([0, 0, 1, 1, 2, 2, 4, 8])
            expected = kmap.update(key, value, flags)
            assert ours.update(key, value, flags) == expected, (step, "update", key.hex(),
                                                                value.hex(), flags)
        elif op < 0.85:
            assert ours.delete(key) == kmap.delete(key), (step, "delete", key.hex())
        else:
            err, value = kmap.lookup_errno(key)
            assert err == -errno.EOPNOTSUPP and value is None
            assert ours.sys_lookup(key) == err, (step, "lookup", key.hex())
        pair.compare_programs(step)


def test_redirect_map_verdicts_match_kernel(host, pair):
    slots = {0: host.xs0.fileno(), 1: host.unbound.fileno(), 3: host.xs1.fileno()}
    for key, value in slots.items():
        assert pair.kmap.update(_u32(key), _u32(value)) == 0
        assert pair.ours.update(_u32(key), _u32(value)) == 0
    # Present, empty and out-of-range keys, a key whose high 32 bits are set; flags: no
    # fallback, each action as the fallback, and flags an xskmap refuses (XDP_ABORTED).
    keys = [0, 1, 2, 3, 4, 7, 1 << 32, (1 << 32) | 2, (1 << 64) - 1]
    flag_set = [0, 1, 2, 3, 4, 8, 0x10, 0x40, 1 << 32, (1 << 32) | 2]
    for key in keys:
        for flags in flag_set:
            frame = _rd_frame(key, flags)
            k_ret, k_out = prog_run(pair.kfd["rd"], frame)
            res = pair.vm["rd"].run(frame)
            assert (res.verdict, res.packet) == (k_ret, k_out), (hex(key), hex(flags))
            if k_ret == 4:
                slot = key & 0xFFFFFFFF
                assert res.redirect == {"kind": "xskmap", "map": "xsks", "key": slot,
                                        "target": slots[slot]}


def test_live_redirect_delivers_the_frame_nicsim_leaves(host, pair):
    # A live test run receives on queue 0 of the context's device: the socket bound there
    # gets what the program redirects to it (copy mode), after the program's edits.
    for key, sock in ((0, host.xs0), (1, host.xs1)):
        assert pair.kmap.update(_u32(key), _u32(sock.fileno())) == 0
        assert pair.ours.update(_u32(key), _u32(sock.fileno())) == 0
    host.xs0.receive()  # nothing left over from another test
    for strip in (0, 1, 14, 40):
        frame = _rd_frame(0, 0, strip)
        with InNetNs(host.ns.name):
            err = run_live(pair.kfd["rd"], frame, host.ifindex)
        if err == -errno.EINVAL and strip == 0:
            pytest.skip("this kernel has no BPF_F_TEST_XDP_LIVE_FRAMES")
        assert err == 0, os.strerror(-err)
        res = pair.vm["rd"].run(frame)
        assert res.verdict == 4 and res.redirect["target"] == host.xs0.fileno()
        assert host.xs0.receive() == [res.packet], strip
    host.xs0.fill()  # give the chunks back
    # The socket of queue 1 has chunks to fill but the run's frame came in on queue 0:
    # xsk_rcv_check() refuses it, though the verdict is XDP_REDIRECT in both.
    host.xs1.fill()
    frame = _rd_frame(1, 0)
    with InNetNs(host.ns.name):
        assert run_live(pair.kfd["rd"], frame, host.ifindex, 1) == 0
    assert host.xs1.receive() == [] and host.xs0.receive() == []
    assert pair.vm["rd"].run(frame).redirect["target"] == host.xs1.fileno()


def test_shipped_redirect_xsk_matches_kernel(host):
    # redirect.c's redirect_xsk keys the xskmap by the receive queue: the socket of queue 0
    # takes queue 0's frames, queue 1 (an empty slot) falls back to XDP_PASS; a live run
    # hands queue 0's frame to the socket.
    path = compile_c(prog_path("redirect"))
    obj = load_object(path)
    maps = [create_map(spec) for spec in obj.maps]
    ours = next(m for m in maps if m.type == MapType.xskmap)
    ours.fds = dict(host.fds)
    vm = Vm(obj.programs["redirect_xsk"], maps=maps)
    frame = bytes(range(60))
    with KernelProgram(path, "redirect_xsk") as kp:
        kmap = pinned_map(kp, ours.name)
        pfd = obj_get(kp.dir / "prog" / "redirect_xsk")
        try:
            assert kmap.update(_u32(0), _u32(host.xs0.fileno())) == 0
            assert ours.update(_u32(0), _u32(host.xs0.fileno())) == 0
            host.xs0.receive()
            with InNetNs(host.ns.name):
                for queue in (0, 1):
                    k_ret, k_out = prog_run(pfd, frame, host.ifindex, queue)
                    res = vm.run(frame, ifindex=host.ifindex, rx_queue=queue)
                    assert (res.verdict, res.packet) == (k_ret, k_out), queue
                err = run_live(pfd, frame, host.ifindex)
            if err == -errno.EINVAL:
                pytest.skip("this kernel has no BPF_F_TEST_XDP_LIVE_FRAMES")
            assert err == 0, os.strerror(-err)
            assert host.xs0.receive() == [vm.run(frame, rx_queue=0).packet]
            host.xs0.fill()
        finally:
            os.close(pfd)
            kmap.close()


def test_closing_a_socket_empties_its_slots(host, pair):
    with InNetNs(host.ns.name):
        tmp = XdpSocket()
    fd = tmp.fileno()
    dup = os.dup(fd)
    pair.ours.fds[fd] = pair.ours.fds[dup] = FileDesc("xsk", 0)
    try:
        for key in (1, 2):
            assert pair.kmap.update(_u32(key), _u32(fd)) == 0
            assert pair.ours.update(_u32(key), _u32(fd)) == 0
        assert pair.kmap.update(_u32(3), _u32(host.xs1.fileno())) == 0
        assert pair.ours.update(_u32(3), _u32(host.xs1.fileno())) == 0
        pair.compare_programs("before close")
        tmp.close()                  # the dup still holds the socket
        pair.ours.release(fd)
        pair.compare_programs("one fd closed")
        os.close(dup)
        pair.ours.release(dup)
        dup = None
        pair.compare_programs("last fd closed")
        assert [k for k in range(4) if pair.ours.lookup(_u32(k)) is not None] == [3]
    finally:
        tmp.close()
        if dup is not None:
            os.close(dup)


@pytest.mark.parametrize("key_size, value_size, max_entries, flags", [
    (4, 4, 4, 0), (4, 8, 4, 0), (8, 4, 4, 0), (4, 4, 0, 0), (4, 4, 4, 1), (4, 4, 4, 8),
    (4, 4, 4, 0x10), (4, 4, 4, 0x20),
])
def test_xskmap_definitions_match_kernel(host, key_size, value_size, max_entries, flags):
    from nicsim.host.ebpf.elf import MapSpec

    try:
        RawMap(int(MapType.xskmap), key_size, value_size, max_entries, flags).close()
        kernel_ok = True
    except KernelError:
        kernel_ok = False
    try:
        create_map(MapSpec("x", int(MapType.xskmap), key_size, value_size, max_entries,
                           flags))
        ours_ok = True
    except MapError:
        ours_ok = False
    assert ours_ok == kernel_ok


XSK_ACCESS_C = r"""
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
struct { __uint(type, BPF_MAP_TYPE_XSKMAP); __uint(key_size, 4); __uint(value_size, 4);
         __uint(max_entries, 4); } xsks SEC(".maps");
SEC("xdp") int p(struct xdp_md *ctx) {
	__u32 key = 0;
	struct bpf_xdp_sock *xsk = bpf_map_lookup_elem(&xsks, &key);
	if (!xsk) return XDP_PASS;
	BODY
}
char _license[] SEC("license") = "GPL";
"""

@pytest.mark.parametrize("body", [
    pytest.param("return xsk->queue_id ? XDP_PASS : XDP_DROP;", id="read-queue-id"),
    pytest.param("return *((volatile __u8 *)xsk + 1) ? XDP_PASS : XDP_DROP;", id="narrow-read"),
    pytest.param("*(volatile __u32 *)xsk = 5; return XDP_PASS;", id="write"),
    pytest.param("return bpf_csum_diff(0, 0, (__be32 *)xsk, 4, 0) ? XDP_PASS : XDP_DROP;",
                 id="helper-memory"),
])
def test_xsk_pointer_accesses_match_kernel_verifier(host, tmp_path, body):
    from nicsim.host.ebpf.verifier import verify

    from .kernel_oracle import kernel_load

    src = tmp_path / "access.c"
    src.write_text(XSK_ACCESS_C.replace("BODY", body))
    path = compile_c(src)
    obj = load_object(path)
    accepted, log = kernel_load(path)
    res = verify(obj.programs["p"], obj.maps)
    assert res.ok == accepted, log.splitlines()[-3:]
    if not accepted:
        # The kernel's reason (its last words before the statistics), up to the list of the
        # types it expects, which is longer than nicsim's, is nicsim's too.
        why = [ln for ln in log.splitlines() if ln.startswith("R")][-1]
        assert why.split(" expected=")[0] in res.reason, (why, res.reason)
