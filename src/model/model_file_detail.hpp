// Shared by the model file readers (GGUF, safetensors): bounds-checked reading of a
// file's header and the checks every format's tensors go through. Private to src/model.
#pragma once

#include "xlshare/model/model_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <map>
#include <optional>
#include <regex>
#include <variant>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/unique_fd.hpp"
#include "xlshare/error.hpp"

namespace xlshare::model_file_detail {
namespace fs = std::filesystem;

[[noreturn]] inline void fail(const fs::path& file, const std::string& what) {
  throw FormatError(fmt::format("{}: {}", file.string(), what));
}

// A file opened for reading, with its size.
struct OpenFile {
  detail::UniqueFd fd;
  std::uint64_t size = 0;
};

inline OpenFile open_file(const fs::path& path) {
  OpenFile f;
  f.fd = detail::UniqueFd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!f.fd) {
    if (errno == ENOENT) fail(path, "no such file");
    throw BackendError(errno_message(path.string() + ": open", errno));
  }
  struct stat st {};
  if (::fstat(f.fd.get(), &st) != 0)
    throw BackendError(errno_message(path.string() + ": fstat", errno));
  if (!S_ISREG(st.st_mode)) fail(path, "not a regular file");
  f.size = static_cast<std::uint64_t>(st.st_size);
  return f;
}

