// Without CUDA the report says so; with it, kernels/device_info.cu fills it in.
#include "hetdro/device.h"

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
#endif

}  // namespace hetdro
