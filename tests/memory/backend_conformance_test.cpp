// The installed MemoryBackend conformance suite for every built-in backend and the
// emulator, what is particular to the built-in ones, and the devdax path against a fake
// sysfs.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstring>
#include <fstream>
#include <numeric>
#include <vector>

#include "support/test_support.hpp"
#include "xlshare/error.hpp"
#include "xlshare/memory/backend_uri.hpp"
#include "xlshare/memory/cxl_emulator.hpp"
#include "xlshare/memory/dax_backend.hpp"
#include "xlshare/memory/numa_backend.hpp"
#include "xlshare/memory/shared_memory_backend.hpp"
#include "xlshare/testing/memory_backend_conformance.hpp"

namespace xlshare {
namespace {

struct ShmKind {
  static std::string make_uri() { return "shm://" + test::unique_name("conf"); }
  static std::string path_of(const std::string& uri) { return "/dev/shm/" + uri.substr(6); }
};
struct FileKind {
  static std::string make_uri() {
    return "file://" +
           (std::filesystem::temp_directory_path() / test::unique_name("conf")).string();
  }
  static std::string path_of(const std::string& uri) { return uri.substr(7); }
};
struct NumaKind {
  static std::string make_uri() { return "numa://0/" + test::unique_name("conf"); }
  static std::string path_of(const std::string& uri) { return "/dev/shm/" + uri.substr(9); }
};

// The installed suite (xlshare/testing/memory_backend_conformance.hpp), for every built-in
// backend and for the CxlEmulator decorator, reached through a registered scheme.
using namespace xlshare::conformance;
using BuiltinKinds = ::testing::Types<ShmKind, FileKind, NumaKind>;
INSTANTIATE_TYPED_TEST_SUITE_P(Builtin, MemoryBackendConformance, BuiltinKinds);

// "cxl-emulated://NAME": shared memory NAME behind a CxlEmulator with an unpaced link.
struct EmulatedKind {
  static std::string make_uri() {
    static const bool registered = [] {
      BackendScheme scheme;
      const auto wrap = [](std::unique_ptr<MemoryBackend> inner) {
        EmulatorOptions o;
        o.link = link_preset("none");
        o.check_host_rate = false;
        return std::unique_ptr<MemoryBackend>(
            std::make_unique<CxlEmulator>(std::move(inner), std::move(o)));
      };
      scheme.create = [wrap](const BackendUri& u, std::uint64_t bytes, const BackendOptions& o) {
        return wrap(create_backend("shm://" + u.target, bytes, o));
      };
      scheme.open = [wrap](const BackendUri& u, const BackendOptions& o) {
        return wrap(open_backend("shm://" + u.target, o));
      };
      scheme.exists = [](const BackendUri& u) { return backend_exists("shm://" + u.target); };
      scheme.remove = [](const BackendUri& u) { remove_backend("shm://" + u.target); };
      register_backend_scheme("cxl-emulated", std::move(scheme));
      return true;
    }();
    (void)registered;
    return "cxl-emulated://" + test::unique_name("conf");
  }
};
INSTANTIATE_TYPED_TEST_SUITE_P(Emulator, MemoryBackendConformance, ::testing::Types<EmulatedKind>);

// What the installed suite cannot check for every backend: the files the built-in ones make.
template <typename Kind>
class BackendFiles : public ::testing::Test {
 protected:
  BackendFiles() : uri_(Kind::make_uri()), guard_(uri_) {}
  std::string uri_;
  test::BackendGuard guard_;
  static constexpr std::uint64_t kSize = 4u << 20;
};
TYPED_TEST_SUITE(BackendFiles, BuiltinKinds);

TYPED_TEST(BackendFiles, CreatorUsesMode0600) {
  auto b = create_backend(this->uri_, this->kSize);
  struct stat st {};
  ASSERT_EQ(::stat(TypeParam::path_of(this->uri_).c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_TRUE(b->is_host());
}

TYPED_TEST(BackendFiles, AWriteThroughAReadOnlyMappingFaults) {
  auto b = create_backend(this->uri_, this->kSize);
  Mapping r = b->map(0, b->alignment_bytes(), Access::kReadOnly);
  // "fast": the child only runs the statement, so it creates (and leaks) nothing.
  GTEST_FLAG_SET(death_test_style, "fast");
  EXPECT_DEATH({ *reinterpret_cast<volatile char*>(r.data()) = 1; }, "");
}

TEST(NumaBackend, BindsPagesToTheRequestedNode) {
  const std::string uri = "numa://0/" + test::unique_name("node");
  test::BackendGuard guard(uri);
  auto b = create_backend(uri, 1u << 20);
  auto* numa = dynamic_cast<NumaBackend*>(b.get());
  ASSERT_NE(numa, nullptr);
  EXPECT_EQ(numa->node(), 0);
  EXPECT_EQ(numa->node_of_page(0), 0);
  EXPECT_EQ(numa->node_of_page(512 * 1024), 0);
}

TEST(NumaBackend, AnAbsentNodeIsAClearError) {
  ASSERT_FALSE(NumaBackend::node_available(63));
  try {
    create_backend("numa://63/" + test::unique_name("absent"), 1u << 20);
    FAIL() << "no exception";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("63"), std::string::npos) << e.what();
  }
}

TEST(SharedMemoryBackend, ValidatesNames) {
  EXPECT_NO_THROW(SharedMemoryBackend::validate_name("pool-1.a_b"));
  for (const char* bad : {"", ".", "..", ".hidden", "a/b", "a..b/c", "sp ace", "tab\t"}) {
    EXPECT_THROW(SharedMemoryBackend::validate_name(bad), ConfigError) << bad;
  }
  EXPECT_THROW(SharedMemoryBackend::validate_name(std::string(201, 'a')), ConfigError);
  EXPECT_NO_THROW(SharedMemoryBackend::validate_name(std::string(200, 'a')));
}

// --- devdax through a fake sysfs -------------------------------------------------------

class FakeDevDax : public ::testing::Test {
 protected:
  void make(std::string_view size, std::string_view align, std::uint64_t file_bytes) {
    const auto dir = tmp_.path() / "sys/bus/dax/devices/dax7.0";
    std::filesystem::create_directories(dir);
    std::ofstream(dir / "size") << size << "\n";
    std::ofstream(dir / "align") << align << "\n";
    device_ = (tmp_.path() / "dax7.0").string();
    std::ofstream f(device_, std::ios::binary);
    f.seekp(static_cast<std::streamoff>(file_bytes) - 1);
    f.put('\0');
    options_.sysfs_root = (tmp_.path() / "sys").string();
    options_.allow_regular_file_as_devdax = true;
  }
  test::TempDir tmp_;
  std::string device_;
  BackendOptions options_;
};

TEST_F(FakeDevDax, ReadsSizeAndAlignFromSysfs) {
  make("8388608", "2097152", 8u << 20);
  auto b = DaxBackend::open_device(device_, options_);
  EXPECT_TRUE(b->is_devdax());
  EXPECT_EQ(b->size_bytes(), 8u << 20);
  EXPECT_EQ(b->alignment_bytes(), 2u << 20);
  EXPECT_EQ(b->uri(), "dax://" + device_);
  // Mappings must be whole 2 MiB units.
  EXPECT_THROW(b->map(4096, 2u << 20, Access::kReadOnly), BackendError);
  EXPECT_THROW(b->map(0, 4096, Access::kReadOnly), BackendError);
  Mapping m = b->map(2u << 20, 2u << 20, Access::kReadWrite);
  m.data()[5] = std::byte{42};
  std::byte out[1];
  ASSERT_EQ(b->read((2u << 20) + 5, out), ReadStatus::kOk);
  EXPECT_EQ(out[0], std::byte{42});
}

TEST_F(FakeDevDax, AcceptsHexAttributes) {
  make("0x800000", "0x200000", 8u << 20);
  EXPECT_EQ(read_devdax_geometry(options_.sysfs_root, "dax7.0").align_bytes, 2u << 20);
}

TEST_F(FakeDevDax, RefusesBadGeometryNamingTheFile) {
  const std::pair<const char*, const char*> cases[] = {
      {"8388608", "3000000"},  // not a power of two
      {"8388608", "512"},      // smaller than a page
      {"0", "2097152"},        // empty
      {"9000000", "2097152"},  // not a multiple
      {"lots", "2097152"},     // not a number
  };
  for (auto [size, align] : cases) {
    make(size, align, 8u << 20);
    try {
      DaxBackend::open_device(device_, options_);
      ADD_FAILURE() << size << " / " << align << " accepted";
    } catch (const BackendError& e) {
      EXPECT_NE(std::string(e.what()).find("dax7.0"), std::string::npos) << e.what();
    }
  }
}

TEST_F(FakeDevDax, MissingSysfsEntryIsAClearError) {
  make("8388608", "2097152", 8u << 20);
  options_.sysfs_root = (tmp_.path() / "nowhere").string();
  EXPECT_THROW(DaxBackend::open_device(device_, options_), BackendError);
}

TEST_F(FakeDevDax, ARegularFileIsRefusedUnlessAllowed) {
  make("8388608", "2097152", 8u << 20);
  options_.allow_regular_file_as_devdax = false;
  EXPECT_THROW(DaxBackend::open_device(device_, options_), BackendError);
}

TEST_F(FakeDevDax, AStandInSmallerThanSysfsSaysIsRefused) {
  make("8388608", "2097152", 4u << 20);
  EXPECT_THROW(DaxBackend::open_device(device_, options_), BackendError);
}

}  // namespace
}  // namespace xlshare
