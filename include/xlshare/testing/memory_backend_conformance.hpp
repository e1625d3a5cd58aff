// The MemoryBackend contract (memory_backend.hpp) as a GoogleTest suite a user instantiates
// for their own backend. Header-only; the including test links GTest::gtest.
//
// A backend is reached by URI, so register its scheme first (register_backend_scheme), then
// describe it with a Kind, a type with one static function:
//
//   struct MyKind {
//     static std::string make_uri();  // a fresh URI that names no object yet
//   };
//   using namespace xlshare::conformance;  // where the suite's names are found
//   INSTANTIATE_TYPED_TEST_SUITE_P(Mine, MemoryBackendConformance, ::testing::Types<MyKind>);
//
// The suite creates objects of kBytes (8 MiB: a multiple of any alignment up to 8 MiB),
// and removes each with remove_backend() (so the scheme must provide `remove`). It checks
// geometry, sharing between two opens, read() against the mapping, the errors of bad
// requests, read-only opens, concurrent reads, an object outliving its backend, and that a
// Pool made in the backend round-trips a model.
#pragma once

#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "xlshare/error.hpp"
#include "xlshare/memory/backend_uri.hpp"
#include "xlshare/memory/memory_backend.hpp"
#include "xlshare/memory/pool.hpp"

namespace xlshare::conformance {

template <typename Kind>
class MemoryBackendConformance : public ::testing::Test {
 protected:
  static constexpr std::uint64_t kBytes = 8u << 20;

  MemoryBackendConformance() : uri_(Kind::make_uri()) {}
  ~MemoryBackendConformance() override {
    try {
      if (backend_exists(uri_)) remove_backend(uri_);
    } catch (...) {
    }
  }
  // The byte the suite writes at offset i.
  static std::byte pattern(std::uint64_t i) noexcept { return std::byte((i * 7 + 3) & 0xff); }

  std::string uri_;
};

TYPED_TEST_SUITE_P(MemoryBackendConformance);

TYPED_TEST_P(MemoryBackendConformance, CreateReportsItsGeometry) {
  auto b = create_backend(this->uri_, this->kBytes);
  // The URI it was made with, or (a decorator such as CxlEmulator) the one of the object
  // it wraps: either names the object.
  EXPECT_FALSE(b->uri().empty());
  EXPECT_TRUE(backend_exists(b->uri())) << b->uri();
  EXPECT_EQ(b->size_bytes(), this->kBytes);
  const std::uint64_t a = b->alignment_bytes();
  EXPECT_TRUE(a != 0 && (a & (a - 1)) == 0) << "alignment " << a;
  EXPECT_EQ(this->kBytes % a, 0u) << "alignment " << a;
  EXPECT_TRUE(b->is_writable());
  EXPECT_TRUE(backend_exists(this->uri_));
}

TYPED_TEST_P(MemoryBackendConformance, CreateRefusesAnObjectThatExists) {
  auto b = create_backend(this->uri_, this->kBytes);
  EXPECT_THROW(create_backend(this->uri_, this->kBytes), BackendError);
}

TYPED_TEST_P(MemoryBackendConformance, WritesAreSeenByAnotherOpenAndByRead) {
  auto writer = create_backend(this->uri_, this->kBytes);
  Mapping w = writer->map(0, this->kBytes, Access::kReadWrite);
  for (std::uint64_t i = 0; i < this->kBytes; ++i) w.data()[i] = this->pattern(i);

  auto reader = open_backend(this->uri_);
  EXPECT_EQ(reader->size_bytes(), this->kBytes);
  const std::uint64_t a = reader->alignment_bytes();
  Mapping r = reader->map(a, a, Access::kReadOnly);
  EXPECT_EQ(std::memcmp(r.data(), w.data() + a, a), 0);
  std::vector<std::byte> out(1000);
  ASSERT_EQ(reader->read(12345, out), ReadStatus::kOk);
  EXPECT_EQ(std::memcmp(out.data(), w.data() + 12345, out.size()), 0);
  ASSERT_EQ(reader->read(this->kBytes - out.size(), out), ReadStatus::kOk);
  EXPECT_EQ(std::memcmp(out.data(), w.data() + this->kBytes - out.size(), out.size()), 0);
  // And the other way: a write through the second open is seen through the first.
  auto second = open_backend(this->uri_);
  Mapping w2 = second->map(0, second->alignment_bytes(), Access::kReadWrite);
  w2.data()[17] = std::byte{0x5a};
  EXPECT_EQ(w.data()[17], std::byte{0x5a});
}

TYPED_TEST_P(MemoryBackendConformance, RejectsMisalignedAndOutOfRangeRequests) {
  auto b = create_backend(this->uri_, this->kBytes);
  const std::uint64_t a = b->alignment_bytes();
  EXPECT_THROW(b->map(1, a, Access::kReadOnly), BackendError);
  EXPECT_THROW(b->map(0, a + 1, Access::kReadOnly), BackendError);
  EXPECT_THROW(b->map(0, this->kBytes + a, Access::kReadOnly), BackendError);
  EXPECT_THROW(b->map(this->kBytes, a, Access::kReadOnly), BackendError);
  EXPECT_THROW(b->map(0, 0, Access::kReadOnly), BackendError);
  EXPECT_THROW(b->map(UINT64_MAX - a + 1, a, Access::kReadOnly), BackendError);
  std::vector<std::byte> out(16);
  EXPECT_EQ(b->read(this->kBytes - 8, out), ReadStatus::kOutOfRange);
  EXPECT_EQ(b->read(UINT64_MAX - 4, out), ReadStatus::kOutOfRange);
}

TYPED_TEST_P(MemoryBackendConformance, AReadOnlyOpenCannotMapWritable) {
  auto b = create_backend(this->uri_, this->kBytes);
  BackendOptions ro;
  ro.read_only = true;
  auto r = open_backend(this->uri_, ro);
  EXPECT_FALSE(r->is_writable());
  EXPECT_THROW(r->map(0, r->alignment_bytes(), Access::kReadWrite), BackendError);
  EXPECT_NO_THROW(r->map(0, r->alignment_bytes(), Access::kReadOnly));
}

TYPED_TEST_P(MemoryBackendConformance, ConcurrentReadsSeeTheWrittenBytes) {
  auto b = create_backend(this->uri_, this->kBytes);
  {
    Mapping w = b->map(0, this->kBytes, Access::kReadWrite);
    for (std::uint64_t i = 0; i < this->kBytes; ++i) w.data()[i] = this->pattern(i);
  }
  auto r = open_backend(this->uri_);
  std::vector<int> bad(4, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      std::vector<std::byte> out(4096 + 13 * t);
      std::uint64_t at = 977 * t;
      for (int i = 0; i < 200; ++i, at = (at * 31 + 4099) % (this->kBytes - out.size())) {
        if (r->read(at, out) != ReadStatus::kOk) {
          ++bad[t];
          continue;
        }
        for (std::size_t j = 0; j < out.size(); j += 97) bad[t] += out[j] != this->pattern(at + j);
      }
    });
  }
  for (auto& t : threads) t.join();
  for (int t = 0; t < 4; ++t) EXPECT_EQ(bad[t], 0) << "thread " << t;
}

