// Which eigensolver runs for k on which device (kernels/eig_choice.h, docs/DESIGN.md §3): the
// Jacobi kernel's shared memory, worked by hand, against each GPU's opt-in limit; `automatic`
// never picks syevj; a solver that cannot run says why.
#include <gtest/gtest.h>

#include <stdexcept>
#include <string>

#include "eig_choice.h"

namespace hetdro::cuda {
namespace {

// cudaDevAttrMaxSharedMemoryPerBlockOptin: sm_86/sm_89, sm_80, sm_90.
constexpr size_t kSm86 = 99 * 1024, kSm80 = 163 * 1024, kSm90 = 227 * 1024;
const std::string kBuilt;  // syev present
const std::string kAbsent = "cusolverDnXsyevBatched needs cuSOLVER 11.7.1";

std::string what(Eigensolver asked, int k, size_t optin, const std::string& syev_absent) {
  try {
    choose_eigensolver(asked, k, optin, syev_absent);
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "";
}

// By hand (kernels/jacobi.h's Layout, each part rounded up to 16 bytes), n = k padded to even,
// ld = n + 1, 256 threads: A and V 2·4·n·ld, rotations 12·n/2, two pivot arrays 4·n/2 each, the
// reduction 4·256, ranks 4·n, the block table 2·(n/2)(n/2 + 1)/2.
//   k = 128: 2·66048 + 768 + 2·256 + 1024 + 512 + 4160 = 139072
//   k = 108: 2·47088 + 656 + 2·224 + 1024 + 432 + 2976 = 99712
//   k = 110: 2·48848 + 672 + 2·224 + 1024 + 448 + 3088 = 103376 (k = 109 pads to 110)
TEST(EigChoice, JacobiSharedMemoryWorkedByHand) {
  EXPECT_EQ(jacobi::shared_bytes(128), 139072u);
  EXPECT_EQ(jacobi::shared_bytes(108), 99712u);
  EXPECT_EQ(jacobi::shared_bytes(110), 103376u);
  EXPECT_EQ(jacobi::shared_bytes(109), jacobi::shared_bytes(110));
}

TEST(EigChoice, AutomaticTakesJacobiWhereItFitsTheDevice) {
  // sm_86/sm_89 (99 KiB): up to k = 108, not 128.
  EXPECT_EQ(choose_eigensolver(Eigensolver::automatic, 108, kSm86, kBuilt), Eigensolver::jacobi);
  EXPECT_EQ(choose_eigensolver(Eigensolver::automatic, 109, kSm86, kBuilt), Eigensolver::syev);
  EXPECT_EQ(choose_eigensolver(Eigensolver::automatic, 128, kSm86, kBuilt), Eigensolver::syev);
  // sm_80 and sm_90: all of k ≤ 128.
  for (size_t optin : {kSm80, kSm90}) {
    EXPECT_EQ(choose_eigensolver(Eigensolver::automatic, 128, optin, kBuilt), Eigensolver::jacobi);
    EXPECT_EQ(choose_eigensolver(Eigensolver::automatic, 129, optin, kBuilt), Eigensolver::syev);
  }
}

TEST(EigChoice, AutomaticNeverPicksSyevj) {
  for (size_t optin : {size_t(48 * 1024), kSm86, kSm80, kSm90})
    for (const std::string& absent : {kBuilt, kAbsent})
      for (int k = 1; k <= 300; ++k) {
        Eigensolver got = Eigensolver::automatic;
        try {
          got = choose_eigensolver(Eigensolver::automatic, k, optin, absent);
        } catch (const std::invalid_argument& e) {
          // Only when neither Jacobi fits nor syev was built; the message says what to do.
          EXPECT_FALSE(absent.empty());
          EXPECT_FALSE(k <= jacobi::kMaxK && jacobi::shared_bytes(k) <= optin) << k;
          EXPECT_NE(std::string(e.what()).find("syev is absent"), std::string::npos) << e.what();
          continue;
        }
        EXPECT_NE(got, Eigensolver::syevj) << "k " << k << ", optin " << optin;
        EXPECT_NE(got, Eigensolver::automatic);
      }
}

TEST(EigChoice, AForcedSolverThatCannotRunSaysWhy) {
  EXPECT_NE(what(Eigensolver::jacobi, 130, kSm90, kBuilt).find("k ≤ 128"), std::string::npos);
  const std::string small = what(Eigensolver::jacobi, 120, kSm86, kBuilt);
  EXPECT_NE(small.find("needs " + std::to_string(jacobi::shared_bytes(120))), std::string::npos)
      << small;
  EXPECT_NE(small.find("allows " + std::to_string(kSm86)), std::string::npos) << small;
  const std::string syev = what(Eigensolver::syev, 64, kSm90, kAbsent);
  EXPECT_NE(syev.find("syev is absent from this build: " + kAbsent), std::string::npos) << syev;
  const std::string none = what(Eigensolver::automatic, 256, kSm90, kAbsent);
  EXPECT_NE(none.find("does not fall back to syevj"), std::string::npos) << none;
  // What can run, runs as asked.
  EXPECT_EQ(choose_eigensolver(Eigensolver::syevj, 256, kSm86, kAbsent), Eigensolver::syevj);
  EXPECT_EQ(choose_eigensolver(Eigensolver::syev, 8, kSm90, kBuilt), Eigensolver::syev);
  EXPECT_EQ(choose_eigensolver(Eigensolver::jacobi, 108, kSm86, kAbsent), Eigensolver::jacobi);
}

}  // namespace
}  // namespace hetdro::cuda
