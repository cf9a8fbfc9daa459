// sigmoid and relu on the GPU (kernels/activations.cu) against the CPU reference in double:
// NaN-filled outputs, in-place forward (out aliases in), accumulating backward, saturation, and
// sizes from empty to larger than one grid-stride pass. Skipped without a GPU.
#include <gtest/gtest.h>

#include <cstdint>
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

// The encoder's sigmoid after the pool (full28: 70·64·12·12), proj64's ReLU (5·128), odd sizes.
const std::vector<int64_t> kCounts = {1, 5, 640, 70 * 64 * 12 * 12, 3000017};

enum class Act { sigmoid, relu };

void check(Backend<float>& be, Act act, int64_t count, bool in_place) {
  const std::string what = std::string(act == Act::sigmoid ? "sigmoid" : "relu") + " count " +
                           std::to_string(count) + (in_place ? " in place" : "");
  auto in = random_vector<float>(size_t(count), 1, -10.0f, 10.0f);
  if (count > 4) in[0] = -1000, in[1] = 1000, in[2] = 0, in[3] = -100;  // saturation, the kink
  const auto dout = random_vector<float>(size_t(count), 2);
  const auto din0 = random_vector<float>(size_t(count), 3);

  auto in_d = on_device(be, in);
  Buffer<float> out_d = in_place ? Buffer<float>() : nan_buffer(be, count);
  float* out = in_place ? in_d.data() : out_d.data();
  if (act == Act::sigmoid)
    be.sigmoid_forward(out, in_d.data(), count);
  else
    be.relu_forward(out, in_d.data(), count);
  auto dout_d = on_device(be, dout), din = on_device(be, din0);
  if (act == Act::sigmoid)
    be.sigmoid_backward(din.data(), dout_d.data(), out, count);
  else
    be.relu_backward(din.data(), dout_d.data(), out, count);

  std::vector<double> ref(static_cast<size_t>(count)), ref_din = widen(din0);
  const auto in_r = widen(in), dout_r = widen(dout);
  if (act == Act::sigmoid) {
    cpu::sigmoid_forward<double>(ref.data(), in_r.data(), count);
    cpu::sigmoid_backward<double>(ref_din.data(), dout_r.data(), ref.data(), count);
  } else {
    cpu::relu_forward<double>(ref.data(), in_r.data(), count);
    cpu::relu_backward<double>(ref_din.data(), dout_r.data(), ref.data(), count);
  }
  EXPECT_LT(gpu_error((in_place ? in_d : out_d).download(), ref), kGpuTolerance) << what;
  EXPECT_LT(gpu_error(din.download(), ref_din), kGpuTolerance) << what;
}

TEST(ActivationsCuda, MatchTheReference) {
  HETDRO_CUDA_OR_SKIP(be);
  for (Act act : {Act::sigmoid, Act::relu})
    for (int64_t count : kCounts) check(be, act, count, false);
}

TEST(ActivationsCuda, ForwardInPlace) {
  HETDRO_CUDA_OR_SKIP(be);
  for (Act act : {Act::sigmoid, Act::relu})
    for (int64_t count : {int64_t(7), int64_t(70) * 64 * 12 * 12}) check(be, act, count, true);
}

// count = 0 and a nullptr gradient are no-ops, not launch errors: x keeps its value.
TEST(ActivationsCuda, EmptyAndNullAreNoOps) {
  HETDRO_CUDA_OR_SKIP(be);
  auto x = on_device(be, std::vector<float>{-3.0f});
  be.sigmoid_forward(x.data(), x.data(), 0);
  be.relu_forward(x.data(), x.data(), 0);
  be.sigmoid_backward(x.data(), x.data(), x.data(), 0);
  be.relu_backward(nullptr, x.data(), x.data(), 1);
  be.sigmoid_backward(nullptr, x.data(), x.data(), 1);
  EXPECT_EQ(x.download(), std::vector<float>{-3.0f});
}

}  // namespace
}  // namespace hetdro
