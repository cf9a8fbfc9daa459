// The sync-check debug mode (`--sync-check`, HETDRO_SYNC_CHECK=1; docs/DESIGN.md §3): a backend
// whose ops run asynchronously waits after every op, so that a fault surfaces at the op that made
// it, and says which op, where the host was (the trainer's step) and the op's sizes. Without it a
// faulting kernel shows at the next download, up to 100 steps later, naming the copy.
//
// Header-only: the CUDA backend (hetdro_cuda, linked after hetdro_core) uses it, and so does the
// CPU test that checks the message (tests/test_sync_check.cpp).
#pragma once

#include <fmt/format.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <iterator>  // std::prev
#include <map>
#include <string>
#include <type_traits>
#include <vector>

#include "hetdro/check.h"  // InputError (inline)

namespace hetdro::sync_check {

// HETDRO_SYNC_CHECK's value (nullptr when unset): "1" turns the mode on; unset, "" or "0" leave
// it off; anything else is an error naming the variable, not a silent "off".
inline bool requested(const char* value) {
  if (value == nullptr || *value == '\0' || std::strcmp(value, "0") == 0) return false;
  if (std::strcmp(value, "1") == 0) return true;
  std::string shown;  // printable ASCII only, and not all of a long value
  for (const char* c = value; *c && shown.size() < 40; ++c)
    shown += *c >= ' ' && *c <= '~' ? *c : '?';
  throw InputError(fmt::format("HETDRO_SYNC_CHECK='{}'{}: expected 1 (sync-check on) or 0 (off)",
                               shown, std::strlen(value) > 40 ? "..." : ""));
}

// A backend's live allocations, so that a failure can say how much room each of an op's pointers
// had: the bytes from the pointer to the end of the allocation that holds it (a pointer into the
// trainer's workspace points into one large block).
class Allocations {
 public:
  void add(const void* p, size_t bytes) {
    if (p) blocks_[address(p)] = bytes;
  }
  void remove(const void* p) { blocks_.erase(address(p)); }
  // "<room> of <size> bytes", "null", or "not an allocation of this backend".
  std::string describe(const void* p) const {
    if (p == nullptr) return "null";
    const uintptr_t at = address(p);
    auto it = blocks_.upper_bound(at);
    if (it != blocks_.begin()) {
      it = std::prev(it);
      if (at < it->first + it->second)
        return fmt::format("{} of {} bytes", it->first + it->second - at, it->second);
    }
    return fmt::format("{} (not an allocation of this backend)", p);
  }

 private:
  static uintptr_t address(const void* p) { return reinterpret_cast<uintptr_t>(p); }
  std::map<uintptr_t, size_t> blocks_;  // start -> bytes
};

// "name = value, ..." for an op's arguments: `names` is the op's argument list as ops.def spells
// it, "(out, in, n)"; numbers are given by value, pointers by the room Allocations finds, a
// struct of settings by its name alone.
class Args {
 public:
  Args(const char* names, const Allocations& allocations) : allocations_(allocations) {
    std::string name;
    for (const char* c = names; *c; ++c) {
      if (*c == ',' || *c == ')') {
        names_.push_back(name);
        name.clear();
      } else if (*c != '(' && *c != ' ') {
        name += *c;
      }
    }
  }
  template <typename... A>
  std::string operator()(const A&... values) const {
    std::string out;
    size_t i = 0;
    (append(out, i++, values), ...);
    return out;
  }

 private:
  template <typename V>
  void append(std::string& out, size_t i, const V& v) const {
    if (!out.empty()) out += ", ";
    out += i < names_.size() ? names_[i] : fmt::format("argument {}", i + 1);
    if constexpr (std::is_pointer_v<V>) {
      out += ": " + allocations_.describe(v);
    } else if constexpr (std::is_enum_v<V>) {
      out += fmt::format(" = {}", static_cast<std::underlying_type_t<V>>(v));
    } else if constexpr (std::is_arithmetic_v<V>) {
      out += fmt::format(" = {}", v);
    } else {
      out += " = {...}";  // a struct of settings (ClfRule): no size in it
    }
  }
  const Allocations& allocations_;
  std::vector<std::string> names_;
};

// The message of a failure that surfaced after op `op`; `where` is what the host was doing
// (Memory::where(), "" outside a training step).
inline std::string failure(const std::string& op, const std::string& where, const std::string& args,
                           const std::string& error) {
  return fmt::format("sync-check: op {} failed {}: {}; its arguments: {}", op,
                     where.empty() ? std::string("outside a training step") : "at " + where, error,
                     args);
}

// Runs one op in this mode: `run` issues it and `wait` waits for it, returning the error that
// surfaced ("" for none). An Error that `run` throws (a checked call inside the op) and an error
// from `wait` are thrown as an Error with failure()'s message; `describe()` gives the arguments,
// and is called only then.
template <typename Error, typename Run, typename Wait, typename Describe>
void run_op(const char* op, const std::string& where, Run&& run, Wait&& wait, Describe&& describe) {
  std::string error;
  try {
    run();
  } catch (const Error& e) {
    error = e.what();
  }
  if (error.empty()) error = wait();
  if (!error.empty()) throw Error(failure(op, where, describe(), error));
}

}  // namespace hetdro::sync_check
