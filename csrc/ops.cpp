// Operator schemas of the fastquilt namespace. Kernels live in cpu/ and cuda/; Python adds the
// fake (meta) kernels and autograd (python/fastquilt/_ops.py).
#include <Python.h>
#include <torch/library.h>

extern "C" {
// Importing fastquilt._C only has to run the TORCH_LIBRARY static initialisers below; the
// module itself is empty (the pytorch/extension-cpp pattern, no torch_python dependency).
PyObject* PyInit__C(void) {
  static PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1,
                                   nullptr,               nullptr, nullptr, nullptr, nullptr};
  return PyModule_Create(&module_def);
}
}

TORCH_LIBRARY(fastquilt, m) {
  // input (N, C, *S), origins int64 (M, 1+D) rows [n, start_0, ...] -> patches (M, C, *window),
  // each multiplied by weight (*window) when given.
  m.def("gather_windows(Tensor input, Tensor origins, Tensor? weight, SymInt[] window) -> Tensor");
  // Same windows, each read with its axes permuted and flipped: orientation int64 (M, D), one
  // signed axis code per patch axis (+(k+1): input axis k forwards, -(k+1): backwards;
  // kernel_bodies/orientation.h). Only axes of equal window size trade places.
  m.def(
      "gather_windows_oriented(Tensor input, Tensor origins, Tensor orientation, SymInt[] window) "
      "-> Tensor");
  m.def(
      "gather_windows_oriented_into(Tensor input, Tensor origins, Tensor orientation, "
      "Tensor(a!) out) -> ()");
  // Same, written into a caller's contiguous (M, C, *window) buffer.
  m.def("gather_windows_into(Tensor input, Tensor origins, Tensor? weight, Tensor(a!) out) -> ()");
  // patches (M, C, *window) -> (acc (N, C, *S), weight_sum (N, *S)): the adjoint of the gather.
  // Accumulates in float32 for half/bfloat16/float32 patches, float64 for float64.
  m.def(
      "scatter_add_windows(Tensor patches, Tensor origins, Tensor? weight, SymInt[] spatial_size, "
      "SymInt num_images) -> (Tensor, Tensor)");
  // Streaming form: adds a batch of windows into existing accumulators.
  m.def(
      "scatter_add_windows_(Tensor patches, Tensor origins, Tensor? weight, Tensor(a!) acc, "
      "Tensor(b!)? weight_sum) -> ()");
  // Weighted mean of all windows of a full step-back grid (qlty order), computed per output
  // voxel: deterministic, no accumulator buffers. Returns (N, C, *S) in the patches' dtype.
  // inv_weight_sum (*S), 1 / weight sum (0 where uncovered), is an optional precomputed hint;
  // without it the kernels compute the same sums themselves (the CPU one row per class of
  // output rows, which costs less than reading the hint).
  m.def(
      "stitch_grid(Tensor patches, Tensor? weight, SymInt[] spatial_size, SymInt[] step, "
      "float fill_value, Tensor? inv_weight_sum=None) -> Tensor");
  // Same, written into a caller's contiguous (N, C, *S) buffer of the patches' dtype.
  m.def(
      "stitch_grid_into(Tensor patches, Tensor? weight, SymInt[] step, float fill_value, "
      "Tensor(a!) out, Tensor? inv_weight_sum=None) -> ()");
  // Weight sum of a full grid, per voxel in closed form: (*S) in the weight's dtype and device.
  // Deterministic (no atomics), so the grid stitch's backward is reproducible on the GPU too.
  m.def("grid_weight_sum(Tensor weight, SymInt[] spatial_size, SymInt[] step, bool inverse=False) -> Tensor");
  // acc (N, C, *S) divided in place by the grid's weight sum, fill_value where it is 0: the
  // sliding window's normalisation without a (*S) buffer.
  m.def("grid_normalize_(Tensor(a!) acc, Tensor weight, SymInt[] step, float fill_value) -> ()");
  // The normalisation of grid_normalize_ by rows (CPU): (inverse_rows (K, S[-1]), row_class
  // int64 (*S[:-1])): output row r of every image and channel is multiplied by
  // inverse_rows[row_class[r]] (0 where no weight covers a voxel). Rows covered by windows at
  // the same offsets share a class: about (step + a few)^(D-1) classes however large S is.
  m.def("grid_inverse_rows(Tensor weight, SymInt[] spatial_size, SymInt[] step) -> (Tensor, Tensor)");
  // One batch of a full grid's windows added into acc (N, C, *S) (CPU), the zeroing and the
  // normalisation of grid_normalize_ done plane by plane while each plane is in cache:
  // origins (M, 1+D) are the whole grid's, sorted by (n, start_0) (qlty order is), covering
  // every plane (n, start_0 axis position); patches (B, C, *window) are windows
  // first..first+B-1. A plane no earlier window covers starts from zero; a plane no later
  // window covers is then multiplied row by row by inverse_rows[row_class] (grid_inverse_rows),
  // fill_value where that is 0. Over all batches in order: grid_normalize_'s bits.
  m.def(
      "scatter_add_grid_batch_(Tensor patches, Tensor origins, int first, Tensor? weight, "
      "Tensor(a!) acc, Tensor inverse_rows, Tensor row_class, float fill_value) -> ()");
  // Class epilogue: acc (N, C, *S) divided by weight_sum (N, *S) (absent: acc is the mean),
  // then per voxel the argmax label (N, *S) (uint8 up to 256 classes, else uint16), the mean
  // of that class and the entropy of the mean (N, *S) (empty (0,) tensors when not asked for).
  m.def(
      "class_epilogue(Tensor acc, Tensor? weight_sum, float fill_value, bool probability, "
      "bool entropy) -> (Tensor, Tensor, Tensor)");
}
