// conv2d on the GPU (cuDNN, kernels/cudnn.cu) against the CPU reference in double: the model's
// layers and odd shapes, NaN-filled outputs, accumulating gradients, nullptr gradients, the
// per-shape plan cache, and a refused shape reported as an error. Skipped without a GPU.
#include <gtest/gtest.h>

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

struct Shape {
  const char* name;
  int n, c_in, h, w, c_out, kh, kw;
  int oh() const { return h - kh + 1; }
  int ow() const { return w - kw + 1; }
  size_t in_size() const { return size_t(n) * c_in * h * w; }
  size_t w_size() const { return size_t(c_out) * c_in * kh * kw; }
  size_t out_size() const { return size_t(n) * c_out * oh() * ow(); }
};

// The default cnn encoders (docs/DESIGN.md §1, §5: channels [32, 64], kernel 3) at their share of
// the batch of 100 (full28 70, low16 25), then odd shapes where a swapped h/w or kh/kw shows, a
// 1x1 output and a single sample.
const std::vector<Shape> kShapes = {
    {"full28_conv1", 70, 1, 28, 28, 32, 3, 3},
    {"full28_conv2", 70, 32, 26, 26, 64, 3, 3},
    {"low16_conv1", 25, 1, 16, 16, 32, 3, 3},
    {"low16_conv2", 25, 32, 14, 14, 64, 3, 3},
    {"odd", 3, 2, 7, 6, 4, 3, 2},
    {"odd_wide", 2, 3, 5, 9, 5, 2, 4},
    {"one_pixel_out", 2, 3, 5, 5, 7, 5, 5},
    {"single", 1, 1, 4, 3, 1, 1, 1},
};

std::vector<double> forward_ref(const Shape& s, const std::vector<float>& in,
                                const std::vector<float>& wt, const std::vector<float>& b) {
  std::vector<double> out(s.out_size());
  const auto in_d = widen(in), wt_d = widen(wt), b_d = widen(b);
  cpu::conv2d_forward<double>(out.data(), in_d.data(), wt_d.data(), b_d.data(), s.n, s.c_in, s.h,
                              s.w, s.c_out, s.kh, s.kw);
  return out;
}

TEST(Conv2dCuda, ForwardMatchesTheReference) {
  HETDRO_CUDA_OR_SKIP(be);
  for (const Shape& s : kShapes) {
    const auto in = random_vector<float>(s.in_size(), 1);
    const auto wt = random_vector<float>(s.w_size(), 2);
    const auto b = random_vector<float>(size_t(s.c_out), 3);
    auto in_d = on_device(be, in), wt_d = on_device(be, wt), b_d = on_device(be, b);
    auto out = nan_buffer(be, int64_t(s.out_size()));
    be.conv2d_forward(out.data(), in_d.data(), wt_d.data(), b_d.data(), s.n, s.c_in, s.h, s.w,
                      s.c_out, s.kh, s.kw);
    EXPECT_LT(gpu_error(out.download(), forward_ref(s, in, wt, b)), kGpuTolerance) << s.name;
  }
}

// Gradients start from the same nonzero values on both sides, so the += is checked; then each
// nullptr combination the model uses (the first layer wants no din) or could use.
TEST(Conv2dCuda, BackwardAccumulatesAndSkipsNullGradients) {
  HETDRO_CUDA_OR_SKIP(be);
  struct Wanted {
    bool din, dweight, dbias;
  };
  for (const Shape& s : kShapes)
    for (Wanted want : {Wanted{true, true, true}, Wanted{false, true, true},
                        Wanted{true, false, false}, Wanted{false, false, true}}) {
      const auto in = random_vector<float>(s.in_size(), 11);
      const auto wt = random_vector<float>(s.w_size(), 12);
      const auto dout = random_vector<float>(s.out_size(), 13);
      const auto din0 = random_vector<float>(s.in_size(), 14);
      const auto dwt0 = random_vector<float>(s.w_size(), 15);
      const auto db0 = random_vector<float>(size_t(s.c_out), 16);
      auto in_d = on_device(be, in), wt_d = on_device(be, wt), dout_d = on_device(be, dout);
      auto din = on_device(be, din0), dwt = on_device(be, dwt0), db = on_device(be, db0);
      be.conv2d_backward(want.din ? din.data() : nullptr, want.dweight ? dwt.data() : nullptr,
                         want.dbias ? db.data() : nullptr, dout_d.data(), in_d.data(), wt_d.data(),
                         s.n, s.c_in, s.h, s.w, s.c_out, s.kh, s.kw);

      auto rin = widen(din0), rwt = widen(dwt0), rb = widen(db0);
      const auto in_r = widen(in), wt_r = widen(wt), dout_r = widen(dout);
      cpu::conv2d_backward<double>(want.din ? rin.data() : nullptr,
                                   want.dweight ? rwt.data() : nullptr,
                                   want.dbias ? rb.data() : nullptr, dout_r.data(), in_r.data(),
                                   wt_r.data(), s.n, s.c_in, s.h, s.w, s.c_out, s.kh, s.kw);
      const std::string what = std::string(s.name) + " din " + std::to_string(want.din) +
                               " dweight " + std::to_string(want.dweight) + " dbias " +
                               std::to_string(want.dbias);
      // A gradient not asked for must come back exactly as it went in.
      EXPECT_LT(gpu_error(din.download(), rin), kGpuTolerance) << what;
      EXPECT_LT(gpu_error(dwt.download(), rwt), kGpuTolerance) << what;
      EXPECT_LT(gpu_error(db.download(), rb), kGpuTolerance) << what;
      if (!want.din) {
        EXPECT_EQ(din.download(), din0) << what;
      }
      if (!want.dweight) {
        EXPECT_EQ(dwt.download(), dwt0) << what;
      }
      if (!want.dbias) {
        EXPECT_EQ(db.download(), db0) << what;
      }
    }
}

