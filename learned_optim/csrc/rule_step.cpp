// The LearnedOptimizer's step for an LSTM rule, one coordinate at a time (CPU, float32).
//
// For every coordinate n (independently, so any split over threads gives the same bits):
//   x = features(g_n)                           log_sign: (log|g|/p, sign g) or (-1, e^p g); none: g
//   for each layer:  t = tanh([x, h, 1] W'^T)    one matmul-vector product and one tanh for all
//                    s = (1 + t) / 2             four gates: the i, f, o columns of W' hold half
//                    c' = s_f c + s_i t_g        the weights, so s = sigmoid of the gate and
//                    h' = s_o tanh(c')           t_g = tanh of the g gate
//                    x = h'
//   update_n = scale (w . h' + b)
// and the state rows (h, c of every layer) are overwritten in place. A coordinate whose
// gradient is not finite gets update 0 and keeps its state (the optimizer's "skip" policy).
//
// Why it is fast: the pytorch version streams (N, 4H) gate tensors through memory a dozen times
// per layer; here one coordinate's gates live in registers. The weights are packed (by
// kernels.pack_lstm) column-major, [x, h, 1] rows by 4 Hp columns (Hp = H rounded up to 4): the
// units in blocks of 8, each block's columns the gates [i f g o] x 8 units, and a last block of
// 4 units as [i f g o] x 4. A coordinate's gates are then NV = Hp / 2 vectors of 8 floats (10 for
// H = 20): the product is (rows) broadcasts times NV fused multiply-adds, the tanh and the cell
// update run on whole vectors, and only the up-to-3 units that round H up to 4 are padding (zero
// weights; their c stays 0 and h 0, and they are never read back into a product or the readout).
//
// Built without -ffast-math on purpose: the non-finite test must not be optimized away.

#include <torch/extension.h>

#include <cmath>
#include <cstdint>
#include <algorithm>
#include <cstring>
#include <tuple>
#include <vector>

#ifdef __AVX__
#include <immintrin.h>
#endif

namespace {

typedef float v8 __attribute__((vector_size(32), aligned(4)));
typedef int32_t v8i __attribute__((vector_size(32), aligned(4)));

// x in all 8 lanes, as one broadcast (not "v8{} + x": without -ffast-math that is a real addition of +0
// per use, one more operation in every row of the gate products).
inline v8 splat(float x) { return v8{x, x, x, x, x, x, x, x}; }

inline v8 load(const float* p) { return *reinterpret_cast<const v8*>(p); }

inline void store(float* p, v8 x) { *reinterpret_cast<v8*>(p) = x; }

// 1 / d: on AVX, the 12-bit hardware reciprocal and one Newton step (about 2 ulp; a division
// costs several times more); elsewhere a division.
inline v8 reciprocal(v8 d) {
#ifdef __AVX__
  v8 r;
  const __m256 approx = _mm256_rcp_ps(reinterpret_cast<__m256&>(d));
  std::memcpy(&r, &approx, sizeof(r));
  return r * (2.0f - d * r);
#else
  return 1.0f / d;
#endif
}

// tanh on 8 lanes: x P(x^2) / Q(x^2), P and Q cubic (degrees (7, 6) in x), on [-7, 7], and
// +-tanh(7) = +-(1 - 1.7e-6) beyond; absolute error at most 1.2e-6 in float32, never above 1 in
// magnitude. The coefficients are a weighted least-squares fit of ours, reweighted towards the
// minimax error (benchmarks/results/step_cost_tanh/fit_tanh.py). Against the degree (13, 6) fit that
// Eigen uses (3e-7) it saves three of the fourteen operations of each tanh: 3-6% of the step
// (step_cost_tanh/ab.out); the rule's state keeps to 3 significant digits in bfloat16 without a
// measurable cost (benchmarks/results/state_precision*). No exp, no range reduction.
inline v8 vtanh(v8 x) {
  constexpr float kClamp = 7.0f;
#ifdef __AVX__
  const __m256 xc = _mm256_min_ps(_mm256_max_ps(reinterpret_cast<__m256&>(x), _mm256_set1_ps(-kClamp)), _mm256_set1_ps(kClamp));
  std::memcpy(&x, &xc, sizeof(x));
#else
  x = x < -kClamp ? splat(-kClamp) : x;
  x = x > kClamp ? splat(kClamp) : x;
#endif
  const v8 x2 = x * x;
  v8 p = splat(3.93072014048812e-06f);
  p = p * x2 + 2.2771405056118965e-03f;
  p = p * x2 + 0.12302353978157043f;
  p = p * x2 + 0.9999957084655762f;
  v8 q = splat(1.4236722199711949e-04f);
  q = q * x2 + 2.1072890609502792e-02f;
  q = q * x2 + 0.45634204149246216f;
  q = q * x2 + 1.0f;
  return (p * x) * reciprocal(q);
}

inline bool finite(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof(bits));
  return (bits & 0x7f800000u) != 0x7f800000u;
}

