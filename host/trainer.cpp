// The training loop on a backend (docs/DESIGN.md §6): stratified batches gathered from the uploaded
// data, the loss and its gradient, the non-finite check and Adam, all as backend ops; the host
// reads the step statistics at its logging points and evaluates once per epoch.
#include "hetdro/trainer.h"

#include <fmt/ranges.h>  // join
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <system_error>

#include "hetdro/check.h"
#include "hetdro/io.h"   // write_npz
#include "hetdro/ops.h"  // anchor_cov_forward, for the exported anchors
#include "hetdro/run_folder.h"
#include "hetdro/step_status.h"  // a solver's failure in the status

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

// The sampler, once every group can fill its share of a batch, and every rank of a data-parallel
// run gets at least one sample of every group.
StratifiedSampler make_sampler(const Config& config, const std::vector<GroupData>& groups,
                               int ranks) {
  std::vector<double> shares;
  for (const GroupConfig& g : config.groups) shares.push_back(g.batch_share);
  StratifiedSampler sampler(train_sizes(groups), config.train.batch_size, config.train.seed,
                            config.train.group_batch, shares);
  for (size_t g = 0; g < groups.size(); ++g)
    if (sampler.per_batch()[g] < ranks)
      input_error(
          "{}: every batch of train.batch_size = {} takes {} samples of group '{}', fewer than "
          "the {} ranks of this run: each rank needs at least one of every group; raise "
          "train.batch_size or run fewer ranks",
          config.path, config.train.batch_size, sampler.per_batch()[g], groups[g].name, ranks);
  for (size_t g = 0; g < groups.size(); ++g)
    if (!sampler.resamples() && groups[g].train.size() < sampler.per_batch()[g])
      input_error(
          "{}: group '{}' has {} training samples, fewer than the {} that every batch of "
          "train.batch_size = {} takes from it; lower train.batch_size",
          config.path, groups[g].name, groups[g].train.size(), sampler.per_batch()[g],
          config.train.batch_size);
  const size_t L = std::max_element(groups.begin(), groups.end(),
                                    [](const GroupData& a, const GroupData& b) {
                                      return a.train.size() < b.train.size();
                                    }) -
                   groups.begin();     // the largest group, whose pass is a resampled epoch
  if (sampler.steps_per_epoch() == 0)  // resampling: the largest group cannot fill its share
    input_error(
        "{}: group '{}', the largest, has {} training samples, fewer than the {} that every "
        "batch of train.batch_size = {} takes from it, so an epoch (one pass over the largest "
        "group) would have no step; lower train.batch_size or its share of a batch",
        config.path, groups[L].name, groups[L].train.size(), sampler.per_batch()[L],
        config.train.batch_size);
  // Under resampling an epoch's order holds steps · B indices, more than the data when the
  // largest group's share is tiny: bounded before anything is allocated.
  const int64_t indices = sampler.steps_per_epoch() * config.train.batch_size;
  if (sampler.resamples() && indices > (int64_t(1) << 28))
    input_error(
        "{}: an epoch of {} steps (one pass over the largest group, '{}', {} of it per batch) "
        "of train.batch_size = {} needs an order of {} sample indices ({:.1f} GiB); raise that "
        "group's share of a batch or lower train.batch_size",
        config.path, sampler.steps_per_epoch(), groups[L].name, sampler.per_batch()[L],
        config.train.batch_size, indices, double(indices) * 8 / (1 << 30));
  return sampler;
}

// The first SIGINT or SIGTERM during train() asks the loop to stop after its current step;
// a second one ends the process as usual (SA_RESETHAND).
std::atomic<int> g_stop_signal{0};
extern "C" void request_stop(int sig) { g_stop_signal = sig; }

const char* signal_name(int sig) { return sig == SIGINT ? "SIGINT" : "SIGTERM"; }
// The signal that stopped training; a rank told to stop by another one reports SIGTERM.
int stop_signal() { return g_stop_signal != 0 ? g_stop_signal.load() : SIGTERM; }

class StopSignals {
 public:
  StopSignals() {
    g_stop_signal = 0;
    struct sigaction action = {};
    action.sa_handler = request_stop;
    action.sa_flags = SA_RESETHAND;
    sigemptyset(&action.sa_mask);
    sigaction(SIGINT, &action, &old_int_);
    sigaction(SIGTERM, &action, &old_term_);
  }
  ~StopSignals() {
    sigaction(SIGINT, &old_int_, nullptr);
    sigaction(SIGTERM, &old_term_, nullptr);
  }

