// Native Verilator testbench of hw.top.Accelerator for long simulations (sim/native.py).
//
// The cocotb testbench (sim/tb_top.py) runs Python every clock cycle; this one drives the same
// AXI-Stream ports from C++ and is about 40x faster on the small detector (measured 50,800 vs
// 1,310 cycles/s), which makes full frames of the 256x256 and 512x512 configs practical.
//
// Usage: Vdeflow_top IN_BYTES OUT_BYTES RESULT_JSON IN_BEAT_BYTES OUT_BEAT_BYTES FRAMES
//                    OUT_BEATS_PER_FRAME TIMEOUT_CYCLES WATCHDOG_CYCLES STALL BACKPRESSURE
// IN_BYTES: the input frames' bytes in AXI order (sw.runtime.driver.pack_frames), IN_BEAT_BYTES per beat,
// little-endian in s_axis_tdata. OUT_BYTES receives every output beat's OUT_BEAT_BYTES bytes.
// STALL / BACKPRESSURE: probability of an idle input cycle / a not-ready output cycle (a fixed
// xorshift seed, so runs repeat exactly). Cycle bookkeeping is tb_top.py's: cycles are counted
// at rising edges after reset; frame 0 runs from the edge that accepts the first input beat to
// the edge that accepts its tlast beat (both counted), later frames from tlast to tlast.
// Built with -DDEFLOW_PROBES for an instrumented top: the MAC-busy counters are read at every
// tlast, the FIFO high-water marks at the end, and a watchdog stall report carries the FIFO
// full/starved/level words (decoded in Python by sim.tb_top.stall_report).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "Vdeflow_top.h"
#include "verilated.h"

