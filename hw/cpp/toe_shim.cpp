// The TCP engine with its session engine (design toe-tcp, 64-bit data) on Verilator, as a
// shared library with a C API for ctypes (nicsim.hw.toe.verilator_engine): no Python per cycle.
//
// The library owns the Verilated model and the engine's buffer memory (the stand-in for the
// NIC's DRAM: 64-bit words with a byte enable per lane, read data one cycle after the address,
// the value before a write in the same cycle, like the Amaranth memory of hw/toe/rtl_engine.py;
// a second port, mem_app, for the engine's application mover: the two never write the same
// word; beside each word a 16-bit sum, written on mem_app and read on mem: the send rings'
// running checksums).
// Python queues inputs (frames from the network, application commands with the bytes of a
// SEND, timer ticks, register reads), runs the clock until the engine is idle with nothing
// queued or for a number of cycles (on a simulated wire's clock), and takes the outputs
// (frames with the cycle their last beat left, responses, notifications, received bytes,
// register values). The driving rules are those of nicsim.hw.toe.rtl_engine.RtlEngine:
//
// * a frame goes in a beat a cycle while the engine takes it; a command waits while a frame is
//   going in (unless pushed `beside`: on a simulated wire's clock a command comes at its own
//   time, not after the frames queued before it); the bytes a SEND was granted follow its
//   response on s_axis_tx, in the lanes the response's `align` names;
// * ticks are given, all that are owed at once (at most 65535), in a cycle where the engine was
//   idle the cycle before and nothing else is driven; register reads (AXI4-Lite) likewise;
// * every output stream is always ready.
//
// With auto-receive on (toe_auto_recv), the library is also the application that reads: each
// `data` notification queues a RECV of everything readable for that session, driven beside
// the frames (the engine takes it once its state machine is free, before a frame that has come
// in), and the bytes it returns are kept per session (toe_auto_len, toe_take_auto) instead of
// going to Python, as a reader beside the engine would take them while frames keep arriving.
// With auto-send, bytes handed over (toe_auto_send) wait here per session, and the library
// issues a SEND for them when they come and at each `space` notification, as an application
// that keeps the send buffer full; toe_auto_pending says how many still wait.
//
// Handshakes are sampled before the rising edge (tvalid & tready at the edge).
#include <cstdint>
#include <cstring>
#include <deque>
#include <memory>
#include <vector>

#include "Vtop.h"
#include "verilated.h"

namespace {

struct Command {
    uint32_t op, sid, ip, port, length;
    bool has_data;
    std::vector<uint8_t> data;
    bool automatic = false;  // queued by auto-receive: its response stays here
    bool beside = false;     // offered beside the frames (on a simulated wire's clock)
};

constexpr uint32_t OP_SEND = 3;  // indexes of "send" and "recv" in nicsim.rtl.toe.sessions.CMD_OPS
constexpr uint32_t OP_RECV = 4;
constexpr uint32_t NOTE_DATA = 1;  // indexes of "data" and "space" in NOTES
constexpr uint32_t NOTE_SPACE = 2;
constexpr uint32_t NOTE_CLOSED_DONE = 4;  // this and the ones after it: the session is released

struct Resp {
    uint32_t f[9];  // ok, sid, value, state, port, peer_ip, peer_port, eof, align
};

struct TxBeat {
    uint64_t data;
    uint8_t keep;
};

class Engine {
  public:
    explicit Engine(uint64_t mem_words) : mem(mem_words, 0), sums(mem_words, 0) {
        ctx = std::make_unique<VerilatedContext>();
        top = std::make_unique<Vtop>(ctx.get());
        top->clk = 0;
        top->rst = 1;
        top->s_axis_tvalid = 0;
        top->m_axis_tready = 1;
        top->cmd_valid = 0;
        top->resp_ready = 1;
        top->note_ready = 1;
        top->m_axis_rx_tready = 1;
        top->s_axis_tx_tvalid = 0;
        top->tick = 0;
        top->mem_rdata = 0;
        top->mem_app_rdata = 0;
        top->mem_rsum = 0;
        top->s_axil_awvalid = 0;
        top->s_axil_wvalid = 0;
        top->s_axil_bready = 1;
        top->s_axil_arvalid = 0;
        top->s_axil_rready = 1;
        top->s_axil_wstrb = 0xf;
        for (int i = 0; i < 4; i++) cycle();
        top->rst = 0;
        cycle();
        cycles = 0;
    }
    ~Engine() { top->final(); }

