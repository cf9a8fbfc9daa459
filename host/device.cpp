// Without CUDA the report says so, and there is no CUDA backend; with it, kernels/device_info.cu
// fills the report in, picks the GPU, and kernels/cuda_backend.cu makes the backend. The choice
// of a rank's GPU is plain logic, here in both builds so the CPU tests check it.
#include "hetdro/device.h"

#include <fmt/format.h>

#include <stdexcept>

#include "hetdro/backend.h"  // make_cuda_backend

namespace hetdro {

DeviceChoice device_for_rank(int local_rank, int local_ranks, int visible) {
  DeviceChoice c;
  if (visible < 1) {
    c.error = "no GPU is visible to this rank";
    return c;
  }
  if (local_ranks <= visible) {
    c.device = local_rank;
  } else if (visible == 1) {
    c.device = 0;  // its own GPU, if the launcher set CUDA_VISIBLE_DEVICES per rank: checked after
  } else {
    c.error = fmt::format(
        "{} ranks run on this node but it has {} GPUs, and hetdro takes one GPU per rank "
        "(docs/DESIGN.md §7): start at most {} ranks per node",
        local_ranks, visible, visible);
  }
  return c;
}

std::string shared_gpu_error(const std::vector<std::string>& ids) {
  for (size_t a = 0; a < ids.size(); ++a)
    for (size_t b = a + 1; b < ids.size(); ++b)
      if (!ids[a].empty() && ids[a] == ids[b])
        return fmt::format(
            "local ranks {} and {} on this node would both use GPU {}, and hetdro takes one GPU "
            "per rank (docs/DESIGN.md §7): start at most as many ranks per node as it has GPUs, "
            "or give each rank its own GPU through CUDA_VISIBLE_DEVICES",
            a, b, ids[a]);
  return "";
}

#ifdef HETDRO_WITH_CUDA
namespace cuda {
DeviceReport query_devices();
std::string use_gpu(int device);
}  // namespace cuda
DeviceReport query_devices() { return cuda::query_devices(); }
std::string use_gpu(int device) { return cuda::use_gpu(device); }
#else
DeviceReport query_devices() {
  DeviceReport r;
  r.status = "this build has no CUDA (configured with HETDRO_CUDA=OFF or no nvcc found)";
  return r;
}
std::unique_ptr<Backend<float> > make_cuda_backend(std::string* why_not) {
  if (why_not) *why_not = query_devices().status;
  return nullptr;
}
std::string use_gpu(int device) {
  throw std::logic_error(fmt::format("use_gpu({}): this build has no CUDA", device));
}
#endif

}  // namespace hetdro
