// Tokenizer: SPM and byte-level BPE encoding, decoding, validation and the pool's byte form.
#include "xlshare/model/tokenizer.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <queue>
#include <unordered_set>

#include "xlshare/error.hpp"

namespace xlshare {
namespace {

[[noreturn]] void bad(const std::string& where, const std::string& what) {
  throw FormatError(fmt::format("{}: {}", where, what));
}

constexpr std::string_view kSpmSpace = "\xE2\x96\x81";     // U+2581, SentencePiece's space
constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD

// --- pre-tokenizer names (llama.cpp's llama_vocab::impl::load) ---------------------------

enum class PreKind : std::uint8_t { kGpt2, kLlama3, kUnsupported };

PreKind pre_kind(std::string_view pre) noexcept {
  // An absent pre-tokenizer is taken as GPT-2's (llama.cpp falls back to a "default" split
  // of its own that xlshare does not implement, and warns that quality suffers).
  static constexpr std::string_view kGpt2[] = {
      "",           "gpt-2",      "phi-2",      "jina-es",      "jina-de",     "gigachat",
      "jina-v1-en", "jina-v2-es", "jina-v2-de", "jina-v2-code", "roberta-bpe", "mpt",
      "olmo",       "jais"};
  static constexpr std::string_view kLlama3[] = {"llama3", "llama-v3", "llama-bpe", "falcon3"};
  if (std::find(std::begin(kGpt2), std::end(kGpt2), pre) != std::end(kGpt2)) return PreKind::kGpt2;
  if (std::find(std::begin(kLlama3), std::end(kLlama3), pre) != std::end(kLlama3))
    return PreKind::kLlama3;
  return PreKind::kUnsupported;
}

// --- code points and their classes ------------------------------------------------------

enum CharClass : std::uint8_t { kOther, kLetter, kNumber, kSpace, kEnd };

struct ClassRange {
  std::uint32_t first, last;
  CharClass cls;
};
constexpr ClassRange kClassRanges[] = {
#include "model/unicode_classes.inc"
};

bool is_space(std::uint32_t cp) noexcept {
  // \s as the regex engines the pre-tokenizers were written for read it (llama.cpp's set).
  switch (cp) {
    case 0x09:
    case 0x0A:
    case 0x0B:
    case 0x0C:
    case 0x0D:
    case 0x20:
    case 0x85:
    case 0xA0:
    case 0x1680:
    case 0x2028:
    case 0x2029:
    case 0x202F:
    case 0x205F:
    case 0x3000:
      return true;
    default:
      return cp >= 0x2000 && cp <= 0x200A;
  }
}

CharClass classify(std::uint32_t cp) noexcept {
  if (is_space(cp)) return kSpace;
  const auto* end = std::end(kClassRanges);
  const auto* it =
      std::upper_bound(std::begin(kClassRanges), end, cp,
                       [](std::uint32_t c, const ClassRange& r) { return c < r.first; });
  if (it == std::begin(kClassRanges)) return kOther;
  --it;
  return cp <= it->last ? it->cls : kOther;
}

// One code point of a text: its value, class and where its bytes start. A byte that does
// not begin a well-formed sequence is a unit of its own, classed as U+FFFD (a symbol) is.
struct Unit {
  std::uint32_t cp;
  CharClass cls;
  std::size_t offset;
};

// The length of the well-formed UTF-8 sequence at s[i] (as llama.cpp reads one: the lead
// byte's length when its continuation bytes follow), or 1 for a byte that begins none.
std::size_t utf8_length(std::string_view s, std::size_t i, std::uint32_t* cp) noexcept {
  const auto b = static_cast<std::uint8_t>(s[i]);
  std::size_t need = 0;
  std::uint32_t v = b;
  if (b >= 0xC0 && b < 0xE0) {
    need = 1, v = b & 0x1Fu;
  } else if (b >= 0xE0 && b < 0xF0) {
    need = 2, v = b & 0x0Fu;
  } else if (b >= 0xF0 && b < 0xF8) {
    need = 3, v = b & 0x07u;
  } else if (b >= 0x80) {
    *cp = 0xFFFD;
    return 1;
  }
  if (i + need >= s.size() && need > 0) {
    *cp = 0xFFFD;
    return 1;
  }
  for (std::size_t k = 1; k <= need; ++k) {
    const auto c = static_cast<std::uint8_t>(s[i + k]);
    if ((c & 0xC0) != 0x80) {
      *cp = 0xFFFD;
      return 1;
    }
    v = (v << 6) | (c & 0x3Fu);
  }
  *cp = v;
  return need + 1;
}

std::vector<Unit> units_of(std::string_view s) {
  std::vector<Unit> out;
  out.reserve(s.size());
  std::size_t i = 0;
  while (i < s.size()) {
    std::uint32_t cp = 0;
    const std::size_t len = utf8_length(s, i, &cp);
    out.push_back({cp, classify(cp), i});  // a bad byte: U+FFFD, a symbol
    i += len;
  }
  return out;
}

// The pre-tokenizers: cut `u` (the units of one text) into words, as unit index ranges.
// Hand-written forms of the regular expressions they are known by.
class Splitter {
 public:
  explicit Splitter(const std::vector<Unit>& u) : u_(u), n_(u.size()) {}

