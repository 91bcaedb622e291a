// The CPU kernels of the fast implementation (cgat_dgl/model/fast/cpu_kernels.py).
#pragma once

#include <torch/extension.h>

#include <vector>

// Row-major C (m x n, row stride ldc) = op(A) op(B) + beta C, op(A) m x k and op(B) k x n; with
// trans_a, A is stored k x m (op(A) = A^T), likewise B. Called on tiles, single-threaded (blas.cpp).
void blas_gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
               const float* b, int64_t ldb, float beta, float* c, int64_t ldc);

std::vector<at::Tensor> edge_networks_forward(const at::Tensor& receiver_term, const at::Tensor& sender_term,
                                              const at::Tensor& receiver, int64_t block,
                                              const at::Tensor& second_weight, const at::Tensor& second_bias,
                                              int64_t part_groups, const c10::optional<at::Tensor>& features,
                                              const c10::optional<at::Tensor>& weight,
                                              const c10::optional<at::Tensor>& table,
                                              const c10::optional<at::Tensor>& rows, double slope);

std::vector<at::Tensor> edge_networks_backward(const std::vector<at::Tensor>& grad_parts,
                                               const at::Tensor& receiver_term,
                                               const at::Tensor& sender_term, const at::Tensor& receiver,
                                               int64_t block, const at::Tensor& second_weight,
                                               const at::Tensor& second_bias,
                                               const c10::optional<at::Tensor>& features,
                                               const c10::optional<at::Tensor>& weight,
                                               const c10::optional<at::Tensor>& table,
                                               const c10::optional<at::Tensor>& rows, double slope);

std::vector<at::Tensor> attention_aggregate_forward(const at::Tensor& scores, const at::Tensor& messages,
                                                    const at::Tensor& order, const at::Tensor& offsets,
                                                    const c10::optional<at::Tensor>& rows);

std::vector<at::Tensor> attention_aggregate_backward(const at::Tensor& grad_aggregate, const at::Tensor& scores,
                                                     const at::Tensor& messages, const at::Tensor& order,
                                                     const at::Tensor& offsets, const c10::optional<at::Tensor>& rows,
                                                     const at::Tensor& log_norm, const at::Tensor& head_means);

at::Tensor generated_product_forward(const at::Tensor& x, const at::Tensor& z, const at::Tensor& weight);

std::vector<at::Tensor> generated_product_backward(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& z,
                                                   const at::Tensor& weight);
