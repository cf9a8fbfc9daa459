// Batched symmetric eigendecomposition on the GPU, the back end of w2_gaussian (docs/DESIGN.md
// §3): our Jacobi kernel (kernels/jacobi_eig.cu) or cuSOLVER's syevjBatched / XsyevBatched
// (kernels/eig.cu), chosen by cuda::Eigensolver. For kernels/*.cu only.
#pragma once

#include <cuda_runtime.h>
#include <cusolverDn.h>  // CUSOLVER_VERSION

#include <cstddef>
#include <cstdint>

#include "hetdro/cuda_ops.h"  // Eigensolver

// cusolverDnXsyevBatched (the syev back end) exists from cuSOLVER 11.7.1, CUDA 12.6 update 2: an
// older toolkit builds without it, and asking for it then fails naming the version (issue 18).
// Defining HETDRO_XSYEV_BATCHED=0 builds as such a toolkit would, to check that path compiles.
#ifndef HETDRO_XSYEV_BATCHED
#if defined(CUSOLVER_VERSION) && CUSOLVER_VERSION >= 11701
#define HETDRO_XSYEV_BATCHED 1
#else
#define HETDRO_XSYEV_BATCHED 0
#endif
#endif

namespace hetdro::cuda {

// The back end that runs for k on the current device: kernels/eig_choice.h's rule; throws
// std::invalid_argument when the one asked for cannot run k here, naming why.
Eigensolver resolve_eigensolver(Eigensolver solver, int k);

// Device workspace one eigh call of this shape needs (resolved solver).
size_t eigh_workspace_bytes(Eigensolver solver, int batch, int k);

// A [batch,k,k] row-major symmetric, contiguous → eigenvalues ascending into w (matrix b's at
// w + b·w_stride) and eigenvectors into V (b's at V + b·v_stride, row-major, eigenvector i in
// column i, as Eigen returns them). Enqueued on the context's stream; no host sync, no
// allocation (workspace: eigh_workspace_bytes). Only the jacobi back end is known to be
// capturable into a CUDA Graph.
void eigh(float* w, int64_t w_stride, float* V, int64_t v_stride, const float* A, int batch, int k,
          Eigensolver solver, void* workspace);

// The Jacobi kernel alone (kernels/jacobi_eig.cu): same contract, no workspace, k ≤ 128.
void jacobi_eigh(float* w, int64_t w_stride, float* V, int64_t v_stride, const float* A, int batch,
                 int k, cudaStream_t stream);

}  // namespace hetdro::cuda