    // Inputs ------------------------------------------------------------------------------
    std::deque<std::vector<uint8_t>> frames;
    std::deque<Command> cmds;
    std::deque<uint32_t> reads;
    uint64_t ticks_owed = 0;

    // Outputs -----------------------------------------------------------------------------
    std::deque<std::vector<uint8_t>> out_frames;
    std::deque<uint64_t> out_cycles;  // the cycle count once each frame's last beat has left
    std::deque<Resp> resps;
    std::deque<std::pair<uint32_t, uint32_t>> notes;
    std::vector<uint8_t> rx;
    std::deque<uint32_t> read_values;
    std::vector<std::vector<uint8_t>> auto_rx;  // auto-received bytes per session
    bool auto_recv = false;
    std::vector<std::deque<uint8_t>> auto_tx;  // bytes waiting for an auto-send SEND
    std::vector<bool> auto_tx_asked;             // an auto-send SEND queued, not answered

    void auto_send(uint32_t sid, const uint8_t* data, uint32_t len) {
        grow(sid);
        auto_tx[sid].insert(auto_tx[sid].end(), data, data + len);
        ask_send(sid);
    }
    uint64_t auto_pending(uint32_t sid) const {
        return sid < auto_tx.size() ? auto_tx[sid].size() : 0;
    }
    uint64_t cycles = 0;
    uint64_t out_of_range = 0;  // memory accesses beyond the memory (never expected)

    // Run until the engine is idle with nothing queued; false when max_cycles ran out first.
    bool run(uint64_t max_cycles) {
        uint64_t start = cycles;
        unsigned quiet = 0;
        while (cycles - start < max_cycles) {
            if (!in_frame && !frames.empty()) {
                frame = std::move(frames.front());
                frames.pop_front();
                offset = 0;
                in_frame = !frame.empty();
            }
            bool driving = false;
            if (in_frame) {
                size_t n = std::min<size_t>(8, frame.size() - offset);
                uint64_t v = 0;
                for (size_t k = 0; k < n; k++) v |= uint64_t(frame[offset + k]) << (8 * k);
                top->s_axis_tdata = v;
                top->s_axis_tkeep = uint8_t((1u << n) - 1);
                top->s_axis_tlast = offset + 8 >= frame.size();
                top->s_axis_tvalid = 1;
                driving = true;
            } else {
                top->s_axis_tvalid = 0;
            }
            // a command waits while a frame goes in; an auto-receive command is offered
            // beside the frames (the engine takes it once its state machine is free)
            bool cmd_on = !cmds.empty() &&
                          (!in_frame || cmds.front().automatic || cmds.front().beside);
            if (cmd_on) {
                const Command& c = cmds.front();
                top->cmd_op = c.op;
                top->cmd_sid = c.sid;
                top->cmd_ip = c.ip;
                top->cmd_port = c.port;
                top->cmd_length = c.length;
                top->cmd_valid = 1;
                driving = true;
            } else {
                top->cmd_valid = 0;
            }
            if (!tx.empty()) {
                top->s_axis_tx_tdata = tx.front().data;
                top->s_axis_tx_tkeep = tx.front().keep;
                top->s_axis_tx_tvalid = 1;
                driving = true;
            } else {
                top->s_axis_tx_tvalid = 0;
            }
            bool tick = ticks_owed > 0 && !driving && was_idle;
            uint64_t give = ticks_owed < 0xFFFF ? ticks_owed : 0xFFFF;
            top->tick = tick ? give : 0;
            bool read = !reads.empty() && !driving && !tick;

            low();
            bool i_fire = top->s_axis_tvalid && top->s_axis_tready;
            bool c_fire = cmd_on && top->cmd_ready;
            bool t_fire = top->s_axis_tx_tvalid && top->s_axis_tx_tready;
            bool idle = top->idle;
            collect();
            high();

            was_idle = idle && !tick && !driving;
            if (tick) ticks_owed -= give;
            if (read) {
                top->tick = 0;
                axil_read(reads.front());
                reads.pop_front();
            }
            if (i_fire) {
                offset += 8;
                if (offset >= frame.size()) in_frame = false;
            }
            if (c_fire) {
                pending.push_back(std::move(cmds.front()));
                cmds.pop_front();
            }
            if (t_fire) tx.pop_front();
            bool busy = in_frame || !frames.empty() || !cmds.empty() || !tx.empty() ||
                        !reads.empty() || ticks_owed || !current.empty();
            quiet = (idle && !busy) ? quiet + 1 : 0;
            if (quiet >= 2) return true;
        }
        return false;
    }

