// Streams frames through a Verilated nicsim design from C++: no Python per cycle.
//
// The design is an AxiStreamTop export (s_axis_*, optional m_axis_*, optional result stream
// RESULT_tdata/tvalid/tready, optional s_axil_*). Which ports exist comes in as macros from
// nicsim.hw.harness when it builds this file. Jobs arrive on stdin and each outcome goes to
// stdout (flushed at once), both as little-endian binary records; the harness takes jobs until
// end of file on stdin, the design keeping its state (registers, tables, counters) from one
// job to the next: it is reset once, before the first job. A batch run is one job, then end of
// file. The seed of each job reseeds the pauses; ``cycles`` counts from the reset, the other
// figures are the job's own:
//
//   job:     u32 magic 'NSJ1', u32 n_writes, n_writes x {u32 addr, u32 value},
//            u32 n_reads, n_reads x {u32 addr}, u32 idle_pct, u32 backpressure_pct,
//            u64 seed, u64 drain_cycles, u32 n_frames,
//            n_frames x {u32 len, u64 tuser, len bytes}
//   outcome: u32 magic 'NSO1', u32 status (0 ok, 1 register write rejected, 2 hang),
//            u64 cycles, u64 in_beats, u64 in_span (cycles from the first accepted
//            input beat to the last, inclusive), u32 n_out, n_out x {u32 len, u64 tuser, bytes},
//            u32 n_results, n_results x u64, u32 n_reads, n_reads x {u32 value, u32 resp}
//
// With TRACE_FST defined and a file name as the first argument, the run is recorded as an FST
// waveform (4 ns clock). Handshakes are sampled before the rising edge, exactly as the AXI4-Stream rules define a
// transfer (tvalid & tready at the edge).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "Vtop.h"
#include "verilated.h"
#ifdef TRACE_FST
#include "verilated_fst_c.h"
#endif

#define CAT2(a, b) a##b
#define CAT(a, b) CAT2(a, b)

namespace {

template <typename T>
void put_bytes(T& port, const uint8_t* p, size_t n) {
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) v |= uint64_t(p[i]) << (8 * i);
    port = v;
}
template <std::size_t W>
void put_bytes(VlWide<W>& port, const uint8_t* p, size_t n) {
    for (size_t w = 0; w < W; w++) port[w] = 0;
    for (size_t i = 0; i < n; i++) port[i / 4] |= uint32_t(p[i]) << (8 * (i % 4));
}
template <typename T>
void get_bytes(const T& port, uint8_t* p, size_t n) {
    uint64_t v = port;
    for (size_t i = 0; i < n; i++) p[i] = uint8_t(v >> (8 * i));
}
template <std::size_t W>
void get_bytes(const VlWide<W>& port, uint8_t* p, size_t n) {
    for (size_t i = 0; i < n; i++) p[i] = uint8_t(port[i / 4] >> (8 * (i % 4)));
}
template <typename T>
uint64_t get_u64(const T& port) { return uint64_t(port); }
template <std::size_t W>
uint64_t get_u64(const VlWide<W>& port) {
    return uint64_t(port[0]) | (W > 1 ? uint64_t(port[1]) << 32 : 0);
}
template <typename T>
void set_u64(T& port, uint64_t v) { port = v; }
template <std::size_t W>
void set_u64(VlWide<W>& port, uint64_t v) {
    for (size_t w = 0; w < W; w++) port[w] = 0;
    port[0] = uint32_t(v);
    if (W > 1) port[1] = uint32_t(v >> 32);
}

struct Frame {
    std::vector<uint8_t> data;
    uint64_t user = 0;
};

