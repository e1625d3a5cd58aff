#include "xlshare/remote/token.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>

#include "common/unique_fd.hpp"
#include "xlshare/error.hpp"

namespace xlshare {

std::string read_token_file(const std::string& path) {
  auto fail = [&](std::string_view problem) {
    return ConfigError(fmt::format("token file {}: {}", path, problem));
  };
  if (path.empty()) throw ConfigError("token file: the path is empty");
  detail::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK));
  if (!fd) throw fail(errno_message("cannot open", errno));
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) throw fail(errno_message("cannot stat", errno));
  if (!S_ISREG(st.st_mode)) throw fail("not a regular file");
  if (st.st_uid != ::geteuid()) {
    throw fail(fmt::format("owned by uid {}, not by this user (uid {})", st.st_uid, ::geteuid()));
  }
  if ((st.st_mode & 077) != 0) {
    throw fail(fmt::format("mode {:04o} lets others read it; chmod 600 it", st.st_mode & 07777));
  }
  if (st.st_size > static_cast<off_t>(kMaxSecretBytes + 1)) {
    throw fail(fmt::format("{} bytes; a token is {}..{} bytes", st.st_size, kMinSecretBytes,
                           kMaxSecretBytes));
  }
  std::string token(kMaxSecretBytes + 2, '\0');
  std::size_t got = 0;
  while (got < token.size()) {
    const ssize_t n = ::read(fd.get(), token.data() + got, token.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw fail(errno_message("cannot read", errno));
    if (n == 0) break;
    got += static_cast<std::size_t>(n);
  }
  token.resize(got);
  if (!token.empty() && token.back() == '\n') token.pop_back();
  if (!token.empty() && token.back() == '\r') token.pop_back();
  if (token.size() < kMinSecretBytes || token.size() > kMaxSecretBytes) {
    throw fail(fmt::format("{} bytes; a token is {}..{} bytes", token.size(), kMinSecretBytes,
                           kMaxSecretBytes));
  }
  for (char c : token) {
    if (c < 0x21 || c > 0x7e) throw fail("holds a byte that is not printable ASCII");
  }
  return token;
}

std::string token_file_or_default(const std::string& path) {
  if (!path.empty()) return path;
  if (const char* env = std::getenv("XLSHARE_TOKEN_FILE"); env != nullptr && *env != '\0') {
    return env;
  }
  throw ConfigError(
      "a remote pool needs a token: pass --token-file FILE or set XLSHARE_TOKEN_FILE");
}

bool tokens_equal(std::string_view expected, std::string_view presented) noexcept {
  // Every byte of `expected` is compared, whatever `presented` holds.
  volatile unsigned char diff = expected.size() == presented.size() ? 0 : 1;
  for (std::size_t i = 0; i < expected.size(); ++i) {
    const unsigned char p = i < presented.size() ? static_cast<unsigned char>(presented[i]) : 0;
    diff = static_cast<unsigned char>(diff | (static_cast<unsigned char>(expected[i]) ^ p));
  }
  return diff == 0;
}

}  // namespace xlshare
