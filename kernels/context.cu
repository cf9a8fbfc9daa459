// The per-thread CUDA context and the checked-call failure path.
#include <fmt/format.h>

#include <string>

#include "context.h"
#include "cuda_check.h"

namespace hetdro::cuda {

void fail(const char* file, int line, const char* call, const std::string& why) {
  throw CudaError(fmt::format("{}:{}: {} failed: {}", file, line, call, why));
}

void check(cusolverStatus_t status, const char* file, int line, const char* call) {
  if (status == CUSOLVER_STATUS_SUCCESS) return;
  // cuSOLVER has no status-to-string function.
  const char* why = "unknown cuSOLVER status";
  switch (status) {
    case CUSOLVER_STATUS_NOT_INITIALIZED:
      why = "CUSOLVER_STATUS_NOT_INITIALIZED";
      break;
    case CUSOLVER_STATUS_ALLOC_FAILED:
      why = "CUSOLVER_STATUS_ALLOC_FAILED";
      break;
    case CUSOLVER_STATUS_INVALID_VALUE:
      why = "CUSOLVER_STATUS_INVALID_VALUE";
      break;
    case CUSOLVER_STATUS_ARCH_MISMATCH:
      why = "CUSOLVER_STATUS_ARCH_MISMATCH";
      break;
    case CUSOLVER_STATUS_EXECUTION_FAILED:
      why = "CUSOLVER_STATUS_EXECUTION_FAILED";
      break;
    case CUSOLVER_STATUS_INTERNAL_ERROR:
      why = "CUSOLVER_STATUS_INTERNAL_ERROR";
      break;
    case CUSOLVER_STATUS_NOT_SUPPORTED:
      why = "CUSOLVER_STATUS_NOT_SUPPORTED";
      break;
    default:
      break;
  }
  fail(file, line, call, fmt::format("{} ({})", why, int(status)));
}

Context::Context() {
  cudaCheck(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  cublasCheck(cublasCreate(&cublas_));
  cublasCheck(cublasSetStream(cublas_, stream_));
  // cuBLAS's own workspace, fixed, so that a GEMM recorded into a CUDA Graph allocates nothing
  // (cuBLAS's advice for graph capture; 32 MiB is its recommendation for Hopper).
  constexpr size_t kCublasWorkspace = size_t(32) << 20;
  cudaCheck(cudaMalloc(&cublas_workspace_, kCublasWorkspace));
  cublasCheck(cublasSetWorkspace(cublas_, cublas_workspace_, kCublasWorkspace));
  cusolverCheck(cusolverDnCreate(&cusolver_));
  cusolverCheck(cusolverDnSetStream(cusolver_, stream_));
}

Context::~Context() {
  // No throwing from a destructor: a failure here has nowhere to go.
  if (cusolver_) cusolverDnDestroy(cusolver_);
  if (cublas_) cublasDestroy(cublas_);
  if (cublas_workspace_) cudaFree(cublas_workspace_);
  if (scratch_) cudaFree(scratch_);
  for (void* p : outgrown_) cudaFree(p);
  if (stream_) cudaStreamDestroy(stream_);
}

void Context::set_deterministic(bool on) {
  cublasCheck(
      cublasSetAtomicsMode(cublas_, on ? CUBLAS_ATOMICS_NOT_ALLOWED : CUBLAS_ATOMICS_ALLOWED));
  deterministic_ = on;
}

void* Context::scratch(size_t bytes) {
  if (bytes <= scratch_bytes_) return scratch_;
  void* grown = nullptr;
  cudaCheck(cudaMalloc(&grown, bytes));
  if (scratch_) outgrown_.push_back(scratch_);
  scratch_ = grown;
  scratch_bytes_ = bytes;
  return scratch_;
}

size_t opt_in_shared_memory(const void* kernel, size_t bytes) {
  int device = 0, optin = 0;
  cudaCheck(cudaGetDevice(&device));
  cudaCheck(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  const size_t set = bytes < size_t(optin) ? bytes : size_t(optin);
  cudaCheck(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(set)));
  return set;
}

Context& context() {
  thread_local Context c;
  return c;
}

void set_eigensolver(Eigensolver solver) { context().eigensolver = solver; }
Eigensolver eigensolver() { return context().eigensolver; }
const char* name(Eigensolver solver) {
  switch (solver) {
    case Eigensolver::jacobi:
      return "jacobi";
    case Eigensolver::syevj:
      return "syevj";
    case Eigensolver::syev:
      return "syev";
    default:
      return "auto";
  }
}

}  // namespace hetdro::cuda
