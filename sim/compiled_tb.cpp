// A plain C++ Verilator testbench for a core with one input and one output stream.
//
// Built and run by sim/compiled.py, which also writes "nnfpga_config.h" beside this file:
//   NNFPGA_IN_BITS, NNFPGA_OUT_BITS   widths of i__payload and o__payload
//   NNFPGA_TAPS(X)                    X(name, bits) for every tapped inner stream (ports
//                                     <name>__valid, <name>__ready, <name>__payload)
//
// Command line (files hold little-endian words of ceil(bits / 8) bytes each):
//   nnfpga_tb --in FILE --count N --out FILE --times FILE [--idle P] [--stall P]
//             [--seed N] [--deadline CYCLES] [--drain CYCLES] [--taps DIR]
//
// It sends every input word, receives N output words with their cycle (counted from the
// end of reset, a little-endian uint64 per word), checks the stream rules on the output and
// on every tap (once valid is high, valid and payload hold until the transfer), and checks
// that nothing more comes out for --drain cycles. No VPI and no per-cycle callbacks into
// Python: this is what makes it hundreds of times faster than the cocotb testbench.
//
// Exit status: 0 passed, 1 bad arguments or files, 3 deadline passed, 4 stream rule broken,
// 5 an output nobody asked for. Failures print one line on stderr, starting "nnfpga_tb:".

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "Vtop.h"
#include "nnfpga_config.h"
#include "verilated.h"

// Verilator escapes "__" in port names as "___05F": i__valid is top->i___05Fvalid.
#define PORT(stream, part) stream##___05F##part

namespace {

enum Exit { OK = 0, USAGE = 1, DEADLINE = 3, PROTOCOL = 4, EXTRA = 5 };

[[noreturn]] void fail(int code, const std::string& message) {
    std::fprintf(stderr, "nnfpga_tb: %s\n", message.c_str());
    std::exit(code);
}

// A payload as 32-bit words, least significant first: the one representation for every
// width, whatever C++ type Verilator gives the port (CData ... QData, VlWide<N>).
using Word = std::vector<uint32_t>;

constexpr size_t words_for(int bits) { return (bits + 31) / 32; }
constexpr size_t bytes_for(int bits) { return (bits + 7) / 8; }

template <typename T>
void put(T& port, const Word& word) {
    static_assert(std::is_integral<T>::value, "narrow ports are integers");
    uint64_t value = word[0];
    if (sizeof(T) > 4 && word.size() > 1) value |= uint64_t(word[1]) << 32;
    port = static_cast<T>(value);
}

template <std::size_t N>
void put(VlWide<N>& port, const Word& word) {
    for (std::size_t k = 0; k < N; ++k) port[k] = word[k];
}

template <typename T>
void get(const T& port, Word& word) {
    static_assert(std::is_integral<T>::value, "narrow ports are integers");
    uint64_t value = port;
    word[0] = static_cast<uint32_t>(value);
    if (word.size() > 1) word[1] = static_cast<uint32_t>(value >> 32);
}

template <std::size_t N>
void get(const VlWide<N>& port, Word& word) {
    for (std::size_t k = 0; k < N; ++k) word[k] = port[k];
}

void append_bytes(std::vector<uint8_t>& out, const Word& word, int bits) {
    for (size_t byte = 0; byte < bytes_for(bits); ++byte)
        out.push_back(static_cast<uint8_t>(word[byte / 4] >> (8 * (byte % 4))));
}

// splitmix64: tiny, seedable and the same on every platform.
struct Random {
    uint64_t state;
    explicit Random(uint64_t seed) : state(seed) {}
    uint64_t next() {
        uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        return z ^ (z >> 31);
    }
    bool chance(double p) { return p > 0 && double(next() >> 11) * 0x1.0p-53 < p; }
};

// The stream rules, seen from the consumer: a pending (valid, not taken) payload must stay.
struct Checker {
    const char* name;
    int bits;
    bool pending = false;
    Word held, now;
    Checker(const char* n, int b) : name(n), bits(b), held(words_for(b)), now(words_for(b)) {}

