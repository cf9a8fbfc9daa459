// The CUDA context the ops run in: one stream, the library handles, the eigensolver choice and a
// grow-only scratch workspace. One per host thread, created on first use.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cusolverDn.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "hetdro/cuda_ops.h"  // Eigensolver

namespace hetdro::cuda {

class Context {
 public:
  Context();
  ~Context();
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  cudaStream_t stream() const { return stream_; }
  cublasHandle_t cublas() const { return cublas_; }
  cusolverDnHandle_t cusolver() const { return cusolver_; }
  Eigensolver eigensolver = Eigensolver::automatic;
  // train.deterministic: cuDNN's deterministic algorithms only, and no cuBLAS atomics.
  bool deterministic() const { return deterministic_; }
  void set_deterministic(bool on);

  // Device scratch of at least `bytes`, valid until the next call: an op takes all it needs in
  // one call and carves it (an Arena). A block outgrown is kept, not freed, until the context
  // ends: ops issued before, or recorded into a CUDA Graph, still use it.
  void* scratch(size_t bytes);

  // The cuSOLVER eigensolvers' failure record, int64 [1] on the device: 0, or the first
  // failure's code (hetdro/step_status.h), sticky until check_finite folds it into the step's
  // status or take_solver_failure() reads it. Written on the stream, never waited for.
  int64_t* solver_status() const { return solver_status_; }

 private:
  cudaStream_t stream_ = nullptr;
  cublasHandle_t cublas_ = nullptr;
  cusolverDnHandle_t cusolver_ = nullptr;
  bool deterministic_ = true;
  void* scratch_ = nullptr;
  size_t scratch_bytes_ = 0;
  std::vector<void*> outgrown_;
  void* cublas_workspace_ = nullptr;
  int64_t* solver_status_ = nullptr;
};

Context& context();

// Lets `kernel` take up to `bytes` of dynamic shared memory (the opt-in above 48 KiB), capped at
// what the current device allows; returns the limit set. An attribute of the function on one
// device, not a stream operation: set once per (kernel, device), later calls return the limit
// (the first, uncaptured step sets it; docs/DESIGN.md §3).
size_t opt_in_shared_memory(const void* kernel, size_t bytes);
// The current device's opt-in limit (cudaDevAttrMaxSharedMemoryPerBlockOptin), queried once per
// device.
size_t device_shared_optin();

// Blocks of `threads` covering `count` items, capped so a grid-stride loop does the rest.
inline unsigned blocks_for(int64_t count, int threads) {
  const int64_t b = (count + threads - 1) / threads;
  return unsigned(b < 1 ? 1 : (b > 65535 * 16 ? 65535 * 16 : b));
}

}  // namespace hetdro::cuda
