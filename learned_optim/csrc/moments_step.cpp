// The LearnedOptimizer's step for a "moments" rule with a "residual" readout (nets.py), on the CPU in float32.
//
// For every coordinate n (independently, so any split over threads gives the same bits):
//   g = sign * grad[n]                                    skipped (nothing changes) where not finite
//   m_k = b_k m_k + (1 - b_k) g   (b = 0.9, 0.99, 0.999)   v = b2 v + (1 - b2) g^2   (b2 = 0.999)
//   r = sqrt(v / (1 - b2^t)) + 1e-16   (features.TINY)
//   x = [m_1 / (1 - b_1^t) / r, m_2 ..., m_3 ..., g / r, log(1 + t) / log(1 + 10^4)]   (features.moment_features)
//   for each LSTM layer:  [i f g o] = W [x, h, 1];  c' = s(f) c + s(i) tanh(g);  h' = s(o) tanh(c');  x = h'
//   [d, s] = R [h', 1];  u = -scale * exp(clamp(s, -5, 5)) * (x_1 + sqrt(v / (1 - b2^t)) / r * a * d)
//   a = 1, or with the flip gate (moments rows of 6: [m_1, m_2, m_3, v, g', c]; features.moment_gate):
//     c = 0.9 c + 0.1 clamp(x_4 g' / r, -1, 1);  a = clamp(1 - c / -0.3, 0, 1);  g' = g
//   param[n] += lr * u   (or update[n] = u)
// and the state rows (moments, then h and c of every layer) are overwritten in place.
//
// Layout: a block of L coordinates (16 with AVX-512, else 8) is computed at once, one coordinate per vector lane:
// the per-coordinate math (features, gates, cell, readout) is the same for every lane, so every operation is one
// vector operation; the weights are scalars broadcast to all lanes. tanh is the rational approximation of
// rule_step.cpp (absolute error below 1.2e-6), exp a polynomial after range reduction (relative error below 2e-7),
// so the step agrees with the PyTorch reference to about 1e-5.
//
// Built without -ffast-math: the non-finite test must not be optimized away.

#include <torch/extension.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#ifdef __AVX__
#include <immintrin.h>
#endif

