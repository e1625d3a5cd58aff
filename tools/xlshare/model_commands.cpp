// xlshare load | synth | tokenize | generate | eval | worker | stats
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <optional>
#include <span>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "commands.hpp"
#include "xlshare/engine/inference_engine.hpp"
#include "xlshare/error.hpp"
#include "xlshare/memory/backend_uri.hpp"
#include "xlshare/memory/checksum.hpp"
#include "xlshare/model/model_file.hpp"
#include "xlshare/model/synthetic.hpp"
#include "xlshare/model/tokenizer.hpp"

namespace xlshare::cli {

std::uint64_t parse_bytes(const std::string& text) {
  // A decimal number (digits and at most one '.', no sign, no exponent) and a unit from
  // CLI11's size table (CLI::AsSizeValue, 1024-based, any case: k, kb, ki, kib, m, ...).
  // CLI11 2.1's conversion of the number itself is not used: it reads "010" as octal and
  // has no fractions ("1.5G").
  std::size_t end = 0;
  bool dot = false, digit = false;
  for (; end < text.size(); ++end) {
    const char c = text[end];
    if (std::isdigit(static_cast<unsigned char>(c))) {
      digit = true;
    } else if (c == '.' && !dot) {
      dot = true;
    } else {
      break;
    }
  }
  if (!digit) {
    throw ConfigError(fmt::format("size '{}' is not a number (examples: 4096, 64M, 1.5G)", text));
  }
  const long double value = std::strtold(text.substr(0, end).c_str(), nullptr);
  long double factor = 1;
  if (end < text.size()) {
    std::string unit = text.substr(end);
    std::string problem;
    try {
      problem = CLI::AsSizeValue(false)(unit);
    } catch (const CLI::ValidationError& e) {
      problem = e.what();
    }
    if (!problem.empty()) {
      throw ConfigError(fmt::format("size '{}' has an unknown unit '{}' (use K, M, G, T)", text,
                                    text.substr(end)));
    }
    factor = static_cast<long double>(std::stoull(unit));
  }
  const long double bytes = value * factor;
  if (bytes >= 18446744073709551616.0L) {
    throw ConfigError(fmt::format("size '{}' is too large", text));
  }
  if (bytes != std::floor(bytes)) {
    throw ConfigError(fmt::format("size '{}' is not a whole number of bytes", text));
  }
  return static_cast<std::uint64_t>(bytes);
}

std::vector<std::int32_t> parse_tokens(const std::string& text) {
  std::vector<std::int32_t> out;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    std::size_t used = 0;
    long v = 0;
    if (item.empty() || !std::isdigit(static_cast<unsigned char>(item[0]))) {
      throw ConfigError(fmt::format("token '{}' is not a token id", item));
    }
    try {
      v = std::stol(item, &used);
    } catch (const std::exception&) {
      throw ConfigError(fmt::format("token '{}' is not an integer", item));
    }
    if (used != item.size() || v < 0 || v > INT32_MAX)
      throw ConfigError(fmt::format("token '{}' is not a token id", item));
    out.push_back(static_cast<std::int32_t>(v));
  }
  if (out.empty()) throw ConfigError("no tokens given");
  return out;
}

// synth's --dtype: one type for every matrix, or "q4_k_m" (llama.cpp's mix, nullopt).
std::optional<DType> parse_dtype_arg(const std::string& s) {
  if (s == "q4_k_m") return std::nullopt;
  auto d = parse_dtype(s);
  if (!d || (*d != DType::kF32 && *d != DType::kF16 && *d != DType::kBF16 && *d != DType::kQ8_0 &&
             *d != DType::kQ4_K && *d != DType::kQ6_K)) {
    throw ConfigError(
        fmt::format("dtype '{}' is not one of f32, f16, bf16, q8_0, q4_k, q6_k, q4_k_m", s));
  }
  return *d;
}

CLI::Validator size_in(std::uint64_t lo, std::uint64_t hi) {
  return CLI::Validator(
      [lo, hi](std::string& text) -> std::string {
        std::uint64_t v = 0;
        try {
          v = parse_bytes(text);
        } catch (const ConfigError&) {
          return fmt::format("'{}' is not a size (examples: 4096, 64K, 64M, 2G, 1T)", text);
        }
        if (v < lo || v > hi)
          return fmt::format("'{}' is not a size in {}..{} bytes", text, lo, hi);
        return {};
      },
      "SIZE");
}

