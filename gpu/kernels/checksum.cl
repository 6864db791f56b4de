// Ref: RFC 1071, RFC 791 §3.1, RFC 9293 §3.1, RFC 768, RFC 8200 §8.1
// Receive checksum verification of a batch, one work-item per frame: the verdicts and the
// CHECKSUM_COMPLETE sum of nicsim.hw.ref.checksum.rx_checksum, bit for bit.
// Status codes: 0 NONE, 1 OK, 2 BAD (hw.ref.checksum.Status).

#define ST_NONE 0u
#define ST_OK 1u
#define ST_BAD 2u

__kernel void rx_checksum(__global const uchar *data, __global const uint *offsets,
                          const uint n, __global uchar *ip_status, __global uchar *l4_status,
                          __global ushort *csum_complete)
{
    uint i = get_global_id(0);
    if (i >= n)
        return;
    __global const uchar *p = data + offsets[i];
    uint len = offsets[i + 1] - offsets[i];
    uint l3;
    uint type = parse_l2(p, len, &l3);
    csum_complete[i] = (ushort)csum_fold(word_sum(p, l3, len));

    uint ip = ST_NONE, l4 = ST_NONE;
    int have_segment = 0;
    uint proto = 0, start = 0, end = 0;
    ulong pseudo = 0;

    if (type == ETHERTYPE_IPV4) {
        uint hl = 0;
        int good = len >= l3 + 20;
        if (good) {
            hl = (p[l3] & 0x0Fu) * 4;
            good = (p[l3] >> 4) == 4 && hl >= 20 && len >= l3 + hl && be16(p, l3 + 2) >= hl;
        }
        if (!good || csum_fold(word_sum(p, l3, l3 + hl)) != 0xFFFFu) {
            ip = ST_BAD;
        } else {
            ip = ST_OK;
            if (!(be16(p, l3 + 6) & 0x3FFFu)) {
                proto = p[l3 + 9];
                start = l3 + hl;
                end = l3 + be16(p, l3 + 2);
                pseudo = word_sum(p, l3 + 12, l3 + 20);
                have_segment = 1;
            }
        }
    } else if (type == ETHERTYPE_IPV6) {
        if (len >= l3 + 40 && (p[l3] >> 4) == 6) {
            uint payload = be16(p, l3 + 4);
            if (payload != 0) {  // 0: an RFC 2675 jumbogram, not checked
                proto = p[l3 + 6];
                start = l3 + 40;
                end = start + payload;
                pseudo = word_sum(p, l3 + 8, l3 + 40);
                have_segment = 1;
            }
        }
    }

    if (have_segment) {
        uint min_len = proto == IPPROTO_TCP ? 20u : proto == IPPROTO_UDP ? 8u : 0u;
        if (min_len == 0 || end > len || end < start || end - start < min_len
            || (proto == IPPROTO_UDP && be16(p, start + 4) != end - start)) {
            have_segment = 0;
        }
    }
    if (have_segment) {
        uint l4_len = end - start;
        if (proto == IPPROTO_UDP && be16(p, start + 6) == 0) {
            l4 = type == ETHERTYPE_IPV6 ? ST_BAD : ST_NONE;
        } else {
            ulong sum = word_sum(p, start, end) + pseudo + proto + (l4_len >> 16)
                        + (l4_len & 0xFFFFu);
            l4 = csum_fold(sum) == 0xFFFFu ? ST_OK : ST_BAD;
        }
    }
    ip_status[i] = (uchar)ip;
    l4_status[i] = (uchar)l4;
}
