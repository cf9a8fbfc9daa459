// The method's loss on one batch, L = L_clf + λ_fit L_fit + λ_sep L_sep (DESIGN §1), with its
// analytic gradient (DESIGN §2). Templated on float (training) and double (gradient checks).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "hetdro/config.h"
#include "hetdro/model.h"

namespace hetdro {

struct LossSettings {
  double lambda_fit = 1e-3, lambda_sep = 1e-3, eps = 1e-5;
  int samples_per_anchor = 16;
  std::string fit = "pooled";     // "pooled" | "per_group" | "none"
  std::string objective = "erm";  // "erm" | "groupdro"
  double groupdro_eta = 0.01;     // 0 keeps q fixed (the gradient checks)
  bool latent_relu = false;
  uint64_t seed = 0;
  static LossSettings from(const Config& config);
};

// One stratified batch: group g's n[g] samples (rows of x[g]) come in group order, so rows
// [offset_g, offset_g + n[g]) of the latent matrix belong to group g.
template <typename T>
struct Batch {
  std::vector<const T*> x;     // per group, [n_g, input_size]
  std::vector<int> n;          // per group
  std::vector<int32_t> y;      // [B], in group order
  std::vector<int32_t> group;  // [B]
};

struct LossTerms {
  double total = 0, clf = 0, fit = 0, sep = 0;
  std::vector<double> group_loss;  // mean cross-entropy of each group's samples (GroupDRO)
  int fit_pairs = 0;               // Gaussian pairs in L_fit
  int skipped_slots = 0;           // classes (or group-class pairs) present with n < 2
  std::vector<int> dead_groups;    // groups whose latent units were all 0 over the batch
};

template <typename T>
struct LossWorkspace {
  std::vector<EncoderActivations<T>> encoders;
  ClassifierActivations<T> classifier, sep_classifier;
  std::vector<T> z_pre, z, dz, logits, probs, loss, weight;
  std::vector<T> mean, cov, dmean, dcov, anchor_cov, danchor_cov;
  std::vector<int32_t> count, slot, pair_slot;
  std::vector<T> m1, A, m2, B, w2, saved, dm1, dA, dm2, dB;
  std::vector<T> sep_z, sep_xi, sep_logits, sep_probs, sep_loss, sep_weight, sep_dz;
  std::vector<int32_t> sep_labels;
};

// Loss on `batch`, and (when grads is not null) its gradient accumulated into grads.
// q: the GroupDRO weights. With the groupdro objective and grads given, they are first updated
// from this batch's group losses, q_g ← q_g·exp(η ℓ_g), renormalised (Sagawa et al.), and the
// loss uses the new q; q is not differentiated.
// sample_counter: where this step's anchor samples start in the counter RNG stream.
template <typename T>
LossTerms loss_and_grad(const Model& model, const LossSettings& settings, const T* params, T* grads,
                        const Batch<T>& batch, std::vector<double>& q, uint64_t sample_counter,
                        LossWorkspace<T>& ws);

}  // namespace hetdro