  // GPT-2: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
  std::vector<std::pair<std::size_t, std::size_t>> gpt2() {
    std::size_t pos = 0;
    while (pos < n_) {
      if (const std::size_t end = contraction(pos, false)) {
        pos = emit(pos, end);
        continue;
      }
      const bool space = cp(pos) == ' ';
      const CharClass c = space ? cls(pos + 1) : cls(pos);
      if (c == kLetter || c == kNumber || c == kOther) {
        std::size_t p = pos + (space ? 1 : 0);
        while (cls(p) == c) ++p;
        pos = emit(pos, p);
        continue;
      }
      pos = emit(pos, pos + whitespace(pos));
    }
    return std::move(words_);
  }

  // Llama 3: (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
  //          ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
  std::vector<std::pair<std::size_t, std::size_t>> llama3() {
    std::size_t pos = 0;
    while (pos < n_) {
      if (const std::size_t end = contraction(pos, true)) {
        pos = emit(pos, end);
        continue;
      }
      const std::uint32_t ch = cp(pos);
      const CharClass c = cls(pos);
      if (ch != '\r' && ch != '\n' && c != kNumber && (c == kLetter || cls(pos + 1) == kLetter)) {
        std::size_t p = pos + 1;
        while (cls(p) == kLetter) ++p;
        pos = emit(pos, p);
        continue;
      }
      if (c == kNumber) {
        std::size_t p = pos;
        while (cls(p) == kNumber && p - pos < 3) ++p;
        pos = emit(pos, p);
        continue;
      }
      const bool space = ch == ' ';
      const CharClass c2 = space ? cls(pos + 1) : c;
      if (c2 != kSpace && c2 != kLetter && c2 != kNumber) {
        std::size_t p = pos + (space ? 1 : 0);
        while (cls(p) == kOther) ++p;
        while (cp(p) == '\r' || cp(p) == '\n') ++p;
        pos = emit(pos, p);
        continue;
      }
      std::size_t k = 0, last_newline_end = 0;
      while (cls(pos + k) == kSpace) {
        if (cp(pos + k) == '\r' || cp(pos + k) == '\n') last_newline_end = pos + k + 1;
        ++k;
      }
      pos = emit(pos, last_newline_end ? last_newline_end : pos + whitespace(pos));
    }
    return std::move(words_);
  }

 private:
  static constexpr std::uint32_t kNone = 0xFFFFFFFF;
  std::uint32_t cp(std::size_t p) const noexcept { return p < n_ ? u_[p].cp : kNone; }
  CharClass cls(std::size_t p) const noexcept { return p < n_ ? u_[p].cls : kEnd; }
  std::size_t emit(std::size_t a, std::size_t b) {
    if (b > a) words_.emplace_back(a, b);
    return std::max(b, a + 1);
  }
  // The end of a contraction ('s 't 'm 'd 're 've 'll) at `pos`, or 0.
  std::size_t contraction(std::size_t pos, bool any_case) const noexcept {
    if (cp(pos) != '\'') return 0;
    auto lower = [&](std::size_t p) -> std::uint32_t {
      const std::uint32_t c = cp(p);
      return any_case && c >= 'A' && c <= 'Z' ? c + 32 : c;
    };
    const std::uint32_t a = lower(pos + 1), b = lower(pos + 2);
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return pos + 2;
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return pos + 3;
    return 0;
  }
  // \s+(?!\S)|\s+ at `pos`: a run of whitespace, less its last unit when a non-space follows
  // (that unit goes with the word after it); at least 1.
  std::size_t whitespace(std::size_t pos) const noexcept {
    std::size_t k = 0;
    while (cls(pos + k) == kSpace) ++k;
    if (k > 1 && pos + k < n_) return k - 1;
    return std::max<std::size_t>(k, 1);
  }