    // Call once per cycle before the clock edge; returns true on a transfer (payload in now).
    template <typename P>
    bool sample(bool valid, bool ready, const P& payload, uint64_t cycle) {
        if (pending && !valid)
            fail(PROTOCOL, std::string(name) + ".valid dropped before the transfer at cycle " +
                               std::to_string(cycle));
        if (!valid) return false;
        get(payload, now);
        if (pending && now != held)
            fail(PROTOCOL, std::string(name) + ".payload changed while " + name +
                               ".valid was high and " + name + ".ready low, at cycle " +
                               std::to_string(cycle));
        pending = !ready;
        if (pending) held = now;
        return ready;
    }
};

std::vector<uint8_t> read_file(const std::string& path) {
    std::FILE* file = std::fopen(path.c_str(), "rb");
    if (!file) fail(USAGE, "cannot read " + path);
    std::vector<uint8_t> data;
    uint8_t buffer[1 << 16];
    size_t got;
    while ((got = std::fread(buffer, 1, sizeof buffer, file)) > 0)
        data.insert(data.end(), buffer, buffer + got);
    std::fclose(file);
    return data;
}

void write_file(const std::string& path, const void* data, size_t size) {
    std::FILE* file = std::fopen(path.c_str(), "wb");
    if (!file || std::fwrite(data, 1, size, file) != size || std::fclose(file) != 0)
        fail(USAGE, "cannot write " + path);
}

struct Options {
    std::string in, out, times, taps;
    uint64_t count = 0, seed = 0, deadline = 10000000, drain = 200;
    double idle = 0, stall = 0;
};

Options parse(int argc, char** argv) {
    Options options;
    bool have_count = false;
    for (int k = 1; k < argc; ++k) {
        std::string flag = argv[k];
        if (k + 1 >= argc) fail(USAGE, "missing value after " + flag);
        std::string value = argv[++k];
        char* end = nullptr;
        if (flag == "--in") options.in = value;
        else if (flag == "--out") options.out = value;
        else if (flag == "--times") options.times = value;
        else if (flag == "--taps") options.taps = value;
        else if (flag == "--count") options.count = std::strtoull(value.c_str(), &end, 10),
                                    have_count = true;
        else if (flag == "--seed") options.seed = std::strtoull(value.c_str(), &end, 10);
        else if (flag == "--deadline") options.deadline = std::strtoull(value.c_str(), &end, 10);
        else if (flag == "--drain") options.drain = std::strtoull(value.c_str(), &end, 10);
        else if (flag == "--idle") options.idle = std::strtod(value.c_str(), &end);
        else if (flag == "--stall") options.stall = std::strtod(value.c_str(), &end);
        else fail(USAGE, "unknown option " + flag);
        if (end && *end) fail(USAGE, "bad number for " + flag + ": " + value);
    }
    if (options.in.empty() || options.out.empty() || options.times.empty() || !have_count)
        fail(USAGE, "--in, --count, --out and --times are required");
    if (!(options.idle >= 0 && options.idle < 1 && options.stall >= 0 && options.stall < 1))
        fail(USAGE, "--idle and --stall must be in [0, 1)");
    return options;
}

struct Tap {
    Checker checker;
    std::vector<uint8_t> data;
};

}  // namespace

