// The method's loss on one batch, L = L_clf + λ_fit L_fit + λ_sep L_sep (docs/DESIGN.md §1), with
// its analytic gradient (docs/DESIGN.md §2), written once against Backend<T>. Templated on float
// (training) and double (gradient checks).
#pragma once

#include <cstdint>
#include <vector>

#include "hetdro/backend.h"
#include "hetdro/comm.h"
#include "hetdro/config.h"
#include "hetdro/model.h"

namespace hetdro {

struct LossSettings {
  double lambda_fit = 1e-3, lambda_sep = 1e-3, eps = 1e-5;
  int samples_per_anchor = 16;
  Fit fit = Fit::pooled;
  Objective objective = Objective::erm;
  double groupdro_eta = 0.01;  // 0 keeps q fixed under the exp update
  GroupDroUpdate groupdro_update = GroupDroUpdate::exp;
  GroupDroObjective groupdro_objective = GroupDroObjective::weighted;
  double groupdro_tau = 1.0, groupdro_gamma = 0.1;
  bool update_q = true;            // false keeps q fixed whatever the rule (the gradient checks)
  std::vector<double> adjustment;  // per group, C/√N_g, added to ℓ_g in q's update (or empty)
  uint64_t seed = 0;
  static LossSettings from(const Config& config);
  // With each group's training-set size N_g: also the generalization adjustment C/√N_g
  // (C = train.groupdro.adjustment).
  static LossSettings from(const Config& config, const std::vector<int64_t>& train_sizes);
};

// What one step (or a window of steps, summed) reports. A host value, decoded from the step's
// statistics vector (StepStats) once the trainer has downloaded it.
struct LossTerms {
  double total = 0, clf = 0, fit = 0, sep = 0;
  std::vector<double> group_loss;  // mean cross-entropy of each group's samples
  double fit_pairs = 0;            // Gaussian pairs in L_fit (slots with n ≥ 2)
  double skipped_slots = 0;        // classes (or group-class pairs) present with n = 1
  std::vector<double> dead;        // per group: 1 when its latent units were all 0 (summed)
  std::vector<double> q;           // the GroupDRO weights after the step (summed)
};

// The layout of the step's statistics vector, doubles in backend memory.
struct StepStats {
  static constexpr int kClf = 0, kFit = 1, kFitPairs = 2, kSkippedSlots = 3, kSep = 4;
  // Then ℓ_g for each group, q_g after the step, and each group's dead flag.
  static constexpr int kGroupLoss = 5;
  static int q(int groups) { return kGroupLoss + groups; }
  static int dead(int groups) { return kGroupLoss + 2 * groups; }
  static int size(int groups) { return kGroupLoss + 3 * groups; }
  // The stats that must be finite for a step to count (the dead flags are 0 or 1).
  static int checked(int groups) { return kGroupLoss + 2 * groups; }
  static LossTerms decode(const double* stats, int groups, const LossSettings& settings);
  static const char* name(int i, int groups);  // "loss_clf", ... for messages
};

// The loss's buffers are planned once, for batches of rows[g] samples of each group g; run()
// then allocates nothing and never reads backend memory on the host.
//
// With collectives (data parallelism, docs/DESIGN.md §7), rows is the global batch and this rank
// holds its shard of it (shard_rows): rows()[g] samples of group g, starting at offset()[g] of
// the global batch's n_g. The loss is still the global batch's: the per-group CE sums and the
// class moments are combined over the ranks before they are used, every rank computes the same
// terms, and run() leaves the global gradient, summed over the ranks, in grads on every rank.
template <typename T>
class Loss {
 public:
  Loss(const Model& model, const LossSettings& settings, Backend<T>& backend,
       const std::vector<int>& rows, Collectives* collectives = nullptr);

