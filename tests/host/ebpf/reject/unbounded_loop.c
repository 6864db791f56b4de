// Spins until a stack variable that nothing changes becomes non-zero.
// expect: infinite loop detected
// kernel: same
#include "common.h"

SEC("xdp")
int unbounded_loop(struct xdp_md *ctx)
{
    volatile int stop = 0;

    while (!stop)
        ;
    return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
