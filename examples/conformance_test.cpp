// The three classes of the examples held to the contracts of their extension points, with
// the conformance suites xlshare installs (xlshare/testing/). This is how you test your own:
// describe it with a Kind and instantiate the suite.
//
//   build/bin/examples_conformance_test
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <memory>
#include <string>

#include <fmt/format.h>

#include "custom_backend.hpp"
#include "custom_eviction_policy.hpp"
#include "custom_prefetch_policy.hpp"
#include "xlshare/testing/eviction_policy_conformance.hpp"
#include "xlshare/testing/memory_backend_conformance.hpp"
#include "xlshare/testing/prefetch_policy_conformance.hpp"

namespace {

using namespace xlshare::conformance;

struct MemfdKind {
  static std::string make_uri() {
    example::register_memfd_scheme();
    static std::atomic<unsigned> n{0};
    return fmt::format("memfd://conformance-{}-{}", ::getpid(), n++);
  }
};
INSTANTIATE_TYPED_TEST_SUITE_P(Example, MemoryBackendConformance, MemfdKind);

struct GreedyDualSizeKind {
  static std::unique_ptr<xlshare::EvictionPolicy> make(const xlshare::CacheKeys& keys) {
    return std::make_unique<example::GreedyDualSize>(keys);
  }
};
INSTANTIATE_TYPED_TEST_SUITE_P(Example, EvictionPolicyConformance, GreedyDualSizeKind);

struct AdaptiveLookaheadKind {
  static std::unique_ptr<xlshare::PrefetchPolicy> make() {
    return std::make_unique<example::AdaptiveLookahead>();
  }
};
INSTANTIATE_TYPED_TEST_SUITE_P(Example, PrefetchPolicyConformance, AdaptiveLookaheadKind);

}  // namespace
