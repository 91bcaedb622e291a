// Vectors of floats at the machine's width (-march=native: 16 floats with AVX-512, else 8), as GCC's
// vector extension, for kernels whose loops keep their running values in registers.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__AVX512F__)
constexpr int kLanes = 16;
#else
constexpr int kLanes = 8;
#endif

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

// exp_nonpositive (kernels.h) on every lane.
inline Vec exp_nonpositive(Vec x) {
  x = max(x, splat(-87.0f));
  const IntVec n = __builtin_convertvector(x * 1.44269504088896341f - 0.5f, IntVec);
  const Vec nf = __builtin_convertvector(n, Vec);
  const Vec r = x - nf * 0.693359375f + nf * 2.12194440e-4f;
  Vec p = splat(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const IntVec bits = (n + 127) << 23;
  Vec scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return (p * r * r + r + 1.0f) * scale;
}
