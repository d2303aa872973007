// FQ_MULTIVERSION: compile a function twice, for x86-64-v3 (AVX2, FMA, F16C) and baseline
// x86-64, and let the loader pick one at run time (GCC function multi-versioning: the name is
// an ifunc), so one build runs fast on any x86-64. Put it on the definition only: a
// declaration carrying it makes each caller's file emit its own resolver (see row_kernels.h).
#pragma once

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define FQ_MULTIVERSION __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define FQ_MULTIVERSION
#endif
