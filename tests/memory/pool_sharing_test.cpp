// Several processes attached to one pool share ONE physical copy: checked from /proc.
#include <gtest/gtest.h>

#include <vector>

#include "support/test_support.hpp"
#include "xlshare/memory/backend_uri.hpp"
#include "xlshare/memory/checksum.hpp"
#include "xlshare/memory/cxl_emulator.hpp"
#include "xlshare/memory/pool.hpp"
#include "xlshare/proc_memory.hpp"

namespace xlshare {
namespace {

constexpr std::uint64_t kTensorElems = 4u << 20;  // 16 MiB of f32 per tensor
constexpr int kTensors = 4;                       // 64 MiB of data

class PoolSharing : public ::testing::Test {
 protected:
  PoolSharing() : name_(test::unique_name("share")), uri_("shm://" + name_), guard_(uri_) {
    auto pool = Pool::create(create_backend(uri_, 72u << 20),
                             PoolOptions{.max_models = 2, .max_tensors = 16});
    auto w = pool->begin_model("m");
    for (int i = 0; i < kTensors; ++i) {
      const std::uint64_t shape[] = {kTensorElems};
      auto bytes = w.add_tensor(fmt::format("t{}", i), DType::kF32, shape);
      auto* f = reinterpret_cast<float*>(bytes.data());
      for (std::uint64_t k = 0; k < kTensorElems; ++k)
        f[k] = static_cast<float>(k % 1000) * 0.5f + i;
    }
    w.seal();
    data_bytes_ = pool->stats().data_bytes;
    pool_bytes_ = pool->stats().pool_bytes;
    // The creator unmaps: the children below are the only processes mapping the pool.
  }
  std::string name_, uri_;
  test::BackendGuard guard_;
  std::uint64_t data_bytes_ = 0, pool_bytes_ = 0;
};

// Attaches, reads every tensor over the link, checks it, then touches every page of the
// pool through its read-only mapping and waits to be measured.
int attached_worker(const std::string& uri, test::Signal& ready, test::Signal& release,
                    int out_fd) {
  EmulatorOptions o;
  o.check_host_rate = false;
  auto pool = Pool::attach(std::make_unique<CxlEmulator>(open_backend(uri), o));
  auto model = pool->model("m");
  std::uint64_t digest = 0;
  std::vector<std::byte> buf(1u << 20);  // read in pieces: no private copy of a tensor
  for (const auto& t : model->tensors()) {
    Checksum64 sum;
    for (std::uint64_t off = 0; off < t.size_bytes; off += buf.size()) {
      const auto piece =
          std::span(buf).first(std::min<std::uint64_t>(buf.size(), t.size_bytes - off));
      if (pool->read(t, off, piece) != ReadStatus::kOk) return 2;
      sum.update(piece);
    }
    if (sum.digest() != t.checksum) return 3;
    digest ^= sum.digest();
  }
  volatile std::uint64_t sink = 0;
  const auto first = pool->view(model->tensors()[0]);
  const std::byte* base = first.data() - model->tensors()[0].offset_bytes;
  const auto lay = pool->layout();
  for (std::uint64_t off = 0; off < lay.data_offset + lay.data_bytes; off += 4096) {
    sink = sink + static_cast<std::uint64_t>(base[off]);
  }
  (void)!::write(out_fd, &digest, sizeof digest);
  ready.notify();
  release.wait();
  return 0;
}

TEST_F(PoolSharing, TwoProcessesReadIdenticalBytesAndShareOneCopy) {
  test::Signal ready_a, ready_b, release;
  int digests[2];
  ASSERT_EQ(::pipe(digests), 0);
  const pid_t a = test::spawn([&] { return attached_worker(uri_, ready_a, release, digests[1]); });
  const pid_t b = test::spawn([&] { return attached_worker(uri_, ready_b, release, digests[1]); });
  ASSERT_TRUE(ready_a.wait());
  ASSERT_TRUE(ready_b.wait());

  std::uint64_t da = 0, db = 0;
  ASSERT_EQ(::read(digests[0], &da, sizeof da), static_cast<ssize_t>(sizeof da));
  ASSERT_EQ(::read(digests[0], &db, sizeof db), static_cast<ssize_t>(sizeof db));
  EXPECT_EQ(da, db);
  EXPECT_NE(da, 0u);

  const std::string path = "/dev/shm/" + name_;
  const auto ma = read_mapping_memory(a, path), mb = read_mapping_memory(b, path);
  const auto ra = read_proc_memory(a), rb = read_proc_memory(b);
  release.notify();
  release.notify();
  EXPECT_EQ(test::wait_exit(a), 0);
  EXPECT_EQ(test::wait_exit(b), 0);
  ASSERT_TRUE(ma && mb && ra && rb);

  const double pool = static_cast<double>(pool_bytes_);
  // Each process has every data page resident ...
  EXPECT_GE(static_cast<double>(ma->rss), 0.95 * static_cast<double>(data_bytes_));
  // ... yet the two mappings' PSS sum to about one copy of the pool, not two.
  const double pss_sum = static_cast<double>(ma->pss + mb->pss);
  EXPECT_GT(pss_sum, 0.9 * static_cast<double>(data_bytes_)) << pss_sum;
  EXPECT_LT(pss_sum, 1.1 * pool) << pss_sum;
#if !defined(__SANITIZE_ADDRESS__)
  // Whole-process PSS: one copy plus each process's own small heap and stacks. (Under
  // AddressSanitizer each process carries shadow memory and a quarantine that are not
  // xlshare's: the mapping's bound above holds there too; this one is checked by make test.)
  EXPECT_LT(static_cast<double>(ra->pss + rb->pss), 1.4 * pool);
#endif
  // Neither holds a private copy of the weights.
  EXPECT_LT(static_cast<double>(ma->private_bytes()), 0.02 * pool);
  EXPECT_LT(static_cast<double>(ra->private_bytes()), 0.25 * static_cast<double>(data_bytes_))
      << "private " << ra->private_bytes();
  EXPECT_LT(static_cast<double>(rb->private_bytes()), 0.25 * static_cast<double>(data_bytes_));
  ::close(digests[0]);
  ::close(digests[1]);
}

TEST_F(PoolSharing, AttachersShareOneLink) {
  // Two processes read over an emulated link; the pool's link counters see both.
  auto observer = Pool::attach(open_backend(uri_));
  const auto before = observer->stats().link_bytes;
  std::vector<pid_t> pids;
  for (int i = 0; i < 2; ++i) {
    pids.push_back(test::spawn([&] {
      EmulatorOptions o;
      o.link = link_preset("cxl-x8");
      o.check_host_rate = false;
      auto pool = Pool::attach(std::make_unique<CxlEmulator>(open_backend(uri_), o));
      const auto t = pool->find_tensor("m/t0");
      std::vector<std::byte> buf(t.size_bytes);
      return pool->read(t, 0, buf) == ReadStatus::kOk ? 0 : 1;
    }));
  }
  for (pid_t p : pids) EXPECT_EQ(test::wait_exit(p), 0);
  EXPECT_EQ(observer->stats().link_bytes - before, 2 * kTensorElems * 4);
  EXPECT_EQ(observer->stats().link_transfers, 2u);
}

}  // namespace
}  // namespace xlshare
