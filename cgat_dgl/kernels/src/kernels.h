// The CPU kernels of the fast implementation (cgat_dgl/model/fast/cpu_kernels.py) and of the optimiser's
// step (cgat_dgl/training/optimizer.py), built by cgat_dgl/kernels.
#pragma once

// ATen alone: torch/extension.h (pybind11 and all of torch) is for bindings.cpp; in every file it
// more than doubles the build (91 s against 39 s on two cores).
#include <ATen/ATen.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "vec.h"

// Row-major C (m x n, row stride ldc) = op(A) op(B) + beta C, op(A) m x k and op(B) k x n; with
// trans_a, A is stored k x m (op(A) = A^T), likewise B. Called on tiles, single-threaded (blas.cpp).
void blas_gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
               const float* b, int64_t ldb, float beta, float* c, int64_t ldc);

// The same product plus a row vector `bias` (n floats, or none) added to every row, computed by
// tile_gemm.cpp's register-blocked loops where n is a multiple of 32 and B is not transposed, else
// by BLAS.
void tile_gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
               const float* b, int64_t ldb, float beta, float* c, int64_t ldc, const float* bias = nullptr);

// Copies a row of n floats (a short run: inline rather than a call to memmove).
inline void copy_row(const float* from, int64_t n, float* to) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) to[j] = from[j];
}

// sums[j] += sum_t rows[t * n + j] over `count` rows of n floats (a bias's gradient).
inline void add_row_sums(const float* rows, int64_t count, int64_t n, float* sums) {
  for (int64_t t = 0; t < count; ++t) {
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) sums[j] += rows[t * n + j];
  }
}

// The inputs of the tiled edge networks (edge_networks.cpp) by name, one struct for the forward
// and the backward; cpu_kernels.TiledEdgeNetworks fills it from Python.
struct EdgeNetworkArgs {
  at::Tensor receiver_term, sender_term;       // (receivers, H), (senders, H): the first layer's node terms
  at::Tensor receiver;                         // (E,) each edge's receiver, edges in blocks per sender
  int64_t block = 0;                           // edges per sender
  at::Tensor second_weight, second_bias;       // (groups, H / groups, F), (groups, F)
  int64_t part_groups = 1;                     // groups per output part
  c10::optional<at::Tensor> features, weight;  // the edge term: features (E, F) times weight (H, F)^T,
  c10::optional<at::Tensor> table, rows;       // or a projected table (R, H) read at rows (E,)
  c10::optional<at::Tensor> positions;         // (E,) edge e's row in the first ordered_groups groups
  int64_t ordered_groups = 0;
  double slope = 0.01;                         // LeakyReLU's negative slope
};

// The groups' outputs, in parts of part_groups groups.
std::vector<at::Tensor> edge_networks_forward(const EdgeNetworkArgs& args);

// The gradients of the differentiable inputs, in the struct's order: receiver_term, sender_term,
// second_weight, second_bias, features, weight, table (undefined where absent).
std::vector<at::Tensor> edge_networks_backward(const std::vector<at::Tensor>& grad_parts, const EdgeNetworkArgs& args);

std::vector<at::Tensor> attention_aggregate_forward(const at::Tensor& scores, const at::Tensor& messages,
                                                    const c10::optional<at::Tensor>& order, const at::Tensor& offsets,
                                                    const c10::optional<at::Tensor>& rows);

std::vector<at::Tensor> attention_aggregate_backward(const at::Tensor& grad_aggregate, const at::Tensor& scores,
                                                     const at::Tensor& messages, const c10::optional<at::Tensor>& order,
                                                     const at::Tensor& offsets, const c10::optional<at::Tensor>& rows,
                                                     const at::Tensor& log_norm, const at::Tensor& head_means);

at::Tensor generated_product_forward(const at::Tensor& x, const at::Tensor& z, const at::Tensor& weight);

std::vector<at::Tensor> generated_product_backward(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& z,
                                                   const at::Tensor& weight);

at::Tensor head_attention_fcnn_forward(const at::Tensor& scores, const at::Tensor& messages, const at::Tensor& w1,
                                       const at::Tensor& b1, const at::Tensor& w2, const at::Tensor& b2, double slope);

std::vector<at::Tensor> head_attention_fcnn_backward(const at::Tensor& grad, const at::Tensor& scores,
                                                     const at::Tensor& messages, const at::Tensor& w1,
                                                     const at::Tensor& b1, const at::Tensor& w2, const at::Tensor& b2,
                                                     double slope);

at::Tensor indexed_product_forward(const at::Tensor& x, const at::Tensor& weights, const at::Tensor& index);

std::vector<at::Tensor> indexed_product_backward(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& weights,
                                                 const at::Tensor& index);
