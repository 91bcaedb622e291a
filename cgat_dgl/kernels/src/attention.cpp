// Eq. 1b and the aggregation of eq. 1d in one pass over each atom's incoming edges:
//   aggregate_i = 1/heads sum_n sum_{j -> i} a^n_ij * m^n_ij,  a^n_ij = softmax over j of s^n_ij,
// per channel. Scores and messages are group-major (heads, M, F). The receiver index is a CSR: the
// k-th edge in receiver order, an atom's edges being [offsets[i], offsets[i + 1]), is edge
// order[k] (or edge k when no order is given: the members are stored in receiver order), whose row
// is rows[edge] (a row per edge kind, the first step) or the edge itself. No (E, heads, F)
// intermediate is written. The forward keeps log sum_j exp(s^n_ij) and the per-head means
// o^n_i = sum_j a^n_ij m^n_ij, (N, heads, F) each, for the backward:
//   d m^n_ij = a^n_ij g_i,  d s^n_ij = a^n_ij g_i (m^n_ij - o^n_i),  g_i = d aggregate_i / heads.
#include "kernels.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

namespace {

constexpr int64_t kAtomGrain = 16;
constexpr int64_t kMaxFeatures = 1024;

struct Layout {
  int64_t heads, members, edges, features, atoms;
};

// The indices of the inputs, contiguous int64, and the row of the k-th edge in receiver order.
struct Index {
  at::Tensor order, offsets, rows;  // order and rows may be undefined

  int64_t row(int64_t k) const {
    const int64_t edge = order_ ? order_[k] : k;
    return rows_ ? rows_[edge] : edge;
  }

  Index(const c10::optional<at::Tensor>& order_in, const at::Tensor& offsets_in, const c10::optional<at::Tensor>& rows_in)
      : order(order_in.has_value() ? order_in->to(at::kLong).contiguous() : at::Tensor()),
        offsets(offsets_in.to(at::kLong).contiguous()),
        rows(rows_in.has_value() ? rows_in->to(at::kLong).contiguous() : at::Tensor()),
        order_(order.defined() ? order.data_ptr<int64_t>() : nullptr),
        rows_(rows.defined() ? rows.data_ptr<int64_t>() : nullptr) {}

