// A test backend that proves the host never touches backend memory outside an op (docs/DESIGN.md
// §6): it wraps the CPU backend, and keeps every buffer it allocates in pages protected with
// mprotect(PROT_NONE) whenever none of its ops (or copies) is running. A host read or write of
// backend memory anywhere else ends the process with SIGSEGV, as it would fault on a GPU.
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <map>
#include <memory>
#include <new>
#include <stdexcept>

#include "hetdro/backend.h"

namespace hetdro::testing {

template <typename T>
class GuardedBackend final : public Backend<T> {
 public:
  GuardedBackend() : inner_(make_cpu_backend<T>()) {}
  ~GuardedBackend() override {
    for (auto& [p, bytes] : regions_) munmap(p, bytes);
  }

  // Not synchronous(), so the trainer reads its statistics in windows, as it will on a GPU.
  std::string name() const override { return "guarded-cpu"; }
  size_t capacity() const override { return inner_->capacity(); }
  void release(void* p) override {
    auto it = regions_.find(p);
    if (it == regions_.end())
      throw std::logic_error("GuardedBackend: release of an unknown pointer");
    munmap(it->first, it->second);
    regions_.erase(it);
  }
  void upload(void* dst, const void* src, size_t bytes) override {
    Open open(*this);
    std::memcpy(dst, src, bytes);
  }
  void download(void* dst, const void* src, size_t bytes) override {
    Open open(*this);
    std::memcpy(dst, src, bytes);
  }
  void zero(void* dst, size_t bytes) override {
    Open open(*this);
    std::memset(dst, 0, bytes);
  }

#define HETDRO_OP(name, params, args) \
  void name params override {         \
    Open open(*this);                 \
    inner_->name args;                \
  }
#include "hetdro/ops.def"
#undef HETDRO_OP

 protected:
  void* allocate_bytes(size_t bytes) override {
    const size_t page = size_t(sysconf(_SC_PAGESIZE));
    const size_t length = std::max<size_t>((bytes + page - 1) / page * page, page);
    void* p = mmap(nullptr, length, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::bad_alloc();
    regions_[p] = length;
    return p;
  }

 private:
  // Opens every region for the length of one op, and closes them again after it.
  struct Open {
    explicit Open(GuardedBackend& b) : b_(b) { b_.protect(PROT_READ | PROT_WRITE); }
    ~Open() { b_.protect(PROT_NONE); }
    GuardedBackend& b_;
  };
  void protect(int mode) {
    for (auto& [p, bytes] : regions_)
      if (mprotect(p, bytes, mode) != 0)
        throw std::runtime_error("GuardedBackend: mprotect failed");
  }

  std::unique_ptr<Backend<T>> inner_;
  std::map<void*, size_t> regions_;
};

}  // namespace hetdro::testing
