// Messages about untrusted text (include/hetdro/check.h).
#include "hetdro/check.h"

#include <algorithm>  // min

namespace hetdro {

std::string excerpt(std::string_view text, size_t max_bytes, char quote) {
  const size_t shown = std::min(text.size(), max_bytes);
  std::string s(1, quote);
  for (size_t i = 0; i < shown; ++i) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if (c >= 0x20 && c < 0x7f && c != quote && c != '\\')
      s += char(c);
    else
      s += fmt::format("\\x{:02x}", c);
  }
  s += quote;
  if (shown < text.size()) s += fmt::format("... ({} bytes)", text.size());
  return s;
}

}  // namespace hetdro
