// Ref: IEEE 802.3 (Ethernet II), IEEE 802.1Q (VLAN tags), RFC 791 (IPv4), RFC 8200 (IPv6),
//      RFC 768 (UDP), RFC 9293 (TCP)
/* Parser: walk Ethernet, up to two VLAN tags, IPv4/IPv6 and TCP/UDP; count each kind of packet
 * per CPU; drop frames whose headers are cut short, pass the rest. Returns the class in the
 * metadata-free way: the verdict only. */
#include "xdp_parse.h"

enum { C_ETH_SHORT, C_NON_IP, C_IPV4, C_IPV6, C_TCP, C_UDP, C_OTHER_L4, C_BAD_L3, C_BAD_L4,
       C_MAX };

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, C_MAX);
} counters SEC(".maps");

static __always_inline void count(__u32 what)
{
	__u64 *v = bpf_map_lookup_elem(&counters, &what);

	if (v)
		*v += 1;
}

SEC("xdp")
int parse_count(struct xdp_md *ctx)
{
	struct cursor c = { (void *)(long)ctx->data, (void *)(long)ctx->data_end };
	struct ethhdr *eth;
	struct iphdr *ip;
	struct ipv6hdr *ip6;
	struct tcphdr *tcp;
	struct udphdr *udp;
	int proto, l4;

	proto = parse_eth(&c, &eth);
	if (proto < 0) {
		count(C_ETH_SHORT);
		return XDP_DROP;
	}
	if (proto == ETH_P_IP) {
		l4 = parse_ipv4(&c, &ip);
		if (l4 < 0) {
			count(C_BAD_L3);
			return XDP_DROP;
		}
		count(C_IPV4);
	} else if (proto == ETH_P_IPV6) {
		l4 = parse_ipv6(&c, &ip6);
		if (l4 < 0) {
			count(C_BAD_L3);
			return XDP_DROP;
		}
		count(C_IPV6);
	} else {
		count(C_NON_IP);
		return XDP_PASS;
	}
	if (l4 == IPPROTO_TCP) {
		if (parse_tcp(&c, &tcp) < 0) {
			count(C_BAD_L4);
			return XDP_DROP;
		}
		count(C_TCP);
	} else if (l4 == IPPROTO_UDP) {
		if (parse_udp(&c, &udp) < 0) {
			count(C_BAD_L4);
			return XDP_DROP;
		}
		count(C_UDP);
	} else {
		count(C_OTHER_L4);
	}
	return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
