// Adam over one flat parameter buffer, PyTorch semantics; AdamW's decoupled decay when wd > 0.
// The arithmetic lives in kernels/adam.h, which the CUDA kernel runs too.
#include "kernels/adam.h"  // hd::adam_step, hd::adam_element

#include <cstdint>

#include "hetdro/ops.h"

namespace hetdro::cpu {

template <typename T>
void adam_update(T* param, T* m, T* v, const T* grad, int64_t count, T lr, T beta1, T beta2, T eps,
                 T weight_decay, const int64_t* step, const int64_t* status) {
  if (status && status[0] >= 0) return;  // a non-finite loss or gradient: keep the parameters
  const hd::AdamStep<T> s = hd::adam_step(lr, beta1, beta2, weight_decay, step[0] + 1);
#pragma omp parallel for simd schedule(static) if (count > (1 << 16))
  for (int64_t i = 0; i < count; ++i)
    hd::adam_element(param[i], m[i], v[i], grad[i], beta1, beta2, eps, s);
}

template void adam_update<float>(float*, float*, float*, const float*, int64_t, float, float, float,
                                 float, float, const int64_t*, const int64_t*);
template void adam_update<double>(double*, double*, double*, const double*, int64_t, double, double,
                                  double, double, double, const int64_t*, const int64_t*);

}  // namespace hetdro::cpu
