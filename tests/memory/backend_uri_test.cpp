#include <gtest/gtest.h>

#include "xlshare/error.hpp"
#include "xlshare/memory/backend_uri.hpp"

namespace xlshare {
namespace {

TEST(BackendUri, ParsesEveryScheme) {
  auto shm = parse_backend_uri("shm://weights");
  EXPECT_EQ(shm.scheme, BackendUri::Scheme::kShm);
  EXPECT_EQ(shm.target, "weights");
  auto dax = parse_backend_uri("dax:///dev/dax0.0");
  EXPECT_EQ(dax.scheme, BackendUri::Scheme::kDax);
  EXPECT_EQ(dax.target, "/dev/dax0.0");
  auto file = parse_backend_uri("file:///mnt/pmem/pool");
  EXPECT_EQ(file.scheme, BackendUri::Scheme::kFile);
  EXPECT_EQ(file.target, "/mnt/pmem/pool");
  auto numa = parse_backend_uri("numa://2/weights");
  EXPECT_EQ(numa.scheme, BackendUri::Scheme::kNuma);
  EXPECT_EQ(numa.numa_node, 2);
  EXPECT_EQ(numa.target, "weights");
  EXPECT_EQ(numa.text, "numa://2/weights");
}

TEST(BackendUri, RejectsMalformedUris) {
  for (const char* bad :
       {"", "weights", "http://x", "shm://", "shm://a/b", "shm://..", "file://relative/path",
        "file:///a/../etc/passwd", "dax://dev/dax0.0", "numa://x/name", "numa://-1/name",
        "numa://2", "numa://2/", "numa://99999999999/n", "shm://a b"}) {
    try {
      parse_backend_uri(bad);
      ADD_FAILURE() << "accepted '" << bad << "'";
    } catch (const ConfigError& e) {
      EXPECT_NE(std::string(e.what()).find(bad), std::string::npos) << e.what();
    }
  }
}

}  // namespace
}  // namespace xlshare
