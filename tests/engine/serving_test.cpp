// Serving: the asynchronous API and the per-worker scheduler (continuous batching). A
// request's tokens never depend on what runs beside it, when it joins, or whether it was
// preempted; cancellation and a failing callback touch only their request; FCFS admission
// starves nobody.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <functional>
#include <future>
#include <mutex>
#include <random>
#include <set>
#include <stdexcept>
#include <thread>

#include "model/model_support.hpp"
#include "xlshare/engine/inference_engine.hpp"
#include "xlshare/error.hpp"

namespace xlshare {
namespace {

using namespace std::chrono_literals;

constexpr std::uint32_t kVocab = 256;

class Serving : public ::testing::Test {
 protected:
  Serving() : uri_("shm://" + test::unique_name("serving")), guard_(uri_) {
    InferenceEngine loader(config());
    loader.register_model(create_sample_transformer_model(64, 4, 4, 2, 160, kVocab, 91), "m");
  }
  EngineConfig config() const {
    EngineConfig c;
    c.pool_uri = uri_;
    c.link_preset = "none";
    c.cache_bytes = 0;  // every weight resident: the scheduler is what is under test
    c.max_context = 256;
    return c;
  }
  std::unique_ptr<InferenceEngine> engine(const EngineConfig& c) const {
    auto e = std::make_unique<InferenceEngine>(c);
    e->attach_model("m");
    return e;
  }
  static InferenceRequest request(const std::string& id, std::size_t prompt, std::size_t gen,
                                  std::uint32_t seed) {
    InferenceRequest r;
    r.id = id;
    r.prompt = test::some_tokens(kVocab, prompt, seed);
    r.max_new_tokens = gen;
    return r;  // greedy
  }
  // Each request's tokens when it runs alone.
  std::vector<std::int32_t> alone(const InferenceRequest& r) const {
    auto e = engine(config());
    return e->inference(r).output_tokens;
  }

  std::string uri_;
  test::BackendGuard guard_;
};

TEST_F(Serving, TokensStreamInOrderAndEqualTheResult) {
  auto e = engine(config());
  std::vector<TokenEvent> events;
  std::vector<std::string> ids;
  auto h = e->submit(request("s", 5, 7, 1), {.on_token = [&](const TokenEvent& ev) {
                       events.push_back(ev);
                       ids.emplace_back(ev.id);
                     }});
  const InferenceResult r = h.wait();
  EXPECT_TRUE(h.done());
  ASSERT_EQ(r.output_tokens.size(), 7u);
  ASSERT_EQ(events.size(), 7u);  // the last token carries "finished"
  for (std::size_t i = 0; i < events.size(); ++i) {
    EXPECT_EQ(events[i].token, r.output_tokens[i]);
    EXPECT_EQ(events[i].position, i);
    EXPECT_EQ(events[i].finished, i == 6);
    EXPECT_EQ(ids[i], "s");
  }
  EXPECT_EQ(events.back().reason, FinishReason::kLength);
  EXPECT_EQ(r.output_tokens, alone(request("s", 5, 7, 1)));
  EXPECT_GT(r.ttft_ms, 0);
  EXPECT_GE(r.latency_ms, r.ttft_ms);
  EXPECT_GE(r.ttft_ms, r.queue_ms);
  // Scoring only: one event, no token.
  events.clear();
  auto score = request("score", 4, 0, 2);
  score.return_logits = true;
  const auto scored =
      e->submit(score, {.on_token = [&](const TokenEvent& ev) { events.push_back(ev); }}).wait();
  EXPECT_EQ(scored.last_logits.size(), kVocab);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].token, -1);
  EXPECT_TRUE(events[0].finished);
}

