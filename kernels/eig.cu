// The batched symmetric eigensolver behind w2_gaussian (docs/DESIGN.md §3): which back end runs
// for which k, the two cuSOLVER back ends (syevjBatched, XsyevBatched), and the public
// cuda::eigh that the tests and benchmarks call.
#include <cuda_runtime.h>
#include <cusolverDn.h>
#include <fmt/format.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "context.h"
#include "cuda_check.h"
#include "eig_choice.h"  // choose_eigensolver
#include "eigh.cuh"
#include "hetdro/backend.h"      // NotRecordable
#include "hetdro/step_status.h"  // the solver's failure code
#include "jacobi.h"              // kMaxK

namespace hetdro::cuda {
namespace {

// cuSOLVER's per-call parameters, made once per thread (host objects; creating them is not a
// stream operation, but it allocates, so not inside a step after the first).
struct SolverParams {
  syevjInfo_t syevj = nullptr;
  cusolverDnParams_t x = nullptr;
  std::vector<char> host;  // XsyevBatched's host workspace
  SolverParams() = default;
  SolverParams(const SolverParams&) = delete;
  SolverParams& operator=(const SolverParams&) = delete;
  ~SolverParams() {
    if (syevj) cusolverDnDestroySyevjInfo(syevj);
    if (x) cusolverDnDestroyParams(x);
  }
  syevjInfo_t syevj_info() {
    // Defaults: tolerance at machine accuracy, 100 sweeps, eigenvalues sorted ascending.
    if (!syevj) cusolverCheck(cusolverDnCreateSyevjInfo(&syevj));
    return syevj;
  }
#if HETDRO_XSYEV_BATCHED
  cusolverDnParams_t xparams() {
    if (!x) cusolverCheck(cusolverDnCreateParams(&x));
    return x;
  }
#endif
};

SolverParams& solver_params() {
  thread_local SolverParams p;
  return p;
}

size_t align(size_t bytes) { return (bytes + 255) / 256 * 256; }

const char* routine(Eigensolver solver) {
  return solver == Eigensolver::syevj ? "cusolverDnSsyevjBatched" : "cusolverDnXsyevBatched";
}

// A failure status from a cuSOLVER eigensolver call: SolverRefused, naming it, k and the status.
void solver_check(cusolverStatus_t status, Eigensolver solver, int k, int batch, const char* call) {
  if (status == CUSOLVER_STATUS_SUCCESS) return;
  throw SolverRefused(
      solver, k, int(status),
      fmt::format("eigensolver {} ({}): {} refused k = {}, batch = {}: {} ({})", name(solver),
                  routine(solver), call, k, batch, cusolver_status_name(status), int(status)));
}

// cuSOLVER's batched solvers index their batch in 32 bits (XsyevBatched documents
// n·lda·batchSize ≤ INT32_MAX; syevjBatched sizes its workspace in an int): a larger batch goes
// through in slices of this many matrices, one workspace reused.
int cusolver_slice(int batch, int k) {
  const int64_t most = std::max<int64_t>(1, int64_t(INT32_MAX) / (int64_t(k) * k));
  return int(std::min<int64_t>(batch, most));
}

// The cuSOLVER workspace: a column-major copy of A (solved in place into eigenvectors), the
// eigenvalues, one info per matrix, then the solver's own workspace.
struct CusolverLayout {
  size_t copy, values, info, work, work_bytes, host_bytes, bytes;
};

CusolverLayout cusolver_layout(Eigensolver solver, int batch, int k) {
  const int64_t kk = int64_t(k) * k;
  CusolverLayout l{};
  l.copy = 0;
  l.values = align(sizeof(float) * batch * kk);
  l.info = l.values + align(sizeof(float) * batch * k);
  l.work = l.info + align(sizeof(int) * batch);
  cusolverDnHandle_t h = context().cusolver();
  // The size queries read only the shapes; the pointers may be null.
  if (solver == Eigensolver::syevj) {
    int lwork = 0;
    solver_check(cusolverDnSsyevjBatched_bufferSize(h, CUSOLVER_EIG_MODE_VECTOR,
                                                    CUBLAS_FILL_MODE_LOWER, k, nullptr, k, nullptr,
                                                    &lwork, solver_params().syevj_info(), batch),
                 solver, k, batch, "cusolverDnSsyevjBatched_bufferSize");
    l.work_bytes = sizeof(float) * size_t(lwork);
  } else {
#if HETDRO_XSYEV_BATCHED
    size_t device = 0, host = 0;
    solver_check(
        cusolverDnXsyevBatched_bufferSize(h, solver_params().xparams(), CUSOLVER_EIG_MODE_VECTOR,
                                          CUBLAS_FILL_MODE_LOWER, k, CUDA_R_32F, nullptr, k,
                                          CUDA_R_32F, nullptr, CUDA_R_32F, &device, &host, batch),
        solver, k, batch, "cusolverDnXsyevBatched_bufferSize");
    l.work_bytes = device;
    l.host_bytes = host;
#else
    throw std::logic_error("eigensolver syev reached without cusolverDnXsyevBatched");
#endif
  }
  l.bytes = l.work + align(l.work_bytes);
  return l;
}

// cuSOLVER's column-major eigenvectors (matrix b's column j at Vcol + b·k² + j·k) to our
// row-major layout with eigenvector j in column j, and the eigenvalues to their strided home.
__global__ void scatter_eigh_kernel(float* __restrict__ w, int64_t w_stride, float* __restrict__ V,
                                    int64_t v_stride, const float* __restrict__ Vcol,
                                    const float* __restrict__ values, int batch, int k) {
  const int64_t kk = int64_t(k) * k, total = int64_t(batch) * kk;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t b = idx / kk, rem = idx % kk;
    const int64_t i = rem / k, j = rem % k;
    V[b * v_stride + i * k + j] = Vcol[b * kk + j * k + i];
    if (i == 0) w[b * w_stride + j] = values[b * k + j];
  }
}

// The lowest-numbered matrix whose info is not 0, into *status as a step_status code unless a
// failure is there already (sticky; check_finite or take_solver_failure clears it). One block:
// read on the device, so the step never waits for the host (docs/DESIGN.md §3).
__global__ void record_solver_info(int64_t* status, const int* __restrict__ info, int batch,
                                   int64_t first, int solver) {
  __shared__ int lowest;
  if (threadIdx.x == 0) lowest = INT_MAX;
  __syncthreads();
  for (int b = threadIdx.x; b < batch; b += blockDim.x)
    if (info[b] != 0) {
      atomicMin(&lowest, b);
      break;
    }
  __syncthreads();
  if (threadIdx.x == 0 && lowest != INT_MAX && *status == 0)
    *status = step_status::encode(step_status::Solver(solver), first + lowest, info[lowest]);
}

// `first`: the index of A's first matrix in the caller's batch (slices), for the failure record.
void cusolver_eigh(float* w, int64_t w_stride, float* V, int64_t v_stride, const float* A,
                   int batch, int k, Eigensolver solver, void* workspace, int64_t first = 0) {
  const int slice = cusolver_slice(batch, k);
  if (slice < batch) {
    for (int b0 = 0; b0 < batch; b0 += slice)
      cusolver_eigh(w + b0 * w_stride, w_stride, V + b0 * v_stride, v_stride,
                    A + int64_t(b0) * k * k, std::min(slice, batch - b0), k, solver, workspace,
                    first + b0);
    return;
  }
  cudaStream_t s = context().stream();
  cudaStreamCaptureStatus capturing = cudaStreamCaptureStatusNone;
  cudaCheck(cudaStreamIsCapturing(s, &capturing));
  if (capturing != cudaStreamCaptureStatusNone)
    throw NotRecordable(fmt::format(
        "k = {}: the eigendecompositions run in cuSOLVER ({}), which a CUDA Graph cannot "
        "record; only the Jacobi kernel (k <= {}, where it fits this GPU's shared memory) can",
        k, name(solver), jacobi::kMaxK));
  const CusolverLayout l = cusolver_layout(solver, batch, k);
  char* ws = static_cast<char*>(workspace);
  float* copy = reinterpret_cast<float*>(ws + l.copy);
  float* values = reinterpret_cast<float*>(ws + l.values);
  int* info = reinterpret_cast<int*>(ws + l.info);
  const int64_t kk = int64_t(k) * k;
  cusolverDnHandle_t h = context().cusolver();
  // A is symmetric, so its row-major buffer is also its column-major one: copy it as is. The
  // solvers read the lower triangle of the column-major view (A's upper triangle, row-major).
  cudaCheck(cudaMemcpyAsync(copy, A, sizeof(float) * batch * kk, cudaMemcpyDeviceToDevice, s));
  if (solver == Eigensolver::syevj) {
    solver_check(cusolverDnSsyevjBatched(h, CUSOLVER_EIG_MODE_VECTOR, CUBLAS_FILL_MODE_LOWER, k,
                                         copy, k, values, reinterpret_cast<float*>(ws + l.work),
                                         int(l.work_bytes / sizeof(float)), info,
                                         solver_params().syevj_info(), batch),
                 solver, k, batch, "cusolverDnSsyevjBatched");
  } else {
#if HETDRO_XSYEV_BATCHED
    auto& host = solver_params().host;
    if (host.size() < l.host_bytes) host.resize(l.host_bytes);
    solver_check(cusolverDnXsyevBatched(
                     h, solver_params().xparams(), CUSOLVER_EIG_MODE_VECTOR, CUBLAS_FILL_MODE_LOWER,
                     k, CUDA_R_32F, copy, k, CUDA_R_32F, values, CUDA_R_32F, ws + l.work,
                     l.work_bytes, l.host_bytes ? host.data() : nullptr, l.host_bytes, info, batch),
                 solver, k, batch, "cusolverDnXsyevBatched");
#else
    throw std::logic_error("eigensolver syev reached without cusolverDnXsyevBatched");
#endif
  }
  // info, one per matrix, read on the device into the context's failure record, which the
  // step's check_finite folds into its status: a solve that did not converge fails the step
  // naming the solver (hetdro/step_status.h), without a host sync here.
  record_solver_info<<<1, 256, 0, s>>>(context().solver_status(), info, batch, first,
                                       solver == Eigensolver::syevj
                                           ? int(step_status::Solver::syevj)
                                           : int(step_status::Solver::syev));
  launchCheck();
  const int threads = 256;
  scatter_eigh_kernel<<<blocks_for(int64_t(batch) * kk, threads), threads, 0, s>>>(
      w, w_stride, V, v_stride, copy, values, batch, k);
  launchCheck();
}

}  // namespace

