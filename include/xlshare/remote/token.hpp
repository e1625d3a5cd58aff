// The shared secret of a remote pool: a token that the server and its clients read from a
// file only its owner can read (`--token-file FILE`, or the XLSHARE_TOKEN_FILE environment
// variable). It protects attach: a client must present it before it receives the pool's
// catalog and remote key. It is sent in the clear; docs/security.md says when that is fine.
#pragma once

#include <string>
#include <string_view>

namespace xlshare {

/// Shortest and longest token accepted, in bytes (after a trailing newline is dropped).
inline constexpr std::size_t kMinSecretBytes = 16;
inline constexpr std::size_t kMaxSecretBytes = 1024;

/// Reads the token in `path`: a regular file owned by this user, readable by nobody else
/// (no group or other permission bits: 0600 or 0400), of kMinSecretBytes..kMaxSecretBytes bytes
/// of printable ASCII (one trailing newline is dropped).
/// @throws ConfigError naming the file and the problem.
std::string read_token_file(const std::string& path);

/// `path` when it is not empty, else $XLSHARE_TOKEN_FILE.
/// @throws ConfigError when both are empty (naming --token-file and XLSHARE_TOKEN_FILE).
std::string token_file_or_default(const std::string& path);

/// Whether two tokens are equal, in time that depends only on the length of `expected`
/// (the server's), not on where they differ.
bool tokens_equal(std::string_view expected, std::string_view presented) noexcept;

}  // namespace xlshare
