// Compares against data_end - 14: arithmetic on data_end is not allowed.
// expect: pointer arithmetic on pkt_end prohibited
// kernel: same
#include "common.h"

SEC("xdp")
int pkt_end_arith(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;

    if (data > data_end - sizeof(*eth))
        return XDP_PASS;
    return eth->h_proto == bpf_htons(ETH_P_IP) ? XDP_DROP : XDP_PASS;
}

char _license[] SEC("license") = "GPL";
