// The CUDA backend (docs/DESIGN.md §6): device memory, copies on the context's stream, and the
// kernels of every op (hetdro::cuda, kernels/<op>.cu).
#include <cuda_runtime.h>

#include <memory>
#include <string>

#include "context.h"
#include "cuda_check.h"
#include "hetdro/backend.h"
#include "hetdro/cuda_ops.h"

namespace hetdro {
namespace {

class CudaBackend final : public Backend<float> {
 public:
  using T = float;                          // the element type ops.def's parameters name
  CudaBackend() { (void)cuda::context(); }  // the stream and handles, before the first op
  std::string name() const override { return "cuda"; }
  void release(void* p) override { cudaFree(p); }  // not checked: called from destructors
  // Host memory is pageable, so the copies wait for the stream; the step itself never copies.
  void upload(void* dst, const void* src, size_t bytes) override {
    if (bytes == 0) return;  // an empty buffer's pointers may be null: no copy to make
    cudaCheck(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream()));
    cudaCheck(cudaStreamSynchronize(stream()));
  }
  void download(void* dst, const void* src, size_t bytes) override {
    if (bytes == 0) return;
    cudaCheck(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream()));
    cudaCheck(cudaStreamSynchronize(stream()));
  }
  void zero(void* dst, size_t bytes) override {
    if (bytes == 0) return;
    cudaCheck(cudaMemsetAsync(dst, 0, bytes, stream()));
  }
  size_t capacity() const override {
    size_t free = 0, total = 0;
    cudaCheck(cudaMemGetInfo(&free, &total));
    return free;
  }

#define HETDRO_OP(name, params, args) \
  void name params override { cuda::name<float> args; }
#include "hetdro/ops.def"
#undef HETDRO_OP

 protected:
  void* allocate_bytes(size_t bytes) override {
    void* p = nullptr;
    if (bytes == 0) return p;  // an empty buffer (tests, empty groups): no cudaMalloc(0)
    cudaCheck(cudaMalloc(&p, bytes));
    return p;
  }

 private:
  static cudaStream_t stream() { return cuda::context().stream(); }
};

}  // namespace

std::unique_ptr<Backend<float>> make_cuda_backend(std::string* why_not) {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess || count == 0) {
    if (why_not)
      *why_not = err != cudaSuccess ? std::string("no CUDA GPU found: ") + cudaGetErrorString(err)
                                    : std::string("no CUDA GPU found");
    cudaGetLastError();  // clear it, so later CUDA calls don't see it
    return nullptr;
  }
  return std::make_unique<CudaBackend>();
}

}  // namespace hetdro
