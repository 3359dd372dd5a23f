// 3×3, stride-1, "same"-padded float32 convolution of channels-last images on the CPU, by
// Winograd's minimal filtering F(2×2, 3×3) (Lavin & Gray 2016): 16 multiplications for
// each 2×2 block of outputs instead of 36.
//
// The filter is transformed once a call, U = G g Gᵀ ([16, channels, filters]). The output is
// cut into 2×2 tiles, and the tiles into blocks small enough to stay in the core's cache;
// for each block, on its own thread, the 4×4 input patches are transformed (V = Bᵀ d B,
// additions only), multiplied by U as 16 matrix products (Eigen's, at the core's peak), and
// transformed back into outputs (Y = Aᵀ M A), the bias added on the way. Small images
// (few tiles) are done whole instead, the threads splitting the 16 products, so that U,
// then as large as the images, is read once. The transforms' coefficients (0, ±1, ±½) are
// exact in binary; the result equals the direct convolution to float32 round-off.
#include <algorithm>
#include <atomic>
#include <vector>

#include "Eigen/Core"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"

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
using tensorflow::shape_inference::DimensionHandle;
using tensorflow::shape_inference::InferenceContext;
using tensorflow::shape_inference::ShapeHandle;

using Matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

constexpr int kPoints = 16;  // 4×4 transformed points a tile
// A block's transformed inputs (16 points × tiles × channels floats) are kept near this
// size, the tiles a block (the rows of its 16 matrix products) between the bounds below.
constexpr int64_t kBlockBytes = 2 << 20;
constexpr int64_t kMinTiles = 16, kMaxTiles = 256;
// Calls whose transformed inputs and products together take at most this are done whole.
constexpr int64_t kWholeBytes = 16 << 20;
// Each point's rows start this many floats (three cache lines) past a multiple of the
// block's size: without it the 16 rows a tile writes are a power of two apart, share the
// same cache sets and evict one another (the input transform ran 7× slower).
constexpr int64_t kPointPad = 48;

// Tiles a block for these channels, so that each of the `threads` threads gets two or more.
int64_t TilesPerBlock(int64_t channels, int64_t tiles, int64_t threads) {
  int64_t size = kBlockBytes / (kPoints * sizeof(float) * std::max<int64_t>(channels, 1));
  size = std::min(size, (tiles + 2 * threads - 1) / (2 * threads));
  size = (size + kMinTiles - 1) / kMinTiles * kMinTiles;
  return std::clamp(size, kMinTiles, kMaxTiles);
}

Status ConvShape(InferenceContext* c) {
  ShapeHandle x, filter, bias;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 4, &x));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 4, &filter));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(2), 1, &bias));
  DimensionHandle unused;
  TF_RETURN_IF_ERROR(c->Merge(c->Dim(bias, 0), c->Dim(filter, 3), &unused));
  TF_RETURN_IF_ERROR(c->WithValue(c->Dim(filter, 0), 3, &unused));
  TF_RETURN_IF_ERROR(c->WithValue(c->Dim(filter, 1), 3, &unused));
  TF_RETURN_IF_ERROR(c->Merge(c->Dim(x, 3), c->Dim(filter, 2), &unused));
  c->set_output(0, c->MakeShape({c->Dim(x, 0), c->Dim(x, 1), c->Dim(x, 2), c->Dim(filter, 3)}));
  return tensorflow::OkStatus();
}