 private:
  const int64_t* order_;
  const int64_t* rows_;
};

Layout layout_of(const at::Tensor& scores, const at::Tensor& messages, const Index& index) {
  for (const at::Tensor* t : {&scores, &messages}) {
    TORCH_CHECK(t->device().is_cpu() && t->scalar_type() == at::kFloat && t->dim() == 3,
                "scores and messages must be (heads, M, F) float32 CPU tensors");
  }
  TORCH_CHECK(scores.sizes() == messages.sizes(), "scores and messages differ in shape");
  const int64_t edges = index.rows.defined() ? index.rows.size(0) : scores.size(1);
  TORCH_CHECK(!index.order.defined() || index.order.size(0) == edges, "the receiver order must hold every edge");
  const Layout l{scores.size(0), scores.size(1), edges, scores.size(2), index.offsets.size(0) - 1};
  const int64_t* off = index.offsets.data_ptr<int64_t>();
  TORCH_CHECK(off[0] == 0 && off[l.atoms] == l.edges, "the receiver offsets must span every edge");
  TORCH_CHECK(l.features <= kMaxFeatures, "the attention kernel takes at most ", kMaxFeatures, " features");
  return l;
}

// One head's scores and messages (M, F) and one atom's edges, [first, last) in receiver order.
struct Head {
  const float* scores;
  const float* messages;
  const Index& index;
  int64_t first, last;
};

// The head's softmax-weighted mean of the messages, per channel, and the log of the softmax's
// normaliser. V > 0 fixes the width at V vectors, so that the running maximum, normaliser and sum
// stay in registers rather than being stored and reloaded for every edge.
template <int V>
inline void attend_head(const Head& h, int64_t f, float* mean, float* log_norm) {
  Vec top[V], norm[V] = {}, acc[V] = {};
  for (int v = 0; v < V; ++v) top[v] = splat(-std::numeric_limits<float>::infinity());
  for (int64_t k = h.first; k < h.last; ++k) {
    const float* se = h.scores + h.index.row(k) * f;
    for (int v = 0; v < V; ++v) top[v] = max(top[v], load(se + v * kLanes));
  }
  for (int64_t k = h.first; k < h.last; ++k) {
    const int64_t row = h.index.row(k) * f;
    for (int v = 0; v < V; ++v) {
      const Vec w = exp_nonpositive(load(h.scores + row + v * kLanes) - top[v]);
      norm[v] += w;
      acc[v] += w * load(h.messages + row + v * kLanes);
    }
  }
  const bool empty = h.first == h.last;
  for (int v = 0; v < V; ++v) {
    for (int j = 0; j < kLanes; ++j) {
      const int64_t c = v * kLanes + j;
      mean[c] = empty ? 0.0f : acc[v][j] / norm[v][j];
      log_norm[c] = empty ? 0.0f : top[v][j] + std::log(norm[v][j]);
    }
  }
}

// The same for any width.
template <>
inline void attend_head<0>(const Head& h, int64_t f, float* mean, float* log_norm) {
  float top[kMaxFeatures], norm[kMaxFeatures], acc[kMaxFeatures];
  for (int64_t c = 0; c < f; ++c) {
    top[c] = -std::numeric_limits<float>::infinity();
    norm[c] = acc[c] = 0.0f;
  }
  for (int64_t k = h.first; k < h.last; ++k) {
    const float* se = h.scores + h.index.row(k) * f;
    for (int64_t c = 0; c < f; ++c) top[c] = std::max(top[c], se[c]);
  }
  for (int64_t k = h.first; k < h.last; ++k) {
    const int64_t row = h.index.row(k) * f;
    for (int64_t c = 0; c < f; ++c) {
      const float w = exp_nonpositive(h.scores[row + c] - top[c]);
      norm[c] += w;
      acc[c] += w * h.messages[row + c];
    }
  }
  const bool empty = h.first == h.last;
  for (int64_t c = 0; c < f; ++c) {
    mean[c] = empty ? 0.0f : acc[c] / norm[c];
    log_norm[c] = empty ? 0.0f : top[c] + std::log(norm[c]);
  }
}

}  // namespace

std::vector<at::Tensor> attention_aggregate_forward(const at::Tensor& scores_in, const at::Tensor& messages_in,
                                                    const c10::optional<at::Tensor>& order_in,
                                                    const at::Tensor& offsets_in,
                                                    const c10::optional<at::Tensor>& rows_in) {
  const Index index(order_in, offsets_in, rows_in);
  const Layout l = layout_of(scores_in, messages_in, index);
  const at::Tensor scores = scores_in.detach().contiguous(), messages = messages_in.detach().contiguous();
  const auto options = scores.options();
  at::Tensor aggregate = at::zeros({l.atoms, l.features}, options);
  at::Tensor log_norm = at::empty({l.atoms, l.heads, l.features}, options);
  at::Tensor head_means = at::empty({l.atoms, l.heads, l.features}, options);
  const float* s = scores.data_ptr<float>();
  const float* m = messages.data_ptr<float>();
  const int64_t* off = index.offsets.data_ptr<int64_t>();
  float* agg = aggregate.data_ptr<float>();
  float* lse = log_norm.data_ptr<float>();
  float* mean = head_means.data_ptr<float>();
  const int64_t f = l.features;
  const int64_t vectors = f % kLanes == 0 ? f / kLanes : 0;
  const float inv_heads = 1.0f / static_cast<float>(l.heads);

  at::parallel_for(0, l.atoms, kAtomGrain, [&](int64_t begin, int64_t end) {
    const float scale = inv_heads;  // a local, not a read through the capture, in the loop below
    for (int64_t i = begin; i < end; ++i) {
      for (int64_t n = 0; n < l.heads; ++n) {
        const Head head{s + n * l.members * f, m + n * l.members * f, index, off[i], off[i + 1]};
        float* lse_in = lse + (i * l.heads + n) * f;
        float* mean_in = mean + (i * l.heads + n) * f;
        switch (vectors) {
          case 1: attend_head<1>(head, f, mean_in, lse_in); break;
          case 2: attend_head<2>(head, f, mean_in, lse_in); break;
          case 4: attend_head<4>(head, f, mean_in, lse_in); break;
          case 8: attend_head<8>(head, f, mean_in, lse_in); break;
          default: attend_head<0>(head, f, mean_in, lse_in);
        }
#pragma omp simd
        for (int64_t c = 0; c < f; ++c) agg[i * f + c] += mean_in[c] * scale;
      }
    }
  });
  return {aggregate, log_norm, head_means};
}