bool read_exact(void* dst, size_t n) { return fread(dst, 1, n, stdin) == n; }
// The first word of a job: false at a clean end of file (no byte of a new job).
bool rd_magic(uint32_t& magic) {
    size_t got = fread(&magic, 1, sizeof magic, stdin);
    if (got == 0 && feof(stdin)) return false;
    if (got != sizeof magic) {
        fprintf(stderr, "stream_harness: truncated job on stdin\n");
        exit(3);
    }
    return true;
}
template <typename T>
T rd() {
    T v{};
    if (!read_exact(&v, sizeof v)) {
        fprintf(stderr, "stream_harness: truncated job on stdin\n");
        exit(3);
    }
    return v;
}
template <typename T>
void wr(std::vector<uint8_t>& out, T v) {
    const uint8_t* p = reinterpret_cast<const uint8_t*>(&v);
    out.insert(out.end(), p, p + sizeof v);
}

constexpr size_t LANES = BYTES;

class Harness {
  public:
    explicit Harness(uint64_t seed, const char* waves) : rng(seed) {
        ctx = std::make_unique<VerilatedContext>();
#ifdef TRACE_FST
        if (waves) ctx->traceEverOn(true);
#endif
        top = std::make_unique<Vtop>(ctx.get());
#ifdef TRACE_FST
        if (waves) {
            tfp = std::make_unique<VerilatedFstC>();
            top->trace(tfp.get(), 99);
            tfp->open(waves);
        }
#else
        (void)waves;
#endif
        top->clk = 0;
        top->rst = 1;
        top->s_axis_tvalid = 0;
#ifdef HAS_M_AXIS
        top->m_axis_tready = 1;
#endif
#ifdef RESULT
        CAT(RESULT, _tready) = 1;
#endif
#ifdef HAS_AXIL
        top->s_axil_awvalid = 0;
        top->s_axil_wvalid = 0;
        top->s_axil_bready = 1;
        top->s_axil_arvalid = 0;
        top->s_axil_rready = 1;
        top->s_axil_wstrb = 0xf;
#endif
        for (int i = 0; i < 4; i++) tick();
        top->rst = 0;
        tick();
    }

    // Half cycles of a 4 ns clock; the waveform (if any) records both edges.
    void low() {
        top->clk = 0;
        top->eval();
#ifdef TRACE_FST
        if (tfp) tfp->dump(cycles * 4000 + 2000);
#endif
    }
    void high() {
        top->clk = 1;
        top->eval();
#ifdef TRACE_FST
        if (tfp) tfp->dump(cycles * 4000 + 4000);
#endif
        cycles++;
    }

    // One clock cycle: outputs are sampled before the rising edge.
    void tick() {
        low();
        sample();
        high();
    }

#ifdef HAS_AXIL
    bool axil_write(uint32_t addr, uint32_t value) {
        top->s_axil_awaddr = addr;
        top->s_axil_wdata = value;
        top->s_axil_awvalid = 1;
        top->s_axil_wvalid = 1;
        bool aw = false, w = false;
        // A block may hold a write's response back while it works (the match-action TCAM's
        // sweep of an entry: about 2,000 cycles).
        for (int guard = 0; guard < (1 << 20); guard++) {
            low();
            if (top->s_axil_awready) aw = true;
            if (top->s_axil_wready) w = true;
            bool bdone = top->s_axil_bvalid;
            uint32_t resp = top->s_axil_bresp;
            high();
            if (aw) top->s_axil_awvalid = 0;
            if (w) top->s_axil_wvalid = 0;
            if (bdone) return resp == 0;
        }
        return false;
    }
    bool axil_read(uint32_t addr, uint32_t& value, uint32_t& resp) {
        top->s_axil_araddr = addr;
        top->s_axil_arvalid = 1;
        for (int guard = 0; guard < 1000; guard++) {
            low();
            bool ar = top->s_axil_arready;
            bool rdone = top->s_axil_rvalid;
            value = top->s_axil_rdata;
            resp = top->s_axil_rresp;
            high();
            if (ar) top->s_axil_arvalid = 0;
            if (rdone) return true;
        }
        return false;
    }
#endif