// U[a·4 + b][c][k] = Σᵢⱼ G[a][i] G[b][j] g[i][j][c][k], G = [[1,0,0], [½,½,½], [½,−½,½], [0,0,1]].
// Point p's [channels, filters] matrix starts at u + p·stride.
void TransformFilter(const float* g, int64_t channels, int64_t filters, int64_t c, float* u,
                     int64_t stride) {
  const int64_t plane = channels * filters;
  const float* tap[3][3];
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) tap[i][j] = g + (i * 3 + j) * plane + c * filters;
  float* out[kPoints];
  for (int p = 0; p < kPoints; ++p) out[p] = u + p * stride + c * filters;
  for (int64_t k = 0; k < filters; ++k) {
    float rows[4][3];  // G g: rows a, columns j
    for (int j = 0; j < 3; ++j) {
      const float g0 = tap[0][j][k], g1 = tap[1][j][k], g2 = tap[2][j][k];
      rows[0][j] = g0;
      rows[1][j] = 0.5f * (g0 + g1 + g2);
      rows[2][j] = 0.5f * (g0 - g1 + g2);
      rows[3][j] = g2;
    }
    for (int a = 0; a < 4; ++a) {
      const float r0 = rows[a][0], r1 = rows[a][1], r2 = rows[a][2];
      out[a * 4 + 0][k] = r0;
      out[a * 4 + 1][k] = 0.5f * (r0 + r1 + r2);
      out[a * 4 + 2][k] = 0.5f * (r0 - r1 + r2);
      out[a * 4 + 3][k] = r2;
    }
  }
}

// V[a·4 + b][:] = (Bᵀ d B)[a][b] for one tile, d its 4×4 patch of channel vectors,
// Bᵀ = [[1,0,−1,0], [0,1,1,0], [0,−1,1,0], [0,1,0,−1]].
void TransformPatch(const float* const d[4][4], int64_t channels, float* const v[kPoints]) {
  for (int64_t c = 0; c < channels; ++c) {
    float t[4][4];  // Bᵀ d
    for (int j = 0; j < 4; ++j) {
      const float d0 = d[0][j][c], d1 = d[1][j][c], d2 = d[2][j][c], d3 = d[3][j][c];
      t[0][j] = d0 - d2;
      t[1][j] = d1 + d2;
      t[2][j] = d2 - d1;
      t[3][j] = d1 - d3;
    }
    for (int a = 0; a < 4; ++a) {
      v[a * 4 + 0][c] = t[a][0] - t[a][2];
      v[a * 4 + 1][c] = t[a][1] + t[a][2];
      v[a * 4 + 2][c] = t[a][2] - t[a][1];
      v[a * 4 + 3][c] = t[a][1] - t[a][3];
    }
  }
}

// y[i][j][:] = (Aᵀ M A)[i][j] + bias for one tile's 2×2 outputs, Aᵀ = [[1,1,1,0], [0,1,−1,−1]].
void TransformProducts(const float* const m[kPoints], const float* bias, int64_t filters,
                       float* const y[2][2]) {
  for (int64_t k = 0; k < filters; ++k) {
    float t[2][4];  // Aᵀ M
    for (int b = 0; b < 4; ++b) {
      const float m0 = m[b][k], m1 = m[4 + b][k], m2 = m[8 + b][k], m3 = m[12 + b][k];
      t[0][b] = m0 + m1 + m2;
      t[1][b] = m1 - m2 - m3;
    }
    for (int i = 0; i < 2; ++i) {
      y[i][0][k] = t[i][0] + t[i][1] + t[i][2] + bias[k];
      y[i][1][k] = t[i][1] - t[i][2] - t[i][3] + bias[k];
    }
  }
}

// The image and tile sizes of one call.
struct Geometry {
  int64_t height, width, channels, filters, tiles_y, tiles_x;

  // Image n and the tile's row and column of tiles.
  void Locate(int64_t tile, int64_t* n, int64_t* ty, int64_t* tx) const {
    *n = tile / (tiles_y * tiles_x);
    *ty = tile / tiles_x % tiles_y;
    *tx = tile % tiles_x;
  }
};

// Transforms the input patches of tiles [first, first + count) into v: point p of the
// t-th tile at v + p·stride + t·channels. `zeros` is a row of zero channels (the padding).
void TransformInputTiles(const Geometry& g, const float* in, const float* zeros, int64_t first,
                         int64_t count, float* v, int64_t stride) {
  for (int64_t t = 0; t < count; ++t) {
    int64_t n, ty, tx;
    g.Locate(first + t, &n, &ty, &tx);
    const float* d[4][4];
    for (int i = 0; i < 4; ++i) {
      const int64_t row = 2 * ty - 1 + i;
      for (int j = 0; j < 4; ++j) {
        const int64_t col = 2 * tx - 1 + j;
        d[i][j] = row < 0 || row >= g.height || col < 0 || col >= g.width
                      ? zeros
                      : in + ((n * g.height + row) * g.width + col) * g.channels;
      }
    }
    float* rows[kPoints];
    for (int p = 0; p < kPoints; ++p) rows[p] = v + p * stride + t * g.channels;
    TransformPatch(d, g.channels, rows);
  }
}

