// JSON of the core's stats structs: one to_json overload each (nlohmann's ADL hook), and the
// older to_json() members as thin wrappers over them.
#include <nlohmann/json.hpp>

#include "xlshare/cache/device_cache.hpp"
#include "xlshare/cache/eviction_policy.hpp"
#include "xlshare/cache/transfer_engine.hpp"
#include "xlshare/figures.hpp"
#include "xlshare/memory/cxl_emulator.hpp"
#include "xlshare/memory/extent_allocator.hpp"
#include "xlshare/memory/pool.hpp"
#include "xlshare/prefetch/prefetch_policy.hpp"
#include "xlshare/proc_memory.hpp"

namespace xlshare {

void to_json(nlohmann::json& j, const Figures& f) {
  j = {
      {"acquires", f.acquires},       {"ready_rate", f.ready_rate},
      {"reuse_rate", f.reuse_rate},   {"prefetch_accuracy", f.prefetch_accuracy},
      {"stall_ms", f.stall_ms},       {"overlap", f.overlap},
      {"link_bytes", f.link_bytes},   {"link_gbps", f.link_gbps},
      {"transfer_ms", f.transfer_ms}, {"retries", f.retries},
      {"failovers", f.failovers},     {"checksum_mismatches", f.checksum_mismatches},
  };
}
std::string Figures::to_json() const { return nlohmann::json(*this).dump(); }

void to_json(nlohmann::json& j, const Counters& c) {
  j = {{"acquires", c.acquires},
       {"ready", c.ready},
       {"reused", c.reused},
       {"stall_ns", c.stall_ns},
       {"busy_ns", c.busy_ns},
       {"link_bytes", c.link_bytes},
       {"bytes_prefetched", c.bytes_prefetched},
       {"bytes_prefetched_used", c.bytes_prefetched_used},
       {"retries", c.retries},
       {"failovers", c.failovers},
       {"checksum_mismatches", c.checksum_mismatches}};
}

void to_json(nlohmann::json& j, const ExtentStats& s) {
  j = {{"bytes_total", s.bytes_total},   {"bytes_used", s.bytes_used},
       {"bytes_free", s.bytes_free},     {"largest_free_extent", s.largest_free_extent},
       {"free_extents", s.free_extents}, {"fragmentation", s.fragmentation}};
}

void to_json(nlohmann::json& j, const PoolStats& s) {
  j = {{"uri", s.uri},
       {"pool_bytes", s.pool_bytes},
       {"data_bytes", s.data_bytes},
       {"generation", s.generation},
       {"models_sealed", s.models_sealed},
       {"models_loading", s.models_loading},
       {"tensors", s.tensors},
       {"attached_processes", s.attached_processes},
       {"extents", s.extents},
       {"link",
        {{"bytes", s.link_bytes},
         {"transfers", s.link_transfers},
         {"busy_ns", s.link_busy_ns},
         {"faults", s.link_faults},
         {"clock_clamps", s.link_clock_clamps}}},
       {"mapping", {{"page_bytes", s.page_bytes}, {"huge_mapped_bytes", s.huge_mapped_bytes}}}};
}
std::string PoolStats::to_json() const { return nlohmann::json(*this).dump(2); }

void to_json(nlohmann::json& j, const EmulatorStats& s) {
  j = {
      {"transfers", s.transfers},
      {"bytes", s.bytes},
      {"read_ns", s.read_ns},
      {"transient_errors", s.transient_errors},
      {"poisoned_reads", s.poisoned_reads},
      {"bit_flips", s.bit_flips},
      {"offline_reads", s.offline_reads},
      {"late_chunks", s.late_chunks},
      {"configured_gbps", s.configured_gbps},
      {"achieved_gbps", s.achieved_gbps},
      {"host_copy_gbps", s.host_copy_gbps},
  };
}
std::string EmulatorStats::to_json() const { return nlohmann::json(*this).dump(); }

void to_json(nlohmann::json& j, const CacheStats& s) {
  j = {{"budget_bytes", s.budget_bytes},
       {"bytes_resident", s.bytes_resident},
       {"bytes_in_flight", s.bytes_in_flight},
       {"peak_bytes", s.peak_bytes},
       {"acquires", s.acquires},
       {"acquires_ready", s.acquires_ready},
       {"acquires_reused", s.acquires_reused},
       {"acquires_waited", s.acquires_waited},
       {"acquires_missed", s.acquires_missed},
       {"fetches_demand", s.fetches_demand},
       {"fetches_prefetch", s.fetches_prefetch},
       {"prefetches_refused", s.prefetches_refused},
       {"fetches_failed", s.fetches_failed},
       {"evictions", s.evictions},
       {"bytes_prefetched", s.bytes_prefetched},
       {"bytes_prefetched_used", s.bytes_prefetched_used},
       {"wait_ns", s.wait_ns}};
}

void to_json(nlohmann::json& j, const TransferStats& s) {
  j = {{"requests_demand", s.requests_demand},
       {"requests_prefetch", s.requests_prefetch},
       {"completed", s.completed},
       {"failed", s.failed},
       {"link_bytes", s.link_bytes},
       {"busy_ns", s.busy_ns},
       {"transfer_ns", s.transfer_ns},
       {"retries", s.retries},
       {"checksum_mismatches", s.checksum_mismatches},
       {"rereads", s.rereads},
       {"failovers", s.failovers},
       {"preemptions", s.preemptions},
       {"link_gbps", s.link_gbps()}};
}

void to_json(nlohmann::json& j, const EvictionStats& s) {
  j = {{"victims_chosen", s.victims_chosen}, {"refusals", s.refusals}};
}

void to_json(nlohmann::json& j, const PrefetchStats& s) {
  j = {{"plans", s.plans},
       {"keys_proposed", s.keys_proposed},
       {"keys_planned", s.keys_planned},
       {"keys_dropped_present", s.keys_dropped_present},
       {"keys_dropped_budget", s.keys_dropped_budget},
       {"bytes_planned", s.bytes_planned}};
}

void to_json(nlohmann::json& j, const ProcMemory& m) {
  j = {{"rss", m.rss},
       {"pss", m.pss},
       {"pss_shmem", m.pss_shmem},
       {"shared_clean", m.shared_clean},
       {"shared_dirty", m.shared_dirty},
       {"private_clean", m.private_clean},
       {"private_dirty", m.private_dirty}};
}

}  // namespace xlshare
