// CSV reader, with the label column required (training data) and optional (predict's input)
// (host/io/csv.cpp).
#include "fuzz_input.h"
#include "hetdro/io.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace hetdro;
  const std::string path = fuzz::write_input("input.csv", data, size);
  for (bool require_label : {true, false})
    fuzz::expect_input_error_or_success([&] {
      CsvTable t = read_csv(path, "label", require_label);
      // Every row holds a label when any does, and the features fill the shape exactly.
      if (t.x.shape.size() != 2 || t.x.shape[0] * t.x.shape[1] != int64_t(t.x.data.size()))
        __builtin_trap();
      if (!t.y.empty() && int64_t(t.y.size()) != t.x.shape[0]) __builtin_trap();
    });
  return 0;
}
