// libFuzzer target: attaching to a pool whose backing file holds arbitrary bytes. Either the
// attach is refused with an xlshare::Error, or every offset it then hands out is inside the
// mapping (each model's tensors are read and verified).
#include "fuzz/fuzz_support.hpp"
#include "xlshare/error.hpp"
#include "xlshare/memory/backend_uri.hpp"
#include "xlshare/memory/pool.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const auto path = xlshare::fuzz::write_input("pool", data, size);
  try {
    auto pool = xlshare::Pool::attach(xlshare::open_backend("file://" + path.string()));
    (void)pool->stats();
    for (const auto& e : pool->list_models()) (void)e;
    for (const auto& name : pool->model_names()) {
      const auto m = pool->model(name);
      for (const auto& t : m->tensors()) {
        std::vector<std::byte> buf(std::min<std::uint64_t>(t.size_bytes, 1u << 20));
        (void)pool->read(t, 0, buf);
        (void)pool->verify(t);
      }
    }
  } catch (const xlshare::Error&) {
  }
  return 0;
}
