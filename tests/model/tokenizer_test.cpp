// The tokenizer: llama.cpp's ids for the oracle's texts (SPM and GPT-2 BPE), round trips,
// streaming, invalid UTF-8, hostile tokenizer metadata, and the tokenizer kept in a pool.
#include "xlshare/model/tokenizer.hpp"

#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "model/model_support.hpp"
#include "xlshare/engine/inference_engine.hpp"
#include "xlshare/error.hpp"

namespace xlshare {
namespace {

const std::filesystem::path kData = std::filesystem::path(XLSHARE_TEST_DATA) / "oracle-tokenizer";

struct OracleCase {
  std::string text;
  std::vector<std::int32_t> tokens;
};

std::vector<OracleCase> oracle_cases(const std::string& name) {
  std::ifstream in(kData / name);
  const auto j = nlohmann::json::parse(in);
  std::vector<OracleCase> out;
  for (const auto& c : j) out.push_back({c.at("text"), c.at("tokens")});
  return out;
}

const Tokenizer& file_tokenizer(const std::string& name) {
  static std::map<std::string, std::unique_ptr<Tokenizer>> cache;
  auto& t = cache[name];
  if (!t) {
    auto file = open_model_file(kData / name);
    if (!file.tokenizer) throw std::runtime_error(name + " has no tokenizer");
    t = std::make_unique<Tokenizer>(std::move(*file.tokenizer), name);
  }
  return *t;
}

bool valid_utf8(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    const auto b = static_cast<unsigned char>(s[i]);
    const std::size_t n = b < 0x80                ? 1
                          : b >= 0xC2 && b < 0xE0 ? 2
                          : b >= 0xE0 && b < 0xF0 ? 3
                          : b >= 0xF0 && b < 0xF5 ? 4
                                                  : 0;
    if (n == 0 || i + n > s.size()) return false;
    for (std::size_t k = 1; k < n; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return false;
    }
    i += n;
  }
  return true;
}

class OracleTokenizer : public ::testing::TestWithParam<const char*> {
 protected:
  std::string model() const { return std::string(GetParam()) + ".gguf"; }
  std::vector<OracleCase> cases() const {
    return oracle_cases(std::string(GetParam()) + ".tokens.json");
  }
};

TEST_P(OracleTokenizer, ReproducesLlamaCppIds) {
  const Tokenizer& t = file_tokenizer(model());
  const auto all = cases();
  ASSERT_EQ(all.size(), 16u);
  for (const auto& c : all) EXPECT_EQ(t.encode(c.text, true), c.tokens) << "text: " << c.text;
}

TEST_P(OracleTokenizer, DecodeInvertsEncode) {
  const Tokenizer& t = file_tokenizer(model());
  for (const auto& c : cases()) {
    EXPECT_EQ(t.decode(t.encode(c.text, true)), c.text);
    EXPECT_EQ(t.decode(t.encode(c.text, false)), c.text);
    EXPECT_EQ(t.decode(c.tokens), c.text);  // llama.cpp's own ids
  }
}

TEST_P(OracleTokenizer, StreamingGivesWholeCharactersAndTheSameText) {
  const Tokenizer& t = file_tokenizer(model());
  for (const auto& c : cases()) {
    TokenStreamDecoder stream(t, true);
    std::string text;
    for (const auto id : c.tokens) {
      const std::string piece = stream.push(id);
      EXPECT_TRUE(valid_utf8(piece)) << "text: " << c.text;
      text += piece;
    }
    EXPECT_EQ(stream.finish(), "");
    EXPECT_EQ(text, c.text);
  }
}

TEST_P(OracleTokenizer, InvalidUtf8IsEncodedAndComesBack) {
  const Tokenizer& t = file_tokenizer(model());
  std::mt19937 rng(7);
  for (int round = 0; round < 200; ++round) {
    std::string s(rng() % 64, '\0');
    for (auto& ch : s) ch = static_cast<char>(rng());
    if (round % 3 == 0) s = "ok \xE2\x82 then \xFF\xC3(" + s;  // cut and impossible sequences
    const auto ids = t.encode(s, true);
    for (const auto id : ids) {
      ASSERT_GE(id, 0);
      ASSERT_LT(static_cast<std::size_t>(id), t.vocab_size());
    }
    if (s.find("\xE2\x96\x81") == std::string::npos) {
      EXPECT_EQ(t.decode(ids), s);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Models, OracleTokenizer, ::testing::Values("tok-spm", "tok-gpt2"));

TEST(Tokenizer, ReadsTheFilesSpecialTokens) {
  const auto& spm = file_tokenizer("tok-spm.gguf").data();
  EXPECT_EQ(spm.kind, TokenizerKind::kSpm);
  EXPECT_EQ(spm.bos_id, 1);
  EXPECT_EQ(spm.eos_id, 2);
  EXPECT_EQ(spm.unk_id, 0);
  EXPECT_TRUE(spm.add_bos);
  EXPECT_FALSE(spm.add_eos);
  EXPECT_TRUE(spm.add_space_prefix);
  const auto& bpe = file_tokenizer("tok-gpt2.gguf").data();
  EXPECT_EQ(bpe.kind, TokenizerKind::kBpe);
  EXPECT_EQ(bpe.pre, "gpt-2");
  EXPECT_EQ(bpe.tokens.size(), 50257u);
  EXPECT_EQ(bpe.merges.size(), 50000u);
  EXPECT_EQ(bpe.eos_id, 50256);
  EXPECT_FALSE(bpe.add_bos);
  EXPECT_FALSE(bpe.add_space_prefix);
}

TEST(Tokenizer, SpecialTokensAreAddedOnlyWhenAsked) {
  const Tokenizer& spm = file_tokenizer("tok-spm.gguf");
  EXPECT_EQ(spm.encode("x", true), (std::vector<std::int32_t>{1, 921}));
  EXPECT_EQ(spm.encode("x", false), (std::vector<std::int32_t>{921}));
  EXPECT_EQ(spm.encode("", true), (std::vector<std::int32_t>{1}));
  EXPECT_TRUE(spm.encode("", false).empty());
  // A special token's text is text (parse_special = false): "<s>" is not BOS.
  const auto ids = spm.encode("<s>", false);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), 1), 0);
  EXPECT_EQ(spm.decode(ids), "<s>");
}

