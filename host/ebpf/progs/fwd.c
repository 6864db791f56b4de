// Ref: RFC 1812 §5.2.4.3 and §5.3.1 (forwarding checks, TTL decrement), RFC 1624 (incremental
//      checksum update); include/uapi/linux/bpf.h (struct bpf_fib_lookup, BPF_FIB_LKUP_RET_*)
/* IPv4 forwarder with bpf_fib_lookup: look the destination up in the host's routing table;
 * on success decrement the TTL (fixing the checksum incrementally), set the MAC addresses the
 * lookup returned and redirect to the egress interface. Packets with TTL <= 1, non-IPv4
 * frames and lookups that do not succeed go to the stack (XDP_PASS), which answers with ICMP
 * or ARP as needed; blackhole/unreachable/prohibit routes drop. */
#include "xdp_parse.h"

#ifndef AF_INET
#define AF_INET 2
#endif

static __always_inline void ttl_dec(struct iphdr *ip)
{
	__u32 check = ip->check;

	check += bpf_htons(0x0100);
	ip->check = (__u16)(check + (check >= 0xFFFF));
	ip->ttl--;
}

SEC("xdp")
int fwd(struct xdp_md *ctx)
{
	struct cursor c = { (void *)(long)ctx->data, (void *)(long)ctx->data_end };
	struct bpf_fib_lookup fib = {};
	struct ethhdr *eth;
	struct iphdr *ip;
	int rc;

	if (parse_eth(&c, &eth) != ETH_P_IP)
		return XDP_PASS;
	if (parse_ipv4(&c, &ip) < 0)
		return XDP_DROP;
	if (ip->ttl <= 1)
		return XDP_PASS;
	fib.family = AF_INET;
	fib.tos = ip->tos;
	fib.l4_protocol = ip->protocol;
	fib.tot_len = bpf_ntohs(ip->tot_len);
	fib.ipv4_src = ip->saddr;
	fib.ipv4_dst = ip->daddr;
	fib.ifindex = ctx->ingress_ifindex;
	rc = bpf_fib_lookup(ctx, &fib, sizeof(fib), 0);
	if (rc == BPF_FIB_LKUP_RET_BLACKHOLE || rc == BPF_FIB_LKUP_RET_UNREACHABLE ||
	    rc == BPF_FIB_LKUP_RET_PROHIBIT)
		return XDP_DROP;
	if (rc != BPF_FIB_LKUP_RET_SUCCESS)
		return XDP_PASS;
	ttl_dec(ip);
	__builtin_memcpy(eth->h_dest, fib.dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, fib.smac, ETH_ALEN);
	return bpf_redirect(fib.ifindex, 0);
}

char _license[] SEC("license") = "GPL";