    // Bytes of the RECVs answered still to come on m_axis_rx.
    uint64_t owed() const {
        uint64_t n = 0;
        for (const auto& o : rx_owed) n += o.second;
        return n;
    }

    // What is still queued or in flight (for the error when the engine does not go idle).
    void state(uint64_t* out) {
        low();
        uint64_t v[9] = {in_frame, frames.size(), cmds.size(), pending.size(), tx.size(),
                         ticks_owed, reads.size(), current.size(), top->idle};
        std::memcpy(out, v, sizeof v);
    }

  private:
    std::unique_ptr<VerilatedContext> ctx;
    std::unique_ptr<Vtop> top;
    std::vector<uint64_t> mem;
    std::vector<uint16_t> sums;  // the sum beside each word
    std::vector<uint8_t> frame;
    size_t offset = 0;
    bool in_frame = false;
    bool was_idle = true;
    std::deque<Command> pending;  // commands taken, waiting for their response
    // RECV transfers answered, in order: (session, or -1 for Python's rx; bytes to come)
    std::deque<std::pair<int, uint32_t>> rx_owed;
    std::deque<TxBeat> tx;
    std::vector<uint8_t> current;  // output frame being assembled

    void low() {
        top->clk = 0;
        top->eval();
    }
    // The rising edge: the memory reads the old word and writes the enabled lanes; its read
    // data appears after the edge.
    void high() {
        uint64_t addr = top->mem_addr;
        uint64_t app_addr = top->mem_app_addr;
        // both ports read before either writes (they never write the same word)
        uint64_t next = addr < mem.size() ? mem[addr] : 0;
        uint64_t app_next = app_addr < mem.size() ? mem[app_addr] : 0;
        uint16_t sum_next = addr < sums.size() ? sums[addr] : 0;
        if (top->mem_app_wsum_en && app_addr < sums.size()) sums[app_addr] = top->mem_app_wsum;
        write(app_addr, top->mem_app_wen, top->mem_app_wdata);
        write(addr, top->mem_wen, top->mem_wdata);
        top->clk = 1;
        top->eval();
        top->mem_rdata = next;
        top->mem_app_rdata = app_next;
        top->mem_rsum = sum_next;
        cycles++;
    }
    void cycle() {
        low();
        high();
    }
    // One port's write, byte lanes by its enable.
    void write(uint64_t addr, uint8_t en, uint64_t data) {
        if (!en) return;
        if (addr >= mem.size()) {
            out_of_range++;
            return;
        }
        uint64_t mask = 0;
        for (int k = 0; k < 8; k++)
            if (en >> k & 1) mask |= uint64_t(0xFF) << (8 * k);
        mem[addr] = (mem[addr] & ~mask) | (data & mask);
    }

