// A naive double-precision Llama forward pass, plain loops, written from the math and not
// from the executor: the reference the Eigen executor is checked against.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "xlshare/model/synthetic.hpp"

namespace xlshare::test {

// Logits of every position (n x vocab) for `tokens` at positions 0..n-1.
inline std::vector<double> reference_forward(const SyntheticModel& m,
                                             const std::vector<std::int32_t>& tokens) {
  const LlamaConfig& c = m.config;
  const std::size_t n = tokens.size(), dim = c.dim, hd = c.head_dim, H = c.n_heads,
                    KV = c.n_kv_heads, F = c.ffn_dim;
  auto W = [&](const std::string& name) -> const std::vector<float>& { return m.tensor(name); };
  // y[rows] = W[rows x cols] x[cols]
  auto matvec = [](const std::vector<float>& w, std::size_t rows, std::size_t cols,
                   const std::vector<double>& x) {
    std::vector<double> y(rows, 0.0);
    for (std::size_t r = 0; r < rows; ++r) {
      double s = 0;
      for (std::size_t k = 0; k < cols; ++k) s += static_cast<double>(w[r * cols + k]) * x[k];
      y[r] = s;
    }
    return y;
  };
  auto rmsnorm = [&](const std::vector<double>& x, const std::vector<float>& w) {
    double ss = 0;
    for (double v : x) ss += v * v;
    const double scale = 1.0 / std::sqrt(ss / static_cast<double>(x.size()) + c.norm_eps);
    std::vector<double> y(x.size());
    for (std::size_t i = 0; i < x.size(); ++i) y[i] = x[i] * scale * w[i];
    return y;
  };
  auto rope = [&](std::vector<double>& v, std::size_t heads, std::size_t pos) {
    for (std::size_t h = 0; h < heads; ++h) {
      for (std::size_t i = 0; i < hd / 2; ++i) {
        const double theta =
            static_cast<double>(pos) * std::pow(c.rope_theta, -2.0 * static_cast<double>(i) / hd);
        const double a = v[h * hd + 2 * i], b = v[h * hd + 2 * i + 1];
        v[h * hd + 2 * i] = a * std::cos(theta) - b * std::sin(theta);
        v[h * hd + 2 * i + 1] = a * std::sin(theta) + b * std::cos(theta);
      }
    }
  };
  std::vector<std::vector<double>> x(n, std::vector<double>(dim));
  for (std::size_t t = 0; t < n; ++t) {
    for (std::size_t d = 0; d < dim; ++d)
      x[t][d] = W("token_embd.weight")[static_cast<std::size_t>(tokens[t]) * dim + d];
  }
  for (std::uint32_t l = 0; l < c.n_layers; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    std::vector<std::vector<double>> q(n), k(n), v(n);
    for (std::size_t t = 0; t < n; ++t) {
      const auto xn = rmsnorm(x[t], W(p + "attn_norm.weight"));
      q[t] = matvec(W(p + "attn_q.weight"), H * hd, dim, xn);
      k[t] = matvec(W(p + "attn_k.weight"), KV * hd, dim, xn);
      v[t] = matvec(W(p + "attn_v.weight"), KV * hd, dim, xn);
      rope(q[t], H, t);
      rope(k[t], KV, t);
    }
    for (std::size_t t = 0; t < n; ++t) {
      std::vector<double> att(H * hd, 0.0);
      for (std::size_t h = 0; h < H; ++h) {
        const std::size_t g = h / (H / KV);  // query head h reads kv head h / group
        std::vector<double> s(t + 1);
        double mx = -1e300;
        for (std::size_t j = 0; j <= t; ++j) {
          double dot = 0;
          for (std::size_t d = 0; d < hd; ++d) dot += q[t][h * hd + d] * k[j][g * hd + d];
          s[j] = dot / std::sqrt(static_cast<double>(hd));
          mx = std::max(mx, s[j]);
        }
        double sum = 0;
        for (double& e : s) sum += (e = std::exp(e - mx));
        for (std::size_t j = 0; j <= t; ++j) {
          for (std::size_t d = 0; d < hd; ++d) att[h * hd + d] += s[j] / sum * v[j][g * hd + d];
        }
      }
      const auto o = matvec(W(p + "attn_output.weight"), dim, H * hd, att);
      for (std::size_t d = 0; d < dim; ++d) x[t][d] += o[d];
      const auto xn = rmsnorm(x[t], W(p + "ffn_norm.weight"));
      auto gate = matvec(W(p + "ffn_gate.weight"), F, dim, xn);
      const auto up = matvec(W(p + "ffn_up.weight"), F, dim, xn);
      for (std::size_t i = 0; i < F; ++i) gate[i] = gate[i] / (1.0 + std::exp(-gate[i])) * up[i];
      const auto down = matvec(W(p + "ffn_down.weight"), dim, F, gate);
      for (std::size_t d = 0; d < dim; ++d) x[t][d] += down[d];
    }
  }
  std::vector<double> logits;
  const auto& out = c.tie_embeddings ? W("token_embd.weight") : W("output.weight");
  for (std::size_t t = 0; t < n; ++t) {
    const auto xn = rmsnorm(x[t], W("output_norm.weight"));
    const auto row = matvec(out, c.vocab, dim, xn);
    logits.insert(logits.end(), row.begin(), row.end());
  }
  return logits;
}

}  // namespace xlshare::test
