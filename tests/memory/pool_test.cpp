// Pool: create / seal / attach round trips, several models, removal, and attach refusals.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "memory/pool_layout.hpp"
#include "support/test_support.hpp"
#include "xlshare/error.hpp"
#include "xlshare/memory/backend_uri.hpp"
#include "xlshare/memory/checksum.hpp"
#include "xlshare/memory/pool.hpp"

namespace xlshare {
namespace {

namespace pf = pool_format;
constexpr std::uint64_t kPoolBytes = 16u << 20;
const PoolOptions kSmall{.max_models = 4, .max_tensors = 64, .data_alignment = 4096};

// Fills a tensor with a pattern derived from its name, so each tensor's bytes differ.
void fill(std::span<std::byte> bytes, std::uint64_t seed) {
  for (std::size_t i = 0; i < bytes.size(); ++i) bytes[i] = std::byte((i * 131 + seed * 17) & 0xff);
}

void write_model(Pool& pool, const std::string& name, int tensors, std::uint64_t elems = 1000) {
  auto w = pool.begin_model(name);
  for (int i = 0; i < tensors; ++i) {
    const std::uint64_t shape[] = {elems, 2};
    fill(w.add_tensor(fmt::format("t{}", i), DType::kF32, shape), static_cast<std::uint64_t>(i));
  }
  w.set_metadata(R"({"kind":"test"})");
  w.seal();
}

class PoolTest : public ::testing::Test {
 protected:
  // A file-backed pool, so tests can corrupt and truncate it like a disk image.
  PoolTest()
      : path_((std::filesystem::temp_directory_path() / test::unique_name("pool")).string()),
        uri_("file://" + path_),
        guard_(uri_) {}
  std::unique_ptr<Pool> create() { return Pool::create(create_backend(uri_, kPoolBytes), kSmall); }
  std::unique_ptr<Pool> attach(PoolRole role = PoolRole::kReader) {
    return Pool::attach(open_backend(uri_), role);
  }
  // Overwrites bytes of the pool file.
  void poke(std::uint64_t offset, const void* bytes, std::size_t n) {
    std::fstream f(path_, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(offset));
    f.write(static_cast<const char*>(bytes), static_cast<std::streamsize>(n));
  }
  pf::Header read_header() {
    pf::Header h;
    std::ifstream f(path_, std::ios::binary);
    f.read(reinterpret_cast<char*>(&h), sizeof h);
    return h;
  }
  void expect_attach_refused(std::string_view problem) {
    try {
      attach();
      ADD_FAILURE() << "attach succeeded; expected: " << problem;
    } catch (const PoolError& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find(uri_), std::string::npos) << what;
      EXPECT_NE(what.find(problem), std::string::npos) << what;
    }
  }
  // A corrupted model is quarantined: the pool attaches, the model is refused by name with
  // `problem`, and it is listed as corrupted.
  void expect_model_refused(std::string_view model, std::string_view problem) {
    auto pool = attach();
    try {
      pool->model(model);
      ADD_FAILURE() << "model() succeeded; expected: " << problem;
    } catch (const PoolError& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find(uri_), std::string::npos) << what;
      EXPECT_NE(what.find(problem), std::string::npos) << what;
    }
    bool listed = false;
    for (const auto& m : pool->list_models())
      listed = listed || (m.name == model && m.state == "corrupted");
    EXPECT_TRUE(listed);
  }
  std::string path_, uri_;
  test::BackendGuard guard_;
};

