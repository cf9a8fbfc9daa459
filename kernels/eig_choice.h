// Which eigensolver back end runs for k (docs/DESIGN.md §3): the rule of kernels/eig.cu as a pure
// function of k, the device's shared-memory limit and whether syev was built, so that the CPU
// tests (tests/test_eig_choice.cpp) check it for devices this machine does not have.
#pragma once

#include <cstddef>
#include <stdexcept>
#include <string>

#include "hetdro/cuda_ops.h"  // Eigensolver
#include "jacobi.h"           // kMaxK, shared_bytes

namespace hetdro::cuda {

// `automatic`: our Jacobi kernel where one matrix fits one block's shared memory on this device
// (k ≤ 128 and jacobi::shared_bytes(k) ≤ optin: all k ≤ 128 on sm_80/sm_90, fewer on sm_86/sm_89's
// 99 KiB), cuSOLVER's XsyevBatched otherwise. Never syevj: its accuracy and limits above n = 32
// are unproven (issue 18). A reasoned default, not yet measured: the Jacobi kernel is
// deterministic and can be captured into a CUDA Graph with the rest of the step, which cuSOLVER
// is not known to allow; above it a tridiagonal method should win. bench/bench_w2_gaussian.cpp
// measures all three. `optin`: cudaDevAttrMaxSharedMemoryPerBlockOptin; `syev_absent`: "" when
// syev was built, else why not. Throws std::invalid_argument naming what is missing.
inline Eigensolver choose_eigensolver(Eigensolver asked, int k, size_t optin,
                                      const std::string& syev_absent) {
  const bool jacobi_k = k <= jacobi::kMaxK;
  const size_t need = jacobi_k ? jacobi::shared_bytes(k) : 0;
  const bool jacobi_fits = jacobi_k && need <= optin;
  const std::string device_limit =
      " bytes of shared memory per block; this GPU allows " + std::to_string(optin);
  switch (asked) {
    case Eigensolver::jacobi:
      if (!jacobi_k)
        throw std::invalid_argument(
            "eigensolver jacobi takes k ≤ " + std::to_string(jacobi::kMaxK) +
            ", got k = " + std::to_string(k) + "; choose syevj, syev or automatic");
      if (!jacobi_fits)
        throw std::invalid_argument("eigensolver jacobi at k = " + std::to_string(k) + " needs " +
                                    std::to_string(need) + device_limit +
                                    "; choose syev, syevj or automatic");
      return asked;
    case Eigensolver::syev:
      if (!syev_absent.empty())
        throw std::invalid_argument("eigensolver syev is absent from this build: " + syev_absent +
                                    "; choose jacobi, syevj or automatic");
      return asked;
    case Eigensolver::syevj:
      return asked;
    default:
      break;
  }
  if (jacobi_fits) return Eigensolver::jacobi;
  if (syev_absent.empty()) return Eigensolver::syev;
  throw std::invalid_argument(
      "eigensolver automatic at k = " + std::to_string(k) + ": the jacobi kernel " +
      (jacobi_k ? "needs " + std::to_string(need) + device_limit
                : "takes k ≤ " + std::to_string(jacobi::kMaxK)) +
      ", and syev is absent from this build (" + syev_absent +
      "); automatic does not fall back to syevj (unproven above n = 32): set syevj "
      "explicitly (cuda::set_eigensolver) or build with a newer cuSOLVER");
}

}  // namespace hetdro::cuda
