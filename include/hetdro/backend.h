// The backend: where the step's memory lives and where its ops run (docs/DESIGN.md §6). The model,
// the loss and the trainer are written once against Backend<T>; the CPU backend runs the reference
// ops on host memory, the CUDA backend runs kernels on device memory.
#pragma once

#include <algorithm>  // std::max
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>  // std::swap
#include <vector>

#include "hetdro/ops.h"  // the types the ops take (ClfRule)

namespace hetdro {

// Ops recorded once and replayed as one launch (a CUDA Graph, docs/DESIGN.md §3). What changes
// from one replay to the next lives in backend memory that the recorded ops read.
class Recording {
 public:
  virtual ~Recording() = default;
  virtual void replay() = 0;
};

// Thrown by an op asked to run inside a recording that it cannot be part of (a cuSOLVER
// eigensolver); Memory::record() turns it into its `why_not`.
struct NotRecordable : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Backend memory: allocated once, reached by the host only through copies.
class Memory {
 public:
  virtual ~Memory() = default;
  virtual std::string name() const = 0;  // "cpu", "cuda", ...

  // Counted, so a test can prove that a step allocates nothing.
  void* allocate(size_t bytes) {
    ++allocations_;
    return allocate_bytes(bytes);
  }
  virtual void release(void* p) = 0;
  int64_t allocations() const { return allocations_; }
  // The most memory one allocation may sensibly take (the CPU: physical memory).
  virtual size_t capacity() const = 0;

  virtual void upload(void* dst, const void* host_src, size_t bytes) = 0;
  virtual void download(void* host_dst, const void* src, size_t bytes) = 0;
  virtual void zero(void* dst, size_t bytes) = 0;
  // True when every op has finished by the time it returns (the CPU), so reading results on the
  // host costs no wait.
  virtual bool synchronous() const { return false; }
  // Waits until every op issued so far has finished.
  virtual void synchronize() {}
  // Milliseconds that the ops `issue` enqueues take on this backend's own clock (CUDA events
  // around them on a GPU, the host's clock on the CPU); waits for them.
  // Inline: Memory must keep no out-of-line function, or its type information would live in
  // hetdro_core, which the CUDA library (linked after it) could not reach.
  virtual double time_ms(const std::function<void()>& issue) {
    synchronize();
    const auto start = std::chrono::steady_clock::now();
    issue();
    synchronize();
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
        .count();
  }
  // Whether ops must give the same bits on every run (train.deterministic), or may use library
  // algorithms that sum in a varying order (cuDNN's, cuBLAS's atomics) when those are faster.
  // The CPU's ops are deterministic either way.
  virtual void set_deterministic(bool on) { (void)on; }

  // The debug mode of `--sync-check` and HETDRO_SYNC_CHECK=1 (docs/DESIGN.md §3): a backend whose
  // ops run asynchronously (CUDA) waits after every op and, when an error surfaces, throws naming
  // the op, where() and the op's sizes (hetdro/sync_check.h); the CPU's ops already fail where
  // they fail. Nothing is recorded in this mode: a recorded op runs only at the replay, so there
  // is nothing to wait for after it (the trainer issues every step op by op).
  void set_sync_check(bool on) { sync_check_ = on; }
  bool sync_check() const { return sync_check_; }
  // What the host is doing ("step 12 ..."), for a sync-check failure to name; the trainer keeps
  // it in this mode only.
  void set_where(std::string where) { where_ = std::move(where); }
  const std::string& where() const { return where_; }

  // Records the ops that `issue` enqueues, without running them, for replay(). nullptr, with the
  // reason in `why_not`, when this backend runs its ops as they are called (the CPU) or one of
  // the ops cannot be recorded (a cuSOLVER eigensolver); nothing is left half-recorded then.
  virtual std::unique_ptr<Recording> record(const std::function<void()>& issue,
                                            std::string* why_not) {
    (void)issue;
    if (why_not) *why_not = "the " + name() + " backend runs its ops as they are called";
    return nullptr;
  }

 protected:
  virtual void* allocate_bytes(size_t bytes) = 0;

