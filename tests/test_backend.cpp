// The backend seam (docs/DESIGN.md §6): a training step and an evaluation never touch backend
// memory from the host (the guarded backend), a step allocates nothing, a non-finite step never
// reaches the parameters, and the trainer through the seam gives the numbers it gave before the
// seam.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <sstream>

#include "guarded_backend.h"
#include "hetdro/backend.h"
#include "hetdro/checkpoint.h"
#include "hetdro/io.h"
#include "hetdro/trainer.h"
#include "synthetic.h"  // synthetic_config
#include "testing.h"    // relative, rel_error

namespace hetdro {
namespace {

namespace fs = std::filesystem;
using testing::GuardedBackend;
using testing::relative;
using testing::synthetic_config;

struct SyntheticRun {
  Config config;
  std::unique_ptr<Trainer> trainer;
  explicit SyntheticRun(const std::vector<std::string>& overrides = {},
                        std::unique_ptr<Backend<float>> backend = nullptr)
      : config(load_config(synthetic_config(), overrides)),
        trainer(std::make_unique<Trainer>(config, load_groups(config), std::move(backend))) {}
};

TEST(GuardedBackendTest, HostAccessOutsideAnOpFaults) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  GuardedBackend<float> be;
  Buffer<float> b(be, 16);
  b.upload(std::vector<float>(16, 2.0f));
  be.relu_forward(b.data(), b.data(), 16);  // inside an op: fine
  EXPECT_EQ(b.download(), std::vector<float>(16, 2.0f));
  EXPECT_DEATH({ b.data()[3] = 1.0f; }, "");
  EXPECT_DEATH({ std::printf("%f\n", double(b.data()[0])); }, "");
}

TEST(Seam, TrainingStepsAndEvaluationNeverTouchBackendMemoryFromTheHost) {
  // Every loss term and code path: per_group repeats the anchors, GroupDRO updates q, the mlp2
  // classifier and the relu latent plan extra scratch.
  const std::vector<std::string> options = {
      "train.fit=\"per_group\"", "train.objective=\"groupdro\"", "model.classifier=\"mlp2\"",
      "model.latent_activation=\"relu\""};
  SyntheticRun guarded(options, std::make_unique<GuardedBackend<float>>());
  SyntheticRun plain(options);
  for (SyntheticRun* r : {&guarded, &plain}) {
    r->trainer->start_epoch(0);
    for (int s = 0; s < 3; ++s) r->trainer->step();
  }
  const Window g = guarded.trainer->read_window(), p = plain.trainer->read_window();
  EXPECT_EQ(g.steps, 3);
  EXPECT_NEAR(g.sums.total, p.sums.total, 1e-6 * std::abs(p.sums.total));
  EXPECT_LE(testing::rel_error(guarded.trainer->state().params, plain.trainer->state().params),
            1e-6);
  EXPECT_LE(testing::rel_error(guarded.trainer->state().q, plain.trainer->state().q), 1e-9);
  const Evaluation eg = guarded.trainer->evaluate(), ep = plain.trainer->evaluate();
  for (size_t i = 0; i < eg.groups.size(); ++i)
    EXPECT_NEAR(eg.groups[i].accuracy, ep.groups[i].accuracy, 1.0 / eg.groups[i].samples);
  // predict uploads host features a chunk at a time.
  const Array<float> x = read_npy_features(guarded.config.groups[1].test_x);
  EXPECT_EQ(guarded.trainer->predict(1, x), plain.trainer->predict(1, x));
}

TEST(Seam, NoAllocationInsideAStep) {
  for (const char* fit : {"\"pooled\"", "\"per_group\""}) {
    SyntheticRun run({std::string("train.fit=") + fit});
    Trainer& t = *run.trainer;
    t.start_epoch(0);
    t.step();
    t.read_window();
    t.evaluate();
    const int64_t before = t.backend().allocations();
    for (int s = 1; s <= 10; ++s) {
      t.step();
      t.read_window();
    }
    EXPECT_EQ(t.backend().allocations(), before) << fit;
  }
}

// --- the step recorded once and replayed (docs/DESIGN.md §3) ------------------------------------

// Steps a run through `steps` steps from epoch 0 on, reading the window every `read_every` steps,
// and returns the windows' loss totals.
std::vector<double> run_steps(Trainer& t, int steps, int read_every) {
  std::vector<double> totals;
  for (int epoch = 0, done = 0; done < steps; ++epoch) {
    t.start_epoch(epoch);
    for (int64_t s = 0; s < t.sampler().steps_per_epoch() && done < steps; ++s) {
      t.step();
      if (++done % read_every == 0) totals.push_back(t.read_window().sums.total);
    }
  }
  return totals;
}

TEST(RecordedStep, ReplaysGiveTheSameBitsAsTheStepIssuedOpByOp) {
  // The recording backend freezes every pointer and host scalar of the recorded step, as a CUDA
  // Graph does: a per-step value passed by value would replay step 2's batch and draws forever.
  // Across an epoch's end (the order is re-uploaded in place) and with every loss term and the
  // GroupDRO update on, the replays must match op-by-op steps bit for bit.
  const std::vector<std::string> options = {
      "train.fit=\"per_group\"", "train.objective=\"groupdro\"", "train.weight_decay=0.01"};
  auto recorder = std::make_unique<GuardedBackend<float>>(testing::Records::on);
  const GuardedBackend<float>* recording = recorder.get();
  SyntheticRun replayed(options, std::move(recorder));
  SyntheticRun issued(options, std::make_unique<GuardedBackend<float>>(testing::Records::on));
  issued.trainer->use_graph(false);
  const int steps = int(replayed.trainer->sampler().steps_per_epoch()) + 7;
  ASSERT_GT(steps, 10);
  const std::vector<double> a = run_steps(*replayed.trainer, steps, 5);
  const std::vector<double> b = run_steps(*issued.trainer, steps, 5);
  EXPECT_TRUE(replayed.trainer->graph_active());
  EXPECT_EQ(recording->recordings(), 1);  // recorded once, after the first step
  EXPECT_FALSE(issued.trainer->graph_active());
  EXPECT_EQ(issued.trainer->why_no_graph(), "--no-graph");
  EXPECT_EQ(a, b);
  const TrainState ra = replayed.trainer->state(), rb = issued.trainer->state();
  ASSERT_EQ(ra.params.size(), rb.params.size());
  EXPECT_EQ(std::memcmp(ra.params.data(), rb.params.data(), ra.params.size() * sizeof(float)), 0);
  EXPECT_EQ(std::memcmp(ra.adam_v.data(), rb.adam_v.data(), ra.adam_v.size() * sizeof(float)), 0);
  EXPECT_EQ(ra.q, rb.q);
  EXPECT_EQ(ra.step, steps);
}

TEST(RecordedStep, AnOpThatCannotBeRecordedLeavesTheStepIssuedOpByOpAndSaysWhy) {
  SyntheticRun refused(
      {}, std::make_unique<GuardedBackend<float>>(testing::Records::on, "w2_gaussian_forward"));
  SyntheticRun plain({}, std::make_unique<GuardedBackend<float>>());
  EXPECT_EQ(run_steps(*refused.trainer, 6, 3), run_steps(*plain.trainer, 6, 3));
  EXPECT_FALSE(refused.trainer->graph_active());
  EXPECT_NE(refused.trainer->why_no_graph().find("w2_gaussian_forward cannot be recorded"),
            std::string::npos)
      << refused.trainer->why_no_graph();
  EXPECT_EQ(refused.trainer->state().params, plain.trainer->state().params);
}

TEST(RecordedStep, ARecordingThatFailsLeavesTheStepIssuedOpByOpWithTheStepCounted) {
  // The first step has run when the recording starts: a failure there must neither lose that
  // step from the count (a checkpoint would label step 1's parameters step 0) nor end the run.
  SyntheticRun failed(
      {}, std::make_unique<GuardedBackend<float>>(testing::Records::on, "class_moments_forward",
                                                  testing::Refusal::fails));
  SyntheticRun plain({}, std::make_unique<GuardedBackend<float>>());
  EXPECT_EQ(run_steps(*failed.trainer, 6, 3), run_steps(*plain.trainer, 6, 3));
  EXPECT_FALSE(failed.trainer->graph_active());
  EXPECT_NE(failed.trainer->why_no_graph().find(
                "recording the step as a CUDA Graph failed: class_moments_forward failed"),
            std::string::npos)
      << failed.trainer->why_no_graph();
  EXPECT_EQ(failed.trainer->state().step, 6);
  EXPECT_EQ(failed.trainer->state().params, plain.trainer->state().params);
}

TEST(RecordedStep, UseGraphTurnsTheRecordingOffAndOnAgain) {
  SyntheticRun run({}, std::make_unique<GuardedBackend<float>>(testing::Records::on));
  run.trainer->use_graph(false);
  run.trainer->use_graph(true);
  run_steps(*run.trainer, 3, 3);
  EXPECT_TRUE(run.trainer->graph_active()) << run.trainer->why_no_graph();
}

TEST(RecordedStep, TheCpuBackendIssuesEveryStepAndSaysSo) {
  SyntheticRun run;
  run_steps(*run.trainer, 2, 1);
  EXPECT_FALSE(run.trainer->graph_active());
  EXPECT_EQ(run.trainer->why_no_graph(), "the cpu backend runs its ops as they are called");
}

TEST(RecordedStep, ANonFiniteStepRewindsTheClockAndTheReplaysGoOnFromThere) {
  // The step after a rewind replays the recorded graph from the clock as uploaded, so a run that
  // hit a bad step, was reloaded from good parameters and went on equals one that never did.
  auto make = [] {
    return std::make_unique<SyntheticRun>(
        std::vector<std::string>{}, std::make_unique<GuardedBackend<float>>(testing::Records::on));
  };
  auto clean = make(), hit = make();
  run_steps(*clean->trainer, 4, 4);
  run_steps(*hit->trainer, 4, 4);
  const TrainState good = hit->trainer->state();
  // Spoil the parameters so the next step goes non-finite, then step: the replay is flagged.
  TrainState spoiled = good;
  for (const ParamInfo& p : hit->trainer->model().params())
    if (p.name == "classifier.bias")
      for (int64_t i = 0; i < p.size; ++i) spoiled.params[p.offset + i] = i == 0 ? 3e38f : -3e38f;
  const std::string path =
      (fs::path(::testing::TempDir()) / "hetdro_recorded_nan.safetensors").string();
  save_checkpoint(path, hit->trainer->model(), spoiled);
  hit->trainer->load(path);
  hit->trainer->start_epoch(0, 4);
  hit->trainer->step();
  hit->trainer->step();
  EXPECT_THROW(hit->trainer->read_window(), std::runtime_error);
  EXPECT_EQ(hit->trainer->state().step, 4);  // rewound to the last good step
  save_checkpoint(path, hit->trainer->model(), good);
  hit->trainer->load(path);
  for (Trainer* t : {clean->trainer.get(), hit->trainer.get()}) {
    t->start_epoch(0, 4);
    for (int s = 0; s < 3; ++s) t->step();
  }
  EXPECT_TRUE(hit->trainer->graph_active());
  EXPECT_EQ(clean->trainer->read_window().sums.total, hit->trainer->read_window().sums.total);
  EXPECT_EQ(clean->trainer->state().params, hit->trainer->state().params);
}

TEST(Seam, ANonFiniteLossStopsTheRunAtTheNextReadAndAdamSkipsEveryStepFromIt) {
  // Classifier biases at ±3e38: the logits stay finite, but the cross-entropy of every sample
  // not of class 0 is −(−3e38 − 3e38) = inf, from the first step on.
  SyntheticRun run({}, std::make_unique<GuardedBackend<float>>());
  Trainer& t = *run.trainer;
  TrainState spoiled = t.state();
  for (const ParamInfo& p : t.model().params())
    if (p.name == "classifier.bias")
      for (int64_t i = 0; i < p.size; ++i) spoiled.params[p.offset + i] = i == 0 ? 3e38f : -3e38f;
  const std::string path = (fs::path(::testing::TempDir()) / "hetdro_nan.safetensors").string();
  save_checkpoint(path, t.model(), spoiled);
  t.load(path);
  t.start_epoch(0);
  for (int s = 0; s < 3; ++s) t.step();
  try {
    t.read_window();
    FAIL() << "a NaN loss went unnoticed";
  } catch (const std::runtime_error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("loss term loss_clf became non-finite at step 1"), std::string::npos)
        << what;
  }
  const TrainState after = t.state();
  ASSERT_EQ(after.params.size(), spoiled.params.size());
  EXPECT_EQ(
      std::memcmp(after.params.data(), spoiled.params.data(), after.params.size() * sizeof(float)),
      0);
  EXPECT_EQ(after.adam_m, spoiled.adam_m);
  EXPECT_EQ(after.step, 0);  // rewound to the last good step
}

