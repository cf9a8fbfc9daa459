// The low-rank Gram route to Ŝ's eigendecomposition on the GPU (docs/DESIGN.md §3): one block
// per slot takes the slot's n ≤ 64 samples, centres them, solves the n×n Gram matrix with the
// parallel Jacobi of kernels/jacobi.h in shared memory, lifts the live eigenvectors to R^k and
// completes them to an orthonormal basis by Householder QR. Output as cuda::eigh's for Ŝ. Not
// wired into w2_gaussian (which receives covariances, not samples); built to be measured against
// the full eigensolvers (bench/bench_gram_eig.cpp). The arithmetic is in kernels/gram_eig.h,
// which the CPU tests check.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "context.h"
#include "cuda_check.h"
#include "gram_eig.h"
#include "hetdro/cuda_ops.h"
#include "jacobi.h"
#include "jacobi_block.cuh"  // tree_sum, sweeps

namespace hetdro::cuda {
namespace {

namespace jac = hetdro::jacobi;
namespace gr = hetdro::gram;
using Rot = jac::Rotation<float>;

// Entries of y per lane when a warp holds a k-vector (k ≤ kMaxK), lane ℓ holding ℓ + 32t.
constexpr int kPerLane = gr::kMaxK / 32;

// Shared memory of one block for up to N samples: the centred samples zc (row stride k + 1, so
// the Gram's row walks fall in different banks), the Jacobi's eigenvectors v and matrix a
// (stride Np + 1), whose space the live vectors X (r×k) take once a's eigenvalues are read, the
// round's rotations and pivots, the reduction buffer, the eigenvalue order, and R's diagonal
// and the reflectors' β.
struct Layout {
  int np, ld, ldz, rmax;
  size_t zc, v, ax, rot, pp, qq, red, desc, order, alpha, beta, bytes;
};

Layout layout(int max_n, int k, int threads) {
  Layout l{};
  l.np = jac::padded(max_n);
  l.ld = l.np + 1;
  l.ldz = k + 1;
  l.rmax = max_n - 1 < k ? max_n - 1 : k;
  size_t off = 0;
  auto take = [&off](size_t bytes) {
    const size_t at = off;
    off += (bytes + 15) / 16 * 16;
    return at;
  };
  const size_t a_bytes = sizeof(float) * l.np * l.ld, x_bytes = sizeof(float) * l.rmax * k;
  l.zc = take(sizeof(float) * max_n * l.ldz);
  l.v = take(sizeof(float) * l.np * l.ld);
  l.ax = take(a_bytes > x_bytes ? a_bytes : x_bytes);
  l.rot = take(sizeof(Rot) * (l.np / 2));
  l.pp = take(sizeof(int) * (l.np / 2));
  l.qq = take(sizeof(int) * (l.np / 2));
  l.red = take(sizeof(float) * threads);
  l.desc = take(sizeof(float) * l.np);
  l.order = take(sizeof(int) * l.np);
  l.alpha = take(sizeof(float) * (l.rmax + 1));
  l.beta = take(sizeof(float) * (l.rmax + 1));
  l.bytes = off;
  return l;
}

// The Jacobi rounds and the Householder steps are barrier-bound; 128 threads serve the small
// shapes, 256 the n·m Jacobi items and k rows of the completion at the large ones.
int threads_for(int max_n, int k) { return max_n > 32 || k > 64 ? 256 : 128; }

// Σ over the warp, the same value in every lane: a fixed shuffle tree into lane 0, then its
// broadcast (a butterfly would give each lane its own rounding).
__device__ float warp_sum(float x) {
  for (int off = 16; off > 0; off /= 2) x += __shfl_down_sync(0xffffffffu, x, off);
  return __shfl_sync(0xffffffffu, x, 0);
}

__global__ void gram_eig_kernel(float* __restrict__ w, float* __restrict__ U,
                                const float* __restrict__ z, const int32_t* __restrict__ slot_start,
                                const int32_t* __restrict__ slot_count, int k, float eps, int max_n,
                                Layout L) {
  extern __shared__ __align__(16) unsigned char smem[];
  float* zc = reinterpret_cast<float*>(smem + L.zc);
  float* v = reinterpret_cast<float*>(smem + L.v);
  float* a = reinterpret_cast<float*>(smem + L.ax);
  float* X = a;  // after the eigenvalues are read
  Rot* rot = reinterpret_cast<Rot*>(smem + L.rot);
  int* pp = reinterpret_cast<int*>(smem + L.pp);
  int* qq = reinterpret_cast<int*>(smem + L.qq);
  float* red = reinterpret_cast<float*>(smem + L.red);
  float* desc = reinterpret_cast<float*>(smem + L.desc);
  int* order = reinterpret_cast<int*>(smem + L.order);
  float* alpha = reinterpret_cast<float*>(smem + L.alpha);
  float* beta = reinterpret_cast<float*>(smem + L.beta);

  const int tid = threadIdx.x, nt = blockDim.x, lane = tid % 32, warp = tid / 32, warps = nt / 32;
  const int64_t b = blockIdx.x, kk = int64_t(k) * k;
  float* wb = w + b * k;
  float* Ub = U + b * kk;
  const int n = slot_count[b];  // the same in every thread: the early return is block-wide
  // A masked slot: Ŝ is 0 (class_moments), eigenvalues 0 and U = I. A slot over the cap is a
  // caller's error that the host cannot see without a sync: NaN, which no check lets pass.
  if (n < 2 || n > max_n) {
    const float fill = n < 2 ? 0.0f : NAN;
    for (int i = tid; i < k; i += nt) wb[i] = fill;
    for (int64_t e = tid; e < kk; e += nt)
      Ub[e] = n > max_n ? NAN : (e % (k + 1) == 0 ? 1.0f : 0.0f);
    return;
  }
  const int ldz = L.ldz, ld = L.ld, np = jac::padded(n);
  const float* zb = z + int64_t(slot_start[b]) * k;

  for (int idx = tid; idx < n * k; idx += nt) zc[(idx / k) * ldz + idx % k] = zb[idx];
  __syncthreads();
  for (int d = tid; d < k; d += nt) gr::centre_column(zc, ldz, n, d);
  __syncthreads();

  // G = Z̃Z̃ᵀ/(n−1), padded to even np with a zero row and column; V = I; ‖G‖_F by a fixed tree.
  float sum = 0.0f;
  for (int idx = tid; idx < np * np; idx += nt) {
    const int i = idx / np, j = idx % np;
    const float g = i < n && j < n ? gr::gram_entry(zc, ldz, n, k, i, j) : 0.0f;
    a[i * ld + j] = g;
    v[i * ld + j] = i == j ? 1.0f : 0.0f;
    sum += g * g;
  }
  const float floor = jac::rotation_floor(sqrtf(jacobi_block::tree_sum(red, sum, tid, nt)), np);
  jacobi_block::sweeps(a, v, ld, np, floor, rot, pp, qq, nullptr, tid, nt);

  // G's eigenvalues in descending order (ties by index, NaN last, so `order` is a permutation).
  for (int i = tid; i < n; i += nt) {
    const float di = a[i * ld + i];
    int rank = 0;
    for (int j = 0; j < n; ++j) rank += jac::ranked_before(a[j * ld + j], j, di, i);
    order[n - 1 - rank] = i;
  }
  __syncthreads();
  for (int c = tid; c < n; c += nt) desc[c] = a[order[c] * ld + order[c]];
  __syncthreads();  // a is read for the last time above; X overwrites it below
  const int r = gr::live_rank(desc, n, k);

  for (int idx = tid; idx < r * k; idx += nt) {
    const int c = idx / k, d = idx % k;
    X[idx] = gr::lift_entry(zc, ldz, v, ld, n, order[c], d, desc[c]);
  }
  __syncthreads();

  // Householder QR of X (column c at X + c·k): warp 0 makes reflector j, then the warps reflect
  // the later columns, one column per warp at a time, each sum in a fixed order.
  for (int j = 0; j < r; ++j) {
    float* x = X + int64_t(j) * k;
    if (warp == 0) {
      float part = 0.0f;
      for (int d = j + lane; d < k; d += 32) part += x[d] * x[d];
      const float norm2 = warp_sum(part);
      // The lanes read x[j..k) above and lane 0 overwrites x[j] below; shuffles do not order
      // shared memory, so the warp meets first, and racecheck need not prove that lane 0 was
      // x[j]'s only reader (issue 18).
      __syncwarp();
      if (lane == 0) {
        const gr::Reflector<float> h = gr::reflector(x[j], norm2);
        x[j] = h.v0;
        alpha[j] = h.alpha;
        beta[j] = h.beta;
      }
    }
    __syncthreads();
    for (int c = j + 1 + warp; c < r; c += warps) {
      float* xc = X + int64_t(c) * k;
      float part = 0.0f;
      for (int d = j + lane; d < k; d += 32) part += x[d] * xc[d];
      const float dot = warp_sum(part) * beta[j];
      for (int d = j + lane; d < k; d += 32) xc[d] -= dot * x[d];
    }
    __syncthreads();
  }

  // Row ρ of Q = H_0 ⋯ H_{r−1} is (H_{r−1} ⋯ H_0 e_ρ)ᵀ: one warp per row, the row in registers,
  // no barrier. Q's column c < r is u_c times sign(α_c), undone; columns are placed in ascending
  // order of eigenvalue (gram::output_column), so each row of U is written contiguously.
  for (int row = warp; row < k; row += warps) {
    float y[kPerLane];
#pragma unroll
    for (int t = 0; t < kPerLane; ++t) y[t] = lane + 32 * t == row ? 1.0f : 0.0f;
    for (int j = 0; j < r; ++j) {
      const float* x = X + int64_t(j) * k;
      float part = 0.0f;
#pragma unroll
      for (int t = 0; t < kPerLane; ++t) {
        const int d = lane + 32 * t;
        if (d >= j && d < k) part += x[d] * y[t];
      }
      const float dot = warp_sum(part) * beta[j];
#pragma unroll
      for (int t = 0; t < kPerLane; ++t) {
        const int d = lane + 32 * t;
        if (d >= j && d < k) y[t] -= dot * x[d];
      }
    }
#pragma unroll
    for (int t = 0; t < kPerLane; ++t) {
      const int c = lane + 32 * t;
      if (c < k) {
        const float sign = c < r && alpha[c] < 0.0f ? -1.0f : 1.0f;
        Ub[int64_t(row) * k + gr::output_column(c, r, k)] = sign * y[t];
      }
    }
  }
  for (int c = tid; c < k; c += nt) wb[gr::output_column(c, r, k)] = c < r ? desc[c] + eps : eps;
}

// The opt-in above 48 KiB of dynamic shared memory for the largest shape, capped at what the
// current device allows; set once per device (an attribute of the function on that device, not
// a stream operation), docs/DESIGN.md §3.
size_t shared_limit() {
  return opt_in_shared_memory(
      reinterpret_cast<const void*>(gram_eig_kernel),
      layout(gr::kMaxN, gr::kMaxK, threads_for(gr::kMaxN, gr::kMaxK)).bytes);
}

}  // namespace

void gram_eigh(float* w, float* U, const float* z, const int32_t* slot_start,
               const int32_t* slot_count, int slots, int k, float eps, int max_n) {
  if (k < 1 || k > gr::kMaxK || max_n < 2 || max_n > gr::kMaxN)
    throw std::invalid_argument("gram_eigh: needs 1 ≤ k ≤ " + std::to_string(gr::kMaxK) +
                                " and 2 ≤ max_n ≤ " + std::to_string(gr::kMaxN) + ", got k = " +
                                std::to_string(k) + ", max_n = " + std::to_string(max_n) +
                                "; larger slots take the direct solve of Ŝ (cuda::eigh)");
  if (slots <= 0) return;
  const int threads = threads_for(max_n, k);
  const Layout L = layout(max_n, k, threads);
  const size_t limit = shared_limit();
  if (L.bytes > limit)
    throw std::invalid_argument(
        "gram_eigh: k = " + std::to_string(k) + ", max_n = " + std::to_string(max_n) + " needs " +
        std::to_string(L.bytes) + " bytes of shared memory per block; this GPU allows " +
        std::to_string(limit) + "; lower max_n or use eigh");
  gram_eig_kernel<<<unsigned(slots), threads, L.bytes, context().stream()>>>(
      w, U, z, slot_start, slot_count, k, eps, max_n, L);
  launchCheck();
}

}  // namespace hetdro::cuda