namespace {

#ifdef __AVX512F__
constexpr int L = 16;
#else
constexpr int L = 8;
#endif
typedef float V __attribute__((vector_size(L * 4)));
typedef int32_t VI __attribute__((vector_size(L * 4)));

constexpr int kFeatures = 5;  // m_1, m_2, m_3 / sqrt(v), g / sqrt(v), the time
constexpr int kMoments = 4;   // m_1, m_2, m_3, v
constexpr int kFlipMoments = 6;  // and the last gradient g' and the flip average c (features.FLIP_DECAY, FLIP_CLOSED)
constexpr float kFlipDecay = 0.9f;
constexpr float kFlipClosed = -0.3f;
constexpr float kBetas[3] = {0.9f, 0.99f, 0.999f};
constexpr float kBeta2 = 0.999f;
constexpr float kTiny = 1e-16f;  // features.TINY
constexpr float kClamp = 5.0f;

inline V splat(float x) { return V{} + x; }

inline V vmax(V a, V b) { return a > b ? a : b; }

// 1 / d: the hardware estimate and one Newton step (about 1e-7 relative; a division costs several times more)
inline V reciprocal(V d) {
  V r;
#if defined(__AVX512F__)
  const __m512 e = _mm512_rcp14_ps(reinterpret_cast<const __m512&>(d));
  std::memcpy(&r, &e, sizeof(r));
#elif defined(__AVX__)
  const __m256 e = _mm256_rcp_ps(reinterpret_cast<const __m256&>(d));
  std::memcpy(&r, &e, sizeof(r));
#else
  return 1.0f / d;
#endif
  return r * (2.0f - d * r);
}
inline V vmin(V a, V b) { return a < b ? a : b; }

// tanh: x P(x^2) / Q(x^2) on [-7, 7] (rule_step.cpp's fit), +-tanh(7) beyond
inline V vtanh(V x) {
  x = vmin(vmax(x, splat(-7.0f)), splat(7.0f));
  const V x2 = x * x;
  V p = splat(3.93072014048812e-06f);
  p = p * x2 + 2.2771405056118965e-03f;
  p = p * x2 + 0.12302353978157043f;
  p = p * x2 + 0.9999957084655762f;
  V q = splat(1.4236722199711949e-04f);
  q = q * x2 + 2.1072890609502792e-02f;
  q = q * x2 + 0.45634204149246216f;
  q = q * x2 + 1.0f;
  return (p * x) * reciprocal(q);
}

inline V vsigmoid(V x) { return 0.5f + 0.5f * vtanh(0.5f * x); }

// exp on [-5, 5]: 2^n e^r with n = round(x / ln 2), |r| <= ln 2 / 2, e^r by its Taylor polynomial of degree 7
inline V vexp(V x) {
  const V n = __builtin_convertvector(__builtin_convertvector(x * 1.4426950408889634f + (x >= 0 ? 0.5f : -0.5f), VI), V);
  const V r = (x - n * 0.693145751953125f) - n * 1.428606765330187e-06f;
  V p = splat(1.0f / 5040.0f);
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const VI bits = (__builtin_convertvector(n, VI) + 127) << 23;  // 2^n, n in [-8, 8]
  V scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

inline V vsqrt(V x) {
  V out;
  for (int k = 0; k < L; ++k) out[k] = std::sqrt(x[k]);
  return out;
}

inline bool finite(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof(bits));
  return (bits & 0x7f800000u) != 0x7f800000u;
}

template <int H, int LAYERS, bool FLIP>
void run(const float* grad, float sign, int64_t n, float* moments, const std::vector<float*>& state,
         const std::vector<const float*>& W, const float* R, const float* corr, float scale, float* out,
         bool into_param, float lr) {
  constexpr int W_ = FLIP ? kFlipMoments : kMoments;
  at::parallel_for(0, n, 1024, [&](int64_t begin, int64_t end) {
    for (int64_t n0 = begin; n0 < end; n0 += L) {
      const int lanes = static_cast<int>(std::min<int64_t>(L, end - n0));
      V g, ok, m[3], v, last{}, flip{}, h[LAYERS][H], c[LAYERS][H];
      for (int k = 0; k < L; ++k) {  // gather the block's rows into lanes (unused lanes: copies of lane 0)
        const int64_t row = n0 + (k < lanes ? k : 0);
        const float gk = sign * grad[row];
        const bool good = finite(gk) && k < lanes;
        g[k] = good ? gk : 0.0f;
        ok[k] = good ? 1.0f : 0.0f;
        for (int q = 0; q < 3; ++q) m[q][k] = moments[row * W_ + q];
        v[k] = moments[row * W_ + 3];
        if (FLIP) {
          last[k] = moments[row * W_ + 4];
          flip[k] = moments[row * W_ + 5];
        }
        for (int l = 0; l < LAYERS; ++l)
          for (int j = 0; j < H; ++j) {
            h[l][j][k] = state[2 * l][row * H + j];
            c[l][j][k] = state[2 * l + 1][row * H + j];
          }
      }
      // the features
      V x[kFeatures];
      for (int q = 0; q < 3; ++q) m[q] = kBetas[q] * m[q] + (1.0f - kBetas[q]) * g;
      v = kBeta2 * v + (1.0f - kBeta2) * g * g;
      const V root = vsqrt(v * corr[3]);
      const V inv_r = 1.0f / (root + kTiny);
      for (int q = 0; q < 3; ++q) x[q] = m[q] * corr[q] * inv_r;
      x[3] = g * inv_r;
      x[4] = splat(corr[4]);
      // the LSTM layers: W[l] is (4H, nin + H + 1) row-major, rows gate-major [i f g o] as torch keeps them
      V hn[LAYERS][H], cn[LAYERS][H];
      for (int l = 0; l < LAYERS; ++l) {
        const int nin = l == 0 ? kFeatures : H;
        const V* in = l == 0 ? x : hn[l - 1];
        const int cols = nin + H + 1;
        const float* w = W[l];
        for (int j = 0; j < H; ++j) {
          V a[4];
          for (int gate = 0; gate < 4; ++gate) {
            const float* row = w + (gate * H + j) * cols;
            V acc = splat(row[cols - 1]);
            for (int i = 0; i < nin; ++i) acc += row[i] * in[i];
            for (int i = 0; i < H; ++i) acc += row[nin + i] * h[l][i];
            a[gate] = acc;
          }
          cn[l][j] = vsigmoid(a[1]) * c[l][j] + vsigmoid(a[0]) * vtanh(a[2]);
          hn[l][j] = vsigmoid(a[3]) * vtanh(cn[l][j]);
        }
      }
      // the readout: R is (2, H + 1), [d; s], bias last
      V d = splat(R[H]), s = splat(R[2 * H + 1]);
      for (int j = 0; j < H; ++j) {
        d += R[j] * hn[LAYERS - 1][j];
        s += R[H + 1 + j] * hn[LAYERS - 1][j];
      }
      s = vmin(vmax(s, splat(-kClamp)), splat(kClamp));
      // the correction vanishes where the gradient always was 0, and with the flip gate where it keeps flipping
      // sign (features.moment_gate)
      V a = root * inv_r;
      if (FLIP) {
        const V agreement = vmin(vmax(x[3] * last * inv_r, splat(-1.0f)), splat(1.0f));
        flip = kFlipDecay * flip + (1.0f - kFlipDecay) * agreement;
        a = a * vmin(vmax(1.0f - flip / kFlipClosed, splat(0.0f)), splat(1.0f));
      }
      const V u = -scale * vexp(s) * (x[0] + a * d);
      // store: a skipped lane keeps its state and parameter (update 0)
      for (int k = 0; k < lanes; ++k) {
        const int64_t row = n0 + k;
        if (ok[k] == 0.0f) {
          if (!into_param) out[row] = 0.0f;
          continue;
        }
        for (int q = 0; q < 3; ++q) moments[row * W_ + q] = m[q][k];
        moments[row * W_ + 3] = v[k];
        if (FLIP) {
          moments[row * W_ + 4] = g[k];
          moments[row * W_ + 5] = flip[k];
        }
        for (int l = 0; l < LAYERS; ++l)
          for (int j = 0; j < H; ++j) {
            state[2 * l][row * H + j] = hn[l][j][k];
            state[2 * l + 1][row * H + j] = cn[l][j][k];
          }
        out[row] = into_param ? out[row] + lr * u[k] : u[k];
      }
    }
  });
}

void check_f32(const torch::Tensor& t, const char* what) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == torch::kFloat32 && t.is_contiguous(), what,
              ": a contiguous CPU float32 tensor is needed");
}

}  // namespace