// The trainer's numbers on the synthetic data (tests/data/step_*.safetensors): the first step's
// loss terms and gradient, and the loss terms and GroupDRO weights of step 100. The metadata
// holds the config overrides. They were first written by the pre-seam trainer (af09cf6), which
// the seam matched to 1e-6; M's eigenvalue floor then moved from ε to ε² (docs/DESIGN.md §2),
// which moved the numbers (step 1: L_fit by 1.1e-6 and the gradient by 7.8e-5 (pooled) and
// 1.7e-4 (per_group); step 100: L_fit by 3.0e-3), and the fixtures were rewritten by
// WriteFixtures below. Rewrite them only for a change that is meant to move the numbers.
//
// Step 100 is compared for the default options only. With per_group + groupdro + mlp2 + relu the
// trajectory is chaotic at rounding level: the seam's own code, run with its buffers 16 bytes off
// their usual alignment (which changes Eigen's summation order), drifts from itself by 1e-8 at
// step 6 and by 2e-3 at step 100, as far as it drifts from the pre-seam trainer. Its first step
// still matches to 1e-6.
//
// The reference numbers come from the release build (-O3 -march=native, AVX-512 and FMA on this
// project's machine). A build for another instruction set, such as the portable -O1 sanitizer
// build, sums in another order, and W2's eigenvalues near the ε floor turn that into larger
// differences: measured there, 8.8e-5 in the first step's gradient and 3.6e-4 in step 100's
// L_clf. Such builds are held to 1e-3 and 5e-3 instead.
#ifdef HETDRO_NATIVE_BUILD
constexpr double kGradTolerance = 1e-6, kStep100Tolerance = 1e-4;
#else
constexpr double kGradTolerance = 1e-3, kStep100Tolerance = 5e-3;
#endif

