// The CUDA kernels of every op (docs/DESIGN.md §3, §6): the same names and parameters as the CPU
// reference (ops.h), expanded from the one op list, ops.def, in namespace hetdro::cuda. Pointers
// are device memory; every op is enqueued on the CUDA context's stream and returns without
// waiting. Defined in kernels/<op>.cu for T = float only: the double twin of each op is the CPU
// reference that the GPU tests compare against.
#pragma once

#include <cstdint>

#include "hetdro/ops.h"  // ClfRule, w2_gaussian_saved_size

namespace hetdro::cuda {

#define HETDRO_OP(name, params, args) \
  template <typename T>               \
  void name params;
#include "hetdro/ops.def"
#undef HETDRO_OP

// The symmetric eigensolver behind w2_gaussian (docs/DESIGN.md §3). `automatic` picks by k (see
// kernels/eig.cu); the others force one back end.
enum class Eigensolver { automatic, jacobi, syevj, syev };
void set_eigensolver(Eigensolver solver);  // this thread's CUDA context
Eigensolver eigensolver();
const char* name(Eigensolver solver);

// The eigensolver alone, for its tests and benchmarks (kernels/eig.cu): A [batch,k,k] symmetric
// → eigenvalues ascending w [batch,k] and eigenvectors V [batch,k,k], row-major, eigenvector i
// in column i (as Eigen returns them), by this thread's eigensolver. Device pointers.
void eigh(float* w, float* V, const float* A, int batch, int k);

}  // namespace hetdro::cuda
