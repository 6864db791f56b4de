"""The verifier on C programs built by clang, each compared with the running kernel's verifier.

* ``tests/host/ebpf/reject/*.c``: mistakes the verifier must catch. Each file names, in its
  header, words of nicsim's reason (``// expect:``) and what the kernel does with the same
  object (``// kernel:``): ``same`` (rejects it too, loaded as root through bpftool),
  ``noperfmon`` (a loader without CAP_PERFMON is refused, which is nicsim's rule; with
  CAP_PERFMON the kernel allows it) or ``accepts`` (nicsim is stricter: XDP return values).
* ``host/ebpf/progs/*.c`` (the example programs) and the programs below (parsers, a firewall,
  a load balancer, encapsulation, a bounded loop over TCP options, a subprogram, fib lookup,
  a bound read from ``.rodata``):
  accepted by nicsim and by the kernel.
* Mutants of those programs (one instruction changed at random): nicsim and the kernel give
  the same verdict, except where nicsim rejects by one of its stricter rules.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest

from nicsim.host.ebpf import insn as isa
from nicsim.host.ebpf.build import BuildError, progs_dir
from nicsim.host.ebpf.build import compile_c as _compile_c
from nicsim.host.ebpf.elf import load_object
from nicsim.host.ebpf.insn import Insn
from nicsim.host.ebpf.verifier import verify

from .kernel_oracle import kernel_available, kernel_load
from .test_verifier import CASES, _kernel_load, in_child

REJECT_DIR = Path(__file__).parent / "reject"
LONG_CASES = {"loop_too_long"}  # a million instructions walked, by nicsim and by the kernel

ACCEPT_SOURCES = {
    "common.h": r"""
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
""",
    "fw_vlan.c": r"""
#include "common.h"
struct vlan_hdr { __be16 tci; __be16 proto; };
struct flow { __u32 src, dst; __u16 sport, dport; __u8 proto; __u8 pad[3]; };
struct { __uint(type, BPF_MAP_TYPE_HASH); __type(key, struct flow); __type(value, __u32);
         __uint(max_entries, 1024); } rules SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY); __type(key, __u32); __type(value, __u64);
         __uint(max_entries, 5); } stats SEC(".maps");
static __always_inline void count(__u32 action)
{
    __u64 *c = bpf_map_lookup_elem(&stats, &action);
    if (c)
        *c += 1;
}
SEC("xdp")
int fw_vlan(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    struct flow f;
    __u32 action = XDP_PASS;

    __builtin_memset(&f, 0, sizeof(f));
    if ((void *)(eth + 1) > end) { action = XDP_DROP; goto out; }
    __u16 proto = eth->h_proto;
    void *cur = eth + 1;
#pragma unroll
    for (int i = 0; i < 2; i++) {
        if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD))
            break;
        struct vlan_hdr *vh = cur;
        if ((void *)(vh + 1) > end) { action = XDP_DROP; goto out; }
        proto = vh->proto;
        cur = vh + 1;
    }
    if (proto != bpf_htons(ETH_P_IP))
        goto out;
    struct iphdr *ip = cur;
    if ((void *)(ip + 1) > end || ip->ihl < 5) { action = XDP_DROP; goto out; }
    f.src = ip->saddr; f.dst = ip->daddr; f.proto = ip->protocol;
    void *l4 = (void *)ip + ip->ihl * 4;
    if (ip->protocol == IPPROTO_TCP) {
        struct tcphdr *th = l4;
        if ((void *)(th + 1) > end) { action = XDP_DROP; goto out; }
        f.sport = th->source; f.dport = th->dest;
    } else if (ip->protocol == IPPROTO_UDP) {
        struct udphdr *uh = l4;
        if ((void *)(uh + 1) > end) { action = XDP_DROP; goto out; }
        f.sport = uh->source; f.dport = uh->dest;
    }
    __u32 *verdict = bpf_map_lookup_elem(&rules, &f);
    if (verdict && *verdict == XDP_DROP)
        action = XDP_DROP;
out:
    count(action);
    return action;
}
char _license[] SEC("license") = "GPL";
""",
    "nat_csum.c": r"""
#include "common.h"
struct backend { __u8 mac[6]; __u8 pad[2]; __u32 addr; };
struct { __uint(type, BPF_MAP_TYPE_ARRAY); __type(key, __u32); __type(value, struct backend);
         __uint(max_entries, 16); } backends SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_LRU_HASH); __type(key, __u64); __type(value, __u32);
         __uint(max_entries, 4096); } conns SEC(".maps");