 private:
  struct sigaction old_int_ = {}, old_term_ = {};
};

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
                 std::unique_ptr<Backend<float>> backend, std::unique_ptr<Collectives> collectives)
    : config_(std::move(config)),
      groups_(std::move(groups)),
      backend_(backend ? std::move(backend) : make_cpu_backend<float>()),
      comm_(std::move(collectives)),
      model_(config_, sample_shapes(config_, groups_)),
      settings_(LossSettings::from(config_, train_sizes(groups_))),
      sampler_(make_sampler(config_, groups_, comm_ ? comm_->size() : 1)),
      loss_(model_, settings_, *backend_, sampler_.per_batch(), comm_.get()),
      predictor_(model_, *backend_, config_.train.eval_batch),
      params_(*backend_, model_.size()),
      grads_(*backend_, model_.size()),
      adam_m_(*backend_, model_.size()),
      adam_v_(*backend_, model_.size()),
      q_(*backend_, int64_t(groups_.size())),
      window_(*backend_, loss_.stats_size()),
      status_(*backend_, 2),
      clock_(*backend_, 2) {
  if (config_.train.select != Select::last &&
      std::none_of(groups_.begin(), groups_.end(), [](auto& g) { return g.val.size() > 0; }))
    input_error(
        "{}: train.select = \"{}\" needs a validation split, but no group has one "
        "(set data.val_fraction > 0, or val_x/val_y for a group)",
        config_.path, name(config_.train.select));
  backend_->set_deterministic(config_.train.deterministic);
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
  step_in_epoch_ = s.step_in_epoch;
  epoch_sums_ = s.epoch_sums;
  best_score_ = s.best_score;
  best_epoch_ = s.best_epoch;
  epoch_sums_.resize(loss_.stats_size(), 0.0);
  set_clock();
}

void Trainer::set_clock() { clock_.upload(std::vector<int64_t>{step_, step_in_epoch_}); }

TrainState Trainer::state() const {
  TrainState s;
  s.params = params_.download();
  s.adam_m = adam_m_.download();
  s.adam_v = adam_v_.download();
  s.q = q_.download();
  s.step = step_;
  s.epoch = epoch_;
  s.step_in_epoch = step_in_epoch_;
  if (step_in_epoch_ > 0) s.epoch_sums = epoch_sums_;
  s.best_score = best_score_;
  s.best_epoch = best_epoch_;
  for (const GroupData& g : groups_) s.groups.push_back(g.name);
  s.batch_size = config_.train.batch_size;
  s.train_sizes = train_sizes(groups_);
  s.seed = config_.train.seed;
  s.has_seed = true;
  s.sampler = sampler_.describe();
  return s;
}

void Trainer::load(const std::string& checkpoint_path, bool to_resume) {
  std::vector<std::string> names;
  for (const GroupData& g : groups_) names.push_back(g.name);
  TrainState loaded = load_checkpoint(checkpoint_path, model_, names);
  if (loaded.q.empty()) loaded.q = q_.download();  // a model exported without its GroupDRO state
  // Inside an epoch, the sampler's order of that epoch must be the one the checkpoint's steps
  // took: another batch size, seed, group order or training-set size would skip some samples
  // and repeat others. Evaluating it needs no sampler.
  if (to_resume && loaded.step_in_epoch > 0) {
    auto refuse = [&](const char* key, const std::string& then, const std::string& now) {
      input_error(
          "{}: the checkpoint stands inside epoch {} (step {} of it), taken with {} = {}, but the "
          "config now has {}: the rest of the epoch would skip some samples and repeat others. "
          "Resume with {} = {} (it may change once the epoch is complete), or start a new run",
          checkpoint_path, loaded.epoch + 1, loaded.step_in_epoch, key, then, now, key, then);
    };
    const TrainConfig& t = config_.train;
    if (loaded.batch_size > 0 && loaded.batch_size != t.batch_size)
      refuse("train.batch_size", std::to_string(loaded.batch_size), std::to_string(t.batch_size));
    if (loaded.has_seed && loaded.seed != t.seed)
      refuse("train.seed", std::to_string(loaded.seed), std::to_string(t.seed));
    if (!loaded.groups.empty() && loaded.groups != names)
      refuse("the group order", fmt::format("{}", fmt::join(loaded.groups, ", ")),
             fmt::format("{}", fmt::join(names, ", ")));
    const std::vector<int64_t> sizes = train_sizes(groups_);
    if (!loaded.train_sizes.empty() && loaded.train_sizes != sizes)
      refuse("the training-set sizes (data, data.val_fraction, data.val_seed)",
             fmt::format("{}", fmt::join(loaded.train_sizes, ", ")),
             fmt::format("{}", fmt::join(sizes, ", ")));
    // After the sizes, on which proportional counts depend. A checkpoint from before the sampler
    // was stored can only have used proportional shares.
    const std::string then = !loaded.sampler.empty() ? loaded.sampler
                             : loaded.has_seed && sampler_.resamples()
                                 ? "proportional (a checkpoint from before train.group_batch)"
                                 : "";
    if (!then.empty() && then != sampler_.describe())
      refuse("the batch shares (train.group_batch, data.groups[].batch_share)", excerpt(then),
             sampler_.describe());
    if (loaded.step_in_epoch >= sampler_.steps_per_epoch() ||
        loaded.epoch_sums.size() != size_t(loss_.stats_size()))
      input_error(
          "{}: the checkpoint stands at step {} of an epoch of {} steps with {} statistics; "
          "it was written for another data set or config",
          checkpoint_path, loaded.step_in_epoch, sampler_.steps_per_epoch(),
          loaded.epoch_sums.size());
  }
  upload_state(loaded);
}

