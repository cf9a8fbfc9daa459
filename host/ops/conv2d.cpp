// conv2d, valid and stride 1: im2col + one Eigen GEMM per sample, OpenMP over the batch.
#include <omp.h>  // omp_get_thread_num, omp_get_max_threads

#include <cstdint>
#include <vector>

#include "eigen_maps.h"  // MapMat, CMapMat, MapVec, CMapVec
#include "hetdro/ops.h"

namespace hetdro::cpu {
namespace {

// Below this many multiply-adds a parallel region costs more than it saves (and on a busy
// machine spinning workers can cost far more).
constexpr int64_t kParallelWork = int64_t(1) << 18;

// col [c_in*kh*kw, oh*ow]: row (c, i, j) holds the input pixels that weight tap (c, i, j) sees,
// so the conv is weight [c_out, c_in*kh*kw] times col.
template <typename T>
void im2col(T* col, const T* in, int c_in, int h, int w, int kh, int kw) {
  const int oh = h - kh + 1, ow = w - kw + 1;
  for (int c = 0; c < c_in; ++c)
    for (int i = 0; i < kh; ++i)
      for (int j = 0; j < kw; ++j) {
        T* dst = col + ((int64_t(c) * kh + i) * kw + j) * oh * ow;
        for (int y = 0; y < oh; ++y) {
          const T* src = in + (int64_t(c) * h + y + i) * w + j;
          for (int x = 0; x < ow; ++x) dst[y * ow + x] = src[x];
        }
      }
}

// The adjoint of im2col: adds every column entry back onto the pixel it came from.
template <typename T>
void col2im_add(T* din, const T* col, int c_in, int h, int w, int kh, int kw) {
  const int oh = h - kh + 1, ow = w - kw + 1;
  for (int c = 0; c < c_in; ++c)
    for (int i = 0; i < kh; ++i)
      for (int j = 0; j < kw; ++j) {
        const T* src = col + ((int64_t(c) * kh + i) * kw + j) * oh * ow;
        for (int y = 0; y < oh; ++y) {
          T* dst = din + (int64_t(c) * h + y + i) * w + j;
          for (int x = 0; x < ow; ++x) dst[x] += src[y * ow + x];
        }
      }
}

}  // namespace

template <typename T>
void conv2d_forward(T* out, const T* in, const T* weight, const T* bias, int n, int c_in, int h,
                    int w, int c_out, int kh, int kw) {
  const int oh = h - kh + 1, ow = w - kw + 1, taps = c_in * kh * kw, pix = oh * ow;
  const CMapMat<T> W(weight, c_out, taps);
  const CMapVec<T> b(bias, c_out);
#pragma omp parallel if (int64_t(n) * c_out * taps * pix > kParallelWork)
  {
    std::vector<T> col(size_t(taps) * pix);
#pragma omp for schedule(static)
    for (int s = 0; s < n; ++s) {
      im2col(col.data(), in + int64_t(s) * c_in * h * w, c_in, h, w, kh, kw);
      MapMat<T> O(out + int64_t(s) * c_out * pix, c_out, pix);
      O.noalias() = W * CMapMat<T>(col.data(), taps, pix);
      O.colwise() += b;
    }
  }
}

template <typename T>
void conv2d_backward(T* din, T* dweight, T* dbias, const T* dout, const T* in, const T* weight,
                     int n, int c_in, int h, int w, int c_out, int kh, int kw) {
  const int oh = h - kh + 1, ow = w - kw + 1, taps = c_in * kh * kw, pix = oh * ow;
  const CMapMat<T> W(weight, c_out, taps);
  // dweight and dbias sum over the batch: each thread sums its samples into a private partial,
  // and the partials are added in thread order afterwards (deterministic for a fixed thread
  // count, and no atomics in the hot loop).
  const int threads = omp_get_max_threads();
  const int64_t wsize = int64_t(c_out) * taps;
  std::vector<T> dw_part(dweight ? size_t(threads) * wsize : 0, T(0));
  std::vector<T> db_part(dbias ? size_t(threads) * c_out : 0, T(0));
#pragma omp parallel if (int64_t(n) * c_out * taps * pix > kParallelWork)
  {
    const int t = omp_get_thread_num();
    std::vector<T> col(dweight ? size_t(taps) * pix : 0);
    std::vector<T> dcol(din ? size_t(taps) * pix : 0);
#pragma omp for schedule(static)
    for (int s = 0; s < n; ++s) {
      const CMapMat<T> D(dout + int64_t(s) * c_out * pix, c_out, pix);
      if (dweight) {
        im2col(col.data(), in + int64_t(s) * c_in * h * w, c_in, h, w, kh, kw);
        MapMat<T>(dw_part.data() + t * wsize, c_out, taps).noalias() +=
            D * CMapMat<T>(col.data(), taps, pix).transpose();
      }
      if (dbias) MapVec<T>(db_part.data() + int64_t(t) * c_out, c_out) += D.rowwise().sum();
      if (din) {
        MapMat<T>(dcol.data(), taps, pix).noalias() = W.transpose() * D;
        col2im_add(din + int64_t(s) * c_in * h * w, dcol.data(), c_in, h, w, kh, kw);
      }
    }
  }
  for (int t = 0; t < threads; ++t) {
    if (dweight)
      for (int64_t i = 0; i < wsize; ++i) dweight[i] += dw_part[t * wsize + i];
    if (dbias)
      for (int o = 0; o < c_out; ++o) dbias[o] += db_part[int64_t(t) * c_out + o];
  }
}

#define HETDRO_INSTANTIATE(T)                                                                     \
  template void conv2d_forward<T>(T*, const T*, const T*, const T*, int, int, int, int, int, int, \
                                  int);                                                           \
  template void conv2d_backward<T>(T*, T*, T*, const T*, const T*, const T*, int, int, int, int,  \
                                   int, int, int);
HETDRO_INSTANTIATE(float)
HETDRO_INSTANTIATE(double)
#undef HETDRO_INSTANTIATE

}  // namespace hetdro::cpu
