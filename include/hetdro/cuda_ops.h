// The CUDA kernels of every op (docs/DESIGN.md §3, §6): the same names and parameters as the CPU
// reference (ops.h), expanded from the one op list, ops.def, in namespace hetdro::cuda. Pointers
// are device memory; every op is enqueued on the CUDA context's stream and returns without
// waiting. Defined in kernels/<op>.cu for T = float only: the double twin of each op is the CPU
// reference that the GPU tests compare against.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

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
// "" when this build has `solver`; else why not (syev, cusolverDnXsyevBatched, needs cuSOLVER
// 11.7.1 from CUDA 12.6 update 2; kernels/eigh.cuh).
std::string eigensolver_absent(Eigensolver solver);

// A cuSOLVER eigensolver returned a failure status for a call (a size it does not take, say:
// syevjBatched above n = 32 is unproven, issue 18). The message names the solver, its routine,
// k, the batch and the status; tests and benchmarks report it as a finding.
struct SolverRefused : std::runtime_error {
  SolverRefused(Eigensolver s, int k_, int status_, const std::string& what)
      : std::runtime_error(what), solver(s), k(k_), status(status_) {}
  Eigensolver solver;
  int k, status;  // status: the cusolverStatus_t
};

// The failure a cuSOLVER eigensolver recorded on the device since the step's check_finite last
// took it (a hetdro/step_status.h code; 0 for none): waits for the stream, then clears it. For
// tests and benchmarks that call eigh outside a training step.
int64_t take_solver_failure();
// syevj's sweep cap (cuSOLVER's default 100), for the test that shows a solve that did not
// converge reaching the step's status.
void set_syevj_max_sweeps(int sweeps);

// The eigensolver alone, for its tests and benchmarks (kernels/eig.cu): A [batch,k,k] symmetric
// → eigenvalues ascending w [batch,k] and eigenvectors V [batch,k,k], row-major, eigenvector i
// in column i (as Eigen returns them), by this thread's eigensolver. Device pointers.
void eigh(float* w, float* V, const float* A, int batch, int k);

// The low-rank Gram route to the same output for Ŝ = Z̃ᵀZ̃/(n−1) + εI, from the samples
// (kernels/gram_eig.cu, docs/DESIGN.md §3; not used by w2_gaussian yet): slot s's n_s =
// slot_count[s] rows of z [*, k] start at row slot_start[s]; w [slots,k], U [slots,k,k] as eigh.
// 2 ≤ max_n ≤ 64 bounds every n_s (a larger one gets NaN); n_s < 2 gives eigenvalues 0, U = I.
void gram_eigh(float* w, float* U, const float* z, const int32_t* slot_start,
               const int32_t* slot_count, int slots, int k, float eps, int max_n);

}  // namespace hetdro::cuda
