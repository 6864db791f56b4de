// Two frames of 320 bytes each: together more than the 512 bytes of stack a call chain may use.
// expect: combined stack size of 2 calls
// kernel: same
#include "common.h"

static __attribute__((noinline)) int inner(int seed)
{
    __u32 words[80];

    __builtin_memset(words, 0, sizeof(words));
    words[0] = seed;
    return bpf_csum_diff(0, 0, words, sizeof(words), 0) & 1;
}

SEC("xdp")
int stack_overflow(struct xdp_md *ctx)
{
    __u32 words[80];

    __builtin_memset(words, 0, sizeof(words));
    words[1] = ctx->ingress_ifindex;
    return inner(ctx->rx_queue_index) | (bpf_csum_diff(0, 0, words, sizeof(words), 0) & 1);
}

char _license[] SEC("license") = "GPL";
