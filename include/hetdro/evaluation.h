// What evaluating a model on one split of every group gives: accuracy, the majority-class
// baseline and the confusion matrix per group, and the worst and mean group accuracy.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace hetdro {

struct GroupEval {
  std::string name;
  int64_t samples = 0;
  double accuracy = 0;
  double majority = 0;             // the accuracy of always guessing the split's commonest class
  std::vector<int64_t> confusion;  // [C,C], row = true class, column = predicted
};

// One split of every group (the groups that have it: a group may keep no validation split).
struct Evaluation {
  std::vector<GroupEval> groups;
  double worst = 0, mean = 0;
};

enum class SplitKind { test, val };

}  // namespace hetdro
