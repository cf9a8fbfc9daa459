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
#include "hetdro/comm.h"
#include "hetdro/config.h"
#include "hetdro/data.h"
#include "hetdro/evaluation.h"
#include "hetdro/loss.h"
#include "hetdro/model.h"
#include "hetdro/predictor.h"
#include "hetdro/run_folder.h"

namespace hetdro {

// The steps since the last read: their number and their statistics (StepStats), summed.
struct Window {
  int64_t steps = 0;
  std::vector<double> stats;
  LossTerms sums;  // stats, decoded
};

// Trainer::time_steps's result.
struct StepTimes {
  std::vector<double> each;  // each step timed alone (the backend waits after each)
  double back_to_back = 0;   // the mean of as many steps timed together, none waiting
};

struct TrainOptions {
  bool overwrite = false;  // replace a run already in the folder
  bool resume = false;     // continue the run in the folder from its checkpoint
  int64_t max_steps = 0;   // > 0: stop after this many steps of this invocation (for timing)
};

// SIGINT or SIGTERM stopped training after a checkpoint; the CLI exits with 128 + signal.
struct Interrupted : std::runtime_error {
  Interrupted(int sig, const std::string& what) : std::runtime_error(what), signal(sig) {}
  int signal;
};

class Trainer {
 public:
  // Builds the model for `groups`' feature shapes, initialises it from the config's seed and
  // plans its backend memory. Without a backend it runs on the CPU. With collectives (one
  // process of a data-parallel run, docs/DESIGN.md §7) it trains on its shard of every global
  // batch and evaluates its share of every split; the losses, gradients and parameters are
  // those of the single-process run, and only the lead rank writes the run folder.
  Trainer(Config config, std::vector<GroupData> groups,
          std::unique_ptr<Backend<float>> backend = nullptr,
          std::unique_ptr<Collectives> collectives = nullptr);
  ~Trainer();

  // Trains until config.train.epochs epochs are complete, printing one line per epoch and
  // writing the run folder `out_dir` (docs/DESIGN.md §4): created for a new run (it must not
  // already hold one unless options.overwrite), or continued exactly where its checkpoint
  // stands (options.resume). Checkpoints after every epoch and every train.checkpoint_every
  // steps. SIGINT/SIGTERM finish the step, checkpoint and throw Interrupted. When training
  // fails, the folder keeps the last good checkpoint and report.json says why.
  void train(const std::string& out_dir, const TrainOptions& options = {});

  // Shuffles the sampler for `epoch` (0-based), uploads its order and sets the clock to its
  // batch `batch`.
  void start_epoch(int epoch, int64_t batch = 0);
  // Issues one optimisation step on the next batch of the current epoch. Nothing waits for it;
  // a non-finite loss or gradient makes Adam skip and shows at the next read_window(). Where the
  // backend can record ops (CUDA), the first step runs as issued and is then recorded as one
  // CUDA Graph, which every later step replays (docs/DESIGN.md §3); use_graph(false) keeps
  // issuing the ops one by one, and so does a backend in sync-check mode (Memory::sync_check),
  // which is told the step so that a failure names it.
  void step();
  void use_graph(bool on);
  // Why the steps are not replayed from a recording (empty while they are, or before the first).
  std::string why_no_graph() const;
  bool graph_active() const { return graph_ != nullptr; }
  // Step times in ms on the backend's own clock (CUDA events on a GPU), from the start of the
  // current epoch and on into the next ones (for `hetdro bench-step`): `count` steps timed one
  // by one after `warmup` untimed ones, then `count` more back to back. Throws as read_window()
  // does when a step became non-finite.
  StepTimes time_steps(int warmup, int count);
  // Downloads and clears the statistics of the steps since the last read. Throws, naming the
  // step and the tensor, when a loss term or gradient became non-finite.
  Window read_window();

  // Accuracy, majority-class baseline and confusion matrix of every group that has `split`.
  Evaluation evaluate(SplitKind split = SplitKind::test);
  // Predicted classes for features x of group g.
  std::vector<int32_t> predict(int g, const Array<float>& x);
  // The same with each class's probability [n, C].
  std::vector<int32_t> predict(int g, const Array<float>& x, std::vector<float>& probabilities);