    // Stream every frame in; collect outputs. Returns false if the design stops answering.
    bool stream(const std::vector<Frame>& frames, unsigned idle_pct, unsigned bp_pct,
                uint64_t drain_cycles) {
        size_t fi = 0, off = 0;
        uint64_t quiet = 0;
        std::uniform_int_distribution<unsigned> pct(0, 99);
        drive_beat(frames, fi, off, idle_pct, pct);
        while (true) {
            low();
            bool in_fire = top->s_axis_tvalid && top->s_axis_tready;
            bool activity = sample();
            high();
            if (in_fire) {
                if (in_beats == 0) first_in = cycles;
                last_in = cycles;
                in_beats++;
                off += LANES;
                if (off >= frames[fi].data.size()) {
                    fi++;
                    off = 0;
                }
            }
            activity |= in_fire;
            quiet = activity ? 0 : quiet + 1;
            bool inputs_done = fi >= frames.size();
#ifdef RESULT
            if (inputs_done && results.size() >= frames.size()) return true;
#endif
            if (inputs_done && quiet > drain_cycles) {
#ifdef RESULT
                return results.size() >= frames.size();
#else
                return true;
#endif
            }
            if (!inputs_done && quiet > drain_cycles + 100000) return false;
            drive_beat(frames, fi, off, idle_pct, pct);
#ifdef HAS_M_AXIS
            top->m_axis_tready = bp_pct == 0 || pct(rng) >= bp_pct;
#endif
#ifdef RESULT
            CAT(RESULT, _tready) = bp_pct == 0 || pct(rng) >= bp_pct;
#endif
        }
    }

    template <typename D>
    void drive_beat(const std::vector<Frame>& frames, size_t fi, size_t off, unsigned idle_pct,
                    D& pct) {
        // A beat that is offered stays offered until taken (valid never waits on ready).
        if (fi >= frames.size() || (idle_pct && pct(rng) < idle_pct && !holding(fi, off))) {
            top->s_axis_tvalid = 0;
            offered_fi = SIZE_MAX;
            return;
        }
        const Frame& f = frames[fi];
        size_t n = std::min(LANES, f.data.size() - off);
        put_bytes(top->s_axis_tdata, f.data.data() + off, n);
        uint64_t keep = n >= 64 ? ~uint64_t(0) : ((uint64_t(1) << n) - 1);
        set_u64(top->s_axis_tkeep, keep);
        top->s_axis_tlast = off + LANES >= f.data.size();
#ifdef HAS_S_TUSER
        set_u64(top->s_axis_tuser, f.user);
#endif
        top->s_axis_tvalid = 1;
        offered_fi = fi;
        offered_off = off;
    }

    bool holding(size_t fi, size_t off) const { return offered_fi == fi && offered_off == off; }

    // Forget the previous job's figures and outputs (the design's state stays).
    void new_job(uint64_t seed) {
        rng.seed(seed);
        in_beats = first_in = last_in = 0;
        out.clear();
        cur = Frame();
        results.clear();
        offered_fi = SIZE_MAX;
        offered_off = 0;
    }

    // Record output transfers; return whether any happened.
    bool sample() {
        bool any = false;
#ifdef HAS_M_AXIS
        if (top->m_axis_tvalid && top->m_axis_tready) {
            any = true;
            uint8_t buf[LANES];
            get_bytes(top->m_axis_tdata, buf, LANES);
            uint64_t keep = get_u64(top->m_axis_tkeep);
            for (size_t i = 0; i < LANES; i++)
                if ((keep >> i) & 1) cur.data.push_back(buf[i]);
#ifdef HAS_M_TUSER
            cur.user = get_u64(top->m_axis_tuser);
#endif
            if (top->m_axis_tlast) {
                out.push_back(std::move(cur));
                cur = Frame();
            }
        }
#endif
#ifdef RESULT
        if (CAT(RESULT, _tvalid) && CAT(RESULT, _tready)) {
            any = true;
            results.push_back(get_u64(CAT(RESULT, _tdata)));
        }
#endif
        return any;
    }

