// Ref: A. V. Aho, M. J. Corasick, "Efficient string matching: an aid to bibliographic
//      search", CACM 18(6), 1975; G. Vasiliadis et al., "Gnort: high performance network
//      intrusion detection using graphics processors", RAID 2008 (the DFA on a GPU)
// Multi-pattern matching of a batch, one work-item per frame, over the automaton of
// nicsim.gpu.tables.AhoCorasick as a full DFA (next state for each of 256 bytes). A state's
// outputs are every pattern ending there, suffix links followed. Per frame: the number of
// occurrences and a bit set of the patterns seen (word w, bit b = pattern 32 w + b).

__kernel void ac_match(__global const uchar *data, __global const uint *offsets,
                       __global const uint *starts, const uint n,
                       __global const uint *delta, __global const uint *out_start,
                       __global const uint *out_ids, const uint words,
                       __global uint *counts, __global uint *seen)
{
    uint i = get_global_id(0);
    if (i >= n)
        return;
    uint begin = offsets[i] + starts[i];
    uint end = offsets[i + 1];
    uint state = 0, count = 0;
    __global uint *bits = seen + (size_t)i * words;
    for (uint w = 0; w < words; w++)
        bits[w] = 0;
    for (uint pos = begin; pos < end; pos++) {
        state = delta[state * 256 + data[pos]];
        uint lo = out_start[state], hi = out_start[state + 1];
        count += hi - lo;
        for (uint k = lo; k < hi; k++) {
            uint id = out_ids[k];
            bits[id >> 5] |= 1u << (id & 31u);
        }
    }
    counts[i] = count;
}
