// CUDA-event timing and the device's ceilings, for the benchmarks.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <vector>

#include "context.h"
#include "cuda_check.h"
#include "hetdro/cuda_timing.h"

namespace hetdro::cuda {

double event_ms(const std::function<void()>& fn) {
  cudaStream_t s = context().stream();
  cudaEvent_t start = nullptr, stop = nullptr;
  cudaCheck(cudaEventCreate(&start));
  cudaCheck(cudaEventCreate(&stop));
  float ms = 0;
  try {
    cudaCheck(cudaEventRecord(start, s));
    fn();
    cudaCheck(cudaEventRecord(stop, s));
    cudaCheck(cudaEventSynchronize(stop));
    cudaCheck(cudaEventElapsedTime(&ms, start, stop));
  } catch (...) {
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
    throw;
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return double(ms);
}

double median_ms(const std::function<void()>& fn, int warmup, int reps) {
  for (int i = 0; i < warmup; ++i) fn();
  std::vector<double> ms(size_t(std::max(reps, 1)));
  for (double& t : ms) t = event_ms(fn);
  std::nth_element(ms.begin(), ms.begin() + ms.size() / 2, ms.end());
  return ms[ms.size() / 2];
}

void synchronize() { cudaCheck(cudaStreamSynchronize(context().stream())); }

Ceilings measure_ceilings() {
  Ceilings c;
  int device = 0;
  cudaCheck(cudaGetDevice(&device));
  cudaDeviceProp p;
  cudaCheck(cudaGetDeviceProperties(&p, device));
  c.device = p.name;
  cudaStream_t s = context().stream();

  const size_t bytes = size_t(1) << 30;  // 1 GiB each way: far beyond L2
  void *src = nullptr, *dst = nullptr;
  cudaCheck(cudaMalloc(&src, bytes));
  cudaCheck(cudaMalloc(&dst, bytes));
  cudaCheck(cudaMemsetAsync(src, 0, bytes, s));
  const double copy = median_ms(
      [&] { cudaCheck(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, s)); }, 2, 10);
  c.copy_gbps = 2.0 * double(bytes) / (copy * 1e-3) / 1e9;
  cudaCheck(cudaFree(src));
  cudaCheck(cudaFree(dst));

  const int n = 8192;
  float *a = nullptr, *b = nullptr, *out = nullptr;
  cudaCheck(cudaMalloc(&a, size_t(n) * n * sizeof(float)));
  cudaCheck(cudaMalloc(&b, size_t(n) * n * sizeof(float)));
  cudaCheck(cudaMalloc(&out, size_t(n) * n * sizeof(float)));
  cudaCheck(cudaMemsetAsync(a, 0, size_t(n) * n * sizeof(float), s));
  cudaCheck(cudaMemsetAsync(b, 0, size_t(n) * n * sizeof(float), s));
  const float one = 1.0f, zero = 0.0f;
  const double gemm = median_ms(
      [&] {
        cublasCheck(cublasSgemm(context().cublas(), CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &one, a, n,
                                b, n, &zero, out, n));
      },
      2, 10);
  c.sgemm_tflops = 2.0 * double(n) * n * n / (gemm * 1e-3) / 1e12;
  cudaCheck(cudaFree(a));
  cudaCheck(cudaFree(b));
  cudaCheck(cudaFree(out));
  return c;
}

}  // namespace hetdro::cuda