void Trainer::upload_training_data() {
  if (!train_x_.empty()) return;
  for (const GroupData& g : groups_) {
    train_x_.emplace_back(*backend_, int64_t(g.train.x.data.size()));
    train_x_.back().upload(g.train.x.data);
    train_y_.emplace_back(*backend_, g.train.size());
    train_y_.back().upload(g.train.y);
    order_.emplace_back(*backend_, sampler_.order_size(int(order_.size())));
  }
}

void Trainer::upload_eval_data() {
  if (!test_x_.empty()) return;
  for (const GroupData& g : groups_) {
    test_x_.emplace_back(*backend_, int64_t(g.test.x.data.size()));
    test_x_.back().upload(g.test.x.data);
    val_x_.emplace_back(*backend_, std::max<int64_t>(int64_t(g.val.x.data.size()), 1));
    if (g.val.size() > 0) val_x_.back().upload(g.val.x.data);
  }
}

void Trainer::start_epoch(int epoch, int64_t batch) {
  upload_training_data();
  sampler_.start_epoch(epoch);
  for (size_t g = 0; g < groups_.size(); ++g) {
    if (!comm_) {
      order_[g].upload(sampler_.order(int(g)));
      continue;
    }
    // This rank's rows of each step's batch, step after step, so that gather_batch takes batch
    // b from b·rows (docs/DESIGN.md §7).
    const std::vector<int64_t>& order = sampler_.order(int(g));
    const int64_t n = sampler_.per_batch()[g], rows = loss_.rows()[g], offset = loss_.offset()[g];
    std::vector<int64_t> mine;
    for (int64_t s = 0; s < sampler_.steps_per_epoch(); ++s)
      mine.insert(mine.end(), order.begin() + s * n + offset,
                  order.begin() + s * n + offset + rows);
    order_[g].upload(mine);
  }
  step_in_epoch_ = batch;
  set_clock();
}

// One step's ops, from the batch gather to the clock's advance. Every pointer is fixed for the
// trainer's life and every per-step value is read from the clock, so the same calls can be
// recorded once and replayed (docs/DESIGN.md §3).
void Trainer::issue_step() {
  Backend<float>& be = *backend_;
  const int64_t* step = clock_.data();
  const int64_t* batch = clock_.data() + 1;
  const std::vector<int>& rows = loss_.rows();  // this rank's share (all of it: one process)
  for (int g = 0, row = 0; g < int(groups_.size()); row += rows[g], ++g)
    be.gather_batch(loss_.batch_x(g), loss_.batch_y() + row, train_x_[g].data(), train_y_[g].data(),
                    order_[g].data(), batch, rows[g], model_.encoder(g).input_size());
  grads_.zero();
  loss_.run(params_.data(), grads_.data(), q_.data(), step);
  be.check_finite(status_.data(), loss_.stats(), StepStats::checked(int(groups_.size())),
                  grads_.data(), model_.size(), step);
  const TrainConfig& t = config_.train;
  be.adam_update(params_.data(), adam_m_.data(), adam_v_.data(), grads_.data(), model_.size(),
                 float(t.lr), 0.9f, 0.999f, 1e-8f, float(t.weight_decay), step, status_.data());
  be.groupdro_commit(q_.data(), loss_.next_q(), int(groups_.size()), status_.data());
  be.accumulate(window_.data(), loss_.stats(), loss_.stats_size(), status_.data());
  be.advance_clock(clock_.data());
}

