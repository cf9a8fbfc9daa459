// The per-thread CUDA context and the checked-call failure path.
#include <fmt/format.h>

#include <map>
#include <mutex>
#include <string>
#include <utility>

#include "context.h"
#include "cuda_check.h"

namespace hetdro::cuda {

void fail(const char* file, int line, const char* call, const std::string& why) {
  throw CudaError(fmt::format("{}:{}: {} failed: {}", file, line, call, why));
}

// cuSOLVER has no status-to-string function.
const char* cusolver_status_name(cusolverStatus_t status) {
  switch (status) {
    case CUSOLVER_STATUS_SUCCESS:
      return "CUSOLVER_STATUS_SUCCESS";
    case CUSOLVER_STATUS_NOT_INITIALIZED:
      return "CUSOLVER_STATUS_NOT_INITIALIZED";
    case CUSOLVER_STATUS_ALLOC_FAILED:
      return "CUSOLVER_STATUS_ALLOC_FAILED";
    case CUSOLVER_STATUS_INVALID_VALUE:
      return "CUSOLVER_STATUS_INVALID_VALUE";
    case CUSOLVER_STATUS_ARCH_MISMATCH:
      return "CUSOLVER_STATUS_ARCH_MISMATCH";
    case CUSOLVER_STATUS_EXECUTION_FAILED:
      return "CUSOLVER_STATUS_EXECUTION_FAILED";
    case CUSOLVER_STATUS_INTERNAL_ERROR:
      return "CUSOLVER_STATUS_INTERNAL_ERROR";
    case CUSOLVER_STATUS_NOT_SUPPORTED:
      return "CUSOLVER_STATUS_NOT_SUPPORTED";
    default:
      return "unknown cuSOLVER status";
  }
}

void check(cusolverStatus_t status, const char* file, int line, const char* call) {
  if (status == CUSOLVER_STATUS_SUCCESS) return;
  fail(file, line, call, fmt::format("{} ({})", cusolver_status_name(status), int(status)));
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
  cudaCheck(cudaMalloc(&solver_status_, sizeof(int64_t)));
  cudaCheck(cudaMemsetAsync(solver_status_, 0, sizeof(int64_t), stream_));
}

Context::~Context() {
  // No throwing from a destructor: a failure here has nowhere to go.
  if (cusolver_) cusolverDnDestroy(cusolver_);
  if (cublas_) cublasDestroy(cublas_);
  if (cublas_workspace_) cudaFree(cublas_workspace_);
  if (scratch_) cudaFree(scratch_);
  if (solver_status_) cudaFree(solver_status_);
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

namespace {
std::mutex g_shared_mutex;  // guards the two maps below: contexts live on many threads
}  // namespace

size_t device_shared_optin() {
  static std::map<int, size_t> by_device;
  int device = 0;
  cudaCheck(cudaGetDevice(&device));
  const std::lock_guard<std::mutex> lock(g_shared_mutex);
  auto it = by_device.find(device);
  if (it != by_device.end()) return it->second;
  int optin = 0;
  cudaCheck(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  return by_device[device] = size_t(optin);
}

size_t opt_in_shared_memory(const void* kernel, size_t bytes) {
  const size_t optin = device_shared_optin();
  static std::map<std::pair<int, const void*>, size_t> set_on;
  int device = 0;
  cudaCheck(cudaGetDevice(&device));
  const std::lock_guard<std::mutex> lock(g_shared_mutex);
  auto it = set_on.find({device, kernel});
  if (it != set_on.end()) return it->second;
  const size_t set = bytes < optin ? bytes : optin;
  cudaCheck(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(set)));
  return set_on[{device, kernel}] = set;
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
