// Ref: RFC 791 §3.1 (header checksum), RFC 1624 (incremental update); the structure of
//      Katran's and Cilium's XDP load balancers (flow table, then hash over backends)
/* Load balancer with a hash map: IPv4 TCP/UDP packets to the virtual IP "vip" are sent to one
 * of "backends" (array: IPv4 address and MAC). A flow already in "flows" (hash of the 5-tuple)
 * keeps its backend; a new flow gets backend = hash(5-tuple) % nbackends and is recorded.
 * The destination IPv4 address and MAC are rewritten, the IPv4, TCP and UDP checksums fixed
 * with bpf_csum_diff, and the frame goes back out (XDP_TX). */
#include "xdp_parse.h"

#define MAX_BACKENDS 16

const volatile __u32 vip = 0x0a000064;     /* 10.0.0.100, host order */
const volatile __u32 nbackends = 4;

struct flow {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 pad[3];
};

struct backend {
	__be32 addr;
	__u8 mac[ETH_ALEN];
	__u16 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct flow);
	__type(value, __u32);
	__uint(max_entries, 1024);
} flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct backend);
	__uint(max_entries, MAX_BACKENDS);
} backends SEC(".maps");

static __always_inline __u32 mix(__u32 h, __u32 v)
{
	h ^= v;
	h *= 0x9e3779b1;
	return h ^ (h >> 15);
}

SEC("xdp")
int lb(struct xdp_md *ctx)
{
	struct cursor c = { (void *)(long)ctx->data, (void *)(long)ctx->data_end };
	struct ethhdr *eth;
	struct iphdr *ip;
	struct tcphdr *tcp;
	struct udphdr *udp;
	struct flow f = {};
	struct backend *be;
	__u32 idx, *known, h;
	__be16 *l4check = 0;
	__be32 old_daddr;
	__s64 sum;
	int l4;

	if (parse_eth(&c, &eth) != ETH_P_IP)
		return XDP_PASS;
	l4 = parse_ipv4(&c, &ip);
	if (l4 < 0)
		return XDP_DROP;
	if (ip->daddr != bpf_htonl(vip))
		return XDP_PASS;
	f.saddr = ip->saddr;
	f.daddr = ip->daddr;
	f.proto = l4;
	if (l4 == IPPROTO_TCP) {
		if (parse_tcp(&c, &tcp) < 0)
			return XDP_DROP;
		f.sport = tcp->source;
		f.dport = tcp->dest;
		l4check = &tcp->check;
	} else if (l4 == IPPROTO_UDP) {
		if (parse_udp(&c, &udp) < 0)
			return XDP_DROP;
		f.sport = udp->source;
		f.dport = udp->dest;
		if (udp->check)  /* zero: no UDP checksum (RFC 768) */
			l4check = &udp->check;
	} else {
		return XDP_PASS;
	}
	known = bpf_map_lookup_elem(&flows, &f);
	if (known) {
		idx = *known;
	} else {
		h = mix(mix(mix(0, f.saddr), f.daddr), ((__u32)f.sport << 16) | f.dport);
		h = mix(h, f.proto);
		idx = nbackends ? h % nbackends : 0;
		bpf_map_update_elem(&flows, &f, &idx, BPF_NOEXIST);
	}
	be = bpf_map_lookup_elem(&backends, &idx);
	if (!be || !be->addr)
		return XDP_DROP;
	old_daddr = ip->daddr;
	ip->daddr = be->addr;
	/* The IPv4 checksum: remove the old address, add the new one (RFC 1624). */
	sum = bpf_csum_diff(&old_daddr, 4, &be->addr, 4, ~((__u32)ip->check) & 0xffff);
	if (sum < 0)
		return XDP_ABORTED;
	ip->check = csum_fold((__u32)sum);
	/* TCP and UDP checksums cover the addresses through the pseudo-header. */
	if (l4check) {
		sum = bpf_csum_diff(&old_daddr, 4, &be->addr, 4, ~((__u32)*l4check) & 0xffff);
		if (sum < 0)
			return XDP_ABORTED;
		*l4check = csum_fold((__u32)sum);
	}
	__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, be->mac, ETH_ALEN);
	return XDP_TX;
}

char _license[] SEC("license") = "GPL";
