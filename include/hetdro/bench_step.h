// `hetdro bench-step`: the training step's time on the backend train.device picks, with the
// step recorded as one CUDA Graph or issued op by op (docs/DESIGN.md §3), for
// scripts/bench_vs_torch.sh.
#pragma once

#include <string>

#include "hetdro/config.h"

namespace hetdro {

struct BenchStepOptions {
  int warmup = 20;          // untimed steps first (the first one also records the graph)
  int steps = 200;          // timed steps
  bool graph = true;        // false: --no-graph
  bool sync_check = false;  // --sync-check: wait after every op (docs/DESIGN.md §3)
  std::string json;         // where to write the record ("" for none)
};

// Times options.steps steps of `config`'s training on its data, each on the backend's own clock
// (CUDA events on a GPU), then as many back to back (as training runs them), and prints the
// median, p10, p90 and the back-to-back mean on one line. With options.json, also writes them as
// one JSON object, with the device's copy and SGEMM ceilings on a GPU.
void bench_step(const Config& config, const BenchStepOptions& options);

}  // namespace hetdro
