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
  int64_t shared_optin = 0;  // dynamic shared memory a block may opt in to, bytes
};

struct DeviceReport {
  bool cuda_built = false;
  std::vector<GpuInfo> gpus;
  std::string status;                                 // why no GPU was found, when none was
  std::string cuda_runtime, cudnn, cublas, cusolver;  // versions, "" when not built
  std::string eigensolvers;  // the back ends built, and why one is absent ("" when not built)
};

DeviceReport query_devices();

// One GPU per rank (docs/DESIGN.md §7): the device local rank `local_rank` of the `local_ranks`
// ranks on its node takes among the `visible` GPUs it sees, or, in `error`, why there is none
// to take. With as many GPUs as ranks or more, rank r takes GPU r; with one, each rank takes it
// (a launcher or wrapper gave each rank its own through CUDA_VISIBLE_DEVICES, which
// shared_gpu_error then checks); with 2 ≤ visible < ranks, two ranks would share one: refused.
struct DeviceChoice {
  int device = -1;
  std::string error;
};
DeviceChoice device_for_rank(int local_rank, int local_ranks, int visible);
// "" when the node's ranks (ids[r]: what local rank r's GPU is, "" for a rank without one) each
// have their own GPU; else a message naming two ranks that share one.
std::string shared_gpu_error(const std::vector<std::string>& ids);
// Makes `device` this thread's current GPU (cudaSetDevice, before the CUDA context is made) and
// returns what identifies it across processes (UUID and PCI bus id). Throws without CUDA.
std::string use_gpu(int device);

}  // namespace hetdro