  const std::vector<Unit>& u_;
  std::size_t n_;
  std::vector<std::pair<std::size_t, std::size_t>> words_;
};

// --- GPT-2's bytes_to_unicode -----------------------------------------------------------

struct ByteMap {
  std::array<std::string, 256> to_text;       // byte -> the UTF-8 of its printable code point
  std::array<std::int16_t, 0x144> to_byte{};  // code point -> byte, -1 for none
  ByteMap() {
    to_byte.fill(-1);
    int next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      const int cp = printable ? b : next++;
      to_byte[static_cast<std::size_t>(cp)] = static_cast<std::int16_t>(b);
      std::string s;
      if (cp < 0x80) {
        s += static_cast<char>(cp);
      } else {
        s += static_cast<char>(0xC0 | (cp >> 6));
        s += static_cast<char>(0x80 | (cp & 0x3F));
      }
      to_text[static_cast<std::size_t>(b)] = s;
    }
  }
};
const ByteMap& byte_map() {
  static const ByteMap m;
  return m;
}

// "<0xNN>" -> NN, or -1.
int byte_token_value(std::string_view t) noexcept {
  if (t.size() != 6 || t.substr(0, 3) != "<0x" || t[5] != '>') return -1;
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  const int hi = hex(t[3]), lo = hex(t[4]);
  return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

std::string rank_key(std::string_view left, std::string_view right) {
  // Length-prefixed: tokens may hold any byte, so no separator is safe.
  std::string key(4, '\0');
  const auto n = static_cast<std::uint32_t>(left.size());
  std::memcpy(key.data(), &n, 4);
  key.append(left);
  key.append(right);
  return key;
}

// One piece of the text while merging: a run of bytes [offset, offset + n) linked to its
// neighbours; n == 0 once merged into its left neighbour.
struct Symbol {
  int prev, next;
  std::size_t offset, n;
};

// The text's characters, one symbol each. A byte that begins no well-formed sequence is a
// symbol of its own (llama.cpp takes the lead byte's length regardless, so a cut sequence
// swallows the next character's bytes; the same for valid UTF-8, and invalid input still
// decodes to what it was).
std::vector<Symbol> symbols_of(std::string_view s) {
  std::vector<Symbol> out;
  std::size_t off = 0;
  while (off < s.size()) {
    std::uint32_t cp = 0;
    const std::size_t len = utf8_length(s, off, &cp);
    const int index = static_cast<int>(out.size());
    out.push_back({index - 1, off + len == s.size() ? -1 : index + 1, off, len});
    off += len;
  }
  return out;
}

}  // namespace

// --- TokenizerData -----------------------------------------------------------------------

TokenizerData TokenizerData::defaults(TokenizerKind kind, std::string_view pre) {
  TokenizerData d;
  d.kind = kind;
  d.pre = std::string(pre);
  if (kind == TokenizerKind::kSpm) {
    d.bos_id = 1;
    d.eos_id = 2;
    d.unk_id = 0;
    d.add_bos = true;
    d.add_space_prefix = true;
  } else {
    d.add_bos = pre_kind(pre) == PreKind::kLlama3;
  }
  return d;
}

bool tokenizer_supported(std::string_view model, std::string_view pre) noexcept {
  if (model == "llama") return true;
  return model == "gpt2" && pre_kind(pre) != PreKind::kUnsupported;
}

void TokenizerData::validate(std::uint32_t vocab, const std::string& where) const {
  const std::size_t n = tokens.size();
  if (n == 0) bad(where, "tokenizer.ggml.tokens is empty");
  if (n > kMaxTokenizerTokens)
    bad(where,
        fmt::format("tokenizer.ggml.tokens has {} tokens (at most {})", n, kMaxTokenizerTokens));
  // Equal, not merely at most: llama.cpp refuses a file whose embedding rows differ from
  // its token count, and every id either side can produce must mean something to the other.
  if (vocab != 0 && n != vocab) {
    bad(where, fmt::format("tokenizer.ggml.tokens has {} tokens; the model's vocabulary "
                           "(token_embd.weight) has {}",
                           n, vocab));
  }
  std::uint64_t total = 0;
  std::unordered_set<std::string_view> seen;
  seen.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    const auto& t = tokens[i];
    if (t.size() > kMaxTokenBytes)
      bad(where, fmt::format("tokenizer.ggml.tokens: token {} is {} bytes long (at most {})", i,
                             t.size(), kMaxTokenBytes));
    total += t.size();
    if (!t.empty() && !seen.insert(t).second)
      bad(where, fmt::format("tokenizer.ggml.tokens: token {} appears twice", i));
  }
  if (!scores.empty() && scores.size() != n)
    bad(where, fmt::format("tokenizer.ggml.scores has {} entries for {} tokens", scores.size(), n));
  for (std::size_t i = 0; i < scores.size(); ++i) {
    if (!std::isfinite(scores[i]))
      bad(where, fmt::format("tokenizer.ggml.scores: the score of token {} is not finite", i));
  }
  if (!types.empty() && types.size() != n)
    bad(where,
        fmt::format("tokenizer.ggml.token_type has {} entries for {} tokens", types.size(), n));
  for (std::size_t i = 0; i < types.size(); ++i) {
    if (types[i] < 0 || types[i] > static_cast<std::int32_t>(TokenType::kByte))
      bad(where,
          fmt::format("tokenizer.ggml.token_type: token {} has unknown type {}", i, types[i]));
    if (kind == TokenizerKind::kSpm && types[i] == static_cast<std::int32_t>(TokenType::kByte) &&
        byte_token_value(tokens[i]) < 0) {
      bad(where,
          fmt::format("tokenizer.ggml.token_type: byte token {} is not of the form <0xNN>", i));
    }
  }
  if (merges.size() > kMaxTokenizerTokens)
    bad(where, fmt::format("tokenizer.ggml.merges has {} merges (at most {})", merges.size(),
                           kMaxTokenizerTokens));
  std::string joined;
  for (std::size_t i = 0; i < merges.size(); ++i) {
    const std::string& m = merges[i];
    if (m.size() > kMaxTokenBytes)
      bad(where, fmt::format("tokenizer.ggml.merges: merge {} is {} bytes long (at most {})", i,
                             m.size(), kMaxTokenBytes));
    total += m.size();
    const std::size_t space = m.size() > 1 ? m.find(' ', 1) : std::string::npos;
    if (space == std::string::npos)
      bad(where, fmt::format("tokenizer.ggml.merges: merge {} is not two tokens and a space", i));
    const std::string_view a = std::string_view(m).substr(0, space);
    const std::string_view b = std::string_view(m).substr(space + 1);
    joined.assign(a);
    joined.append(b);
    for (std::string_view part : {a, b, std::string_view(joined)}) {
      if (!seen.count(part)) {
        bad(where, fmt::format("tokenizer.ggml.merges: merge {} names '{}', which is not a token",
                               i, std::string(part.substr(0, 64))));
      }
    }
  }
  if (total > kMaxTokenizerBytes)
    bad(where, fmt::format("tokenizer.ggml.tokens and merges hold {} bytes (at most {})", total,
                           kMaxTokenizerBytes));
  const std::pair<const char*, std::int32_t> ids[] = {{"bos_token_id", bos_id},
                                                      {"eos_token_id", eos_id},
                                                      {"unknown_token_id", unk_id},
                                                      {"padding_token_id", pad_id}};
  for (const auto& [key, id] : ids) {
    if (id < -1 || id >= static_cast<std::int64_t>(n))
      bad(where, fmt::format("tokenizer.ggml.{} {} is outside the {} tokens", key, id, n));
  }
  if (add_bos && bos_id < 0)
    bad(where, "tokenizer.ggml.add_bos_token is set but there is no tokenizer.ggml.bos_token_id");
  if (add_eos && eos_id < 0)
    bad(where, "tokenizer.ggml.add_eos_token is set but there is no tokenizer.ggml.eos_token_id");
  if (kind == TokenizerKind::kBpe && pre_kind(pre) == PreKind::kUnsupported)
    bad(where, fmt::format("tokenizer.ggml.pre '{}' is not supported (gpt-2, llama-bpe are)", pre));
}