TEST(Tokenizer, UnknownIdsDecodeAsReplacementCharacters) {
  const Tokenizer& t = file_tokenizer("tok-gpt2.gguf");
  const std::vector<std::int32_t> ids = {15496, -1, 50257, 995};
  EXPECT_EQ(t.decode(ids), "Hello\xEF\xBF\xBD\xEF\xBF\xBD world");
  EXPECT_EQ(t.token_to_piece(1 << 30), "\xEF\xBF\xBD");
}

TEST(Tokenizer, StreamHoldsBackASplitCharacter) {
  const Tokenizer& t = file_tokenizer("tok-spm.gguf");
  // U+1F680 (rocket) is bytes F0 9F 9A 80: byte tokens <0xF0> ... <0x80> are 243, 162, 157, 131.
  TokenStreamDecoder stream(t);
  EXPECT_EQ(stream.push(243), "");
  EXPECT_EQ(stream.push(162), "");
  EXPECT_EQ(stream.push(157), "");
  EXPECT_EQ(stream.push(131), "\xF0\x9F\x9A\x80");
  EXPECT_EQ(stream.push(243), "");
  EXPECT_EQ(stream.finish(), "\xF0");  // never completed: its byte, at the end
  // Not at the start of a sequence: the space a token begins with is the text's.
  TokenStreamDecoder mid(t);
  EXPECT_EQ(mid.push(3186), " world");
  TokenStreamDecoder start(t, true);
  EXPECT_EQ(start.push(1), "");
  EXPECT_EQ(start.push(15043), "Hello");
}

