// A training run's outputs (docs/DESIGN.md §4): the run folder and its files, and the console lines
// that report the run. Kept apart from the training loop (host/trainer.cpp).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "hetdro/config.h"
#include "hetdro/data.h"
#include "hetdro/evaluation.h"
#include "hetdro/loss.h"
#include "hetdro/model.h"

namespace hetdro {

// What a folder holds, as train and prepare recognise it (docs/DESIGN.md §4, Run folder): any
// file of a run makes it a run folder; NPY files named <group>_<split>_<x|y>.npy make it
// prepared data. Neither command replaces the other's folder.
struct FolderContents {
  bool exists = false;
  std::vector<std::string> run_files;  // the run's files found (metrics.jsonl, ...)
  std::string data_file;               // one NPY file of prepared data, or empty
  bool config = false;                 // config.toml
};
// InputError when `dir` cannot be looked up or is not a folder.
FolderContents inspect_folder(const std::string& dir, const std::string& option);

// The folder `--out`: config.toml (resolved), metrics.jsonl, checkpoint.safetensors,
// report.json. Held under an exclusive lock (`.lock`, flock) while the run lasts, so two runs
// cannot write one folder.
class RunFolder {
 public:
  // A new run: refuses (InputError) a folder of prepared data, a folder that holds a run unless
  // `overwrite` (which then removes that run's files), a config.toml no run wrote and the input
  // config itself; then creates `dir` and writes an empty metrics.jsonl and config.toml.
  // resume: the folder must hold a run (config.toml and checkpoint.safetensors); nothing is
  // written until resume_at, after the checkpoint passed its checks.
  // Either way, temporary files left by processes that are gone are removed.
  RunFolder(const std::string& dir, bool overwrite, bool resume, const Config& config);
  ~RunFolder();
  RunFolder(const RunFolder&) = delete;
  RunFolder& operator=(const RunFolder&) = delete;

  // A resumed run, once its checkpoint loaded: keeps the metrics lines of epochs up to
  // `epoch` (a torn last line, from a full disk, is dropped with a warning) and writes the
  // config it runs with, for the next resume and for eval.
  void resume_at(int epoch, const Config& config);

  const std::string& dir() const { return dir_; }
  std::string checkpoint_path() const { return checkpoint_in(dir_); }
  std::string best_path() const { return best_in(dir_); }
  // The same files of a folder this process does not hold (the other ranks of a run).
  static std::string checkpoint_in(const std::string& dir) {
    return dir + "/checkpoint.safetensors";
  }
  static std::string best_in(const std::string& dir) { return dir + "/best.safetensors"; }
  // Adds one line; the file is rewritten whole through a temporary file, so it cannot tear.
  void append_metrics(const std::string& json_line);
  void write_report(const std::string& json);

 private:
  std::string dir_;
  std::string metrics_;  // metrics.jsonl's text
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
