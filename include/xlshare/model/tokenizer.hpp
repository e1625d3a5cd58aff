// Tokenizer: text to token ids and back, from the vocabulary a model file carries (GGUF's
// tokenizer.ggml.* metadata), giving the ids llama.cpp (c392e509) gives for the same text.
//
// Two kinds:
//  - kSpm (tokenizer.ggml.model "llama"): SentencePiece-style. Spaces become U+2581, one is
//    put in front of the text (add_space_prefix), adjacent pieces are merged while their
//    concatenation is a token, the highest score first, and what is left that is not a token
//    falls back to its bytes (<0xNN> tokens).
//  - kBpe ("gpt2"): byte-level BPE. The text is split by the pre-tokenizer (`pre`: "gpt-2"
//    and its aliases, or "llama-bpe"/"llama3"), each piece's bytes are mapped to printable
//    code points (GPT-2's bytes_to_unicode) and merged by merge rank. An absent `pre` is
//    taken as "gpt-2" (llama.cpp uses a "default" split of its own there, and warns).
// Other kinds and pre-tokenizers are not implemented: such a model has no Tokenizer and is
// driven with token ids, as a model without a vocabulary ("none") is.
//
// The pre-tokenizers classify code points as letters (\p{L}), numbers (\p{N}) and
// whitespace (\s) with tables generated from Unicode 14 (scripts/gen_unicode_classes.py):
// every script, not only the ones the tests use. User-defined tokens are not split out of
// the text before tokenizing (llama.cpp does; the supported vocabularies have none), and
// special tokens written in the text ("<s>") are text, as llama.cpp's parse_special=false.
//
// Invalid UTF-8 never fails: SPM gives bad bytes their <0xNN> tokens; byte-level BPE encodes
// the byte itself (llama.cpp replaces it with U+FFFD first), so decode(encode(x)) == x for
// any bytes x.
//
// Where a tokenizer lives: a ModelFile carries the TokenizerData of its GGUF metadata
// (std::nullopt when it has none). A model loaded into a pool keeps it inside its metadata
// blob (see model_loader.hpp), which the pool checksums at seal and verifies at every
// attach like the rest of the catalog; reading it back validates it exactly as the GGUF
// reader does. Not a tensor: tensors are weights that the schedule, the caches and the
// scrubber handle, and every one of them expects to find a layer's weight there.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace xlshare {

enum class TokenizerKind : std::uint8_t {
  kSpm,  ///< tokenizer.ggml.model "llama"
  kBpe,  ///< tokenizer.ggml.model "gpt2"
};

/// tokenizer.ggml.token_type values (llama.cpp's llama_token_type).
enum class TokenType : std::int32_t {
  kUndefined = 0,
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,
};

/// Limits a vocabulary must keep (far above any real one: 256K tokens, a few MB).
inline constexpr std::size_t kMaxTokenizerTokens = 1u << 22;     ///< tokens, and merges
inline constexpr std::size_t kMaxTokenBytes = 64u << 10;         ///< one token or merge
inline constexpr std::uint64_t kMaxTokenizerBytes = 256u << 20;  ///< all tokens and merges

/// A vocabulary as plain data, as GGUF stores it; Tokenizer is built from it.
struct TokenizerData {
  TokenizerKind kind = TokenizerKind::kSpm;
  /// The pre-tokenizer (tokenizer.ggml.pre): BPE "gpt-2" (default) or "llama-bpe"; SPM
  /// ignores it.
  std::string pre;
  std::vector<std::string> tokens;  ///< the text of each id (bytes, not always UTF-8)
  std::vector<float> scores;        ///< empty (all 0) or one per token: SPM merge priority
  std::vector<std::int32_t> types;  ///< empty (all kNormal) or one TokenType per token
  std::vector<std::string> merges;  ///< BPE: "left right", best (rank 0) first
  /// Special tokens, -1 when there is none.
  std::int32_t bos_id = -1, eos_id = -1, unk_id = -1, pad_id = -1;
  bool add_bos = false;           ///< encode(text, true) puts bos_id first
  bool add_eos = false;           ///< encode(text, true) puts eos_id last
  bool add_space_prefix = false;  ///< SPM: a space goes in front of the text

  /// The defaults llama.cpp gives a vocabulary of this kind and pre-tokenizer before the
  /// file's keys override them (SPM: BOS 1, EOS 2, UNK 0, add_bos, space prefix; BPE
  /// "llama-bpe": add_bos).
  static TokenizerData defaults(TokenizerKind kind, std::string_view pre);

