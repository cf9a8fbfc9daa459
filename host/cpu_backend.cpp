// The CPU backend: host memory and the reference ops (host/ops/), and the run-time choice of
// the training backend (docs/DESIGN.md §6).
#include <omp.h>     // omp_get_max_threads
#include <unistd.h>  // sysconf

#include <cstdlib>  // std::aligned_alloc, std::free
#include <cstring>  // std::memcpy, std::memset
#include <new>      // std::bad_alloc

#include "hetdro/backend.h"
#include "hetdro/check.h"   // input_error
#include "hetdro/comm.h"    // world, node_all_gather
#include "hetdro/device.h"  // query_devices, device_for_rank, use_gpu
#include "hetdro/ops.h"

namespace hetdro {
namespace {

size_t physical_memory() {
  return size_t(::sysconf(_SC_PHYS_PAGES)) * size_t(::sysconf(_SC_PAGESIZE));
}

template <typename T>
class CpuBackend final : public Backend<T> {
 public:
  std::string name() const override { return "cpu"; }
  void release(void* p) override { std::free(p); }
  void upload(void* dst, const void* src, size_t bytes) override { std::memcpy(dst, src, bytes); }
  void download(void* dst, const void* src, size_t bytes) override { std::memcpy(dst, src, bytes); }
  void zero(void* dst, size_t bytes) override { std::memset(dst, 0, bytes); }
  bool synchronous() const override { return true; }
  size_t capacity() const override { return physical_memory(); }

#define HETDRO_OP(name, params, args) \
  void name params override { cpu::name<T> args; }
#include "hetdro/ops.def"
#undef HETDRO_OP

 protected:
  void* allocate_bytes(size_t bytes) override {
    constexpr size_t kAlign = 64;
    void* p = std::aligned_alloc(kAlign, (bytes + kAlign - 1) / kAlign * kAlign);
    if (!p) throw std::bad_alloc();
    return p;
  }
};

}  // namespace

void check_capacity(const Memory& memory, size_t bytes, const std::string& what,
                    const std::string& remedy) {
  if (bytes <= memory.capacity()) return;
  input_error("{} needs {:.1f} GiB of {} memory, more than the {:.1f} GiB there is; {}", what,
              double(bytes) / double(1 << 30), memory.name(),
              double(memory.capacity()) / double(1 << 30), remedy);
}

template <typename T>
std::unique_ptr<Backend<T>> make_cpu_backend() {
  return std::make_unique<CpuBackend<T>>();
}
template std::unique_ptr<Backend<float>> make_cpu_backend<float>();
template std::unique_ptr<Backend<double>> make_cpu_backend<double>();

namespace {
// Every rank of the node says which GPU it took ("" for none), so that two ranks on one GPU
// stop with a message instead of a failing ncclCommInitRank (docs/DESIGN.md §7). A collective:
// every rank of a multi-rank node reaches it, whichever backend it chose.
void check_one_gpu_per_rank(const std::string& gpu_id, const std::string& config_path) {
  if (world().local_size < 2) return;
  const std::string error = shared_gpu_error(node_all_gather(gpu_id));
  if (!error.empty()) input_error("{}: {}", config_path, error);
}
}  // namespace

std::unique_ptr<Backend<float>> make_backend(const std::string& device,
                                             const std::string& config_path, std::string* why) {
  const DeviceReport r = query_devices();
  const int threads = omp_get_max_threads();
  if (device == "cuda" || (device == "auto" && !r.gpus.empty())) {
    const char* asked =
        device == "cuda" ? "train.device = \"cuda\"" : "train.device = \"auto\", a GPU is present";
    if (r.gpus.empty())
      input_error("{}: train.device = \"cuda\", but {}. Use \"auto\" or \"cpu\".", config_path,
                  r.status);
    // One GPU per rank (docs/DESIGN.md §7), made current before the CUDA context exists.
    const World& w = world();
    const DeviceChoice choice = device_for_rank(w.local_rank, w.local_size, int(r.gpus.size()));
    if (!choice.error.empty())
      input_error("{}: {}, but on rank {}: {}", config_path, asked, w.rank, choice.error);
    const std::string gpu_id = use_gpu(choice.device);
    check_one_gpu_per_rank(gpu_id, config_path);
    std::string why_not;
    auto backend = make_cuda_backend(&why_not);
    if (!backend)
      input_error("{}: {}, but {}. Use train.device = \"cpu\".", config_path, asked, why_not);
    if (why)
      *why = fmt::format("device: cuda ({}), GPU {}{}: {}{}", asked, choice.device,
                         w.size > 1 ? fmt::format(" (rank {})", w.rank) : "",
                         r.gpus[size_t(choice.device)].name,
                         device == "auto" ? "; train.device = \"cpu\" keeps the CPU" : "");
    return backend;
  }
  check_one_gpu_per_rank("", config_path);
  if (why) {
    if (device == "cpu")
      *why = fmt::format("device: cpu (train.device = \"cpu\"), {} thread(s)", threads);
    else
      *why = fmt::format("device: cpu ({}), {} thread(s)", r.status, threads);
  }
  return make_cpu_backend<float>();
}

}  // namespace hetdro
