// Config loader (host/config.cpp). Lines "#set KEY=VALUE" (TOML comments) become --set
// overrides, so the fuzzer reaches those too. A config that loads must also load back from
// the TOML that to_toml writes for the run folder, with the same result.
#include <algorithm>  // min
#include <string_view>
#include <vector>

#include "fuzz_input.h"
#include "hetdro/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace hetdro;
  const std::string path = fuzz::write_input("config.toml", data, size);
  std::vector<std::string> overrides;
  std::string_view text(reinterpret_cast<const char*>(data), size);
  for (size_t at = 0; at < text.size();) {
    size_t end = std::min(text.find('\n', at), text.size());
    std::string_view line = text.substr(at, end - at);
    if (line.substr(0, 5) == "#set ") overrides.emplace_back(line.substr(5));
    at = end + 1;
  }
  fuzz::expect_input_error_or_success([&] {
    Config c = load_config(path, overrides);
    const std::string toml = to_toml(c);
    const std::string again = fuzz::write_input(
        "resolved.toml", reinterpret_cast<const uint8_t*>(toml.data()), toml.size());
    try {
      if (to_toml(load_config(again)) != toml) __builtin_trap();
    } catch (const InputError&) {
      __builtin_trap();  // the run folder's config.toml would not load
    }
  });
  return 0;
}
