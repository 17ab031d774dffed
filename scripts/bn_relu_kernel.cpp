// Measured negative (issue 21 §4; scripts/bench_fused_bn_relu.py, results/bench_cpu_step_cpu_scale.md): 1.5-1.9x
// on each BatchNorm + ReLU of the cpu-scale model, but <= 1.1x on the whole training step; not used by squeezelab.
// BatchNorm2d in training mode (batch statistics) followed by ReLU, forward and backward, on CPU
// channels_last maps: [N, C, H, W] stored as rows [M = N*H*W, C]. Each direction is two passes over the
// map (per-channel sums, then the elementwise pass) instead of torch's BatchNorm + ReLU kernels, which
// read and write the map about twice as often. bf16 or fp32 data, float arithmetic, per-block partial sums
// added in double. The ReLU mask is recomputed from x in the backward pass, so nothing but x is kept.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

namespace {

inline float to_f(float v) { return v; }
inline float to_f(c10::BFloat16 v) {
  uint32_t u = uint32_t(v.x) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
template <typename T> inline T from_f(float f);
template <> inline float from_f<float>(float f) { return f; }
// round to nearest even, as torch does; branch-free so the loops vectorise (a quiet NaN stays NaN, a
// signalling one with only low payload bits would round to inf: the loss check catches either)
template <> inline c10::BFloat16 from_f<c10::BFloat16>(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u += 0x7fffu + ((u >> 16) & 1u);
  c10::BFloat16 b;
  b.x = uint16_t(u >> 16);
  return b;
}

constexpr int64_t ROWS = 64;  // rows per block: float partial sums, blocks summed in double

// Per channel: s1 += sum f1(row), s2 += sum f2(row) over all rows; ``term`` fills both for one element.
template <typename T, typename Term>
void channel_sums(int64_t M, int64_t C, double* s1, double* s2, Term term) {
  int64_t blocks = (M + ROWS - 1) / ROWS;
  int nt = at::get_num_threads();
  std::vector<double> p1(nt * C, 0.0), p2(nt * C, 0.0);
  at::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
    int tid = at::get_thread_num();
    std::vector<float> v1(C), v2(C);
    float* __restrict__ a = v1.data();
    float* __restrict__ b = v2.data();
    for (int64_t blk = b0; blk < b1; ++blk) {
      std::fill(a, a + C, 0.f);
      std::fill(b, b + C, 0.f);
      for (int64_t m = blk * ROWS, end = std::min(M, (blk + 1) * ROWS); m < end; ++m)
        for (int64_t c = 0; c < C; ++c) term(m * C + c, c, a[c], b[c]);
      for (int64_t c = 0; c < C; ++c) {
        p1[tid * C + c] += a[c];
        p2[tid * C + c] += b[c];
      }
    }
  });
  for (int t = 0; t < nt; ++t)
    for (int64_t c = 0; c < C; ++c) {
      s1[c] += p1[t * C + c];
      s2[c] += p2[t * C + c];
    }
}

at::Tensor rows(const at::Tensor& t) {  // [N, C, H, W] channels_last -> its [M, C] view
  TORCH_CHECK(t.dim() == 4 && t.is_contiguous(at::MemoryFormat::ChannelsLast), "a channels_last 4-d map is expected");
  return t.permute({0, 2, 3, 1}).reshape({-1, t.size(1)});
}

// scale = weight / sqrt(var + eps), shift = bias - mean * scale (float, per channel)
void affine(const at::Tensor& weight, const at::Tensor& bias, const float* mean, const float* var, double eps,
            float* scale, float* shift) {
  auto w = weight.to(at::kFloat).contiguous(), b = bias.to(at::kFloat).contiguous();
  for (int64_t c = 0; c < w.numel(); ++c) {
    scale[c] = float(w.data_ptr<float>()[c] / std::sqrt(double(var[c]) + eps));
    shift[c] = b.data_ptr<float>()[c] - mean[c] * scale[c];
  }
}

}  // namespace

