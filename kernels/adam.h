// Adam's arithmetic (docs/DESIGN.md §2, "Adam"), shared by the CPU reference (host/ops/adam.cpp)
// and the CUDA kernel (kernels/adam.cu): the step's scalars, folded once per step, and the update
// of one element.
#pragma once

#include <cmath>  // std::pow, std::sqrt
#include <cstdint>

#include "hetdro/hd.h"

namespace hetdro::hd {

template <typename T>
struct AdamStep {
  T step_size;     // lr / bc1
  T inv_sqrt_bc2;  // 1 / √bc2
  T decay;         // 1 − lr·wd (AdamW's decoupled decay; 1 when wd = 0)
};

// Bias corrections in double as PyTorch computes them (Python floats), folded into two scalars:
// lr·m̂/(√v̂ + ε) = (lr/bc1)·m / (√v/√bc2 + ε). Once per step, not per element: the kernel reads
// the step from device memory (the trainer's clock), so each block folds them once.
template <typename T>
HETDRO_HD AdamStep<T> adam_step(T lr, T beta1, T beta2, T weight_decay, int64_t step) {
  const double bc1 = 1.0 - std::pow(double(beta1), double(step));
  const double bc2 = 1.0 - std::pow(double(beta2), double(step));
  return {T(double(lr) / bc1), T(1.0 / std::sqrt(bc2)), T(1) - lr * weight_decay};
}

template <typename T>
HETDRO_HD void adam_element(T& p, T& m, T& v, T g, T beta1, T beta2, T eps, const AdamStep<T>& s) {
  m = beta1 * m + (T(1) - beta1) * g;
  v = beta2 * v + (T(1) - beta2) * g * g;
  p = p * s.decay - s.step_size * m / (std::sqrt(v) * s.inv_sqrt_bc2 + eps);
}

}  // namespace hetdro::hd