// State rows in memory <-> float rows in registers' reach. float: a copy; bfloat16: round to
// nearest even on the way out; float16: the F16C conversions where the CPU has them.
template <typename T>
struct Row;

template <>
struct Row<float> {
  static void load(const float* src, float* dst, int H) { std::memcpy(dst, src, H * sizeof(float)); }
  static void store(float* dst, const float* src, int H) { std::memcpy(dst, src, H * sizeof(float)); }
};

template <>
struct Row<c10::BFloat16> {
  static void load(const c10::BFloat16* src, float* dst, int H) {
    const uint16_t* in = reinterpret_cast<const uint16_t*>(src);
    uint32_t bits[32];
    for (int j = 0; j < H; ++j) bits[j] = static_cast<uint32_t>(in[j]) << 16;
    std::memcpy(dst, bits, H * sizeof(float));
  }
  static void store(c10::BFloat16* dst, const float* src, int H) {
    uint32_t bits[32];
    std::memcpy(bits, src, H * sizeof(float));
    uint16_t* out = reinterpret_cast<uint16_t*>(dst);
    // finite values only (the state of a finite rule): round half to even on the 16 dropped bits
    for (int j = 0; j < H; ++j) out[j] = static_cast<uint16_t>((bits[j] + 0x7fffu + ((bits[j] >> 16) & 1u)) >> 16);
  }
};

template <>
struct Row<c10::Half> {
  static void load(const c10::Half* src, float* dst, int H) {
    int j = 0;
#ifdef __F16C__
    for (; j + 8 <= H; j += 8)
      _mm256_storeu_ps(dst + j, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + j))));
#endif
    for (; j < H; ++j) dst[j] = static_cast<float>(src[j]);
  }
  static void store(c10::Half* dst, const float* src, int H) {
    int j = 0;
#ifdef __F16C__
    for (; j + 8 <= H; j += 8)
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + j),
                       _mm256_cvtps_ph(_mm256_loadu_ps(src + j), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
#endif
    for (; j < H; ++j) dst[j] = c10::Half(src[j]);
  }
};

// One LSTM layer for one coordinate, in place on its h and c (H floats each; lanes past H stay
// 0). in: the layer's nin inputs (must not alias h); W: packed (nin + H + 1 rows of 8 NV floats),
// units in blocks of 8 with columns [i f g o] x 8, a last block of 4 units as [i f g o] x 4.
// The i, f, o columns hold half the weights: sigmoid(z) = (1 + tanh(z / 2)) / 2.
template <int NV>
inline void lstm_layer(const float* in, int nin, float* h, float* c, int H, const float* W) {
  constexpr int FB = NV / 4;  // full blocks of 8 units
  v8 acc[NV];
  const float* bias = W + (nin + H) * 8 * NV;
#pragma GCC unroll 16
  for (int v = 0; v < NV; ++v) acc[v] = load(bias + 8 * v);
  for (int k = 0; k < nin; ++k) {
    const v8 b = splat(in[k]);
    const float* row = W + k * 8 * NV;
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) acc[v] += b * load(row + 8 * v);
  }
  for (int k = 0; k < H; ++k) {
    const v8 b = splat(h[k]);
    const float* row = W + (nin + k) * 8 * NV;
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) acc[v] += b * load(row + 8 * v);
  }
  alignas(32) float t[8 * NV + 8];
