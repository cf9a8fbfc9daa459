// Internal to host/: the samples of each class-moment slot, for the CPU reference of
// class_moments (host/ops/class_moments.cpp) and the data-parallel packing of a shard's moments
// (host/comm.cpp).
#pragma once

#include <cstdint>
#include <vector>

namespace hetdro::cpu {

// The samples of each slot, in input order; slot −1 leaves a sample out.
std::vector<std::vector<int32_t>> slot_members(const int32_t* slot, int n, int slots);

}  // namespace hetdro::cpu
