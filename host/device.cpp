// Without CUDA the report says so, and there is no CUDA backend; with it, kernels/device_info.cu
// fills the report in and kernels/cuda_backend.cu makes the backend.
#include "hetdro/device.h"

#include "hetdro/backend.h"  // make_cuda_backend

namespace hetdro {

#ifdef HETDRO_WITH_CUDA
namespace cuda {
DeviceReport query_devices();
}
DeviceReport query_devices() { return cuda::query_devices(); }
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
#endif

}  // namespace hetdro
