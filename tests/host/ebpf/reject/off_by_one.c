// Checks 13 bytes of Ethernet header, then reads the EtherType at bytes 12..13.
// expect: invalid access to packet, off=13 size=1
// kernel: same
#include "common.h"

SEC("xdp")
int off_by_one(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;

    if (data + sizeof(*eth) - 1 > data_end)
        return XDP_PASS;
    return eth->h_proto == bpf_htons(ETH_P_IP) ? XDP_DROP : XDP_PASS;
}

char _license[] SEC("license") = "GPL";
