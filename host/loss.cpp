// L = L_clf + λ_fit L_fit + λ_sep L_sep on one batch, forward and analytic backward (docs/DESIGN.md
// §1–2), as a fixed sequence of backend ops over buffers planned once (docs/DESIGN.md §6).
#include "hetdro/loss.h"

#include <algorithm>
#include <cmath>

#include "hetdro/check.h"
#include "hetdro/ops.h"  // w2_gaussian_saved_size

namespace hetdro {

LossSettings LossSettings::from(const Config& c) {
  LossSettings s;
  s.lambda_fit = c.train.lambda_fit;
  s.lambda_sep = c.train.lambda_sep;
  s.eps = c.train.eps;
  s.samples_per_anchor = c.train.samples_per_anchor;
  s.fit = c.train.fit;
  s.objective = c.train.objective;
  s.groupdro_eta = c.train.groupdro_eta;
  s.groupdro_update = c.train.groupdro_update;
  s.groupdro_objective = c.train.groupdro_objective;
  s.groupdro_tau = c.train.groupdro_tau;
  s.groupdro_gamma = c.train.groupdro_gamma;
  s.seed = c.train.seed;
  return s;
}

LossSettings LossSettings::from(const Config& c, const std::vector<int64_t>& train_sizes) {
  LossSettings s = from(c);
  if (c.train.groupdro_adjustment > 0)
    for (int64_t n : train_sizes)
      s.adjustment.push_back(c.train.groupdro_adjustment /
                             std::sqrt(double(std::max<int64_t>(n, 1))));
  return s;
}

LossTerms StepStats::decode(const double* stats, int groups, const LossSettings& settings) {
  LossTerms t;
  t.clf = stats[kClf];
  t.fit = stats[kFit];
  t.sep = stats[kSep];
  t.total = t.clf + settings.lambda_fit * t.fit + settings.lambda_sep * t.sep;
  t.fit_pairs = stats[kFitPairs];
  t.skipped_slots = stats[kSkippedSlots];
  t.group_loss.assign(stats + kGroupLoss, stats + kGroupLoss + groups);
  t.dead.assign(stats + dead(groups), stats + dead(groups) + groups);
  t.q.assign(stats + q(groups), stats + q(groups) + groups);
  return t;
}

const char* StepStats::name(int i, int groups) {
  if (i >= q(groups) && i < dead(groups)) return "GroupDRO weight";
  switch (i) {
    case kClf:
      return "loss_clf";
    case kFit:
      return "loss_fit";
    case kFitPairs:
      return "fit pair count";
    case kSkippedSlots:
      return "fit skipped count";
    case kSep:
      return "loss_sep";
    default:
      return "a group's mean cross-entropy";
  }
}

template <typename T>
Loss<T>::Loss(const Model& model, const LossSettings& settings, Backend<T>& backend,
              const std::vector<int>& rows, Collectives* collectives)
    : model_(model), s_(settings), be_(backend), comm_(collectives), global_rows_(rows) {
  HETDRO_ASSERT(int(rows.size()) == model.groups());
  const Shard shard = shard_rows(rows, comm_ ? comm_->rank() : 0, comm_ ? comm_->size() : 1);
  rows_ = shard.rows;
  offset_ = shard.offset;
  const int C = model.classes(), G = int(rows_.size());
  for (int n : rows_) B_ += n;
  for (int n : rows) global_B_ += n;
  slots_ = s_.fit == Fit::per_group ? G * C : s_.fit == Fit::pooled ? C : 0;
  sep_n_ = C * s_.samples_per_anchor;
  block_ = plan(be_, "the training step's workspace",
                "lower train.batch_size, or the model's sizes (channels, hidden, latent_dim, "
                "samples_per_anchor)",
                [this](Arena& a) { layout(a); });

  // Constants of the batch's fixed shape, uploaded once. clf_objective sees the global batch:
  // its counts, and n = global_B_ entries of group_ (this shard's, then padding it never
  // uses for this shard's weights).
  std::vector<int32_t> group, sep_labels(sep_n_);
  for (int g = 0; g < G; ++g) group.insert(group.end(), rows_[g], g);
  group.resize(size_t(global_B_), 0);
  be_.upload(group_, group.data(), group.size() * sizeof(int32_t));
  be_.upload(group_count_, global_rows_.data(), global_rows_.size() * sizeof(int32_t));
  std::vector<double> adjustment = s_.adjustment;
  adjustment.resize(G, 0.0);
  be_.upload(adjustment_, adjustment.data(), adjustment.size() * sizeof(double));
  for (int i = 0; i < sep_n_; ++i) sep_labels[i] = i / s_.samples_per_anchor;
  std::vector<T> sep_weight(sep_n_, T(s_.lambda_sep / sep_n_));
  be_.upload(sep_labels_, sep_labels.data(), sep_labels.size() * sizeof(int32_t));
  be_.upload(sep_weight_, sep_weight.data(), sep_weight.size() * sizeof(T));
  const int64_t first_step = 0;
  be_.upload(first_step_, &first_step, sizeof(first_step));
}

template <typename T>
void Loss<T>::layout(Arena& a) {
  const int G = int(rows_.size()), C = model_.classes(), k = model_.latent_dim();
  const int64_t kk = int64_t(k) * k, S = slots_;
  x_.assign(G, nullptr);
  for (int g = 0; g < G; ++g) x_[g] = a.take<T>(int64_t(rows_[g]) * model_.encoder(g).input_size());
  y_ = a.take<int32_t>(B_);
  group_ = a.take<int32_t>(global_B_);
  group_count_ = a.take<int32_t>(G);
  adjustment_ = a.take<double>(G);
  q_next_ = a.take<double>(G);
  stats_ = a.take<double>(stats_size());
  first_step_ = a.take<int64_t>(1);

  enc_.assign(G, {});
  for (int g = 0; g < G; ++g) model_.plan_encoder(a, g, rows_[g], true, enc_[g]);
  model_.plan_classifier(a, B_, true, cls_);
  model_.plan_classifier(a, sep_n_, true, sep_cls_);
  z_ = a.take<T>(int64_t(B_) * k);
  logits_ = a.take<T>(int64_t(B_) * C);
  probs_ = a.take<T>(int64_t(B_) * C);
  loss_ = a.take<T>(B_);
  weight_ = a.take<T>(global_B_);
  group_sum_ = a.take<T>(G);

  slot_ = a.take<int32_t>(B_);
  count_ = a.take<int32_t>(S);
  mean_ = a.take<T>(S * k);
  cov_ = a.take<T>(S * kk);
  w2_ = a.take<T>(S);
  dw2_ = a.take<T>(S);
  saved_ = a.take<T>(S * w2_gaussian_saved_size(k));
  const bool repeated = s_.fit == Fit::per_group;
  anchor_cov_ = a.take<T>(S > 0 ? C * kk : 0);
  m2_ = a.take<T>(repeated ? S * k : 0);
  B2_ = a.take<T>(repeated ? S * kk : 0);

  sep_z_ = a.take<T>(int64_t(sep_n_) * k);
  sep_xi_ = a.take<T>(int64_t(sep_n_) * k);
  sep_logits_ = a.take<T>(int64_t(sep_n_) * C);
  sep_probs_ = a.take<T>(int64_t(sep_n_) * C);
  sep_loss_ = a.take<T>(sep_n_);
  sep_weight_ = a.take<T>(sep_n_);
  sep_labels_ = a.take<int32_t>(sep_n_);

  grad_begin_ = dz_ = a.take<T>(int64_t(B_) * k);
  dlogits_ = a.take<T>(int64_t(B_) * C);
  dmean_ = a.take<T>(S * k);
  dcov_ = a.take<T>(S * kk);
  danchor_cov_ = a.take<T>(S > 0 ? C * kk : 0);
  dm2_ = a.take<T>(repeated ? S * k : 0);
  dB2_ = a.take<T>(repeated ? S * kk : 0);
  sep_dlogits_ = a.take<T>(int64_t(sep_n_) * C);
  sep_dz_ = a.take<T>(int64_t(sep_n_) * k);
  grad_end_ = a.take<T>(0);
}

template <typename T>
void Loss<T>::run(const T* P, T* G, const double* q, const int64_t* step) {
  if (!step) step = first_step_;
  be_.zero(stats_, size_t(stats_size()) * sizeof(double));
  if (G) be_.zero(grad_begin_, size_t(grad_end_ - grad_begin_) * sizeof(T));
  encode(P);
  clf_term(P, G, q);
  if (s_.fit != Fit::none) fit_term(P, G);
  if (s_.samples_per_anchor > 0) sep_term(P, G, step);
  if (G) encode_backward(P, G);
  if (G && comm_) comm_->all_reduce(G, model_.size(), Reduce::sum);
}

// Each group's encoder into its rows of the shared latent z (group order), and the dead-latent
// flags (docs/DESIGN.md §1).
template <typename T>
void Loss<T>::encode(const T* P) {
  const int G = int(rows_.size()), k = model_.latent_dim();
  for (int g = 0, row = 0; g < G; row += rows_[g], ++g) {
    T* zg = z_ + int64_t(row) * k;
    model_.encoder_forward(be_, g, P, x_[g], rows_[g], zg, enc_[g]);
    be_.all_zero(stats_ + StepStats::dead(G) + g, zg, int64_t(rows_[g]) * k);
  }
  // Dead over the global batch: dead on every rank.
  if (comm_) comm_->all_reduce(stats_ + StepStats::dead(G), G, Reduce::min);
}

// L_clf: ERM mean cross-entropy, or GroupDRO Σ_g q_g ℓ_g (docs/DESIGN.md §1).
template <typename T>
void Loss<T>::clf_term(const T* P, T* G, const double* q) {
  const int groups = int(rows_.size()), C = model_.classes();
  model_.classifier_forward(be_, P, z_, B_, logits_, cls_);
  be_.softmax_xent_forward(probs_, loss_, group_sum_, logits_, y_, group_, B_, C, groups);
  if (comm_) comm_->all_reduce(group_sum_, groups, Reduce::sum);
  ClfRule rule;
  rule.groupdro = s_.objective == Objective::groupdro;
  rule.objective = s_.groupdro_objective;
  rule.update = s_.groupdro_update;
  rule.eta = s_.groupdro_eta;
  rule.tau = s_.groupdro_tau;
  rule.gamma = s_.groupdro_gamma;
  // q follows the batch on training steps only; the exp update with η = 0 leaves it as it is.
  rule.update_q = G != nullptr && s_.update_q &&
                  !(s_.groupdro_update == GroupDroUpdate::exp && s_.groupdro_eta == 0);
  be_.clf_objective(stats_ + StepStats::kClf, stats_ + StepStats::kGroupLoss, q_next_, weight_, q,
                    group_sum_, group_count_, group_, adjustment_, global_B_, groups, rule);
  // The stats (zeroed above) carry q_next too, so check_finite sees a weight that overflowed.
  be_.accumulate(stats_ + StepStats::q(groups), q_next_, groups, nullptr);
  if (!G) return;
  be_.softmax_xent_backward(dlogits_, probs_, y_, weight_, B_, C);
  model_.classifier_backward(be_, P, G, z_, B_, dlogits_, dz_, cls_);
}

// L_fit: W2² between every slot's batch Gaussian and its class anchor; slots with n < 2 are
// masked (docs/DESIGN.md §1, §6). Pooled slots are the classes, so slot s pairs with anchor s in
// place; per_group slots g·C + c pair with the anchors repeated once per group.
template <typename T>
void Loss<T>::fit_term(const T* P, T* G) {
  const int C = model_.classes(), k = model_.latent_dim(), groups = int(rows_.size());
  const int64_t kk = int64_t(k) * k;
  const bool repeated = s_.fit == Fit::per_group;
  const T* anchor_mean = P + model_.anchor_mean();
  const T* anchor_chol = P + model_.anchor_chol();
  const T eps = T(s_.eps);
  be_.fit_slots(slot_, y_, repeated ? group_ : nullptr, B_, C);
  // With collectives, the moments of the global batch, the same on every rank.
  if (comm_)
    comm_->class_moments_forward(mean_, cov_, count_, z_, slot_, B_, k, slots_, eps);
  else
    be_.class_moments_forward(mean_, cov_, count_, z_, slot_, B_, k, slots_, eps);
  be_.anchor_cov_forward(anchor_cov_, anchor_chol, C, k, eps);
  const T* m2 = anchor_mean;
  const T* B2 = anchor_cov_;
  if (repeated) {
    be_.repeat_forward(m2_, anchor_mean, int64_t(C) * k, groups);
    be_.repeat_forward(B2_, anchor_cov_, C * kk, groups);
    m2 = m2_;
    B2 = B2_;
  }
  be_.w2_gaussian_forward(w2_, saved_, mean_, cov_, m2, B2, slots_, k, eps);
  be_.fit_reduce(stats_ + StepStats::kFit, dw2_, w2_, count_, slots_, T(s_.lambda_fit));
  if (!G) return;
  T* d_anchor_mean = G + model_.anchor_mean();
  const bool anchors = adds_replicated();
  be_.w2_gaussian_backward(dmean_, dcov_, anchors ? (repeated ? dm2_ : d_anchor_mean) : nullptr,
                           anchors ? (repeated ? dB2_ : danchor_cov_) : nullptr, dw2_, saved_,
                           mean_, cov_, m2, B2, slots_, k, eps);
  if (repeated && anchors) {
    be_.repeat_backward(d_anchor_mean, dm2_, int64_t(C) * k, groups);
    be_.repeat_backward(danchor_cov_, dB2_, C * kk, groups);
  }
  // The global n and m̂ with this rank's z (docs/DESIGN.md §2, §7).
  be_.class_moments_backward(dz_, dmean_, dcov_, z_, mean_, count_, slot_, B_, k, slots_);
  if (anchors) be_.anchor_cov_backward(G + model_.anchor_chol(), danchor_cov_, anchor_chol, C, k);
}

// L_sep: anchor samples Z_cj = m_c + L_c ξ must be classified as c (mean CE over c and j).
template <typename T>
void Loss<T>::sep_term(const T* P, T* G, const int64_t* step) {
  const int C = model_.classes(), k = model_.latent_dim(), J = s_.samples_per_anchor;
  be_.anchor_sample_forward(sep_z_, sep_xi_, P + model_.anchor_mean(), P + model_.anchor_chol(), C,
                            J, k, s_.seed, step);
  model_.classifier_forward(be_, P, sep_z_, sep_n_, sep_logits_, sep_cls_);
  be_.softmax_xent_forward(sep_probs_, sep_loss_, nullptr, sep_logits_, sep_labels_, nullptr,
                           sep_n_, C, 0);
  be_.sum_scaled(stats_ + StepStats::kSep, sep_loss_, sep_n_, 1.0 / sep_n_);
  if (!G || !adds_replicated()) return;
  be_.softmax_xent_backward(sep_dlogits_, sep_probs_, sep_labels_, sep_weight_, sep_n_, C);
  model_.classifier_backward(be_, P, G, sep_z_, sep_n_, sep_dlogits_, sep_dz_, sep_cls_);
  be_.anchor_sample_backward(G + model_.anchor_mean(), G + model_.anchor_chol(), sep_dz_, sep_xi_,
                             C, J, k);
}

// Back from the latent into each group's encoder.
template <typename T>
void Loss<T>::encode_backward(const T* P, T* G) {
  const int k = model_.latent_dim();
  for (int g = 0, row = 0; g < int(rows_.size()); row += rows_[g], ++g)
    model_.encoder_backward(be_, g, P, G, x_[g], rows_[g], z_ + int64_t(row) * k,
                            dz_ + int64_t(row) * k, enc_[g]);
}

template <typename T>
LossTerms Loss<T>::read() const {
  std::vector<double> host(stats_size());
  be_.download(host.data(), stats_, host.size() * sizeof(double));
  return StepStats::decode(host.data(), int(rows_.size()), s_);
}

template class Loss<float>;
template class Loss<double>;

}  // namespace hetdro
