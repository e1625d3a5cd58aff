// Two small vocabularies for the tokenizer fuzz target and its seed corpus: an SPM one with
// every byte token, and a byte-level BPE one with every byte and a few merges.
#pragma once

#include <fmt/format.h>

#include "xlshare/model/tokenizer.hpp"

namespace xlshare::fuzz {

inline TokenizerData tiny_spm() {
  TokenizerData d = TokenizerData::defaults(TokenizerKind::kSpm, "default");
  d.tokens = {"<unk>", "<s>", "</s>"};
  d.types = {2, 3, 3};
  for (int b = 0; b < 256; ++b) {
    d.tokens.push_back(fmt::format("<0x{:02X}>", b));
    d.types.push_back(6);
  }
  for (const char* t : {"\xE2\x96\x81", "a", "b",
                        "\xE2\x96\x81"
                        "a",
                        "ab",
                        "\xE2\x96\x81"
                        "ab",
                        "\xC3\xA9"}) {
    d.tokens.push_back(t);
    d.types.push_back(1);
  }
  d.scores.assign(d.tokens.size(), 0.0f);
  for (std::size_t i = 259; i < d.scores.size(); ++i) d.scores[i] = -static_cast<float>(i % 5);
  return d;
}

inline TokenizerData tiny_bpe() {
  TokenizerData d = TokenizerData::defaults(TokenizerKind::kBpe, "gpt-2");
  // GPT-2's bytes_to_unicode: printable bytes stand for themselves, the rest for U+0100...
  int next = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    const int cp = printable ? b : next++;
    std::string s;
    if (cp < 0x80) {
      s += static_cast<char>(cp);
    } else {
      s += static_cast<char>(0xC0 | (cp >> 6));
      s += static_cast<char>(0x80 | (cp & 0x3F));
    }
    d.tokens.push_back(s);
  }
  for (const char* t : {"th", "the", "\xC4\xA0t", "\xC4\xA0the", "<|endoftext|>"})
    d.tokens.push_back(t);
  d.merges = {"t h", "th e", "\xC4\xA0 t", "\xC4\xA0 the"};
  d.eos_id = static_cast<std::int32_t>(d.tokens.size()) - 1;
  d.types.assign(d.tokens.size(), 1);
  d.types.back() = 3;
  return d;
}

}  // namespace xlshare::fuzz