void Trainer::use_graph(bool on) {
  use_graph_ = on;
  if (!on) graph_.reset();
}

std::string Trainer::why_no_graph() const {
  if (!use_graph_) return "--no-graph";
  // The collectives run on the host between ops (MPI), outside anything a backend could record.
  if (comm_) return "data parallel: the collectives run between the ops";
  if (backend_->sync_check()) return "sync-check: every op is waited for and checked";
  return record_failed_;
}

void Trainer::step() {
  HETDRO_ASSERT(step_in_epoch_ < sampler_.steps_per_epoch());
  // In sync-check mode (docs/DESIGN.md §3) every step is issued op by op, and a failure names
  // the step; the mode may have been turned on after a recording was made.
  const bool sync_check = backend_->sync_check();
  if (sync_check) {
    graph_.reset();
    backend_->set_where(fmt::format("step {} (batch {} of {} in its epoch)", step_ + 1,
                                    step_in_epoch_ + 1, sampler_.steps_per_epoch()));
  }
  if (graph_) {
    graph_->replay();
  } else {
    issue_step();
  }
  if (sync_check) backend_->set_where(fmt::format("after step {}", step_ + 1));
  // Counted before any recording, so that a recording that fails leaves the host's count in
  // step with the device's clock and parameters.
  ++step_;
  ++window_steps_;
  ++step_in_epoch_;
  if (graph_ || !use_graph_ || comm_ || sync_check || !record_failed_.empty())
    return;  // why_no_graph()'s cases
  // The first step, issued op by op, has sized every workspace and chosen every library
  // algorithm; now the step can be recorded without allocating inside the recording. Recording
  // runs nothing, and a recording that fails leaves the steps issued op by op, and says why once
  // (run_epoch); a real fault shows again at the next op.
  try {
    graph_ = backend_->record([this] { issue_step(); }, &record_failed_);
  } catch (const std::exception& e) {
    graph_.reset();
    record_failed_ = fmt::format("recording the step as a CUDA Graph failed: {}", e.what());
  }
}

StepTimes Trainer::time_steps(int warmup, int count) {
  StepTimes times;
  int epoch = epoch_;
  start_epoch(epoch);
  auto next = [&] {
    if (step_in_epoch_ == sampler_.steps_per_epoch()) start_epoch(++epoch);
    step();
  };
  for (int i = 0; i < warmup + count; ++i) {
    const double t = backend_->time_ms(next);
    if (i >= warmup) times.each.push_back(t);
  }
  // As training runs them: one after another, nothing waiting between them.
  times.back_to_back = backend_->time_ms([&] {
    for (int i = 0; i < count; ++i) next();
  }) / std::max(count, 1);
  read_window();
  return times;
}

Window Trainer::read_window() {
  const std::vector<double> sums = window_.download();
  const std::vector<int64_t> status = status_.download();
  window_.zero();
  Window w{window_steps_, sums, StepStats::decode(sums.data(), int(groups_.size()), settings_)};
  window_steps_ = 0;
  if (status[0] >= 0) {
    // Adam, q's commit and the window skipped the bad step and every later one: keep the good
    // steps' sums and rewind to the last good step, so that a checkpoint taken now resumes
    // from it exactly.
    for (size_t i = 0; i < sums.size(); ++i) epoch_sums_[i] += sums[i];
    const int64_t skipped = step_ - (status[0] - 1);
    step_ -= skipped;
    step_in_epoch_ -= skipped;
    status_.upload(std::vector<int64_t>{-1, -1});
    set_clock();
    const int64_t where = status[1];
    if (step_status::is_solver_failure(where))  // before any value went bad (DESIGN.md §3)
      throw std::runtime_error(fmt::format(
          "step {}: {}; Adam skipped the step, so the parameters are those after step {}.",
          status[0], step_status::describe(where), step_));
    const std::string what =
        where < 0
            ? fmt::format("the loss term {}", StepStats::name(int(-1 - where), int(groups_.size())))
            : fmt::format("the gradient of {}", model_.param_at(where).name);
    throw std::runtime_error(fmt::format(
        "{} became non-finite at step {}; Adam skipped it, so the parameters are those after "
        "step {}.",
        what, status[0], step_));
  }
  return w;
}