SEC("xdp")
int nat_csum(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    struct iphdr *ip = data + sizeof(*eth);

    if ((void *)(ip + 1) > end)
        return XDP_PASS;
    if (eth->h_proto != bpf_htons(ETH_P_IP) || ip->ihl != 5)
        return XDP_PASS;
    struct udphdr *uh = (void *)(ip + 1);
    if ((void *)(uh + 1) > end)
        return XDP_PASS;
    __u64 key = ((__u64)ip->saddr << 32) | ((__u32)uh->source << 16) | uh->dest;
    __u32 idx, *known = bpf_map_lookup_elem(&conns, &key);
    if (known) {
        idx = *known;
    } else {
        idx = (ip->saddr ^ uh->source ^ (key >> 7)) % 16;
        bpf_map_update_elem(&conns, &key, &idx, BPF_ANY);
    }
    struct backend *b = bpf_map_lookup_elem(&backends, &idx);
    if (!b)
        return XDP_ABORTED;
    __u32 old = ip->daddr;
    ip->daddr = b->addr;
    __s64 d = bpf_csum_diff(&old, 4, &ip->daddr, 4, ~((__u32)ip->check) & 0xffff);
    if (d < 0)
        return XDP_ABORTED;
    d = (d & 0xffff) + (d >> 16);
    ip->check = ~((d & 0xffff) + (d >> 16));
    __builtin_memcpy(eth->h_source, eth->h_dest, 6);
    __builtin_memcpy(eth->h_dest, b->mac, 6);
    return XDP_TX;
}
char _license[] SEC("license") = "GPL";
""",
    "ipip_encap.c": r"""
#include "common.h"
SEC("xdp")
int ipip_encap(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;

    if ((void *)(eth + 1) > end)
        return XDP_DROP;
    if (eth->h_proto != bpf_htons(ETH_P_IP))
        return XDP_PASS;
    struct ethhdr saved = *eth;
    if (bpf_xdp_adjust_head(ctx, -(int)sizeof(struct iphdr)))
        return XDP_DROP;
    data = (void *)(long)ctx->data;
    end = (void *)(long)ctx->data_end;
    eth = data;
    struct iphdr *outer = data + sizeof(*eth);
    if ((void *)(outer + 1) > end)
        return XDP_DROP;
    __builtin_memcpy(eth, &saved, sizeof(saved));
    outer->version = 4; outer->ihl = 5; outer->tos = 0;
    outer->tot_len = bpf_htons((__u16)(end - (void *)outer));
    outer->id = 0; outer->frag_off = 0; outer->ttl = 64; outer->protocol = IPPROTO_IPIP;
    outer->saddr = bpf_htonl(0x0a000001); outer->daddr = bpf_htonl(0x0a000002);
    outer->check = 0;
    __u32 sum = bpf_csum_diff(0, 0, (__be32 *)outer, sizeof(*outer), 0);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    outer->check = ~sum;
    return XDP_TX;
}
char _license[] SEC("license") = "GPL";
""",
    "tcp_options.c": r"""
