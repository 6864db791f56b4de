// Bounds an index by a read-only global that is one too large for the map value: the
// verifier reads .rodata as constants, as the kernel does for frozen maps.
// expect: max value is outside of allowed memory range
// kernel: same
#include "common.h"

const volatile __u32 limit = 5;

struct counters { __u64 n[4]; };

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __type(key, __u32);
    __type(value, struct counters);
    __uint(max_entries, 1);
} stats SEC(".maps");

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
