// maxpool2x2 on the GPU (kernels/maxpool2x2.cu) against the CPU reference: the model's pools and
// odd sizes, on tie-free data against the double reference and on tie-heavy data (the tie rule)
// exactly against the float reference; NaN-filled outputs, accumulating gradients. Skipped without
// a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "cuda_testing.h"
#include "hetdro/ops.h"

namespace hetdro {
namespace {

using testing::gpu_error;
using testing::kGpuTolerance;
using testing::nan_buffer;
using testing::on_device;
using testing::random_vector;
using testing::widen;

struct Size {
  const char* name;
  int n, c, h, w;
  size_t in_size() const { return size_t(n) * c * h * w; }
  size_t out_size() const { return size_t(n) * c * (h / 2) * (w / 2); }
};

// The cnn encoders' pools (docs/DESIGN.md §1, §5: 64 channels of 24x24 for full28 at 70 samples,
// 12x12 for low16 at 25), odd sizes (floor), a single window, and sizes with no window at all.
const std::vector<Size> kSizes = {
    {"full28", 70, 64, 24, 24}, {"low16", 25, 64, 12, 12},  {"odd", 2, 3, 7, 9},
    {"odd_w", 3, 2, 6, 5},      {"one_window", 1, 1, 2, 3}, {"no_window", 2, 2, 1, 5},
};

struct Result {
  std::vector<float> out, din;
};

// Forward into a NaN-filled out, backward into din0.
Result run_gpu(Backend<float>& be, const Size& s, const std::vector<float>& in,
               const std::vector<float>& dout, const std::vector<float>& din0) {
  auto in_d = on_device(be, in), dout_d = on_device(be, dout), din = on_device(be, din0);
  auto out = nan_buffer(be, int64_t(s.out_size()));
  be.maxpool2x2_forward(out.data(), in_d.data(), s.n, s.c, s.h, s.w);
  be.maxpool2x2_backward(din.data(), dout_d.data(), in_d.data(), s.n, s.c, s.h, s.w);
  return {out.download(), din.download()};
}

TEST(Maxpool2x2Cuda, MatchesTheReferenceOnTieFreeData) {
  HETDRO_CUDA_OR_SKIP(be);
  for (const Size& s : kSizes) {
    // Continuous random values: a tie has probability ~0, so any argmax rule gives the same.
    const auto in = random_vector<float>(s.in_size(), 1);
    const auto dout = random_vector<float>(s.out_size(), 2);
    const auto din0 = random_vector<float>(s.in_size(), 3);
    const Result r = run_gpu(be, s, in, dout, din0);
    std::vector<double> out(s.out_size()), din = widen(din0);
    const auto in_r = widen(in), dout_r = widen(dout);
    cpu::maxpool2x2_forward<double>(out.data(), in_r.data(), s.n, s.c, s.h, s.w);
    cpu::maxpool2x2_backward<double>(din.data(), dout_r.data(), in_r.data(), s.n, s.c, s.h, s.w);
    if (s.out_size() > 0) {
      EXPECT_LT(gpu_error(r.out, out), kGpuTolerance) << s.name;
    }
    EXPECT_LT(gpu_error(r.din, din), kGpuTolerance) << s.name;
  }
}

// Values from 3 levels, as the zero background of Fashion-MNIST gives after the convolutions:
// most windows hold ties. The kernel's tie rule is the reference's (first in row-major order), so
// the results are bit-identical to the float reference: a max selects, and each din element gets
// at most one addition.
TEST(Maxpool2x2Cuda, TiesGoToTheFirstElementLikeTheReference) {
  HETDRO_CUDA_OR_SKIP(be);
  for (const Size& s : kSizes) {
    auto in = random_vector<float>(s.in_size(), 4, 0.0f, 3.0f);
    for (auto& x : in) x = std::floor(x);
    const auto dout = random_vector<float>(s.out_size(), 5);
    const auto din0 = random_vector<float>(s.in_size(), 6);
    const Result r = run_gpu(be, s, in, dout, din0);
    std::vector<float> out(s.out_size()), din = din0;
    cpu::maxpool2x2_forward<float>(out.data(), in.data(), s.n, s.c, s.h, s.w);
    cpu::maxpool2x2_backward<float>(din.data(), dout.data(), in.data(), s.n, s.c, s.h, s.w);
    EXPECT_EQ(r.out, out) << s.name;
    EXPECT_EQ(r.din, din) << s.name;
  }
}

}  // namespace
}  // namespace hetdro
