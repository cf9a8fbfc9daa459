// Data parallelism under mpirun (docs/DESIGN.md §7; run by ctest as 2 and 3 ranks): every rank
// trains on its shard of each global batch, and every loss term, gradient and parameter must
// equal the single-process run on the same global batches, which each rank also computes here:
// to 1e-10 relative in double, 1e-5 in float. Plus the combined class moments, with shards of
// 1, 0, 5 and 94 samples, and the evaluation split across ranks.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <memory>
#include <vector>

#include "hetdro/backend.h"
#include "hetdro/checkpoint.h"
#include "hetdro/comm.h"
#include "hetdro/config.h"
#include "hetdro/data.h"
#include "hetdro/loss.h"
#include "hetdro/ops.h"
#include "hetdro/trainer.h"
#include "synthetic.h"
#include "testing.h"
#include "tiny_model.h"

namespace hetdro {
namespace {

using testing::rel_error;
using testing::relative;

std::unique_ptr<Collectives> collectives() {
  const auto memory = make_cpu_backend<double>();
  return make_collectives(*memory);
}

// Every rank holds the same bits: the elementwise minimum and maximum over ranks equal x.
template <typename T>
bool same_on_every_rank(Collectives& comm, const std::vector<T>& x) {
  std::vector<T> lo = x, hi = x;
  for (T& v : hi) v = -v;
  comm.all_reduce(lo.data(), int64_t(lo.size()), Reduce::min);
  comm.all_reduce(hi.data(), int64_t(hi.size()), Reduce::min);
  for (size_t i = 0; i < x.size(); ++i)
    if (lo[i] != x[i] || -hi[i] != x[i]) return false;
  return true;
}

// The tiny model (tests/tiny_model.h) with 3 classes; global batches of 8 and 7 samples, so 3
// ranks get uneven shards (3,3,2 and 3,2,2).
Config tiny_config(Fit fit, Objective objective) {
  Config c = testing::tiny_config(3, fit, objective);
  c.train.groupdro_eta = 0.5;
  return c;
}

// 20 steps of the tiny model on the CPU backend, with Adam: one Loss over the global batch
// (comm = nullptr) or this rank's shard of it.
template <typename T>
struct TinyRun {
  static constexpr int kSteps = 20;
  const std::vector<int> rows = {8, 7};
  const std::vector<int> width = {36, 5};
  Config config;
  Model model;
  LossSettings settings;
  std::unique_ptr<Backend<T>> be = make_cpu_backend<T>();
  std::unique_ptr<Loss<T>> loss;
  Buffer<T> params, grads, m, v;
  Buffer<double> q;
  Buffer<int64_t> clock;  // the steps taken, which picks each step's anchor draws
  std::vector<LossTerms> terms;
  std::vector<std::vector<T>> gradients;

  TinyRun(Fit fit, Objective objective, Collectives* comm)
      : config(tiny_config(fit, objective)),
        model(config, {{1, 6, 6}, {5}}),
        settings(LossSettings::from(config)) {
    loss = std::make_unique<Loss<T>>(model, settings, *be, rows, comm);
    params = Buffer<T>(*be, model.size());
    grads = Buffer<T>(*be, model.size());
    m = Buffer<T>(*be, model.size());
    v = Buffer<T>(*be, model.size());
    q = Buffer<double>(*be, 2);
    clock = Buffer<int64_t>(*be, 1);
    std::vector<float> p(model.size());
    model.init(p.data(), 7);
    params.upload(std::vector<T>(p.begin(), p.end()));
    m.zero();
    v.zero();
    q.upload(std::vector<double>{0.5, 0.5});
    for (int step = 0; step < kSteps; ++step) {
      upload_batch(step);
      grads.zero();
      clock.upload(std::vector<int64_t>{step});
      loss->run(params.data(), grads.data(), q.data(), clock.data());
      terms.push_back(loss->read());
      gradients.push_back(grads.download());
      be->adam_update(params.data(), m.data(), v.data(), grads.data(), model.size(), T(1e-2),
                      T(0.9), T(0.999), T(1e-8), T(0), clock.data(), nullptr);
      be->groupdro_commit(q.data(), loss->next_q(), 2, nullptr);
    }
  }

