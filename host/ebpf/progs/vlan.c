// Ref: IEEE 802.1Q §9.6 (tag format: TPID 0x8100, then PCP/DEI/VID)
/* Header rewrites with bpf_xdp_adjust_head: "vlan_push" inserts an 802.1Q tag with the VLAN id
 * of global "vid" after the MAC addresses (growing the frame by 4 bytes at the front);
 * "vlan_pop" removes the outer tag of a tagged frame and passes untagged frames as they are. */
#include "xdp_parse.h"

const volatile __u16 vid = 100;

SEC("xdp")
int vlan_push(struct xdp_md *ctx)
{
	void *data, *data_end;
	struct ethhdr *eth;
	struct vlan_hdr *tag;
	__u8 macs[2 * ETH_ALEN];
	__be16 proto;

	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	eth = data;
	if ((void *)(eth + 1) > data_end)
		return XDP_DROP;
	proto = eth->h_proto;
	__builtin_memcpy(macs, eth, sizeof(macs));
	if (bpf_xdp_adjust_head(ctx, -(int)sizeof(struct vlan_hdr)))
		return XDP_ABORTED;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	eth = data;
	tag = (void *)(eth + 1);
	if ((void *)(tag + 1) > data_end)
		return XDP_ABORTED;
	__builtin_memcpy(eth, macs, sizeof(macs));
	eth->h_proto = bpf_htons(ETH_P_8021Q);
	tag->tci = bpf_htons(vid & 0x0fff);
	tag->proto = proto;
	return XDP_PASS;
}

SEC("xdp")
int vlan_pop(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct vlan_hdr *tag = (void *)(eth + 1);
	__u8 macs[2 * ETH_ALEN];
	__be16 inner;

	if ((void *)(eth + 1) > data_end)
		return XDP_DROP;
	if (eth->h_proto != bpf_htons(ETH_P_8021Q) && eth->h_proto != bpf_htons(ETH_P_8021AD))
		return XDP_PASS;
	if ((void *)(tag + 1) > data_end)
		return XDP_DROP;
	inner = tag->proto;
	__builtin_memcpy(macs, eth, sizeof(macs));
	if (bpf_xdp_adjust_head(ctx, (int)sizeof(struct vlan_hdr)))
		return XDP_DROP;  /* the frame would be shorter than an Ethernet header */
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	eth = data;
	if ((void *)(eth + 1) > data_end)
		return XDP_ABORTED;
	__builtin_memcpy(eth, macs, sizeof(macs));
	eth->h_proto = inner;
	return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