TEST_F(PoolTest, CreateSealAttachRoundTrip) {
  {
    auto pool = create();
    write_model(*pool, "alpha", 3);
  }
  auto pool = attach();
  EXPECT_EQ(pool->model_names(), std::vector<std::string>{"alpha"});
  auto m = pool->model("alpha");
  ASSERT_EQ(m->tensors().size(), 3u);
  EXPECT_EQ(m->metadata(), R"({"kind":"test"})");
  for (int i = 0; i < 3; ++i) {
    const TensorInfo& t = m->at(fmt::format("t{}", i));
    EXPECT_EQ(t.dtype, DType::kF32);
    EXPECT_EQ(t.n_dims, 2u);
    EXPECT_EQ(t.shape[0], 1000u);
    EXPECT_EQ(t.shape[1], 2u);
    EXPECT_EQ(t.size_bytes, 8000u);
    EXPECT_EQ(t.offset_bytes % 4096, 0u);
    std::vector<std::byte> expect(t.size_bytes), got(t.size_bytes);
    fill(expect, static_cast<std::uint64_t>(i));
    ASSERT_EQ(pool->read(t, 0, got), ReadStatus::kOk);
    EXPECT_EQ(got, expect);
    EXPECT_TRUE(std::equal(expect.begin(), expect.end(), pool->view(t).begin()));
    EXPECT_TRUE(pool->verify(t));
    EXPECT_EQ(t.checksum, checksum64(expect));
  }
  const TensorInfo t1 = pool->find_tensor("alpha/t1");
  EXPECT_EQ(t1.name, "t1");
  std::vector<std::byte> tail(10);
  EXPECT_EQ(pool->read(t1, 7990, tail), ReadStatus::kOk);
  EXPECT_EQ(pool->read(t1, 7995, tail), ReadStatus::kOutOfRange);
  EXPECT_THROW(pool->find_tensor("alpha/nope"), PoolError);
  EXPECT_THROW(pool->find_tensor("nomodel"), PoolError);
}

TEST_F(PoolTest, SeveralModelsAndRemovalFreesExtents) {
  auto pool = create();
  const auto empty = pool->stats().extents;
  write_model(*pool, "a", 4);
  write_model(*pool, "b", 2, 50000);
  write_model(*pool, "c", 1);
  EXPECT_EQ(pool->stats().models_sealed, 3u);
  EXPECT_EQ(pool->stats().tensors, 7u);
  pool->remove_model("b");
  EXPECT_EQ(pool->model_names(), (std::vector<std::string>{"a", "c"}));
  EXPECT_THROW(pool->model("b"), PoolError);
  write_model(*pool, "b", 2, 50000);  // the name and the space are free again
  pool->remove_model("a");
  pool->remove_model("b");
  pool->remove_model("c");
  const auto after = pool->stats().extents;
  EXPECT_EQ(after.bytes_used, 0u);
  EXPECT_EQ(after.bytes_free, empty.bytes_free);
  EXPECT_EQ(after.free_extents, 1u);
  EXPECT_THROW(pool->remove_model("a"), PoolError);
}

TEST_F(PoolTest, ABusyModelIsNotRemoved) {
  auto writer = create();
  write_model(*writer, "m", 1);
  const pid_t child_pid = [&] {
    test::Signal ready, done;
    const pid_t pid = test::spawn([&] {
      auto reader = attach();
      auto m = reader->model("m");
      ready.notify();
      done.wait();
      return 0;
    });
    ready.wait();
    try {
      writer->remove_model("m");
      ADD_FAILURE() << "removed a model in use";
    } catch (const PoolError& e) {
      EXPECT_NE(std::string(e.what()).find("in use"), std::string::npos) << e.what();
    }
    done.notify();
    EXPECT_EQ(test::wait_exit(pid), 0);
    return pid;
  }();
  (void)child_pid;
  EXPECT_NO_THROW(writer->remove_model("m"));  // its user is gone
}

