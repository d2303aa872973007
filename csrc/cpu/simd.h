// The one SIMD dispatch of the CPU kernels. A hot function is written once, as an always-inline
// body, and compiled twice: a plain variant for baseline x86-64 (what the whole build
// targets, so one build runs on any x86-64) and a variant marked FQ_TARGET_AVX2 (AVX2, FMA
// and F16C, the vector core of x86-64-v3). The caller picks one per call with
// cpu_has_avx2(), a flag set once when the library loads: a predictable branch and a direct
// call (both variants FQ_HIDDEN: no PLT, no GOT). The attributes, not a per-file -mavx2, keep
// the rest of the build baseline; they work for templates and inline bodies, and with GCC and
// Clang alike.
//
//   FQ_ALWAYS_INLINE void body(...) { ...loop... }
//   FQ_HIDDEN FQ_TARGET_AVX2 void f_avx2(...) { body(...); }
//   FQ_HIDDEN void f_base(...) { body(...); }
//   inline void f(...) { if (cpu_has_avx2()) return f_avx2(...); f_base(...); }
//
// The loops are element-wise, so the vector width does not change a result; the AVX2 variant
// may contract a * b + c into one FMA (one rounding instead of two), so the variants can
// differ in the last bit there, and a CPU always takes the same variant: results are
// reproducible on a machine. An F16C conversion rounds like c10's (to nearest even).
#pragma once

#if defined(__GNUC__)
#define FQ_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define FQ_ALWAYS_INLINE inline
#endif

#if defined(__GNUC__)
#define FQ_HIDDEN __attribute__((visibility("hidden")))
#else
#define FQ_HIDDEN
#endif

#if defined(__GNUC__) && defined(__x86_64__)
#define FQ_HAVE_AVX2_VARIANTS 1
#define FQ_TARGET_AVX2 __attribute__((target("avx2,fma,f16c")))
#else
#define FQ_TARGET_AVX2
#endif

namespace fastquilt::cpu {

#ifdef FQ_HAVE_AVX2_VARIANTS
// Whether this CPU runs the FQ_TARGET_AVX2 variants (cpu/simd.cpp; set when the library loads).
FQ_HIDDEN extern const bool kCpuHasAvx2;
inline bool cpu_has_avx2() { return kCpuHasAvx2; }
#else
inline bool cpu_has_avx2() { return false; }
#endif

}  // namespace fastquilt::cpu
