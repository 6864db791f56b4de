// Ref: Microsoft "RSS hashing functions" (Toeplitz hash, input src ‖ dst ‖ sport ‖ dport),
//      RFC 791 §3.1, RFC 8200 §4
// Receive-side scaling of a batch, one work-item per frame: hash type, Toeplitz hash and
// queue of nicsim.hw.ref.rss.rss_hash, bit for bit. Only the first PARSE_WINDOW bytes of a
// frame are looked at. Hash types: 0 NONE, 1 IPV4, 2 TCP_IPV4, 3 UDP_IPV4, 4 IPV6,
// 5 TCP_IPV6, 6 UDP_IPV6 (hw.ref.rss.HashType).

#define PARSE_WINDOW 128u
#define MAX_EXT_HEADERS 4u

// Toeplitz hash of `count` bytes of p from `start`, continuing a hash over `done` earlier
// input bytes. byte_hash[256 * k + v] is what input byte k of value v contributes: the XOR of
// the 32-bit key windows at its set bits (built by nicsim.gpu.packet_ops.toeplitz_tables), so
// a byte costs one table read instead of eight shift-and-XOR steps.
inline uint toeplitz(__global const uint *byte_hash, __global const uchar *p, uint start,
                     uint count, uint done, uint result)
{
    for (uint j = 0; j < count; j++)
        result ^= byte_hash[256 * (done + j) + p[start + j]];
    return result;
}

__kernel void rss_hash(__global const uchar *data, __global const uint *offsets, const uint n,
                       __global const uint *byte_hash, const uint enabled,
                       __global const uint *table, const uint table_mask,
                       __global uint *hash_out, __global uchar *type_out,
                       __global uint *queue_out)
{
    uint i = get_global_id(0);
    if (i >= n)
        return;
    __global const uchar *p = data + offsets[i];
    uint visible = min(offsets[i + 1] - offsets[i], PARSE_WINDOW);
    uint l3;
    uint type = parse_l2(p, visible, &l3);
    uint hash_type = 0, addr_start = 0, addr_len = 0, l4 = 0;

    if (type == ETHERTYPE_IPV4) {
        uint hl = visible > l3 ? (p[l3] & 0x0Fu) * 4 : 0;
        if (visible >= l3 + 20 && (p[l3] >> 4) == 4 && hl >= 20 && visible >= l3 + hl) {
            uint proto = p[l3 + 9];
            uint four = proto == IPPROTO_TCP ? 2u : proto == IPPROTO_UDP ? 3u : 0u;
            l4 = l3 + hl;
            addr_start = l3 + 12;
            addr_len = 8;
            if (four && ((enabled >> four) & 1u) && !(be16(p, l3 + 6) & 0x3FFFu)
                && l4 + 4 <= visible && l4 + 4 <= l3 + be16(p, l3 + 2))
                hash_type = four;
            else if ((enabled >> 1) & 1u)
                hash_type = 1;
        }
    } else if (type == ETHERTYPE_IPV6) {
        if (visible >= l3 + 40 && (p[l3] >> 4) == 6) {
            uint datagram_end = l3 + 40 + be16(p, l3 + 4);
            uint next = p[l3 + 6];
            uint off = l3 + 40;
            int ok = 1;
            for (uint walked = 0; ok && (next == 0 || next == 43 || next == 44 || next == 60);
                 walked++) {
                if (walked == MAX_EXT_HEADERS || off + 2 > visible) {
                    ok = 0;
                    break;
                }
                uint hlen;
                if (next == 44) {
                    hlen = 8;
                    if (off + hlen > visible || (be16(p, off + 2) & 0xFFF9u)) {
                        ok = 0;
                        break;
                    }
                } else {
                    hlen = ((uint)p[off + 1] + 1) * 8;
                    if (off + hlen > visible) {
                        ok = 0;
                        break;
                    }
                }
                next = p[off];
                off += hlen;
            }
            uint four = 0;
            if (ok && off + 4 <= visible && off + 4 <= datagram_end)
                four = next == IPPROTO_TCP ? 5u : next == IPPROTO_UDP ? 6u : 0u;
            addr_start = l3 + 8;
            addr_len = 32;
            l4 = off;
            if (four && ((enabled >> four) & 1u))
                hash_type = four;
            else if ((enabled >> 4) & 1u)
                hash_type = 4;
        }
    }

    uint h = 0;
    if (hash_type) {
        h = toeplitz(byte_hash, p, addr_start, addr_len, 0, 0);
        if (hash_type != 1 && hash_type != 4)
            h = toeplitz(byte_hash, p, l4, 4, addr_len, h);
    }
    hash_out[i] = h;
    type_out[i] = (uchar)hash_type;
    queue_out[i] = table[h & table_mask];
}
