// Training and evaluation: the epoch loop, GroupDRO weights, Adam, per-epoch test evaluation,
// and the run folder (config.toml, metrics.jsonl, checkpoint.safetensors, report.json; DESIGN §4).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "hetdro/checkpoint.h"
#include "hetdro/config.h"
#include "hetdro/data.h"
#include "hetdro/loss.h"
#include "hetdro/model.h"

namespace hetdro {

struct GroupEval {
  std::string name;
  int64_t samples = 0;
  double accuracy = 0;
  std::vector<int64_t> confusion;  // [C,C], row = true class, column = predicted
};

struct Evaluation {
  std::vector<GroupEval> groups;
  double worst = 0, mean = 0;
};

class Trainer {
 public:
  // Builds the model for `groups`' feature shapes and initialises it from the config's seed.
  Trainer(Config config, std::vector<GroupData> groups);

  // Trains for config.train.epochs epochs, printing one line per epoch and writing the run
  // folder `out_dir` (created; it must not already hold a run unless `overwrite`).
  // max_steps > 0 stops early (for timing).
  void train(const std::string& out_dir, bool overwrite = false, int64_t max_steps = 0);

  // One optimisation step on the sampler's batch `step` of the current epoch.
  LossTerms step(int64_t step_in_epoch);

  // Test accuracy and confusion matrix of every group.
  Evaluation evaluate();
  // Predicted classes for features x of group g.
  std::vector<int32_t> predict(int g, const Array<float>& x);

  // The shape of one sample of group g, as its encoder takes it: {1,H,W} or {d}.
  std::vector<int64_t> sample_shape(int g) const;

  void load(const std::string& checkpoint_path);
  const Model& model() const { return model_; }
  TrainState& state() { return state_; }
  StratifiedSampler& sampler() { return sampler_; }

 private:
  void forward_logits(int g, const float* x, int n, std::vector<float>& logits);

  Config config_;
  std::vector<GroupData> groups_;
  Model model_;
  LossSettings settings_;
  StratifiedSampler sampler_;
  TrainState state_;
  std::vector<float> grads_;
  LossWorkspace<float> ws_;
  std::vector<std::vector<float>> batch_x_;
  Batch<float> batch_;
  EncoderActivations<float> eval_act_;
  ClassifierActivations<float> eval_cls_;
};

// Builds a model from a config and data shapes alone (for eval/predict from a checkpoint).
std::vector<std::vector<int64_t>> sample_shapes(const Config& config,
                                                const std::vector<GroupData>& groups);

}  // namespace hetdro