TEST(Tokenizer, ByteLevelBpeKeepsAnyBytes) {
  const Tokenizer& t = file_tokenizer("tok-gpt2.gguf");
  std::string all;
  for (int b = 0; b < 256; ++b) all += static_cast<char>(b);
  EXPECT_EQ(t.decode(t.encode(all)), all);
}

TEST(Tokenizer, SerializedFormRoundTripsAndRefusesDamage) {
  const auto& d = file_tokenizer("tok-gpt2.gguf").data();
  const std::string bytes = serialize_tokenizer(d);
  const TokenizerData back = parse_tokenizer(bytes, 50257, "blob");
  EXPECT_EQ(back.tokens, d.tokens);
  EXPECT_EQ(back.merges, d.merges);
  EXPECT_EQ(back.eos_id, d.eos_id);
  EXPECT_EQ(back.pre, d.pre);
  EXPECT_THROW(parse_tokenizer(bytes, 50000, "blob"), FormatError);  // another vocabulary
  for (std::size_t cut : {0ul, 7ul, 9ul, 30ul, bytes.size() / 2, bytes.size() - 1}) {
    EXPECT_THROW(parse_tokenizer(bytes.substr(0, cut), 0, "blob"), FormatError) << cut;
  }
  std::string lying = bytes;
  const std::size_t count_at = 8 + 2 + 16 + 4 + d.pre.size();  // the token count
  const std::uint64_t huge = 1ull << 60;
  std::memcpy(lying.data() + count_at, &huge, 8);
  EXPECT_THROW(parse_tokenizer(lying, 0, "blob"), FormatError);
  EXPECT_THROW(parse_tokenizer(bytes + "x", 0, "blob"), FormatError);
}

// --- hostile metadata in GGUF files ------------------------------------------------------

// A tiny F32 model (zero weights) with the tokenizer keys a test gives, written as is.
struct TokGguf {
  struct Kv {
    std::string key;
    std::string value;  // the type and the value, encoded
  };
  std::vector<Kv> kvs;
  std::uint32_t vocab = 8;

  static std::string u32(std::uint32_t v) { return std::string(reinterpret_cast<char*>(&v), 4); }
  static std::string u64(std::uint64_t v) { return std::string(reinterpret_cast<char*>(&v), 8); }
  static std::string str(const std::string& s) { return u64(s.size()) + s; }
  void set(const std::string& key, std::string value) {
    for (auto& kv : kvs) {
      if (kv.key == key) {
        kv.value = std::move(value);
        return;
      }
    }
    kvs.push_back({key, std::move(value)});
  }
  void erase(const std::string& key) {
    std::erase_if(kvs, [&](const Kv& kv) { return kv.key == key; });
  }
  void string(const std::string& key, const std::string& v) { set(key, u32(8) + str(v)); }
  void id(const std::string& key, std::uint32_t v) { set(key, u32(4) + u32(v)); }
  void flag(const std::string& key, bool v) { set(key, u32(7) + std::string(1, v ? 1 : 0)); }
  void strings(const std::string& key, const std::vector<std::string>& v) {
    std::string s = u32(9) + u32(8) + u64(v.size());
    for (const auto& x : v) s += str(x);
    set(key, s);
  }
  void floats(const std::string& key, const std::vector<float>& v) {
    std::string s = u32(9) + u32(6) + u64(v.size());
    s.append(reinterpret_cast<const char*>(v.data()), v.size() * 4);
    set(key, s);
  }
  void ints(const std::string& key, const std::vector<std::int32_t>& v) {
    std::string s = u32(9) + u32(5) + u64(v.size());
    s.append(reinterpret_cast<const char*>(v.data()), v.size() * 4);
    set(key, s);
  }

