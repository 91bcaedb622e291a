// Eq. 1b and the aggregation of eq. 1d in one pass over each atom's incoming edges:
//   aggregate_i = 1/heads sum_n sum_{j -> i} a^n_ij * m^n_ij,  a^n_ij = softmax over j of s^n_ij,
// per channel. Scores and messages are group-major (heads, M, F), a row per edge or, with `rows`,
// a row per edge kind (the first step), read through rows[edge]. The receiver index is a CSR
// (edges sorted by receiver, offsets per atom), so each atom's edges are read where they lie and
// no (E, heads, F) intermediate is written. The forward keeps log sum_j exp(s^n_ij) and the
// per-head means o^n_i = sum_j a^n_ij m^n_ij, (N, heads, F) each, for the backward:
//   d m^n_ij = a^n_ij g_i,  d s^n_ij = a^n_ij g_i (m^n_ij - o^n_i),  g_i = d aggregate_i / heads.
#include "kernels.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

namespace {

// exp(x) for x <= 0 (the softmax's shifted scores) in a form the compiler vectorises: Cephes'
// expf, 2^n p(x - n ln 2) with n = round(x / ln 2), the scale 2^n built from its exponent bits.
inline float exp_nonpositive(float x) {
  x = x > -87.0f ? x : -87.0f;
  const int32_t n = static_cast<int32_t>(x * 1.44269504088896341f - 0.5f);  // toward zero: rounds
  const float nf = static_cast<float>(n);
  const float r = x - nf * 0.693359375f + nf * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const int32_t bits = (n + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return (p * r * r + r + 1.0f) * scale;
}

struct Layout {
  int64_t heads, members, edges, features, atoms;
};

Layout layout_of(const at::Tensor& scores, const at::Tensor& messages, const at::Tensor& order,
                 const at::Tensor& offsets, const c10::optional<at::Tensor>& rows) {
  for (const at::Tensor* t : {&scores, &messages}) {
    TORCH_CHECK(t->device().is_cpu() && t->scalar_type() == at::kFloat && t->dim() == 3,
                "scores and messages must be (heads, M, F) float32 CPU tensors");
  }
  TORCH_CHECK(scores.sizes() == messages.sizes(), "scores and messages differ in shape");
  const int64_t edges = rows.has_value() ? rows->size(0) : scores.size(1);
  TORCH_CHECK(order.size(0) == edges, "the receiver order must hold every edge");
  return {scores.size(0), scores.size(1), edges, scores.size(2), offsets.size(0) - 1};
}

// Row of each edge in the scores and messages: rows[edge], or the edge itself.
struct RowOf {
  const int64_t* rows;
  int64_t operator()(int64_t edge) const { return rows ? rows[edge] : edge; }
};

constexpr int64_t kAtomGrain = 16;

}  // namespace

std::vector<at::Tensor> attention_aggregate_forward(const at::Tensor& scores_in, const at::Tensor& messages_in,
                                                    const at::Tensor& order_in, const at::Tensor& offsets_in,
                                                    const c10::optional<at::Tensor>& rows_in) {
  const Layout l = layout_of(scores_in, messages_in, order_in, offsets_in, rows_in);
  const at::Tensor rows = rows_in.has_value() ? rows_in->to(at::kLong).contiguous() : at::Tensor();
  const RowOf row_of{rows.defined() ? rows.data_ptr<int64_t>() : nullptr};
  const at::Tensor scores = scores_in.detach().contiguous(), messages = messages_in.detach().contiguous();
  const at::Tensor order = order_in.to(at::kLong).contiguous(), offsets = offsets_in.to(at::kLong).contiguous();
  const auto options = scores.options();
  at::Tensor aggregate = at::zeros({l.atoms, l.features}, options);
  at::Tensor log_norm = at::empty({l.atoms, l.heads, l.features}, options);
  at::Tensor head_means = at::empty({l.atoms, l.heads, l.features}, options);
  const float* s = scores.data_ptr<float>();
  const float* m = messages.data_ptr<float>();
  const int64_t* ord = order.data_ptr<int64_t>();
  const int64_t* off = offsets.data_ptr<int64_t>();
  TORCH_CHECK(off[0] == 0 && off[l.atoms] == l.edges, "the receiver offsets must span every edge");
  float* agg = aggregate.data_ptr<float>();
  float* lse = log_norm.data_ptr<float>();
  float* mean = head_means.data_ptr<float>();
  const int64_t f = l.features;
  const float inv_heads = 1.0f / static_cast<float>(l.heads);

  at::parallel_for(0, l.atoms, kAtomGrain, [&](int64_t begin, int64_t end) {
    std::vector<float> top(f), norm(f), acc(f);
    for (int64_t i = begin; i < end; ++i) {
      for (int64_t n = 0; n < l.heads; ++n) {
        const float* sn = s + n * l.members * f;
        const float* mn = m + n * l.members * f;
        std::fill(top.begin(), top.end(), -std::numeric_limits<float>::infinity());
        std::fill(norm.begin(), norm.end(), 0.0f);
        std::fill(acc.begin(), acc.end(), 0.0f);
        for (int64_t k = off[i]; k < off[i + 1]; ++k) {
          const float* se = sn + row_of(ord[k]) * f;
#pragma omp simd
          for (int64_t c = 0; c < f; ++c) top[c] = std::max(top[c], se[c]);
        }
        for (int64_t k = off[i]; k < off[i + 1]; ++k) {
          const float* se = sn + row_of(ord[k]) * f;
          const float* me = mn + row_of(ord[k]) * f;
#pragma omp simd
          for (int64_t c = 0; c < f; ++c) {
            const float w = exp_nonpositive(se[c] - top[c]);
            norm[c] += w;
            acc[c] += w * me[c];
          }
        }
        float* lse_in = lse + (i * l.heads + n) * f;
        float* mean_in = mean + (i * l.heads + n) * f;
        const bool empty = off[i] == off[i + 1];
        for (int64_t c = 0; c < f; ++c) {
          mean_in[c] = empty ? 0.0f : acc[c] / norm[c];
          lse_in[c] = empty ? 0.0f : top[c] + std::log(norm[c]);
          agg[i * f + c] += mean_in[c] * inv_heads;
        }
      }
    }
  });
  return {aggregate, log_norm, head_means};
}

std::vector<at::Tensor> attention_aggregate_backward(const at::Tensor& grad_aggregate, const at::Tensor& scores_in,
                                                     const at::Tensor& messages_in, const at::Tensor& order_in,
                                                     const at::Tensor& offsets_in, const c10::optional<at::Tensor>& rows_in,
                                                     const at::Tensor& log_norm, const at::Tensor& head_means) {
  const Layout l = layout_of(scores_in, messages_in, order_in, offsets_in, rows_in);
  const at::Tensor rows = rows_in.has_value() ? rows_in->to(at::kLong).contiguous() : at::Tensor();
  const RowOf row_of{rows.defined() ? rows.data_ptr<int64_t>() : nullptr};
  const at::Tensor scores = scores_in.detach().contiguous(), messages = messages_in.detach().contiguous();
  const at::Tensor order = order_in.to(at::kLong).contiguous(), offsets = offsets_in.to(at::kLong).contiguous();
  const at::Tensor grad = grad_aggregate.contiguous();
  const at::Tensor lse_t = log_norm.contiguous(), mean_t = head_means.contiguous();
  // Per edge: every edge has one receiver (order holds every edge once), so each row is written
  // once. Per kind: rows are shared across atoms, so each thread sums into its own copy.
  const bool shared = rows.defined();
  const int threads = shared ? at::get_num_threads() : 1;
  const auto shape = std::vector<int64_t>{threads, l.heads, l.members, l.features};
  at::Tensor grad_scores = shared ? at::zeros(shape, scores.options()) : at::empty_like(scores);
  at::Tensor grad_messages = shared ? at::zeros(shape, scores.options()) : at::empty_like(messages);
  const float* s = scores.data_ptr<float>();
  const float* m = messages.data_ptr<float>();
  const float* g = grad.data_ptr<float>();
  const float* lse = lse_t.data_ptr<float>();
  const float* mean = mean_t.data_ptr<float>();
  const int64_t* ord = order.data_ptr<int64_t>();
  const int64_t* off = offsets.data_ptr<int64_t>();
  TORCH_CHECK(off[0] == 0 && off[l.atoms] == l.edges, "the receiver offsets must span every edge");
  const int64_t thread_stride = shared ? l.heads * l.members * l.features : 0;
  const int64_t f = l.features;
  const float inv_heads = 1.0f / static_cast<float>(l.heads);

  at::parallel_for(0, l.atoms, kAtomGrain, [&](int64_t begin, int64_t end) {
    std::vector<float> gi(f);
    float* ds = grad_scores.data_ptr<float>() + at::get_thread_num() * thread_stride;
    float* dm = grad_messages.data_ptr<float>() + at::get_thread_num() * thread_stride;
    for (int64_t i = begin; i < end; ++i) {
      for (int64_t c = 0; c < f; ++c) gi[c] = g[i * f + c] * inv_heads;
      for (int64_t n = 0; n < l.heads; ++n) {
        const float* lse_in = lse + (i * l.heads + n) * f;
        const float* mean_in = mean + (i * l.heads + n) * f;
        const int64_t head = n * l.members * f;
        for (int64_t k = off[i]; k < off[i + 1]; ++k) {
          const int64_t row = head + row_of(ord[k]) * f;
          if (shared) {
#pragma omp simd
            for (int64_t c = 0; c < f; ++c) {
              const float weighted = exp_nonpositive(s[row + c] - lse_in[c]) * gi[c];
              dm[row + c] += weighted;
              ds[row + c] += weighted * (m[row + c] - mean_in[c]);
            }
          } else {
#pragma omp simd
            for (int64_t c = 0; c < f; ++c) {
              const float weighted = exp_nonpositive(s[row + c] - lse_in[c]) * gi[c];
              dm[row + c] = weighted;
              ds[row + c] = weighted * (m[row + c] - mean_in[c]);
            }
          }
        }
      }
    }
  });
  if (shared) return {grad_scores.sum(0), grad_messages.sum(0)};
  return {grad_scores, grad_messages};
}