Evaluation Trainer::evaluate(SplitKind kind) {
  upload_eval_data();
  const int C = model_.classes();
  Evaluation e;
  e.worst = 1.0;
  for (int g = 0; g < int(groups_.size()); ++g) {
    const Split& split = kind == SplitKind::test ? groups_[g].test : groups_[g].val;
    if (split.size() == 0) continue;
    const float* x = (kind == SplitKind::test ? test_x_ : val_x_)[g].data();
    GroupEval r{groups_[g].name, split.size(), 0, 0, std::vector<int64_t>(size_t(C) * C, 0)};
    // Each rank predicts its contiguous share of the split; the confusion counts are summed.
    const Shard share =
        shard_rows({int(split.size())}, comm_ ? comm_->rank() : 0, comm_ ? comm_->size() : 1);
    const int64_t first = share.offset[0], count = share.rows[0];
    const std::vector<int32_t> pred =
        predictor_.predict(params_.data(), g, x + first * model_.encoder(g).input_size(), count);
    for (int64_t i = 0; i < count; ++i) ++r.confusion[size_t(split.y[first + i]) * C + pred[i]];
    if (comm_) comm_->all_reduce_host(r.confusion.data(), int64_t(r.confusion.size()));
    int64_t correct = 0;
    std::vector<int64_t> per_class(C, 0);
    for (int c = 0; c < C; ++c) correct += r.confusion[size_t(c) * C + c];
    for (int32_t y : split.y) ++per_class[y];
    r.accuracy = double(correct) / double(split.size());
    r.majority = double(*std::max_element(per_class.begin(), per_class.end())) / split.size();
    e.worst = std::min(e.worst, r.accuracy);
    e.groups.push_back(std::move(r));
  }
  for (const GroupEval& r : e.groups) e.mean += r.accuracy / double(e.groups.size());
  if (e.groups.empty()) e.worst = 0;
  return e;
}

// Keeps best.safetensors for the best validation score so far (docs/DESIGN.md §4).
void Trainer::select_model(RunFolder* folder, int epoch, const Evaluation& val) {
  const double score = config_.train.select == Select::worst_val ? val.worst : val.mean;
  if (score <= best_score_) return;
  best_score_ = score;
  best_epoch_ = epoch;
  if (folder) save_checkpoint(folder->best_path(), model_, state());
}

void Trainer::save_latents(const std::string& path, int64_t per_group) {
  upload_eval_data();
  std::vector<NpzArray> arrays;
  const int64_t k = model_.latent_dim(), C = model_.classes();
  for (int g = 0; g < int(groups_.size()); ++g) {
    const int64_t n = std::min<int64_t>(per_group, groups_[g].test.size());
    arrays.push_back({"z." + groups_[g].name,
                      {n, k},
                      predictor_.latents(params_.data(), g, test_x_[g].data(), n),
                      {}});
    const std::vector<int32_t>& y = groups_[g].test.y;
    arrays.push_back(
        {"y." + groups_[g].name, {n}, {}, std::vector<int32_t>(y.begin(), y.begin() + n)});
  }
  // The anchors, from a host copy of the parameters (an export, outside the step).
  const std::vector<float> params = params_.download();
  const float* mean = params.data() + model_.anchor_mean();
  std::vector<float> cov(size_t(C * k * k));
  cpu::anchor_cov_forward(cov.data(), params.data() + model_.anchor_chol(), int(C), int(k),
                          float(config_.train.eps));
  arrays.push_back({"anchor_mean", {C, k}, std::vector<float>(mean, mean + C * k), {}});
  arrays.push_back({"anchor_cov", {C, k, k}, cov, {}});
  write_npz(path, arrays);
}

std::vector<int32_t> Trainer::predict(int g, const Array<float>& x,
                                      std::vector<float>& probabilities) {
  std::vector<int32_t> classes;
  predictor_.probabilities_host(params_.data(), g, x.data.data(), x.rows(), probabilities, classes);
  return classes;
}

std::vector<int32_t> Trainer::predict(int g, const Array<float>& x) {
  return predictor_.predict_host(params_.data(), g, x.data.data(), x.rows());
}

