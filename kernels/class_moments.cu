// The CUDA kernels of class_moments (docs/DESIGN.md §1, §2): per-slot counts, means and
// covariances in one segmented pass over the batch, and the backward to the latents.
//
// Plan (both directions): a stable radix sort of the sample rows by slot (CUB, deterministic) puts
// each slot's samples side by side, in input order; one small block turns the sorted keys into
// each slot's range and cuts every live slot (count ≥ 2) into chunks of samples. Then
//   forward: per chunk, the sums of the shifted samples (z − first sample); per slot, their
//            mean; per chunk and 64×64 tile of the lower triangle, the centred sums Z̃ᵀZ̃ (a tiled
//            GEMM); a slot of one chunk writes its covariance directly, a longer one leaves
//            per-chunk partials that a last kernel adds in chunk order. Two passes, shifted, so
//            fp32 stays accurate under a large common offset (docs/DESIGN.md §7); no atomics.
//   backward: per chunk of 64 samples and 64 output columns, dz += Z̃ · sym(G)·2/(n−1) + g_m/n,
//            a tiled GEMM against the slot's matrix; each dz element has one writer.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cub/device/device_radix_sort.cuh>

#include "class_moments.h"  // centred, cov_entry
#include "context.h"
#include "cuda_check.h"
#include "hetdro/backend.h"  // Arena
#include "hetdro/cuda_ops.h"

namespace hetdro::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kDepth = 16;  // samples (forward) or latent dims (backward) per shared-memory step

// Sort keys: the slot, or `slots` for a sample left out (slot −1), which sorts last.
__global__ void slot_keys(uint32_t* keys, int32_t* rows, const int32_t* slot, int n, int slots) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    const int s = slot[i];
    keys[i] = (s >= 0 && s < slots) ? uint32_t(s) : uint32_t(slots);
    rows[i] = i;
  }
}

