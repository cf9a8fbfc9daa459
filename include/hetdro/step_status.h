// The step's status (check_finite's {step, where}, ops.def) when an eigensolver, not a value,
// failed (docs/DESIGN.md §3): cuSOLVER's per-matrix `info` is read on the device, without a host
// sync, and a failure is folded into `where` below every other code (a grad index ≥ 0, a loss
// term −1 − i), so the trainer names the solver instead of a non-finite value. Host-and-device:
// kernels/eig.cu encodes, the trainer decodes, tests/test_step_status.cpp checks both.
#pragma once

#include <cstdint>
#include <string>

#include "hetdro/hd.h"

namespace hetdro::step_status {

// cuSOLVER's batched eigensolvers, as cuda::Eigensolver names them.
enum class Solver : int { syevj = 1, syev = 2 };

// Codes at or below kSolverBase are solver failures; the payload below it packs the solver
// (2 bits), info clamped to [−2¹⁹, 2¹⁹) (20 bits) and the matrix's index in its batch (31 bits).
constexpr int64_t kSolverBase = -(int64_t(1) << 62);
constexpr int64_t kInfoBias = int64_t(1) << 19;

struct SolverFailure {
  Solver solver;
  int64_t matrix;  // index in the eigh call's batch
  int info;        // cuSOLVER's info for that matrix (clamped as above)
};

HETDRO_HD inline int64_t encode(Solver solver, int64_t matrix, int info) {
  int64_t i = info;
  i = i < -kInfoBias ? -kInfoBias : (i >= kInfoBias ? kInfoBias - 1 : i);
  const int64_t m = matrix < 0 ? 0 : (matrix > INT32_MAX ? int64_t(INT32_MAX) : matrix);
  return kSolverBase - (int64_t(solver) | ((i + kInfoBias) << 2) | (m << 22));
}

HETDRO_HD inline bool is_solver_failure(int64_t where) { return where <= kSolverBase; }

HETDRO_HD inline SolverFailure decode(int64_t where) {
  const int64_t payload = kSolverBase - where;
  return {Solver(int(payload & 3)), payload >> 22,
          int(((payload >> 2) & ((int64_t(1) << 20) - 1)) - kInfoBias)};
}

// "eigensolver syevj (cuSOLVER's cusolverDnSsyevjBatched) did not converge on matrix 3 of its
// batch (info = 65)": what the trainer reports for such a status (host/step_status.cpp).
std::string describe(int64_t where);

}  // namespace hetdro::step_status
