// The epoch loop: stratified batches, loss and gradient, Adam, per-epoch evaluation, and the
// run folder's files (DESIGN §4).
#include "hetdro/trainer.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "hetdro/check.h"
#include "hetdro/ops.h"

namespace hetdro {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
  return v[v.size() / 2];
}

std::vector<int64_t> train_sizes(const std::vector<GroupData>& groups) {
  std::vector<int64_t> sizes;
  for (auto& g : groups) sizes.push_back(g.train.size());
  return sizes;
}

}  // namespace

std::vector<std::vector<int64_t>> sample_shapes(const Config& config,
                                                const std::vector<GroupData>& groups) {
  std::vector<std::vector<int64_t>> shapes;
  for (size_t g = 0; g < groups.size(); ++g)
    shapes.push_back(
        encoder_input_shape(config.groups[g], groups[g].train.x, config.groups[g].train_x));
  return shapes;
}

std::vector<int64_t> Trainer::sample_shape(int g) const {
  const EncoderLayout& e = model_.encoder(g);
  if (e.kind == "cnn") return {1, e.h, e.w};
  return {e.layers.front().in};
}

Trainer::Trainer(Config config, std::vector<GroupData> groups)
    : config_(std::move(config)),
      groups_(std::move(groups)),
      model_(config_, sample_shapes(config_, groups_)),
      settings_(LossSettings::from(config_)),
      sampler_(train_sizes(groups_), config_.train.batch_size, config_.train.seed) {
  state_.params.resize(model_.size());
  model_.init(state_.params.data(), config_.train.seed);
  state_.adam_m.assign(model_.size(), 0.0f);
  state_.adam_v.assign(model_.size(), 0.0f);
  state_.q.assign(groups_.size(), 1.0 / double(groups_.size()));
  grads_.resize(model_.size());
  const int G = int(groups_.size());
  for (int g = 0; g < G; ++g)
    if (groups_[g].train.size() < sampler_.per_batch()[g])
      input_error(
          "{}: group '{}' has {} training samples, fewer than the {} that every batch of "
          "train.batch_size = {} takes from it; lower train.batch_size",
          config_.path, groups_[g].name, groups_[g].train.size(), sampler_.per_batch()[g],
          config_.train.batch_size);
  batch_x_.resize(G);
  batch_.x.resize(G);
  batch_.n = sampler_.per_batch();
  for (int g = 0; g < G; ++g) {
    batch_x_[g].resize(size_t(batch_.n[g]) * model_.encoder(g).input_size());
    batch_.x[g] = batch_x_[g].data();
    batch_.group.insert(batch_.group.end(), batch_.n[g], g);
  }
  batch_.y.resize(batch_.group.size());
}

LossTerms Trainer::step(int64_t step_in_epoch) {
  // Gather this step's rows of every group into the batch buffers.
  for (int g = 0, row = 0; g < int(groups_.size()); row += batch_.n[g], ++g) {
    const Split& s = groups_[g].train;
    const int64_t width = model_.encoder(g).input_size();
    const int64_t* idx = sampler_.batch(g, step_in_epoch);
    for (int i = 0; i < batch_.n[g]; ++i) {
      std::copy_n(s.x.data.data() + idx[i] * width, width, batch_x_[g].data() + i * width);
      batch_.y[row + i] = s.y[idx[i]];
    }
  }
  std::fill(grads_.begin(), grads_.end(), 0.0f);
  const int C = model_.classes(), J = settings_.samples_per_anchor, k = model_.latent_dim();
  const uint64_t counter = uint64_t(state_.step) * uint64_t(C) * J * k;
  LossTerms terms = loss_and_grad(model_, settings_, state_.params.data(), grads_.data(), batch_,
                                  state_.q, counter, ws_);
  if (!std::isfinite(terms.total))
    throw std::runtime_error(fmt::format(
        "the loss became {} at step {} (clf {}, fit {}, sep {}); stopping before the parameters "
        "are spoiled. Try a smaller train.lr or a larger train.eps.",
        terms.total, state_.step + 1, terms.clf, terms.fit, terms.sep));
  for (const ParamInfo& p : model_.params())
    if (!std::all_of(grads_.begin() + p.offset, grads_.begin() + p.offset + p.size,
                     [](float g) { return std::isfinite(g); }))
      throw std::runtime_error(fmt::format(
          "the gradient of {} became non-finite at step {} (loss {}); stopping before the "
          "parameters are spoiled. Try a smaller train.lr or a larger train.eps.",
          p.name, state_.step + 1, terms.total));
  ++state_.step;
  const TrainConfig& t = config_.train;
  cpu::adam_update(state_.params.data(), state_.adam_m.data(), state_.adam_v.data(), grads_.data(),
                   model_.size(), float(t.lr), 0.9f, 0.999f, 1e-8f, float(t.weight_decay),
                   state_.step);
  return terms;
}