// --- the pool's byte form ---------------------------------------------------------------

namespace {

constexpr char kMagic[8] = {'X', 'L', 'S', 'T', 'O', 'K', '\0', '\1'};

class ByteReader {
 public:
  ByteReader(std::string_view s, const std::string& where) : s_(s), where_(where) {}
  template <typename T>
  T scalar() {
    T v;
    take(&v, sizeof v);
    return v;
  }
  std::string string() {
    const auto n = scalar<std::uint32_t>();
    if (n > kMaxTokenBytes || n > s_.size() - pos_)
      bad(where_,
          fmt::format("tokenizer: a string of {} bytes at offset {} does not fit", n, pos_));
    std::string out(s_.substr(pos_, n));
    pos_ += n;
    return out;
  }
  // A count of items at least `item_bytes` each: one the rest cannot hold is a lie.
  std::uint64_t count(std::size_t item_bytes) {
    const auto n = scalar<std::uint64_t>();
    if (n > kMaxTokenizerTokens || n > (s_.size() - pos_) / item_bytes)
      bad(where_, fmt::format("tokenizer: a count of {} at offset {} does not fit", n, pos_));
    return n;
  }
  void take(void* dst, std::size_t n) {
    if (n > s_.size() - pos_)
      bad(where_, fmt::format("tokenizer: truncated at offset {} ({} bytes)", pos_, s_.size()));
    if (n > 0) std::memcpy(dst, s_.data() + pos_, n);  // dst may be an empty vector's null
    pos_ += n;
  }
  bool done() const noexcept { return pos_ == s_.size(); }

