// Errors thrown by xlshare's cold paths (construction, loading, mapping, configuration).
//
// Every message names the object it is about (a pool URI, a file path, a tensor) and the
// problem, so that one line on stderr is enough to act on. Hot paths (per tensor, per
// layer, per token) never throw; they return a status instead.
#pragma once

#include <stdexcept>
#include <string>

namespace xlshare {

/// Base of every exception xlshare throws.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// A model or pool file whose contents are malformed, truncated or lying about sizes.
class FormatError : public Error {
 public:
  using Error::Error;
};

/// An operating-system or device failure: open, map, resize, bind, unlink.
class BackendError : public Error {
 public:
  using Error::Error;
};

/// A pool that cannot be attached or modified: bad magic, unsealed, corrupted catalog.
class PoolError : public Error {
 public:
  using Error::Error;
};

/// A request for more memory than a pool, a cache or a device has.
class OutOfMemory : public Error {
 public:
  using Error::Error;
};

/// An invalid configuration value: an unknown preset, a bad URI, a negative rate.
class ConfigError : public Error {
 public:
  using Error::Error;
};

/// A fault injected by the CxlEmulator that could not be recovered (retries exhausted,
/// device offline with no replica).
class InjectedFault : public Error {
 public:
  using Error::Error;
};

/// A policy of the user's (an EvictionPolicy or PrefetchPolicy hook) threw: the request
/// that ran into it fails with the hook's message; the worker and the cache stay usable.
class PolicyError : public Error {
 public:
  using Error::Error;
};

/// Formats errno as "what: strerror (errno N)".
std::string errno_message(const std::string& what, int errnum);

}  // namespace xlshare
