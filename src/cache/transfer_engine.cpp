#include "xlshare/cache/transfer_engine.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>

#include "xlshare/error.hpp"
#include "xlshare/log.hpp"
#include "xlshare/memory/checksum.hpp"
#include "xlshare/memory/clock.hpp"

namespace xlshare {
namespace {
std::uint64_t now_ns() noexcept { return MonotonicClock::instance().now_ns(); }
}  // namespace

TransferEngine::TransferEngine(Pool& primary, Pool* replica, std::vector<TensorSource> sources,
                               DeviceCache& cache, TransferConfig config)
    : primary_(primary),
      replica_(replica),
      sources_(std::move(sources)),
      cache_(cache),
      config_(config),
      failure_reasons_(sources_.size()) {
  if (sources_.size() != cache_.key_count()) {
    throw ConfigError(fmt::format("transfer engine: {} tensor sources for a cache of {} keys",
                                  sources_.size(), cache_.key_count()));
  }
  for (TensorKey k = 0; k < sources_.size(); ++k) {
    if (sources_[k].primary.size_bytes != cache_.key_bytes(k)) {
      throw ConfigError(fmt::format(
          "transfer engine: tensor '{}' is {} bytes in the pool, {} in the cache",
          sources_[k].primary.name, sources_[k].primary.size_bytes, cache_.key_bytes(k)));
    }
    if (sources_[k].replica && (replica_ == nullptr || sources_[k].replica->size_bytes !=
                                                           sources_[k].primary.size_bytes)) {
      throw ConfigError(
          fmt::format("transfer engine: tensor '{}' has a replica that does not match",
                      sources_[k].primary.name));
    }
  }
  if (config_.threads == 0 || config_.threads > 64)
    throw ConfigError("transfer engine: threads must be 1..64");
  if (config_.chunk_bytes == 0) throw ConfigError("transfer engine: chunk_bytes must be > 0");
  threads_.reserve(config_.threads);
  for (unsigned i = 0; i < config_.threads; ++i) threads_.emplace_back([this] { run(); });
}

TransferEngine::~TransferEngine() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  work_.notify_all();
  for (auto& t : threads_) t.join();
  // Anything still queued never ran: release its cache entry.
  for (auto* q : {&demand_queue_, &prefetch_queue_}) {
    for (auto& r : *q) cache_.complete_fetch(r.key, false);
  }
}

bool TransferEngine::prefetch(TensorKey key) {
  auto buffer = cache_.begin_fetch(key, FetchKind::kPrefetch);
  if (!buffer) return false;
  {
    std::lock_guard lock(mu_);
    prefetch_queue_.push_back(Request{key, FetchKind::kPrefetch, *buffer});
    ++stats_.requests_prefetch;
  }
  work_.notify_one();
  return true;
}

void TransferEngine::demand(TensorKey key) {
  auto buffer = cache_.begin_fetch(key, FetchKind::kDemand);
  if (!buffer) return;
  {
    std::lock_guard lock(mu_);
    demand_queue_.push_back(Request{key, FetchKind::kDemand, *buffer});
    ++stats_.requests_demand;
  }
  work_.notify_one();
}

void TransferEngine::wait_idle() {
  std::unique_lock lock(mu_);
  idle_.wait(lock,
             [&] { return running_ == 0 && demand_queue_.empty() && prefetch_queue_.empty(); });
}

std::string TransferEngine::failure_reason(TensorKey key) const {
  std::lock_guard lock(mu_);
  return key < failure_reasons_.size() ? failure_reasons_[key] : std::string();
}

TransferStats TransferEngine::stats() const noexcept {
  std::lock_guard lock(mu_);
  TransferStats s = stats_;
  if (running_ > 0) s.busy_ns += now_ns() - busy_since_ns_;
  return s;
}

// Called with mu_ held.
void TransferEngine::mark_busy(bool starting) noexcept {
  if (starting) {
    if (running_++ == 0) busy_since_ns_ = now_ns();
  } else if (--running_ == 0) {
    stats_.busy_ns += now_ns() - busy_since_ns_;
  }
}