// Reads exactly dst.size() bytes at `offset`. Returns false on a short read.
inline bool pread_all(int fd, std::uint64_t offset, std::span<std::byte> dst) {
  std::size_t done = 0;
  while (done < dst.size()) {
    const ssize_t n =
        ::pread(fd, dst.data() + done, dst.size() - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    if (n == 0) return false;
    done += static_cast<std::size_t>(n);
  }
  return true;
}

// Sequential, bounds-checked reading of a file's header through a buffer.
class HeaderReader {
 public:
  HeaderReader(const OpenFile& f, const fs::path& path) : f_(f), path_(path) {}
  std::uint64_t position() const noexcept { return pos_; }
  std::uint64_t remaining() const noexcept { return f_.size - pos_; }

  void read(void* dst, std::uint64_t n, const char* what) {
    if (n > remaining()) {
      fail(path_, fmt::format("truncated: {} needs {} bytes at offset {}, the file has {} left",
                              what, n, pos_, remaining()));
    }
    auto* out = static_cast<std::byte*>(dst);
    while (n > 0) {
      if (buf_pos_ >= buf_len_) refill();
      const std::uint64_t k = std::min<std::uint64_t>(n, buf_len_ - buf_pos_);
      std::memcpy(out, buf_.data() + buf_pos_, k);
      out += k;
      buf_pos_ += k;
      pos_ += k;
      n -= k;
    }
  }
  template <typename T>
  T scalar(const char* what) {
    T v;
    read(&v, sizeof v, what);
    return v;
  }
  std::string string(const char* what, std::uint64_t max_bytes) {
    const auto n = scalar<std::uint64_t>(what);
    if (n > remaining())
      fail(path_, fmt::format("{} claims {} bytes but only {} remain", what, n, remaining()));
    if (n > max_bytes)
      fail(path_, fmt::format("{} is {} bytes long (at most {} accepted)", what, n, max_bytes));
    std::string s(n, '\0');
    read(s.data(), n, what);
    return s;
  }
  void skip(std::uint64_t n, const char* what) {
    if (n > remaining())
      fail(path_, fmt::format("truncated: {} needs {} bytes, {} remain", what, n, remaining()));
    const std::uint64_t buffered = buf_len_ - buf_pos_;
    if (n <= buffered) {
      buf_pos_ += n;
    } else {
      buf_pos_ = buf_len_ = 0;
      file_pos_ = pos_ + n;
    }
    pos_ += n;
  }

 private:
  void refill() {
    buf_.resize(1u << 20);
    const std::uint64_t want = std::min<std::uint64_t>(buf_.size(), f_.size - file_pos_);
    if (!pread_all(f_.fd.get(), file_pos_, std::span(buf_).first(want))) fail(path_, "read error");
    buf_len_ = want;
    buf_pos_ = 0;
    file_pos_ += want;
  }
  const OpenFile& f_;
  const fs::path& path_;
  std::vector<std::byte> buf_;
  std::uint64_t buf_len_ = 0, buf_pos_ = 0, file_pos_ = 0, pos_ = 0;
};

inline std::uint64_t checked_bytes(const fs::path& path, const std::string& tensor, DType dtype,
                                   const std::array<std::uint64_t, 4>& shape,
                                   std::uint32_t n_dims) {
  std::uint64_t n = 1;
  for (std::uint32_t d = 0; d < n_dims; ++d) {
    if (shape[d] == 0) fail(path, fmt::format("tensor '{}': dimension {} is 0", tensor, d));
    if (n > UINT64_MAX / shape[d])
      fail(path, fmt::format("tensor '{}': element count overflows", tensor));
    n *= shape[d];
  }
  if (shape[0] % dtype_block_elements(dtype) != 0) {
    fail(path, fmt::format("tensor '{}': rows of {} elements are not whole {} blocks of {}", tensor,
                           shape[0], to_string(dtype), dtype_block_elements(dtype)));
  }
  const auto bytes = dtype_bytes(dtype, n);
  if (!bytes) {
    fail(path, fmt::format("tensor '{}': {} elements are not a whole number of {} blocks", tensor,
                           n, to_string(dtype)));
  }
  return *bytes;
}

// Every tensor's bytes lie inside the file and no two overlap.
inline void check_extents(const fs::path& path, std::vector<const FileTensor*> tensors,
                          std::uint64_t begin, std::uint64_t end) {
  for (const auto* t : tensors) {
    if (t->offset_bytes < begin || t->offset_bytes > end || t->size_bytes > end - t->offset_bytes) {
      fail(path,
           fmt::format("tensor '{}': its data [{}, +{}) lies outside the file's data ({} bytes)",
                       t->source_name, t->offset_bytes, t->size_bytes, end));
    }
  }
  std::sort(tensors.begin(), tensors.end(), [](const FileTensor* a, const FileTensor* b) {
    return a->offset_bytes < b->offset_bytes;
  });
  for (std::size_t i = 1; i < tensors.size(); ++i) {
    if (tensors[i - 1]->offset_bytes + tensors[i - 1]->size_bytes > tensors[i]->offset_bytes) {
      fail(path, fmt::format("tensors '{}' and '{}' overlap", tensors[i - 1]->source_name,
                             tensors[i]->source_name));
    }
  }
}

// Picks the tensors the config needs, in order, and checks their shapes.
inline std::vector<FileTensor> select_tensors(const fs::path& path, const LlamaConfig& config,
                                              std::map<std::string, FileTensor>& by_name) {
  std::vector<FileTensor> out;
  for (const auto& spec : llama_tensor_specs(config)) {
    auto it = by_name.find(spec.name);
    if (it == by_name.end()) fail(path, fmt::format("missing tensor '{}'", spec.name));
    FileTensor& t = it->second;
    bool same = t.n_dims == spec.shape.size();
    for (std::size_t d = 0; same && d < spec.shape.size(); ++d) same = t.shape[d] == spec.shape[d];
    if (!same) {
      std::string want, got;
      for (auto d : spec.shape) want += fmt::format("{}{}", want.empty() ? "" : " x ", d);
      for (std::uint32_t d = 0; d < t.n_dims; ++d)
        got += fmt::format("{}{}", d ? " x " : "", t.shape[d]);
      fail(path, fmt::format("tensor '{}' has shape [{}]; the model config needs [{}]",
                             t.source_name, got, want));
    }
    out.push_back(t);
  }
  return out;
}

/// GGUF (gguf_file.cpp) and Hugging Face safetensors + config.json (safetensors_file.cpp).
ModelFile open_gguf(const fs::path& path);
ModelFile open_hf(const fs::path& dir_or_file);

}  // namespace xlshare::model_file_detail
