#include "xlshare/model/model_file.hpp"

#include "model/model_file_detail.hpp"

namespace xlshare {
namespace fs = std::filesystem;
using model_file_detail::fail;
using model_file_detail::open_file;
using model_file_detail::open_gguf;
using model_file_detail::open_hf;
using model_file_detail::OpenFile;
using model_file_detail::pread_all;

std::uint64_t ModelFile::total_bytes() const noexcept {
  std::uint64_t n = 0;
  for (const auto& t : tensors) n += t.size_bytes;
  return n;
}

const FileTensor* ModelFile::find(const std::string& name) const noexcept {
  for (const auto& t : tensors) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

ModelFile open_model_file(const fs::path& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) fail(path, "no such file or directory");
  if (fs::is_directory(path, ec)) return open_hf(path);
  if (path.extension() == ".safetensors") return open_hf(path);
  return open_gguf(path);
}

void read_tensor_data(const FileTensor& t, std::span<std::byte> dst) {
  if (dst.size() != t.size_bytes) {
    throw FormatError(fmt::format("{}: tensor '{}': buffer of {} bytes for {} bytes",
                                  t.path.string(), t.source_name, dst.size(), t.size_bytes));
  }
  const OpenFile f = open_file(t.path);
  if (t.offset_bytes > f.size || t.size_bytes > f.size - t.offset_bytes) {
    fail(t.path, fmt::format("tensor '{}': the file shrank below its data", t.source_name));
  }
  if (!pread_all(f.fd.get(), t.offset_bytes, dst))
    fail(t.path, fmt::format("tensor '{}': short read", t.source_name));
  if (t.permute_heads == 0) return;
  // Rotate-half (Hugging Face) -> interleaved (GGUF) row order, head by head:
  // within a head of hd rows, row half*hd/2 + i moves to 2i + half.
  const std::uint64_t rows = t.shape[1];
  const std::uint64_t row_bytes = t.size_bytes / rows;
  if (rows % t.permute_heads != 0 || (rows / t.permute_heads) % 2 != 0) {
    fail(t.path, fmt::format("tensor '{}': {} rows do not split into {} heads of even size",
                             t.source_name, rows, t.permute_heads));
  }
  const std::uint64_t hd = rows / t.permute_heads;
  std::vector<std::byte> head(hd * row_bytes);
  for (std::uint64_t h = 0; h < t.permute_heads; ++h) {
    std::byte* base = dst.data() + h * hd * row_bytes;
    std::memcpy(head.data(), base, head.size());
    for (std::uint64_t half = 0; half < 2; ++half) {
      for (std::uint64_t i = 0; i < hd / 2; ++i) {
        std::memcpy(base + (2 * i + half) * row_bytes,
                    head.data() + (half * hd / 2 + i) * row_bytes, row_bytes);
      }
    }
  }
}

}  // namespace xlshare
