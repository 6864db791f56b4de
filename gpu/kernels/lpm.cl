// Ref: P. Gupta, S. Lin, N. McKeown, "Routing lookups in hardware at memory access speeds",
//      INFOCOM 1998 (DIR-24-8-BASIC); M. Waldvogel et al., "Scalable high speed IP routing
//      lookups", SIGCOMM 1997 (binary search on prefix lengths); S. Han et al.,
//      "PacketShader: a GPU-accelerated software router", SIGCOMM 2010 (both on a GPU)
// Longest-prefix match of a batch of addresses, one work-item per address. Tables are built
// by nicsim.gpu.tables; results equal nicsim.hw.ref.lpm.LpmTable.lookup.

#define LPM_MISS 0x7FFFu
#define TBL24_LONG 0x8000u

// DIR-24-8: tbl24[addr >> 8] is a next hop, or (TBL24_LONG | chunk) whose 256 entries in
// tbllong cover the last byte.
__kernel void lpm4(__global const uint *addrs, const uint n, __global const ushort *tbl24,
                   __global const ushort *tbllong, __global ushort *hops)
{
    uint i = get_global_id(0);
    if (i >= n)
        return;
    uint a = addrs[i];
    uint e = tbl24[a >> 8];
    if (e & TBL24_LONG)
        e = tbllong[((e & 0x7FFFu) << 8) | (a & 0xFFu)];
    hops[i] = (ushort)e;
}

// IPv6: binary search over the prefix lengths present (Waldvogel); each length's prefixes
// and markers live in one open-addressing hash table of entries
// {addr[4] (most significant word first), length, best hop}; an empty slot has length
// 0xFFFFFFFF. Hash and probing are gpu.tables._v6_hash: keep them in step.
#define V6_EMPTY 0xFFFFFFFFu

inline uint v6_hash(uint w0, uint w1, uint w2, uint w3, uint len)
{
    uint h = len * 0x9E3779B1u;
    h = (h ^ w0) * 0x85EBCA77u;
    h = (h ^ (h >> 15) ^ w1) * 0xC2B2AE3Du;
    h = (h ^ (h >> 13) ^ w2) * 0x27D4EB2Fu;
    h = (h ^ (h >> 16) ^ w3) * 0x165667B1u;
    return h ^ (h >> 15);
}

inline uint mask_word(uint w, uint word, uint len)
{
    uint keep = len > word * 32 ? min(len - word * 32, 32u) : 0u;
    return keep == 0 ? 0u : keep == 32 ? w : (w & ~(0xFFFFFFFFu >> keep));
}

__kernel void lpm6(__global const uint *addrs, const uint n, __global const uint *lengths,
                   const uint n_lengths, __global const uint *table, const uint table_mask,
                   __global ushort *hops)
{
    uint i = get_global_id(0);
    if (i >= n)
        return;
    uint a0 = addrs[4 * i], a1 = addrs[4 * i + 1], a2 = addrs[4 * i + 2],
         a3 = addrs[4 * i + 3];
    uint best = LPM_MISS;
    int lo = 0, hi = (int)n_lengths - 1;
    while (lo <= hi) {
        int mid = (lo + hi) >> 1;
        uint len = lengths[mid];
        uint w0 = mask_word(a0, 0, len), w1 = mask_word(a1, 1, len),
             w2 = mask_word(a2, 2, len), w3 = mask_word(a3, 3, len);
        uint slot = v6_hash(w0, w1, w2, w3, len) & table_mask;
        int found = 0;
        for (;;) {
            __global const uint *e = table + 6 * slot;
            if (e[4] == V6_EMPTY)
                break;
            if (e[4] == len && e[0] == w0 && e[1] == w1 && e[2] == w2 && e[3] == w3) {
                best = e[5];
                found = 1;
                break;
            }
            slot = (slot + 1) & table_mask;
        }
        if (found)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    hops[i] = (ushort)best;
}
