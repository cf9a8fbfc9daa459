// The per-row arithmetic of softmax_xent and softmax_forward (docs/DESIGN.md §2), shared by the
// CUDA kernels and the CPU tests: a row is split among `lanes` workers, worker `lane` taking
// columns lane, lane + lanes, ...; the caller combines the workers' partials (a warp shuffle on
// the GPU; nothing for a single worker).
#pragma once

#include <cmath>  // std::exp, std::log
#include <limits>

#include "hetdro/hd.h"

namespace hetdro::hd {

// This worker's largest logit; −inf when it has no column.
template <typename T>
HETDRO_HD T lane_max(const T* x, int classes, int lane, int lanes) {
  T top = -std::numeric_limits<T>::infinity();
  for (int c = lane; c < classes; c += lanes) top = top < x[c] ? x[c] : top;
  return top;
}

// This worker's share of Σ exp(x − top).
template <typename T>
HETDRO_HD T lane_sum_exp(const T* x, int classes, int lane, int lanes, T top) {
  T sum = 0;
  for (int c = lane; c < classes; c += lanes) sum += std::exp(x[c] - top);
  return sum;
}

// p = exp(x − top) / sum over this worker's columns, rounded as the reference rounds it.
template <typename T>
HETDRO_HD void lane_write_probs(T* p, const T* x, int classes, int lane, int lanes, T top, T sum) {
  for (int c = lane; c < classes; c += lanes) p[c] = std::exp(x[c] - top) / sum;
}

// −log p_y from the shifted logits, log Σ exp(x − top) − (x_y − top): finite even where p_y
// underflows to 0 (docs/DESIGN.md §2).
template <typename T>
HETDRO_HD T xent_loss(T top, T sum, T x_label) {
  return std::log(sum) - (x_label - top);
}

// One element of dlogits += w (p − onehot(y)), in the reference's order: + w·p, then − w.
template <typename T>
HETDRO_HD T xent_grad(T d, T p, T w, bool is_label) {
  d += w * p;
  if (is_label) d -= w;
  return d;
}

}  // namespace hetdro::hd