#pragma GCC unroll 16
  for (int v = 0; v < NV; ++v) store(t + 8 * v, vtanh(acc[v]));
#pragma GCC unroll 4
  for (int b = 0; b < FB; ++b) {
    const float* tb = t + 32 * b;
    const v8 si = 0.5f + 0.5f * load(tb), sf = 0.5f + 0.5f * load(tb + 8), so = 0.5f + 0.5f * load(tb + 24);
    const v8 cn = sf * load(c + 8 * b) + si * load(tb + 16);
    store(c + 8 * b, cn);
    store(h + 8 * b, so * vtanh(cn));
  }
  if constexpr (NV % 4 == 2) {  // the last 4 units: 8-lane arithmetic, the low 4 lanes kept
    const float* tb = t + 32 * FB;
    const v8 si = 0.5f + 0.5f * load(tb), sf = 0.5f + 0.5f * load(tb + 4), so = 0.5f + 0.5f * load(tb + 12);
    const v8 cn = sf * load(c + 8 * FB) + si * load(tb + 8);
    const v8 hn = so * vtanh(cn);
    std::memcpy(c + 8 * FB, &cn, 4 * sizeof(float));
    std::memcpy(h + 8 * FB, &hn, 4 * sizeof(float));
  }
}

constexpr int kMaxLayers = 4;

template <int NV, typename T>
void run(const float* grad, float sign, int64_t n, const std::vector<T*>& state, int H,
         const std::vector<const float*>& W, int nin0, int preprocess, float p, const float* w_out,
         float b_out, float out_scale, float* update, bool into_param, float lr) {
  const int layers = static_cast<int>(W.size());
  const float threshold = std::exp(-p), exp_p = std::exp(p);
  at::parallel_for(0, n, 1024, [&](int64_t begin, int64_t end) {
    alignas(32) float h[kMaxLayers][40] = {};  // H <= 32 lanes used, read as whole vectors of 8
    alignas(32) float c[kMaxLayers][40] = {};
    for (int64_t r = begin; r < end; ++r) {
      const float g = sign * grad[r];
      if (!finite(g)) {
        if (!into_param) update[r] = 0.0f;  // and a parameter keeps its value
        continue;
      }
      float x[2];
      if (preprocess == 0) {  // log_sign
        const float m = std::fabs(g);
        if (m >= threshold) {
          x[0] = std::log(m) / p;
          x[1] = g > 0.0f ? 1.0f : -1.0f;
        } else {
          x[0] = -1.0f;
          x[1] = g * exp_p;
        }
      } else {
        x[0] = g;
      }
      for (int l = 0; l < layers; ++l) {
        Row<T>::load(state[2 * l] + r * H, h[l], H);
        Row<T>::load(state[2 * l + 1] + r * H, c[l], H);
      }
      for (int l = 0; l < layers; ++l) lstm_layer<NV>(l == 0 ? x : h[l - 1], l == 0 ? nin0 : H, h[l], c[l], H, W[l]);
      for (int l = 0; l < layers; ++l) {
        Row<T>::store(state[2 * l] + r * H, h[l], H);
        Row<T>::store(state[2 * l + 1] + r * H, c[l], H);
      }
      // readout on whole vectors (w_out and h are padded to a multiple of 8 with zeros), then the 8 lanes summed
      v8 acc = splat(0.0f);
#pragma GCC unroll 4
      for (int j = 0; j < H; j += 8) acc += load(w_out + j) * load(h[layers - 1] + j);
      float u = b_out;
      for (int j = 0; j < 8; ++j) u += acc[j];
      if (!into_param) {
        update[r] = out_scale * u;
      } else {  // the parameter itself: p + lr * update, as torch's add_(update, alpha=lr)
        const float step = out_scale * u;
        update[r] = update[r] + lr * step;
      }
    }
  });
}