// The algorithms are chosen deterministic (no atomics), so the same backward twice gives the same
// bits in every gradient, the bias sum included.
TEST(Conv2dCuda, BackwardIsDeterministic) {
  HETDRO_CUDA_OR_SKIP(be);
  for (const Shape& s : {kShapes[1], kShapes[3]}) {
    auto in = on_device(be, random_vector<float>(s.in_size(), 41));
    auto wt = on_device(be, random_vector<float>(s.w_size(), 42));
    auto dout = on_device(be, random_vector<float>(s.out_size(), 43));
    std::vector<float> first[3];
    for (int run = 0; run < 2; ++run) {
      auto din = on_device(be, std::vector<float>(s.in_size(), 0.0f));
      auto dwt = on_device(be, std::vector<float>(s.w_size(), 0.0f));
      auto db = on_device(be, std::vector<float>(size_t(s.c_out), 0.0f));
      be.conv2d_backward(din.data(), dwt.data(), db.data(), dout.data(), in.data(), wt.data(), s.n,
                         s.c_in, s.h, s.w, s.c_out, s.kh, s.kw);
      if (run == 0) {
        first[0] = din.download(), first[1] = dwt.download(), first[2] = db.download();
      } else {
        EXPECT_EQ(din.download(), first[0]) << s.name;
        EXPECT_EQ(dwt.download(), first[1]) << s.name;
        EXPECT_EQ(db.download(), first[2]) << s.name;
      }
    }
  }
}

// Plans are cached by shape: alternating shapes (and a forward after a backward of the same
// shape) must each use their own descriptors and still be right.
TEST(Conv2dCuda, AlternatingShapesUseTheirOwnPlans) {
  HETDRO_CUDA_OR_SKIP(be);
  for (int round = 0; round < 2; ++round)
    for (const Shape& s : {kShapes[4], kShapes[5], kShapes[0]}) {
      const auto in = random_vector<float>(s.in_size(), 21 + round);
      const auto wt = random_vector<float>(s.w_size(), 22 + round);
      const auto b = random_vector<float>(size_t(s.c_out), 23 + round);
      auto in_d = on_device(be, in), wt_d = on_device(be, wt), b_d = on_device(be, b);
      auto out = nan_buffer(be, int64_t(s.out_size()));
      be.conv2d_forward(out.data(), in_d.data(), wt_d.data(), b_d.data(), s.n, s.c_in, s.h, s.w,
                        s.c_out, s.kh, s.kw);
      EXPECT_LT(gpu_error(out.download(), forward_ref(s, in, wt, b)), kGpuTolerance)
          << s.name << " round " << round;
    }
}

// Every cuDNN call is checked: a kernel larger than the image is refused with cuDNN's message and
// the place, as an exception.
TEST(Conv2dCuda, ARefusedShapeThrowsNamingTheCall) {
  HETDRO_CUDA_OR_SKIP(be);
  auto in = on_device(be, std::vector<float>(2 * 3 * 3, 1.0f));
  auto wt = on_device(be, std::vector<float>(5 * 5, 1.0f));
  auto b = on_device(be, std::vector<float>(1, 0.0f));
  auto out = nan_buffer(be, 1);
  try {
    be.conv2d_forward(out.data(), in.data(), wt.data(), b.data(), 2, 1, 3, 3, 1, 5, 5);
    FAIL() << "a 5x5 kernel on a 3x3 image was accepted";
  } catch (const std::runtime_error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("cudnn.cu"), std::string::npos) << what;
    EXPECT_NE(what.find("CUDNN_STATUS"), std::string::npos) << what;
  }
}

// n = 0: nothing to write and nothing to add; no cuDNN call is made on an empty tensor.
TEST(Conv2dCuda, AnEmptyBatchChangesNothing) {
  HETDRO_CUDA_OR_SKIP(be);
  const auto dwt0 = random_vector<float>(32 * 9, 31);
  const auto db0 = random_vector<float>(32, 32);
  auto dwt = on_device(be, dwt0), db = on_device(be, db0), wt = on_device(be, dwt0);
  Buffer<float> none(be, 1);
  be.conv2d_forward(none.data(), none.data(), wt.data(), db.data(), 0, 1, 28, 28, 32, 3, 3);
  be.conv2d_backward(nullptr, dwt.data(), db.data(), none.data(), none.data(), wt.data(), 0, 1, 28,
                     28, 32, 3, 3);
  EXPECT_EQ(dwt.download(), dwt0);
  EXPECT_EQ(db.download(), db0);
}

}  // namespace
}  // namespace hetdro