void Trainer::forward_logits(int g, const float* x, int n, std::vector<float>& logits) {
  const int k = model_.latent_dim();
  std::vector<float> z(size_t(n) * k);
  model_.encoder_forward(g, state_.params.data(), x, n, z.data(), eval_act_);
  if (settings_.latent_relu) cpu::relu_forward(z.data(), z.data(), int64_t(z.size()));
  logits.resize(size_t(n) * model_.classes());
  model_.classifier_forward(state_.params.data(), z.data(), n, logits.data(), eval_cls_);
}

std::vector<int32_t> Trainer::predict(int g, const Array<float>& x) {
  const int C = model_.classes();
  const int64_t width = model_.encoder(g).input_size(), n = x.rows();
  std::vector<int32_t> out(n);
  std::vector<float> logits;
  for (int64_t start = 0; start < n; start += config_.train.eval_batch) {
    const int chunk = int(std::min<int64_t>(config_.train.eval_batch, n - start));
    forward_logits(g, x.data.data() + start * width, chunk, logits);
    for (int i = 0; i < chunk; ++i) {
      const float* row = logits.data() + size_t(i) * C;
      out[start + i] = int32_t(std::max_element(row, row + C) - row);
    }
  }
  return out;
}

Evaluation Trainer::evaluate() {
  const int C = model_.classes();
  Evaluation e;
  e.worst = 1.0;
  for (int g = 0; g < int(groups_.size()); ++g) {
    const Split& test = groups_[g].test;
    GroupEval r{groups_[g].name, test.size(), 0, std::vector<int64_t>(size_t(C) * C, 0)};
    std::vector<int32_t> pred = predict(g, test.x);
    int64_t correct = 0;
    for (int64_t i = 0; i < test.size(); ++i) {
      ++r.confusion[size_t(test.y[i]) * C + pred[i]];
      correct += pred[i] == test.y[i];
    }
    r.accuracy = double(correct) / double(test.size());
    e.worst = std::min(e.worst, r.accuracy);
    e.mean += r.accuracy / double(groups_.size());
    e.groups.push_back(std::move(r));
  }
  return e;
}

void Trainer::load(const std::string& checkpoint_path) {
  TrainState loaded = load_checkpoint(checkpoint_path, model_);
  if (loaded.q.size() != groups_.size()) loaded.q = state_.q;
  state_ = std::move(loaded);
}

