// Products of the small matrices of a tile, where BLAS spends much of its time copying its operands
// into packed panels: the kernels' products have an output width that is a multiple of 32 and a
// small operand that fits in cache, so a register-blocked loop over the inner dimension reads both
// operands where they lie, at the machine's vector width (vec.h). Other shapes go to BLAS (blas.cpp).
#include "kernels.h"

#include <type_traits>

namespace {

#if CGAT_VECTOR_LANES == 16
constexpr int kRows = 8;  // rows of C per block: 8 x 2 accumulators of the 32 vector registers
#else
constexpr int kRows = 2;  // 2 x 4 accumulators of the 16 vector registers
#endif
constexpr int kWidth = 32;  // columns of C per block
constexpr int kVectors = kWidth / kLanes;

// C[rows x 32] = beta C + bias + sum_p A(r, p) B[p, 0:32], with A(r, p) = a[r * a_row + p * a_inner]
// and bias a row vector (or none).
template <int Rows>
inline void block(int64_t k, const float* a, int64_t a_row, int64_t a_inner, const float* b, int64_t ldb,
                  const float* bias, float beta, float* c, int64_t ldc) {
  Vec acc[Rows][kVectors];
  for (int j = 0; j < kVectors; ++j) {
    const Vec start = bias != nullptr ? load(bias + j * kLanes) : Vec{};
    for (int r = 0; r < Rows; ++r) acc[r][j] = start;
  }
  for (int64_t p = 0; p < k; ++p) {
    Vec bv[kVectors];
#pragma GCC unroll 4
    for (int j = 0; j < kVectors; ++j) bv[j] = load(b + p * ldb + j * kLanes);
#pragma GCC unroll 8
    for (int r = 0; r < Rows; ++r) {
      const float av = a[r * a_row + p * a_inner];
#pragma GCC unroll 4
      for (int j = 0; j < kVectors; ++j) acc[r][j] += av * bv[j];
    }
  }
  for (int r = 0; r < Rows; ++r) {
    for (int j = 0; j < kVectors; ++j) {
      float* cp = c + r * ldc + j * kLanes;
      store(cp, beta == 0.0f ? acc[r][j] : acc[r][j] + beta * load(cp));
    }
  }
}

template <int Rows>
void rows_of_blocks(int64_t n, int64_t k, const float* a, int64_t a_row, int64_t a_inner, const float* b, int64_t ldb,
                    const float* bias, float beta, float* c, int64_t ldc) {
  for (int64_t j = 0; j < n; j += kWidth) {
    block<Rows>(k, a, a_row, a_inner, b + j, ldb, bias != nullptr ? bias + j : nullptr, beta, c + j, ldc);
  }
}

}  // namespace

void tile_gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
               const float* b, int64_t ldb, float beta, float* c, int64_t ldc, const float* bias) {
  if (m == 0 || n == 0) return;
  // A transposed B goes to BLAS too: the kernels pass their weights transposed once per call.
  if (n % kWidth != 0 || trans_b) {
    if (bias != nullptr) {
      for (int64_t r = 0; r < m; ++r) {
        for (int64_t q = 0; q < n; ++q) c[r * ldc + q] = (beta == 0.0f ? 0.0f : beta * c[r * ldc + q]) + bias[q];
      }
      beta = 1.0f;
    }
    blas_gemm(trans_a, trans_b, m, n, k, a, lda, b, ldb, beta, c, ldc);
    return;
  }
  const int64_t a_row = trans_a ? 1 : lda, a_inner = trans_a ? lda : 1;
  const auto rows = [&](auto block_rows, int64_t r) {
    constexpr int kBlockRows = decltype(block_rows)::value;
    rows_of_blocks<kBlockRows>(n, k, a + r * a_row, a_row, a_inner, b, ldb, bias, beta, c + r * ldc, ldc);
  };
  int64_t r = 0;
  for (; r + kRows <= m; r += kRows) rows(std::integral_constant<int, kRows>{}, r);
  // The last m mod kRows rows, in blocks of 4, 2 and 1.
  if constexpr (kRows > 4) {
    if (m - r >= 4) {
      rows(std::integral_constant<int, 4>{}, r);
      r += 4;
    }
  }
  if constexpr (kRows > 2) {
    if (m - r >= 2) {
      rows(std::integral_constant<int, 2>{}, r);
      r += 2;
    }
  }
  if (m - r == 1) rows(std::integral_constant<int, 1>{}, r);
}
