// Row-wise kernels over [n, cols] (softmax_xent, softmax_forward, argmax_rows): a tile of W lanes
// of one warp per row, W the smallest power of two ≥ cols up to 32, so narrow rows (10 classes) do
// not leave most of a warp idle and wide rows (1000 classes) use all 32 lanes.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace hetdro::cuda {

constexpr int kRowThreads = 256;  // threads per block of a row kernel: whole warps

// The tile width for rows of `cols` columns.
inline int row_tile_width(int cols) { return cols > 16 ? 32 : cols > 8 ? 16 : cols > 4 ? 8 : 4; }

// Lanes of a W-wide tile exchange by shuffles within their tile; every lane of the warp must
// call these together (the row loops keep the warp converged).
template <int W>
__device__ float tile_max(float v) {
  for (int offset = W / 2; offset > 0; offset /= 2) {
    const float other = __shfl_xor_sync(0xffffffffu, v, offset, W);
    v = v < other ? other : v;
  }
  return v;
}
template <int W>
__device__ float tile_sum(float v) {
  for (int offset = W / 2; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset, W);
  return v;
}

// The row loop of a tile: calls body(row, live, lane) for every row the tile owns. The loop runs
// per warp, so all 32 lanes take every turn together and shuffle safely; lanes past the last
// row come along with live = false.
template <int W, typename Body>
__device__ void for_each_row_tile(int64_t n, Body body) {
  constexpr int kRowsPerWarp = 32 / W;
  const int64_t thread = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t warps = int64_t(gridDim.x) * blockDim.x / 32;
  const int lane = threadIdx.x % W, tile = (threadIdx.x % 32) / W;
  for (int64_t base = thread / 32 * kRowsPerWarp; base < n; base += warps * kRowsPerWarp) {
    const int64_t row = base + tile;
    body(row < n ? row : 0, row < n, lane);
  }
}

}  // namespace hetdro::cuda
