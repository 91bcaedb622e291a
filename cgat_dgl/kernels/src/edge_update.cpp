// The change of eq. 2b-2d, FCNN(sum_n a^n_ij m^n_ij) with a^n_ij = softmax over the heads n of
// s^n_ij (per channel), in tiles of edges: the attention, the attended sum u and the FCNN's hidden
// layer live in per-thread buffers, and the backward recomputes them, so no (E, F) intermediate is
// written. FCNN(u) = W2 LeakyReLU(W1 u + b1) + b2 (nn.Linear layouts: W1 (D, F), W2 (F, D)).
//   d m^n = a^n du,  d s^n = a^n du (m^n - u)   (the softmax over heads, per channel).
#include "kernels.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

namespace {

constexpr int64_t kTile = 256;  // edges per tile
constexpr int64_t kMaxFeatures = 1024;

struct Shapes {
  int64_t heads, edges, features, hidden;
};

// The FCNN's weights, and W1^T (F, D) and W2^T (D, F) once per call for the tiles' products.
struct Weights {
  at::Tensor w1, b1, w2, b2, w1t, w2t;
};

Shapes shapes_of(const at::Tensor& scores, const at::Tensor& messages, const Weights& w) {
  for (const at::Tensor* t : {&scores, &messages}) {
    TORCH_CHECK(t->device().is_cpu() && t->scalar_type() == at::kFloat && t->dim() == 3,
                "scores and messages must be (heads, E, F) float32 CPU tensors");
  }
  TORCH_CHECK(scores.sizes() == messages.sizes(), "scores and messages differ in shape");
  const Shapes s{scores.size(0), scores.size(1), scores.size(2), w.w1.size(0)};
  TORCH_CHECK(s.features <= kMaxFeatures, "the edge-update kernel takes at most ", kMaxFeatures, " features");
  TORCH_CHECK(w.w1.size(1) == s.features && w.b1.numel() == s.hidden && w.w2.size(0) == s.features &&
                  w.w2.size(1) == s.hidden && w.b2.numel() == s.features,
              "inconsistent FCNN shapes");
  return s;
}

Weights weights_of(const at::Tensor& w1, const at::Tensor& b1, const at::Tensor& w2, const at::Tensor& b2) {
  for (const at::Tensor* t : {&w1, &b1, &w2, &b2}) {
    TORCH_CHECK(t->device().is_cpu() && t->scalar_type() == at::kFloat, "FCNN weights must be float32 CPU tensors");
  }
  const at::Tensor w1c = w1.detach().contiguous(), w2c = w2.detach().contiguous();
  return {w1c, b1.detach().contiguous(), w2c, b2.detach().contiguous(), w1c.t().contiguous(), w2c.t().contiguous()};
}

// For the tile's edges [first, first + count): attention (heads, count, F) and u (count, F).
void attend(float* attention, float* u, const float* s, const float* m, int64_t first, int64_t count, const Shapes& sh) {
  const int64_t f = sh.features, stride = sh.edges * f;
  float top[kMaxFeatures], norm[kMaxFeatures];
  for (int64_t t = 0; t < count; ++t) {
    const int64_t row = (first + t) * f;
    copy_row(s + row, f, top);
    for (int64_t n = 1; n < sh.heads; ++n) {
      const float* sn = s + n * stride + row;
#pragma omp simd
      for (int64_t c = 0; c < f; ++c) top[c] = std::max(top[c], sn[c]);
    }
    for (int64_t c = 0; c < f; ++c) norm[c] = 0.0f;
    for (int64_t n = 0; n < sh.heads; ++n) {
      const float* sn = s + n * stride + row;
      float* an = attention + (n * count + t) * f;
#pragma omp simd
      for (int64_t c = 0; c < f; ++c) {
        an[c] = exp_nonpositive(sn[c] - top[c]);
        norm[c] += an[c];
      }
    }
    float* ut = u + t * f;
    for (int64_t c = 0; c < f; ++c) ut[c] = 0.0f;
    for (int64_t n = 0; n < sh.heads; ++n) {
      const float* mn = m + n * stride + row;
      float* an = attention + (n * count + t) * f;
#pragma omp simd
      for (int64_t c = 0; c < f; ++c) {
        an[c] /= norm[c];
        ut[c] += an[c] * mn[c];
      }
    }
  }
}

// hidden = LeakyReLU(u W1^T + b1), (count, D), from W1^T (F, D).
void hidden_layer(float* hidden, const float* u, int64_t count, const Shapes& sh, const float* w1t, const float* b1,
                  float slope) {
  const int64_t d = sh.hidden;
  tile_gemm(false, false, count, d, sh.features, u, sh.features, w1t, d, 0.0f, hidden, d);
  for (int64_t t = 0; t < count; ++t) {
    float* ht = hidden + t * d;
#pragma omp simd
    for (int64_t j = 0; j < d; ++j) {
      const float v = ht[j] + b1[j];
      ht[j] = v > 0.0f ? v : v * slope;
    }
  }
}

}  // namespace

