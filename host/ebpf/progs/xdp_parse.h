/* Packet parsing shared by the example XDP programs: bounds-checked header walkers. */
#ifndef NICSIM_XDP_PARSE_H
#define NICSIM_XDP_PARSE_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#ifndef ETH_P_8021Q
#define ETH_P_8021Q 0x8100
#endif
#ifndef ETH_P_8021AD
#define ETH_P_8021AD 0x88A8
#endif

struct vlan_hdr {
	__be16 tci;
	__be16 proto;
};

/* A cursor over the packet; every parse_* checks the header fits before data_end. */
struct cursor {
	void *pos;
	void *end;
};

static __always_inline int parse_eth(struct cursor *c, struct ethhdr **eth)
{
	struct ethhdr *h = c->pos;
	int proto;

	if ((void *)(h + 1) > c->end)
		return -1;
	c->pos = h + 1;
	*eth = h;
	proto = h->h_proto;
	/* Up to two VLAN tags (802.1ad outer, 802.1Q inner). */
#pragma unroll
	for (int i = 0; i < 2; i++) {
		struct vlan_hdr *v = c->pos;

		if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD))
			break;
		if ((void *)(v + 1) > c->end)
			return -1;
		proto = v->proto;
		c->pos = v + 1;
	}
	return bpf_ntohs(proto);
}

static __always_inline int parse_ipv4(struct cursor *c, struct iphdr **ip)
{
	struct iphdr *h = c->pos;
	int hlen;

	if ((void *)(h + 1) > c->end)
		return -1;
	hlen = h->ihl * 4;
	if (hlen < (int)sizeof(*h) || h->version != 4)
		return -1;
	if (c->pos + hlen > c->end)
		return -1;
	c->pos += hlen;
	*ip = h;
	return h->protocol;
}

static __always_inline int parse_ipv6(struct cursor *c, struct ipv6hdr **ip6)
{
	struct ipv6hdr *h = c->pos;

	if ((void *)(h + 1) > c->end)
		return -1;
	if (h->version != 6)
		return -1;
	c->pos = h + 1;
	*ip6 = h;
	return h->nexthdr;
}

static __always_inline int parse_udp(struct cursor *c, struct udphdr **udp)
{
	struct udphdr *h = c->pos;

	if ((void *)(h + 1) > c->end)
		return -1;
	c->pos = h + 1;
	*udp = h;
	return bpf_ntohs(h->dest);
}

static __always_inline int parse_tcp(struct cursor *c, struct tcphdr **tcp)
{
	struct tcphdr *h = c->pos;
	int hlen;

	if ((void *)(h + 1) > c->end)
		return -1;
	hlen = h->doff * 4;
	if (hlen < (int)sizeof(*h))
		return -1;
	if (c->pos + hlen > c->end)
		return -1;
	c->pos += hlen;
	*tcp = h;
	return bpf_ntohs(h->dest);
}

/* Fold a 32-bit partial sum to the 16-bit one's complement checksum. */
static __always_inline __u16 csum_fold(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

#endif