TEST_F(PoolTest, ModelNamesAndTensorShapesAreValidated) {
  auto pool = create();
  EXPECT_THROW(pool->begin_model("a/b"), ConfigError);
  EXPECT_THROW(pool->begin_model(""), ConfigError);
  EXPECT_THROW(pool->begin_model(std::string(64, 'x')), ConfigError);
  auto w = pool->begin_model("m");
  const std::uint64_t ok[] = {4, 4};
  const std::uint64_t zero[] = {4, 0};
  const std::uint64_t five[] = {1, 1, 1, 1, 1};
  const std::uint64_t q8_odd[] = {33};
  const std::uint64_t huge[] = {1ull << 30, 1ull << 10};  // 4 TiB of f32
  const std::uint64_t overflow[] = {1ull << 40, 1ull << 30};
  EXPECT_THROW(w.add_tensor("z", DType::kF32, zero), ConfigError);
  EXPECT_THROW(w.add_tensor("f", DType::kF32, five), ConfigError);
  EXPECT_THROW(w.add_tensor("q", DType::kQ8_0, q8_odd), ConfigError);
  EXPECT_THROW(w.add_tensor("has space", DType::kF32, ok), ConfigError);
  EXPECT_THROW(w.add_tensor("huge", DType::kF32, huge), OutOfMemory);
  EXPECT_THROW(w.add_tensor("overflow", DType::kF32, overflow), ConfigError);
  w.add_tensor("t", DType::kF32, ok);
  EXPECT_THROW(w.add_tensor("t", DType::kF32, ok), ConfigError);
  EXPECT_THROW(pool->begin_model("m"), PoolError);  // being loaded
}

TEST_F(PoolTest, AReaderCannotChangeTheCatalog) {
  {
    auto pool = create();
    write_model(*pool, "m", 1);
  }
  auto reader = attach(PoolRole::kReader);
  EXPECT_THROW(reader->begin_model("n"), PoolError);
  EXPECT_THROW(reader->remove_model("m"), PoolError);
}

TEST_F(PoolTest, AnAbandonedWriterLeavesNothing) {
  auto pool = create();
  const auto before = pool->stats().extents;
  {
    auto w = pool->begin_model("half");
    const std::uint64_t shape[] = {1u << 16};
    w.add_tensor("t", DType::kF32, shape);
  }
  EXPECT_TRUE(pool->list_models().empty());
  EXPECT_EQ(pool->stats().extents.bytes_free, before.bytes_free);
}

// --- refusals -------------------------------------------------------------------------

TEST_F(PoolTest, RefusesBadMagic) {
  { auto pool = create(); }
  poke(0, "NOTAPOOL", 8);
  expect_attach_refused("bad magic");
}

TEST_F(PoolTest, RefusesABlankHeader) {
  { auto b = create_backend(uri_, kPoolBytes); }
  expect_attach_refused("bad magic");
}

TEST_F(PoolTest, RefusesACorruptedHeader) {
  { auto pool = create(); }
  const auto h = read_header();
  const std::uint64_t wrong = h.data_offset + 4096;
  poke(offsetof(pf::Header, data_offset), &wrong, sizeof wrong);
  expect_attach_refused("header is corrupted");
}

TEST_F(PoolTest, RefusesAnotherFormatVersion) {
  { auto pool = create(); }
  auto h = read_header();
  h.version = 99;
  h.header_checksum = checksum64(&h, offsetof(pf::Header, header_checksum));
  poke(0, &h, sizeof h);
  expect_attach_refused("format version 99");
}

