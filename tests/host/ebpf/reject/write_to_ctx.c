// struct xdp_md is read-only for XDP programs.
// expect: invalid bpf_context access off=16 size=4
// kernel: same
#include "common.h"

SEC("xdp")
int write_to_ctx(struct xdp_md *ctx)
{
    ctx->rx_queue_index = 0;
    return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