 private:
  std::string_view s_;
  const std::string& where_;
  std::size_t pos_ = 0;
};

}  // namespace

std::string serialize_tokenizer(const TokenizerData& d) {
  std::string out(kMagic, sizeof kMagic);
  auto put = [&](const void* p, std::size_t n) {
    if (n > 0) out.append(static_cast<const char*>(p), n);
  };
  auto u32 = [&](std::uint32_t v) { put(&v, 4); };
  auto u64 = [&](std::uint64_t v) { put(&v, 8); };
  auto str = [&](const std::string& s) {
    u32(static_cast<std::uint32_t>(s.size()));
    out.append(s);
  };
  out += static_cast<char>(d.kind);
  out +=
      static_cast<char>((d.add_bos ? 1 : 0) | (d.add_eos ? 2 : 0) | (d.add_space_prefix ? 4 : 0));
  for (const std::int32_t id : {d.bos_id, d.eos_id, d.unk_id, d.pad_id}) put(&id, 4);
  str(d.pre);
  u64(d.tokens.size());
  for (const auto& t : d.tokens) str(t);
  u64(d.scores.size());
  put(d.scores.data(), d.scores.size() * sizeof(float));
  u64(d.types.size());
  put(d.types.data(), d.types.size() * sizeof(std::int32_t));
  u64(d.merges.size());
  for (const auto& m : d.merges) str(m);
  return out;
}