  // A small SPM vocabulary: "ab" is one token, with and without the space in front.
  static TokGguf spm() {
    TokGguf g;
    g.string("tokenizer.ggml.model", "llama");
    g.strings("tokenizer.ggml.tokens", {"<unk>", "<s>", "</s>", "a", "b", "ab", "\xE2\x96\x81",
                                        "\xE2\x96\x81"
                                        "ab"});
    g.floats("tokenizer.ggml.scores", {0, 0, 0, -1, -1, -2, -3, -1});
    g.ints("tokenizer.ggml.token_type", {2, 3, 3, 1, 1, 1, 1, 1});
    g.id("tokenizer.ggml.bos_token_id", 1);
    g.id("tokenizer.ggml.eos_token_id", 2);
    return g;
  }
  // A small byte-level BPE vocabulary with two merges.
  static TokGguf bpe() {
    TokGguf g;
    g.string("tokenizer.ggml.model", "gpt2");
    g.string("tokenizer.ggml.pre", "gpt-2");
    g.strings("tokenizer.ggml.tokens", {"a", "b", "ab", "\xC4\xA0",
                                        "\xC4\xA0"
                                        "ab",
                                        "c", "<|endoftext|>", "x"});
    g.strings("tokenizer.ggml.merges", {"a b", "\xC4\xA0 ab"});
    g.ints("tokenizer.ggml.token_type", {1, 1, 1, 1, 1, 1, 3, 1});
    g.id("tokenizer.ggml.eos_token_id", 6);
    return g;
  }

  std::string bytes() const {
    const LlamaConfig c = test::small_config(32, 1, 2, 1, 64, vocab);
    std::string out = "GGUF" + u32(3);
    const auto specs = llama_tensor_specs(c);
    const std::vector<std::pair<std::string, std::uint32_t>> config = {
        {"llama.embedding_length", c.dim},         {"llama.block_count", c.n_layers},
        {"llama.attention.head_count", c.n_heads}, {"llama.attention.head_count_kv", c.n_kv_heads},
        {"llama.feed_forward_length", c.ffn_dim},  {"llama.context_length", c.context}};
    out += u64(specs.size()) + u64(1 + config.size() + kvs.size());
    out += str("general.architecture") + u32(8) + str("llama");
    for (const auto& [k, v] : config) out += str(k) + u32(4) + u32(v);
    for (const auto& kv : kvs) out += str(kv.key) + kv.value;
    std::uint64_t offset = 0;
    for (const auto& s : specs) {
      out += str(s.name) + u32(static_cast<std::uint32_t>(s.shape.size()));
      std::uint64_t n = 1;
      for (auto d : s.shape) {
        out += u64(d);
        n *= d;
      }
      out += u32(0) + u64(offset);
      offset += (n * 4 + 31) / 32 * 32;
    }
    out.append((32 - out.size() % 32) % 32, '\0');
    out.append(offset, '\0');
    return out;
  }
};

class TokenizerMetadata : public ::testing::Test {
 protected:
  std::filesystem::path write(const std::string& name, const TokGguf& g) {
    const auto p = dir_.path() / name;
    const std::string b = g.bytes();
    std::ofstream(p, std::ios::binary).write(b.data(), static_cast<std::streamsize>(b.size()));
    return p;
  }
  // Refused with a FormatError naming the file and every one of `words`.
  void expect_refused(const std::string& name, const TokGguf& g,
                      const std::vector<std::string>& words) {
    const auto p = write(name, g);
    try {
      (void)open_model_file(p);
      ADD_FAILURE() << name << " was accepted";
    } catch (const FormatError& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find(p.string()), std::string::npos) << what;
      for (const auto& w : words) EXPECT_NE(what.find(w), std::string::npos) << what;
    }
  }
  test::TempDir dir_;
};

