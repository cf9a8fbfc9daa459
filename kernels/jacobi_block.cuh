// The block-wide steps shared by our two Jacobi eigensolver kernels (kernels/jacobi_eig.cu, the
// full k×k solve, and kernels/gram_eig.cu, the Gram route; docs/DESIGN.md §3): one block per
// matrix in shared memory, the round arithmetic from kernels/jacobi.h. For kernels/*.cu only.
#pragma once

#include <cuda_runtime.h>

#include "jacobi.h"

namespace hetdro::cuda::jacobi_block {

// The sum of every thread's `value`, by a fixed-shape tree in red[nt]: the same sum on every run
// (deterministic), returned to every thread. Reached by every thread of the block.
__device__ inline float tree_sum(float* red, float value, int tid, int nt) {
  red[tid] = value;
  __syncthreads();
  for (int s = 1; s < nt; s *= 2) {
    if (tid % (2 * s) == 0 && tid + s < nt) red[tid] += red[tid + s];
    __syncthreads();
  }
  return red[0];
}

// Cyclic sweeps over a (padded, even n) and its eigenvectors v until a sweep rotates nothing or
// jacobi::kMaxSweeps is reached. Each round: phase 1, the round's n/2 rotations from a as the
// previous round left it; phase 2, A ← Jᵀ A J by disjoint 2x2 blocks and V ← V J by rows. `tri`
// is round_apply's block table (nullptr: computed on the fly). Reached by every thread.
__device__ inline void sweeps(float* a, float* v, int ld, int n, float floor,
                              jacobi::Rotation<float>* rot, int* piv_p, int* piv_q,
                              const unsigned short* tri, int tid, int nt) {
  for (int sweep = 0; sweep < jacobi::kMaxSweeps; ++sweep) {
    int rotated = 0;
    for (int round = 0; round < n - 1; ++round) {
      rotated |= jacobi::round_rotations(a, ld, n, round, floor, rot, piv_p, piv_q, tid, nt);
      __syncthreads();
      jacobi::round_apply(a, v, ld, n, rot, piv_p, piv_q, tri, tid, nt);
      __syncthreads();
    }
    // Every thread gets the same answer, so the whole block leaves the loop together.
    if (!__syncthreads_or(rotated)) break;
  }
}

}  // namespace hetdro::cuda::jacobi_block