// m_p = v_p · u_p for points [begin, end), each a (count × channels)·(channels × filters) product.
void MultiplyPoints(const Geometry& g, int64_t count, const float* v, int64_t v_stride,
                    const float* u, int64_t u_stride, float* m, int64_t m_stride, int begin,
                    int end) {
  for (int p = begin; p < end; ++p) {
    Eigen::Map<const Matrix> vp(v + p * v_stride, count, g.channels);
    Eigen::Map<const Matrix> up(u + p * u_stride, g.channels, g.filters);
    Eigen::Map<Matrix> mp(m + p * m_stride, count, g.filters);
    mp.noalias() = vp * up;
  }
}

// Transforms the products of tiles [first, first + count) (laid out as TransformInputTiles'
// v, with filters) into their outputs in y, adding the bias.
void TransformOutputTiles(const Geometry& g, const float* m, int64_t stride, const float* bias,
                          int64_t first, int64_t count, float* y) {
  std::vector<float> discard(g.filters);  // outputs past an odd edge
  for (int64_t t = 0; t < count; ++t) {
    int64_t n, ty, tx;
    g.Locate(first + t, &n, &ty, &tx);
    const float* products[kPoints];
    for (int p = 0; p < kPoints; ++p) products[p] = m + p * stride + t * g.filters;
    float* out[2][2];
    for (int i = 0; i < 2; ++i) {
      const int64_t row = 2 * ty + i;
      for (int j = 0; j < 2; ++j) {
        const int64_t col = 2 * tx + j;
        out[i][j] = row >= g.height || col >= g.width
                        ? discard.data()
                        : y + ((n * g.height + row) * g.width + col) * g.filters;
      }
    }
    TransformProducts(products, bias, g.filters, out);
  }
}

class WinogradConvOp : public OpKernel {
 public:
  explicit WinogradConvOp(OpKernelConstruction* context) : OpKernel(context) {}

  void Compute(OpKernelContext* context) override {
    const Tensor& x = context->input(0);
    const Tensor& filter = context->input(1);
    const Tensor& bias_tensor = context->input(2);
    OP_REQUIRES(context, x.dims() == 4,
                InvalidArgument("kdiff Winograd conv: expected input of rank 4 ([batch, height, "
                                "width, channels]); received shape ", x.shape().DebugString()));
    OP_REQUIRES(context, filter.dims() == 4 && filter.dim_size(0) == 3 && filter.dim_size(1) == 3 &&
                             filter.dim_size(2) == x.dim_size(3),
                InvalidArgument("kdiff Winograd conv: expected a filter shaped [3, 3, ", x.dim_size(3),
                                ", filters]; received shape ", filter.shape().DebugString()));
    const int64_t batch = x.dim_size(0), channels = x.dim_size(3), filters = filter.dim_size(3);
    const Geometry g{x.dim_size(1), x.dim_size(2), channels, filters,
                     (x.dim_size(1) + 1) / 2, (x.dim_size(2) + 1) / 2};
    OP_REQUIRES(context, bias_tensor.dims() == 1 && bias_tensor.dim_size(0) == filters,
                InvalidArgument("kdiff Winograd conv: expected a bias shaped [", filters,
                                "]; received shape ", bias_tensor.shape().DebugString()));
    const float* bias = bias_tensor.flat<float>().data();
    Tensor* y_tensor = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(
                                0, TensorShape({batch, g.height, g.width, filters}), &y_tensor));
    if (y_tensor->NumElements() == 0) return;
    float* y = y_tensor->flat<float>().data();
    if (channels == 0) {
      for (int64_t i = 0; i < y_tensor->NumElements(); ++i) y[i] = bias[i % filters];
      return;
    }