// The property: whatever runs beside a request, and at whatever step it joins (while
// others decode, in chunks of its prompt or whole), its greedy tokens are its own.
TEST_F(Serving, TokensAreTheSameAloneOrJoiningARunningBatchAtAnyStep) {
  std::mt19937 rng(20261126);
  const auto pick = [&](std::size_t a, std::size_t b) {
    return std::uniform_int_distribution<std::size_t>(a, b)(rng);
  };
  for (int trial = 0; trial < 12; ++trial) {
    SCOPED_TRACE(trial);
    EngineConfig c = config();
    c.max_step_tokens = trial % 2 ? 8 : 512;  // chunked prefill, or whole prompts
    c.max_batch_sequences = 8;
    c.compute_threads = trial % 3 == 0 ? 2 : 1;
    auto e = engine(c);
    const std::size_t others = pick(1, 4);
    std::vector<InferenceRequest> reqs;
    for (std::size_t i = 0; i <= others; ++i) {
      reqs.push_back(request(fmt::format("r{}", i), pick(2, 20), pick(1, 12),
                             static_cast<std::uint32_t>(100 * trial + i)));
    }
    std::vector<std::vector<std::int32_t>> want;
    for (const auto& r : reqs) want.push_back(e->inference(r).output_tokens);  // alone

    // The others start together; the last request joins when the first has made `at`
    // tokens (0: at once), submitted from inside the batch's own stream.
    const std::size_t at = pick(0, reqs[0].max_new_tokens - 1);
    std::mutex mu;
    RequestHandle joiner;
    std::vector<RequestHandle> handles;
    const auto join = [&] {
      std::lock_guard g(mu);
      if (!joiner) joiner = e->submit(reqs.back());
    };
    for (std::size_t i = 0; i < others; ++i) {
      RequestCallbacks cb;
      if (i == 0) {
        cb.on_token = [&, at](const TokenEvent& ev) {
          if (ev.token >= 0 && ev.position + 1 == at) join();
        };
      }
      handles.push_back(e->submit(reqs[i], std::move(cb)));
    }
    if (at == 0) join();
    for (std::size_t i = 0; i < others; ++i) EXPECT_EQ(handles[i].wait().output_tokens, want[i]);
    join();  // the first finished before `at`: join now, alone again
    EXPECT_EQ(joiner.wait().output_tokens, want.back());
  }
}

TEST_F(Serving, CancellingFreesTheSequencesKvAndItsSlot) {
  EngineConfig c = config();
  c.max_batch_sequences = 1;
  auto e = engine(c);
  std::atomic<int> seen{0};
  std::promise<RequestHandle> handle;  // the callback may run before submit returns
  std::shared_future<RequestHandle> own = handle.get_future().share();
  std::promise<void> queued_cancelled;  // "long" holds the only slot until then
  std::shared_future<void> go = queued_cancelled.get_future().share();
  handle.set_value(e->submit(request("long", 4, 200, 1), {.on_token = [&](const TokenEvent& ev) {
                               if (ev.token < 0) return;
                               if (ev.position == 0) go.wait();
                               if (++seen == 3) own.get().cancel();
                             }}));
  const RequestHandle long_one = own.get();
  // Waiting behind it (one slot): cancelled before it ever runs.
  auto queued = e->submit(request("queued", 4, 5, 2));
  queued.cancel();
  queued_cancelled.set_value();  // (the worker answers the cancel once "long" lets it go on)
  const InferenceResult q = queued.wait();
  EXPECT_EQ(q.finish_reason, FinishReason::kCancelled);
  EXPECT_TRUE(q.output_tokens.empty());
  const InferenceResult r = long_one.wait();
  EXPECT_EQ(r.finish_reason, FinishReason::kCancelled);
  EXPECT_GE(r.output_tokens.size(), 3u);
  EXPECT_LT(r.output_tokens.size(), 200u);
  EXPECT_EQ(e->stats().serving.kv_used_bytes, 0u);  // its blocks are back
  // And its slot: the only one is free for the next request.
  auto next = e->submit(request("next", 4, 3, 3));
  ASSERT_TRUE(next.wait_for(60s)) << "the cancelled request kept the only slot";
  EXPECT_EQ(next.wait().output_tokens, alone(request("next", 4, 3, 3)));
  const auto s = e->stats().serving;
  EXPECT_EQ(s.cancelled, 2u);
  EXPECT_EQ(s.failed, 0u);
  EXPECT_EQ(e->stats().requests, 3u);
  // Cancelling what is done changes nothing.
  next.cancel();
  EXPECT_EQ(next.wait().finish_reason, FinishReason::kLength);
}

