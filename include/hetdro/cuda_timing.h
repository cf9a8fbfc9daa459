// Timing for the GPU benchmarks (bench/): CUDA events on the context's stream, and the device's
// ceilings measured in the same run (docs/DESIGN.md §3). Defined in kernels/timing.cu; only in
// builds with CUDA (HETDRO_WITH_CUDA).
#pragma once

#include <functional>
#include <string>

namespace hetdro::cuda {

// Milliseconds between CUDA events recorded on the context's stream before and after the work
// `fn` enqueues; waits for it.
double event_ms(const std::function<void()>& fn);

// The median of `reps` CUDA-event timings, in milliseconds, of the work `fn` enqueues on the
// context's stream, after `warmup` untimed runs.
double median_ms(const std::function<void()>& fn, int warmup = 3, int reps = 20);

// Waits for the context's stream.
void synchronize();

// What this GPU does at best: a large device-to-device copy (GB/s, bytes read + written) and a
// large SGEMM through cuBLAS (TFLOP/s).
struct Ceilings {
  std::string device;
  double copy_gbps = 0;
  double sgemm_tflops = 0;
};
Ceilings measure_ceilings();

}  // namespace hetdro::cuda
