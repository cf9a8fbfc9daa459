// Every cuDNN call of the CUDA backend: the per-thread handle, checked calls, and conv2d forward
// and backward through the legacy convolution API (docs/DESIGN.md §3: one translation unit, so
// moving off the deprecated API later touches this file only). maxpool2x2 is hand-written
// instead; kernels/maxpool2x2.cu says why.
//
// Valid convolution (no padding), stride 1, NCHW, weight [c_out, c_in, kh, kw], in
// CUDNN_CROSS_CORRELATION mode: the same sum as the reference and PyTorch (no kernel flip).
//
// Algorithms are chosen once per shape, on its first use, and cached (a map keyed by the shape),
// with cuDNN's heuristic (cudnnGet*Algorithm_v7) rather than by timing (cudnnFind*): the choice
// then depends only on the shape and the GPU, so two runs pick the same algorithms and print the
// same numbers, and choosing runs no kernel and allocates nothing. Of the ranked candidates we
// take the first that is deterministic (no atomics: backward-data algorithm 0 and
// backward-filter algorithms 0 and 3 are not; train.deterministic = false lifts this), runs in
// FMA math and needs at most
// kMaxWorkspace. FMA math, because cuDNN's default lets fp32 convolutions use TF32 tensor cores
// on sm_80 and later, whose 10-bit mantissa misses the 1e-4 bar of the GPU tests.
//
// Warm-up: the first use of a shape creates its descriptors, chooses and may grow the context's
// scratch, so the trainer records its CUDA Graph only after one step has run uncaptured.
#include <cuda_runtime.h>
#include <cudnn.h>

#include <algorithm>  // std::max
#include <array>
#include <map>
#include <memory>  // std::unique_ptr
#include <string>
#include <vector>

#include "context.h"     // context
#include "cuda_check.h"  // fail
#include "hetdro/cuda_ops.h"

namespace hetdro::cuda {
namespace {

void cudnn_check(cudnnStatus_t status, const char* file, int line, const char* call) {
  if (status != CUDNN_STATUS_SUCCESS) fail(file, line, call, cudnnGetErrorString(status));
}
#define cudnnCheck(call) cudnn_check((call), __FILE__, __LINE__, #call)

// The largest workspace a convolution algorithm may ask for; ours need far less (batch 100).
constexpr size_t kMaxWorkspace = size_t(256) << 20;

// A cuDNN descriptor that destroys itself; a constructor that throws half-way leaks nothing.
template <typename D, cudnnStatus_t (*create)(D*), cudnnStatus_t (*destroy)(D)>
class Descriptor {
 public:
  Descriptor() { cudnnCheck(create(&d_)); }
  ~Descriptor() { destroy(d_); }  // not checked: a destructor has nowhere to report to
  Descriptor(const Descriptor&) = delete;
  Descriptor& operator=(const Descriptor&) = delete;
  D get() const { return d_; }

 private:
  D d_ = nullptr;
};
using TensorDesc =
    Descriptor<cudnnTensorDescriptor_t, cudnnCreateTensorDescriptor, cudnnDestroyTensorDescriptor>;
using FilterDesc =
    Descriptor<cudnnFilterDescriptor_t, cudnnCreateFilterDescriptor, cudnnDestroyFilterDescriptor>;
using ConvDesc = Descriptor<cudnnConvolutionDescriptor_t, cudnnCreateConvolutionDescriptor,
                            cudnnDestroyConvolutionDescriptor>;

// n, c_in, h, w, c_out, kh, kw, and whether the algorithms must be deterministic.
using ConvKey = std::array<int, 8>;

template <typename Perf>
bool usable(const Perf& p, bool deterministic) {
  return p.status == CUDNN_STATUS_SUCCESS &&
         (!deterministic || p.determinism == CUDNN_DETERMINISTIC) &&
         p.mathType != CUDNN_TENSOR_OP_MATH &&
         p.mathType != CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION && p.memory <= kMaxWorkspace;
}

// The first usable candidate whose workspace cuDNN confirms (workspace(algo, &bytes) returns
// the status), else `fallback`, a deterministic algorithm that every shape supports.
template <typename Algo, typename Perf, typename Workspace>
Algo choose(const std::vector<Perf>& ranked, bool deterministic, Algo fallback, Workspace workspace,
            size_t* bytes) {
  for (const Perf& p : ranked)
    if (usable(p, deterministic) && workspace(p.algo, bytes) == CUDNN_STATUS_SUCCESS &&
        *bytes <= kMaxWorkspace)
      return p.algo;
  cudnnCheck(workspace(fallback, bytes));
  return fallback;
}

// One convolution shape: its descriptors, and its algorithms once chosen.
struct ConvPlan {
  TensorDesc x, y, bias;
  FilterDesc w;
  ConvDesc conv;
  bool deterministic = true;
  bool forward_chosen = false, backward_chosen = false;
  cudnnConvolutionFwdAlgo_t fwd{};
  cudnnConvolutionBwdDataAlgo_t bwd_data{};
  cudnnConvolutionBwdFilterAlgo_t bwd_filter{};
  size_t fwd_bytes = 0, bwd_data_bytes = 0, bwd_filter_bytes = 0;