TEST_F(Serving, PreemptionUnderASmallKvBudgetCompletesEveryRequestWithTheSameTokens) {
  EngineConfig c = config();
  c.kv_block_tokens = 4;
  const auto m = create_sample_transformer_model(64, 4, 4, 2, 160, kVocab, 91);
  c.kv_cache_bytes = KvBlockPool::token_bytes(m.config) * 4 * 6;  // six blocks of 4 tokens
  c.max_step_tokens = 32;
  auto e = engine(c);
  std::vector<InferenceRequest> reqs;
  for (int i = 0; i < 5; ++i) {
    reqs.push_back(request(fmt::format("p{}", i), 5 + static_cast<std::size_t>(i), 12,
                           static_cast<std::uint32_t>(40 + i)));
  }
  const auto results = e->batch_inference(reqs);
  std::uint32_t preempted = 0;
  for (std::size_t i = 0; i < reqs.size(); ++i) {
    EXPECT_EQ(results[i].output_tokens, alone(reqs[i])) << i;
    preempted += results[i].preemptions;
  }
  const auto s = e->stats().serving;
  EXPECT_GT(s.preemptions, 0u) << "the budget was meant to be too small for all at once";
  EXPECT_EQ(s.preemptions, preempted);
  EXPECT_EQ(s.kv_capacity_bytes, c.kv_cache_bytes);
  EXPECT_EQ(s.kv_used_bytes, 0u);
  // A request that could never fit is refused at once, not queued forever.
  EXPECT_THROW(e->submit(request("huge", 20, 10, 9)), ConfigError);
}

TEST_F(Serving, AThrowingCallbackFailsOnlyItsRequest) {
  auto e = engine(config());
  const auto a = request("a", 6, 8, 1), b = request("b", 7, 8, 2);
  auto ha = e->submit(a, {.on_token = [](const TokenEvent& ev) {
                        if (ev.position == 1) throw std::runtime_error("client went away");
                      }});
  std::vector<std::int32_t> streamed;
  auto hb = e->submit(b, {.on_token = [&](const TokenEvent& ev) {
                        if (ev.token >= 0) streamed.push_back(ev.token);
                      }});
  try {
    (void)ha.wait();
    ADD_FAILURE() << "the request whose callback threw did not fail";
  } catch (const std::runtime_error& x) {
    EXPECT_STREQ(x.what(), "client went away");
  }
  const auto rb = hb.wait();
  EXPECT_EQ(rb.output_tokens, alone(b));
  EXPECT_EQ(streamed, rb.output_tokens);
  const auto s = e->stats().serving;
  EXPECT_EQ(s.failed, 1u);
  EXPECT_EQ(s.kv_used_bytes, 0u);
}

