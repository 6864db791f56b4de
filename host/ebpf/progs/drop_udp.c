// Ref: RFC 768 (UDP), RFC 863 (discard, port 9), RFC 791 §3.1 (fragment offset)
/* Drop/pass filter: drop UDP datagrams to a configurable port (9 by default, set the global
 * "port" before loading) and IPv4 fragments; pass everything else. */
#include "xdp_parse.h"

const volatile __u16 port = 9;

SEC("xdp")
int drop_udp(struct xdp_md *ctx)
{
	struct cursor c = { (void *)(long)ctx->data, (void *)(long)ctx->data_end };
	struct ethhdr *eth;
	struct iphdr *ip;
	struct ipv6hdr *ip6;
	struct udphdr *udp;
	int proto, l4;

	proto = parse_eth(&c, &eth);
	if (proto == ETH_P_IP) {
		l4 = parse_ipv4(&c, &ip);
		if (l4 < 0)
			return XDP_PASS;
		if (ip->frag_off & bpf_htons(0x3fff))
			return XDP_DROP;
	} else if (proto == ETH_P_IPV6) {
		l4 = parse_ipv6(&c, &ip6);
	} else {
		return XDP_PASS;
	}
	if (l4 != IPPROTO_UDP)
		return XDP_PASS;
	if (parse_udp(&c, &udp) < 0)
		return XDP_PASS;
	return udp->dest == bpf_htons(port) ? XDP_DROP : XDP_PASS;
}

char _license[] SEC("license") = "GPL";