TEST_F(TokenizerMetadata, WellFormedVocabulariesWork) {
  const auto spm = open_model_file(write("spm.gguf", TokGguf::spm()));
  ASSERT_TRUE(spm.tokenizer);
  Tokenizer t(*spm.tokenizer);
  EXPECT_EQ(t.encode("ab"), (std::vector<std::int32_t>{1, 7}));
  EXPECT_EQ(t.encode("ab ab", false), (std::vector<std::int32_t>{7, 7}));
  EXPECT_EQ(t.decode(t.encode("ab ab")), "ab ab");
  // Bytes with no token of their own and no <0xNN>: the unknown token.
  EXPECT_EQ(t.encode("c", false), (std::vector<std::int32_t>{6, 0}));
  const auto bpe = open_model_file(write("bpe.gguf", TokGguf::bpe()));
  ASSERT_TRUE(bpe.tokenizer);
  Tokenizer b(*bpe.tokenizer);
  EXPECT_EQ(b.encode("ab ab c"), (std::vector<std::int32_t>{2, 4, 3, 5}));
  EXPECT_EQ(b.decode(b.encode("ab ab c")), "ab ab c");
}

TEST_F(TokenizerMetadata, NoneOrUnsupportedMeansTokenIdsOnly) {
  TokGguf none = TokGguf::spm();
  none.string("tokenizer.ggml.model", "none");
  EXPECT_FALSE(open_model_file(write("none.gguf", none)).tokenizer);
  TokGguf absent = TokGguf::spm();
  absent.erase("tokenizer.ggml.model");
  EXPECT_FALSE(open_model_file(write("absent.gguf", absent)).tokenizer);
  TokGguf t5 = TokGguf::spm();
  t5.string("tokenizer.ggml.model", "t5");
  EXPECT_FALSE(open_model_file(write("t5.gguf", t5)).tokenizer);
  TokGguf qwen = TokGguf::bpe();
  qwen.string("tokenizer.ggml.pre", "qwen2");
  EXPECT_FALSE(open_model_file(write("qwen.gguf", qwen)).tokenizer);
}

TEST_F(TokenizerMetadata, TokenCountDifferentFromTheVocabulary) {
  TokGguf more = TokGguf::spm();
  more.vocab = 7;
  expect_refused("more.gguf", more, {"tokenizer.ggml.tokens", "8 tokens", "has 7"});
  TokGguf fewer = TokGguf::spm();
  fewer.vocab = 9;
  expect_refused("fewer.gguf", fewer, {"tokenizer.ggml.tokens", "8 tokens", "has 9"});
  TokGguf missing = TokGguf::spm();
  missing.erase("tokenizer.ggml.tokens");
  expect_refused("missing.gguf", missing, {"tokenizer.ggml.tokens"});
}

TEST_F(TokenizerMetadata, ArraysOfTheWrongLengthOrType) {
  TokGguf scores = TokGguf::spm();
  scores.floats("tokenizer.ggml.scores", {0, 0, 0});
  expect_refused("scores.gguf", scores, {"tokenizer.ggml.scores", "3 entries"});
  TokGguf nan = TokGguf::spm();
  nan.floats("tokenizer.ggml.scores", {0, 0, 0, 0, std::nanf(""), 0, 0, 0});
  expect_refused("nan.gguf", nan, {"tokenizer.ggml.scores", "finite"});
  TokGguf types = TokGguf::spm();
  types.ints("tokenizer.ggml.token_type", {1, 1});
  expect_refused("types.gguf", types, {"tokenizer.ggml.token_type"});
  TokGguf bad_type = TokGguf::spm();
  bad_type.ints("tokenizer.ggml.token_type", {2, 3, 3, 1, 99, 1, 1, 1});
  expect_refused("type99.gguf", bad_type, {"tokenizer.ggml.token_type", "99"});
  TokGguf int_scores = TokGguf::spm();
  int_scores.ints("tokenizer.ggml.scores", {0, 0, 0, 0, 0, 0, 0, 0});
  expect_refused("int-scores.gguf", int_scores, {"tokenizer.ggml.scores"});
  TokGguf twice = TokGguf::spm();
  twice.strings("tokenizer.ggml.tokens", {"<unk>", "<s>", "</s>", "a", "b", "a", "c", "d"});
  expect_refused("twice.gguf", twice, {"tokenizer.ggml.tokens", "twice"});
}