    // Outputs valid before this edge (every output stream is ready).
    void collect() {
        if (top->m_axis_tvalid) {
            uint64_t d = top->m_axis_tdata;
            uint8_t keep = top->m_axis_tkeep;
            for (int k = 0; k < 8; k++)
                if (keep >> k & 1) current.push_back(uint8_t(d >> (8 * k)));
            if (top->m_axis_tlast) {
                out_frames.push_back(std::move(current));
                out_cycles.push_back(cycles + 1);  // this edge ends the frame
                current.clear();
            }
        }
        if (top->note_valid) {
            notes.emplace_back(top->note_kind, top->note_sid);
            if (auto_recv && top->note_kind == NOTE_DATA) {
                Command c{OP_RECV, uint32_t(top->note_sid), 0, 0, 0x7FFFFFFFu, false, {}, true};
                cmds.push_back(std::move(c));
            }
            if (top->note_kind == NOTE_SPACE) ask_send(top->note_sid);
            if (top->note_kind >= NOTE_CLOSED_DONE && top->note_sid < auto_tx.size())
                auto_tx[top->note_sid].clear();  // released: what waited goes nowhere
        }
        if (top->resp_valid) {
            Resp r{{top->resp_ok, top->resp_sid, top->resp_value, top->resp_state,
                    top->resp_port, top->resp_peer_ip, top->resp_peer_port, top->resp_eof,
                    top->resp_align}};
            bool automatic = false;
            if (!pending.empty()) {
                Command c = std::move(pending.front());
                pending.pop_front();
                automatic = c.automatic;
                if (automatic && c.op == OP_SEND) {
                    // the granted bytes leave the session's queue for s_axis_tx
                    auto& q = auto_tx[c.sid];
                    uint32_t n = std::min<uint64_t>(r.f[2], q.size());
                    std::vector<uint8_t> data(q.begin(), q.begin() + n);
                    q.erase(q.begin(), q.begin() + n);
                    auto_tx_asked[c.sid] = false;
                    if (n) queue_tx(data, n, r.f[8]);
                    // all it asked for was taken and more came meanwhile: ask again (a SEND
                    // cut short waits for the `space` notification instead)
                    if (r.f[2] >= c.length && !q.empty()) ask_send(c.sid);
                } else if (c.has_data && r.f[2]) {
                    queue_tx(c.data, r.f[2], r.f[8]);
                }
                if (c.op == OP_RECV && r.f[2])
                    rx_owed.emplace_back(automatic ? int(c.sid) : -1, r.f[2]);
            }
            if (!automatic) resps.push_back(r);
        }
        if (top->m_axis_rx_tvalid) {
            uint64_t d = top->m_axis_rx_tdata;
            uint8_t keep = top->m_axis_rx_tkeep;
            for (int k = 0; k < 8; k++) {
                if (!(keep >> k & 1)) continue;
                uint8_t byte = uint8_t(d >> (8 * k));
                int to = rx_owed.empty() ? -1 : rx_owed.front().first;
                if (to < 0) {
                    rx.push_back(byte);
                } else {
                    if (auto_rx.size() <= size_t(to)) auto_rx.resize(to + 1);
                    auto_rx[to].push_back(byte);
                }
                if (!rx_owed.empty() && --rx_owed.front().second == 0) rx_owed.pop_front();
            }
        }
    }

    void grow(uint32_t sid) {
        if (auto_tx.size() <= sid) {
            auto_tx.resize(sid + 1);
            auto_tx_asked.resize(sid + 1, false);
        }
    }
    // A SEND for the bytes waiting for session `sid`, unless one is queued already.
    void ask_send(uint32_t sid) {
        grow(sid);
        if (auto_tx[sid].empty() || auto_tx_asked[sid]) return;
        uint64_t n = auto_tx[sid].size();
        Command c{OP_SEND, sid, 0, 0, uint32_t(n < 0x7FFFFFFF ? n : 0x7FFFFFFF), false, {}, true};
        cmds.push_back(std::move(c));
        auto_tx_asked[sid] = true;
    }

    // The first `count` bytes of `data` as s_axis_tx beats, the first byte in lane `align`.
    void queue_tx(const std::vector<uint8_t>& data, uint32_t count, uint32_t align) {
        if (count > data.size()) count = uint32_t(data.size());
        align &= 7;
        size_t total = align + count;
        for (size_t start = 0; start < total; start += 8) {
            uint64_t v = 0;
            uint8_t keep = 0;
            for (size_t k = 0; k < 8 && start + k < total; k++) {
                size_t pos = start + k;
                if (pos < align) continue;
                v |= uint64_t(data[pos - align]) << (8 * k);
                keep |= uint8_t(1u << k);
            }
            tx.push_back({v, keep});
        }
    }

    void axil_read(uint32_t addr) {
        top->s_axil_araddr = addr;
        top->s_axil_arvalid = 1;
        top->s_axis_tvalid = 0;
        top->cmd_valid = 0;
        top->s_axis_tx_tvalid = 0;
        for (int guard = 0; guard < 1000; guard++) {
            low();
            bool ar = top->s_axil_arready;
            bool done = top->s_axil_rvalid;
            uint32_t value = top->s_axil_rdata;
            collect();
            high();
            if (ar) top->s_axil_arvalid = 0;
            if (done) {
                read_values.push_back(value);
                return;
            }
        }
        top->s_axil_arvalid = 0;
        read_values.push_back(0xFFFFFFFFu);
    }
};

Engine* E(void* h) { return static_cast<Engine*>(h); }

}  // namespace

