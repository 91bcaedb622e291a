// y_i = x_i W[index_i]: a product with one of a few weight matrices per row, (N, F) x (U, F, O) ->
// (N, O). At the first step of the node update the hypernetworks' input h0 depends on the element
// only, so the generated layers are U matrices (one per element of the batch) rather than N:
//   dx_i = dy_i W[index_i]^T,  dW_u = sum_{i: index_i = u} x_i^T dy_i.
#include "kernels.h"

#include <ATen/Parallel.h>

#include <algorithm>

namespace {

constexpr int64_t kRowGrain = 64;

struct Sizes {
  int64_t rows, in, out, matrices;
};

Sizes sizes_of(const at::Tensor& x, const at::Tensor& weights, const at::Tensor& index) {
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == at::kFloat && x.dim() == 2, "x must be (N, F) float32 CPU");
  TORCH_CHECK(weights.device().is_cpu() && weights.scalar_type() == at::kFloat && weights.dim() == 3,
              "the weights must be (U, F, O) float32 CPU");
  TORCH_CHECK(weights.size(1) == x.size(1), "x and the weights differ in F");
  TORCH_CHECK(index.dim() == 1 && index.size(0) == x.size(0), "the index must have a row per row of x");
  TORCH_CHECK(index.numel() == 0 || (index.min().item<int64_t>() >= 0 && index.max().item<int64_t>() < weights.size(0)),
              "index out of range of the ", weights.size(0), " weight matrices");
  return {x.size(0), x.size(1), weights.size(2), weights.size(0)};
}

}  // namespace

at::Tensor indexed_product_forward(const at::Tensor& x_in, const at::Tensor& weights_in, const at::Tensor& index_in) {
  const Sizes s = sizes_of(x_in, weights_in, index_in);
  const at::Tensor x = x_in.detach().contiguous(), weights = weights_in.detach().contiguous();
  const at::Tensor index = index_in.to(at::kLong).contiguous();
  at::Tensor y = at::zeros({s.rows, s.out}, x.options());
  const float* xs = x.data_ptr<float>();
  const float* ws = weights.data_ptr<float>();
  const int64_t* idx = index.data_ptr<int64_t>();
  float* ys = y.data_ptr<float>();
  at::parallel_for(0, s.rows, kRowGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const float* w = ws + idx[i] * s.in * s.out;
      float* yi = ys + i * s.out;
      for (int64_t f = 0; f < s.in; ++f) {
        const float xf = xs[i * s.in + f];
        const float* wf = w + f * s.out;
#pragma omp simd
        for (int64_t o = 0; o < s.out; ++o) yi[o] += xf * wf[o];
      }
    }
  });
  return y;
}

std::vector<at::Tensor> indexed_product_backward(const at::Tensor& grad_in, const at::Tensor& x_in,
                                                 const at::Tensor& weights_in, const at::Tensor& index_in) {
  const Sizes s = sizes_of(x_in, weights_in, index_in);
  const at::Tensor x = x_in.detach().contiguous(), weights = weights_in.detach().contiguous();
  const at::Tensor index = index_in.to(at::kLong).contiguous(), grad = grad_in.contiguous();
  TORCH_CHECK(grad.size(0) == s.rows && grad.size(1) == s.out, "gradient of the wrong shape");
  at::Tensor grad_x = at::empty_like(x);
  at::Tensor grad_weights = at::zeros({at::get_num_threads(), s.matrices, s.in, s.out}, x.options());
  const float* xs = x.data_ptr<float>();
  const float* ws = weights.data_ptr<float>();
  const float* gs = grad.data_ptr<float>();
  const int64_t* idx = index.data_ptr<int64_t>();
  float* dx = grad_x.data_ptr<float>();
  at::parallel_for(0, s.rows, kRowGrain, [&](int64_t begin, int64_t end) {
    float* dws = grad_weights[at::get_thread_num()].data_ptr<float>();
    for (int64_t i = begin; i < end; ++i) {
      const float* w = ws + idx[i] * s.in * s.out;
      float* dw = dws + idx[i] * s.in * s.out;
      const float* gi = gs + i * s.out;
      for (int64_t f = 0; f < s.in; ++f) {
        const float xf = xs[i * s.in + f];
        const float* wf = w + f * s.out;
        float* dwf = dw + f * s.out;
        float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
        for (int64_t o = 0; o < s.out; ++o) {
          sum += gi[o] * wf[o];
          dwf[o] += xf * gi[o];
        }
        dx[i * s.in + f] = sum;
      }
    }
  });
  return {grad_x, grad_weights.sum(0)};
}
