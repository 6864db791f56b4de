// Indexes a four-counter map value with a packet byte masked to 0..7.
// expect: max value is outside of allowed memory range
// kernel: same
#include "common.h"

struct counters { __u64 n[4]; };

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __type(key, __u32);
    __type(value, struct counters);
    __uint(max_entries, 1);
} stats SEC(".maps");

SEC("xdp")
int map_value_oob(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    __u32 zero = 0;
    __u8 *first = data;

    if (data + 1 > data_end)
        return XDP_PASS;
    struct counters *c = bpf_map_lookup_elem(&stats, &zero);
    if (!c)
        return XDP_PASS;
    c->n[*first & 7] += 1;
    return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
