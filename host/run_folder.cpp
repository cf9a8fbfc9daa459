// The run folder's files and the run's console lines (docs/DESIGN.md §4).
#include "hetdro/run_folder.h"

#include <fmt/format.h>
#include <omp.h>  // omp_get_max_threads

#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "hetdro/check.h"
#include "hetdro/io.h"       // write_text_file
#include "hetdro/trainer.h"  // Evaluation

namespace hetdro {

namespace fs = std::filesystem;

RunFolder::RunFolder(const std::string& dir, bool overwrite, const Config& config) : dir_(dir) {
  if (dir_.empty())
    input_error(
        "--out is empty: expected the name of a folder for the run (config.toml, "
        "metrics.jsonl, checkpoint.safetensors, report.json)");
  const std::string metrics_path = dir_ + "/metrics.jsonl";
  if (fs::exists(metrics_path) && !overwrite)
    input_error(
        "{}: this folder already holds a run (metrics.jsonl); choose another --out or "
        "pass --overwrite",
        dir_);
  std::error_code ec;
  if (!config.path.empty() && fs::equivalent(dir_ + "/config.toml", config.path, ec))
    input_error(
        "{}: --out holds the input config {}; writing the run there would replace it. "
        "Choose another --out",
        dir_, config.path);
  fs::create_directories(dir_, ec);
  if (ec) input_error("{}: cannot create the run folder: {}", dir_, ec.message());
  write_text_file(dir_ + "/config.toml", to_toml(config));
  metrics_.open(metrics_path, std::ios::trunc);
  if (!metrics_) input_error("{}: cannot write", metrics_path);
}

void RunFolder::append_metrics(const std::string& json_line) {
  metrics_ << json_line << "\n" << std::flush;
  if (!metrics_) throw std::runtime_error(fmt::format("{}/metrics.jsonl: write failed", dir_));
}

void RunFolder::write_report(const std::string& json) {
  write_text_file(dir_ + "/report.json", json);
}

void print_header(const Config& config, const Model& model, const std::vector<GroupData>& groups,
                  const StratifiedSampler& sampler, const std::string& device) {
  const TrainConfig& t = config.train;
  fmt::print("model: {} parameters; latent {}; classifier {}; fit {}; objective {}\n", model.size(),
             model.latent_dim(), name(config.model.classifier), name(t.fit), name(t.objective));
  for (size_t g = 0; g < groups.size(); ++g)
    fmt::print("  group {:<10} encoder {:<4} train {:>6}  test {:>6}  per batch {:>3}\n",
               groups[g].name, name(config.groups[g].encoder), groups[g].train.size(),
               groups[g].test.size(), sampler.per_batch()[g]);
  fmt::print("{} epochs x {} steps of batch {} on {}\n", t.epochs, sampler.steps_per_epoch(),
             t.batch_size,
             device == "cpu" ? fmt::format("{} CPU thread(s)", omp_get_max_threads()) : device);
  std::fflush(stdout);
}

std::string metrics_json(const EpochRecord& r, const Evaluation& eval) {
  nlohmann::json m;
  m["epoch"] = r.epoch;
  m["step"] = r.step;
  if (r.done < r.steps_per_epoch) m["partial_epoch_steps"] = r.done;
  m["loss"] = r.mean.total;
  m["loss_clf"] = r.mean.clf;
  m["loss_fit"] = r.mean.fit;
  m["loss_sep"] = r.mean.sep;
  for (auto& g : eval.groups) m["test_acc"][g.name] = g.accuracy;
  m["worst_group_acc"] = eval.worst;
  m["mean_group_acc"] = eval.mean;
  for (size_t g = 0; g < r.group_names.size(); ++g) m["group_weights"][r.group_names[g]] = r.q[g];
  m["step_ms"] = r.step_ms;
  m["samples_per_s"] = r.samples_per_s;
  m["fit_skipped"] = int64_t(r.skipped_slots);
  if (r.relu_latent)
    for (size_t g = 0; g < r.group_names.size(); ++g)
      m["dead_latent_steps"][r.group_names[g]] = int64_t(r.dead_steps[g]);
  return m.dump();
}

void print_epoch(const EpochRecord& r, const Evaluation& eval) {
  std::string accs, weights;
  for (auto& g : eval.groups) accs += fmt::format("{} {:.4f}  ", g.name, g.accuracy);
  for (size_t g = 0; g < r.q.size(); ++g) weights += fmt::format("{}{:.3f}", g ? " " : "", r.q[g]);
  const bool complete = r.done == r.steps_per_epoch;
  fmt::print(
      "epoch {}/{}{}  loss {:.4f} (clf {:.4f} fit {:.3f} sep {:.4f})  test {}| worst {:.4f} "
      "mean {:.4f}  q [{}]  {:.1f} ms/step  {:.0f} samples/s{}\n",
      r.epoch, r.epochs,
      complete ? "" : fmt::format(" ({} of {} steps)", r.done, r.steps_per_epoch), r.mean.total,
      r.mean.clf, r.mean.fit, r.mean.sep, accs, eval.worst, eval.mean, weights, r.step_ms,
      r.samples_per_s,
      r.skipped_slots > 0
          ? fmt::format("  (fit skipped {} class-batches with n < 2)", int64_t(r.skipped_slots))
          : "");
  std::fflush(stdout);
}

std::string report_json(const RunSummary& s, const Evaluation& eval) {
  nlohmann::json report;
  report["config"] = s.config_path;
  report["device"] = s.device;
  report["threads"] = s.threads;
  report["epochs"] = s.epochs;
  report["steps"] = s.steps;
  report["train_seconds"] = s.train_seconds;
  report["step_ms_median"] = s.step_ms_median;
  const int C = s.classes;
  for (auto& g : eval.groups) {
    report["test_acc"][g.name] = g.accuracy;
    report["test_samples"][g.name] = g.samples;
    nlohmann::json rows = nlohmann::json::array();
    for (int i = 0; i < C; ++i)
      rows.push_back(
          std::vector<int64_t>(g.confusion.begin() + i * C, g.confusion.begin() + (i + 1) * C));
    report["confusion"][g.name] = rows;
  }
  report["worst_group_acc"] = eval.worst;
  report["mean_group_acc"] = eval.mean;
  return report.dump(2) + "\n";
}

void print_results(const RunSummary& s, const Evaluation& eval, const std::string& run_dir) {
  fmt::print("\n{:<12} {:>8} {:>8} {:>10}\n", "group", "train", "test", "accuracy");
  for (size_t g = 0; g < eval.groups.size(); ++g)
    fmt::print("{:<12} {:>8} {:>8} {:>10.4f}\n", eval.groups[g].name, s.train_sizes[g],
               eval.groups[g].samples, eval.groups[g].accuracy);
  fmt::print("{:<12} {:>8} {:>8} {:>10.4f}\n{:<12} {:>8} {:>8} {:>10.4f}\n", "worst", "", "",
             eval.worst, "mean", "", "", eval.mean);
  fmt::print("run folder: {}\n", run_dir);
}

}  // namespace hetdro
