// Errors. Library code throws; the CLI turns an InputError into its message and exit code 2,
// and anything else into exit code 1 (a bug or an environment failure, not the user's input).
#pragma once

#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace hetdro {

// Bad input from the user: a file, a key, a value. The message names it, says what was found
// and what was expected.
struct InputError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

template <typename... Args>
[[noreturn]] void input_error(fmt::format_string<Args...> format, Args&&... args) {
  throw InputError(fmt::format(format, std::forward<Args>(args)...));
}

}  // namespace hetdro

// An internal invariant; failing it is a bug in hetdro, not bad input.
#define HETDRO_ASSERT(cond)                                                            \
  do {                                                                                 \
    if (!(cond))                                                                       \
      throw std::logic_error(                                                          \
          fmt::format("{}:{}: internal check failed: {}", __FILE__, __LINE__, #cond)); \
  } while (0)