void TransferEngine::run() noexcept {
  std::unique_lock lock(mu_);
  for (;;) {
    work_.wait(lock,
               [&] { return stopping_ || !demand_queue_.empty() || !prefetch_queue_.empty(); });
    if (stopping_) return;
    auto& q = !demand_queue_.empty() ? demand_queue_ : prefetch_queue_;
    Request r = q.front();
    q.pop_front();
    mark_busy(true);
    lock.unlock();

    if (r.start_ns == 0) r.start_ns = now_ns();
    bool ok = true;
    bool yielded = false;
    std::string reason;
    for (;;) {
      const TensorInfo& info = r.on_replica ? *sources_[r.key].replica : sources_[r.key].primary;
      // With the TensorTiling's checksums each chunk is verified as it lands, while its
      // bytes are still in cache: no second pass over the buffer.
      const std::span<const std::uint64_t> tiles = info.tile_checksums();
      const bool tiled = config_.verify_checksums && info.tile_bytes > 0 &&
                         tiles.size() == (info.size_bytes + info.tile_bytes - 1) / info.tile_bytes;
      const std::uint64_t chunk =
          tiled
              ? std::max<std::uint64_t>(config_.chunk_bytes / info.tile_bytes, 1) * info.tile_bytes
              : config_.chunk_bytes;
      bool mismatch = false;
      while (r.done_bytes < r.buffer.size()) {
        const std::uint64_t n = std::min(chunk, r.buffer.size() - r.done_bytes);
        if (!read_chunk(r, r.done_bytes, r.buffer.subspan(r.done_bytes, n))) {
          ok = false;
          reason = failure_reason(r.key);
          break;
        }
        r.done_bytes += n;
        if (tiled) {
          // read_chunk may have moved to the replica: its tiles are the same model's.
          for (; r.checked_bytes < r.done_bytes; r.checked_bytes += info.tile_bytes) {
            const std::uint64_t len = std::min(info.tile_bytes, r.buffer.size() - r.checked_bytes);
            if (checksum64(r.buffer.subspan(r.checked_bytes, len)) !=
                tiles[r.checked_bytes / info.tile_bytes]) {
              mismatch = true;
              break;
            }
          }
          if (mismatch) break;
        }
        if (r.kind == FetchKind::kPrefetch && r.done_bytes < r.buffer.size()) {
          std::lock_guard g(mu_);
          if (!demand_queue_.empty()) {  // let compute's request overtake this prefetch
            prefetch_queue_.push_front(r);
            ++stats_.preemptions;
            yielded = true;
            break;
          }
        }
      }
      if (!ok || yielded || !config_.verify_checksums) break;
      if (!mismatch && (tiled || checksum64(r.buffer) == info.checksum)) break;
      {
        std::lock_guard g(mu_);
        ++stats_.checksum_mismatches;
      }
      // Corrupted in transit or at rest: read it again, then from the replica.
      if (r.rereads < config_.max_rereads) {
        ++r.rereads;
        std::lock_guard g(mu_);
        ++stats_.rereads;
      } else if (!r.on_replica && sources_[r.key].replica) {
        r.on_replica = true;
        r.rereads = 0;
        logger().warn(
            "tensor '{}' in pool {}: checksum mismatch after {} re-reads; reading it from the "
            "replica",
            info.name, primary_.uri(), config_.max_rereads);
        std::lock_guard g(mu_);
        ++stats_.failovers;
      } else {
        ok = false;
        reason =
            fmt::format("tensor '{}' in pool {}: checksum mismatch after {} re-reads{}", info.name,
                        (r.on_replica ? *replica_ : primary_).uri(), config_.max_rereads,
                        sources_[r.key].replica ? " and the replica" : " (no replica configured)");
        break;
      }
      r.done_bytes = 0;
      r.checked_bytes = 0;
    }

    lock.lock();
    if (!yielded) {
      stats_.transfer_ns += now_ns() - r.start_ns;
      if (ok) {
        ++stats_.completed;
        failure_reasons_[r.key].clear();
      } else {
        ++stats_.failed;
        if (!reason.empty()) failure_reasons_[r.key] = reason;
      }
      // The cache hears of it before this request stops counting as running, so that
      // wait_idle() returns only once every finished request has reached the cache.
      lock.unlock();
      cache_.complete_fetch(r.key, ok);
      lock.lock();
    }
    mark_busy(false);
    if (running_ == 0 && demand_queue_.empty() && prefetch_queue_.empty()) idle_.notify_all();
  }
}

bool TransferEngine::read_chunk(Request& r, std::uint64_t offset, std::span<std::byte> dst) {
  const TensorSource& src = sources_[r.key];
  std::uint64_t backoff = config_.backoff_initial_ns;
  unsigned retries = 0;
  std::string last;
  for (;;) {
    if (!r.on_replica && primary_down_.load() && src.replica) r.on_replica = true;
    Pool& pool = r.on_replica ? *replica_ : primary_;
    const TensorInfo& info = r.on_replica ? *src.replica : src.primary;
    const ReadStatus st = pool.read(info, offset, dst);
    if (st == ReadStatus::kOk) {
      std::lock_guard g(mu_);
      stats_.link_bytes += dst.size();
      return true;
    }
    last = fmt::format("tensor '{}' in pool {}: {}", info.name, pool.uri(), to_string(st));
    const bool retryable = st == ReadStatus::kTransientError && retries < config_.max_retries;
    if (retryable) {
      ++retries;
      logger().debug("{}: retry {} of {}", last, retries, config_.max_retries);
      {
        std::lock_guard g(mu_);
        ++stats_.retries;
      }
      std::this_thread::sleep_for(std::chrono::nanoseconds(backoff));
      backoff = std::min(backoff * 2, config_.backoff_max_ns);
      continue;
    }
    if (st == ReadStatus::kOffline && !r.on_replica) primary_down_.store(true);
    if (!r.on_replica && src.replica) {
      r.on_replica = true;  // go on from the same offset in the replica
      logger().warn("{}; reading it from the replica", last);
      retries = 0;
      backoff = config_.backoff_initial_ns;
      std::lock_guard g(mu_);
      ++stats_.failovers;
      continue;
    }
    std::lock_guard g(mu_);
    failure_reasons_[r.key] = st == ReadStatus::kTransientError
                                  ? fmt::format("{} (gave up after {} retries)", last, retries)
                                  : last + (src.replica ? "" : " (no replica configured)");
    return false;
  }
}

}  // namespace xlshare
