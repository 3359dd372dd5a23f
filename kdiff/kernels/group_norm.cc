// Fused GroupNorm (+ SiLU) for channels-last tensors on the CPU: forward and gradient.
//
// x is [batch, positions, channels] (any leading spatial shape, flattened), the groups are
// contiguous channel slices. The forward pass reads x twice (per-channel sums, then the
// normalized, scaled, shifted and optionally SiLU-activated output) instead of the dozen
// elementwise and reduction ops of the composed form; the gradient reads x and dy twice.
// Statistics and arithmetic are float32 (sums in float64) whatever the tensor's dtype.
#include <cmath>
#include <vector>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/util/work_sharder.h"
#include "unsupported/Eigen/CXX11/Tensor"

namespace kdiff {
namespace {

using tensorflow::DEVICE_CPU;
using tensorflow::OpKernel;
using tensorflow::OpKernelConstruction;
using tensorflow::OpKernelContext;
using tensorflow::Status;
using tensorflow::Tensor;
using tensorflow::TensorShape;
using tensorflow::errors::InvalidArgument;
using tensorflow::shape_inference::InferenceContext;
using tensorflow::shape_inference::ShapeHandle;

using ArrayF = Eigen::Array<float, Eigen::Dynamic, 1>;
template <typename T>
using Row = Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>>;
template <typename T>
using MutableRow = Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>>;

Status StatsShape(InferenceContext* c) {
  ShapeHandle x = c->input(0);
  TF_RETURN_IF_ERROR(c->WithRankAtLeast(x, 2, &x));
  int groups;
  TF_RETURN_IF_ERROR(c->GetAttr("groups", &groups));
  c->set_output(0, x);
  auto stats = c->MakeShape({c->Dim(x, 0), groups});
  c->set_output(1, stats);
  c->set_output(2, stats);
  return tensorflow::OkStatus();
}

// Checks x [batch, ..., channels] against gamma and beta [channels] and the groups; sets
// batch, positions (the product of the middle dimensions) and channels.
Status CheckShapes(const Tensor& x, const Tensor& gamma, const Tensor& beta, int groups,
                   int64_t* batch, int64_t* positions, int64_t* channels) {
  if (x.dims() < 2) {
    return InvalidArgument("kdiff GroupNorm: expected x of rank >= 2 ([batch, ..., channels]); "
                           "received shape ", x.shape().DebugString());
  }
  *batch = x.dim_size(0);
  *channels = x.dim_size(x.dims() - 1);
  *positions = *batch == 0 || *channels == 0 ? 0 : x.NumElements() / (*batch * *channels);
  if (*channels % groups != 0) {
    return InvalidArgument("kdiff GroupNorm: expected channels divisible by groups=", groups,
                           "; received ", *channels, " channels");
  }
  if (gamma.NumElements() != *channels || beta.NumElements() != *channels) {
    return InvalidArgument("kdiff GroupNorm: expected gamma and beta of ", *channels,
                           " values; received ", gamma.shape().DebugString(), " and ",
                           beta.shape().DebugString());
  }
  return tensorflow::OkStatus();
}

// Runs fn(n) for n in [0, count) on the op's intra-op threads.
template <typename Fn>
void ForEachExample(OpKernelContext* context, int64_t count, int64_t cost, Fn fn) {
  auto* workers = context->device()->tensorflow_cpu_worker_threads()->workers;
  workers->ParallelFor(count, cost, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) fn(n);
  });
}

// The attributes both ops share: groups, and whether SiLU follows the normalization.
class GroupNormKernel : public OpKernel {
 public:
  explicit GroupNormKernel(OpKernelConstruction* context) : OpKernel(context) {
    OP_REQUIRES_OK(context, context->GetAttr("groups", &groups_));
    OP_REQUIRES_OK(context, context->GetAttr("silu", &silu_));
  }

 protected:
  int groups_;
  bool silu_;
};

template <typename T>
class GroupNormOp : public GroupNormKernel {
 public:
  explicit GroupNormOp(OpKernelConstruction* context) : GroupNormKernel(context) {
    OP_REQUIRES_OK(context, context->GetAttr("epsilon", &epsilon_));
  }