template <typename T>
static void set_port(T& port, const uint8_t* bytes, int n) {
  uint64_t v = 0;
  for (int k = 0; k < n; k++) v |= uint64_t(bytes[k]) << (8 * k);
  port = T(v);
}
template <std::size_t N>
static void set_port(VlWide<N>& port, const uint8_t* bytes, int n) {
  for (std::size_t i = 0; i < N; i++) port[i] = 0;
  for (int k = 0; k < n; k++) port[k / 4] |= uint32_t(bytes[k]) << (8 * (k % 4));
}
template <typename T>
static void get_bytes(const T& port, uint8_t* bytes, int n) {
  uint64_t v = uint64_t(port);
  for (int k = 0; k < n; k++) bytes[k] = uint8_t(v >> (8 * k));
}
template <std::size_t N>
static void get_bytes(const VlWide<N>& port, uint8_t* bytes, int n) {
  for (int k = 0; k < n; k++) bytes[k] = uint8_t(port[k / 4] >> (8 * (k % 4)));
}
template <typename T>
static std::string words(const T& port) {  // 32-bit words, least significant first
  uint64_t v = uint64_t(port);
  return std::to_string(uint32_t(v)) + "," + std::to_string(uint32_t(v >> 32));
}
template <std::size_t N>
static std::string words(const VlWide<N>& port) {
  std::string s;
  for (std::size_t i = 0; i < N; i++) s += (i ? "," : "") + std::to_string(uint32_t(port[i]));
  return s;
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static double uniform() {  // xorshift64*
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return double((rng_state * 2685821657736338717ull) >> 11) / double(1ull << 53);
}

int main(int argc, char** argv) {
  if (argc != 12) {
    std::fprintf(stderr, "usage: %s IN OUT RESULT IN_BEAT_BYTES OUT_BEAT_BYTES FRAMES "
                 "OUT_BEATS_PER_FRAME TIMEOUT WATCHDOG STALL BACKPRESSURE\n", argv[0]);
    return 2;
  }
  const int in_bb = std::atoi(argv[4]), out_bb = std::atoi(argv[5]);
  const long frames = std::atol(argv[6]), out_per_frame = std::atol(argv[7]);
  const long timeout = std::atol(argv[8]), watchdog = std::atol(argv[9]);
  const double stall = std::atof(argv[10]), backpressure = std::atof(argv[11]);
  std::vector<uint8_t> in;
  if (FILE* f = std::fopen(argv[1], "rb")) {
    int c;
    while ((c = std::fgetc(f)) != EOF) in.push_back(uint8_t(c));
    std::fclose(f);
  } else {
    std::fprintf(stderr, "cannot read %s\n", argv[1]);
    return 2;
  }
  FILE* out = std::fopen(argv[2], "wb");
  FILE* res = std::fopen(argv[3], "w");
  if (!out || !res) {
    std::fprintf(stderr, "cannot write %s / %s\n", argv[2], argv[3]);
    return 2;
  }
  const long in_beats = long(in.size()) / in_bb;
  Verilated::commandArgs(argc, argv);
  Vdeflow_top* top = new Vdeflow_top;
  top->clk = 0;
  top->rst = 1;
  top->s_axis_tvalid = 0;
  top->m_axis_tready = 0;
  for (int i = 0; i < 3; i++) {
    top->clk = 1; top->eval(); top->clk = 0; top->eval();
  }
  top->rst = 0;
  long cycle = 0, first_in = -1, ib = 0, nout = 0, done = 0, last_move = 0;
  std::vector<long> ends;
  std::vector<std::string> busy;
  std::vector<uint8_t> beat(out_bb);
  std::string status = "ok", stall_words;
  while (done < frames) {
    const bool offer = ib < in_beats && !(stall > 0 && uniform() < stall);
    if (offer) set_port(top->s_axis_tdata, &in[size_t(ib) * in_bb], in_bb);
    top->s_axis_tvalid = offer;
    top->m_axis_tready = !(backpressure > 0 && uniform() < backpressure);
    top->eval();
    const bool moved_in = top->s_axis_tvalid && top->s_axis_tready;
    const bool moved_out = top->m_axis_tvalid && top->m_axis_tready;
    const bool last = top->m_axis_tlast;
    if (moved_out) get_bytes(top->m_axis_tdata, beat.data(), out_bb);
#ifdef DEFLOW_PROBES
    const bool active = top->dbg_activity;
    // counters as sampled by the tlast edge, as sim/tb_top.py reads them
    if (moved_out && last) busy.push_back(words(top->dbg_mac_busy));
#else
    const bool active = false;
#endif
    top->clk = 1; top->eval();
    top->clk = 0; top->eval();
    cycle++;
    if ((cycle & ((1L << 20) - 1)) == 0) {  // sim/native.py PROGRESS_EVERY
      std::fprintf(stderr, "progress %ld %ld %ld\n", cycle, done, nout);
      std::fflush(stderr);
    }
    if (moved_in || moved_out || active) last_move = cycle;
    if (moved_in) {
      if (first_in < 0) first_in = cycle;
      ib++;
    }
    if (moved_out) {
      std::fwrite(beat.data(), 1, out_bb, out);
      nout++;
      if (last) {
        ends.push_back(cycle);
        done++;
      }
    }
    if (watchdog > 0 && cycle - last_move > watchdog) {
      status = "watchdog";
#ifdef DEFLOW_PROBES
      stall_words = "\"full\": [" + words(top->dbg_fifo_full) + "], \"starved\": [" +
                    words(top->dbg_fifo_starved) + "], \"level\": [" +
                    words(top->dbg_fifo_level) + "], ";
#endif
      break;
    }
    if (cycle >= timeout) {
      status = "timeout";
      break;
    }
  }
  std::fclose(out);
  std::fprintf(res, "{\"status\": \"%s\", %s\"cycles_run\": %ld, \"first_in\": %ld, "
               "\"in_beats_accepted\": %ld, \"out_beats\": %ld, \"out_beats_per_frame\": %ld, "
               "\"frame_end\": [", status.c_str(), stall_words.c_str(), cycle, first_in, ib, nout,
               out_per_frame);
  for (size_t i = 0; i < ends.size(); i++) std::fprintf(res, "%s%ld", i ? ", " : "", ends[i]);
  std::fprintf(res, "], \"mac_busy\": [");
  for (size_t i = 0; i < busy.size(); i++) std::fprintf(res, "%s[%s]", i ? ", " : "", busy[i].c_str());
  std::fprintf(res, "]");
#ifdef DEFLOW_PROBES
  std::fprintf(res, ", \"fifo_max\": [%s]", words(top->dbg_fifo_max).c_str());
#endif
  std::fprintf(res, "}\n");
  std::fclose(res);
  top->final();
  delete top;
  return status == "ok" ? 0 : 1;
}