TokenizerData parse_tokenizer(std::string_view bytes, std::uint32_t vocab,
                              const std::string& where) {
  ByteReader r(bytes, where);
  char magic[sizeof kMagic];
  r.take(magic, sizeof magic);
  if (std::memcmp(magic, kMagic, sizeof magic) != 0)
    bad(where, "tokenizer: bad magic or an unknown version");
  TokenizerData d;
  const auto kind = r.scalar<std::uint8_t>();
  if (kind > static_cast<std::uint8_t>(TokenizerKind::kBpe))
    bad(where, fmt::format("tokenizer: unknown kind {}", kind));
  d.kind = static_cast<TokenizerKind>(kind);
  const auto flags = r.scalar<std::uint8_t>();
  if (flags > 7) bad(where, fmt::format("tokenizer: unknown flags {}", flags));
  d.add_bos = flags & 1;
  d.add_eos = flags & 2;
  d.add_space_prefix = flags & 4;
  d.bos_id = r.scalar<std::int32_t>();
  d.eos_id = r.scalar<std::int32_t>();
  d.unk_id = r.scalar<std::int32_t>();
  d.pad_id = r.scalar<std::int32_t>();
  d.pre = r.string();
  d.tokens.resize(r.count(4));
  for (auto& t : d.tokens) t = r.string();
  d.scores.resize(r.count(sizeof(float)));
  r.take(d.scores.data(), d.scores.size() * sizeof(float));
  d.types.resize(r.count(sizeof(std::int32_t)));
  r.take(d.types.data(), d.types.size() * sizeof(std::int32_t));
  d.merges.resize(r.count(4));
  for (auto& m : d.merges) m = r.string();
  if (!r.done()) bad(where, "tokenizer: trailing bytes");
  d.validate(vocab, where);
  return d;
}

// --- Tokenizer ---------------------------------------------------------------------------

Tokenizer::Tokenizer(TokenizerData data, const std::string& where) : data_(std::move(data)) {
  data_.validate(0, where);
  llama3_ = data_.kind == TokenizerKind::kBpe && pre_kind(data_.pre) == PreKind::kLlama3;
  ids_.reserve(data_.tokens.size());
  for (std::size_t i = 0; i < data_.tokens.size(); ++i) {
    if (!data_.tokens[i].empty()) ids_.emplace(data_.tokens[i], static_cast<std::int32_t>(i));
  }
  if (data_.kind == TokenizerKind::kBpe) {
    ranks_.reserve(data_.merges.size());
    for (std::size_t i = 0; i < data_.merges.size(); ++i) {
      const std::string& m = data_.merges[i];
      const std::size_t space = m.find(' ', 1);  // validated: present
      // The first of two equal merges keeps its rank, as llama.cpp's emplace does.
      ranks_.emplace(
          rank_key(std::string_view(m).substr(0, space), std::string_view(m).substr(space + 1)),
          static_cast<std::int32_t>(i));
    }
  }
  for (int b = 0; b < 256; ++b) {
    std::int32_t id = find(fmt::format("<0x{:02X}>", b));
    if (id < 0) id = find(std::string(1, static_cast<char>(b)));
    byte_ids_[static_cast<std::size_t>(b)] = id;
  }
}

std::int32_t Tokenizer::find(std::string_view text) const noexcept {
  const auto it = ids_.find(text);
  return it == ids_.end() ? -1 : it->second;
}

TokenType Tokenizer::type(std::int32_t id) const noexcept {
  if (data_.types.empty()) return TokenType::kNormal;
  return static_cast<TokenType>(data_.types[static_cast<std::size_t>(id)]);
}

std::vector<std::int32_t> Tokenizer::encode(std::string_view text, bool add_special) const {
  std::vector<std::int32_t> out;
  if (add_special && data_.add_bos) out.push_back(data_.bos_id);
  if (!text.empty()) {
    if (data_.kind == TokenizerKind::kSpm) {
      encode_spm(text, out);
    } else {
      encode_bpe(text, out);
    }
  }
  if (add_special && data_.add_eos) out.push_back(data_.eos_id);
  return out;
}

void Tokenizer::push_byte_fallback(std::uint8_t byte, std::vector<std::int32_t>& out) const {
  // A vocabulary without the byte's token (llama.cpp would throw): its unknown token, or
  // nothing when it has none.
  const std::int32_t id = byte_ids_[byte] >= 0 ? byte_ids_[byte] : data_.unk_id;
  if (id >= 0) out.push_back(id);
}