// Continuous arrivals of small requests never overtake a large one at the head of the
// queue that waits for KV to be freed: first come, first served, so its wait is bounded.
TEST_F(Serving, NoRequestIsStarvedUnderContinuousArrivals) {
  EngineConfig c = config();
  c.kv_block_tokens = 4;
  const auto m = create_sample_transformer_model(64, 4, 4, 2, 160, kVocab, 91);
  c.kv_cache_bytes = KvBlockPool::token_bytes(m.config) * 4 * 10;  // 40 tokens
  c.max_batch_sequences = 4;
  c.max_step_tokens = 16;
  auto e = engine(c);
  std::mutex mu;
  std::vector<std::string> first_tokens;  // in the order requests got their first token
  std::vector<RequestHandle> handles;
  std::vector<std::string> order;  // in the order they were submitted
  std::function<void(InferenceRequest)> submit;
  const auto small = [&](int i) { return request(fmt::format("s{}", i), 4, 8, 10 + i); };
  const auto on_token = [&](const TokenEvent& ev) {
    if (ev.token < 0) return;
    if (ev.position == 0) {
      std::lock_guard g(mu);
      first_tokens.emplace_back(ev.id);
    }
    // More arrive while s0 runs: at its first token, and four tokens later.
    if (ev.id == "s0" && (ev.position == 0 || ev.position == 4)) {
      for (int i = 0; i < 6; ++i) submit(small(ev.position == 0 ? 3 + i : 9 + i));
    }
  };
  submit = [&](InferenceRequest r) {
    std::lock_guard g(mu);
    order.push_back(r.id);
    handles.push_back(e->submit(std::move(r), {.on_token = on_token}));
  };
  for (int i = 0; i < 3; ++i) submit(small(i));
  submit(request("big", 32, 4, 7));  // 8 of the 10 blocks: waits for the small ones to end
  RequestHandle first;
  {
    std::lock_guard g(mu);
    first = handles.front();
  }
  (void)first.wait();  // every arrival has been submitted by then
  std::vector<RequestHandle> all;
  {
    std::lock_guard g(mu);
    all = handles;
  }
  ASSERT_EQ(all.size(), 16u);
  for (auto& h : all) EXPECT_NE(h.wait().finish_reason, FinishReason::kError);
  std::lock_guard g(mu);
  EXPECT_EQ(first_tokens, order) << "admitted out of arrival order";
}

TEST_F(Serving, RequestsSpreadOverWorkersAndTheFiguresSayWhatRan) {
  EngineConfig c = config();
  c.workers = 2;
  c.max_batch_sequences = 2;
  auto e = engine(c);
  std::vector<InferenceRequest> reqs;
  for (int i = 0; i < 8; ++i) reqs.push_back(request(fmt::format("w{}", i), 6, 20, 60 + i));
  const auto results = e->batch_inference(reqs);
  for (std::size_t i = 0; i < reqs.size(); ++i) EXPECT_EQ(results[i].output_tokens.size(), 20u);
  const EngineStats s = e->stats();
  EXPECT_EQ(s.requests, 8u);
  EXPECT_EQ(s.serving.output_tokens, 8u * 20u);
  EXPECT_GT(s.serving.steps, 0u);
  EXPECT_LE(s.serving.mean_batch_sequences, 2.0);
  EXPECT_GT(s.serving.mean_batch_sequences, 1.0);
  EXPECT_EQ(s.serving.step_tokens, 8u * 6u + 8u * 19u);  // prompts, then all but the last token
  const auto j = nlohmann::json::parse(s.to_json());
  EXPECT_EQ(j.at("serving").at("output_tokens"), 160);
  EXPECT_EQ(j.at("workers").at(1).at("serving").at("kv_used_bytes"), 0);
  const std::string prom = s.to_prometheus();
  for (const char* family :
       {"xlshare_running_sequences", "xlshare_waiting_requests", "xlshare_steps_total",
        "xlshare_step_sequences_total", "xlshare_output_tokens_total", "xlshare_preemptions_total",
        "xlshare_kv_used_bytes", "xlshare_kv_capacity_bytes"}) {
    EXPECT_NE(prom.find(std::string("# TYPE ") + family + " "), std::string::npos) << family;
  }
}

// A busy worker does not hold up a request another worker could run: the first request's
// worker is held inside its callback (one sequence per worker) until the second request
// streams, which only the other worker can make happen.
TEST_F(Serving, AnIdleWorkerTakesWhatABusyOneCannot) {
  EngineConfig c = config();
  c.workers = 2;
  c.max_batch_sequences = 1;
  auto e = engine(c);
  std::promise<void> second_streamed;
  auto streamed = second_streamed.get_future();
  std::atomic<bool> timed_out{false};
  auto first =
      e->submit(request("first", 4, 3, 1), {.on_token = [&](const TokenEvent& ev) {
                  if (ev.position == 0 && streamed.wait_for(60s) != std::future_status::ready)
                    timed_out = true;
                }});
  auto second = e->submit(request("second", 4, 3, 2), {.on_token = [&](const TokenEvent& ev) {
                            if (ev.position == 0 && ev.token >= 0) second_streamed.set_value();
                          }});
  const auto a = first.wait(), b = second.wait();
  EXPECT_FALSE(timed_out) << "the second request waited for the busy worker";
  EXPECT_NE(a.worker, b.worker);
}

