// The kernels' tile products call BLAS directly: a tile's products are too small for the cost of
// dispatching tensor operations. Torch's CPU library exports the Fortran sgemm_ of the BLAS it
// bundles (MKL on x86-64 Linux); called inside a parallel region it runs on the calling thread.
#include "kernels.h"

extern "C" void sgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k,
                       const float* alpha, const float* a, const int* lda, const float* b, const int* ldb,
                       const float* beta, float* c, const int* ldc);

// BLAS is column-major: the row-major C^T = op(B)^T op(A)^T is its C = op(B) op(A).
void blas_gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
               const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  const char ta = trans_a ? 'T' : 'N', tb = trans_b ? 'T' : 'N';
  const int mi = static_cast<int>(m), ni = static_cast<int>(n), ki = static_cast<int>(k);
  const int la = static_cast<int>(lda), lb = static_cast<int>(ldb), lc = static_cast<int>(ldc);
  const float one = 1.0f;
  sgemm_(&tb, &ta, &ni, &mi, &ki, &one, b, &lb, a, &la, &beta, c, &lc);
}