namespace {

// The limits of the options below. Threads: a thread per core of a big host is far below
// 256, and every thread costs a stack. Lookahead: steps of a layer schedule, which wraps
// after one pass, so more than a model's layers is never needed.
constexpr std::uint64_t kMaxThreads = 256;
constexpr std::uint64_t kMaxLookahead = 1024;
constexpr std::uint64_t kMaxCacheBytes = 1ull << 40;

// --attention: how attention rounds (ExecutorOptions::attention).
void add_attention_option(CLI::App* app, std::string& value) {
  app->add_option("--attention", value,
                  "f32: keys, values and attention in float32; ggml-f16: rounded as llama.cpp "
                  "rounds them with its default F16 KV cache (to compare with its logits)")
      ->capture_default_str()
      ->check(CLI::IsMember({"f32", "ggml-f16"}));
}

AttentionNumerics parse_attention(const std::string& value) {
  return value == "ggml-f16" ? AttentionNumerics::kGgmlF16 : AttentionNumerics::kF32;
}

// Options every serving command shares.
struct EngineArgs {
  std::string pool;
  std::string cache = "64M";
  std::string preset = "cxl-x8";
  std::string policy = "fixed";
  std::optional<std::size_t> lookahead;  // unset: the placement's default
  unsigned prefetch_threads = 2;
  unsigned threads = 1;
  bool no_verify = false;
  bool quantized_activations = false;
  std::string attention = "f32";
  std::string replica;
  std::string placement;  // empty: the backend's default (in-place on host memory)
  std::string scrub_rate = "256M";

