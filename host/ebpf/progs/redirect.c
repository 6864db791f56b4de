// Ref: Documentation/bpf/map_devmap.rst, map_cpumap.rst, map_xskmap.rst
/* Redirect: send each frame to the interface "tx_port" holds for its receive queue (devmap),
 * falling back to XDP_PASS when the slot is empty; a second program spreads IPv4 flows over
 * CPUs through a cpumap by the low bits of the source address, and a third hands frames of
 * a queue with a bound AF_XDP socket to it (xskmap). */
#include "xdp_parse.h"

struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, 64);
} tx_port SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_CPUMAP);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, 16);
} cpus SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, 64);
} xsks SEC(".maps");

SEC("xdp")
int redirect_port(struct xdp_md *ctx)
{
	return bpf_redirect_map(&tx_port, ctx->rx_queue_index, XDP_PASS);
}

SEC("xdp")
int redirect_cpu(struct xdp_md *ctx)
{
	struct cursor c = { (void *)(long)ctx->data, (void *)(long)ctx->data_end };
	struct ethhdr *eth;
	struct iphdr *ip;

	if (parse_eth(&c, &eth) != ETH_P_IP || parse_ipv4(&c, &ip) < 0)
		return XDP_PASS;
	return bpf_redirect_map(&cpus, bpf_ntohl(ip->saddr) & 3, XDP_DROP);
}

SEC("xdp")
int redirect_xsk(struct xdp_md *ctx)
{
	return bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS);
}

SEC("xdp")
int redirect_ifindex(struct xdp_md *ctx)
{
	return bpf_redirect(ctx->ingress_ifindex, 0);
}

char _license[] SEC("license") = "GPL";