// What most often makes training blow up, from the config and the data at hand.
std::string Trainer::resume_command(const std::string& dir) const {
  // Several ranks resume as several ranks (docs/DESIGN.md §7).
  const std::string mpi =
      comm_ && comm_->size() > 1 ? fmt::format("mpirun -np {} ", comm_->size()) : "";
  return fmt::format("{}hetdro train --resume {}", mpi, dir);
}

std::string Trainer::failure_hints() const {
  std::vector<std::string> hints;
  const TrainConfig& t = config_.train;
  if (t.lr > 0.1)
    hints.push_back(fmt::format("train.lr = {} is large (typical: 1e-4 to 1e-2)", t.lr));
  if (t.objective == Objective::groupdro && t.groupdro_eta > 1)
    hints.push_back(fmt::format(
        "train.groupdro_eta = {} is large: q swings to one group within a step (typical: "
        "0.001 to 1)",
        t.groupdro_eta));
  if (config_.model.anchor_scale > 100)
    hints.push_back(
        fmt::format("model.anchor_scale = {} is large (typical: 1)", config_.model.anchor_scale));
  if (t.lambda_fit > 10 || t.lambda_sep > 10)
    hints.push_back(fmt::format("train.lambda_fit = {} / lambda_sep = {} are large (typical: 1e-3)",
                                t.lambda_fit, t.lambda_sep));
  for (const GroupData& g : groups_) {
    float top = 0;
    for (float x : g.train.x.data) top = std::max(top, std::abs(x));
    if (top > 1e6)
      hints.push_back(
          fmt::format("group '{}' has features as large as {:g}; scale its inputs", g.name, top));
  }
  if (hints.empty()) return "Try a smaller train.lr or a larger train.eps.";
  std::string text = "Likely cause: ";
  for (size_t i = 0; i < hints.size(); ++i) text += (i ? "; " : "") + hints[i];
  return text + ".";
}

// Adds a window to the epoch's sums, and warns the first time in an epoch that a group's ReLU
// latent was all 0 (docs/DESIGN.md §1).
void Trainer::add_window(const Window& w, int epoch, int64_t step, ProgressBar& bar) {
  const int G = int(groups_.size()), dead = StepStats::dead(G);
  for (int g = 0; g < G; ++g) {
    const double steps = w.stats[dead + g];
    if (steps == 0 || epoch_sums_[dead + g] > 0 || !lead()) continue;
    bar.clear();  // the warning must not land inside the progress line
    fmt::print(
        stderr,
        "warning: epoch {} step {}: group '{}' has all {} latent units at 0 over its {} "
        "samples{} (dead ReLU latent; docs/DESIGN.md §1). latent_activation = \"none\" "
        "avoids it.\n",
        epoch, step, groups_[g].name, model_.latent_dim(), sampler_.per_batch()[g],
        w.steps > 1 ? fmt::format(", in {} of the {} steps up to here", steps, w.steps) : "");
  }
  for (size_t i = 0; i < w.stats.size(); ++i) epoch_sums_[i] += w.stats[i];
}

void Trainer::checkpoint(RunFolder* folder) {
  if (folder) save_checkpoint(folder->checkpoint_path(), model_, state());
}

bool Trainer::stop_requested() {
  int64_t stop = g_stop_signal != 0 ? 1 : 0;
  if (comm_) comm_->all_reduce_host(&stop, 1);
  return stop > 0;
}