  void Compute(OpKernelContext* context) override {
    const Tensor& x = context->input(0);
    const Tensor& gamma = context->input(1);
    const Tensor& beta = context->input(2);
    int64_t batch, positions, channels;
    OP_REQUIRES_OK(context, CheckShapes(x, gamma, beta, groups_, &batch, &positions, &channels));
    Tensor *y, *mean, *rstd;
    OP_REQUIRES_OK(context, context->allocate_output(0, x.shape(), &y));
    OP_REQUIRES_OK(context, context->allocate_output(1, TensorShape({batch, groups_}), &mean));
    OP_REQUIRES_OK(context, context->allocate_output(2, TensorShape({batch, groups_}), &rstd));
    if (x.NumElements() == 0) return;
    const T* xs = x.flat<T>().data();
    T* ys = y->flat<T>().data();
    const float* g = gamma.flat<float>().data();
    const float* b = beta.flat<float>().data();
    float* means = mean->flat<float>().data();
    float* rstds = rstd->flat<float>().data();
    const int64_t size = channels / groups_;
    const double count = static_cast<double>(positions * size);
    ForEachExample(context, batch, 8 * positions * channels, [&](int64_t n) {
      const T* xn = xs + n * positions * channels;
      // Per-channel sums in float64: the variance is E[x²] − E[x]², exact enough only so.
      Eigen::ArrayXd sum = Eigen::ArrayXd::Zero(channels), squares = Eigen::ArrayXd::Zero(channels);
      Eigen::ArrayXd wide(channels);
      for (int64_t p = 0; p < positions; ++p) {
        wide = Row<T>(xn + p * channels, channels).template cast<double>();
        sum += wide;
        squares += wide.square();
      }
      ArrayF scale(channels), shift(channels);
      for (int k = 0; k < groups_; ++k) {
        const double m = sum.segment(k * size, size).sum() / count;
        const double var = std::max(squares.segment(k * size, size).sum() / count - m * m, 0.0);
        const float r = static_cast<float>(1.0 / std::sqrt(var + epsilon_));
        means[n * groups_ + k] = static_cast<float>(m);
        rstds[n * groups_ + k] = r;
        for (int64_t c = k * size; c < (k + 1) * size; ++c) {
          scale[c] = g[c] * r;
          shift[c] = b[c] - static_cast<float>(m) * scale[c];
        }
      }
      T* yn = ys + n * positions * channels;
      ArrayF z(channels);
      for (int64_t p = 0; p < positions; ++p) {
        z = Row<T>(xn + p * channels, channels).template cast<float>() * scale + shift;
        MutableRow<T> out(yn + p * channels, channels);
        if (silu_) {
          out = (z * z.logistic()).template cast<T>();
        } else {
          out = z.template cast<T>();
        }
      }
    });
  }

 private:
  float epsilon_;
};

template <typename T>
class GroupNormGradOp : public GroupNormKernel {
 public:
  using GroupNormKernel::GroupNormKernel;

