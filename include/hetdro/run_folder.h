// A training run's outputs (docs/DESIGN.md §4): the run folder and its files, and the console lines
// that report the run. Kept apart from the training loop (host/trainer.cpp).
#pragma once

#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

#include "hetdro/config.h"
#include "hetdro/data.h"
#include "hetdro/loss.h"
#include "hetdro/model.h"

namespace hetdro {

struct Evaluation;

// The folder `--out`: config.toml (resolved), metrics.jsonl, checkpoint.safetensors,
// report.json.
class RunFolder {
 public:
  // Creates `dir` for a new run and writes its config.toml. Refuses (InputError) a folder that
  // holds a run unless `overwrite`, and one whose config.toml is the input config itself.
  RunFolder(const std::string& dir, bool overwrite, const Config& config);
  const std::string& dir() const { return dir_; }
  std::string checkpoint_path() const { return dir_ + "/checkpoint.safetensors"; }
  void append_metrics(const std::string& json_line);
  void write_report(const std::string& json);

 private:
  std::string dir_;
  std::ofstream metrics_;
};

// The lines that open a run: the model, each group's data and share of a batch, the schedule.
void print_header(const Config& config, const Model& model, const std::vector<GroupData>& groups,
                  const StratifiedSampler& sampler, const std::string& device);

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

std::string metrics_json(const EpochRecord& r, const Evaluation& eval);
void print_epoch(const EpochRecord& r, const Evaluation& eval);

// The final report.json and the per-group table that ends a run.
struct RunSummary {
  std::string config_path, device;
  int threads = 0, epochs = 0, classes = 0;
  int64_t steps = 0;
  double train_seconds = 0, step_ms_median = 0;
  std::vector<int64_t> train_sizes;
};
std::string report_json(const RunSummary& s, const Evaluation& eval);
void print_results(const RunSummary& s, const Evaluation& eval, const std::string& run_dir);

}  // namespace hetdro