// The rest of epoch `epoch` (from step_in_epoch_), or `budget` steps of it when budget ≥ 0,
// reading the statistics at the logging points and checkpointing every
// train.checkpoint_every steps. Fills the record; returns false when the budget ran out first.
bool Trainer::run_epoch(int epoch, int64_t budget, RunFolder* folder, EpochRecord& r,
                        std::vector<double>& step_ms) {
  const int64_t steps = sampler_.steps_per_epoch();
  const int64_t every = config_.train.checkpoint_every;
  // Ops that finish before they return cost nothing to read after; others are read in windows.
  const int64_t read_every = backend_->synchronous() ? 1 : kReadEvery;
  const int64_t progress_every = steps >= 200 ? steps / 4 : steps + 1;
  start_epoch(epoch - 1, step_in_epoch_);
  if (step_in_epoch_ == 0) epoch_sums_.assign(loss_.stats_size(), 0.0);
  double epoch_ms = 0;
  int64_t done = 0;
  ProgressBar bar;
  auto window_start = Clock::now();
  for (int64_t s = step_in_epoch_; s < steps; ++s) {
    if (budget >= 0 && done >= budget) break;
    step();
    ++done;
    if (!graph_reported_) {
      // Once per run, after the first step: whether the rest replay one recorded CUDA Graph.
      graph_reported_ = true;
      if (graph_)
        fmt::print("step: recorded as one CUDA Graph after its first run, replayed from then on\n");
      else if (!backend_->synchronous() || backend_->sync_check())
        fmt::print("step: issued op by op ({})\n", why_no_graph());
    }
    const bool stop = stop_requested();
    const bool save = every > 0 && step_ % every == 0 && s + 1 < steps;
    const bool progress = (s + 1) % progress_every == 0;
    if (!(s + 1 == steps || stop || save || progress || done == budget ||
          (s + 1) % read_every == 0))
      continue;
    const Window w = read_window();
    const double ms =
        std::chrono::duration<double, std::milli>(Clock::now() - window_start).count();
    step_ms.push_back(ms / double(w.steps));
    epoch_ms += ms;
    add_window(w, epoch, s + 1, bar);
    const double loss =
        StepStats::decode(epoch_sums_.data(), int(groups_.size()), settings_).total / double(s + 1);
    const double per_step_ms = median(step_ms);
    const int64_t left = steps - (s + 1) + steps * (config_.train.epochs - epoch);
    if (bar.active())
      bar.update(epoch, config_.train.epochs, s + 1, steps, 1000.0 / per_step_ms, loss,
                 left * per_step_ms / 1000.0);
    else if (progress)
      fmt::print("  epoch {} step {}/{}  loss {:.4f}  {:.1f} ms/step\n", epoch, s + 1, steps, loss,
                 per_step_ms);
    std::fflush(stdout);
    // A stop on the epoch's last step lets the epoch finish: train() evaluates, records and
    // checkpoints it whole, then stops.
    if (stop && s + 1 == steps) break;
    if (save || stop) checkpoint(folder);
    if (stop) {
      bar.clear();
      throw Interrupted(stop_signal(), fmt::format("{} at epoch {} step {} of {}; checkpoint "
                                                   "written. Resume with: {}",
                                                   signal_name(stop_signal()), epoch, s + 1, steps,
                                                   resume_command(folder ? folder->dir() : "")));
    }
    window_start = Clock::now();
  }
  bar.clear();
  r.done = step_in_epoch_;
  if (r.done == 0) return false;
  const LossTerms sums = StepStats::decode(epoch_sums_.data(), int(groups_.size()), settings_);
  const double n = double(r.done);
  r.mean = sums;
  r.mean.total /= n;
  r.mean.clf /= n;
  r.mean.fit /= n;
  r.mean.sep /= n;
  r.skipped_slots = sums.skipped_slots;
  r.dead_steps = sums.dead;
  r.step = step_;
  r.samples_per_s = done > 0 ? config_.train.batch_size * 1000.0 * double(done) / epoch_ms : 0;
  return r.done == steps;
}

