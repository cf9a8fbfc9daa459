// Device and library queries for `hetdro info`, and the choice of this thread's GPU. Library
// versions come from the libraries themselves; none of these calls needs a GPU, except the
// device properties.
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>
#include <cusolverDn.h>
#include <fmt/format.h>

#include <string>

#include "cuda_check.h"
#include "hetdro/cuda_ops.h"  // eigensolver_absent
#include "hetdro/device.h"

namespace hetdro::cuda {

namespace {
std::string version3(int v, int major_div, int minor_div) {
  return std::to_string(v / major_div) + "." + std::to_string((v % major_div) / minor_div) + "." +
         std::to_string(v % minor_div);
}
}  // namespace

DeviceReport query_devices() {
  DeviceReport r;
  r.cuda_built = true;
  int runtime = 0;
  if (cudaRuntimeGetVersion(&runtime) == cudaSuccess)
    r.cuda_runtime = std::to_string(runtime / 1000) + "." + std::to_string((runtime % 1000) / 10);
  r.cudnn = version3(int(cudnnGetVersion()), 10000, 100);
  int major = 0, minor = 0, patch = 0;
  cublasGetProperty(MAJOR_VERSION, &major);
  cublasGetProperty(MINOR_VERSION, &minor);
  cublasGetProperty(PATCH_LEVEL, &patch);
  r.cublas = std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(patch);
  cusolverGetProperty(MAJOR_VERSION, &major);
  cusolverGetProperty(MINOR_VERSION, &minor);
  cusolverGetProperty(PATCH_LEVEL, &patch);
  r.cusolver = std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(patch);
  const std::string no_syev = eigensolver_absent(Eigensolver::syev);
  r.eigensolvers = no_syev.empty()
                       ? "jacobi, syevj, syev (automatic: jacobi where it fits, syev)"
                       : "jacobi, syevj (automatic: jacobi where it fits); syev absent: " + no_syev;

  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    r.status = std::string("no CUDA GPU found: ") + cudaGetErrorString(err);
    cudaGetLastError();  // clear it, so later CUDA calls don't see it
    return r;
  }
  for (int d = 0; d < count; ++d) {
    cudaDeviceProp p;
    if (cudaGetDeviceProperties(&p, d) != cudaSuccess) continue;
    r.gpus.push_back(
        {p.name, int64_t(p.totalGlobalMem), p.major, p.minor, int64_t(p.sharedMemPerBlockOptin)});
  }
  if (r.gpus.empty()) r.status = "no CUDA GPU found";
  return r;
}

std::string use_gpu(int device) {
  cudaCheck(cudaSetDevice(device));
  cudaDeviceProp p;
  cudaCheck(cudaGetDeviceProperties(&p, device));
  std::string uuid = "GPU-";
  for (int i = 0; i < 16; ++i) {
    uuid += fmt::format("{:02x}", static_cast<unsigned char>(p.uuid.bytes[i]));
    if (i == 3 || i == 5 || i == 7 || i == 9) uuid += '-';
  }
  char bus[32] = {};
  cudaCheck(cudaDeviceGetPCIBusId(bus, int(sizeof bus), device));
  return fmt::format("{} ({}, PCI {})", uuid, p.name, bus);
}

}  // namespace hetdro::cuda
