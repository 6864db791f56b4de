// Reads the EtherType without comparing data + 14 with data_end first.
// expect: invalid access to packet
// kernel: same
#include "common.h"

SEC("xdp")
int missing_bounds_check(struct xdp_md *ctx)
{
    struct ethhdr *eth = (void *)(long)ctx->data;

    if (eth->h_proto == bpf_htons(ETH_P_IP))
        return XDP_DROP;
    return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
