// The low-rank Gram route to Ŝ's eigendecomposition (kernels/gram_eig.h, docs/DESIGN.md §3)
// against the full eigensolvers on the same Ŝ. CPU: the route for one slot against Eigen's
// SelfAdjointEigenSolver of Ŝ. CUDA builds: cuda::gram_eigh against cuda::eigh with each back
// end (jacobi where k ≤ 128, syevj, syev), for k ∈ {8, 16, 32, 64, 128, 256}, n_c ∈ {2, 10, k/2
// (≤ 64)} samples per slot and 30 slots (the default config's per_group batch; its 10 pooled
// slots sit equally far under the SM count, so latency is the same) or 1000 slots. Counter:
// matrices/s.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <exception>
#include <string>
#include <type_traits>
#include <vector>

// GCC 12 flags `__m512 __Y = __Y;` inside its own AVX-512 intrinsics (a known false positive).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <Eigen/Dense>  // the CPU baseline
#pragma GCC diagnostic pop

#include "../kernels/gram_eig.h"  // the route's host-and-device arithmetic
#include "bench_inputs.h"         // uniform_inputs
#include "hetdro/ops.h"           // cpu::class_moments_forward
#ifdef HETDRO_WITH_CUDA
#include "cuda_bench.h"          // gpu, ceilings
#include "hetdro/backend.h"      // Buffer
#include "hetdro/cuda_ops.h"     // gram_eigh, eigh, set_eigensolver
#include "hetdro/cuda_timing.h"  // median_ms
#include "hetdro/step_status.h"  // describe
#endif

namespace {

using hetdro::bench::uniform_inputs;
constexpr float kEps = 1e-5f;

// `slots` slots of n samples each (contiguous), and their Ŝ as class_moments writes it.
struct Slots {
  std::vector<float> z, cov;
  std::vector<int32_t> start, count;
};

Slots make_slots(int slots, int n, int k) {
  Slots s;
  s.z = uniform_inputs<float>(size_t(slots) * n * k, 1, 0.0f, 1.0f);
  std::vector<int32_t> slot(size_t(slots) * n);
  for (size_t i = 0; i < slot.size(); ++i) slot[i] = int32_t(i / n);
  std::vector<float> mean(size_t(slots) * k);
  s.cov.resize(size_t(slots) * k * k);
  s.count.resize(slots);
  hetdro::cpu::class_moments_forward(mean.data(), s.cov.data(), s.count.data(), s.z.data(),
                                     slot.data(), int(slot.size()), k, slots, kEps);
  s.start.resize(slots);
  for (int i = 0; i < slots; ++i) s.start[i] = i * n;
  return s;
}

// Args: k, n, route (0 the Gram route, 1 Eigen on Ŝ). One slot per iteration.
void BM_gram_eig_cpu(benchmark::State& state) {
  const int k = int(state.range(0)), n = int(state.range(1));
  const bool gram = state.range(2) == 0;
  const Slots s = make_slots(1, n, k);
  std::vector<float> w(k), U(size_t(k) * k), work(size_t(hetdro::gram::slot_workspace(n, k)));
  const Eigen::Map<const Eigen::MatrixXf> S(s.cov.data(), k, k);
  Eigen::SelfAdjointEigenSolver<Eigen::MatrixXf> solver(k);
  for (auto _ : state) {
    if (gram)
      hetdro::gram::gram_eigh_slot(w.data(), U.data(), s.z.data(), n, k, kEps, work.data());
    else
      solver.compute(S);
    benchmark::DoNotOptimize(U.data());
    benchmark::DoNotOptimize(solver);
    benchmark::ClobberMemory();
  }
  state.SetLabel(gram ? "gram" : "eigen");
  state.counters["matrices/s"] =
      benchmark::Counter(1, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_gram_eig_cpu)
    ->ArgNames({"k", "n", "route"})
    ->ArgsProduct({{16, 64, 256}, {10}, {0, 1}})
    ->Unit(benchmark::kMicrosecond);

#ifdef HETDRO_WITH_CUDA

using hetdro::cuda::Eigensolver;

// Args: slots, k, n, route (0 gram, else the Eigensolver: 1 jacobi, 2 syevj, 3 syev).
void gram_eig_cuda(benchmark::State& state) {
  const int slots = int(state.range(0)), k = int(state.range(1)), n = int(state.range(2));
  const int route = int(state.range(3));
  hetdro::Backend<float>* be = hetdro::bench::gpu(state);
  if (!be) return;
  if (route == int(Eigensolver::jacobi) && k > 128) {
    state.SkipWithError("jacobi takes k <= 128");
    return;
  }
  const Slots s = make_slots(slots, n, k);
  auto up = [be](const auto& h) {
    hetdro::Buffer<typename std::decay_t<decltype(h)>::value_type> b(*be, int64_t(h.size()));
    b.upload(h);
    return b;
  };
  const auto z = up(s.z), cov = up(s.cov);
  const auto start = up(s.start), count = up(s.count);
  hetdro::Buffer<float> w(*be, int64_t(slots) * k), U(*be, int64_t(slots) * k * k);
  double ms = 0;
  if (route == 0) {
    ms = hetdro::cuda::median_ms([&] {
      hetdro::cuda::gram_eigh(w.data(), U.data(), z.data(), start.data(), count.data(), slots, k,
                              kEps, n);
    });
  } else {
    const auto solver = Eigensolver(route);
    hetdro::cuda::set_eigensolver(solver);
    ms = hetdro::cuda::median_ms(
        [&] { hetdro::cuda::eigh(w.data(), U.data(), cov.data(), slots, k); });
    hetdro::cuda::set_eigensolver(Eigensolver::automatic);
    // A solve cuSOLVER reports as failed (its `info`) is no timing; taking the record keeps it
    // out of the next benchmark.
    if (const int64_t failed = hetdro::cuda::take_solver_failure()) {
      state.SkipWithError(hetdro::step_status::describe(failed).c_str());
      return;
    }
  }
  for (auto _ : state) state.SetIterationTime(ms / 1e3);
  state.counters["matrices/s"] = slots / (ms / 1e3);
  state.counters["us/matrix"] = ms * 1e3 / slots;
  state.SetLabel(route == 0 ? "gram" : hetdro::cuda::name(Eigensolver(route)));
}

// A back end that throws (cuSOLVER refusing a size, a kernel over this GPU's shared memory,
// syev absent from the build) skips this benchmark with the message; the binary's other
// benchmarks still run (issue 18).
void BM_gram_eig_cuda(benchmark::State& state) {
  try {
    gram_eig_cuda(state);
  } catch (const std::exception& e) {
    hetdro::cuda::set_eigensolver(Eigensolver::automatic);
    state.SkipWithError(e.what());
  }
}

void gram_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"slots", "k", "n", "route"});
  for (int k : {8, 16, 32, 64, 128, 256}) {
    std::vector<int> ns{2, 10};
    if (k / 2 <= 64 && k / 2 != 2 && k / 2 != 10) ns.push_back(k / 2);
    for (int n : ns)
      for (int slots : {30, 1000})
        for (int route : {0, 1, 2, 3}) b->Args({slots, k, n, route});
  }
}
BENCHMARK(BM_gram_eig_cuda)->Apply(gram_shapes)->UseManualTime()->Unit(benchmark::kMicrosecond);

#endif  // HETDRO_WITH_CUDA

}  // namespace

BENCHMARK_MAIN();
