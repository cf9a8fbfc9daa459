// Every op's signature. Each op exists twice with one signature: the CPU reference in
// namespace hetdro::cpu (host/ops/<op>.cpp, templated on float and double) and, later, the
// CUDA kernel in namespace hetdro::cuda (kernels/<op>.cu).
//
// Conventions (DESIGN §2):
// - Row-major, PyTorch layouts: images NCHW, conv weight [out,in,kh,kw], linear weight [out,in].
// - Forward ops overwrite their outputs.
// - Backward ops ACCUMULATE (+=) into every gradient output, so a tensor that feeds several
//   consumers (the shared classifier, a latent used by both the loss and the fit) sums its
//   gradients without extra buffers. The caller zeroes gradients once per step. A gradient
//   pointer may be nullptr when that gradient is not needed.
#pragma once

#include <cstdint>

namespace hetdro::cpu {

// --- conv2d: valid (no padding), stride 1 --------------------------------------------------
// in [n,c_in,h,w], weight [c_out,c_in,kh,kw], bias [c_out] -> out [n,c_out,h-kh+1,w-kw+1].
template <typename T>
void conv2d_forward(T* out, const T* in, const T* weight, const T* bias, int n, int c_in, int h,
                    int w, int c_out, int kh, int kw);
template <typename T>
void conv2d_backward(T* din, T* dweight, T* dbias, const T* dout, const T* in, const T* weight,
                     int n, int c_in, int h, int w, int c_out, int kh, int kw);

// --- maxpool2x2: stride 2, floor on odd sizes; ties go to the first element in row-major order
// in [n,c,h,w] -> out [n,c,h/2,w/2]. The backward re-derives the argmax from `in`.
template <typename T>
void maxpool2x2_forward(T* out, const T* in, int n, int c, int h, int w);
template <typename T>
void maxpool2x2_backward(T* din, const T* dout, const T* in, int n, int c, int h, int w);

// --- elementwise activations; the backward uses the forward's output ------------------------
template <typename T>
void sigmoid_forward(T* out, const T* in, int64_t count);
template <typename T>
void sigmoid_backward(T* din, const T* dout, const T* out, int64_t count);
template <typename T>
void relu_forward(T* out, const T* in, int64_t count);
template <typename T>
void relu_backward(T* din, const T* dout, const T* out, int64_t count);

// --- linear: out = in Wᵀ + b -----------------------------------------------------------------
// in [n,in_dim], weight [out_dim,in_dim], bias [out_dim] -> out [n,out_dim].
template <typename T>
void linear_forward(T* out, const T* in, const T* weight, const T* bias, int n, int in_dim,
                    int out_dim);
template <typename T>
void linear_backward(T* din, T* dweight, T* dbias, const T* dout, const T* in, const T* weight,
                     int n, int in_dim, int out_dim);

// --- softmax_xent: softmax cross-entropy ----------------------------------------------------
// logits [n,classes], labels [n] -> probs [n,classes], loss [n] (per sample, unweighted), and
// group_loss_sum [groups] (Σ of loss over each group's samples; overwritten; may be nullptr
// together with `group`).
template <typename T>
void softmax_xent_forward(T* probs, T* loss, T* group_loss_sum, const T* logits,
                          const int32_t* labels, const int32_t* group, int n, int classes,
                          int groups);
// dlogits_i += weight_i (probs_i − onehot(y_i))   (DESIGN §2). weight [n].
template <typename T>
void softmax_xent_backward(T* dlogits, const T* probs, const int32_t* labels, const T* weight,
                           int n, int classes);

// --- class_moments: mean and unbiased covariance per slot (DESIGN §1) -----------------------
// z [n,k]; slot[i] ∈ [0,slots) is the class (pooled) or group·C + class (per_group), or −1 to
// leave sample i out. Outputs, per slot s: count[s], mean [slots,k], cov [slots,k,k] =
// Σ(z−m)(z−m)ᵀ/(count−1) + eps·I. Slots with count < 2 get mean = 0, cov = 0 and are skipped
// by the fit. Returns the number of slots with 0 < count < 2 (present but skipped).
template <typename T>
int class_moments_forward(T* mean, T* cov, int32_t* count, const T* z, const int32_t* slot, int n,
                          int k, int slots, T eps);
// dz_i += dmean_s / n_s + (2/(n_s−1)) sym(dcov_s) (z_i − mean_s) for every i with a slot of
// count ≥ 2 (DESIGN §2).
template <typename T>
void class_moments_backward(T* dz, const T* dmean, const T* dcov, const T* z, const T* mean,
                            const int32_t* count, const int32_t* slot, int n, int k, int slots);

// --- w2_gaussian: squared 2-Wasserstein distance between Gaussian pairs (DESIGN §1, §2) -----
// For each pair p: w2[p] = ‖m1−m2‖² + tr A + tr B − 2 tr((R B R)^{½}), R = A^{½}, where every
// square root is V diag(√max(λ,eps)) Vᵀ. A is the data covariance (Ŝ), B the anchor's.
// m1, m2 [pairs,k]; A, B [pairs,k,k]. `saved` [pairs, w2_gaussian_saved_size(k)] keeps both
// eigendecompositions for the backward, which does none of its own.
inline int64_t w2_gaussian_saved_size(int k) { return 2 * int64_t(k) * k + 2 * int64_t(k); }
template <typename T>
void w2_gaussian_forward(T* w2, T* saved, const T* m1, const T* A, const T* m2, const T* B,
                         int pairs, int k, T eps);
// dw2 [pairs] is the upstream gradient of each pair's w2. dA and dB come out symmetric.
template <typename T>
void w2_gaussian_backward(T* dm1, T* dA, T* dm2, T* dB, const T* dw2, const T* saved, const T* m1,
                          const T* A, const T* m2, const T* B, int pairs, int k, T eps);

// --- anchor_cov: S_c = L_c L_cᵀ + eps·I --------------------------------------------------------
// chol [classes,k,k] -> cov [classes,k,k]; backward: dchol += 2 sym(dcov) L (DESIGN §2).
template <typename T>
void anchor_cov_forward(T* cov, const T* chol, int classes, int k, T eps);
template <typename T>
void anchor_cov_backward(T* dchol, const T* dcov, const T* chol, int classes, int k);

// --- anchor_sample: Z_cj = m_c + L_c ξ_cj, ξ ~ N(0, I) (DESIGN §1) ----------------------------
// mean [classes,k], chol [classes,k,k] -> z [classes,J,k] and xi [classes,J,k].
// ξ is a counter-based normal of (seed, counter + index), so CPU and CUDA draw the same numbers.
template <typename T>
void anchor_sample_forward(T* z, T* xi, const T* mean, const T* chol, int classes, int J, int k,
                           uint64_t seed, uint64_t counter);
// dmean_c += Σ_j dz_cj;  dchol_c += Σ_j dz_cj ξ_cjᵀ.
template <typename T>
void anchor_sample_backward(T* dmean, T* dchol, const T* dz, const T* xi, int classes, int J,
                            int k);

// --- adam: one update over one flat parameter buffer ----------------------------------------
// step counts from 1. Decoupled weight decay (AdamW) when weight_decay > 0.
template <typename T>
void adam_update(T* param, T* m, T* v, const T* grad, int64_t count, T lr, T beta1, T beta2, T eps,
                 T weight_decay, int64_t step);

}  // namespace hetdro::cpu
