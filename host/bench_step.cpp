// `hetdro bench-step`: per-step times of the real trainer on real data, as
// scripts/bench_vs_torch.sh compares them with the PyTorch reference (docs/DESIGN.md §3).
#include "hetdro/bench_step.h"

#include <fmt/format.h>
#include <omp.h>  // omp_get_max_threads

#include <algorithm>
#include <nlohmann/json.hpp>
#include <vector>

#include "hetdro/backend.h"
#include "hetdro/check.h"  // input_error
#include "hetdro/data.h"
#include "hetdro/device.h"
#include "hetdro/io.h"  // write_text_file
#include "hetdro/trainer.h"
#ifdef HETDRO_WITH_CUDA
#include "hetdro/cuda_timing.h"  // measure_ceilings
#endif

namespace hetdro {
namespace {

// The value below which a share `p` of the sorted times lies (nearest rank).
double quantile(const std::vector<double>& sorted, double p) {
  const size_t i = size_t(p * double(sorted.size() - 1) + 0.5);
  return sorted[std::min(i, sorted.size() - 1)];
}

}  // namespace

void bench_step(const Config& config, const BenchStepOptions& o) {
  if (o.steps < 1) input_error("bench-step --steps {}: expected at least 1", o.steps);
  if (o.warmup < 1)
    input_error("bench-step --warmup {}: expected at least 1 (the first step records the graph)",
                o.warmup);
  std::string why;
  auto backend = make_backend(config.train.device, config.path, &why);
  fmt::print("{}\n", why);
  if (o.sync_check) backend->set_sync_check(true);
  const std::string backend_name = backend->name();
  Trainer trainer(config, load_groups(config), std::move(backend));
  trainer.use_graph(o.graph);
  const StepTimes times = trainer.time_steps(o.warmup, o.steps);
  std::vector<double> ms = times.each;
  std::sort(ms.begin(), ms.end());
  const double median = quantile(ms, 0.5), p10 = quantile(ms, 0.1), p90 = quantile(ms, 0.9);
  const bool graph = trainer.graph_active();
  const DeviceReport devices = query_devices();
  const std::string device = backend_name == "cuda" && !devices.gpus.empty()
                                 ? devices.gpus[0].name
                                 : fmt::format("{} thread(s)", omp_get_max_threads());
  const int B = config.train.batch_size;
  fmt::print(
      "bench-step: {} ({}), {}: median {:.4f} ms/step (p10 {:.4f}, p90 {:.4f}) over {} steps "
      "timed one by one after {} warm-up; back to back {:.4f} ms/step, {:.0f} samples/s\n",
      backend_name, device,
      graph ? "one CUDA Graph per step" : "op by op (" + trainer.why_no_graph() + ")", median, p10,
      p90, o.steps, o.warmup, times.back_to_back, B * 1000.0 / times.back_to_back);
  if (o.json.empty()) return;
  nlohmann::json j = {{"impl", "hetdro"},
                      {"backend", backend_name},
                      {"device", device},
                      {"graph", graph},
                      {"steps", o.steps},
                      {"warmup", o.warmup},
                      {"median_ms", median},
                      {"p10_ms", p10},
                      {"p90_ms", p90},
                      {"back_to_back_ms", times.back_to_back},
                      {"batch_size", B},
                      {"config", config.path},
                      {"deterministic", config.train.deterministic}};
  if (!graph) j["why_no_graph"] = trainer.why_no_graph();
#ifdef HETDRO_WITH_CUDA
  if (backend_name == "cuda") {
    const cuda::Ceilings c = cuda::measure_ceilings();
    j["ceilings"] = {{"copy_gbps", c.copy_gbps}, {"sgemm_tflops", c.sgemm_tflops}};
  }
#endif
  write_text_file(o.json, j.dump(2) + "\n");
  fmt::print("wrote {}\n", o.json);
}

}  // namespace hetdro