#include "common.h"
SEC("xdp")
int tcp_options(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    struct iphdr *ip = data + sizeof(*eth);

    if ((void *)(ip + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
        return XDP_PASS;
    if (ip->protocol != IPPROTO_TCP || ip->ihl != 5)
        return XDP_PASS;
    struct tcphdr *th = (void *)(ip + 1);
    if ((void *)(th + 1) > end)
        return XDP_PASS;
    __u8 *opt = (void *)(th + 1);
    __u32 off = 0;
    for (int i = 0; i < 10; i++) {
        if (off > 40)
            break;
        __u8 *p = opt + off;
        if ((void *)(p + 2) > end)
            break;
        if (p[0] == 0)
            break;
        if (p[0] == 1) {
            off++;
            continue;
        }
        if (p[0] == 2 && p[1] == 4)
            return XDP_DROP;
        if (p[1] < 2)
            break;
        off += p[1];
    }
    return XDP_PASS;
}
char _license[] SEC("license") = "GPL";
""",
    "sum_subprog.c": r"""
#include "common.h"
struct { __uint(type, BPF_MAP_TYPE_DEVMAP); __type(key, __u32); __type(value, __u32);
         __uint(max_entries, 8); } ports SEC(".maps");
static __attribute__((noinline)) int sum_bytes(struct xdp_md *ctx, int start)
{
    void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
    __u32 sum = 0;

    for (int i = 0; i < 64; i++) {
        __u8 *p = data + 14 + i;
        if ((void *)(p + 1) > end)
            break;
        sum += *p;
    }
    return sum;
}
SEC("xdp")
int sum_subprog(struct xdp_md *ctx)
{
    int s = sum_bytes(ctx, 0);

    if (s & 1)
        return bpf_redirect_map(&ports, s & 7, XDP_PASS);
    return XDP_PASS;
}
char _license[] SEC("license") = "GPL";
""",
    "rodata_bound.c": r"""
#include "common.h"
const volatile __u32 limit = 4;
struct counters { __u64 n[4]; };
struct { __uint(type, BPF_MAP_TYPE_ARRAY); __type(key, __u32); __type(value, struct counters);
         __uint(max_entries, 1); } stats SEC(".maps");
SEC("xdp")
int rodata_bound(struct xdp_md *ctx)
{
    __u32 zero = 0, idx = ctx->rx_queue_index;
    struct counters *c = bpf_map_lookup_elem(&stats, &zero);

    if (!c)
        return XDP_PASS;
    if (idx < limit)
        c->n[idx] += 1;
    return XDP_PASS;
}
char _license[] SEC("license") = "GPL";
""",
    "fib_fwd.c": r"""
#include "common.h"
#define AF_INET 2
SEC("xdp")
int fib_fwd(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    struct iphdr *ip = data + sizeof(*eth);
    struct bpf_fib_lookup p;

    if ((void *)(ip + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
        return XDP_PASS;
    if (ip->ttl <= 1)
        return XDP_PASS;
    __builtin_memset(&p, 0, sizeof(p));
    p.family = AF_INET; p.tos = ip->tos; p.l4_protocol = ip->protocol;
    p.tot_len = bpf_ntohs(ip->tot_len); p.ipv4_src = ip->saddr; p.ipv4_dst = ip->daddr;
    p.ifindex = ctx->ingress_ifindex;
    if (bpf_fib_lookup(ctx, &p, sizeof(p), 0) != BPF_FIB_LKUP_RET_SUCCESS)
        return XDP_PASS;
    ip->ttl--;
    __builtin_memcpy(eth->h_dest, p.dmac, 6);
    __builtin_memcpy(eth->h_source, p.smac, 6);
    return bpf_redirect(p.ifindex, 0);
}
char _license[] SEC("license") = "GPL";
""",
}


def compile_c(path, flags=()):
    """Build with clang-15, or skip saying why it cannot be built here."""
    try:
        return _compile_c(path, flags)
    except BuildError as exc:
        if "not found" in str(exc):
            pytest.skip(str(exc))
        raise


def _header(path):
    text = path.read_text()
    expect = re.search(r"^// expect: (.+)$", text, re.M)
    kernel = re.search(r"^// kernel: (\w+)", text, re.M)
    assert expect and kernel, f"{path.name}: no '// expect:' or '// kernel:' line"
    assert kernel[1] in ("same", "noperfmon", "accepts"), kernel[1]
    return expect[1].strip(), kernel[1]


REJECT = sorted(REJECT_DIR.glob("*.c"))
# clang-15's default instruction set (v1) and v3 (32-bit ALU operations and jumps)
CPUS = {"v1": (), "v3": ("-mcpu=v3",)}


def _params(paths):
    return [pytest.param(p, cpu, id=f"{p.stem}-{cpu}",
                         marks=[pytest.mark.long] if p.stem in LONG_CASES else [])
            for p in paths for cpu in CPUS]


def _one_program(obj_path):
    obj = load_object(obj_path)
    assert len(obj.programs) == 1, sorted(obj.programs)
    (name, program), = obj.programs.items()
    return obj, name, program


@pytest.mark.parametrize("path, cpu", _params(REJECT))
def test_reject(path, cpu):
    expect, _ = _header(path)
    obj, _, program = _one_program(compile_c(path, CPUS[cpu]))
    res = verify(program, obj.maps)
    assert not res.ok, f"{path.name} accepted"
    assert expect in res.reason, res.reason
    assert "\n" not in res.reason
    if res.insn is not None:
        assert res.reason.startswith(f"insn {res.insn}: ")
        assert program.insns[res.insn] is not None


@pytest.mark.parametrize("path, cpu", _params(REJECT))
def test_reject_against_kernel(path, cpu):
    ready, why = kernel_available()
    if not ready:
        pytest.skip(why)
    _, mode = _header(path)
    obj_path = compile_c(path, CPUS[cpu])
    obj, name, program = _one_program(obj_path)
    accepted, log = kernel_load(obj_path, name)
    if mode == "same":
        assert not accepted, "the kernel accepted it"
    elif mode == "accepts":
        lines = [ln for ln in log.splitlines() if ln.strip()]
        assert accepted, f"the kernel rejected it: {lines[-1] if lines else '?'}"
    else:
        # The kernel relaxes this rule for CAP_PERFMON only: with it the object loads,
        # without it the same instructions are refused.
        assert accepted, "the kernel rejected it even with CAP_PERFMON"
        ok, msg = in_child(_kernel_load, program.insns, obj.maps)
        if ok is None:
            pytest.skip(f"cannot load without CAP_PERFMON here: {msg}")
        assert ok is False, "the kernel without CAP_PERFMON accepted it"


@pytest.fixture(scope="session")
def accept_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("verifier-accept")
    for name, text in ACCEPT_SOURCES.items():
        (folder / name).write_text(text)
    return folder


ACCEPT = [name for name in ACCEPT_SOURCES if name.endswith(".c")]
EXAMPLES = sorted(progs_dir().glob("*.c"))


def _programs(obj_path):
    obj = load_object(obj_path)
    assert obj.programs
    return obj, obj.programs


def _check_accepted(obj_path):
    obj, programs = _programs(obj_path)
    for name, program in programs.items():
        res = verify(program, obj.maps, gpl=obj.license == "GPL")
        assert res.ok, f"{name}: {res.reason}"


def _check_kernel_accepts(obj_path):
    ready, why = kernel_available()
    if not ready:
        pytest.skip(why)
    _, programs = _programs(obj_path)
    for name in programs:
        accepted, log = kernel_load(obj_path, name)
        lines = [ln for ln in log.splitlines() if ln.strip()]
        assert accepted, f"{name}: {lines[-1] if lines else '?'}"


@pytest.mark.parametrize("cpu", CPUS)
@pytest.mark.parametrize("name", ACCEPT)
def test_accept(name, cpu, accept_dir):
    _check_accepted(compile_c(accept_dir / name, CPUS[cpu]))


@pytest.mark.parametrize("cpu", CPUS)
@pytest.mark.parametrize("name", ACCEPT)
def test_accept_against_kernel(name, cpu, accept_dir):
    _check_kernel_accepts(compile_c(accept_dir / name, CPUS[cpu]))


@pytest.mark.parametrize("cpu", CPUS)
@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_examples(path, cpu):
    _check_accepted(compile_c(path, CPUS[cpu]))


@pytest.mark.parametrize("cpu", CPUS)
@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_examples_against_kernel(path, cpu):
    _check_kernel_accepts(compile_c(path, CPUS[cpu]))


# ---------------------------------------------------------------------------------------------
# mutants: accepted programs (C and hand-assembled) with one instruction changed (a bounds
# check removed or its condition flipped, an offset, a constant, a register, an access size
# or an ALU operation changed, an instruction removed or two swapped),
# judged by nicsim and by the kernel

_FLIP = {isa.JGT: isa.JGE, isa.JGE: isa.JGT, isa.JLT: isa.JLE, isa.JLE: isa.JLT,
         isa.JEQ: isa.JNE, isa.JNE: isa.JEQ, isa.JSGT: isa.JSGE, isa.JSGE: isa.JSGT,
         isa.JSLT: isa.JSLE, isa.JSLE: isa.JSLT}
# nicsim's stricter rules (docs/ebpf-verifier.md): there the kernel as root may accept
STRICTER = ("was never written", "At program exit", "invalid mem access 'map_ptr'")


def _movable(ins):
    """Not a lddw, a bpf-to-bpf call or a jump (those keep their slots)."""
    return ins is not None and not ins.is_lddw and not (
        ins.cls in (isa.JMP, isa.JMP32) and (ins.op & 0xF0 != isa.CALL or ins.src))


def mutate(insns, rng):
    """Return a copy of ``insns`` with one instruction changed, and what changed."""
    insns = list(insns)
    while True:
        i = rng.randrange(len(insns))
        ins = insns[i]
        if ins is None:
            continue
        cls, code = ins.cls, ins.op & 0xF0
        if rng.random() < 0.1 and _movable(ins):
            j = rng.randrange(len(insns))
            if rng.random() < 0.5:
                insns[i] = Insn(isa.JMP | isa.JA, 0, 0, 0, 0)
                return insns, f"insn {i}: removed"
            if _movable(insns[j]):
                insns[i], insns[j] = insns[j], insns[i]
                return insns, f"insns {i} and {j} swapped"
        if rng.random() < 0.2 and (cls in (isa.ALU64, isa.ALU, isa.LDX, isa.STX) or (
                cls in (isa.JMP, isa.JMP32) and code not in (isa.CALL, isa.EXIT, isa.JA))):
            dst, src = (rng.randrange(10), ins.src) if rng.random() < 0.5 else \
                (ins.dst, rng.randrange(11))
            insns[i] = Insn(ins.op, dst, src, ins.off, ins.imm)
            return insns, f"insn {i}: registers r{dst}, r{src}"
        if rng.random() < 0.2 and cls in (isa.LDX, isa.STX, isa.ST) \
                and ins.op & 0xE0 == isa.MEM:
            size = rng.choice([isa.B, isa.H, isa.W, isa.DW])
            insns[i] = Insn(ins.op & ~0x18 | size, ins.dst, ins.src, ins.off, ins.imm)
            return insns, f"insn {i}: {isa.SIZE_BYTES[size]}-byte access"
        if rng.random() < 0.1 and cls in (isa.ALU64, isa.ALU):
            op = rng.choice(sorted(isa.ALU_OPS))
            insns[i] = Insn(cls | op | ins.op & isa.X, ins.dst, ins.src, ins.off, ins.imm)
            return insns, f"insn {i}: {isa.ALU_OPS[op]}"
        if cls in (isa.LDX, isa.STX, isa.ST) and ins.op & 0xE0 == isa.MEM:
            delta = rng.choice([-2, -1, 1, 2, 4, 8])
            insns[i] = Insn(ins.op, ins.dst, ins.src, ins.off + delta, ins.imm)
            return insns, f"insn {i}: offset {delta:+d}"
        if cls in (isa.ALU64, isa.ALU) and code in (isa.ADD, isa.AND, isa.RSH, isa.LSH) \
                and not ins.op & isa.X:
            delta = rng.choice([-8, -4, -1, 1, 4, 8])
            insns[i] = Insn(ins.op, ins.dst, ins.src, ins.off, ins.imm + delta)
            return insns, f"insn {i}: immediate {delta:+d}"
        if cls in (isa.JMP, isa.JMP32) and code in _FLIP:
            how = rng.randrange(3)
            if how == 0:
                insns[i] = Insn(ins.op & 0x0F | _FLIP[code], ins.dst, ins.src, ins.off,
                                ins.imm)
                return insns, f"insn {i}: condition flipped"
            if how == 1:
                insns[i] = Insn(isa.JMP | isa.JA, 0, 0, 0, 0)
                return insns, f"insn {i}: branch removed"
            if not ins.op & isa.X:
                insns[i] = Insn(ins.op, ins.dst, ins.src, ins.off, ins.imm + 1)
                return insns, f"insn {i}: compared with {ins.imm + 1}"


def _all_programs(accept_dir, max_processed=None):
    """Accepted programs; with ``max_processed``, only those verified in that many steps
    (a mutant of a long loop may walk a million instructions, in nicsim and the kernel)."""
    out = [(f"case:{c.name}", c.insns, list(c.maps)) for c in CASES if c.ok]
    for path in [*EXAMPLES, *(accept_dir / n for n in ACCEPT)]:
        for cpu, flags in CPUS.items():
            obj = load_object(compile_c(path, flags))
            out.extend((f"{path.stem}-{cpu}:{name}", p.insns, obj.maps)
                       for name, p in sorted(obj.programs.items()))
    if max_processed:
        out = [p for p in out if verify(p[1], p[2]).insns_processed <= max_processed]
    return out


def _mutants_agree(accept_dir, seed, count, max_processed=None):
    ready, why = kernel_available()
    if not ready:
        pytest.skip(why)
    rng = random.Random(seed)
    programs = _all_programs(accept_dir, max_processed)
    disagree, verdicts = [], {True: 0, False: 0}
    for _ in range(count):
        name, insns, maps = rng.choice(programs)
        mutant, what = mutate(insns, rng)
        ours = verify(mutant, maps)
        kernel, log = _kernel_load(mutant, maps, log=False)
        assert kernel is not None, log
        verdicts[ours.ok] += 1
        if ours.ok != kernel and not (kernel and any(w in ours.reason for w in STRICTER)):
            disagree.append(f"{name} {what}: nicsim {ours.reason or 'accepts'}; "
                            f"kernel {'accepts' if kernel else 'rejects'}")
    assert not disagree, "\n".join(disagree[:10])  # rerun one with _kernel_load for the log
    # Both verdicts occur: the mutants exercise the rules, not only the happy path.
    assert verdicts[True] > count // 10 and verdicts[False] > count // 10, verdicts


def test_mutants_agree_with_kernel(accept_dir):
    _mutants_agree(accept_dir, seed=1, count=150, max_processed=2000)


@pytest.mark.long
def test_mutants_agree_with_kernel_long(accept_dir):
    _mutants_agree(accept_dir, seed=2, count=2000)