    std::unique_ptr<VerilatedContext> ctx;
    std::unique_ptr<Vtop> top;
#ifdef TRACE_FST
    std::unique_ptr<VerilatedFstC> tfp;
#endif
    std::mt19937_64 rng;
    uint64_t cycles = 0, in_beats = 0, first_in = 0, last_in = 0;
    std::vector<Frame> out;
    Frame cur;
    std::vector<uint64_t> results;
    size_t offered_fi = SIZE_MAX, offered_off = 0;
};

}  // namespace

int main(int argc, char** argv) {
    Verilated::commandArgs(argc, argv);
    std::unique_ptr<Harness> hp;
    uint32_t magic = 0;
    while (rd_magic(magic)) {
        if (magic != 0x314a534e) {  // "NSJ1"
            fprintf(stderr, "stream_harness: bad job header\n");
            return 3;
        }
        std::vector<std::pair<uint32_t, uint32_t>> writes(rd<uint32_t>());
        for (auto& w : writes) {
            w.first = rd<uint32_t>();
            w.second = rd<uint32_t>();
        }
        std::vector<uint32_t> reads(rd<uint32_t>());
        for (auto& r : reads) r = rd<uint32_t>();
        unsigned idle_pct = rd<uint32_t>(), bp_pct = rd<uint32_t>();
        uint64_t seed = rd<uint64_t>(), drain = rd<uint64_t>();
        std::vector<Frame> frames(rd<uint32_t>());
        for (auto& f : frames) {
            f.data.resize(rd<uint32_t>());
            f.user = rd<uint64_t>();
            if (!f.data.empty() && !read_exact(f.data.data(), f.data.size())) {
                fprintf(stderr, "stream_harness: truncated frame data\n");
                return 3;
            }
        }
        if (!hp) hp = std::make_unique<Harness>(seed, argc > 1 ? argv[1] : nullptr);
        Harness& h = *hp;
        h.new_job(seed);
        uint32_t status = 0;
#ifdef HAS_AXIL
        for (auto& w : writes)
            if (!h.axil_write(w.first, w.second)) {
                fprintf(stderr, "stream_harness: register write 0x%x = 0x%x rejected\n",
                        w.first, w.second);
                fflush(stderr);
                status = 1;
                break;
            }
#endif
        if (status == 0 && !h.stream(frames, idle_pct, bp_pct, drain)) status = 2;
        std::vector<uint8_t> out;
        wr<uint32_t>(out, 0x314f534e);  // "NSO1"
        wr<uint32_t>(out, status);
        wr<uint64_t>(out, h.cycles);
        wr<uint64_t>(out, h.in_beats);
        wr<uint64_t>(out, h.in_beats ? h.last_in - h.first_in + 1 : 0);
        wr<uint32_t>(out, uint32_t(h.out.size()));
        for (auto& f : h.out) {
            wr<uint32_t>(out, uint32_t(f.data.size()));
            wr<uint64_t>(out, f.user);
            out.insert(out.end(), f.data.begin(), f.data.end());
        }
        wr<uint32_t>(out, uint32_t(h.results.size()));
        for (auto r : h.results) wr<uint64_t>(out, r);
        wr<uint32_t>(out, uint32_t(reads.size()));
        for (auto a : reads) {
            uint32_t value = 0, resp = 3;
#ifdef HAS_AXIL
            h.axil_read(a, value, resp);
#endif
            wr<uint32_t>(out, value);
            wr<uint32_t>(out, resp);
        }
        fwrite(out.data(), 1, out.size(), stdout);
        fflush(stdout);
    }
    if (!hp) {
        fprintf(stderr, "stream_harness: no job on stdin\n");
        return 3;
    }
    hp->top->final();
#ifdef TRACE_FST
    if (hp->tfp) hp->tfp->close();
#endif
    return 0;
}