int main(int argc, char** argv) {
    Options options = parse(argc, argv);
    const size_t in_bytes = bytes_for(NNFPGA_IN_BITS);
    std::vector<uint8_t> input = read_file(options.in);
    if (input.size() % in_bytes)
        fail(USAGE, options.in + " does not hold whole " + std::to_string(in_bytes) +
                        "-byte words");
    const size_t inputs = input.size() / in_bytes;

    auto context = std::make_unique<VerilatedContext>();
    auto top = std::make_unique<Vtop>(context.get());
    // Separate generators, so the input's idle pattern does not depend on the output's.
    Random idle_random(options.seed * 2 + 1), stall_random(options.seed * 2 + 2);
    Checker output("o", NNFPGA_OUT_BITS);
    std::vector<Tap> taps;
#define NNFPGA_ADD_TAP(name, bits) taps.push_back(Tap{Checker(#name, bits), {}});
    NNFPGA_TAPS(NNFPGA_ADD_TAP)
    std::vector<uint8_t> received;
    std::vector<uint64_t> times;
    received.reserve(options.count * bytes_for(NNFPGA_OUT_BITS));
    times.reserve(options.count);

    top->clk = 0;
    top->rst = 1;
    top->PORT(i, valid) = 0;
    top->PORT(o, ready) = 0;
    for (int k = 0; k < 3; ++k) {
        top->clk = 0;
        top->eval();
        top->clk = 1;
        top->eval();
    }
    top->rst = 0;

    Word in_word(words_for(NNFPGA_IN_BITS));
    size_t sent = 0;
    bool offering = false;  // an input word is on i__payload, waiting for i__ready
    uint64_t cycle = 0, drained = 0;
    const uint32_t top_mask = NNFPGA_IN_BITS % 32 ? (1u << (NNFPGA_IN_BITS % 32)) - 1 : ~0u;
    while (times.size() < options.count || drained < options.drain) {
        // The deadline is for the expected outputs; the drain cycles come on top.
        if (cycle >= options.deadline && times.size() < options.count)
            fail(DEADLINE, "deadline of " + std::to_string(options.deadline) +
                               " cycles passed with " + std::to_string(times.size()) + " of " +
                               std::to_string(options.count) + " outputs received and " +
                               std::to_string(sent) + " of " + std::to_string(inputs) +
                               " inputs sent");
        // Drive this cycle's inputs: idle only between words, never while offering one.
        if (!offering && sent < inputs && !idle_random.chance(options.idle)) {
            std::fill(in_word.begin(), in_word.end(), 0);
            const uint8_t* bytes = &input[sent * in_bytes];
            for (size_t byte = 0; byte < in_bytes; ++byte)
                in_word[byte / 4] |= uint32_t(bytes[byte]) << (8 * (byte % 4));
            in_word.back() &= top_mask;
            put(top->PORT(i, payload), in_word);
            offering = true;
        }
        top->PORT(i, valid) = offering;
        const bool done = times.size() >= options.count;
        top->PORT(o, ready) = done || !stall_random.chance(options.stall);
        top->clk = 0;
        top->eval();
        // Sample what happens at the coming rising edge.
        if (offering && top->PORT(i, ready)) {
            offering = false;
            ++sent;
        }
        const bool took = output.sample(top->PORT(o, valid), top->PORT(o, ready),
                                        top->PORT(o, payload), cycle);
        if (took) {
            if (done)
                fail(EXTRA, "the core produced an output nobody asked for at cycle " +
                                std::to_string(cycle) + " (" + std::to_string(options.count) +
                                " expected)");
            append_bytes(received, output.now, NNFPGA_OUT_BITS);
            times.push_back(cycle);
        }
        {
            size_t index = 0;
            (void)index;
#define NNFPGA_SAMPLE_TAP(name, bits)                                                  \
    {                                                                                  \
        Tap& tap = taps[index++];                                                      \
        if (tap.checker.sample(top->PORT(name, valid), top->PORT(name, ready),         \
                               top->PORT(name, payload), cycle))                       \
            append_bytes(tap.data, tap.checker.now, bits);                             \
    }
            NNFPGA_TAPS(NNFPGA_SAMPLE_TAP)
        }
        if (done) ++drained;
        top->clk = 1;
        top->eval();
        ++cycle;
    }
    top->final();

    write_file(options.out, received.data(), received.size());
    write_file(options.times, times.data(), times.size() * sizeof(uint64_t));
    if (!options.taps.empty())
        for (const Tap& tap : taps)
            write_file(options.taps + "/" + tap.checker.name + ".bin", tap.data.data(),
                       tap.data.size());
    return OK;
}