TEST_F(PoolTest, AnOlderFormatIsRefusedButRemovableWithForce) {
  { auto pool = create(); }
  auto h = read_header();
  h.version = Pool::kFormatVersion - 1;
  h.header_checksum = checksum64(&h, offsetof(pf::Header, header_checksum));
  poke(0, &h, sizeof h);
  expect_attach_refused("an older xlshare's");
  try {
    remove_pool(uri_);
    ADD_FAILURE() << "removed without --force";
  } catch (const PoolError& e) {
    EXPECT_NE(std::string(e.what()).find("--force"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(backend_exists(uri_));
  remove_pool(uri_, /*force=*/true);  // ours (the magic says so), unlike version 99 above
  EXPECT_FALSE(backend_exists(uri_));
}

TEST_F(PoolTest, RefusesATruncatedBackingFile) {
  {
    auto pool = create();
    write_model(*pool, "m", 2);
  }
  std::filesystem::resize_file(path_, kPoolBytes / 2);
  expect_attach_refused("truncated");
}

TEST_F(PoolTest, RefusesAnUnsealedPool) {
  { auto pool = create(); }
  const std::uint64_t creating = pf::kPoolCreating;
  poke(offsetof(pf::Header, state), &creating, sizeof creating);
  expect_attach_refused("unsealed");
}

TEST_F(PoolTest, RefusesACorruptedCatalog) {
  std::uint64_t record_offset = 0;
  {
    auto pool = create();
    write_model(*pool, "m", 3);
    auto m = pool->model("m");
    record_offset = pool->layout().tensors_offset + m->at("t1").id * sizeof(pf::TensorRecord);
  }
  // Point tensor t1 somewhere else without fixing its record checksum.
  const std::uint64_t elsewhere = 8192;
  poke(record_offset + offsetof(pf::TensorRecord, offset_bytes), &elsewhere, sizeof elsewhere);
  expect_model_refused("m", "corrupted catalog");
}

TEST_F(PoolTest, RefusesACatalogThatLiesConsistently) {
  // A record whose checksum was recomputed but whose extent leaves the data area.
  std::uint64_t record_offset = 0;
  {
    auto pool = create();
    write_model(*pool, "m", 1);
    record_offset =
        pool->layout().tensors_offset + pool->model("m")->at("t0").id * sizeof(pf::TensorRecord);
  }
  pf::TensorRecord r;
  {
    std::ifstream f(path_, std::ios::binary);
    f.seekg(static_cast<std::streamoff>(record_offset));
    f.read(reinterpret_cast<char*>(&r), sizeof r);
  }
  r.offset_bytes = kPoolBytes - 4096;
  r.record_checksum =
      checksum64(reinterpret_cast<const std::byte*>(&r) + offsetof(pf::TensorRecord, name),
                 offsetof(pf::TensorRecord, record_checksum) - offsetof(pf::TensorRecord, name));
  poke(record_offset, &r, sizeof r);
  expect_model_refused("m", "outside the data area");
}

TEST_F(PoolTest, RefusesATileTableThatFailsItsChecksum) {
  std::uint64_t tiles_offset = 0;
  {
    auto pool = create();
    write_model(*pool, "m", 2);
    const auto m = pool->model("m");
    ASSERT_EQ(m->at("t0").tile_checksums().size(), 1u);
    const std::uint64_t record = pool->layout().models_offset + m->slot() * sizeof(pf::ModelRecord);
    std::ifstream f(path_, std::ios::binary);
    f.seekg(static_cast<std::streamoff>(record + offsetof(pf::ModelRecord, tiles_offset)));
    f.read(reinterpret_cast<char*>(&tiles_offset), sizeof tiles_offset);
  }
  ASSERT_GT(tiles_offset, 0u);
  const std::uint64_t wrong = 0x1234;
  poke(tiles_offset, &wrong, sizeof wrong);
  expect_model_refused("m", "tile table fails its checksum");
}

TEST_F(PoolTest, SaysWhichPageSizeItsMappingGot) {
  auto pool = create();
  write_model(*pool, "m", 2);
  const auto plain = pool->stats();
  EXPECT_EQ(plain.page_bytes, 0u) << "smaps is read only on request";
  const auto s = pool->stats(true);
  EXPECT_EQ(s.page_bytes % 4096, 0u);
  EXPECT_GE(s.page_bytes, 4096u);
  EXPECT_LE(s.huge_mapped_bytes, s.pool_bytes);
  EXPECT_NE(s.to_json().find("\"page_bytes\""), std::string::npos);
}

TEST_F(PoolTest, RefusesAnUnsealedModelByName) {
  auto pool = create();
  auto w = pool->begin_model("loading");
  const std::uint64_t shape[] = {16};
  w.add_tensor("t", DType::kF32, shape);
  auto reader = attach();  // the pool itself is fine
  EXPECT_TRUE(reader->model_names().empty());
  try {
    reader->model("loading");
    FAIL();
  } catch (const PoolError& e) {
    EXPECT_NE(std::string(e.what()).find("unsealed"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("loading"), std::string::npos) << e.what();
  }
}

TEST_F(PoolTest, ALoaderThatDiesBeforeSealingIsRefusedAndReclaimed) {
  auto pool = create();
  const auto before = pool->stats().extents;
  const pid_t pid = test::spawn([&] {
    auto writer = attach(PoolRole::kWriter);
    auto w = writer->begin_model("crashed");
    const std::uint64_t shape[] = {100000};
    w.add_tensor("t", DType::kF32, shape);
    ::_exit(3);  // dies without sealing or abandoning
    return 0;
  });
  EXPECT_EQ(test::wait_exit(pid), 3);
  auto entries = pool->list_models();
  ASSERT_EQ(entries.size(), 1u);
  EXPECT_EQ(entries[0].state, "loading");
  EXPECT_FALSE(entries[0].owner_alive);
  try {
    attach()->model("crashed");
    FAIL();
  } catch (const PoolError& e) {
    EXPECT_NE(std::string(e.what()).find("died"), std::string::npos) << e.what();
  }
  EXPECT_EQ(pool->reclaim_abandoned(), 1u);
  EXPECT_TRUE(pool->list_models().empty());
  EXPECT_EQ(pool->stats().extents.bytes_free, before.bytes_free);
}

TEST_F(PoolTest, ALoaderKilledHoldingTheLockIsRecovered) {
  auto pool = create();
  write_model(*pool, "kept", 2);
  const auto used = pool->stats().extents.bytes_used;
  const pid_t pid = test::spawn([&] {
    // Take the robust mutex through a mapping of the control region, and die holding it.
    auto backend = open_backend(uri_);
    const auto lay = pool->layout();
    Mapping control_map = backend->map(lay.control_offset, lay.control_bytes, Access::kReadWrite);
    auto* control = reinterpret_cast<pf::Control*>(control_map.data());
    pthread_mutex_lock(&control->mutex);
    ::_exit(0);
    return 0;
  });
  EXPECT_EQ(test::wait_exit(pid), 0);
  write_model(*pool, "next", 1);  // takes the lock: EOWNERDEAD, recovers, goes on
  EXPECT_EQ(pool->model_names(), (std::vector<std::string>{"kept", "next"}));
  EXPECT_GT(pool->stats().extents.bytes_used, used);
  const auto kept = pool->model("kept");
  for (const auto& t : kept->tensors()) EXPECT_TRUE(pool->verify(t));
}

TEST(PoolCreate, RefusesABackendTooSmallForItsCatalog) {
  const std::string uri = "shm://" + test::unique_name("small");
  test::BackendGuard guard(uri);
  try {
    Pool::create(create_backend(uri, 64 * 1024),
                 PoolOptions{.max_models = 16, .max_tensors = 4096});
    FAIL();
  } catch (const PoolError& e) {
    EXPECT_NE(std::string(e.what()).find("too small"), std::string::npos) << e.what();
  }
}

TEST(PoolCreate, StatsHaveAJsonForm) {
  const std::string uri = "shm://" + test::unique_name("json");
  test::BackendGuard guard(uri);
  auto pool = Pool::create(create_backend(uri, 8u << 20), kSmall);
  const std::string j = pool->stats().to_json();
  EXPECT_NE(j.find("\"largest_free_extent\""), std::string::npos);
  EXPECT_NE(j.find(uri), std::string::npos);
}

}  // namespace
}  // namespace xlshare
