// The CUDA backend (docs/DESIGN.md §6): device memory, copies on the context's stream, and the
// kernels of every op (hetdro::cuda, kernels/<op>.cu).
#include <cuda_runtime.h>

#include <cstdlib>  // getenv
#include <functional>
#include <memory>
#include <string>

#include "context.h"
#include "cuda_check.h"
#include "hetdro/backend.h"
#include "hetdro/cuda_ops.h"
#include "hetdro/cuda_timing.h"  // event_ms
#include "hetdro/sync_check.h"   // --sync-check: the op's arguments and the failure's message

namespace hetdro {
namespace {

// One recorded step, instantiated once; a replay is one launch on the context's stream.
class CudaGraph final : public Recording {
 public:
  explicit CudaGraph(cudaGraphExec_t exec) : exec_(exec) {}
  ~CudaGraph() override { cudaGraphExecDestroy(exec_); }
  CudaGraph(const CudaGraph&) = delete;
  CudaGraph& operator=(const CudaGraph&) = delete;
  void replay() override { cudaCheck(cudaGraphLaunch(exec_, cuda::context().stream())); }

 private:
  cudaGraphExec_t exec_;
};

class CudaBackend final : public Backend<float> {
 public:
  using T = float;                          // the element type ops.def's parameters name
  CudaBackend() { (void)cuda::context(); }  // the stream and handles, before the first op
  std::string name() const override { return "cuda"; }
  void release(void* p) override {  // not checked: called from destructors
    allocations_.remove(p);
    cudaFree(p);
  }
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
    if (!sync_check()) return cudaCheck(cudaMemsetAsync(dst, 0, bytes, stream()));
    sync_check::run_op<cuda::CudaError>(
        "zero", where(), [&] { cudaCheck(cudaMemsetAsync(dst, 0, bytes, stream())); },
        wait_for_stream,
        [&] { return sync_check::Args("(dst, bytes)", allocations_)(dst, bytes); });
  }
  void synchronize() override { cudaCheck(cudaStreamSynchronize(stream())); }
  void set_deterministic(bool on) override { cuda::context().set_deterministic(on); }
  // CUDA events around the ops on the stream: the device's time, not the host's enqueueing.
  double time_ms(const std::function<void()>& issue) override { return cuda::event_ms(issue); }

  // Stream capture (docs/DESIGN.md §3). Relaxed mode, so that a workspace that still had to grow
  // could (the trainer records only after one step has sized them all). An op that cannot be
  // recorded throws NotRecordable: the capture is ended and dropped, and nothing ran.
  std::unique_ptr<Recording> record(const std::function<void()>& issue,
                                    std::string* why_not) override {
    if (sync_check()) {  // waiting after each op is not allowed inside a capture
      if (why_not) *why_not = "sync-check: every op is waited for and checked";
      return nullptr;
    }
    const cudaStream_t s = stream();
    cudaCheck(cudaStreamBeginCapture(s, cudaStreamCaptureModeRelaxed));
    cudaGraph_t graph = nullptr;
    try {
      issue();
    } catch (...) {
      cudaStreamEndCapture(s, &graph);  // ends the capture, whatever state it is in
      if (graph) cudaGraphDestroy(graph);
      (void)cudaGetLastError();
      try {
        throw;
      } catch (const NotRecordable& e) {
        if (why_not) *why_not = e.what();
        return nullptr;
      }
    }
    cudaCheck(cudaStreamEndCapture(s, &graph));
    cudaGraphExec_t exec = nullptr;
    const cudaError_t made = cudaGraphInstantiate(&exec, graph, 0);
    cudaGraphDestroy(graph);
    cudaCheck(made);
    return std::make_unique<CudaGraph>(exec);
  }

  size_t capacity() const override {
    size_t free = 0, total = 0;
    cudaCheck(cudaMemGetInfo(&free, &total));
    return free;
  }

  // Every op; in sync-check mode (docs/DESIGN.md §3) each is waited for, and a failure inside
  // it or surfacing after it names the op, where() and its arguments' sizes.
#define HETDRO_OP(name, params, args)                                     \
  void name params override {                                             \
    if (!sync_check()) return cuda::name<float> args;                     \
    sync_check::run_op<cuda::CudaError>(                                  \
        #name, where(), [&] { cuda::name<float> args; }, wait_for_stream, \
        [&] { return sync_check::Args(#args, allocations_) args; });      \
  }
#include "hetdro/ops.def"
#undef HETDRO_OP

 protected:
  void* allocate_bytes(size_t bytes) override {
    void* p = nullptr;
    if (bytes == 0) return p;  // an empty buffer (tests, empty groups): no cudaMalloc(0)
    cudaCheck(cudaMalloc(&p, bytes));
    allocations_.add(p, bytes);
    return p;
  }

 private:
  static cudaStream_t stream() { return cuda::context().stream(); }
  // Sync-check's wait: the stream's first error, or a launch error no launchCheck read; "" if
  // none.
  static std::string wait_for_stream() {
    cudaError_t e = cudaStreamSynchronize(stream());
    const cudaError_t last = cudaGetLastError();  // read, so that it is cleared
    if (e == cudaSuccess) e = last;
    if (e == cudaSuccess) return "";
    return std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e);
  }
  sync_check::Allocations allocations_;  // for a failure's sizes
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
  auto backend = std::make_unique<CudaBackend>();
  // The debug mode for every CUDA backend the process makes: `hetdro` and the GPU tests alike.
  backend->set_sync_check(sync_check::requested(std::getenv("HETDRO_SYNC_CHECK")));
  return backend;
}

}  // namespace hetdro
