// The EvictionPolicy contract (eviction_policy.hpp) as a GoogleTest suite a user
// instantiates for their own policy. Header-only; the including test links GTest::gtest
// and xlshare::engine.
//
//   struct MyKind {
//     // What an EvictionPolicyFactory does: a policy for these keys and this cache.
//     static std::unique_ptr<xlshare::EvictionPolicy> make(const xlshare::CacheKeys& keys);
//   };
//   using namespace xlshare::conformance;  // where the suite's names are found
//   INSTANTIATE_TYPED_TEST_SUITE_P(Mine, EvictionPolicyConformance, ::testing::Types<MyKind>);
//
// It checks that the policy names itself, chooses only among the candidates it is offered,
// takes every order of hooks the cache can produce without throwing, and that a real cache
// steered by it hands compute the right bytes of every tensor, in a roomy cache and in the
// smallest one that can run the schedule, staying within its budget.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <random>
#include <vector>

#include "xlshare/prefetch/prefetch_policy.hpp"
#include "xlshare/testing/near_tier_rig.hpp"

namespace xlshare::conformance {

template <typename Kind>
class EvictionPolicyConformance : public ::testing::Test {
 protected:
  NearTierRig rig_;
};

TYPED_TEST_SUITE_P(EvictionPolicyConformance);

TYPED_TEST_P(EvictionPolicyConformance, NamesItself) {
  const auto policy = TypeParam::make(this->rig_.keys(this->rig_.total_bytes() / 2));
  ASSERT_NE(policy, nullptr);
  EXPECT_FALSE(policy->name().empty());
}

TYPED_TEST_P(EvictionPolicyConformance, ChoosesOnlyAmongTheCandidatesItIsOffered) {
  auto policy = TypeParam::make(this->rig_.keys(this->rig_.total_bytes() / 2));
  const auto n = static_cast<TensorKey>(this->rig_.key_count());
  for (TensorKey k = 0; k < n; ++k) policy->on_insert(k);
  std::mt19937 rng(7);
  for (int round = 0; round < 500; ++round) {
    std::vector<TensorKey> candidates;
    for (TensorKey k = 0; k < n; ++k) {
      if (rng() % 3 == 0) candidates.push_back(k);
    }
    if (candidates.empty()) candidates.push_back(static_cast<TensorKey>(rng() % n));
    const auto incoming = static_cast<TensorKey>(rng() % n);
    const auto forced = policy->choose_victim(candidates, incoming, false);
    ASSERT_TRUE(forced.has_value()) << "a victim is required when refusing is not allowed";
    EXPECT_LT(*forced, candidates.size());
    const auto optional = policy->choose_victim(candidates, incoming, true);
    if (optional) {
      EXPECT_LT(*optional, candidates.size());
    }
    if (rng() % 2 == 0) policy->on_access(candidates[rng() % candidates.size()]);
  }
  // The base corrects an index outside the candidates and a refusal where none is allowed;
  // it counts each, and a sound policy makes none.
  EXPECT_EQ(policy->stats().invalid_choices, 0u);
  EXPECT_FALSE(policy->failed()) << policy->take_error();
}

TYPED_TEST_P(EvictionPolicyConformance, TakesAnyOrderOfHooksTheCacheCanMake) {
  auto policy = TypeParam::make(this->rig_.keys(this->rig_.total_bytes() / 3));
  const auto n = static_cast<TensorKey>(this->rig_.key_count());
  std::vector<bool> resident(n, false);
  std::mt19937 rng(11);
  for (int op = 0; op < 5000; ++op) {
    const auto k = static_cast<TensorKey>(rng() % n);
    if (!resident[k]) {
      policy->on_insert(k);
      resident[k] = true;
    } else if (rng() % 4 == 0) {
      policy->on_remove(k);
      resident[k] = false;
    } else {
      policy->on_access(k);
    }
    if (op % 7 == 0) {
      std::vector<TensorKey> candidates;
      for (TensorKey c = 0; c < n; ++c) {
        if (resident[c]) candidates.push_back(c);
      }
      if (!candidates.empty()) {
        const auto v = policy->choose_victim(candidates, k, op % 2 == 0);
        if (v) {
          ASSERT_LT(*v, candidates.size());
          policy->on_remove(candidates[*v]);
          resident[candidates[*v]] = false;
        }
      }
    }
    (void)policy->long_lived(k);
  }
  EXPECT_EQ(policy->stats().invalid_choices, 0u);
  EXPECT_FALSE(policy->failed()) << policy->take_error();
}

TYPED_TEST_P(EvictionPolicyConformance, ARealCacheHandsComputeTheRightBytes) {
  auto& rig = this->rig_;
  for (const std::uint64_t cache : rig.cache_sizes()) {
    SCOPED_TRACE(::testing::Message() << "cache of " << cache << " bytes");
    rig.expect_served_right(
        rig.run(std::make_unique<LookaheadPolicy>(2), TypeParam::make(rig.keys(cache)), cache, 3),
        3, cache);
  }
}

REGISTER_TYPED_TEST_SUITE_P(EvictionPolicyConformance, NamesItself,
                            ChoosesOnlyAmongTheCandidatesItIsOffered,
                            TakesAnyOrderOfHooksTheCacheCanMake,
                            ARealCacheHandsComputeTheRightBytes);

}  // namespace xlshare::conformance
