// What a solver failure in the step's status says (include/hetdro/step_status.h).
#include "hetdro/step_status.h"

#include <fmt/format.h>

namespace hetdro::step_status {

std::string describe(int64_t where) {
  const SolverFailure f = decode(where);
  const char* name = f.solver == Solver::syevj ? "syevj" : f.solver == Solver::syev ? "syev" : "?";
  const char* routine = f.solver == Solver::syevj  ? "cusolverDnSsyevjBatched"
                        : f.solver == Solver::syev ? "cusolverDnXsyevBatched"
                                                   : "an unknown routine";
  std::string what;
  if (f.info < 0)
    what = fmt::format("rejected its parameter {}", -f.info);
  else if (f.solver == Solver::syev)
    what = fmt::format(
        "did not converge ({} off-diagonal elements of the tridiagonal form stayed "
        "above zero)",
        f.info);
  else
    what = "did not converge within its tolerance and sweeps";
  return fmt::format("eigensolver {} (cuSOLVER's {}) {} on matrix {} of its batch (info = {})",
                     name, routine, what, f.matrix, f.info);
}

}  // namespace hetdro::step_status