TEST_F(TokenizerMetadata, MergesNamingUnknownTokens) {
  for (const std::string merge : {"a zz", "zz b", "b a", "ab", " ab"}) {
    TokGguf g = TokGguf::bpe();
    g.strings("tokenizer.ggml.merges", {"a b", merge});
    expect_refused("merge.gguf", g, {"tokenizer.ggml.merges", "merge 1"});
  }
  TokGguf none = TokGguf::bpe();
  none.erase("tokenizer.ggml.merges");
  expect_refused("no-merges.gguf", none, {"tokenizer.ggml.merges"});
}

TEST_F(TokenizerMetadata, HugeStringsAndCounts) {
  const TokGguf good = TokGguf::spm();
  const std::string bytes = good.bytes();
  const std::string key = TokGguf::str("tokenizer.ggml.tokens");
  const std::size_t at = bytes.find(key) + key.size() + 8;  // the element count
  auto patched = [&](std::size_t offset, std::uint64_t v) {
    std::string b = bytes;
    std::memcpy(b.data() + offset, &v, 8);
    return b;
  };
  auto refused = [&](const std::string& name, const std::string& b, const std::string& word) {
    const auto p = dir_.path() / name;
    std::ofstream(p, std::ios::binary).write(b.data(), static_cast<std::streamsize>(b.size()));
    try {
      (void)open_model_file(p);
      ADD_FAILURE() << name << " was accepted";
    } catch (const FormatError& e) {
      EXPECT_NE(std::string(e.what()).find(word), std::string::npos) << e.what();
    }
  };
  refused("count.gguf", patched(at, 1ull << 60), "tokenizer.ggml.tokens");
  refused("length.gguf", patched(at + 8, 1ull << 40), "tokenizer.ggml.tokens");
  refused("length2.gguf", patched(at + 8, 100000), "tokenizer.ggml.tokens");
  TokGguf long_token = TokGguf::spm();
  long_token.strings("tokenizer.ggml.tokens", {"<unk>", "<s>", "</s>", "a", "b", "ab",
                                               std::string(kMaxTokenBytes + 1, 'x'), "c"});
  expect_refused("long.gguf", long_token, {"tokenizer.ggml.tokens", "at most"});
}

TEST_F(TokenizerMetadata, SpecialIdsOutsideTheVocabulary) {
  for (const std::string key :
       {"bos_token_id", "eos_token_id", "unknown_token_id", "padding_token_id"}) {
    TokGguf g = TokGguf::spm();
    g.id("tokenizer.ggml." + key, 8);
    expect_refused(key + ".gguf", g, {"tokenizer.ggml." + key});
  }
  TokGguf no_bos = TokGguf::bpe();
  no_bos.flag("tokenizer.ggml.add_bos_token", true);
  expect_refused("no-bos.gguf", no_bos, {"add_bos_token"});
  TokGguf not_bool = TokGguf::spm();
  not_bool.id("tokenizer.ggml.add_bos_token", 1);
  expect_refused("not-bool.gguf", not_bool, {"tokenizer.ggml.add_bos_token"});
}

// --- the tokenizer in a pool -------------------------------------------------------------

