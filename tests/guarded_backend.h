// A test backend that proves the host never touches backend memory outside an op (docs/DESIGN.md
// §6): it wraps the CPU backend, and keeps every buffer it allocates in pages protected with
// mprotect(PROT_NONE) whenever none of its ops (or copies) is running. A host read or write of
// backend memory anywhere else ends the process with SIGSEGV, as it would fault on a GPU.
//
// Built with Recording::on, it also records as a CUDA Graph does (docs/DESIGN.md §3): record()
// keeps each op's call, its pointers and host scalars frozen as they were, without running it,
// and replay() runs the calls again in order. A step that passed a per-step value as a host
// scalar would replay the recorded value, so the trainer's results on this backend, compared with
// the plain CPU's, prove on the CPU that the step can be recorded. A copy or an allocation while
// recording throws, as the capture would fail. `refuse` names an op that throws while
// recording: NotRecordable, as a cuSOLVER eigensolver does, or (Refusal::fails) a plain error, as
// a library call that fails under capture would.
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include "hetdro/backend.h"

namespace hetdro::testing {

enum class Records { off, on };
enum class Refusal { not_recordable, fails };

template <typename T>
class GuardedBackend final : public Backend<T> {
 public:
  explicit GuardedBackend(Records records = Records::off, std::string refuse = "",
                          Refusal refusal = Refusal::not_recordable)
      : inner_(make_cpu_backend<T>()),
        records_(records),
        refuse_(std::move(refuse)),
        refusal_(refusal) {}
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
    no_host_copy("upload");
    Open open(*this);
    std::memcpy(dst, src, bytes);
  }
  void download(void* dst, const void* src, size_t bytes) override {
    no_host_copy("download");
    Open open(*this);
    std::memcpy(dst, src, bytes);
  }
  void zero(void* dst, size_t bytes) override {
    if (tape_) {  // a memset node
      tape_->push_back([=] { zero(dst, bytes); });
      return;
    }
    Open open(*this);
    std::memset(dst, 0, bytes);
  }

  std::unique_ptr<Recording> record(const std::function<void()>& issue,
                                    std::string* why_not) override {
    if (records_ == Records::off) return Backend<T>::record(issue, why_not);
    std::vector<std::function<void()>> tape;
    tape_ = &tape;
    try {
      issue();
    } catch (const NotRecordable& e) {
      tape_ = nullptr;
      if (why_not) *why_not = e.what();
      return nullptr;
    } catch (...) {
      tape_ = nullptr;
      throw;
    }
    tape_ = nullptr;
    ++recordings_;
    return std::make_unique<Tape>(std::move(tape));
  }
  int recordings() const { return recordings_; }

#define HETDRO_OP(name, params, args)       \
  void name params override {               \
    if (tape_) {                            \
      if (refuse_ == #name) refuse(#name);  \
      tape_->push_back([=] { name args; }); \
      return;                               \
    }                                       \
    Open open(*this);                       \
    inner_->name args;                      \
  }
#include "hetdro/ops.def"
#undef HETDRO_OP

 protected:
  void* allocate_bytes(size_t bytes) override {
    no_host_copy("an allocation");
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

  struct Tape final : Recording {
    explicit Tape(std::vector<std::function<void()>> calls) : calls_(std::move(calls)) {}
    void replay() override {
      for (auto& call : calls_) call();
    }
    std::vector<std::function<void()>> calls_;
  };
  [[noreturn]] void refuse(const char* op) const {
    if (refusal_ == Refusal::fails)
      throw std::runtime_error(std::string(op) + " failed while recording (test backend)");
    throw NotRecordable(std::string(op) + " cannot be recorded (test backend)");
  }
  void no_host_copy(const char* what) const {
    if (tape_)
      throw std::logic_error(std::string("GuardedBackend: ") + what +
                             " while recording; a CUDA Graph capture would fail");
  }

  std::unique_ptr<Backend<T>> inner_;
  std::map<void*, size_t> regions_;
  Records records_;
  std::string refuse_;
  Refusal refusal_;
  std::vector<std::function<void()>>* tape_ = nullptr;  // while recording
  int recordings_ = 0;
};

}  // namespace hetdro::testing