    auto* workers = context->device()->tensorflow_cpu_worker_threads()->workers;
    const int64_t tiles = batch * g.tiles_y * g.tiles_x;
    const int64_t threads = std::max(1, workers->NumThreads());
    // Few tiles (small images): transform them all, then split the 16 products among the
    // threads, each reading its points' share of U once. Otherwise: blocks of tiles.
    const bool whole = tiles * kPoints * sizeof(float) * (channels + filters) <= kWholeBytes;
    const int64_t block = whole ? tiles : TilesPerBlock(channels, tiles, threads);
    const int64_t blocks = (tiles + block - 1) / block;
    const int64_t shards = whole ? 1 : std::min(blocks, threads);
    const int64_t u_stride = channels * filters + kPointPad;
    const int64_t v_stride = block * channels + kPointPad, m_stride = block * filters + kPointPad;
    const int64_t shard_floats = kPoints * (v_stride + m_stride);
    Tensor scratch;  // U, a row of zero channels, then each shard's V and M
    OP_REQUIRES_OK(context, context->allocate_temp(
                                tensorflow::DT_FLOAT,
                                TensorShape({kPoints * u_stride + channels + shards * shard_floats}),
                                &scratch));
    float* const u = scratch.flat<float>().data();
    float* const zeros = u + kPoints * u_stride;
    std::fill(zeros, zeros + channels, 0.0f);
    const float* kernel = filter.flat<float>().data();
    workers->ParallelFor(channels, 40 * filters, [&](int64_t begin, int64_t end) {
      for (int64_t c = begin; c < end; ++c) TransformFilter(kernel, channels, filters, c, u, u_stride);
    });
    const float* in = x.flat<float>().data();

    if (whole) {
      float* const v = zeros + channels;
      float* const m = v + kPoints * v_stride;
      const int64_t tile_cost = kPoints * 4 * (channels + filters);
      workers->ParallelFor(tiles, tile_cost, [&](int64_t begin, int64_t end) {
        TransformInputTiles(g, in, zeros, begin, end - begin, v + begin * channels, v_stride);
      });
      workers->ParallelFor(kPoints, 2 * tiles * channels * filters, [&](int64_t begin, int64_t end) {
        MultiplyPoints(g, tiles, v, v_stride, u, u_stride, m, m_stride, begin, end);
      });
      workers->ParallelFor(tiles, tile_cost, [&](int64_t begin, int64_t end) {
        TransformOutputTiles(g, m + begin * filters, m_stride, bias, begin, end - begin, y);
      });
      return;
    }

    // One shard a thread, each with its own buffers, taking the next block not yet taken:
    // a thread that starts late (busy with another op) takes fewer.
    std::atomic<int64_t> next_block(0);
    workers->ParallelFor(shards, block * kPoints * channels * filters * blocks, [&](int64_t begin, int64_t end) {
      for (int64_t shard = begin; shard < end; ++shard) {
        float* const v = zeros + channels + shard * shard_floats;
        float* const m = v + kPoints * v_stride;
        for (int64_t b = next_block++; b < blocks; b = next_block++) {
          const int64_t first = b * block, count = std::min(block, tiles - first);
          TransformInputTiles(g, in, zeros, first, count, v, v_stride);
          MultiplyPoints(g, count, v, v_stride, u, u_stride, m, m_stride, 0, kPoints);
          TransformOutputTiles(g, m, m_stride, bias, first, count, y);
        }
      }
    });
  }
};

REGISTER_OP("KdiffWinogradConv2D")
    .Input("input: float")
    .Input("filter: float")
    .Input("bias: float")
    .Output("output: float")
    .SetShapeFn(ConvShape)
    .Doc("3x3 stride-1 'SAME' convolution of NHWC float32 images by Winograd F(2x2, 3x3), plus a bias.");

REGISTER_KERNEL_BUILDER(Name("KdiffWinogradConv2D").Device(DEVICE_CPU), WinogradConvOp);

}  // namespace
}  // namespace kdiff
