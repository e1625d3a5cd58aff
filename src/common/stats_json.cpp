// JSON of the core's stats structs: one to_json overload each (nlohmann's ADL hook), every
// field under its own name, and the older to_json() members as thin wrappers over them.
#include "common/json_fields.hpp"
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

XLSHARE_JSON_TO(Figures, acquires, ready_rate, reuse_rate, prefetch_accuracy, stall_ms, overlap,
                link_bytes, link_gbps, transfer_ms, retries, failovers, checksum_mismatches)
std::string Figures::to_json() const { return nlohmann::json(*this).dump(); }

XLSHARE_JSON_TO(Counters, acquires, ready, reused, stall_ns, busy_ns, link_bytes, bytes_prefetched,
                bytes_prefetched_used, retries, failovers, checksum_mismatches)

XLSHARE_JSON_TO(ExtentStats, bytes_total, bytes_used, bytes_free, largest_free_extent, free_extents,
                fragmentation)

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

XLSHARE_JSON_TO(EmulatorStats, transfers, bytes, read_ns, transient_errors, poisoned_reads,
                bit_flips, offline_reads, late_chunks, configured_gbps, achieved_gbps,
                host_copy_gbps)
std::string EmulatorStats::to_json() const { return nlohmann::json(*this).dump(); }

XLSHARE_JSON_TO(CacheStats, budget_bytes, bytes_resident, bytes_in_flight, peak_bytes, acquires,
                acquires_ready, acquires_reused, acquires_waited, acquires_missed, fetches_demand,
                fetches_prefetch, prefetches_refused, fetches_failed, evictions, bytes_prefetched,
                bytes_prefetched_used, wait_ns)

namespace {
XLSHARE_JSON_TO_FN(transfer_fields, TransferStats, requests_demand, requests_prefetch, completed,
                   failed, link_bytes, busy_ns, transfer_ns, retries, checksum_mismatches, rereads,
                   failovers, preemptions)
}  // namespace
void to_json(nlohmann::json& j, const TransferStats& s) {
  transfer_fields(j, s);
  j["link_gbps"] = s.link_gbps();
}

XLSHARE_JSON_TO(EvictionStats, victims_chosen, refusals, invalid_choices)

XLSHARE_JSON_TO(PrefetchStats, plans, keys_proposed, keys_planned, keys_dropped_present,
                keys_dropped_budget, keys_dropped_invalid, bytes_planned)

XLSHARE_JSON_TO(ProcMemory, rss, pss, pss_shmem, shared_clean, shared_dirty, private_clean,
                private_dirty)

}  // namespace xlshare
