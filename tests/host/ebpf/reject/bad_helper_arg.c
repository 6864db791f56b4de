// Hands bpf_csum_diff a 16-byte stack buffer with a size of 64.
// expect: invalid indirect access to stack
// kernel: same
#include "common.h"

SEC("xdp")
int bad_helper_arg(struct xdp_md *ctx)
{
    __u32 words[4] = { ctx->rx_queue_index, 1, 2, 3 };
    volatile __u32 size = 64;

    return bpf_csum_diff(0, 0, words, size & 64, 0) & 1;
}

char _license[] SEC("license") = "GPL";