std::vector<at::Tensor> attention_aggregate_backward(const at::Tensor& grad_aggregate, const at::Tensor& scores_in,
                                                     const at::Tensor& messages_in,
                                                     const c10::optional<at::Tensor>& order_in,
                                                     const at::Tensor& offsets_in,
                                                     const c10::optional<at::Tensor>& rows_in,
                                                     const at::Tensor& log_norm, const at::Tensor& head_means) {
  const Index index(order_in, offsets_in, rows_in);
  const Layout l = layout_of(scores_in, messages_in, index);
  const at::Tensor scores = scores_in.detach().contiguous(), messages = messages_in.detach().contiguous();
  const at::Tensor grad = grad_aggregate.contiguous();
  const at::Tensor lse_t = log_norm.contiguous(), mean_t = head_means.contiguous();
  // Per edge: every edge has one receiver, so each row is written once. Per kind: rows are shared
  // across atoms, so each thread sums into its own copy.
  const bool shared = index.rows.defined();
  const int threads = shared ? at::get_num_threads() : 1;
  const auto shape = std::vector<int64_t>{threads, l.heads, l.members, l.features};
  at::Tensor grad_scores = shared ? at::zeros(shape, scores.options()) : at::empty_like(scores);
  at::Tensor grad_messages = shared ? at::zeros(shape, scores.options()) : at::empty_like(messages);
  const float* s = scores.data_ptr<float>();
  const float* m = messages.data_ptr<float>();
  const float* g = grad.data_ptr<float>();
  const float* lse = lse_t.data_ptr<float>();
  const float* mean = mean_t.data_ptr<float>();
  const int64_t* off = index.offsets.data_ptr<int64_t>();
  const int64_t thread_stride = shared ? l.heads * l.members * l.features : 0;
  const int64_t f = l.features;
  const float inv_heads = 1.0f / static_cast<float>(l.heads);

  at::parallel_for(0, l.atoms, kAtomGrain, [&](int64_t begin, int64_t end) {
    const float scale = inv_heads;  // locals, not reads through the capture, in the loops below
    std::vector<float> gi(f);
    float* ds = grad_scores.data_ptr<float>() + at::get_thread_num() * thread_stride;
    float* dm = grad_messages.data_ptr<float>() + at::get_thread_num() * thread_stride;
    for (int64_t i = begin; i < end; ++i) {
      for (int64_t c = 0; c < f; ++c) gi[c] = g[i * f + c] * scale;
      for (int64_t n = 0; n < l.heads; ++n) {
        const float* lse_in = lse + (i * l.heads + n) * f;
        const float* mean_in = mean + (i * l.heads + n) * f;
        const int64_t head = n * l.members * f;
        for (int64_t k = off[i]; k < off[i + 1]; ++k) {
          const int64_t row = head + index.row(k) * f;
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