template <typename T>
void dispatch(int nv, const float* g, float sign, int64_t n, const std::vector<torch::Tensor>& states, int H,
              const std::vector<const float*>& w, int nin0, int pre, float p, const float* wo, float bo, float sc,
              float* u, bool into, float lr) {
  std::vector<T*> s;
  for (const auto& t : states) s.push_back(t.data_ptr<T>());
  switch (nv) {
#define LEARNED_OPTIM_CASE(NV)                                    \
  case NV:                                                        \
    run<NV, T>(g, sign, n, s, H, w, nin0, pre, p, wo, bo, sc, u, into, lr); \
    break;
    LEARNED_OPTIM_CASE(2)
    LEARNED_OPTIM_CASE(4)
    LEARNED_OPTIM_CASE(6)
    LEARNED_OPTIM_CASE(8)
    LEARNED_OPTIM_CASE(10)
    LEARNED_OPTIM_CASE(12)
    LEARNED_OPTIM_CASE(14)
    LEARNED_OPTIM_CASE(16)
#undef LEARNED_OPTIM_CASE
    default:
      TORCH_CHECK(false, "hidden sizes up to 32 are supported, got ", H);
  }
}

void check_f32(const torch::Tensor& t, const char* what) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == torch::kFloat32 && t.is_contiguous(), what,
              ": a contiguous CPU float32 tensor is needed");
}

}  // namespace

// grad (N,); states [h0, c0, h1, c1, ...] each (N, H), all float32, all bfloat16 or all float16,
// updated in place; packed: one (nin_l + H + 1, 4 Hp) float32 tensor per layer (kernels.pack_lstm);
// readout_w: w_out padded with zeros to a multiple of 8; update (N,) receives the update, or with
// into_param is the (float32, flat) parameter itself and receives param + lr * update in place (a
// non-finite coordinate keeps its value): the step without an update buffer or a second pass.
void lstm_rule_step(const torch::Tensor& grad, double sign, const std::vector<torch::Tensor>& states,
                    const std::vector<torch::Tensor>& packed, const std::string& preprocess, double p,
                    const torch::Tensor& readout_w, double readout_b, double output_scale, torch::Tensor& update,
                    bool into_param, double lr) {
  check_f32(grad, "grad");
  check_f32(update, "update");
  check_f32(readout_w, "readout_w");
  const int64_t n = grad.numel();
  TORCH_CHECK(update.numel() == n, "update: one value per coordinate");
  TORCH_CHECK(!packed.empty() && static_cast<int>(packed.size()) <= kMaxLayers, "1 to ", kMaxLayers, " layers");
  TORCH_CHECK(states.size() == 2 * packed.size(), "states: h and c of every layer");
  TORCH_CHECK(states[0].dim() == 2, "state: (N, H)");
  const int H = static_cast<int>(states[0].size(1));
  const int four_hp = static_cast<int>(packed[0].size(1));
  TORCH_CHECK(four_hp % 8 == 0 && four_hp / 4 >= H && four_hp / 4 - H < 4, "packed: 4 Hp columns, Hp = H rounded up to 4");
  TORCH_CHECK(readout_w.numel() == (H + 7) / 8 * 8, "readout_w: H values padded with zeros to a multiple of 8");
  const int nin0 = preprocess == "log_sign" ? 2 : (preprocess == "none" ? 1 : -1);
  TORCH_CHECK(nin0 > 0, "preprocess: log_sign or none");
  const auto dtype = states[0].scalar_type();
  TORCH_CHECK(dtype == torch::kFloat32 || dtype == torch::kBFloat16 || dtype == torch::kFloat16,
              "state: float32, bfloat16 or float16");
  for (const auto& t : states) {
    TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == dtype && t.is_contiguous(), "state: contiguous CPU, one dtype");
    TORCH_CHECK(t.dim() == 2 && t.size(0) == n && t.size(1) == H, "state: (N, H)");
  }
  std::vector<const float*> w;
  for (size_t l = 0; l < packed.size(); ++l) {
    check_f32(packed[l], "packed");
    const int nin = l == 0 ? nin0 : H;
    TORCH_CHECK(packed[l].size(0) == nin + H + 1 && packed[l].size(1) == four_hp, "packed: (nin + H + 1, 4 Hp)");
    w.push_back(packed[l].data_ptr<float>());
  }
  const float* g = grad.data_ptr<float>();
  float* u = update.data_ptr<float>();
  const float* wo = readout_w.data_ptr<float>();
  const float sg = static_cast<float>(sign), pp = static_cast<float>(p), bo = static_cast<float>(readout_b),
              sc = static_cast<float>(output_scale), rate = static_cast<float>(lr);
  const int pre = nin0 == 2 ? 0 : 1, nv = four_hp / 8;
  if (dtype == torch::kFloat32) {
    dispatch<float>(nv, g, sg, n, states, H, w, nin0, pre, pp, wo, bo, sc, u, into_param, rate);
  } else if (dtype == torch::kBFloat16) {
    dispatch<c10::BFloat16>(nv, g, sg, n, states, H, w, nin0, pre, pp, wo, bo, sc, u, into_param, rate);
  } else {
    dispatch<c10::Half>(nv, g, sg, n, states, H, w, nin0, pre, pp, wo, bo, sc, u, into_param, rate);
  }
}