  void Compute(OpKernelContext* context) override {
    const Tensor& dy = context->input(0);
    const Tensor& x = context->input(1);
    const Tensor& gamma = context->input(2);
    const Tensor& beta = context->input(3);
    const Tensor& mean = context->input(4);
    const Tensor& rstd = context->input(5);
    int64_t batch, positions, channels;
    OP_REQUIRES_OK(context, CheckShapes(x, gamma, beta, groups_, &batch, &positions, &channels));
    OP_REQUIRES(context, dy.shape() == x.shape(),
                InvalidArgument("kdiff GroupNormGrad: expected dy shaped like x ",
                                x.shape().DebugString(), "; received ", dy.shape().DebugString()));
    const TensorShape stats({batch, groups_});
    OP_REQUIRES(context, mean.shape() == stats && rstd.shape() == stats,
                InvalidArgument("kdiff GroupNormGrad: expected mean and rstd of shape ", stats.DebugString(),
                                " (KdiffGroupNorm's); received ", mean.shape().DebugString(), " and ",
                                rstd.shape().DebugString()));
    Tensor *dx, *dgamma, *dbeta;
    OP_REQUIRES_OK(context, context->allocate_output(0, x.shape(), &dx));
    OP_REQUIRES_OK(context, context->allocate_output(1, gamma.shape(), &dgamma));
    OP_REQUIRES_OK(context, context->allocate_output(2, beta.shape(), &dbeta));
    Tensor per_example;  // [batch, 2, channels]: sums of dz and of dz·x̂ per example
    OP_REQUIRES_OK(context, context->allocate_temp(tensorflow::DT_FLOAT,
                                                   TensorShape({batch, 2, channels}), &per_example));
    Tensor dz_buffer;  // [batch, positions, channels]: dL/dz, kept for the second pass
    OP_REQUIRES_OK(context, context->allocate_temp(tensorflow::DT_FLOAT, x.shape(), &dz_buffer));
    const T* xs = x.flat<T>().data();
    const T* dys = dy.flat<T>().data();
    T* dxs = dx->flat<T>().data();
    const float* g = gamma.flat<float>().data();
    const float* b = beta.flat<float>().data();
    const float* means = mean.flat<float>().data();
    const float* rstds = rstd.flat<float>().data();
    float* sums = per_example.flat<float>().data();
    float* dzs = dz_buffer.flat<float>().data();
    const int64_t size = channels / groups_;
    const float count = static_cast<float>(positions * size);
    Eigen::Map<const ArrayF> gammas(g, channels), betas(b, channels);
    ForEachExample(context, batch, 16 * positions * channels, [&](int64_t n) {
      const int64_t offset = n * positions * channels;
      ArrayF mean_c(channels), rstd_c(channels);
      for (int k = 0; k < groups_; ++k) {
        mean_c.segment(k * size, size).setConstant(means[n * groups_ + k]);
        rstd_c.segment(k * size, size).setConstant(rstds[n * groups_ + k]);
      }
      Eigen::ArrayXd sum_dz = Eigen::ArrayXd::Zero(channels), sum_dz_xhat = Eigen::ArrayXd::Zero(channels);
      ArrayF xhat(channels), z(channels), s(channels);
      for (int64_t p = 0; p < positions; ++p) {
        const int64_t at = offset + p * channels;
        xhat = (Row<T>(xs + at, channels).template cast<float>() - mean_c) * rstd_c;
        MutableRow<float> dz(dzs + at, channels);
        dz = Row<T>(dys + at, channels).template cast<float>();
        if (silu_) {
          z = xhat * gammas + betas;
          s = z.logistic();
          dz *= s * (1.0f + z * (1.0f - s));
        }
        sum_dz += dz.cast<double>();
        sum_dz_xhat += (dz * xhat).cast<double>();
      }
      MutableRow<float>(sums + 2 * n * channels, channels) = sum_dz.cast<float>();
      MutableRow<float>(sums + (2 * n + 1) * channels, channels) = sum_dz_xhat.cast<float>();
      // dx = rstd·(γ·dz − mean_g(γ·dz) − x̂·mean_g(γ·dz·x̂)), the means over a group's elements.
      ArrayF m1(channels), m2(channels);
      for (int k = 0; k < groups_; ++k) {
        const float a = static_cast<float>((gammas.segment(k * size, size).cast<double>() *
                                            sum_dz.segment(k * size, size)).sum()) / count;
        const float c = static_cast<float>((gammas.segment(k * size, size).cast<double>() *
                                            sum_dz_xhat.segment(k * size, size)).sum()) / count;
        m1.segment(k * size, size).setConstant(a);
        m2.segment(k * size, size).setConstant(c);
      }
      for (int64_t p = 0; p < positions; ++p) {
        const int64_t at = offset + p * channels;
        xhat = (Row<T>(xs + at, channels).template cast<float>() - mean_c) * rstd_c;
        MutableRow<T>(dxs + at, channels) =
            (rstd_c * (gammas * Row<float>(dzs + at, channels) - m1 - xhat * m2)).template cast<T>();
      }
    });
    Eigen::Map<ArrayF> dg(dgamma->flat<float>().data(), channels), db(dbeta->flat<float>().data(), channels);
    dg.setZero();
    db.setZero();
    for (int64_t n = 0; n < batch; ++n) {
      db += Eigen::Map<const ArrayF>(sums + 2 * n * channels, channels);
      dg += Eigen::Map<const ArrayF>(sums + (2 * n + 1) * channels, channels);
    }
  }

};

}  // namespace

REGISTER_OP("KdiffGroupNorm")
    .Input("x: T")
    .Input("gamma: float")
    .Input("beta: float")
    .Output("y: T")
    .Output("mean: float")
    .Output("rstd: float")
    .Attr("T: {float, bfloat16}")
    .Attr("groups: int >= 1")
    .Attr("epsilon: float")
    .Attr("silu: bool = false")
    .SetShapeFn(StatsShape)
    .Doc("GroupNorm of channels-last x (optionally followed by SiLU), with its group statistics.");

REGISTER_OP("KdiffGroupNormGrad")
    .Input("dy: T")
    .Input("x: T")
    .Input("gamma: float")
    .Input("beta: float")
    .Input("mean: float")
    .Input("rstd: float")
    .Output("dx: T")
    .Output("dgamma: float")
    .Output("dbeta: float")
    .Attr("T: {float, bfloat16}")
    .Attr("groups: int >= 1")
    .Attr("epsilon: float")
    .Attr("silu: bool = false")
    .SetShapeFn([](InferenceContext* c) {
      c->set_output(0, c->input(1));
      c->set_output(1, c->input(2));
      c->set_output(2, c->input(3));
      return tensorflow::OkStatus();
    })
    .Doc("The gradient of KdiffGroupNorm with respect to x, gamma and beta (epsilon is the "
         "forward op's, for the gradient of this gradient).");

#define REGISTER(T)                                                                         \
  REGISTER_KERNEL_BUILDER(Name("KdiffGroupNorm").Device(DEVICE_CPU).TypeConstraint<T>("T"), \
                          GroupNormOp<T>);                                                  \
  REGISTER_KERNEL_BUILDER(                                                                  \
      Name("KdiffGroupNormGrad").Device(DEVICE_CPU).TypeConstraint<T>("T"), GroupNormGradOp<T>);
REGISTER(float)
REGISTER(Eigen::bfloat16)
#undef REGISTER

}  // namespace kdiff
