// libFuzzer target: what the CLI parses from users — worker JSONL requests, token lists,
// sizes, dtypes and pool URIs. The first byte chooses the parser.
#include <sstream>

#include "../../tools/xlshare/commands.hpp"
#include "xlshare/error.hpp"
#include "xlshare/memory/backend_uri.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::string text(reinterpret_cast<const char*>(data + 1), size - 1);
  try {
    switch (data[0] % 5) {
      case 0: {
        std::istringstream in(text);
        (void)xlshare::cli::parse_requests(in, "fuzz.jsonl");
        break;
      }
      case 1:
        (void)xlshare::cli::parse_tokens(text);
        break;
      case 2:
        (void)xlshare::cli::parse_bytes(text);
        break;
      case 3:
        (void)xlshare::cli::parse_dtype_arg(text);
        break;
      default:
        (void)xlshare::parse_backend_uri(text);
        break;
    }
  } catch (const xlshare::Error&) {
  }
  return 0;
}
