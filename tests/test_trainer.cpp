// The whole method: the loss gradient of every parameter tensor against finite differences in
// double, training on synthetic data, checkpoints, dead-latent detection.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "hetdro/backend.h"
#include "hetdro/check.h"
#include "hetdro/checkpoint.h"
#include "hetdro/io.h"
#include "hetdro/loss.h"
#include "hetdro/prepare.h"
#include "hetdro/trainer.h"
#include "testing.h"
#include "tiny_model.h"

namespace hetdro {
namespace {

namespace fs = std::filesystem;

// The tiny model (tests/tiny_model.h) with 2 classes, the classifier and the latent activation.
Config tiny_config(Fit fit, Objective objective, Classifier classifier,
                   LatentActivation activation) {
  Config c = testing::tiny_config(2, fit, objective);
  c.model.classifier = classifier;
  c.model.classifier_hidden = 4;
  c.model.latent_activation = activation;
  return c;
}

// The tiny model's loss on the CPU backend, with the batch every tiny-model test uses: 8 samples
// per group, classes alternating, so every (group, class) slot holds 4 samples.
template <typename T>
struct TinyLoss {
  Model model;
  LossSettings settings;
  std::unique_ptr<Backend<T>> backend = make_cpu_backend<T>();
  std::unique_ptr<Loss<T>> loss;
  Buffer<T> params, grads;
  Buffer<double> q;
  Buffer<int64_t> step;  // the clock's step: which anchor draws the loss takes

