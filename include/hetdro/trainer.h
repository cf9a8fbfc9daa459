// Training and evaluation on a backend chosen at run time (docs/DESIGN.md §6): parameters,
// gradients, Adam state, GroupDRO weights, the data and the step's workspace live in backend
// memory, planned once; the host reads the step's statistics only at its logging points.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "hetdro/backend.h"
#include "hetdro/checkpoint.h"
#include "hetdro/config.h"
#include "hetdro/data.h"
#include "hetdro/loss.h"
#include "hetdro/model.h"
#include "hetdro/predictor.h"
#include "hetdro/run_folder.h"

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

// The steps since the last read: their number and their loss terms, summed.
struct Window {
  int64_t steps = 0;
  LossTerms sums;
};

class Trainer {
 public:
  // Builds the model for `groups`' feature shapes, initialises it from the config's seed and
  // plans its backend memory. Without a backend it runs on the CPU.
  Trainer(Config config, std::vector<GroupData> groups,
          std::unique_ptr<Backend<float>> backend = nullptr);
  ~Trainer();

  // Trains for config.train.epochs epochs, printing one line per epoch and writing the run
  // folder `out_dir` (created; it must not already hold a run unless `overwrite`).
  // max_steps > 0 stops early (for timing).
  void train(const std::string& out_dir, bool overwrite = false, int64_t max_steps = 0);

  // Shuffles the sampler for `epoch` (0-based) and uploads its order.
  void start_epoch(int epoch);
  // Issues one optimisation step on batch `step_in_epoch` of the current epoch. Nothing waits
  // for it; a non-finite loss or gradient makes Adam skip and shows at the next read_window().
  void step(int64_t step_in_epoch);
  // Downloads and clears the statistics of the steps since the last read. Throws, naming the
  // step and the tensor, when a loss term or gradient became non-finite.
  Window read_window();

  // Test accuracy and confusion matrix of every group.
  Evaluation evaluate();
  // Predicted classes for features x of group g.
  std::vector<int32_t> predict(int g, const Array<float>& x);

  // A host copy of the parameters, Adam state, GroupDRO weights, step and epoch.
  TrainState state() const;
  // A host copy of the last step's gradient.
  std::vector<float> gradient() const { return grads_.download(); }
  void load(const std::string& checkpoint_path);
  const Model& model() const { return model_; }
  Backend<float>& backend() { return *backend_; }
  const StratifiedSampler& sampler() const { return sampler_; }

 private:
  void upload_training_data();
  void upload_test_data();
  void upload_state(const TrainState& state);
  void run_epoch(int epoch, int64_t budget, EpochRecord& record, std::vector<double>& step_ms);
  void warn_dead_latents(const Window& w, int epoch, int64_t step, std::vector<int64_t>& dead);

  Config config_;
  std::vector<GroupData> groups_;
  std::unique_ptr<Backend<float>> backend_;
  Model model_;
  LossSettings settings_;
  StratifiedSampler sampler_;
  Loss<float> loss_;
  Predictor predictor_;
  int64_t step_ = 0;          // optimisation steps taken
  int64_t window_steps_ = 0;  // steps since the last read_window()
  int epoch_ = 0;             // epochs completed
  // Backend memory: the training state, the step's status and the window of statistics.
  Buffer<float> params_, grads_, adam_m_, adam_v_;
  Buffer<double> q_, window_;
  Buffer<int64_t> status_;  // check_finite's {step, where}
  // Each group's data, uploaded once (training data when training starts, test data when first
  // evaluated), and the current epoch's order.
  std::vector<Buffer<float>> train_x_, test_x_;
  std::vector<Buffer<int32_t>> train_y_;
  std::vector<Buffer<int64_t>> order_;
};

// The encoders' input shapes of every group, from its data and the config.
std::vector<std::vector<int64_t>> sample_shapes(const Config& config,
                                                const std::vector<GroupData>& groups);

}  // namespace hetdro