__device__ int lower_bound(const uint32_t* keys, int n, uint32_t value) {
  int lo = 0, hi = n;
  while (lo < hi) {
    const int mid = lo + (hi - lo) / 2;
    if (keys[mid] < value)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

// The slot whose chunks hold chunk c: the last s with start[s] ≤ c (start[slots] is the total,
// > c), skipping the slots that have no chunks.
__device__ int slot_of_chunk(const int32_t* start, int slots, int c) {
  int lo = 0, hi = slots;
  while (hi - lo > 1) {
    const int mid = lo + (hi - lo) / 2;
    if (start[mid] <= c)
      lo = mid;
    else
      hi = mid;
  }
  return lo;
}

// One block. offset[s] = where slot s starts among the sorted rows (s ∈ [0, slots]); count[s]
// (may be null); chunk_start = exclusive scan of the chunks of each slot with at least
// `min_rows` rows here, and multi_start the same over slots of more than one chunk (where the
// forward's partials go). A tiled scan with a carry, so any number of slots works.
__global__ void slot_ranges(int32_t* count, int32_t* offset, int32_t* chunk_start,
                            int32_t* multi_start, const uint32_t* keys, int n, int slots, int chunk,
                            int min_rows) {
  __shared__ int scan_a[kThreads], scan_b[kThreads];
  for (int s = threadIdx.x; s <= slots; s += blockDim.x) offset[s] = lower_bound(keys, n, s);
  __syncthreads();  // global writes of this block are visible to it after the barrier
  const int t = threadIdx.x;
  int carry_a = 0, carry_b = 0;
  for (int base = 0; base < slots; base += blockDim.x) {
    const int s = base + t;
    int a = 0, b = 0;
    if (s < slots) {
      const int c = offset[s + 1] - offset[s];
      if (count) count[s] = c;
      a = c >= min_rows ? (c + chunk - 1) / chunk : 0;
      b = a > 1 ? a : 0;
    }
    scan_a[t] = a;
    scan_b[t] = b;
    __syncthreads();
    for (int off = 1; off < blockDim.x; off <<= 1) {  // Hillis–Steele, inclusive
      const int va = t >= off ? scan_a[t - off] : 0, vb = t >= off ? scan_b[t - off] : 0;
      __syncthreads();
      scan_a[t] += va;
      scan_b[t] += vb;
      __syncthreads();
    }
    if (s < slots) {
      chunk_start[s] = carry_a + scan_a[t] - a;
      multi_start[s] = carry_b + scan_b[t] - b;
    }
    carry_a += scan_a[blockDim.x - 1];
    carry_b += scan_b[blockDim.x - 1];
    __syncthreads();  // before the next tile overwrites the scan
  }
  if (t == 0) {
    chunk_start[slots] = carry_a;
    multi_start[slots] = carry_b;
  }
}

// Block (32, 8) per (chunk, 32 latent dims): Σ over the chunk of (z − first sample of the slot).
__global__ void mean_partials(float* part, const float* z, const int32_t* rows,
                              const int32_t* offset, const int32_t* chunk_start, int slots, int k,
                              int chunk) {
  __shared__ float red[8][33];
  const int c = blockIdx.x;
  if (c >= chunk_start[slots]) return;  // whole block: c is the block's
  const int s = slot_of_chunk(chunk_start, slots, c);
  const int begin = offset[s], end = offset[s + 1];
  const int p0 = begin + (c - chunk_start[s]) * chunk, p1 = min(p0 + chunk, end);
  const int d = blockIdx.y * 32 + threadIdx.x;
  float acc = 0.0f;
  if (d < k) {
    const float shift = z[int64_t(rows[begin]) * k + d];
    for (int p = p0 + threadIdx.y; p < p1; p += blockDim.y)
      acc += z[int64_t(rows[p]) * k + d] - shift;
  }
  red[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && d < k) {
    float sum = 0.0f;
    for (int y = 0; y < 8; ++y) sum += red[y][threadIdx.x];
    part[int64_t(c) * k + d] = sum;
  }
}

// Per (slot, dim): the mean of the shifted samples (chunk partials added in order), and the mean
// itself; 0 for a masked slot.
__global__ void mean_finish(float* mean, float* mean_shifted, const float* part, const float* z,
                            const int32_t* rows, const int32_t* offset, const int32_t* chunk_start,
                            int slots, int k) {
  const int64_t total = int64_t(slots) * k;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int s = int(e / k), d = int(e % k);
    const int cnt = offset[s + 1] - offset[s];
    if (cnt < 2) {
      mean[e] = 0.0f;
      mean_shifted[e] = 0.0f;
      continue;
    }
    float sum = 0.0f;
    for (int c = chunk_start[s]; c < chunk_start[s + 1]; ++c) sum += part[int64_t(c) * k + d];
    const float ms = sum / float(cnt);
    mean_shifted[e] = ms;
    mean[e] = z[int64_t(rows[offset[s]]) * k + d] + ms;
  }
}

// Block of 256 per (chunk, lower-triangle tile TS×TS): the centred sums of the chunk's samples,
// Σ z̃_i z̃_jᵀ over the tile, each thread R×R of them. A one-chunk slot finishes its covariance
// here (unbiased, + eps·I) and writes the tile and its mirror, so cov is exactly symmetric; a
// longer slot stores raw partials for cov_finish.
template <int TS>
__global__ void __launch_bounds__(kThreads)
    cov_tiles(float* cov, float* part, const float* z, const int32_t* rows, const int32_t* offset,
              const int32_t* chunk_start, const int32_t* multi_start, const float* mean_shifted,
              int slots, int k, int chunk, float eps) {
  constexpr int R = TS / 16;
  constexpr int kSmem = 2 * kDepth * TS > TS * (TS + 1) ? 2 * kDepth * TS : TS * (TS + 1);
  __shared__ float smem[kSmem];
  float(*As)[TS] = reinterpret_cast<float(*)[TS]>(smem);
  float(*Bs)[TS] = reinterpret_cast<float(*)[TS]>(smem + kDepth * TS);

  const int c = blockIdx.x;
  if (c >= chunk_start[slots]) return;  // whole block
  const int s = slot_of_chunk(chunk_start, slots, c);
  const int begin = offset[s], n_s = offset[s + 1] - begin;
  const int local = c - chunk_start[s];
  const int p0 = begin + local * chunk, p1 = min(p0 + chunk, begin + n_s);
  int ti = 0;  // tile (ti, tj), ti ≥ tj, from the triangle's linear index
  while ((ti + 1) * (ti + 2) / 2 <= int(blockIdx.y)) ++ti;
  const int tj = int(blockIdx.y) - ti * (ti + 1) / 2;
  const int i0 = ti * TS, j0 = tj * TS;
  const float* first = z + int64_t(rows[begin]) * k;
  const float* msh = mean_shifted + int64_t(s) * k;
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;

  float acc[R][R] = {};
  for (int p = p0; p < p1; p += kDepth) {
    for (int e = threadIdx.x; e < kDepth * TS; e += kThreads) {
      const int r = e / TS, col = e % TS, q = p + r;
      float a = 0.0f, b = 0.0f;  // padding rows and columns add nothing
      if (q < p1) {
        const float* row = z + int64_t(rows[q]) * k;
        const int da = i0 + col, db = j0 + col;
        if (da < k) a = moments::centred(row[da], first[da], msh[da]);
        if (db < k) b = moments::centred(row[db], first[db], msh[db]);
      }
      As[r][col] = a;
      Bs[r][col] = b;
    }
    __syncthreads();
#pragma unroll
    for (int r = 0; r < kDepth; ++r) {
      float a[R], b[R];
#pragma unroll
      for (int u = 0; u < R; ++u) {
        a[u] = As[r][ty + 16 * u];
        b[u] = Bs[r][tx + 16 * u];
      }
#pragma unroll
      for (int u = 0; u < R; ++u)
#pragma unroll
        for (int v = 0; v < R; ++v) acc[u][v] += a[u] * b[v];
    }
    __syncthreads();
  }

  if (chunk_start[s + 1] - chunk_start[s] > 1) {  // whole block: the slot is the block's
    float* out = part + (int64_t(multi_start[s] + local) * gridDim.y + blockIdx.y) * (TS * TS);
#pragma unroll
    for (int u = 0; u < R; ++u)
#pragma unroll
      for (int v = 0; v < R; ++v) out[(ty + 16 * u) * TS + tx + 16 * v] = acc[u][v];
    return;
  }
  // Staged through shared memory (the loop's last barrier freed it), so that both the tile and
  // its mirror are written row by row.
  float(*Ts)[TS + 1] = reinterpret_cast<float(*)[TS + 1]>(smem);
#pragma unroll
  for (int u = 0; u < R; ++u)
#pragma unroll
    for (int v = 0; v < R; ++v)
      Ts[ty + 16 * u][tx + 16 * v] =
          moments::cov_entry(acc[u][v], n_s, i0 + ty + 16 * u == j0 + tx + 16 * v, eps);
  __syncthreads();
  float* S = cov + int64_t(s) * k * k;
  for (int e = threadIdx.x; e < TS * TS; e += kThreads) {
    const int a = e / TS, b = e % TS;
    if (i0 + a < k && j0 + b < k) S[int64_t(i0 + a) * k + j0 + b] = Ts[a][b];
    if (ti != tj && j0 + a < k && i0 + b < k) S[int64_t(j0 + a) * k + i0 + b] = Ts[b][a];
  }
}

// Block per (slot, stretch of entries): a masked slot's zeros, and a multi-chunk slot's
// covariance from its partials, added in chunk order. Entry (i, j) reads the lower-triangle
// partial (max, min), so the result is exactly symmetric. One-chunk slots were written already.
__global__ void cov_finish(float* cov, const float* part, const int32_t* offset,
                           const int32_t* chunk_start, const int32_t* multi_start, int k, int ts,
                           int tiles, float eps) {
  const int s = blockIdx.x;
  const int n_s = offset[s + 1] - offset[s], nch = chunk_start[s + 1] - chunk_start[s];
  if (n_s >= 2 && nch == 1) return;
  const int64_t tile_floats = int64_t(ts) * ts, chunk_floats = tiles * tile_floats;
  float* S = cov + int64_t(s) * k * k;
  for (int64_t e = blockIdx.y * int64_t(blockDim.x) + threadIdx.x; e < int64_t(k) * k;
       e += int64_t(gridDim.y) * blockDim.x) {
    const int i = int(e / k), j = int(e % k);
    float sum = 0.0f;
    if (n_s >= 2) {
      const int hi = max(i, j), lo = min(i, j), ti = hi / ts, tj = lo / ts;
      const float* p = part + multi_start[s] * chunk_floats +
                       (ti * (ti + 1) / 2 + tj) * tile_floats + (hi % ts) * ts + lo % ts;
      for (int c = 0; c < nch; ++c) sum += p[c * chunk_floats];
    }
    S[e] = moments::cov_entry(sum, n_s, i == j, eps);
  }
}

// Block of 256 per (chunk of 64 sorted samples of one slot, 64 columns of dz):
// dz_i += Σ_d z̃_i[d] (G + Gᵀ)[d][j] / (n−1) + g_m[j] / n   (docs/DESIGN.md §2), n = count[s]:
// the slot's count in the batch whose moments these are, which under data parallelism is the
// global batch, larger than the rows of it here (§7).
__global__ void __launch_bounds__(kThreads)
    dz_tiles(float* dz, const float* dmean, const float* dcov, const float* z, const float* mean,
             const int32_t* count, const int32_t* rows, const int32_t* offset,
             const int32_t* chunk_start, int slots, int k) {
  constexpr int TM = 64, TN = 64, R = 4;
  __shared__ float As[kDepth][TM + 1];  // centred samples, transposed; padded against conflicts
  __shared__ float Bs[kDepth][TN + 1];  // rows of (G + Gᵀ)/(n−1)
  const int c = blockIdx.x;
  if (c >= chunk_start[slots]) return;  // whole block
  const int s = slot_of_chunk(chunk_start, slots, c);
  const int n = count[s];
  if (n < 2) return;  // whole block: a slot without moments adds nothing
  const int begin = offset[s], n_s = offset[s + 1] - begin;
  const int p0 = begin + (c - chunk_start[s]) * TM, p1 = min(p0 + TM, begin + n_s);
  const int j0 = blockIdx.y * TN;
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const float* m = mean + int64_t(s) * k;

  float acc[R][R] = {};
  if (dcov != nullptr) {
    const float* G = dcov + int64_t(s) * k * k;
    const float scale = 1.0f / float(n - 1);  // 2/(n−1) · ½
    for (int d0 = 0; d0 < k; d0 += kDepth) {
      for (int e = threadIdx.x; e < TM * kDepth; e += kThreads) {
        const int r = e / kDepth, dd = e % kDepth, q = p0 + r, d = d0 + dd;
        As[dd][r] = (q < p1 && d < k) ? z[int64_t(rows[q]) * k + d] - m[d] : 0.0f;
      }
      for (int e = threadIdx.x; e < kDepth * TN; e += kThreads) {
        const int dd = e / TN, cc = e % TN, d = d0 + dd, j = j0 + cc;
        Bs[dd][cc] = (d < k && j < k) ? G[int64_t(d) * k + j] : 0.0f;
      }
      __syncthreads();
      // Gᵀ's part read along its rows (coalesced), each entry by the thread that finishes it.
      for (int e = threadIdx.x; e < kDepth * TN; e += kThreads) {
        const int cc = e / kDepth, dd = e % kDepth, d = d0 + dd, j = j0 + cc;
        if (d < k && j < k) Bs[dd][cc] = (Bs[dd][cc] + G[int64_t(j) * k + d]) * scale;
      }
      __syncthreads();
#pragma unroll
      for (int r = 0; r < kDepth; ++r) {
        float a[R], b[R];
#pragma unroll
        for (int u = 0; u < R; ++u) {
          a[u] = As[r][ty + 16 * u];
          b[u] = Bs[r][tx + 16 * u];
        }
#pragma unroll
        for (int u = 0; u < R; ++u)
#pragma unroll
          for (int v = 0; v < R; ++v) acc[u][v] += a[u] * b[v];
      }
      __syncthreads();
    }
  }
  const float inv_n = 1.0f / float(n);
#pragma unroll
  for (int u = 0; u < R; ++u) {
    const int q = p0 + ty + 16 * u;
    if (q >= p1) continue;
    float* row = dz + int64_t(rows[q]) * k;
#pragma unroll
    for (int v = 0; v < R; ++v) {
      const int j = j0 + tx + 16 * v;
      if (j < k) row[j] += acc[u][v] + (dmean ? dmean[int64_t(s) * k + j] * inv_n : 0.0f);
    }
  }
}

// The sorted rows and each slot's range and chunks, carved from the op's scratch.
struct SlotOrder {
  uint32_t *keys_in = nullptr, *keys = nullptr;
  int32_t *rows_in = nullptr, *rows = nullptr;
  int32_t *offset = nullptr, *chunk_start = nullptr, *multi_start = nullptr;
  void* cub_temp = nullptr;
  size_t cub_bytes = 0;
  int end_bit = 1;

  SlotOrder(int n, int slots) {
    while ((uint64_t(1) << end_bit) <= uint64_t(slots)) ++end_bit;  // keys are 0..slots
    cudaCheck(cub::DeviceRadixSort::SortPairs(nullptr, cub_bytes, keys_in, keys, rows_in, rows, n,
                                              0, end_bit, context().stream()));
  }
  void layout(Arena& a, int n, int slots) {
    keys_in = a.take<uint32_t>(n);
    keys = a.take<uint32_t>(n);
    rows_in = a.take<int32_t>(n);
    rows = a.take<int32_t>(n);
    offset = a.take<int32_t>(slots + 1);
    chunk_start = a.take<int32_t>(slots + 1);
    multi_start = a.take<int32_t>(slots + 1);
    cub_temp = a.take<std::byte>(int64_t(cub_bytes));
  }
  // Sort the rows by slot (stable: input order within a slot) and cut the slots of at least
  // `min_rows` rows into chunks.
  void run(int32_t* count, const int32_t* slot, int n, int slots, int chunk, int min_rows) {
    cudaStream_t st = context().stream();
    slot_keys<<<blocks_for(n, kThreads), kThreads, 0, st>>>(keys_in, rows_in, slot, n, slots);
    launchCheck();
    if (n > 0)
      cudaCheck(cub::DeviceRadixSort::SortPairs(cub_temp, cub_bytes, keys_in, keys, rows_in, rows,
                                                n, 0, end_bit, st));
    slot_ranges<<<1, kThreads, 0, st>>>(count, offset, chunk_start, multi_start, keys, n, slots,
                                        chunk, min_rows);
    launchCheck();
  }
};

// Chunks never outnumber ⌈n/chunk⌉ + slots, nor n/min_rows (each holds ≥ min_rows samples).
int max_chunks(int n, int slots, int chunk, int min_rows) {
  return int(std::max<int64_t>(
      1, std::min<int64_t>((int64_t(n) + chunk - 1) / chunk + slots, int64_t(n) / min_rows)));
}

// The forward's chunk: 512 samples, doubled until the split sums (at most 2·⌈n/chunk⌉ chunks
// of multi-chunk slots) fit in 64 MiB.
int forward_chunk(int n, int64_t chunk_floats) {
  int chunk = 512;
  while (chunk < n &&
         2 * ((int64_t(n) + chunk - 1) / chunk) * chunk_floats * 4 > (int64_t(64) << 20))
    chunk *= 2;
  return chunk;
}

}  // namespace

