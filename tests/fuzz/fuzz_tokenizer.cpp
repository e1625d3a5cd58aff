// libFuzzer target: the tokenizer. The first byte picks what the rest is:
//   0: a serialized vocabulary (how a pool keeps one): refused with a FormatError, or
//      accepted, and then it encodes and decodes without failing;
//   1, 2: text for a small SPM / byte-level BPE vocabulary: encoding gives ids inside the
//      vocabulary, the streamed text is the decoded text, and BPE gives the bytes back.
#include <cstdlib>
#include <cstring>

#include "fuzz/tiny_vocab.hpp"
#include "xlshare/error.hpp"

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

void exercise(const xlshare::Tokenizer& t, std::string_view text, bool round_trip) {
  const auto ids = t.encode(text, true);
  for (const auto id : ids) check(id >= 0 && static_cast<std::size_t>(id) < t.vocab_size());
  const std::string decoded = t.decode(ids);
  xlshare::TokenStreamDecoder stream(t, true);
  std::string streamed;
  for (const auto id : ids) streamed += stream.push(id);
  streamed += stream.finish();
  check(streamed == decoded);
  if (round_trip) check(decoded == text);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  if (data[0] % 3 == 0) {
    try {
      const xlshare::Tokenizer t(xlshare::parse_tokenizer(rest, 0, "fuzz"), "fuzz");
      exercise(t, "Hello world, the 3 caf\xC3\xA9s \xE2\x82", false);
      // Any id, in the vocabulary or not, decodes.
      std::vector<std::int32_t> ids;
      for (std::size_t i = 0; i + 4 <= rest.size() && ids.size() < 64; i += 4) {
        std::int32_t id;
        std::memcpy(&id, rest.data() + i, 4);
        ids.push_back(id);
      }
      (void)t.decode(ids);
    } catch (const xlshare::FormatError&) {
    }
    return 0;
  }
  static const xlshare::Tokenizer spm(xlshare::fuzz::tiny_spm(), "spm");
  static const xlshare::Tokenizer bpe(xlshare::fuzz::tiny_bpe(), "bpe");
  if (data[0] % 3 == 1) {
    // SPM writes spaces as U+2581, so a text holding U+2581 itself comes back with spaces.
    exercise(spm, rest, rest.find("\xE2\x96\x81") == std::string_view::npos);
  } else {
    exercise(bpe, rest, true);
  }
  return 0;
}
