// Ref: IEEE 802.1Q §9.6 (TPIDs 0x8100, 0x88a8), RFC 1071 (ones'-complement sum)
// Helpers shared by the packet kernels: a batch of frames is one byte buffer `data` and
// `offsets` (n + 1 entries): frame i is data[offsets[i] .. offsets[i + 1]).
// The walk of the Ethernet and VLAN headers is nicsim.hw.ref.packet.parse_l2.

#define ETHERTYPE_IPV4 0x0800u
#define ETHERTYPE_IPV6 0x86DDu
#define TPID_CTAG 0x8100u
#define TPID_STAG 0x88A8u
#define NO_ETHERTYPE 0xFFFFFFFFu
#define IPPROTO_TCP 6u
#define IPPROTO_UDP 17u

inline uint be16(__global const uchar *p, uint off)
{
    return ((uint)p[off] << 8) | (uint)p[off + 1];
}

// Ethertype after up to two VLAN tags (NO_ETHERTYPE if the frame ends first); *l3 receives
// the offset after the last ethertype field, clamped to len when there is none.
inline uint parse_l2(__global const uchar *p, uint len, uint *l3)
{
    uint off = 12;
    for (uint tags = 0;; tags++) {
        if (len < off + 2) {
            *l3 = min(off + 2, len);
            return NO_ETHERTYPE;
        }
        uint type = be16(p, off);
        if (tags < 2 && (type == TPID_CTAG || type == TPID_STAG)) {
            off += 4;
            continue;
        }
        *l3 = off + 2;
        return type;
    }
}

// Sum of big-endian 16-bit words of p[start .. end), words counted from start, an odd tail
// padded with a zero low byte; not folded (64 bits hold any frame's sum).
inline ulong word_sum(__global const uchar *p, uint start, uint end)
{
    ulong sum = 0;
    uint i = start;
    for (; i + 1 < end; i += 2)
        sum += ((uint)p[i] << 8) | (uint)p[i + 1];
    if (i < end)
        sum += (uint)p[i] << 8;
    return sum;
}

// Fold with end-around carry; 0 only for a zero sum.
inline uint csum_fold(ulong sum)
{
    while (sum >> 16)
        sum = (sum & 0xFFFFu) + (sum >> 16);
    return (uint)sum;
}