void Trainer::train(const std::string& out_dir, const TrainOptions& options) {
  const TrainConfig& t = config_.train;
  // Only the lead rank writes the run folder; every rank resumes from its checkpoint.
  std::unique_ptr<RunFolder> lead_folder;
  if (lead())
    lead_folder = std::make_unique<RunFolder>(out_dir, options.overwrite, options.resume, config_);
  if (comm_) comm_->barrier();  // the folder checked (or the job aborted) before any rank reads
  RunFolder* folder = lead_folder.get();
  if (options.resume) {
    load(RunFolder::checkpoint_in(out_dir), /*to_resume=*/true);
    if (folder) folder->resume_at(epoch_, config_);  // only now that the checkpoint passed
    fmt::print("resuming {} at epoch {} step {} of {} (step {} overall)\n", out_dir, epoch_ + 1,
               step_in_epoch_, sampler_.steps_per_epoch(), step_);
  }
  print_header(config_, model_, groups_, sampler_, backend_->name());
  if (t.select != Select::last)
    fmt::print("model selection: train.select = \"{}\"; the best model goes to {}\n",
               name(t.select), RunFolder::best_in(out_dir));
  const StopSignals signals;
  const auto run_start = Clock::now();
  std::vector<double> all_step_ms;
  Evaluation eval;
  bool evaluated = false;
  // --max-steps: the steps this invocation may still take (−1: no limit).
  int64_t budget = options.max_steps > 0 ? options.max_steps : -1;
  try {
    for (int epoch = epoch_ + 1; epoch <= t.epochs; ++epoch) {
      EpochRecord r;
      r.epoch = epoch;
      r.epochs = t.epochs;
      r.steps_per_epoch = sampler_.steps_per_epoch();
      r.relu_latent = config_.model.latent_activation == LatentActivation::relu;
      for (auto& g : groups_) r.group_names.push_back(g.name);
      std::vector<double> step_ms;
      const int64_t before = step_;
      const bool complete = run_epoch(epoch, budget, folder, r, step_ms);
      if (budget >= 0) budget -= step_ - before;
      if (r.done == 0) break;
      eval = evaluate();
      const Evaluation val = evaluate(SplitKind::val);
      const Evaluation* has_val = val.groups.empty() ? nullptr : &val;
      evaluated = true;
      r.step_ms = median(step_ms);
      r.q = q_.download();
      all_step_ms.insert(all_step_ms.end(), step_ms.begin(), step_ms.end());
      // A partial epoch (--max-steps) is recorded as such; resuming replaces its line.
      if (folder) folder->append_metrics(metrics_json(r, eval, has_val));
      if (complete) {
        epoch_ = epoch;
        step_in_epoch_ = 0;
        if (t.select != Select::last) select_model(folder, epoch, val);
      }
      print_epoch(r, eval, has_val);
      checkpoint(folder);
      if (stop_requested())
        throw Interrupted(stop_signal(),
                          fmt::format("{} at the end of epoch {}; checkpoint written. Resume "
                                      "with: {}",
                                      signal_name(stop_signal()), epoch, resume_command(out_dir)));
      if (!complete || budget == 0) break;
    }
    if (!evaluated) {  // no step ran: still leave a checkpoint
      eval = evaluate();
      checkpoint(folder);
    }
  } catch (const Interrupted&) {
    throw;
  } catch (const InputError&) {
    throw;
  } catch (const std::system_error& e) {
    // A failed write to standard output (fmt::print) or a file system call: the environment,
    // like a WriteError below, with nothing in the numbers to blame.
    throw WriteError(fmt::format(
        "{}. The run stopped at epoch {} step {} (step {} overall); its folder keeps the last "
        "checkpoint written. Continue with: {}",
        e.what(), epoch_ + 1, step_in_epoch_, step_, resume_command(out_dir)));
  } catch (const WriteError& e) {
    // The run folder cannot be written: nothing in the numbers to blame, and no use writing
    // there again. The last checkpoint that was written is whole (written atomically).
    throw WriteError(fmt::format(
        "{}. The run stopped at epoch {} step {} (step {} overall); its folder keeps the last "
        "checkpoint written. Once the folder can be written, continue with: {}",
        e.what(), epoch_ + 1, step_in_epoch_, step_, resume_command(out_dir)));
  } catch (const std::exception& e) {
    // The parameters are those of the last good step (Adam skips a non-finite one, and an op
    // that throws stops the step before Adam): keep them, and say in report.json why the run
    // stopped and what likely caused it.
    const std::string why = fmt::format("{} {}", e.what(), failure_hints());
    std::string kept = "The run folder keeps the last good checkpoint";
    try {
      checkpoint(folder);
    } catch (const std::exception& not_written) {
      // save_checkpoint refuses non-finite parameters: the file on disk stays the one before.
      kept =
          fmt::format("{}. The run folder keeps the checkpoint written before", not_written.what());
    }
    try {
      if (folder) folder->write_report(failure_json(why, step_, epoch_));
    } catch (const WriteError& not_written) {
      kept += fmt::format(" (report.json not written: {})", not_written.what());
    }
    throw std::runtime_error(fmt::format("{} {}; after a fix, continue with: {} --set KEY=VALUE",
                                         why, kept, resume_command(out_dir)));
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
  if (folder) save_latents(folder->dir() + "/latents.npz");
  if (t.select != Select::last && best_epoch_ > 0) {
    // The selected model's test accuracy; the trainer holds it from here on.
    summary.select = name(t.select);
    summary.selected_epoch = best_epoch_;
    summary.selected_score = best_score_;
    if (comm_) comm_->barrier();  // the lead's last best.safetensors is written
    load(RunFolder::best_in(out_dir));
    summary.selected = evaluate();
  }
  if (!folder) return;
  folder->write_report(report_json(summary, eval));
  print_results(summary, eval, folder->dir());
}

}  // namespace hetdro