  explicit ConvPlan(const ConvKey& k) {
    const auto [n, c_in, h, w_, c_out, kh, kw, det] = k;
    deterministic = det != 0;
    cudnnCheck(
        cudnnSetTensor4dDescriptor(x.get(), CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, n, c_in, h, w_));
    cudnnCheck(cudnnSetTensor4dDescriptor(y.get(), CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, n, c_out,
                                          h - kh + 1, w_ - kw + 1));
    cudnnCheck(cudnnSetTensor4dDescriptor(bias.get(), CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, 1, c_out,
                                          1, 1));
    cudnnCheck(cudnnSetFilter4dDescriptor(w.get(), CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, c_out, c_in,
                                          kh, kw));
    // pad 0, stride 1, dilation 1: the valid convolution of ops.def.
    cudnnCheck(cudnnSetConvolution2dDescriptor(conv.get(), 0, 0, 1, 1, 1, 1,
                                               CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    cudnnCheck(cudnnSetConvolutionMathType(conv.get(), CUDNN_FMA_MATH));
  }

  void choose_forward(cudnnHandle_t handle) {
    if (forward_chosen) return;
    int count = 0;
    cudnnCheck(cudnnGetConvolutionForwardAlgorithmMaxCount(handle, &count));
    std::vector<cudnnConvolutionFwdAlgoPerf_t> ranked(size_t(std::max(count, 1)));
    cudnnCheck(cudnnGetConvolutionForwardAlgorithm_v7(handle, x.get(), w.get(), conv.get(), y.get(),
                                                      count, &count, ranked.data()));
    ranked.resize(size_t(count));
    fwd = choose(
        ranked, deterministic, CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM,
        [&](cudnnConvolutionFwdAlgo_t a, size_t* bytes) {
          return cudnnGetConvolutionForwardWorkspaceSize(handle, x.get(), w.get(), conv.get(),
                                                         y.get(), a, bytes);
        },
        &fwd_bytes);
    forward_chosen = true;
  }

  void choose_backward(cudnnHandle_t handle) {
    if (backward_chosen) return;
    int count = 0;
    cudnnCheck(cudnnGetConvolutionBackwardDataAlgorithmMaxCount(handle, &count));
    std::vector<cudnnConvolutionBwdDataAlgoPerf_t> data(size_t(std::max(count, 1)));
    cudnnCheck(cudnnGetConvolutionBackwardDataAlgorithm_v7(handle, w.get(), y.get(), conv.get(),
                                                           x.get(), count, &count, data.data()));
    data.resize(size_t(count));
    bwd_data = choose(
        data, deterministic, CUDNN_CONVOLUTION_BWD_DATA_ALGO_1,
        [&](cudnnConvolutionBwdDataAlgo_t a, size_t* bytes) {
          return cudnnGetConvolutionBackwardDataWorkspaceSize(handle, w.get(), y.get(), conv.get(),
                                                              x.get(), a, bytes);
        },
        &bwd_data_bytes);

    cudnnCheck(cudnnGetConvolutionBackwardFilterAlgorithmMaxCount(handle, &count));
    std::vector<cudnnConvolutionBwdFilterAlgoPerf_t> filter(size_t(std::max(count, 1)));
    cudnnCheck(cudnnGetConvolutionBackwardFilterAlgorithm_v7(
        handle, x.get(), y.get(), conv.get(), w.get(), count, &count, filter.data()));
    filter.resize(size_t(count));
    bwd_filter = choose(
        filter, deterministic, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1,
        [&](cudnnConvolutionBwdFilterAlgo_t a, size_t* bytes) {
          return cudnnGetConvolutionBackwardFilterWorkspaceSize(handle, x.get(), y.get(),
                                                                conv.get(), w.get(), a, bytes);
        },
        &bwd_filter_bytes);
    backward_chosen = true;
  }
};

// The cuDNN handle of this host thread, on the context's stream, and its plans. Built after the
// context (it asks for the stream), so destroyed before it.
class Cudnn {
 public:
  Cudnn() {
    cudnnCheck(cudnnCreate(&handle_));
    const cudnnStatus_t status = cudnnSetStream(handle_, context().stream());
    if (status != CUDNN_STATUS_SUCCESS) {
      cudnnDestroy(handle_);
      cudnn_check(status, __FILE__, __LINE__, "cudnnSetStream(handle, context().stream())");
    }
  }
  ~Cudnn() {
    plans_.clear();
    cudnnDestroy(handle_);
  }
  Cudnn(const Cudnn&) = delete;
  Cudnn& operator=(const Cudnn&) = delete;

  cudnnHandle_t handle() const { return handle_; }
  ConvPlan& plan(const ConvKey& key) {
    auto it = plans_.find(key);
    if (it == plans_.end()) it = plans_.emplace(key, std::make_unique<ConvPlan>(key)).first;
    return *it->second;
  }

 private:
  cudnnHandle_t handle_ = nullptr;
  std::map<ConvKey, std::unique_ptr<ConvPlan>> plans_;
};

Cudnn& cudnn() {
  thread_local Cudnn c;
  return c;
}

}  // namespace

template <>
void conv2d_forward<float>(float* out, const float* in, const float* weight, const float* bias,
                           int n, int c_in, int h, int w, int c_out, int kh, int kw) {
  if (n == 0 || c_out == 0) return;  // nothing to write; cuDNN refuses empty tensors
  Cudnn& dnn = cudnn();
  ConvPlan& p = dnn.plan({n, c_in, h, w, c_out, kh, kw, context().deterministic()});
  p.choose_forward(dnn.handle());
  void* workspace = context().scratch(p.fwd_bytes);
  const float one = 1, zero = 0;
  // beta = 0: out is overwritten and not read, so whatever it held (NaN in the tests) is gone.
  cudnnCheck(cudnnConvolutionForward(dnn.handle(), &one, p.x.get(), in, p.w.get(), weight,
                                     p.conv.get(), p.fwd, workspace, p.fwd_bytes, &zero, p.y.get(),
                                     out));
  cudnnCheck(cudnnAddTensor(dnn.handle(), &one, p.bias.get(), bias, &one, p.y.get(), out));
}

template <>
void conv2d_backward<float>(float* din, float* dweight, float* dbias, const float* dout,
                            const float* in, const float* weight, int n, int c_in, int h, int w,
                            int c_out, int kh, int kw) {
  if (n == 0 || c_out == 0) return;  // every gradient is a sum over no terms: nothing to add
  if (!din && !dweight && !dbias) return;
  Cudnn& dnn = cudnn();
  ConvPlan& p = dnn.plan({n, c_in, h, w, c_out, kh, kw, context().deterministic()});
  p.choose_backward(dnn.handle());
  // One scratch for both calls: they run one after the other on the stream.
  const size_t bytes =
      std::max(din ? p.bwd_data_bytes : size_t(0), dweight ? p.bwd_filter_bytes : size_t(0));
  void* workspace = context().scratch(bytes);
  // beta = 1: backward ops accumulate into their gradients (ops.def).
  const float one = 1;
  if (din)
    cudnnCheck(cudnnConvolutionBackwardData(dnn.handle(), &one, p.w.get(), weight, p.y.get(), dout,
                                            p.conv.get(), p.bwd_data, workspace, bytes, &one,
                                            p.x.get(), din));
  if (dweight)
    cudnnCheck(cudnnConvolutionBackwardFilter(dnn.handle(), &one, p.x.get(), in, p.y.get(), dout,
                                              p.conv.get(), p.bwd_filter, workspace, bytes, &one,
                                              p.w.get(), dweight));
  if (dbias)
    cudnnCheck(cudnnConvolutionBackwardBias(dnn.handle(), &one, p.y.get(), dout, &one, p.bias.get(),
                                            dbias));
}

}  // namespace hetdro::cuda
