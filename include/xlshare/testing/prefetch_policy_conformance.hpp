// The PrefetchPolicy contract (prefetch_policy.hpp) as a GoogleTest suite a user
// instantiates for their own policy. Header-only; the including test links GTest::gtest
// and xlshare::engine.
//
//   struct MyKind {
//     static std::unique_ptr<xlshare::PrefetchPolicy> make();  // a fresh policy
//   };
//   using namespace xlshare::conformance;  // where the suite's names are found
//   INSTANTIATE_TYPED_TEST_SUITE_P(Mine, PrefetchPolicyConformance, ::testing::Types<MyKind>);
//
// It checks that the policy names itself, that its plans (after the base class's filter)
// name only keys of the schedule, each once, within the budget, over several passes of the
// hook order a worker makes; and that a real Prefetcher steered by it hands compute the
// right bytes of every tensor, in a roomy cache and in the smallest one that runs the
// schedule.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "xlshare/cache/eviction_policy.hpp"
#include "xlshare/testing/near_tier_rig.hpp"

namespace xlshare::conformance {

template <typename Kind>
class PrefetchPolicyConformance : public ::testing::Test {
 protected:
  NearTierRig rig_;
};

TYPED_TEST_SUITE_P(PrefetchPolicyConformance);

TYPED_TEST_P(PrefetchPolicyConformance, NamesItself) {
  const auto policy = TypeParam::make();
  ASSERT_NE(policy, nullptr);
  EXPECT_FALSE(policy->name().empty());
}

TYPED_TEST_P(PrefetchPolicyConformance, PlansNameScheduleKeysOnceWithinTheBudget) {
  auto& rig = this->rig_;
  auto policy = TypeParam::make();
  const std::uint64_t budget = rig.total_bytes() / 3;
  DeviceCache cache(budget,
                    std::vector<std::uint64_t>(rig.key_bytes().begin(), rig.key_bytes().end()),
                    std::make_unique<LruPolicy>());
  policy->on_model_loaded(rig.schedule());
  for (int pass = 0; pass < 3; ++pass) {
    for (std::size_t s = 0; s < rig.schedule().size(); ++s) {
      policy->on_step_begin(s);
      const PrefetchContext ctx{rig.schedule(), s, cache, budget};
      const auto plan = policy->plan(ctx);
      std::vector<bool> seen(rig.key_count(), false);
      std::uint64_t bytes = 0;
      for (TensorKey k : plan) {
        ASSERT_LT(k, rig.key_count());
        EXPECT_FALSE(seen[k]) << "key " << k << " planned twice";
        seen[k] = true;
        bytes += rig.key_bytes()[k];
      }
      EXPECT_LE(bytes, budget);
      policy->on_step_end(s);
    }
  }
  // plan() drops what do_plan got wrong and counts it: a sound policy names only keys of
  // the cache, each once a plan.
  const PrefetchStats st = policy->stats();
  EXPECT_EQ(st.keys_dropped_invalid, 0u);
  EXPECT_EQ(st.keys_proposed, st.keys_planned + st.keys_dropped_present + st.keys_dropped_budget);
}

TYPED_TEST_P(PrefetchPolicyConformance, ARealPrefetcherHandsComputeTheRightBytes) {
  auto& rig = this->rig_;
  for (const std::uint64_t cache : rig.cache_sizes()) {
    SCOPED_TRACE(::testing::Message() << "cache of " << cache << " bytes");
    rig.expect_served_right(rig.run(TypeParam::make(), std::make_unique<LruPolicy>(), cache, 3), 3,
                            cache);
  }
}

REGISTER_TYPED_TEST_SUITE_P(PrefetchPolicyConformance, NamesItself,
                            PlansNameScheduleKeysOnceWithinTheBudget,
                            ARealPrefetcherHandsComputeTheRightBytes);

}  // namespace xlshare::conformance