  TinyLoss(const Config& c, double groupdro_eta, std::vector<double> adjustment = {})
      : model(c, {{1, 6, 6}, {5}}), settings(LossSettings::from(c)) {
    settings.groupdro_eta = groupdro_eta;
    settings.adjustment = std::move(adjustment);
    settings.update_q = groupdro_eta > 0;
    loss = std::make_unique<Loss<T>>(model, settings, *backend, std::vector<int>{8, 8});
    params = Buffer<T>(*backend, model.size());
    grads = Buffer<T>(*backend, model.size());
    q = Buffer<double>(*backend, 2);
    step = Buffer<int64_t>(*backend, 1);
    step.upload(std::vector<int64_t>{11});
    std::vector<int32_t> y;
    for (int i = 0; i < 16; ++i) y.push_back(i % 2);
    backend->upload(loss->batch_x(0), testing::random_vector<T>(8 * 36, 1, T(0), T(1)).data(),
                    8 * 36 * sizeof(T));
    backend->upload(loss->batch_x(1), testing::random_vector<T>(8 * 5, 2).data(),
                    8 * 5 * sizeof(T));
    backend->upload(loss->batch_y(), y.data(), y.size() * sizeof(int32_t));
  }
  // The loss at p with GroupDRO weights q0; with `gradient`, also its gradient.
  LossTerms run(const std::vector<T>& p, const std::vector<double>& q0,
                std::vector<T>* gradient = nullptr) {
    params.upload(p);
    q.upload(q0);
    grads.zero();
    loss->run(params.data(), gradient ? grads.data() : nullptr, q.data(), step.data());
    if (gradient) *gradient = grads.download();
    return loss->read();
  }
};

struct GradCase {
  Fit fit;
  Objective objective;
  Classifier classifier;
  LatentActivation activation;
  GroupDroObjective groupdro = GroupDroObjective::weighted;
};
std::string case_name(const GradCase& c) {
  std::string n = std::string(name(c.fit)) + "_" + name(c.objective) + "_" + name(c.classifier) +
                  "_" + name(c.activation);
  if (c.objective == Objective::groupdro) n += std::string("_") + name(c.groupdro);
  return n;
}
void PrintTo(const GradCase& c, std::ostream* os) { *os << case_name(c); }

class WholeLoss : public ::testing::TestWithParam<GradCase> {};

TEST_P(WholeLoss, GradientOfEveryTensorMatchesCentralDifferences) {
  const GradCase& gc = GetParam();
  Config c = tiny_config(gc.fit, gc.objective, gc.classifier, gc.activation);
  c.train.groupdro_objective = gc.groupdro;
  c.train.groupdro_tau = 0.7;
  // q is a constant of the loss, not differentiated (docs/DESIGN.md §1): η = 0 keeps it fixed.
  TinyLoss<double> tiny(c, 0.0);
  const Model& model = tiny.model;
  // Every (group, class) slot has n = 4 > k, so each Ŝ is full rank and the loss is smooth.
  std::vector<double> params(model.size());
  model.init(params.data(), 5);
  // Move the anchors off their symmetric init so every gradient is generic.
  auto noise = testing::random_vector<double>(model.size(), 9, -0.2, 0.2);
  for (int64_t i = model.anchor_mean(); i < model.size(); ++i) params[i] += noise[i];
  if (gc.activation == LatentActivation::relu)  // keep pre-activations away from the kink at 0
    for (const ParamInfo& p : model.params())
      if (p.name == "encoders.img.fc.bias" || p.name == "encoders.vec.layers.1.bias")
        for (int64_t i = 0; i < p.size; ++i) params[p.offset + i] += 2.0;
  const std::vector<double> q = {0.3, 0.7};
  std::vector<double> grads;
  LossTerms terms = tiny.run(params, q, &grads);
  EXPECT_TRUE(std::isfinite(terms.total));
  if (gc.fit != Fit::none)
    EXPECT_GT(terms.fit, 0);
  else
    EXPECT_EQ(terms.fit, 0);
  EXPECT_GT(terms.sep, 0);
  EXPECT_EQ(terms.fit_pairs, gc.fit == Fit::none ? 0 : gc.fit == Fit::pooled ? 2 : 4);

  // Central differences (testing.h, numeric_gradient): the tiny model's sums have a few dozen
  // terms each, and with every Ŝ full rank and the anchors off their init, the eigenvalue gaps
  // the loss goes through stay ≫ h.
  auto loss = [&](const std::vector<double>& p) { return tiny.run(p, q).total; };
  std::vector<double> numeric = testing::numeric_gradient(loss, params, 1e-6);
  for (const ParamInfo& p : model.params()) {
    std::vector<double> a(grads.begin() + p.offset, grads.begin() + p.offset + p.size);
    std::vector<double> b(numeric.begin() + p.offset, numeric.begin() + p.offset + p.size);
    EXPECT_LE(testing::rel_error(a, b), 1e-6) << p.name;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Options, WholeLoss,
    ::testing::Values(
        GradCase{Fit::pooled, Objective::erm, Classifier::linear, LatentActivation::none},
        GradCase{Fit::per_group, Objective::erm, Classifier::linear, LatentActivation::none},
        GradCase{Fit::pooled, Objective::groupdro, Classifier::linear, LatentActivation::none},
        GradCase{Fit::per_group, Objective::groupdro, Classifier::linear, LatentActivation::none},
        GradCase{Fit::none, Objective::erm, Classifier::linear, LatentActivation::none},
        GradCase{Fit::pooled, Objective::erm, Classifier::mlp2, LatentActivation::relu},
        // The GroupDRO family: L_clf = max_g ℓ_g (its subgradient, away from ties) and
        // τ log Σ exp(ℓ_g/τ), both of live losses.
        GradCase{Fit::pooled, Objective::groupdro, Classifier::linear, LatentActivation::none,
                 GroupDroObjective::max},
        GradCase{Fit::per_group, Objective::groupdro, Classifier::mlp2, LatentActivation::none,
                 GroupDroObjective::logsumexp}),
    [](const ::testing::TestParamInfo<GradCase>& p) { return case_name(p.param); });

TEST(GroupDro, WeightsMoveTowardTheWorseGroup) {
  Config c =
      tiny_config(Fit::none, Objective::groupdro, Classifier::linear, LatentActivation::none);
  TinyLoss<double> tiny(c, 0.5);
  std::vector<double> params(tiny.model.size()), grads;
  tiny.model.init(params.data(), 5);
  LossTerms t = tiny.run(params, {0.5, 0.5}, &grads);
  std::vector<double> q(2);  // the loss's updated weights, which the trainer commits
  tiny.backend->download(q.data(), tiny.loss->next_q(), 2 * sizeof(double));
  // q_g ∝ 0.5·exp(η ℓ_g), and L_clf = Σ q_g ℓ_g with the new q.
  // The loss's shifted exp update against this unshifted formula, on the same ℓ: two chains of
  // fewer than 20 roundings (testing.h, chain_tolerance).
  const double a = 0.5 * std::exp(0.5 * t.group_loss[0]), b = 0.5 * std::exp(0.5 * t.group_loss[1]);
  EXPECT_NEAR(q[0], a / (a + b), testing::chain_tolerance(20, a / (a + b)));
  EXPECT_NEAR(q[1], b / (a + b), testing::chain_tolerance(20, b / (a + b)));
  const double clf = q[0] * t.group_loss[0] + q[1] * t.group_loss[1];
  EXPECT_NEAR(t.clf, clf, testing::chain_tolerance(20, clf));
  EXPECT_EQ(q[0] > q[1], t.group_loss[0] > t.group_loss[1]);
}

// The generalization adjustment C/√N_g enters q's update (Sagawa et al.), computed from each
// group's training-set size by LossSettings::from.
TEST(GroupDro, TheAdjustmentAddsCOverRootNToEachGroupsLossInTheUpdate) {
  Config c =
      tiny_config(Fit::none, Objective::groupdro, Classifier::linear, LatentActivation::none);
  c.train.groupdro_adjustment = 2.0;
  const LossSettings from = LossSettings::from(c, {100, 25});
  ASSERT_EQ(from.adjustment, (std::vector<double>{0.2, 0.4}));
  TinyLoss<double> tiny(c, 0.5, from.adjustment);
  std::vector<double> params(tiny.model.size()), grads;
  tiny.model.init(params.data(), 5);
  LossTerms t = tiny.run(params, {0.5, 0.5}, &grads);
  std::vector<double> q(2);
  tiny.backend->download(q.data(), tiny.loss->next_q(), 2 * sizeof(double));
  const double a = std::exp(0.5 * (t.group_loss[0] + 0.2)),
               b = std::exp(0.5 * (t.group_loss[1] + 0.4));
  EXPECT_NEAR(q[0], a / (a + b), testing::chain_tolerance(20, a / (a + b)));
  EXPECT_NEAR(q[1], b / (a + b), testing::chain_tolerance(20, b / (a + b)));
}

TEST(DeadLatents, AGroupWhoseReluLatentIsAllZeroIsReported) {
  Config c = tiny_config(Fit::pooled, Objective::erm, Classifier::linear, LatentActivation::relu);
  TinyLoss<float> tiny(c, 0.0);
  std::vector<float> params(tiny.model.size()), grads;
  tiny.model.init(params.data(), 5);
  for (const ParamInfo& p : tiny.model.params())
    if (p.name == "encoders.img.fc.bias")
      for (int64_t i = 0; i < p.size; ++i) params[p.offset + i] = -100.0f;
  LossTerms t = tiny.run(params, {0.5, 0.5}, &grads);
  EXPECT_EQ(t.dead, (std::vector<double>{1, 0}));
  for (float g : grads) EXPECT_TRUE(std::isfinite(g));
  // The dead encoder gets no gradient through its latent; its Ŝ is exactly εI: still finite.
  EXPECT_TRUE(std::isfinite(t.fit));
}

TEST(Checkpoint, NamesAndShapesFollowTheContractAndRoundTrip) {
  Config c = tiny_config(Fit::pooled, Objective::erm, Classifier::mlp2, LatentActivation::none);
  Model model(c, {{1, 6, 6}, {5}});
  std::map<std::string, std::vector<int64_t>> expected = {
      {"encoders.img.conv1.weight", {2, 1, 2, 2}},
      {"encoders.img.conv1.bias", {2}},
      {"encoders.img.conv2.weight", {3, 2, 2, 2}},
      {"encoders.img.conv2.bias", {3}},
      {"encoders.img.fc.weight", {3, 3 * 2 * 2}},
      {"encoders.img.fc.bias", {3}},
      {"encoders.vec.layers.0.weight", {4, 5}},
      {"encoders.vec.layers.0.bias", {4}},
      {"encoders.vec.layers.1.weight", {3, 4}},
      {"encoders.vec.layers.1.bias", {3}},
      {"classifier.layers.0.weight", {4, 3}},
      {"classifier.layers.0.bias", {4}},
      {"classifier.layers.1.weight", {2, 4}},
      {"classifier.layers.1.bias", {2}},
      {"anchors.mean", {2, 3}},
      {"anchors.chol", {2, 3, 3}}};
  ASSERT_EQ(model.params().size(), expected.size());
  for (const ParamInfo& p : model.params()) EXPECT_EQ(expected.at(p.name), p.shape) << p.name;

  TrainState state;
  state.params = testing::random_vector<float>(model.size(), 3);
  state.adam_m = testing::random_vector<float>(model.size(), 4);
  state.adam_v = testing::random_vector<float>(model.size(), 5, 0.0f, 1.0f);
  state.q = {0.25, 0.75};
  state.step = 1234;
  state.epoch = 3;
  const std::string path = (fs::path(::testing::TempDir()) / "hetdro_ckpt.safetensors").string();
  save_checkpoint(path, model, state);
  SafetensorsFile file = read_safetensors(path);
  ASSERT_NE(file.find("optim.exp_avg.anchors.chol"), nullptr);
  ASSERT_NE(file.find("groupdro.q"), nullptr);
  EXPECT_EQ(file.metadata.at("step"), "1234");
  TrainState back = load_checkpoint(path, model, {"img", "vec"});
  EXPECT_EQ(back.params, state.params);
  EXPECT_EQ(back.adam_m, state.adam_m);
  EXPECT_EQ(back.adam_v, state.adam_v);
  EXPECT_EQ(back.q, state.q);
  EXPECT_EQ(back.step, 1234);
  EXPECT_EQ(back.epoch, 3);
  // Metadata that is not a number is bad input, named, not a crash.
  write_safetensors(path, file.tensors, {{"step", "abc"}});
  try {
    load_checkpoint(path, model, {"img", "vec"});
    FAIL() << "a non-numeric step was accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("\"abc\""), std::string::npos) << e.what();
  }
  // A model of another shape is refused, naming the tensor.
  save_checkpoint(path, model, state);
  Config other = c;
  other.model.latent_dim = 4;
  Model bigger(other, {{1, 6, 6}, {5}});
  try {
    load_checkpoint(path, bigger, {"img", "vec"});
    FAIL() << "a checkpoint of another shape was accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("encoders.img.fc.weight"), std::string::npos) << e.what();
  }
}

// The bar: synthetic data to ≥ 95% test accuracy in every group within 60 s on 2 cores.
TEST(Train, SyntheticReaches95PercentInEveryGroupWithin60Seconds) {
  const fs::path dir = fs::path(::testing::TempDir()) / "hetdro_train_synthetic";
  fs::remove_all(dir);
  prepare_synthetic((dir / "data").string());
  Config c = load_config((dir / "data" / "config.toml").string());
  const auto start = std::chrono::steady_clock::now();
  Trainer trainer(c, load_groups(c));
  trainer.train((dir / "run").string());
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_LT(seconds, 60.0);
  nlohmann::json report = nlohmann::json::parse(std::ifstream(dir / "run" / "report.json"));
  for (auto& [name, acc] : report["test_acc"].items()) EXPECT_GE(acc.get<double>(), 0.95) << name;
  // One metrics line per epoch with the contract's keys.
  std::ifstream metrics(dir / "run" / "metrics.jsonl");
  int lines = 0;
  for (std::string line; std::getline(metrics, line); ++lines) {
    auto m = nlohmann::json::parse(line);
    for (auto key :
         {"epoch", "step", "loss", "loss_clf", "loss_fit", "loss_sep", "test_acc",
          "worst_group_acc", "mean_group_acc", "group_weights", "step_ms", "samples_per_s"})
      EXPECT_TRUE(m.contains(key)) << key;
  }
  EXPECT_EQ(lines, c.train.epochs);
  // Evaluating the saved checkpoint gives the same accuracies.
  Trainer again(c, load_groups(c));
  again.load((dir / "run" / "checkpoint.safetensors").string());
  Evaluation e = again.evaluate();
  for (auto& g : e.groups) EXPECT_DOUBLE_EQ(g.accuracy, report["test_acc"][g.name].get<double>());
}

}  // namespace
}  // namespace hetdro
