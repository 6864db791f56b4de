// Uses the lookup result without checking it for NULL.
// expect: invalid mem access 'map_value_or_null'
// kernel: same
#include "common.h"

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __type(key, __u32);
    __type(value, __u64);
    __uint(max_entries, 16);
} counters SEC(".maps");

SEC("xdp")
int map_null_deref(struct xdp_md *ctx)
{
    __u32 key = ctx->rx_queue_index;
    __u64 *count = bpf_map_lookup_elem(&counters, &key);

    *count += 1;
    return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
