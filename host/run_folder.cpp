// The run folder's files and the run's console lines (docs/DESIGN.md §4).
#include "hetdro/run_folder.h"

#include <fcntl.h>  // open
#include <fmt/format.h>
#include <omp.h>       // omp_get_max_threads
#include <sys/file.h>  // flock
#include <unistd.h>    // close

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>  // strerror
#include <filesystem>
#include <nlohmann/json.hpp>

#include "hetdro/check.h"
#include "hetdro/io.h"       // write_text_file
#include "hetdro/trainer.h"  // Evaluation

namespace hetdro {

namespace fs = std::filesystem;

namespace {

// The files a run writes; --overwrite removes them first, so nothing of the old run survives
// next to the new one.
constexpr const char* kRunFiles[] = {"metrics.jsonl", "checkpoint.safetensors", "report.json",
                                     "latents.npz", "best.safetensors"};

}  // namespace

RunFolder::RunFolder(const std::string& dir, bool overwrite, bool resume, const Config& config)
    : dir_(dir) {
  if (dir_.empty())
    input_error(
        "--out is empty: expected the name of a folder for the run (config.toml, "
        "metrics.jsonl, checkpoint.safetensors, report.json)");
  const std::string metrics_path = dir_ + "/metrics.jsonl";
  if (resume) {
    for (const char* f : {"config.toml", "checkpoint.safetensors"})
      if (!fs::exists(dir_ + "/" + f))
        input_error("{}: cannot resume: the folder holds no {} (is it a hetdro run folder?)", dir_,
                    f);
  } else {
    if (fs::exists(metrics_path) && !overwrite)
      input_error(
          "{}: this folder already holds a run (metrics.jsonl); choose another --out, pass "
          "--overwrite, or continue it with --resume",
          dir_);
    std::error_code ec;
    if (!config.path.empty() && fs::equivalent(dir_ + "/config.toml", config.path, ec))
      input_error(
          "{}: --out holds the input config {}; writing the run there would replace it. "
          "Choose another --out",
          dir_, config.path);
    fs::create_directories(dir_, ec);
    if (ec) input_error("{}: cannot create the run folder: {}", dir_, ec.message());
  }
  lock_fd_ = ::open((dir_ + "/.lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (lock_fd_ < 0) input_error("{}: cannot create .lock: {}", dir_, std::strerror(errno));
  if (::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    ::close(lock_fd_);
    lock_fd_ = -1;
    input_error(
        "{}: another hetdro run is writing this folder (it holds .lock); wait for it or "
        "choose another --out",
        dir_);
  }
  if (!resume && overwrite)
    for (const char* f : kRunFiles) fs::remove(dir_ + "/" + f);
  // A resumed run takes the config given now (its --set may extend train.epochs, say), and its
  // config.toml says so, for the next resume and for eval.
  write_text_file(dir_ + "/config.toml", to_toml(config));
  metrics_.open(metrics_path, resume ? std::ios::app : std::ios::trunc);
  if (!metrics_) input_error("{}: cannot write", metrics_path);
}

RunFolder::~RunFolder() {
  if (lock_fd_ >= 0) ::close(lock_fd_);  // releases the flock
}

void RunFolder::append_metrics(const std::string& json_line) {
  metrics_ << json_line << "\n" << std::flush;
  if (!metrics_) throw std::runtime_error(fmt::format("{}/metrics.jsonl: write failed", dir_));
}

void RunFolder::keep_metrics_through(int epoch) {
  const std::string path = dir_ + "/metrics.jsonl";
  std::ifstream in(path);
  std::string kept;
  for (std::string line; std::getline(in, line);) {
    if (line.empty()) continue;
    const auto m = nlohmann::json::parse(line, nullptr, false);
    if (m.is_discarded() || !m.contains("epoch") || !m["epoch"].is_number_integer())
      input_error("{}: a line is not a metrics record: \"{}\"", path, line.substr(0, 60));
    if (m["epoch"].get<int64_t>() <= epoch && !m.contains("partial_epoch_steps"))
      kept += line + "\n";
  }
  in.close();
  metrics_.close();
  write_text_file(path, kept);
  metrics_.open(path, std::ios::app);
  if (!metrics_) input_error("{}: cannot write", path);
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
    fmt::print("  group {:<10} encoder {:<4} train {:>6}  test {:>6}  per batch {:>3}  val: {}\n",
               groups[g].name, name(config.groups[g].encoder), groups[g].train.size(),
               groups[g].test.size(), sampler.per_batch()[g], groups[g].val_note);
  fmt::print("{} epochs x {} steps of batch {} on {}\n", t.epochs, sampler.steps_per_epoch(),
             t.batch_size,
             device == "cpu" ? fmt::format("{} CPU thread(s)", omp_get_max_threads()) : device);
  std::fflush(stdout);
}

ProgressBar::ProgressBar() : active_(::isatty(STDOUT_FILENO) == 1) {}

void ProgressBar::update(int epoch, int epochs, int64_t step, int64_t steps, double steps_per_s,
                         double loss, double eta_seconds) {
  if (!active_) return;
  const double now =
      std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
  if (step < steps && now - last_ < 0.1) return;
  last_ = now;
  constexpr int kWidth = 24;
  const int filled = int(kWidth * step / std::max<int64_t>(steps, 1));
  const int64_t eta = std::isfinite(eta_seconds) ? int64_t(eta_seconds + 0.5) : 0;
  fmt::print(
      "\r  epoch {}/{} [{}{}] step {}/{}  {:.1f} steps/s  loss {:.4f}  ETA {}:{:02d}:{:02d}\x1b[K",
      epoch, epochs, std::string(size_t(filled), '#'), std::string(size_t(kWidth - filled), '.'),
      step, steps, steps_per_s, loss, eta / 3600, eta / 60 % 60, eta % 60);
  std::fflush(stdout);
  drawn_ = true;
}

void ProgressBar::clear() {
  if (!drawn_) return;
  fmt::print("\r\x1b[K");
  std::fflush(stdout);
  drawn_ = false;
}

std::string metrics_json(const EpochRecord& r, const Evaluation& test, const Evaluation* val) {
  nlohmann::json m;
  m["epoch"] = r.epoch;
  m["step"] = r.step;
  if (r.done < r.steps_per_epoch) m["partial_epoch_steps"] = r.done;
  m["loss"] = r.mean.total;
  m["loss_clf"] = r.mean.clf;
  m["loss_fit"] = r.mean.fit;
  m["loss_sep"] = r.mean.sep;
  for (auto& g : test.groups) m["test_acc"][g.name] = g.accuracy;
  m["worst_group_acc"] = test.worst;
  m["mean_group_acc"] = test.mean;
  if (val) {
    for (auto& g : val->groups) m["val_acc"][g.name] = g.accuracy;
    m["worst_val_acc"] = val->worst;
    m["mean_val_acc"] = val->mean;
  }
  for (size_t g = 0; g < r.group_names.size(); ++g) m["group_weights"][r.group_names[g]] = r.q[g];
  m["step_ms"] = r.step_ms;
  m["samples_per_s"] = r.samples_per_s;
  m["fit_skipped"] = int64_t(r.skipped_slots);
  if (r.relu_latent)
    for (size_t g = 0; g < r.group_names.size(); ++g)
      m["dead_latent_steps"][r.group_names[g]] = int64_t(r.dead_steps[g]);
  return m.dump();
}

void print_epoch(const EpochRecord& r, const Evaluation& test, const Evaluation* val) {
  std::string accs, weights;
  for (auto& g : test.groups) accs += fmt::format("{} {:.4f}  ", g.name, g.accuracy);
  for (size_t g = 0; g < r.q.size(); ++g) weights += fmt::format("{}{:.3f}", g ? " " : "", r.q[g]);
  const bool complete = r.done == r.steps_per_epoch;
  fmt::print(
      "epoch {}/{}{}  loss {:.4f} (clf {:.4f} fit {:.3f} sep {:.4f})  test {}| worst {:.4f} "
      "mean {:.4f}{}  q [{}]  {:.1f} ms/step  {:.0f} samples/s{}\n",
      r.epoch, r.epochs,
      complete ? "" : fmt::format(" ({} of {} steps)", r.done, r.steps_per_epoch), r.mean.total,
      r.mean.clf, r.mean.fit, r.mean.sep, accs, test.worst, test.mean,
      val ? fmt::format("  val worst {:.4f} mean {:.4f}", val->worst, val->mean) : "", weights,
      r.step_ms, r.samples_per_s,
      r.skipped_slots > 0
          ? fmt::format("  (fit skipped {} class-batches with n < 2)", int64_t(r.skipped_slots))
          : "");
  std::fflush(stdout);
}

namespace {

// recall[c] = confusion[c][c] / Σ_j confusion[c][j]: the share of class c's samples found.
std::vector<double> recall(const GroupEval& g, int classes) {
  std::vector<double> r(classes, 0.0);
  for (int c = 0; c < classes; ++c) {
    int64_t total = 0;
    for (int j = 0; j < classes; ++j) total += g.confusion[size_t(c) * classes + j];
    r[c] = total > 0 ? double(g.confusion[size_t(c) * classes + c]) / double(total) : 0.0;
  }
  return r;
}

nlohmann::json confusion_rows(const GroupEval& g, int classes) {
  nlohmann::json rows = nlohmann::json::array();
  for (int i = 0; i < classes; ++i)
    rows.push_back(std::vector<int64_t>(g.confusion.begin() + i * classes,
                                        g.confusion.begin() + (i + 1) * classes));
  return rows;
}

}  // namespace

namespace {

// "  <= majority" beside a group that does no better than always guessing its commonest class.
std::string majority_mark(const GroupEval& g) {
  return g.accuracy <= g.majority ? "  <= majority" : "";
}

}  // namespace

void print_evaluation(const Evaluation& eval, int classes, bool confusion) {
  fmt::print("{:<12} {:>8} {:>9} {:>9}  recall by class\n{:<41}", "group", "samples", "accuracy",
             "majority", "");
  for (int c = 0; c < classes; ++c) fmt::print(" {:>5}", c);
  fmt::print("\n");
  for (const GroupEval& g : eval.groups) {
    fmt::print("{:<12} {:>8} {:>9.4f} {:>9.4f}  ", g.name, g.samples, g.accuracy, g.majority);
    for (double r : recall(g, classes)) fmt::print(" {:>5.3f}", r);
    fmt::print("{}\n", majority_mark(g));
  }
  fmt::print("{:<12} {:>8} {:>9.4f}\n{:<12} {:>8} {:>9.4f}\n", "worst", "", eval.worst, "mean", "",
             eval.mean);
  if (!confusion) return;
  for (const GroupEval& g : eval.groups) {
    fmt::print("\nconfusion of {} (rows: true class, columns: predicted):\n", g.name);
    for (int i = 0; i < classes; ++i) {
      fmt::print("  {:>3}:", i);
      for (int j = 0; j < classes; ++j) fmt::print(" {:>6}", g.confusion[size_t(i) * classes + j]);
      fmt::print("\n");
    }
  }
}

std::string evaluation_json(const Evaluation& eval, int classes) {
  nlohmann::json out;
  for (const GroupEval& g : eval.groups) {
    nlohmann::json& j = out["groups"][g.name];
    j["accuracy"] = g.accuracy;
    j["majority_acc"] = g.majority;
    j["samples"] = g.samples;
    j["recall"] = recall(g, classes);
    j["confusion"] = confusion_rows(g, classes);
  }
  out["worst_group_acc"] = eval.worst;
  out["mean_group_acc"] = eval.mean;
  return out.dump(2) + "\n";
}

std::string failure_json(const std::string& error, int64_t step, int epoch) {
  nlohmann::json report;
  report["status"] = "failed";
  report["error"] = error;
  report["step"] = step;
  report["epochs"] = epoch;
  report["checkpoint"] = "the parameters of the last good step";
  return report.dump(2) + "\n";
}

std::string report_json(const RunSummary& s, const Evaluation& eval) {
  nlohmann::json report;
  report["status"] = "complete";
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
    report["majority_acc"][g.name] = g.majority;
    report["test_recall"][g.name] = recall(g, C);
    report["confusion"][g.name] = confusion_rows(g, C);
  }
  report["worst_group_acc"] = eval.worst;
  report["mean_group_acc"] = eval.mean;
  if (s.selected_epoch > 0) {
    nlohmann::json& sel = report["selected"];
    sel["rule"] = s.select;
    sel["epoch"] = s.selected_epoch;
    sel["val_score"] = s.selected_score;
    for (auto& g : s.selected.groups) sel["test_acc"][g.name] = g.accuracy;
    sel["worst_group_acc"] = s.selected.worst;
    sel["mean_group_acc"] = s.selected.mean;
  }
  return report.dump(2) + "\n";
}

void print_results(const RunSummary& s, const Evaluation& eval, const std::string& run_dir) {
  const bool selected = s.selected_epoch > 0;
  fmt::print("\n{:<12} {:>8} {:>8} {:>10} {:>10}{}\n", "group", "train", "test", "accuracy",
             "majority", selected ? fmt::format(" {:>10}", "selected") : "");
  for (size_t g = 0; g < eval.groups.size(); ++g)
    fmt::print("{:<12} {:>8} {:>8} {:>10.4f} {:>10.4f}{}{}\n", eval.groups[g].name,
               s.train_sizes[g], eval.groups[g].samples, eval.groups[g].accuracy,
               eval.groups[g].majority,
               selected ? fmt::format(" {:>10.4f}", s.selected.groups[g].accuracy) : "",
               majority_mark(eval.groups[g]));
  fmt::print("{:<12} {:>8} {:>8} {:>10.4f} {:>10}{}\n{:<12} {:>8} {:>8} {:>10.4f} {:>10}{}\n",
             "worst", "", "", eval.worst, "",
             selected ? fmt::format(" {:>10.4f}", s.selected.worst) : "", "mean", "", "", eval.mean,
             "", selected ? fmt::format(" {:>10.4f}", s.selected.mean) : "");
  if (selected)
    fmt::print("selected: the model of epoch {} ({} = {:.4f}), in {}/best.safetensors\n",
               s.selected_epoch, s.select, s.selected_score, run_dir);
  fmt::print("run folder: {}\n", run_dir);
}

}  // namespace hetdro