  void add(CLI::App* app, bool pool_required) {
    auto* p = app->add_option("--pool", pool, "pool URI (shm://NAME, file:///PATH, ...)");
    if (pool_required) p->required();
    app->add_option(
           "--placement", placement,
           "copy: a near cache filled over the link (a GPU's HBM); in-place: compute from the pool "
           "mapping, paced on the link, --cache being the hot set (default: in-place wherever the "
           "CPU can "
           "load from the pool, which is every backend but a remote one)")
        ->check(CLI::IsMember({"copy", "in-place", "in_place"}));
    app->add_option("--scrub-rate", scrub_rate,
                    "bytes per second the background Scrubber re-verifies of weights read in "
                    "place, e.g. 256M; 0: off")
        ->capture_default_str()
        ->check(size_in(0, kMaxCacheBytes));
    app->add_option("--cache", cache,
                    "near cache per worker, e.g. 64M; 0: no cache (in-place: the hot set)")
        ->capture_default_str()
        ->check(size_in(0, kMaxCacheBytes));
    app->add_option("--preset", preset, "emulated link: none, cxl-x8, cxl-x16, cxl-switched")
        ->capture_default_str();
    app->add_option(
           "--policy", policy,
           "eviction policy: fixed (a fixed set stays, the rest streams), lru, fifo, schedule")
        ->capture_default_str();
    app->add_option("--lookahead", lookahead,
                    "steps ahead: prefetched (copy, default 2) or whose link time is reserved "
                    "(in-place, default 4)")
        ->check(integer_in(0, kMaxLookahead));
    app->add_option("--prefetch-threads", prefetch_threads, "transfer threads")
        ->capture_default_str()
        ->check(integer_in(1, kMaxThreads));
    app->add_option("--threads", threads, "compute threads")
        ->capture_default_str()
        ->check(integer_in(1, kMaxThreads));
    app->add_flag("--no-verify", no_verify, "skip checksum verification of transfers");
    app->add_flag("--quantized-activations", quantized_activations,
                  "Q8_0/Q4_K/Q6_K products against 8-bit activations, as llama.cpp computes "
                  "them (faster; not exactly the dequantized model)");
    add_attention_option(app, attention);
    app->add_option("--replica", replica, "replica pool URI for failover");
  }
  EngineConfig config() const {
    EngineConfig c;
    c.pool_uri = pool;
    if (!placement.empty()) c.placement = parse_placement(placement);
    c.scrub_bytes_per_s = parse_bytes(scrub_rate);
    c.cache_bytes = parse_bytes(cache);
    c.link_preset = preset;
    c.eviction_policy = policy;
    c.lookahead = lookahead;
    c.prefetch_threads = prefetch_threads;
    c.compute_threads = threads;
    c.verify_checksums = !no_verify;
    c.replica_pool_uri = replica;
    c.quantized_activations = quantized_activations;
    c.attention = parse_attention(attention);
    return c;
  }
};

// A progress bar on stderr when it is a terminal; nothing otherwise.
LoadProgress progress_bar() {
  if (!::isatty(2)) return {};
  return [](std::uint64_t done, std::uint64_t total, const std::string& tensor) {
    const int width = 40;
    const int filled = total ? static_cast<int>(width * done / total) : width;
    fmt::print(stderr, "\r[{}{}] {:5.1f}% {:<40.40}",
               std::string(static_cast<std::size_t>(filled), '#'),
               std::string(static_cast<std::size_t>(width - filled), ' '),
               total ? 100.0 * done / total : 100.0, tensor);
    if (done == total) fmt::print(stderr, "\n");
  };
}

std::string default_name(const std::filesystem::path& p) {
  std::string stem = (std::filesystem::is_directory(p) ? p.filename() : p.stem()).string();
  std::string out;
  for (char ch : stem) {
    const bool ok =
        std::isalnum(static_cast<unsigned char>(ch)) || ch == '.' || ch == '_' || ch == '-';
    out += ok ? ch : '_';
  }
  if (out.empty() || out[0] == '.') out = "model" + out;
  return out.substr(0, 63);
}

// The tokenizer of a model file, or of model `model` in `pool` when a pool is given.
// @throws ConfigError for a model without one.
Tokenizer open_tokenizer(const std::string& model, const std::string& pool) {
  std::optional<TokenizerData> data;
  std::string where = model;
  if (!pool.empty()) {
    auto p = Pool::attach(open_backend(pool));
    data = pool_tokenizer(*p->model(model));
    where = fmt::format("model '{}' in {}", model, pool);
  } else {
    data = open_model_file(model).tokenizer;
  }
  if (!data) {
    throw ConfigError(
        fmt::format("{} has no tokenizer xlshare can use (tokenizer.ggml.model "
                    "absent, 'none' or not supported); give token ids",
                    where));
  }
  return Tokenizer(std::move(*data), where);
}

// The text of --text, or of --file ("-": stdin).
std::string read_text(const std::string& file) {
  std::ostringstream text;
  if (file == "-") {
    text << std::cin.rdbuf();
    return text.str();
  }
  std::ifstream in(file, std::ios::binary);
  if (!in) throw ConfigError(fmt::format("{}: cannot read", file));
  text << in.rdbuf();
  if (in.bad()) throw BackendError(fmt::format("{}: read failed", file));
  return text.str();
}

std::string join_ids(std::span<const std::int32_t> ids) {
  std::string out;
  for (auto t : ids) out += fmt::format("{}{}", out.empty() ? "" : ",", t);
  return out;
}

}  // namespace

