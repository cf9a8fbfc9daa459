// Batched symmetric eigensolver of our own: parallel cyclic Jacobi, one thread block per matrix,
// the matrix and its eigenvectors in shared memory (docs/DESIGN.md §3). Deterministic (no
// atomics; every thread takes the same convergence decision) and capturable into a CUDA Graph
// (no host sync, no allocation). The arithmetic and the ordering are in kernels/jacobi.h, where
// the CPU tests check them.
#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "context.h"  // opt_in_shared_memory
#include "cuda_check.h"
#include "eigh.cuh"
#include "jacobi.h"
#include "jacobi_block.cuh"  // tree_sum, sweeps

namespace hetdro::cuda {
namespace {

namespace jac = hetdro::jacobi;
using Rot = jac::Rotation<float>;

using jac::Layout;

__global__ void jacobi_eig_kernel(float* __restrict__ w, int64_t w_stride, float* __restrict__ V,
                                  int64_t v_stride, const float* __restrict__ A, int k, Layout L) {
  extern __shared__ __align__(16) unsigned char smem[];
  float* a = reinterpret_cast<float*>(smem + L.a);
  float* v = reinterpret_cast<float*>(smem + L.v);
  Rot* rot = reinterpret_cast<Rot*>(smem + L.rot);
  int* piv_p = reinterpret_cast<int*>(smem + L.piv_p);
  int* piv_q = reinterpret_cast<int*>(smem + L.piv_q);
  float* red = reinterpret_cast<float*>(smem + L.red);
  int* rank = reinterpret_cast<int*>(smem + L.rank);
  unsigned short* tri = reinterpret_cast<unsigned short*>(smem + L.tri);

  const int n = L.n, m = L.m, ld = L.ld;
  const int tid = threadIdx.x, nt = blockDim.x;
  const int64_t b = blockIdx.x;
  const float* Ab = A + b * int64_t(k) * k;

  // Load A symmetrised (M = R B R comes out of two GEMMs only symmetric to rounding), zero the
  // padding row and column, V = I; each thread sums the squares it loaded, in a fixed order.
  float sum = 0.0f;
  for (int idx = tid; idx < n * n; idx += nt) {
    const int i = idx / n, j = idx % n;
    const float x =
        i < k && j < k ? 0.5f * (Ab[int64_t(i) * k + j] + Ab[int64_t(j) * k + i]) : 0.0f;
    a[i * ld + j] = x;
    v[i * ld + j] = i == j ? 1.0f : 0.0f;
    sum += x * x;
  }
  for (int idx = tid; idx < L.pairs_upper; idx += nt) {
    int P, Q;
    jac::upper_triangle_index(m, idx, &P, &Q);
    tri[idx] = (unsigned short)((P << 8) | Q);
  }
  // ‖A‖_F by a fixed-shape tree: the same sum on every run (docs/DESIGN.md §3, deterministic).
  const float floor = jac::rotation_floor(sqrtf(jacobi_block::tree_sum(red, sum, tid, nt)), n);
  jacobi_block::sweeps(a, v, ld, n, floor, rot, piv_p, piv_q, tri, tid, nt);

  // Ascending eigenvalues with their vectors: rank by a total order (ties by index, NaN last),
  // so the ranks are a permutation and every output element is written.
  for (int i = tid; i < k; i += nt) {
    const float di = a[i * ld + i];
    int r = 0;
    for (int j = 0; j < k; ++j) r += jac::ranked_before(a[j * ld + j], j, di, i);
    rank[i] = r;
  }
  __syncthreads();
  float* wb = w + b * w_stride;
  float* Vb = V + b * v_stride;
  for (int i = tid; i < k; i += nt) wb[rank[i]] = a[i * ld + i];
  for (int idx = tid; idx < k * k; idx += nt) {
    const int row = idx / k, i = idx % k;
    Vb[int64_t(row) * k + rank[i]] = v[row * ld + i];
  }
}

// The opt-in above 48 KiB of dynamic shared memory for the largest k, capped at what the current
// device allows; set once per device (an attribute of the function on that device, not a stream
// operation; the first, uncaptured step sets it), docs/DESIGN.md §3.
size_t shared_limit() {
  return opt_in_shared_memory(reinterpret_cast<const void*>(jacobi_eig_kernel),
                              jac::shared_bytes(jac::kMaxK));
}

}  // namespace

void jacobi_eigh(float* w, int64_t w_stride, float* V, int64_t v_stride, const float* A, int batch,
                 int k, cudaStream_t stream) {
  if (k > jac::kMaxK)
    throw std::invalid_argument("jacobi eigensolver: k = " + std::to_string(k) +
                                " exceeds its largest size " + std::to_string(jac::kMaxK) +
                                " (one matrix per block in shared memory); use syev (what "
                                "`automatic` picks for this k) or syevj");
  if (batch <= 0 || k <= 0) return;
  const int threads = jac::threads_for(k);
  const Layout L = jac::layout(k, threads);
  const size_t limit = shared_limit();
  if (L.bytes > limit)
    throw std::invalid_argument(
        "jacobi eigensolver: k = " + std::to_string(k) + " needs " + std::to_string(L.bytes) +
        " bytes of shared memory per block; this GPU allows " + std::to_string(limit) +
        "; use syev (what `automatic` picks here) or syevj");
  jacobi_eig_kernel<<<unsigned(batch), threads, L.bytes, stream>>>(w, w_stride, V, v_stride, A, k,
                                                                   L);
  launchCheck();
}

}  // namespace hetdro::cuda
