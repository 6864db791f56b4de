// Finds the UDP header after the IPv4 options (ihl * 4) but checks only the fixed headers.
// expect: invalid access to packet
// kernel: same
#include "common.h"

SEC("xdp")
int var_offset_unchecked(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    struct iphdr *ip = data + sizeof(*eth);

    if ((void *)(ip + 1) + sizeof(struct udphdr) > data_end)
        return XDP_PASS;
    if (ip->protocol != IPPROTO_UDP)
        return XDP_PASS;
    struct udphdr *udp = (void *)ip + ip->ihl * 4;
    return udp->dest == bpf_htons(53) ? XDP_DROP : XDP_PASS;
}

char _license[] SEC("license") = "GPL";
