// clf_objective on the GPU against the CPU reference in double, for every rule: ERM, and GroupDRO
// with each q update (exp, softmax, smooth, or none) and each objective (weighted, max,
// logsumexp), with and without the C/√N_g adjustment, with a group absent from the batch, and
// with q_next aliasing q. Both sides run the same arithmetic (kernels/clf_objective.h) in double,
// so the doubles agree to rounding in exp and log. Skipped without a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "cuda_testing.h"
#include "hetdro/ops.h"

namespace hetdro {
namespace {

using testing::gpu_error;
using testing::kGpuTolerance;
using testing::nan_buffer;
using testing::on_device;
using testing::widen;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kDoubleTolerance = 1e-12;  // the same double arithmetic; exp/log last bits

// Four groups, the second absent from the batch of 100.
struct Inputs {
  int n = 100, groups = 4;
  std::vector<int32_t> count = {30, 0, 50, 20}, group;
  std::vector<float> group_loss_sum = {30 * 1.7f, 0.0f, 50 * 0.9f, 20 * 2.6f};
  std::vector<double> q = {0.1, 0.2, 0.3, 0.4}, adjustment = {0.05, 0.5, 0.01, 0.2};
  Inputs() {
    for (int i = 0; i < n; ++i) group.push_back(i % 10 < 3 ? 0 : i % 10 < 8 ? 2 : 3);
  }
};

struct Outputs {
  std::vector<double> clf, group_loss, q_next;
  std::vector<float> weight;
};

Outputs run_gpu(Backend<float>& be, const Inputs& in, const ClfRule& rule, bool adjust,
                bool in_place) {
  auto clf = on_device(be, std::vector<double>(1, kNaN));
  auto group_loss = on_device(be, std::vector<double>(in.groups, kNaN));
  auto q = on_device(be, in.q);
  auto q_next = on_device(be, std::vector<double>(in.groups, kNaN));
  auto weight = nan_buffer(be, in.n);
  auto sums = on_device(be, in.group_loss_sum);
  auto count = on_device(be, in.count);
  auto group = on_device(be, in.group);
  auto adjustment = on_device(be, in.adjustment);
  double* next = in_place ? q.data() : q_next.data();
  be.clf_objective(clf.data(), group_loss.data(), next, weight.data(), q.data(), sums.data(),
                   count.data(), group.data(), adjust ? adjustment.data() : nullptr, in.n,
                   in.groups, rule);
  return {clf.download(), group_loss.download(), in_place ? q.download() : q_next.download(),
          weight.download()};
}

struct Reference {
  std::vector<double> clf, group_loss, q_next, weight;
};
Reference run_cpu(const Inputs& in, const ClfRule& rule, bool adjust) {
  Reference r{std::vector<double>(1), std::vector<double>(in.groups),
              std::vector<double>(in.groups), std::vector<double>(in.n)};
  const auto sums = widen(in.group_loss_sum);
  cpu::clf_objective<double>(r.clf.data(), r.group_loss.data(), r.q_next.data(), r.weight.data(),
                             in.q.data(), sums.data(), in.count.data(), in.group.data(),
                             adjust ? in.adjustment.data() : nullptr, in.n, in.groups, rule);
  return r;
}

void expect_matches(Backend<float>& be, const ClfRule& rule, bool adjust) {
  const Inputs in;
  const Reference ref = run_cpu(in, rule, adjust);
  for (bool in_place : {false, true}) {
    SCOPED_TRACE(in_place ? "q_next aliases q" : "q_next apart");
    const Outputs got = run_gpu(be, in, rule, adjust, in_place);
    EXPECT_LT(testing::rel_error(got.clf, ref.clf), kDoubleTolerance);
    EXPECT_LT(testing::rel_error(got.group_loss, ref.group_loss), kDoubleTolerance);
    EXPECT_LT(testing::rel_error(got.q_next, ref.q_next), kDoubleTolerance);
    EXPECT_LT(gpu_error(got.weight, ref.weight), kGpuTolerance);
    EXPECT_EQ(got.group_loss[1], 0.0);  // the absent group
  }
}

TEST(ClfObjectiveCuda, ErmMatchesTheReference) {
  HETDRO_CUDA_OR_SKIP(be);
  expect_matches(be, ClfRule{}, false);
}

TEST(ClfObjectiveCuda, EveryGroupDroRuleMatchesTheReference) {
  HETDRO_CUDA_OR_SKIP(be);
  for (bool update_q : {false, true})
    for (GroupDroUpdate update :
         {GroupDroUpdate::exp, GroupDroUpdate::softmax, GroupDroUpdate::smooth})
      for (GroupDroObjective objective :
           {GroupDroObjective::weighted, GroupDroObjective::max, GroupDroObjective::logsumexp})
        for (bool adjust : {false, true}) {
          ClfRule rule;
          rule.groupdro = true;
          rule.update_q = update_q;
          rule.update = update;
          rule.objective = objective;
          rule.eta = 0.7, rule.tau = 0.5, rule.gamma = 0.3;  // away from the defaults
          SCOPED_TRACE(::testing::Message()
                       << "update_q " << update_q << ", update " << int(update) << ", objective "
                       << int(objective) << ", adjustment " << adjust);
          expect_matches(be, rule, adjust);
        }
}

TEST(ClfObjectiveCuda, ExpUpdateWithHugeLossesStaysFinite) {
  HETDRO_CUDA_OR_SKIP(be);
  Inputs in;
  in.group_loss_sum = {30 * 900.0f, 0.0f, 50 * 1000.0f, 20 * 950.0f};
  ClfRule rule;
  rule.groupdro = true, rule.update_q = true, rule.eta = 1.0;  // exp(1000) overflows unshifted
  const Reference ref = run_cpu(in, rule, false);
  const Outputs got = run_gpu(be, in, rule, false, false);
  for (double q : got.q_next) EXPECT_TRUE(std::isfinite(q));
  EXPECT_LT(testing::rel_error(got.q_next, ref.q_next), kDoubleTolerance);
  EXPECT_LT(testing::rel_error(got.clf, ref.clf), kDoubleTolerance);
}

}  // namespace
}  // namespace hetdro
