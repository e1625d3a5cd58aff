// Writes the seed corpus of every fuzz target into DIR (tests/fuzz/corpus):
//   build/bin/xlshare_make_fuzz_corpus tests/fuzz/corpus
#include <filesystem>
#include <fstream>
#include <string>

#include "fuzz/tiny_vocab.hpp"
#include "xlshare/memory/backend_uri.hpp"
#include "xlshare/memory/pool.hpp"
#include "xlshare/model/model_loader.hpp"
#include "xlshare/model/synthetic.hpp"
#include "xlshare/model/tokenizer.hpp"

namespace fs = std::filesystem;

static void put(const fs::path& p, const std::string& bytes) {
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary)
      .write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}
static std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

int main(int argc, char** argv) {
  const fs::path out = argc > 1 ? argv[1] : "tests/fuzz/corpus";
  const fs::path tmp = fs::temp_directory_path() / "xlshare-corpus";
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  xlshare::LlamaConfig c;
  c.dim = 32;
  c.n_layers = 1;
  c.n_heads = 2;
  c.n_kv_heads = 1;
  c.head_dim = 16;
  c.ffn_dim = 64;
  c.vocab = 40;
  c.context = 64;
  const auto m = xlshare::make_synthetic_llama(c, 1);
  for (auto [dtype, name] : {std::pair{xlshare::DType::kF32, "f32"},
                             {xlshare::DType::kF16, "f16"},
                             {xlshare::DType::kQ8_0, "q8_0"}}) {
    xlshare::write_gguf(m, tmp / (std::string(name) + ".gguf"), dtype);
    put(out / "fuzz_gguf" / name, slurp(tmp / (std::string(name) + ".gguf")));
  }
  put(out / "fuzz_gguf" / "empty", "");
  put(out / "fuzz_gguf" / "magic-only", "GGUF\x03\0\0\0");
  xlshare::write_safetensors(m, tmp / "hf", xlshare::DType::kF32);
  put(out / "fuzz_safetensors" / "model",
      std::string(1, '\0') + slurp(tmp / "hf" / "model.safetensors"));
  put(out / "fuzz_safetensors" / "config",
      std::string(1, '\1') + slurp(tmp / "hf" / "config.json"));
  // A small pool holding the model.
  {
    const std::string uri = "file://" + (tmp / "pool").string();
    auto pool = xlshare::Pool::create(xlshare::create_backend(uri, 256 * 1024),
                                      xlshare::PoolOptions{.max_models = 1, .max_tensors = 16});
    xlshare::load_model_into_pool(xlshare::open_model_file(tmp / "f32.gguf"), *pool, "m");
  }
  put(out / "fuzz_pool_attach" / "pool", slurp(tmp / "pool"));
  put(out / "fuzz_pool_attach" / "header-only", slurp(tmp / "pool").substr(0, 4096));
  put(out / "fuzz_cli" / "jsonl",
      std::string(1, '\0') +
          "{\"id\": \"a\", \"prompt\": [1, 2, 3], \"max_new_tokens\": 4}\n"
          "{\"id\": 7, \"prompt\": [5], \"temperature\": 0.5, \"seed\": 3}\n");
  put(out / "fuzz_cli" / "tokens", std::string(1, '\1') + "1,2,3,255");
  put(out / "fuzz_cli" / "size", std::string(1, '\2') + "64M");
  put(out / "fuzz_cli" / "dtype", std::string(1, '\3') + "q8_0");
  put(out / "fuzz_cli" / "uri", std::string(1, '\4') + "numa://0/pool");
  put(out / "fuzz_tokenizer" / "spm-blob",
      std::string(1, '\0') + xlshare::serialize_tokenizer(xlshare::fuzz::tiny_spm()));
  put(out / "fuzz_tokenizer" / "bpe-blob",
      std::string(1, '\0') + xlshare::serialize_tokenizer(xlshare::fuzz::tiny_bpe()));
  put(out / "fuzz_tokenizer" / "spm-text",
      std::string(1, '\1') + "ab a\xC3\xA9 \xF0\x9F\x9A\x80 b\xE2");
  put(out / "fuzz_tokenizer" / "bpe-text",
      std::string(1, '\2') + "the thin  theme's 123\n\tcaf\xC3\xA9 \xFF");
  fs::remove_all(tmp);
  return 0;
}
