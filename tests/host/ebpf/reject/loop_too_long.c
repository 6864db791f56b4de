// Counts up to a number the program reads from its context: nothing bounds the loop below
// the verifier's budget of one million instructions.
// expect: BPF program is too large
// kernel: same
#include "common.h"

SEC("xdp")
int loop_too_long(struct xdp_md *ctx)
{
    __u32 n = ctx->rx_queue_index;
    __u32 sum = 0;

    for (__u32 i = 0; i < n; i++)
        sum += i ^ (sum >> 3);
    return sum & 1;
}

char _license[] SEC("license") = "GPL";
