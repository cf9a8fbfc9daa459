// softmax_xent: softmax cross-entropy, per-sample loss and per-group loss sums (docs/DESIGN.md §1,
// §2).
#include <algorithm>  // std::max, std::fill
#include <cmath>      // std::exp, std::log
#include <cstdint>

#include "hetdro/check.h"  // input_error
#include "hetdro/ops.h"

namespace hetdro::cpu {

template <typename T>
void softmax_xent_forward(T* probs, T* loss, T* group_loss_sum, const T* logits,
                          const int32_t* labels, const int32_t* group, int n, int classes,
                          int groups) {
  for (int i = 0; i < n; ++i)
    if (labels[i] < 0 || labels[i] >= classes)
      input_error("softmax_xent: label {} of sample {} is outside [0, {})", labels[i], i, classes);
#pragma omp parallel for schedule(static) if (int64_t(n) * classes > (1 << 16))
  for (int i = 0; i < n; ++i) {
    const T* x = logits + int64_t(i) * classes;
    T* p = probs + int64_t(i) * classes;
    T top = x[0];
    for (int c = 1; c < classes; ++c) top = std::max(top, x[c]);
    T sum = 0;
    for (int c = 0; c < classes; ++c) sum += p[c] = std::exp(x[c] - top);
    for (int c = 0; c < classes; ++c) p[c] /= sum;
    // From the shifted logits, not log(p): keeps the loss finite when p underflows to 0.
    loss[i] = std::log(sum) - (x[labels[i]] - top);
  }
  if (!group_loss_sum || !group) return;
  std::fill(group_loss_sum, group_loss_sum + groups, T(0));
  for (int i = 0; i < n; ++i) {
    if (group[i] < 0 || group[i] >= groups)
      input_error("softmax_xent: group {} of sample {} is outside [0, {})", group[i], i, groups);
    group_loss_sum[group[i]] += loss[i];
  }
}

template <typename T>
void softmax_xent_backward(T* dlogits, const T* probs, const int32_t* labels, const T* weight,
                           int n, int classes) {
#pragma omp parallel for schedule(static) if (int64_t(n) * classes > (1 << 16))
  for (int i = 0; i < n; ++i) {
    const T* p = probs + int64_t(i) * classes;
    T* d = dlogits + int64_t(i) * classes;
    for (int c = 0; c < classes; ++c) d[c] += weight[i] * p[c];
    d[labels[i]] -= weight[i];
  }
}

template <typename T>
void softmax_forward(T* probs, const T* logits, int n, int classes) {
  for (int i = 0; i < n; ++i) {
    const T* x = logits + int64_t(i) * classes;
    T* p = probs + int64_t(i) * classes;
    const T top = *std::max_element(x, x + classes);
    T sum = 0;
    for (int c = 0; c < classes; ++c) sum += p[c] = std::exp(x[c] - top);
    for (int c = 0; c < classes; ++c) p[c] /= sum;
  }
}

#define HETDRO_INSTANTIATE(T)                                                                      \
  template void softmax_xent_forward<T>(T*, T*, T*, const T*, const int32_t*, const int32_t*, int, \
                                        int, int);                                                 \
  template void softmax_xent_backward<T>(T*, const T*, const int32_t*, const T*, int, int);        \
  template void softmax_forward<T>(T*, const T*, int, int);
HETDRO_INSTANTIATE(float)
HETDRO_INSTANTIATE(double)
#undef HETDRO_INSTANTIATE

}  // namespace hetdro::cpu
