// Ref: RFC 791 (IPv4), RFC 9293 (TCP), RFC 768 (UDP); Documentation/bpf/map_lpm_trie.rst
/* Firewall with maps: drop IPv4 packets whose source lies in a blocked prefix (LPM trie
 * "blocked_src", value: rule id), or whose (protocol, destination port) is in the hash
 * "blocked_ports"; count hits per rule in "hits" and verdicts in "verdicts"; pass the rest. */
#include "xdp_parse.h"

struct lpm_v4 {
	__u32 prefixlen;
	__u32 addr;
};

struct port_key {
	__u8 proto;
	__u8 pad;
	__u16 port; /* network order */
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct lpm_v4);
	__type(value, __u32);
	__uint(max_entries, 256);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} blocked_src SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct port_key);
	__type(value, __u32);
	__uint(max_entries, 64);
} blocked_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 64);
} hits SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 5);
} verdicts SEC(".maps");

static __always_inline int verdict(int action)
{
	__u32 k = action;
	__u64 *v = bpf_map_lookup_elem(&verdicts, &k);

	if (v)
		__sync_fetch_and_add(v, 1);
	return action;
}

static __always_inline void hit(__u32 rule)
{
	__u64 *v = bpf_map_lookup_elem(&hits, &rule);

	if (v)
		__sync_fetch_and_add(v, 1);
}

SEC("xdp")
int firewall(struct xdp_md *ctx)
{
	struct cursor c = { (void *)(long)ctx->data, (void *)(long)ctx->data_end };
	struct ethhdr *eth;
	struct iphdr *ip;
	struct tcphdr *tcp;
	struct udphdr *udp;
	struct lpm_v4 key;
	struct port_key pk = {};
	__u32 *rule;
	int l4;

	if (parse_eth(&c, &eth) != ETH_P_IP)
		return verdict(XDP_PASS);
	l4 = parse_ipv4(&c, &ip);
	if (l4 < 0)
		return verdict(XDP_DROP);
	key.prefixlen = 32;
	key.addr = ip->saddr;
	rule = bpf_map_lookup_elem(&blocked_src, &key);
	if (rule) {
		hit(*rule);
		return verdict(XDP_DROP);
	}
	pk.proto = l4;
	if (l4 == IPPROTO_TCP) {
		if (parse_tcp(&c, &tcp) < 0)
			return verdict(XDP_DROP);
		pk.port = tcp->dest;
	} else if (l4 == IPPROTO_UDP) {
		if (parse_udp(&c, &udp) < 0)
			return verdict(XDP_DROP);
		pk.port = udp->dest;
	} else {
		return verdict(XDP_PASS);
	}
	rule = bpf_map_lookup_elem(&blocked_ports, &pk);
	if (rule) {
		hit(*rule);
		return verdict(XDP_DROP);
	}
	return verdict(XDP_PASS);
}

char _license[] SEC("license") = "GPL";
