// Returns the packet pointer as the verdict. The kernel lets loaders with CAP_PERFMON leak
// pointers; without it, it refuses the program as nicsim always does.
// expect: not a known value
// kernel: noperfmon
#include "common.h"

SEC("xdp")
int pointer_leak_return(struct xdp_md *ctx)
{
    return ctx->data;
}

char _license[] SEC("license") = "GPL";