struct Fixture {
  const char* file;
  bool step100;
};
class SameNumbers : public ::testing::TestWithParam<Fixture> {};

// The first step's terms and gradient, and step 100's terms, parameters and q, of a fresh run.
struct Reference {
  LossTerms step1, step100;
  std::vector<float> grad, params;
  std::vector<double> q;
};
Reference run_reference(const std::vector<std::string>& overrides, bool step100) {
  Reference r;
  SyntheticRun first(overrides);
  first.trainer->start_epoch(0);
  first.trainer->step();
  r.step1 = first.trainer->read_window().sums;
  r.grad = first.trainer->gradient();
  if (!step100) return r;
  SyntheticRun hundred(overrides);
  Trainer& t = *hundred.trainer;
  for (int epoch = 0, done = 0; done < 100; ++epoch) {
    t.start_epoch(epoch);
    for (int64_t s = 0; s < t.sampler().steps_per_epoch() && done < 100; ++s, ++done) {
      t.step();
      r.step100 = t.read_window().sums;
    }
  }
  r.params = t.state().params;
  r.q = t.state().q;
  return r;
}

TEST_P(SameNumbers, AsTheRecordedRun) {
  const SafetensorsFile ref =
      read_safetensors(std::string(HETDRO_SOURCE_DIR) + "/tests/data/" + GetParam().file);
  std::vector<std::string> overrides;
  std::istringstream words(ref.metadata.at("overrides"));
  for (std::string w; words >> w;) overrides.push_back(w);
  overrides.push_back("data.val_fraction=0");  // the pre-seam trainer trained on every sample
  auto number = [&](const std::string& key) { return std::stod(ref.metadata.at(key)); };

  const Reference r = run_reference(overrides, GetParam().step100);
  const LossTerms& t1 = r.step1;
  EXPECT_LE(relative(t1.total, number("step1.total")), 1e-6);
  EXPECT_LE(relative(t1.clf, number("step1.clf")), 1e-6);
  EXPECT_LE(relative(t1.fit, number("step1.fit")), 1e-6);
  EXPECT_LE(relative(t1.sep, number("step1.sep")), 1e-6);
  EXPECT_EQ(t1.fit_pairs, number("step1.fit_pairs"));
  EXPECT_EQ(t1.skipped_slots, number("step1.skipped_slots"));
  EXPECT_LE(testing::rel_error(r.grad, ref.find("step1.grad")->data), kGradTolerance);
  if (!GetParam().step100) return;

  const LossTerms& last = r.step100;
  EXPECT_LE(relative(last.total, number("step100.total")), kStep100Tolerance);
  EXPECT_LE(relative(last.clf, number("step100.clf")), kStep100Tolerance);
  EXPECT_LE(relative(last.fit, number("step100.fit")), kStep100Tolerance);
  EXPECT_LE(relative(last.sep, number("step100.sep")), kStep100Tolerance);
  const std::vector<float>& q_ref = ref.find("step100.q")->data;
  for (size_t g = 0; g < r.q.size(); ++g) EXPECT_NEAR(r.q[g], q_ref[g], kStep100Tolerance) << g;
}

