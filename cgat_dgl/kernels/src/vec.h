// Vectors of floats at the build's width (8 floats for x86-64-v3, 16 with -march=native on an AVX-512
// machine), as GCC's vector extension, for kernels whose loops keep their running values in registers.
// The lane count decides the order of lane reductions, hence the bits of the results: CGAT_VECTOR_LANES
// sets it regardless of the instruction set, to reproduce another build's numbers.
#pragma once

#include <cstdint>
#include <cstring>

#if !defined(CGAT_VECTOR_LANES) && defined(__AVX512F__)
#define CGAT_VECTOR_LANES 16
#elif !defined(CGAT_VECTOR_LANES)
#define CGAT_VECTOR_LANES 8
#endif
constexpr int kLanes = CGAT_VECTOR_LANES;

typedef float Vec __attribute__((vector_size(kLanes * sizeof(float))));
typedef int32_t IntVec __attribute__((vector_size(kLanes * sizeof(int32_t))));

inline Vec load(const float* p) {
  Vec v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

inline void store(float* p, Vec v) { std::memcpy(p, &v, sizeof v); }

inline Vec splat(float x) { return Vec{} + x; }

inline Vec max(Vec a, Vec b) { return a > b ? a : b; }

// Conversions and maximum of a float or of a vector's lanes, so that one definition serves both.
inline int32_t to_int(float x) { return static_cast<int32_t>(x); }  // toward zero
inline IntVec to_int(Vec x) { return __builtin_convertvector(x, IntVec); }
inline float to_float(int32_t n) { return static_cast<float>(n); }
inline Vec to_float(IntVec n) { return __builtin_convertvector(n, Vec); }
inline float max(float a, float b) { return a > b ? a : b; }

// exp(x) for x <= 0 (the softmaxes' shifted scores), of a float or of every lane of a Vec, in a
// form the compiler vectorises: Cephes' expf, 2^n p(x - n ln 2) with n = round(x / ln 2), the
// scale 2^n built from its exponent bits.
template <typename F>
inline F exp_nonpositive(F x) {
  x = max(x, F{} - 87.0f);
  const auto n = to_int(x * 1.44269504088896341f - 0.5f);  // toward zero: rounds
  const F nf = to_float(n);
  const F r = x - nf * 0.693359375f + nf * 2.12194440e-4f;
  F p = F{} + 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const auto bits = (n + 127) << 23;
  F scale;
  static_assert(sizeof bits == sizeof scale, "an int32 per float");
  std::memcpy(&scale, &bits, sizeof scale);
  return (p * r * r + r + 1.0f) * scale;
}