TEST(TokenizerPool, APoolKeepsTheTokenizerOfTheFile) {
  for (const std::string name : {"tok-spm.gguf", "tok-gpt2.gguf"}) {
    const ModelFile file = open_model_file(kData / name);
    const std::string uri = "shm://" + test::unique_name("tok");
    test::BackendGuard guard(uri);
    auto pool = Pool::create(create_backend(uri, file.total_bytes() + (64u << 20)));
    load_model_into_pool(file, *pool, "m");
    auto reader = Pool::attach(open_backend(uri));
    const auto data = pool_tokenizer(*reader->model("m"));
    ASSERT_TRUE(data) << name;
    const Tokenizer from_pool(*data);
    const Tokenizer& from_file = file_tokenizer(name);
    EXPECT_EQ(data->tokens, from_file.data().tokens);
    EXPECT_EQ(data->scores, from_file.data().scores);
    EXPECT_EQ(data->types, from_file.data().types);
    EXPECT_EQ(data->merges, from_file.data().merges);
    for (const auto& c : oracle_cases(name.substr(0, name.size() - 5) + ".tokens.json"))
      EXPECT_EQ(from_pool.encode(c.text), c.tokens) << c.text;
  }
}

TEST(TokenizerPool, AModelWithoutAVocabularyHasNone) {
  const LlamaConfig c = test::small_config(32, 1, 2, 1, 64, 40);
  test::TempDir dir;
  write_gguf(make_synthetic_llama(c, 1), dir.path() / "m.gguf", DType::kF32);
  const ModelFile file = open_model_file(dir.path() / "m.gguf");
  EXPECT_FALSE(file.tokenizer);
  const std::string uri = "shm://" + test::unique_name("tok");
  test::BackendGuard guard(uri);
  auto pool = Pool::create(create_backend(uri, file.total_bytes() + (16u << 20)));
  const auto view = load_model_into_pool(file, *pool, "m");
  EXPECT_FALSE(pool_tokenizer(*view));
}

TEST(TokenizerPool, TheEngineTokenizesPromptText) {
  EngineConfig config;
  config.pool_uri = "shm://" + test::unique_name("tok-engine");
  config.cache_bytes = 0;
  test::BackendGuard guard(config.pool_uri);
  InferenceEngine engine(config);
  engine.register_model(kData / "tok-spm.gguf", "spm");
  const LlamaConfig c = test::small_config(32, 1, 2, 1, 64, 40);
  test::TempDir dir;
  write_gguf(make_synthetic_llama(c, 1), dir.path() / "ids.gguf", DType::kF32);
  engine.register_model(dir.path() / "ids.gguf", "ids");
  engine.attach_model("spm");
  ASSERT_NE(engine.tokenizer(), nullptr);
  InferenceRequest text;
  text.id = "text";
  text.prompt_text = "The quick brown fox";
  text.max_new_tokens = 4;
  InferenceRequest ids = text;
  ids.prompt_text.clear();
  ids.prompt = {1, 450, 4996, 17354, 1701, 29916};
  const auto a = engine.inference(text), b = engine.inference(ids);
  EXPECT_EQ(a.output_tokens, b.output_tokens);
  EXPECT_EQ(engine.batch_inference({text, ids})[0].output_tokens, b.output_tokens);
  InferenceRequest both = ids;
  both.prompt_text = "x";
  EXPECT_THROW(engine.submit(both), ConfigError);
  // Through the worker protocol's JSON too.
  nlohmann::json j = text;
  EXPECT_EQ(j["prompt_text"], "The quick brown fox");
  InferenceRequest back = j.get<InferenceRequest>();
  EXPECT_EQ(back.prompt_text, text.prompt_text);
  EXPECT_TRUE(back.prompt.empty());
  engine.attach_model("ids");
  EXPECT_EQ(engine.tokenizer(), nullptr);
  try {
    engine.submit(text);
    ADD_FAILURE() << "text accepted by a model without a tokenizer";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("no tokenizer"), std::string::npos) << e.what();
  }
  ids.prompt = {1, 2, 3};  // ids still work
  EXPECT_EQ(engine.inference(ids).output_tokens.size(), 4u);
}

}  // namespace
}  // namespace xlshare