// Rewrites the fixtures from this build (run it by name, with --gtest_also_run_disabled_tests,
// from a release build). HETDRO_FIXTURE_NOTE says what made them, e.g. the commit.
TEST(SameNumbers, DISABLED_WriteFixtures) {
  const char* note = std::getenv("HETDRO_FIXTURE_NOTE");
  for (const char* file : {"step_pooled_erm.safetensors", "step_per_group_groupdro.safetensors"}) {
    const std::string path = std::string(HETDRO_SOURCE_DIR) + "/tests/data/" + file;
    SafetensorsFile old = read_safetensors(path);
    std::vector<std::string> overrides;
    std::istringstream words(old.metadata.at("overrides"));
    for (std::string w; words >> w;) overrides.push_back(w);
    overrides.push_back("data.val_fraction=0");
    const Reference r = run_reference(overrides, true);
    std::map<std::string, std::string> meta = {
        {"made_by", note ? note : "SameNumbers.DISABLED_WriteFixtures"},
        {"overrides", old.metadata.at("overrides")}};
    for (const auto& [name, t] : {std::pair{"step1", r.step1}, std::pair{"step100", r.step100}}) {
      meta[std::string(name) + ".total"] = fmt::format("{:.17g}", t.total);
      meta[std::string(name) + ".clf"] = fmt::format("{:.17g}", t.clf);
      meta[std::string(name) + ".fit"] = fmt::format("{:.17g}", t.fit);
      meta[std::string(name) + ".sep"] = fmt::format("{:.17g}", t.sep);
      meta[std::string(name) + ".fit_pairs"] = fmt::format("{}", t.fit_pairs);
      meta[std::string(name) + ".skipped_slots"] = fmt::format("{}", t.skipped_slots);
    }
    const std::vector<float> q(r.q.begin(), r.q.end());
    write_safetensors(path,
                      {{"step1.grad", {int64_t(r.grad.size())}, r.grad},
                       {"step100.params", {int64_t(r.params.size())}, r.params},
                       {"step100.q", {int64_t(q.size())}, q}},
                      meta);
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, SameNumbers,
                         ::testing::Values(Fixture{"step_pooled_erm.safetensors", true},
                                           Fixture{"step_per_group_groupdro.safetensors", false}),
                         [](const ::testing::TestParamInfo<Fixture>& p) {
                           std::string n = p.param.file;
                           return n.substr(5, n.find('.') - 5);
                         });

}  // namespace
}  // namespace hetdro