void add_model_commands(CLI::App& app) {
  // tokenize
  {
    struct Args {
      std::string model, pool, text, file;
      bool json = false, no_special = false;
    };
    auto a = std::make_shared<Args>();
    CLI::App* cmd = app.add_subcommand("tokenize", "print the token ids of a text");
    cmd->add_option("--model", a->model, "GGUF file, or a model name in --pool")->required();
    cmd->add_option("--pool", a->pool, "read the model's tokenizer from this pool");
    auto* text = cmd->add_option("--text", a->text, "the text");
    auto* file = cmd->add_option("--file", a->file, "read the text from this file (-: stdin)");
    text->excludes(file);
    cmd->add_flag("--no-special", a->no_special, "leave out the BOS/EOS the model adds");
    cmd->add_flag("--json", a->json, "print {\"tokens\": [ids], \"count\": n}");
    cmd->callback([a, text, file] {
      if (text->count() == 0 && file->count() == 0) throw ConfigError("give --text or --file");
      const Tokenizer tokenizer = open_tokenizer(a->model, a->pool);
      const auto ids =
          tokenizer.encode(file->count() ? read_text(a->file) : a->text, !a->no_special);
      if (a->json) {
        fmt::print("{}\n", nlohmann::json{{"tokens", ids}, {"count", ids.size()}}.dump());
      } else {
        fmt::print("{}\n", join_ids(ids));
      }
    });
  }
  // load
  {
    struct Args {
      std::string model, pool, name, pool_size;
      bool json = false;
    };
    auto a = std::make_shared<Args>();
    CLI::App* cmd =
        app.add_subcommand("load", "load a GGUF file or Hugging Face directory into a pool (once)");
    cmd->add_option("model", a->model, "GGUF file, .safetensors file, or Hugging Face directory")
        ->required();
    cmd->add_option("--pool", a->pool, "pool URI; created if absent")->required();
    cmd->add_option("--name", a->name, "model name in the pool (default: the file's stem)");
    cmd->add_option("--pool-size", a->pool_size,
                    "size of a new pool, e.g. 2G (default: the model's size)")
        ->check(size_in(1, UINT64_MAX));
    cmd->add_flag("--json", a->json, "print the pool's stats as JSON");
    cmd->callback([a] {
      EngineConfig c;
      c.pool_uri = a->pool;
      if (!a->pool_size.empty()) c.pool_bytes = parse_bytes(a->pool_size);
      InferenceEngine engine(c);
      const std::string name = a->name.empty() ? default_name(a->model) : a->name;
      const bool loaded = engine.register_model(a->model, name, progress_bar());
      if (a->json) {
        fmt::print("{}\n",
                   nlohmann::json{{"model", name}, {"loaded", loaded}, {"pool", a->pool}}.dump());
      } else {
        fmt::print("{} {} in {}\n", loaded ? "loaded" : "already present:", name, a->pool);
      }
    });
  }
  // synth
  {
    struct Args {
      std::uint32_t dim = 256, layers = 4, heads = 8, kv_heads = 4, ffn = 688, vocab = 1024,
                    context = 2048;
      std::string dtype = "f32", out;
      std::uint64_t seed = 1;
      std::size_t shards = 1;
    };
    auto a = std::make_shared<Args>();
    CLI::App* cmd =
        app.add_subcommand("synth", "write a synthetic Llama model (seeded random weights)");
    // The ranges LlamaConfig::validate accepts, refused here before any memory is spent.
    cmd->add_option("--dim", a->dim, "hidden size")
        ->capture_default_str()
        ->check(integer_in(1, 1u << 16));
    cmd->add_option("--layers", a->layers, "blocks")
        ->capture_default_str()
        ->check(integer_in(1, 1024));
    cmd->add_option("--heads", a->heads, "attention heads")
        ->capture_default_str()
        ->check(integer_in(1, 1024));
    cmd->add_option("--kv-heads", a->kv_heads, "key/value heads (divides --heads)")
        ->capture_default_str()
        ->check(integer_in(1, 1024));
    cmd->add_option("--ffn", a->ffn, "feed-forward size")
        ->capture_default_str()
        ->check(integer_in(1, 1u << 18));
    cmd->add_option("--vocab", a->vocab, "vocabulary size")
        ->capture_default_str()
        ->check(integer_in(1, 1u << 22));
    cmd->add_option("--context", a->context, "context length")
        ->capture_default_str()
        ->check(integer_in(1, 1u << 20));
    cmd->add_option("--dtype", a->dtype,
                    "matrices as f32, f16, bf16, or (GGUF only) q8_0, q4_k, q6_k or q4_k_m "
                    "(llama.cpp's mix)")
        ->capture_default_str();
    cmd->add_option("--seed", a->seed, "random seed")
        ->capture_default_str()
        ->check(integer_in(0, UINT64_MAX));
    cmd->add_option("--shards", a->shards, "safetensors shards")
        ->capture_default_str()
        ->check(integer_in(1, 1024));
    cmd->add_option("--out", a->out, "FILE.gguf, or a directory for safetensors + config.json")
        ->required();
    cmd->callback([a] {
      if (a->dim % a->heads != 0) {
        throw ConfigError(
            fmt::format("--dim {} is not a multiple of --heads {}", a->dim, a->heads));
      }
      if (a->heads % a->kv_heads != 0) {
        throw ConfigError(
            fmt::format("--kv-heads {} does not divide --heads {}", a->kv_heads, a->heads));
      }
      const std::optional<DType> dtype = parse_dtype_arg(a->dtype);
      LlamaConfig c;  // as create_sample_transformer_model makes it, with --context honoured
      c.dim = a->dim;
      c.n_layers = a->layers;
      c.n_heads = a->heads;
      c.n_kv_heads = a->kv_heads;
      c.head_dim = a->dim / a->heads;
      c.ffn_dim = a->ffn;
      c.vocab = a->vocab;
      c.context = a->context;
      const auto m = make_synthetic_llama(c, a->seed);
      const std::filesystem::path out = a->out;
      if (out.extension() == ".gguf") {
        if (dtype) {
          write_gguf(m, out, *dtype);
        } else {
          write_gguf(m, out, [&](const TensorSpec& s) { return q4_k_m_dtype(s, c); });
        }
      } else {
        if (!dtype || dtype_is_quantized(*dtype))
          throw ConfigError(fmt::format("--dtype {} is for GGUF files only", a->dtype));
        write_safetensors(m, out, *dtype, a->shards);
      }
      fmt::print("wrote {} ({} layers, dim {}, {})\n", out.string(), a->layers, a->dim, a->dtype);
    });
  }
  // generate
  {
    struct Args {
      EngineArgs engine;
      std::string model, prompt, text;
      std::size_t n = 32;
      float temperature = 0.0f, top_p = 1.0f;
      std::uint32_t top_k = 0;
      std::uint64_t seed = 0;
      bool json = false;
    };
    auto a = std::make_shared<Args>();
    CLI::App* cmd = app.add_subcommand("generate", "generate tokens from a model in a pool");
    a->engine.add(cmd, true);
    cmd->add_option("--model", a->model, "model name in the pool")->required();
    auto* ids =
        cmd->add_option("--prompt-tokens", a->prompt, "comma-separated token ids, e.g. 1,2,3");
    auto* text = cmd->add_option(
        "--prompt", a->text,
        "the prompt as text (the model's tokenizer makes the ids); the text generated is "
        "printed as it comes");
    ids->excludes(text);
    cmd->add_option("-n", a->n, "tokens to generate")
        ->capture_default_str()
        ->check(integer_in(0, kMaxNewTokens));
    cmd->add_option("--temperature", a->temperature, "0: greedy")
        ->capture_default_str()
        ->check(real_in(0, kMaxTemperature));
    cmd->add_option("--top-k", a->top_k, "0: all")
        ->capture_default_str()
        ->check(integer_in(0, UINT32_MAX));
    cmd->add_option("--top-p", a->top_p,
                    "nucleus sampling: keep the most likely tokens up to this probability")
        ->capture_default_str()
        ->check(real_in(0, 1));
    cmd->add_option("--seed", a->seed, "sampling seed")
        ->capture_default_str()
        ->check(integer_in(0, UINT64_MAX));
    cmd->add_flag("--json", a->json, "print JSON");
    cmd->callback([a, ids, text] {
      if (ids->count() == 0 && text->count() == 0)
        throw ConfigError("give --prompt TEXT or --prompt-tokens IDS");
      const bool as_text = text->count() > 0;
      if (as_text && a->text.empty()) throw ConfigError("--prompt is empty");
      InferenceEngine engine(a->engine.config());
      engine.attach_model(a->model);
      const Tokenizer* tokenizer = engine.tokenizer();
      if (as_text && tokenizer == nullptr) {
        throw ConfigError(fmt::format("model '{}' in {} has no tokenizer; give --prompt-tokens",
                                      a->model, a->engine.pool));
      }
      InferenceRequest r;
      r.id = "cli";
      if (as_text) {
        r.prompt_text = a->text;  // the engine tokenizes it
      } else {
        r.prompt = parse_tokens(a->prompt);
      }
      r.max_new_tokens = a->n;
      r.sampling = {a->temperature, a->top_k, a->top_p, a->seed};
      // Text is printed as each token comes (on the scheduler's thread; wait() orders the
      // rest after it), whole characters only.
      std::optional<TokenStreamDecoder> stream;
      RequestCallbacks callbacks;
      if (as_text && !a->json) {
        stream.emplace(*tokenizer);
        callbacks.on_token = [&stream](const TokenEvent& e) {
          if (e.token < 0) return;
          const std::string piece = stream->push(e.token);
          std::fwrite(piece.data(), 1, piece.size(), stdout);
          std::fflush(stdout);
        };
      }
      const auto res = engine.submit(r, std::move(callbacks)).wait();
      if (a->json) {
        nlohmann::json j{{"tokens", res.output_tokens},  {"latency_ms", res.latency_ms},
                         {"ready_rate", res.ready_rate}, {"reuse_rate", res.reuse_rate},
                         {"stall_ms", res.stall_ms},     {"link_bytes", res.link_bytes}};
        if (tokenizer != nullptr) {
          // Bytes JSON cannot carry as text (a character cut off by -n) become U+FFFD.
          TokenStreamDecoder whole(*tokenizer);
          std::string generated;
          for (const auto t : res.output_tokens) generated += whole.push(t);
          generated += whole.finish();
          j["text"] = generated;
        }
        fmt::print("{}\n", j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
      } else {
        if (stream) {
          const std::string rest = stream->finish();
          fmt::print("{}\n", rest);
          std::fflush(stdout);  // the text before the figures on stderr
        } else {
          fmt::print("{}\n", join_ids(res.output_tokens));
        }
        fmt::print(
            stderr,
            "latency {:.1f} ms, ready {:.2f}, reuse {:.2f}, stall {:.1f} ms, link {:.1f} MiB\n",
            res.latency_ms, res.ready_rate, res.reuse_rate, res.stall_ms,
            res.link_bytes / 1048576.0);
      }
    });
  }
  // eval
  {
    struct Args {
      std::string model, tokens, text, out, pool;
      unsigned threads = 1;
      bool quantized_activations = false;
      std::string attention = "f32";
    };
    auto a = std::make_shared<Args>();
    CLI::App* cmd = app.add_subcommand("eval", "write the float32 logits of every position");
    cmd->add_option("--model", a->model,
                    "GGUF file, Hugging Face directory, or a model name in --pool")
        ->required();
    auto* ids = cmd->add_option("--tokens", a->tokens, "comma-separated token ids");
    auto* text = cmd->add_option("--prompt", a->text,
                                 "the input as text (the model's tokenizer makes the ids)");
    ids->excludes(text);
    cmd->add_option("--logits-out", a->out,
                    "output: n_tokens x n_vocab float32, little-endian, row-major")
        ->required();
    cmd->add_option("--pool", a->pool, "read the model from this pool instead of a file");
    cmd->add_option("--threads", a->threads, "compute threads")
        ->capture_default_str()
        ->check(integer_in(1, kMaxThreads));
    cmd->add_flag("--quantized-activations", a->quantized_activations,
                  "Q8_0/Q4_K/Q6_K products against 8-bit activations, as llama.cpp computes "
                  "them (faster; not exactly the dequantized model)");
    add_attention_option(cmd, a->attention);
    cmd->callback([a, ids, text] {
      if (ids->count() == 0 && text->count() == 0)
        throw ConfigError("give --tokens IDS or --prompt TEXT");
      const auto tokens = text->count() ? open_tokenizer(a->model, a->pool).encode(a->text, true)
                                        : parse_tokens(a->tokens);
      if (tokens.empty()) throw ConfigError("--prompt gives no tokens");
      std::vector<float> logits;
      std::uint32_t vocab = 0;
      auto run = [&](const LlamaModel& model, WeightProvider& weights) {
        ExecutorOptions eo{a->threads};
        eo.quantized_activations = a->quantized_activations;
        eo.attention = parse_attention(a->attention);
        Executor ex(model, weights, eo);
        KvCache kv(model.config(), static_cast<std::uint32_t>(tokens.size()));
        ex.forward(tokens, kv, logits, true);
        vocab = model.config().vocab;
      };
      if (!a->pool.empty()) {
        auto pool = Pool::attach(open_backend(a->pool));
        auto view = pool->model(a->model);
        const LlamaModel model = LlamaModel::from_pool(*view);
        if (pool->backend().maps_data()) {
          SpanWeights w = pool_weights(*pool, *view);
          run(model, w);
        } else {
          // A remote pool: every tensor read over the network once, checked on arrival.
          std::vector<std::vector<std::byte>> buffers;
          std::vector<std::span<const std::byte>> spans;
          for (const auto& t : view->tensors()) {
            buffers.emplace_back(t.size_bytes);
            if (const ReadStatus st = pool->read(t, 0, buffers.back()); st != ReadStatus::kOk) {
              throw PoolError(fmt::format("{}: cannot read tensor '{}': {}", pool->uri(), t.name,
                                          to_string(st)));
            }
            if (checksum64(std::span<const std::byte>(buffers.back())) != t.checksum) {
              throw PoolError(
                  fmt::format("{}: tensor '{}' of model '{}' does not match its checksum",
                              pool->uri(), t.name, view->name()));
            }
            spans.emplace_back(buffers.back());
          }
          SpanWeights w(spans);
          run(model, w);
        }
      } else {
        const ModelFile file = open_model_file(a->model);
        std::vector<std::vector<std::byte>> buffers;
        std::vector<std::span<const std::byte>> spans;
        for (const auto& t : file.tensors) {
          buffers.emplace_back(t.size_bytes);
          read_tensor_data(t, buffers.back());
          spans.emplace_back(buffers.back());
        }
        const LlamaModel model = LlamaModel::from_file(file);
        SpanWeights w(spans);
        run(model, w);
      }
      std::ofstream out(a->out, std::ios::binary | std::ios::trunc);
      out.write(reinterpret_cast<const char*>(logits.data()),
                static_cast<std::streamsize>(logits.size() * 4));
      if (!out) throw BackendError(fmt::format("{}: write failed", a->out));
      fmt::print("wrote {} x {} logits to {}\n", tokens.size(), vocab, a->out);
    });
  }
  // worker
  {
    struct Args {
      EngineArgs engine;
      std::string model, requests = "-", out = "-";
      bool stream = false;
    };
    auto a = std::make_shared<Args>();
    CLI::App* cmd = app.add_subcommand(
        "worker", "serve JSONL requests from a file or stdin, batched continuously as they come");
    a->engine.add(cmd, true);
    cmd->add_option("--model", a->model, "model name in the pool")->required();
    cmd->add_option(
        "--requests", a->requests,
        "JSONL, - for stdin (the default): {\"id\": ..., \"prompt\": [ids] (or \"prompt_text\": "
        "\"text\"), "
        "\"max_new_tokens\": N, \"stop_token_ids\": [ids], \"ignore_eos\": B, \"temperature\": T, "
        "\"top_k\": K, \"top_p\": P, \"seed\": S}; each is submitted as it is read");
    cmd->add_option("--out", a->out,
                    "JSONL results, - for stdout (the default): one per request, in the order of "
                    "the requests, each as soon as it and those before it are done; a bad "
                    "request gets {\"id\", \"line\", \"error\"} and the rest are still served");
    cmd->add_flag("--stream", a->stream,
                  "also write each token as it is generated: {\"event\": \"token\", \"id\", "
                  "\"line\", \"token\", \"position\"}");
    cmd->callback(
        [a] { run_worker(a->engine.config(), a->model, a->requests, a->out, a->stream); });
  }
  // stats
  {
    struct Args {
      std::string pool;
      bool json = false;
    };
    auto a = std::make_shared<Args>();
    CLI::App* cmd = app.add_subcommand("stats", "a pool's usage, models and shared link counters");
    cmd->add_option("--pool", a->pool, "pool URI")->required();
    cmd->add_flag("--json", a->json, "print JSON");
    cmd->callback([a] {
      auto pool = Pool::attach(open_backend(a->pool));
      const auto s = pool->stats();
      if (a->json) {
        nlohmann::json j = s;
        j["models"] = pool->model_names();
        fmt::print("{}\n", j.dump(2));
        return;
      }
      fmt::print("pool {}: {} models, {:.1f} of {:.1f} MiB used, {} attached\n", s.uri,
                 s.models_sealed, s.extents.bytes_used / 1048576.0, s.data_bytes / 1048576.0,
                 s.attached_processes);
      fmt::print("link: {:.1f} MiB in {} transfers, {} faults\n", s.link_bytes / 1048576.0,
                 s.link_transfers, s.link_faults);
      for (const auto& n : pool->model_names()) fmt::print("  {}\n", n);
    });
  }
}

}  // namespace xlshare::cli
