// maxpool2x2 and maxpool2x2_sigmoid on the GPU (kernels/maxpool2x2.cu) against the CPU reference:
// the model's pools and odd sizes, on tie-free data against the double reference and on tie-heavy
// data (the tie rule) exactly against the float reference; NaN-filled outputs, accumulating
// gradients, a nullptr gradient; and the fused op against the unfused pair it replaced in the
// model. Skipped without a GPU.
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

// --- maxpool2x2_sigmoid ------------------------------------------------------------------------

// Fused forward into a NaN-filled out, then the fused backward from that out into din0.
Result run_fused(Backend<float>& be, const Size& s, const std::vector<float>& in,
                 const std::vector<float>& dout, const std::vector<float>& din0) {
  auto in_d = on_device(be, in), dout_d = on_device(be, dout), din = on_device(be, din0);
  auto out = nan_buffer(be, int64_t(s.out_size()));
  be.maxpool2x2_sigmoid_forward(out.data(), in_d.data(), s.n, s.c, s.h, s.w);
  be.maxpool2x2_sigmoid_backward(din.data(), dout_d.data(), out.data(), in_d.data(), s.n, s.c, s.h,
                                 s.w);
  return {out.download(), din.download()};
}

// The double reference run the same way: forward, then backward from its own out into din0.
void reference_fused(const Size& s, const std::vector<float>& in, const std::vector<float>& dout,
                     const std::vector<float>& din0, std::vector<double>* out,
                     std::vector<double>* din) {
  const auto in_r = widen(in), dout_r = widen(dout);
  out->assign(s.out_size(), 0.0);
  *din = widen(din0);
  cpu::maxpool2x2_sigmoid_forward<double>(out->data(), in_r.data(), s.n, s.c, s.h, s.w);
  cpu::maxpool2x2_sigmoid_backward<double>(din->data(), dout_r.data(), out->data(), in_r.data(),
                                           s.n, s.c, s.h, s.w);
}

// Tie-free data over [−6, 6] (the sigmoid's bend and its flat tails), gradients starting from
// nonzero values so the += is tested.
TEST(Maxpool2x2SigmoidCuda, MatchesTheDoubleReferenceAndAccumulates) {
  HETDRO_CUDA_OR_SKIP(be);
  for (const Size& s : kSizes) {
    const auto in = random_vector<float>(s.in_size(), 11, -6.0f, 6.0f);
    const auto dout = random_vector<float>(s.out_size(), 12);
    const auto din0 = random_vector<float>(s.in_size(), 13);
    const Result r = run_fused(be, s, in, dout, din0);
    std::vector<double> out, din;
    reference_fused(s, in, dout, din0, &out, &din);
    if (s.out_size() > 0) {
      EXPECT_LT(gpu_error(r.out, out), kGpuTolerance) << s.name;
    }
    EXPECT_LT(gpu_error(r.din, din), kGpuTolerance) << s.name;
  }
}

// Tie-heavy data (3 levels) with din starting at 0: the gradient must land on exactly the
// elements the reference picks (first maximum in row-major order) and nowhere else, whatever the
// last bits of expf; the values within the fp32 bar.
TEST(Maxpool2x2SigmoidCuda, TiesGoToTheFirstElementLikeTheReference) {
  HETDRO_CUDA_OR_SKIP(be);
  for (const Size& s : kSizes) {
    auto in = random_vector<float>(s.in_size(), 14, 0.0f, 3.0f);
    for (auto& x : in) x = std::floor(x);
    const auto dout = random_vector<float>(s.out_size(), 15, 0.5f, 1.0f);  // no zero gradient
    const std::vector<float> din0(s.in_size(), 0.0f);
    const Result r = run_fused(be, s, in, dout, din0);
    std::vector<double> out, din;
    reference_fused(s, in, dout, din0, &out, &din);
    if (s.out_size() > 0) {
      EXPECT_LT(gpu_error(r.out, out), kGpuTolerance) << s.name;
    }
    EXPECT_LT(gpu_error(r.din, din), kGpuTolerance) << s.name;
    size_t misplaced = 0;
    for (size_t i = 0; i < din.size(); ++i) misplaced += (r.din[i] != 0.0f) != (din[i] != 0.0);
    EXPECT_EQ(misplaced, 0u) << s.name;
  }
}

// The model swapped maxpool2x2 + sigmoid for the fused op: on the GPU too it must give the same
// numbers. The forward runs the same sigmoid (kernels/activations.h) on the same maxima; the
// backward's 0.0f + keeps the pair's two roundings (kernels/maxpool2x2.cu says why).
TEST(Maxpool2x2SigmoidCuda, EqualsThePoolThenSigmoidOnTheGpuBitForBit) {
  HETDRO_CUDA_OR_SKIP(be);
  for (const Size& s : kSizes) {
    auto in = random_vector<float>(s.in_size(), 16, -6.0f, 6.0f);
    for (size_t i = 0; i < in.size(); i += 3) in[i] = std::floor(in[i]);  // some ties too
    const auto dout = random_vector<float>(s.out_size(), 17);
    const auto din0 = random_vector<float>(s.in_size(), 18);
    const Result fused = run_fused(be, s, in, dout, din0);

    auto in_d = on_device(be, in), dout_d = on_device(be, dout), din = on_device(be, din0);
    auto pooled = nan_buffer(be, int64_t(s.out_size())),
         act = nan_buffer(be, int64_t(s.out_size()));
    auto d_pooled = on_device(be, std::vector<float>(s.out_size(), 0.0f));
    const int64_t count = int64_t(s.out_size());
    be.maxpool2x2_forward(pooled.data(), in_d.data(), s.n, s.c, s.h, s.w);
    be.sigmoid_forward(act.data(), pooled.data(), count);
    be.sigmoid_backward(d_pooled.data(), dout_d.data(), act.data(), count);
    be.maxpool2x2_backward(din.data(), d_pooled.data(), in_d.data(), s.n, s.c, s.h, s.w);
    EXPECT_EQ(fused.out, act.download()) << s.name;
    EXPECT_EQ(fused.din, din.download()) << s.name;
  }
}

// A nullptr din and sizes with no window are no-ops, not launch errors: nothing changes.
TEST(Maxpool2x2SigmoidCuda, NullGradientAndNoWindowAreNoOps) {
  HETDRO_CUDA_OR_SKIP(be);
  const Size s = kSizes[2];  // odd
  const auto in = random_vector<float>(s.in_size(), 19);
  const auto dout = random_vector<float>(s.out_size(), 20);
  auto in_d = on_device(be, in), dout_d = on_device(be, dout), out = on_device(be, dout);
  be.maxpool2x2_sigmoid_backward(nullptr, dout_d.data(), out.data(), in_d.data(), s.n, s.c, s.h,
                                 s.w);
  auto x = on_device(be, std::vector<float>{-3.0f});
  be.maxpool2x2_sigmoid_forward(x.data(), in_d.data(), 2, 2, 1, 5);  // h = 1: no window
  be.maxpool2x2_sigmoid_backward(x.data(), x.data(), x.data(), in_d.data(), 2, 2, 5, 1);
  EXPECT_EQ(x.download(), std::vector<float>{-3.0f});
  EXPECT_EQ(in_d.download(), in);
  EXPECT_EQ(out.download(), dout);
  EXPECT_EQ(dout_d.download(), dout);
}

}  // namespace
}  // namespace hetdro
