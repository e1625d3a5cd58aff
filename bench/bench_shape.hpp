// The bench shape every benchmark measures on (the shape llama.cpp was measured on): dim 768,
// 12 layers, 12 heads, 12 kv heads, ffn 2048, vocab 32000 (512 MiB in F32); `quick`: a tiny
// model of the same architecture for the smoke tests.
#pragma once

#include "xlshare/model/llama_config.hpp"

namespace xlshare::bench {

inline LlamaConfig bench_shape(bool quick) {
  LlamaConfig c;
  c.dim = quick ? 128 : 768;
  c.n_layers = quick ? 2 : 12;
  c.n_heads = quick ? 4 : 12;
  c.n_kv_heads = c.n_heads;
  c.head_dim = c.dim / c.n_heads;
  c.ffn_dim = quick ? 344 : 2048;
  c.vocab = quick ? 1000 : 32000;
  c.context = 1024;
  return c;
}

}  // namespace xlshare::bench
