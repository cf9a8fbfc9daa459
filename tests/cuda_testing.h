// Helpers for the GPU tests (tests/test_<op>_cuda.cpp, ctest label "gpu"): the CUDA backend or a
// skip with its reason (a failure under HETDRO_REQUIRE_GPU=1), device copies, NaN-filled outputs,
// and the error measure against the CPU reference run in double (docs/DESIGN.md §3).
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>  // getenv
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "hetdro/backend.h"
#include "testing.h"  // random_vector

namespace hetdro::testing {

// The CUDA backend shared by a test binary's GPU tests; nullptr, with the reason, when this
// build has no CUDA or the machine has no GPU.
inline Backend<float>* cuda_backend(std::string* why_not) {
  static std::string reason;
  static std::unique_ptr<Backend<float>> backend = make_cuda_backend(&reason);
  if (!backend && why_not) *why_not = reason;
  return backend.get();
}

// HETDRO_REQUIRE_GPU=1 (scripts/gpu_check.sh sets it): a GPU test without the CUDA backend
// fails, so a driver older than the runtime cannot pass as a run with every test skipped.
// Unset or 0: it skips. Any other value is a mistake, and fails saying so.
inline std::string gpu_required_error() {
  const char* v = std::getenv("HETDRO_REQUIRE_GPU");
  const std::string value = v ? v : "";
  if (value == "1") return "HETDRO_REQUIRE_GPU=1, but there is no GPU to test: ";
  if (value.empty() || value == "0") return "";
  return "HETDRO_REQUIRE_GPU must be 0 or 1, not '" + value + "'; and there is no GPU to test: ";
}

// Skips the test, saying why there is no CUDA backend; or fails it under HETDRO_REQUIRE_GPU=1.
#define HETDRO_NO_GPU(why)                                                       \
  do {                                                                           \
    const std::string hetdro_required = ::hetdro::testing::gpu_required_error(); \
    if (!hetdro_required.empty()) FAIL() << hetdro_required << (why);            \
    GTEST_SKIP() << "no GPU: " << (why);                                         \
  } while (0)

// Binds `var` to the CUDA backend (a Backend<float>&), or skips (fails: HETDRO_NO_GPU) saying why.
#define HETDRO_CUDA_OR_SKIP(var)                                                         \
  std::string var##_why_not;                                                             \
  ::hetdro::Backend<float>* var##_ptr = ::hetdro::testing::cuda_backend(&var##_why_not); \
  if (var##_ptr == nullptr) HETDRO_NO_GPU(var##_why_not);                                \
  ::hetdro::Backend<float>& var = *var##_ptr

// A device copy of `host`.
template <typename U>
Buffer<U> on_device(Memory& memory, const std::vector<U>& host) {
  Buffer<U> b(memory, int64_t(host.size()));
  if (!host.empty()) b.upload(host);
  return b;
}

// An output buffer filled with NaN, so an element the kernel never writes fails the comparison.
inline Buffer<float> nan_buffer(Memory& memory, int64_t count) {
  return on_device(memory,
                   std::vector<float>(size_t(count), std::numeric_limits<float>::quiet_NaN()));
}

template <typename U>
std::vector<double> widen(const std::vector<U>& v) {
  return std::vector<double>(v.begin(), v.end());
}
inline std::vector<float> narrow(const std::vector<double>& v) {
  return std::vector<float>(v.begin(), v.end());
}

// ‖out − ref‖ / ‖ref‖ of a GPU output against the double reference; +inf when out holds a NaN
// or an infinity, so a non-finite output never passes.
inline double gpu_error(const std::vector<float>& out, const std::vector<double>& ref) {
  if (out.size() != ref.size()) return std::numeric_limits<double>::infinity();
  double diff = 0, norm = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    if (!std::isfinite(out[i])) return std::numeric_limits<double>::infinity();
    diff += (double(out[i]) - ref[i]) * (double(out[i]) - ref[i]);
    norm += ref[i] * ref[i];
  }
  return std::sqrt(diff) / std::max(std::sqrt(norm), 1e-300);
}

// The bars of issue 8: plain fp32 ops, and outputs that pass through an eigendecomposition.
constexpr double kGpuTolerance = 1e-4;
constexpr double kGpuEigTolerance = 1e-3;

}  // namespace hetdro::testing