at::Tensor head_attention_fcnn_forward(const at::Tensor& scores_in, const at::Tensor& messages_in,
                                       const at::Tensor& w1_in, const at::Tensor& b1_in, const at::Tensor& w2_in,
                                       const at::Tensor& b2_in, double slope) {
  const Weights w = weights_of(w1_in, b1_in, w2_in, b2_in);
  const Shapes sh = shapes_of(scores_in, messages_in, w);
  const at::Tensor scores = scores_in.detach().contiguous(), messages = messages_in.detach().contiguous();
  at::Tensor out = at::empty({sh.edges, sh.features}, scores.options());
  const float* s = scores.data_ptr<float>();
  const float* m = messages.data_ptr<float>();
  const float* b2 = w.b2.data_ptr<float>();
  float* o = out.data_ptr<float>();
  const int64_t f = sh.features, tiles = (sh.edges + kTile - 1) / kTile;
  at::parallel_for(0, tiles, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> attention(sh.heads * kTile * f), u(kTile * f), hidden(kTile * sh.hidden);
    for (int64_t k = begin; k < end; ++k) {
      const int64_t first = k * kTile, count = std::min(kTile, sh.edges - first);
      attend(attention.data(), u.data(), s, m, first, count, sh);
      hidden_layer(hidden.data(), u.data(), count, sh, w.w1t.data_ptr<float>(), w.b1.data_ptr<float>(),
                   static_cast<float>(slope));
      tile_gemm(false, false, count, f, sh.hidden, hidden.data(), sh.hidden, w.w2t.data_ptr<float>(), f, 0.0f,
                o + first * f, f, b2);
    }
  });
  return out;
}

// Gradients of (scores, messages, W1, b1, W2, b2).
std::vector<at::Tensor> head_attention_fcnn_backward(const at::Tensor& grad_in, const at::Tensor& scores_in,
                                                     const at::Tensor& messages_in, const at::Tensor& w1_in,
                                                     const at::Tensor& b1_in, const at::Tensor& w2_in,
                                                     const at::Tensor& b2_in, double slope) {
  const Weights w = weights_of(w1_in, b1_in, w2_in, b2_in);
  const Shapes sh = shapes_of(scores_in, messages_in, w);
  const at::Tensor scores = scores_in.detach().contiguous(), messages = messages_in.detach().contiguous();
  const at::Tensor grad = grad_in.contiguous();
  TORCH_CHECK(grad.size(0) == sh.edges && grad.size(1) == sh.features, "gradient of the wrong shape");
  const auto options = scores.options();
  at::Tensor grad_scores = at::empty_like(scores), grad_messages = at::empty_like(messages);
  const int threads = at::get_num_threads();
  const int64_t f = sh.features, d = sh.hidden, stride = sh.edges * f;
  at::Tensor grad_w1 = at::zeros({threads, d, f}, options), grad_b1 = at::zeros({threads, d}, options);
  at::Tensor grad_w2 = at::zeros({threads, f, d}, options), grad_b2 = at::zeros({threads, f}, options);
  const float* s = scores.data_ptr<float>();
  const float* m = messages.data_ptr<float>();
  const float* g = grad.data_ptr<float>();
  const float* w1 = w.w1.data_ptr<float>();
  const float* w2 = w.w2.data_ptr<float>();
  const float a = static_cast<float>(slope);
  const int64_t tiles = (sh.edges + kTile - 1) / kTile;
  at::parallel_for(0, tiles, 1, [&](int64_t begin, int64_t end) {
    const int id = at::get_thread_num();
    const float leak = a;  // a local: read through the capture, it blocks vectorising the loops below
    float* dw1 = grad_w1[id].data_ptr<float>();
    float* db1 = grad_b1[id].data_ptr<float>();
    float* dw2 = grad_w2[id].data_ptr<float>();
    float* db2 = grad_b2[id].data_ptr<float>();
    std::vector<float> attention(sh.heads * kTile * f), u(kTile * f), hidden(kTile * d), dhidden(kTile * d),
        du(kTile * f);
    for (int64_t k = begin; k < end; ++k) {
      const int64_t first = k * kTile, count = std::min(kTile, sh.edges - first);
      const float* gt = g + first * f;
      attend(attention.data(), u.data(), s, m, first, count, sh);
      hidden_layer(hidden.data(), u.data(), count, sh, w.w1t.data_ptr<float>(), w.b1.data_ptr<float>(), leak);
      // dW2 += g^T hidden; db2 += sum g; dhidden = g W2
      tile_gemm(true, false, f, d, count, gt, f, hidden.data(), d, 1.0f, dw2, d);
      add_row_sums(gt, count, f, db2);
      tile_gemm(false, false, count, d, f, gt, f, w2, d, 0.0f, dhidden.data(), d);
      // LeakyReLU keeps the sign: hidden > 0 exactly where its input is.
      for (int64_t t = 0; t < count; ++t) {
        const float* ht = hidden.data() + t * d;
        float* dt = dhidden.data() + t * d;
#pragma omp simd
        for (int64_t j = 0; j < d; ++j) {
          dt[j] = ht[j] > 0.0f ? dt[j] : dt[j] * leak;
          db1[j] += dt[j];
        }
      }
      // dW1 += dpre^T u; du = dpre W1
      tile_gemm(true, false, d, f, count, dhidden.data(), d, u.data(), f, 1.0f, dw1, f);
      tile_gemm(false, false, count, f, d, dhidden.data(), d, w1, f, 0.0f, du.data(), f);
      for (int64_t n = 0; n < sh.heads; ++n) {
        const float* an = attention.data() + n * count * f;
        const float* mn = m + n * stride + first * f;
        float* dsn = grad_scores.data_ptr<float>() + n * stride + first * f;
        float* dmn = grad_messages.data_ptr<float>() + n * stride + first * f;
        for (int64_t t = 0; t < count; ++t) {
          const float* ut = u.data() + t * f;
          const float* dut = du.data() + t * f;
#pragma omp simd
          for (int64_t c = 0; c < f; ++c) {
            const float weighted = an[t * f + c] * dut[c];
            dmn[t * f + c] = weighted;
            dsn[t * f + c] = weighted * (mn[t * f + c] - ut[c]);
          }
        }
      }
    }
  });
  return {grad_scores, grad_messages, grad_w1.sum(0), grad_b1.sum(0).view_as(w.b1), grad_w2.sum(0),
          grad_b2.sum(0).view_as(w.b2)};
}
