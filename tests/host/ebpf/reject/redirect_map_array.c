// bpf_redirect_map takes a devmap, cpumap or xskmap, not an array.
// expect: cannot take a map of type array
// kernel: same
#include "common.h"

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __type(key, __u32);
    __type(value, __u32);
    __uint(max_entries, 4);
} ports SEC(".maps");

SEC("xdp")
int redirect_map_array(struct xdp_md *ctx)
{
    return bpf_redirect_map(&ports, 0, XDP_PASS);
}

char _license[] SEC("license") = "GPL";