template <>
void class_moments_forward<float>(float* mean, float* cov, int32_t* count, const float* z,
                                  const int32_t* slot, int n, int k, int slots, float eps) {
  if (slots <= 0 || k <= 0) return;
  cudaStream_t st = context().stream();
  const int ts = k <= 32 ? 32 : 64, side = (k + ts - 1) / ts, tiles = side * (side + 1) / 2;
  const int64_t chunk_floats = int64_t(tiles) * ts * ts;
  const int chunk = forward_chunk(n, chunk_floats);
  const int chunks = max_chunks(n, slots, chunk, 2);
  const int64_t multi = 2 * ((int64_t(n) + chunk - 1) / chunk);

  SlotOrder order(n, slots);
  float *mean_part = nullptr, *mean_shifted = nullptr, *cov_part = nullptr;
  auto layout = [&](Arena& a) {
    order.layout(a, n, slots);
    mean_part = a.take<float>(int64_t(chunks) * k);
    mean_shifted = a.take<float>(int64_t(slots) * k);
    cov_part = a.take<float>(multi * chunk_floats);
  };
  Arena measure;
  layout(measure);
  Arena bound(context().scratch(measure.size()));
  layout(bound);

  order.run(count, slot, n, slots, chunk, 2);
  mean_partials<<<dim3(chunks, (k + 31) / 32), dim3(32, 8), 0, st>>>(
      mean_part, z, order.rows, order.offset, order.chunk_start, slots, k, chunk);
  launchCheck();
  mean_finish<<<blocks_for(int64_t(slots) * k, kThreads), kThreads, 0, st>>>(
      mean, mean_shifted, mean_part, z, order.rows, order.offset, order.chunk_start, slots, k);
  launchCheck();
  const dim3 grid(chunks, tiles);
  if (ts == 32)
    cov_tiles<32><<<grid, kThreads, 0, st>>>(cov, cov_part, z, order.rows, order.offset,
                                             order.chunk_start, order.multi_start, mean_shifted,
                                             slots, k, chunk, eps);
  else
    cov_tiles<64><<<grid, kThreads, 0, st>>>(cov, cov_part, z, order.rows, order.offset,
                                             order.chunk_start, order.multi_start, mean_shifted,
                                             slots, k, chunk, eps);
  launchCheck();
  const int64_t stretches = (int64_t(k) * k + kThreads - 1) / kThreads;
  cov_finish<<<dim3(slots, unsigned(std::min<int64_t>(stretches, 1024))), kThreads, 0, st>>>(
      cov, cov_part, order.offset, order.chunk_start, order.multi_start, k, ts, tiles, eps);
  launchCheck();
}

template <>
void class_moments_backward<float>(float* dz, const float* dmean, const float* dcov, const float* z,
                                   const float* mean, const int32_t* count, const int32_t* slot,
                                   int n, int k, int slots) {
  if (dz == nullptr || (dmean == nullptr && dcov == nullptr) || slots <= 0 || k <= 0 || n < 1)
    return;
  constexpr int kRows = 64;  // dz_tiles' TM
  // Every slot with a row here gets chunks (count[s], not the rows here, says whether it has
  // moments: under data parallelism one row of a slot may be all this shard holds of it).
  const int chunks = max_chunks(n, slots, kRows, 1);
  SlotOrder order(n, slots);
  Arena measure;
  order.layout(measure, n, slots);
  Arena bound(context().scratch(measure.size()));
  order.layout(bound, n, slots);
  order.run(nullptr, slot, n, slots, kRows, 1);
  dz_tiles<<<dim3(chunks, (k + 63) / 64), kThreads, 0, context().stream()>>>(
      dz, dmean, dcov, z, mean, count, order.rows, order.offset, order.chunk_start, slots, k);
  launchCheck();
}

}  // namespace hetdro::cuda