void Trainer::train(const std::string& out_dir, bool overwrite, int64_t max_steps) {
  const TrainConfig& t = config_.train;
  const std::string metrics_path = out_dir + "/metrics.jsonl";
  if (fs::exists(metrics_path) && !overwrite)
    input_error(
        "{}: this folder already holds a run (metrics.jsonl); choose another --out or "
        "pass --overwrite",
        out_dir);
  std::error_code ec;
  if (!config_.path.empty() && fs::equivalent(out_dir + "/config.toml", config_.path, ec))
    input_error(
        "{}: --out holds the input config {}; writing the run there would replace it. "
        "Choose another --out",
        out_dir, config_.path);
  fs::create_directories(out_dir, ec);
  if (ec) input_error("{}: cannot create the run folder: {}", out_dir, ec.message());
  write_text_file(out_dir + "/config.toml", to_toml(config_));
  std::ofstream metrics(metrics_path, std::ios::trunc);
  if (!metrics) input_error("{}: cannot write", metrics_path);

  const int G = int(groups_.size());
  fmt::print("model: {} parameters; latent {}; classifier {}; fit {}; objective {}\n",
             model_.size(), model_.latent_dim(), config_.model.classifier, t.fit, t.objective);
  for (int g = 0; g < G; ++g)
    fmt::print("  group {:<10} encoder {:<4} train {:>6}  test {:>6}  per batch {:>3}\n",
               groups_[g].name, config_.groups[g].encoder, groups_[g].train.size(),
               groups_[g].test.size(), sampler_.per_batch()[g]);
  const int64_t steps = sampler_.steps_per_epoch();
  fmt::print("{} epochs x {} steps of batch {} on {} CPU thread(s)\n", t.epochs, steps,
             t.batch_size, omp_get_max_threads());
  std::fflush(stdout);

  const auto run_start = Clock::now();
  std::vector<double> all_step_ms;
  Evaluation eval;
  bool evaluated = false;
  int64_t total_steps = 0;
  for (int epoch = 1; epoch <= t.epochs; ++epoch) {
    sampler_.start_epoch(epoch - 1);
    double loss = 0, clf = 0, fit = 0, sep = 0;
    int64_t skipped = 0, done = 0;
    std::vector<int64_t> dead(G, 0);
    std::vector<double> step_ms;
    const int64_t progress_every = steps >= 200 ? steps / 4 : steps + 1;
    for (int64_t s = 0; s < steps && !(max_steps > 0 && total_steps >= max_steps); ++s) {
      const auto t0 = Clock::now();
      LossTerms terms = step(s);
      step_ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
      ++done;
      ++total_steps;
      loss += terms.total;
      clf += terms.clf;
      fit += terms.fit;
      sep += terms.sep;
      skipped += terms.skipped_slots;
      for (int g : terms.dead_groups)
        if (dead[g]++ == 0)
          fmt::print(stderr,
                     "warning: epoch {} step {}: group '{}' has all {} latent units at 0 over its "
                     "{} samples (dead ReLU latent; DESIGN §1). latent_activation = \"none\" "
                     "avoids it.\n",
                     epoch, s + 1, groups_[g].name, model_.latent_dim(), batch_.n[g]);
      if ((s + 1) % progress_every == 0)
        fmt::print("  epoch {} step {}/{}  loss {:.4f}  {:.1f} ms/step\n", epoch, s + 1, steps,
                   loss / double(done), median(step_ms));
      std::fflush(stdout);
    }
    if (done == 0) break;
    eval = evaluate();
    evaluated = true;
    const bool complete = done == steps;  // --max-steps can end an epoch early
    const double ms = median(step_ms);
    double mean_ms = 0;
    for (double v : step_ms) mean_ms += v / double(step_ms.size());
    all_step_ms.insert(all_step_ms.end(), step_ms.begin(), step_ms.end());
    nlohmann::json m;
    m["epoch"] = epoch;
    m["step"] = state_.step;
    if (!complete) m["partial_epoch_steps"] = done;
    m["loss"] = loss / double(done);
    m["loss_clf"] = clf / double(done);
    m["loss_fit"] = fit / double(done);
    m["loss_sep"] = sep / double(done);
    for (auto& g : eval.groups) m["test_acc"][g.name] = g.accuracy;
    m["worst_group_acc"] = eval.worst;
    m["mean_group_acc"] = eval.mean;
    for (int g = 0; g < G; ++g) m["group_weights"][groups_[g].name] = state_.q[g];
    m["step_ms"] = ms;
    m["samples_per_s"] = t.batch_size * 1000.0 / mean_ms;
    m["fit_skipped"] = skipped;
    if (settings_.latent_relu)
      for (int g = 0; g < G; ++g) m["dead_latent_steps"][groups_[g].name] = dead[g];
    metrics << m.dump() << "\n" << std::flush;

    std::string accs, weights;
    for (auto& g : eval.groups) accs += fmt::format("{} {:.4f}  ", g.name, g.accuracy);
    for (int g = 0; g < G; ++g) weights += fmt::format("{}{:.3f}", g ? " " : "", state_.q[g]);
    fmt::print(
        "epoch {}/{}{}  loss {:.4f} (clf {:.4f} fit {:.3f} sep {:.4f})  test {}| worst {:.4f} "
        "mean {:.4f}  q [{}]  {:.1f} ms/step  {:.0f} samples/s{}\n",
        epoch, t.epochs, complete ? "" : fmt::format(" ({} of {} steps)", done, steps),
        loss / double(done), clf / double(done), fit / double(done), sep / double(done), accs,
        eval.worst, eval.mean, weights, ms, t.batch_size * 1000.0 / mean_ms,
        skipped ? fmt::format("  (fit skipped {} class-batches with n < 2)", skipped) : "");
    std::fflush(stdout);
    if (complete) state_.epoch = epoch;
    save_checkpoint(out_dir + "/checkpoint.safetensors", model_, state_);
  }
  if (!evaluated) {  // no step ran: still leave a checkpoint of the initial model
    eval = evaluate();
    save_checkpoint(out_dir + "/checkpoint.safetensors", model_, state_);
  }

  nlohmann::json report;
  report["config"] = config_.path;
  report["device"] = "cpu";
  report["threads"] = omp_get_max_threads();
  report["epochs"] = state_.epoch;
  report["steps"] = state_.step;
  report["train_seconds"] = std::chrono::duration<double>(Clock::now() - run_start).count();
  report["step_ms_median"] = median(all_step_ms);
  for (auto& g : eval.groups) {
    report["test_acc"][g.name] = g.accuracy;
    report["test_samples"][g.name] = g.samples;
    const int C = model_.classes();
    nlohmann::json rows = nlohmann::json::array();
    for (int i = 0; i < C; ++i)
      rows.push_back(
          std::vector<int64_t>(g.confusion.begin() + i * C, g.confusion.begin() + (i + 1) * C));
    report["confusion"][g.name] = rows;
  }
  report["worst_group_acc"] = eval.worst;
  report["mean_group_acc"] = eval.mean;
  write_text_file(out_dir + "/report.json", report.dump(2) + "\n");

  fmt::print("\n{:<12} {:>8} {:>8} {:>10}\n", "group", "train", "test", "accuracy");
  for (int g = 0; g < G; ++g)
    fmt::print("{:<12} {:>8} {:>8} {:>10.4f}\n", groups_[g].name, groups_[g].train.size(),
               eval.groups[g].samples, eval.groups[g].accuracy);
  fmt::print("{:<12} {:>8} {:>8} {:>10.4f}\n{:<12} {:>8} {:>8} {:>10.4f}\n", "worst", "", "",
             eval.worst, "mean", "", "", eval.mean);
  fmt::print("run folder: {}\n", out_dir);
}

}  // namespace hetdro