  /// Checks everything encode and decode rely on: `vocab` tokens (the model's vocabulary;
  /// 0: any number), each at most kMaxTokenBytes and kMaxTokenizerBytes in all, none twice;
  /// scores finite and types known, one per token when present; every merge "a b" with a,
  /// b and ab tokens; special ids inside the vocabulary, and set when they are to be added;
  /// a supported pre-tokenizer. @throws FormatError "where: tokenizer.ggml.KEY ...".
  void validate(std::uint32_t vocab, const std::string& where) const;
};

/// Whether xlshare implements this tokenizer.ggml.model / tokenizer.ggml.pre pair.
bool tokenizer_supported(std::string_view model, std::string_view pre) noexcept;

/// TokenizerData as bytes (a versioned binary layout) and back: how a pool stores it.
/// parse_tokenizer checks every length against the bytes it has, then validate(vocab).
/// @throws FormatError naming `where`.
std::string serialize_tokenizer(const TokenizerData& data);
TokenizerData parse_tokenizer(std::string_view bytes, std::uint32_t vocab,
                              const std::string& where);

class Tokenizer {
 public:
  /// @throws FormatError when data.validate(0, where) does.
  explicit Tokenizer(TokenizerData data, const std::string& where = "tokenizer");
  // Not copyable: the lookup table views the token strings it owns. Moving keeps them.
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;
  Tokenizer(Tokenizer&&) noexcept = default;
  Tokenizer& operator=(Tokenizer&&) noexcept = default;

  /// The ids of `text`, with BOS/EOS as the vocabulary says when add_special. Any bytes
  /// are accepted.
  std::vector<std::int32_t> encode(std::string_view text, bool add_special = true) const;
  /// The text of `ids`: control and unknown tokens (BOS, EOS) render as nothing, the space
  /// encode put in front of the text is taken off again, an id outside the vocabulary
  /// renders as U+FFFD (a model whose vocabulary is larger than its tokenizer's can emit
  /// one; decoding is never what fails a request). The bytes may be invalid UTF-8 when the
  /// ids are (a byte token alone).
  std::string decode(std::span<const std::int32_t> ids) const;
  /// The bytes one token stands for (what decode concatenates; no space taken off): part
  /// of a UTF-8 character for byte tokens. TokenStreamDecoder makes whole characters.
  std::string token_to_piece(std::int32_t id) const;

  std::size_t vocab_size() const noexcept { return data_.tokens.size(); }
  const TokenizerData& data() const noexcept { return data_; }
  /// The id of this exact token text, or -1.
  std::int32_t find(std::string_view text) const noexcept;

 private:
  void encode_spm(std::string_view text, std::vector<std::int32_t>& out) const;
  void encode_bpe(std::string_view text, std::vector<std::int32_t>& out) const;
  void push_byte_fallback(std::uint8_t byte, std::vector<std::int32_t>& out) const;
  TokenType type(std::int32_t id) const noexcept;

  TokenizerData data_;
  bool llama3_ = false;  // BPE: the llama-bpe pre-tokenizer (and whole words as tokens first)
  std::unordered_map<std::string_view, std::int32_t> ids_;  // views into data_.tokens
  std::unordered_map<std::string, std::int32_t> ranks_;     // BPE: "left\0right" -> rank
  std::array<std::int32_t, 256> byte_ids_{};                // SPM: <0xNN> or the byte, or -1
};

/// Turns generated ids into text as they come: a character whose bytes are split across
/// tokens (byte-fallback tokens like <0xE2>) is held back until it is whole, so every
/// piece returned is complete UTF-8 (bytes that can never become valid pass through).
class TokenStreamDecoder {
 public:
  /// `at_start`: the ids begin a sequence, so the space encode put in front is taken off
  /// (false for tokens generated after a prompt). `tokenizer` must outlive this.
  explicit TokenStreamDecoder(const Tokenizer& tokenizer, bool at_start = false)
      : tokenizer_(&tokenizer), strip_space_(at_start) {}
  /// The text that `id` completes (may be empty).
  std::string push(std::int32_t id);
  /// What is still held back (an unfinished character, as its bytes).
  std::string finish();

 private:
  const Tokenizer* tokenizer_;
  bool strip_space_;
  std::string pending_;
};

}  // namespace xlshare
