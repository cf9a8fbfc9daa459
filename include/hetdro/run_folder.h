// A training run's outputs (docs/DESIGN.md §4): the run folder and its files, and the console lines
// that report the run. Kept apart from the training loop (host/trainer.cpp).
#pragma once

#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

#include "hetdro/config.h"
#include "hetdro/data.h"
#include "hetdro/evaluation.h"
#include "hetdro/loss.h"
#include "hetdro/model.h"

namespace hetdro {

// The folder `--out`: config.toml (resolved), metrics.jsonl, checkpoint.safetensors,
// report.json. Held under an exclusive lock (`.lock`, flock) while the run lasts, so two runs
// cannot write one folder.
class RunFolder {
 public:
  // A new run: creates `dir` and writes its config.toml. Refuses (InputError) a folder that
  // holds a run unless `overwrite`, which first removes that run's files; and a folder whose
  // config.toml is the input config itself.
  // resume: the folder must hold a run (config.toml and checkpoint.safetensors); metrics.jsonl
  // is kept and appended to, and config.toml rewritten with the config given.
  RunFolder(const std::string& dir, bool overwrite, bool resume, const Config& config);
  ~RunFolder();
  RunFolder(const RunFolder&) = delete;
  RunFolder& operator=(const RunFolder&) = delete;

  const std::string& dir() const { return dir_; }
  std::string checkpoint_path() const { return checkpoint_in(dir_); }
  std::string best_path() const { return best_in(dir_); }
  // The same files of a folder this process does not hold (the other ranks of a run).
  static std::string checkpoint_in(const std::string& dir) {
    return dir + "/checkpoint.safetensors";
  }
  static std::string best_in(const std::string& dir) { return dir + "/best.safetensors"; }
  void append_metrics(const std::string& json_line);
  // Drops the metrics lines of epochs after `epoch` (what a resumed run will write again).
  void keep_metrics_through(int epoch);
  void write_report(const std::string& json);

 private:
  std::string dir_;
  std::ofstream metrics_;
  int lock_fd_ = -1;
};

// The lines that open a run: the model, each group's data and share of a batch, the schedule.
void print_header(const Config& config, const Model& model, const std::vector<GroupData>& groups,
                  const StratifiedSampler& sampler, const std::string& device);

// A live progress line on a terminal (step, steps/s, loss, ETA, a bar), redrawn in place at
// most ten times a second; inactive when stdout is not a terminal, where the trainer prints
// plain progress lines instead.
class ProgressBar {
 public:
  ProgressBar();
  bool active() const { return active_; }
  void update(int epoch, int epochs, int64_t step, int64_t steps, double steps_per_s, double loss,
              double eta_seconds);
  void clear();  // erases the line before other output

 private:
  bool active_ = false, drawn_ = false;
  double last_ = -1;
};

// One epoch's summary: what metrics.jsonl and the console line report.
struct EpochRecord {
  int epoch = 0, epochs = 0;
  int64_t step = 0;                       // optimisation steps so far
  int64_t done = 0, steps_per_epoch = 0;  // done < steps_per_epoch: cut short by --max-steps
  LossTerms mean;                         // per-step means over the epoch
  double skipped_slots = 0;               // summed over the epoch
  std::vector<double> dead_steps;         // per group; reported with the relu latent only
  bool relu_latent = false;
  double step_ms = 0, samples_per_s = 0;
  std::vector<std::string> group_names;
  std::vector<double> q;
};

// val: the validation split's evaluation, or nullptr when no group has one.
std::string metrics_json(const EpochRecord& r, const Evaluation& test, const Evaluation* val);
void print_epoch(const EpochRecord& r, const Evaluation& test, const Evaluation* val);

// `hetdro eval`: per group the accuracy and each class's recall; the worst and mean group accuracy;
// the confusion matrices only when asked.
void print_evaluation(const Evaluation& eval, int classes, bool confusion);
// The same as JSON: per group accuracy, samples, recall [C], confusion [C][C]; worst, mean.
std::string evaluation_json(const Evaluation& eval, int classes);

// The final report.json and the per-group table that ends a run.
struct RunSummary {
  std::string config_path, device;
  int threads = 0, epochs = 0, classes = 0;
  int64_t steps = 0;
  double train_seconds = 0, step_ms_median = 0;
  std::vector<int64_t> train_sizes;
  // train.select: the rule, the epoch it chose, its validation score and its test evaluation
  // (selected_epoch 0: no selection).
  std::string select;
  int selected_epoch = 0;
  double selected_score = 0;
  Evaluation selected;
};
std::string report_json(const RunSummary& s, const Evaluation& eval);
// report.json of a run that stopped on an error: status "failed", the error, and where it stood.
std::string failure_json(const std::string& error, int64_t step, int epoch);
void print_results(const RunSummary& s, const Evaluation& eval, const std::string& run_dir);

}  // namespace hetdro