TYPED_TEST_P(MemoryBackendConformance, TheObjectOutlivesItsBackendUntilRemoved) {
  {
    auto b = create_backend(this->uri_, this->kBytes);
    Mapping w = b->map(0, b->alignment_bytes(), Access::kReadWrite);
    w.data()[3] = std::byte{0x77};
  }
  ASSERT_TRUE(backend_exists(this->uri_));
  {
    auto b = open_backend(this->uri_);
    std::byte out[1];
    ASSERT_EQ(b->read(3, out), ReadStatus::kOk);
    EXPECT_EQ(out[0], std::byte{0x77});
  }
  remove_backend(this->uri_);
  EXPECT_FALSE(backend_exists(this->uri_));
  EXPECT_THROW(open_backend(this->uri_), BackendError);
}

TYPED_TEST_P(MemoryBackendConformance, APoolInItRoundTripsAModel) {
  std::vector<float> values(100000);
  for (std::size_t i = 0; i < values.size(); ++i) values[i] = static_cast<float>(i) * 0.5f;
  {
    auto pool = create_pool(this->uri_, this->kBytes);
    ModelWriter w = pool->begin_model("m");
    const std::uint64_t shape[] = {values.size()};
    auto dst = w.add_tensor("t", DType::kF32, shape);
    ASSERT_EQ(dst.size(), values.size() * sizeof(float));
    std::memcpy(dst.data(), values.data(), dst.size());
    w.seal();
  }
  auto reader = Pool::attach(open_backend(this->uri_), PoolRole::kReader);
  const auto model = reader->model("m");
  ASSERT_NE(model, nullptr);
  const TensorInfo& t = model->at("t");
  std::vector<float> back(values.size());
  ASSERT_EQ(reader->read(t, 0, std::as_writable_bytes(std::span<float>(back))), ReadStatus::kOk);
  EXPECT_EQ(back, values);
  const auto view = reader->view(t);
  ASSERT_EQ(view.size(), values.size() * sizeof(float));
  EXPECT_EQ(std::memcmp(view.data(), values.data(), view.size()), 0);
  EXPECT_TRUE(reader->verify(t));
}

REGISTER_TYPED_TEST_SUITE_P(MemoryBackendConformance, CreateReportsItsGeometry,
                            CreateRefusesAnObjectThatExists, WritesAreSeenByAnotherOpenAndByRead,
                            RejectsMisalignedAndOutOfRangeRequests, AReadOnlyOpenCannotMapWritable,
                            ConcurrentReadsSeeTheWrittenBytes,
                            TheObjectOutlivesItsBackendUntilRemoved, APoolInItRoundTripsAModel);

}  // namespace xlshare::conformance