std::string eigensolver_absent(Eigensolver solver) {
#if HETDRO_XSYEV_BATCHED
  (void)solver;
  return "";
#else
  if (solver != Eigensolver::syev) return "";
  const int v = CUSOLVER_VERSION;
  return fmt::format(
      "cusolverDnXsyevBatched needs cuSOLVER 11.7.1 (CUDA 12.6 update 2) or newer, and this "
      "build's cuSOLVER headers are {}.{}.{}",
      v / 1000, v % 1000 / 100, v % 100);
#endif
}

// kernels/eig_choice.h's rule, on the current device's shared-memory limit.
Eigensolver resolve_eigensolver(Eigensolver solver, int k) {
  return choose_eigensolver(solver, k, device_shared_optin(),
                            eigensolver_absent(Eigensolver::syev));
}

size_t eigh_workspace_bytes(Eigensolver solver, int batch, int k) {
  if (batch <= 0 || k <= 0) return 0;
  solver = resolve_eigensolver(solver, k);
  if (solver == Eigensolver::jacobi) return 0;
  return cusolver_layout(solver, cusolver_slice(batch, k), k).bytes;
}

void eigh(float* w, int64_t w_stride, float* V, int64_t v_stride, const float* A, int batch, int k,
          Eigensolver solver, void* workspace) {
  if (batch <= 0 || k <= 0) return;
  solver = resolve_eigensolver(solver, k);
  if (solver == Eigensolver::jacobi)
    jacobi_eigh(w, w_stride, V, v_stride, A, batch, k, context().stream());
  else
    cusolver_eigh(w, w_stride, V, v_stride, A, batch, k, solver, workspace);
}

int64_t take_solver_failure() {
  int64_t code = 0;
  const cudaStream_t s = context().stream();
  cudaCheck(
      cudaMemcpyAsync(&code, context().solver_status(), sizeof code, cudaMemcpyDeviceToHost, s));
  cudaCheck(cudaMemsetAsync(context().solver_status(), 0, sizeof code, s));
  cudaCheck(cudaStreamSynchronize(s));
  return code;
}

void set_syevj_max_sweeps(int sweeps) {
  cusolverCheck(cusolverDnXsyevjSetMaxSweeps(solver_params().syevj_info(), sweeps));
}

void eigh(float* w, float* V, const float* A, int batch, int k) {
  const Eigensolver solver = context().eigensolver;
  void* ws = context().scratch(eigh_workspace_bytes(solver, batch, k));
  eigh(w, k, V, int64_t(k) * k, A, batch, k, solver, ws);
}

}  // namespace hetdro::cuda
