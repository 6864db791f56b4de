// Ref: include/uapi/linux/bpf.h (bpf_xdp_adjust_tail, bpf_xdp_adjust_meta)
/* Packet edges: "snap" cuts frames to at most 128 bytes with bpf_xdp_adjust_tail and records
 * the original length in 8 bytes of metadata before the frame (bpf_xdp_adjust_meta), for a
 * capture tool; "pad" grows frames shorter than 60 bytes to 60 with zeros (Ethernet minimum
 * without FCS). */
#include "xdp_parse.h"

#define SNAPLEN 128
#define ETH_ZLEN_NOFCS 60

struct snap_meta {
	__u32 orig_len;
	__u32 magic;
};

SEC("xdp")
int snap(struct xdp_md *ctx)
{
	__u32 len = ctx->data_end - ctx->data;
	struct snap_meta *meta;
	void *data;

	if (len > SNAPLEN && bpf_xdp_adjust_tail(ctx, SNAPLEN - (int)len))
		return XDP_ABORTED;
	if (bpf_xdp_adjust_meta(ctx, -(int)sizeof(*meta)))
		return XDP_ABORTED;
	meta = (void *)(long)ctx->data_meta;
	data = (void *)(long)ctx->data;
	if ((void *)(meta + 1) > data)
		return XDP_ABORTED;
	meta->orig_len = len;
	meta->magic = 0x70616e73;
	return XDP_PASS;
}

SEC("xdp")
int pad(struct xdp_md *ctx)
{
	__u32 len = ctx->data_end - ctx->data;

	if (len < ETH_ZLEN_NOFCS && bpf_xdp_adjust_tail(ctx, ETH_ZLEN_NOFCS - (int)len))
		return XDP_ABORTED;
	return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