TEST_F(Serving, ConfigurationAndHandlesAreChecked) {
  EngineConfig c = config();
  c.max_batch_sequences = 64;
  c.max_step_tokens = 16;  // fewer than one decode token per sequence
  InferenceEngine bad(c);
  EXPECT_THROW(bad.attach_model("m"), ConfigError);
  c = config();
  c.kv_cache_bytes = 1;  // not one block
  InferenceEngine tiny(c);
  EXPECT_THROW(tiny.attach_model("m"), ConfigError);
  InferenceEngine unattached(config());
  EXPECT_THROW(unattached.submit(request("x", 2, 2, 1)), ConfigError);
  RequestHandle empty;
  EXPECT_FALSE(empty);
  EXPECT_THROW((void)empty.wait(), ConfigError);
  auto e = engine(config());
  auto outside = request("v", 3, 1, 1);
  outside.prompt[1] = static_cast<std::int32_t>(kVocab);
  EXPECT_THROW(e->submit(outside), ConfigError);
  EXPECT_THROW(e->submit(request("long", 200, 100, 1)), ConfigError);  // over max_context
  // A handle outlives its engine: what had not finished fails, clearly. The orphan waits
  // behind a request that holds the only slot inside its callback until well after the
  // engine began stopping, so it cannot have run.
  RequestHandle h;
  std::promise<void> release;
  std::thread releaser;
  {
    EngineConfig one = config();
    one.max_batch_sequences = 1;
    auto short_lived = engine(one);
    auto released = release.get_future().share();
    (void)short_lived->submit(request("holder", 4, 250, 1),
                              {.on_token = [released](const TokenEvent& ev) {
                                if (ev.position == 0) released.wait();
                              }});
    h = short_lived->submit(request("orphan", 4, 5, 1));
    releaser = std::thread([&release] {
      std::this_thread::sleep_for(100ms);  // the engine's destructor is waiting by then
      release.set_value();
    });
  }
  releaser.join();
  EXPECT_TRUE(h.done());
  try {
    (void)h.wait();
    ADD_FAILURE() << "a request queued behind the only slot finished";
  } catch (const ConfigError& x) {
    EXPECT_NE(std::string(x.what()).find("stopped"), std::string::npos) << x.what();
  }
}

}  // namespace
}  // namespace xlshare

namespace xlshare {
namespace {

// The model's end-of-sequence token (from its file's metadata) ends generation as a stop
// token does, unless the request ignores it.
TEST_F(Serving, TheModelsEndOfSequenceTokenStopsGenerationUnlessIgnored) {
  auto with_eos = create_sample_transformer_model(64, 4, 4, 2, 160, kVocab, 91);
  auto e = engine(config());
  auto r = request("eos", 5, 12, 3);
  const auto all = e->inference(r).output_tokens;
  ASSERT_EQ(all.size(), 12u);
  const std::int32_t eos = all[4];
  const auto first = std::find(all.begin(), all.end(), eos) - all.begin();
  with_eos.config.eos_token_ids = {eos};
  {
    InferenceEngine loader(config());
    loader.register_model(with_eos, "m-eos");  // the same weights, an end-of-sequence token
  }
  InferenceEngine eng(config());
  eng.attach_model("m-eos");
  EXPECT_EQ(eng.model().config().eos_token_ids, std::vector<std::int32_t>{eos});
  const auto stopped = eng.inference(r);
  EXPECT_EQ(stopped.finish_reason, FinishReason::kStop);
  EXPECT_EQ(stopped.output_tokens, std::vector<std::int32_t>(all.begin(), all.begin() + first + 1));
  r.ignore_eos = true;
  const auto ignored = eng.inference(r);
  EXPECT_EQ(ignored.output_tokens, all);
  EXPECT_EQ(ignored.finish_reason, FinishReason::kLength);
}

}  // namespace
}  // namespace xlshare
