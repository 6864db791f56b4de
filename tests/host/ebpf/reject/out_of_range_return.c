// Returns 7, which is no XDP action. The kernel does not check XDP return values (the driver
// warns at run time and drops); nicsim refuses the program.
// expect: should have been in [0, 4]
// kernel: accepts
#include "common.h"

SEC("xdp")
int out_of_range_return(struct xdp_md *ctx)
{
    return 7;
}

char _license[] SEC("license") = "GPL";
