// Adam over one flat parameter buffer, PyTorch semantics; AdamW's decoupled decay when wd > 0.
#include <cmath>  // std::pow, std::sqrt
#include <cstdint>

#include "hetdro/ops.h"

namespace hetdro::cpu {

template <typename T>
void adam_update(T* param, T* m, T* v, const T* grad, int64_t count, T lr, T beta1, T beta2, T eps,
                 T weight_decay, int64_t step, const int64_t* status) {
  if (status && status[0] >= 0) return;  // a non-finite loss or gradient: keep the parameters
  // Bias corrections in double as PyTorch does (Python floats), then folded into two scalars:
  // lr·m̂/(√v̂+ε) = (lr/bc1)·m / (√v/√bc2 + ε).
  const double bc1 = 1.0 - std::pow(double(beta1), double(step));
  const double bc2 = 1.0 - std::pow(double(beta2), double(step));
  const T step_size = T(double(lr) / bc1);
  const T inv_sqrt_bc2 = T(1.0 / std::sqrt(bc2));
  const T decay = T(1) - lr * weight_decay;
#pragma omp parallel for simd schedule(static) if (count > (1 << 16))
  for (int64_t i = 0; i < count; ++i) {
    const T g = grad[i];
    m[i] = beta1 * m[i] + (T(1) - beta1) * g;
    v[i] = beta2 * v[i] + (T(1) - beta2) * g * g;
    param[i] = param[i] * decay - step_size * m[i] / (std::sqrt(v[i]) * inv_sqrt_bc2 + eps);
  }
}

template void adam_update<float>(float*, float*, float*, const float*, int64_t, float, float, float,
                                 float, float, int64_t, const int64_t*);
template void adam_update<double>(double*, double*, double*, const double*, int64_t, double, double,
                                  double, double, double, int64_t, const int64_t*);

}  // namespace hetdro::cpu