  // Writes up to `per_group` test latents of every group with their labels, and the anchors'
  // means and covariances, to an NPZ (z.<group>, y.<group>, anchor_mean, anchor_cov).
  void save_latents(const std::string& path, int64_t per_group = 2000);

  // A host copy of the parameters, Adam state, GroupDRO weights, and where training stands.
  TrainState state() const;
  // A host copy of the last step's gradient.
  std::vector<float> gradient() const { return grads_.download(); }
  // to_resume: training goes on from it, so a checkpoint taken inside an epoch must also have
  // been taken with this config's batch size, seed and group order (the sampler's order).
  void load(const std::string& checkpoint_path, bool to_resume = false);
  const Model& model() const { return model_; }
  Backend<float>& backend() { return *backend_; }
  const StratifiedSampler& sampler() const { return sampler_; }

 private:
  void upload_training_data();
  void upload_eval_data();
  // folder: the run folder on the lead rank, nullptr on the others (they write nothing).
  void select_model(RunFolder* folder, int epoch, const Evaluation& val);
  void upload_state(const TrainState& state);
  void set_clock();
  void issue_step();
  bool run_epoch(int epoch, int64_t budget, RunFolder* folder, EpochRecord& record,
                 std::vector<double>& step_ms);
  void add_window(const Window& w, int epoch, int64_t step, ProgressBar& bar);
  void checkpoint(RunFolder* folder);
  bool lead() const { return !comm_ || comm_->rank() == 0; }
  // Whether any rank was asked to stop (SIGINT/SIGTERM), so all stop at the same step.
  bool stop_requested();
  std::string failure_hints() const;
  // "hetdro train --resume DIR", with "mpirun -np N" first when N ranks run.
  std::string resume_command(const std::string& dir) const;

  Config config_;
  std::vector<GroupData> groups_;
  std::unique_ptr<Backend<float>> backend_;
  std::unique_ptr<Collectives> comm_;  // nullptr: a single process
  Model model_;
  LossSettings settings_;
  StratifiedSampler sampler_;
  Loss<float> loss_;
  Predictor predictor_;
  int64_t step_ = 0;          // optimisation steps taken
  int64_t window_steps_ = 0;  // steps since the last read_window()
  int epoch_ = 0;             // epochs completed
  // The current epoch: steps taken, and the sums of the statistics read so far.
  int64_t step_in_epoch_ = 0;
  std::vector<double> epoch_sums_;
  // Backend memory: the training state, the step's status and the window of statistics.
  Buffer<float> params_, grads_, adam_m_, adam_v_;
  Buffer<double> q_, window_;
  Buffer<int64_t> status_;  // check_finite's {step, where}
  // The clock {step_, step_in_epoch_} in backend memory, which the step's ops read and its last
  // op advances, so that a recorded step replays on the current batch (docs/DESIGN.md §3).
  Buffer<int64_t> clock_;
  bool use_graph_ = true, graph_reported_ = false;
  std::string record_failed_;  // why the backend could not record the step, once it tried
  // Each group's data, uploaded once (training data when training starts, test data when first
  // evaluated), and the current epoch's order.
  std::vector<Buffer<float>> train_x_, test_x_, val_x_;
  // Model selection (train.select): the best validation score so far and its epoch.
  double best_score_ = -1;
  int best_epoch_ = 0;
  std::vector<Buffer<int32_t>> train_y_;
  std::vector<Buffer<int64_t>> order_;
  // The recorded step points into every buffer above (and into the recording thread's CUDA
  // context), so it is declared last, to be destroyed first; it is replayed on the thread that
  // recorded it.
  std::unique_ptr<Recording> graph_;
};

// The encoders' input shapes of every group, from its data and the config.
std::vector<std::vector<int64_t>> sample_shapes(const Config& config,
                                                const std::vector<GroupData>& groups);

}  // namespace hetdro
