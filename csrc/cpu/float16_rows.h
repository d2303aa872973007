// Rows of 16-bit floats (float16, bfloat16) <-> float32 for the CPU kernels. c10's types convert
// one value at a time: float16 in software unless the whole build targets F16C (which one
// portable build cannot), bfloat16 through a NaN test that keeps the loop scalar. The float16
// stitch, scatter-add and weighted gather ran 2.4-8x slower than float32 per element, the
// bfloat16 weighted gather 2x. These convert whole rows: float16 8 values per instruction where
// the CPU has F16C (chosen at run time), bfloat16 in a loop the compiler vectorises. Both round
// to nearest even like c10, so results are unchanged (float16 NaN payloads aside).
#pragma once
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>
#include <type_traits>

namespace fastquilt::cpu {

void to_float_row(const c10::Half* src, float* dst, int64_t n);
void to_float_row(const c10::BFloat16* src, float* dst, int64_t n);
void from_float_row(const float* src, c10::Half* dst, int64_t n);
void from_float_row(const float* src, c10::BFloat16* dst, int64_t n);

// The types whose rows the kernels convert before summing in float32.
template <typename scalar_t>
constexpr bool kFloat16Type =
    std::is_same_v<scalar_t, c10::Half> || std::is_same_v<scalar_t, c10::BFloat16>;

// Floats converted per step through a stack buffer: 1 KiB, stays in L1.
constexpr int64_t kFloat16Block = 256;

}  // namespace fastquilt::cpu
