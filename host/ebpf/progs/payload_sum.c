// Ref: RFC 1071 (computing the Internet checksum)
/* Compute-heavy example: the one's complement sum of the whole frame in 16-bit words (a
 * bounded loop, up to 1024 words), kept per CPU in "sums" and written as 4 bytes of metadata
 * in front of the frame. Passes every frame. */
#include "xdp_parse.h"

#define MAX_WORDS 1024

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 1);
} sums SEC(".maps");

SEC("xdp")
int payload_sum(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 sum = 0, key = 0;
	__u64 *total;
	__u32 *meta;

	for (int i = 0; i < MAX_WORDS; i++) {
		__u16 *w = data + 2 * i;

		if ((void *)(w + 1) > data_end)
			break;
		sum += *w;
	}
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	total = bpf_map_lookup_elem(&sums, &key);
	if (total)
		*total += sum;
	if (bpf_xdp_adjust_meta(ctx, -4))
		return XDP_PASS;
	meta = (void *)(long)ctx->data_meta;
	if ((void *)(meta + 1) > (void *)(long)ctx->data)
		return XDP_PASS;
	*meta = sum;
	return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
