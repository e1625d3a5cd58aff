// libFuzzer target: the safetensors + config.json reader. The first byte chooses what the
// input is: even, model.safetensors (beside a valid config.json); odd, config.json (beside a
// valid model.safetensors from the seed corpus's shape).
#include "fuzz/fuzz_support.hpp"
#include "xlshare/error.hpp"
#include "xlshare/model/model_file.hpp"
#include "xlshare/model/synthetic.hpp"

namespace {
const std::filesystem::path& valid_dir() {
  static const std::filesystem::path dir = [] {
    auto d = xlshare::fuzz::scratch() / "valid";
    xlshare::LlamaConfig c;
    c.dim = 32;
    c.n_layers = 1;
    c.n_heads = 2;
    c.n_kv_heads = 1;
    c.head_dim = 16;
    c.ffn_dim = 64;
    c.vocab = 40;
    c.context = 64;
    xlshare::write_safetensors(xlshare::make_synthetic_llama(c, 1), d, xlshare::DType::kF32);
    return d;
  }();
  return dir;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const auto dir = xlshare::fuzz::scratch() / "hf";
  std::filesystem::create_directories(dir);
  if (data[0] % 2 == 0) {
    std::filesystem::copy_file(valid_dir() / "config.json", dir / "config.json",
                               std::filesystem::copy_options::overwrite_existing);
    xlshare::fuzz::write_input("hf/model.safetensors", data + 1, size - 1);
  } else {
    std::filesystem::copy_file(valid_dir() / "model.safetensors", dir / "model.safetensors",
                               std::filesystem::copy_options::overwrite_existing);
    xlshare::fuzz::write_input("hf/config.json", data + 1, size - 1);
  }
  try {
    const auto file = xlshare::open_model_file(dir);
    for (const auto& t : file.tensors) {
      if (t.size_bytes > (64u << 20)) continue;
      std::vector<std::byte> buf(t.size_bytes);
      xlshare::read_tensor_data(t, buf);
    }
  } catch (const xlshare::Error&) {
  }
  return 0;
}
