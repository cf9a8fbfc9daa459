// Errors. Library code throws; the CLI turns an InputError into its message and exit code 2,
// and anything else into exit code 1 (a bug or an environment failure, not the user's input).
#pragma once

#include <fmt/format.h>

#include <stdexcept>
#include <string>
#include <string_view>

namespace hetdro {

// Bad input from the user: a file, a key, a value. The message names it, says what was found
// and what was expected.
struct InputError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// An output that could not be written after it was checked (a full disk, a folder removed
// during the run): an environment failure, exit code 1, with no cause in the user's numbers.
struct WriteError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

template <typename... Args>
[[noreturn]] void input_error(fmt::format_string<Args...> format, Args&&... args) {
  throw InputError(fmt::format(format, std::forward<Args>(args)...));
}

// Untrusted text (a file's header, a value from a file) as a message shows it: quoted with
// `quote`, printable ASCII kept, other bytes as \xNN, and at most `max_bytes` of it, followed
// by "... (N bytes)" when cut, so a hostile file cannot flood or garble the message.
std::string excerpt(std::string_view text, size_t max_bytes = 80, char quote = '"');

}  // namespace hetdro

// An internal invariant; failing it is a bug in hetdro, not bad input.
#define HETDRO_ASSERT(cond)                                                            \
  do {                                                                                 \
    if (!(cond))                                                                       \
      throw std::logic_error(                                                          \
          fmt::format("{}:{}: internal check failed: {}", __FILE__, __LINE__, #cond)); \
  } while (0)