  // Step s's global batch, seeded by (s, group); this loss's rows of it. Labels make a class
  // absent from some shards and leave one-sample slots on others.
  void upload_batch(int step) {
    std::vector<int32_t> y;
    for (int g = 0; g < 2; ++g) {
      const auto x = testing::random_vector<T>(size_t(rows[g]) * width[g], uint32_t(100 * step + g),
                                               T(0), T(1));
      const int first = loss->offset()[g], count = loss->rows()[g];
      be->upload(loss->batch_x(g), x.data() + int64_t(first) * width[g],
                 size_t(count) * width[g] * sizeof(T));
      for (int i = first; i < first + count; ++i) y.push_back((i * (i + step) + g) % 3);
    }
    be->upload(loss->batch_y(), y.data(), y.size() * sizeof(int32_t));
  }
};

struct Case {
  Fit fit;
  Objective objective;
};
std::string case_name(const ::testing::TestParamInfo<Case>& p) {
  return std::string(name(p.param.fit)) + "_" + name(p.param.objective);
}
const auto kCases =
    ::testing::Values(Case{Fit::pooled, Objective::erm}, Case{Fit::per_group, Objective::groupdro});

// Every loss term, every step's gradient and the parameters after 20 steps, against the single
// process, to `tolerance` relative.
template <typename T>
void expect_single_process_run(const Case& c, double tolerance) {
  auto comm = collectives();
  ASSERT_TRUE(comm) << "run under mpirun with at least 2 ranks";
  const TinyRun<T> one(c.fit, c.objective, nullptr);
  const TinyRun<T> ranks(c.fit, c.objective, comm.get());
  for (int s = 0; s < TinyRun<T>::kSteps; ++s) {
    const LossTerms &a = ranks.terms[s], &b = one.terms[s];
    EXPECT_LE(relative(a.clf, b.clf), tolerance) << "step " << s;
    EXPECT_LE(relative(a.fit, b.fit), tolerance) << "step " << s;
    EXPECT_LE(relative(a.sep, b.sep), tolerance) << "step " << s;
    EXPECT_LE(relative(a.total, b.total), tolerance) << "step " << s;
    EXPECT_EQ(a.fit_pairs, b.fit_pairs) << "step " << s;
    EXPECT_EQ(a.skipped_slots, b.skipped_slots) << "step " << s;
    EXPECT_EQ(a.dead, b.dead) << "step " << s;
    EXPECT_LE(rel_error(a.group_loss, b.group_loss), tolerance) << "step " << s;
    EXPECT_LE(rel_error(a.q, b.q), tolerance) << "step " << s;
    EXPECT_LE(rel_error(ranks.gradients[s], one.gradients[s]), tolerance) << "step " << s;
    // The anchors' gradient alone, which the lead rank adds once.
    const auto anchor = [&](const std::vector<T>& grad) {
      return std::vector<T>(grad.begin() + one.model.anchor_mean(), grad.end());
    };
    EXPECT_LE(rel_error(anchor(ranks.gradients[s]), anchor(one.gradients[s])), tolerance)
        << "step " << s;
  }
  const std::vector<T> p = ranks.params.download();
  EXPECT_LE(rel_error(p, one.params.download()), tolerance);
  EXPECT_TRUE(same_on_every_rank(*comm, p));
}

class DataParallelDouble : public ::testing::TestWithParam<Case> {};
TEST_P(DataParallelDouble, LossGradientsAndParametersEqualTheSingleProcessRun) {
  expect_single_process_run<double>(GetParam(), 1e-10);
}
INSTANTIATE_TEST_SUITE_P(Cases, DataParallelDouble, kCases, case_name);

class DataParallelFloatTiny : public ::testing::TestWithParam<Case> {};
TEST_P(DataParallelFloatTiny, LossGradientsAndParametersEqualTheSingleProcessRun) {
  expect_single_process_run<float>(GetParam(), 1e-5);
}
INSTANTIATE_TEST_SUITE_P(Cases, DataParallelFloatTiny, kCases, case_name);

// Shards of 1, 0, 5 and 94 samples, dealt to the ranks in turn; slot 1 is absent from the first
// six samples, so from some ranks.
TEST(DataParallelMoments, CombinedShardsGiveTheOnePassMoments) {
  auto comm = collectives();
  ASSERT_TRUE(comm);
  const int k = 4, slots = 3, n = 100;
  const std::vector<int> sizes = {1, 0, 5, 94};
  const auto z = testing::random_vector<double>(size_t(n) * k, 21, -3.0, 5.0);
  std::vector<int32_t> slot(n);
  for (int i = 0; i < n; ++i) slot[i] = (i < 6 || i % 3 != 0) ? 0 : 1;  // slot 2: empty
  std::vector<double> mine_z;
  std::vector<int32_t> mine_slot;
  for (int shard = 0, first = 0; shard < int(sizes.size()); first += sizes[shard++])
    if (shard % comm->size() == comm->rank())
      for (int i = first; i < first + sizes[shard]; ++i) {
        mine_z.insert(mine_z.end(), z.begin() + int64_t(i) * k, z.begin() + int64_t(i + 1) * k);
        mine_slot.push_back(slot[i]);
      }
  std::vector<double> mean(slots * k), cov(slots * k * k), ref_mean(mean), ref_cov(cov);
  std::vector<int32_t> count(slots), ref_count(slots);
  comm->class_moments_forward(mean.data(), cov.data(), count.data(), mine_z.data(),
                              mine_slot.data(), int(mine_slot.size()), k, slots, 1e-5);
  cpu::class_moments_forward(ref_mean.data(), ref_cov.data(), ref_count.data(), z.data(),
                             slot.data(), n, k, slots, 1e-5);
  EXPECT_EQ(count, ref_count);
  EXPECT_LE(rel_error(mean, ref_mean), 1e-13);
  EXPECT_LE(rel_error(cov, ref_cov), 1e-13);
  EXPECT_TRUE(same_on_every_rank(*comm, cov));
}

// The Trainer in float on the synthetic data, 20 steps. Each step's statistics and gradient are
// compared with a single-process trainer that starts the step from the same state (loaded from
// a checkpoint of the ranks' state): free-running, float rounding compounds, and on this model
// one step's gradient jumped by 4e-3 at step 13 with 2 ranks (a discrete event: a max-pool or
// ReLU near-tie), leaving the parameters 2.2e-4 apart after 20 steps. The tiny model above
// checks free-running float parameters. Then the evaluation split across ranks.
// Under resampled shares too (train.group_batch = "equal": 20 of each group in a batch of 60, so
// vec40's 180 samples run out at step 9 and are drawn again): each rank takes its rows of every
// group's share as under proportional shares (docs/DESIGN.md §7).
class DataParallelFloat : public ::testing::TestWithParam<GroupBatch> {};

TEST_P(DataParallelFloat, TrainerStepsEqualTheSingleProcessTrainer) {
  auto comm = collectives();
  ASSERT_TRUE(comm);
  Config config = load_config(testing::synthetic_config(), {});
  config.train.group_batch = GetParam();
  // Latent 8 with 12 samples of each class per batch: full-rank class covariances. At the
  // default 32 most eigenvalues sit at eps, where W2's backward magnifies float rounding
  // (any summation order, one process or many) to about 1e-5.
  config.model.latent_dim = 8;
  const auto groups = load_groups(config);
  Trainer synced(config, groups);
  const int ranks = comm->size(), rank = comm->rank();
  Collectives& c = *comm;
  Trainer many(config, groups, nullptr, std::move(comm));
  const std::string path =
      ::testing::TempDir() + "/hetdro_data_parallel_" + std::to_string(ranks) + ".safetensors";
  // Every rank's `synced` takes the ranks' state, which is the same on every rank.
  const auto sync = [&] {
    if (rank == 0) save_checkpoint(path, many.model(), many.state());
    c.barrier();
    synced.load(path);
    c.barrier();
  };
  synced.start_epoch(0);
  many.start_epoch(0);
  for (int s = 0; s < 20; ++s) {
    sync();
    synced.step();
    many.step();
    const Window a = many.read_window(), b = synced.read_window();
    for (size_t i = 0; i < b.stats.size(); ++i)
      EXPECT_LE(std::abs(a.stats[i] - b.stats[i]), 1e-5 * std::max(1.0, std::abs(b.stats[i])))
          << "step " << s << ", " << StepStats::name(int(i), int(groups.size()));
    EXPECT_LE(rel_error(many.gradient(), synced.gradient()), 1e-5) << "step " << s;
  }
  const std::vector<float> p = many.state().params;
  EXPECT_TRUE(same_on_every_rank(c, p));
  // The split evaluation equals a single process's on the same parameters.
  sync();
  const Evaluation e = many.evaluate(), ref = synced.evaluate();
  ASSERT_EQ(e.groups.size(), ref.groups.size());
  for (size_t g = 0; g < ref.groups.size(); ++g) {
    EXPECT_EQ(e.groups[g].confusion, ref.groups[g].confusion);
    EXPECT_EQ(e.groups[g].accuracy, ref.groups[g].accuracy);
  }
  c.barrier();
  if (rank == 0) std::filesystem::remove(path);
}

INSTANTIATE_TEST_SUITE_P(Shares, DataParallelFloat,
                         ::testing::Values(GroupBatch::proportional, GroupBatch::equal),
                         [](const ::testing::TestParamInfo<GroupBatch>& p) {
                           return std::string(name(p.param));
                         });

}  // namespace
}  // namespace hetdro

int main(int argc, char** argv) {
  hetdro::start_world(&argc, &argv);
  ::testing::InitGoogleTest(&argc, argv);
  // Every rank reports: a failure on any rank shows, and fails the job.
  const int failed = RUN_ALL_TESTS();
  hetdro::finish_world();
  return failed;
}
