// L = L_clf + λ_fit L_fit + λ_sep L_sep on one batch, forward and analytic backward (DESIGN §1–2).
#include "hetdro/loss.h"

#include <algorithm>
#include <cmath>

#include "hetdro/check.h"
#include "hetdro/ops.h"

namespace hetdro {

namespace ops = hetdro::cpu;

LossSettings LossSettings::from(const Config& c) {
  LossSettings s;
  s.lambda_fit = c.train.lambda_fit;
  s.lambda_sep = c.train.lambda_sep;
  s.eps = c.train.eps;
  s.samples_per_anchor = c.train.samples_per_anchor;
  s.fit = c.train.fit;
  s.objective = c.train.objective;
  s.groupdro_eta = c.train.groupdro_eta;
  s.latent_relu = c.model.latent_activation == "relu";
  s.seed = c.train.seed;
  return s;
}

template <typename T>
LossTerms loss_and_grad(const Model& model, const LossSettings& s, const T* P, T* G,
                        const Batch<T>& batch, std::vector<double>& q, uint64_t sample_counter,
                        LossWorkspace<T>& ws) {
  const int groups = int(batch.n.size()), k = model.latent_dim(), C = model.classes();
  const int B = int(batch.y.size());
  const bool backward = G != nullptr;
  LossTerms terms;
  ws.encoders.resize(groups);

  // Encoders into the shared latent space, then the latent activation.
  ws.z_pre.resize(size_t(B) * k);
  ws.z.resize(size_t(B) * k);
  for (int g = 0, row = 0; g < groups; row += batch.n[g], ++g)
    model.encoder_forward(g, P, batch.x[g], batch.n[g], ws.z_pre.data() + size_t(row) * k,
                          ws.encoders[g]);
  if (s.latent_relu) {
    ops::relu_forward(ws.z.data(), ws.z_pre.data(), int64_t(ws.z.size()));
    for (int g = 0, row = 0; g < groups; row += batch.n[g], ++g) {
      const T* zg = ws.z.data() + size_t(row) * k;
      if (std::all_of(zg, zg + size_t(batch.n[g]) * k, [](T v) { return v == T(0); }))
        terms.dead_groups.push_back(g);
    }
  } else {
    ws.z = ws.z_pre;
  }

  // L_clf: ERM mean cross-entropy, or GroupDRO Σ_g q_g ℓ_g.
  ws.logits.resize(size_t(B) * C);
  ws.probs.resize(ws.logits.size());
  ws.loss.resize(B);
  std::vector<T> group_sum(groups);
  model.classifier_forward(P, ws.z.data(), B, ws.logits.data(), ws.classifier);
  ops::softmax_xent_forward(ws.probs.data(), ws.loss.data(), group_sum.data(), ws.logits.data(),
                            batch.y.data(), batch.group.data(), B, C, groups);
  terms.group_loss.resize(groups);
  ws.weight.resize(B);
  double total_loss = 0;
  for (int i = 0; i < B; ++i) total_loss += double(ws.loss[i]);
  for (int g = 0; g < groups; ++g)
    terms.group_loss[g] = batch.n[g] > 0 ? double(group_sum[g]) / batch.n[g] : 0.0;
  if (s.objective == "groupdro") {
    HETDRO_ASSERT(int(q.size()) == groups);
    if (backward && s.groupdro_eta > 0) {
      double sum = 0;
      for (int g = 0; g < groups; ++g)  // a group absent from the batch keeps its weight
        sum += q[g] *= batch.n[g] > 0 ? std::exp(s.groupdro_eta * terms.group_loss[g]) : 1.0;
      for (int g = 0; g < groups; ++g) q[g] /= sum;
    }
    for (int g = 0; g < groups; ++g) terms.clf += q[g] * terms.group_loss[g];
    for (int i = 0; i < B; ++i) ws.weight[i] = T(q[batch.group[i]] / batch.n[batch.group[i]]);
  } else {
    terms.clf = total_loss / B;
    std::fill(ws.weight.begin(), ws.weight.end(), T(1.0 / B));
  }
  if (backward) {
    ws.dz.assign(size_t(B) * k, T(0));
    std::vector<T> dlogits(ws.logits.size(), T(0));
    ops::softmax_xent_backward(dlogits.data(), ws.probs.data(), batch.y.data(), ws.weight.data(), B,
                               C);
    model.classifier_backward(P, G, ws.z.data(), B, dlogits.data(), ws.dz.data(), ws.classifier);
  }

  // L_fit: W2² between each class's (or group-class pair's) batch Gaussian and its anchor.
  const T* anchor_mean = P + model.anchor_mean();
  const T* anchor_chol = P + model.anchor_chol();
  const int64_t kk = int64_t(k) * k;
  if (s.fit != "none") {
    const bool per_group = s.fit == "per_group";
    const int slots = per_group ? groups * C : C;
    ws.slot.resize(B);
    for (int i = 0; i < B; ++i)
      ws.slot[i] = per_group ? batch.group[i] * C + batch.y[i] : batch.y[i];
    ws.mean.resize(size_t(slots) * k);
    ws.cov.resize(size_t(slots) * kk);
    ws.count.resize(slots);
    terms.skipped_slots =
        ops::class_moments_forward(ws.mean.data(), ws.cov.data(), ws.count.data(), ws.z.data(),
                                   ws.slot.data(), B, k, slots, T(s.eps));
    ws.pair_slot.clear();
    for (int sl = 0; sl < slots; ++sl)
      if (ws.count[sl] >= 2) ws.pair_slot.push_back(sl);
    const int pairs = int(ws.pair_slot.size());
    terms.fit_pairs = pairs;
    if (pairs > 0) {
      ws.anchor_cov.resize(size_t(C) * kk);
      ops::anchor_cov_forward(ws.anchor_cov.data(), anchor_chol, C, k, T(s.eps));
      ws.m1.resize(size_t(pairs) * k);
      ws.m2.resize(ws.m1.size());
      ws.A.resize(size_t(pairs) * kk);
      ws.B.resize(ws.A.size());
      for (int p = 0; p < pairs; ++p) {
        const int sl = ws.pair_slot[p], c = sl % C;
        std::copy_n(ws.mean.data() + size_t(sl) * k, k, ws.m1.data() + size_t(p) * k);
        std::copy_n(ws.cov.data() + size_t(sl) * kk, kk, ws.A.data() + size_t(p) * kk);
        std::copy_n(anchor_mean + size_t(c) * k, k, ws.m2.data() + size_t(p) * k);
        std::copy_n(ws.anchor_cov.data() + size_t(c) * kk, kk, ws.B.data() + size_t(p) * kk);
      }
      ws.w2.resize(pairs);
      ws.saved.resize(size_t(pairs) * ops::w2_gaussian_saved_size(k));
      ops::w2_gaussian_forward(ws.w2.data(), ws.saved.data(), ws.m1.data(), ws.A.data(),
                               ws.m2.data(), ws.B.data(), pairs, k, T(s.eps));
      for (int p = 0; p < pairs; ++p) terms.fit += double(ws.w2[p]);
      if (backward) {
        std::vector<T> dw2(pairs, T(s.lambda_fit));
        ws.dm1.assign(ws.m1.size(), T(0));
        ws.dm2.assign(ws.m2.size(), T(0));
        ws.dA.assign(ws.A.size(), T(0));
        ws.dB.assign(ws.B.size(), T(0));
        ops::w2_gaussian_backward(ws.dm1.data(), ws.dA.data(), ws.dm2.data(), ws.dB.data(),
                                  dw2.data(), ws.saved.data(), ws.m1.data(), ws.A.data(),
                                  ws.m2.data(), ws.B.data(), pairs, k, T(s.eps));
        ws.dmean.assign(ws.mean.size(), T(0));
        ws.dcov.assign(ws.cov.size(), T(0));
        ws.danchor_cov.assign(ws.anchor_cov.size(), T(0));
        T* d_anchor_mean = G + model.anchor_mean();
        for (int p = 0; p < pairs; ++p) {
          const int sl = ws.pair_slot[p], c = sl % C;
          for (int i = 0; i < k; ++i) {
            ws.dmean[size_t(sl) * k + i] += ws.dm1[size_t(p) * k + i];
            d_anchor_mean[size_t(c) * k + i] += ws.dm2[size_t(p) * k + i];
          }
          for (int64_t i = 0; i < kk; ++i) {
            ws.dcov[size_t(sl) * kk + i] += ws.dA[size_t(p) * kk + i];
            ws.danchor_cov[size_t(c) * kk + i] += ws.dB[size_t(p) * kk + i];
          }
        }
        ops::class_moments_backward(ws.dz.data(), ws.dmean.data(), ws.dcov.data(), ws.z.data(),
                                    ws.mean.data(), ws.count.data(), ws.slot.data(), B, k, slots);
        ops::anchor_cov_backward(G + model.anchor_chol(), ws.danchor_cov.data(), anchor_chol, C, k);
      }
    }
  }

  // L_sep: anchor samples Z_cj = m_c + L_c ξ must be classified as c (mean CE over c and j).
  if (s.samples_per_anchor > 0) {
    const int J = s.samples_per_anchor, n = C * J;
    ws.sep_z.resize(size_t(n) * k);
    ws.sep_xi.resize(ws.sep_z.size());
    ops::anchor_sample_forward(ws.sep_z.data(), ws.sep_xi.data(), anchor_mean, anchor_chol, C, J, k,
                               s.seed, sample_counter);
    ws.sep_labels.resize(n);
    for (int i = 0; i < n; ++i) ws.sep_labels[i] = i / J;
    ws.sep_logits.resize(size_t(n) * C);
    ws.sep_probs.resize(ws.sep_logits.size());
    ws.sep_loss.resize(n);
    model.classifier_forward(P, ws.sep_z.data(), n, ws.sep_logits.data(), ws.sep_classifier);
    ops::softmax_xent_forward<T>(ws.sep_probs.data(), ws.sep_loss.data(), nullptr,
                                 ws.sep_logits.data(), ws.sep_labels.data(), nullptr, n, C, 0);
    for (int i = 0; i < n; ++i) terms.sep += double(ws.sep_loss[i]) / n;
    if (backward) {
      ws.sep_weight.assign(n, T(s.lambda_sep / n));
      std::vector<T> dlogits(ws.sep_logits.size(), T(0));
      ops::softmax_xent_backward(dlogits.data(), ws.sep_probs.data(), ws.sep_labels.data(),
                                 ws.sep_weight.data(), n, C);
      ws.sep_dz.assign(ws.sep_z.size(), T(0));
      model.classifier_backward(P, G, ws.sep_z.data(), n, dlogits.data(), ws.sep_dz.data(),
                                ws.sep_classifier);
      ops::anchor_sample_backward(G + model.anchor_mean(), G + model.anchor_chol(),
                                  ws.sep_dz.data(), ws.sep_xi.data(), C, J, k);
    }
  }

  terms.total = terms.clf + s.lambda_fit * terms.fit + s.lambda_sep * terms.sep;
  if (!backward) return terms;

  // Back through the latent activation into each group's encoder.
  std::vector<T> dz_pre(ws.dz.size(), T(0));
  if (s.latent_relu)
    ops::relu_backward(dz_pre.data(), ws.dz.data(), ws.z.data(), int64_t(dz_pre.size()));
  else
    dz_pre = ws.dz;
  for (int g = 0, row = 0; g < groups; row += batch.n[g], ++g)
    model.encoder_backward(g, P, G, batch.x[g], batch.n[g], dz_pre.data() + size_t(row) * k,
                           ws.encoders[g]);
  return terms;
}

template LossTerms loss_and_grad(const Model&, const LossSettings&, const float*, float*,
                                 const Batch<float>&, std::vector<double>&, uint64_t,
                                 LossWorkspace<float>&);
template LossTerms loss_and_grad(const Model&, const LossSettings&, const double*, double*,
                                 const Batch<double>&, std::vector<double>&, uint64_t,
                                 LossWorkspace<double>&);

}  // namespace hetdro
