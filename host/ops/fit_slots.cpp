// The fit's slots (docs/DESIGN.md §1): which slot each sample falls in, and the masked sum over
// slots. Every slot is computed every step (fixed shapes); a slot with fewer than 2 samples is
// masked.
#include <cstdint>

#include "hetdro/ops.h"

namespace hetdro::cpu {

template <typename T>
void fit_slots(int32_t* slot, const int32_t* labels, const int32_t* group, int n, int classes) {
  for (int i = 0; i < n; ++i) slot[i] = group ? group[i] * classes + labels[i] : labels[i];
}

template <typename T>
void fit_reduce(double* out, T* dw2, const T* w2, const int32_t* count, int slots, T lambda) {
  double fit = 0, live = 0, skipped = 0;
  for (int s = 0; s < slots; ++s) {
    const bool on = count[s] >= 2;
    if (on) fit += double(w2[s]);
    live += on;
    skipped += count[s] == 1;
    dw2[s] = on ? lambda : T(0);
  }
  out[0] = fit;
  out[1] = live;
  out[2] = skipped;
}

#define HETDRO_INSTANTIATE(T)                                                     \
  template void fit_slots<T>(int32_t*, const int32_t*, const int32_t*, int, int); \
  template void fit_reduce<T>(double*, T*, const T*, const int32_t*, int, T);
HETDRO_INSTANTIATE(float)
HETDRO_INSTANTIATE(double)
#undef HETDRO_INSTANTIATE

}  // namespace hetdro::cpu
