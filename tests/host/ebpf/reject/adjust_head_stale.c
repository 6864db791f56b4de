// Keeps using the old data pointer after bpf_xdp_adjust_head moved the packet start.
// expect: invalid mem access 'scalar'
// kernel: same
#include "common.h"

SEC("xdp")
int adjust_head_stale(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;

    if (data + sizeof(*eth) > data_end)
        return XDP_PASS;
    if (bpf_xdp_adjust_head(ctx, -4))
        return XDP_DROP;
    return eth->h_proto == bpf_htons(ETH_P_IP) ? XDP_DROP : XDP_PASS;
}

char _license[] SEC("license") = "GPL";