// grad_norm="tensor"'s two reductions over a flat float32 gradient, without temporaries (see
// features.tensor_scale, which composes them): the largest finite |g| and the number of finite
// entries, then the sum of (g / amax)^2 over the finite entries, accumulated in double.
std::tuple<double, int64_t> finite_amax_count(const torch::Tensor& grad) {
  check_f32(grad, "grad");
  const float* g = grad.data_ptr<float>();
  const int64_t n = grad.numel();
  return at::parallel_reduce(
      0, n, 1 << 16, std::make_tuple(0.0, int64_t{0}),
      [&](int64_t begin, int64_t end, std::tuple<double, int64_t> acc) {
        float amax = static_cast<float>(std::get<0>(acc));
        int64_t count = std::get<1>(acc);
        for (int64_t r = begin; r < end; ++r) {
          if (finite(g[r])) {
            amax = std::max(amax, std::fabs(g[r]));
            ++count;
          }
        }
        return std::make_tuple(static_cast<double>(amax), count);
      },
      [](std::tuple<double, int64_t> a, std::tuple<double, int64_t> b) {
        return std::make_tuple(std::max(std::get<0>(a), std::get<0>(b)), std::get<1>(a) + std::get<1>(b));
      });
}

double finite_scaled_square_sum(const torch::Tensor& grad, double amax) {
  check_f32(grad, "grad");
  const float* g = grad.data_ptr<float>();
  const double inv = amax > 0.0 ? 1.0 / amax : 1.0;
  return at::parallel_reduce(
      0, grad.numel(), 1 << 16, 0.0,
      [&](int64_t begin, int64_t end, double total) {
        double part[4] = {0.0, 0.0, 0.0, 0.0};  // four sums: independent additions, not one long chain
        int64_t r = begin;
        for (; r + 4 <= end; r += 4)
          for (int j = 0; j < 4; ++j) {
            const double v = finite(g[r + j]) ? g[r + j] * inv : 0.0;
            part[j] += v * v;
          }
        for (; r < end; ++r) {
          const double v = finite(g[r]) ? g[r] * inv : 0.0;
          part[0] += v * v;
        }
        return total + ((part[0] + part[1]) + (part[2] + part[3]));
      },
      [](double a, double b) { return a + b; });
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("finite_amax_count", &finite_amax_count, "The largest finite |g| and the count of finite entries (CPU float32)");
  m.def("finite_scaled_square_sum", &finite_scaled_square_sum, "Sum of (g / amax)^2 over the finite entries (CPU float32)");
  m.def("lstm_rule_step", &lstm_rule_step, "The LearnedOptimizer step of an LSTM rule, state updated in place (CPU; float32, bfloat16 or float16 state)");
}
