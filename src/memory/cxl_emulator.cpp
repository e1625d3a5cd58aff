#include "xlshare/memory/cxl_emulator.hpp"

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstring>
#include <vector>

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include "xlshare/error.hpp"
#include "xlshare/log.hpp"

namespace xlshare {
namespace {

// Sources for these numbers are in docs/emulator.md.
constexpr std::array<LinkPreset, 4> kPresets = {{
    {"none", LinkParams{0.0, 0, 0, 256 * 1024}, "no emulation: reads run at host memory speed"},
    {"cxl-x8", LinkParams{36.0, 250, 0, 256 * 1024},
     "CXL 2.0 memory expander on PCIe 5.0 x8 (e.g. Micron CZ120: up to 36 GB/s), ~250 ns"},
    {"cxl-x16", LinkParams{64.0, 250, 0, 256 * 1024},
     "CXL 2.0 memory expander on PCIe 5.0 x16 (64 GB/s per direction raw), ~250 ns"},
    {"cxl-switched", LinkParams{60.0, 600, 0, 256 * 1024},
     "pooled CXL memory behind a switch: x16-class bandwidth, ~600 ns with the switch hop"},
}};

// splitmix64: a fast, well-mixed hash of (seed, sequence, salt).
constexpr std::uint64_t mix(std::uint64_t x) noexcept {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

std::uint64_t decision_hash(std::uint64_t seed, std::uint64_t sequence,
                            std::uint64_t salt) noexcept {
  return mix(seed ^ mix(sequence ^ mix(salt)));
}

bool decide(double probability, std::uint64_t hash) noexcept {
  if (probability <= 0.0) return false;
  if (probability >= 1.0) return true;
  return static_cast<double>(hash >> 11) * 0x1.0p-53 < probability;
}

double measure_host_copy_gbps() {
  constexpr std::size_t kBytes = 32u << 20;
  std::vector<std::byte> src(kBytes, std::byte{1});
  std::vector<std::byte> dst(kBytes, std::byte{0});
  double best = 0.0;
  for (int i = 0; i < 3; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    std::memcpy(dst.data(), src.data(), kBytes);
    const auto t1 = std::chrono::steady_clock::now();
    const double ns =
        static_cast<double>(std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count());
    if (ns > 0) best = std::max(best, static_cast<double>(kBytes) / ns);
  }
  return best;
}

}  // namespace

std::span<const LinkPreset> link_presets() noexcept { return kPresets; }

LinkParams link_preset(std::string_view name) {
  for (const auto& p : kPresets) {
    if (p.name == name) return p.params;
  }
  std::string known;
  for (const auto& p : kPresets) known += (known.empty() ? "" : ", ") + std::string(p.name);
  throw ConfigError(fmt::format("unknown link preset '{}'; known presets: {}", name, known));
}

ChunkTiming reserve_chunk(LinkState& link, const LinkParams& p, std::uint64_t now_ns,
                          std::uint64_t bytes, bool first_chunk) noexcept {
  auto free_ns = link_field(link.link_free_ns);
  std::uint64_t observed = free_ns.load(std::memory_order_acquire);
  for (;;) {
    // A stored time far ahead of now was written on another clock (a time namespace, an
    // earlier boot): waiting for it would hang every reader, so it counts as now.
    const bool foreign = observed > now_ns && observed - now_ns > kMaxLinkAheadNs;
    const ChunkTiming t = plan_chunk(p, now_ns, foreign ? now_ns : observed, bytes, first_chunk);
    if (free_ns.compare_exchange_weak(observed, t.link_free_ns, std::memory_order_acq_rel,
                                      std::memory_order_acquire)) {
      if (foreign) link_field(link.clock_clamps_total).fetch_add(1, std::memory_order_relaxed);
      link_field(link.busy_ns_total)
          .fetch_add(t.link_free_ns - t.start_ns, std::memory_order_relaxed);
      return t;
    }
  }
}

double CxlEmulator::host_copy_gbps() {
  static const double rate = measure_host_copy_gbps();
  return rate;
}

CxlEmulator::CxlEmulator(std::unique_ptr<MemoryBackend> inner, EmulatorOptions options)
    : inner_(std::move(inner)),
      options_(std::move(options)),
      clock_(options_.clock != nullptr ? options_.clock : &MonotonicClock::instance()),
      link_(&private_link_) {
  if (!inner_) throw ConfigError("CxlEmulator needs a backend to wrap");
  const LinkParams& p = options_.link;
  if (!std::isfinite(p.bandwidth_gbps) || p.bandwidth_gbps < 0.0) {
    throw ConfigError(fmt::format("{}: link bandwidth {} GB/s is not a non-negative number",
                                  inner_->uri(), p.bandwidth_gbps));
  }
  if (p.chunk_bytes == 0) throw ConfigError(inner_->uri() + ": link chunk size must be > 0");
  const FaultConfig& f = options_.faults;
  for (double rate : {f.transient_error_rate, f.bit_flip_rate}) {
    if (!std::isfinite(rate) || rate < 0.0 || rate > 1.0) {
      throw ConfigError(
          fmt::format("{}: fault probability {} is not in [0, 1]", inner_->uri(), rate));
    }
  }
  if (options_.check_host_rate) {
    host_copy_gbps_ = host_copy_gbps();
    if (p.bandwidth_gbps > host_copy_gbps_) {
      logger().warn(
          "{}: the link is configured at {:.1f} GB/s but this host copies only {:.1f} GB/s on one "
          "thread; one reader cannot reach the configured rate (transfers will be host-bound)",
          inner_->uri(), p.bandwidth_gbps, host_copy_gbps_);
    }
  }
}

CxlEmulator::~CxlEmulator() = default;

void CxlEmulator::bind_link_state(LinkState* link) noexcept {
  link_ = link != nullptr ? link : &private_link_;
  inner_->bind_link_state(link);
}

ReadStatus CxlEmulator::do_read(std::uint64_t offset_bytes, std::span<std::byte> dst) noexcept {
  const FaultConfig& f = options_.faults;
  const LinkParams& p = options_.link;
  const std::uint64_t sequence = sequence_.fetch_add(1, std::memory_order_relaxed);

  if (f.offline_after_transfers != 0 && sequence >= f.offline_after_transfers) {
    offline_.store(true, std::memory_order_release);
  }
  if (offline_.load(std::memory_order_acquire)) {
    offline_reads_.fetch_add(1, std::memory_order_relaxed);
    return ReadStatus::kOffline;
  }
  if (poisoned(offset_bytes, dst.size())) {
    poisoned_reads_.fetch_add(1, std::memory_order_relaxed);
    link_field(link_->faults_total).fetch_add(1, std::memory_order_relaxed);
    return ReadStatus::kPoisoned;
  }

  const std::uint64_t t0 = clock_->now_ns();
  if (decide(f.transient_error_rate, decision_hash(f.seed, sequence, 1))) {
    // A failed transfer still costs its latency before the error is seen.
    clock_->sleep_until_ns(t0 + p.latency_ns);
    transient_errors_.fetch_add(1, std::memory_order_relaxed);
    link_field(link_->faults_total).fetch_add(1, std::memory_order_relaxed);
    return ReadStatus::kTransientError;
  }

  const bool paced = p.bandwidth_gbps > 0.0 || p.latency_ns > 0 || p.overhead_ns > 0;
  std::uint64_t position = 0;
  std::uint64_t late = 0;
  bool first = true;
  do {
    const std::uint64_t n = std::min<std::uint64_t>(p.chunk_bytes, dst.size() - position);
    ChunkTiming t{};
    if (paced) t = reserve_chunk(*link_, p, clock_->now_ns(), n, first);
    const ReadStatus status = inner_->read(offset_bytes + position, dst.subspan(position, n));
    if (status != ReadStatus::kOk) return status;
    position += n;
    if (paced) {
      const bool last = position == dst.size();
      // Intermediate chunks release the reader when they leave the link (the next one is
      // already queued on a real DMA engine); the last one also waits out the latency.
      const std::uint64_t until = last ? t.complete_ns : t.link_free_ns;
      if (clock_->now_ns() > until) ++late;
      clock_->sleep_until_ns(until);
    }
    first = false;
  } while (position < dst.size());

  if (!dst.empty() && decide(f.bit_flip_rate, decision_hash(f.seed, sequence, 2))) {
    const std::uint64_t bit = decision_hash(f.seed, sequence, 3) % (dst.size() * 8);
    dst[bit / 8] ^= static_cast<std::byte>(1u << (bit % 8));
    bit_flips_.fetch_add(1, std::memory_order_relaxed);
    link_field(link_->faults_total).fetch_add(1, std::memory_order_relaxed);
  }

  const std::uint64_t elapsed = clock_->now_ns() - t0;
  transfers_.fetch_add(1, std::memory_order_relaxed);
  bytes_.fetch_add(dst.size(), std::memory_order_relaxed);
  read_ns_.fetch_add(elapsed, std::memory_order_relaxed);
  if (late != 0) late_chunks_.fetch_add(late, std::memory_order_relaxed);
  link_field(link_->bytes_total).fetch_add(dst.size(), std::memory_order_relaxed);
  link_field(link_->transfers_total).fetch_add(1, std::memory_order_relaxed);
  return ReadStatus::kOk;
}

bool CxlEmulator::poisoned(std::uint64_t offset_bytes, std::uint64_t length_bytes) const noexcept {
  for (const ByteRange& r : options_.faults.poisoned_ranges) {
    if (offset_bytes < r.offset_bytes + r.length_bytes &&
        r.offset_bytes < offset_bytes + length_bytes)
      return true;
  }
  return false;
}

EmulatorStats CxlEmulator::stats() const noexcept {
  EmulatorStats s;
  s.transfers = transfers_.load(std::memory_order_relaxed);
  s.bytes = bytes_.load(std::memory_order_relaxed);
  s.read_ns = read_ns_.load(std::memory_order_relaxed);
  s.transient_errors = transient_errors_.load(std::memory_order_relaxed);
  s.poisoned_reads = poisoned_reads_.load(std::memory_order_relaxed);
  s.bit_flips = bit_flips_.load(std::memory_order_relaxed);
  s.offline_reads = offline_reads_.load(std::memory_order_relaxed);
  s.late_chunks = late_chunks_.load(std::memory_order_relaxed);
  s.configured_gbps = options_.link.bandwidth_gbps;
  s.achieved_gbps =
      s.read_ns > 0 ? static_cast<double>(s.bytes) / static_cast<double>(s.read_ns) : 0.0;
  s.host_copy_gbps = host_copy_gbps_;
  return s;
}

}  // namespace xlshare