  // The batch, filled by the caller before run(): group g's rows (its n_g × input_size
  // features), then every label in group order. This rank's shard of it, with collectives.
  T* batch_x(int g) const { return x_[g]; }
  int32_t* batch_y() const { return y_; }
  const std::vector<int>& rows() const { return rows_; }
  const std::vector<int>& offset() const { return offset_; }

  // The loss on the batch, into stats(); with grads (backend, model.size()), its gradient
  // accumulated there. q (backend, double[groups]): the GroupDRO weights; with the groupdro
  // objective and grads given they first follow this batch (docs/DESIGN.md §1) into next_q(),
  // which the loss uses; q itself is left for the caller to commit (groupdro_commit).
  // step (backend, int64 [1]; the trainer's clock): the steps taken before this one, which picks
  // this step's anchor draws from the RNG stream (anchor_sample_forward); nullptr: step 0. With
  // collectives, grads must hold zeros on entry (they are summed over the ranks).
  void run(const T* params, T* grads, const double* q, const int64_t* step = nullptr);
  const double* next_q() const { return q_next_; }

  const double* stats() const { return stats_; }  // StepStats layout
  int stats_size() const { return StepStats::size(int(rows_.size())); }
  // Downloads stats() (a host synchronisation) and decodes it: for tests and tools.
  LossTerms read() const;

 private:
  void encode(const T* P);
  void clf_term(const T* P, T* G, const double* q);
  void fit_term(const T* P, T* G);
  void sep_term(const T* P, T* G, const int64_t* step);
  void encode_backward(const T* P, T* G);
  void layout(Arena& arena);

  // Terms every rank computes alike (the anchors' W2 and L_sep gradients into the anchors and
  // the classifier) are added by the lead rank alone, so the sum over ranks counts them once.
  bool adds_replicated() const { return comm_ == nullptr || comm_->rank() == 0; }

  const Model& model_;
  LossSettings s_;
  Backend<T>& be_;
  Collectives* comm_;
  std::vector<int> rows_, offset_, global_rows_;
  int B_ = 0, global_B_ = 0, slots_ = 0, sep_n_ = 0;
  Buffer<std::byte> block_;
  std::vector<T*> x_;
  int32_t *y_ = nullptr, *group_ = nullptr, *group_count_ = nullptr;
  double *adjustment_ = nullptr, *q_next_ = nullptr;
  double* stats_ = nullptr;
  int64_t* first_step_ = nullptr;  // holds 0, for run() without a step
  // encoders and L_clf
  std::vector<EncoderBuffers<T>> enc_;
  ClassifierBuffers<T> cls_, sep_cls_;
  T *z_ = nullptr, *logits_ = nullptr, *probs_ = nullptr, *loss_ = nullptr, *weight_ = nullptr;
  T* group_sum_ = nullptr;
  // L_fit: every slot, masked (docs/DESIGN.md §6)
  int32_t *slot_ = nullptr, *count_ = nullptr;
  T *mean_ = nullptr, *cov_ = nullptr, *w2_ = nullptr, *dw2_ = nullptr, *saved_ = nullptr;
  T* anchor_cov_ = nullptr;
  T *m2_ = nullptr, *B2_ = nullptr;  // per_group: the anchors repeated once per group
  // L_sep
  T *sep_z_ = nullptr, *sep_xi_ = nullptr, *sep_logits_ = nullptr, *sep_probs_ = nullptr;
  T *sep_loss_ = nullptr, *sep_weight_ = nullptr;
  int32_t* sep_labels_ = nullptr;
  // gradient scratch, contiguous so one zero() clears it each step
  T *grad_begin_ = nullptr, *grad_end_ = nullptr;
  T *dz_ = nullptr, *dlogits_ = nullptr, *dmean_ = nullptr, *dcov_ = nullptr;
  T *danchor_cov_ = nullptr, *dm2_ = nullptr, *dB2_ = nullptr, *sep_dlogits_ = nullptr;
  T* sep_dz_ = nullptr;
};

}  // namespace hetdro
