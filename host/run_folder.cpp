// The run folder's files and the run's console lines (docs/DESIGN.md §4).
#include "hetdro/run_folder.h"

#include <fcntl.h>  // open
#include <fmt/format.h>
#include <fmt/ranges.h>  // join
#include <omp.h>         // omp_get_max_threads
#include <sys/file.h>    // flock
#include <unistd.h>      // close

#include <algorithm>  // any_of
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>  // strerror
#include <filesystem>
#include <nlohmann/json.hpp>
#include <regex>

#include "hetdro/check.h"
#include "hetdro/io.h"       // write_text_file
#include "hetdro/trainer.h"  // Evaluation
#include "io/file.h"         // lookup, kind_of

namespace hetdro {

namespace fs = std::filesystem;

namespace {

// The files a run writes; --overwrite removes them first, so nothing of the old run survives
// next to the new one. A folder holding any of them is a run folder.
constexpr const char* kRunFiles[] = {"metrics.jsonl", "checkpoint.safetensors", "report.json",
                                     "latents.npz", "best.safetensors"};

// prepare's NPY files: <group>_<split>_<x|y>.npy (host/prepare.cpp).
bool is_data_file(const std::string& name) {
  static const std::regex pattern(".+_(train|test|val)_[xy]\\.npy");
  return std::regex_match(name, pattern);
}

bool exists(const std::string& path) { return fs::exists(io::lookup(path)); }

}  // namespace

FolderContents inspect_folder(const std::string& dir, const std::string& option) {
  FolderContents in;
  const fs::file_status status = io::lookup(dir);
  if (!fs::exists(status)) return in;
  if (!fs::is_directory(status))
    input_error("{}: {} names {}: expected a folder", dir, option, io::kind_of(status.type()));
  in.exists = true;
  for (const char* f : kRunFiles)
    if (exists(dir + "/" + f)) in.run_files.push_back(f);
  in.config = exists(dir + "/config.toml");
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
    if (is_data_file(it->path().filename().string())) {
      in.data_file = it->path().filename().string();
      break;
    }
  if (ec) input_error("{}: cannot list the folder: {}", dir, ec.message());
  return in;
}

RunFolder::RunFolder(const std::string& dir, bool overwrite, bool resume, const Config& config)
    : dir_(dir) {
  if (dir_.empty())
    input_error(
        "--out is empty: expected the name of a folder for the run (config.toml, "
        "metrics.jsonl, checkpoint.safetensors, report.json)");
  const FolderContents in = inspect_folder(dir_, resume ? "--resume" : "--out");
  if (resume) {
    for (const char* f : {"config.toml", "checkpoint.safetensors"})
      if (!exists(dir_ + "/" + f))
        input_error("{}: cannot resume: the folder holds no {} (is it a hetdro run folder?)", dir_,
                    f);
  } else {
    if (!in.data_file.empty())
      input_error(
          "{}: this folder holds prepared data ({} beside {}); a run would replace its "
          "config.toml. Choose another --out, such as {}/run",
          dir_, in.data_file, in.config ? "config.toml" : "other data", dir_);
    if (!in.run_files.empty() && !overwrite)
      input_error(
          "{}: this folder already holds a run ({}); choose another --out, pass --overwrite, or "
          "continue it with --resume",
          dir_, fmt::join(in.run_files, ", "));
    std::error_code ec;
    if (!config.path.empty() && fs::equivalent(dir_ + "/config.toml", config.path, ec))
      input_error(
          "{}: --out holds the input config {}; writing the run there would replace it. "
          "Choose another --out",
          dir_, config.path);
    if (in.config && in.run_files.empty())
      input_error(
          "{}: this folder holds a config.toml that no run wrote (no metrics.jsonl, no "
          "checkpoint); a run would replace it. Choose another --out",
          dir_);
    fs::create_directories(dir_, ec);
    if (ec) input_error("{}: cannot create the run folder: {}", dir_, ec.message());
  }
  lock_fd_ = ::open((dir_ + "/.lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (lock_fd_ < 0) input_error("{}: cannot create .lock: {}", dir_, std::strerror(errno));
  if (::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    ::close(lock_fd_);
    lock_fd_ = -1;
    input_error(
        "{}: another hetdro run is writing this folder (it holds .lock); wait for it or "
        "choose another --out",
        dir_);
  }
  // Under the lock no hetdro writes here but this one: a temporary file of a process that is
  // gone (killed while writing a checkpoint) is garbage.
  if (const int n = remove_stale_temporaries(dir_))
    fmt::print("{}: removed {} temporary file(s) left by processes that are gone\n", dir_, n);
  if (resume) return;
  // metrics.jsonl first (empty, replacing the old run's): whatever stops this, a config.toml
  // never stands in a run folder without it. Then the old run's other files go.
  write_text_file(dir_ + "/metrics.jsonl", "");
  if (overwrite)
    for (const char* f : kRunFiles) {
      std::error_code ec;
      if (std::string(f) != "metrics.jsonl" && !fs::remove(dir_ + "/" + f, ec) && ec)
        input_error("{}/{}: --overwrite cannot remove the old run's file: {}", dir_, f,
                    ec.message());
    }
  write_text_file(dir_ + "/config.toml", to_toml(config));
}

RunFolder::~RunFolder() {
  if (lock_fd_ >= 0) ::close(lock_fd_);  // releases the flock
}

void RunFolder::resume_at(int epoch, const Config& config) {
  const std::string path = dir_ + "/metrics.jsonl";
  const std::string text = exists(path) ? read_text_file(path, "a metrics.jsonl file") : "";
  std::string kept;
  for (size_t at = 0; at < text.size();) {
    const size_t end = std::min(text.find('\n', at), text.size());
    const std::string line = text.substr(at, end - at);
    const bool last = end + 1 >= text.size();
    at = end + 1;
    if (line.empty()) continue;
    const auto m = nlohmann::json::parse(line, nullptr, false);
    if (m.is_discarded() || !m.is_object() || !m.contains("epoch") ||
        !m["epoch"].is_number_integer()) {
      // A full disk during an append (by a version that appended) leaves half a line, the last
      // one; the checkpoint is the truth, so the line goes. Any other bad line is not ours.
      if (last) {
        fmt::print(stderr,
                   "warning: {}: the last line is torn ({}); dropped, since the checkpoint "
                   "holds the run\n",
                   path, excerpt(line, 60));
        continue;
      }
      input_error("{}: a line is not a metrics record: {}", path, excerpt(line, 60));
    }
    if (m["epoch"].get<int64_t>() <= epoch && !m.contains("partial_epoch_steps"))
      kept += line + "\n";
  }
  metrics_ = kept;
  write_text_file(path, metrics_);
  write_text_file(dir_ + "/config.toml", to_toml(config));
}

void RunFolder::append_metrics(const std::string& json_line) {
  metrics_ += json_line + "\n";
  write_text_file(dir_ + "/metrics.jsonl", metrics_);
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
  fmt::print("{} epochs x {} steps of batch {}{} on {}\n", t.epochs, sampler.steps_per_epoch(),
             t.batch_size,
             sampler.resamples()
                 ? fmt::format(" (group_batch = {}{}: a group that runs out is drawn again)",
                               name(t.group_batch),
                               std::any_of(config.groups.begin(), config.groups.end(),
                                           [](const GroupConfig& g) { return g.batch_share > 0; })
                                   ? " and batch_share"
                                   : "")
                 : "",
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