extern "C" {

void* toe_new(uint64_t mem_words) { return new Engine(mem_words); }
void toe_free(void* h) { delete E(h); }

void toe_push_frame(void* h, const uint8_t* data, uint32_t len) {
    E(h)->frames.emplace_back(data, data + len);
}
void toe_push_cmd(void* h, uint32_t op, uint32_t sid, uint32_t ip, uint32_t port,
                  uint32_t length, const uint8_t* data, uint32_t data_len, int has_data,
                  int beside) {
    Command c{op, sid, ip, port, length, has_data != 0, {}};
    c.beside = beside != 0;
    if (has_data) c.data.assign(data, data + data_len);
    E(h)->cmds.push_back(std::move(c));
}
void toe_add_ticks(void* h, uint64_t n) { E(h)->ticks_owed += n; }
void toe_push_read(void* h, uint32_t addr) { E(h)->reads.push_back(addr); }

int toe_run(void* h, uint64_t max_cycles) { return E(h)->run(max_cycles) ? 0 : 1; }
uint64_t toe_cycles(void* h) { return E(h)->cycles; }
uint64_t toe_out_of_range(void* h) { return E(h)->out_of_range; }
void toe_state(void* h, uint64_t* out) { E(h)->state(out); }

// Length of the next output frame, or -1 when there is none.
int64_t toe_peek_frame(void* h) {
    Engine* e = E(h);
    return e->out_frames.empty() ? -1 : int64_t(e->out_frames.front().size());
}
void toe_pop_frame(void* h, uint8_t* buf) {
    Engine* e = E(h);
    std::memcpy(buf, e->out_frames.front().data(), e->out_frames.front().size());
    e->out_frames.pop_front();
    e->out_cycles.pop_front();
}
// The cycle count at which the next output frame's last beat left.
uint64_t toe_peek_frame_cycle(void* h) {
    Engine* e = E(h);
    return e->out_cycles.empty() ? 0 : e->out_cycles.front();
}
int toe_pop_resp(void* h, uint32_t* fields) {
    Engine* e = E(h);
    if (e->resps.empty()) return 0;
    std::memcpy(fields, e->resps.front().f, sizeof e->resps.front().f);
    e->resps.pop_front();
    return 1;
}
int toe_pop_note(void* h, uint32_t* kind, uint32_t* sid) {
    Engine* e = E(h);
    if (e->notes.empty()) return 0;
    *kind = e->notes.front().first;
    *sid = e->notes.front().second;
    e->notes.pop_front();
    return 1;
}
uint64_t toe_rx_len(void* h) { return E(h)->rx.size(); }
uint64_t toe_rx_owed(void* h) { return E(h)->owed(); }
void toe_take_rx(void* h, uint8_t* buf) {
    Engine* e = E(h);
    std::memcpy(buf, e->rx.data(), e->rx.size());
    e->rx.clear();
}
void toe_auto_recv(void* h, int on) { E(h)->auto_recv = on != 0; }
uint64_t toe_auto_len(void* h, uint32_t sid) {
    Engine* e = E(h);
    return sid < e->auto_rx.size() ? e->auto_rx[sid].size() : 0;
}
void toe_take_auto(void* h, uint32_t sid, uint8_t* buf) {
    Engine* e = E(h);
    if (sid >= e->auto_rx.size()) return;
    std::memcpy(buf, e->auto_rx[sid].data(), e->auto_rx[sid].size());
    e->auto_rx[sid].clear();
}
void toe_auto_send(void* h, uint32_t sid, const uint8_t* data, uint32_t len) {
    E(h)->auto_send(sid, data, len);
}
uint64_t toe_auto_pending(void* h, uint32_t sid) { return E(h)->auto_pending(sid); }
int toe_pop_read(void* h, uint32_t* value) {
    Engine* e = E(h);
    if (e->read_values.empty()) return 0;
    *value = e->read_values.front();
    e->read_values.pop_front();
    return 1;
}

}  // extern "C"
