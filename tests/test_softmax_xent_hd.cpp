// The CUDA softmax_xent's per-row arithmetic (kernels/softmax_xent.h), run on the CPU with the
// row split among 1 to 32 simulated lanes whose partials combine as the kernel's shuffles combine
// them (a butterfly), against the CPU reference in double: random rows, huge and equal logits,
// one class and a thousand.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "hetdro/ops.h"
#include "softmax_xent.h"        // kernels/: hd::lane_max, lane_sum_exp, lane_write_probs, xent_*
#include "softmax_xent_model.h"  // softmax_xent_model
#include "testing.h"             // random_vector, rel_error

namespace hetdro {
namespace {

using testing::rel_error;

// The kernel's __shfl_xor_sync butterfly over W lanes: afterwards every lane holds the result.
template <typename Op>
void butterfly(std::vector<float>& v, Op op) {
  const int W = int(v.size());
  for (int offset = W / 2; offset > 0; offset /= 2) {
    std::vector<float> next(v);
    for (int l = 0; l < W; ++l) next[l] = op(v[l], v[l ^ offset]);
    v = next;
  }
}

// softmax_xent_forward and _backward of one batch, each row split among W lanes.
struct LaneResult {
  std::vector<float> probs, loss, dlogits;
};
LaneResult lane_softmax_xent(const std::vector<float>& logits, const std::vector<int32_t>& labels,
                             const std::vector<float>& weight, std::vector<float> dlogits,
                             int classes, int W) {
  const int n = int(labels.size());
  LaneResult r{std::vector<float>(logits.size()), std::vector<float>(n), {}};
  for (int i = 0; i < n; ++i) {
    const float* x = logits.data() + int64_t(i) * classes;
    std::vector<float> part(W);
    for (int l = 0; l < W; ++l) part[l] = hd::lane_max(x, classes, l, W);
    butterfly(part, [](float a, float b) { return a < b ? b : a; });
    const float top = part[0];
    for (int l = 0; l < W; ++l) part[l] = hd::lane_sum_exp(x, classes, l, W, top);
    butterfly(part, [](float a, float b) { return a + b; });
    const float sum = part[0];
    for (int l = 0; l < W; ++l)
      hd::lane_write_probs(r.probs.data() + int64_t(i) * classes, x, classes, l, W, top, sum);
    r.loss[i] = hd::xent_loss(top, sum, x[labels[i]]);
  }
  for (int64_t idx = 0; idx < int64_t(dlogits.size()); ++idx) {
    const int64_t i = idx / classes;
    const int c = int(idx - i * classes);
    dlogits[idx] = hd::xent_grad(dlogits[idx], r.probs[idx], weight[i], c == labels[i]);
  }
  r.dlogits = dlogits;
  return r;
}

struct Reference {
  std::vector<double> probs, loss, dlogits;
};
Reference reference(const std::vector<float>& logits, const std::vector<int32_t>& labels,
                    const std::vector<float>& weight, const std::vector<float>& dlogits,
                    int classes) {
  const int n = int(labels.size());
  const std::vector<double> x(logits.begin(), logits.end()), w(weight.begin(), weight.end());
  Reference r{std::vector<double>(x.size()), std::vector<double>(n),
              std::vector<double>(dlogits.begin(), dlogits.end())};
  cpu::softmax_xent_forward<double>(r.probs.data(), r.loss.data(), nullptr, x.data(), labels.data(),
                                    nullptr, n, classes, 0);
  cpu::softmax_xent_backward<double>(r.dlogits.data(), r.probs.data(), labels.data(), w.data(), n,
                                     classes);
  return r;
}

// Against the reference in double, with softmax_xent_model's bars: the lanes only reorder the
// row's sum, which its γ_{C−1} covers.
void expect_matches(const std::vector<float>& logits, const std::vector<int32_t>& labels,
                    int classes) {
  const int n = int(labels.size());
  const auto weight = testing::random_vector<float>(n, 7, 0.1f, 1.0f);
  const auto start = testing::random_vector<float>(logits.size(), 8);  // the backward's +=
  const Reference ref = reference(logits, labels, weight, start, classes);
  const auto model = testing::softmax_xent_model(logits, labels, weight, start, classes);
  using testing::conditioning;
  for (int W : {1, 4, 16, 32}) {
    const LaneResult got = lane_softmax_xent(logits, labels, weight, start, classes, W);
    EXPECT_LT(rel_error(got.probs, std::vector<float>(ref.probs.begin(), ref.probs.end())),
              conditioning(model.probs_err, model.probs))
        << "W " << W;
    EXPECT_LT(rel_error(got.loss, std::vector<float>(ref.loss.begin(), ref.loss.end())),
              conditioning(model.loss_err, model.loss))
        << "W " << W;
    EXPECT_LT(rel_error(got.dlogits, std::vector<float>(ref.dlogits.begin(), ref.dlogits.end())),
              conditioning(model.dlogits_err, model.dlogits))
        << "W " << W;
    for (float v : got.loss) EXPECT_TRUE(std::isfinite(v)) << "W " << W;
  }
}

TEST(SoftmaxXentHd, RandomRowsMatchTheReferenceForEveryLaneCount) {
  for (int classes : {2, 3, 10, 33, 1000}) {
    const int n = 50;
    const auto logits = testing::random_vector<float>(size_t(n) * classes, classes, -5.0f, 5.0f);
    std::vector<int32_t> labels(n);
    for (int i = 0; i < n; ++i) labels[i] = (7 * i + 3) % classes;
    SCOPED_TRACE(classes);
    expect_matches(logits, labels, classes);
  }
}

TEST(SoftmaxXentHd, HugeAndEqualLogitsStayExact) {
  // Rows: {1e4, −1e4} labelled 1 (p_y underflows; loss 2e4), the same labelled 0 (loss 0),
  // all equal (p = 1/C, loss log C), and all −1e4 (the shift makes them equal too).
  const int classes = 4;
  const std::vector<float> logits = {1e4f, -1e4f, -1e4f, -1e4f, 1e4f,  -1e4f, -1e4f, -1e4f,
                                     3.5f, 3.5f,  3.5f,  3.5f,  -1e4f, -1e4f, -1e4f, -1e4f};
  const std::vector<int32_t> labels = {1, 0, 2, 3};
  expect_matches(logits, labels, classes);
  const std::vector<float> weight(4, 1.0f), zero(logits.size(), 0.0f);
  for (int W : {1, 4}) {
    const LaneResult got = lane_softmax_xent(logits, labels, weight, zero, classes, W);
    EXPECT_EQ(got.loss[0], 2e4f);
    EXPECT_EQ(got.probs[1], 0.0f);
    EXPECT_EQ(got.loss[1], 0.0f);
    // log 4 from a sum of 4 exact ones: log's ulp and one rounding to float, 3u·log 4.
    EXPECT_NEAR(got.loss[2], std::log(4.0), 3 * testing::unit_roundoff<float>() * std::log(4.0));
    EXPECT_NEAR(got.loss[3], std::log(4.0), 3 * testing::unit_roundoff<float>() * std::log(4.0));
    EXPECT_EQ(got.probs[8], 0.25f);
  }
}

TEST(SoftmaxXentHd, OneClassHasProbabilityOneAndNoLoss) {
  const std::vector<float> logits = {-3.0f, 0.0f, 1e4f};
  const std::vector<int32_t> labels = {0, 0, 0};
  const std::vector<float> weight = {1.0f, 2.0f, 0.5f}, start = {0.25f, -1.0f, 2.0f};
  for (int W : {1, 4, 32}) {
    const LaneResult got = lane_softmax_xent(logits, labels, weight, start, 1, W);
    EXPECT_EQ(got.probs, std::vector<float>(3, 1.0f));
    EXPECT_EQ(got.loss, std::vector<float>(3, 0.0f));
    EXPECT_EQ(got.dlogits, start);  // w·(1 − 1) added
  }
}

}  // namespace
}  // namespace hetdro
