// The CUDA context the ops run in: one stream, the library handles, the eigensolver choice and a
// grow-only scratch workspace. One per host thread, created on first use.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cusolverDn.h>

#include <cstddef>
#include <cstdint>

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

  // Device scratch of at least `bytes`, valid until the next call: an op takes all it needs in
  // one call and carves it (an Arena). Growing waits for the stream, so a graph capture must be
  // preceded by one uncaptured step.
  void* scratch(size_t bytes);

 private:
  cudaStream_t stream_ = nullptr;
  cublasHandle_t cublas_ = nullptr;
  cusolverDnHandle_t cusolver_ = nullptr;
  void* scratch_ = nullptr;
  size_t scratch_bytes_ = 0;
};

Context& context();

// Blocks of `threads` covering `count` items, capped so a grid-stride loop does the rest.
inline unsigned blocks_for(int64_t count, int threads) {
  const int64_t b = (count + threads - 1) / threads;
  return unsigned(b < 1 ? 1 : (b > 65535 * 16 ? 65535 * 16 : b));
}

}  // namespace hetdro::cuda
