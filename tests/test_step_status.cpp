// The step's status when an eigensolver failed (include/hetdro/step_status.h, docs/DESIGN.md
// §3): the code kernels/eig.cu writes on the device decodes to the solver, the matrix and
// cuSOLVER's info, never collides with check_finite's other codes, and the trainer's message
// names the solver and its cuSOLVER routine.
#include <gtest/gtest.h>

#include <cstdint>
#include <string>

#include "hetdro/step_status.h"

namespace hetdro::step_status {
namespace {

TEST(StepStatus, SolverFailuresRoundTrip) {
  struct Case {
    Solver solver;
    int64_t matrix;
    int info;
  };
  const Case cases[] = {{Solver::syevj, 0, 33},        {Solver::syev, 0, 1},
                        {Solver::syevj, 7, -4},        {Solver::syev, 999, 255},
                        {Solver::syevj, INT32_MAX, 1}, {Solver::syev, 12345, (1 << 19) - 1},
                        {Solver::syevj, 3, -(1 << 19)}};
  for (const Case& c : cases) {
    const int64_t where = encode(c.solver, c.matrix, c.info);
    ASSERT_TRUE(is_solver_failure(where)) << where;
    const SolverFailure f = decode(where);
    EXPECT_EQ(f.solver, c.solver);
    EXPECT_EQ(f.matrix, c.matrix);
    EXPECT_EQ(f.info, c.info);
  }
}

TEST(StepStatus, OutOfRangeInfoAndMatrixAreClampedNotWrapped) {
  EXPECT_EQ(decode(encode(Solver::syev, 5, 1 << 25)).info, (1 << 19) - 1);
  EXPECT_EQ(decode(encode(Solver::syev, 5, -(1 << 25))).info, -(1 << 19));
  EXPECT_EQ(decode(encode(Solver::syev, int64_t(1) << 40, 2)).matrix, INT32_MAX);
  EXPECT_EQ(decode(encode(Solver::syev, int64_t(1) << 40, 2)).solver, Solver::syev);
}

// check_finite's own codes: −1 − i for loss term i (a handful), a grad index ≥ 0; and −1, the
// status's "nothing yet".
TEST(StepStatus, OtherStatusCodesAreNotSolverFailures) {
  for (int64_t where : {int64_t(-1), int64_t(-2), int64_t(-1000), int64_t(0), int64_t(1) << 40,
                        -(int64_t(1) << 61)})
    EXPECT_FALSE(is_solver_failure(where)) << where;
  EXPECT_LT(encode(Solver::syevj, 0, 0), -(int64_t(1) << 61));
}

TEST(StepStatus, TheMessageNamesTheSolverTheMatrixAndInfo) {
  const std::string syevj = describe(encode(Solver::syevj, 3, 65));
  EXPECT_EQ(syevj,
            "eigensolver syevj (cuSOLVER's cusolverDnSsyevjBatched) did not converge within its "
            "tolerance and sweeps on matrix 3 of its batch (info = 65)");
  const std::string syev = describe(encode(Solver::syev, 0, 2));
  EXPECT_EQ(syev,
            "eigensolver syev (cuSOLVER's cusolverDnXsyevBatched) did not converge (2 off-diagonal "
            "elements of the tridiagonal form stayed above zero) on matrix 0 of its batch (info = "
            "2)");
  const std::string bad = describe(encode(Solver::syev, 1, -5));
  EXPECT_NE(bad.find("rejected its parameter 5"), std::string::npos) << bad;
  EXPECT_NE(bad.find("cusolverDnXsyevBatched"), std::string::npos) << bad;
}

}  // namespace
}  // namespace hetdro::step_status
