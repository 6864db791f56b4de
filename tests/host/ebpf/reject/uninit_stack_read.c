// The map key's last field is never written: the helper reads uninitialised stack.
// The kernel allows this only to loaders with CAP_PERFMON.
// expect: invalid indirect read from stack
// kernel: noperfmon
#include "common.h"

struct key { __u32 addr; __u32 port; __u64 flags; };

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __type(key, struct key);
    __type(value, __u64);
    __uint(max_entries, 16);
} blocked SEC(".maps");

SEC("xdp")
int uninit_stack_read(struct xdp_md *ctx)
{
    struct key k;

    k.addr = ctx->rx_queue_index;
    k.port = ctx->ingress_ifindex;
    if (bpf_map_lookup_elem(&blocked, &k))
        return XDP_DROP;
    return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