void Tokenizer::encode_spm(std::string_view text, std::vector<std::int32_t>& out) const {
  std::string s;
  s.reserve(text.size() * 3 + 3);
  if (data_.add_space_prefix) s.append(kSpmSpace);
  for (const char c : text) {
    if (c == ' ') {
      s.append(kSpmSpace);
    } else {
      s += c;
    }
  }
  std::vector<Symbol> sym = symbols_of(s);
  struct Bigram {
    int left, right;
    float score;
    std::size_t bytes;
  };
  // Highest score first; of equal scores, the leftmost.
  auto worse = [](const Bigram& a, const Bigram& b) {
    return a.score < b.score || (a.score == b.score && a.left > b.left);
  };
  std::priority_queue<Bigram, std::vector<Bigram>, decltype(worse)> queue(worse);
  auto try_add = [&](int left, int right) {
    if (left < 0 || right < 0) return;
    const auto& l = sym[static_cast<std::size_t>(left)];
    const auto& r = sym[static_cast<std::size_t>(right)];
    const std::int32_t id = find(std::string_view(s).substr(l.offset, l.n + r.n));
    if (id < 0) return;
    const float score = data_.scores.empty() ? 0.0f : data_.scores[static_cast<std::size_t>(id)];
    queue.push({left, right, score, l.n + r.n});
  };
  for (std::size_t i = 1; i < sym.size(); ++i)
    try_add(static_cast<int>(i - 1), static_cast<int>(i));
  while (!queue.empty()) {
    const Bigram b = queue.top();
    queue.pop();
    auto& l = sym[static_cast<std::size_t>(b.left)];
    auto& r = sym[static_cast<std::size_t>(b.right)];
    // Symbols only grow, so unchanged sizes mean this pair is still what it was.
    if (l.n == 0 || r.n == 0 || l.n + r.n != b.bytes) continue;
    l.n += r.n;
    r.n = 0;
    l.next = r.next;
    if (r.next >= 0) sym[static_cast<std::size_t>(r.next)].prev = b.left;
    try_add(l.prev, b.left);
    try_add(b.left, l.next);
  }
  for (int i = sym.empty() ? -1 : 0; i != -1; i = sym[static_cast<std::size_t>(i)].next) {
    const auto& x = sym[static_cast<std::size_t>(i)];
    const std::string_view piece = std::string_view(s).substr(x.offset, x.n);
    const std::int32_t id = find(piece);
    if (id >= 0) {
      out.push_back(id);
    } else {
      for (const char c : piece) push_byte_fallback(static_cast<std::uint8_t>(c), out);
    }
  }
}

void Tokenizer::encode_bpe(std::string_view text, std::vector<std::int32_t>& out) const {
  const std::vector<Unit> u = units_of(text);
  Splitter split(u);
  const auto words = llama3_ ? split.llama3() : split.gpt2();
  const ByteMap& bytes = byte_map();
  std::string word;
  std::vector<Symbol> sym;
  struct Bigram {
    int left, right;
    std::int32_t rank;
    std::size_t bytes;
  };
  // Lowest rank first; of equal ranks, the leftmost.
  auto worse = [](const Bigram& a, const Bigram& b) {
    return a.rank > b.rank || (a.rank == b.rank && a.left > b.left);
  };
  for (const auto& [first, last] : words) {
    const std::size_t begin = u[first].offset;
    const std::size_t end = last < u.size() ? u[last].offset : text.size();
    word.clear();
    for (std::size_t i = begin; i < end; ++i)
      word += bytes.to_text[static_cast<std::uint8_t>(text[i])];
    if (llama3_) {  // llama.cpp's ignore_merges: a word that is a token is that token
      if (const std::int32_t id = find(word); id >= 0) {
        out.push_back(id);
        continue;
      }
    }
    sym = symbols_of(word);
    std::priority_queue<Bigram, std::vector<Bigram>, decltype(worse)> queue(worse);
    auto try_add = [&](int left, int right) {
      if (left < 0 || right < 0) return;
      const auto& l = sym[static_cast<std::size_t>(left)];
      const auto& r = sym[static_cast<std::size_t>(right)];
      const auto it = ranks_.find(rank_key(std::string_view(word).substr(l.offset, l.n),
                                           std::string_view(word).substr(r.offset, r.n)));
      if (it == ranks_.end()) return;
      queue.push({left, right, it->second, l.n + r.n});
    };
    for (std::size_t i = 1; i < sym.size(); ++i)
      try_add(static_cast<int>(i - 1), static_cast<int>(i));
    while (!queue.empty()) {
      const Bigram b = queue.top();
      queue.pop();
      auto& l = sym[static_cast<std::size_t>(b.left)];
      auto& r = sym[static_cast<std::size_t>(b.right)];
      if (l.n == 0 || r.n == 0 || l.n + r.n != b.bytes) continue;
      l.n += r.n;
      r.n = 0;
      l.next = r.next;
      if (r.next >= 0) sym[static_cast<std::size_t>(r.next)].prev = b.left;
      try_add(l.prev, b.left);
      try_add(b.left, l.next);
    }
    for (const auto& x : sym) {
      if (x.n == 0) continue;
      const std::string_view piece = std::string_view(word).substr(x.offset, x.n);
      if (const std::int32_t id = find(piece); id >= 0) {
        out.push_back(id);
        continue;
      }
      // Only a vocabulary missing a byte's character gets here; as llama.cpp, each byte
      // that is a token of its own is kept and the rest dropped.
      for (const char c : piece) {
        if (const std::int32_t id = find(std::string_view(&c, 1)); id >= 0) out.push_back(id);
      }
    }
  }
}

