#include "xlshare/figures.hpp"

#include <nlohmann/json.hpp>

namespace xlshare {

std::string Figures::to_json() const {
  const nlohmann::json j = {
      {"acquires", acquires},
      {"ready_rate", ready_rate},
      {"reuse_rate", reuse_rate},
      {"prefetch_accuracy", prefetch_accuracy},
      {"stall_ms", stall_ms},
      {"overlap", overlap},
      {"link_bytes", link_bytes},
      {"link_gbps", link_gbps},
      {"transfer_ms", transfer_ms},
      {"retries", retries},
      {"failovers", failovers},
      {"checksum_mismatches", checksum_mismatches},
  };
  return j.dump();
}

}  // namespace xlshare