// -> (y, mean, biased variance): y = relu((x - mean) / sqrt(var + eps) * weight + bias), batch statistics
std::vector<at::Tensor> forward(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, double eps) {
  TORCH_CHECK(x.scalar_type() == at::kBFloat16 || x.scalar_type() == at::kFloat, "bf16 or fp32 maps only");
  auto x2 = rows(x);
  int64_t M = x2.size(0), C = x2.size(1);
  TORCH_CHECK(M > 1, "batch statistics need more than one value per channel");
  auto y = at::empty_like(x);  // channels_last, as x
  auto y2 = rows(y);
  auto mean = at::empty({C}, x.options().dtype(at::kFloat)), var = at::empty_like(mean);
  std::vector<double> s1(C, 0.0), s2(C, 0.0);
  std::vector<float> scale(C), shift(C);
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, x.scalar_type(), "bn_relu_forward", [&] {
    if constexpr (std::is_same_v<scalar_t, float> || std::is_same_v<scalar_t, c10::BFloat16>) {
      const scalar_t* __restrict__ xp = x2.data_ptr<scalar_t>();
      channel_sums<scalar_t>(M, C, s1.data(), s2.data(), [&](int64_t i, int64_t, float& a, float& b) {
        float v = to_f(xp[i]);
        a += v;
        b += v * v;
      });
      for (int64_t c = 0; c < C; ++c) {
        double mu = s1[c] / M;
        mean.data_ptr<float>()[c] = float(mu);
        var.data_ptr<float>()[c] = float(std::max(0.0, s2[c] / M - mu * mu));
      }
      affine(weight, bias, mean.data_ptr<float>(), var.data_ptr<float>(), eps, scale.data(), shift.data());
      scalar_t* __restrict__ yp = y2.data_ptr<scalar_t>();
      const float* __restrict__ sc = scale.data();
      const float* __restrict__ sh = shift.data();
      at::parallel_for(0, M, 256, [&](int64_t m0, int64_t m1) {
        for (int64_t m = m0; m < m1; ++m)
          for (int64_t c = 0; c < C; ++c)
            yp[m * C + c] = from_f<scalar_t>(std::max(0.f, to_f(xp[m * C + c]) * sc[c] + sh[c]));
      });
    }
  });
  return {y, mean, var};
}

// -> (dx, dweight, dbias) for forward's y, given dy and what forward saw and returned
std::vector<at::Tensor> backward(const at::Tensor& dy_, const at::Tensor& x, const at::Tensor& weight,
                                 const at::Tensor& bias, const at::Tensor& mean, const at::Tensor& var, double eps) {
  auto dy = dy_.to(x.scalar_type()).contiguous(at::MemoryFormat::ChannelsLast);
  auto x2 = rows(x), g2 = rows(dy);
  int64_t M = x2.size(0), C = x2.size(1);
  auto dx = at::empty_like(x);
  auto dx2 = rows(dx);
  auto dw = at::empty({C}, mean.options()), db = at::empty_like(dw);
  std::vector<double> sg(C, 0.0), sgx(C, 0.0);
  std::vector<float> scale(C), shift(C), K(C), D(C);
  affine(weight, bias, mean.data_ptr<float>(), var.data_ptr<float>(), eps, scale.data(), shift.data());
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, x.scalar_type(), "bn_relu_backward", [&] {
    if constexpr (std::is_same_v<scalar_t, float> || std::is_same_v<scalar_t, c10::BFloat16>) {
      const scalar_t* __restrict__ gp = g2.data_ptr<scalar_t>();
      const scalar_t* __restrict__ xp = x2.data_ptr<scalar_t>();
      const float* __restrict__ sc = scale.data();
      const float* __restrict__ sh = shift.data();
      // g = dy where the ReLU passed (x * scale + shift > 0, as forward computed it)
      channel_sums<scalar_t>(M, C, sg.data(), sgx.data(), [&](int64_t i, int64_t c, float& a, float& b) {
        float v = to_f(xp[i]);
        float g = v * sc[c] + sh[c] > 0.f ? to_f(gp[i]) : 0.f;
        a += g;
        b += g * v;
      });
      // dx = scale * (g - mean(g) - xhat * mean(g * xhat)) = scale * g + k * x + d
      for (int64_t c = 0; c < C; ++c) {
        double mu = mean.data_ptr<float>()[c], rstd = 1.0 / std::sqrt(double(var.data_ptr<float>()[c]) + eps);
        double dgamma = (sgx[c] - mu * sg[c]) * rstd, k = -double(sc[c]) * rstd * dgamma / M;
        dw.data_ptr<float>()[c] = float(dgamma);
        db.data_ptr<float>()[c] = float(sg[c]);
        K[c] = float(k);
        D[c] = float(-double(sc[c]) * sg[c] / M - k * mu);
      }
      scalar_t* __restrict__ dxp = dx2.data_ptr<scalar_t>();
      const float* __restrict__ k = K.data();
      const float* __restrict__ d = D.data();
      at::parallel_for(0, M, 256, [&](int64_t m0, int64_t m1) {
        for (int64_t m = m0; m < m1; ++m)
          for (int64_t c = 0; c < C; ++c) {
            int64_t i = m * C + c;
            float v = to_f(xp[i]);
            float g = v * sc[c] + sh[c] > 0.f ? to_f(gp[i]) : 0.f;
            dxp[i] = from_f<scalar_t>(sc[c] * g + k[c] * v + d[c]);
          }
      });
    }
  });
  return {dx, dw.to(weight.scalar_type()), db.to(bias.scalar_type())};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "BatchNorm (batch statistics) + ReLU forward on a channels_last map");
  m.def("backward", &backward, "its backward: (dx, dweight, dbias)");
}
