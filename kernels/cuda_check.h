// Checked CUDA, cuBLAS, cuSOLVER calls: a failure throws a CudaError naming file:line, the call
// and the library's own message, so the CLI reports it (exit code 1) instead of crashing.
// cuDNN's check lives with the rest of the cuDNN code, in kernels/cudnn.cu.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cusolverDn.h>

#include <stdexcept>
#include <string>

namespace hetdro::cuda {

struct CudaError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

[[noreturn]] void fail(const char* file, int line, const char* call, const std::string& why);

// A failed runtime call also records its error as the thread's "last error", which the next
// launchCheck() would report as a failed kernel launch (a cudaMalloc that ran out of memory,
// caught, then blamed on an unrelated kernel). Reading it here clears it; a sticky error (a
// faulted context) stays and fails every later call anyway.
inline void check(cudaError_t status, const char* file, int line, const char* call) {
  if (status != cudaSuccess) {
    (void)cudaGetLastError();
    fail(file, line, call, cudaGetErrorString(status));
  }
}
inline void check(cublasStatus_t status, const char* file, int line, const char* call) {
  if (status != CUBLAS_STATUS_SUCCESS) fail(file, line, call, cublasGetStatusString(status));
}
void check(cusolverStatus_t status, const char* file, int line, const char* call);
const char* cusolver_status_name(cusolverStatus_t status);  // "CUSOLVER_STATUS_INVALID_VALUE"

}  // namespace hetdro::cuda

#define cudaCheck(call) ::hetdro::cuda::check((call), __FILE__, __LINE__, #call)
#define cublasCheck(call) ::hetdro::cuda::check((call), __FILE__, __LINE__, #call)
#define cusolverCheck(call) ::hetdro::cuda::check((call), __FILE__, __LINE__, #call)
// After a kernel launch: a bad launch configuration surfaces here, not at the next sync.
#define launchCheck() ::hetdro::cuda::check(cudaGetLastError(), __FILE__, __LINE__, "kernel launch")
