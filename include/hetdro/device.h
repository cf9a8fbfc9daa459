// What the machine offers: whether CUDA was built in, the GPUs found, library versions.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace hetdro {

struct GpuInfo {
  std::string name;
  int64_t memory_bytes = 0;
  int major = 0, minor = 0;  // compute capability
};

struct DeviceReport {
  bool cuda_built = false;
  std::vector<GpuInfo> gpus;
  std::string status;                                 // why no GPU was found, when none was
  std::string cuda_runtime, cudnn, cublas, cusolver;  // versions, "" when not built
};

DeviceReport query_devices();

}  // namespace hetdro
