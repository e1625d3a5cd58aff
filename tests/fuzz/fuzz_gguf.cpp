// libFuzzer target: the GGUF reader. Any input is either opened (and then every tensor is
// read and converted to float, whatever its quantized blocks hold) or refused with an
// xlshare::Error; nothing else is acceptable.
#include "fuzz/fuzz_support.hpp"
#include "xlshare/error.hpp"
#include "xlshare/model/dtype_convert.hpp"
#include "xlshare/model/model_file.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto path = xlshare::fuzz::write_input("input.gguf", data, size);
  try {
    const auto file = xlshare::open_model_file(path);
    for (const auto& t : file.tensors) {
      if (t.size_bytes > (64u << 20)) continue;  // validated against the file size already
      std::vector<std::byte> buf(t.size_bytes);
      xlshare::read_tensor_data(t, buf);
      const std::size_t n = t.size_bytes / xlshare::dtype_block_bytes(t.dtype) *
                            xlshare::dtype_block_elements(t.dtype);
      std::vector<float> values(n);
      xlshare::to_f32(t.dtype, buf.data(), values.data(), n);
    }
  } catch (const xlshare::Error&) {
  }
  return 0;
}
