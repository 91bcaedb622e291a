// The generated layers' product of the hypernetwork update, y_i = sum_{f,k} x_if z_ik A[(f,k), :]
// (x W(z) with W(z) = reshape(A z), see cgat_dgl/model/fast/hypernetwork.py), in tiles of atoms
// whose outer products x_i (x) z_i stay in cache; the backward recomputes them, so no (N, F * K)
// tensor is stored:
//   dA = sum_i (x_i (x) z_i)^T dy_i,  D_i = dy_i A^T (F x K),  dx_i = D_i z_i,  dz_i = D_i^T x_i.
#include "kernels.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

namespace {

struct Sizes {
  int64_t atoms, in, hidden, out, tile;
};

Sizes sizes_of(const at::Tensor& x, const at::Tensor& z, const at::Tensor& weight) {
  for (const at::Tensor* t : {&x, &z, &weight}) {
    TORCH_CHECK(t->device().is_cpu() && t->scalar_type() == at::kFloat && t->dim() == 2,
                "the generated-layer kernel takes 2-d float32 CPU tensors");
  }
  TORCH_CHECK(x.size(0) == z.size(0), "x and z must have a row per atom");
  TORCH_CHECK(weight.size(0) == x.size(1) * z.size(1), "the weight must have F * K rows");
  Sizes s{x.size(0), x.size(1), z.size(1), weight.size(1), 0};
  // About 16k floats (64 KB) of outer products per tile.
  s.tile = std::max<int64_t>(1, (int64_t{1} << 14) / (s.in * s.hidden));
  return s;
}

void outer_products(float* outer, const float* x, const float* z, int64_t first, int64_t count, const Sizes& s) {
  for (int64_t t = 0; t < count; ++t) {
    const float* xt = x + (first + t) * s.in;
    const float* zt = z + (first + t) * s.hidden;
    for (int64_t f = 0; f < s.in; ++f) {
      float* row = outer + (t * s.in + f) * s.hidden;
      const float xf = xt[f];
#pragma omp simd
      for (int64_t k = 0; k < s.hidden; ++k) row[k] = xf * zt[k];
    }
  }
}

}  // namespace

at::Tensor generated_product_forward(const at::Tensor& x_in, const at::Tensor& z_in, const at::Tensor& weight_in) {
  const Sizes s = sizes_of(x_in, z_in, weight_in);
  const at::Tensor x = x_in.detach().contiguous(), z = z_in.detach().contiguous();
  const at::Tensor weight = weight_in.detach().contiguous();
  at::Tensor y = at::empty({s.atoms, s.out}, x.options());
  const int64_t width = s.in * s.hidden;
  const int64_t tiles = (s.atoms + s.tile - 1) / s.tile;
  at::parallel_for(0, tiles, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> outer(s.tile * width);
    for (int64_t k = begin; k < end; ++k) {
      const int64_t first = k * s.tile, count = std::min(s.tile, s.atoms - first);
      outer_products(outer.data(), x.data_ptr<float>(), z.data_ptr<float>(), first, count, s);
      tile_gemm(false, false, count, s.out, width, outer.data(), width, weight.data_ptr<float>(), s.out, 0.0f,
                y.data_ptr<float>() + first * s.out, s.out);
    }
  });
  return y;
}

std::vector<at::Tensor> generated_product_backward(const at::Tensor& grad_in, const at::Tensor& x_in,
                                                   const at::Tensor& z_in, const at::Tensor& weight_in) {
  const Sizes s = sizes_of(x_in, z_in, weight_in);
  const at::Tensor x = x_in.detach().contiguous(), z = z_in.detach().contiguous();
  const at::Tensor weight = weight_in.detach().contiguous(), grad = grad_in.contiguous();
  TORCH_CHECK(grad.size(0) == s.atoms && grad.size(1) == s.out, "gradient of the wrong shape");
  const int64_t width = s.in * s.hidden;
  at::Tensor grad_x = at::empty_like(x), grad_z = at::empty_like(z);
  at::Tensor grad_weight = at::zeros({at::get_num_threads(), width, s.out}, x.options());
  // A^T, (O, F * K), once rather than per tile.
  const at::Tensor weight_t = weight.t().contiguous();
  // Larger tiles than the forward's: dA's (F * K, O) block is read and written once per tile.
  const int64_t tile = 4 * s.tile, tiles = (s.atoms + tile - 1) / tile;
  at::parallel_for(0, tiles, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> outer(tile * width), grad_outer(tile * width);
    float* d_weight = grad_weight[at::get_thread_num()].data_ptr<float>();
    const float* xs = x.data_ptr<float>();
    const float* zs = z.data_ptr<float>();
    for (int64_t k = begin; k < end; ++k) {
      const int64_t first = k * tile, count = std::min(tile, s.atoms - first);
      const float* dy = grad.data_ptr<float>() + first * s.out;
      outer_products(outer.data(), xs, zs, first, count, s);
      tile_gemm(true, false, width, s.out, count, outer.data(), width, dy, s.out, 1.0f, d_weight, s.out);
      tile_gemm(false, false, count, width, s.out, dy, s.out, weight_t.data_ptr<float>(), width, 0.0f,
                grad_outer.data(), width);
      for (int64_t t = 0; t < count; ++t) {
        const int64_t atom = first + t;
        const float* xt = xs + atom * s.in;
        const float* zt = zs + atom * s.hidden;
        float* dx = grad_x.data_ptr<float>() + atom * s.in;
        float* dz = grad_z.data_ptr<float>() + atom * s.hidden;
        std::fill_n(dz, s.hidden, 0.0f);
        for (int64_t f = 0; f < s.in; ++f) {
          const float* row = grad_outer.data() + (t * s.in + f) * s.hidden;
          const float xf = xt[f];
          float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
          for (int64_t j = 0; j < s.hidden; ++j) {
            sum += row[j] * zt[j];
            dz[j] += row[j] * xf;
          }
          dx[f] = sum;
        }
      }
    }
  });
  return {grad_x, grad_z, grad_weight.sum(0)};
}
