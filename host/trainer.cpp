// The training loop on a backend (docs/DESIGN.md §6): stratified batches gathered from the uploaded
// data, the loss and its gradient, the non-finite check and Adam, all as backend ops; the host
// reads the step statistics at its logging points and evaluates once per epoch.
#include "hetdro/trainer.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>

#include "hetdro/check.h"
#include "hetdro/run_folder.h"

namespace hetdro {
namespace {

using Clock = std::chrono::steady_clock;

// Where the backend's ops return before they finish (a GPU), the host reads the statistics this
// often, besides the progress lines and each epoch's end.
constexpr int64_t kReadEvery = 100;

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

// The sampler, once every group can fill its share of a batch.
StratifiedSampler make_sampler(const Config& config, const std::vector<GroupData>& groups) {
  StratifiedSampler sampler(train_sizes(groups), config.train.batch_size, config.train.seed);
  for (size_t g = 0; g < groups.size(); ++g)
    if (groups[g].train.size() < sampler.per_batch()[g])
      input_error(
          "{}: group '{}' has {} training samples, fewer than the {} that every batch of "
          "train.batch_size = {} takes from it; lower train.batch_size",
          config.path, groups[g].name, groups[g].train.size(), sampler.per_batch()[g],
          config.train.batch_size);
  return sampler;
}

void add(LossTerms& sum, const LossTerms& t) {
  sum.total += t.total;
  sum.clf += t.clf;
  sum.fit += t.fit;
  sum.sep += t.sep;
  sum.fit_pairs += t.fit_pairs;
  sum.skipped_slots += t.skipped_slots;
  sum.group_loss.resize(t.group_loss.size());
  sum.dead.resize(t.dead.size());
  for (size_t g = 0; g < t.group_loss.size(); ++g) sum.group_loss[g] += t.group_loss[g];
  for (size_t g = 0; g < t.dead.size(); ++g) sum.dead[g] += t.dead[g];
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

Trainer::Trainer(Config config, std::vector<GroupData> groups,
                 std::unique_ptr<Backend<float>> backend)
    : config_(std::move(config)),
      groups_(std::move(groups)),
      backend_(backend ? std::move(backend) : make_cpu_backend<float>()),
      model_(config_, sample_shapes(config_, groups_)),
      settings_(LossSettings::from(config_)),
      sampler_(make_sampler(config_, groups_)),
      loss_(model_, settings_, *backend_, sampler_.per_batch()),
      predictor_(model_, *backend_, config_.train.eval_batch),
      params_(*backend_, model_.size()),
      grads_(*backend_, model_.size()),
      adam_m_(*backend_, model_.size()),
      adam_v_(*backend_, model_.size()),
      q_(*backend_, int64_t(groups_.size())),
      window_(*backend_, loss_.stats_size()),
      status_(*backend_, 2) {
  TrainState initial;
  initial.params.resize(model_.size());
  model_.init(initial.params.data(), config_.train.seed);
  initial.adam_m.assign(model_.size(), 0.0f);
  initial.adam_v.assign(model_.size(), 0.0f);
  initial.q.assign(groups_.size(), 1.0 / double(groups_.size()));
  upload_state(initial);
}

Trainer::~Trainer() = default;

void Trainer::upload_state(const TrainState& s) {
  params_.upload(s.params);
  adam_m_.upload(s.adam_m);
  adam_v_.upload(s.adam_v);
  q_.upload(s.q);
  status_.upload(std::vector<int64_t>{-1, -1});
  window_.zero();
  window_steps_ = 0;
  step_ = s.step;
  epoch_ = s.epoch;
}

TrainState Trainer::state() const {
  TrainState s;
  s.params = params_.download();
  s.adam_m = adam_m_.download();
  s.adam_v = adam_v_.download();
  s.q = q_.download();
  s.step = step_;
  s.epoch = epoch_;
  return s;
}

void Trainer::load(const std::string& checkpoint_path) {
  TrainState loaded = load_checkpoint(checkpoint_path, model_);
  if (loaded.q.size() != groups_.size()) loaded.q = q_.download();
  upload_state(loaded);
}

void Trainer::upload_training_data() {
  if (!train_x_.empty()) return;
  for (const GroupData& g : groups_) {
    train_x_.emplace_back(*backend_, int64_t(g.train.x.data.size()));
    train_x_.back().upload(g.train.x.data);
    train_y_.emplace_back(*backend_, g.train.size());
    train_y_.back().upload(g.train.y);
    order_.emplace_back(*backend_, g.train.size());
  }
}

void Trainer::upload_test_data() {
  if (!test_x_.empty()) return;
  for (const GroupData& g : groups_) {
    test_x_.emplace_back(*backend_, int64_t(g.test.x.data.size()));
    test_x_.back().upload(g.test.x.data);
  }
}

void Trainer::start_epoch(int epoch) {
  upload_training_data();
  sampler_.start_epoch(epoch);
  for (size_t g = 0; g < groups_.size(); ++g) order_[g].upload(sampler_.order(int(g)));
}

void Trainer::step(int64_t step_in_epoch) {
  Backend<float>& be = *backend_;
  const std::vector<int>& rows = sampler_.per_batch();
  for (int g = 0, row = 0; g < int(groups_.size()); row += rows[g], ++g)
    be.gather_batch(loss_.batch_x(g), loss_.batch_y() + row, train_x_[g].data(), train_y_[g].data(),
                    order_[g].data() + step_in_epoch * rows[g], rows[g],
                    model_.encoder(g).input_size());
  grads_.zero();
  const int C = model_.classes(), J = settings_.samples_per_anchor, k = model_.latent_dim();
  const uint64_t counter = uint64_t(step_) * uint64_t(C) * J * k;
  loss_.run(params_.data(), grads_.data(), q_.data(), counter);
  ++step_;
  ++window_steps_;
  be.check_finite(status_.data(), loss_.stats(), StepStats::checked(int(groups_.size())),
                  grads_.data(), model_.size(), step_);
  const TrainConfig& t = config_.train;
  be.adam_update(params_.data(), adam_m_.data(), adam_v_.data(), grads_.data(), model_.size(),
                 float(t.lr), 0.9f, 0.999f, 1e-8f, float(t.weight_decay), step_, status_.data());
  be.accumulate(window_.data(), loss_.stats(), loss_.stats_size());
}

Window Trainer::read_window() {
  const std::vector<double> sums = window_.download();
  const std::vector<int64_t> status = status_.download();
  window_.zero();
  Window w{window_steps_, StepStats::decode(sums.data(), int(groups_.size()), settings_)};
  window_steps_ = 0;
  if (status[0] >= 0) {
    const int64_t where = status[1];
    const std::string what = where < 0
                                 ? fmt::format("the loss term {}", StepStats::name(int(-1 - where)))
                                 : fmt::format("the gradient of {}", model_.param_at(where).name);
    throw std::runtime_error(fmt::format(
        "{} became non-finite at step {}; Adam skipped that step and every later one, so the "
        "parameters are those after step {}. Try a smaller train.lr or a larger train.eps.",
        what, status[0], status[0] - 1));
  }
  return w;
}

Evaluation Trainer::evaluate() {
  upload_test_data();
  const int C = model_.classes();
  Evaluation e;
  e.worst = 1.0;
  for (int g = 0; g < int(groups_.size()); ++g) {
    const Split& test = groups_[g].test;
    GroupEval r{groups_[g].name, test.size(), 0, std::vector<int64_t>(size_t(C) * C, 0)};
    const std::vector<int32_t> pred =
        predictor_.predict(params_.data(), g, test_x_[g].data(), test.size());
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

std::vector<int32_t> Trainer::predict(int g, const Array<float>& x) {
  return predictor_.predict_host(params_.data(), g, x.data.data(), x.rows());
}

void Trainer::warn_dead_latents(const Window& w, int epoch, int64_t step,
                                std::vector<int64_t>& dead) {
  for (size_t g = 0; g < groups_.size(); ++g) {
    const int64_t steps = int64_t(w.sums.dead[g]);
    if (steps == 0) continue;
    if (dead[g] == 0)
      fmt::print(
          stderr,
          "warning: epoch {} step {}: group '{}' has all {} latent units at 0 over its {} "
          "samples{} (dead ReLU latent; docs/DESIGN.md §1). latent_activation = \"none\" avoids "
          "it.\n",
          epoch, step, groups_[g].name, model_.latent_dim(), sampler_.per_batch()[g],
          w.steps > 1 ? fmt::format(", in {} of the {} steps up to here", steps, w.steps) : "");
    dead[g] += steps;
  }
}

// One epoch's steps (at most `budget` of them when budget > 0), reading the statistics at the
// logging points; fills r's step counts, means, timings and dead-latent counts.
void Trainer::run_epoch(int epoch, int64_t budget, EpochRecord& r, std::vector<double>& step_ms) {
  const int G = int(groups_.size());
  const int64_t steps = sampler_.steps_per_epoch();
  // Ops that finish before they return cost nothing to read after; others are read in windows.
  const int64_t read_every = backend_->synchronous() ? 1 : kReadEvery;
  const int64_t progress_every = steps >= 200 ? steps / 4 : steps + 1;
  start_epoch(epoch - 1);
  LossTerms sums;
  std::vector<int64_t> dead(G, 0);
  double epoch_ms = 0;
  auto window_start = Clock::now();
  for (int64_t s = 0; s < steps && !(budget > 0 && r.done >= budget); ++s) {
    step(s);
    ++r.done;
    const bool last = s + 1 == steps || (budget > 0 && r.done >= budget);
    const bool progress = (s + 1) % progress_every == 0;
    if (!(last || progress || r.done % read_every == 0)) continue;
    const Window w = read_window();
    const double ms =
        std::chrono::duration<double, std::milli>(Clock::now() - window_start).count();
    step_ms.push_back(ms / double(w.steps));
    epoch_ms += ms;
    add(sums, w.sums);
    warn_dead_latents(w, epoch, s + 1, dead);
    if (progress)
      fmt::print("  epoch {} step {}/{}  loss {:.4f}  {:.1f} ms/step\n", epoch, s + 1, steps,
                 sums.total / double(r.done), median(step_ms));
    std::fflush(stdout);
    window_start = Clock::now();
  }
  if (r.done == 0) return;
  const double n = double(r.done);
  r.mean = sums;
  r.mean.total /= n;
  r.mean.clf /= n;
  r.mean.fit /= n;
  r.mean.sep /= n;
  r.skipped_slots = sums.skipped_slots;
  r.dead_steps.assign(dead.begin(), dead.end());
  r.step = step_;
  r.samples_per_s = config_.train.batch_size * 1000.0 * n / epoch_ms;
}

void Trainer::train(const std::string& out_dir, bool overwrite, int64_t max_steps) {
  const TrainConfig& t = config_.train;
  RunFolder folder(out_dir, overwrite, config_);
  print_header(config_, model_, groups_, sampler_, backend_->name());
  const auto run_start = Clock::now();
  std::vector<double> all_step_ms;
  Evaluation eval;
  bool evaluated = false;
  int64_t total_steps = 0;
  for (int epoch = 1; epoch <= t.epochs; ++epoch) {
    EpochRecord r;
    r.epoch = epoch;
    r.epochs = t.epochs;
    r.steps_per_epoch = sampler_.steps_per_epoch();
    r.relu_latent = config_.model.latent_activation == LatentActivation::relu;
    for (auto& g : groups_) r.group_names.push_back(g.name);
    std::vector<double> step_ms;
    run_epoch(epoch, max_steps > 0 ? max_steps - total_steps : 0, r, step_ms);
    if (r.done == 0) break;
    total_steps += r.done;
    eval = evaluate();
    evaluated = true;
    r.step_ms = median(step_ms);
    r.q = q_.download();
    all_step_ms.insert(all_step_ms.end(), step_ms.begin(), step_ms.end());
    folder.append_metrics(metrics_json(r, eval));
    print_epoch(r, eval);
    if (r.done == r.steps_per_epoch) epoch_ = epoch;  // --max-steps can end an epoch early
    save_checkpoint(folder.checkpoint_path(), model_, state());
  }
  if (!evaluated) {  // no step ran: still leave a checkpoint of the initial model
    eval = evaluate();
    save_checkpoint(folder.checkpoint_path(), model_, state());
  }

  RunSummary summary;
  summary.config_path = config_.path;
  summary.device = backend_->name();
  summary.threads = omp_get_max_threads();
  summary.epochs = epoch_;
  summary.classes = model_.classes();
  summary.steps = step_;
  summary.train_seconds = std::chrono::duration<double>(Clock::now() - run_start).count();
  summary.step_ms_median = median(all_step_ms);
  summary.train_sizes = train_sizes(groups_);
  folder.write_report(report_json(summary, eval));
  print_results(summary, eval, folder.dir());
}

}  // namespace hetdro
