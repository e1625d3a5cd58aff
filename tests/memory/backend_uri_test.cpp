#include <gtest/gtest.h>

#include "support/test_support.hpp"
#include "xlshare/error.hpp"
#include "xlshare/memory/backend_uri.hpp"
#include "xlshare/memory/pool.hpp"

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

// A scheme whose objects are shared memory objects, counting the calls that reach it.
struct Calls {
  int create = 0, open = 0, exists = 0, remove = 0;
};
BackendScheme shm_scheme(Calls& calls, bool with_remove = true) {
  BackendScheme s;
  s.create = [&calls](const BackendUri& u, std::uint64_t bytes, const BackendOptions& o) {
    ++calls.create;
    return create_backend("shm://" + u.target, bytes, o);
  };
  s.open = [&calls](const BackendUri& u, const BackendOptions& o) {
    ++calls.open;
    return open_backend("shm://" + u.target, o);
  };
  s.exists = [&calls](const BackendUri& u) {
    ++calls.exists;
    return backend_exists("shm://" + u.target);
  };
  if (with_remove) {
    s.remove = [&calls](const BackendUri& u) {
      ++calls.remove;
      remove_backend("shm://" + u.target);
    };
  }
  return s;
}

TEST(BackendSchemes, ARegisteredSchemeIsReachedByEveryUriFunction) {
  Calls calls;
  register_backend_scheme("test-a", shm_scheme(calls));
  const std::string name = test::unique_name("scheme");
  const std::string uri = "test-a://" + name;
  test::BackendGuard guard("shm://" + name);
  const BackendUri u = parse_backend_uri(uri);
  EXPECT_EQ(u.scheme, BackendUri::Scheme::kRegistered);
  EXPECT_EQ(u.scheme_name, "test-a");
  EXPECT_EQ(u.target, name);
  EXPECT_FALSE(backend_exists(uri));
  {
    auto pool = create_pool(uri, 4u << 20);  // create_pool goes through the scheme too
    EXPECT_EQ(pool->uri(), "shm://" + name);
  }
  EXPECT_TRUE(backend_exists(uri));
  EXPECT_NO_THROW(Pool::attach(open_backend(uri)));
  remove_pool(uri);
  EXPECT_FALSE(backend_exists(uri));
  EXPECT_EQ(calls.create, 1);
  EXPECT_GE(calls.open, 2);
  EXPECT_GE(calls.exists, 2);
  EXPECT_EQ(calls.remove, 1);
  EXPECT_TRUE(unregister_backend_scheme("test-a"));
  EXPECT_FALSE(unregister_backend_scheme("test-a"));
  EXPECT_THROW(parse_backend_uri(uri), ConfigError);
}

TEST(BackendSchemes, RefusesBadRegistrationsAndTargets) {
  Calls calls;
  for (const char* bad : {"", "Shm", "1abc", "a b", "a/b", "abcdefghijklmnopqrstuvwxyz0123456"}) {
    EXPECT_THROW(register_backend_scheme(bad, shm_scheme(calls)), ConfigError) << bad;
  }
  for (const char* builtin : {"shm", "dax", "file", "numa"}) {
    EXPECT_THROW(register_backend_scheme(builtin, shm_scheme(calls)), ConfigError) << builtin;
  }
  BackendScheme no_open = shm_scheme(calls);
  no_open.open = nullptr;
  EXPECT_THROW(register_backend_scheme("test-b", std::move(no_open)), ConfigError);
  register_backend_scheme("test-b", shm_scheme(calls, false));
  EXPECT_THROW(register_backend_scheme("test-b", shm_scheme(calls)), ConfigError);
  // The names of registered schemes are offered for an unknown one.
  try {
    parse_backend_uri("nosuch://x");
    ADD_FAILURE() << "accepted nosuch://x";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("test-b"), std::string::npos) << e.what();
  }
  for (const std::string& bad : {std::string("test-b://"), std::string("test-b://a\nb"),
                                 "test-b://" + std::string(4097, 'x')}) {
    EXPECT_THROW(parse_backend_uri(bad), ConfigError) << bad;
  }
  // Without `remove`, removal is a clear refusal.
  EXPECT_THROW(remove_backend("test-b://anything"), BackendError);
  EXPECT_EQ(calls.remove, 0);
  EXPECT_TRUE(unregister_backend_scheme("test-b"));
}

}  // namespace
}  // namespace xlshare