 private:
  int64_t allocations_ = 0;
  bool sync_check_ = false;
  std::string where_;
};

// One pure virtual method per op of ops.def, with the reference's name and parameters.
template <typename T>
class Backend : public Memory {
 public:
#define HETDRO_OP(name, params, args) virtual void name params = 0;
#include "hetdro/ops.def"
#undef HETDRO_OP
};

// The CPU backend: the reference ops (host/ops/) on host memory.
template <typename T>
std::unique_ptr<Backend<T>> make_cpu_backend();

// The CUDA backend (kernels/cuda_backend.cu): nullptr, with the reason in `why_not`, when this
// build has no CUDA or the machine no GPU.
std::unique_ptr<Backend<float>> make_cuda_backend(std::string* why_not);

// The training backend for train.device ("auto" | "cpu" | "cuda"). `why` receives one line
// saying which device runs and why. Throws an InputError naming `config_path` when the device
// asked for cannot run.
std::unique_ptr<Backend<float>> make_backend(const std::string& device,
                                             const std::string& config_path, std::string* why);

// An owned typed buffer in backend memory.
template <typename U>
class Buffer {
 public:
  Buffer() = default;
  Buffer(Memory& memory, int64_t count)
      : memory_(&memory),
        data_(static_cast<U*>(memory.allocate(size_t(count) * sizeof(U)))),
        count_(count) {}
  Buffer(Buffer&& o) noexcept { swap(o); }
  Buffer& operator=(Buffer&& o) noexcept {
    Buffer taken(std::move(o));
    taken.swap(*this);
    return *this;
  }
  ~Buffer() {
    if (data_) memory_->release(data_);
  }

  U* data() const { return data_; }
  int64_t size() const { return count_; }
  void upload(const std::vector<U>& host) const { upload(host.data(), int64_t(host.size())); }
  void upload(const U* host, int64_t count, int64_t offset = 0) const {
    memory_->upload(data_ + offset, host, size_t(count) * sizeof(U));
  }
  std::vector<U> download() const {
    std::vector<U> host(static_cast<size_t>(count_));
    memory_->download(host.data(), data_, host.size() * sizeof(U));
    return host;
  }
  void zero() const { memory_->zero(data_, size_t(count_) * sizeof(U)); }

 private:
  void swap(Buffer& o) noexcept {
    std::swap(memory_, o.memory_);
    std::swap(data_, o.data_);
    std::swap(count_, o.count_);
  }
  Memory* memory_ = nullptr;
  U* data_ = nullptr;
  int64_t count_ = 0;
};

// Carves many buffers out of one allocation (llm.c's activation block). A layout function runs
// twice over an Arena: first unbound, to measure (every pointer it hands out is null), then
// bound to an allocation of measure().size(), to hand out the real pointers.
class Arena {
 public:
  Arena() = default;  // measuring
  explicit Arena(void* base) : base_(static_cast<std::byte*>(base)) {}

  template <typename U>
  U* take(int64_t count) {
    offset_ = (offset_ + kAlign - 1) / kAlign * kAlign;
    U* p = base_ ? reinterpret_cast<U*>(base_ + offset_) : nullptr;
    offset_ += size_t(count) * sizeof(U);
    return p;
  }
  size_t size() const { return offset_; }
  // For buffers that are never live at once (e.g. each group's evaluation scratch): lay each out
  // from the same start with rewind(), then skip past the largest.
  size_t mark() const { return offset_; }
  void rewind(size_t mark) { offset_ = mark; }
  void skip_to(size_t end) { offset_ = end; }

 private:
  static constexpr size_t kAlign = 256;  // a cache line, and a GPU's preferred alignment
  std::byte* base_ = nullptr;
  size_t offset_ = 0;
};

// Throws an InputError naming `what` and `remedy` when `bytes` exceed the memory's capacity.
void check_capacity(const Memory& memory, size_t bytes, const std::string& what,
                    const std::string& remedy);

// Runs `layout(Arena&)` twice (measure, then bind) and returns the one allocation behind it.
// `what` and `remedy` word the error when it would not fit.
template <typename Layout>
Buffer<std::byte> plan(Memory& memory, const std::string& what, const std::string& remedy,
                       Layout&& layout) {
  Arena measure;
  layout(measure);
  check_capacity(memory, measure.size(), what, remedy);
  Buffer<std::byte> block(memory, int64_t(std::max<size_t>(measure.size(), 1)));
  Arena bound(block.data());
  layout(bound);
  return block;
}

}  // namespace hetdro