std::string Tokenizer::token_to_piece(std::int32_t id) const {
  if (id < 0 || static_cast<std::size_t>(id) >= data_.tokens.size())
    return std::string(kReplacement);
  const std::string& text = data_.tokens[static_cast<std::size_t>(id)];
  switch (type(id)) {
    case TokenType::kControl:
    case TokenType::kUnknown:
    case TokenType::kUnused:
    case TokenType::kUndefined:
      return {};
    case TokenType::kUserDefined:
      return text;
    case TokenType::kByte:
      if (const int b = byte_token_value(text); b >= 0) return std::string(1, static_cast<char>(b));
      return text;
    case TokenType::kNormal:
      break;
  }
  std::string out;
  if (data_.kind == TokenizerKind::kSpm) {
    std::size_t pos = 0;
    while (pos < text.size()) {
      const std::size_t hit = text.find(kSpmSpace, pos);
      if (hit == std::string::npos) {
        out.append(text, pos);
        break;
      }
      out.append(text, pos, hit - pos);
      out += ' ';
      pos = hit + kSpmSpace.size();
    }
    return out;
  }
  // Byte-level BPE: each code point stands for one byte; one that does not (a vocabulary
  // of other making) stays as it is.
  const ByteMap& bytes = byte_map();
  const std::vector<Unit> units = units_of(text);
  for (std::size_t i = 0; i < units.size(); ++i) {
    const Unit& unit = units[i];
    if (unit.cp < bytes.to_byte.size() && bytes.to_byte[unit.cp] >= 0) {
      out += static_cast<char>(bytes.to_byte[unit.cp]);
    } else {
      const std::size_t end = i + 1 < units.size() ? units[i + 1].offset : text.size();
      out.append(text, unit.offset, end - unit.offset);
    }
  }
  return out;
}

std::string Tokenizer::decode(std::span<const std::int32_t> ids) const {
  TokenStreamDecoder d(*this, true);
  std::string out;
  for (const std::int32_t id : ids) out += d.push(id);
  out += d.finish();
  return out;
}

// --- TokenStreamDecoder ------------------------------------------------------------------

std::string TokenStreamDecoder::push(std::int32_t id) {
  std::string piece = tokenizer_->token_to_piece(id);
  if (strip_space_ && !piece.empty()) {
    if (tokenizer_->data().add_space_prefix && piece.front() == ' ') piece.erase(0, 1);
    strip_space_ = false;
  }
  pending_ += piece;
  // Hold back a character whose lead byte is in but not all of its continuation bytes.
  std::size_t cut = pending_.size();
  const std::size_t look = std::min<std::size_t>(4, pending_.size());
  for (std::size_t back = 1; back <= look; ++back) {
    const auto b = static_cast<std::uint8_t>(pending_[pending_.size() - back]);
    if ((b & 0xC0) == 0x80) continue;
    const std::size_t need = b >= 0xF0 && b < 0xF8   ? 4
                             : b >= 0xE0 && b < 0xF0 ? 3
                             : b >= 0xC0             ? 2
                                                     : 1;
    if (b >= 0xC0 && b < 0xF8 && need > back) cut = pending_.size() - back;
    break;
  }
  std::string out = pending_.substr(0, cut);
  pending_.erase(0, cut);
  return out;
}

std::string TokenStreamDecoder::finish() {
  std::string out;
  out.swap(pending_);
  return out;
}

}  // namespace xlshare
