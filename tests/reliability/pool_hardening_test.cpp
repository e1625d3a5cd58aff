// The pool under an adversary (issue 10): a creator killed mid-create, `pool rm` on things
// that are not pools or are full of holders, a corrupted free table, a corrupted model
// record, link times from another clock, holders in other PID namespaces, a loader whose
// model was force-removed, a lock held by a stopped process. Corruption is done as an
// attacker would: by writing the pool's backing file while the pool exists.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

#include "memory/pool_layout.hpp"
#include "support/test_support.hpp"
#include "xlshare/error.hpp"
#include "xlshare/memory/backend_uri.hpp"
#include "xlshare/memory/checksum.hpp"
#include "xlshare/memory/clock.hpp"
#include "xlshare/memory/cxl_emulator.hpp"
#include "xlshare/memory/pool.hpp"

namespace xlshare {
namespace {

namespace pf = pool_format;
namespace fs = std::filesystem;

constexpr std::uint64_t kPoolBytes = 16u << 20;
const PoolOptions kSmall{.max_models = 4, .max_tensors = 64, .data_alignment = 4096};

void fill(std::span<std::byte> bytes, std::uint64_t seed) {
  for (std::size_t i = 0; i < bytes.size(); ++i) bytes[i] = std::byte((i * 131 + seed * 17) & 0xff);
}

void write_model(Pool& pool, const std::string& name, int tensors, std::uint64_t seed = 0) {
  auto w = pool.begin_model(name);
  for (int i = 0; i < tensors; ++i) {
    const std::uint64_t shape[] = {1000, 2};
    fill(w.add_tensor(fmt::format("t{}", i), DType::kF32, shape),
         seed + static_cast<std::uint64_t>(i));
  }
  w.set_metadata(R"({"kind":"test"})");
  w.seal();
}

// Every tensor of `model` still matches its checksum.
bool model_intact(Pool& pool, const std::string& model) {
  auto view = pool.model(model);
  for (const auto& t : view->tensors()) {
    if (!pool.verify(t)) return false;
  }
  return true;
}

std::string expect_throw(const std::function<void()>& body) {
  try {
    body();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected an xlshare::Error";
  return {};
}

class PoolHardening : public ::testing::Test {
 protected:
  PoolHardening()
      : name_(test::unique_name("hard")),
        uri_("shm://" + name_),
        path_("/dev/shm/" + name_),
        guard_(uri_) {}
  std::unique_ptr<Pool> create() { return create_pool(uri_, kPoolBytes, kSmall); }
  std::unique_ptr<Pool> attach(PoolRole role = PoolRole::kReader) {
    return Pool::attach(open_backend(uri_), role);
  }
  void poke(std::uint64_t offset, const void* bytes, std::size_t n) {
    const int fd = ::open(path_.c_str(), O_RDWR);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::pwrite(fd, bytes, n, static_cast<off_t>(offset)), static_cast<ssize_t>(n));
    ::close(fd);
  }
  template <typename T>
  T peek(std::uint64_t offset) {
    T v{};
    const int fd = ::open(path_.c_str(), O_RDONLY);
    EXPECT_GE(fd, 0);
    EXPECT_EQ(::pread(fd, &v, sizeof v, static_cast<off_t>(offset)),
              static_cast<ssize_t>(sizeof v));
    ::close(fd);
    return v;
  }
  std::uint64_t link_offset(std::size_t field) const {
    return layout_.control_offset + offsetof(pf::Control, link) + field;
  }
  std::string name_, uri_, path_;
  test::BackendGuard guard_;
  Pool::Layout layout_{};
};

// --- 4: a creator killed at any point leaves no half-made pool ----------------------------

std::vector<std::string> creation_leftovers(const std::string& name) {
  const std::string prefix =
      fmt::format("xlshare-creating-{:016x}-", checksum64(name.data(), name.size()));
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator("/dev/shm")) {
    if (e.path().filename().string().rfind(prefix, 0) == 0) out.push_back(e.path().string());
  }
  return out;
}

TEST_F(PoolHardening, CreatorKilledDuringCreateLeavesNoBlankPool) {
  // A large pool: reserving its memory takes long enough for kills to land mid-create.
  constexpr std::uint64_t kBig = 1ull << 30;
  for (int delay_ms : {0, 1, 3, 8, 20, 50}) {
    const pid_t child = test::spawn([&] {
      (void)create_pool(uri_, kBig);
      ::pause();
      return 0;
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
    ::kill(child, SIGKILL);
    test::wait_exit(child);
    // Either no pool at all, or a complete one: never a blank or half-laid header.
    if (backend_exists(uri_)) {
      EXPECT_NO_THROW(attach()) << "after a kill at " << delay_ms << " ms";
      remove_pool(uri_);
    }
    // The next create succeeds and sweeps what the dead creator left under its temporary name.
    EXPECT_NO_THROW(create_pool(uri_, kPoolBytes, kSmall)) << delay_ms;
    EXPECT_TRUE(creation_leftovers(name_).empty()) << delay_ms;
    remove_pool(uri_);
  }
  // `pool rm` of the name sweeps a dead creator's leftover even when no pool was published.
  const pid_t child = test::spawn([&] {
    (void)create_pool(uri_, kBig);
    ::pause();
    return 0;
  });
  while (creation_leftovers(name_).empty())
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  ::kill(child, SIGKILL);
  test::wait_exit(child);
  remove_pool(uri_);  // the published pool, or only the leftover
  EXPECT_TRUE(creation_leftovers(name_).empty());
}

TEST_F(PoolHardening, CreateSweepsOnlyDeadCreatorsLeftovers) {
  const pid_t dead = test::spawn([] { return 0; });
  test::wait_exit(dead);
  const std::string prefix =
      fmt::format("xlshare-creating-{:016x}-", checksum64(name_.data(), name_.size()));
  const std::string dead_leftover =
      fmt::format("/dev/shm/{}{}-{}-{}-0", prefix, pid_namespace_inode(), dead, 12345);
  const std::string live_leftover =
      fmt::format("/dev/shm/{}{}-{}-{}-999999", prefix, pid_namespace_inode(), ::getpid(),
                  process_start_ticks(::getpid()));
  const std::string unrelated = "/dev/shm/" + test::unique_name("not-ours");
  for (const auto& p : {dead_leftover, live_leftover, unrelated}) std::ofstream(p) << "x";
  try {
    create();
  } catch (const Error& e) {
    ADD_FAILURE() << e.what();
  }
  EXPECT_FALSE(fs::exists(dead_leftover));
  EXPECT_TRUE(fs::exists(live_leftover)) << "a live creator's object is not ours to remove";
  EXPECT_TRUE(fs::exists(unrelated));
  fs::remove(live_leftover);
  fs::remove(unrelated);
}

// --- 5, 6: pool rm removes pools only, and never one that may be in use -----------------

TEST_F(PoolHardening, RmRefusesWhatIsNotAPoolEvenWithForce) {
  test::TempDir dir;
  const auto gguf = dir.path() / "model.gguf";
  std::ofstream(gguf) << "GGUF" << std::string(8192, 'w');
  const std::string text_uri = "shm://" + test::unique_name("text");
  test::BackendGuard text_guard(text_uri);
  std::ofstream("/dev/shm/" + text_uri.substr(6)) << std::string(8192, 't');
  const std::string blank_uri = "shm://" + test::unique_name("blank");
  test::BackendGuard blank_guard(blank_uri);
  { std::ofstream("/dev/shm/" + blank_uri.substr(6)) << std::string(8192, '\0'); }
  for (const std::string& uri : {"file://" + gguf.string(), text_uri, blank_uri}) {
    for (bool force : {false, true}) {
      const std::string what = expect_throw([&] { remove_pool(uri, force); });
      EXPECT_NE(what.find("not an xlshare pool"), std::string::npos) << what;
      EXPECT_TRUE(backend_exists(uri)) << uri << (force ? " --force" : "");
    }
  }
}

TEST_F(PoolHardening, RmRefusesAPoolWhoseAttachSlotsAreAllTaken) {
  auto creator = create();
  std::vector<std::unique_ptr<Pool>> holders;
  for (std::uint32_t i = 1; i < pf::kAttachSlots; ++i) holders.push_back(attach());
  EXPECT_NE(expect_throw([&] { attach(); }).find("attach slots"), std::string::npos);
  // Judged from the slots, not from a failed attach.
  const pid_t child = test::spawn([&] {
    try {
      remove_pool(uri_);
    } catch (const PoolError& e) {
      return std::string(e.what()).find("may be using the pool") != std::string::npos ? 0 : 2;
    }
    return 1;
  });
  EXPECT_EQ(test::wait_exit(child), 0);
  EXPECT_TRUE(backend_exists(uri_));
  holders.clear();
  creator.reset();
  EXPECT_NO_THROW(remove_pool(uri_));
  EXPECT_FALSE(backend_exists(uri_));
}

TEST_F(PoolHardening, RmOfACorruptedHeaderNeedsForce) {
  { auto pool = create(); }
  const std::uint64_t junk = 0x1234;
  poke(offsetof(pf::Header, pool_bytes), &junk, sizeof junk);  // magic intact, checksum broken
  const std::string what = expect_throw([&] { remove_pool(uri_); });
  EXPECT_NE(what.find("cannot be ruled out"), std::string::npos) << what;
  EXPECT_TRUE(backend_exists(uri_));
  EXPECT_NO_THROW(remove_pool(uri_, true));
  EXPECT_FALSE(backend_exists(uri_));
}

// --- 7: a corrupted free table never lets a load overwrite a sealed model ----------------

TEST_F(PoolHardening, FreeTableThatLiesConsistentlyIsRebuiltOnWriterAttach) {
  {
    auto pool = create();
    layout_ = pool->layout();
    write_model(*pool, "a", 4);
  }
  // The whole data area free and nothing used: passes the table's own consistency check.
  const std::uint64_t t = layout_.extents_offset;
  const std::uint64_t one = 1, zero = 0, begin = layout_.data_offset, bytes = layout_.data_bytes;
  poke(t + offsetof(ExtentTable, count), &one, 8);
  poke(t + offsetof(ExtentTable, bytes_used), &zero, 8);
  poke(t + offsetof(ExtentTable, extents), &begin, 8);
  poke(t + offsetof(ExtentTable, extents) + 8, &bytes, 8);
  auto writer = attach(PoolRole::kWriter);
  write_model(*writer, "b", 4, 100);
  EXPECT_TRUE(model_intact(*writer, "a"));
  EXPECT_TRUE(model_intact(*writer, "b"));
}

TEST_F(PoolHardening, FreeTableCorruptedUnderAnAttachedWriterIsCaughtAtAllocation) {
  auto writer = create();
  layout_ = writer->layout();
  write_model(*writer, "a", 4);
  // With the writer attached, the first free extent is stretched down over model a, and the
  // used count lowered to match: a lie the table's own consistency check cannot see.
  const std::uint64_t t = layout_.extents_offset;
  const std::uint64_t off = t + offsetof(ExtentTable, extents);
  const auto first = peek<std::uint64_t>(off);
  const auto a_begin = writer->model("a")->tensors()[0].offset_bytes;
  ASSERT_LT(a_begin, first);
  const std::uint64_t stretch = first - a_begin;
  const std::uint64_t size = peek<std::uint64_t>(off + 8) + stretch;
  const std::uint64_t used = peek<std::uint64_t>(t + offsetof(ExtentTable, bytes_used)) - stretch;
  poke(off, &a_begin, 8);
  poke(off + 8, &size, 8);
  poke(t + offsetof(ExtentTable, bytes_used), &used, 8);
  write_model(*writer, "b", 4, 100);
  EXPECT_TRUE(model_intact(*writer, "a"));
  EXPECT_TRUE(model_intact(*writer, "b"));
}

// --- 8: one corrupted record is quarantined; the other models stay servable --------------

TEST_F(PoolHardening, CorruptedModelRecordIsQuarantinedAndDroppable) {
  std::uint32_t slot_a = 0;
  {
    auto pool = create();
    layout_ = pool->layout();
    write_model(*pool, "a", 2);
    write_model(*pool, "b", 2, 50);
    slot_a = pool->model("a")->slot();
  }
  const std::uint64_t rec = layout_.models_offset + slot_a * sizeof(pf::ModelRecord);
  auto bytes = peek<std::uint64_t>(rec + offsetof(pf::ModelRecord, tensor_bytes));
  bytes ^= 1u << 12;
  poke(rec + offsetof(pf::ModelRecord, tensor_bytes), &bytes, 8);

  auto reader = attach();
  EXPECT_TRUE(model_intact(*reader, "b"));
  EXPECT_NE(expect_throw([&] { reader->model("a"); }).find("quarantined"), std::string::npos);
  bool listed = false;
  for (const auto& m : reader->list_models())
    listed = listed || (m.name == "a" && m.state == "corrupted" && !m.problem.empty());
  EXPECT_TRUE(listed);

  auto writer = attach(PoolRole::kWriter);
  writer->remove_model("a");
  EXPECT_TRUE(model_intact(*writer, "b"));
  write_model(*writer, "a", 2, 7);  // the name and the space are usable again
  EXPECT_TRUE(model_intact(*writer, "a"));
}

TEST_F(PoolHardening, ReclaimDropsACorruptedRecordWithAnUnreadableState) {
  std::uint32_t slot_a = 0;
  {
    auto pool = create();
    layout_ = pool->layout();
    write_model(*pool, "a", 2);
    write_model(*pool, "b", 2, 50);
    slot_a = pool->model("a")->slot();
  }
  const std::uint64_t state = 0x4000000000000002ull;  // a flipped high bit of 'sealed'
  poke(layout_.models_offset + slot_a * sizeof(pf::ModelRecord) + offsetof(pf::ModelRecord, state),
       &state, 8);
  auto writer = attach(PoolRole::kWriter);
  EXPECT_TRUE(model_intact(*writer, "b"));
  EXPECT_EQ(writer->reclaim_abandoned(), 1u);
  EXPECT_TRUE(model_intact(*writer, "b"));
  EXPECT_EQ(writer->model_names(), std::vector<std::string>{"b"});
}

// --- 9: link times from another clock never hang a reader --------------------------------

TEST_F(PoolHardening, LinkTimeFromAnotherClockIsClampedNotWaitedFor) {
  {
    auto pool = create();
    layout_ = pool->layout();
    write_model(*pool, "m", 1);
  }
  ManualClock clock(MonotonicClock::instance().now_ns());
  const std::uint64_t start = clock.now_ns();
  // What a process in a time namespace 600 s ahead writes.
  const std::uint64_t future = start + 600'000'000'000ull;
  poke(link_offset(offsetof(LinkState, link_free_ns)), &future, 8);
  EmulatorOptions o;
  o.link = link_preset("cxl-x8");
  o.clock = &clock;
  o.check_host_rate = false;
  auto pool = Pool::attach(std::make_unique<CxlEmulator>(open_backend(uri_), o));
  const TensorInfo t = pool->model("m")->tensors()[0];
  std::vector<std::byte> dst(t.size_bytes);
  ASSERT_EQ(pool->read(t, 0, dst), ReadStatus::kOk);
  EXPECT_LT(clock.now_ns() - start, kMaxLinkAheadNs)
      << "the reader waited for a time from another clock";
  EXPECT_GE(link_field(pool->link_state().clock_clamps_total).load(), 1u);
}

TEST_F(PoolHardening, PoolFromAnotherBootResetsItsLinkClock) {
  {
    auto pool = create();
    layout_ = pool->layout();
  }
  const std::uint64_t other_boot = 0x0123456789abcdefull, stale = 1ull << 62;
  poke(link_offset(offsetof(LinkState, boot_id_hash)), &other_boot, 8);
  poke(link_offset(offsetof(LinkState, link_free_ns)), &stale, 8);
  auto pool = attach();
  EXPECT_EQ(link_field(pool->link_state().link_free_ns).load(), 0u);
  EXPECT_NE(link_field(pool->link_state().boot_id_hash).load(), other_boot);
}

// The real thing: a reader in a time namespace whose CLOCK_MONOTONIC runs 600 s ahead
// reads over the shared link, then a reader on the host reads. Without the clamp the host
// reader would wait 600 s; it runs under alarm(30) so a regression fails fast. (Needs
// CAP_SYS_ADMIN, which the project's CI has: it runs as root.)
TEST_F(PoolHardening, ReaderInATimeNamespaceCannotHangTheOthers) {
  {
    auto pool = create();
    write_model(*pool, "m", 1);
  }
  auto read_once = [&] {
    EmulatorOptions o;
    o.link = link_preset("cxl-x8");
    o.check_host_rate = false;
    auto pool = Pool::attach(std::make_unique<CxlEmulator>(open_backend(uri_), o));
    const TensorInfo t = pool->model("m")->tensors()[0];
    std::vector<std::byte> dst(t.size_bytes);
    return pool->read(t, 0, dst) == ReadStatus::kOk ? 0 : 3;
  };
  const pid_t shifted = test::spawn([&] {
    if (::unshare(CLONE_NEWTIME) != 0) return 10;
    {
      std::ofstream offsets("/proc/self/timens_offsets");
      offsets << "monotonic 600 0\n";
      if (!offsets.flush()) return 11;
    }
    const pid_t inner = test::spawn(read_once);  // children enter the namespace
    return test::wait_exit(inner);
  });
  ASSERT_EQ(test::wait_exit(shifted), 0)
      << "10/11: no time namespace could be made (CI runs as root)";
  const pid_t host = test::spawn([&] {
    ::alarm(30);
    return read_once();
  });
  EXPECT_EQ(test::wait_exit(host), 0)
      << "128 + SIGALRM: the host reader waited for the shifted clock";
  EXPECT_GE(link_field(attach()->link_state().clock_clamps_total).load(), 1u);
}

// --- 10: a holder in another PID namespace is alive until proven dead --------------------
// The real thing: a worker in a PID namespace (pid 1 there) holds the model; from here
// it must count as alive. (Needs CAP_SYS_ADMIN, which the project's CI has: it runs as root.)
TEST_F(PoolHardening, WorkerInAPidNamespaceHoldsItsModel) {
  auto writer = create();
  write_model(*writer, "m", 1);
  test::Signal attached, done;
  const pid_t outer = test::spawn([&] {
    if (::unshare(CLONE_NEWPID) != 0) return 10;
    const pid_t inner = test::spawn([&] {
      if (::getpid() != 1) return 12;
      auto pool = attach();
      auto view = pool->model("m");
      attached.notify();
      done.wait();
      return 0;
    });
    return test::wait_exit(inner);
  });
  ASSERT_TRUE(attached.wait());
  const std::string what = expect_throw([&] { writer->remove_model("m"); });
  EXPECT_NE(what.find("in use"), std::string::npos) << what;
  EXPECT_NE(expect_throw([&] { remove_pool(uri_); }).find("another PID namespace"),
            std::string::npos);
  done.notify();
  EXPECT_EQ(test::wait_exit(outer), 0) << "10: no PID namespace could be made (CI runs as root)";
  EXPECT_NO_THROW(writer->remove_model("m"));  // once it is gone, its slot is free again
}

TEST_F(PoolHardening, HolderFromAnotherPidNamespaceCountsAsAlive) {
  const pid_t dead = test::spawn([] { return 0; });
  test::wait_exit(dead);
  const std::uint32_t other_ns = pid_namespace_inode() + 1;
  ASSERT_NE(pid_namespace_inode(), 0u);
  EXPECT_TRUE(process_alive(1, 0, other_ns));
  EXPECT_TRUE(process_alive(dead, 0, other_ns));
  EXPECT_FALSE(process_alive(dead, 0, pid_namespace_inode()));

  auto writer = create();
  layout_ = writer->layout();
  write_model(*writer, "m", 1);
  const std::uint32_t slot = writer->model("m")->slot();
  // A worker in a PID namespace: pid 1 there (or a pid that happens to be dead here).
  for (const std::int32_t pid : {1, static_cast<std::int32_t>(dead)}) {
    pf::AttachSlot s{};
    s.pid = pid;
    s.pid_ns = other_ns;
    s.models_in_use = std::uint64_t{1} << slot;
    poke(layout_.control_offset + offsetof(pf::Control, slots) +
             (pf::kAttachSlots - 1) * sizeof(pf::AttachSlot),
         &s, sizeof s);
    EXPECT_NE(expect_throw([&] { writer->remove_model("m"); }).find("in use"), std::string::npos)
        << pid;
    EXPECT_NE(expect_throw([&] { remove_pool(uri_); }).find("another PID namespace"),
              std::string::npos)
        << pid;
  }
  // A loader in another namespace whose pid is dead here: not reclaimed under it.
  auto loading = writer->begin_model("loading");
  const std::uint64_t rec = layout_.models_offset + 1 * sizeof(pf::ModelRecord);
  ASSERT_EQ(peek<std::uint64_t>(rec + offsetof(pf::ModelRecord, state)),
            std::uint64_t{pf::kModelLoading});
  const std::int32_t dead_pid = dead;
  poke(rec + offsetof(pf::ModelRecord, owner_pid), &dead_pid, 4);
  poke(rec + offsetof(pf::ModelRecord, owner_pid_ns), &other_ns, 4);
  auto second = attach(PoolRole::kWriter);
  EXPECT_EQ(second->reclaim_abandoned(), 0u);
  EXPECT_NE(expect_throw([&] { second->remove_model("loading"); }).find("live process"),
            std::string::npos);
}

// --- 11: a loader whose model was force-removed is fenced ---------------------------------

TEST_F(PoolHardening, ForceRemovedLoaderIsFencedAndNeverWritesIntoOthers) {
  auto stale = create();
  write_model(*stale, "other", 2, 9);
  auto w = stale->begin_model("m");
  const std::uint64_t shape[] = {4096};
  std::span<std::byte> held = w.add_tensor("t0", DType::kF32, shape);

  auto admin = attach(PoolRole::kWriter);
  admin->remove_model("m", /*force=*/true);
  bool fenced = false;
  for (const auto& e : admin->list_models())
    fenced = fenced || (e.name == "m" && e.state == "fenced");
  EXPECT_TRUE(fenced);
  // While fenced, the stale loader's extents stay reserved: a new load never gets them.
  write_model(*admin, "n", 4, 33);
  fill(held, 0xee);  // the stale loader keeps writing what it was handed
  EXPECT_TRUE(model_intact(*admin, "n"));
  EXPECT_TRUE(model_intact(*admin, "other"));
  // Its next write finds the record lost: it stops and frees what it held.
  const std::string what = expect_throw([&] { w.add_tensor("t1", DType::kF32, shape); });
  EXPECT_NE(what.find("loading stopped"), std::string::npos) << what;
  EXPECT_THROW(w.seal(), PoolError);
  // The name is free again and the pool is fully usable.
  write_model(*admin, "m", 2, 44);
  EXPECT_TRUE(model_intact(*admin, "m"));
  EXPECT_TRUE(model_intact(*admin, "n"));
}

TEST_F(PoolHardening, LoaderOfAReclaimedRecordCannotSealIntoItsSuccessor) {
  auto stale = create();
  auto w = stale->begin_model("m");
  const std::uint64_t shape[] = {1024};
  w.add_tensor("t0", DType::kF32, shape);
  auto admin = attach(PoolRole::kWriter);
  admin->remove_model("m", true);  // fenced
  // The stale loader notices at seal time and frees; a new loader then takes slot and name.
  EXPECT_THROW(w.seal(), PoolError);
  write_model(*admin, "m", 1, 5);
  EXPECT_TRUE(model_intact(*admin, "m"));
}

// --- 12: a lock held by a stopped process times out, naming it --------------------------

TEST_F(PoolHardening, LockHeldByAStoppedProcessTimesOutNamingIt) {
  {
    auto pool = create();
    layout_ = pool->layout();
    write_model(*pool, "m", 1);
  }
  test::Signal locked;
  const pid_t child = test::spawn([&] {
    const int fd = ::open(path_.c_str(), O_RDWR);
    void* p = ::mmap(nullptr, layout_.control_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd,
                     static_cast<off_t>(layout_.control_offset));
    auto* control = static_cast<pf::Control*>(p);
    if (pthread_mutex_lock(&control->mutex) != 0) return 1;
    locked.notify();
    ::raise(SIGSTOP);
    return 0;
  });
  ASSERT_TRUE(locked.wait());
  const std::uint64_t saved = pool_lock_timeout_ms();
  set_pool_lock_timeout_ms(300);
  const std::string what = expect_throw([&] { attach(PoolRole::kWriter); });
  EXPECT_NE(what.find("timed out"), std::string::npos) << what;
  EXPECT_NE(what.find(fmt::format("pid {} (stopped)", child)), std::string::npos) << what;
  ::kill(child, SIGKILL);
  test::wait_exit(child);
  // The robust mutex hands the lock on once its holder is dead.
  auto writer = attach(PoolRole::kWriter);
  EXPECT_NO_THROW(write_model(*writer, "n", 1, 3));
  EXPECT_TRUE(model_intact(*writer, "m"));
  set_pool_lock_timeout_ms(saved);
}

}  // namespace
}  // namespace xlshare