// grad (N,); moments (N, 4), or (N, 6) for the flip gate; states [h0, c0, h1, c1 ...] each (N, H); weights: per
// layer (4H, nin + H + 1) = [W_ih, W_hh, b]; readout (2, H + 1) = [w_d, b_d; w_s, b_s]; corrections [1/(1-b1^t),
// 1/(1-b2^t), 1/(1-b3^t), 1/(1-b2'^t), log(1 + t) / log(1 + 10^4)]. With into_param, `out` is the flat parameter and
// receives param + lr * update.
void moments_step(const torch::Tensor& grad, double sign, torch::Tensor& moments, const std::vector<torch::Tensor>& states,
                  const std::vector<torch::Tensor>& weights, const torch::Tensor& readout,
                  const std::vector<double>& corrections, double scale, torch::Tensor& out, bool into_param, double lr) {
  check_f32(grad, "grad");
  check_f32(moments, "moments");
  check_f32(readout, "readout");
  check_f32(out, "out");
  const int64_t n = grad.numel();
  TORCH_CHECK(out.numel() == n && moments.dim() == 2 && moments.size(0) == n &&
                  (moments.size(1) == kMoments || moments.size(1) == kFlipMoments),
              "out (N,) and moments (N, 4) or (N, 6)");
  const bool flip = moments.size(1) == kFlipMoments;
  TORCH_CHECK(!weights.empty() && weights.size() <= 2 && states.size() == 2 * weights.size(), "1 or 2 LSTM layers");
  TORCH_CHECK(corrections.size() == 5, "corrections: 5 values");
  const int H = static_cast<int>(states[0].size(1));
  std::vector<float*> s;
  for (const auto& t : states) {
    check_f32(t, "state");
    TORCH_CHECK(t.dim() == 2 && t.size(0) == n && t.size(1) == H, "state: (N, H)");
    s.push_back(t.data_ptr<float>());
  }
  std::vector<const float*> w;
  for (size_t l = 0; l < weights.size(); ++l) {
    check_f32(weights[l], "weights");
    const int nin = l == 0 ? kFeatures : H;
    TORCH_CHECK(weights[l].size(0) == 4 * H && weights[l].size(1) == nin + H + 1, "weights: (4H, nin + H + 1)");
    w.push_back(weights[l].data_ptr<float>());
  }
  TORCH_CHECK(readout.size(0) == 2 && readout.size(1) == H + 1, "readout: (2, H + 1)");
  const float corr[5] = {static_cast<float>(corrections[0]), static_cast<float>(corrections[1]),
                         static_cast<float>(corrections[2]), static_cast<float>(corrections[3]),
                         static_cast<float>(corrections[4])};
  const float* g = grad.data_ptr<float>();
  float* mo = moments.data_ptr<float>();
  const float* r = readout.data_ptr<float>();
  float* o = out.data_ptr<float>();
  const float sg = static_cast<float>(sign), sc = static_cast<float>(scale), rate = static_cast<float>(lr);
  const int layers = static_cast<int>(weights.size());
#define LEARNED_OPTIM_CASE(HH, LL)                                                                   \
  if (H == HH && layers == LL) {                                                                     \
    if (flip)                                                                                        \
      run<HH, LL, true>(g, sg, n, mo, s, w, r, corr, sc, o, into_param, rate);                       \
    else                                                                                             \
      run<HH, LL, false>(g, sg, n, mo, s, w, r, corr, sc, o, into_param, rate);                      \
    return;                                                                                          \
  }
  LEARNED_OPTIM_CASE(4, 1)
  LEARNED_OPTIM_CASE(8, 1)
  LEARNED_OPTIM_CASE(16, 1)
  LEARNED_OPTIM_CASE(4, 2)
  LEARNED_OPTIM_CASE(8, 2)
  LEARNED_OPTIM_CASE(16, 2)
#undef LEARNED_OPTIM_CASE
  TORCH_CHECK(false, "hidden sizes 4, 8 or 16 and 1 or 2 layers are supported, got ", H, " and ", layers);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("moments_step", &moments_step, "The LearnedOptimizer step of a moments rule (CPU, float32, state in place)");
  m.def("vector_lanes", []() { return L; }, "Coordinates per block (vector lanes)");
}
